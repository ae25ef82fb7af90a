//! `;name=value` parameter lists, as found after a URI, a Via sent-by or a name-addr.
//! Names compare case-insensitively; values are returned as written (quoted strings with
//! their quotes, see [`Params::get_unquoted`]).

use crate::text::{end_of_quoted, is_token_byte, is_ws, trim, unquote, Unbalanced};

/// The bytes a parameter scan stops at: the separator, a quote, a bracket, `=`.
const SPECIAL: [bool; 256] = {
    let mut t = [false; 256];
    t[b';' as usize] = true;
    t[b'"' as usize] = true;
    t[b'<' as usize] = true;
    t[b'=' as usize] = true;
    t
};

/// The bytes an unquoted value is made of on the one-pass path: all but white space, the
/// quote, the comma and the bytes [`Parts`] treats as special. A value with any of these
/// is left to the part-by-part scan.
const PLAIN_VALUE: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        t[c] = !SPECIAL[c] && !matches!(c as u8, b' ' | b'\t' | b',');
        c += 1;
    }
    t
};

/// The parameters of one value, borrowed: the text after the first `;`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Params<'a>(pub(crate) &'a str);

impl<'a> Params<'a> {
    pub fn new(raw: &'a str) -> Self {
        Self(raw)
    }

    /// The text as received, without the leading `;`.
    pub fn as_str(&self) -> &'a str {
        self.0
    }

    /// Each `(name, value)` in order; `value` is `None` for a flag such as `lr` or `rport`.
    /// Empty parameters (`;;`) are skipped here; [`Params::validate`] reports them. An
    /// unterminated quote or bracket ends the list.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, Option<&'a str>)> {
        Parts::new(self.0)
            .map_while(Result::ok)
            .filter(|&(name, value)| !name.is_empty() || value.is_some())
    }

    /// `Some(value)` when `name` is present: `Some(None)` for a flag.
    pub fn get(&self, name: &str) -> Option<Option<&'a str>> {
        if let Some([found]) = self.well_formed([name]) {
            return found.map(|(_, v)| v);
        }
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// [`Params::get`] of each of `names`, in one pass over a well-formed list.
    pub fn get_each<const N: usize>(&self, names: [&str; N]) -> [Option<Option<&'a str>>; N] {
        match self.well_formed(names) {
            Some(found) => found.map(|f| f.map(|(_, value)| value)),
            None => names.map(|name| self.get(name)),
        }
    }

    /// The value of `name` with the quotes of a quoted string removed.
    pub fn get_unquoted(&self, name: &str) -> Option<&'a str> {
        self.get(name).flatten().map(unquote)
    }

    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Checks the grammar: every parameter has a token name, and a value (when present) is
    /// a token-ish run or a closed quoted string. Empty parameters (`;;`) are an error.
    pub fn validate(&self) -> Result<(), &'static str> {
        self.validate_and_find([]).0
    }

    /// [`Params::validate`] and [`Params::get`] of each of `names` in one pass (a Via's
    /// branch, rport and received are found while its grammar is checked), each found
    /// with its name as written (its place in the text, for an edit in place).
    pub(crate) fn validate_and_find<const N: usize>(
        &self,
        names: [&str; N],
    ) -> (Result<(), &'static str>, [Option<Found<'a>>; N]) {
        if self.0.is_empty() {
            return (Ok(()), [None; N]);
        }
        if let Some(found) = self.well_formed(names) {
            return (Ok(()), found);
        }
        let mut found = [None; N];
        let mut result = Ok(());
        for part in Parts::new(self.0) {
            let Ok((n, v)) = part else {
                if result.is_ok() {
                    result = Err("unterminated quoted string in parameter");
                }
                break;
            };
            let empty = n.is_empty() && v.is_none();
            if result.is_ok() {
                result = if empty {
                    Err("empty parameter")
                } else {
                    check_param(n, v)
                };
            }
            if !empty {
                for (slot, name) in found.iter_mut().zip(names) {
                    if slot.is_none() && n.eq_ignore_ascii_case(name) {
                        *slot = Some((n, v));
                    }
                }
            }
            if result.is_err() && found.iter().all(Option::is_some) {
                break;
            }
        }
        (result, found)
    }

    /// The common case in one pass over the bytes, without cutting the text into parts
    /// first: each part a token name, optionally `=` and a value of plain bytes or a
    /// closed quoted string, white space around them, ended by `;` or the end; `names`
    /// found on the way. `None` when the text holds anything else (an error, an empty
    /// part, a bracket, white space inside a value): the part-by-part scan, which this
    /// agrees with wherever it answers (property test), decides those.
    fn well_formed<const N: usize>(&self, names: [&str; N]) -> Option<[Option<Found<'a>>; N]> {
        let raw = self.0;
        let b = raw.as_bytes();
        let skip_ws = |mut i: usize| {
            while i < b.len() && is_ws(b[i]) {
                i += 1;
            }
            i
        };
        let mut found = [None; N];
        let mut i = 0;
        loop {
            i = skip_ws(i);
            let name_start = i;
            while i < b.len() && is_token_byte(b[i]) {
                i += 1;
            }
            if i == name_start {
                return None;
            }
            let name = &raw[name_start..i];
            i = skip_ws(i);
            let mut value = None;
            if b.get(i) == Some(&b'=') {
                i = skip_ws(i + 1);
                let value_start = i;
                if b.get(i) == Some(&b'"') {
                    i = end_of_quoted(b, i).ok()?;
                } else {
                    // Four bytes a round while they last: one branch for four.
                    while let Some(four) = b.get(i..i + 4) {
                        if !(PLAIN_VALUE[four[0] as usize]
                            & PLAIN_VALUE[four[1] as usize]
                            & PLAIN_VALUE[four[2] as usize]
                            & PLAIN_VALUE[four[3] as usize])
                        {
                            break;
                        }
                        i += 4;
                    }
                    while i < b.len() && PLAIN_VALUE[b[i] as usize] {
                        i += 1;
                    }
                    if i == value_start {
                        return None;
                    }
                }
                value = Some(&raw[value_start..i]);
                i = skip_ws(i);
            }
            for (slot, wanted) in found.iter_mut().zip(names) {
                if slot.is_none() && name.eq_ignore_ascii_case(wanted) {
                    *slot = Some((name, value));
                }
            }
            match b.get(i) {
                None => return Some(found),
                Some(b';') => i += 1,
                Some(_) => return None,
            }
        }
    }
}

