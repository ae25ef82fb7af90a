//! A SIP message held as its bytes plus an index of its start line and header fields.
//!
//! Parsing finds line ends with `memchr`, classifies each header name once and records
//! byte ranges; nothing else is decoded until a typed accessor asks for it. Folded header
//! lines (RFC 3261 §7.3.1) are unfolded by turning each CRLF before continuation white space
//! into two spaces, which keeps every offset valid and needs one copy only for the rare
//! message that folds. The indexing pass is in `index.rs`; this file is the message and
//! its typed views.

use std::cell::OnceCell;
use std::ops::Range;

use bytes::Bytes;
use bytestring::ByteString;
use smallvec::SmallVec;

use crate::addr::NameAddr;
use crate::cseq::CSeq;
use crate::error::{Defect, ParseError};
use crate::header::HeaderName;
use crate::limits::Limits;
use crate::method::Method;
use crate::params::Params;
use crate::text::{is_ws, split_top, trim};
use crate::uri::{Scheme, Uri, UriError};
use crate::via::{Via, ViaAt};

mod index;

use index::{index, unfold, Indexed};

/// A byte range of the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    pub start: u32,
    pub end: u32,
}

impl Span {
    pub(crate) fn new(r: Range<usize>) -> Self {
        // Messages are bounded far below 4 GiB by `Limits::max_message_size` and the
        // transports, so offsets fit in u32.
        Self {
            start: r.start as u32,
            end: r.end as u32,
        }
    }

    pub fn range(self) -> Range<usize> {
        self.start as usize..self.end as usize
    }

    /// The same range in a text that holds this one at `offset`.
    pub(crate) fn shifted(self, offset: u32) -> Self {
        Self {
            start: self.start + offset,
            end: self.end + offset,
        }
    }

    pub fn len(self) -> usize {
        (self.end - self.start) as usize
    }

    pub fn is_empty(self) -> bool {
        self.end == self.start
    }
}

/// Where `part`, a slice of `src`, lies in it; the empty span for text from elsewhere.
pub(crate) fn span_in(src: &str, part: &str) -> Span {
    let start = (part.as_ptr() as usize).wrapping_sub(src.as_ptr() as usize);
    match start.checked_add(part.len()) {
        Some(end) if !part.is_empty() && end <= src.len() => Span::new(start..end),
        _ => Span::default(),
    }
}

/// One header field line: its name as recognised and the ranges of name and value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub name: HeaderName,
    /// The whole line, name to end of value, without the line end.
    pub line: Span,
    pub name_span: Span,
    /// The value, surrounding white space trimmed.
    pub value: Span,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    Request { method: Method, uri: Span },
    Response { status: u16, reason: Span },
}

/// A parsed SIP request or response.
#[derive(Debug, Clone)]
pub struct Message {
    /// The message, checked to be UTF-8 once, so every view borrows `&str` without
    /// another check: all of it when the body is text too (SDP, almost always), else the
    /// start line and header section only, the rest in `binary`. One handle on a received
    /// datagram's buffer: a second one sliced off it costs `bytes` an allocation.
    head: ByteString,
    /// The whole message, when its body is not UTF-8.
    binary: Option<Bytes>,
    start: StartLine,
    /// The start line without its line end.
    start_line: Span,
    /// Where the header section ends (just past the empty line).
    header_end: u32,
    body: Span,
    defect: Option<Defect>,
    max_list_values: u16,
    names: Names,
    /// Boxed: larger than the rest of the message, which moves often.
    index: Box<Index>,
}

/// The header lines and the views of a message, in one allocation (a message needs one
/// besides its bytes), small enough for the allocator's per-thread cache.
#[derive(Debug, Clone, Default)]
struct Index {
    /// Room for the headers of nearly every message; more spill to the heap.
    headers: SmallVec<[Header; INLINE_HEADERS]>,
    views: Views,
}

/// The header names a message has, one bit each: most lookups are for
/// headers a message does not have, and those need no scan of its lines.
#[derive(Debug, Clone, Copy, Default)]
struct Names {
    present: u64,
    /// The names that have more than one line.
    repeated: u64,
}

impl Names {
    /// `name`'s bit: a field-less enum of fewer than 64 names.
    fn bit(name: HeaderName) -> u64 {
        1 << (name as u32 % 64)
    }

