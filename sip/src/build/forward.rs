//! The forwarding edit (RFC 3261 §16.6): a received message copied byte for byte except
//! where a proxy changes it (Request-URI, Via, Route, Record-Route, Max-Forwards, Contact,
//! added and removed headers), Content-Length written to match the body sent.

use std::fmt::Write as _;
use std::net::IpAddr;

use bytes::{BufMut, Bytes, BytesMut};
use smallvec::SmallVec;

use super::{put_all, put_body, put_header, put_num_header, put_request_line, put_status_line};
use crate::header::HeaderName;
use crate::message::{Header, Message};
use crate::via::Via;

/// What a received request's top Via learns from the transport (RFC 3261 §18.2.1,
/// RFC 3581 §4): `received` when the source address differs from sent-by, `rport`
/// filled when the client asked for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source {
    pub ip: IpAddr,
    pub port: u16,
}

/// The Via a forwarded copy gets on top.
#[derive(Clone, Copy)]
enum NewVia<'m> {
    Text(&'m str),
    Branch {
        sent_by: &'m str,
        branch: (u32, u64, usize),
    },
}

impl NewVia<'_> {
    fn put(self, out: &mut BytesMut) {
        match self {
            NewVia::Text(v) => put_header(out, "Via", v),
            NewVia::Branch {
                sent_by,
                branch: (loop_hash, id, index),
            } => {
                out.put_slice(b"Via: ");
                out.put_slice(sent_by.as_bytes());
                out.put_slice(b";branch=");
                crate::proxy::route::put_branch(out, loop_hash, id, index);
                out.put_slice(b"\r\n");
            }
        }
    }
}

