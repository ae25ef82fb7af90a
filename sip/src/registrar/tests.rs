use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::Limits;

const RULES: Rules = Rules {
    min_expires: 60,
    max_expires: 3600,
    default_expires: 1800,
    max_contacts: 3,
};

fn register(call_id: &str, cseq: u32, headers: &[&str]) -> Message {
    let mut text = format!(
        "REGISTER sip:example.com SIP/2.0\r\n\
         Via: SIP/2.0/UDP 192.0.2.4:5060;branch=z9hG4bK{cseq}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:alice@example.com>;tag=1\r\n\
         To: <sip:alice@example.com>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: {cseq} REGISTER\r\n"
    );
    for h in headers {
        text.push_str(h);
        text.push_str("\r\n");
    }
    text.push_str("Content-Length: 0\r\n\r\n");
    Message::parse(Bytes::from(text), &Limits::default()).expect("test REGISTER parses")
}

fn binding(contact: &str, call_id: &str, cseq: u32, expires_at: u64) -> Binding<()> {
    Binding {
        contact: contact.into(),
        q: None,
        expires_at,
        call_id: call_id.into(),
        cseq,
        meta: (),
    }
}

fn run(existing: &[Binding<()>], msg: &Message, now: u64) -> Result<Outcome<()>, Refusal> {
    let req = Register::read(msg, &RULES)?;
    apply(existing, &req, now, &RULES, |_| ())
}

fn contacts(o: &Outcome<()>) -> Vec<(&str, u64)> {
    o.bindings
        .iter()
        .map(|b| (b.contact.as_str(), b.expires_at))
        .collect()
}

#[test]
fn reading_a_register() {
    // (headers, expected change or refusal status), each from §10.3 steps 6-7.
    type Case = (
        &'static str,
        &'static [&'static str],
        Result<Vec<(&'static str, u32)>, u16>,
    );
    let cases: &[Case] = &[
        ("no Contact is a fetch", &[], Ok(vec![])),
        (
            "expires parameter wins over the header",
            &["Contact: <sip:a@192.0.2.4>;expires=120", "Expires: 600"],
            Ok(vec![("sip:a@192.0.2.4", 120)]),
        ),
        (
            "Expires header when the Contact has none",
            &["Contact: <sip:a@192.0.2.4>", "Expires: 600"],
            Ok(vec![("sip:a@192.0.2.4", 600)]),
        ),
        (
            "the default when neither says",
            &["Contact: <sip:a@192.0.2.4>"],
            Ok(vec![("sip:a@192.0.2.4", 1800)]),
        ),
        (
            "longer than max_expires is shortened",
            &["Contact: <sip:a@192.0.2.4>;expires=86400"],
            Ok(vec![("sip:a@192.0.2.4", 3600)]),
        ),
        (
            "below Min-Expires: 423",
            &["Contact: <sip:a@192.0.2.4>;expires=30"],
            Err(423),
        ),
        (
            "zero is a removal, not too brief",
            &["Contact: <sip:a@192.0.2.4>;expires=0"],
            Ok(vec![("sip:a@192.0.2.4", 0)]),
        ),
        (
            "several Contacts, one line and two",
            &[
                "Contact: <sip:a@192.0.2.4>, <sip:b@192.0.2.5>;expires=90",
                "m: sip:c@192.0.2.6",
            ],
            Ok(vec![
                ("sip:a@192.0.2.4", 1800),
                ("sip:b@192.0.2.5", 90),
                ("sip:c@192.0.2.6", 1800),
            ]),
        ),
        (
            "the same URI twice: the last counts",
            &["Contact: <sip:a@192.0.2.4>;expires=100, <sip:a@192.0.2.4>;expires=200"],
            Ok(vec![("sip:a@192.0.2.4", 200)]),
        ),
        (
            "wildcard without Expires 0",
            &["Contact: *", "Expires: 60"],
            Err(400),
        ),
        (
            "wildcard beside another Contact",
            &["Contact: *", "Contact: <sip:a@192.0.2.4>", "Expires: 0"],
            Err(400),
        ),
        ("malformed q", &["Contact: <sip:a@192.0.2.4>;q=2"], Err(400)),
        (
            "malformed Expires",
            &["Contact: <sip:a@192.0.2.4>", "Expires: soon"],
            Err(400),
        ),
        (
            "unroutable scheme",
            &["Contact: <mailto:a@example.com>"],
            Err(400),
        ),
    ];
    for (name, headers, want) in cases {
        let msg = register("c1", 1, headers);
        let got = Register::read(&msg, &RULES);
        match (want, got) {
            (Ok(list), Ok(r)) => {
                let got: Vec<(&str, u32)> = match &r.change {
                    Change::Fetch => vec![],
                    Change::Set(u) => u.iter().map(|u| (u.uri, u.expires)).collect(),
                    Change::RemoveAll => panic!("{name}: unexpected wildcard"),
                };
                assert_eq!(&got, list, "{name}");
            }
            (Err(status), Err(r)) => {
                assert_eq!(r.status, *status, "{name}: {}", r.reason);
                if *status == 423 {
                    assert_eq!(r.min_expires, Some(60), "{name}: Min-Expires sent");
                }
            }
            (want, got) => panic!("{name}: wanted {want:?}, got {got:?}"),
        }
    }
    let wildcard = register("c1", 2, &["Contact: *", "Expires: 0"]);
    assert_eq!(
        Register::read(&wildcard, &RULES).map(|r| r.change),
        Ok(Change::RemoveAll)
    );
}

