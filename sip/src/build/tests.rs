use bytes::Bytes;

use super::*;
use crate::Limits;

const INVITE: &str = "INVITE sip:bob@biloxi.example.com SIP/2.0\r\nv: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds;rport, SIP/2.0/UDP gw.example.com;branch=z9hG4bKold\r\nMax-Forwards: 70\r\nRoute: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\nRoute: <sip:p3.example.com;lr>\r\nTo: Bob <sip:bob@biloxi.example.com>\r\nf: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\nCall-ID: a84b4c76e66710\r\nCSeq: 314159 INVITE\r\nX-Carrier: keep me\r\nContact: <sip:alice@pc33.atlanta.example.com>\r\nContent-Type: application/sdp\r\nContent-Length: 4\r\n\r\nv=0\r\nEXTRA";

fn parse(b: Bytes) -> Message {
    Message::parse(b, &Limits::default()).unwrap()
}

fn invite() -> Message {
    parse(Bytes::from_static(INVITE.as_bytes()))
}

#[test]
fn rfc3261_8_2_6_response_copies_via_from_to_call_id_cseq() {
    let req = invite();
    let resp = parse(
        Response::to(&req, 486, "Busy Here", Some("xyz"))
            .header("Retry-After", "30")
            .finish(),
    );
    assert_eq!(
        (resp.status(), resp.reason()),
        (Some(486), Some("Busy Here"))
    );
    assert_eq!(resp.vias().count(), 2);
    assert_eq!(
        resp.top_via().unwrap().unwrap().branch(),
        Some("z9hG4bK776asdhds")
    );
    assert_eq!(resp.from_tag(), Some("1928301774"));
    assert_eq!(resp.to_tag(), Some("xyz"));
    assert_eq!(resp.call_id(), req.call_id());
    assert_eq!(resp.get(HeaderName::CSeq), Some("314159 INVITE"));
    assert_eq!(resp.get_other("Retry-After"), Some("30"));
    assert!(resp.body().is_empty());
    // 100 Trying carries no tag (§8.2.6.2).
    let trying = parse(Response::to(&req, 100, "Trying", Some("xyz")).finish());
    assert_eq!(trying.to_tag(), None);
}

#[test]
fn rfc3261_17_1_1_3_ack_for_non_2xx() {
    let req = invite();
    let resp = parse(Response::to(&req, 486, "Busy Here", Some("xyz")).finish());
    let ack = parse(ack_for_non_2xx(&req, &resp));
    assert_eq!(ack.method(), Some(&Method::Ack));
    assert_eq!(ack.request_uri_str(), req.request_uri_str());
    assert_eq!(ack.vias().count(), 1, "only the top Via");
    assert_eq!(
        ack.top_via().unwrap().unwrap().branch(),
        Some("z9hG4bK776asdhds")
    );
    assert_eq!(ack.to_tag(), Some("xyz"), "To from the response");
    assert_eq!(ack.get(HeaderName::CSeq), Some("314159 ACK"));
    assert_eq!(ack.routes().count(), 3, "the INVITE's Route set");
    assert_eq!(
        crate::sanity::check_request(&ack, &Default::default()),
        Ok(())
    );
}

#[test]
fn rfc3261_9_1_cancel() {
    let req = invite();
    let cancel = parse(cancel_for(&req));
    assert_eq!(cancel.method(), Some(&Method::Cancel));
    assert_eq!(cancel.get(HeaderName::CSeq), Some("314159 CANCEL"));
    assert_eq!(cancel.to_tag(), None);
    assert_eq!(
        crate::transaction::TxKey::cancel_target(&cancel),
        crate::transaction::TxKey::server(&req)
    );
}

#[test]
fn new_requests_pass_sanity() {
    for method in [Method::Register, Method::Options, Method::Bye] {
        let r = NewRequest {
            method: method.clone(),
            uri: "sip:registrar.example.com",
            via: "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKabc;rport",
            from: "<sip:alice@example.com>;tag=a1",
            to: "<sip:alice@example.com>",
            call_id: "reg-1@192.0.2.1",
            cseq: 7,
            max_forwards: 70,
            route: &["<sip:edge.example.com;lr>"],
            contact: Some("<sip:alice@192.0.2.1:5060>;expires=3600"),
            extra: &[("Expires", "3600"), ("User-Agent", "Limes")],
            body: None,
        };
        let m = parse(r.build());
        assert_eq!(m.method(), Some(&method));
        assert_eq!(
            crate::sanity::check_request(&m, &Default::default()),
            Ok(())
        );
        assert_eq!(m.cseq().unwrap().unwrap().method, method.as_str());
        assert_eq!(m.expires(), Some(Ok(3600)));
    }
}

