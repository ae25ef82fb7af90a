//! What makes a message "ours": the node's addresses, the loop detection hash (RFC 3261
//! §16.3 item 4, §16.6 item 8) and the signature on its Record-Route entries, keyed by
//! the node secret; `limes_sip::proxy::route` asks them through [`Identity`].

use std::borrow::Cow;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use arc_swap::ArcSwap;
use limes_cluster::NodeSecret;
use limes_sip::proxy::route::{self, Identity};
use limes_sip::uri::Uri;
use limes_sip::{HeaderName, Message};
use siphasher::sip::SipHasher13;

use crate::settings::{Listen, Transport};

/// The node's identity on the wire.
pub struct Local {
    listens: Vec<Listen>,
    aliases: Vec<String>,
    /// Addresses trunk destinations are told the node is at (NAT), kept by the trunks.
    advertised: Arc<ArcSwap<Vec<SocketAddr>>>,
    /// SipHash key derived from the node secret: the same across restarts and on every
    /// node of a cluster (DESIGN principle 9).
    key: [u8; 16],
    /// Seed of the loop-detection hash, from the same secret.
    loop_seed: usize,
    /// Each listening address and its `host:port` text, written once for the Vias and
    /// Record-Routes of every forwarded request.
    listen_texts: Vec<(SocketAddr, String)>,
    /// For each listening address and transport, written once: the sent-by part of this
    /// node's Via (`SIP/2.0/UDP host:port`) and the head of its Record-Route value.
    own_texts: Vec<OwnTexts>,
}

/// This node's texts for one listening address and transport.
struct OwnTexts {
    addr: SocketAddr,
    transport: Transport,
    sent_by: String,
    /// `<sip:host:port;lr;lm=` (with `;transport=tcp` for TCP): the signature and `>`
    /// follow.
    record_route_head: String,
}

impl Local {
    pub fn new(listens: Vec<Listen>, aliases: Vec<String>, secret: &NodeSecret) -> Self {
        let sub = secret.subkey("sip-identity");
        let mut key = [0u8; 16];
        key.copy_from_slice(&sub[..16]);
        let mut seed = [0u8; 8];
        seed.copy_from_slice(&sub[16..24]);
        let listen_texts = listens
            .iter()
            .map(|l| {
                let mut text = String::new();
                push_host_port(&mut text, l.addr);
                (l.addr, text)
            })
            .collect();
        let own_texts = listens
            .iter()
            .flat_map(|l| [Transport::Udp, Transport::Tcp].map(|t| (l.addr, t)))
            .map(|(addr, transport)| OwnTexts {
                addr,
                transport,
                sent_by: sent_by_text(transport, addr),
                record_route_head: record_route_head(addr, transport, ""),
            })
            .collect();
        Self {
            listens,
            aliases,
            advertised: Arc::default(),
            key,
            loop_seed: u64::from_le_bytes(seed) as usize,
            listen_texts,
            own_texts,
        }
    }

    /// Recognises the addresses in `advertised` as this node's too.
    pub fn with_advertised(self, advertised: Arc<ArcSwap<Vec<SocketAddr>>>) -> Self {
        Self { advertised, ..self }
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
        // A listening address as written: no address to parse.
        if self.listen_texts.iter().any(|(a, text)| {
            a.port() == port
                && text.len() > host.len()
                && text.as_bytes()[host.len()] == b':'
                && text.starts_with(host)
        }) {
            return true;
        }
        // Every match below needs a listening or advertised address with this port.
        let advertised = self.advertised.load();
        if !self.listens.iter().any(|l| l.addr.port() == port)
            && !advertised.iter().any(|a| a.port() == port)
        {
            return false;
        }
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
            || ip.is_some_and(|ip| advertised.iter().any(|a| a.ip() == ip && a.port() == port))
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
    /// different one (a new Request-URI) it spiralled. A deterministic function of those
    /// fields, the same on every node (seeded from the secret), not a signature: a fast
    /// hash (FxHash) rather than SipHash, folded to 32 bits.
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
        let mut h = rustc_hash::FxHasher::with_seed(self.loop_seed);
        for p in parts {
            h.write(p);
            h.write_u8(0xff); // no field holds it: fields cannot shift into each other
        }
        let v = h.finish();
        (v ^ (v >> 32)) as u32
    }

    /// The signature a Record-Route entry carries (`;lm=`): Limes routes an in-dialog
    /// request only through entries it wrote itself for that Call-ID (and flow token).
    pub fn route_signature(&self, call_id: &str, flow: &str) -> Signature {
        let h = self.hash(&[b"rr", call_id.as_bytes(), flow.as_bytes()]) as u32;
        let mut sig = [0u8; 8];
        route::put_hex(&mut sig, u64::from(h));
        Signature(sig)
    }

