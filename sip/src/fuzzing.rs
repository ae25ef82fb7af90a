//! Drivers shared by the cargo-fuzz targets in `fuzz/` and by the tests that replay their
//! seed corpora. Each one panics when an invariant breaks; any other outcome is a pass.

use std::time::{Duration, Instant};

use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;

use crate::build::{Forward, Response};
use crate::framing;
use crate::sanity::{self, Policy};
use crate::transaction::{
    ClientInput, ClientInviteTx, ClientNonInviteTx, ServerInput, ServerInviteTx, ServerNonInviteTx,
    Timer, TimerConfig, TxKey,
};
use crate::{Limits, Message};

/// Parse any bytes, read every view, run the sanity rules, forward the message unchanged
/// and check that the copy parses to the same transaction and dialog keys.
pub fn parse_and_forward(data: &[u8]) {
    let limits = Limits::default();
    let _ = framing::check(data, &limits);
    let Ok(msg) = Message::parse(Bytes::copy_from_slice(data), &limits) else {
        return;
    };
    touch_views(&msg);
    presence_agrees(&msg);
    let verdict = if msg.is_request() {
        sanity::check_request(&msg, &Policy::default()).is_ok()
    } else {
        sanity::check_response(&msg).is_ok()
    };
    if msg.is_request() {
        let _ = Response::to(&msg, 400, "Bad Request", Some("t")).finish();
    }
    let copy = Forward::new(&msg).finish();
    // Forwarding may add a Content-Length line the original did not have.
    let roomier = Limits {
        max_headers: limits.max_headers + 1,
        ..limits
    };
    let again = match Message::parse(copy.clone(), &roomier) {
        Ok(m) => m,
        Err(e) => panic!(
            "forwarded copy does not parse ({e}): {:?}",
            String::from_utf8_lossy(&copy)
        ),
    };
    assert_eq!(msg.method(), again.method());
    assert_eq!(msg.status(), again.status());
    assert_eq!(msg.request_uri_str(), again.request_uri_str());
    assert_eq!(msg.call_id(), again.call_id());
    assert_eq!(msg.from_tag(), again.from_tag());
    assert_eq!(msg.to_tag(), again.to_tag());
    assert_eq!(msg.body(), again.body());
    assert_eq!(TxKey::server(&msg), TxKey::server(&again));
    assert_eq!(TxKey::client(&msg), TxKey::client(&again));
    if verdict && msg.defect().is_none() {
        // A clean message stays clean when copied.
        let ok = if again.is_request() {
            sanity::check_request(&again, &Policy::default()).is_ok()
        } else {
            sanity::check_response(&again).is_ok()
        };
        assert!(ok, "a valid message became invalid when forwarded");
    }
}

/// The index's presence bits say what a scan of the lines says: a name is present when it
/// has a line, repeated when it has two (lookups skip the scan on the bits alone).
fn presence_agrees(msg: &Message) {
    for h in msg.headers() {
        let lines = msg.headers().iter().filter(|l| l.name == h.name).count();
        assert!(msg.has(h.name), "{:?} has a line", h.name);
        assert_eq!(msg.repeats(h.name), lines > 1, "{:?}", h.name);
        assert!(msg.get(h.name).is_some());
    }
    assert_eq!(
        msg.repeats_any(),
        msg.headers().iter().any(|h| msg.repeats(h.name))
    );
    for absent in [
        crate::HeaderName::Date,
        crate::HeaderName::Require,
        crate::HeaderName::Route,
    ] {
        let scanned = msg.headers().iter().any(|h| h.name == absent);
        assert_eq!(msg.has(absent), scanned, "{absent:?}");
        assert_eq!(msg.get(absent).is_some(), scanned, "{absent:?}");
    }
}

