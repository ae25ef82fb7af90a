//! Connection reuse: responses go back over the connection a request came on, and a
//! request from the callee towards a caller on TCP goes back over the caller's connection
//! (the Record-Route entry facing the caller carries a signed flow token), not to the
//! address in the caller's Contact.

#[path = "support.rs"]
mod support;

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::time::Duration;

use support::{ports, Node};

fn read_message(s: &mut TcpStream) -> String {
    let mut buf = vec![0u8; 8192];
    let n = s.read(&mut buf).unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

fn header<'a>(msg: &'a str, name: &str) -> Vec<&'a str> {
    msg.lines()
        .filter_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(": ")))
        .collect()
}

#[test]
fn rfc5626_in_dialog_requests_go_back_over_the_callers_connection() {
    let p = ports();
    let callee = UdpSocket::bind("127.0.0.1:0").unwrap();
    callee
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let callee_addr = callee.local_addr().unwrap();
    let node = Node::start(
        &[
            "--listen",
            &format!("tcp:127.0.0.1:{p}"),
            "--listen",
            &format!("udp:127.0.0.1:{p}"),
            "--next-hop",
            &format!("sip:{callee_addr}"),
        ],
        p + 9,
    );
    let proxy = format!("127.0.0.1:{p}");

    // The caller, on TCP, advertises a Contact nobody listens on.
    let mut caller = TcpStream::connect(&proxy).unwrap();
    caller
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let me = caller.local_addr().unwrap();
    let invite = format!(
        "INVITE sip:callee@{callee_addr} SIP/2.0\r\nVia: SIP/2.0/TCP {me};branch=z9hG4bKflow1\r\nMax-Forwards: 70\r\n\
         From: <sip:caller@example.com>;tag=c1\r\nTo: <sip:callee@example.com>\r\nCall-ID: flow-test\r\nCSeq: 1 INVITE\r\n\
         Contact: <sip:caller@127.0.0.1:9;transport=tcp>\r\nContent-Length: 0\r\n\r\n"
    );
    caller.write_all(invite.as_bytes()).unwrap();
    assert!(read_message(&mut caller).starts_with("SIP/2.0 100 Trying"));

    // The callee gets it over UDP with two Record-Route entries (TCP in, UDP out).
    let mut buf = vec![0u8; 8192];
    let (n, from) = callee.recv_from(&mut buf).unwrap();
    let forwarded = String::from_utf8_lossy(&buf[..n]).into_owned();
    let rr = header(&forwarded, "Record-Route");
    assert_eq!(rr.len(), 2, "{forwarded}");
    assert!(
        rr[1].contains("@") && rr[1].contains("transport=tcp"),
        "the caller-facing entry has a flow token: {rr:?}"
    );
    let vias: Vec<&str> = header(&forwarded, "Via");
    let answer = format!(
        "SIP/2.0 200 OK\r\nVia: {}\r\nVia: {}\r\nRecord-Route: {}\r\nRecord-Route: {}\r\nFrom: <sip:caller@example.com>;tag=c1\r\n\
         To: <sip:callee@example.com>;tag=e1\r\nCall-ID: flow-test\r\nCSeq: 1 INVITE\r\nContact: <sip:callee@{callee_addr}>\r\n\
         Content-Length: 0\r\n\r\n",
        vias[0], vias[1], rr[0], rr[1]
    );
    callee.send_to(answer.as_bytes(), from).unwrap();
    let ok = read_message(&mut caller);
    assert!(
        ok.starts_with("SIP/2.0 200 OK"),
        "the response came back over the caller's connection: {ok}"
    );

    // The callee hangs up: the BYE is for the caller's Contact (port 9), through the
    // route set in order; Limes sends it over the caller's connection.
    let bye = format!(
        "BYE sip:caller@127.0.0.1:9;transport=tcp SIP/2.0\r\nVia: SIP/2.0/UDP {callee_addr};branch=z9hG4bKbye1\r\nMax-Forwards: 70\r\n\
         Route: {}\r\nRoute: {}\r\nFrom: <sip:callee@example.com>;tag=e1\r\nTo: <sip:caller@example.com>;tag=c1\r\n\
         Call-ID: flow-test\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n",
        rr[0], rr[1]
    );
    callee.send_to(bye.as_bytes(), &proxy).unwrap();
    let got = read_message(&mut caller);
    assert!(
        got.starts_with("BYE sip:caller@127.0.0.1:9;transport=tcp SIP/2.0"),
        "{got}"
    );
    assert!(
        header(&got, "Route").is_empty(),
        "both of Limes' own entries were popped: {got}"
    );

    // The caller answers on its connection; the 200 reaches the callee.
    let via: Vec<&str> = header(&got, "Via");
    let ok = format!(
        "SIP/2.0 200 OK\r\nVia: {}\r\nVia: {}\r\nFrom: <sip:callee@example.com>;tag=e1\r\nTo: <sip:caller@example.com>;tag=c1\r\n\
         Call-ID: flow-test\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n",
        via[0], via[1]
    );
    caller.write_all(ok.as_bytes()).unwrap();
    let (n, _) = callee.recv_from(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("SIP/2.0 200 OK"));

    // With the caller's connection gone, the next such request gets 430 Flow Failed.
    drop(caller);
    std::thread::sleep(Duration::from_millis(300));
    let bye2 = bye
        .replace("z9hG4bKbye1", "z9hG4bKbye2")
        .replace("CSeq: 1 BYE", "CSeq: 2 BYE");
    callee.send_to(bye2.as_bytes(), &proxy).unwrap();
    let (n, _) = callee.recv_from(&mut buf).unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(answer.starts_with("SIP/2.0 430 Flow Failed"), "{answer}");
    assert!(node.metric("limes_sip_requests_received_total{method=\"BYE\"}") >= 2.0);
}
