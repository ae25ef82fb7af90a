//! What makes a message "ours": the node's addresses, the loop detection hash (RFC 3261
//! §16.3 item 4, §16.6 item 8) and the signature on its Record-Route entries, keyed by
//! the node secret; `limes_sip::proxy::route` asks them through [`Identity`].

use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};

use limes_cluster::NodeSecret;
use limes_sip::proxy::route::Identity;
use limes_sip::uri::Uri;
use limes_sip::{HeaderName, Message};
use siphasher::sip::SipHasher13;

use crate::settings::{Listen, Transport};

/// The node's identity on the wire.
pub struct Local {
    listens: Vec<Listen>,
    aliases: Vec<String>,
    /// SipHash key derived from the node secret: the same across restarts and on every
    /// node of a cluster (DESIGN principle 9).
    key: [u8; 16],
}

impl Local {
    pub fn new(listens: Vec<Listen>, aliases: Vec<String>, secret: &NodeSecret) -> Self {
        let sub = secret.subkey("sip-identity");
        let mut key = [0u8; 16];
        key.copy_from_slice(&sub[..16]);
        Self {
            listens,
            aliases,
            key,
        }
    }

    /// A keyed 64-bit hash (SipHash-1-3 keyed by the node secret), for identifiers a peer
    /// must not be able to forge or collide, and that this node or its cluster peers must
    /// recognise after a restart: branches, loop hashes, Record-Route signatures, tags.
    pub fn hash(&self, parts: &[&[u8]]) -> u64 {
        let mut h = SipHasher13::new_with_key(&self.key);
        for p in parts {
            p.hash(&mut h);
        }
        h.finish()
    }

    /// Whether `host[:port]` names this node.
    pub fn is_us(&self, host: &str, port: Option<u16>) -> bool {
        let port = port.unwrap_or(5060);
        let ip = limes_sip::uri::host_ip(host);
        let addr_match = self.listens.iter().any(|l| {
            l.addr.port() == port
                && match ip {
                    Some(ip) => {
                        l.addr.ip() == ip || (l.addr.ip().is_unspecified() && ip.is_loopback())
                    }
                    None => false,
                }
        });
        addr_match
            || (ip.is_none()
                && self.aliases.iter().any(|a| a.eq_ignore_ascii_case(host))
                && self.listens.iter().any(|l| l.addr.port() == port))
    }

    /// Whether a destination address is one of this node's sockets.
    pub fn is_us_addr(&self, addr: SocketAddr) -> bool {
        self.listens.iter().any(|l| {
            l.addr == addr
                || (l.addr.ip().is_unspecified()
                    && l.addr.port() == addr.port()
                    && addr.ip().is_loopback())
        })
    }

    pub fn uri_is_us(&self, uri: &Uri<'_>) -> bool {
        uri.is_sip() && self.is_us(uri.host, uri.port)
    }

    /// Loop detection hash over what decides where a request goes (§16.6 item 8): the
    /// Request-URI, From tag, To tag, Call-ID, CSeq number, Proxy-Require and
    /// Proxy-Authorization. A request that comes back with the same value looped; with a
    /// different one (a new Request-URI) it spiralled.
    pub fn loop_hash(&self, msg: &Message) -> u32 {
        let seq = msg.cseq().and_then(Result::ok).map_or(0, |c| c.seq);
        let parts: [&[u8]; 7] = [
            msg.request_uri_str().unwrap_or_default().as_bytes(),
            msg.from_tag().unwrap_or_default().as_bytes(),
            msg.to_tag().unwrap_or_default().as_bytes(),
            msg.call_id().unwrap_or_default().as_bytes(),
            &seq.to_be_bytes(),
            msg.get(HeaderName::ProxyRequire)
                .unwrap_or_default()
                .as_bytes(),
            msg.get(HeaderName::ProxyAuthorization)
                .unwrap_or_default()
                .as_bytes(),
        ];
        self.hash(&parts) as u32
    }