    /// Notes one more line of `name`.
    fn note(&mut self, name: HeaderName) {
        let bit = Self::bit(name);
        self.repeated |= self.present & bit;
        self.present |= bit;
    }

    fn has(self, name: HeaderName) -> bool {
        self.present & Self::bit(name) != 0
    }

    fn repeats(self, name: HeaderName) -> bool {
        self.repeated & Self::bit(name) != 0
    }
}

const INLINE_HEADERS: usize = 20;

/// The views every element reads several times per message (sanity, transaction matching,
/// routing, loop detection, the forwarded copy): parsed on first use and kept as spans, so
/// each is parsed once per message however many readers ask.
#[derive(Debug, Clone, Default)]
struct Views {
    top_via: OnceCell<Option<Result<ViaAt, UriError>>>,
    request_uri: OnceCell<Option<Result<UriAt, UriError>>>,
    cseq: OnceCell<Option<Result<CSeqAt, UriError>>>,
    from_uri: OnceCell<Option<Result<UriAt, UriError>>>,
    to_uri: OnceCell<Option<Result<UriAt, UriError>>>,
    from_tag: OnceCell<Option<Span>>,
    to_tag: OnceCell<Option<Span>>,
}

#[derive(Debug, Clone, Copy)]
struct UriAt {
    raw: Span,
    scheme: Scheme,
    user: Option<Span>,
    password: Option<Span>,
    host: Span,
    port: Option<u16>,
    params: Span,
    headers: Option<Span>,
}

#[derive(Debug, Clone, Copy)]
struct CSeqAt {
    seq: u32,
    method: Span,
}

impl Message {
    /// Parses one message: a datagram, or a stream frame cut by [`crate::framing::check`].
    ///
    /// Content-Length bounds the body: extra octets are dropped (RFC 3261 §18.3), missing
    /// octets are a [`Defect`] (400); with no Content-Length the body runs to the end.
    /// Defects that still allow an answer (bad Content-Length, a malformed Request-Line,
    /// an unsupported version, a size past the limit) are recorded, not returned as
    /// errors, so the caller can answer with the right status.
    pub fn parse(buf: Bytes, limits: &Limits) -> Result<Self, ParseError> {
        match index(&buf, limits)? {
            Indexed::Done(parts) => parts.into_message(buf, limits),
            Indexed::Folded => {
                let unfolded = unfold(&buf);
                match index(&unfolded, limits)? {
                    Indexed::Done(parts) => parts.into_message(unfolded, limits),
                    // Unfolding removes every continuation line.
                    Indexed::Folded => Err(ParseError::BadStartLine),
                }
            }
        }
    }

    pub fn as_bytes(&self) -> &Bytes {
        self.binary.as_ref().unwrap_or_else(|| self.head.as_bytes())
    }

