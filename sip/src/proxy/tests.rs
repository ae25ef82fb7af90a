//! The response context, rule by rule: each test is named after the RFC 3261 section it
//! checks and reads as a trace: `input -> (messages sent: destination and first word,
//! events)`. Destination 0 is upstream, n the branch's next hop. A property test closes:
//! any sequence of responses, CANCELs and timeouts ends every branch and sends exactly one
//! final response upstream.

use std::time::{Duration, Instant};

use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::build::{Forward, Response};
use crate::transaction::TimerConfig;
use crate::{HeaderName, Limits, Message, Method};

const INVITE: &str = "INVITE sip:bob@biloxi.example.com SIP/2.0\r\nVia: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds\r\nMax-Forwards: 70\r\nTo: Bob <sip:bob@biloxi.example.com>\r\nFrom: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\nCall-ID: a84b4c76e66710@pc33.atlanta.example.com\r\nCSeq: 314159 INVITE\r\nContact: <sip:alice@pc33.atlanta.example.com>\r\nContent-Length: 0\r\n\r\n";

fn parse(b: Bytes) -> Message {
    Message::parse(b, &Limits::default()).expect("parses")
}

/// One context between upstream (destination 0) and its branches (destination n + 1 for
/// branch n), on UDP, with one clock.
struct Sim {
    ctx: Context<u8>,
    now: Instant,
    /// The forwarded copy of each branch, to answer it.
    forwarded: Vec<Message>,
    request: Message,
}

/// What one input produced: each message sent as (destination, status or method), and
/// the events in short form.
#[derive(Debug, PartialEq)]
struct Out {
    sent: Vec<(u8, String)>,
    events: Vec<String>,
}

fn short(e: &Event) -> String {
    match e {
        Event::Provisional { branch, status } => format!("provisional {branch} {status}"),
        Event::EarlyDialog { branch } => format!("early dialog {branch}"),
        Event::Answered { branch, status } => format!("answered {branch} {status}"),
        Event::DialogEstablished { branch } => format!("dialog {branch}"),
        Event::DialogEnded { branch } => format!("dialog ended {branch}"),
        Event::BranchFailed { branch, status } => format!("failed {branch} {status}"),
        Event::Challenged { branch, status } => format!("challenged {branch} {status}"),
        Event::Exhausted { best } => format!("exhausted {best}"),
        Event::Upstream { status, local } => {
            format!("up {status}{}", if *local { " local" } else { "" })
        }
        Event::Final { status } => format!("final {status}"),
        Event::Completed { status, response } => {
            format!(
                "completed {status}{}",
                if response.is_some() { "" } else { " none" }
            )
        }
        Event::RetransmissionSent => "retransmitted".into(),
        Event::RetransmissionAbsorbed => "absorbed".into(),
    }
}

fn first_word(bytes: &Bytes) -> String {
    let text = String::from_utf8_lossy(bytes);
    let line = text.lines().next().unwrap_or_default().to_owned();
    match line.strip_prefix("SIP/2.0 ") {
        Some(rest) => rest.split(' ').next().unwrap_or_default().to_owned(),
        None => line.split(' ').next().unwrap_or_default().to_owned(),
    }
}

fn sent(list: &[(u8, &str)]) -> Vec<(u8, String)> {
    list.iter().map(|(d, w)| (*d, (*w).to_owned())).collect()
}

fn events(list: &[&str]) -> Vec<String> {
    list.iter().map(|e| (*e).to_owned()).collect()
}

impl Sim {
    fn with(method: &str) -> (Self, Out) {
        let now = Instant::now();
        let request = parse(Bytes::from(INVITE.replace("INVITE", method)));
        let reply_to = ReplyTo {
            dest: 0,
            reliable: false,
        };
        let ctx = Context::server(now, 7, request.clone(), reply_to, ContextConfig::default());
        let mut sim = Sim {
            ctx,
            now,
            forwarded: Vec::new(),
            request,
        };
        let out = sim.drain();
        (sim, out)
    }

    /// An INVITE context with `n` branches started.
    fn invite(n: usize) -> Self {
        let (mut sim, _) = Sim::with("INVITE");
        for _ in 0..n {
            sim.add();
        }
        sim
    }