#[test]
fn applying_updates() {
    let now = 1_000;
    let a = || binding("sip:a@192.0.2.4", "c1", 5, now + 100);
    // (name, existing, request, expected contacts with expiry, or refusal status)
    type Case = (
        &'static str,
        Vec<Binding<()>>,
        Message,
        Result<Vec<(&'static str, u64)>, u16>,
    );
    let cases: Vec<Case> = vec![
        (
            "a new binding",
            vec![],
            register("c1", 1, &["Contact: <sip:a@192.0.2.4>;expires=600"]),
            Ok(vec![("sip:a@192.0.2.4", now + 600)]),
        ),
        (
            "refresh from the same Call-ID with a higher CSeq",
            vec![a()],
            register("c1", 6, &["Contact: <sip:a@192.0.2.4>;expires=600"]),
            Ok(vec![("sip:a@192.0.2.4", now + 600)]),
        ),
        (
            "same Call-ID, lower CSeq: the update fails",
            vec![a()],
            register("c1", 4, &["Contact: <sip:a@192.0.2.4>;expires=600"]),
            Err(400),
        ),
        (
            "same Call-ID, same CSeq: a retransmission changes nothing",
            vec![a()],
            register("c1", 5, &["Contact: <sip:a@192.0.2.4>;expires=600"]),
            Ok(vec![("sip:a@192.0.2.4", now + 100)]),
        ),
        (
            "another Call-ID replaces the binding whatever its CSeq",
            vec![a()],
            register("c2", 1, &["Contact: <sip:a@192.0.2.4>;expires=600"]),
            Ok(vec![("sip:a@192.0.2.4", now + 600)]),
        ),
        (
            "equal URIs by §19.1.4 (a one-sided unknown parameter): the binding is replaced",
            vec![a()],
            register("c1", 6, &["Contact: <sip:a@192.0.2.4;ob>;expires=600"]),
            Ok(vec![("sip:a@192.0.2.4;ob", now + 600)]),
        ),
        (
            "a different transport is a different contact",
            vec![a()],
            register("c1", 6, &["Contact: <sip:a@192.0.2.4;transport=tcp>"]),
            Ok(vec![
                ("sip:a@192.0.2.4", now + 100),
                ("sip:a@192.0.2.4;transport=tcp", now + 1800),
            ]),
        ),
        (
            "expires=0 removes one binding",
            vec![a(), binding("sip:b@192.0.2.5", "c9", 1, now + 50)],
            register("c1", 6, &["Contact: <sip:a@192.0.2.4>;expires=0"]),
            Ok(vec![("sip:b@192.0.2.5", now + 50)]),
        ),
        (
            "wildcard removes all",
            vec![a(), binding("sip:b@192.0.2.5", "c9", 1, now + 50)],
            register("c1", 6, &["Contact: *", "Expires: 0"]),
            Ok(vec![]),
        ),
        (
            "wildcard with a stale CSeq for one binding fails as a whole",
            vec![a(), binding("sip:b@192.0.2.5", "c9", 1, now + 50)],
            register("c1", 5, &["Contact: *", "Expires: 0"]),
            Err(400),
        ),
        (
            "a fetch lists and drops the expired",
            vec![a(), binding("sip:old@192.0.2.9", "c3", 1, now)],
            register("c7", 1, &[]),
            Ok(vec![("sip:a@192.0.2.4", now + 100)]),
        ),
        (
            "more than max_contacts: 403",
            vec![
                a(),
                binding("sip:b@192.0.2.5", "c2", 1, now + 50),
                binding("sip:c@192.0.2.6", "c3", 1, now + 50),
            ],
            register("c4", 1, &["Contact: <sip:d@192.0.2.7>"]),
            Err(403),
        ),
        (
            "at the limit a refresh still works",
            vec![
                a(),
                binding("sip:b@192.0.2.5", "c2", 1, now + 50),
                binding("sip:c@192.0.2.6", "c3", 1, now + 50),
            ],
            register("c1", 9, &["Contact: <sip:a@192.0.2.4>;expires=60"]),
            Ok(vec![
                ("sip:a@192.0.2.4", now + 60),
                ("sip:b@192.0.2.5", now + 50),
                ("sip:c@192.0.2.6", now + 50),
            ]),
        ),
    ];
    for (name, existing, msg, want) in cases {
        match (want, run(&existing, &msg, now)) {
            (Ok(list), Ok(o)) => assert_eq!(contacts(&o), list, "{name}"),
            (Err(status), Err(r)) => assert_eq!(r.status, status, "{name}: {}", r.reason),
            (want, got) => panic!("{name}: wanted {want:?}, got {got:?}"),
        }
    }
}

#[test]
fn outcome_says_what_changed() {
    let now = 10;
    let existing = vec![
        binding("sip:a@192.0.2.4", "c1", 1, 500),
        binding("sip:gone@192.0.2.9", "c1", 1, 5),
    ];
    let msg = register(
        "c1",
        2,
        &["Contact: <sip:a@192.0.2.4>;expires=0, <sip:b@192.0.2.5>;q=0.5"],
    );
    let o = run(&existing, &msg, now).expect("applies");
    assert_eq!(o.removed, vec!["sip:gone@192.0.2.9", "sip:a@192.0.2.4"]);
    assert_eq!(o.stored, vec![0]);
    assert_eq!(o.bindings[0].q, Some(500));
    assert_eq!(
        contact_values(&o.bindings, now),
        vec!["<sip:b@192.0.2.5>;expires=1800;q=0.5"]
    );
}

#[test]
fn q_values_are_written_as_the_rfc_does() {
    for (q, text) in [
        (1000, "1"),
        (500, "0.5"),
        (250, "0.25"),
        (125, "0.125"),
        (0, "0"),
    ] {
        assert_eq!(q_text(q), text);
    }
}

proptest! {
    /// Whatever sequence of updates from one Call-ID arrives, a binding's CSeq never goes
    /// down and no AoR ends with more than max_contacts bindings.
    #[test]
    fn cseq_never_decreases_and_the_limit_holds(
        ops in prop::collection::vec((0u32..20, 0usize..5, 0u32..4000), 1..40)
    ) {
        let mut bindings: Vec<Binding<()>> = Vec::new();
        for (cseq, contact, expires) in ops {
            let c = format!("Contact: <sip:u{contact}@192.0.2.1>;expires={expires}");
            let msg = register("one", cseq, &[c.as_str()]);
            let before = bindings.clone();
            if let Ok(o) = run(&bindings, &msg, 100) {
                for b in &o.bindings {
                    if let Some(old) = before.iter().find(|x| x.contact == b.contact) {
                        prop_assert!(b.cseq >= old.cseq);
                    }
                }
                bindings = o.bindings;
            }
            prop_assert!(bindings.len() <= RULES.max_contacts);
        }
    }
}

#[test]
fn contact_equality() {
    // (a, b, equal) per RFC 3261 §19.1.4
    let cases = [
        ("sip:alice@Example.COM", "sip:alice@example.com", true),
        ("sip:Alice@example.com", "sip:alice@example.com", false),
        ("sip:a@h;transport=tcp", "sip:a@h;transport=TCP", true),
        ("sip:a@h;transport=tcp", "sip:a@h", false),
        ("sip:a@h;ob", "sip:a@h", true),
        ("sip:a@h;foo=1", "sip:a@h;foo=2", false),
        ("sip:a@h:5060", "sip:a@h", false),
        ("sips:a@h", "sip:a@h", false),
        // Found by fuzzing: a repeated parameter must not make a URI unequal to itself.
        ("sip:a@h;x=1;x=2", "sip:a@h;x=1;x=2", true),
    ];
    for (a, b, eq) in cases {
        assert_eq!(same_contact(a, b), eq, "{a} vs {b}");
        assert_eq!(same_contact(b, a), eq, "{b} vs {a}");
    }
}
