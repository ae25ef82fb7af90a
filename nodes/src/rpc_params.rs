//! Declared parameters of the JSON-RPC methods: each method lists its parameters with a
//! kind and a range, and a call's positional values are checked against them before the
//! method runs. Numbers and strings are taken where Kamailio's tools pass either (`kamcmd`
//! and `limes ctl` send `200` as a number, `s:200` as a string); anything else of the
//! wrong type, out of range, missing or extra is refused with a message that names the
//! parameter. Nothing is dropped silently.

use serde_json::{json, Value};

use crate::rpc::RpcError;

/// What a parameter takes.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// A string; a number is taken as its decimal text (`ul.lookup 3000`).
    Text,
    /// An integer within the range; a string of digits is taken too.
    Int { min: i64, max: i64 },
    /// A number within the range; a numeric string is taken too.
    Number { min: f64, max: f64 },
    /// A JSON object or array, or a string holding one.
    Json,
    /// A string or an integer, kept as given (a dialog variable's value).
    Scalar,
}

impl Kind {
    fn describe(self) -> String {
        match self {
            Kind::Text => "a string".into(),
            Kind::Int { min, max } => format!("an integer from {min} to {max}"),
            Kind::Number { min, max } => format!("a number from {min} to {max}"),
            Kind::Json => "a JSON object or array".into(),
            Kind::Scalar => "a string or an integer".into(),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Text => "string",
            Kind::Int { .. } => "integer",
            Kind::Number { .. } => "number",
            Kind::Json => "json",
            Kind::Scalar => "string|integer",
        }
    }
}

/// One declared parameter.
#[derive(Debug, Clone, Copy)]
pub struct Param {
    pub name: &'static str,
    pub kind: Kind,
    pub required: bool,
}

/// A required parameter.
pub const fn req(name: &'static str, kind: Kind) -> Param {
    Param {
        name,
        kind,
        required: true,
    }
}

/// An optional parameter (an empty string counts as not given, as kamcmd passes them).
pub const fn opt(name: &'static str, kind: Kind) -> Param {
    Param {
        name,
        kind,
        required: false,
    }
}

pub const PORT: Kind = Kind::Int { min: 0, max: 65535 };
pub const GROUP: Kind = Kind::Int {
    min: 0,
    max: u32::MAX as i64,
};

/// A method's parameters: fixed ones, then optionally any number more of one kind, and
/// whether Kamailio's table name may come first (`ul.lookup location 3000`).
#[derive(Debug, Clone, Copy)]
pub struct Signature {
    pub params: &'static [Param],
    pub rest: Option<Param>,
    pub table: Option<&'static str>,
}

impl Signature {
    pub const NONE: Signature = Signature::of(&[]);

    pub const fn of(params: &'static [Param]) -> Self {
        Self {
            params,
            rest: None,
            table: None,
        }
    }

    pub const fn with_rest(params: &'static [Param], rest: Param) -> Self {
        Self {
            params,
            rest: Some(rest),
            table: None,
        }
    }

    pub const fn with_table(params: &'static [Param], table: &'static str) -> Self {
        Self {
            params,
            rest: None,
            table: Some(table),
        }
    }

    /// `NAME [OPTIONAL] [REST...]`, as `system.methodHelp` and `limes ctl --help` show it.
    pub fn usage(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        if let Some(t) = self.table {
            parts.push(format!("[{t}]"));
        }
        for p in self.params {
            parts.push(if p.required {
                p.name.to_owned()
            } else {
                format!("[{}]", p.name)
            });
        }
        if let Some(r) = self.rest {
            parts.push(format!("[{}...]", r.name));
        }
        parts.join(" ")
    }