    fn originated(method: Method) -> Self {
        let request = parse(Bytes::from(
            INVITE.replace("INVITE", method.as_str()).replacen(
                "Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds\r\n",
                "",
                1,
            ),
        ));
        Sim {
            ctx: Context::originate(9, &method, ContextConfig::default()),
            now: Instant::now(),
            forwarded: Vec::new(),
            request,
        }
    }

    fn add(&mut self) -> Out {
        let i = self.ctx.next_branch();
        let via = format!("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKlm.{i}");
        let bytes = Forward::new(&self.request)
            .push_via(&via)
            .decrement_max_forwards()
            .finish();
        self.forwarded.push(parse(bytes.clone()));
        let dest = u8::try_from(i + 1).expect("few branches");
        self.ctx
            .add_branch(self.now, dest, false, bytes)
            .expect("branch starts");
        self.drain()
    }

    fn response(&self, branch: usize, status: u16) -> Message {
        let tag = format!("t{branch}");
        let to_tag = (status > 100).then_some(tag.as_str());
        parse(Response::to(&self.forwarded[branch], status, "Test", to_tag).finish())
    }

    fn resp(&mut self, branch: usize, status: u16) -> Out {
        let r = self.response(branch, status);
        self.feed(branch, &r)
    }

    fn feed(&mut self, branch: usize, msg: &Message) -> Out {
        self.ctx.handle_response(self.now, branch, msg);
        self.drain()
    }

    /// The response to the CANCEL of `branch`.
    fn cancel_answered(&mut self, branch: usize) -> Out {
        let cancel = crate::build::cancel_for(&self.forwarded[branch]);
        let r = parse(Response::to(&parse(cancel), 200, "OK", None).finish());
        self.feed(branch, &r)
    }

    fn cancel(&mut self) -> Out {
        assert!(self.ctx.handle_cancel(self.now));
        self.drain()
    }

    fn advance(&mut self, d: Duration) -> Out {
        self.now += d;
        self.ctx.handle_timeout(self.now);
        self.drain()
    }

    /// Fires every timer in order until none is left (or `bound` has passed).
    fn run_out(&mut self, bound: Duration) -> Out {
        let end = self.now + bound;
        let mut all = Out {
            sent: Vec::new(),
            events: Vec::new(),
        };
        while let Some(at) = self.ctx.poll_timeout() {
            if at > end {
                break;
            }
            self.now = self.now.max(at);
            self.ctx.handle_timeout(self.now);
            let out = self.drain();
            all.sent.extend(out.sent);
            all.events.extend(out.events);
        }
        all
    }

    fn drain(&mut self) -> Out {
        let mut out = Out {
            sent: Vec::new(),
            events: Vec::new(),
        };
        while let Some(t) = self.ctx.poll_transmit() {
            out.sent.push((t.dest, first_word(&t.bytes)));
        }
        while let Some(e) = self.ctx.poll_event() {
            out.events.push(short(&e));
        }
        out
    }

    /// The last response sent upstream, whole.
    fn last_up(&mut self, f: impl FnOnce(&mut Self)) -> Option<String> {
        f(self);
        let mut last = None;
        while let Some(t) = self.ctx.poll_transmit() {
            if t.dest == 0 {
                last = Some(String::from_utf8_lossy(&t.bytes).into_owned());
            }
        }
        last
    }
}

#[test]
fn rfc3261_16_2_invite_is_answered_100_trying_at_once() {
    let (_, out) = Sim::with("INVITE");
    assert_eq!(out.sent, sent(&[(0, "100")]));
    let (_, out) = Sim::with("OPTIONS");
    assert_eq!(out.sent, sent(&[]), "no 100 to a non-INVITE request");
}

#[test]
fn rfc3261_16_6_each_branch_sends_its_copy_to_its_destination() {
    let (mut sim, _) = Sim::with("INVITE");
    assert_eq!(sim.add().sent, sent(&[(1, "INVITE")]));
    assert_eq!(sim.add().sent, sent(&[(2, "INVITE")]));
    // §17.1.1.2 under §16.6 step 12: each branch retransmits on its own Timer A.
    let out = sim.advance(Duration::from_millis(500));
    assert_eq!(out.sent, sent(&[(1, "INVITE"), (2, "INVITE")]));
    assert_eq!(out.events, events(&["retransmitted", "retransmitted"]));
}

