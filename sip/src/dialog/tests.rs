use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::build::Response;
use crate::Limits;

const INVITE: &str = "INVITE sip:bob@biloxi.example.com SIP/2.0\r\nVia: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds\r\nMax-Forwards: 70\r\nTo: Bob <sip:bob@biloxi.example.com>\r\nFrom: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\nCall-ID: a84b4c76e66710\r\nCSeq: 314159 INVITE\r\nContact: <sip:alice@pc33.atlanta.example.com>\r\nContent-Length: 0\r\n\r\n";

fn parse(b: Bytes) -> Message {
    Message::parse(b, &Limits::default()).unwrap()
}

fn reply(invite: &Message, status: u16, tag: Option<&str>) -> Message {
    parse(
        Response::to(invite, status, "x", tag)
            .header(
                "Record-Route",
                "<sip:p1.example.com;lr>, <sip:p2.example.com;lr>",
            )
            .header("Contact", "<sip:bob@192.0.2.4>")
            .finish(),
    )
}

fn invite() -> Message {
    parse(Bytes::from_static(INVITE.as_bytes()))
}

#[test]
fn rfc3261_12_1_early_then_confirmed() {
    let inv = invite();
    let mut d = Dialog::new(&inv, &reply(&inv, 180, Some("314"))).unwrap();
    assert_eq!(d.state(), DialogState::Early);
    assert_eq!(d.id.callee_tag, "314");
    assert_eq!(d.callee.target, "sip:bob@192.0.2.4");
    assert_eq!(d.caller.target, "sip:alice@pc33.atlanta.example.com");
    d.on_response(&Method::Invite, &reply(&inv, 200, Some("314")));
    assert_eq!(d.state(), DialogState::Confirmed);
    assert_eq!(
        d.route_set_towards_callee().collect::<Vec<_>>(),
        ["sip:p2.example.com;lr", "sip:p1.example.com;lr"]
    );
    assert_eq!(
        d.route_set_towards_caller().collect::<Vec<_>>(),
        ["sip:p1.example.com;lr", "sip:p2.example.com;lr"]
    );
}

#[test]
fn rfc3261_12_1_no_dialog_without_tag_or_from_100_or_failure() {
    let inv = invite();
    assert!(Dialog::new(&inv, &reply(&inv, 180, None)).is_err());
    assert!(Dialog::new(&inv, &reply(&inv, 100, Some("1"))).is_err());
    assert!(Dialog::new(&inv, &reply(&inv, 486, Some("1"))).is_err());
}

#[test]
fn rfc3261_12_3_early_dialog_ends_on_failure() {
    let inv = invite();
    let mut d = Dialog::new(&inv, &reply(&inv, 183, Some("1"))).unwrap();
    d.on_response(&Method::Invite, &reply(&inv, 487, Some("1")));
    assert_eq!(d.state(), DialogState::Terminated);
}

#[test]
fn rfc3261_12_2_2_cseq_order_and_bye() {
    let inv = invite();
    let mut d = Dialog::new(&inv, &reply(&inv, 200, Some("1"))).unwrap();
    assert_eq!(
        d.on_request(true, &Method::Ack, 314159),
        Ok(()),
        "ACK reuses the INVITE's CSeq"
    );
    assert_eq!(
        d.on_request(true, &Method::Info, 314159)
            .unwrap_err()
            .status,
        500
    );
    assert_eq!(d.on_request(true, &Method::Info, 314160), Ok(()));
    assert_eq!(
        d.on_request(false, &Method::Info, 1),
        Ok(()),
        "the callee has its own space"
    );
    assert_eq!(
        d.on_request(false, &Method::Info, 1).unwrap_err().status,
        500
    );
    assert_eq!(d.on_request(false, &Method::Bye, 2), Ok(()));
    assert_eq!(d.state(), DialogState::Terminated);
    assert_eq!(
        d.on_request(true, &Method::Info, 314161)
            .unwrap_err()
            .status,
        481
    );
}

#[test]
fn rfc3261_12_2_1_2_481_ends_the_dialog() {
    let inv = invite();
    let mut d = Dialog::new(&inv, &reply(&inv, 200, Some("1"))).unwrap();
    d.on_response(&Method::Info, &reply(&inv, 481, Some("1")));
    assert_eq!(d.state(), DialogState::Terminated);
}

#[test]
fn dialog_id_of_request_both_directions() {
    let inv = invite();
    let d = Dialog::new(&inv, &reply(&inv, 200, Some("9"))).unwrap();
    let bye_from_callee = parse(Bytes::from(
        INVITE
            .replace("INVITE sip", "BYE sip")
            .replace("314159 INVITE", "1 BYE")
            .replace(
                "To: Bob <sip:bob@biloxi.example.com>",
                "To: <sip:alice@atlanta.example.com>;tag=1928301774",
            )
            .replace(
                "From: Alice <sip:alice@atlanta.example.com>;tag=1928301774",
                "From: <sip:bob@biloxi.example.com>;tag=9",
            ),
    ));
    let (as_sent, reversed) = DialogId::of_request(&bye_from_callee).unwrap();
    assert_ne!(as_sent, d.id);
    assert_eq!(reversed, d.id);
}

proptest! {
    /// Shifting a caller's CSeq towards the callee and the response back is the identity,
    /// keeps the order, and never leaves 0..2**31.
    #[test]
    fn cseq_translation_round_trips(bumps in 0u32..1000, seqs in prop::collection::vec(0u32..=MAX_SEQ, 1..50)) {
        let mut t = CSeqTranslation::default();
        for _ in 0..bumps {
            t.bump();
        }
        prop_assert_eq!(t.offset(), bumps);
        let mut sorted = seqs.clone();
        sorted.sort_unstable();
        let mut last = None;
        for s in sorted {
            match t.to_callee(s) {
                Some(out) => {
                    prop_assert!(out <= MAX_SEQ);
                    prop_assert_eq!(t.to_caller(out), Some(s));
                    if let Some(l) = last {
                        prop_assert!(out >= l);
                    }
                    last = Some(out);
                }
                None => prop_assert!(u64::from(s) + u64::from(bumps) > u64::from(MAX_SEQ)),
            }
        }
    }
}
