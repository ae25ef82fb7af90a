//! name-addr and addr-spec values: From, To, Contact, Route, Record-Route, Path
//! (RFC 3261 §20.10, §25.1).

use crate::params::Params;
use crate::text::{end_of_quoted, find_byte, is_token_byte, is_ws, trim, unquote};
use crate::uri::{Uri, UriError};

/// One address with its header parameters, borrowed from the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameAddr<'a> {
    /// The display name as written (quotes included when it was quoted).
    pub display: Option<&'a str>,
    /// The URI text, without the angle brackets.
    pub uri: &'a str,
    /// Whether the URI was enclosed in `<>` (it must stay so when copied).
    pub bracketed: bool,
    pub params: Params<'a>,
}

impl<'a> NameAddr<'a> {
    pub fn parse(s: &'a str) -> Result<Self, UriError> {
        let s = trim(s);
        let b = s.as_bytes();
        let (display, open) = if b.first() == Some(&b'"') {
            let end =
                end_of_quoted(b, 0).map_err(|_| UriError("unterminated quoted display name"))?;
            let after = s[end..].trim_start_matches([' ', '\t']);
            if !after.starts_with('<') {
                return Err(UriError("display name without <URI>"));
            }
            (Some(&s[..end]), s.len() - after.len())
        } else {
            match find_byte(s, b'<') {
                Some(open) => {
                    let display = trim(&s[..open]);
                    if !display.bytes().all(|c| is_token_byte(c) || is_ws(c)) {
                        return Err(UriError("display name has non-token characters"));
                    }
                    ((!display.is_empty()).then_some(display), open)
                }
                None => {
                    // addr-spec form: parameters after the URI belong to the header, so the
                    // URI itself may not carry ';', '?' or ','.
                    let (uri, params) = match find_byte(s, b';') {
                        Some(i) => (trim(&s[..i]), &s[i + 1..]),
                        None => (s, ""),
                    };
                    if uri.contains(['?', ',']) || uri.is_empty() {
                        return Err(UriError(
                            "URI with parameters or headers must be enclosed in <>",
                        ));
                    }
                    return Self::finish(None, uri, false, params);
                }
            }
        };
        let close = find_byte(&s[open..], b'>').ok_or(UriError("unterminated <URI>"))? + open;
        let uri = &s[open + 1..close];
        let edge_ws = |c: Option<&u8>| c.is_some_and(|&c| is_ws(c));
        if edge_ws(uri.as_bytes().first()) || edge_ws(uri.as_bytes().last()) {
            return Err(UriError("white space inside <URI>"));
        }
        let after = trim(&s[close + 1..]);
        let params = match after.strip_prefix(';') {
            Some(p) => p,
            None if after.is_empty() => "",
            None => return Err(UriError("junk after <URI>")),
        };
        Self::finish(display, uri, true, params)
    }

    fn finish(
        display: Option<&'a str>,
        uri: &'a str,
        bracketed: bool,
        params: &'a str,
    ) -> Result<Self, UriError> {
        let params = Params::new(params);
        params
            .validate()
            .map_err(|_| UriError("malformed header parameter"))?;
        Ok(NameAddr {
            display,
            uri,
            bracketed,
            params,
        })
    }

    pub fn parse_uri(&self) -> Result<Uri<'a>, UriError> {
        Uri::parse(self.uri)
    }

    pub fn tag(&self) -> Option<&'a str> {
        self.params.get("tag").flatten()
    }

    /// The `expires` Contact parameter in seconds; `None` when absent or not a number.
    pub fn expires(&self) -> Option<u32> {
        self.params
            .get("expires")
            .flatten()
            .and_then(crate::text::parse_u32)
    }

    /// The `q` Contact parameter in thousandths (`q=0.5` -> 500); `None` when absent or
    /// outside 0..=1 (RFC 3261 §20.10 `qvalue`).
    pub fn q(&self) -> Option<u16> {
        let v = self.params.get("q").flatten()?;
        let (int, frac) = match v.find('.') {
            Some(i) => (&v[..i], &v[i + 1..]),
            None => (v, ""),
        };
        if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let mut thousandths: u16 = match int {
            "0" => 0,
            "1" => 1000,
            _ => return None,
        };
        for (i, d) in frac.bytes().enumerate() {
            thousandths += u16::from(d - b'0') * [100, 10, 1][i];
        }
        (thousandths <= 1000).then_some(thousandths)
    }

    /// The display name without quotes.
    pub fn display_unquoted(&self) -> Option<&'a str> {
        self.display.map(unquote)
    }
}

