use proptest::prelude::*;

use super::*;

const NONCE_7616: &str = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
const CNONCE_7616: &str = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";
const REALM_7616: &str = "http-auth@example.org";

#[test]
fn rfc7616_3_9_1_md5_and_sha256_vectors() {
    for (alg, want) in [
        (Algorithm::Md5, "8ca523f5e9506fed4657c9700eebdbec"),
        (
            Algorithm::Sha256,
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
        ),
    ] {
        let h1 = ha1(alg, "Mufasa", REALM_7616, "Circle of Life");
        let a = Answer {
            nonce: NONCE_7616,
            cnonce: CNONCE_7616,
            nc: 1,
            qop: Some(Qop::Auth),
        };
        assert_eq!(
            response(alg, &h1, &a, "GET", "/dir/index.html", b""),
            want,
            "{alg:?}"
        );

        // The same figures through the header a client sends and the server reads.
        let header = format!(
            "Digest username=\"Mufasa\", realm=\"{REALM_7616}\", uri=\"/dir/index.html\", algorithm={}, \
             nonce=\"{NONCE_7616}\", nc=00000001, cnonce=\"{CNONCE_7616}\", qop=auth, response=\"{want}\", \
             opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\"",
            alg.as_str()
        );
        let creds = Credentials::parse(&header).unwrap();
        assert_eq!(creds.nc, Some(1));
        assert!(creds.verify("GET", &h1, b""));
        assert!(!creds.verify("POST", &h1, b""));
    }
}

#[test]
fn rfc2617_3_5_example() {
    let h1 = ha1(
        Algorithm::Md5,
        "Mufasa",
        "testrealm@host.com",
        "Circle Of Life",
    );
    let a = Answer {
        nonce: "dcd98b7102dd2f0e8b11d0f600bfb0c093",
        cnonce: "0a4f113b",
        nc: 1,
        qop: Some(Qop::Auth),
    };
    assert_eq!(
        response(Algorithm::Md5, &h1, &a, "GET", "/dir/index.html", b""),
        "6629fae49393a05397450978507c4ef1"
    );
}

#[test]
fn nc_is_hex_not_decimal() {
    let v = "Digest username=\"u\", realm=\"r\", nonce=\"n\", uri=\"sip:r\", response=\"x\", qop=auth, cnonce=\"c\", nc=0000000a";
    assert_eq!(Credentials::parse(v).unwrap().nc, Some(10));
    let bad = v.replace("nc=0000000a", "nc=12");
    assert_eq!(Credentials::parse(&bad), Err(DigestError("malformed nc")));
    let no_cnonce = v.replace(", cnonce=\"c\"", "");
    assert!(Credentials::parse(&no_cnonce).is_err());
}

#[test]
fn challenges_parse_and_pick_qop() {
    let c = Challenge::parse("Digest realm=\"atlanta.example.com\", qop=\"auth,auth-int\", nonce=\"ea9c8e88df84f1cec4341ae6cbe5a359\", opaque=\"\", stale=FALSE, algorithm=SHA-256").unwrap();
    assert_eq!(
        (c.realm, c.algorithm(), c.pick_qop(), c.stale),
        (
            "atlanta.example.com",
            Some(Algorithm::Sha256),
            Some(Qop::Auth),
            false
        )
    );
    let c =
        Challenge::parse("Digest realm=\"x\", nonce=\"1\", qop=\"auth-int\", stale=true").unwrap();
    assert_eq!(
        (c.pick_qop(), c.stale, c.algorithm()),
        (Some(Qop::AuthInt), true, Some(Algorithm::Md5))
    );
    assert!(Challenge::parse("Basic realm=\"x\"").is_err());
    assert!(Challenge::parse("Digest realm=\"x\"").is_err());
    let ours = challenge_value("r", "n", Algorithm::Sha256, true, Some("o"));
    let back = Challenge::parse(&ours).unwrap();
    assert_eq!(
        (
            back.realm,
            back.nonce,
            back.opaque,
            back.stale,
            back.algorithm()
        ),
        ("r", "n", Some("o"), true, Some(Algorithm::Sha256))
    );
}

