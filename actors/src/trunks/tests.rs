//! Trunk rules as tables: the order destinations are tried in, number normalisation,
//! health transitions, refused definitions.

use super::*;

fn def(dests: &[(&str, u16, u16)]) -> TrunkDef {
    let destinations = dests
        .iter()
        .map(|(uri, priority, weight)| DestinationDef {
            priority: *priority,
            weight: *weight,
            ..DestinationDef::new(uri)
        })
        .collect();
    TrunkDef {
        group: 200,
        ping_interval_s: 0,
        ping_failures: 2,
        ..TrunkDef::new("carrier", destinations)
    }
}

fn uris(plan: &[&Destination]) -> Vec<String> {
    plan.iter().map(|d| d.def.uri.clone()).collect()
}

#[test]
fn destinations_by_priority_then_weight() {
    let t = Trunk::compile(
        def(&[
            ("sip:192.0.2.3", 2, 1),
            ("sip:192.0.2.1", 1, 3),
            ("sip:192.0.2.2", 1, 1),
        ]),
        None,
    )
    .expect("valid");
    // Weights 3:1 among priority 1: the first choice is .1 three calls in four.
    let firsts: Vec<String> = (0..8).map(|_| uris(&t.plan())[0].clone()).collect();
    assert_eq!(firsts.iter().filter(|u| *u == "sip:192.0.2.1").count(), 6);
    assert_eq!(firsts.iter().filter(|u| *u == "sip:192.0.2.2").count(), 2);
    for _ in 0..4 {
        let plan = uris(&t.plan());
        assert_eq!(plan.len(), 3);
        assert_eq!(plan[2], "sip:192.0.2.3", "priority 2 always last");
    }
    // A destination that is down or drained is not tried.
    t.destinations[0].health.set_state(DestState::Down);
    t.destinations[2].health.set_state(DestState::Drained);
    assert_eq!(uris(&t.plan()), ["sip:192.0.2.2"]);
}

#[test]
fn numbers_are_normalised_and_the_host_rewritten() {
    // (e164_country, strip, prefix, user, expected)
    let cases = [
        ("49", 0, "", "030123456", "+4930123456"),
        ("49", 0, "", "0033123456", "+33123456"),
        ("49", 0, "", "+4930123456", "+4930123456"),
        ("49", 0, "", "123", "123"),
        ("", 2, "", "9930123", "30123"),
        ("", 1, "0049", "030123", "004930123"),
        ("49", 1, "", "030123", "4930123"),
        ("", 20, "x", "123", "x"),
    ];
    for (cc, strip, prefix, user, want) in cases {
        let mut d = def(&[("sip:192.0.2.1:5070;transport=tcp", 0, 1)]);
        d.e164_country = cc.into();
        d.strip = strip;
        d.prefix = prefix.into();
        let t = Trunk::compile(d, None).expect("valid");
        assert_eq!(t.normalise(user), want, "{cc} {strip} {prefix} {user}");
    }
    let mut d = def(&[("sip:192.0.2.1:5070;transport=tcp", 0, 1)]);
    let t = Trunk::compile(d.clone(), None).expect("valid");
    let uri = |t: &Trunk| t.request_uri("123", ("example.com", None), &t.destinations[0]);
    assert_eq!(
        uri(&t).as_deref(),
        Some("sip:123@192.0.2.1:5070;transport=tcp")
    );
    d.host = "carrier.example.net".into();
    let t = Trunk::compile(d.clone(), None).expect("valid");
    assert_eq!(
        uri(&t).as_deref(),
        Some("sip:123@carrier.example.net;transport=tcp")
    );
    // A plain next hop: the Request-URI goes as received unless a number changes.
    d.host = String::new();
    d.rewrite_host = false;
    let t = Trunk::compile(d.clone(), None).expect("valid");
    assert_eq!(uri(&t), None);
    d.prefix = "0".into();
    let t = Trunk::compile(d, None).expect("valid");
    assert_eq!(
        uri(&t).as_deref(),
        Some("sip:0123@example.com;transport=tcp")
    );
    assert_eq!(
        t.request_uri("123", ("192.0.2.9", Some(5080)), &t.destinations[0])
            .as_deref(),
        Some("sip:0123@192.0.2.9:5080;transport=tcp")
    );
}

#[test]
fn health_follows_pings_and_survives_a_change() {
    let t = Trunk::compile(def(&[("sip:192.0.2.1", 0, 1)]), None).expect("valid");
    let h = &t.destinations[0].health;
    let rtt = Duration::from_millis(3);
    assert_eq!(h.ping_result(408, rtt, 2), None, "one miss is not enough");
    assert_eq!(h.ping_result(503, rtt, 2), Some(DestState::Down));
    assert_eq!(h.ping_result(408, rtt, 2), None);
    // Any answer but 408 and 5xx means it lives, a 404 included.
    assert_eq!(h.ping_result(404, rtt, 2), Some(DestState::Active));
    h.set_state(DestState::Drained);
    assert_eq!(
        h.ping_result(408, rtt, 1),
        None,
        "a drained one stays drained"
    );
    assert_eq!(h.ping_result(200, rtt, 1), None);
    let again = Trunk::compile(def(&[("sip:192.0.2.1", 0, 1)]), Some(&t)).expect("valid");
    assert_eq!(again.destinations[0].health.state(), DestState::Drained);
}

