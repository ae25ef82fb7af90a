use super::*;

const NOW: u64 = 1_800_000_000;

#[test]
fn schema_line_rules() {
    let t = parse("id(int,auto) name(string) note(string,null) q(double,null) \n").expect("parses");
    let cols: Vec<(&str, Type, bool, bool)> = t
        .columns
        .iter()
        .map(|c| (c.name.as_str(), c.ty, c.nullable, c.auto))
        .collect();
    assert_eq!(
        cols,
        [
            ("id", Type::Int, false, true),
            ("name", Type::String, false, false),
            ("note", Type::String, true, false),
            ("q", Type::Double, true, false),
        ]
    );
    // (schema, why it is refused)
    let bad = [
        ("id(integer)\n", "unknown type"),
        ("id(int,maybe)\n", "unknown flag"),
        ("id int\n", "no parentheses"),
        ("id(int\n", "unclosed"),
        ("\n", "no fields"),
        ("", "empty file"),
    ];
    for (schema, why) in bad {
        assert!(parse(schema).is_err(), "{why}: {schema:?}");
    }
}

#[test]
fn record_rules() {
    let text = "id(int) user(string) uri(string,null) q(double,null) \n\
                1:alice:sip\\:alice@example.com:0.5\n\
                2: bob ::\n\
                3:a\\\\b\\tc::\n\
                \n";
    let t = parse(text).expect("parses");
    assert_eq!(t.rows.len(), 3);
    assert_eq!(
        t.rows[0],
        vec![
            Some(Value::Int(1)),
            Some(Value::Str("alice".into())),
            Some(Value::Str("sip:alice@example.com".into())),
            Some(Value::Double(0.5)),
        ],
        "\\: is a colon inside a value"
    );
    assert_eq!(
        t.rows[1][1],
        Some(Value::Str(" bob ".into())),
        "spaces are part of the value"
    );
    assert_eq!(t.rows[1][2], None, "two colons in a row: null");
    assert_eq!(t.rows[1][3], None);
    assert_eq!(
        t.rows[2][1],
        Some(Value::Str("a\\b\tc".into())),
        "other escapes"
    );
    assert!(t.unterminated.is_none());
}

#[test]
fn the_last_record_needs_its_line_end() {
    let t = parse("id(int) user(string) \n1:alice\n2:bob").expect("parses");
    assert_eq!(
        t.rows.len(),
        1,
        "bob is not read, as db_text would not read it"
    );
    assert_eq!(t.unterminated.as_deref(), Some("2:bob"));
}

#[test]
fn bad_records_are_refused_with_their_line() {
    let cases = [
        ("id(int) user(string) \nx:alice\n", "not an int"),
        ("id(int) q(double) \n1:high\n", "not a double"),
        ("id(int) user(string) \n1:alice:extra\n", "fields"),
        ("id(int) n(int) \n1:\n", "null but not nullable"),
    ];
    for (text, why) in cases {
        let e = parse(text).expect_err(why);
        assert!(format!("{e:#}").contains(why), "{why}: {e:#}");
    }
}

#[test]
fn subscribers_with_passwords_ha1_and_attributes() {
    let text = "id(int,auto) username(string) domain(string) password(string,null) email_address(string,null) ha1(string,null) ha1b(string,null) language(string,null) \n\
                1:alice:example.com:secret:alice@example.com:::en\n\
                2:bob:example.com:::0123456789abcdef0123456789abcdef::\n\
                3:nobody:example.com:::::\n\
                \n";
    let mut report = Report::default();
    let subs = subscribers(&parse(text).expect("parses"), &mut report);
    assert_eq!(subs.len(), 2);
    let alice = &subs[0];
    assert_eq!(
        alice.ha1,
        limes_sip::digest::ha1(
            limes_sip::digest::Algorithm::Md5,
            "alice",
            "example.com",
            "secret"
        )
    );
    assert_eq!(alice.ha1_sha256.len(), 64, "both digests from a password");
    assert_eq!(
        alice.attrs.get("email").map(String::as_str),
        Some("alice@example.com")
    );
    assert_eq!(alice.attrs.get("language").map(String::as_str), Some("en"));
    assert_eq!(subs[1].ha1, "0123456789abcdef0123456789abcdef");
    assert!(
        subs[1].ha1_sha256.is_empty(),
        "an imported MD5 HA1 allows MD5 only"
    );
    assert_eq!(report.skipped.len(), 1, "{:?}", report.skipped);
}

