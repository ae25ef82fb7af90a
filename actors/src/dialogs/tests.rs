use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use limes_sip::{Limits, Message};
use parking_lot::Mutex;
use prometheus_client::registry::Registry;
use ractor::Actor;

use super::actor::{DialogSupervisor, Ender, SupervisorArgs, SupervisorMsg, TICK};
use super::cdr::{EndedBy, Var};
use super::profiles::{LimitDef, ProfileDef, ValueOf};
use super::*;
use crate::settings::Transport;

fn msg(text: &str) -> Message {
    Message::parse(Bytes::from(text.replace('\n', "\r\n")), &Limits::default()).expect("parses")
}

fn invite(call: &str) -> Message {
    msg(&format!(
        "INVITE sip:6002@example.com SIP/2.0\n\
         Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK{call}\n\
         From: <sip:6001@example.com>;tag=a-{call}\n\
         To: <sip:6002@example.com>\n\
         Call-ID: {call}\n\
         CSeq: 10 INVITE\n\
         Contact: <sip:6001@192.0.2.1:5060>\n\
         Max-Forwards: 70\n\
         Content-Length: 0\n\n"
    ))
}

fn response(call: &str, status: u16, tag: &str) -> Message {
    msg(&format!(
        "SIP/2.0 {status} Whatever\n\
         Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK{call}\n\
         From: <sip:6001@example.com>;tag=a-{call}\n\
         To: <sip:6002@example.com>;tag={tag}\n\
         Call-ID: {call}\n\
         CSeq: 10 INVITE\n\
         Contact: <sip:6002@192.0.2.2:5060>\n\
         Record-Route: <sip:192.0.2.9;lr>\n\
         Content-Length: 0\n\n"
    ))
}

fn bye_from_callee(call: &str, tag: &str) -> Message {
    msg(&format!(
        "BYE sip:6001@192.0.2.1:5060 SIP/2.0\n\
         Via: SIP/2.0/UDP 192.0.2.2:5060;branch=z9hG4bKbye{call}\n\
         From: <sip:6002@example.com>;tag={tag}\n\
         To: <sip:6001@example.com>;tag=a-{call}\n\
         Call-ID: {call}\n\
         CSeq: 1 BYE\n\
         Max-Forwards: 70\n\
         Content-Length: 0\n\n"
    ))
}

fn caller() -> Dest {
    Dest::new(Transport::Udp, SocketAddr::from(([192, 0, 2, 1], 5060)))
}

fn origin() -> Origin {
    Origin {
        caller: "6001".into(),
        source: "subscriber".into(),
        call_limit: Some(2),
        attrs: [("account".to_owned(), "7001".to_owned())].into(),
    }
}

fn dialogs(dir: &std::path::Path, lifetime: Duration) -> Arc<Dialogs> {
    let settings = DialogSettings {
        lifetime,
        profiles: vec![
            ProfileDef {
                name: "total".into(),
                value: None,
                class: None,
            },
            ProfileDef {
                name: "user".into(),
                value: Some(ValueOf::Caller),
                class: None,
            },
        ],
        limits: vec![LimitDef {
            profile: "user".into(),
            max: None,
            status: 486,
            reason: None,
            retry_after_s: None,
        }],
        cdr_file: Some(dir.join("cdr.jsonl")),
        ..DialogSettings::default()
    };
    let metrics = DialogMetrics::register(&mut Registry::default());
    Arc::new(Dialogs::new(settings, "test", metrics).expect("dialogs"))
}

