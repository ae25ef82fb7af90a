//! SIP, SIPS and tel URIs (RFC 3261 §19.1, RFC 3966), borrowed from the message, with IPv6
//! references (RFC 5118) and escaped characters kept as written.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::params::Params;
use crate::text::find_byte;

/// The URI schemes Limes routes; any other scheme parses as [`Scheme::Other`] and is
/// answered 416 by the sanity checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Sip,
    Sips,
    Tel,
    Other,
}

/// A parsed URI. For `tel:` the number is in `user` and `host` is empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Uri<'a> {
    pub raw: &'a str,
    pub scheme: Scheme,
    pub user: Option<&'a str>,
    pub password: Option<&'a str>,
    /// A domain name, an IPv4 address, or an IPv6 reference with its brackets.
    pub host: &'a str,
    pub port: Option<u16>,
    pub params: Params<'a>,
    /// The `?h=v&...` part without the `?`.
    pub headers: Option<&'a str>,
}

/// Bytes no URI holds: controls, white space, `<`, `>`, `"` and DEL (tables: these checks
/// run on every byte of every URI read).
const NOT_IN_URI: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        t[c] = b <= b' ' || matches!(b, b'<' | b'>' | b'"' | 0x7f);
        c += 1;
    }
    t
};

/// Bytes of a host name or IPv4 address.
const IN_HOST: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        t[c] = b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_');
        c += 1;
    }
    t
};

/// Why a URI was refused; the text is the reason phrase of the 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UriError(pub &'static str);

impl<'a> Uri<'a> {
    pub fn parse(raw: &'a str) -> Result<Self, UriError> {
        if raw.is_empty() {
            return Err(UriError("empty URI"));
        }
        // One pass over the bytes checks each and notes where the delimiters are.
        let marks = Marks::scan(raw.as_bytes())?;
        let colon = marks.scheme_colon.ok_or(UriError("URI has no scheme"))?;
        let scheme_str = &raw[..colon];
        let scheme_ok = scheme_str
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic())
            && scheme_str
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
        if !scheme_ok {
            return Err(UriError("malformed URI scheme"));
        }
        let rest = &raw[colon + 1..];
        let scheme = if scheme_str.eq_ignore_ascii_case("sip") {
            Scheme::Sip
        } else if scheme_str.eq_ignore_ascii_case("sips") {
            Scheme::Sips
        } else if scheme_str.eq_ignore_ascii_case("tel") {
            Scheme::Tel
        } else {
            Scheme::Other
        };
        let mut uri = Uri {
            raw,
            scheme,
            user: None,
            password: None,
            host: "",
            port: None,
            params: Params::default(),
            headers: None,
        };
        match scheme {
            Scheme::Other => {
                if rest.is_empty() {
                    return Err(UriError("empty URI"));
                }
                uri.host = rest;
            }
            Scheme::Tel => {
                let (number, params) = split_once(rest, ';');
                let valid = !number.is_empty()
                    && number.bytes().all(|b| {
                        b.is_ascii_hexdigit()
                            || matches!(
                                b,
                                b'+' | b'-' | b'.' | b'(' | b')' | b'*' | b'#' | b'p' | b'w'
                            )
                    });
                if !valid {
                    return Err(UriError("malformed tel number"));
                }
                uri.user = Some(number);
                uri.params = Params::new(params.unwrap_or(""));
            }
            Scheme::Sip | Scheme::Sips => {
                // userinfo "@" hostport [";" params] ["?" headers]: the first `@` ends the
                // userinfo, then the first `?` the parameters and the first `;` the
                // hostport, whatever follows.
                let host_start = match marks.at {
                    Some(at) => {
                        let (user, password) = match marks.user_colon {
                            Some(c) => (&raw[colon + 1..c], Some(&raw[c + 1..at])),
                            None => (&raw[colon + 1..at], None),
                        };
                        if user.is_empty() {
                            return Err(UriError("empty user part in URI"));
                        }
                        uri.user = Some(user);
                        uri.password = password;
                        at + 1
                    }
                    None => colon + 1,
                };
                let hostpart_end = match marks.question {
                    Some(q) => {
                        uri.headers = Some(&raw[q + 1..]);
                        q
                    }
                    None => raw.len(),
                };
                let hostport_end = match marks.semicolon.filter(|&i| i < hostpart_end) {
                    Some(semi) => {
                        uri.params = Params::new(&raw[semi + 1..hostpart_end]);
                        semi
                    }
                    None => hostpart_end,
                };
                let hostport = &raw[host_start..hostport_end];
                let (host, port) = if hostport.starts_with('[') {
                    split_host_port(hostport)?
                } else {
                    let inside = |c: Option<usize>| c.filter(|&i| i < hostport_end);
                    if inside(marks.colons[1]).is_some() {
                        return Err(UriError("IPv6 address without brackets"));
                    }
                    match inside(marks.colons[0]) {
                        Some(c) => (
                            check_host(&raw[host_start..c])?,
                            Some(port_of(&raw[c + 1..hostport_end])?),
                        ),
                        None => (check_host(hostport)?, None),
                    }
                };
                uri.host = host;
                uri.port = port;
                uri.params
                    .validate()
                    .map_err(|_| UriError("malformed URI parameter"))?;
            }
        }
        Ok(uri)
    }

    pub fn is_sip(&self) -> bool {
        matches!(self.scheme, Scheme::Sip | Scheme::Sips)
    }

    /// The host as an IP address, when it is one (brackets removed for IPv6).
    pub fn host_ip(&self) -> Option<IpAddr> {
        host_ip(self.host)
    }

    /// `lr` present: the next hop is a loose router (RFC 3261 §16.4).
    pub fn is_loose_router(&self) -> bool {
        self.params.has("lr")
    }

    /// The `transport` URI parameter, lower-case names compared case-insensitively.
    pub fn transport(&self) -> Option<&'a str> {
        self.params.get("transport").flatten()
    }

    /// `maddr`, which overrides the host when sending (RFC 3261 §19.1.1).
    pub fn maddr(&self) -> Option<&'a str> {
        self.params.get("maddr").flatten()
    }

    /// [`Uri::transport`] and [`Uri::maddr`], what sending needs, in one pass.
    pub fn transport_and_maddr(&self) -> (Option<&'a str>, Option<&'a str>) {
        let [transport, maddr] = self.params.get_each(["transport", "maddr"]);
        (transport.flatten(), maddr.flatten())
    }
}