    /// The parameters as `system.methodHelp` lists them.
    pub fn describe(&self) -> Value {
        let one = |p: &Param, repeated: bool| {
            json!({
                "name": p.name,
                "type": p.kind.name(),
                "accepts": p.kind.describe(),
                "required": p.required,
                "repeated": repeated,
            })
        };
        let mut list: Vec<Value> = self.params.iter().map(|p| one(p, false)).collect();
        list.extend(self.rest.iter().map(|p| one(p, true)));
        Value::Array(list)
    }

    /// Checks `values` against the signature: the checked arguments, or an error that
    /// names the method and the parameter.
    pub fn check(&self, method: &str, values: &[Value]) -> Result<Args, RpcError> {
        let invalid = |m: String| RpcError::new(-32602, format!("Invalid params: {method}: {m}"));
        let mut values = values;
        if let (Some(table), Some(first)) = (self.table, values.first()) {
            if first.as_str() == Some(table) && values.len() > 1 {
                values = &values[1..];
            }
        }
        let max = self.params.len();
        if self.rest.is_none() && values.len() > max {
            return Err(invalid(format!(
                "{} parameters given, at most {max} taken ({} {})",
                values.len(),
                method,
                self.usage()
            )));
        }
        let mut out = Vec::with_capacity(values.len().max(max));
        for (i, p) in self.params.iter().enumerate() {
            let arg = match values.get(i) {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) if s.is_empty() && !p.required => None,
                Some(v) => Some(convert(p, v).map_err(&invalid)?),
            };
            if arg.is_none() && p.required {
                return Err(invalid(format!(
                    "{} is missing ({method} {})",
                    p.name,
                    self.usage()
                )));
            }
            out.push(arg);
        }
        if let Some(rest) = &self.rest {
            for v in values.iter().skip(max) {
                out.push(Some(convert(rest, v).map_err(&invalid)?));
            }
        }
        Ok(Args(out))
    }
}

fn convert(p: &Param, v: &Value) -> Result<Arg, String> {
    let wrong = || format!("{}: {v} is not {}", p.name, p.kind.describe());
    Ok(match (p.kind, v) {
        (Kind::Text, Value::String(s)) => {
            if s.is_empty() {
                return Err(format!("{} is empty", p.name));
            }
            Arg::Text(s.clone())
        }
        (Kind::Text, Value::Number(n)) => Arg::Text(n.to_string()),
        (Kind::Int { min, max }, _) => {
            let n = match v {
                Value::Number(n) => n.as_i64(),
                Value::String(s) => s.trim().parse::<i64>().ok(),
                _ => None,
            }
            .ok_or_else(wrong)?;
            if n < min || n > max {
                return Err(wrong());
            }
            Arg::Int(n)
        }
        (Kind::Number { min, max }, _) => {
            let n = match v {
                Value::Number(n) => n.as_f64(),
                Value::String(s) => s.trim().parse::<f64>().ok(),
                _ => None,
            }
            .filter(|n| n.is_finite())
            .ok_or_else(wrong)?;
            if n < min || n > max {
                return Err(wrong());
            }
            Arg::Number(n)
        }
        (Kind::Json, Value::Object(_) | Value::Array(_)) => Arg::Json(v.clone()),
        (Kind::Json, Value::String(text)) => match serde_json::from_str::<Value>(text) {
            Ok(parsed @ (Value::Object(_) | Value::Array(_))) => Arg::Json(parsed),
            _ => return Err(wrong()),
        },
        (Kind::Scalar, Value::String(s)) => Arg::Text(s.clone()),
        (Kind::Scalar, Value::Number(n)) => Arg::Int(n.as_i64().ok_or_else(wrong)?),
        _ => return Err(wrong()),
    })
}

/// One checked argument.
#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    Text(String),
    Int(i64),
    Number(f64),
    Json(Value),
}

/// A call's checked arguments, by position (`None`: an optional one not given).
#[derive(Debug, Clone, Default)]
pub struct Args(Vec<Option<Arg>>);

impl Args {
    pub fn get(&self, i: usize) -> Option<&Arg> {
        self.0.get(i).and_then(Option::as_ref)
    }

