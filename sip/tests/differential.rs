//! rsip 0.4 as an independent oracle (it is not used by the product): for every message
//! both parsers accept, the method or status, Request-URI, Call-ID, CSeq, From/To tags and
//! top Via branch must agree. The messages come from a generator of well-formed traffic
//! (long header names and IPv4, which rsip reads correctly) and from the torture vectors.

use bytes::Bytes;
use limes_sip::{Limits, Message};
use proptest::prelude::*;
use rsip::headers::untyped::ToTypedHeader as _;
use rsip::headers::untyped::UntypedHeader as _;
use rsip::prelude::HeadersExt as _;

/// The fields compared, as each parser reads them.
#[derive(Debug, PartialEq)]
struct Keys {
    start: String,
    request_uri: Option<String>,
    call_id: String,
    cseq: (u32, String),
    from_tag: Option<String>,
    to_tag: Option<String>,
    branch: Option<String>,
}

fn ours(data: &[u8]) -> Option<Keys> {
    let m = Message::parse(Bytes::copy_from_slice(data), &Limits::default()).ok()?;
    if m.defect().is_some() {
        return None;
    }
    let cseq = m.cseq()?.ok()?;
    Some(Keys {
        start: match m.method() {
            Some(method) => method.to_string(),
            None => m.status()?.to_string(),
        },
        request_uri: m.request_uri_str().map(str::to_owned),
        call_id: m.call_id()?.to_owned(),
        cseq: (cseq.seq, cseq.method.to_owned()),
        from_tag: m.from_tag().map(str::to_owned),
        to_tag: m.to_tag().map(str::to_owned),
        branch: m.top_via()?.ok()?.branch().map(str::to_owned),
    })
}

fn theirs(data: &[u8]) -> Option<Keys> {
    let msg = rsip::SipMessage::try_from(data).ok()?;
    let (start, request_uri) = match &msg {
        rsip::SipMessage::Request(r) => (r.method.to_string(), Some(r.uri.to_string())),
        rsip::SipMessage::Response(r) => (r.status_code.code().to_string(), None),
    };
    let cseq = msg.cseq_header().ok()?;
    Some(Keys {
        start,
        request_uri,
        call_id: msg.call_id_header().ok()?.value().to_owned(),
        cseq: (cseq.seq().ok()?, cseq.method().ok()?.to_string()),
        from_tag: msg.from_header().ok()?.tag().ok()?.map(|t| t.to_string()),
        to_tag: msg.to_header().ok()?.tag().ok()?.map(|t| t.to_string()),
        branch: msg
            .via_header()
            .ok()?
            .typed()
            .ok()?
            .branch()
            .map(|b| b.to_string()),
    })
}

/// Compares the two readings; `Err` carries both when they differ.
fn compare(data: &[u8]) -> Result<bool, String> {
    match (ours(data), theirs(data)) {
        (Some(a), Some(b)) if a == b => Ok(true),
        (Some(a), Some(b)) => Err(format!("limes {a:?}\nrsip  {b:?}")),
        _ => Ok(false),
    }
}

prop_compose! {
    fn token()(s in "[a-zA-Z0-9][a-zA-Z0-9.!%*_+`'~-]{0,15}") -> String { s }
}

prop_compose! {
    fn host()(name in "[a-z][a-z0-9-]{0,10}(\\.[a-z][a-z0-9-]{0,10}){0,3}",
               ip in (1u8..=254, any::<u8>(), any::<u8>(), 1u8..=254),
               use_ip in any::<bool>()) -> String {
        if use_ip { format!("{}.{}.{}.{}", ip.0, ip.1, ip.2, ip.3) } else { name }
    }
}