fn split_once(s: &str, sep: char) -> (&str, Option<&str>) {
    match find_byte(s, sep as u8) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    }
}

/// Splits `host[:port]` where host may be an IPv6 reference `[...]`. Used by URIs and Via
/// sent-by alike.
pub(crate) fn split_host_port(s: &str) -> Result<(&str, Option<u16>), UriError> {
    // The common case in one pass: host bytes, then nothing or a colon and a port.
    let b = s.as_bytes();
    let host_end = b
        .iter()
        .position(|&c| !IN_HOST[c as usize])
        .unwrap_or(b.len());
    if host_end > 0 {
        match b.get(host_end) {
            None => return Ok((s, None)),
            Some(b':') => {
                if let Some(port) = parse_port(&s[host_end + 1..]) {
                    return Ok((&s[..host_end], Some(port)));
                }
            }
            Some(_) => {}
        }
    }
    split_host_port_in_parts(s)
}

/// [`split_host_port`] for any text: an IPv6 reference, a malformed host or port.
fn split_host_port_in_parts(s: &str) -> Result<(&str, Option<u16>), UriError> {
    let (host, port) = if s.starts_with('[') {
        let close = find_byte(s, b']').ok_or(UriError("unterminated IPv6 reference"))?;
        let inner = &s[1..close];
        if inner.parse::<Ipv6Addr>().is_err() {
            return Err(UriError("malformed IPv6 reference"));
        }
        let after = &s[close + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(UriError("junk after IPv6 reference")),
        };
        (&s[..=close], port)
    } else {
        let (host, port) = split_once(s, ':');
        if port.is_some_and(|p| find_byte(p, b':').is_some()) {
            return Err(UriError("IPv6 address without brackets"));
        }
        (check_host(host)?, port)
    };
    let port = match port {
        None => None,
        Some(p) => Some(port_of(p)?),
    };
    Ok((host, port))
}

/// A host name or IPv4 address: not empty, of host bytes only.
fn check_host(host: &str) -> Result<&str, UriError> {
    if host.is_empty() || !host.bytes().all(|b| IN_HOST[b as usize]) {
        return Err(UriError("malformed host"));
    }
    Ok(host)
}

fn port_of(p: &str) -> Result<u16, UriError> {
    parse_port(p).ok_or(UriError("malformed port"))
}

/// A port: one to five digits, at most 65535.
pub(crate) fn parse_port(p: &str) -> Option<u16> {
    if p.len() > 5 {
        return None;
    }
    crate::text::parse_u32(p).and_then(|n| u16::try_from(n).ok())
}

/// Where a URI's delimiters are, found in one pass that also refuses the bytes no URI
/// holds: the scheme's colon, the first `@` after it, the first colon of the userinfo,
/// and after the userinfo (or the scheme when there is none) the first `?`, the first `;`
/// and the first two colons.
#[derive(Default)]
struct Marks {
    scheme_colon: Option<usize>,
    at: Option<usize>,
    user_colon: Option<usize>,
    question: Option<usize>,
    semicolon: Option<usize>,
    colons: [Option<usize>; 2],
}