#[test]
fn rfc3261_16_7_step_5_provisional_responses_go_up_except_100() {
    let mut sim = Sim::invite(1);
    let out = sim.resp(0, 100);
    assert_eq!(out.sent, sent(&[]));
    assert_eq!(out.events, events(&["provisional 0 100"]));
    let out = sim.resp(0, 180);
    assert_eq!(out.sent, sent(&[(0, "180")]));
    assert_eq!(
        out.events,
        events(&["provisional 0 180", "early dialog 0", "up 180"])
    );
}

#[test]
fn rfc3261_16_7_step_5_and_10_a_2xx_goes_up_at_once_and_cancels_the_others() {
    let mut sim = Sim::invite(3);
    sim.resp(1, 180);
    // Branch 1 rang: its CANCEL goes now; branch 2 never answered: its CANCEL waits.
    let out = sim.resp(0, 200);
    assert_eq!(out.sent, sent(&[(0, "200"), (2, "CANCEL")]));
    assert_eq!(
        out.events,
        events(&["answered 0 200", "dialog 0", "up 200", "final 200"])
    );
    // §9.1: the CANCEL owed to branch 2 goes with its first provisional response.
    let out = sim.resp(2, 100);
    assert_eq!(out.sent, sent(&[(3, "CANCEL")]));
    // Every 2xx goes upstream, a second one from another branch too (step 10, RFC 6026).
    let out = sim.resp(1, 200);
    assert_eq!(out.sent, sent(&[(0, "200")]));
    // A failure after the 2xx is ACKed and goes nowhere.
    let out = sim.resp(2, 487);
    assert_eq!(out.sent, sent(&[(3, "ACK")]));
    assert_eq!(out.events, events(&["failed 2 487"]));
}

/// An answered context waits 32 s for Timer J or M (UDP) and holds what it holds all that
/// time: a thousand calls a second keep 32,000 of them. Room for four branches and queue
/// buffers kept after draining made each hold some 5 KB it no longer used.
#[test]
fn an_answered_context_keeps_one_branch_and_no_queue_buffers() {
    let mut sim = Sim::invite(1);
    sim.resp(0, 180);
    let out = sim.resp(0, 200);
    assert_eq!(out.sent, sent(&[(0, "200")]));
    // One branch (some 450 bytes), no room for more, no queue buffer.
    assert!(
        sim.ctx.buffer_bytes() <= 512,
        "{} bytes",
        sim.ctx.buffer_bytes()
    );
    assert!(std::mem::size_of::<Event>() <= 16);
    assert!(std::mem::size_of::<Context<u8>>() <= 800);
}

#[test]
fn rfc3261_16_7_step_6_the_best_failure_goes_up_when_every_branch_has_failed() {
    // (branch statuses in arrival order, status sent upstream)
    let cases: &[(&[u16], &str)] = &[
        (&[486, 404], "486"),
        (&[486, 302, 500], "302"),
        (&[486, 407, 404], "407"),
        (&[603, 486], "603"),
        (&[503], "500"),
        (&[503, 408], "408"),
        (&[404, 415], "415"),
    ];
    for (statuses, up) in cases {
        let mut sim = Sim::invite(statuses.len());
        let mut upstream = Vec::new();
        for (i, s) in statuses.iter().enumerate() {
            let out = sim.resp(i, *s);
            upstream.extend(out.sent.into_iter().filter(|(d, _)| *d == 0));
        }
        assert_eq!(upstream, sent(&[(0, up)]), "{statuses:?}");
    }
}

