//! Matching messages to transactions (RFC 3261 §17.1.3, §17.2.3).

use crate::message::Message;
use crate::method::Method;
use crate::via::BRANCH_COOKIE;

/// The identity of a transaction. Server keys are built from a request, client keys from
/// a response (or from the request the client sent); the two never collide because each
/// starts with its side.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TxKey(String);

impl TxKey {
    /// The server transaction of a request (§17.2.3): top Via branch, sent-by and method,
    /// where ACK matches its INVITE. Without the magic cookie, the RFC 2543 fallback key:
    /// Request-URI, From tag, Call-ID, CSeq number, top Via and method (the To tag is left
    /// out, since the ACK for a non-2xx carries the tag the INVITE did not).
    pub fn server(msg: &Message) -> Option<Self> {
        let method = match msg.method()? {
            Method::Ack => &Method::Invite,
            m => m,
        };
        Self::server_with_method(msg, method)
    }

    /// The INVITE server transaction a CANCEL cancels (§9.2): the CANCEL's own key with
    /// the method INVITE.
    pub fn cancel_target(msg: &Message) -> Option<Self> {
        Self::server_with_method(msg, &Method::Invite)
    }

    fn server_with_method(msg: &Message, method: &Method) -> Option<Self> {
        let via = msg.top_via()?.ok()?;
        let mut key = String::with_capacity(96);
        key.push_str("s|");
        match via.branch().filter(|b| b.starts_with(BRANCH_COOKIE)) {
            Some(branch) => {
                key.push_str(branch);
                key.push('|');
                push_lower(&mut key, via.host);
                key.push(':');
                push_num(&mut key, u64::from(via.port.unwrap_or(via.default_port())));
            }
            None => {
                key.push_str("2543|");
                key.push_str(msg.request_uri_str()?);
                key.push('|');
                key.push_str(msg.from_tag().unwrap_or(""));
                key.push('|');
                key.push_str(msg.call_id()?);
                key.push('|');
                push_num(&mut key, u64::from(msg.cseq()?.ok()?.seq));
                key.push('|');
                push_lower(&mut key, via.host);
                key.push(':');
                push_num(&mut key, u64::from(via.port.unwrap_or(via.default_port())));
                key.push('|');
                key.push_str(via.branch().unwrap_or(""));
            }
        }
        key.push('|');
        key.push_str(method.as_str());
        Some(Self(key))
    }

    /// The client transaction a response belongs to (§17.1.3): top Via branch and CSeq
    /// method. Also computed from the request the client sends, so the two meet.
    pub fn client(msg: &Message) -> Option<Self> {
        let via = msg.top_via()?.ok()?;
        let branch = via.branch()?;
        let cseq = msg.cseq()?.ok()?;
        let method = match cseq.method {
            "ACK" => "INVITE",
            m => m,
        };
        let mut key = String::with_capacity(branch.len() + method.len() + 3);
        key.push_str("c|");
        key.push_str(branch);
        key.push('|');
        key.push_str(method);
        Some(Self(key))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn push_num(s: &mut String, n: u64) {
    s.push_str(itoa::Buffer::new().format(n));
}

/// Appends `part` lower-cased (ASCII): one copy, then the case folded in place.
fn push_lower(s: &mut String, part: &str) {
    let start = s.len();
    s.push_str(part);
    s[start..].make_ascii_lowercase();
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn msg(s: &str) -> Message {
        Message::parse(
            Bytes::from(s.replace('\n', "\r\n")),
            &crate::Limits::default(),
        )
        .unwrap()
    }

    const INVITE: &str = "INVITE sip:bob@b.example SIP/2.0\nVia: SIP/2.0/UDP PC33.atlanta.com;branch=z9hG4bKnashds8\nFrom: <sip:a@a>;tag=1\nTo: <sip:b@b>\nCall-ID: c1\nCSeq: 1 INVITE\nContent-Length: 0\n\n";

    #[test]
    fn rfc3261_17_2_3_ack_and_retransmission_match_the_invite() {
        let invite = TxKey::server(&msg(INVITE)).unwrap();
        let ack = INVITE
            .replace("INVITE sip", "ACK sip")
            .replace("1 INVITE", "1 ACK")
            .replace("To: <sip:b@b>", "To: <sip:b@b>;tag=9");
        assert_eq!(TxKey::server(&msg(&ack)), Some(invite.clone()));
        // sent-by host compares case-insensitively, with the default port filled in.
        let upper = INVITE.replace("PC33.atlanta.com", "pc33.ATLANTA.com:5060");
        assert_eq!(TxKey::server(&msg(&upper)), Some(invite.clone()));
        let other_branch = INVITE.replace("nashds8", "nashds9");
        assert_ne!(TxKey::server(&msg(&other_branch)), Some(invite));
    }

    #[test]
    fn rfc3261_9_2_cancel_finds_its_invite() {
        let cancel = INVITE
            .replace("INVITE sip", "CANCEL sip")
            .replace("1 INVITE", "1 CANCEL");
        let cancel = msg(&cancel);
        assert_eq!(TxKey::cancel_target(&cancel), TxKey::server(&msg(INVITE)));
        assert_ne!(TxKey::server(&cancel), TxKey::server(&msg(INVITE)));
    }

    #[test]
    fn rfc3261_17_2_3_rfc2543_fallback() {
        let old = INVITE.replace("branch=z9hG4bKnashds8", "branch=1");
        let k = TxKey::server(&msg(&old)).unwrap();
        assert!(k.as_str().contains("2543"));
        let retrans = msg(&old);
        assert_eq!(TxKey::server(&retrans), Some(k.clone()));
        let other_call = old.replace("Call-ID: c1", "Call-ID: c2");
        assert_ne!(TxKey::server(&msg(&other_call)), Some(k));
    }

    #[test]
    fn rfc3261_17_1_3_response_matches_client_transaction() {
        let resp = msg("SIP/2.0 180 Ringing\nVia: SIP/2.0/UDP PC33.atlanta.com;branch=z9hG4bKnashds8\nFrom: <sip:a@a>;tag=1\nTo: <sip:b@b>;tag=2\nCall-ID: c1\nCSeq: 1 INVITE\nContent-Length: 0\n\n");
        assert_eq!(TxKey::client(&resp), TxKey::client(&msg(INVITE)));
        let cancel_resp = msg("SIP/2.0 200 OK\nVia: SIP/2.0/UDP PC33.atlanta.com;branch=z9hG4bKnashds8\nFrom: <sip:a@a>;tag=1\nTo: <sip:b@b>;tag=2\nCall-ID: c1\nCSeq: 1 CANCEL\nContent-Length: 0\n\n");
        assert_ne!(TxKey::client(&cancel_resp), TxKey::client(&msg(INVITE)));
    }
}
