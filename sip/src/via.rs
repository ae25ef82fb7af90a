//! The Via header (RFC 3261 §20.42, RFC 3581 `rport`, RFC 5118 IPv6 `received`).

use std::net::IpAddr;

use crate::message::{span_in, Span};
use crate::params::{Found, Params};
use crate::text::{is_token_byte, is_ws, trim};
use crate::uri::{host_ip, split_host_port, UriError};

/// The magic cookie that marks an RFC 3261 branch (§8.1.1.7).
pub const BRANCH_COOKIE: &str = "z9hG4bK";

/// One Via value, borrowed from the message. Its parts are kept as spans of `src` and
/// sliced when asked for: the top Via of a message is read by sanity, transaction
/// matching, response routing and the forwarded copy, and is rebuilt for each from spans
/// kept once (no slicing, no copying of eight string views) rather than parsed again.
#[derive(Clone, Copy)]
pub struct Via<'a> {
    /// The text the spans index: the Via value itself, or the whole header section for a
    /// message's top Via.
    src: &'a str,
    at: ViaAt,
}

/// Where the parts of a Via lie in the text it was parsed from, and what the parameters'
/// single pass found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ViaAt {
    protocol: Span,
    version: Span,
    transport: Span,
    host: Span,
    port: Option<u16>,
    params: Span,
    branch: Option<Span>,
    /// The rport parameter's name as written (where a forwarded copy fills it in) and its
    /// value, `None` for the flag.
    rport: Option<(Span, Option<Span>)>,
    /// The parameters' grammar.
    params_checked: Result<(), &'static str>,
    /// A `received` parameter is present: without it and `rport`, a forwarded request's
    /// top Via is copied as it came.
    has_received: bool,
}

/// The parts, not the spans: a Via parsed from its value equals the same Via kept as spans
/// of the header section.
impl PartialEq for Via<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.protocol() == other.protocol()
            && self.version() == other.version()
            && self.transport() == other.transport()
            && self.host() == other.host()
            && self.port() == other.port()
            && self.params() == other.params()
            && self.branch() == other.branch()
            && self.rport_found() == other.rport_found()
            && self.check_params() == other.check_params()
            && self.has_received() == other.has_received()
    }
}

impl Eq for Via<'_> {}

impl std::fmt::Debug for Via<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Via")
            .field("protocol", &self.protocol())
            .field("version", &self.version())
            .field("transport", &self.transport())
            .field("host", &self.host())
            .field("port", &self.port())
            .field("params", &self.params().as_str())
            .field("branch", &self.branch())
            .field("rport", &self.rport_found())
            .field("params_checked", &self.check_params())
            .field("has_received", &self.has_received())
            .finish()
    }
}

impl ViaAt {
    /// The same Via within a larger text in which its value starts at `offset`.
    pub(crate) fn shifted(self, offset: u32) -> Self {
        let s = |span: Span| span.shifted(offset);
        Self {
            protocol: s(self.protocol),
            version: s(self.version),
            transport: s(self.transport),
            host: s(self.host),
            params: s(self.params),
            branch: self.branch.map(s),
            rport: self.rport.map(|(n, v)| (s(n), v.map(s))),
            ..self
        }
    }
}

impl<'a> Via<'a> {
    /// `sent-protocol LWS sent-by *( SEMI via-params )`, white space allowed around the
    /// slashes (RFC 4475 `wsinv`). One pass over the bytes: this runs for every message.
    pub fn parse(s: &'a str) -> Result<Self, UriError> {
        const PROTOCOL: UriError = UriError("malformed Via sent-protocol");
        let b = s.as_bytes();
        let mut i = 0;
        let token = |i: &mut usize, slash: bool| -> Result<Span, UriError> {
            while *i < b.len() && is_ws(b[*i]) {
                *i += 1;
            }
            let start = *i;
            while *i < b.len() && is_token_byte(b[*i]) {
                *i += 1;
            }
            let t = Span::new(start..*i);
            while *i < b.len() && is_ws(b[*i]) {
                *i += 1;
            }
            if slash {
                if b.get(*i) != Some(&b'/') {
                    return Err(PROTOCOL);
                }
                *i += 1;
            }
            if t.is_empty() {
                return Err(PROTOCOL);
            }
            Ok(t)
        };
        // Nearly every Via starts `SIP/2.0/` exactly: taken whole, the tokens are known.
        let (protocol, version) = if b.starts_with(b"SIP/2.0/") {
            i = 8;
            (Span::new(0..3), Span::new(4..7))
        } else {
            (token(&mut i, true)?, token(&mut i, true)?)
        };
        let transport = token(&mut i, false)?;
        let rest = &s[i..];
        if rest.is_empty() || i == 0 || !is_ws(b[i - 1]) {
            return Err(UriError("Via has no sent-by"));
        }
        let (sent_by, params) = match crate::text::find_byte(rest, b';') {
            Some(i) => (trim(&rest[..i]), &rest[i + 1..]),
            None => (trim(rest), ""),
        };
        let (host, port) =
            split_host_port(sent_by).map_err(|_| UriError("malformed Via sent-by"))?;
        let at = |part: &str| span_in(s, part);
        let (params_checked, [branch, rport, received]) =
            Params::new(params).validate_and_find(["branch", "rport", "received"]);
        Ok(Via {
            src: s,
            at: ViaAt {
                protocol,
                version,
                transport,
                host: at(host),
                port,
                params: at(params),
                branch: branch.and_then(|(_, value)| value).map(at),
                rport: rport.map(|(name, value)| (at(name), value.map(at))),
                params_checked,
                has_received: received.is_some(),
            },
        })
    }