    /// A Record-Route value for the local address `addr` on `transport`. With `flow` (the
    /// TCP connection the dialog-creating request came on), the value carries a flow token
    /// (RFC 5626 §5.3 style) in its user part, so requests towards that side go back over
    /// the same connection.
    ///
    /// The value comes in two parts, its head and its signature (`>` ends it): the head of
    /// a listening address without a flow token was written once.
    pub fn record_route(
        &self,
        addr: SocketAddr,
        transport: Transport,
        call_id: &str,
        flow: Option<SocketAddr>,
    ) -> (Cow<'_, str>, Signature) {
        let token = flow.map(flow_token).unwrap_or_default();
        let sig = self.route_signature(call_id, &token);
        let head = match self.own(addr, transport) {
            Some(t) if token.is_empty() => Cow::Borrowed(t.record_route_head.as_str()),
            _ => Cow::Owned(record_route_head(addr, transport, &token)),
        };
        (head, sig)
    }

    fn own(&self, addr: SocketAddr, transport: Transport) -> Option<&OwnTexts> {
        self.own_texts
            .iter()
            .find(|t| t.addr == addr && t.transport == transport)
    }

    /// The sent-by part of this node's Via from `addr` on `transport`
    /// (`SIP/2.0/UDP host:port`): a listening address's was written once.
    pub fn sent_by(&self, transport: Transport, addr: SocketAddr) -> Cow<'_, str> {
        match self.own(addr, transport) {
            Some(t) => Cow::Borrowed(&t.sent_by),
            None => Cow::Owned(sent_by_text(transport, addr)),
        }
    }

    /// The Via value of a request this node sends from `addr`:
    /// `SIP/2.0/UDP host:port;branch=...`, `;rport` when asked. The branch is written in
    /// place ([`route::push_branch`]) from `(loop hash, context id, index)`.
    pub fn via(
        &self,
        transport: Transport,
        addr: SocketAddr,
        (loop_hash, id, index): (u32, u64, usize),
        rport: bool,
    ) -> String {
        let mut v = String::with_capacity(48 + route::BRANCH_LEN);
        v.push_str(&self.sent_by(transport, addr));
        v.push_str(";branch=");
        route::push_branch(&mut v, loop_hash, id, index);
        if rport {
            v.push_str(";rport");
        }
        v
    }

    /// A To tag for responses this node makes: the same for retransmissions of a request.
    pub fn local_tag(&self, msg: &Message) -> String {
        let h = self.hash(&[
            b"tag",
            msg.call_id().unwrap_or_default().as_bytes(),
            msg.from_tag().unwrap_or_default().as_bytes(),
        ]);
        limes_sip::proxy::local_tag(h)
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

/// A Record-Route signature (`lm=`): eight hex digits of a keyed hash, made without
/// allocating (one is made for every record-routed request and every Route checked).
pub struct Signature([u8; 8]);

impl Signature {
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or_default()
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

/// `<sip:[token@]host:port[;transport=tcp];lr;lm=`.
fn record_route_head(addr: SocketAddr, transport: Transport, token: &str) -> String {
    let mut rr = String::with_capacity(64 + token.len());
    rr.push_str("<sip:");
    if !token.is_empty() {
        rr.push_str(token);
        rr.push('@');
    }
    push_host_port(&mut rr, addr);
    if transport == Transport::Tcp {
        rr.push_str(";transport=tcp");
    }
    rr.push_str(";lr;lm=");
    rr
}

/// `SIP/2.0/UDP host:port`.
fn sent_by_text(transport: Transport, addr: SocketAddr) -> String {
    let mut text = String::with_capacity(48);
    text.push_str("SIP/2.0/");
    text.push_str(transport.via_token());
    text.push(' ');
    push_host_port(&mut text, addr);
    text
}

/// An IP address as a URI host (IPv6 in brackets).
pub fn host_text(ip: IpAddr) -> String {
    let mut s = String::with_capacity(24);
    push_host(&mut s, ip);
    s
}

/// Appends an IP address as a URI host (IPv6 in brackets), IPv4 without `core::fmt`.
pub fn push_host(out: &mut String, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            let mut digits = itoa::Buffer::new();
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                out.push_str(digits.format(octet));
            }
        }
        IpAddr::V6(v6) => {
            use std::fmt::Write;
            let _ = write!(out, "[{v6}]");
        }
    }
}