/// A parameter found: its name as written and its value (`None` for a flag).
pub(crate) type Found<'a> = (&'a str, Option<&'a str>);

/// The parts of a parameter list in one pass over the bytes: cut at each `;` outside
/// quoted strings and `<...>`, a name ending at its part's first `=`, names and values
/// trimmed; an empty part is `("", None)`. An unterminated quote or bracket is an `Err`
/// and ends the parts.
struct Parts<'a> {
    raw: &'a str,
    /// Where the next part starts; `None` once the last part was returned.
    at: Option<usize>,
}

impl<'a> Parts<'a> {
    fn new(raw: &'a str) -> Self {
        Self { raw, at: Some(0) }
    }
}

impl<'a> Iterator for Parts<'a> {
    type Item = Result<(&'a str, Option<&'a str>), Unbalanced>;

    fn next(&mut self) -> Option<Self::Item> {
        let raw = self.raw;
        let b = raw.as_bytes();
        let start = self.at.take()?;
        let mut i = start;
        let mut eq = None;
        while i < b.len() && b[i] != b';' {
            // Plain bytes are skipped by table, the four that matter are handled.
            while i < b.len() && !SPECIAL[b[i] as usize] {
                i += 1;
            }
            let Some(&c) = b.get(i) else { break };
            match c {
                b'"' => match end_of_quoted(b, i) {
                    Ok(end) => i = end,
                    Err(e) => return Some(Err(e)),
                },
                b'<' => match memchr::memchr(b'>', &b[i..]) {
                    Some(close) => i += close + 1,
                    None => return Some(Err(Unbalanced)),
                },
                b'=' => {
                    eq.get_or_insert(i);
                    i += 1;
                }
                _ => break, // ';'
            }
        }
        if i < b.len() {
            self.at = Some(i + 1);
        }
        Some(Ok(match eq {
            Some(e) => (trim(&raw[start..e]), Some(trim(&raw[e + 1..i]))),
            None => (trim(&raw[start..i]), None),
        }))
    }
}

