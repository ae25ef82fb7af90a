//! Malformed input from the network: each gets the RFC's answer or a counted drop, the node
//! stays up, and its memory stays bounded.

#[path = "support.rs"]
mod support;

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::time::Duration;

use support::{ports, Node};

const OPTIONS: &str = "OPTIONS sip:{HOST} SIP/2.0\r\nVia: SIP/2.0/{T} 127.0.0.1:{PORT};branch=z9hG4bK{N};rport\r\nFrom: <sip:probe@127.0.0.1>;tag={N}\r\nTo: <sip:{HOST}>\r\nCall-ID: probe-{N}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n";

fn options(host: &str, transport: &str, port: u16, n: u32) -> String {
    OPTIONS
        .replace("{HOST}", host)
        .replace("{T}", transport)
        .replace("{PORT}", &port.to_string())
        .replace("{N}", &n.to_string())
}

/// A request with a body whose Content-Length says otherwise.
fn bad_length(host: &str, transport: &str, port: u16, length: &str) -> String {
    options(host, transport, port, 7).replace(
        "Content-Length: 0\r\n\r\n",
        &format!("Content-Length: {length}\r\n\r\nv=0\r\n"),
    )
}

fn udp_exchange(sock: &UdpSocket, to: &str, data: &[u8]) -> Option<String> {
    sock.send_to(data, to).unwrap();
    let mut buf = vec![0u8; 65_536];
    match sock.recv_from(&mut buf) {
        Ok((n, _)) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
        Err(_) => None,
    }
}

fn status_line(answer: &Option<String>) -> String {
    answer
        .as_deref()
        .and_then(|a| a.lines().next())
        .unwrap_or("(no answer)")
        .to_owned()
}