impl Marks {
    fn scan(b: &[u8]) -> Result<Self, UriError> {
        let mut m = Marks::default();
        for (i, &c) in b.iter().enumerate() {
            match CLASS[c as usize] {
                PLAIN => continue,
                REFUSED => return Err(UriError("URI contains white space or delimiters")),
                _ => {}
            }
            match c {
                b':' if m.scheme_colon.is_none() => m.scheme_colon = Some(i),
                b':' => {
                    if m.colons[0].is_none() {
                        m.colons[0] = Some(i);
                    } else if m.colons[1].is_none() {
                        m.colons[1] = Some(i);
                    }
                }
                // Before the scheme's colon the scheme check refuses these anyway.
                b'@' if m.at.is_none() && m.scheme_colon.is_some() => {
                    m.at = Some(i);
                    m.user_colon = m.colons[0];
                    m.question = None;
                    m.semicolon = None;
                    m.colons = [None; 2];
                }
                b'?' => {
                    m.question.get_or_insert(i);
                }
                b';' => {
                    m.semicolon.get_or_insert(i);
                }
                _ => {}
            }
        }
        Ok(m)
    }
}

const PLAIN: u8 = 0;
const REFUSED: u8 = 1;
const MARK: u8 = 2;

/// Each byte's class for [`Marks::scan`]: plain, refused (not in any URI), or a delimiter.
const CLASS: [u8; 256] = {
    let mut t = [PLAIN; 256];
    let mut c = 0;
    while c < 256 {
        if NOT_IN_URI[c] {
            t[c] = REFUSED;
        }
        c += 1;
    }
    t[b':' as usize] = MARK;
    t[b'@' as usize] = MARK;
    t[b'?' as usize] = MARK;
    t[b';' as usize] = MARK;
    t
};

/// An IP address from a host, a `received` or a `maddr` value; brackets are optional for
/// IPv6 (RFC 5118 §4.5 shows both forms of `received`).
pub fn host_ip(host: &str) -> Option<IpAddr> {
    if let Some(v4) = dotted_quad(host.as_bytes()) {
        return Some(IpAddr::V4(v4));
    }
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse().ok()
}

