//! The CSeq header (RFC 3261 §20.16).

use crate::text::{is_token, parse_u32, trim};
use crate::uri::UriError;

/// Largest sequence number RFC 3261 §8.1.1.5 allows (it must be below 2**31).
pub const MAX_SEQ: u32 = (1 << 31) - 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CSeq<'a> {
    pub seq: u32,
    pub method: &'a str,
}

impl<'a> CSeq<'a> {
    pub fn parse(s: &'a str) -> Result<Self, UriError> {
        let s = trim(s);
        let split = memchr::memchr2(b' ', b'\t', s.as_bytes()).ok_or(UriError("malformed CSeq"))?;
        let seq = parse_u32(&s[..split])
            .filter(|&n| n <= MAX_SEQ)
            .ok_or(UriError("CSeq number out of range"))?;
        let method = trim(&s[split..]);
        if !is_token(method) {
            return Err(UriError("malformed CSeq method"));
        }
        Ok(CSeq { seq, method })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        assert_eq!(
            CSeq::parse(" 4711   INVITE ").unwrap(),
            CSeq {
                seq: 4711,
                method: "INVITE"
            }
        );
        assert_eq!(CSeq::parse("0 ACK").unwrap().seq, 0);
        assert_eq!(CSeq::parse("2147483647 BYE").unwrap().seq, MAX_SEQ);
        assert!(CSeq::parse("2147483648 BYE").is_err());
        assert!(CSeq::parse("36893488147419103232 REGISTER").is_err());
        assert!(CSeq::parse("INVITE").is_err());
        assert!(CSeq::parse("-1 INVITE").is_err());
    }
}
