//! The Via header (RFC 3261 §20.42, RFC 3581 `rport`, RFC 5118 IPv6 `received`).

use std::net::IpAddr;

use crate::params::{Found, Params};
use crate::text::{is_token_byte, is_ws, trim};
use crate::uri::{host_ip, split_host_port, UriError};

/// The magic cookie that marks an RFC 3261 branch (§8.1.1.7).
pub const BRANCH_COOKIE: &str = "z9hG4bK";

/// One Via value, borrowed from the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Via<'a> {
    /// `SIP/2.0` as sent (white space around the slashes removed from view, not from the
    /// message).
    pub protocol: &'a str,
    pub version: &'a str,
    /// The transport token, such as `UDP`, `TCP`, `TLS`, `SCTP`, `WS`, or any other.
    pub transport: &'a str,
    /// The sent-by host: a name, an IPv4 address or an IPv6 reference with brackets.
    pub host: &'a str,
    pub port: Option<u16>,
    pub params: Params<'a>,
    /// The branch parameter, found once when the value is parsed: transaction matching,
    /// loop detection and response routing each read it.
    pub(crate) branch: Option<&'a str>,
    /// The rport parameter, found in the same pass: its name as written (where a
    /// forwarded copy fills it in) and its value, `None` for the flag.
    pub(crate) rport: Option<Found<'a>>,
    /// The parameters' grammar, checked in the same pass.
    pub(crate) params_checked: Result<(), &'static str>,
    /// A `received` parameter is present (found in the same pass): without it and
    /// `rport`, a forwarded request's top Via is copied as it came.
    pub(crate) has_received: bool,
}

impl<'a> Via<'a> {
    /// `sent-protocol LWS sent-by *( SEMI via-params )`, white space allowed around the
    /// slashes (RFC 4475 `wsinv`). One pass over the bytes: this runs for every message.
    pub fn parse(s: &'a str) -> Result<Self, UriError> {
        const PROTOCOL: UriError = UriError("malformed Via sent-protocol");
        let b = s.as_bytes();
        let mut i = 0;
        let token = |i: &mut usize, slash: bool| -> Result<&'a str, UriError> {
            while *i < b.len() && is_ws(b[*i]) {
                *i += 1;
            }
            let start = *i;
            while *i < b.len() && is_token_byte(b[*i]) {
                *i += 1;
            }
            let t = &s[start..*i];
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
            (&s[..3], &s[4..7])
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
        // Parameters are read lazily; the sanity rules check their grammar
        // (`Params::validate`) once per request, off the transaction-matching path.
        let params = Params::new(params);
        let (params_checked, [branch, rport, received]) =
            params.validate_and_find(["branch", "rport", "received"]);
        Ok(Via {
            protocol,
            version,
            transport,
            host,
            port,
            branch: branch.and_then(|(_, value)| value),
            rport,
            params_checked,
            has_received: received.is_some(),
            params,
        })
    }

    /// The grammar of the parameters ([`Params::validate`]), checked when parsed.
    pub fn check_params(&self) -> Result<(), &'static str> {
        self.params_checked
    }

    pub fn branch(&self) -> Option<&'a str> {
        self.branch
    }

    /// True when the branch carries the RFC 3261 magic cookie; otherwise transactions are
    /// matched the RFC 2543 way (§17.2.3).
    pub fn has_rfc3261_branch(&self) -> bool {
        self.branch().is_some_and(|b| b.starts_with(BRANCH_COOKIE))
    }

    /// The `received` parameter as an address, brackets optional (RFC 5118 §4.5).
    pub fn received(&self) -> Option<IpAddr> {
        self.params.get("received").flatten().and_then(host_ip)
    }

    /// `None`: no rport; `Some(None)`: rport asked for (RFC 3581 §3); `Some(Some(p))`: filled.
    pub fn rport(&self) -> Option<Option<u16>> {
        self.rport.map(|(_, v)| v.and_then(crate::uri::parse_port))
    }

    pub fn maddr(&self) -> Option<&'a str> {
        self.params.get("maddr").flatten()
    }

    /// Transport names compare case-insensitively.
    pub fn is_transport(&self, t: &str) -> bool {
        self.transport.eq_ignore_ascii_case(t)
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
            (v.protocol, v.version, v.transport, v.host, v.port),
            ("SIP", "2.0", "UDP", "192.0.2.2", None)
        );
        assert_eq!(v.branch(), Some("390skdjuw"));
        assert!(!v.has_rfc3261_branch());

        let v = Via::parse("SIP/2.0/TCP [2001:db8::9:1]:5061;branch=z9hG4bKas3-111;received=[2001:db8::9:255];rport=5080").unwrap();
        assert_eq!((v.host, v.port), ("[2001:db8::9:1]", Some(5061)));
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
        assert!(separators.params.validate().is_err());
    }
}