    /// The signature a Record-Route entry carries (`;lm=`): Limes routes an in-dialog
    /// request only through entries it wrote itself for that Call-ID (and flow token).
    pub fn route_signature(&self, call_id: &str, flow: &str) -> String {
        format!(
            "{:08x}",
            self.hash(&[b"rr", call_id.as_bytes(), flow.as_bytes()]) as u32
        )
    }

    /// A Record-Route value for the local address `addr` on `transport`. With `flow` (the
    /// TCP connection the dialog-creating request came on), the value carries a flow token
    /// (RFC 5626 §5.3 style) in its user part, so requests towards that side go back over
    /// the same connection.
    pub fn record_route(
        &self,
        addr: SocketAddr,
        transport: Transport,
        call_id: &str,
        flow: Option<SocketAddr>,
    ) -> String {
        let host = host_text(addr.ip());
        let token = flow.map(flow_token).unwrap_or_default();
        let sig = self.route_signature(call_id, &token);
        let user = if token.is_empty() {
            String::new()
        } else {
            format!("{token}@")
        };
        match transport {
            Transport::Udp => format!("<sip:{user}{host}:{};lr;lm={sig}>", addr.port()),
            Transport::Tcp => format!(
                "<sip:{user}{host}:{};transport=tcp;lr;lm={sig}>",
                addr.port()
            ),
        }
    }

    /// A To tag for responses this node makes: the same for retransmissions of a request.
    pub fn local_tag(&self, msg: &Message) -> String {
        let h = self.hash(&[
            b"tag",
            msg.call_id().unwrap_or_default().as_bytes(),
            msg.from_tag().unwrap_or_default().as_bytes(),
        ]);
        format!("lm{h:016x}")
    }
}

/// What route processing (`limes_sip::proxy::route`) asks of the node.
impl Identity for Local {
    fn is_us(&self, host: &str, port: Option<u16>) -> bool {
        Local::is_us(self, host, port)
    }

    fn signed(&self, uri: &Uri<'_>, call_id: &str) -> Option<Option<SocketAddr>> {
        let token = uri
            .user
            .filter(|u| u.starts_with("fl-"))
            .unwrap_or_default();
        let sig = self.route_signature(call_id, token);
        (uri.params.get("lm") == Some(Some(sig.as_str()))).then(|| parse_flow_token(token))
    }

    fn loop_hash(&self, msg: &Message) -> u32 {
        Local::loop_hash(self, msg)
    }
}

/// A flow token: `fl-` and the hex of the remote address, e.g. `fl-3132372e...`.
pub fn flow_token(remote: SocketAddr) -> String {
    let text = remote.to_string();
    let mut t = String::with_capacity(3 + 2 * text.len());
    t.push_str("fl-");
    for b in text.bytes() {
        t.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        t.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
    }
    t
}

/// The remote address a flow token names.
pub fn parse_flow_token(token: &str) -> Option<SocketAddr> {
    let hex = token.strip_prefix("fl-")?;
    if hex.len() % 2 != 0 || hex.len() > 200 {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()?.parse().ok()
}

/// An IP address as a URI host (IPv6 in brackets).
pub fn host_text(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_tokens_round_trip() {
        for a in ["127.0.0.1:40312", "[2001:db8::1]:5061"] {
            let addr: SocketAddr = a.parse().unwrap();
            assert_eq!(parse_flow_token(&flow_token(addr)), Some(addr));
        }
        assert_eq!(parse_flow_token("fl-zz"), None);
        assert_eq!(parse_flow_token("alice"), None);
    }

    #[test]
    fn addresses_and_aliases() {
        let l = Local::new(
            vec!["udp:127.0.0.1:5070".parse().unwrap()],
            vec!["sbc.example.net".into()],
            &NodeSecret::from_text("test"),
        );
        assert!(l.is_us("127.0.0.1", Some(5070)));
        assert!(!l.is_us("127.0.0.1", None));
        assert!(!l.is_us("127.0.0.2", Some(5070)));
        assert!(l.is_us("SBC.example.net", Some(5070)));
        assert!(!l.is_us("other.example.net", Some(5070)));
    }
}
