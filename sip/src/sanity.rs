//! Sanity rules: every defect a request can carry, mapped to the answer the RFCs give it
//! (the checks of Kamailio's sanity module, and more). A response that fails them cannot be
//! answered and is dropped by the caller, which counts the reason.

use std::borrow::Cow;

use crate::header::HeaderName;
use crate::message::Message;
use crate::uri::Scheme;

/// What the element checking the request is about to be for it.
#[derive(Debug, Clone, Copy)]
pub struct Policy<'a> {
    /// Option tags this element supports (for Proxy-Require, and Require when local).
    pub supported: &'a [&'a str],
    /// The element answers the request itself (registrar, OPTIONS to itself): Require is
    /// checked and Max-Forwards 0 is allowed. Otherwise it forwards as a proxy.
    pub local: bool,
    /// Longest Request-URI accepted (414 past it).
    pub max_uri_len: usize,
}

impl Default for Policy<'_> {
    fn default() -> Self {
        Self {
            supported: &[],
            local: false,
            max_uri_len: crate::Limits::default().max_uri_len,
        }
    }
}

/// The answer a request that failed a rule gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub status: u16,
    /// The reason phrase, naming the defect.
    pub reason: Cow<'static, str>,
    /// For 420: the option tags to list in Unsupported.
    pub unsupported: Vec<String>,
}

impl Rejection {
    fn new(status: u16, reason: impl Into<Cow<'static, str>>) -> Self {
        Self {
            status,
            reason: reason.into(),
            unsupported: Vec::new(),
        }
    }

    fn bad(reason: impl Into<Cow<'static, str>>) -> Self {
        Self::new(400, reason)
    }
}

// The duplicate check keeps one bit per header name.
const _: () = assert!((HeaderName::Other as u32) < 64);

const REQUIRED: [(HeaderName, &str); 5] = [
    (HeaderName::Via, "Missing Via header"),
    (HeaderName::From, "Missing From header"),
    (HeaderName::To, "Missing To header"),
    (HeaderName::CallId, "Missing Call-ID header"),
    (HeaderName::CSeq, "Missing CSeq header"),
];

/// Checks a request before it is processed. `Ok` means it may be processed or forwarded.
pub fn check_request(msg: &Message, policy: &Policy<'_>) -> Result<(), Rejection> {
    let Some(method) = msg.method() else {
        return Err(Rejection::bad("not a request"));
    };
    if let Some(d) = msg.defect() {
        return Err(Rejection::new(d.status, d.reason));
    }
    common(msg, Vias::All)?;
    for (error, what) in msg.address_errors().into_iter().zip(["From", "To"]) {
        if let Some(e) = error {
            return Err(Rejection::bad(format!("Malformed {what} header: {e}")));
        }
    }

    let cseq = msg
        .cseq()
        .and_then(Result::ok)
        .ok_or_else(|| Rejection::bad("Malformed CSeq header"))?;
    if cseq.method != method.as_str() {
        return Err(Rejection::bad(
            "CSeq method does not match the Request-Line",
        ));
    }
    let max_forwards = msg.max_forwards();
    if let Some(Err(_)) = max_forwards {
        return Err(Rejection::bad("Malformed Max-Forwards header"));
    }
    if let Some(Err(_)) = msg.expires() {
        return Err(Rejection::bad("Malformed Expires header"));
    }
    if !msg.is_contact_wildcard() {
        for c in msg.contacts() {
            let c = c.map_err(|e| Rejection::bad(format!("Malformed Contact header: {e}")))?;
            if c.params.get("expires").is_some() && c.expires().is_none() {
                return Err(Rejection::bad("Malformed Contact expires parameter"));
            }
        }
    }
    for (name, what) in [
        (HeaderName::Route, "Route"),
        (HeaderName::RecordRoute, "Record-Route"),
    ] {
        for r in msg.list(name) {
            let r = r.and_then(crate::addr::NameAddr::parse);
            r.map_err(|e| Rejection::bad(format!("Malformed {what} header: {e}")))?;
        }
    }

    // RFC 3261 §20.17: SIP-date is an RFC 1123 date, always in GMT.
    if let Some(date) = msg.get(HeaderName::Date) {
        if !date.ends_with(" GMT") {
            return Err(Rejection::bad(
                "Malformed Date header: time zone is not GMT",
            ));
        }
    }

    let uri_text = msg.request_uri_str().unwrap_or_default();
    if uri_text.len() > policy.max_uri_len {
        return Err(Rejection::new(414, "Request-URI Too Long"));
    }
    let (scheme, has_headers) = msg
        .request_uri_scheme()
        .and_then(Result::ok)
        .ok_or_else(|| Rejection::bad("Malformed Request-URI"))?;
    if scheme == Scheme::Other {
        return Err(Rejection::new(416, "Unsupported URI Scheme"));
    }
    if has_headers {
        return Err(Rejection::bad("Request-URI carries headers"));
    }

    let mut required: Vec<&str> = Vec::new();
    let names: &[HeaderName] = if policy.local {
        &[HeaderName::ProxyRequire, HeaderName::Require]
    } else {
        &[HeaderName::ProxyRequire]
    };
    for &name in names {
        for tag in msg.option_tags(name) {
            let known = policy.supported.iter().any(|s| s.eq_ignore_ascii_case(tag));
            if !known && !required.iter().any(|r| r.eq_ignore_ascii_case(tag)) {
                required.push(tag);
            }
        }
    }
    // RFC 3261 §8.2.2.3: Require in a CANCEL or an ACK is not rejected.
    if !required.is_empty() && !matches!(method, crate::Method::Ack | crate::Method::Cancel) {
        let mut r = Rejection::new(420, "Bad Extension");
        r.unsupported = required.into_iter().map(str::to_owned).collect();
        return Err(r);
    }

    if !policy.local && max_forwards == Some(Ok(0)) {
        return Err(Rejection::new(483, "Too Many Hops"));
    }
    Ok(())
}