    pub fn text(&self, i: usize) -> Option<&str> {
        match self.get(i) {
            Some(Arg::Text(s)) => Some(s),
            _ => None,
        }
    }

    pub fn int(&self, i: usize) -> Option<i64> {
        match self.get(i) {
            Some(Arg::Int(n)) => Some(*n),
            _ => None,
        }
    }

    pub fn number(&self, i: usize) -> Option<f64> {
        match self.get(i) {
            Some(Arg::Number(n)) => Some(*n),
            _ => None,
        }
    }

    pub fn json(&self, i: usize) -> Option<&Value> {
        match self.get(i) {
            Some(Arg::Json(v)) => Some(v),
            _ => None,
        }
    }

    /// A required text parameter (the signature has checked that it is there).
    pub fn need(&self, i: usize) -> Result<&str, RpcError> {
        self.text(i)
            .ok_or_else(|| RpcError::new(-32603, format!("parameter {i} was not checked")))
    }

    /// The text arguments from position `from` on (a repeated parameter).
    pub fn texts_from(&self, from: usize) -> impl Iterator<Item = &str> {
        self.0.iter().skip(from).filter_map(|a| match a {
            Some(Arg::Text(s)) => Some(s.as_str()),
            _ => None,
        })
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIG: Signature = Signature::of(&[
        req("GROUP", GROUP),
        req("CIDR", Kind::Text),
        opt("PORT", PORT),
        opt("Q", Kind::Number { min: 0.0, max: 1.0 }),
    ]);

    #[test]
    fn numbers_and_strings_as_kamcmd_passes_them() {
        let a = SIG
            .check(
                "address.add",
                &[json!(200), json!("10.0.0.1"), json!("5060")],
            )
            .expect("valid");
        assert_eq!(a.int(0), Some(200));
        assert_eq!(a.int(2), Some(5060));
        let a = SIG
            .check(
                "address.add",
                &[json!("200"), json!(10), json!(5060), json!("0.5")],
            )
            .expect("valid");
        assert_eq!(
            (a.int(0), a.text(1), a.number(3)),
            (Some(200), Some("10"), Some(0.5))
        );
    }

    #[test]
    fn wrong_missing_extra_are_named() {
        let msg = |v: &[Value]| SIG.check("address.add", v).expect_err("refused").message;
        assert!(msg(&[json!(200)]).contains("CIDR is missing"));
        assert!(msg(&[json!("x"), json!("c")]).contains("GROUP: \"x\" is not an integer"));
        assert!(msg(&[json!(1), json!("c"), json!(70000)]).contains("PORT: 70000"));
        assert!(msg(&[json!(1), json!("c"), json!(true)]).contains("PORT: true"));
        assert!(msg(&[json!(1), json!({}), json!(1)]).contains("CIDR: {}"));
        assert!(msg(&[json!(1), json!("c"), json!(1), json!(2)]).contains("Q: 2"));
        let extra = msg(&[json!(1), json!("c"), json!(1), json!(1), json!("x")]);
        assert!(extra.contains("5 parameters given, at most 4"), "{extra}");
    }

    #[test]
    fn empty_optional_is_absent_and_table_name_first_is_skipped() {
        let a = SIG
            .check("address.add", &[json!(1), json!("c"), json!("")])
            .expect("valid");
        assert_eq!(a.int(2), None);
        const TABLE: Signature = Signature::with_table(&[req("AOR", Kind::Text)], "location");
        let sig = TABLE;
        let a = sig
            .check("ul.lookup", &[json!("location"), json!(3000)])
            .expect("valid");
        assert_eq!((a.text(0), a.len()), (Some("3000"), 1));
        let a = sig
            .check("ul.lookup", &[json!("location")])
            .expect("an AoR");
        assert_eq!(a.text(0), Some("location"));
        assert_eq!(sig.usage(), "[location] AOR");
    }
}