#[test]
fn rfc3261_16_7_step_7_challenges_of_every_401_and_407_are_merged() {
    let mut sim = Sim::invite(3);
    let with_challenge = |sim: &Sim, branch: usize, status: u16, value: &str| {
        let name = if status == 401 {
            "WWW-Authenticate"
        } else {
            "Proxy-Authenticate"
        };
        let tag = format!("t{branch}");
        parse(
            Response::to(&sim.forwarded[branch], status, "Unauthorized", Some(&tag))
                .header(name, value)
                .finish(),
        )
    };
    let a = with_challenge(&sim, 0, 401, "Digest realm=\"a.example\", nonce=\"1\"");
    let b = with_challenge(&sim, 1, 407, "Digest realm=\"b.example\", nonce=\"2\"");
    assert_eq!(sim.feed(0, &a).events, events(&["challenged 0 401"]));
    assert_eq!(sim.feed(1, &b).events, events(&["challenged 1 407"]));
    let up = sim
        .last_up(|s| s.ctx.handle_response(s.now, 2, &s.response(2, 486)))
        .expect("a response went up");
    assert!(up.starts_with("SIP/2.0 401"), "{up}");
    assert!(
        up.contains("WWW-Authenticate: Digest realm=\"a.example\""),
        "{up}"
    );
    assert!(
        up.contains("Proxy-Authenticate: Digest realm=\"b.example\""),
        "{up}"
    );
    assert_eq!(up.matches("Authenticate:").count(), 2, "{up}");
    assert_eq!(up.matches("Via:").count(), 1, "our Via is popped");
}

#[test]
fn rfc3261_16_7_step_9_a_6xx_cancels_the_others_and_wins() {
    let mut sim = Sim::invite(2);
    sim.resp(1, 180);
    let out = sim.resp(0, 603);
    assert_eq!(out.sent, sent(&[(1, "ACK"), (2, "CANCEL")]));
    let out = sim.resp(1, 487);
    assert_eq!(out.sent, sent(&[(2, "ACK"), (0, "603")]));
    assert_eq!(out.events, events(&["failed 1 487", "up 603", "final 603"]));
}

#[test]
fn rfc3261_16_10_cancel_before_and_after_a_provisional_response() {
    // After a provisional response: CANCEL at once; the 487 makes the final response.
    let mut sim = Sim::invite(1);
    sim.resp(0, 180);
    assert_eq!(sim.cancel().sent, sent(&[(1, "CANCEL")]));
    assert_eq!(sim.cancel_answered(0).sent, sent(&[]));
    let out = sim.resp(0, 487);
    assert_eq!(out.sent, sent(&[(1, "ACK"), (0, "487")]));

    // Before: the CANCEL waits for the first provisional response (§9.1).
    let mut sim = Sim::invite(1);
    assert_eq!(sim.cancel().sent, sent(&[]));
    assert_eq!(sim.resp(0, 100).sent, sent(&[(1, "CANCEL")]));
    let late = Bytes::from_static(b"INVITE sip:x@y SIP/2.0\r\n\r\n");
    assert_eq!(
        sim.ctx.add_branch(sim.now, 9, false, late),
        Err(BranchError::Closed),
        "no new branch after a CANCEL"
    );

    // Not an INVITE: nothing to cancel.
    let (mut sim, _) = Sim::with("OPTIONS");
    assert!(!sim.ctx.handle_cancel(sim.now));
}

#[test]
fn rfc3261_16_8_timer_c_cancels_a_branch_that_rang_too_long() {
    let mut sim = Sim::invite(1);
    sim.resp(0, 180);
    let c = TimerConfig::default();
    let out = sim.advance(c.timer_c - Duration::from_secs(1));
    assert_eq!(out.sent, sent(&[]));
    // A new provisional response restarts Timer C.
    sim.resp(0, 183);
    assert_eq!(sim.advance(Duration::from_secs(2)).sent, sent(&[]));
    let out = sim.advance(c.timer_c);
    assert_eq!(out.sent, sent(&[(1, "CANCEL")]));
    // The callee stays silent after the CANCEL: after 64*T1 the branch is abandoned and
    // counts as 408 (§9.1, §16.8).
    let out = sim.run_out(Duration::from_secs(60));
    let up = out.sent.iter().find(|(d, _)| *d == 0);
    assert_eq!(up, Some(&(0, "408".to_owned())), "{out:?}");
    let finals = out.events.iter().filter(|e| e.starts_with("final"));
    assert_eq!(finals.count(), 1, "Timer G repeats it; it is chosen once");
    assert!(out.events.contains(&"failed 0 408".to_owned()));
}

#[test]
fn rfc3261_16_8_a_branch_that_never_answers_times_out_as_408() {
    let mut sim = Sim::invite(1);
    let out = sim.run_out(Duration::from_secs(40));
    assert!(out.events.contains(&"failed 0 408".to_owned()), "{out:?}");
    assert!(out.sent.contains(&(0, "408".to_owned())), "{out:?}");
}

