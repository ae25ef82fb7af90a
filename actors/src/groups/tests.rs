//! Kamailio's group semantics (`allow_source_address`), as table tests, and the actors'
//! life: changes visible when the call returns, a failed actor restarted with its entries.

use std::net::IpAddr;

use super::*;
use crate::tables::Proto;

fn entry(group: u32, net: &str, port: u16, proto: Proto, tag: &str) -> AddressEntry {
    AddressEntry {
        group,
        net: net.parse().expect("cidr"),
        port,
        proto,
        tag: Some(tag.into()),
        origin: Origin::Api,
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

#[test]
fn kamailio_group_semantics() {
    let groups = Groups::start(None, Vec::new(), 100).expect("starts");
    for e in [
        entry(200, "198.51.100.0/24", 0, Proto::Any, "carrier-a"),
        entry(200, "198.51.100.7/32", 5080, Proto::Udp, "carrier-a-sbc"),
        entry(300, "203.0.113.0/28", 5060, Proto::Tcp, "carrier-b"),
        entry(300, "2001:db8::/48", 0, Proto::Any, "carrier-b-v6"),
        entry(400, "0.0.0.0/0", 0, Proto::Udp, "anyone-udp"),
    ] {
        groups.add(e).expect("adds");
    }
    let snap = groups.load();
    // (group, source, port, transport, expected tag)
    let cases: &[(u32, &str, u16, Transport, Option<&str>)] = &[
        // Mask: any address of the /24, any port (0), any protocol.
        (200, "198.51.100.9", 5060, Transport::Udp, Some("carrier-a")),
        (
            200,
            "198.51.100.9",
            40000,
            Transport::Tcp,
            Some("carrier-a"),
        ),
        (200, "198.51.101.9", 5060, Transport::Udp, None),
        // The /32 entry wins when its port and protocol fit, else the /24 one.
        (
            200,
            "198.51.100.7",
            5080,
            Transport::Udp,
            Some("carrier-a-sbc"),
        ),
        (200, "198.51.100.7", 5060, Transport::Udp, Some("carrier-a")),
        (200, "198.51.100.7", 5080, Transport::Tcp, Some("carrier-a")),
        // The group number matters: group 300's address is not in group 200.
        (200, "203.0.113.1", 5060, Transport::Tcp, None),
        (300, "203.0.113.1", 5060, Transport::Tcp, Some("carrier-b")),
        (300, "203.0.113.1", 5061, Transport::Tcp, None),
        (300, "203.0.113.1", 5060, Transport::Udp, None),
        (300, "203.0.113.16", 5060, Transport::Tcp, None),
        (
            300,
            "2001:db8:0:1::5",
            5060,
            Transport::Udp,
            Some("carrier-b-v6"),
        ),
        (300, "2001:db8:1::5", 5060, Transport::Udp, None),
        // An IPv4-mapped IPv6 source is its IPv4 address.
        (
            200,
            "::ffff:198.51.100.9",
            5060,
            Transport::Udp,
            Some("carrier-a"),
        ),
        (400, "192.0.2.1", 1, Transport::Udp, Some("anyone-udp")),
        (400, "192.0.2.1", 1, Transport::Tcp, None),
        (500, "192.0.2.1", 1, Transport::Udp, None),
    ];
    for (group, addr, port, transport, want) in cases {
        let got = snap.allow(*group, ip(addr), *port, *transport);
        assert_eq!(
            got.and_then(|e| e.tag.as_deref()),
            *want,
            "group {group} {addr}:{port} {transport:?}"
        );
    }
    assert_eq!(
        snap.first(ip("198.51.100.9"), 5060, Transport::Udp)
            .map(|e| e.group),
        Some(200),
        "the lowest group first"
    );
}

#[test]
fn changes_are_visible_on_return_and_bounded() {
    let groups = Groups::start(None, Vec::new(), 2).expect("starts");
    let a = entry(200, "192.0.2.0/24", 0, Proto::Any, "a");
    groups.add(a.clone()).expect("adds");
    assert!(groups
        .load()
        .allow(200, ip("192.0.2.5"), 1, Transport::Udp)
        .is_some());
    groups.add(a.clone()).expect("a replacement");
    assert_eq!(groups.entries().len(), 1);
    groups
        .add(entry(201, "192.0.3.0/24", 0, Proto::Any, "b"))
        .expect("adds");
    assert!(matches!(
        groups.add(entry(202, "192.0.4.0/24", 0, Proto::Any, "c")),
        Err(TableError::Full(2))
    ));
    assert_eq!(groups.remove(200, a.net).expect("removes"), 1);
    assert!(groups
        .load()
        .allow(200, ip("192.0.2.5"), 1, Transport::Udp)
        .is_none());
    assert!(matches!(
        groups.remove(200, a.net),
        Err(TableError::NotFound(_))
    ));
    assert!(groups
        .add(entry(0, "192.0.2.0/24", 0, Proto::Any, "zero"))
        .is_err());
}

#[test]
fn configuration_entries_are_replaced_as_a_set_and_api_ones_stay() {
    let groups = Groups::start(None, Vec::new(), 100).expect("starts");
    groups
        .add(entry(200, "192.0.2.0/24", 0, Proto::Any, "api"))
        .expect("adds");
    let config = |net: &str, group: u32| AddressEntry {
        origin: Origin::Config,
        ..entry(group, net, 0, Proto::Any, "config")
    };
    groups
        .set_config(vec![
            config("198.51.100.0/24", 200),
            config("203.0.113.0/24", 300),
        ])
        .expect("loads");
    assert_eq!(groups.entries().len(), 3);
    groups
        .set_config(vec![config("203.0.113.0/24", 300)])
        .expect("reloads");
    let snap = groups.load();
    assert!(snap
        .allow(200, ip("198.51.100.1"), 1, Transport::Udp)
        .is_none());
    assert!(snap
        .allow(200, ip("192.0.2.1"), 1, Transport::Udp)
        .is_some());
    assert!(snap
        .allow(300, ip("203.0.113.1"), 1, Transport::Udp)
        .is_some());
}

#[test]
fn restored_entries_are_published_at_start() {
    let groups = Groups::start(
        None,
        vec![entry(200, "192.0.2.0/24", 0, Proto::Any, "restored")],
        100,
    )
    .expect("starts");
    assert!(groups
        .load()
        .allow(200, ip("192.0.2.1"), 1, Transport::Udp)
        .is_some());
    // Its actor starts on the first change and keeps what was restored.
    groups
        .add(entry(200, "198.51.100.0/24", 0, Proto::Any, "new"))
        .expect("adds");
    assert_eq!(groups.entries().len(), 2);
}

/// A group actor that fails is started again by the supervisor from its last published
/// entries: readers never lose the group, and the next change applies on top of them.
#[test]
fn a_failed_group_actor_is_restarted_with_its_entries() {
    let groups = Groups::start(None, Vec::new(), 100).expect("starts");
    groups
        .add(entry(300, "198.51.100.0/24", 0, Proto::Any, "before"))
        .expect("adds");
    groups
        .supervisor
        .cast(actor::SupervisorMsg::To(300, actor::GroupMsg::Fail))
        .expect("delivered");
    assert!(
        groups
            .load()
            .allow(300, ip("198.51.100.9"), 5060, Transport::Udp)
            .is_some(),
        "the published snapshot outlives the actor"
    );
    // The change is queued behind the failure: it reaches the restarted actor.
    groups
        .add(entry(300, "203.0.113.0/24", 0, Proto::Any, "after"))
        .expect("the restarted actor takes changes");
    let tags: Vec<Option<Arc<str>>> = groups
        .entries()
        .iter()
        .filter(|e| e.group == 300)
        .map(|e| e.tag.clone())
        .collect();
    assert_eq!(tags.len(), 2, "both entries: {tags:?}");
    assert!(groups
        .load()
        .allow(300, ip("203.0.113.1"), 5060, Transport::Udp)
        .is_some());
}
