//! The proxy driver under concurrency: two threads that receive the same INVITE at the
//! same moment (a retransmission arriving on another socket or worker) forward it exactly
//! once, and the transaction count does not leak; an answered INVITE lets go of its call.

use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use bytes::Bytes;
use limes_actors::auth::{Auth, AuthMetrics, AuthSettings};
use limes_actors::dialogs::{DialogMetrics, DialogSettings, Dialogs};
use limes_actors::dns::{Dns, DnsMetrics, DnsSettings};
use limes_actors::metrics::Metrics;
use limes_actors::proxy::edge::Edge;
use limes_actors::proxy::local::Local;
use limes_actors::proxy::routing::RoutingMetrics;
use limes_actors::proxy::Proxy;
use limes_actors::registrar::{Location, LocationMetrics};
use limes_actors::settings::{Listen, ProxySettings, Transport, TransportSettings};
use limes_actors::tables::Tables;
use limes_actors::transport::{Flow, Outbound, Target};
use limes_actors::trunks::{DestinationDef, TrunkDef};
use limes_cluster::NodeSecret;
use prometheus_client::registry::Registry;

/// A proxy on a UDP socket of its own, relaying to `next_hop`, trusting everyone.
fn proxy(next_hop: SocketAddr, runtime: &tokio::runtime::Runtime) -> (Arc<Proxy>, SocketAddr) {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("binds");
    let local_addr = socket.local_addr().expect("bound");
    let mut registry = Registry::default();
    let metrics = Metrics::new(&mut registry);
    let out = Outbound::new(
        vec![socket],
        Vec::new(),
        TransportSettings::default(),
        limes_sip::Limits::default(),
        metrics.clone(),
        runtime.handle().clone(),
    )
    .expect("outbound");
    let secret = NodeSecret::from_text("driver test secret");
    let auth = AuthSettings {
        challenge_requests: false,
        ..AuthSettings::default()
    };
    let edge = Edge::new(
        Arc::new(Tables::new(None, 10).expect("starts")),
        Arc::new(Auth::new(
            auth,
            AuthMetrics::register(&mut registry),
            &secret,
        )),
        Arc::new(
            Location::open(
                None,
                Default::default(),
                10,
                0,
                LocationMetrics::register(&mut registry),
            )
            .expect("location"),
        ),
        Vec::new(),
        true,
        RoutingMetrics::register(&mut registry),
        Arc::new(Dns::new(
            DnsSettings::default(),
            &[Transport::Udp],
            runtime.handle().clone(),
            DnsMetrics::register(&mut registry),
        )),
    );
    let hop = DestinationDef::new(&format!("sip:{next_hop}"));
    edge.set_routing(|s| {
        s.config_trunks = vec![TrunkDef {
            rewrite_host: false,
            ping_interval_s: 0,
            ..TrunkDef::new("default", vec![hop])
        }];
        s.config_rules = limes_actors::policy::default_rules(Some("default"));
    })
    .expect("routing");
    let settings = ProxySettings {
        next_hops: vec![Target::resolve(&format!("sip:{next_hop}")).expect("next hop")],
        ..ProxySettings::default()
    };
    let listen = Listen {
        transport: Transport::Udp,
        addr: local_addr,
    };
    let local = Local::new(vec![listen], Vec::new(), &secret);
    let dialogs = Dialogs::new(
        DialogSettings::default(),
        "driver",
        DialogMetrics::register(&mut registry),
    )
    .expect("dialogs");
    let proxy = Proxy::new(settings, local, out, metrics, None, edge, Arc::new(dialogs));
    (proxy, local_addr)
}