#[test]
fn rfc3261_16_6_forward_rewrites_only_what_changes() {
    let req = invite();
    let out = Forward::new(&req)
        .request_uri("sip:bob@192.0.2.4:5070")
        .received_from(Source {
            ip: "198.51.100.7".parse().unwrap(),
            port: 40_000,
        })
        .push_via("SIP/2.0/UDP 203.0.113.1:5060;branch=z9hG4bKlimes1")
        .decrement_max_forwards()
        .record_route("<sip:203.0.113.1;lr>")
        .pop_routes(1)
        .finish();
    let text = String::from_utf8(out.to_vec()).unwrap();
    let m = parse(out);
    assert_eq!(m.request_uri_str(), Some("sip:bob@192.0.2.4:5070"));
    let vias: Vec<_> = m.vias().map(Result::unwrap).collect();
    assert_eq!(vias.len(), 3);
    assert_eq!(vias[0].branch(), Some("z9hG4bKlimes1"));
    assert_eq!(vias[1].received(), "198.51.100.7".parse().ok());
    assert_eq!(vias[1].rport(), Some(Some(40_000)));
    assert_eq!(vias[2].branch(), Some("z9hG4bKold"));
    assert_eq!(m.max_forwards(), Some(Ok(69)));
    let routes: Vec<_> = m.routes().map(|r| r.unwrap().uri).collect();
    assert_eq!(routes, ["sip:p2.example.com;lr", "sip:p3.example.com;lr"]);
    assert_eq!(
        m.record_routes().next().unwrap().unwrap().uri,
        "sip:203.0.113.1;lr"
    );
    // Untouched lines travel byte for byte, compact names included.
    assert!(text.contains("\r\nf: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n"));
    assert!(text.contains("\r\nX-Carrier: keep me\r\n"));
    // Content-Length matches the body sent; extra datagram octets are gone.
    assert_eq!(&m.body()[..], b"v=0\r");
    assert!(text.ends_with("Content-Length: 4\r\n\r\nv=0\r"));
    assert_eq!(
        crate::sanity::check_request(&m, &Default::default()),
        Ok(())
    );
}

#[test]
fn forward_response_pops_own_via_and_fills_missing_max_forwards() {
    let req = invite();
    let resp = parse(Response::to(&req, 200, "OK", Some("t")).finish());
    let back = parse(Forward::new(&resp).pop_via().finish());
    let vias: Vec<_> = back
        .vias()
        .map(|v| v.unwrap().branch().unwrap().to_owned())
        .collect();
    assert_eq!(vias, ["z9hG4bKold"]);

    let no_mf = parse(Bytes::from(INVITE.replace("Max-Forwards: 70\r\n", "")));
    let fwd = parse(
        Forward::new(&no_mf)
            .decrement_max_forwards()
            .contact("<sip:limes@203.0.113.1>")
            .finish(),
    );
    assert_eq!(fwd.max_forwards(), Some(Ok(70)));
    assert_eq!(
        fwd.contacts().next().unwrap().unwrap().uri,
        "sip:limes@203.0.113.1"
    );
}

#[test]
fn received_is_added_only_when_sent_by_differs() {
    let req = parse(Bytes::from(INVITE.replace(
        "pc33.atlanta.example.com;branch=z9hG4bK776asdhds;rport",
        "192.0.2.9:5060;branch=z9hG4bK776asdhds",
    )));
    let same = parse(
        Forward::new(&req)
            .received_from(Source {
                ip: "192.0.2.9".parse().unwrap(),
                port: 5060,
            })
            .finish(),
    );
    assert_eq!(same.top_via().unwrap().unwrap().received(), None);
    let other = parse(
        Forward::new(&req)
            .received_from(Source {
                ip: "192.0.2.10".parse().unwrap(),
                port: 5060,
            })
            .finish(),
    );
    assert_eq!(
        other.top_via().unwrap().unwrap().received(),
        "192.0.2.10".parse().ok()
    );
    assert_eq!(other.top_via().unwrap().unwrap().rport(), None);
}