#[test]
fn malformed_udp_gets_an_answer_or_a_counted_drop() {
    let p = ports();
    let node = Node::start(&["--listen", &format!("udp:127.0.0.1:{p}")], p + 9);
    let to = format!("127.0.0.1:{p}");
    let host = to.clone();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(400)))
        .unwrap();
    let me = sock.local_addr().unwrap().port();

    // Content-Length larger than the datagram: 400 naming the defect (RFC 3261 §18.3).
    let a = udp_exchange(&sock, &to, bad_length(&host, "UDP", me, "500").as_bytes());
    assert!(
        status_line(&a).starts_with("SIP/2.0 400 Content-Length larger than message"),
        "{a:?}"
    );
    // A negative Content-Length.
    let a = udp_exchange(&sock, &to, bad_length(&host, "UDP", me, "-3").as_bytes());
    assert!(
        status_line(&a).starts_with("SIP/2.0 400 malformed Content-Length"),
        "{a:?}"
    );
    // Truncated: the datagram stops inside the header section; no Call-ID, CSeq ... -> 400.
    let full = options(&host, "UDP", me, 8);
    let a = udp_exchange(&sock, &to, &full.as_bytes()[..full.len() / 3]);
    assert!(status_line(&a).starts_with("SIP/2.0 400"), "{a:?}");
    // Oversized: a 64 KB datagram of header lines, past the header-count bound: dropped.
    let mut big = options(&host, "UDP", me, 9).replace("Content-Length: 0\r\n\r\n", "");
    while big.len() < 60_000 {
        big.push_str("X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    }
    big.push_str("Content-Length: 0\r\n\r\n");
    let a = udp_exchange(&sock, &to, big.as_bytes());
    assert_eq!(a, None);
    // Binary garbage: dropped.
    let garbage: Vec<u8> = (0..2000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    assert_eq!(udp_exchange(&sock, &to, &garbage), None);
    // An unknown URI scheme: 416; an unsupported version: 505.
    let a = udp_exchange(
        &sock,
        &to,
        options("x", "UDP", me, 10)
            .replace("OPTIONS sip:x", "OPTIONS foo:x")
            .as_bytes(),
    );
    assert!(status_line(&a).starts_with("SIP/2.0 416"), "{a:?}");
    let a = udp_exchange(
        &sock,
        &to,
        options(&host, "UDP", me, 11)
            .replacen("SIP/2.0\r\n", "SIP/3.0\r\n", 1)
            .as_bytes(),
    );
    assert!(status_line(&a).starts_with("SIP/2.0 505"), "{a:?}");

    assert!(node.metric("limes_sip_drops_total{reason=\"too_many_headers\"}") >= 1.0);
    assert!(node.metric("limes_sip_drops_total{reason=\"bad_start_line\"}") >= 1.0);
    // Still up and answering.
    let a = udp_exchange(&sock, &to, options(&host, "UDP", me, 12).as_bytes());
    assert!(status_line(&a).starts_with("SIP/2.0 200"), "{a:?}");
}

#[test]
fn malformed_tcp_is_answered_or_closed_and_memory_stays_bounded() {
    let p = ports();
    let mut node = Node::start(
        &[
            "--listen",
            &format!("tcp:127.0.0.1:{p}"),
            "--listen",
            &format!("udp:127.0.0.1:{p}"),
        ],
        p + 9,
    );
    let to = format!("127.0.0.1:{p}");
    let host = to.clone();
    let rss_before = node.rss_kib();

    let read_answer = |s: &mut TcpStream| -> String {
        let mut buf = vec![0u8; 4096];
        let n = s.read(&mut buf).unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    // Two pipelined requests in one write: Content-Length frames them; both answered.
    let mut s = TcpStream::connect(&to).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let me = s.local_addr().unwrap().port();
    let two = format!(
        "{}{}",
        options(&host, "TCP", me, 1),
        options(&host, "TCP", me, 2)
    );
    s.write_all(two.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let a = read_answer(&mut s);
    assert_eq!(a.matches("SIP/2.0 200 OK").count(), 2, "{a}");
    // A CRLF keep-alive ping gets a pong (RFC 5626 §3.5.1).
    s.write_all(b"\r\n\r\n").unwrap();
    assert_eq!(read_answer(&mut s), "\r\n");
    // No Content-Length on a stream: the connection is closed (it cannot be framed).
    let missing = options(&host, "TCP", me, 3).replace("Content-Length: 0\r\n", "");
    s.write_all(missing.as_bytes()).unwrap();
    assert_eq!(read_answer(&mut s), "", "closed");

    // Binary garbage: closed without an answer.
    let mut s = TcpStream::connect(&to).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let garbage: Vec<u8> = (0..70_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    let _ = s.write_all(&garbage);
    assert!(!read_answer(&mut s).starts_with("SIP/2.0"));

    // 10 MB without a CRLF: refused at the 64 KB bound, connection closed, RSS flat.
    let mut s = TcpStream::connect(&to).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    let chunk = vec![b'a'; 64 * 1024];
    let mut sent = 0usize;
    while sent < 10 * 1024 * 1024 {
        match s.write(&chunk) {
            Ok(n) => sent += n,
            Err(_) => break, // the node closed the connection
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(node.metric("limes_sip_drops_total{reason=\"too_large\"}") >= 1.0);
    assert!(node.metric("limes_sip_drops_total{reason=\"missing_content_length\"}") >= 1.0);

    assert!(node.is_running());
    let rss_after = node.rss_kib();
    assert!(
        rss_after < rss_before + 32 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
    // Still answering on a fresh connection.
    let mut s = TcpStream::connect(&to).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let me = s.local_addr().unwrap().port();
    s.write_all(options(&host, "TCP", me, 4).as_bytes())
        .unwrap();
    assert!(read_answer(&mut s).starts_with("SIP/2.0 200 OK"));
}

#[test]
fn a_flood_from_one_source_is_limited() {
    let p = ports();
    let node = Node::with_config(
        "flood",
        "[flood]\nrate = 50\nburst = 100\naction = \"reply\"\nretry_after_s = 7\n",
        p,
    );
    let to = format!("127.0.0.1:{p}");
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let me = sock.local_addr().unwrap().port();
    let mut buf = vec![0u8; 4096];
    let (mut ok, mut limited) = (0, 0);
    // 400 requests in about 0.4 s from one address: 100 + 50/s pass, the rest get 503.
    for n in 0..400 {
        sock.send_to(options(&to, "UDP", me, n).as_bytes(), &to)
            .unwrap();
        if let Ok((len, _)) = sock.recv_from(&mut buf) {
            let a = String::from_utf8_lossy(&buf[..len]);
            if a.starts_with("SIP/2.0 200") {
                ok += 1;
            } else if a.starts_with("SIP/2.0 503") && a.contains("Retry-After: 7") {
                limited += 1;
            }
        }
    }
    // The burst plus what the bucket refills while the loop runs (a slow machine runs it
    // for longer), and never the whole flood.
    assert!((100..=300).contains(&ok), "{ok} passed");
    assert!(limited >= 100, "{limited} limited");
    assert!(node.metric("limes_flood_limited_total") >= f64::from(limited));
    // Another source is not affected.
    let other = UdpSocket::bind("127.0.0.2:0").unwrap();
    other
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let port = other.local_addr().unwrap().port();
    let _ = udp_exchange(&other, &to, options(&to, "UDP", port, 1).as_bytes());
    let a = udp_exchange(&other, &to, options(&to, "UDP", port, 2).as_bytes());
    assert!(status_line(&a).starts_with("SIP/2.0 200"), "{a:?}");
}

#[test]
fn sigterm_drains_and_exits_within_the_bound() {
    let p = ports();
    let mut node = Node::start(&["--listen", &format!("udp:127.0.0.1:{p}")], p + 9);
    let status = node
        .terminate(Duration::from_secs(5))
        .expect("exits within 5 s");
    assert!(status.success());
}

#[test]
fn ipv6_listeners_answer_with_ipv6_vias() {
    let p = ports();
    let node = Node::start(
        &[
            "--listen",
            &format!("udp:[::1]:{p}"),
            "--listen",
            &format!("tcp:[::1]:{p}"),
        ],
        p + 9,
    );
    let to = format!("[::1]:{p}");
    let sock = UdpSocket::bind("[::1]:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let me = sock.local_addr().unwrap().port();
    let req = options(&to, "UDP", me, 1).replace("127.0.0.1", "[::1]");
    let a = udp_exchange(&sock, &to, req.as_bytes());
    let a = a.expect("an answer over IPv6");
    assert!(a.starts_with("SIP/2.0 200 OK"), "{a}");
    assert!(a.contains("Via: SIP/2.0/UDP [::1]:"), "{a}");

    let mut s = TcpStream::connect(&to).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let me = s.local_addr().unwrap().port();
    s.write_all(
        options(&to, "TCP", me, 2)
            .replace("127.0.0.1", "[::1]")
            .as_bytes(),
    )
    .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("SIP/2.0 200 OK"));
    assert_eq!(
        node.metric("limes_sip_requests_received_total{method=\"OPTIONS\"}"),
        2.0
    );
}

/// SIGTERM while an INVITE waits for its answer: new INVITEs get 503, the pending one is
/// answered through, and the node exits once its drain time is over (the call it answered
/// ended with the node's BYEs).
#[test]
fn sigterm_refuses_new_invites_and_finishes_pending_ones() {
    use bytes::Bytes;
    use limes_sip::build::Response;
    use limes_sip::{Limits, Message};

    let p = ports();
    let uas = UdpSocket::bind("127.0.0.1:0").unwrap();
    uas.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let uas_addr = uas.local_addr().unwrap();
    // The answered call is never hung up: after the drain time the node ends it.
    let config = format!(
        "[sip]\nnext_hop = [\"sip:{uas_addr}\"]\n[shutdown]\ndrain_s = 1\n[[trusted]]\ncidr = \"127.0.0.0/8\"\n"
    );
    let mut node = Node::with_config("sigterm-pending", &config, p);
    let to = format!("127.0.0.1:{p}");
    let caller = UdpSocket::bind("127.0.0.1:0").unwrap();
    caller
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let me = caller.local_addr().unwrap();
    let invite = |n: u32| {
        format!(
            "INVITE sip:callee@{uas_addr} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKdrain{n};rport\r\nMax-Forwards: 70\r\n\
             From: <sip:caller@example.com>;tag=d{n}\r\nTo: <sip:callee@example.com>\r\nCall-ID: drain-{n}\r\nCSeq: 1 INVITE\r\n\
             Contact: <sip:caller@{me}>\r\nContent-Length: 0\r\n\r\n"
        )
    };
    caller.send_to(invite(1).as_bytes(), &to).unwrap();
    let mut buf = vec![0u8; 8192];
    let (n, from) = uas.recv_from(&mut buf).unwrap();
    let forwarded = Message::parse(Bytes::copy_from_slice(&buf[..n]), &Limits::default()).unwrap();

    let _ = std::process::Command::new("kill")
        .args(["-TERM", &node.pid().to_string()])
        .status();
    std::thread::sleep(Duration::from_millis(200));
    caller.send_to(invite(2).as_bytes(), &to).unwrap();

    let answer = Response::to(&forwarded, 200, "OK", Some("u1"))
        .header("Contact", &format!("<sip:callee@{uas_addr}>"))
        .finish();
    uas.send_to(&answer, from).unwrap();

    let (mut refused, mut answered) = (false, false);
    while let Ok((n, _)) = caller.recv_from(&mut buf) {
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        refused |= text.starts_with("SIP/2.0 503") && text.contains("Call-ID: drain-2");
        answered |= text.starts_with("SIP/2.0 200 OK") && text.contains("Call-ID: drain-1");
        if refused && answered {
            break;
        }
    }
    assert!(refused, "a new INVITE while draining gets 503");
    assert!(answered, "the pending INVITE is answered through");
    let status = node
        .terminate(Duration::from_secs(5))
        .expect("exits once nothing is pending");
    assert!(status.success());
}

const INVITE: &str = "INVITE sip:bob@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {ADDR};branch=z9hG4bKflood{N};rport\r\nFrom: <sip:mallory@127.0.0.1>;tag={N}\r\nTo: <sip:bob@127.0.0.1>\r\nCall-ID: flood-{N}\r\nCSeq: 1 INVITE\r\nContact: <sip:mallory@{ADDR}>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n";

/// DESIGN principle 10: a challenge to an unauthenticated request is stateless. One INVITE
/// never ACKed gets exactly one 407 (a stateful one would be retransmitted at 0.5, 1.5,
/// 3.5 and 7.5 s), no transaction is created, and a flood of 50,000 such INVITEs leaves
/// the node's memory where it was.
#[test]
fn principle_10_challenges_keep_no_state() {
    let p = ports();
    let node = Node::with_config("challenge", "[flood]\nrate = 1000000\nburst = 1000000\n[[subscriber]]\nuser = \"bob\"\ndomain = \"127.0.0.1\"\npassword = \"secret\"\n", p);
    let to = format!("127.0.0.1:{p}");
    let one = UdpSocket::bind("127.0.0.1:0").unwrap();
    one.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let me = one.local_addr().unwrap().to_string();
    let invite = |addr: &str, n: u32| {
        INVITE
            .replace("{ADDR}", addr)
            .replace("{N}", &n.to_string())
    };
    one.send_to(invite(&me, 0).as_bytes(), &to).unwrap();

    // The flood, from another source, while the single INVITE's 10 s run.
    let rss_before = node.rss_kib();
    let flood = UdpSocket::bind("127.0.0.2:0").unwrap();
    let flood_addr = flood.local_addr().unwrap().to_string();
    let sender = std::thread::spawn(move || {
        for n in 1..=50_000u32 {
            let _ = flood.send_to(invite(&flood_addr, n).as_bytes(), &to);
            if n % 200 == 0 {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    });

    let mut buf = vec![0u8; 65_536];
    let mut answers = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if let Ok(n) = one.recv(&mut buf) {
            answers.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    sender.join().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let rss_after = node.rss_kib();

    assert_eq!(
        answers.len(),
        1,
        "one answer, no retransmission: {answers:?}"
    );
    assert!(answers[0].starts_with("SIP/2.0 407"), "{}", answers[0]);
    assert!(answers[0].contains("Proxy-Authenticate: Digest"));
    let stats = node.rpc("tm.stats", &[]).unwrap();
    assert_eq!(stats["total"], 0, "no transaction for a challenge: {stats}");
    let challenged = node.metric("limes_auth_challenges_total{status=\"407\"}");
    assert!(challenged > 1000.0, "{challenged} challenges");
    assert!(
        rss_after < rss_before + 10 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB under {challenged} challenges"
    );
}

/// DESIGN principle 8: under load a receive call takes every datagram waiting
/// (`recvmmsg`), so the node makes fewer receive system calls than it gets datagrams; each
/// datagram is still answered.
#[test]
fn principle_8_a_burst_is_received_in_batches() {
    let p = ports();
    let node = Node::with_config("batch", "[flood]\nrate = 1000000\nburst = 1000000\n", p);
    let to = format!("127.0.0.1:{p}");
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    // The reader stops at the first silence this long: long enough for a node slowed
    // by other tests running beside it.
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let me = sock.local_addr().unwrap().port();
    const BURST: u32 = 3000;
    const SENT_2XX: &str = "limes_sip_responses_sent_total{class=\"2xx\"}";
    let before = node.metric("limes_udp_datagrams_received_total");
    let calls_before = node.metric("limes_udp_receive_calls_total");
    let sent_before = node.metric(SENT_2XX);
    let reader = sock.try_clone().unwrap();
    let answers = std::thread::spawn(move || {
        let mut buf = vec![0u8; 4096];
        let mut answered = 0u32;
        while let Ok(len) = reader.recv(&mut buf) {
            if buf[..len].starts_with(b"SIP/2.0 200") {
                answered += 1;
            }
        }
        answered
    });
    for n in 0..BURST {
        sock.send_to(options(&to, "UDP", me, n).as_bytes(), &to)
            .unwrap();
    }
    let answered = answers.join().unwrap();
    let datagrams = node.metric("limes_udp_datagrams_received_total") - before;
    let calls = node.metric("limes_udp_receive_calls_total") - calls_before;
    let sent = node.metric(SENT_2XX) - sent_before;
    assert_eq!(sent, datagrams, "every datagram received is answered");
    // The test's own socket drops what comes faster than its reader takes it (the kernel
    // counts those in RcvbufErrors; a node answering 3,000 at once overflows it): what it
    // got is at most what the node sent.
    assert!(
        answered > 0 && f64::from(answered) <= sent,
        "{answered} of {sent}"
    );
    assert!(
        datagrams > f64::from(BURST) * 0.9,
        "{datagrams} of {BURST} received"
    );
    assert!(
        calls < datagrams,
        "{calls} receive calls for {datagrams} datagrams"
    );
}
