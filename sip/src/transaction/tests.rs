//! Every transition of the four transaction machines and every timer, as a table:
//! `(machine, transport, setup inputs, input) -> (state, transmits, events, timers)`.
//! Each case is named after the RFC section that defines the transition.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::*;
use crate::build::Response;
use crate::{Limits, Message};

const INVITE: &str = "INVITE sip:bob@biloxi.example.com SIP/2.0\r\nVia: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds\r\nMax-Forwards: 70\r\nTo: Bob <sip:bob@biloxi.example.com>\r\nFrom: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\nCall-ID: a84b4c76e66710@pc33.atlanta.example.com\r\nCSeq: 314159 INVITE\r\nContact: <sip:alice@pc33.atlanta.example.com>\r\nContent-Length: 0\r\n\r\n";

fn parse(b: Bytes) -> Message {
    Message::parse(b, &Limits::default()).unwrap()
}

fn request(method: &str) -> Message {
    parse(Bytes::from(INVITE.replace("INVITE", method)))
}

fn response(req: &Message, status: u16) -> Message {
    parse(Response::to(req, status, "Test", Some("a6c85cf")).finish())
}

// Named after the RFC's machines, which all end in "Invite".
#[allow(clippy::enum_variant_names)]
#[derive(Clone, Copy, Debug)]
enum Kind {
    ClientInvite,
    ClientNonInvite,
    ServerInvite,
    ServerNonInvite,
}

#[derive(Clone, Copy, Debug)]
enum Step {
    /// Client: a response with this status arrives.
    Resp(u16),
    /// Server: the TU sends a response with this status.
    Send(u16),
    /// Server: the request is retransmitted.
    Retrans,
    Ack,
    /// The named timer fires at its deadline (it must be armed).
    Fire(Timer),
    TransportError,
    /// Client: the TU abandons the transaction (§9.1).
    Abandon,
}
use Step::*;

enum Machine {
    CI(ClientInviteTx),
    CN(ClientNonInviteTx),
    SI(ServerInviteTx),
    SN(ServerNonInviteTx),
}

/// What one input produced.
#[derive(Debug, PartialEq)]
struct Out {
    state: String,
    /// First line of each transmitted message.
    sent: Vec<String>,
    events: Vec<Event>,
    /// Armed timers with their delay from the input's time, in ms.
    timers: Vec<(Timer, u64)>,
}

struct Harness {
    m: Machine,
    now: Instant,
    req: Message,
}

impl Harness {
    fn new(kind: Kind, reliable: bool) -> (Self, Out) {
        let now = Instant::now();
        let c = TimerConfig::default();
        let req = match kind {
            Kind::ClientInvite | Kind::ServerInvite => request("INVITE"),
            _ => request("OPTIONS"),
        };
        let m = match kind {
            Kind::ClientInvite => Machine::CI(ClientInviteTx::start(now, req.clone(), reliable, c)),
            Kind::ClientNonInvite => Machine::CN(ClientNonInviteTx::start(
                now,
                req.as_bytes().clone(),
                reliable,
                c,
            )),
            Kind::ServerInvite => Machine::SI(ServerInviteTx::new(reliable, c)),
            Kind::ServerNonInvite => Machine::SN(ServerNonInviteTx::new(reliable, c)),
        };
        let mut h = Harness { m, now, req };
        let out = h.drain();
        (h, out)
    }

    fn armed(&self) -> Vec<(Timer, Instant)> {
        match &self.m {
            Machine::CI(t) => t.armed(),
            Machine::CN(t) => t.armed(),
            Machine::SI(t) => t.armed(),
            Machine::SN(t) => t.armed(),
        }
    }

