//! The indexer: one pass over a message's bytes that finds the start line and every header
//! line (name, value span, the presence bits) and reads the Content-Length that bounds the
//! body. A message that folds a line (RFC 3261 §7.3.1) is reported as such; the parser
//! then indexes the copy `unfold` makes.

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;

use super::{Header, Index, Message, Names, Span, StartLine};
use crate::error::{Defect, ParseError};
use crate::header::HeaderName;
use crate::limits::Limits;
use crate::method::Method;
use crate::text::is_token_byte;

pub(super) enum Indexed {
    Done(Parts),
    Folded,
}

pub(super) struct Parts {
    start: StartLine,
    start_line: Span,
    index: Box<Index>,
    names: Names,
    header_end: usize,
    defect: Option<Defect>,
}

impl Parts {
    pub(super) fn into_message(
        mut self,
        buf: Bytes,
        limits: &Limits,
    ) -> Result<Message, ParseError> {
        let total = buf.len();
        let (head, binary) = if std::str::from_utf8(&buf[self.header_end..]).is_ok() {
            (ByteString::try_from(buf), None)
        } else {
            (
                ByteString::try_from(buf.slice(..self.header_end)),
                Some(buf),
            )
        };
        let head = head.map_err(|_| ParseError::NotUtf8)?;
        let available = total - self.header_end;
        let mut body_len = available;
        let length = HeaderName::ContentLength;
        if let Some(h) = self
            .names
            .has(length)
            .then(|| self.index.headers.iter().find(|h| h.name == length))
            .flatten()
        {
            match crate::text::parse_u32(head.get(h.value.range()).unwrap_or_default()) {
                Some(n) if n as usize <= available => body_len = n as usize,
                Some(_) => self.note(Defect::bad_request("Content-Length larger than message")),
                None => self.note(Defect::bad_request("malformed Content-Length")),
            }
        }
        if total > limits.max_message_size {
            self.note(Defect {
                status: 513,
                reason: "Message Too Large",
            });
        }
        Ok(Message {
            start: self.start,
            start_line: self.start_line,
            index: self.index,
            names: self.names,
            header_end: self.header_end as u32,
            body: Span::new(self.header_end..self.header_end + body_len),
            defect: self.defect,
            max_list_values: limits.max_list_values.min(u16::MAX as usize) as u16,
            head,
            binary,
        })
    }

    fn note(&mut self, d: Defect) {
        // The first defect wins, except that a size defect outranks a syntax one.
        if self.defect.is_none() || d.status == 513 {
            self.defect = Some(d);
        }
    }
}

/// One line: start offset, end (before CR LF) and the offset of the next line.
fn next_line(buf: &[u8], pos: usize) -> (usize, usize) {
    match memchr::memchr(b'\n', &buf[pos..]) {
        Some(i) => {
            let nl = pos + i;
            let end = if nl > pos && buf[nl - 1] == b'\r' {
                nl - 1
            } else {
                nl
            };
            (end, nl + 1)
        }
        None => (buf.len(), buf.len()),
    }
}

pub(super) fn index(buf: &[u8], limits: &Limits) -> Result<Indexed, ParseError> {
    // RFC 3261 §7.5: CRLFs before the start line are ignored.
    let mut pos = 0;
    while pos < buf.len() && (buf[pos] == b'\r' || buf[pos] == b'\n') {
        pos += 1;
    }
    if pos == buf.len() {
        return Err(ParseError::Empty);
    }
    let line_start = pos;
    let (line_end, next) = next_line(buf, pos);
    if line_end - line_start > limits.max_line_len {
        return Err(ParseError::LineTooLong);
    }
    let mut defect = None;
    let start = parse_start_line(&buf[line_start..line_end], line_start, &mut defect)?;
    let start_line = Span::new(line_start..line_end);

    let mut index = Box::<Index>::default();
    let mut names = Names::default();
    pos = next;
    let header_end;
    loop {
        if pos >= buf.len() {
            // No empty line: the datagram ends the header section (RFC 4475 `baddn`).
            header_end = buf.len();
            break;
        }
        let (end, next) = next_line(buf, pos);
        if end == pos {
            header_end = next;
            break;
        }
        if end - pos > limits.max_line_len {
            return Err(ParseError::LineTooLong);
        }
        let first = buf[pos];
        if first == b' ' || first == b'\t' {
            if index.headers.is_empty() {
                return Err(ParseError::BadStartLine);
            }
            return Ok(Indexed::Folded);
        }
        // The name is a token, then optional white space and the colon: one pass finds
        // the colon and checks the name.
        let line = &buf[pos..end];
        let name_end = pos
            + line
                .iter()
                .position(|&c| !is_token_byte(c))
                .unwrap_or(line.len());
        let mut colon = name_end;
        while colon < end && (buf[colon] == b' ' || buf[colon] == b'\t') {
            colon += 1;
        }
        if name_end == pos || colon == end || buf[colon] != b':' {
            let reason = if memchr::memchr(b':', &buf[pos..end]).is_some() {
                "malformed header name"
            } else {
                "header line without colon"
            };
            defect.get_or_insert(Defect::bad_request(reason));
        } else {
            let mut vs = colon + 1;
            while vs < end && (buf[vs] == b' ' || buf[vs] == b'\t') {
                vs += 1;
            }
            let mut ve = end;
            while ve > vs && (buf[ve - 1] == b' ' || buf[ve - 1] == b'\t') {
                ve -= 1;
            }
            if index.headers.len() == limits.max_headers {
                return Err(ParseError::TooManyHeaders);
            }
            let name = HeaderName::from_bytes(&buf[pos..name_end]);
            names.note(name);
            index.headers.push(Header {
                name,
                line: Span::new(pos..end),
                name_span: Span::new(pos..name_end),
                value: Span::new(vs..ve),
            });
        }
        pos = next;
    }
    Ok(Indexed::Done(Parts {
        start,
        start_line,
        index,
        names,
        header_end,
        defect,
    }))
}

