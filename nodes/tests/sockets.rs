//! A node on two addresses (a multi-homed SBC: the subscribers' side and the carrier's):
//! a trunk destination's requests leave from the socket it names and show the address
//! it advertises (a NAT's public one), the carrier's in-dialog requests to that address
//! are taken as the node's, and responses leave from the socket the request came in on.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::{answer, header, status, Node, Peer};

/// The next message to `peer` that starts with `start`, and where it came from.
fn next_from(peer: &Peer, start: &str) -> (String, SocketAddr) {
    let end = Instant::now() + Duration::from_secs(3);
    let mut buf = vec![0u8; 65536];
    peer.sock
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    while Instant::now() < end {
        if let Ok((n, from)) = peer.sock.recv_from(&mut buf) {
            let m = String::from_utf8_lossy(&buf[..n]).into_owned();
            if m.starts_with(start) {
                return (m, from);
            }
        }
    }
    panic!("nothing starting with {start:?}");
}

#[test]
fn a_trunk_destination_s_socket_and_advertised_address() {
    let gw = Peer::bind("127.0.0.6");
    let pbx = Peer::bind("127.0.0.2");
    let port = support::ports();
    let inside: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let outside: SocketAddr = format!("127.0.0.10:{port}").parse().unwrap();
    let config = std::env::temp_dir().join(format!("limes-sockets-{port}.toml"));
    std::fs::write(
        &config,
        format!(
            r#"
[[trusted]]
cidr = "127.0.0.2/32"
tag = "pbx"

[[trunk]]
name = "carrier"
ping_interval_s = 0
destinations = [{{ uri = "sip:{}", socket = "udp:{outside}", advertise = "203.0.113.7:5099" }}]

[[route]]
name = "out"
source = "trusted"
action = "trunk:carrier"
"#,
            gw.addr()
        ),
    )
    .expect("config");
    let config = config.display().to_string();
    let node = Node::start(
        &[
            "--config",
            &config,
            "--listen",
            &format!("udp:{inside}"),
            "--listen",
            &format!("udp:{outside}"),
        ],
        port + 9,
    );
    let send = |peer: &Peer, text: &str, to: SocketAddr| {
        let text = text.replace("{addr}", &peer.addr().to_string());
        peer.sock.send_to(text.as_bytes(), to).expect("sends");
    };
    let invite = format!(
        "INVITE sip:4930123@{inside} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {{addr}};branch=z9hG4bK-sock-1;rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:pbx@{{addr}}>;tag=p1\r\n\
         To: <sip:4930123@{inside}>\r\n\
         Call-ID: sock-1\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:pbx@{{addr}}>\r\n\
         Content-Length: 0\r\n\r\n"
    );
    send(&pbx, &invite, inside);

    // The carrier sees the node at its outside socket, advertised as the NAT's address.
    let (out, from) = next_from(&gw, "INVITE");
    assert_eq!(from, outside, "sent from the destination's socket");
    let vias = header(&out, "Via");
    assert!(
        vias[0].starts_with("SIP/2.0/UDP 203.0.113.7:5099;"),
        "{vias:?}"
    );
    let rr = header(&out, "Record-Route");
    assert!(rr[0].starts_with("<sip:203.0.113.7:5099;"), "{rr:?}");
    assert!(
        rr[1].starts_with(&format!("<sip:{inside};")),
        "the caller's side: {rr:?}"
    );

    // Symmetric: the caller's responses leave from the socket its INVITE came in on.
    let ok = answer(&out, 200, "OK").replace(
        "Content-Length: 0\r\n",
        &format!("Contact: <sip:gw@{}>\r\nContent-Length: 0\r\n", gw.addr()),
    );
    send(&gw, &ok, outside);
    let (ok_up, from) = next_from(&pbx, "SIP/2.0 200");
    assert_eq!(from, inside, "{ok_up}");

    // The carrier's BYE routes through the advertised address: the node's own.
    let bye = format!(
        "BYE sip:pbx@{} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {{addr}};branch=z9hG4bK-sock-bye;rport\r\n\
         Max-Forwards: 70\r\n\
         Route: {}\r\n\
         Route: {}\r\n\
         From: <sip:4930123@{inside}>;tag=uas\r\n\
         To: <sip:pbx@{}>;tag=p1\r\n\
         Call-ID: sock-1\r\n\
         CSeq: 1 BYE\r\n\
         Content-Length: 0\r\n\r\n",
        pbx.addr(),
        rr[0],
        rr[1],
        pbx.addr()
    );
    send(&gw, &bye, outside);
    let (bye_in, from) = next_from(&pbx, "BYE");
    assert_eq!(from, inside, "towards the caller from the inside socket");
    assert!(
        header(&bye_in, "Route").is_empty(),
        "both of the node's entries popped: {bye_in}"
    );
    send(&pbx, &answer(&bye_in, 200, "OK"), inside);
    let (bye_ok, from) = next_from(&gw, "SIP/2.0 200");
    assert_eq!(from, outside, "{bye_ok}");
    assert_eq!(status(&bye_ok), 200);
    drop(node);
}
