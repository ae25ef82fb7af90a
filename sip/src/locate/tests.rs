use std::collections::HashMap;

use super::*;

/// A zone: the answer to each question; a question it has no entry for gets "no records".
#[derive(Default)]
struct Zone(HashMap<Question, Answer>);

impl Zone {
    fn naptr(mut self, name: &str, records: &[(u16, u16, &str, &str, &str)]) -> Self {
        let records = records
            .iter()
            .map(|&(order, preference, flags, services, replacement)| Naptr {
                order,
                preference,
                flags: flags.into(),
                services: services.into(),
                replacement: replacement.into(),
            })
            .collect();
        self.0
            .insert(Question::Naptr(name.into()), Answer::Naptr(records));
        self
    }

    fn srv(mut self, name: &str, records: &[(u16, u16, u16, &str)]) -> Self {
        let records = records
            .iter()
            .map(|&(priority, weight, port, target)| Srv {
                priority,
                weight,
                port,
                target: target.into(),
            })
            .collect();
        self.0
            .insert(Question::Srv(name.into()), Answer::Srv(records));
        self
    }

    fn addrs(mut self, name: &str, ips: &[&str]) -> Self {
        let ips = ips.iter().map(|ip| ip.parse().unwrap()).collect();
        self.0
            .insert(Question::Addrs(name.into()), Answer::Addrs(ips));
        self
    }

    fn failing(mut self, q: Question) -> Self {
        self.0.insert(q, Answer::Failed);
        self
    }

    /// Runs a location to its end: the questions asked and the outcome.
    fn locate(&self, uri: &str, supported: &[Proto], seed: u64) -> (Vec<Question>, Outcome) {
        let target = match Target::of(&Uri::parse(uri).unwrap()) {
            Ok(t) => t,
            Err(e) => return (vec![], Err(e)),
        };
        let (mut l, mut step) = Locator::new(&target, supported, seed);
        let mut asked = Vec::new();
        loop {
            match step {
                Step::Ask(q) => {
                    assert!(asked.len() < 64, "a location must end");
                    let a = self.0.get(&q).cloned().unwrap_or_else(|| match &q {
                        Question::Naptr(_) => Answer::Naptr(vec![]),
                        Question::Srv(_) => Answer::Srv(vec![]),
                        Question::Addrs(_) => Answer::Addrs(vec![]),
                    });
                    asked.push(q);
                    step = l.answer(a);
                }
                Step::Done(r) => {
                    let r = r.map(|v| v.iter().map(|l| (l.proto, l.addr.to_string())).collect());
                    return (asked, r);
                }
            }
        }
    }
}

/// Servers found, as (transport, address) pairs, or why none.
type Outcome = Result<Vec<(Proto, String)>, Unresolved>;

/// Why, the URI, the transports asked for, the questions expected, the outcome.
type Case = (
    &'static str,
    &'static str,
    &'static [Proto],
    Vec<Question>,
    Outcome,
);

const BOTH: &[Proto] = &[Proto::Udp, Proto::Tcp];
use Proto::{Tcp, Udp};

fn n(s: &str) -> Question {
    Question::Naptr(s.into())
}
fn s(s: &str) -> Question {
    Question::Srv(s.into())
}
fn a(s: &str) -> Question {
    Question::Addrs(s.into())
}
fn ok(v: &[(Proto, &str)]) -> Outcome {
    Ok(v.iter().map(|(p, a)| (*p, a.to_string())).collect())
}

/// The records of RFC 3263 §4.1's example, with our transports only (SIPS over TLS is
/// not spoken here and is skipped).
fn rfc_example() -> Zone {
    Zone::default()
        .naptr(
            "example.com",
            &[
                (50, 50, "s", "SIPS+D2T", "_sips._tcp.example.com."),
                (90, 50, "s", "SIP+D2T", "_sip._tcp.example.com"),
                (100, 50, "s", "SIP+D2U", "_sip._udp.example.com."),
            ],
        )
        .srv(
            "_sip._tcp.example.com",
            &[(0, 0, 5060, "server1.example.com")],
        )
        .srv(
            "_sip._udp.example.com",
            &[(0, 0, 5060, "server2.example.com")],
        )
        .addrs("server1.example.com", &["192.0.2.1"])
        .addrs("server2.example.com", &["192.0.2.2", "2001:db8::2"])
}

