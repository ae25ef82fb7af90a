//! Where a received request goes next, as a pure decision over the message and the node's
//! identity: loop detection (§16.3 item 4), Route processing (§16.4: this node's own
//! entries popped, a strict router's rewritten Request-URI restored), the next hop (§16.6
//! steps 6-7: a loose or strict Route value, else the Request-URI in a dialog, else the
//! policy's targets), and where a response goes when no transaction holds it (§16.7 step
//! 10, §18.2.2). Each URI is parsed once per request.

use std::net::{IpAddr, SocketAddr};

use crate::uri::Uri;
use crate::via::Via;
use crate::{Message, Method};

/// Every branch this node writes starts with this (RFC 3261 magic cookie + `lm`).
pub const BRANCH_PREFIX: &str = "z9hG4bKlm";

/// What route processing needs to know about the node.
pub trait Identity {
    /// Whether `host[:port]` names this node.
    fn is_us(&self, host: &str, port: Option<u16>) -> bool;
    /// `Some(flow)` when `uri` is a Record-Route entry this node signed for `call_id`
    /// (`flow`: the connection its flow token names, if any).
    fn signed(&self, uri: &Uri<'_>, call_id: &str) -> Option<Option<SocketAddr>>;
    /// The loop detection hash over what decides where a request goes (§16.6 item 8).
    fn loop_hash(&self, msg: &Message) -> u32;
}

/// What Route processing decided.
#[derive(Debug)]
pub enum Decision<'m> {
    /// An out-of-dialog REGISTER with no Route set left: for the registrar.
    Register,
    /// An initial request with no Route set left: the policy chooses the targets.
    Initial,
    /// To the next Route value (§16.6 step 6); `strict`: it is a strict router, which gets
    /// the Request-URI it names while the old one goes to the end of the Route set (step 7).
    Route { uri: Uri<'m>, strict: bool },
    /// Inside a dialog with no Route left: to the Request-URI (the real one, where a strict
    /// router had hidden it).
    RequestUri { uri: Uri<'m> },
    /// Not forwarded: answer this.
    Refuse { status: u16, reason: &'static str },
}

/// A routed request: the decision and the edits it implies.
#[derive(Debug)]
pub struct Routing<'m> {
    pub decision: Decision<'m>,
    /// Route values to remove from the top: this node's, and a strict next hop's.
    pub popped: usize,
    /// The Request-URI a strict router moved to the end of the Route set (§16.4): it
    /// becomes the Request-URI again and that last Route value goes.
    pub restored_ruri: Option<&'m str>,
    /// The last of this node's entries named a connection (RFC 5626 flow token): a
    /// request towards that side goes back over it.
    pub flow: Option<SocketAddr>,
    /// One of this node's entries was signed for this Call-ID: the path is ours.
    pub signed: bool,
}

impl Routing<'_> {
    fn refuse(status: u16, reason: &'static str) -> Self {
        Self {
            decision: Decision::Refuse { status, reason },
            popped: 0,
            restored_ruri: None,
            flow: None,
            signed: false,
        }
    }
}

/// Decides where `msg` goes. `record_route`: this node records routes, so a dialog's
/// requests must come through its signed entries (otherwise any Route set of ours, or a
/// To tag, is trusted).
pub fn route<'m>(msg: &'m Message, id: &impl Identity, record_route: bool) -> Routing<'m> {
    let Some(Ok(ruri)) = msg.request_uri() else {
        return Routing::refuse(400, "Malformed Request-URI");
    };
    let call_id = msg.call_id().unwrap_or_default();
    let in_dialog = msg.to_tag().is_some();
    let mut routes = msg.routes().map(|r| r.ok().map(|a| a.uri));
    // §16.4: this node's entries at the top are removed.
    let mut popped = 0;
    let mut signed = false;
    let mut flow = None;
    // The first Route value that is not ours, parsed once.
    let mut next: Option<(&'m str, Result<Uri<'m>, crate::uri::UriError>)> = None;
    for r in routes.by_ref() {
        let Some(text) = r else {
            return Routing::refuse(400, "Bad Route header");
        };
        match Uri::parse(text) {
            Ok(u) if u.is_sip() && id.is_us(u.host, u.port) => {
                popped += 1;
                let s = id.signed(&u, call_id);
                signed |= s.is_some();
                flow = s.flatten();
            }
            parsed => {
                next = Some((text, parsed));
                break;
            }
        }
    }
    // How many values follow the first foreign one, and the last of them.
    let (rest_count, rest_last) = routes
        .map_while(|r| r)
        .fold((0usize, None), |(n, _), r| (n + 1, Some(r)));
    // §16.4: a strict router put our Record-Route value in the Request-URI; the last
    // Route value is the real Request-URI.
    let from_strict =
        ruri.is_sip() && id.is_us(ruri.host, ruri.port) && id.signed(&ruri, call_id).is_some();
    let mut remaining_count = usize::from(next.is_some()) + rest_count;
    let mut restored_ruri = None;
    if from_strict && remaining_count > 0 {
        restored_ruri = rest_last.or(next.as_ref().map(|(text, _)| *text));
        remaining_count -= 1;
        if remaining_count == 0 {
            next = None;
        }
    }
    let from_strict = restored_ruri.is_some();
    let trusted_path = signed || from_strict || !record_route;
    let mut routing = Routing {
        decision: Decision::Initial,
        popped,
        restored_ruri,
        flow,
        signed,
    };
    let method = msg.method();
    if method == Some(&Method::Register) && !in_dialog && remaining_count == 0 && !from_strict {
        routing.decision = Decision::Register;
        return routing;
    }
    // A Route set or an in-dialog request is only followed through this node's own
    // Record-Route entries: anything else would make it an open relay.
    if (remaining_count > 0 || in_dialog) && !(trusted_path && in_dialog) {
        return Routing::refuse(403, "Forbidden: Route not recorded here");
    }
    routing.decision = match next {
        Some((_, parsed)) => match parsed {
            Ok(uri) => {
                let strict = !uri.is_loose_router();
                if strict {
                    routing.popped += 1;
                }
                Decision::Route { uri, strict }
            }
            Err(_) => return Routing::refuse(400, "Bad Route header"),
        },
        None if in_dialog => {
            let target = match restored_ruri {
                Some(text) => match Uri::parse(text) {
                    Ok(u) => u,
                    Err(_) => return Routing::refuse(400, "Bad Route header"),
                },
                None => ruri,
            };
            Decision::RequestUri { uri: target }
        }
        None => Decision::Initial,
    };
    routing
}

