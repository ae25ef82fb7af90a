//! RFC 4475 and RFC 5118 torture messages: each file with the outcome the RFC's text
//! gives it, checked against the parser and the sanity rules of a proxy.
//!
//! `Accept` cases must parse, pass the sanity rules, and show the values named in their
//! checks; `Reject(status, reason)` cases must be answered with that status and a reason
//! phrase containing the text; `Drop` cases (garbage responses) must be refused so the
//! node drops and counts them.

use bytes::Bytes;
use limes_sip::sanity::{check_request, check_response, Policy};
use limes_sip::{HeaderName, Limits, Message, Method};

enum Expect {
    Accept(fn(&Message)),
    Reject(u16, &'static str),
    Drop,
}
use Expect::*;

fn load(path: &str) -> Message {
    let bytes = std::fs::read(format!("{}/testdata/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    Message::parse(Bytes::from(bytes), &Limits::default()).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn run(path: &str, expect: Expect) {
    let bytes = std::fs::read(format!("{}/testdata/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let parsed = Message::parse(Bytes::from(bytes), &Limits::default());
    let policy = Policy::default();
    match expect {
        Accept(check) => {
            let msg = parsed.unwrap_or_else(|e| panic!("{path}: not parsed: {e}"));
            if msg.is_request() {
                assert_eq!(check_request(&msg, &policy), Ok(()), "{path}");
            } else {
                assert_eq!(check_response(&msg), Ok(()), "{path}");
            }
            check(&msg);
        }
        Reject(status, reason) => {
            let msg =
                parsed.unwrap_or_else(|e| panic!("{path}: not parsed, so not answerable: {e}"));
            let r = check_request(&msg, &policy).expect_err(path);
            assert_eq!(r.status, status, "{path}: {r:?}");
            assert!(
                r.reason.contains(reason),
                "{path}: reason {:?} lacks {reason:?}",
                r.reason
            );
        }
        Drop => match parsed {
            Err(_) => {}
            Ok(msg) => assert!(
                check_response(&msg).is_err(),
                "{path}: a garbage response passed"
            ),
        },
    }
}

macro_rules! torture {
    ($($name:ident: $file:literal => $expect:expr;)*) => {
        $(#[test] fn $name() { run($file, $expect); })*
    };
}

fn sip(msg: &Message) -> limes_sip::uri::Uri<'_> {
    msg.request_uri().unwrap().unwrap()
}

// RFC 4475 §3.1.1: valid messages an element must accept.
torture! {
    rfc4475_3_1_1_1_short_tortuous_invite_wsinv: "rfc4475/wsinv.dat" => Accept(|m| {
        assert_eq!(m.method(), Some(&Method::Invite));
        assert_eq!(m.request_uri_str(), Some("sip:vivekg@chair-dnrc.example.com;unknownparam"));
        assert_eq!(m.to_tag(), Some("1918181833n"));
        assert_eq!(m.from_tag(), Some("98asjd8"));
        assert_eq!(m.from().unwrap().unwrap().display, Some(r#""J Rosenberg \\\"""#));
        assert_eq!(m.max_forwards(), Some(Ok(68)));
        assert_eq!(m.call_id(), Some("wsinv.ndaksdj@192.0.2.1"));
        let cseq = m.cseq().unwrap().unwrap();
        assert_eq!((cseq.seq, cseq.method), (9, "INVITE"));
        let vias: Vec<_> = m.vias().map(Result::unwrap).collect();
        assert_eq!(vias.len(), 3);
        assert_eq!((vias[0].transport(), vias[0].host(), vias[0].branch()), ("UDP", "192.0.2.2", Some("390skdjuw")));
        assert_eq!((vias[1].transport(), vias[1].host(), vias[1].branch()), ("TCP", "spindle.example.com", Some("z9hG4bK9ikj8")));
        assert_eq!((vias[2].host(), vias[2].branch()), ("192.168.255.111", Some("z9hG4bK30239")));
        let contact = m.contacts().next().unwrap().unwrap();
        assert_eq!((contact.uri, contact.q()), ("sip:jdrosen@example.com", Some(330)));
        assert!(m.get_other("NewFangledHeader").unwrap().ends_with("continued newfangled value"));
        assert_eq!(m.routes().next().unwrap().unwrap().uri, "sip:services.example.com;lr;unknownwith=value;unknown-no-value");
        assert_eq!(m.body().len(), 150);
    });
    rfc4475_3_1_1_2_wide_range_of_valid_characters_intmeth: "rfc4475/intmeth.dat" => Accept(|m| {
        assert_eq!(m.method().unwrap().as_str(), "!interesting-Method0123456789_*+`.%indeed'~");
        assert_eq!(m.cseq().unwrap().unwrap().method, "!interesting-Method0123456789_*+`.%indeed'~");
        let uri = sip(m);
        assert_eq!(uri.user, Some("1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"));
        assert_eq!(uri.password, Some("&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"));
        assert_eq!(uri.host, "example.com");
        assert_eq!(m.from_tag(), Some("_token~1'+`*%!-."));
        assert_eq!(m.top_via().unwrap().unwrap().branch(), Some("z9hG4bK-.!%66*_+`'~"));
        assert_eq!(m.call_id(), Some("intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"));
        assert_eq!(m.get_other("extensionHeader-!.%*+_`'~"), Some("\u{feff}大停電"));
    });
    rfc4475_3_1_1_3_valid_use_of_escapes_esc01: "rfc4475/esc01.dat" => Accept(|m| {
        assert_eq!(sip(m).user, Some("sips%3Auser%40example.com"));
        assert_eq!(m.from().unwrap().unwrap().parse_uri().unwrap().user, Some("I%20have%20spaces"));
        assert_eq!(m.call_id(), Some("esc01.239409asdfakjkn23onasd0-3234"));
    });
    rfc4475_3_1_1_4_escaped_nulls_in_uris_escnull: "rfc4475/escnull.dat" => Accept(|m| {
        assert_eq!(m.method(), Some(&Method::Register));
        assert_eq!(m.contacts().next().unwrap().unwrap().parse_uri().unwrap().user, Some("%00"));
    });
    rfc4475_3_1_1_5_percent_not_an_escape_esc02: "rfc4475/esc02.dat" => Accept(|m| {
        assert_eq!(m.method().unwrap().as_str(), "RE%47IST%45R");
        assert!(matches!(m.method(), Some(Method::Extension(_))));
        assert_eq!(m.from().unwrap().unwrap().display, Some("\"%Z%45\""));
    });
    rfc4475_3_1_1_6_no_lws_between_display_name_and_lt_lwsdisp: "rfc4475/lwsdisp.dat" => Accept(|m| {
        assert_eq!(m.from().unwrap().unwrap().display, Some("caller"));
        assert_eq!(m.from_tag(), Some("323"));
    });
    rfc4475_3_1_1_7_long_values_in_header_fields_longreq: "rfc4475/longreq.dat" => Accept(|m| {
        assert_eq!(m.vias().count(), 34);
        assert!(m.to().unwrap().unwrap().display.unwrap().len() > 90);
        assert!(m.from_tag().unwrap().len() > 100);
        assert_eq!(m.body().len(), 150);
    });
    rfc4475_3_1_1_8_extra_trailing_octets_in_udp_datagram_dblreq: "rfc4475/dblreq.dat" => Accept(|m| {
        assert_eq!(m.method(), Some(&Method::Register));
        assert!(m.body().is_empty(), "octets after Content-Length are dropped (RFC 3261 §18.3)");
    });
    rfc4475_3_1_1_9_semicolon_separated_parameters_in_uri_user_part_semiuri: "rfc4475/semiuri.dat" => Accept(|m| {
        let uri = sip(m);
        assert_eq!((uri.user, uri.host), (Some("user;par=u%40example.net"), "example.com"));
        assert!(uri.params.as_str().is_empty());
    });
    rfc4475_3_1_1_10_varied_and_unknown_transport_types_transports: "rfc4475/transports.dat" => Accept(|m| {
        let t: Vec<_> = m.vias().map(|v| v.unwrap().transport()).collect();
        assert_eq!(t, ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]);
    });
    rfc4475_3_1_1_11_multipart_mime_message_mpart01: "rfc4475/mpart01.dat" => Accept(|m| {
        assert_eq!(m.method().unwrap().as_str(), "MESSAGE");
        assert!(m.content_type().unwrap().starts_with("multipart/mixed"));
        let cl: usize = m.get(HeaderName::ContentLength).unwrap().parse().unwrap();
        assert_eq!(m.body().len(), cl);
    });
    rfc4475_3_1_1_12_unusual_reason_phrase_unreason: "rfc4475/unreason.dat" => Accept(|m| {
        assert_eq!(m.status(), Some(200));
        assert!(m.reason().unwrap().starts_with("= 2**3 * 5**2 но сто девяносто девять"));
    });
    rfc4475_3_1_1_13_empty_reason_phrase_noreason: "rfc4475/noreason.dat" => Accept(|m| {
        assert_eq!((m.status(), m.reason()), (Some(100), Some("")));
    });
}

// RFC 4475 §3.1.2: invalid messages; an element must not accept them as valid. Requests
// are answered 400 (505 for the version); responses are dropped.
torture! {
    rfc4475_3_1_2_1_extraneous_header_field_separators_badinv01: "rfc4475/badinv01.dat" => Reject(400, "Via");
    rfc4475_3_1_2_2_content_length_larger_than_message_clerr: "rfc4475/clerr.dat" => Reject(400, "Content-Length larger than message");
    rfc4475_3_1_2_3_negative_content_length_ncl: "rfc4475/ncl.dat" => Reject(400, "malformed Content-Length");
    rfc4475_3_1_2_4_request_scalar_fields_with_overlarge_values_scalar02: "rfc4475/scalar02.dat" => Reject(400, "CSeq");
    rfc4475_3_1_2_5_response_scalar_fields_with_overlarge_values_scalarlg: "rfc4475/scalarlg.dat" => Drop;
    rfc4475_3_1_2_6_unterminated_quoted_string_in_display_name_quotbal: "rfc4475/quotbal.dat" => Reject(400, "unterminated quoted display name");
    rfc4475_3_1_2_7_angle_brackets_enclosing_request_uri_ltgtruri: "rfc4475/ltgtruri.dat" => Reject(400, "Malformed Request-URI");
    rfc4475_3_1_2_8_malformed_request_uri_embedded_lws_lwsruri: "rfc4475/lwsruri.dat" => Reject(400, "malformed Request-Line");
    rfc4475_3_1_2_9_multiple_sp_separating_request_line_elements_lwsstart: "rfc4475/lwsstart.dat" => Reject(400, "malformed Request-Line");
    rfc4475_3_1_2_10_sp_characters_at_end_of_request_line_trws: "rfc4475/trws.dat" => Reject(400, "malformed Request-Line");
    // "It is acceptable for an element to reject this message with a 400": an SBC does not
    // act on headers smuggled in a Request-URI.
    rfc4475_3_1_2_11_escaped_headers_in_request_uri_escruri: "rfc4475/escruri.dat" => Reject(400, "Request-URI carries headers");
    // The Date must be in GMT (RFC 3261 §20.17); the RFC allows rejecting the message.
    rfc4475_3_1_2_12_invalid_time_zone_in_date_baddate: "rfc4475/baddate.dat" => Reject(400, "Date");
    rfc4475_3_1_2_13_name_addr_uri_not_enclosed_regbadct: "rfc4475/regbadct.dat" => Reject(400, "must be enclosed in <>");
    rfc4475_3_1_2_14_spaces_within_addr_spec_badaspec: "rfc4475/badaspec.dat" => Reject(400, "white space inside <URI>");
    rfc4475_3_1_2_15_non_token_characters_in_display_name_baddn: "rfc4475/baddn.dat" => Reject(400, "display name has non-token characters");
    rfc4475_3_1_2_16_unknown_protocol_version_badvers: "rfc4475/badvers.dat" => Reject(505, "Version Not Supported");
    rfc4475_3_1_2_17_start_line_and_cseq_method_mismatch_mismatch01: "rfc4475/mismatch01.dat" => Reject(400, "CSeq method does not match");
    rfc4475_3_1_2_18_unknown_method_with_cseq_mismatch_mismatch02: "rfc4475/mismatch02.dat" => Reject(400, "CSeq method does not match");
    rfc4475_3_1_2_19_overlarge_response_code_bigcode: "rfc4475/bigcode.dat" => Drop;
}

// RFC 4475 §3.2 (transaction layer), §3.3 (application layer), §3.4 (compatibility).
torture! {
    // §3.2.1: a branch without the magic cookie is matched the RFC 2543 way, not refused.
    rfc4475_3_2_1_missing_transaction_identifier_badbranch: "rfc4475/badbranch.dat" => Accept(|m| {
        let via = m.top_via().unwrap().unwrap();
        assert_eq!(via.branch(), Some("z9hG4bK"));
        assert!(limes_sip::transaction::TxKey::server(m).is_some());
    });
    rfc4475_3_3_1_missing_required_header_fields_insuf: "rfc4475/insuf.dat" => Reject(400, "Missing");
    rfc4475_3_3_2_request_uri_with_unknown_scheme_unkscm: "rfc4475/unkscm.dat" => Reject(416, "Unsupported URI Scheme");
    // A proxy that cannot route the scheme answers 416.
    rfc4475_3_3_3_request_uri_with_known_but_atypical_scheme_novelsc: "rfc4475/novelsc.dat" => Reject(416, "Unsupported URI Scheme");
    rfc4475_3_3_4_unknown_uri_schemes_in_header_fields_unksm2: "rfc4475/unksm2.dat" => Accept(|m| {
        assert_eq!(m.to().unwrap().unwrap().uri, "isbn:2983792873");
        assert_eq!(m.contacts().next().unwrap().unwrap().uri, "name:John_Smith");
    });
    // §3.3.5: a proxy answers 420 listing the Proxy-Require tags (Require is the UAS's).
    rfc4475_3_3_5_proxy_require_and_require_bext01: "rfc4475/bext01.dat" => Reject(420, "Bad Extension");
    // §3.3.6-3.3.7, 3.3.15: the UAS decides (415, 401); a proxy forwards.
    rfc4475_3_3_6_unknown_content_type_invut: "rfc4475/invut.dat" => Accept(|m| {
        assert_eq!(m.content_type(), Some("application/unknownformat"));
    });
    rfc4475_3_3_7_unknown_authorization_scheme_regaut01: "rfc4475/regaut01.dat" => Accept(|m| {
        assert!(m.get(HeaderName::Authorization).unwrap().starts_with("NoOneKnowsThisScheme"));
    });
    rfc4475_3_3_8_multiple_values_in_single_value_required_fields_multi01: "rfc4475/multi01.dat" => Reject(400, "Duplicate");
    rfc4475_3_3_9_multiple_content_length_values_mcl01: "rfc4475/mcl01.dat" => Reject(400, "Conflicting Content-Length");
    rfc4475_3_3_10_200_ok_with_broadcast_via_bcast: "rfc4475/bcast.dat" => Accept(|m| {
        assert_eq!(m.vias().nth(1).unwrap().unwrap().host(), "255.255.255.255");
    });
    // §3.3.11: a proxy must not forward Max-Forwards 0 (483).
    rfc4475_3_3_11_max_forwards_of_zero_zeromf: "rfc4475/zeromf.dat" => Reject(483, "Too Many Hops");
    rfc4475_3_3_12_register_with_contact_parameter_cparam01: "rfc4475/cparam01.dat" => Accept(|m| {
        let c = m.contacts().next().unwrap().unwrap();
        assert_eq!(c.uri, "sip:+19725552222@gw1.example.net");
        assert!(c.params.has("unknownparam"), "addr-spec form: the parameter is the header's");
    });
    rfc4475_3_3_13_register_with_url_parameter_cparam02: "rfc4475/cparam02.dat" => Accept(|m| {
        let c = m.contacts().next().unwrap().unwrap();
        assert!(c.parse_uri().unwrap().params.has("unknownparam"), "name-addr form: the URI's");
        assert!(!c.params.has("unknownparam"));
    });
    rfc4475_3_3_14_register_with_url_escaped_header_regescrt: "rfc4475/regescrt.dat" => Accept(|m| {
        let c = m.contacts().next().unwrap().unwrap();
        assert_eq!(c.parse_uri().unwrap().headers, Some("Route=%3Csip:sip.example.com%3E"));
    });
    rfc4475_3_3_15_unacceptable_accept_offering_sdp01: "rfc4475/sdp01.dat" => Accept(|m| {
        assert_eq!(m.get(HeaderName::Accept), Some("text/nobodyKnowsThis"));
    });
    // §3.4.1: RFC 2543 syntax (no branch cookie, no Max-Forwards, no Content-Length).
    rfc4475_3_4_1_invite_with_rfc2543_syntax_inv2543: "rfc4475/inv2543.dat" => Accept(|m| {
        assert_eq!(m.max_forwards(), None);
        assert_eq!(m.top_via().unwrap().unwrap().branch(), None);
        assert!(m.body().starts_with(b"v=0"));
        assert!(limes_sip::transaction::TxKey::server(m).is_some());
    });
    // In the archive but described by no section: a Request-Line without a version.
    rfc4475_archive_test_dat_request_line_without_version: "rfc4475/test.dat" => Reject(400, "no SIP version");
}

// RFC 5118: IPv6.
torture! {
    rfc5118_4_1_valid_ipv6_ipv6_good: "rfc5118/ipv6-good.dat" => Accept(|m| {
        assert_eq!(sip(m).host, "[2001:db8::10]");
        assert!(sip(m).host_ip().unwrap().is_ipv6());
    });
    rfc5118_4_2_invalid_ipv6_without_brackets_ipv6_bad: "rfc5118/ipv6-bad.dat" => Reject(400, "Malformed Request-URI");
    rfc5118_4_3_port_ambiguous: "rfc5118/port-ambiguous.dat" => Accept(|m| {
        assert_eq!((sip(m).host, sip(m).port), ("[2001:db8::10:5070]", None));
    });
    rfc5118_4_3_port_unambiguous: "rfc5118/port-unambiguous.dat" => Accept(|m| {
        assert_eq!((sip(m).host, sip(m).port), ("[2001:db8::10]", Some(5070)));
    });
    // The RFC calls this message valid, but its Content-Length (268) is larger than the
    // body it prints; on a datagram that is a 400 (RFC 3261 §18.3). The same message with
    // the length corrected is accepted: see `rfc5118_4_4_ipv6_in_sdp_length_corrected`.
    rfc5118_4_4_ipv6_in_sdp: "rfc5118/ipv6-in-sdp.dat" => Reject(400, "Content-Length larger than message");
    rfc5118_4_5_via_received_param_with_delimiters: "rfc5118/via-received-param-with-delim.dat" => Accept(|m| {
        assert_eq!(m.top_via().unwrap().unwrap().received(), "2001:db8::9:255".parse().ok());
    });
    rfc5118_4_5_via_received_param_without_delimiters: "rfc5118/via-received-param-no-delim.dat" => Accept(|m| {
        assert_eq!(m.top_via().unwrap().unwrap().received(), "2001:db8::9:255".parse().ok());
    });
    rfc5118_4_6_multiple_ip_addresses_in_header: "rfc5118/mult-ip-in-header.dat" => Accept(|m| {
        let hosts: Vec<_> = m.vias().map(|v| v.unwrap().host()).collect();
        assert_eq!(hosts, ["[2001:db8::9:1]", "192.0.2.1", "[2001:db8::9:255]"]);
        let vias: Vec<_> = m.vias().map(Result::unwrap).collect();
        assert_eq!(vias[0].port(), Some(6050));
        assert_eq!(vias[2].received(), "192.0.2.200".parse().ok());
    });
    rfc5118_4_7_multiple_ip_addresses_in_sdp: "rfc5118/mult-ip-in-sdp.dat" => Accept(|m| {
        assert!(!m.body().is_empty());
    });
    rfc5118_4_8_ipv4_mapped_ipv6: "rfc5118/ipv4-mapped-ipv6.dat" => Accept(|m| {
        assert!(String::from_utf8_lossy(&m.body()).contains("::ffff:192.0.2.2"));
    });
    rfc5118_4_9_abnf_bug_3_colons_refused: "rfc5118/ipv6-bug-abnf-3-colons.dat" => Reject(400, "malformed IPv6 reference");
    rfc5118_4_10_abnf_correct_2_colons: "rfc5118/ipv6-correct-abnf-2-colons.dat" => Accept(|m| {
        assert_eq!(sip(m).host_ip(), "2001:db8::192.0.2.1".parse().ok());
    });
}

#[test]
fn rfc5118_4_4_ipv6_in_sdp_length_corrected() {
    let raw = std::fs::read(format!(
        "{}/testdata/rfc5118/ipv6-in-sdp.dat",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let text = String::from_utf8(raw).unwrap();
    let body_len = text.len() - text.find("\r\n\r\n").unwrap() - 4;
    let fixed = text.replace(
        "Content-Length: 268",
        &format!("Content-Length: {body_len}"),
    );
    let m = Message::parse(Bytes::from(fixed), &Limits::default()).unwrap();
    assert_eq!(check_request(&m, &Policy::default()), Ok(()));
    assert_eq!(sip(&m).host, "[2001:db8::10]");
    assert_eq!(
        m.contacts()
            .next()
            .unwrap()
            .unwrap()
            .parse_uri()
            .unwrap()
            .host,
        "[2001:db8::20]"
    );
    assert!(String::from_utf8_lossy(&m.body()).contains("c=IN IP6 2001:db8::20"));
}

#[test]
fn every_vector_file_has_a_case() {
    let src = include_str!("torture.rs");
    for dir in ["rfc4475", "rfc5118"] {
        let path = format!("{}/testdata/{dir}", env!("CARGO_MANIFEST_DIR"));
        for entry in std::fs::read_dir(path).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            let quoted = format!("\"{dir}/{name}\"");
            assert!(src.contains(&quoted), "{dir}/{name} has no case");
        }
    }
    // `load` is the helper other tests use to read a vector.
    assert!(load("rfc4475/wsinv.dat").is_request());
}

/// The views a message keeps after their first parse (top Via, Request-URI, CSeq) are the
/// values a fresh parse of the same text gives, for every torture message that parses:
/// folded, IPv6, escaped and oddly spaced ones included. Read twice, they agree again.
#[test]
fn kept_views_equal_a_fresh_parse() {
    use limes_sip::cseq::CSeq;
    use limes_sip::uri::Uri;
    use limes_sip::via::Via;
    let mut checked = 0;
    for dir in ["rfc4475", "rfc5118"] {
        let base = format!("{}/testdata/{dir}", env!("CARGO_MANIFEST_DIR"));
        for entry in std::fs::read_dir(&base).unwrap() {
            let path = entry.unwrap().path();
            let Ok(msg) = Message::parse(
                Bytes::from(std::fs::read(&path).unwrap()),
                &Limits::default(),
            ) else {
                continue;
            };
            let name = path.display();
            for _ in 0..2 {
                let via = msg
                    .list(HeaderName::Via)
                    .next()
                    .map(|v| v.and_then(Via::parse));
                assert_eq!(msg.top_via(), via, "{name}");
                assert_eq!(
                    msg.request_uri(),
                    msg.request_uri_str().map(Uri::parse),
                    "{name}"
                );
                assert_eq!(
                    msg.cseq(),
                    msg.get(HeaderName::CSeq).map(CSeq::parse),
                    "{name}"
                );
                assert_eq!(
                    msg.vias().count(),
                    msg.list(HeaderName::Via).count(),
                    "{name}"
                );
            }
            checked += 1;
        }
    }
    assert!(checked > 50, "only {checked} messages parsed");
}

/// A body that is text is held with the head in one handle; one that is not UTF-8
/// (mpart01's second part, or any octets) is kept as it came: the message's bytes and
/// its body are the octets received either way.
#[test]
fn text_and_binary_bodies_are_kept_as_received() {
    let mpart = std::fs::read(format!(
        "{}/testdata/rfc4475/mpart01.dat",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let mut binary =
        b"MESSAGE sip:a@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKb1\r\n\
        Max-Forwards: 70\r\nFrom: <sip:b@example.com>;tag=1\r\nTo: <sip:a@example.com>\r\n\
        Call-ID: bin1\r\nCSeq: 1 MESSAGE\r\nContent-Type: application/octet-stream\r\n\
        Content-Length: 4\r\n\r\n"
            .to_vec();
    let head_len = binary.len();
    binary.extend_from_slice(&[0xff, 0x00, 0xc3, 0x28]);
    let mut text = binary[..head_len].to_vec();
    text.extend_from_slice(b"v=0\n");
    for bytes in [mpart, binary.clone(), text] {
        // A buffer of its own (a datagram) and one shared (a stream's frame).
        let shared = Bytes::from(bytes.clone());
        for buf in [Bytes::from(bytes.clone()), shared.clone()] {
            let m = Message::parse(buf, &Limits::default()).unwrap();
            assert_eq!(m.as_bytes().as_ref(), &bytes[..]);
            let cl: usize = m.get(HeaderName::ContentLength).unwrap().parse().unwrap();
            assert_eq!(m.body().as_ref(), &bytes[bytes.len() - cl..]);
            assert!(m.call_id().is_some());
        }
    }
    let m = Message::parse(Bytes::from(binary.clone()), &Limits::default()).unwrap();
    assert_eq!(m.body().as_ref(), &binary[head_len..]);
    assert_eq!(m.call_id(), Some("bin1"));
}