/// Checks a response before it is matched or forwarded; `Err` names why it is dropped.
/// Its top Via and CSeq are checked (they match it); the From and To URIs are not:
/// a proxy relays a response by its Via (RFC 3261 §16.7) and their syntax is the user
/// agents' business, checked on the request that opened the transaction.
pub fn check_response(msg: &Message) -> Result<(), Cow<'static, str>> {
    if msg.status().is_none() {
        return Err("not a response".into());
    }
    if let Some(d) = msg.defect() {
        return Err(d.reason.into());
    }
    common(msg, Vias::Top).map_err(|r| r.reason)?;
    msg.cseq()
        .and_then(Result::ok)
        .ok_or(Cow::Borrowed("Malformed CSeq header"))?;
    Ok(())
}

/// Which Vias [`common`] checks.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Vias {
    /// Every one: a request's Vias are the path its responses take.
    All,
    /// The top one only: a response is matched by it and relayed by the next one, which is
    /// read (and refused when malformed) only if the response travels without a
    /// transaction.
    Top,
}

/// Rules requests and responses share: required and single headers, and the syntax of
/// Via, Call-ID and Content-Length.
fn common(msg: &Message, vias: Vias) -> Result<(), Rejection> {
    for (name, reason) in REQUIRED {
        if !msg.has(name) {
            return Err(Rejection::bad(reason));
        }
    }
    if msg.repeats_any() {
        if let Some(h) = msg
            .headers()
            .iter()
            .find(|h| h.name.is_single() && msg.repeats(h.name))
        {
            return Err(Rejection::bad(format!(
                "Duplicate {} header",
                h.name.as_str()
            )));
        }
        let mut lengths = msg.get_all(HeaderName::ContentLength);
        if let Some(first) = lengths.next() {
            if lengths.any(|l| l != first) {
                return Err(Rejection::bad("Conflicting Content-Length headers"));
            }
        }
    }
    let call_id = msg.call_id().unwrap_or_default();
    if call_id.is_empty() || call_id.bytes().any(|b| b.is_ascii_whitespace()) {
        return Err(Rejection::bad("Malformed Call-ID header"));
    }
    let checked = match vias {
        Vias::All => usize::MAX,
        Vias::Top => 1,
    };
    for v in msg.vias().take(checked) {
        let v = v.map_err(|e| Rejection::bad(format!("Malformed Via header: {e}")))?;
        v.check_params()
            .map_err(|e| Rejection::bad(format!("Malformed Via header: {e}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::Limits;

    fn parse(s: &str) -> Message {
        Message::parse(Bytes::from(s.replace('\n', "\r\n")), &Limits::default()).unwrap()
    }

    #[test]
    fn from_uri_checked_on_requests_and_left_to_the_user_agents_on_responses() {
        let headers = "Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\n\
                       From: <sip:a@b c>;tag=1\nTo: <sip:b@example.com>\n\
                       Call-ID: x\nCSeq: 1 OPTIONS\nMax-Forwards: 70\nContent-Length: 0\n\n";
        let request = parse(&format!("OPTIONS sip:b@example.com SIP/2.0\n{headers}"));
        let r = check_request(&request, &Policy::default()).unwrap_err();
        assert_eq!(r.status, 400);
        assert!(
            r.reason.starts_with("Malformed From header"),
            "{}",
            r.reason
        );
        let response = parse(&format!("SIP/2.0 200 OK\n{headers}"));
        assert_eq!(check_response(&response), Ok(()));
        let bad_via = parse(&format!("SIP/2.0 200 OK\nVia: SIP/2.0/UDP\n{headers}"));
        assert!(check_response(&bad_via).is_err());
    }
}