prop_compose! {
    fn sip_uri()(user in prop::option::of("[a-zA-Z0-9+_.-]{1,12}"), host in host(),
                 port in prop::option::of(1024u16..65535),
                 params in prop::collection::vec(("[a-z]{1,8}", prop::option::of("[a-z0-9]{1,8}")), 0..3)) -> String {
        let mut s = String::from("sip:");
        if let Some(u) = user { s.push_str(&u); s.push('@'); }
        s.push_str(&host);
        if let Some(p) = port { s.push_str(&format!(":{p}")); }
        for (k, v) in params {
            s.push(';');
            s.push_str(&k);
            if let Some(v) = v { s.push('='); s.push_str(&v); }
        }
        s
    }
}

prop_compose! {
    fn message()(
        method in prop::sample::select(vec!["INVITE", "ACK", "BYE", "CANCEL", "REGISTER", "OPTIONS", "INFO", "UPDATE", "PRACK", "SUBSCRIBE", "NOTIFY", "REFER", "MESSAGE", "PUBLISH"]),
        response in prop::option::of(100u16..700),
        uri in sip_uri(),
        via_host in host(),
        branch in token(),
        extra_vias in 0usize..3,
        from_uri in sip_uri(), from_tag in token(),
        to_uri in sip_uri(), to_tag in prop::option::of(token()),
        display in prop::option::of("[A-Za-z]{1,10}"),
        call_id in "[a-zA-Z0-9.!%*_+`'~@-]{1,32}",
        seq in 0u32..=0x7fff_ffff,
        body in "[a-z=0-9 ]{0,40}",
        unknown in prop::collection::vec(("X-[A-Za-z]{1,10}", "[ -~&&[^:]]{0,30}"), 0..4),
    ) -> String {
        let start = match response {
            Some(code) => format!("SIP/2.0 {code} Reason"),
            None => format!("{method} {uri} SIP/2.0"),
        };
        let mut s = format!("{start}\r\nVia: SIP/2.0/UDP {via_host};branch=z9hG4bK{branch}\r\n");
        for i in 0..extra_vias {
            s.push_str(&format!("Via: SIP/2.0/TCP proxy{i}.example.com;branch=z9hG4bKx{i}\r\n"));
        }
        let name = display.map(|d| format!("\"{d}\" ")).unwrap_or_default();
        s.push_str(&format!("From: {name}<{from_uri}>;tag={from_tag}\r\n"));
        match to_tag {
            Some(t) => s.push_str(&format!("To: <{to_uri}>;tag={t}\r\n")),
            None => s.push_str(&format!("To: <{to_uri}>\r\n")),
        }
        s.push_str(&format!("Call-ID: {call_id}\r\nCSeq: {seq} {method}\r\nMax-Forwards: 70\r\n"));
        for (k, v) in unknown {
            s.push_str(&format!("{k}: {v}\r\n"));
        }
        s.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        s
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]
    #[test]
    fn generated_messages_agree(msg in message()) {
        let both = compare(msg.as_bytes()).map_err(TestCaseError::fail)?;
        // Every generated message is well formed: rsip must accept it too, or the
        // generator has drifted from what the oracle can check.
        prop_assert!(both, "one parser refused a well-formed message:\n{msg}");
    }
}

#[test]
fn torture_vectors_agree_where_both_accept() {
    let mut both = 0;
    let mut refused_by_one = 0;
    let mut differ = Vec::new();
    for dir in ["rfc4475", "rfc5118"] {
        let path = format!("{}/testdata/{dir}", env!("CARGO_MANIFEST_DIR"));
        for entry in std::fs::read_dir(path).unwrap() {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            match compare(&data) {
                Ok(true) => both += 1,
                Ok(false) => refused_by_one += 1,
                Err(e) => differ.push(format!("{}:\n{e}", path.display())),
            }
        }
    }
    println!(
        "both accept and agree: {both}; refused by one: {refused_by_one}; differ: {}",
        differ.len()
    );
    for d in &differ {
        println!("{d}");
    }
    assert!(
        differ.is_empty(),
        "the parsers disagree on {} vectors",
        differ.len()
    );
    assert!(both >= 10);
}