#[test]
fn rfc3261_18_2_1_top_via_written_as_received_unless_a_parameter_is_replaced() {
    let source = Source {
        ip: "192.0.2.10".parse().unwrap(),
        port: 40000,
    };
    // (top Via as sent, as forwarded)
    let cases = [
        // Nothing to replace: the value as it came, white space and case kept.
        (
            "SIP / 2.0 / UDP 192.0.2.10:5060 ;branch=z9hG4bKa ;X=1",
            "SIP / 2.0 / UDP 192.0.2.10:5060 ;branch=z9hG4bKa ;X=1",
        ),
        (
            "SIP/2.0/UDP host.example;branch=z9hG4bKa",
            "SIP/2.0/UDP host.example;branch=z9hG4bKa;received=192.0.2.10",
        ),
        // A received (stale or forged) is replaced, rport is filled.
        (
            "SIP/2.0/UDP 192.0.2.10;Received=203.0.113.1;branch=z9hG4bKa",
            "SIP/2.0/UDP 192.0.2.10;branch=z9hG4bKa",
        ),
        // An rport flag is filled in place, and received always added (RFC 3581 §4).
        (
            "SIP/2.0/UDP 192.0.2.10;rport;branch=z9hG4bKa",
            "SIP/2.0/UDP 192.0.2.10;rport=40000;branch=z9hG4bKa;received=192.0.2.10",
        ),
        (
            "SIP/2.0/UDP h.example:5070 ; branch=z9hG4bKa ; RPort",
            "SIP/2.0/UDP h.example:5070 ; branch=z9hG4bKa ; RPort=40000;received=192.0.2.10",
        ),
        // A value already there (a forged one) is replaced, as any received.
        (
            "SIP/2.0/UDP 192.0.2.10;rport=1;branch=z9hG4bKa",
            "SIP/2.0/UDP 192.0.2.10;branch=z9hG4bKa;received=192.0.2.10;rport=40000",
        ),
        (
            "SIP/2.0/UDP 192.0.2.10;rport;received=192.0.2.10;branch=z9hG4bKa",
            "SIP/2.0/UDP 192.0.2.10;branch=z9hG4bKa;received=192.0.2.10;rport=40000",
        ),
    ];
    for (sent, forwarded) in cases {
        let req = parse(Bytes::from(INVITE.replace(
            "SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds;rport",
            sent,
        )));
        let out = parse(Forward::new(&req).received_from(source).finish());
        assert_eq!(
            out.list(HeaderName::Via).next(),
            Some(Ok(forwarded)),
            "{sent}"
        );
    }
}

#[test]
fn rfc3261_16_4_strict_router_edits() {
    let req = invite();
    // From a strict router: the last Route value became the Request-URI.
    let m = parse(
        Forward::new(&req)
            .request_uri("sip:p3.example.com;lr")
            .drop_last_route()
            .finish(),
    );
    let routes: Vec<_> = m.routes().map(|r| r.unwrap().uri).collect();
    assert_eq!(routes, ["sip:p1.example.com;lr", "sip:p2.example.com;lr"]);
    // To a strict router: the Request-URI moves to the end of the Route set.
    let m = parse(
        Forward::new(&req)
            .pop_routes(1)
            .request_uri("sip:p2.example.com")
            .append_route("<sip:bob@biloxi.example.com>")
            .finish(),
    );
    let routes: Vec<_> = m.routes().map(|r| r.unwrap().uri).collect();
    assert_eq!(
        routes,
        [
            "sip:p2.example.com;lr",
            "sip:p3.example.com;lr",
            "sip:bob@biloxi.example.com"
        ]
    );
    assert_eq!(m.request_uri_str(), Some("sip:p2.example.com"));
    // A selected 503 goes upstream as 500.
    let resp = parse(Response::to(&req, 503, "Service Unavailable", Some("t")).finish());
    let up = parse(
        Forward::new(&resp)
            .pop_via()
            .status(500, "Server Internal Error")
            .finish(),
    );
    assert_eq!(
        (up.status(), up.reason()),
        (Some(500), Some("Server Internal Error"))
    );
}

