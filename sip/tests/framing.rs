//! Stream framing properties: however a valid stream of messages and keep-alives is cut
//! into reads, the framer yields the same messages in the same order.

use bytes::{Buf, BytesMut};
use limes_sip::framing::{check, Frame};
use limes_sip::{Limits, Message};
use proptest::prelude::*;

prop_compose! {
    fn message()(
        method in prop::sample::select(vec!["INVITE", "OPTIONS", "BYE", "REGISTER"]),
        n in 0u32..1_000_000,
        compact in any::<bool>(),
        body in "[a-z0-9=\r\n ]{0,300}",
    ) -> Vec<u8> {
        let cl = if compact { "l" } else { "Content-Length" };
        format!(
            "{method} sip:u{n}@example.com SIP/2.0\r\nVia: SIP/2.0/TCP h.example.com;branch=z9hG4bK{n}\r\n\
             From: <sip:a@example.com>;tag={n}\r\nTo: <sip:b@example.com>\r\nCall-ID: {n}\r\n\
             CSeq: {n} {method}\r\n{cl}: {}\r\n\r\n{body}",
            body.len()
        ).into_bytes()
    }
}

/// A stream item: a message, or a keep-alive (RFC 5626 §3.5.1 ping or pong).
fn item() -> impl Strategy<Value = (bool, Vec<u8>)> {
    prop_oneof![
        4 => message().prop_map(|m| (true, m)),
        1 => Just((false, b"\r\n\r\n".to_vec())),
        1 => Just((false, b"\r\n".to_vec())),
    ]
}

/// Feeds `chunks` to the framer the way a connection reads them.
fn reassemble(chunks: &[&[u8]]) -> (Vec<Vec<u8>>, usize) {
    let limits = Limits::default();
    let mut buf = BytesMut::new();
    let mut messages = Vec::new();
    let mut keep_alive_bytes = 0;
    for c in chunks {
        buf.extend_from_slice(c);
        loop {
            match check(&buf, &limits).expect("a valid stream frames") {
                Frame::Message { len } => messages.push(buf.split_to(len).to_vec()),
                Frame::KeepAlive { len, .. } => {
                    keep_alive_bytes += len;
                    buf.advance(len);
                }
                Frame::Incomplete => break,
            }
        }
    }
    // A trailing lone CRLF pong waits for more bytes that never come.
    keep_alive_bytes += buf.len();
    (messages, keep_alive_bytes)
}

proptest! {
    #[test]
    fn any_split_yields_the_same_messages(
        items in prop::collection::vec(item(), 1..12),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..40),
    ) {
        let stream: Vec<u8> = items.iter().flat_map(|(_, b)| b.clone()).collect();
        let want: Vec<Vec<u8>> = items.iter().filter(|(m, _)| *m).map(|(_, b)| b.clone()).collect();
        let want_keep_alive: usize = items.iter().filter(|(m, _)| !*m).map(|(_, b)| b.len()).sum();

        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
        points.push(0);
        points.push(stream.len());
        points.sort_unstable();
        points.dedup();
        let chunks: Vec<&[u8]> = points.windows(2).map(|w| &stream[w[0]..w[1]]).collect();

        let (got, keep_alive) = reassemble(&chunks);
        prop_assert_eq!(&got, &want);
        prop_assert_eq!(keep_alive, want_keep_alive);
        for m in got {
            let parsed = Message::parse(m.into(), &Limits::default()).unwrap();
            prop_assert!(parsed.defect().is_none());
        }
    }

    /// Bytes that never finish a header section are refused once they reach the size limit,
    /// never buffered past it.
    #[test]
    fn endless_headers_are_refused_at_the_limit(fill in "[a-zA-Z: ]{1,64}") {
        let limits = Limits { max_message_size: 4096, ..Limits::default() };
        let mut buf = b"INVITE sip:a@b SIP/2.0\r\n".to_vec();
        while buf.len() < limits.max_message_size {
            buf.extend_from_slice(fill.as_bytes());
        }
        prop_assert!(check(&buf, &limits).is_err());
    }
}