/// An edit of a message about to be forwarded. Unchanged header lines and the body are
/// copied as bytes; Content-Length is written to match the body sent.
#[must_use]
pub struct Forward<'m> {
    msg: &'m Message,
    request_uri: Option<&'m str>,
    status: Option<(u16, &'m str)>,
    drop_last_route: bool,
    append_route: Option<&'m str>,
    push_via: Option<NewVia<'m>>,
    pop_via: bool,
    source: Option<Source>,
    decrement_max_forwards: bool,
    /// At most two per forwarded request (one per side): inline.
    record_route: SmallVec<[[&'m str; 3]; 2]>,
    pop_routes: usize,
    push_routes: Vec<&'m str>,
    contact: Option<&'m str>,
    extra: Vec<(&'m str, &'m str)>,
    remove: Vec<HeaderName>,
    /// Names of other headers to remove (compared without case).
    remove_named: Vec<&'m str>,
}

impl<'m> Forward<'m> {
    pub fn new(msg: &'m Message) -> Self {
        Self {
            msg,
            request_uri: None,
            status: None,
            drop_last_route: false,
            append_route: None,
            push_via: None,
            pop_via: false,
            source: None,
            decrement_max_forwards: false,
            record_route: SmallVec::new(),
            pop_routes: 0,
            push_routes: Vec::new(),
            contact: None,
            extra: Vec::new(),
            remove: Vec::new(),
            remove_named: Vec::new(),
        }
    }

    /// A request: set the Request-URI (§16.6 step 2 or §16.4 strict routing).
    pub fn request_uri(mut self, uri: &'m str) -> Self {
        self.request_uri = Some(uri);
        self
    }

    /// A response: replace the status line (a selected 503 goes upstream as 500,
    /// §16.7 step 6).
    pub fn status(mut self, status: u16, reason: &'m str) -> Self {
        self.status = Some((status, reason));
        self
    }

    /// A request from a strict router (§16.4): the last Route value became the
    /// Request-URI, so it leaves the Route set.
    pub fn drop_last_route(mut self) -> Self {
        self.drop_last_route = true;
        self
    }

    /// A request to a strict router (§16.6 step 7): the old Request-URI goes to the end of
    /// the Route set.
    pub fn append_route(mut self, value: &'m str) -> Self {
        self.append_route = Some(value);
        self
    }

    /// A request: this element's Via value, placed on top (§16.6 step 8).
    pub fn push_via(mut self, via: &'m str) -> Self {
        self.push_via = Some(NewVia::Text(via));
        self
    }

    /// Pushes this node's Via, `sent_by` (`SIP/2.0/UDP host:port`) with the branch of
    /// [`crate::proxy::route::push_branch`] from `(loop hash, context id, index)`, written
    /// straight into the copy (no string of its own per message).
    pub fn push_via_branch(mut self, sent_by: &'m str, branch: (u32, u64, usize)) -> Self {
        self.push_via = Some(NewVia::Branch { sent_by, branch });
        self
    }

    /// A response: remove the top Via value, this element's own (§16.7 step 9).
    pub fn pop_via(mut self) -> Self {
        self.pop_via = true;
        self
    }

    /// A request: record where it came from in the top Via (`received`, `rport`).
    pub fn received_from(mut self, source: Source) -> Self {
        self.source = Some(source);
        self
    }

    /// A request: Max-Forwards minus one, or 70 when absent (§16.6 step 3).
    pub fn decrement_max_forwards(mut self) -> Self {
        self.decrement_max_forwards = true;
        self
    }

    /// A request: add a Record-Route value above the existing ones (§16.6 step 4); call
    /// twice for double record-routing when the transport changes.
    pub fn record_route(mut self, value: &'m str) -> Self {
        self.record_route.push([value, "", ""]);
        self
    }

    /// [`Forward::record_route`] with a value written from its pieces, in order (a head
    /// made once, the part of this message, a tail): no string of its own per message.
    pub fn record_route_pieces(mut self, pieces: [&'m str; 3]) -> Self {
        self.record_route.push(pieces);
        self
    }

    /// A request: remove the first `n` Route values (§16.4: the ones naming this element).
    pub fn pop_routes(mut self, n: usize) -> Self {
        self.pop_routes = n;
        self
    }

    /// A request: add a Route value above the existing ones (§16.6 step 5, pre-loading).
    pub fn push_route(mut self, value: &'m str) -> Self {
        self.push_routes.push(value);
        self
    }

    /// Replace every Contact with this one value (topology hiding).
    pub fn contact(mut self, value: &'m str) -> Self {
        self.contact = Some(value);
        self
    }

    /// Add a header at the end of the header section.
    pub fn add_header(mut self, name: &'m str, value: &'m str) -> Self {
        self.extra.push((name, value));
        self
    }

    /// Remove every header with this name.
    pub fn remove(mut self, name: HeaderName) -> Self {
        self.remove.push(name);
        self
    }

    /// Remove every header with this name, as written in the message or in another case
    /// (for names without a variant: `P-Asserted-Identity`, `Diversion`, ...).
    pub fn remove_named(mut self, name: &'m str) -> Self {
        self.remove_named.push(name);
        self
    }

    pub fn finish(self) -> Bytes {
        let msg = self.msg;
        let buf = msg.as_bytes();
        let body = msg.body_span();
        let mut out = BytesMut::with_capacity(buf.len() + 256);

        match (self.request_uri, msg.method(), self.status) {
            (Some(uri), Some(method), _) => put_request_line(&mut out, method, uri),
            (_, None, Some((status, reason))) => put_status_line(&mut out, status, reason),
            _ => {
                out.put_slice(&buf[msg.start_line_span().range()]);
                out.put_slice(b"\r\n");
            }
        }

        let mut via_seen = false;
        let mut rr_seen = false;
        let mut route_seen = false;
        let mut contact_done = false;
        let mut max_forwards_seen = false;
        let mut routes_to_pop = self.pop_routes;
        let route_lines = msg.count(HeaderName::Route);
        let mut route_line = 0;
        for h in msg.headers() {
            if self.remove.contains(&h.name)
                || (h.name == HeaderName::Other
                    && !self.remove_named.is_empty()
                    && self
                        .remove_named
                        .iter()
                        .any(|n| buf[h.name_span.range()].eq_ignore_ascii_case(n.as_bytes())))
            {
                continue;
            }
            match h.name {
                HeaderName::Via if !via_seen => {
                    via_seen = true;
                    if let Some(v) = self.push_via {
                        v.put(&mut out);
                    }
                    self.first_via(&mut out, h);
                }
                HeaderName::RecordRoute if !rr_seen => {
                    rr_seen = true;
                    self.put_record_routes(&mut out);
                    copy_line(&mut out, buf, h);
                }
                HeaderName::Route => {
                    if !route_seen {
                        route_seen = true;
                        for r in &self.push_routes {
                            put_header(&mut out, "Route", r);
                        }
                    }
                    route_line += 1;
                    if self.drop_last_route && route_line == route_lines {
                        emit_without_last(&mut out, msg, h, routes_to_pop);
                        routes_to_pop = 0;
                    } else {
                        routes_to_pop =
                            emit_without_first(&mut out, msg, h, routes_to_pop, "Route");
                    }
                }
                HeaderName::MaxForwards if self.decrement_max_forwards => {
                    max_forwards_seen = true;
                    let n = msg.max_forwards().and_then(Result::ok).unwrap_or(70);
                    put_num_header(&mut out, "Max-Forwards", n.saturating_sub(1));
                }
                HeaderName::Contact if self.contact.is_some() => {
                    if !contact_done {
                        contact_done = true;
                        put_header(&mut out, "Contact", self.contact.unwrap_or_default());
                    }
                }
                HeaderName::ContentLength => {}
                _ => copy_line(&mut out, buf, h),
            }
        }
        if !via_seen {
            if let Some(v) = self.push_via {
                v.put(&mut out);
            }
        }
        if !rr_seen {
            self.put_record_routes(&mut out);
        }
        if !route_seen {
            for r in &self.push_routes {
                put_header(&mut out, "Route", r);
            }
        }
        if let Some(r) = self.append_route {
            put_header(&mut out, "Route", r);
        }
        if self.decrement_max_forwards && !max_forwards_seen {
            put_header(&mut out, "Max-Forwards", "70");
        }
        for (n, v) in &self.extra {
            put_header(&mut out, n, v);
        }
        put_body(&mut out, &buf[body.range()]);
        out.freeze()
    }

    /// The Record-Route values this element adds, each written from its pieces.
    fn put_record_routes(&self, out: &mut BytesMut) {
        for pieces in &self.record_route {
            out.put_slice(b"Record-Route: ");
            for p in pieces {
                out.put_slice(p.as_bytes());
            }
            out.put_slice(b"\r\n");
        }
    }

    /// The first Via line: pop its first value for a response, or mark the source for a
    /// request.
    fn first_via(&self, out: &mut BytesMut, h: &Header) {
        let msg = self.msg;
        if self.pop_via {
            emit_without_first(out, msg, h, 1, "Via");
            return;
        }
        let Some(source) = self.source else {
            copy_line(out, msg.as_bytes(), h);
            return;
        };
        let line = msg.value(h);
        let (first, rest) = match crate::text::find_top(line, b',') {
            Ok(Some(i)) => (&line[..i], Some(&line[i + 1..])),
            _ => (line, None),
        };
        out.put_slice(b"Via: ");
        // The first value of the first Via line is the message's top Via, parsed once.
        match msg.top_via() {
            Some(Ok(via)) if !via.has_received() => {
                write_via_as_received(out, crate::text::trim(first), &via, source)
            }
            Some(Ok(via)) => write_via_with_source(out, &via, source),
            _ => out.put_slice(first.as_bytes()),
        }
        if let Some(rest) = rest {
            out.put_slice(b",");
            out.put_slice(rest.as_bytes());
        }
        out.put_slice(b"\r\n");
    }
}

fn copy_line(out: &mut BytesMut, buf: &Bytes, h: &Header) {
    let line = h.line.range();
    // One copy, line end included, when the line ended with CRLF on the wire.
    match buf.get(line.start..line.end + 2) {
        Some(with_end) if with_end.ends_with(b"\r\n") => out.put_slice(with_end),
        _ => {
            out.put_slice(&buf[line]);
            out.put_slice(b"\r\n");
        }
    }
}

/// Writes the values of a list line after dropping up to `drop` of them from the front;
/// returns how many are still to drop from the following lines.
fn emit_without_first(
    out: &mut BytesMut,
    msg: &Message,
    h: &Header,
    drop: usize,
    name: &str,
) -> usize {
    if drop == 0 {
        copy_line(out, msg.as_bytes(), h);
        return 0;
    }
    let mut rest = msg.value(h);
    let mut dropped = 0;
    while dropped < drop && !rest.is_empty() {
        dropped += 1;
        rest = match crate::text::find_top(rest, b',') {
            Ok(Some(i)) => crate::text::trim(&rest[i + 1..]),
            _ => "",
        };
    }
    if !rest.is_empty() {
        put_header(out, name, rest);
    }
    drop - dropped
}

/// Writes a Route line without its last value, after dropping `drop` values from its
/// front.
fn emit_without_last(out: &mut BytesMut, msg: &Message, h: &Header, drop: usize) {
    let line = msg.value(h);
    let mut values: Vec<&str> = split_values(line);
    values.pop();
    let kept: Vec<&str> = values.into_iter().skip(drop).collect();
    if !kept.is_empty() {
        put_header(out, "Route", &kept.join(", "));
    }
}

fn split_values(line: &str) -> Vec<&str> {
    let mut values = Vec::new();
    let mut rest = line;
    while !rest.is_empty() {
        match crate::text::find_top(rest, b',') {
            Ok(Some(i)) => {
                values.push(crate::text::trim(&rest[..i]));
                rest = &rest[i + 1..];
            }
            _ => {
                values.push(crate::text::trim(rest));
                rest = "";
            }
        }
    }
    values
}

/// A top Via without `received`, as it came (§18.2.1: `received` added when the sent-by
/// is not the source; RFC 3581: an `rport` flag filled with the source port in place, and
/// `received` then always added). Falls back to [`write_via_with_source`] when the flag
/// cannot be placed in `first`, or when rport already has a value.
fn write_via_as_received(out: &mut BytesMut, first: &str, via: &Via<'_>, source: Source) {
    let rport = via.rport_found();
    let flag = rport.and_then(|(name, _)| split_after(first, name));
    match (rport, flag) {
        (None, _) => {
            out.put_slice(first.as_bytes());
            if crate::uri::host_ip(via.host()) != Some(source.ip) {
                put_received(out, source.ip);
            }
        }
        (Some((_, None)), Some((before, after))) => {
            let mut num = itoa::Buffer::new();
            put_all(
                out,
                &[
                    before.as_bytes(),
                    b"=",
                    num.format(source.port).as_bytes(),
                    after.as_bytes(),
                ],
            );
            put_received(out, source.ip);
        }
        _ => write_via_with_source(out, via, source),
    }
}

/// `text` cut just after `part`, a slice of it.
fn split_after<'t>(text: &'t str, part: &str) -> Option<(&'t str, &'t str)> {
    let end = (part.as_ptr() as usize)
        .checked_sub(text.as_ptr() as usize)?
        .checked_add(part.len())?;
    Some((text.get(..end)?, text.get(end..)?))
}

fn put_received(out: &mut BytesMut, ip: IpAddr) {
    out.put_slice(b";received=");
    put_ip(out, ip);
}

/// The Via value with `received` set when the source differs from sent-by (§18.2.1) and
/// `rport` filled when present (RFC 3581 §4).
fn write_via_with_source(out: &mut BytesMut, via: &Via<'_>, source: Source) {
    put_all(
        out,
        &[
            via.protocol().as_bytes(),
            b"/",
            via.version().as_bytes(),
            b"/",
            via.transport().as_bytes(),
            b" ",
            via.host().as_bytes(),
        ],
    );
    let mut num = itoa::Buffer::new();
    if let Some(p) = via.port() {
        put_all(out, &[b":", num.format(p).as_bytes()]);
    }
    let sent_by_ip = crate::uri::host_ip(via.host());
    let rport = via.rport().is_some();
    for (name, value) in via.params().iter() {
        if name.eq_ignore_ascii_case("received") || name.eq_ignore_ascii_case("rport") {
            continue;
        }
        put_all(out, &[b";", name.as_bytes()]);
        if let Some(v) = value {
            put_all(out, &[b"=", v.as_bytes()]);
        }
    }
    if rport || sent_by_ip != Some(source.ip) {
        put_received(out, source.ip);
    }
    if rport {
        put_all(out, &[b";rport=", num.format(source.port).as_bytes()]);
    }
}

/// An IP address as `received` wants it (IPv6 without brackets), IPv4 without `core::fmt`.
fn put_ip(out: &mut BytesMut, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            let mut num = itoa::Buffer::new();
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.put_slice(b".");
                }
                out.put_slice(num.format(octet).as_bytes());
            }
        }
        IpAddr::V6(v6) => {
            let _ = write!(StrBuf(out), "{v6}");
        }
    }
}

/// `fmt::Write` over a `BytesMut`.
struct StrBuf<'a>(&'a mut BytesMut);

impl std::fmt::Write for StrBuf<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.put_slice(s.as_bytes());
        Ok(())
    }
}