fn parse_start_line(
    line: &[u8],
    offset: usize,
    defect: &mut Option<Defect>,
) -> Result<StartLine, ParseError> {
    if line.len() >= 4 && line[..4].eq_ignore_ascii_case(b"SIP/") {
        // Status-Line = SIP-Version SP Status-Code SP Reason-Phrase
        let sp = first_space(line).ok_or(ParseError::BadStartLine)?;
        if !line[..sp].eq_ignore_ascii_case(b"SIP/2.0") {
            defect.get_or_insert(Defect {
                status: 505,
                reason: "Version Not Supported",
            });
        }
        let rest = &line[sp + 1..];
        let code_end = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
        let code = &rest[..code_end];
        if code.len() != 3 || !code.iter().all(u8::is_ascii_digit) || code[0] == b'0' {
            return Err(ParseError::BadStatusCode);
        }
        let status = code.iter().fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
        if !(100..=699).contains(&status) {
            return Err(ParseError::BadStatusCode);
        }
        let reason_start = offset + sp + 1 + (code_end + 1).min(rest.len());
        return Ok(StartLine::Response {
            status,
            reason: Span::new(reason_start..offset + line.len()),
        });
    }
    // Request-Line = Method SP Request-URI SP SIP-Version
    let sp = first_space(line).ok_or(ParseError::BadStartLine)?;
    let method = &line[..sp];
    if method.is_empty() || !method.iter().all(|&b| is_token_byte(b)) {
        return Err(ParseError::BadStartLine);
    }
    let rest = &line[sp + 1..];
    let uri_span;
    match memchr::memrchr(b' ', rest) {
        Some(last) => {
            let uri = &rest[..last];
            let version = &rest[last + 1..];
            uri_span = Span::new(offset + sp + 1..offset + sp + 1 + last);
            if uri.is_empty() || uri.iter().any(|&b| b == b' ' || b == b'\t') || version.is_empty()
            {
                defect.get_or_insert(Defect::bad_request("malformed Request-Line"));
            } else if !version.eq_ignore_ascii_case(b"SIP/2.0") {
                let sip_like = version.len() > 4 && version[..4].eq_ignore_ascii_case(b"SIP/");
                defect.get_or_insert(if sip_like {
                    Defect {
                        status: 505,
                        reason: "Version Not Supported",
                    }
                } else {
                    Defect::bad_request("malformed SIP version")
                });
            }
        }
        None => {
            uri_span = Span::new(offset + sp + 1..offset + line.len());
            defect.get_or_insert(Defect::bad_request("Request-Line has no SIP version"));
        }
    }
    Ok(StartLine::Request {
        method: Method::from_bytes(method),
        uri: uri_span,
    })
}

/// The first space of a start line: a few bytes in, after the version or the method.
fn first_space(line: &[u8]) -> Option<usize> {
    line.iter().position(|&c| c == b' ')
}

/// A copy of `buf` whose header section has every line end that precedes continuation
/// white space turned into spaces.
pub(super) fn unfold(buf: &[u8]) -> Bytes {
    let mut out = BytesMut::from(buf);
    let mut pos = 0;
    while pos < out.len() {
        let (end, next) = next_line(&out, pos);
        if end == pos {
            break; // empty line: end of headers
        }
        if next < out.len() && (out[next] == b' ' || out[next] == b'\t') && next > end {
            for b in &mut out[end..next] {
                *b = b' ';
            }
            // The joined line is re-examined from its start on the next round.
            continue;
        }
        pos = next;
    }
    out.freeze()
}
