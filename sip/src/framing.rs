//! Stream framing (RFC 3261 §18.3): find where one message ends in a TCP or TLS byte
//! stream without parsing it. Content-Length is mandatory on streams; CRLF keep-alives
//! (RFC 5626 §3.5.1) between messages are recognised.

use crate::header::HeaderName;
use crate::limits::Limits;
use crate::text::{is_ws, parse_u32};

/// What the front of a stream buffer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// A whole message of `len` octets: cut it off and hand it to
    /// [`crate::Message::parse`].
    Message { len: usize },
    /// A keep-alive of `len` octets: a double-CRLF ping (answer with a single CRLF pong)
    /// or a single-CRLF pong.
    KeepAlive { len: usize, ping: bool },
    /// Not enough bytes yet; read more.
    Incomplete,
}

/// A stream that cannot be framed: the connection must be closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("message larger than allowed")]
    TooLarge,
    #[error("no Content-Length on a stream")]
    MissingContentLength,
    #[error("malformed Content-Length")]
    BadContentLength,
}

impl FrameError {
    /// Every framing error, for metrics that list each from the start.
    pub const ALL: [Self; 3] = [
        Self::TooLarge,
        Self::MissingContentLength,
        Self::BadContentLength,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::TooLarge => "too_large",
            Self::MissingContentLength => "missing_content_length",
            Self::BadContentLength => "bad_content_length",
        }
    }
}

/// Looks at the front of `buf`. Costs one scan for the empty line and one scan of the
/// header section for Content-Length; never more than `limits.max_message_size` octets
/// are examined.
pub fn check(buf: &[u8], limits: &Limits) -> Result<Frame, FrameError> {
    if buf.first() == Some(&b'\r') || buf.first() == Some(&b'\n') {
        return Ok(keep_alive(buf));
    }
    let window = &buf[..buf.len().min(limits.max_message_size)];
    let Some(head_end) = find_header_end(window) else {
        return if buf.len() >= limits.max_message_size {
            Err(FrameError::TooLarge)
        } else {
            Ok(Frame::Incomplete)
        };
    };
    let body = content_length(&buf[..head_end])?;
    let len = head_end + body;
    if len > limits.max_message_size {
        return Err(FrameError::TooLarge);
    }
    if buf.len() < len {
        return Ok(Frame::Incomplete);
    }
    Ok(Frame::Message { len })
}

fn keep_alive(buf: &[u8]) -> Frame {
    match buf {
        [b'\r', b'\n', b'\r', b'\n', ..] => Frame::KeepAlive { len: 4, ping: true },
        [b'\r', b'\n', b'\r'] | [b'\r'] => Frame::Incomplete,
        [b'\r', b'\n'] => Frame::Incomplete,
        [b'\r', b'\n', ..] => Frame::KeepAlive {
            len: 2,
            ping: false,
        },
        // A lone LF or CR followed by something else: skip it as noise before a message.
        _ => Frame::KeepAlive {
            len: 1,
            ping: false,
        },
    }
}

/// Offset just past the first empty line (`CRLFCRLF`, or bare `LFLF` from lenient peers).
fn find_header_end(buf: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = memchr::memchr(b'\n', &buf[from..]) {
        let nl = from + i;
        match buf.get(nl + 1) {
            Some(b'\n') => return Some(nl + 2),
            Some(b'\r') if buf.get(nl + 2) == Some(&b'\n') => return Some(nl + 3),
            _ => from = nl + 1,
        }
    }
    None
}

/// The Content-Length value of a header section (the first one; a second, different one
/// is for the sanity checks to refuse).
fn content_length(head: &[u8]) -> Result<usize, FrameError> {
    let mut pos = 0;
    while pos < head.len() {
        let end = memchr::memchr(b'\n', &head[pos..]).map_or(head.len(), |i| pos + i);
        let line = &head[pos..end];
        if let Some(colon) = memchr::memchr(b':', line) {
            let mut name = &line[..colon];
            while let [rest @ .., last] = name {
                if is_ws(*last) {
                    name = rest;
                } else {
                    break;
                }
            }
            if HeaderName::from_bytes(name) == HeaderName::ContentLength {
                let value = std::str::from_utf8(&line[colon + 1..])
                    .map_err(|_| FrameError::BadContentLength)?;
                let value = value.trim_matches([' ', '\t', '\r']);
                return parse_u32(value)
                    .map(|n| n as usize)
                    .ok_or(FrameError::BadContentLength);
            }
        }
        pos = end + 1;
    }
    Err(FrameError::MissingContentLength)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPTIONS: &[u8] =
        b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nl: 5\r\n\r\nhello";

    #[test]
    fn table() {
        let l = Limits::default();
        let cases: &[(&[u8], Result<Frame, FrameError>)] = &[
            (b"", Ok(Frame::Incomplete)),
            (b"\r\n\r\n", Ok(Frame::KeepAlive { len: 4, ping: true })),
            (
                b"\r\nINVITE",
                Ok(Frame::KeepAlive {
                    len: 2,
                    ping: false,
                }),
            ),
            (b"\r\n", Ok(Frame::Incomplete)),
            (OPTIONS, Ok(Frame::Message { len: OPTIONS.len() })),
            (&OPTIONS[..OPTIONS.len() - 1], Ok(Frame::Incomplete)),
            (&OPTIONS[..20], Ok(Frame::Incomplete)),
            (
                b"OPTIONS sip:a@b SIP/2.0\r\nVia: x\r\n\r\n",
                Err(FrameError::MissingContentLength),
            ),
            (
                b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: -1\r\n\r\n",
                Err(FrameError::BadContentLength),
            ),
            (
                b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length : 99999999\r\n\r\n",
                Err(FrameError::TooLarge),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(
                check(input, &l),
                *want,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn endless_line_is_refused_at_the_limit() {
        let l = Limits {
            max_message_size: 1024,
            ..Limits::default()
        };
        let junk = vec![b'a'; 1024];
        assert_eq!(check(&junk, &l), Err(FrameError::TooLarge));
        assert_eq!(check(&junk[..1023], &l), Ok(Frame::Incomplete));
    }
}
