//! Hot-path costs of the SIP core: parse plus the keys a proxy needs to match the
//! transaction and the dialog, for a 1 KB INVITE with SDP and a 300-byte 200 OK, and
//! parse plus the forwarding rewrite.
//!
//! `cargo bench -p limes-sip --bench parse`

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use limes_sip::build::{Forward, Source};
use limes_sip::transaction::TxKey;
use limes_sip::{Limits, Message};

const INVITE: &str = "INVITE sip:+4930123456@carrier.example.net;user=phone SIP/2.0\r\n\
Via: SIP/2.0/UDP 198.51.100.10:5060;branch=z9hG4bK-524287-1---7f3b2c9a1e5d4f60;rport\r\n\
Via: SIP/2.0/UDP 10.1.2.3:5060;branch=z9hG4bK-d87543-8a7c6b5e4d3c2b1a-1--d87543-;received=198.51.100.10\r\n\
Max-Forwards: 69\r\n\
Record-Route: <sip:198.51.100.10;lr;ftag=as4f7c2e1a>\r\n\
Contact: <sip:+4930987654@10.1.2.3:5060;transport=udp>\r\n\
To: <sip:+4930123456@carrier.example.net;user=phone>\r\n\
From: \"Alice Example\" <sip:+4930987654@pbx.example.com;user=phone>;tag=as4f7c2e1a\r\n\
Call-ID: 3c26700c4f1b6a4f2a3e7d21f0b9c8a1@10.1.2.3\r\n\
CSeq: 102 INVITE\r\n\
User-Agent: Example PBX 16.4.1\r\n\
Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, SUBSCRIBE, NOTIFY, INFO, PUBLISH, MESSAGE\r\n\
Supported: replaces, timer\r\n\
P-Asserted-Identity: <sip:+4930987654@pbx.example.com;user=phone>\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 301\r\n\
\r\n\
v=0\r\n\
o=root 1908725410 1908725410 IN IP4 10.1.2.3\r\n\
s=Example PBX 16.4.1\r\n\
c=IN IP4 10.1.2.3\r\n\
t=0 0\r\n\
m=audio 17218 RTP/AVP 8 0 18 101\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:18 G729/8000\r\n\
a=fmtp:18 annexb=no\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=ptime:20\r\n\
a=maxptime:150\r\n\
a=sendrecv\r\n";

const OK: &str = "SIP/2.0 200 OK\r\n\
Via: SIP/2.0/UDP 198.51.100.10:5060;branch=z9hG4bK-524287-1---7f3b2c9a1e5d4f60;rport=5060\r\n\
From: <sip:+4930987654@pbx.example.com>;tag=as4f7c2e1a\r\n\
To: <sip:+4930123456@carrier.example.net>;tag=8f2c1b\r\n\
Call-ID: 3c26700c4f1b6a4f2a3e7d21f0b9c8a1@10.1.2.3\r\n\
CSeq: 102 INVITE\r\n\
Content-Length: 0\r\n\
\r\n";

/// What a proxy extracts from every message before deciding anything.
fn keys(m: &Message) -> (Option<TxKey>, Option<&str>, Option<&str>, Option<&str>, u32) {
    let tx = if m.is_request() {
        TxKey::server(m)
    } else {
        TxKey::client(m)
    };
    let seq = m.cseq().and_then(Result::ok).map_or(0, |c| c.seq);
    (tx, m.call_id(), m.from_tag(), m.to_tag(), seq)
}

fn bench(c: &mut Criterion) {
    let limits = Limits::default();
    let invite = Bytes::from_static(INVITE.as_bytes());
    let ok = Bytes::from_static(OK.as_bytes());
    assert!(
        invite.len() > 1000 && ok.len() > 280,
        "{} {}",
        invite.len(),
        ok.len()
    );
    assert!(keys(&Message::parse(invite.clone(), &limits).unwrap())
        .0
        .is_some());

    let mut g = c.benchmark_group("sip");
    g.throughput(Throughput::Elements(1));
    g.bench_function("invite_1k_parse_keys", |b| {
        b.iter(|| {
            let m = Message::parse(black_box(invite.clone()), &limits).unwrap();
            black_box(keys(&m)).0.is_some()
        })
    });
    g.bench_function("ok_300b_parse_keys", |b| {
        b.iter(|| {
            let m = Message::parse(black_box(ok.clone()), &limits).unwrap();
            black_box(keys(&m)).0.is_some()
        })
    });
    let source = Source {
        ip: "198.51.100.10".parse().unwrap(),
        port: 5060,
    };
    g.bench_function("invite_1k_parse_forward", |b| {
        b.iter(|| {
            let m = Message::parse(black_box(invite.clone()), &limits).unwrap();
            let _ = keys(&m);
            Forward::new(&m)
                .received_from(source)
                .push_via("SIP/2.0/UDP 203.0.113.1:5060;branch=z9hG4bKlimes.a1b2c3d4")
                .decrement_max_forwards()
                .record_route("<sip:203.0.113.1;lr>")
                .finish()
                .len()
        })
    });
    g.bench_function("ok_300b_parse_forward", |b| {
        b.iter(|| {
            let m = Message::parse(black_box(ok.clone()), &limits).unwrap();
            let _ = keys(&m);
            Forward::new(&m).pop_via().finish().len()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