    /// A Via from spans of `src` found by an earlier parse.
    pub(crate) fn from_spans(src: &'a str, at: ViaAt) -> Self {
        Self { src, at }
    }

    pub(crate) fn spans(&self) -> ViaAt {
        self.at
    }

    fn text(&self, span: Span) -> &'a str {
        self.src.get(span.range()).unwrap_or_default()
    }

    /// `SIP` as sent (white space around the slashes removed from view, not from the
    /// message).
    pub fn protocol(&self) -> &'a str {
        self.text(self.at.protocol)
    }

    pub fn version(&self) -> &'a str {
        self.text(self.at.version)
    }

    /// The transport token, such as `UDP`, `TCP`, `TLS`, `SCTP`, `WS`, or any other.
    pub fn transport(&self) -> &'a str {
        self.text(self.at.transport)
    }

    /// The sent-by host: a name, an IPv4 address or an IPv6 reference with brackets.
    pub fn host(&self) -> &'a str {
        self.text(self.at.host)
    }

    pub fn port(&self) -> Option<u16> {
        self.at.port
    }

    pub fn params(&self) -> Params<'a> {
        Params::new(self.text(self.at.params))
    }

    /// The rport parameter as found: its name as written and its value.
    pub(crate) fn rport_found(&self) -> Option<Found<'a>> {
        self.at
            .rport
            .map(|(name, value)| (self.text(name), value.map(|v| self.text(v))))
    }

    /// A `received` parameter is present.
    pub(crate) fn has_received(&self) -> bool {
        self.at.has_received
    }

    /// The grammar of the parameters ([`Params::validate`]), checked when parsed.
    pub fn check_params(&self) -> Result<(), &'static str> {
        self.at.params_checked
    }

    pub fn branch(&self) -> Option<&'a str> {
        self.at.branch.map(|b| self.text(b))
    }

    /// True when the branch carries the RFC 3261 magic cookie; otherwise transactions are
    /// matched the RFC 2543 way (§17.2.3).
    pub fn has_rfc3261_branch(&self) -> bool {
        self.branch().is_some_and(|b| b.starts_with(BRANCH_COOKIE))
    }

    /// The `received` parameter as an address, brackets optional (RFC 5118 §4.5).
    pub fn received(&self) -> Option<IpAddr> {
        self.params().get("received").flatten().and_then(host_ip)
    }

    /// `None`: no rport; `Some(None)`: rport asked for (RFC 3581 §3); `Some(Some(p))`: filled.
    pub fn rport(&self) -> Option<Option<u16>> {
        self.rport_found()
            .map(|(_, v)| v.and_then(crate::uri::parse_port))
    }

    pub fn maddr(&self) -> Option<&'a str> {
        self.params().get("maddr").flatten()
    }

    /// Transport names compare case-insensitively.
    pub fn is_transport(&self, t: &str) -> bool {
        self.transport().eq_ignore_ascii_case(t)
    }

    /// The port a response goes to when the Via has none: 5061 for TLS, else 5060.
    pub fn default_port(&self) -> u16 {
        if self.is_transport("TLS") {
            5061
        } else {
            5060
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let v = Via::parse("SIP  /   2.0   / UDP    192.0.2.2;branch=390skdjuw").unwrap();
        assert_eq!(
            (v.protocol(), v.version(), v.transport(), v.host(), v.port()),
            ("SIP", "2.0", "UDP", "192.0.2.2", None)
        );
        assert_eq!(v.branch(), Some("390skdjuw"));
        assert!(!v.has_rfc3261_branch());

        let v = Via::parse("SIP/2.0/TCP [2001:db8::9:1]:5061;branch=z9hG4bKas3-111;received=[2001:db8::9:255];rport=5080").unwrap();
        assert_eq!((v.host(), v.port()), ("[2001:db8::9:1]", Some(5061)));
        assert!(v.has_rfc3261_branch());
        assert_eq!(v.received(), "2001:db8::9:255".parse().ok());
        assert_eq!(v.rport(), Some(Some(5080)));

        let v = Via::parse("SIP/2.0/UDP host.example.com;rport;branch=z9hG4bKx").unwrap();
        assert_eq!(v.rport(), Some(None));
        assert_eq!(v.default_port(), 5060);

        for bad in ["SIP/2.0/UDP", "SIP/2.0 UDP host", "SIP/2.0/UDP 2001:db8::1"] {
            assert!(Via::parse(bad).is_err(), "{bad}");
        }
        let separators = Via::parse("SIP/2.0/UDP 192.0.2.15;;,;,,").unwrap();
        assert!(separators.params().validate().is_err());
    }
}