/// RFC 8599 push parameters of a Contact's URI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushParams<'a> {
    pub provider: &'a str,
    pub prid: Option<&'a str>,
    pub param: Option<&'a str>,
}

impl<'a> PushParams<'a> {
    /// `Some` when the URI carries `pn-provider` (RFC 8599 §4.1).
    pub fn from_uri(uri: &Uri<'a>) -> Option<Self> {
        let provider = uri.params.get("pn-provider").flatten()?;
        Some(Self {
            provider,
            prid: uri.params.get("pn-prid").flatten(),
            param: uri.params.get("pn-param").flatten(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        // (input, display, uri, tag)
        let ok: &[(&str, Option<&str>, &str, Option<&str>)] = &[
            ("<sip:a@b>;tag=1", None, "sip:a@b", Some("1")),
            ("\"A, B\" <sip:a@b>", Some("\"A, B\""), "sip:a@b", None),
            (
                "caller<sip:caller@example.com>;tag=323",
                Some("caller"),
                "sip:caller@example.com",
                Some("323"),
            ),
            (
                "sip:caller@example.net;tag=2923420123",
                None,
                "sip:caller@example.net",
                Some("2923420123"),
            ),
            (
                "Joe Random <sip:joe@example.org> ; tag = 5",
                Some("Joe Random"),
                "sip:joe@example.org",
                Some("5"),
            ),
        ];
        for (s, display, uri, tag) in ok {
            let a = NameAddr::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!((a.display, a.uri, a.tag()), (*display, *uri, *tag), "{s}");
        }
        let bad: &[(&str, &str)] = &[
            (
                "Bell, Alexander <sip:a.g.bell@example.com>;tag=43",
                "display name has non-token characters",
            ),
            (
                "\"Mr. J. User <sip:j.user@example.com>",
                "unterminated quoted display name",
            ),
            (
                "\"Watson, Thomas\" < sip:t.watson@example.org >",
                "white space inside <URI>",
            ),
            (
                "sip:user@example.com?Route=%3Csip:sip.example.com%3E",
                "URI with parameters or headers must be enclosed in <>",
            ),
            (
                "\"Joe\" <sip:joe@example.org>;;;;",
                "malformed header parameter",
            ),
            ("<sip:a@b", "unterminated <URI>"),
        ];
        for (s, why) in bad {
            assert_eq!(NameAddr::parse(s).map(|_| ()), Err(UriError(why)), "{s}");
        }
    }

    #[test]
    fn q_values() {
        for (s, q) in [
            ("1", Some(1000)),
            ("0.5", Some(500)),
            ("0.001", Some(1)),
            ("1.000", Some(1000)),
            ("1.5", None),
            ("2", None),
            ("0.1234", None),
            ("0.", Some(0)),
        ] {
            let text = format!("<sip:a@b>;q={s}");
            assert_eq!(NameAddr::parse(&text).unwrap().q(), q, "{s}");
        }
    }

    #[test]
    fn push_params() {
        let a = NameAddr::parse("<sip:alice@192.0.2.1;pn-provider=apns;pn-prid=00fc13adff78512;pn-param=ABCD1234.com.example.voip>").unwrap();
        let p = PushParams::from_uri(&a.parse_uri().unwrap()).unwrap();
        assert_eq!(
            (p.provider, p.prid, p.param),
            (
                "apns",
                Some("00fc13adff78512"),
                Some("ABCD1234.com.example.voip")
            )
        );
    }
}
