//! Matching messages to transactions (RFC 3261 §17.1.3, §17.2.3).

use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;

use siphasher::sip128::{Hasher128, SipHasher13};

use crate::message::Message;
use crate::method::Method;
use crate::via::BRANCH_COOKIE;

/// The identity of a transaction: a 128-bit hash of the fields §17.1.3 and §17.2.3 match
/// on. Server keys are made from a request, client keys from a response (or from the
/// request the client sent); the side is part of what is hashed, so the two never meet.
/// The hash is keyed with a secret random per process: keys are compared, never kept
/// beyond the process or sent, and no peer can aim two transactions at one key. No string
/// is built: a key costs one hash over the fields, and its halves serve as table keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TxKey(u128);

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
        let port = via.port().unwrap_or(via.default_port());
        let mut key = Fields::new(b's');
        match via.branch().filter(|b| b.starts_with(BRANCH_COOKIE)) {
            Some(branch) => {
                key.part(branch.as_bytes());
                key.lower(via.host().as_bytes());
                key.port(port);
            }
            None => {
                key.part(b"2543");
                key.part(msg.request_uri_str()?.as_bytes());
                key.part(msg.from_tag().unwrap_or("").as_bytes());
                key.part(msg.call_id()?.as_bytes());
                key.part(&msg.cseq()?.ok()?.seq.to_be_bytes());
                key.lower(via.host().as_bytes());
                key.port(port);
                key.part(via.branch().unwrap_or("").as_bytes());
            }
        }
        key.part(method.as_str().as_bytes());
        Some(key.finish())
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
        let mut key = Fields::new(b'c');
        key.part(branch.as_bytes());
        key.part(method.as_bytes());
        Some(key.finish())
    }

    /// 64 bits of the key, as good as any other 64: the transaction table's index.
    pub fn id(&self) -> u64 {
        self.0 as u64
    }
}

/// The fields of a key fed to the hash as they are, each followed by a byte no field holds
/// (0xff is never part of UTF-8 text; numbers are of fixed width), so no two different
/// lists of fields feed the same bytes. They are gathered in a buffer on the stack and
/// hashed in one write (a write per field cost twice the instructions); a key longer than
/// the buffer is written on in pieces, which hashes the same bytes.
struct Fields {
    hasher: SipHasher13,
    buf: [u8; 128],
    len: usize,
}

impl Fields {
    fn new(side: u8) -> Self {
        let mut f = Self {
            hasher: hasher(),
            buf: [0; 128],
            len: 0,
        };
        f.put(&[side, SEPARATOR]);
        f
    }