#[test]
fn rfc_3263_location_table() {
    let zone = rfc_example()
        .srv(
            "_sip._udp.carrier.test",
            &[
                (20, 0, 5072, "b2.carrier.test"),
                (10, 0, 5071, "b1.carrier.test"),
            ],
        )
        .addrs("b1.carrier.test", &["127.0.0.5"])
        .addrs("b2.carrier.test", &["127.0.0.6"])
        .addrs("plain.test", &["198.51.100.7"]);
    #[rustfmt::skip]
    let table: &[Case] = &[
        ("§4.1: a numeric host asks nothing, port 5060 by default",
         "sip:192.0.2.9", BOTH, vec![], ok(&[(Udp, "192.0.2.9:5060")])),
        ("§4.1: a numeric host keeps the URI's transport and port",
         "sip:[2001:db8::9]:5080;transport=tcp", BOTH, vec![], ok(&[(Tcp, "[2001:db8::9]:5080")])),
        ("§4.2: a port in the URI: addresses only, no NAPTR or SRV",
         "sip:u@example.com:5099", BOTH, vec![a("example.com")], Err(Unresolved::NoRecords)),
        ("§4.2: a port and a host with addresses",
         "sip:plain.test:5099;transport=tcp", BOTH, vec![a("plain.test")], ok(&[(Tcp, "198.51.100.7:5099")])),
        ("§4.1: NAPTR by order: TCP (90) before UDP (100); SIPS skipped",
         "sip:alice@example.com", BOTH,
         vec![n("example.com"), s("_sip._tcp.example.com"), s("_sip._udp.example.com"),
              a("server1.example.com"), a("server2.example.com")],
         ok(&[(Tcp, "192.0.2.1:5060"), (Udp, "192.0.2.2:5060"), (Udp, "[2001:db8::2]:5060")])),
        ("§4.1: NAPTR records for transports not asked for are skipped",
         "sip:example.com", &[Udp],
         vec![n("example.com"), s("_sip._udp.example.com"), a("server2.example.com")],
         ok(&[(Udp, "192.0.2.2:5060"), (Udp, "[2001:db8::2]:5060")])),
        ("§4.1: a transport parameter: SRV for it directly",
         "sip:example.com;transport=tcp", BOTH,
         vec![s("_sip._tcp.example.com"), a("server1.example.com")], ok(&[(Tcp, "192.0.2.1:5060")])),
        ("§4.1: no NAPTR: SRV for each transport; RFC 2782: lower priority first",
         "sip:carrier.test", BOTH,
         vec![n("carrier.test"), s("_sip._udp.carrier.test"), s("_sip._tcp.carrier.test"),
              a("b1.carrier.test"), a("b2.carrier.test")],
         ok(&[(Udp, "127.0.0.5:5071"), (Udp, "127.0.0.6:5072")])),
        ("§4.2: no NAPTR, no SRV: the host's addresses, UDP port 5060",
         "sip:plain.test", BOTH,
         vec![n("plain.test"), s("_sip._udp.plain.test"), s("_sip._tcp.plain.test"), a("plain.test")],
         ok(&[(Udp, "198.51.100.7:5060")])),
        ("§4.2: the fallback keeps a transport parameter",
         "sip:plain.test;transport=tcp", BOTH,
         vec![s("_sip._tcp.plain.test"), a("plain.test")], ok(&[(Tcp, "198.51.100.7:5060")])),
        ("nothing at all",
         "sip:nobody.test", BOTH,
         vec![n("nobody.test"), s("_sip._udp.nobody.test"), s("_sip._tcp.nobody.test"), a("nobody.test")],
         Err(Unresolved::NoRecords)),
        ("a transport this node does not speak",
         "sip:example.com;transport=tls", BOTH, vec![], Err(Unresolved::NoTransport)),
        ("SIPS (TLS) is not spoken here",
         "sips:example.com", BOTH, vec![], Err(Unresolved::NoTransport)),
        ("a transport parameter for a transport not listened on",
         "sip:example.com;transport=tcp", &[Udp], vec![], Err(Unresolved::NoTransport)),
        ("names are compared without case or the root's dot; maddr wins over the host",
         "sip:x@ignored.test;maddr=PLAIN.test.", BOTH,
         vec![n("plain.test"), s("_sip._udp.plain.test"), s("_sip._tcp.plain.test"), a("plain.test")],
         ok(&[(Udp, "198.51.100.7:5060")])),
    ];
    for (why, uri, supported, questions, outcome) in table {
        let (asked, got) = zone.locate(uri, supported, 7);
        assert_eq!(&asked, questions, "{why}: questions");
        assert_eq!(&got, outcome, "{why}: outcome");
    }
}