fn touch_views(msg: &Message) {
    let _ = msg.request_uri();
    let _ = msg.cseq();
    let _ = msg
        .from()
        .map(|a| a.map(|a| (a.parse_uri(), a.tag(), a.q(), a.expires())));
    let _ = msg.to();
    let _ = msg.max_forwards();
    let _ = msg.expires();
    for v in msg.vias().flatten() {
        let _ = (v.branch(), v.received(), v.rport(), v.maddr());
    }
    for c in msg.contacts().flatten() {
        if let Ok(u) = c.parse_uri() {
            let _ = (u.host_ip(), crate::addr::PushParams::from_uri(&u));
        }
    }
    let _ = msg.routes().count() + msg.record_routes().count() + msg.paths().count();
    for h in [
        crate::HeaderName::Authorization,
        crate::HeaderName::ProxyAuthorization,
    ] {
        if let Some(v) = msg.get(h) {
            let _ = crate::digest::Credentials::parse(v).map(|c| c.verify("INVITE", "00", b""));
        }
    }
    for h in [
        crate::HeaderName::WwwAuthenticate,
        crate::HeaderName::ProxyAuthenticate,
    ] {
        if let Some(v) = msg.get(h) {
            let _ = crate::digest::Challenge::parse(v);
        }
    }
    let _ = TxKey::server(msg);
    let _ = TxKey::client(msg);
    let _ = TxKey::cancel_target(msg);
    registrar_invariants(msg);
}

/// Any message read as a REGISTER: the update stays within the rules, and the same request
/// applied again (a retransmission) changes nothing.
fn registrar_invariants(msg: &Message) {
    use crate::registrar::{apply, contact_values, Register, Rules};
    let rules = Rules::default();
    let Ok(req) = Register::read(msg, &rules) else {
        return;
    };
    let now = 1_000_000;
    let Ok(first) = apply(&[], &req, now, &rules, |_| ()) else {
        return;
    };
    assert!(first.bindings.len() <= rules.max_contacts);
    assert!(
        first.stored.iter().all(|&i| i < first.bindings.len()),
        "a stored index points past the bindings"
    );
    for b in &first.bindings {
        assert!(b.expires_at > now && b.expires_at <= now + u64::from(rules.max_expires));
    }
    let again = apply(&first.bindings, &req, now, &rules, |_| ())
        .unwrap_or_else(|r| panic!("a retransmitted REGISTER was refused: {r:?}"));
    assert_eq!(
        again.bindings, first.bindings,
        "a retransmission changed the bindings"
    );
    let _ = contact_values(&again.bindings, now);
}

/// One step of a transaction's life.
#[derive(Debug, Arbitrary)]
pub enum Op {
    /// Client: a response arrives.
    Response(u16),
    /// Server: the request is retransmitted.
    Retransmit,
    Ack,
    /// Server: the TU responds.
    Respond(u16),
    /// A timer input that may or may not be armed (stray timers must be harmless).
    Stray(u8),
    /// Time passes; due timers fire as a driver would fire them.
    Advance(u16),
    TransportError,
    /// Client: the TU abandons the transaction.
    Abandon,
}

const REQUEST: &str = "INVITE sip:b@example.com SIP/2.0\r\nVia: SIP/2.0/UDP h.example.com;branch=z9hG4bK1\r\nFrom: <sip:a@example.com>;tag=1\r\nTo: <sip:b@example.com>\r\nCall-ID: fuzz\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n";
const TIMERS: [Timer; 12] = [
    Timer::A,
    Timer::B,
    Timer::D,
    Timer::E,
    Timer::F,
    Timer::G,
    Timer::H,
    Timer::I,
    Timer::J,
    Timer::K,
    Timer::L,
    Timer::M,
];