fn check_param(name: &str, value: Option<&str>) -> Result<(), &'static str> {
    if !crate::text::is_token(name) {
        return Err("malformed parameter name");
    }
    if let Some(v) = value {
        let quoted = v.len() >= 2 && v.starts_with('"') && v.ends_with('"');
        if v.is_empty()
            || (!quoted
                && v.bytes()
                    .any(|b| b.is_ascii_whitespace() || b == b'"' || b == b','))
        {
            return Err("malformed parameter value");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::split_top;

    #[test]
    fn flags_values_and_case() {
        let p = Params::new("branch = z9hG4bK74bf9 ;RPort; received=192.0.2.1;x=\"a;b\"");
        assert_eq!(p.get("branch"), Some(Some("z9hG4bK74bf9")));
        assert_eq!(p.get("rport"), Some(None));
        assert_eq!(p.get("RECEIVED"), Some(Some("192.0.2.1")));
        assert_eq!(p.get_unquoted("x"), Some("a;b"));
        assert_eq!(p.get("maddr"), None);
        assert!(p.validate().is_ok());
    }

    /// The grammar check as the list's parts define it: split at top-level `;`, trim,
    /// split at the first `=`.
    fn validate_by_parts(raw: &str) -> Result<(), &'static str> {
        if raw.is_empty() {
            return Ok(());
        }
        for part in split_top(raw, b';') {
            let part = trim(part.map_err(|_| "unterminated quoted string in parameter")?);
            if part.is_empty() {
                return Err("empty parameter");
            }
            let (name, value) = match part.find('=') {
                Some(i) => (trim(&part[..i]), Some(trim(&part[i + 1..]))),
                None => (part, None),
            };
            check_param(name, value)?;
        }
        Ok(())
    }

    /// The value of `name` as the list's parts define it (the first part whose trimmed
    /// name matches; empty parts skipped; an unterminated quote ends the list).
    fn get_by_parts<'a>(raw: &'a str, name: &str) -> Option<Option<&'a str>> {
        split_top(raw, b';')
            .map_while(Result::ok)
            .map(trim)
            .filter(|p| !p.is_empty())
            .map(|p| match p.find('=') {
                Some(i) => (trim(&p[..i]), Some(trim(&p[i + 1..]))),
                None => (p, None),
            })
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    proptest::proptest! {
        /// The one-pass `get` and `validate` answer as the part-by-part definitions do,
        /// on any text made of the characters that matter (quotes, escapes, brackets,
        /// separators, white space).
        #[test]
        fn one_pass_scan_equals_the_definition(raw in r#"[ab=;"<>,\\ \tL:.é]{0,24}"#) {
            let p = Params::new(&raw);
            proptest::prop_assert_eq!(p.validate(), validate_by_parts(&raw));
            for name in ["a", "b", "ab", "A", "l"] {
                let by_iter = get_by_parts(&raw, name);
                proptest::prop_assert_eq!(p.get(name), by_iter, "{}", name);
                proptest::prop_assert_eq!(p.get_each([name, "b"]), [by_iter, get_by_parts(&raw, "b")]);
                let (checked, [found]) = p.validate_and_find([name]);
                proptest::prop_assert_eq!((checked, [found.map(|(_, v)| v)]), (p.validate(), [by_iter]));
            }
        }
    }

    #[test]
    fn empty_parameters_are_invalid() {
        assert_eq!(Params::new(";;,;,,").validate(), Err("empty parameter"));
        assert!(Params::new("").validate().is_ok());
    }
}