#[test]
fn trusted_and_address_rows() {
    let trusted_text =
        "id(int,auto) src_ip(string) proto(string) from_pattern(string,null) tag(string,null) \n\
                        1:192.168.16.5:any::gateway\n\
                        2:10.0.0.0/8:udp:^sip\\:.*@pbx$:pbx\n\
                        3:192.0.2.1:tls::\n\
                        \n";
    let mut report = Report::default();
    let t = trusted(&parse(trusted_text).expect("parses"), &mut report);
    assert_eq!(t.len(), 2);
    assert_eq!(t[0].net.to_string(), "192.168.16.5/32");
    assert_eq!(t[0].tag.as_deref(), Some("gateway"));
    assert_eq!(t[1].from_pattern.as_deref(), Some("^sip:.*@pbx$"));
    assert_eq!(t[1].proto, Proto::Udp);
    assert_eq!(
        report.skipped.len(),
        1,
        "TLS is not spoken here: {:?}",
        report.skipped
    );

    let address_text =
        "id(int,auto) grp(int) ip_addr(string) mask(int) port(int) tag(string,null) \n\
                        1:200:198.51.100.7:24:5060:carrier-a\n\
                        2:200:2001:db8::1:64:0:\n\
                        \n";
    let parsed = parse(address_text);
    assert!(
        parsed.is_err(),
        "an unescaped IPv6 address splits into too many fields"
    );
    let address_text = address_text.replace("2001:db8::1", "2001\\:db8\\:\\:1");
    let a = addresses(&parse(&address_text).expect("parses"), &mut report);
    assert_eq!(a[0].net.to_string(), "198.51.100.0/24");
    assert_eq!((a[0].group, a[0].port), (200, 5060));
    assert_eq!(a[1].net.to_string(), "2001:db8::/64");
}

#[test]
fn location_rows() {
    let text = format!(
        "id(int,auto) username(string) domain(string,null) contact(string) received(string,null) path(string,null) expires(int) q(double) callid(string) cseq(int) user_agent(string) socket(string,null) methods(int,null) \n\
         1:3000::sip\\:3000@192.168.16.195::<sip\\:edge.example.net;lr>:{}:0.5:abc:42:SJphone:udp\\:192.168.16.5\\:5060:8159\n\
         2:3001:example.com:sip\\:3001@10.0.0.9\\:5060:sip\\:203.0.113.9\\:40000::-1:1:def:7:TAU-1::\n\
         3:3002::sip\\:3002@192.168.16.197:::{}:1:ghi:1:old::\n\
         4:3003::sip\\:3003@phone.example.net:::{}:1:jkl:1:named::\n\
         \n",
        NOW + 54,
        NOW - 1,
        NOW + 100
    );
    let mut report = Report::default();
    let rows = bindings(
        &parse(&text).expect("parses"),
        false,
        NOW,
        3600,
        &mut report,
    );
    assert_eq!(rows.len(), 2, "{:?}", report.skipped);
    let (aor, b) = &rows[0];
    assert_eq!(aor, "3000", "without use_domain the AoR is the user");
    assert_eq!(b.remaining(NOW), 54);
    assert_eq!(b.q, Some(500));
    assert_eq!(b.meta.received.to_string(), "192.168.16.195:5060");
    assert_eq!(b.meta.socket.to_string(), "192.168.16.5:5060");
    assert_eq!(b.meta.path, ["sip:edge.example.net;lr"]);
    assert_eq!((b.call_id.as_str(), b.cseq), ("abc", 42));
    let (_, b) = &rows[1];
    assert_eq!(
        b.meta.received.to_string(),
        "203.0.113.9:40000",
        "received wins (NAT)"
    );
    assert_eq!(
        b.remaining(NOW),
        3600,
        "expires -1/0: permanent, kept for max_expires"
    );
    assert_eq!(report.location_expired, 1);
    assert_eq!(
        report.skipped.len(),
        1,
        "a host name cannot be reached: {:?}",
        report.skipped
    );

    let rows = bindings(
        &parse(&text).expect("parses"),
        true,
        NOW,
        3600,
        &mut Report::default(),
    );
    assert_eq!(rows[1].0, "3001@example.com");
}

#[test]
fn datetimes_are_read_as_utc() {
    let text = "id(int) expires(string) \n1:2026-11-30 21\\:30\\:45\n\n";
    let t = parse(text).expect("parses");
    let r = t.records().next().expect("one row");
    assert_eq!(unix_time(&r, "expires"), Some(1_796_074_245));
}
