//! Writing messages: responses to a request (RFC 3261 §8.2.6), new requests, the ACK and
//! CANCEL a client transaction derives from its INVITE (§17.1.1.3, §9.1), and the
//! forwarding edit (§16.6) that copies every byte it does not change ([`Forward`], in
//! `forward.rs`).

use bytes::{BufMut, Bytes, BytesMut};

use crate::header::HeaderName;
use crate::message::Message;
use crate::method::Method;

fn put_header(out: &mut BytesMut, name: &str, value: &str) {
    out.put_slice(name.as_bytes());
    out.put_slice(b": ");
    out.put_slice(value.as_bytes());
    out.put_slice(b"\r\n");
}

/// Writes `parts` one after the other. Numbers are written through `itoa`: `write!` would
/// cost several times as much on every message.
fn put_all(out: &mut BytesMut, parts: &[&[u8]]) {
    for p in parts {
        out.put_slice(p);
    }
}

/// `name: n` and the line end.
fn put_num_header(out: &mut BytesMut, name: &str, n: impl itoa::Integer) {
    let mut num = itoa::Buffer::new();
    put_all(
        out,
        &[name.as_bytes(), b": ", num.format(n).as_bytes(), b"\r\n"],
    );
}

/// The request line.
fn put_request_line(out: &mut BytesMut, method: &Method, uri: &str) {
    put_all(
        out,
        &[
            method.as_str().as_bytes(),
            b" ",
            uri.as_bytes(),
            b" SIP/2.0\r\n",
        ],
    );
}

/// The status line.
fn put_status_line(out: &mut BytesMut, status: u16, reason: &str) {
    let mut num = itoa::Buffer::new();
    let status = num.format(status).as_bytes();
    put_all(
        out,
        &[b"SIP/2.0 ", status, b" ", reason.as_bytes(), b"\r\n"],
    );
}

/// `CSeq: seq METHOD`.
fn put_cseq(out: &mut BytesMut, seq: u32, method: &Method) {
    let mut num = itoa::Buffer::new();
    let seq = num.format(seq).as_bytes();
    put_all(
        out,
        &[b"CSeq: ", seq, b" ", method.as_str().as_bytes(), b"\r\n"],
    );
}

/// Content-Length, the blank line and the body.
fn put_body(out: &mut BytesMut, body: &[u8]) {
    put_num_header(out, "Content-Length", body.len());
    out.put_slice(b"\r\n");
    out.put_slice(body);
}

fn finish_with_body(mut out: BytesMut, content_type: Option<&str>, body: &[u8]) -> Bytes {
    if let Some(ct) = content_type {
        put_header(&mut out, "Content-Type", ct);
    }
    put_body(&mut out, body);
    out.freeze()
}

/// A response under construction: Via, From, To, Call-ID and CSeq are copied from the
/// request; more headers and a body may follow.
#[must_use]
pub struct Response {
    out: BytesMut,
}

impl Response {
    /// Starts a response to `req` (§8.2.6.2). `to_tag` is added to To when the request's
    /// To has none and the status is above 100.
    pub fn to(req: &Message, status: u16, reason: &str, to_tag: Option<&str>) -> Self {
        let mut out = BytesMut::with_capacity(512);
        put_status_line(&mut out, status, reason);
        for h in req.headers() {
            let value = req.value(h);
            match h.name {
                HeaderName::Via | HeaderName::From | HeaderName::CallId | HeaderName::CSeq => {
                    put_header(&mut out, h.name.as_str(), value)
                }
                HeaderName::To => {
                    put_header(&mut out, "To", value);
                    if let Some(tag) = to_tag.filter(|_| status > 100 && req.to_tag().is_none()) {
                        // Re-open the line just written to append the tag.
                        out.truncate(out.len() - 2);
                        out.put_slice(b";tag=");
                        out.put_slice(tag.as_bytes());
                        out.put_slice(b"\r\n");
                    }
                }
                _ => {}
            }
        }
        Self { out }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        put_header(&mut self.out, name, value);
        self
    }

    pub fn finish(self) -> Bytes {
        finish_with_body(self.out, None, b"")
    }

    pub fn with_body(self, content_type: &str, body: &[u8]) -> Bytes {
        finish_with_body(self.out, Some(content_type), body)
    }
}

