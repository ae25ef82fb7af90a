//! Host names end to end (RFC 3263): a real DNS server (Debian's dnsmasq, on loopback)
//! serves NAPTR, SRV and A records; the node locates a trunk given by a domain name, a
//! dialog's host-name Contact, and answers 503 when DNS cannot answer.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{answer, receive, status, Node, Peer};

/// dnsmasq answering for `.test` from its own records only, on 127.0.0.1:PORT.
struct Dnsmasq(Child);

impl Dnsmasq {
    fn start(port: u16, records: &[String]) -> Dnsmasq {
        let mut args = vec![
            "--keep-in-foreground".to_owned(),
            "--conf-file=/dev/null".to_owned(),
            "--no-resolv".to_owned(),
            "--no-hosts".to_owned(),
            "--bind-interfaces".to_owned(),
            "--listen-address=127.0.0.1".to_owned(),
            format!("--port={port}"),
            "--local=/test/".to_owned(),
            "--pid-file=".to_owned(),
            "--local-ttl=60".to_owned(),
        ];
        args.extend_from_slice(records);
        // In /usr/sbin, which an unprivileged PATH may lack.
        let program = if std::path::Path::new("/usr/sbin/dnsmasq").exists() {
            "/usr/sbin/dnsmasq"
        } else {
            "dnsmasq"
        };
        let server = Dnsmasq(
            Command::new(program)
                .args(&args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("dnsmasq runs (Debian package dnsmasq-base)"),
        );
        // Ready once it answers on its port.
        let probe = std::net::UdpSocket::bind("127.0.0.1:0").expect("binds");
        probe
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        // A query for "probe.test" A, id 1, recursion desired.
        let query = b"\x00\x01\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x05probe\x04test\x00\x00\x01\x00\x01";
        let end = Instant::now() + Duration::from_secs(5);
        let mut buf = [0u8; 512];
        while Instant::now() < end {
            let _ = probe.send_to(query, ("127.0.0.1", port));
            if probe.recv(&mut buf).is_ok() {
                return server;
            }
        }
        panic!("dnsmasq did not answer on port {port}");
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The next message `peer` receives that starts with `start` (others skipped).
fn next_of(peer: &Peer, start: &str, wait: Duration) -> Option<String> {
    let end = Instant::now() + wait;
    while Instant::now() < end {
        match receive(peer, Duration::from_millis(200)) {
            Some(m) if m.starts_with(start) => return Some(m),
            _ => {}
        }
    }
    None
}

/// Sends `text` from `peer` to `to` and waits for the final response of call `call`
/// (retransmitted responses of earlier calls skipped).
fn final_for(peer: &Peer, to: &str, text: &str, call: &str) -> String {
    let text = text.replace("{addr}", &peer.addr().to_string());
    peer.sock.send_to(text.as_bytes(), to).expect("sends");
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end {
        if let Some(r) = receive(peer, Duration::from_millis(200)) {
            if status(&r) >= 200 && r.contains(&format!("Call-ID: {call}\r\n")) {
                return r;
            }
        }
    }
    panic!("no final response for {call}");
}

/// The value of header `name` in `msg`.
fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.split("\r\n")
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

/// An INVITE from the trusted peer to `user`.
fn invite(user: &str, node: &str, call: &str) -> String {
    format!(
        "INVITE sip:{user}@{node} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {{addr}};branch=z9hG4bK-{call};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:pbx@{{addr}}>;tag=c-{call}\r\n\
         To: <sip:{user}@{node}>\r\n\
         Call-ID: {call}\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:pbx@{{addr}}>\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

/// A request in the dialog a 200 set up: to its Contact, through its Record-Route.
fn in_dialog(method: &str, ok: &str, cseq: u32) -> String {
    let contact = header(ok, "Contact").expect("Contact");
    let target = contact.trim_start_matches('<').trim_end_matches('>');
    let route = header(ok, "Record-Route").expect("Record-Route");
    let via_branch = format!("z9hG4bK-{}-{cseq}", method.to_lowercase());
    format!(
        "{method} {target} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {{addr}};branch={via_branch};rport\r\n\
         Max-Forwards: 70\r\n\
         Route: {route}\r\n\
         From: {}\r\n\
         To: {}\r\n\
         Call-ID: {}\r\n\
         CSeq: {cseq} {method}\r\n\
         Content-Length: 0\r\n\r\n",
        header(ok, "From").expect("From"),
        header(ok, "To").expect("To"),
        header(ok, "Call-ID").expect("Call-ID"),
    )
}

/// RFC 3263 with a real DNS server: the trunk `sip:carrier.test` is found by NAPTR ->
/// SRV (two targets, priority 10 and 20) -> A; destination 1 answers 503 and the call
/// completes on the second SRV target; the callee's Contact is a host name and the ACK
/// and BYE reach it; a name with no records gets 503 "unresolvable destination"; with the
/// DNS server gone, the cached trunk still works and a new name gets 503 "DNS failure",
/// each counted.
#[test]
fn a_trunk_by_domain_name_a_host_name_contact_and_dns_down() {
    let gw1 = Peer::bind("127.0.0.6");
    let gw2 = Peer::bind("127.0.0.7");
    let callee = Peer::bind("127.0.0.8");
    let pbx = Peer::bind("127.0.0.2");
    let port = support::ports();
    let dns_port = port + 1;
    let dns = Dnsmasq::start(
        dns_port,
        &[
            "--naptr-record=carrier.test,10,10,s,SIP+D2U,,_sip._udp.carrier.test".to_owned(),
            format!(
                "--srv-host=_sip._udp.carrier.test,b2.carrier.test,{},20,0",
                gw2.addr().port()
            ),
            format!(
                "--srv-host=_sip._udp.carrier.test,b1.carrier.test,{},10,0",
                gw1.addr().port()
            ),
            "--host-record=b1.carrier.test,127.0.0.6".to_owned(),
            "--host-record=b2.carrier.test,127.0.0.7".to_owned(),
            "--host-record=ua.test,127.0.0.8".to_owned(),
        ],
    );
    let node = Node::with_config(
        "dns",
        &format!(
            r#"
[dns]
servers = ["127.0.0.1:{dns_port}"]
timeout_ms = 300
attempts = 1

[[trusted]]
cidr = "127.0.0.2/32"
tag = "pbx"

[[trunk]]
name = "carrier"
ping_interval_s = 0
destinations = [{{ uri = "sip:carrier.test" }}]

[[route]]
name = "nowhere"
source = "trusted"
user = "prefix:99"
action = "relay:sip:nobody.test"

[[route]]
name = "gone"
source = "trusted"
user = "prefix:88"
action = "relay:sip:gone.test"

[[route]]
name = "out"
source = "trusted"
action = "trunk:carrier"
"#
        ),
        port,
    );
    let sip = format!("127.0.0.1:{port}");
    let send = |peer: &Peer, text: &str| {
        let text = text.replace("{addr}", &peer.addr().to_string());
        peer.sock.send_to(text.as_bytes(), &sip).expect("sends");
    };

    // The first call waits for DNS, then goes to the priority-10 target.
    send(&pbx, &invite("4930123", &sip, "dns-1"));
    let first = next_of(&gw1, "INVITE", Duration::from_secs(3)).expect("SRV priority 10 first");
    assert!(first.starts_with("INVITE sip:4930123@"), "{first}");
    send(&gw1, &answer(&first, 503, "Service Unavailable"));
    // Failover to the priority-20 target (after the ACK of the 503 to gw1).
    let second =
        next_of(&gw2, "INVITE", Duration::from_secs(3)).expect("failover to SRV priority 20");
    assert!(second.starts_with("INVITE sip:4930123@"), "{second}");
    let ok = answer(&second, 200, "OK").replace(
        "Content-Length: 0\r\n",
        &format!(
            "Contact: <sip:callee@ua.test:{}>\r\nContent-Length: 0\r\n",
            callee.addr().port()
        ),
    );
    send(&gw2, &ok);
    let final_ok =
        next_of(&pbx, "SIP/2.0 200", Duration::from_secs(3)).expect("the 200 reaches the caller");

    // The INVITE waited for DNS and was handled again: counted once.
    assert_eq!(
        node.metric("limes_route_decisions_total{rule=\"out\",action=\"trunk\"}"),
        1.0
    );
    assert_eq!(
        node.metric("limes_requests_by_source_total{class=\"trusted\",group=\"\"}"),
        1.0
    );

    // ACK and BYE go to the Contact, a host name, through the node.
    send(&pbx, &in_dialog("ACK", &final_ok, 1));
    let got = next_of(&callee, "ACK", Duration::from_secs(3)).expect("ACK delivered to ua.test");
    assert!(got.starts_with("ACK sip:callee@ua.test:"), "{got}");
    send(&pbx, &in_dialog("BYE", &final_ok, 2));
    let got = next_of(&callee, "BYE", Duration::from_secs(3)).expect("BYE delivered to ua.test");
    assert!(got.starts_with("BYE sip:callee@ua.test:"), "{got}");
    send(&callee, &answer(&got, 200, "OK"));

    // trunk.list shows the located servers in order.
    let list = node.rpc("trunk.list", &[]).expect("trunk.list");
    let addresses = &list["trunks"][0]["destinations"][0]["addresses"];
    assert_eq!(
        addresses,
        &serde_json::json!([format!("udp:{}", gw1.addr()), format!("udp:{}", gw2.addr())]),
        "{list}"
    );

    let cache = node.rpc("dns.list", &[]).expect("dns.list");
    let carrier = cache["entries"]
        .as_array()
        .and_then(|v| v.iter().find(|e| e["host"] == "carrier.test"))
        .unwrap_or_else(|| panic!("carrier.test cached: {cache}"));
    assert_eq!(carrier["state"], "located", "{cache}");
    assert_eq!(&carrier["servers"], addresses, "{cache}");

    // No records: 503 with its reason, counted.
    let last = &final_for(&pbx, &sip, &invite("9911", &sip, "dns-2"), "dns-2");
    assert_eq!(status(last), 503, "{last}");
    assert!(last.contains("unresolvable destination"), "{last}");
    assert_eq!(
        node.metric("limes_route_rejections_total{reason=\"dns_no_records\"}"),
        1.0
    );

    // The DNS server goes away: the cached trunk still works, a new name fails.
    drop(dns);
    send(&pbx, &invite("4930124", &sip, "dns-3"));
    let cached = next_of(&gw1, "INVITE", Duration::from_secs(3)).expect("cached location serves");
    assert!(cached.starts_with("INVITE sip:4930124@"), "{cached}");
    send(&gw1, &answer(&cached, 486, "Busy Here"));
    let last = &final_for(&pbx, &sip, &invite("8811", &sip, "dns-4"), "dns-4");
    assert_eq!(status(last), 503, "{last}");
    assert!(last.contains("DNS failure"), "{last}");
    assert_eq!(
        node.metric("limes_route_rejections_total{reason=\"dns_failure\"}"),
        1.0
    );
    assert!(node.metric("limes_dns_lookups_total{kind=\"naptr\",result=\"failed\"}") >= 1.0);

    // Forgotten (dns.flush), the trunk's name cannot be located again: 503.
    let flushed = node.rpc("dns.flush", &["carrier.test"]).expect("dns.flush");
    assert_eq!(flushed["flushed"], 1, "{flushed}");
    let last = &final_for(&pbx, &sip, &invite("4930125", &sip, "dns-5"), "dns-5");
    assert_eq!(status(last), 503, "{last}");
    assert!(last.contains("DNS failure"), "{last}");
    assert_eq!(
        node.metric("limes_route_rejections_total{reason=\"dns_failure\"}"),
        2.0
    );
    assert!(node.metric("limes_dns_lookups_total{kind=\"srv\",result=\"ok\"}") >= 1.0);
    assert_eq!(
        node.metric("limes_trunk_failovers_total{trunk=\"carrier\",reason=\"503\"}"),
        1.0
    );
}