#[test]
fn server_failures_fail_only_when_nothing_was_found() {
    let down = Zone::default().failing(n("example.com"));
    assert_eq!(
        down.locate("sip:example.com", BOTH, 1),
        (vec![n("example.com")], Err(Unresolved::ServerFailure)),
        "a NAPTR query that fails ends the location: the server is down"
    );
    let partial = rfc_example().failing(a("server1.example.com"));
    let (_, got) = partial.locate("sip:example.com", BOTH, 1);
    assert_eq!(
        got,
        ok(&[(Udp, "192.0.2.2:5060"), (Udp, "[2001:db8::2]:5060")]),
        "one target that cannot be resolved leaves the others"
    );
}

#[test]
fn a_dot_target_says_no_service() {
    let zone = Zone::default().srv("_sip._udp.none.test", &[(0, 0, 5060, ".")]);
    let (asked, got) = zone.locate("sip:none.test;transport=udp", BOTH, 1);
    assert_eq!(asked, vec![s("_sip._udp.none.test"), a("none.test")]);
    assert_eq!(got, Err(Unresolved::NoRecords));
}

#[test]
fn equal_priorities_share_calls_by_weight() {
    // RFC 2782's choice: a number from 0 to the sum of the weights (inclusive), the first
    // record whose running sum reaches it; with weights 1 and 3 the heavy one comes first
    // for 2, 3 and 4 of 0..=4: three times in five.
    let zone = Zone::default()
        .srv(
            "_sip._udp.w.test",
            &[
                (1, 1, 5060, "light.w.test"),
                (1, 3, 5060, "heavy.w.test"),
                (0, 0, 5060, "first.w.test"),
            ],
        )
        .addrs("first.w.test", &["10.0.0.1"])
        .addrs("light.w.test", &["10.0.0.2"])
        .addrs("heavy.w.test", &["10.0.0.3"]);
    let mut heavy_second = 0;
    for seed in 0..4000 {
        let (_, got) = zone.locate("sip:w.test;transport=udp", BOTH, seed);
        let got = got.unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].1, "10.0.0.1:5060", "priority 0 always first");
        if got[1].1 == "10.0.0.3:5060" {
            heavy_second += 1;
        }
    }
    assert!(
        (2200..2600).contains(&heavy_second),
        "weight 3 comes first about 2,400 times in 4,000: {heavy_second}"
    );
}

#[test]
fn a_hostile_zone_is_bounded() {
    let targets: Vec<String> = (0..100).map(|i| format!("t{i}.big.test")).collect();
    let records: Vec<(u16, u16, u16, &str)> =
        targets.iter().map(|t| (0, 0, 5060, t.as_str())).collect();
    let mut zone = Zone::default().srv("_sip._udp.big.test", &records);
    let many: Vec<String> = (0..50).map(|i| format!("10.1.0.{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    for t in &targets {
        zone = zone.addrs(t, &many);
    }
    let (asked, got) = zone.locate("sip:big.test;transport=udp", BOTH, 3);
    assert!(asked.len() <= 1 + MAX_SRV, "{} questions", asked.len());
    assert_eq!(got.unwrap().len(), MAX_LOCATED);
}