/// Runs a transaction of a fuzzer-chosen kind through fuzzer-chosen inputs and checks,
/// after every step: at most two timers; nothing armed, sent or reported once terminated;
/// every transmit is the request, its ACK or a response.
pub fn transaction_ops(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let (Ok(kind), Ok(reliable)) = (u.int_in_range(0u8..=3), bool::arbitrary(&mut u)) else {
        return;
    };
    let ops: Vec<Op> = match u.arbitrary_iter() {
        Ok(iter) => iter.take(64).filter_map(Result::ok).collect(),
        Err(_) => return,
    };
    let limits = Limits::default();
    let Ok(req) = Message::parse(Bytes::from_static(REQUEST.as_bytes()), &limits) else {
        unreachable!("the fixed request parses")
    };
    let config = TimerConfig::default();
    let mut now = Instant::now();
    let mut m = match kind {
        0 => Tx::CI(ClientInviteTx::start(now, req.clone(), reliable, config)),
        1 => Tx::CN(ClientNonInviteTx::start(
            now,
            req.as_bytes().clone(),
            reliable,
            config,
        )),
        2 => Tx::SI(ServerInviteTx::new(reliable, config)),
        _ => Tx::SN(ServerNonInviteTx::new(reliable, config)),
    };
    m.check(false);
    for op in ops {
        let was_terminated = m.terminated();
        match op {
            Op::Response(s) => {
                let status = 100 + s % 600;
                if let Ok(r) =
                    Message::parse(Response::to(&req, status, "F", Some("t")).finish(), &limits)
                {
                    m.client(now, ClientInput::Response(&r));
                }
            }
            Op::Retransmit => m.server(now, ServerInput::Request),
            Op::Ack => m.server(now, ServerInput::Ack),
            Op::Respond(s) => {
                let status = 100 + s % 600;
                let bytes = Response::to(&req, status, "F", Some("t")).finish();
                m.server(now, ServerInput::Respond { status, bytes });
            }
            Op::Stray(t) => {
                let t = TIMERS[usize::from(t) % TIMERS.len()];
                m.client(now, ClientInput::Timer(t));
                m.server(now, ServerInput::Timer(t));
            }
            Op::Advance(ms) => {
                now += Duration::from_millis(u64::from(ms) * 10);
                while let Some(t) = m.poll_timer(now) {
                    m.client(now, ClientInput::Timer(t));
                    m.server(now, ServerInput::Timer(t));
                }
            }
            Op::Abandon => m.client(now, ClientInput::Abandon),
            Op::TransportError => {
                m.client(now, ClientInput::TransportError);
                m.server(now, ServerInput::TransportError);
            }
        }
        m.check(was_terminated);
    }
}

enum Tx {
    CI(ClientInviteTx),
    CN(ClientNonInviteTx),
    SI(ServerInviteTx),
    SN(ServerNonInviteTx),
}

macro_rules! each {
    ($self:expr, $t:ident => $e:expr) => {
        match $self {
            Tx::CI($t) => $e,
            Tx::CN($t) => $e,
            Tx::SI($t) => $e,
            Tx::SN($t) => $e,
        }
    };
}

impl Tx {
    fn client(&mut self, now: Instant, input: ClientInput<'_>) {
        match self {
            Tx::CI(t) => t.handle(now, input),
            Tx::CN(t) => t.handle(now, input),
            _ => {}
        }
    }

    fn server(&mut self, now: Instant, input: ServerInput) {
        match self {
            Tx::SI(t) => t.handle(now, input),
            Tx::SN(t) => t.handle(now, input),
            _ => {}
        }
    }

    fn poll_timer(&mut self, now: Instant) -> Option<Timer> {
        each!(self, t => t.poll_timer(now))
    }

    fn terminated(&self) -> bool {
        each!(self, t => t.is_terminated())
    }

    fn check(&mut self, was_terminated: bool) {
        let armed = each!(self, t => t.armed());
        assert!(armed.len() <= 2, "more than two timers: {armed:?}");
        let mut sent = Vec::new();
        each!(self, t => while let Some(x) = t.poll_transmit() { sent.push(x.0) });
        let mut events = Vec::new();
        each!(self, t => while let Some(e) = t.poll_event() { events.push(e) });
        for b in &sent {
            let first = b.split(|&c| c == b'\r').next().unwrap_or_default();
            let ok = first.starts_with(b"SIP/2.0 ")
                || first.starts_with(b"INVITE ")
                || first.starts_with(b"ACK ");
            assert!(
                ok,
                "unexpected transmit {:?}",
                String::from_utf8_lossy(first)
            );
        }
        if self.terminated() {
            assert!(armed.is_empty(), "terminated with timers {armed:?}");
        }
        if was_terminated {
            assert!(self.terminated(), "left Terminated");
            assert!(
                sent.is_empty() && events.is_empty(),
                "acted after Terminated"
            );
        }
    }
}