/// Appends `host:port`.
pub fn push_host_port(out: &mut String, addr: SocketAddr) {
    push_host(out, addr.ip());
    out.push(':');
    out.push_str(itoa::Buffer::new().format(addr.port()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_vias_and_record_routes_are_written_as_fmt_would() {
        for a in ["192.0.2.1:5060", "[2001:db8::1]:5061", "10.0.0.255:65535"] {
            let addr: SocketAddr = a.parse().unwrap();
            let mut s = String::new();
            push_host_port(&mut s, addr);
            assert_eq!(s, a);
        }
        let addr: SocketAddr = "192.0.2.1:5060".parse().unwrap();
        // From a listening address (its text written once) and from any other.
        let listening = Local::new(
            vec!["udp:192.0.2.1:5060".parse().unwrap()],
            Vec::new(),
            &NodeSecret::from_text("test"),
        );
        let elsewhere = Local::new(Vec::new(), Vec::new(), &NodeSecret::from_text("test"));
        for l in [&listening, &elsewhere] {
            assert_eq!(
                l.sent_by(Transport::Tcp, addr),
                "SIP/2.0/TCP 192.0.2.1:5060"
            );
            assert_eq!(
                l.via(Transport::Udp, addr, (0xa, 0xb, 2), true),
                "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKlm0000000a.000000000000000b.2;rport"
            );
            let (head, sig) = l.record_route(addr, Transport::Tcp, "c1", None);
            let rr = format!("{head}{}>", sig.as_str());
            assert_eq!(sig.as_str(), l.route_signature("c1", "").as_str());
            assert_eq!(
                rr,
                format!("<sip:192.0.2.1:5060;transport=tcp;lr;lm={}>", sig.as_str())
            );
            assert_eq!(sig.as_str().len(), 8);
            assert!(sig.as_str().bytes().all(|b| b.is_ascii_hexdigit()));
            // With a flow token the head names the flow, and the signature covers it.
            let remote: SocketAddr = "198.51.100.7:40000".parse().unwrap();
            let (head, with_token) = l.record_route(addr, Transport::Tcp, "c1", Some(remote));
            let token = flow_token(remote);
            assert_eq!(
                head,
                format!("<sip:{token}@192.0.2.1:5060;transport=tcp;lr;lm=")
            );
            assert_eq!(
                with_token.as_str(),
                l.route_signature("c1", &token).as_str()
            );
        }
    }

    #[test]
    fn rfc3261_16_6_8_loop_hash_follows_the_fields_and_is_the_same_on_every_node() {
        let parse = |s: &str| {
            Message::parse(
                bytes::Bytes::from(s.replace('\n', "\r\n")),
                &limes_sip::Limits::default(),
            )
            .unwrap()
        };
        let req = "INVITE sip:bob@b.example SIP/2.0\nVia: SIP/2.0/UDP a.example;branch=z9hG4bK1\nFrom: <sip:a@a>;tag=1\nTo: <sip:b@b>\nCall-ID: c1\nCSeq: 1 INVITE\nContent-Length: 0\n\n";
        let node =
            |secret: &str| Local::new(Vec::new(), Vec::new(), &NodeSecret::from_text(secret));
        let (a, b, other) = (node("cluster"), node("cluster"), node("another"));
        let h = a.loop_hash(&parse(req));
        assert_eq!(b.loop_hash(&parse(req)), h, "same secret, same hash");
        assert_ne!(other.loop_hash(&parse(req)), h, "seeded by the secret");
        // A new Via (a hop further) keeps it: the request looped.
        let hop = req.replace("Via: ", "Via: SIP/2.0/UDP p.example;branch=z9hG4bK2\nVia: ");
        assert_eq!(a.loop_hash(&parse(&hop)), h);
        // What decides where it goes changes it: the request spiralled.
        for (from, to) in [
            ("sip:bob@b.example", "sip:carol@b.example"),
            ("tag=1", "tag=2"),
            ("To: <sip:b@b>", "To: <sip:b@b>;tag=9"),
            ("Call-ID: c1", "Call-ID: c2"),
            ("1 INVITE\n", "2 INVITE\n"),
            ("Content-Length", "Proxy-Require: foo\nContent-Length"),
        ] {
            assert_ne!(a.loop_hash(&parse(&req.replace(from, to))), h, "{to}");
        }
    }

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
        // The listening address's text is compared whole, not as a prefix.
        let l = Local::new(
            vec![
                "udp:127.0.0.10:5070".parse().unwrap(),
                "udp:[2001:db8::1]:5070".parse().unwrap(),
            ],
            Vec::new(),
            &NodeSecret::from_text("test"),
        );
        assert!(!l.is_us("127.0.0.1", Some(5070)));
        assert!(l.is_us("127.0.0.10", Some(5070)));
        assert!(l.is_us("[2001:db8::1]", Some(5070)));
        assert!(
            l.is_us("[2001:DB8:0::1]", Some(5070)),
            "the same address written otherwise"
        );
        assert!(!l.is_us("[2001:db8::1]", Some(5071)));
    }
}