/// `true` when one of the request's Via entries was written by this node for the same
/// routing inputs: a loop (482, §16.3 item 4). With another loop hash (a new
/// Request-URI) the request spiralled and goes on.
pub fn is_loop(msg: &Message, id: &impl Identity) -> bool {
    // Most requests carry no Via of this node: a byte search rules that out before any
    // Via is parsed.
    let prefix = BRANCH_PREFIX.as_bytes();
    if !msg
        .get_all(crate::HeaderName::Via)
        .any(|v| memchr::memmem::find(v.as_bytes(), prefix).is_some())
    {
        return false;
    }
    let mut ours = msg
        .vias()
        .filter_map(Result::ok)
        .filter_map(|v| Some((v.branch()?, v.host(), v.port())))
        .filter(|(b, host, port)| b.starts_with(BRANCH_PREFIX) && id.is_us(host, *port))
        .peekable();
    if ours.peek().is_none() {
        return false;
    }
    let hash = id.loop_hash(msg);
    ours.any(|(b, _, _)| parse_loop_hash(b) == Some(hash))
}

/// The longest branch [`push_branch`] writes with an index below 1,000.
pub const BRANCH_LEN: usize = BRANCH_PREFIX.len() + 8 + 1 + 16 + 1 + 3;

/// The branch of a forwarded request (prefix, loop hash, context id, branch index),
/// written at the end of `out`: a Via is built without a string of its own for it.
pub fn push_branch(out: &mut String, loop_hash: u32, id: u64, index: usize) {
    let digits = branch_digits(loop_hash, id);
    out.push_str(BRANCH_PREFIX);
    out.push_str(std::str::from_utf8(&digits).unwrap_or_default());
    out.push_str(itoa::Buffer::new().format(index));
}