    fn step(&mut self, step: Step) -> Out {
        if let Fire(timer) = step {
            let (_, at) = *self
                .armed()
                .iter()
                .find(|(t, _)| *t == timer)
                .unwrap_or_else(|| panic!("{timer:?} is not armed"));
            self.now = at;
        }
        let now = self.now;
        let resp = match step {
            Resp(s) => Some(response(&self.req, s)),
            _ => None,
        };
        let server_input = |step: Step, req: &Message| match step {
            Send(s) => ServerInput::Respond {
                status: s,
                bytes: response(req, s).as_bytes().clone(),
            },
            Retrans => ServerInput::Request,
            Ack => ServerInput::Ack,
            Fire(t) => ServerInput::Timer(t),
            TransportError => ServerInput::TransportError,
            Resp(_) | Abandon => unreachable!("client-only input"),
        };
        let client_input = match (step, &resp) {
            (Resp(_), Some(r)) => ClientInput::Response(r),
            (Fire(t), _) => ClientInput::Timer(t),
            (Abandon, _) => ClientInput::Abandon,
            _ => ClientInput::TransportError,
        };
        match &mut self.m {
            Machine::CI(t) => t.handle(now, client_input),
            Machine::CN(t) => t.handle(now, client_input),
            Machine::SI(t) => t.handle(now, server_input(step, &self.req)),
            Machine::SN(t) => t.handle(now, server_input(step, &self.req)),
        }
        self.drain()
    }

    fn drain(&mut self) -> Out {
        let mut sent = Vec::new();
        let mut events = Vec::new();
        macro_rules! drain {
            ($t:expr) => {{
                while let Some(Transmit(b)) = $t.poll_transmit() {
                    let line = String::from_utf8_lossy(&b);
                    sent.push(line.lines().next().unwrap_or_default().to_owned());
                }
                while let Some(e) = $t.poll_event() {
                    events.push(e);
                }
                format!("{:?}", $t.state())
            }};
        }
        let state = match &mut self.m {
            Machine::CI(t) => drain!(t),
            Machine::CN(t) => drain!(t),
            Machine::SI(t) => drain!(t),
            Machine::SN(t) => drain!(t),
        };
        let mut timers: Vec<(Timer, u64)> = self
            .armed()
            .into_iter()
            .map(|(t, at)| (t, at.duration_since(self.now).as_millis() as u64))
            .collect();
        timers.sort_by_key(|(t, _)| format!("{t:?}"));
        Out {
            state,
            sent,
            events,
            timers,
        }
    }
}

const INV: &str = "INVITE sip:bob@biloxi.example.com SIP/2.0";
const OPT: &str = "OPTIONS sip:bob@biloxi.example.com SIP/2.0";
const ACK: &str = "ACK sip:bob@biloxi.example.com SIP/2.0";

struct Case {
    name: &'static str,
    kind: Kind,
    reliable: bool,
    setup: &'static [Step],
    input: Option<Step>,
    state: &'static str,
    sent: &'static [&'static str],
    events: &'static [Event],
    timers: &'static [(Timer, u64)],
}

const fn case(
    name: &'static str,
    kind: Kind,
    reliable: bool,
    setup: &'static [Step],
    input: Option<Step>,
) -> Case {
    Case {
        name,
        kind,
        reliable,
        setup,
        input,
        state: "",
        sent: &[],
        events: &[],
        timers: &[],
    }
}

const UDP: bool = false;
const TCP: bool = true;
use Kind::*;
use Timer::*;