#[test]
fn a_branch_silent_past_its_first_response_time_fails_as_408_and_a_provisional_gives_it_timer_c() {
    let (mut sim, _) = Sim::with("INVITE");
    sim.ctx.hold();
    let start = |sim: &mut Sim| {
        let i = sim.ctx.next_branch();
        let via = format!("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKlm.{i}");
        let bytes = Forward::new(&sim.request).push_via(&via).finish();
        sim.forwarded.push(parse(bytes.clone()));
        let dest = u8::try_from(i + 1).expect("few branches");
        sim.ctx
            .add_branch_within(sim.now, dest, false, bytes, Some(Duration::from_secs(2)))
            .expect("branch starts");
        sim.drain()
    };
    start(&mut sim);
    let out = sim.advance(Duration::from_millis(1900));
    assert!(
        !out.events.iter().any(|e| e.starts_with("failed")),
        "{out:?}"
    );
    let out = sim.advance(Duration::from_millis(200));
    let ends: Vec<&String> = out
        .events
        .iter()
        .filter(|e| !e.starts_with("retrans"))
        .collect();
    assert_eq!(ends, ["failed 0 408", "exhausted 408"]);
    // The next destination answers 100 at once: the short timer no longer applies.
    start(&mut sim);
    sim.resp(1, 100);
    let out = sim.advance(Duration::from_secs(10));
    assert!(
        !out.events.iter().any(|e| e.starts_with("failed")),
        "{out:?}"
    );
    sim.resp(1, 200);
}

#[test]
fn rfc3261_16_6_serial_forking_waits_for_the_caller_when_held() {
    let mut sim = Sim::invite(1);
    sim.ctx.hold();
    let out = sim.resp(0, 486);
    assert_eq!(out.sent, sent(&[(1, "ACK")]));
    assert_eq!(out.events, events(&["failed 0 486", "exhausted 486"]));
    // The caller tries the next target; it answers.
    assert_eq!(sim.add().sent, sent(&[(2, "INVITE")]));
    let out = sim.resp(1, 200);
    assert_eq!(out.sent, sent(&[(0, "200")]));

    // Or it has no more: release sends the best so far.
    let mut sim = Sim::invite(2);
    sim.ctx.hold();
    sim.resp(0, 480);
    let out = sim.resp(1, 486);
    assert_eq!(out.events, events(&["failed 1 486", "exhausted 480"]));
    sim.ctx.release(sim.now);
    assert_eq!(sim.drain().sent, sent(&[(0, "480")]));
}

#[test]
fn rfc3261_16_6_parallel_branches_each_have_their_own_client_transaction() {
    let mut sim = Sim::invite(2);
    // A retransmitted 180 on branch 0 is absorbed by its transaction.
    sim.resp(0, 180);
    let out = sim.resp(0, 180);
    assert_eq!(
        out.sent,
        sent(&[(0, "180")]),
        "§17.1.1.2 passes it up in Proceeding"
    );
    // A retransmitted final response on branch 1 is ACKed again, not passed up.
    sim.resp(1, 486);
    let out = sim.resp(1, 486);
    assert_eq!(out.sent, sent(&[(2, "ACK")]));
    assert_eq!(out.events, events(&["absorbed"]));
}

#[test]
fn waiting_with_no_branch_until_a_target_comes_or_the_timer_ends_it() {
    // A call suspended for a device to register: no branch, a deadline.
    let (mut sim, _) = Sim::with("INVITE");
    sim.ctx.wait_until(sim.now + Duration::from_secs(30));
    assert_eq!(sim.advance(Duration::from_secs(10)).sent, sent(&[]));
    assert_eq!(sim.add().sent, sent(&[(1, "INVITE")]));
    assert_eq!(sim.resp(0, 200).sent, sent(&[(0, "200")]));

    let (mut sim, _) = Sim::with("INVITE");
    sim.ctx.wait_until(sim.now + Duration::from_secs(30));
    let out = sim.advance(Duration::from_secs(30));
    assert_eq!(out.sent, sent(&[(0, "408")]));
    assert_eq!(out.events, events(&["up 408 local", "final 408"]));

    // A CANCEL while it waits ends it with 487.
    let (mut sim, _) = Sim::with("INVITE");
    sim.ctx.wait_until(sim.now + Duration::from_secs(30));
    assert_eq!(sim.cancel().sent, sent(&[(0, "487")]));
}