/// [`push_branch`] into a message being built.
pub fn put_branch(out: &mut bytes::BytesMut, loop_hash: u32, id: u64, index: usize) {
    use bytes::BufMut;
    out.put_slice(BRANCH_PREFIX.as_bytes());
    out.put_slice(&branch_digits(loop_hash, id));
    out.put_slice(itoa::Buffer::new().format(index).as_bytes());
}

/// The hex digits of a branch and their dots, in a fixed array: `hhhhhhhh.hhhhhhhhhhhhhhhh.`.
fn branch_digits(loop_hash: u32, id: u64) -> [u8; 8 + 1 + 16 + 1] {
    let mut hex = [b'.'; 8 + 1 + 16 + 1];
    put_hex(&mut hex[..8], u64::from(loop_hash));
    put_hex(&mut hex[9..25], id);
    hex
}

/// `n`'s lowest hex digits, as many as `out` holds, most significant first (branches
/// here, Record-Route signatures in the node).
pub fn put_hex(out: &mut [u8], mut n: u64) {
    for d in out.iter_mut().rev() {
        *d = b"0123456789abcdef"[(n & 15) as usize];
        n >>= 4;
    }
}

/// The context id and branch index out of one of this node's branches.
/// The format is fixed ([`push_branch`]: 8 hex digits, a dot, 16 hex digits, a dot, the
/// index), so the parts are read at their places.
pub fn parse_branch(branch: &str) -> Option<(u64, usize)> {
    let rest = branch.strip_prefix(BRANCH_PREFIX)?;
    let dots = rest.as_bytes();
    if dots.get(8) != Some(&b'.') || dots.get(25) != Some(&b'.') {
        return None;
    }
    let id = from_hex(dots.get(9..25)?)?;
    let digits = dots.get(26..)?;
    if digits.is_empty() || digits.len() > 9 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let index = digits
        .iter()
        .fold(0usize, |n, d| n * 10 + usize::from(d - b'0'));
    Some((id, index))
}

fn parse_loop_hash(branch: &str) -> Option<u32> {
    let hex = branch.strip_prefix(BRANCH_PREFIX)?.as_bytes().get(..8)?;
    from_hex(hex).map(|h| h as u32)
}

/// Up to 16 hex digits (either case, nothing else: no sign) as a number; read for every
/// response and in-dialog request, so without the standard parser's generality.
fn from_hex(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 16 {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        let v = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            b'A'..=b'F' => d - b'A' + 10,
            _ => return None,
        };
        Some(n << 4 | u64::from(v))
    })
}

/// Where a response goes by its second Via, when no transaction holds it (a 2xx
/// retransmission after the transaction ended, §16.7 step 10 with RFC 6026): `received`
/// or the sent-by host, `rport` or the sent-by port (§18.2.2, RFC 3581), and whether
/// that Via names TCP. `None` when there is no second Via or it is malformed (the sanity
/// rules check only a response's top Via).
pub fn response_next_hop(msg: &Message) -> Option<(SocketAddr, bool)> {
    let via = msg.vias().nth(1)?.ok()?;
    via.check_params().ok()?;
    via_destination(&via)
}

/// The address a Via's responses go to, and whether it names TCP.
pub fn via_destination(via: &Via<'_>) -> Option<(SocketAddr, bool)> {
    let ip: IpAddr = via.received().or_else(|| crate::uri::host_ip(via.host()))?;
    let port = match via.rport() {
        Some(Some(p)) => p,
        _ => via.port().unwrap_or(via.default_port()),
    };
    Some((SocketAddr::new(ip, port), via.is_transport("TCP")))
}

#[cfg(test)]
mod tests;
