//! `;name=value` parameter lists, as found after a URI, a Via sent-by or a name-addr.
//! Names compare case-insensitively; values are returned as written (quoted strings with
//! their quotes, see [`Params::get_unquoted`]).

use crate::text::{split_top, trim, unquote};

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
    /// Empty parameters (`;;`) are skipped here; [`Params::validate`] reports them.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, Option<&'a str>)> {
        let raw = self.0;
        split_top(raw, b';')
            .filter_map(Result::ok)
            .map(trim)
            .filter(|p| !p.is_empty())
            .map(|p| match crate::text::find_byte(p, b'=') {
                Some(i) => (trim(&p[..i]), Some(trim(&p[i + 1..]))),
                None => (p, None),
            })
    }

    /// `Some(value)` when `name` is present: `Some(None)` for a flag.
    pub fn get(&self, name: &str) -> Option<Option<&'a str>> {
        if self.0.is_empty() {
            return None;
        }
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
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
        if self.0.is_empty() {
            return Ok(());
        }
        for part in split_top(self.0, b';') {
            let part = trim(part.map_err(|_| "unterminated quoted string in parameter")?);
            if part.is_empty() {
                return Err("empty parameter");
            }
            let (name, value) = match crate::text::find_byte(part, b'=') {
                Some(i) => (trim(&part[..i]), Some(trim(&part[i + 1..]))),
                None => (part, None),
            };
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
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn empty_parameters_are_invalid() {
        assert_eq!(Params::new(";;,;,,").validate(), Err("empty parameter"));
        assert!(Params::new("").validate().is_ok());
    }
}