#[test]
fn the_caller_may_give_up_with_a_response_of_its_choice() {
    let mut sim = Sim::invite(1);
    sim.resp(0, 180);
    let bytes = Response::to(&sim.request, 503, "Unavailable", Some("x")).finish();
    sim.ctx.respond(sim.now, 503, bytes);
    let out = sim.drain();
    assert_eq!(out.sent, sent(&[(1, "CANCEL"), (0, "503")]));
    assert_eq!(out.events, events(&["up 503 local", "final 503"]));
}

#[test]
fn rfc3261_16_7_step_2_a_transport_error_counts_as_503_and_goes_up_as_500() {
    let mut sim = Sim::invite(1);
    sim.ctx.handle_transport_error(sim.now, 0);
    let out = sim.drain();
    assert_eq!(out.sent, sent(&[(0, "500")]));
    assert_eq!(
        out.events,
        events(&["failed 0 503", "up 500 local", "final 500"])
    );
}

#[test]
fn rfc3261_17_2_1_retransmitted_request_and_ack_are_absorbed() {
    let mut sim = Sim::invite(1);
    sim.resp(0, 180);
    sim.ctx.handle_request(sim.now);
    assert_eq!(
        sim.drain().sent,
        sent(&[(0, "180")]),
        "the last provisional again"
    );
    sim.resp(0, 486);
    sim.ctx.handle_request(sim.now);
    assert_eq!(sim.drain().sent, sent(&[(0, "486")]));
    sim.ctx.handle_ack(sim.now);
    assert_eq!(sim.drain().sent, sent(&[]));
    // Timer I then lets the server transaction go; the context ends.
    sim.run_out(Duration::from_secs(60));
    assert!(sim.ctx.is_terminated());
}

#[test]
fn dialog_events_establish_on_invite_2xx_and_end_on_bye_2xx() {
    let mut sim = Sim::invite(1);
    let out = sim.resp(0, 200);
    assert!(out.events.contains(&"dialog 0".to_owned()));
    let (mut sim, _) = Sim::with("BYE");
    sim.add();
    let out = sim.resp(0, 200);
    assert_eq!(
        out.events,
        events(&["answered 0 200", "dialog ended 0", "up 200", "final 200"])
    );
}

#[test]
fn a_request_the_node_originates_reports_its_outcome() {
    let mut sim = Sim::originated(Method::Options);
    assert_eq!(sim.add().sent, sent(&[(1, "OPTIONS")]));
    let out = sim.resp(0, 200);
    assert_eq!(out.sent, sent(&[]), "nothing goes upstream");
    assert_eq!(out.events, events(&["answered 0 200", "completed 200"]));
    assert!(sim.ctx.is_terminated() || sim.ctx.poll_timeout().is_some());

    // No answer: Timer F, then 408 with no response.
    let mut sim = Sim::originated(Method::Options);
    sim.add();
    let out = sim.run_out(Duration::from_secs(40));
    assert!(
        out.events.contains(&"completed 408 none".to_owned()),
        "{out:?}"
    );
    assert!(sim.ctx.is_terminated());

    // A deadline of the caller's ends it sooner: the branch is abandoned as a 408.
    let mut sim = Sim::originated(Method::Options);
    sim.add();
    sim.ctx.wait_until(sim.now + Duration::from_secs(2));
    let out = sim.advance(Duration::from_secs(2));
    assert_eq!(
        out.events,
        events(&["retransmitted", "failed 0 408", "completed 408 none"])
    );
    assert!(sim.ctx.is_terminated());

    // A challenge is reported with the response, for a retry with credentials.
    let mut sim = Sim::originated(Method::Register);
    sim.add();
    let out = sim.resp(0, 401);
    assert_eq!(out.events, events(&["challenged 0 401", "completed 401"]));
}