fn cdrs(dir: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("cdr.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect()
}

/// §12.1: a tagged 1xx makes the dialog early, the 2xx confirms it; the callee's BYE is
/// matched from the other side and ends it; the counts go back and one CDR says who.
#[test]
fn a_call_follows_its_responses_and_the_bye() {
    let dir = tempfile::tempdir().unwrap();
    let d = dialogs(dir.path(), Duration::from_secs(60));
    let call = d.admit(&invite("c1"), caller(), origin()).unwrap();
    assert_eq!(
        (call.phase(), d.profiles.size("total", None)),
        (Phase::Setup, 1)
    );
    d.on_invite_response(&call, &response("c1", 180, "b-1"));
    d.on_invite_response(&call, &response("c1", 183, "fork-2"));
    assert_eq!(call.phase(), Phase::Early);
    assert_eq!(d.stats().early_dialogs, 1, "forks count once");
    // Requests of both early dialogs belong to the call; another tag does not.
    assert!(d.find(&bye_from_callee("c1", "fork-2")).is_some());
    assert!(d.find(&bye_from_callee("c1", "b-1")).is_some());
    assert!(d.find(&bye_from_callee("c1", "stranger")).is_none());
    d.on_invite_response(&call, &response("c1", 200, "b-1"));
    assert_eq!(call.phase(), Phase::Confirmed);
    assert_eq!((d.stats().active_dialogs, d.stats().early_dialogs), (1, 0));
    let sides = call.sides().unwrap();
    assert_eq!(sides.callee_contact, "sip:6002@192.0.2.2:5060");
    assert_eq!(sides.record_route, ["<sip:192.0.2.9;lr>"]);

    let bye = bye_from_callee("c1", "b-1");
    let (found, from_caller) = d.find(&bye).expect("found from the callee's side");
    assert!(!from_caller);
    assert!(
        d.find(&bye_from_callee("c1", "fork-2")).is_none(),
        "the fork that was not answered is no longer the call's"
    );
    d.on_request(&found, from_caller, &bye);
    assert_eq!(call.phase(), Phase::Ended);
    assert!(d.is_empty());
    assert!(d.profiles.sizes().is_empty(), "every count given back");
    assert!(!d.finish(&call, EndedBy::Timeout), "a call ends once");
    d.flush();
    let cdrs = cdrs(dir.path());
    assert_eq!(cdrs.len(), 1);
    assert_eq!(cdrs[0]["EndedBy"], "callee");
    assert_eq!(cdrs[0]["Status"], 200);
    assert_eq!(cdrs[0]["CallID"], "c1");
    assert_eq!(
        cdrs[0]["Id"],
        format!("test-{}-{}", call.setup_ms, call.id),
        "node, setup time, number"
    );
    assert_eq!(
        cdrs[0]["Profiles"],
        serde_json::json!(["total", "user=6001"])
    );
    assert!(cdrs[0]["AnswerTime"].is_u64());
    assert_eq!(d.stats().processed_dialogs, 1);
}

/// The caller's `call_limit` (2) refuses the third call with 486 and a CDR; a failure
/// and a CANCEL end calls with CDRs that say so.
#[test]
fn limits_failures_and_cancels_each_leave_a_cdr() {
    let dir = tempfile::tempdir().unwrap();
    let d = dialogs(dir.path(), Duration::from_secs(60));
    let a = d.admit(&invite("a"), caller(), origin()).unwrap();
    let b = d.admit(&invite("b"), caller(), origin()).unwrap();
    match d.admit(&invite("c"), caller(), origin()) {
        Err(Refused::Limit(l)) => assert_eq!((l.status, l.max), (486, 2)),
        other => panic!("expected a limit refusal, got {other:?}"),
    }
    d.on_invite_failure(&a, 487);
    d.on_invite_failure(&b, 404);
    assert!(d.is_empty());
    d.flush();
    let ended: Vec<(String, u64)> = cdrs(dir.path())
        .iter()
        .map(|c| {
            (
                c["EndedBy"].as_str().unwrap().to_owned(),
                c["Status"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        ended,
        [
            ("limit".into(), 486),
            ("caller".into(), 487),
            ("failure".into(), 404)
        ]
    );
    assert_eq!(d.stats().failed_dialogs, 1);
}

fn reopen(dir: &std::path::Path) -> Dialogs {
    let settings = DialogSettings {
        cdr_file: Some(dir.join("cdr.jsonl")),
        ..DialogSettings::default()
    };
    let metrics = DialogMetrics::register(&mut Registry::default());
    let d = Dialogs::open(settings, "test", metrics, Some(dir)).expect("opens");
    d.profiles.set_rules(
        vec![ProfileDef {
            name: "total".into(),
            value: None,
            class: None,
        }],
        Vec::new(),
        Vec::new(),
    );
    d
}

/// The journal holds confirmed calls only, from the flush after their answer until the
/// flush after their end; a restored call keeps its sides, counts and number, and a new
/// call after the restart gets a number of its own.
#[test]
fn confirmed_calls_are_journaled_until_they_end() {
    let dir = tempfile::tempdir().unwrap();
    let first = reopen(dir.path());
    let answered = first.admit(&invite("kept"), caller(), origin()).unwrap();
    let _ringing = first.admit(&invite("ringing"), caller(), origin()).unwrap();
    first.on_invite_response(&answered, &response("kept", 200, "k"));
    first.flush();
    drop(first); // as after kill -9: nothing more written

    let second = reopen(dir.path());
    let all = second.all();
    assert_eq!(all.len(), 1, "the unanswered call is not restored");
    let call = &all[0];
    assert_eq!(
        (call.id, call.call_id.as_str(), call.phase()),
        (answered.id, "kept", Phase::Confirmed)
    );
    assert_eq!(call.sides().unwrap().callee_tag, "k");
    assert_eq!(second.profiles.size("total", None), 1);
    let next = second.admit(&invite("new"), caller(), origin()).unwrap();
    assert!(next.id > call.id);
    second.on_request(call, false, &bye_from_callee("kept", "k"));
    second.flush();
    drop(second);
    let third = reopen(dir.path());
    assert!(third.is_empty(), "the ended call is gone from the journal");
}

/// Variables from a constant, a subscriber attribute and a header, typed; a rule whose
/// source is missing or not a number (for `integer`) sets nothing; `dlg.list` shows them.
#[test]
fn variables_from_constants_attributes_and_headers() {
    let dir = tempfile::tempdir().unwrap();
    let d = dialogs(dir.path(), Duration::from_secs(60));
    let rule =
        |name: &str, value: Option<&str>, attr: Option<&str>, header: Option<&str>, integer| {
            VarRule {
                name: name.into(),
                value: value.map(Into::into),
                attr: attr.map(Into::into),
                header: header.map(Into::into),
                integer,
            }
        };
    d.set_settings(DialogSettings {
        vars: vec![
            rule("plan", Some("gold"), None, None, false),
            rule("account", None, Some("account"), None, true),
            rule("carrier", None, None, Some("x-carrier"), false),
            rule("missing", None, None, Some("X-Absent"), false),
            rule("not_a_number", Some("seven"), None, None, true),
        ],
        ..DialogSettings::default()
    });
    let text = String::from_utf8_lossy(invite("v").as_bytes()).replace(
        "Max-Forwards: 70\r\n",
        "Max-Forwards: 70\r\nX-Carrier: acme\r\n",
    );
    let invite = Message::parse(Bytes::from(text), &Limits::default()).unwrap();
    let call = d.admit(&invite, caller(), origin()).unwrap();
    let view = call.view();
    assert_eq!(
        view.variables,
        BTreeMap::from([
            ("account".to_owned(), Var::Int(7001)),
            ("carrier".to_owned(), Var::Str("acme".into())),
            ("plan".to_owned(), Var::Str("gold".into())),
        ])
    );
    assert!(rule("x", Some("1"), Some("a"), None, false)
        .check()
        .is_err());
    assert!(rule("x", None, None, None, false).check().is_err());
}

/// Ends calls as the proxy does, without the wire: records who asked.
#[derive(Default)]
struct Recorder {
    dialogs: Mutex<Option<Arc<Dialogs>>>,
    ended: Mutex<Vec<(String, EndedBy)>>,
}

impl Ender for Recorder {
    fn end_call(&self, call: &Arc<Call>, by: EndedBy) {
        self.ended.lock().push((call.call_id.clone(), by));
        if let Some(d) = self.dialogs.lock().as_ref() {
            d.finish(call, by);
        }
    }
}

async fn supervised(d: &Arc<Dialogs>) -> (Arc<Recorder>, ractor::ActorRef<SupervisorMsg>) {
    let recorder = Arc::new(Recorder::default());
    *recorder.dialogs.lock() = Some(d.clone());
    let (sup, _) = Actor::spawn(
        None,
        DialogSupervisor,
        SupervisorArgs {
            dialogs: d.clone(),
            ender: recorder.clone(),
        },
    )
    .await
    .unwrap();
    d.set_supervisor(sup.clone());
    (recorder, sup)
}

async fn children(sup: &ractor::ActorRef<SupervisorMsg>) -> usize {
    ractor::call!(sup, SupervisorMsg::Children).unwrap()
}

/// A dialog actor that panics: the supervisor ends its call for it (counts given back,
/// CDR `actor_failure`), and the other call and its actor go on.
#[tokio::test]
async fn a_panicking_dialog_actor_gives_its_counts_back() {
    let dir = tempfile::tempdir().unwrap();
    let d = dialogs(dir.path(), Duration::from_secs(60));
    let (recorder, sup) = supervised(&d).await;
    let one = d.admit(&invite("one"), caller(), origin()).unwrap();
    let _two = d.admit(&invite("two"), caller(), origin()).unwrap();
    tokio::time::sleep(TICK * 3).await;
    assert_eq!(children(&sup).await, 2);
    sup.cast(SupervisorMsg::Crash(one.id)).unwrap();
    tokio::time::sleep(TICK * 3).await;
    assert_eq!(
        recorder.ended.lock().clone(),
        [("one".to_owned(), EndedBy::ActorFailure)]
    );
    assert_eq!(d.profiles.size("total", None), 1);
    assert_eq!(d.len(), 1);
    assert_eq!(children(&sup).await, 1, "the other actor lives");
    d.flush();
    assert_eq!(cdrs(dir.path())[0]["EndedBy"], "actor_failure");
    sup.stop(None);
}

/// Calls that come and go leave no deadline queued behind them for their lifetime:
/// the supervisor's queue stays within a bound of its live calls.
#[tokio::test]
async fn ended_calls_leave_no_deadlines_queued() {
    let dir = tempfile::tempdir().unwrap();
    let d = dialogs(dir.path(), Duration::from_secs(12 * 3600));
    let (_, sup) = supervised(&d).await;
    let live = d.admit(&invite("live"), caller(), origin()).unwrap();
    d.on_invite_response(&live, &response("live", 200, "l"));
    for round in 0..6 {
        for n in 0..500 {
            let id = format!("c{round}-{n}");
            let call = d.admit(&invite(&id), caller(), origin()).unwrap();
            d.on_invite_response(&call, &response(&id, 200, "b"));
            d.on_request(&call, true, &bye_from_callee(&id, "b"));
        }
        tokio::time::sleep(TICK * 3).await;
    }
    let queued: usize = ractor::call!(sup, SupervisorMsg::Deadlines).unwrap();
    assert_eq!(children(&sup).await, 1, "the live call's actor only");
    assert!(
        queued <= 4 + 1024,
        "{queued} deadlines queued for one live call"
    );
    assert!(d.stats().processed_dialogs >= 3000);
    sup.stop(None);
}

/// The lifetime runs from the answer; at its end the actor ends the call (BYEs, CDR
/// `timeout`); `dlg.end_dlg` ends another for the operator.
#[tokio::test(start_paused = true)]
async fn lifetime_and_operator_end_calls_through_their_actors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dialogs(dir.path(), Duration::from_secs(30));
    let (recorder, sup) = supervised(&d).await;
    let timed = d.admit(&invite("timed"), caller(), origin()).unwrap();
    let ended = d.admit(&invite("operator"), caller(), origin()).unwrap();
    tokio::time::sleep(Duration::from_secs(20)).await;
    d.on_invite_response(&timed, &response("timed", 200, "t"));
    d.on_invite_response(&ended, &response("operator", 200, "o"));
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert!(
        recorder.ended.lock().is_empty(),
        "40 s after setup, 20 s after the answer"
    );
    let id = ended.id;
    let d2 = d.clone();
    let found = tokio::task::spawn_blocking(move || d2.end_blocking(id, EndedBy::Operator))
        .await
        .unwrap();
    assert!(found);
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert_eq!(
        recorder.ended.lock().clone(),
        [
            ("operator".to_owned(), EndedBy::Operator),
            ("timed".to_owned(), EndedBy::Timeout)
        ]
    );
    assert!(d.is_empty() && d.profiles.sizes().is_empty());
    assert_eq!(d.stats().expired_dialogs, 1);
    assert_eq!(children(&sup).await, 0);
    sup.stop(None);
}

fn with_session_expires(m: &Message, seconds: u32) -> Message {
    let text = String::from_utf8_lossy(m.as_bytes()).replace(
        "Content-Length: 0",
        &format!("Session-Expires: {seconds};refresher=uac\r\nContent-Length: 0"),
    );
    Message::parse(Bytes::from(text), &Limits::default()).unwrap()
}

fn reinvite_from_caller(call: &str, tag: &str, cseq: u32) -> Message {
    msg(&format!(
        "INVITE sip:6002@192.0.2.2:5060 SIP/2.0\n\
         Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKre{call}{cseq}\n\
         From: <sip:6001@example.com>;tag=a-{call}\n\
         To: <sip:6002@example.com>;tag={tag}\n\
         Call-ID: {call}\n\
         CSeq: {cseq} INVITE\n\
         Max-Forwards: 70\n\
         Content-Length: 0\n\n"
    ))
}

/// RFC 4028: the answer agrees a 90 s session interval. A call whose refreshes stop is
/// ended when the interval passes without one (BYEs, CDR `session_expired`); a call
/// refreshed by a re-INVITE at 60 s lives until 90 s after that refresh.
#[tokio::test(start_paused = true)]
async fn a_session_without_refresh_is_ended() {
    let dir = tempfile::tempdir().unwrap();
    let d = dialogs(dir.path(), Duration::from_secs(3600));
    let (recorder, sup) = supervised(&d).await;
    let silent = d.admit(&invite("silent"), caller(), origin()).unwrap();
    let refreshed = d.admit(&invite("fresh"), caller(), origin()).unwrap();
    d.on_invite_response(
        &silent,
        &with_session_expires(&response("silent", 200, "s"), 90),
    );
    d.on_invite_response(
        &refreshed,
        &with_session_expires(&response("fresh", 200, "f"), 90),
    );
    assert_eq!(silent.session_interval(), Some(Duration::from_secs(90)));
    tokio::time::sleep(Duration::from_secs(60)).await;
    let (call, from_caller) = d.find(&reinvite_from_caller("fresh", "f", 2)).unwrap();
    d.on_request(&call, from_caller, &reinvite_from_caller("fresh", "f", 2));
    tokio::time::sleep(Duration::from_secs(31)).await;
    assert_eq!(
        recorder.ended.lock().clone(),
        [("silent".to_owned(), EndedBy::SessionExpired)]
    );
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(
        recorder.ended.lock().len(),
        2,
        "the refreshed call ends 90 s after its refresh"
    );
    assert_eq!(d.stats().expired_dialogs, 2);
    sup.stop(None);
}

/// A confirmed call is journaled as the text serde_json writes for [`Saved`] (written by
/// hand on the state thread), and reads back.
#[test]
fn a_saved_call_is_the_text_serde_writes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dialogs(dir.path(), Duration::from_secs(60));
    let v6 = "[2001:db8::1]:5060".parse().unwrap();
    for (n, dest) in [
        caller(),
        Dest {
            local: Some(v6),
            ..Dest::new(Transport::Tcp, v6)
        },
    ]
    .into_iter()
    .enumerate()
    {
        let id = format!("saved-{n}");
        let call = d.admit(&invite(&id), dest, origin()).unwrap();
        d.on_invite_response(&call, &response(&id, 200, "b\"\\1"));
        call.set_var("note", Var::Str("two\nlines".into()));
        call.set_var("n", Var::Int(-3));
        let text = saved_text(&call).expect("confirmed");
        let s = call.state.lock();
        let expected = Saved {
            call_id: Cow::Borrowed(&call.call_id),
            caller_tag: Cow::Borrowed(&call.caller_tag),
            from: Cow::Borrowed(&call.from),
            to: Cow::Borrowed(&call.to),
            request_uri: Cow::Borrowed(&call.request_uri),
            caller: Cow::Borrowed(&call.origin.caller),
            source: Cow::Borrowed(&call.origin.source),
            call_limit: call.origin.call_limit,
            class: call.class.as_deref().map(Cow::Borrowed),
            setup_ms: call.setup_ms,
            caller_dest: call.caller_dest,
            caller_contact: Cow::Borrowed(&call.caller_contact),
            callee_tag: Cow::Borrowed(s.callee_tag.as_deref().unwrap()),
            callee_contact: s.callee_contact.as_deref().map(Cow::Borrowed),
            record_route: Cow::Borrowed(&s.record_route),
            answer_ms: s.answer_ms,
            status: s.status,
            caller_cseq: s.caller_cseq,
            callee_cseq: s.callee_cseq,
            profiles: Cow::Borrowed(&s.profiles),
            vars: Cow::Borrowed(&s.vars),
            session_s: s.session.map(|d| d.as_secs() as u32),
        };
        assert_eq!(text, serde_json::to_string(&expected).unwrap());
        let back: Saved<'_> = serde_json::from_str(&text).unwrap();
        assert_eq!(
            (back.caller_dest, back.callee_tag.as_ref()),
            (dest, "b\"\\1")
        );
    }
}
