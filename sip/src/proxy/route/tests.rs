//! Route processing, rule by rule (RFC 3261 §16.3 item 4, §16.4, §16.6 steps 6-7,
//! §16.7 step 10, §18.2.2), against a node that is `sbc.example:5060` and signs its
//! Record-Route entries with `;lm=ok`.

use std::net::SocketAddr;

use bytes::Bytes;

use super::*;
use crate::Limits;

fn branch(loop_hash: u32, id: u64, index: usize) -> String {
    let mut b = String::new();
    push_branch(&mut b, loop_hash, id, index);
    b
}

struct Node;

impl Identity for Node {
    fn is_us(&self, host: &str, port: Option<u16>) -> bool {
        host.eq_ignore_ascii_case("sbc.example") && port.unwrap_or(5060) == 5060
    }

    fn signed(&self, uri: &Uri<'_>, _call_id: &str) -> Option<Option<SocketAddr>> {
        (uri.params.get("lm") == Some(Some("ok")))
            .then(|| (uri.user == Some("flow")).then(|| "198.51.100.7:5070".parse().expect("addr")))
    }

    fn loop_hash(&self, msg: &Message) -> u32 {
        // Any function of the routing inputs serves here: the Request-URI's length.
        msg.request_uri_str().map_or(0, |u| u.len() as u32)
    }
}

fn request(method: &str, ruri: &str, to_tag: bool, routes: &[&str]) -> Message {
    let mut text = format!(
        "{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bKa1\r\nMax-Forwards: 70\r\nFrom: <sip:alice@a.example>;tag=f1\r\nTo: <sip:bob@b.example>{}\r\nCall-ID: c1\r\nCSeq: 1 {method}\r\n",
        if to_tag { ";tag=t1" } else { "" }
    );
    for r in routes {
        text.push_str(&format!("Route: {r}\r\n"));
    }
    text.push_str("Content-Length: 0\r\n\r\n");
    Message::parse(Bytes::from(text), &Limits::default()).expect("parses")
}

/// (decision in short, popped, restored Request-URI)
fn decide(msg: &Message, record_route: bool) -> (String, usize, Option<String>) {
    let r = route(msg, &Node, record_route);
    let d = match &r.decision {
        Decision::Register => "register".to_owned(),
        Decision::Initial => "initial".to_owned(),
        Decision::Route { uri, strict } => {
            format!("route {}{}", uri.host, if *strict { " strict" } else { "" })
        }
        Decision::RequestUri { uri } => format!("ruri {}", uri.host),
        Decision::Refuse { status, .. } => format!("refuse {status}"),
    };
    (d, r.popped, r.restored_ruri.map(str::to_owned))
}

/// (name, method, Request-URI, in dialog, Route set, record-route, expected decision,
/// popped, restored Request-URI)
type Case = (
    &'static str,
    &'static str,
    &'static str,
    bool,
    &'static [&'static str],
    bool,
    (&'static str, usize, Option<&'static str>),
);

const OURS: &str = "<sip:sbc.example;lr;lm=ok>";
const OURS_UNSIGNED: &str = "<sip:sbc.example;lr>";
const LOOSE: &str = "<sip:p2.example;lr>";
const STRICT: &str = "<sip:p2.example>";