fn cases() -> Vec<Case> {
    let t = |c: Case, state, sent, events, timers| Case {
        state,
        sent,
        events,
        timers,
        ..c
    };
    vec![
        // §17.1.1.2 INVITE client transaction.
        t(
            case(
                "17.1.1.2 start Calling: send INVITE, arm A=T1 and B=64*T1 (UDP)",
                ClientInvite,
                UDP,
                &[],
                None,
            ),
            "Calling",
            &[INV],
            &[],
            &[(A, 500), (B, 32_000)],
        ),
        t(
            case(
                "17.1.1.2 start Calling: no Timer A on a reliable transport",
                ClientInvite,
                TCP,
                &[],
                None,
            ),
            "Calling",
            &[INV],
            &[],
            &[(B, 32_000)],
        ),
        t(
            case(
                "17.1.1.2 Timer A: retransmit, A doubles to 2*T1",
                ClientInvite,
                UDP,
                &[],
                Some(Fire(A)),
            ),
            "Calling",
            &[INV],
            &[],
            &[(A, 1000), (B, 31_500)],
        ),
        t(
            case(
                "17.1.1.2 Timer A again: doubles to 4*T1",
                ClientInvite,
                UDP,
                &[Fire(A)],
                Some(Fire(A)),
            ),
            "Calling",
            &[INV],
            &[],
            &[(A, 2000), (B, 30_500)],
        ),
        t(
            case(
                "17.1.1.2 Timer B in Calling: timeout, Terminated",
                ClientInvite,
                UDP,
                &[],
                Some(Fire(B)),
            ),
            "Terminated",
            &[],
            &[Event::Timeout],
            &[],
        ),
        t(
            case(
                "17.1.1.2 1xx in Calling: Proceeding, passed up, no more retransmits",
                ClientInvite,
                UDP,
                &[],
                Some(Resp(180)),
            ),
            "Proceeding",
            &[],
            &[Event::Response],
            &[],
        ),
        t(
            case(
                "17.1.1.2 1xx in Proceeding: passed up",
                ClientInvite,
                UDP,
                &[Resp(100)],
                Some(Resp(183)),
            ),
            "Proceeding",
            &[],
            &[Event::Response],
            &[],
        ),
        t(
            case(
                "17.1.1.2 300-699 in Calling: ACK, passed up, Completed, Timer D 32 s",
                ClientInvite,
                UDP,
                &[],
                Some(Resp(486)),
            ),
            "Completed",
            &[ACK],
            &[Event::Response],
            &[(D, 32_000)],
        ),
        t(
            case(
                "17.1.1.2 300-699 in Proceeding: ACK, passed up, Completed",
                ClientInvite,
                UDP,
                &[Resp(180)],
                Some(Resp(603)),
            ),
            "Completed",
            &[ACK],
            &[Event::Response],
            &[(D, 32_000)],
        ),
        t(
            case(
                "17.1.1.2 300-699 on a reliable transport: Timer D is zero, Terminated",
                ClientInvite,
                TCP,
                &[],
                Some(Resp(404)),
            ),
            "Terminated",
            &[ACK],
            &[Event::Response],
            &[],
        ),
        t(
            case(
                "17.1.1.2 retransmitted final in Completed: ACK again, absorbed",
                ClientInvite,
                UDP,
                &[Resp(486)],
                Some(Resp(486)),
            ),
            "Completed",
            &[ACK],
            &[],
            &[(D, 32_000)],
        ),
        t(
            case(
                "17.1.1.2 Timer D: Terminated",
                ClientInvite,
                UDP,
                &[Resp(486)],
                Some(Fire(D)),
            ),
            "Terminated",
            &[],
            &[],
            &[],
        ),
        t(
            case(
                "RFC 6026 7.2 2xx in Calling: Accepted, passed up, Timer M",
                ClientInvite,
                UDP,
                &[],
                Some(Resp(200)),
            ),
            "Accepted",
            &[],
            &[Event::Response],
            &[(M, 32_000)],
        ),
        t(
            case(
                "RFC 6026 7.2 2xx in Proceeding: Accepted",
                ClientInvite,
                UDP,
                &[Resp(180)],
                Some(Resp(200)),
            ),
            "Accepted",
            &[],
            &[Event::Response],
            &[(M, 32_000)],
        ),
        t(
            case(
                "RFC 6026 7.2 2xx retransmission in Accepted: passed up",
                ClientInvite,
                UDP,
                &[Resp(200)],
                Some(Resp(200)),
            ),
            "Accepted",
            &[],
            &[Event::Response],
            &[(M, 32_000)],
        ),
        t(
            case(
                "RFC 6026 7.2 Timer M: Terminated",
                ClientInvite,
                UDP,
                &[Resp(200)],
                Some(Fire(M)),
            ),
            "Terminated",
            &[],
            &[],
            &[],
        ),
        t(
            case(
                "17.1.4 transport error in Calling: Terminated, reported",
                ClientInvite,
                UDP,
                &[],
                Some(TransportError),
            ),
            "Terminated",
            &[],
            &[Event::TransportError],
            &[],
        ),
        // §17.1.2.2 non-INVITE client transaction.
        t(
            case(
                "9.1 a cancelled INVITE with no final response is abandoned: Terminated, silent",
                ClientInvite,
                UDP,
                &[Resp(180)],
                Some(Abandon),
            ),
            "Terminated",
            &[],
            &[],
            &[],
        ),
        t(
            case(
                "17.1.2.2 start Trying: send, arm E=T1 and F=64*T1 (UDP)",
                ClientNonInvite,
                UDP,
                &[],
                None,
            ),
            "Trying",
            &[OPT],
            &[],
            &[(E, 500), (F, 32_000)],
        ),
        t(
            case(
                "17.1.2.2 start Trying: no Timer E on a reliable transport",
                ClientNonInvite,
                TCP,
                &[],
                None,
            ),
            "Trying",
            &[OPT],
            &[],
            &[(F, 32_000)],
        ),
        t(
            case(
                "17.1.2.2 Timer E in Trying: retransmit, E = MIN(2E, T2)",
                ClientNonInvite,
                UDP,
                &[],
                Some(Fire(E)),
            ),
            "Trying",
            &[OPT],
            &[],
            &[(E, 1000), (F, 31_500)],
        ),
        t(
            case(
                "17.1.2.2 Timer E capped at T2",
                ClientNonInvite,
                UDP,
                &[Fire(E), Fire(E), Fire(E)],
                Some(Fire(E)),
            ),
            "Trying",
            &[OPT],
            &[],
            &[(E, 4000), (F, 24_500)],
        ),
        t(
            case(
                "17.1.2.2 Timer F in Trying: timeout",
                ClientNonInvite,
                UDP,
                &[],
                Some(Fire(F)),
            ),
            "Terminated",
            &[],
            &[Event::Timeout],
            &[],
        ),
        t(
            case(
                "17.1.2.2 1xx in Trying: Proceeding, passed up",
                ClientNonInvite,
                UDP,
                &[],
                Some(Resp(100)),
            ),
            "Proceeding",
            &[],
            &[Event::Response],
            &[(E, 500), (F, 32_000)],
        ),
        t(
            case(
                "17.1.2.2 Timer E in Proceeding: retransmit every T2",
                ClientNonInvite,
                UDP,
                &[Resp(100)],
                Some(Fire(E)),
            ),
            "Proceeding",
            &[OPT],
            &[],
            &[(E, 4000), (F, 31_500)],
        ),
        t(
            case(
                "17.1.2.2 Timer F in Proceeding: timeout",
                ClientNonInvite,
                UDP,
                &[Resp(100)],
                Some(Fire(F)),
            ),
            "Terminated",
            &[],
            &[Event::Timeout],
            &[],
        ),
        t(
            case(
                "17.1.2.2 final in Trying: Completed, passed up, Timer K = T4",
                ClientNonInvite,
                UDP,
                &[],
                Some(Resp(200)),
            ),
            "Completed",
            &[],
            &[Event::Response],
            &[(K, 5000)],
        ),
        t(
            case(
                "17.1.2.2 final in Proceeding: Completed",
                ClientNonInvite,
                UDP,
                &[Resp(100)],
                Some(Resp(404)),
            ),
            "Completed",
            &[],
            &[Event::Response],
            &[(K, 5000)],
        ),
        t(
            case(
                "17.1.2.2 final on a reliable transport: Timer K is zero, Terminated",
                ClientNonInvite,
                TCP,
                &[],
                Some(Resp(200)),
            ),
            "Terminated",
            &[],
            &[Event::Response],
            &[],
        ),
        t(
            case(
                "17.1.2.2 response retransmission in Completed: absorbed",
                ClientNonInvite,
                UDP,
                &[Resp(200)],
                Some(Resp(200)),
            ),
            "Completed",
            &[],
            &[],
            &[(K, 5000)],
        ),
        t(
            case(
                "17.1.2.2 Timer K: Terminated",
                ClientNonInvite,
                UDP,
                &[Resp(200)],
                Some(Fire(K)),
            ),
            "Terminated",
            &[],
            &[],
            &[],
        ),
        t(
            case(
                "17.1.4 transport error in Trying: Terminated, reported",
                ClientNonInvite,
                UDP,
                &[],
                Some(TransportError),
            ),
            "Terminated",
            &[],
            &[Event::TransportError],
            &[],
        ),
        // §17.2.1 INVITE server transaction.
        t(
            case("17.2.1 created in Proceeding", ServerInvite, UDP, &[], None),
            "Proceeding",
            &[],
            &[],
            &[],
        ),
        t(
            case(
                "17.2.1 TU 1xx in Proceeding: sent",
                ServerInvite,
                UDP,
                &[],
                Some(Send(100)),
            ),
            "Proceeding",
            &["SIP/2.0 100 Test"],
            &[],
            &[],
        ),
        t(
            case(
                "17.2.1 INVITE retransmission in Proceeding: last provisional again",
                ServerInvite,
                UDP,
                &[Send(180)],
                Some(Retrans),
            ),
            "Proceeding",
            &["SIP/2.0 180 Test"],
            &[],
            &[],
        ),
        t(
            case(
                "17.2.1 INVITE retransmission before any response: nothing to send",
                ServerInvite,
                UDP,
                &[],
                Some(Retrans),
            ),
            "Proceeding",
            &[],
            &[],
            &[],
        ),
        t(
            case(
                "17.2.1 TU 300-699: sent, Completed, Timer G=T1 and H=64*T1",
                ServerInvite,
                UDP,
                &[Send(100)],
                Some(Send(486)),
            ),
            "Completed",
            &["SIP/2.0 486 Test"],
            &[],
            &[(G, 500), (H, 32_000)],
        ),
        t(
            case(
                "17.2.1 TU 300-699 on a reliable transport: no Timer G",
                ServerInvite,
                TCP,
                &[],
                Some(Send(486)),
            ),
            "Completed",
            &["SIP/2.0 486 Test"],
            &[],
            &[(H, 32_000)],
        ),
        t(
            case(
                "17.2.1 INVITE retransmission in Completed: final again",
                ServerInvite,
                UDP,
                &[Send(486)],
                Some(Retrans),
            ),
            "Completed",
            &["SIP/2.0 486 Test"],
            &[],
            &[(G, 500), (H, 32_000)],
        ),
        t(
            case(
                "17.2.1 Timer G: final again, G = MIN(2G, T2)",
                ServerInvite,
                UDP,
                &[Send(486)],
                Some(Fire(G)),
            ),
            "Completed",
            &["SIP/2.0 486 Test"],
            &[],
            &[(G, 1000), (H, 31_500)],
        ),
        t(
            case(
                "17.2.1 Timer G capped at T2",
                ServerInvite,
                UDP,
                &[Send(486), Fire(G), Fire(G), Fire(G)],
                Some(Fire(G)),
            ),
            "Completed",
            &["SIP/2.0 486 Test"],
            &[],
            &[(G, 4000), (H, 24_500)],
        ),
        t(
            case(
                "17.2.1 Timer H: no ACK, Terminated, reported",
                ServerInvite,
                UDP,
                &[Send(486)],
                Some(Fire(H)),
            ),
            "Terminated",
            &[],
            &[Event::Timeout],
            &[],
        ),
        t(
            case(
                "17.2.1 ACK in Completed: Confirmed, Timer I = T4",
                ServerInvite,
                UDP,
                &[Send(486)],
                Some(Ack),
            ),
            "Confirmed",
            &[],
            &[],
            &[(I, 5000)],
        ),
        t(
            case(
                "17.2.1 ACK on a reliable transport: Timer I is zero, Terminated",
                ServerInvite,
                TCP,
                &[Send(486)],
                Some(Ack),
            ),
            "Terminated",
            &[],
            &[],
            &[],
        ),
        t(
            case(
                "17.2.1 ACK retransmission in Confirmed: absorbed",
                ServerInvite,
                UDP,
                &[Send(486), Ack],
                Some(Ack),
            ),
            "Confirmed",
            &[],
            &[],
            &[(I, 5000)],
        ),
        t(
            case(
                "17.2.1 Timer I: Terminated",
                ServerInvite,
                UDP,
                &[Send(486), Ack],
                Some(Fire(I)),
            ),
            "Terminated",
            &[],
            &[],
            &[],
        ),
        t(
            case(
                "RFC 6026 7.1 TU 2xx in Proceeding: sent, Accepted, Timer L",
                ServerInvite,
                UDP,
                &[Send(180)],
                Some(Send(200)),
            ),
            "Accepted",
            &["SIP/2.0 200 Test"],
            &[],
            &[(L, 32_000)],
        ),
        t(
            case(
                "RFC 6026 7.1 INVITE retransmission in Accepted: absorbed",
                ServerInvite,
                UDP,
                &[Send(200)],
                Some(Retrans),
            ),
            "Accepted",
            &[],
            &[],
            &[(L, 32_000)],
        ),
        t(
            case(
                "RFC 6026 7.1 TU 2xx retransmission in Accepted: sent",
                ServerInvite,
                UDP,
                &[Send(200)],
                Some(Send(200)),
            ),
            "Accepted",
            &["SIP/2.0 200 Test"],
            &[],
            &[(L, 32_000)],
        ),
        t(
            case(
                "RFC 6026 7.1 ACK in Accepted: passed to the TU",
                ServerInvite,
                UDP,
                &[Send(200)],
                Some(Ack),
            ),
            "Accepted",
            &[],
            &[Event::Ack],
            &[(L, 32_000)],
        ),
        t(
            case(
                "RFC 6026 7.1 Timer L: Terminated",
                ServerInvite,
                UDP,
                &[Send(200)],
                Some(Fire(L)),
            ),
            "Terminated",
            &[],
            &[],
            &[],
        ),
        t(
            case(
                "17.2.4 transport error in Proceeding: Terminated, reported",
                ServerInvite,
                UDP,
                &[],
                Some(TransportError),
            ),
            "Terminated",
            &[],
            &[Event::TransportError],
            &[],
        ),
        // §17.2.2 non-INVITE server transaction.
        t(
            case("17.2.2 created in Trying", ServerNonInvite, UDP, &[], None),
            "Trying",
            &[],
            &[],
            &[],
        ),
        t(
            case(
                "17.2.2 retransmission in Trying: discarded",
                ServerNonInvite,
                UDP,
                &[],
                Some(Retrans),
            ),
            "Trying",
            &[],
            &[],
            &[],
        ),
        t(
            case(
                "17.2.2 TU 1xx in Trying: sent, Proceeding",
                ServerNonInvite,
                UDP,
                &[],
                Some(Send(100)),
            ),
            "Proceeding",
            &["SIP/2.0 100 Test"],
            &[],
            &[],
        ),
        t(
            case(
                "17.2.2 retransmission in Proceeding: last provisional again",
                ServerNonInvite,
                UDP,
                &[Send(100)],
                Some(Retrans),
            ),
            "Proceeding",
            &["SIP/2.0 100 Test"],
            &[],
            &[],
        ),
        t(
            case(
                "17.2.2 TU final in Trying: sent, Completed, Timer J = 64*T1",
                ServerNonInvite,
                UDP,
                &[],
                Some(Send(200)),
            ),
            "Completed",
            &["SIP/2.0 200 Test"],
            &[],
            &[(J, 32_000)],
        ),
        t(
            case(
                "17.2.2 TU final in Proceeding: sent, Completed",
                ServerNonInvite,
                UDP,
                &[Send(100)],
                Some(Send(404)),
            ),
            "Completed",
            &["SIP/2.0 404 Test"],
            &[],
            &[(J, 32_000)],
        ),
        t(
            case(
                "17.2.2 TU final on a reliable transport: Timer J is zero, Terminated",
                ServerNonInvite,
                TCP,
                &[],
                Some(Send(200)),
            ),
            "Terminated",
            &["SIP/2.0 200 Test"],
            &[],
            &[],
        ),
        t(
            case(
                "17.2.2 retransmission in Completed: final again",
                ServerNonInvite,
                UDP,
                &[Send(200)],
                Some(Retrans),
            ),
            "Completed",
            &["SIP/2.0 200 Test"],
            &[],
            &[(J, 32_000)],
        ),
        t(
            case(
                "17.2.2 further TU finals in Completed: discarded",
                ServerNonInvite,
                UDP,
                &[Send(200)],
                Some(Send(500)),
            ),
            "Completed",
            &[],
            &[],
            &[(J, 32_000)],
        ),
        t(
            case(
                "17.2.2 Timer J: Terminated",
                ServerNonInvite,
                UDP,
                &[Send(200)],
                Some(Fire(J)),
            ),
            "Terminated",
            &[],
            &[],
            &[],
        ),
        t(
            case(
                "17.2.4 transport error in Trying: Terminated, reported",
                ServerNonInvite,
                UDP,
                &[],
                Some(TransportError),
            ),
            "Terminated",
            &[],
            &[Event::TransportError],
            &[],
        ),
    ]
}