    pub fn start_line(&self) -> &StartLine {
        &self.start
    }

    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }

    pub fn method(&self) -> Option<&Method> {
        match &self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self.start {
            StartLine::Response { status, .. } => Some(status),
            StartLine::Request { .. } => None,
        }
    }

    pub fn reason(&self) -> Option<&str> {
        match self.start {
            StartLine::Response { reason, .. } => Some(self.text(reason)),
            StartLine::Request { .. } => None,
        }
    }

    /// The Request-URI as written.
    pub fn request_uri_str(&self) -> Option<&str> {
        match self.start {
            StartLine::Request { uri, .. } => Some(self.text(uri)),
            StartLine::Response { .. } => None,
        }
    }

    /// The Request-URI, parsed once per message.
    pub fn request_uri(&self) -> Option<Result<Uri<'_>, UriError>> {
        self.view(self.request_uri_at())
    }

    fn request_uri_at(&self) -> Option<Result<UriAt, UriError>> {
        self.kept(&self.index.views.request_uri, || {
            self.request_uri_str().map(Uri::parse)
        })
    }

    /// What the sanity rules read of the Request-URI: its scheme and whether it carries
    /// headers, without building the view.
    pub(crate) fn request_uri_scheme(&self) -> Option<Result<(Scheme, bool), UriError>> {
        self.request_uri_at()
            .map(|r| r.map(|u| (u.scheme, u.headers.is_some())))
    }

    /// The From and To URIs' syntax errors, without building either view.
    pub(crate) fn address_errors(&self) -> [Option<UriError>; 2] {
        [
            self.address_at(&self.index.views.from_uri, HeaderName::From),
            self.address_at(&self.index.views.to_uri, HeaderName::To),
        ]
        .map(|r| r.and_then(Result::err))
    }

    /// Where `s`, a slice of the header section, lies in it; the empty span for text from
    /// elsewhere (a view's empty default).
    fn span_of(&self, s: &str) -> Span {
        span_in(&self.head, s)
    }

    fn uri_at(&self, u: &Uri<'_>) -> UriAt {
        UriAt {
            raw: self.span_of(u.raw),
            scheme: u.scheme,
            user: u.user.map(|s| self.span_of(s)),
            password: u.password.map(|s| self.span_of(s)),
            host: self.span_of(u.host),
            port: u.port,
            params: self.span_of(u.params.as_str()),
            headers: u.headers.map(|s| self.span_of(s)),
        }
    }

    fn uri(&self, at: &UriAt) -> Uri<'_> {
        Uri {
            raw: self.text(at.raw),
            scheme: at.scheme,
            user: at.user.map(|s| self.text(s)),
            password: at.password.map(|s| self.text(s)),
            host: self.text(at.host),
            port: at.port,
            params: Params::new(self.text(at.params)),
            headers: at.headers.map(|s| self.text(s)),
        }
    }

    /// The first defect found while parsing, if any.
    pub fn defect(&self) -> Option<Defect> {
        self.defect
    }

    pub fn headers(&self) -> &[Header] {
        &self.index.headers
    }

    /// The start line span, without its line end.
    pub fn start_line_span(&self) -> Span {
        self.start_line
    }

    pub fn header_end(&self) -> usize {
        self.header_end as usize
    }

    pub fn body(&self) -> Bytes {
        self.as_bytes().slice(self.body.range())
    }

    pub fn body_span(&self) -> Span {
        self.body
    }

    /// Text of a span of the start line or header section. Spans end at ASCII
    /// delimiters, so they are always on character boundaries.
    pub fn text(&self, span: Span) -> &str {
        self.head.get(span.range()).unwrap_or_default()
    }

    pub fn value(&self, h: &Header) -> &str {
        self.text(h.value)
    }

    /// Whether the message has a line of `name`.
    pub fn has(&self, name: HeaderName) -> bool {
        self.names.has(name)
    }

    /// Whether the message has more than one line of `name`.
    pub fn repeats(&self, name: HeaderName) -> bool {
        self.names.repeats(name)
    }

    /// Whether any name has more than one line.
    pub fn repeats_any(&self) -> bool {
        self.names.repeated != 0
    }

    /// The header lines, or none when no line is named `name`.
    fn lines_of(&self, name: HeaderName) -> &[Header] {
        if self.has(name) {
            &self.index.headers
        } else {
            &[]
        }
    }

    /// Value of the first header named `name`.
    pub fn get(&self, name: HeaderName) -> Option<&str> {
        self.lines_of(name)
            .iter()
            .find(|h| h.name == name)
            .map(|h| self.value(h))
    }

    /// Values of every line of `name`, in order.
    pub fn get_all(&self, name: HeaderName) -> impl Iterator<Item = &str> {
        self.lines_of(name)
            .iter()
            .filter(move |h| h.name == name)
            .map(|h| self.value(h))
    }

    /// Value of the first header whose name matches `name` case-insensitively (for headers
    /// without a [`HeaderName`] variant).
    pub fn get_other(&self, name: &str) -> Option<&str> {
        self.index
            .headers
            .iter()
            .find(|h| self.text(h.name_span).eq_ignore_ascii_case(name))
            .map(|h| self.value(h))
    }

    pub fn count(&self, name: HeaderName) -> usize {
        self.lines_of(name)
            .iter()
            .filter(|h| h.name == name)
            .count()
    }

    /// Each comma-separated value of a list header across all its lines, in order,
    /// trimmed. Stops after `Limits::max_list_values`; an unterminated quote ends the list
    /// with an `Err`.
    pub fn list(&self, name: HeaderName) -> impl Iterator<Item = Result<&str, UriError>> {
        self.get_all(name)
            .flat_map(|line| split_top(line, b','))
            .map(list_value)
            .take(self.max_list_values as usize)
    }

    /// The first value of a list header: what `list(name).next()` gives, without the
    /// iterator.
    fn first_value(&self, name: HeaderName) -> Option<Result<&str, UriError>> {
        if self.max_list_values == 0 {
            return None;
        }
        split_top(self.get(name)?, b',').next().map(list_value)
    }

    pub fn call_id(&self) -> Option<&str> {
        self.get(HeaderName::CallId)
    }

    /// CSeq, parsed once per message.
    pub fn cseq(&self) -> Option<Result<CSeq<'_>, UriError>> {
        let at = self.index.views.cseq.get_or_init(|| {
            self.get(HeaderName::CSeq).map(|v| {
                CSeq::parse(v).map(|c| CSeqAt {
                    seq: c.seq,
                    method: self.span_of(c.method),
                })
            })
        });
        at.map(|r| {
            r.map(|c| CSeq {
                seq: c.seq,
                method: self.text(c.method),
            })
        })
    }

    pub fn from(&self) -> Option<Result<NameAddr<'_>, UriError>> {
        self.get(HeaderName::From).map(NameAddr::parse)
    }

    pub fn to(&self) -> Option<Result<NameAddr<'_>, UriError>> {
        self.get(HeaderName::To).map(NameAddr::parse)
    }

    /// The URI of From, parsed once per message (the sanity rules check it, source
    /// classification and call accounting read it).
    pub fn from_uri(&self) -> Option<Result<Uri<'_>, UriError>> {
        self.address_uri(&self.index.views.from_uri, HeaderName::From)
    }

    /// The URI of To, parsed once per message.
    pub fn to_uri(&self) -> Option<Result<Uri<'_>, UriError>> {
        self.address_uri(&self.index.views.to_uri, HeaderName::To)
    }

    fn address_uri(
        &self,
        cell: &OnceCell<Option<Result<UriAt, UriError>>>,
        name: HeaderName,
    ) -> Option<Result<Uri<'_>, UriError>> {
        self.view(self.address_at(cell, name))
    }

    fn address_at(
        &self,
        cell: &OnceCell<Option<Result<UriAt, UriError>>>,
        name: HeaderName,
    ) -> Option<Result<UriAt, UriError>> {
        self.kept(cell, || {
            self.get(name)
                .map(|v| NameAddr::parse(v).and_then(|a| a.parse_uri()))
        })
    }

    /// A URI view's spans: parsed by `parse` on first use, kept.
    fn kept<'s>(
        &'s self,
        cell: &OnceCell<Option<Result<UriAt, UriError>>>,
        parse: impl FnOnce() -> Option<Result<Uri<'s>, UriError>>,
    ) -> Option<Result<UriAt, UriError>> {
        *cell.get_or_init(|| parse().map(|r| r.map(|u| self.uri_at(&u))))
    }

    /// The URI a view's spans describe.
    fn view(&self, at: Option<Result<UriAt, UriError>>) -> Option<Result<Uri<'_>, UriError>> {
        at.map(|r| r.map(|u| self.uri(&u)))
    }

    /// The From tag, read without parsing the whole address, once per message.
    pub fn from_tag(&self) -> Option<&str> {
        self.tag(&self.index.views.from_tag, HeaderName::From)
    }

    /// The To tag, read without parsing the whole address, once per message.
    pub fn to_tag(&self) -> Option<&str> {
        self.tag(&self.index.views.to_tag, HeaderName::To)
    }

    fn tag(&self, cell: &OnceCell<Option<Span>>, name: HeaderName) -> Option<&str> {
        let at = cell.get_or_init(|| self.get(name).and_then(quick_tag).map(|t| self.span_of(t)));
        at.map(|s| self.text(s))
    }

    /// The first Via value: the one a response travels back by. Parsed once per message.
    pub fn top_via(&self) -> Option<Result<Via<'_>, UriError>> {
        let at = self.index.views.top_via.get_or_init(|| {
            self.first_value(HeaderName::Via).map(|v| {
                let v = v?;
                Via::parse(v).map(|via| via.spans().shifted(self.span_of(v).start))
            })
        });
        at.map(|r| r.map(|at| Via::from_spans(&self.head, at)))
    }

    /// Every Via value, the top one from the per-message view.
    pub fn vias(&self) -> impl Iterator<Item = Result<Via<'_>, UriError>> {
        self.top_via().into_iter().chain(
            self.list(HeaderName::Via)
                .skip(1)
                .map(|v| v.and_then(Via::parse)),
        )
    }

    fn addresses(&self, name: HeaderName) -> impl Iterator<Item = Result<NameAddr<'_>, UriError>> {
        self.list(name).map(|v| v.and_then(NameAddr::parse))
    }

    pub fn routes(&self) -> impl Iterator<Item = Result<NameAddr<'_>, UriError>> {
        self.addresses(HeaderName::Route)
    }

    pub fn record_routes(&self) -> impl Iterator<Item = Result<NameAddr<'_>, UriError>> {
        self.addresses(HeaderName::RecordRoute)
    }

    pub fn paths(&self) -> impl Iterator<Item = Result<NameAddr<'_>, UriError>> {
        self.addresses(HeaderName::Path)
    }

    /// Contact values; the wildcard `*` is reported by [`Message::is_contact_wildcard`].
    pub fn contacts(&self) -> impl Iterator<Item = Result<NameAddr<'_>, UriError>> {
        self.addresses(HeaderName::Contact)
    }

    pub fn is_contact_wildcard(&self) -> bool {
        self.get(HeaderName::Contact).is_some_and(|v| v == "*")
    }

    /// Max-Forwards as a number; `Some(Err)` when present but not 0..=255.
    pub fn max_forwards(&self) -> Option<Result<u8, UriError>> {
        self.get(HeaderName::MaxForwards).map(|v| {
            crate::text::parse_u32(v)
                .and_then(|n| u8::try_from(n).ok())
                .ok_or(UriError("malformed Max-Forwards"))
        })
    }

    /// The Expires header in seconds; `Some(Err)` when present but not a 32-bit number.
    pub fn expires(&self) -> Option<Result<u32, UriError>> {
        self.get(HeaderName::Expires)
            .map(|v| crate::text::parse_u32(v).ok_or(UriError("malformed Expires")))
    }

    pub fn content_type(&self) -> Option<&str> {
        self.get(HeaderName::ContentType)
    }

    pub fn user_agent(&self) -> Option<&str> {
        self.get(HeaderName::UserAgent)
    }

    /// Option tags of a Supported, Require, Proxy-Require or Unsupported list.
    pub fn option_tags(&self, name: HeaderName) -> impl Iterator<Item = &str> {
        self.list(name)
            .filter_map(Result::ok)
            .filter(|t| !t.is_empty())
    }

    /// Whether an option tag is listed, case-insensitively.
    pub fn has_option_tag(&self, name: HeaderName, tag: &str) -> bool {
        self.option_tags(name).any(|t| t.eq_ignore_ascii_case(tag))
    }
}