#[test]
fn rfc3261_16_4_route_processing_table() {
    let cases: &[Case] = &[
        (
            "initial request, no Route: the policy decides",
            "INVITE",
            "sip:bob@b.example",
            false,
            &[],
            true,
            ("initial", 0, None),
        ),
        (
            "REGISTER with no Route left goes to the registrar",
            "REGISTER",
            "sip:b.example",
            false,
            &[OURS],
            true,
            ("register", 1, None),
        ),
        (
            "an initial request with a foreign Route set is no open relay",
            "INVITE",
            "sip:bob@b.example",
            false,
            &[LOOSE],
            true,
            ("refuse 403", 0, None),
        ),
        (
            "in a dialog, our signed entry popped: to the Request-URI",
            "BYE",
            "sip:bob@192.0.2.20",
            true,
            &[OURS],
            true,
            ("ruri 192.0.2.20", 1, None),
        ),
        (
            "in a dialog, our signed entry then a loose router",
            "BYE",
            "sip:bob@192.0.2.20",
            true,
            &[OURS, LOOSE],
            true,
            ("route p2.example", 1, None),
        ),
        (
            "§16.6 step 7: a strict next hop is popped too (it becomes the Request-URI)",
            "BYE",
            "sip:bob@192.0.2.20",
            true,
            &[OURS, STRICT],
            true,
            ("route p2.example strict", 2, None),
        ),
        (
            "in a dialog with no entry of ours: refused",
            "BYE",
            "sip:bob@192.0.2.20",
            true,
            &[],
            true,
            ("refuse 403", 0, None),
        ),
        (
            "an unsigned entry naming us is not ours to trust",
            "BYE",
            "sip:bob@192.0.2.20",
            true,
            &[OURS_UNSIGNED],
            true,
            ("refuse 403", 1, None),
        ),
        (
            "without record-routing, a dialog's request is routed as it says",
            "BYE",
            "sip:bob@192.0.2.20",
            true,
            &[],
            false,
            ("ruri 192.0.2.20", 0, None),
        ),
        (
            "§16.4: a strict router put our entry in the Request-URI",
            "BYE",
            "sip:sbc.example;lr;lm=ok",
            true,
            &[LOOSE, "<sip:bob@192.0.2.20>"],
            true,
            ("route p2.example", 0, Some("sip:bob@192.0.2.20")),
        ),
        (
            "§16.4: ... and the real Request-URI was the only Route value",
            "BYE",
            "sip:sbc.example;lr;lm=ok",
            true,
            &["<sip:bob@192.0.2.20>"],
            true,
            ("ruri 192.0.2.20", 0, Some("sip:bob@192.0.2.20")),
        ),
        (
            "a malformed Request-URI",
            "INVITE",
            "sip:",
            false,
            &[],
            true,
            ("refuse 400", 0, None),
        ),
    ];
    for (name, method, ruri, in_dialog, routes, rr, (d, popped, restored)) in cases {
        let msg = request(method, ruri, *in_dialog, routes);
        let got = decide(&msg, *rr);
        let want = ((*d).to_owned(), *popped, restored.map(str::to_owned));
        let refused = got.0.starts_with("refuse");
        // A refusal carries no edits.
        let want = if refused {
            (want.0, got.1, want.2)
        } else {
            want
        };
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn rfc5626_the_last_entry_of_ours_names_the_flow_back() {
    let msg = request(
        "BYE",
        "sip:alice@192.0.2.9",
        true,
        &["<sip:flow@sbc.example;lr;lm=ok>"],
    );
    let r = route(&msg, &Node, true);
    assert!(r.signed);
    assert_eq!(r.flow, Some("198.51.100.7:5070".parse().expect("addr")));
}

#[test]
fn rfc3261_16_3_item_4_loops_and_spirals() {
    let with_our_via = |ruri: &str, hash_of: &str| {
        let hash = hash_of.len() as u32;
        let via = format!("SIP/2.0/UDP sbc.example:5060;branch={}", branch(hash, 7, 0));
        let text = format!(
            "INVITE {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.30;branch=z9hG4bKx\r\nVia: {via}\r\nMax-Forwards: 69\r\nFrom: <sip:a@a.example>;tag=1\r\nTo: <sip:b@b.example>\r\nCall-ID: l1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
        );
        Message::parse(Bytes::from(text), &Limits::default()).expect("parses")
    };
    // The same routing inputs came back through us: a loop.
    assert!(is_loop(
        &with_our_via("sip:b@b.example", "sip:b@b.example"),
        &Node
    ));
    // The Request-URI changed since we forwarded it: a spiral, forwarded again.
    assert!(!is_loop(
        &with_our_via("sip:b@b2.example", "sip:b@b.example"),
        &Node
    ));
    // No Via of ours.
    assert!(!is_loop(
        &request("INVITE", "sip:b@b.example", false, &[]),
        &Node
    ));
}

#[test]
fn branches_round_trip() {
    let b = branch(0xdead_beef, 0x0123_4567_89ab_cdef, 3);
    assert_eq!(b, "z9hG4bKlmdeadbeef.0123456789abcdef.3");
    assert_eq!(parse_branch(&b), Some((0x0123_4567_89ab_cdef, 3)));
    assert_eq!(parse_branch("z9hG4bKother"), None);
    // Hex digits of either case, as the standard parser read them.
    assert_eq!(
        parse_branch("z9hG4bKlmDEADBEEF.0123456789ABCDEF.12"),
        Some((0x0123_4567_89ab_cdef, 12))
    );
    assert_eq!(parse_branch("z9hG4bKlmzz.zz.1"), None);
    assert_eq!(parse_branch(&branch(0, 0, 0)), Some((0, 0)));
    assert_eq!(
        parse_branch(&branch(u32::MAX, u64::MAX, 999)),
        Some((u64::MAX, 999))
    );
    for bad in [
        "z9hG4bKlmdeadbeef.0123456789abcdef.x",
        "z9hG4bKlmdeadbeef.0123456789abcdef",
        "z9hG4bKlmdeadbeef.0123456789abcdé.3",
        "z9hG4bKlmdeadbeef-0123456789abcdef.3",
        "z9hG4bKlmdeadbeef.+123456789abcdef.3",
        "z9hG4bKlmdeadbeef.0123456789abcdef.+3",
        "z9hG4bKlmdeadbeef.0123456789abcdef.",
        "z9hG4bKlmdeadbeef.0123456789abcdef.1234567890",
    ] {
        assert_eq!(parse_branch(bad), None, "{bad}");
    }
}

#[test]
fn rfc3261_18_2_2_where_a_response_with_no_transaction_goes() {
    // (second Via, destination, TCP)
    let cases = [
        ("SIP/2.0/UDP 192.0.2.9:5070", "192.0.2.9:5070", false),
        ("SIP/2.0/UDP 192.0.2.9", "192.0.2.9:5060", false),
        (
            "SIP/2.0/UDP host.example;received=192.0.2.44",
            "192.0.2.44:5060",
            false,
        ),
        (
            "SIP/2.0/UDP 192.0.2.9:5070;rport=40000;received=192.0.2.44",
            "192.0.2.44:40000",
            false,
        ),
        ("SIP/2.0/TCP [2001:db8::9]:5080", "[2001:db8::9]:5080", true),
        ("SIP/2.0/TLS 192.0.2.9", "192.0.2.9:5061", false),
    ];
    let response = |via: &str| {
        let text = format!(
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP sbc.example;branch=z9hG4bKlm1\r\nVia: {via};branch=z9hG4bKa\r\nFrom: <sip:a@a.example>;tag=1\r\nTo: <sip:b@b.example>;tag=2\r\nCall-ID: r1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
        );
        Message::parse(Bytes::from(text), &Limits::default()).expect("parses")
    };
    for (via, dest, tcp) in cases {
        assert_eq!(
            response_next_hop(&response(via)),
            Some((dest.parse().expect("addr"), tcp)),
            "{via}"
        );
    }
    // The sanity rules check only a response's top Via: a malformed second one (sent-by
    // or parameters) leaves it nowhere to go.
    for via in [
        "SIP/2.0/UDP",
        "SIP/2.0/UDP 192.0.2.9;;rport",
        "SIP/2.0/UDP 192.0.2.9;x=\"open",
    ] {
        assert_eq!(response_next_hop(&response(via)), None, "{via}");
    }
}