#[test]
fn headers_without_a_variant_are_removed_by_name_in_any_case() {
    let req = parse(Bytes::from_static(
        b"INVITE sip:b@example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n\
To: <sip:b@example.com>\r\n\
From: <sip:a@example.com>;tag=1\r\n\
Call-ID: c1\r\n\
CSeq: 1 INVITE\r\n\
P-Asserted-Identity: <sip:+4930123@example.com>\r\n\
p-asserted-identity: <tel:+4930123>\r\n\
Privacy: id\r\n\
Diversion: <sip:c@example.com>\r\n\
Content-Length: 0\r\n\r\n",
    ));
    let out = parse(
        Forward::new(&req)
            .remove_named("P-Asserted-Identity")
            .remove_named("diversion")
            .add_header("P-Asserted-Identity", "<sip:+4940999@example.net>")
            .finish(),
    );
    let pai: Vec<&str> = out
        .headers()
        .iter()
        .filter(|h| {
            out.text(h.name_span)
                .eq_ignore_ascii_case("p-asserted-identity")
        })
        .map(|h| out.value(h))
        .collect();
    assert_eq!(pai, ["<sip:+4940999@example.net>"]);
    assert_eq!(out.get_other("Diversion"), None);
    assert_eq!(out.get_other("Privacy"), Some("id"), "other headers stay");
}

#[test]
fn a_body_that_is_not_utf8_travels_byte_for_byte_and_a_head_that_is_not_is_refused() {
    let head = INVITE.split("\r\n\r\n").next().unwrap();
    let body: &[u8] = &[0x00, 0xff, 0xfe, b'\r', b'\n', 0x80];
    let with_length = |h: &str, body: &[u8]| {
        let mut m = h.replace(
            "Content-Length: 4",
            &format!("Content-Length: {}", body.len()),
        );
        m.push_str("\r\n\r\n");
        let mut b = m.into_bytes();
        b.extend_from_slice(body);
        Bytes::from(b)
    };
    let m = parse(with_length(head, body));
    assert_eq!(&m.body()[..], body);
    assert_eq!(m.call_id(), Some("a84b4c76e66710"));
    assert_eq!(m.to_uri().unwrap().unwrap().host, "biloxi.example.com");
    let out = Forward::new(&m).pop_via().finish();
    assert!(out.ends_with(body));
    assert_eq!(&parse(out).body()[..], body);
    let utf8 = parse(with_length(head, "v=0 é".as_bytes()));
    assert_eq!(&utf8.body()[..], "v=0 é".as_bytes());
    let bad_head = head.replace("keep me", "keep \u{fffd}me");
    let mut bytes = with_length(&bad_head, b"").to_vec();
    let at = bytes
        .windows(3)
        .position(|w| w == "\u{fffd}".as_bytes())
        .unwrap();
    bytes[at] = 0xff;
    assert_eq!(
        Message::parse(Bytes::from(bytes), &Limits::default()).err(),
        Some(crate::ParseError::NotUtf8)
    );
}

#[test]
fn a_via_written_from_its_branch_numbers_is_the_via_of_its_text() {
    let msg = invite();
    let sent_by = "SIP/2.0/UDP 192.0.2.1:5060";
    for (loop_hash, id, index) in [(0, 0, 0), (0xdead_beef, u64::MAX, 7), (1, 0x1234, 999)] {
        let mut text = format!("{sent_by};branch=");
        crate::proxy::route::push_branch(&mut text, loop_hash, id, index);
        let from_text = Forward::new(&msg).push_via(&text).finish();
        let from_numbers = Forward::new(&msg)
            .push_via_branch(sent_by, (loop_hash, id, index))
            .finish();
        assert_eq!(from_text, from_numbers);
        let top = parse(from_numbers);
        let via = top.top_via().unwrap().unwrap();
        assert_eq!(
            crate::proxy::route::parse_branch(via.branch().unwrap()),
            Some((id, index))
        );
    }
}

#[test]
fn a_record_route_written_from_pieces_is_the_record_route_of_its_text() {
    let msg = invite();
    let pieces = ["<sip:192.0.2.1:5060;lr;lm=", "0123abcd", ">"];
    let whole = pieces.concat();
    for (with_rr, text) in [
        (false, INVITE.to_owned()),
        (
            true,
            INVITE.replace(
                "X-Carrier",
                "Record-Route: <sip:p0.example.com;lr>\r\nX-Carrier",
            ),
        ),
    ] {
        let m = if with_rr {
            parse(Bytes::from(text))
        } else {
            msg.clone()
        };
        let from_text = Forward::new(&m).record_route(&whole).finish();
        let from_pieces = Forward::new(&m).record_route_pieces(pieces).finish();
        assert_eq!(from_text, from_pieces);
        let copy = parse(from_pieces);
        assert_eq!(
            copy.record_routes().next().unwrap().unwrap().uri,
            &whole[1..whole.len() - 1]
        );
    }
}