/// Four decimal octets and three dots in one pass, as the standard parser reads them (no
/// leading zeros, at most 255), without its generic machinery: nearly every address in a
/// message is one. `None` for anything else, which the standard parser then decides.
fn dotted_quad(s: &[u8]) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut parts = s.split(|&c| c == b'.');
    for octet in &mut octets {
        let digits = parts.next()?;
        if digits.is_empty() || digits.len() > 3 || (digits.len() > 1 && digits[0] == b'0') {
            return None;
        }
        let mut n = 0u16;
        for &d in digits {
            if !d.is_ascii_digit() {
                return None;
            }
            n = n * 10 + u16::from(d - b'0');
        }
        *octet = u8::try_from(n).ok()?;
    }
    parts.next().is_none().then_some(Ipv4Addr::from(octets))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (uri, scheme, user, host, port)
    type Row = (
        &'static str,
        Scheme,
        Option<&'static str>,
        &'static str,
        Option<u16>,
    );

    #[test]
    fn table() {
        let ok: &[Row] = &[
            (
                "sip:alice@atlanta.example.com",
                Scheme::Sip,
                Some("alice"),
                "atlanta.example.com",
                None,
            ),
            (
                "SIPS:bob@192.0.2.4:5061;transport=tcp",
                Scheme::Sips,
                Some("bob"),
                "192.0.2.4",
                Some(5061),
            ),
            (
                "sip:[2001:db8::10]:5070",
                Scheme::Sip,
                None,
                "[2001:db8::10]",
                Some(5070),
            ),
            (
                "sip:[2001:db8::10:5070]",
                Scheme::Sip,
                None,
                "[2001:db8::10:5070]",
                None,
            ),
            (
                "sip:user;par=u%40example.net@example.com",
                Scheme::Sip,
                Some("user;par=u%40example.net"),
                "example.com",
                None,
            ),
            (
                "sip:sips%3Auser%40example.com@example.net",
                Scheme::Sip,
                Some("sips%3Auser%40example.com"),
                "example.net",
                None,
            ),
            (
                "tel:+1-201-555-0123",
                Scheme::Tel,
                Some("+1-201-555-0123"),
                "",
                None,
            ),
            (
                "tel:7042;phone-context=example.com",
                Scheme::Tel,
                Some("7042"),
                "",
                None,
            ),
            (
                "sip:+13035551111@ift.client.example.net;user=phone",
                Scheme::Sip,
                Some("+13035551111"),
                "ift.client.example.net",
                None,
            ),
            (
                "nobodyknowsthisscheme:totallyopaquecontent",
                Scheme::Other,
                None,
                "totallyopaquecontent",
                None,
            ),
        ];
        for (raw, scheme, user, host, port) in ok {
            let u = Uri::parse(raw).unwrap_or_else(|e| panic!("{raw}: {e}"));
            assert_eq!(
                (u.scheme, u.user, u.host, u.port),
                (*scheme, *user, *host, *port),
                "{raw}"
            );
        }
        let bad: &[(&str, &str)] = &[
            ("sip:2001:db8::10", "IPv6 address without brackets"),
            (
                "sip:user@[2001:db8:::192.0.2.1]",
                "malformed IPv6 reference",
            ),
            (
                "<sip:user@example.com>",
                "URI contains white space or delimiters",
            ),
            ("sip:user@example.com:99999", "malformed port"),
            ("sip:@example.com", "empty user part in URI"),
            (
                "sip:user@exa mple.com",
                "URI contains white space or delimiters",
            ),
            ("tel:", "malformed tel number"),
            ("sip:a@b;;", "malformed URI parameter"),
            ("sip:a@b@c", "malformed host"),
            ("sip:host:", "malformed port"),
            ("sip:host:123456", "malformed port"),
            ("sip:host:5060:5061", "IPv6 address without brackets"),
            ("sip:;lr", "malformed host"),
            ("sip:", "malformed host"),
            ("s@p:host", "malformed URI scheme"),
            ("hostonly", "URI has no scheme"),
        ];
        for (raw, why) in bad {
            assert_eq!(Uri::parse(raw).map(|_| ()), Err(UriError(why)), "{raw}");
        }
    }

    /// Where each part ends: the first `@` closes the userinfo, then the first `?` the
    /// parameters and the first `;` the host and port, whatever comes before them.
    #[test]
    fn delimiters() {
        type Parts = (
            Option<&'static str>,
            Option<&'static str>,
            &'static str,
            Option<u16>,
            &'static str,
            Option<&'static str>,
        );
        let table: &[(&str, Parts)] = &[
            (
                "sip:alice:secret@host:5070;transport=tcp?subject=hi",
                (
                    Some("alice"),
                    Some("secret"),
                    "host",
                    Some(5070),
                    "transport=tcp",
                    Some("subject=hi"),
                ),
            ),
            ("sip:a?b@c", (Some("a?b"), None, "c", None, "", None)),
            ("sip:a;b@c:1", (Some("a;b"), None, "c", Some(1), "", None)),
            (
                "sip:host?x=a@b",
                (Some("host?x=a"), None, "b", None, "", None),
            ),
            (
                "sip:host?h=a;b",
                (None, None, "host", None, "", Some("h=a;b")),
            ),
            (
                "sip:host;p=1?h=2:3",
                (None, None, "host", None, "p=1", Some("h=2:3")),
            ),
            (
                "sip:[2001:db8::1]:5061;lr",
                (None, None, "[2001:db8::1]", Some(5061), "lr", None),
            ),
            ("sip:u:@h", (Some("u"), Some(""), "h", None, "", None)),
            ("sip:h:65535", (None, None, "h", Some(65535), "", None)),
        ];
        for (raw, want) in table {
            let u = Uri::parse(raw).unwrap_or_else(|e| panic!("{raw}: {e}"));
            assert_eq!(
                (
                    u.user,
                    u.password,
                    u.host,
                    u.port,
                    u.params.as_str(),
                    u.headers
                ),
                *want,
                "{raw}"
            );
        }
    }

    #[test]
    fn host_ip_accepts_both_ipv6_forms() {
        assert_eq!(host_ip("[2001:db8::9:255]"), host_ip("2001:db8::9:255"));
        assert!(host_ip("192.0.2.1").is_some());
        assert!(host_ip("example.com").is_none());
    }

    proptest::proptest! {
        /// The one-pass dotted quad reads what the standard parser reads, and only that.
        #[test]
        fn dotted_quad_agrees_with_the_standard_parser(s in r"[0-9.]{0,16}|[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}") {
            let std_v4 = s.parse::<Ipv4Addr>().ok();
            proptest::prop_assert_eq!(dotted_quad(s.as_bytes()), std_v4);
            proptest::prop_assert_eq!(host_ip(&s), s.parse::<IpAddr>().ok());
        }

        /// The one-pass split of `host[:port]` answers as the general one does.
        #[test]
        fn one_pass_host_port_equals_the_general_split(s in r"[a1.:\[\]_ x-]{0,12}|[a-z0-9.]{1,8}:[0-9]{0,7}") {
            proptest::prop_assert_eq!(split_host_port(&s), split_host_port_in_parts(&s));
        }
    }
}