#[test]
fn stateless_nonces() {
    let key = NonceKey::new(b"cluster secret", 300);
    let n = key.make(1_000_000, 7, "example.com");
    assert_ne!(
        n,
        key.make(1_000_000, 8, "example.com"),
        "the salt makes it unique"
    );
    assert_eq!(key.check(&n, 1_000_000, "example.com"), NonceStatus::Fresh);
    assert_eq!(key.check(&n, 1_000_300, "example.com"), NonceStatus::Fresh);
    assert_eq!(key.check(&n, 1_000_301, "example.com"), NonceStatus::Stale);
    assert_eq!(
        key.check(&n, 1_000_000, "other.example.com"),
        NonceStatus::Invalid
    );
    assert_eq!(
        NonceKey::new(b"another secret", 300).check(&n, 1_000_000, "example.com"),
        NonceStatus::Invalid
    );
    let mut tampered = n.clone().into_bytes();
    tampered[40] = if tampered[40] == b'0' { b'1' } else { b'0' };
    assert_eq!(
        key.check(
            &String::from_utf8(tampered).unwrap(),
            1_000_000,
            "example.com"
        ),
        NonceStatus::Invalid
    );
    assert_eq!(
        key.check(
            &key.make(2_000_000, 7, "example.com"),
            1_000_000,
            "example.com"
        ),
        NonceStatus::Invalid,
        "from the future"
    );
    for junk in ["", "short", "ü".repeat(32).as_str()] {
        assert_eq!(
            key.check(junk, 1_000_000, "example.com"),
            NonceStatus::Invalid
        );
    }
    assert_eq!(NonceKey::timestamp(&n), Some(1_000_000));
}

#[test]
fn replay_guard_refuses_old_counts_and_stays_bounded() {
    let key = NonceKey::new(b"k", 300);
    let (a, b, c) = (
        key.make(100, 1, "r"),
        key.make(101, 2, "r"),
        key.make(102, 3, "r"),
    );
    let mut g = ReplayGuard::new(2);
    assert_eq!(g.check(&a, 1, 7), Replay::New);
    assert_eq!(
        g.check(&a, 1, 7),
        Replay::Repeat,
        "the same request retransmitted"
    );
    assert_eq!(
        g.check(&a, 1, 8),
        Replay::Replayed,
        "count reused by another request"
    );
    assert_eq!(g.check(&a, 2, 8), Replay::New);
    assert_eq!(g.check(&a, 1, 7), Replay::Replayed, "older count");
    assert_eq!(g.check(&b, 1, 9), Replay::New);
    assert_eq!(g.check(&c, 1, 10), Replay::New);
    assert_eq!(g.len(), 2, "oldest nonce evicted");
    assert_eq!(
        g.check(&a, 3, 11),
        Replay::Forgotten,
        "an evicted nonce is never accepted again"
    );
    assert_eq!(g.check(&b, 1, 9), Replay::Repeat, "b is still tracked");
    assert_eq!(g.check("junk", 1, 1), Replay::Forgotten);
}

fn algorithm() -> impl Strategy<Value = Algorithm> {
    prop::sample::select(vec![
        Algorithm::Md5,
        Algorithm::Md5Sess,
        Algorithm::Sha256,
        Algorithm::Sha256Sess,
        Algorithm::Sha512_256,
        Algorithm::Sha512_256Sess,
    ])
}

proptest! {
    /// What `authorize` (client) writes, `Credentials::verify` (server) accepts with the
    /// right HA1 and refuses with a wrong one.
    #[test]
    fn client_and_server_agree(
        alg in algorithm(),
        qop in prop::sample::select(vec![None, Some("auth"), Some("auth-int"), Some("auth,auth-int")]),
        user in "[a-z0-9.+-]{1,16}",
        realm in "[a-z0-9.-]{1,20}",
        password in "[ -~&&[^\"\\\\]]{0,24}",
        method in "[A-Z]{3,9}",
        uri in "sip:[a-z0-9]{1,8}@[a-z0-9.]{1,12}",
        cnonce in "[a-zA-Z0-9]{8,16}",
        nc in 1u32..u32::MAX,
        body in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut chal = format!("Digest realm=\"{realm}\", nonce=\"n0nce\", algorithm={}", alg.as_str());
        if let Some(q) = qop {
            chal.push_str(&format!(", qop=\"{q}\""));
        }
        let challenge = Challenge::parse(&chal).unwrap();
        let creds = ClientCredentials { username: &user, password: Some(&password), ha1: None };
        let header = authorize(&challenge, &creds, &method, &uri, &cnonce, nc, &body).unwrap();
        let parsed = Credentials::parse(&header).unwrap();
        prop_assert_eq!(parsed.username, user.as_str());
        prop_assert_eq!(parsed.nc, qop.map(|_| nc));
        let stored = ha1(alg.base(), &user, &realm, &password);
        prop_assert!(parsed.verify(&method, &stored, &body));
        let wrong = ha1(alg.base(), &user, &realm, &format!("{password}x"));
        prop_assert!(!parsed.verify(&method, &wrong, &body));
        // The client can also answer from a stored HA1 and reach the same response.
        let by_ha1 = ClientCredentials { username: &user, password: None, ha1: Some(&stored) };
        prop_assert_eq!(authorize(&challenge, &by_ha1, &method, &uri, &cnonce, nc, &body).unwrap(), header);
    }
}