#[test]
fn transition_table() {
    let mut failures = Vec::new();
    for c in cases() {
        let (mut h, mut out) = Harness::new(c.kind, c.reliable);
        for s in c.setup {
            out = h.step(*s);
        }
        if let Some(input) = c.input {
            out = h.step(input);
        }
        let want = Out {
            state: c.state.to_owned(),
            sent: c.sent.iter().map(|s| s.to_string()).collect(),
            events: c.events.to_vec(),
            timers: c.timers.to_vec(),
        };
        if out != want {
            failures.push(format!("{}:\n  got  {out:?}\n  want {want:?}", c.name));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_timer_is_exercised() {
    let src = include_str!("tests.rs");
    for t in ["A", "B", "D", "E", "F", "G", "H", "I", "J", "K", "L", "M"] {
        assert!(
            src.contains(&format!("Some(Fire({t}))")),
            "Timer {t} has no case"
        );
    }
}

#[test]
fn terminated_machines_ignore_everything() {
    let (mut h, _) = Harness::new(ClientInvite, UDP);
    h.step(Fire(B));
    for s in [Resp(200), Resp(180), TransportError] {
        let out = h.step(s);
        assert_eq!(
            (out.state.as_str(), out.sent.len(), out.events.len()),
            ("Terminated", 0, 0)
        );
    }
    assert_eq!(h.armed(), vec![]);
}

#[test]
fn rearming_a_timer_replaces_its_deadline() {
    let now = Instant::now();
    let mut core = Core::new(TimerConfig::default(), false);
    core.arm(Timer::A, now);
    core.arm(Timer::B, now + Duration::from_secs(1));
    assert_eq!(core.take_due(now), Some(Timer::A));
    // B sits in the second slot while the first is free: re-arming must not duplicate it.
    core.arm(Timer::B, now + Duration::from_secs(2));
    assert_eq!(core.timers.iter().flatten().count(), 1);
    assert_eq!(
        core.next_timer(),
        Some((Timer::B, now + Duration::from_secs(2)))
    );
}
