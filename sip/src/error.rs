//! Why a message could not be read, and the SIP answer each reason deserves.

use thiserror::Error;

/// A message that cannot be indexed at all. Such bytes cannot be answered (there is no Via
/// to answer to): the transport drops them and counts the reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ParseError {
    #[error("empty message")]
    Empty,
    #[error("start line is neither a request nor a status line")]
    BadStartLine,
    #[error("status code is not three digits")]
    BadStatusCode,
    #[error("header section is not valid UTF-8")]
    NotUtf8,
    #[error("header section has no end")]
    Unterminated,
    #[error("more header fields than allowed")]
    TooManyHeaders,
    #[error("a line is longer than allowed")]
    LineTooLong,
    #[error("message larger than allowed")]
    TooLarge,
}

impl ParseError {
    /// Every parse error, for metrics that list each from the start.
    pub const ALL: [Self; 8] = [
        Self::Empty,
        Self::BadStartLine,
        Self::BadStatusCode,
        Self::NotUtf8,
        Self::Unterminated,
        Self::TooManyHeaders,
        Self::LineTooLong,
        Self::TooLarge,
    ];

    /// A short, stable label for metrics (`reason` label of the drop counter).
    pub fn label(self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::BadStartLine => "bad_start_line",
            Self::BadStatusCode => "bad_status_code",
            Self::NotUtf8 => "not_utf8",
            Self::Unterminated => "unterminated",
            Self::TooManyHeaders => "too_many_headers",
            Self::LineTooLong => "line_too_long",
            Self::TooLarge => "too_large",
        }
    }
}

/// A defect of a message that could still be indexed: a request carrying one is answered
/// with `status` and `reason`; a response carrying one is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Defect {
    pub status: u16,
    pub reason: &'static str,
}

impl Defect {
    pub const fn bad_request(reason: &'static str) -> Self {
        Self {
            status: 400,
            reason,
        }
    }
}