fn invite(n: u32) -> Bytes {
    Bytes::from(format!(
        "INVITE sip:bob@192.0.2.9 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKrace{n};rport\r\nFrom: <sip:alice@127.0.0.1>;tag=a{n}\r\nTo: <sip:bob@192.0.2.9>\r\nCall-ID: race-{n}\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@127.0.0.1:5999>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ))
}

/// A proxy relaying to a socket of the test's (read with `timeout`), and the flow of a
/// caller on 127.0.0.1:5999. The runtime must outlive the proxy.
fn relaying(timeout: Duration) -> (tokio::runtime::Runtime, UdpSocket, Arc<Proxy>, Flow) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let next_hop = UdpSocket::bind("127.0.0.1:0").expect("binds");
    next_hop.set_read_timeout(Some(timeout)).expect("timeout");
    let (proxy, local) = proxy(next_hop.local_addr().expect("bound"), &runtime);
    let flow = Flow {
        transport: Transport::Udp,
        remote: "127.0.0.1:5999".parse().expect("addr"),
        local,
    };
    (runtime, next_hop, proxy, flow)
}

#[test]
fn the_same_invite_received_by_two_threads_at_once_is_forwarded_once() {
    const CALLS: u32 = 400;
    let (_runtime, next_hop, proxy, flow) = relaying(Duration::from_millis(500));

    // The next hop counts what it receives while the two threads race.
    let counter = std::thread::spawn(move || {
        let mut buf = vec![0u8; 65_536];
        let mut invites = 0u32;
        while let Ok(n) = next_hop.recv(&mut buf) {
            if buf[..n].starts_with(b"INVITE ") {
                invites += 1;
            }
        }
        invites
    });
    let barrier = Arc::new(Barrier::new(2));
    let racers: Vec<_> = (0..2)
        .map(|_| {
            let (proxy, barrier) = (proxy.clone(), barrier.clone());
            std::thread::spawn(move || {
                for n in 0..CALLS {
                    let bytes = invite(n);
                    barrier.wait();
                    proxy.handle(bytes, flow, Instant::now());
                }
            })
        })
        .collect();
    for r in racers {
        r.join().expect("racer");
    }
    let forwarded = counter.join().expect("counter");
    assert_eq!(forwarded, CALLS, "each INVITE forwarded exactly once");
    assert_eq!(proxy.active(), CALLS as usize, "one transaction each");
    assert_eq!(
        proxy.dialogs.len(),
        CALLS as usize,
        "one call each: no copy left tracked"
    );
    let (_, absorbed) = proxy.metrics().retransmissions_total();
    assert_eq!(
        absorbed,
        u64::from(CALLS),
        "the other copy is a retransmission"
    );
}

/// Once its INVITE is answered, the call is held by the dialog table, not by the INVITE's
/// transaction: that lives on for Timer L and M (32 s), and at 1,000 calls/s kept some
/// 40 MB of calls long ended.
#[test]
fn an_answered_invite_does_not_keep_its_call() {
    let (_runtime, next_hop, proxy, flow) = relaying(Duration::from_secs(2));
    proxy.handle(invite(1), flow, Instant::now());
    let mut buf = vec![0u8; 65_536];
    let n = next_hop.recv(&mut buf).expect("the INVITE is forwarded");
    let forwarded = String::from_utf8_lossy(&buf[..n]).into_owned();
    let call = proxy.dialogs.all().pop().expect("the call is tracked");
    let held_while_ringing = Arc::strong_count(&call);

    // The 200 carries the forwarded INVITE's Vias, as the callee sends it.
    let vias: String = forwarded
        .lines()
        .filter(|l| l.starts_with("Via:"))
        .map(|l| format!("{l}\r\n"))
        .collect();
    let ok = format!(
        "SIP/2.0 200 OK\r\n{vias}From: <sip:alice@127.0.0.1>;tag=a1\r\nTo: <sip:bob@192.0.2.9>;tag=b1\r\nCall-ID: race-1\r\nCSeq: 1 INVITE\r\nContact: <sip:bob@192.0.2.9>\r\nContent-Length: 0\r\n\r\n"
    );
    let from_callee = Flow {
        remote: next_hop.local_addr().expect("bound"),
        ..flow
    };
    proxy.handle(Bytes::from(ok), from_callee, Instant::now());
    assert_eq!(
        call.phase(),
        limes_actors::dialogs::Phase::Confirmed,
        "the 200 confirms it"
    );
    assert_eq!(proxy.active(), 1, "the INVITE's transaction lives on");
    assert_eq!(
        Arc::strong_count(&call),
        held_while_ringing - 1,
        "the transaction no longer holds the call"
    );
}