    fn put(&mut self, bytes: &[u8]) {
        if self.len + bytes.len() > self.buf.len() {
            self.hasher.write(&self.buf[..self.len]);
            self.len = 0;
            if bytes.len() > self.buf.len() {
                return self.hasher.write(bytes);
            }
        }
        self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    fn part(&mut self, bytes: &[u8]) {
        self.put(bytes);
        self.put(&[SEPARATOR]);
    }

    fn port(&mut self, port: u16) {
        let [hi, lo] = port.to_be_bytes();
        self.put(&[hi, lo, SEPARATOR]);
    }

    /// A host, compared without case: as it is when it has no upper case (an address),
    /// else lower-cased through a small buffer.
    fn lower(&mut self, bytes: &[u8]) {
        if !bytes.iter().any(u8::is_ascii_uppercase) {
            return self.part(bytes);
        }
        let mut buf = [0u8; 64];
        for chunk in bytes.chunks(buf.len()) {
            let lower = &mut buf[..chunk.len()];
            lower.copy_from_slice(chunk);
            lower.make_ascii_lowercase();
            self.put(lower);
        }
        self.put(&[SEPARATOR]);
    }

    fn finish(mut self) -> TxKey {
        self.hasher.write(&self.buf[..self.len]);
        TxKey(self.hasher.finish128().as_u128())
    }
}

/// The hash, keyed with a secret random per process.
fn hasher() -> SipHasher13 {
    static SECRET: OnceLock<[u8; 16]> = OnceLock::new();
    let secret = SECRET.get_or_init(|| {
        // std's RandomState is seeded from the operating system's random source.
        let state = std::collections::hash_map::RandomState::new();
        let (a, b) = (state.hash_one(1u8), state.hash_one(2u8));
        let mut k = [0u8; 16];
        k[..8].copy_from_slice(&a.to_le_bytes());
        k[8..].copy_from_slice(&b.to_le_bytes());
        k
    });
    SipHasher13::new_with_key(secret)
}

const SEPARATOR: u8 = 0xff;

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
        assert_eq!(TxKey::server(&msg(&ack)), Some(invite));
        // sent-by host compares case-insensitively, with the default port filled in.
        let upper = INVITE.replace("PC33.atlanta.com", "pc33.ATLANTA.com:5060");
        assert_eq!(TxKey::server(&msg(&upper)), Some(invite));
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
    fn long_fields_and_upper_case_hosts_match_and_differ_as_short_ones() {
        let long = |branch: &str, host: &str| {
            INVITE
                .replace("z9hG4bKnashds8", branch)
                .replace("PC33.atlanta.com", host)
        };
        let b = format!("z9hG4bK{}", "b".repeat(300));
        let h = format!("{}.example", "H".repeat(250));
        let k = TxKey::server(&msg(&long(&b, &h))).unwrap();
        assert_eq!(TxKey::server(&msg(&long(&b, &h.to_lowercase()))), Some(k));
        for (b2, h2) in [
            (format!("{b}c"), h.clone()),
            (b.clone(), format!("{h}x")),
            (format!("{b}H"), h[1..].to_owned()),
        ] {
            assert_ne!(TxKey::server(&msg(&long(&b2, &h2))), Some(k), "{b2} {h2}");
        }
    }

    #[test]
    fn rfc3261_17_2_3_rfc2543_fallback() {
        let old = INVITE.replace("branch=z9hG4bKnashds8", "branch=1");
        let k = TxKey::server(&msg(&old)).unwrap();
        let retrans = msg(&old);
        assert_eq!(TxKey::server(&retrans), Some(k));
        // Each field of the fallback key tells transactions apart; the To tag does not.
        for (from, to) in [
            ("Call-ID: c1", "Call-ID: c2"),
            ("tag=1", "tag=2"),
            ("1 INVITE", "2 INVITE"),
            ("sip:bob@b.example", "sip:carol@b.example"),
            ("PC33.atlanta.com", "PC34.atlanta.com"),
        ] {
            assert_ne!(TxKey::server(&msg(&old.replace(from, to))), Some(k), "{to}");
        }
        let ack = old
            .replace("INVITE sip", "ACK sip")
            .replace("1 INVITE", "1 ACK")
            .replace("To: <sip:b@b>", "To: <sip:b@b>;tag=9");
        assert_eq!(TxKey::server(&msg(&ack)), Some(k));
    }

    #[test]
    fn rfc3261_17_1_3_response_matches_client_transaction() {
        let resp = msg("SIP/2.0 180 Ringing\nVia: SIP/2.0/UDP PC33.atlanta.com;branch=z9hG4bKnashds8\nFrom: <sip:a@a>;tag=1\nTo: <sip:b@b>;tag=2\nCall-ID: c1\nCSeq: 1 INVITE\nContent-Length: 0\n\n");
        assert_eq!(TxKey::client(&resp), TxKey::client(&msg(INVITE)));
        let cancel_resp = msg("SIP/2.0 200 OK\nVia: SIP/2.0/UDP PC33.atlanta.com;branch=z9hG4bKnashds8\nFrom: <sip:a@a>;tag=1\nTo: <sip:b@b>;tag=2\nCall-ID: c1\nCSeq: 1 CANCEL\nContent-Length: 0\n\n");
        assert_ne!(TxKey::client(&cancel_resp), TxKey::client(&msg(INVITE)));
    }
}
