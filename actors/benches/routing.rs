//! What routing costs per request: `allow_source_address` in a group of 10,000 prefixes
//! (the trie of the group's snapshot), and the policy's evaluation with 1,000 rules (900
//! of them by number prefix, the longest prefix chosen).
//!
//! `cargo bench -p limes-actors --bench routing`

use std::collections::BTreeMap;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use limes_actors::groups::Group;
use limes_actors::policy::{Facts, Policy, RuleDef};
use limes_actors::settings::Transport;
use limes_actors::tables::{AddressEntry, Origin, Proto};
use limes_sip::Method;

fn group_of(n: u32) -> Group {
    // /24 networks spread over 10.0.0.0/8 and 100.64.0.0/10, with a few /16 and /32.
    let entries: Vec<AddressEntry> = (0..n)
        .map(|i| {
            let (net, len) = match i % 10 {
                0 => (Ipv4Addr::from(0x0a00_0000 | (i << 16)), 16),
                1 => (Ipv4Addr::from(0x6440_0000 | (i << 4) | 1), 32),
                _ => (Ipv4Addr::from(0x0a00_0000 | (i << 8)), 24),
            };
            AddressEntry {
                group: 200,
                net: ipnet::IpNet::new(IpAddr::V4(net), len).expect("prefix"),
                port: if i % 3 == 0 { 5060 } else { 0 },
                proto: Proto::Any,
                tag: Some(format!("peer-{i}").into()),
                origin: Origin::Config,
            }
        })
        .collect();
    Group::build(200, &entries)
}

fn groups(c: &mut Criterion) {
    let g = group_of(10_000);
    let inside = IpAddr::V4(Ipv4Addr::new(10, 0, 77, 9));
    let outside = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    assert!(g.lookup(inside, 5060, Transport::Udp).is_some());
    c.bench_function("group lookup, 10,000 prefixes, member", |b| {
        b.iter(|| black_box(g.lookup(black_box(inside), 5060, Transport::Udp)))
    });
    c.bench_function("group lookup, 10,000 prefixes, stranger", |b| {
        b.iter(|| black_box(g.lookup(black_box(outside), 5060, Transport::Udp)))
    });
}

fn rule(name: String, source: &str, user: Option<String>, action: &str) -> RuleDef {
    RuleDef {
        name,
        priority: 100,
        source: source.into(),
        method: vec!["INVITE".into()],
        user,
        domain: None,
        registered: None,
        action: action.into(),
        set_headers: BTreeMap::new(),
        remove_headers: Vec::new(),
        vars: BTreeMap::new(),
    }
}

fn policy(c: &mut Criterion) {
    let mut defs: Vec<RuleDef> = (0..900)
        .map(|i| {
            rule(
                format!("prefix-{i}"),
                "subscriber",
                Some(format!("prefix:49{i}")),
                "trunk:carrier",
            )
        })
        .collect();
    defs.extend((0..99).map(|i| {
        rule(
            format!("group-{i}"),
            &format!("group:{}", 1000 + i),
            None,
            "location",
        )
    }));
    defs.push(rule("out".into(), "subscriber", None, "trunk:carrier"));
    let p = Policy::compile(defs, &|n: &str| n == "carrier").expect("compiles");
    let groups: Vec<(u32, Option<Arc<str>>)> = Vec::new();
    for (label, user) in [
        ("policy, 1,000 rules, prefix match", "4945123456"),
        (
            "policy, 1,000 rules, falls through to the last",
            "3312345678",
        ),
    ] {
        c.bench_function(label, |b| {
            b.iter(|| {
                let facts = Facts {
                    method: &Method::Invite,
                    user: black_box(user),
                    domain: "example.com",
                    local_domain: true,
                    groups: &groups,
                    trusted: false,
                    authenticated: false,
                };
                black_box(p.evaluate(&facts, None, &mut || false).map(|(i, _)| i))
            })
        });
    }
}

criterion_group!(benches, groups, policy);
criterion_main!(benches);