#[test]
fn bad_trunks_are_named() {
    let cases: Vec<(TrunkDef, &str)> = vec![
        (def(&[]), "1 to 64 destinations"),
        (
            def(&[("sips:carrier.example.net", 0, 1)]),
            "a sip: URI over UDP or TCP",
        ),
        (
            def(&[("sip:carrier.example.net;transport=sctp", 0, 1)]),
            "a sip: URI over UDP or TCP",
        ),
        (def(&[("sip:192.0.2.1", 0, 0)]), "weight 0"),
        (
            TrunkDef {
                failover_on: vec![486],
                ..def(&[("sip:192.0.2.1", 0, 1)])
            },
            "busy or global failure is final",
        ),
        (
            TrunkDef {
                failover_on: vec![200],
                ..def(&[("sip:192.0.2.1", 0, 1)])
            },
            "not a 3xx-6xx code",
        ),
        (
            TrunkDef {
                name: "a b".into(),
                ..def(&[("sip:192.0.2.1", 0, 1)])
            },
            "a name of letters",
        ),
        (
            TrunkDef {
                e164_country: "4x".into(),
                ..def(&[("sip:192.0.2.1", 0, 1)])
            },
            "e164_country",
        ),
    ];
    for (d, want) in cases {
        let e = Trunk::compile(d, None).expect_err(want);
        assert!(e.contains(want), "{e}");
    }
    let named = Trunk::compile(def(&[("sip:Carrier.Example.NET.", 0, 1)]), None)
        .expect("a host name is located by DNS");
    assert_eq!(named.destinations[0].addr, None);
    assert_eq!(named.destinations[0].target.host, "carrier.example.net");
    let trunks = Trunks::default();
    let mut other = def(&[("sip:192.0.2.9", 0, 1)]);
    other.name = "other".into();
    let e = trunks
        .compile_set(vec![def(&[("sip:192.0.2.1", 0, 1)]), other])
        .expect_err("same group");
    assert!(
        e.contains("group 200 is already the source of trunk"),
        "{e}"
    );
}

#[test]
fn the_calls_per_second_limit() {
    let mut d = def(&[("sip:192.0.2.1", 0, 1)]);
    d.cps = 5;
    let t = Trunk::compile(d, None).expect("valid");
    let admitted = (0..20).filter(|_| t.admit()).count();
    assert_eq!(admitted, 5, "a burst of one second's worth");
    assert_eq!(t.refused_cps.load(Ordering::Relaxed), 15);
}

/// A destination's socket and advertised address: parsed, checked against the transport
/// and the node's listening sockets, the advertised addresses kept for the node to
/// recognise itself by.
#[test]
fn sockets_and_advertised_addresses() {
    let with = |socket: Option<&str>, advertise: Option<&str>| {
        let mut d = DestinationDef::new("sip:192.0.2.1");
        d.socket = socket.map(Into::into);
        d.advertise = advertise.map(Into::into);
        TrunkDef::new("carrier", vec![d])
    };
    let t =
        Trunk::compile(with(Some("udp:10.0.0.1:5070"), Some("203.0.113.1")), None).expect("valid");
    let d = &t.destinations[0];
    assert_eq!(
        d.addr.and_then(|a| a.local),
        Some("10.0.0.1:5070".parse().unwrap()),
        "sent from the socket"
    );
    assert_eq!(
        d.advertise,
        Some("203.0.113.1:5070".parse().unwrap()),
        "the socket's port when none is given"
    );
    for (socket, advertise, why) in [
        (Some("tcp:10.0.0.1:5060"), None, "cannot reach"),
        (Some("udp:[2001:db8::1]:5060"), None, "cannot reach"),
        (Some("sctp:10.0.0.1:5060"), None, "socket"),
        (None, Some("nat.example.net"), "advertise"),
    ] {
        let e = Trunk::compile(with(socket, advertise), None).expect_err(why);
        assert!(e.contains(why), "{socket:?} {advertise:?}: {e}");
    }
    let trunks = Trunks::default();
    trunks.set_listens(vec!["udp:10.0.0.1:5060".parse().unwrap()]);
    let e = trunks
        .compile_set(vec![with(Some("udp:10.0.0.1:5070"), None)])
        .expect_err("not a listening socket");
    assert!(e.contains("not one the node listens on"), "{e}");
    let set = trunks
        .compile_set(vec![with(
            Some("udp:10.0.0.1:5060"),
            Some("203.0.113.1:5099"),
        )])
        .expect("a listening socket");
    trunks.install(set);
    assert_eq!(
        **trunks.advertised.load(),
        vec!["203.0.113.1:5099".parse::<SocketAddr>().unwrap()]
    );
}