/// One value of a list header as [`Message::list`] gives it: trimmed, or why the list
/// cannot be split.
fn list_value(v: Result<&str, crate::text::Unbalanced>) -> Result<&str, UriError> {
    v.map(trim)
        .map_err(|_| UriError("unbalanced quote or bracket in list"))
}

/// `;tag=` of a From or To value found by a scan instead of a full parse: the first
/// `;tag=` after the closing `>` (or anywhere in an addr-spec form).
fn quick_tag(v: &str) -> Option<&str> {
    // The `>` and the `;` are near the end and the start of what is searched: plain loops.
    let after = match v.bytes().rposition(|c| c == b'>') {
        Some(i) => &v[i + 1..],
        None => v,
    };
    let b = after.as_bytes();
    let mut from = 0;
    while let Some(i) = b[from..].iter().position(|&c| c == b';') {
        let p = trim(&after[from + i + 1..]);
        if p.len() > 3 && p.as_bytes()[..3].eq_ignore_ascii_case(b"tag") {
            let rest = trim(&p[3..]);
            if let Some(value) = rest.strip_prefix('=') {
                let value = trim(value);
                let end = value
                    .bytes()
                    .position(|c| c == b';' || is_ws(c))
                    .unwrap_or(value.len());
                return Some(&value[..end]);
            }
        }
        from += i + 1;
    }
    None
}