/// The fields of a new request; used for REGISTER, OPTIONS, BYE, INVITE and the like.
#[derive(Debug, Clone)]
pub struct NewRequest<'a> {
    pub method: Method,
    pub uri: &'a str,
    /// The Via value, e.g. `SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK...;rport`.
    pub via: &'a str,
    /// From and To values, tags included.
    pub from: &'a str,
    pub to: &'a str,
    pub call_id: &'a str,
    pub cseq: u32,
    pub max_forwards: u8,
    /// Route values, in order.
    pub route: &'a [&'a str],
    pub contact: Option<&'a str>,
    /// Other headers, written in order after the standard ones.
    pub extra: &'a [(&'a str, &'a str)],
    pub body: Option<(&'a str, &'a [u8])>,
}

impl NewRequest<'_> {
    pub fn build(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(512 + self.body.map_or(0, |b| b.1.len()));
        put_request_line(&mut out, &self.method, self.uri);
        put_header(&mut out, "Via", self.via);
        put_num_header(&mut out, "Max-Forwards", self.max_forwards);
        for r in self.route {
            put_header(&mut out, "Route", r);
        }
        put_header(&mut out, "From", self.from);
        put_header(&mut out, "To", self.to);
        put_header(&mut out, "Call-ID", self.call_id);
        put_cseq(&mut out, self.cseq, &self.method);
        if let Some(c) = self.contact {
            put_header(&mut out, "Contact", c);
        }
        for (n, v) in self.extra {
            put_header(&mut out, n, v);
        }
        match self.body {
            Some((ct, body)) => finish_with_body(out, Some(ct), body),
            None => finish_with_body(out, None, b""),
        }
    }
}

/// The ACK for a non-2xx final response to `invite` (§17.1.1.3): same Request-URI,
/// Call-ID, From, CSeq number and top Via as the INVITE, To from the response, the
/// INVITE's Route set.
pub fn ack_for_non_2xx(invite: &Message, response: &Message) -> Bytes {
    derived(invite, Method::Ack, response.get(HeaderName::To))
}

/// The CANCEL for a pending `invite` (§9.1): same Request-URI, Call-ID, From, To, CSeq
/// number, top Via and Route set.
pub fn cancel_for(invite: &Message) -> Bytes {
    derived(invite, Method::Cancel, None)
}

fn derived(invite: &Message, method: Method, to: Option<&str>) -> Bytes {
    let mut out = BytesMut::with_capacity(invite.header_end() + 32);
    let uri = invite.request_uri_str().unwrap_or_default();
    put_request_line(&mut out, &method, uri);
    if let Some(Ok(top)) = invite.list(HeaderName::Via).next() {
        put_header(&mut out, "Via", top);
    }
    for h in invite.headers() {
        let value = invite.value(h);
        match h.name {
            HeaderName::Route | HeaderName::From | HeaderName::CallId | HeaderName::MaxForwards => {
                put_header(&mut out, h.name.as_str(), value)
            }
            HeaderName::To => put_header(&mut out, "To", to.unwrap_or(value)),
            HeaderName::CSeq => {
                let seq = invite.cseq().and_then(Result::ok).map_or(0, |c| c.seq);
                put_cseq(&mut out, seq, &method);
            }
            _ => {}
        }
    }
    finish_with_body(out, None, b"")
}

/// The reason phrase RFC 3261 §21 (and its extensions) gives a status code; "Unknown"
/// for a code none names.
pub fn default_reason(status: u16) -> &'static str {
    match status {
        100 => "Trying",
        180 => "Ringing",
        183 => "Session Progress",
        200 => "OK",
        202 => "Accepted",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Moved Temporarily",
        305 => "Use Proxy",
        380 => "Alternative Service",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        410 => "Gone",
        413 => "Request Entity Too Large",
        414 => "Request-URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        421 => "Extension Required",
        422 => "Session Interval Too Small",
        423 => "Interval Too Brief",
        430 => "Flow Failed",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        484 => "Address Incomplete",
        485 => "Ambiguous",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        491 => "Request Pending",
        493 => "Undecipherable",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        505 => "Version Not Supported",
        513 => "Message Too Large",
        600 => "Busy Everywhere",
        603 => "Decline",
        604 => "Does Not Exist Anywhere",
        606 => "Not Acceptable",
        _ => "Unknown",
    }
}

mod forward;

pub use forward::{Forward, Source};

#[cfg(test)]
mod tests;