#[test]
fn an_originated_request_may_be_retried_with_credentials_while_held() {
    let mut sim = Sim::originated(Method::Invite);
    sim.ctx.hold();
    sim.add();
    let out = sim.resp(0, 407);
    assert_eq!(out.sent, sent(&[(1, "ACK")]));
    assert_eq!(out.events, events(&["challenged 0 407", "exhausted 407"]));
    sim.add();
    let out = sim.resp(1, 200);
    assert_eq!(
        out.events,
        events(&["answered 1 200", "dialog 1", "completed 200"])
    );
}

#[test]
fn local_tags_name_the_context() {
    assert_eq!(local_tag(0x0123_4567_89ab_cdef), "lm0123456789abcdef");
    let mut sim = Sim::invite(1);
    let up = sim
        .last_up(|s| s.ctx.handle_transport_error(s.now, 0))
        .expect("a response went up");
    assert!(up.contains(";tag=lm0000000000000007"), "{up}");
}

#[test]
fn headers_of_the_chosen_response_are_kept() {
    let mut sim = Sim::invite(1);
    let r = parse(
        Response::to(&sim.forwarded[0], 486, "Busy Here", Some("t0"))
            .header("Retry-After", "30")
            .finish(),
    );
    let up = sim
        .last_up(|s| s.ctx.handle_response(s.now, 0, &r))
        .expect("a response went up");
    assert!(up.starts_with("SIP/2.0 486 Busy Here"), "{up}");
    assert!(up.contains("Retry-After: 30"));
    assert!(parse(Bytes::from(up)).get(HeaderName::RetryAfter).is_some());
}

/// One step of the property test.
#[derive(Debug, Clone)]
enum Op {
    Respond(usize, u16),
    Cancel,
    Wait(u64),
    TransportError(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let status = prop::sample::select(vec![
        100u16, 180, 183, 200, 302, 401, 407, 408, 480, 486, 487, 500, 503, 603,
    ]);
    prop_oneof![
        4 => (0..3usize, status).prop_map(|(b, s)| Op::Respond(b, s)),
        1 => Just(Op::Cancel),
        2 => (0..200_000u64).prop_map(Op::Wait),
        1 => (0..3usize).prop_map(Op::TransportError),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Whatever the branches answer, and whenever CANCELs and timeouts come: exactly one
    /// final response goes upstream (more only as further 2xx responses, §16.7 step 10),
    /// and in the end every branch's transactions and the server's have ended.
    #[test]
    fn every_branch_ends_and_exactly_one_final_response_goes_up(
        branches in 1..4usize,
        ops in prop::collection::vec(op(), 0..24),
        reliable_up in any::<bool>(),
    ) {
        let now = Instant::now();
        let request = parse(Bytes::from(INVITE));
        let reply_to = ReplyTo { dest: 0u8, reliable: reliable_up };
        let ctx = Context::server(now, 1, request.clone(), reply_to, ContextConfig::default());
        let mut sim = Sim { ctx, now, forwarded: Vec::new(), request };
        for _ in 0..branches {
            sim.add();
        }
        let mut finals = Vec::new();
        let mut record = |out: Out| {
            for e in out.events {
                if let Some(s) = e.strip_prefix("final ") {
                    finals.push(s.to_owned());
                }
            }
        };
        for op in ops {
            let out = match op {
                Op::Respond(b, s) if b < branches => sim.resp(b, s),
                Op::Respond(..) => continue,
                Op::Cancel => {
                    sim.ctx.handle_cancel(sim.now);
                    sim.drain()
                }
                Op::Wait(ms) => sim.advance(Duration::from_millis(ms)),
                Op::TransportError(b) if b < branches => {
                    sim.ctx.handle_transport_error(sim.now, b);
                    sim.drain()
                }
                Op::TransportError(_) => continue,
            };
            record(out);
        }
        // Upstream ACKs any non-2xx final response, as a caller does.
        let out = sim.run_out(Duration::from_secs(3600));
        record(out);
        if sim.ctx.is_answered() {
            sim.ctx.handle_ack(sim.now);
            let out = sim.drain();
            record(out);
        }
        let out = sim.run_out(Duration::from_secs(3600));
        record(out);
        prop_assert_eq!(finals.len(), 1, "final responses: {:?}", finals);
        prop_assert!(sim.ctx.is_terminated(), "a machine is still running");
        prop_assert!(sim.ctx.poll_timeout().is_none());
    }
}
