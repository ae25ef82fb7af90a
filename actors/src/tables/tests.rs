use super::*;

fn peer(net: &str, proto: Proto, pattern: Option<&str>) -> TrustedPeer {
    TrustedPeer {
        net: net.parse().expect("cidr"),
        proto,
        from_pattern: pattern.map(str::to_owned),
        tag: Some(net.into()),
        origin: Origin::Api,
    }
}

#[test]
fn classification() {
    let t = Tables::new(None, 10).expect("starts");
    t.add_trusted(peer("10.0.0.0/8", Proto::Any, None))
        .expect("adds");
    t.add_trusted(peer("192.0.2.7/32", Proto::Tcp, Some("^sip:gw@")))
        .expect("adds");
    t.add_address(AddressEntry {
        group: 200,
        net: "198.51.100.0/24".parse().expect("cidr"),
        port: 5060,
        proto: Proto::Udp,
        tag: Some("carrier".into()),
        origin: Origin::Api,
    })
    .expect("adds");
    let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
    let cases = [
        (
            "10.1.2.3",
            5060,
            Transport::Udp,
            "sip:a@x",
            Peer::Trusted {
                tag: Some("10.0.0.0/8".into()),
            },
        ),
        (
            "192.0.2.7",
            5060,
            Transport::Tcp,
            "sip:gw@x",
            Peer::Trusted {
                tag: Some("192.0.2.7/32".into()),
            },
        ),
        ("192.0.2.7", 5060, Transport::Udp, "sip:gw@x", Peer::Unknown),
        (
            "192.0.2.7",
            5060,
            Transport::Tcp,
            "sip:other@x",
            Peer::Unknown,
        ),
        (
            "198.51.100.9",
            5060,
            Transport::Udp,
            "sip:a@x",
            Peer::Carrier {
                group: 200,
                tag: Some("carrier".into()),
            },
        ),
        (
            "198.51.100.9",
            5070,
            Transport::Udp,
            "sip:a@x",
            Peer::Unknown,
        ),
        (
            "203.0.113.1",
            5060,
            Transport::Udp,
            "sip:a@x",
            Peer::Unknown,
        ),
    ];
    for (addr, port, transport, from, want) in cases {
        assert_eq!(
            t.classify(ip(addr), port, transport, from),
            want,
            "{addr}:{port}"
        );
    }
    assert_eq!(
        t.remove_trusted("10.0.0.0/8".parse().expect("cidr")).ok(),
        Some(1)
    );
    assert_eq!(
        t.classify(ip("10.1.2.3"), 5060, Transport::Udp, "sip:a@x"),
        Peer::Unknown
    );
    assert!(t
        .add_trusted(peer("10.0.0.0/8", Proto::Any, Some("(")))
        .is_err());
}

#[test]
fn config_entries_never_replace_api_ones_and_reload_as_a_set() {
    let t = Tables::new(None, 10).expect("starts");
    t.put_subscriber(Subscriber::with_password(
        "alice",
        "example.com",
        "api",
        Origin::Api,
    ))
    .expect("adds");
    let from_config = vec![
        Subscriber::with_password("alice", "example.com", "config", Origin::Config),
        Subscriber::with_password("bob", "example.com", "b", Origin::Config),
    ];
    t.set_config_subscribers(from_config).expect("loads");
    let alice = t.subscriber("alice", "EXAMPLE.com").expect("present");
    assert_eq!(alice.origin, Origin::Api);
    assert!(t.subscriber("bob", "example.com").is_some());
    t.set_config_subscribers(vec![]).expect("reloads");
    assert!(
        t.subscriber("bob", "example.com").is_none(),
        "gone with its config line"
    );
    assert!(t.subscriber("alice", "example.com").is_some());
    assert!(matches!(
        t.put_subscriber(Subscriber::with_password("bad@user", "d", "p", Origin::Api)),
        Err(TableError::Invalid(_))
    ));
}

#[test]
fn the_subscriber_table_is_bounded() {
    let t = Tables::new(None, 2).expect("starts");
    for u in ["a", "b"] {
        t.put_subscriber(Subscriber::with_password(u, "d", "p", Origin::Api))
            .expect("fits");
    }
    assert!(matches!(
        t.put_subscriber(Subscriber::with_password("c", "d", "p", Origin::Api)),
        Err(TableError::Full(2))
    ));
    t.put_subscriber(Subscriber::with_password("a", "d", "new", Origin::Api))
        .expect("a replacement always fits");
}
