//! The registrar and digest authentication, end to end: the real node, sipp as the
//! phones, raw UDP peers for the answers sipp cannot be asked to check.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use limes_sip::digest::{authorize, Challenge, ClientCredentials};
use support::{
    answer, answer_register, final_of, header, receive, register_authed, status, Node, Peer,
};

const DOMAIN: &str = "example.com";

struct Setup {
    node: Node,
    sip: String,
    port: u16,
    state: PathBuf,
    config: PathBuf,
}

/// A node on loopback with alice and bob as subscribers, 127.0.0.2 trusted, 127.0.0.4 in
/// address group 200 (a carrier) and `extra` appended to its configuration.
fn start(extra: &str) -> Setup {
    let port = support::ports();
    let state = std::env::temp_dir().join(format!("limes-reg-{port}"));
    let _ = std::fs::remove_dir_all(&state);
    std::fs::create_dir_all(&state).expect("state dir");
    let config = state.join("limes.toml");
    let text = format!(
        r#"
[[subscriber]]
user = "alice"
domain = "{DOMAIN}"
password = "alice-pw"
attrs = {{ email = "alice@example.com", language = "en" }}

[[subscriber]]
user = "bob"
domain = "{DOMAIN}"
password = "bob-pw"

[[trusted]]
cidr = "127.0.0.2/32"
tag = "pbx"

[[address]]
group = 200
cidr = "127.0.0.4/32"
tag = "carrier"
{extra}
"#
    );
    std::fs::write(&config, text).expect("config written");
    let node = spawn(&config, &state, port);
    Setup {
        node,
        sip: format!("127.0.0.1:{port}"),
        port,
        state,
        config,
    }
}

fn spawn(config: &std::path::Path, state: &std::path::Path, port: u16) -> Node {
    let admin = format!("127.0.0.1:{}", port + 1);
    let listen = format!("udp:127.0.0.1:{port}");
    let listen_tcp = format!("tcp:127.0.0.1:{port}");
    Node::spawn(
        &[
            "run",
            "--config",
            &config.display().to_string(),
            "--listen",
            &listen,
            "--listen",
            &listen_tcp,
            "--admin",
            &admin,
            "--state-dir",
            &state.display().to_string(),
        ],
        &admin,
    )
}

fn sipp_args<'a>(user: &'a str, password: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "-s", user, "-au", user, "-ap", password, "-key", "domain", DOMAIN, "-m", "1",
    ];
    v.extend_from_slice(extra);
    v
}

/// One sipp registration run (`scenario`) of `user` from `port`.
fn sipp_register(s: &Setup, scenario: &str, port: u16, user: &str, password: &str, expires: &str) {
    let args = sipp_args(user, password, &["-key", "expires", expires]);
    support::uac(scenario, &s.sip, port, &args);
}

fn contacts(node: &Node, aor: &str) -> Vec<serde_json::Value> {
    match node.rpc("ul.lookup", &[aor]) {
        Ok(v) => v["Contacts"].as_array().cloned().unwrap_or_default(),
        Err(_) => Vec::new(),
    }
}

fn register_text(user: &str, cseq: u32, headers: &str) -> String {
    format!(
        "REGISTER sip:{DOMAIN} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {{addr}};branch=z9hG4bK-{user}-{cseq};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:{user}@{DOMAIN}>;tag=r{cseq}\r\n\
         To: <sip:{user}@{DOMAIN}>\r\n\
         Call-ID: raw-{user}@test\r\n\
         CSeq: {cseq} REGISTER\r\n\
         {headers}\
         Content-Length: 0\r\n\r\n"
    )
}

fn invite_text(from_user: &str, to: &str, cseq: u32, headers: &str) -> String {
    format!(
        "INVITE {to} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {{addr}};branch=z9hG4bK-inv-{cseq}-{from_user};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:{from_user}@{DOMAIN}>;tag=i{cseq}\r\n\
         To: <{to}>\r\n\
         Call-ID: raw-invite-{from_user}@test\r\n\
         CSeq: {cseq} INVITE\r\n\
         Contact: <sip:{from_user}@{{addr}}>\r\n\
         {headers}\
         Content-Length: 0\r\n\r\n"
    )
}

#[test]
fn register_refresh_deregister_and_wildcard_with_sipp() {
    let s = start("");
    let node = &s.node;
    let phone = support::ports();
    let reg = |expires: &str, scenario: &str| {
        let args = sipp_args("alice", "alice-pw", &["-key", "expires", expires]);
        support::uac(scenario, &s.sip, phone, &args);
    };

    reg("600", "reg_uac.xml");
    let c = contacts(node, "alice");
    assert_eq!(c.len(), 1, "one binding: {c:?}");
    let contact = &c[0]["Contact"];
    assert_eq!(
        contact["Address"],
        format!("sip:alice@127.0.0.1:{phone};transport=UDP")
    );
    let expires = contact["Expires"].as_u64().unwrap_or(0);
    assert!((595..=600).contains(&expires), "Expires {expires}");
    assert_eq!(contact["User-Agent"], "sipp-limes-test");
    assert_eq!(contact["Received"], format!("sip:127.0.0.1:{phone}"));
    assert_eq!(contact["Socket"], format!("udp:127.0.0.1:{}", s.port));
    assert_eq!(
        node.metric("limes_auth_challenges_total{status=\"401\"}"),
        1.0
    );
    assert_eq!(node.metric("limes_registrar_contacts"), 1.0);
    assert_eq!(node.metric("limes_registrar_aors"), 1.0);

    reg("1800", "reg_uac.xml");
    let c = contacts(node, "alice");
    assert_eq!(c.len(), 1, "a refresh replaces: {c:?}");
    assert!(c[0]["Contact"]["Expires"].as_u64().unwrap_or(0) > 1790);

    reg("0", "reg_uac.xml");
    assert!(contacts(node, "alice").is_empty(), "de-registered");
    assert_eq!(node.metric("limes_registrar_contacts"), 0.0);

    reg("600", "reg_uac.xml");
    // A second binding from another device.
    let other = support::ports();
    sipp_register(&s, "reg_uac.xml", other, "alice", "alice-pw", "600");
    assert_eq!(contacts(node, "alice").len(), 2);
    support::uac(
        "reg_wildcard_uac.xml",
        &s.sip,
        phone,
        &sipp_args("alice", "alice-pw", &[]),
    );
    assert!(
        contacts(node, "alice").is_empty(),
        "Contact: * removed both"
    );
    assert!(node.metric("limes_registrar_registrations_total{result=\"removed\"}") >= 2.0);
}

#[test]
fn unknown_user_and_wrong_password_get_403_and_repeated_failures_block_the_source() {
    let s = start("");
    let node = &s.node;
    let phone = support::ports();
    sipp_register(&s, "reg_refused_uac.xml", phone, "mallory", "guess", "600");
    sipp_register(&s, "reg_refused_uac.xml", phone, "alice", "wrong", "600");
    assert_eq!(
        node.metric("limes_auth_failures_total{reason=\"unknown_user\"}"),
        1.0
    );
    assert_eq!(
        node.metric("limes_auth_failures_total{reason=\"wrong_password\"}"),
        1.0
    );

    // From one address, wrong passwords until the source is blocked (10 by default).
    let attacker = Peer::bind("127.0.0.5");
    let mut last = String::new();
    for cseq in 1..=12u32 {
        let challenge = attacker.exchange(
            &s.sip,
            &register_text("bob", cseq * 2, ""),
            Duration::from_secs(2),
        );
        if challenge.is_empty() {
            last = "dropped".into();
            break;
        }
        let www = header(final_of(&challenge), "WWW-Authenticate");
        let c = Challenge::parse(www[0]).expect("challenge parses");
        let auth = answer_register(&c, ("bob", "nope"), DOMAIN, 1);
        let answer = attacker.exchange(
            &s.sip,
            &register_text(
                "bob",
                cseq * 2 + 1,
                &format!("Authorization: {auth}\r\nContact: <sip:bob@{{addr}}>\r\n"),
            ),
            Duration::from_secs(2),
        );
        last = answer.last().cloned().unwrap_or_else(|| "dropped".into());
    }
    assert_eq!(
        last, "dropped",
        "the source is blocked and its requests dropped"
    );
    assert_eq!(node.metric("limes_auth_blocks_total"), 1.0);
    assert_eq!(node.metric("limes_auth_blocked_sources"), 1.0);
    let blocked = node.rpc("auth.blocked", &[]).expect("auth.blocked");
    assert_eq!(blocked[0]["source"], "127.0.0.5");
    // Others are not affected.
    let good = Peer::bind("127.0.0.6");
    let r = good.exchange(&s.sip, &register_text("bob", 1, ""), Duration::from_secs(2));
    assert_eq!(status(final_of(&r)), 401);
    node.rpc("auth.unblock", &["127.0.0.5"]).expect("unblocks");
    let r = attacker.exchange(
        &s.sip,
        &register_text("bob", 99, ""),
        Duration::from_secs(2),
    );
    assert_eq!(status(final_of(&r)), 401, "unblocked");
}

#[test]
fn invite_is_challenged_then_reaches_the_registered_phone() {
    let s = start("");
    let node = &s.node;
    let bob_port = support::ports();
    sipp_register(&s, "reg_uac.xml", bob_port, "bob", "bob-pw", "600");
    let _bob = support::uas("call_uas.xml", bob_port, &[]);
    let caller = support::ports();
    let out = support::uac(
        "invite_auth_uac.xml",
        &s.sip,
        caller,
        &sipp_args(
            "bob",
            "alice-pw",
            &[
                "-au", "alice", "-key", "caller", "alice", "-m", "3", "-d", "200",
            ],
        ),
    );
    assert_eq!(support::successful_calls(&out), 3);
    assert_eq!(
        node.metric("limes_auth_challenges_total{status=\"407\"}"),
        3.0
    );
    assert!(node.metric("limes_auth_successes_total") >= 4.0);

    // The trusted PBX is not challenged: its INVITE goes straight to bob.
    let pbx = Peer::bind("127.0.0.2");
    let r = pbx.exchange(
        &s.sip,
        &invite_text("pbx", &format!("sip:bob@{DOMAIN}"), 1, ""),
        Duration::from_secs(3),
    );
    assert_eq!(status(&r[0]), 100);
    assert_eq!(status(final_of(&r)), 200, "bob's sipp answered: {r:?}");
    // An unknown source is challenged, with the realm of its From domain.
    let stranger = Peer::bind("127.0.0.3");
    let r = stranger.exchange(
        &s.sip,
        &invite_text("eve", &format!("sip:bob@{DOMAIN}"), 1, ""),
        Duration::from_secs(2),
    );
    let challenge = final_of(&r);
    assert_eq!(status(challenge), 407);
    assert!(header(challenge, "Proxy-Authenticate")[0].contains("realm=\"example.com\""));
}

#[test]
fn unregistered_aors_get_404_and_subscribers_reach_the_next_hop() {
    // A next hop that is never reached by the carrier's or the PBX's calls.
    let gateway = Peer::bind("127.0.0.1");
    let hop = format!("[sip]\nnext_hop = [\"sip:{}\"]\n", gateway.addr());
    let s = start(&hop);
    for (from_ip, who) in [
        ("127.0.0.4", "the carrier"),
        ("127.0.0.1", "the gateway itself"),
    ] {
        let peer = if from_ip == "127.0.0.1" {
            &gateway
        } else {
            &Peer::bind(from_ip)
        };
        let r = peer.exchange(
            &s.sip,
            &invite_text("carrier", &format!("sip:nobody@{DOMAIN}"), 1, ""),
            Duration::from_secs(2),
        );
        let last = final_of(&r);
        assert_eq!(status(last), 404, "{who}: {r:?}");
        assert!(
            last.starts_with("SIP/2.0 404 User Not Registered"),
            "{who}: {last}"
        );
    }
    // The trusted PBX's call to an unregistered number goes out through the gateway.
    let pbx = Peer::bind("127.0.0.2");
    let r = pbx.exchange(
        &s.sip,
        &invite_text("pbx", "sip:+4930123456@example.com", 1, ""),
        Duration::from_millis(500),
    );
    assert_eq!(status(&r[0]), 100);
    let mut buf = vec![0u8; 65536];
    gateway
        .sock
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let n = gateway
        .sock
        .recv(&mut buf)
        .expect("the gateway gets the INVITE");
    let got = String::from_utf8_lossy(&buf[..n]);
    assert!(
        got.starts_with("INVITE sip:+4930123456@example.com SIP/2.0"),
        "{got}"
    );
}

#[test]
fn registrar_rules_on_the_wire() {
    let s = start(&format!(
        "[registrar]\nmax_contacts = 2\n{}",
        subscriber("carol", "carol-pw")
    ));
    // Trusted, and still challenged: trust by address never covers REGISTER.
    let pbx = Peer::bind("127.0.0.2");
    let ask = |cseq: u32, headers: &str| {
        register_authed(
            &pbx,
            &s.sip,
            DOMAIN,
            ("carol", "carol-pw"),
            cseq,
            &register_text("carol", cseq, headers),
        )
    };
    let r = ask(1, "Contact: <sip:carol@192.0.2.1>;expires=30\r\n");
    assert_eq!(status(final_of(&r)), 423);
    assert_eq!(header(final_of(&r), "Min-Expires"), ["60"]);

    let r = ask(
        2,
        "Contact: <sip:carol@192.0.2.1>;q=0.5, <sip:carol@192.0.2.2>;q=1\r\nExpires: 120\r\n",
    );
    let ok = final_of(&r);
    assert_eq!(status(ok), 200);
    let mut listed = header(ok, "Contact");
    listed.sort_unstable();
    assert_eq!(
        listed,
        [
            "<sip:carol@192.0.2.1>;expires=120;q=0.5",
            "<sip:carol@192.0.2.2>;expires=120;q=1"
        ]
    );
    assert_eq!(header(ok, "Date").len(), 1);

    let r = ask(3, "Contact: <sip:carol@192.0.2.3>\r\n");
    assert_eq!(
        status(final_of(&r)),
        403,
        "a third contact is over max_contacts"
    );
    let r = ask(2, "Contact: <sip:carol@192.0.2.1>;expires=0\r\n");
    assert_eq!(
        status(final_of(&r)),
        200,
        "the same CSeq again: a retransmission, no change"
    );
    assert_eq!(contacts(&s.node, "carol").len(), 2);
    let r = ask(1, "Contact: <sip:carol@192.0.2.1>;expires=0\r\n");
    assert_eq!(status(final_of(&r)), 400, "an older CSeq is refused");
    let r = ask(4, "");
    assert_eq!(
        header(final_of(&r), "Contact").len(),
        2,
        "a fetch lists the bindings"
    );
    let r = ask(5, "Contact: *\r\nExpires: 60\r\n");
    assert_eq!(status(final_of(&r)), 400, "a wildcard needs Expires 0");
    let r = ask(
        6,
        "Contact: <sip:carol@192.0.2.4>\r\nPath: <sip:edge.example.net;lr>\r\nSupported: path\r\n",
    );
    assert_eq!(status(final_of(&r)), 403, "still two at most");
    let r = ask(7, "Contact: *\r\nExpires: 0\r\n");
    assert_eq!(status(final_of(&r)), 200);
    let r = ask(
        8,
        "Contact: <sip:carol@192.0.2.4>\r\nPath: <sip:127.0.0.1:9;lr>\r\nSupported: path\r\n",
    );
    assert_eq!(
        header(final_of(&r), "Path"),
        ["sip:127.0.0.1:9;lr"],
        "Path echoed"
    );
    let c = contacts(&s.node, "carol");
    assert_eq!(c[0]["Contact"]["Path"], "sip:127.0.0.1:9;lr");
}

#[test]
fn subscribers_change_live_over_json_rpc() {
    let s = start("");
    let node = &s.node;
    let phone = support::ports();
    node.rpc(
        "subscriber.add",
        &[
            "carol@example.com",
            "carol-pw",
            "language=de",
            "call_limit=2",
        ],
    )
    .expect("added");
    let shown = node
        .rpc("subscriber.show", &["carol@example.com"])
        .expect("shown");
    assert_eq!(shown["attrs"]["language"], "de");
    assert_eq!(shown["call_limit"], 2);
    assert!(
        !shown.to_string().contains("carol-pw"),
        "the password is never shown"
    );
    sipp_register(&s, "reg_uac.xml", phone, "carol", "carol-pw", "600");
    assert_eq!(contacts(node, "carol").len(), 1, "registered at once");

    node.rpc("subscriber.rm", &["carol@example.com"])
        .expect("removed");
    sipp_register(&s, "reg_refused_uac.xml", phone, "carol", "carol-pw", "600");
    assert!(node.rpc("subscriber.rm", &["carol@example.com"]).is_err());

    // Trusted peers live too: 127.0.0.7 is challenged, then trusted, then not again.
    let peer = Peer::bind("127.0.0.7");
    let call = |cseq| {
        let r = peer.exchange(
            &s.sip,
            &invite_text("x", &format!("sip:nobody@{DOMAIN}"), cseq, ""),
            Duration::from_secs(2),
        );
        status(final_of(&r))
    };
    assert_eq!(call(1), 407);
    node.rpc("trusted.add", &["127.0.0.7/32", "udp", "", "lab"])
        .expect("trusted");
    assert_eq!(
        call(2),
        404,
        "no longer challenged (and nobody is registered)"
    );
    let dump = node.rpc("permissions.trustedDump", &[]).expect("dump");
    assert!(dump.to_string().contains("127.0.0.7/32"));
    node.rpc("trusted.rm", &["127.0.0.7/32"]).expect("removed");
    assert_eq!(call(3), 407);

    // The configuration file is read again on core.reload (and SIGHUP).
    let text = std::fs::read_to_string(&s.config).expect("config");
    std::fs::write(
        &s.config,
        format!("{text}\n[[subscriber]]\nuser = \"dave\"\ndomain = \"{DOMAIN}\"\npassword = \"dave-pw\"\n"),
    )
    .expect("config rewritten");
    let answer = node.rpc("core.reload", &[]).expect("reloads");
    assert_eq!(answer["config_entries"]["subscribers"], 3);
    assert!(node.rpc("subscriber.show", &["dave@example.com"]).is_ok());
    // SIGHUP does the same: dave's lines go, and so does dave.
    std::fs::write(&s.config, &text).expect("config restored");
    let _ = std::process::Command::new("kill")
        .args(["-HUP", &node.pid().to_string()])
        .status();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while node.rpc("subscriber.show", &["dave@example.com"]).is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "SIGHUP reloaded the file"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(node.rpc("subscriber.show", &["alice@example.com"]).is_ok());
}

#[test]
fn sha256_digest_registration() {
    // The node offers MD5 alone by default; a subscriber given its own list gets SHA-256
    // first, then MD5 (RFC 8760 §2.4): a client answering either registers.
    let s = start("");
    let mut cfg = std::fs::read_to_string(&s.config).expect("config");
    cfg = cfg.replace(
        "password = \"alice-pw\"\n",
        "password = \"alice-pw\"\nalgorithms = [\"SHA-256\", \"MD5\"]\n",
    );
    drop(s.node);
    std::fs::write(&s.config, cfg).expect("config");
    let node = spawn(&s.config, &s.state, s.port);
    let phone = Peer::bind("127.0.0.1");
    let r = phone.exchange(
        &s.sip,
        &register_text("alice", 1, "Contact: <sip:alice@{addr}>\r\n"),
        Duration::from_secs(2),
    );
    let challenge = final_of(&r);
    let offered = header(challenge, "WWW-Authenticate");
    assert_eq!(offered.len(), 2, "{challenge}");
    assert!(offered[0].contains("algorithm=SHA-256"));
    assert!(offered[1].contains("algorithm=MD5"));
    for (i, offer) in offered.iter().enumerate() {
        let c = Challenge::parse(offer).expect("parses");
        // Both challenges carry the same nonce: the second answer counts on (nc 2).
        let auth = answer_register(&c, ("alice", "alice-pw"), DOMAIN, 1 + i as u32);
        let cseq = 2 + i as u32;
        let headers = format!("Authorization: {auth}\r\nContact: <sip:alice@{{addr}}>\r\n");
        let r = phone.exchange(
            &s.sip,
            &register_text("alice", cseq, &headers),
            Duration::from_secs(2),
        );
        assert_eq!(
            status(final_of(&r)),
            200,
            "{}: {r:?}",
            c.algorithm().map_or("?", |a| a.as_str())
        );
        // The same answer again from the same request (a retransmission) still passes;
        // under another CSeq it is a replay.
        let again = phone.exchange(
            &s.sip,
            &register_text("alice", cseq, &headers),
            Duration::from_secs(2),
        );
        assert_eq!(status(final_of(&again)), 200);
        let replay = phone.exchange(
            &s.sip,
            &register_text("alice", cseq + 10, &headers),
            Duration::from_secs(2),
        );
        let replay = final_of(&replay);
        assert_eq!(status(replay), 401, "replayed nc");
        assert!(header(replay, "WWW-Authenticate")[0].contains("stale=true"));
    }
    assert_eq!(
        node.metric("limes_auth_failures_total{reason=\"replay\"}"),
        2.0
    );
    // Anyone else is offered MD5 alone (the default): sipp and baresip 1.0 answer only a
    // first challenge of MD5, or refuse a response that offers anything else.
    let r = phone.exchange(
        &s.sip,
        &register_text("bob", 1, "Contact: <sip:bob@{addr}>\r\n"),
        Duration::from_secs(2),
    );
    let offered = header(final_of(&r), "WWW-Authenticate");
    assert_eq!(offered.len(), 1, "{r:?}");
    assert!(offered[0].contains("algorithm=MD5"));
}

#[test]
fn a_phone_on_tcp_is_reached_over_its_own_connection() {
    use std::io::{Read, Write};
    let s = start("");
    let mut phone = std::net::TcpStream::connect(&s.sip).expect("connects");
    phone
        .set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    let me = phone.local_addr().expect("bound").to_string();
    let read = |phone: &mut std::net::TcpStream| {
        let mut buf = vec![0u8; 8192];
        let n = phone.read(&mut buf).unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    // The Contact names a port nobody listens on (a phone behind NAT): only the
    // connection the REGISTER came on reaches it.
    let register = |cseq: u32, auth: &str| {
        format!(
            "REGISTER sip:{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/TCP {me};branch=z9hG4bK-tcp-{cseq}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:bob@{DOMAIN}>;tag=t1\r\nTo: <sip:bob@{DOMAIN}>\r\n\
             Call-ID: tcp-phone@test\r\nCSeq: {cseq} REGISTER\r\n{auth}\
             Contact: <sip:bob@127.0.0.1:9;transport=tcp>\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n"
        )
    };
    phone.write_all(register(1, "").as_bytes()).expect("sends");
    let challenge = read(&mut phone);
    assert_eq!(status(&challenge), 401, "{challenge}");
    let c = Challenge::parse(header(&challenge, "WWW-Authenticate")[0]).expect("parses");
    let auth = answer_register(&c, ("bob", "bob-pw"), DOMAIN, 1);
    phone
        .write_all(register(2, &format!("Authorization: {auth}\r\n")).as_bytes())
        .expect("sends");
    let ok = read(&mut phone);
    assert_eq!(status(&ok), 200, "{ok}");
    let flow = &contacts(&s.node, "bob")[0]["Contact"]["Flow"];
    assert_eq!(flow["transport"], "tcp");
    assert_eq!(flow["remote"], me);

    let pbx = Peer::bind("127.0.0.2");
    pbx.sock
        .send_to(
            invite_text("pbx", &format!("sip:bob@{DOMAIN}"), 1, "")
                .replace("{addr}", &pbx.addr().to_string())
                .as_bytes(),
            &s.sip,
        )
        .expect("sends");
    let invite = read(&mut phone);
    assert!(
        invite.starts_with("INVITE sip:bob@127.0.0.1:9;transport=tcp SIP/2.0"),
        "the INVITE came over the registered connection: {invite}"
    );
    assert!(invite.contains("Via: SIP/2.0/TCP"), "{invite}");
}

/// A `[[subscriber]]` entry of the test domain.
fn subscriber(user: &str, password: &str) -> String {
    format!(
        "\n[[subscriber]]\nuser = \"{user}\"\ndomain = \"{DOMAIN}\"\npassword = \"{password}\"\n"
    )
}

/// The one way past REGISTER's challenge: a register rule naming an address group (and
/// tag) and the AoRs, for a PBX registering its own users. Its users' REGISTERs are
/// accepted unchallenged and counted under the rule; an AoR it was not given, or the same
/// AoR from a carrier's address, is challenged and no binding is added.
#[test]
fn a_register_rule_lets_a_pbx_register_its_own_users() {
    let s = start(
        r#"
[[address]]
group = 400
cidr = "127.0.0.9/32"
tag = "pbx"

[[route]]
name = "pbx-users"
source = "group:400:pbx"
method = ["REGISTER"]
user = "prefix:55"
action = "register"
"#,
    );
    let pbx = Peer::bind("127.0.0.9");
    let r = pbx.exchange(
        &s.sip,
        &register_text("5501", 1, "Contact: <sip:5501@{addr}>\r\n"),
        Duration::from_secs(2),
    );
    assert_eq!(status(final_of(&r)), 200, "{r:?}");
    assert_eq!(contacts(&s.node, "5501").len(), 1);
    assert_eq!(
        s.node
            .metric("limes_route_decisions_total{rule=\"pbx-users\",action=\"register\"}"),
        1.0
    );
    let pbx = Peer::bind("127.0.0.9");
    let r = pbx.exchange(
        &s.sip,
        &register_text("alice", 2, "Contact: <sip:alice@{addr}>\r\n"),
        Duration::from_secs(2),
    );
    assert_eq!(
        status(final_of(&r)),
        401,
        "an AoR the rule does not name: {r:?}"
    );
    let carrier = Peer::bind("127.0.0.4");
    let r = carrier.exchange(
        &s.sip,
        &register_text("5502", 3, "Contact: <sip:5502@{addr}>\r\n"),
        Duration::from_secs(2),
    );
    assert_eq!(status(final_of(&r)), 401, "another group: {r:?}");
    assert!(contacts(&s.node, "alice").is_empty());
    assert!(contacts(&s.node, "5502").is_empty());
}

/// DESIGN principle 10: a REGISTER for a subscriber's AoR from a trusted address and from
/// a carrier's address is challenged like any other, and without credentials the
/// subscriber's bindings stay as they were (before, both were answered 200 and the
/// sender's Contact joined alice's bindings: her calls would have forked to it).
#[test]
fn trust_by_address_never_covers_register() {
    let s = start("");
    for source in ["127.0.0.2", "127.0.0.4"] {
        let spoofer = Peer::bind(source);
        let r = spoofer.exchange(
            &s.sip,
            &register_text("alice", 1, "Contact: <sip:alice@{addr}>\r\n"),
            Duration::from_secs(2),
        );
        assert_eq!(status(final_of(&r)), 401, "{source}: {r:?}");
        assert!(
            contacts(&s.node, "alice").is_empty(),
            "{source}: no binding added"
        );
    }
}

#[test]
fn lower_q_bindings_are_tried_only_after_higher_ones_fail() {
    let s = start(&subscriber("dave", "dave-pw"));
    // Two phones of dave's: the desk phone with q=1, the mobile with q=0.5.
    let desk = Peer::bind("127.0.0.2");
    let mobile = Peer::bind("127.0.0.2");
    for (i, (phone, q)) in [(&desk, "1.0"), (&mobile, "0.5")].into_iter().enumerate() {
        let text = register_text(
            "dave",
            i as u32 + 1,
            &format!("Contact: <sip:dave@{{addr}}>;q={q}\r\nCall-ID: dave-{i}\r\n"),
        )
        .replacen("Call-ID: raw-dave@test\r\n", "", 1)
        .replace("{addr}", &phone.addr().to_string());
        let r = register_authed(
            phone,
            &s.sip,
            DOMAIN,
            ("dave", "dave-pw"),
            i as u32 + 1,
            &text,
        );
        assert_eq!(status(final_of(&r)), 200, "{r:?}");
    }
    let caller = Peer::bind("127.0.0.2");
    caller
        .sock
        .send_to(
            invite_text("pbx", &format!("sip:dave@{DOMAIN}"), 1, "")
                .replace("{addr}", &caller.addr().to_string())
                .as_bytes(),
            &s.sip,
        )
        .expect("sends");
    let first = receive(&desk, Duration::from_secs(2)).expect("the desk phone rings first");
    assert!(first.starts_with("INVITE "), "{first}");
    assert!(
        receive(&mobile, Duration::from_millis(300)).is_none(),
        "the mobile waits while the desk phone is tried"
    );
    desk.sock
        .send_to(answer(&first, 486, "Busy Here").as_bytes(), &s.sip)
        .expect("sends");
    let ack = receive(&desk, Duration::from_secs(2)).expect("the 486 is acknowledged");
    assert!(ack.starts_with("ACK "), "{ack}");
    let second = receive(&mobile, Duration::from_secs(2)).expect("then the mobile rings");
    assert!(second.starts_with("INVITE "), "{second}");
    mobile
        .sock
        .send_to(answer(&second, 200, "OK").as_bytes(), &s.sip)
        .expect("sends");
    let mut got = Vec::new();
    while let Some(r) = receive(&caller, Duration::from_secs(2)) {
        let st = status(&r);
        got.push(st);
        if st >= 200 {
            break;
        }
    }
    assert_eq!(
        got.last(),
        Some(&200),
        "the caller gets the mobile's 200: {got:?}"
    );
    assert!(
        !got.contains(&486),
        "the busy desk phone's answer is not passed up"
    );
}

#[test]
fn next_hops_change_on_reload() {
    let s = start("");
    let pbx = Peer::bind("127.0.0.2");
    let call = |cseq: u32| {
        pbx.exchange(
            &s.sip,
            &invite_text("pbx", "sip:+4930123456@example.com", cseq, ""),
            Duration::from_millis(500),
        )
    };
    assert_eq!(status(final_of(&call(1))), 404, "no next hop yet");
    let gateway = Peer::bind("127.0.0.1");
    let text = std::fs::read_to_string(&s.config).expect("config");
    std::fs::write(
        &s.config,
        format!("[sip]\nnext_hop = [\"sip:{}\"]\n{text}", gateway.addr()),
    )
    .expect("config rewritten");
    let answer = s.node.rpc("core.reload", &[]).expect("reloads");
    assert_eq!(answer["config_entries"]["next_hops"], 1);
    assert_eq!(status(&call(2)[0]), 100);
    let got = receive(&gateway, Duration::from_secs(2)).expect("the new gateway gets the call");
    assert!(
        got.starts_with("INVITE sip:+4930123456@example.com"),
        "{got}"
    );
}

/// The INVITE `peer` sends after answering the 407 of `text` as `user`.
fn invite_authed(
    peer: &Peer,
    s: &Setup,
    (user, password): (&str, &str),
    text: &str,
) -> Vec<String> {
    let challenge = peer.exchange(&s.sip, text, Duration::from_secs(2));
    assert_eq!(status(final_of(&challenge)), 407, "{challenge:?}");
    let c = Challenge::parse(header(final_of(&challenge), "Proxy-Authenticate")[0])
        .expect("challenge parses");
    let uri = text.split(' ').nth(1).expect("request URI");
    let creds = ClientCredentials {
        username: user,
        password: Some(password),
        ha1: None,
    };
    let auth = authorize(&c, &creds, "INVITE", uri, "cn", 1, b"").expect("answerable");
    let with_auth = text
        .replacen("CSeq: 1 ", "CSeq: 2 ", 1)
        .replacen("branch=z9hG4bK-", "branch=z9hG4bK-a-", 1)
        .replacen(
            "Content-Length: 0\r\n",
            &format!("Proxy-Authorization: {auth}\r\nContent-Length: 0\r\n"),
            1,
        );
    peer.exchange(&s.sip, &with_auth, Duration::from_millis(300))
}

/// Address groups, a carrier trunk and routing rules end to end: carrier A (group 200,
/// 127.0.0.4) reaches registered users and gets 404 User not Registered for anyone else;
/// carrier B (group 300, 127.0.0.5) is matched only by group 300's rule; a subscriber
/// (127.0.0.3) is challenged, then its call to an unregistered national number goes out
/// through the carrier's trunk as E.164 with the host rewritten and P-Asserted-Identity
/// removed, failing over from a 503 to the second destination, never past a 486; an
/// address added over JSON-RPC counts on the next INVITE and stops counting once removed.
#[test]
fn carriers_subscribers_and_a_trunk_by_the_routing_rules() {
    let gw1 = Peer::bind("127.0.0.6");
    let gw2 = Peer::bind("127.0.0.7");
    let phone = Peer::bind("127.0.0.8");
    let s = start(&format!(
        r#"
[[address]]
group = 300
cidr = "127.0.0.5/32"
tag = "carrier-b"

[[address_group]]
group = 300
name = "carrier-b"

[[trunk]]
name = "carrier"
group = 200
e164_country = "49"
host = "carrier.example.net"
remove_headers = ["P-Asserted-Identity"]
ping_interval_s = 0
destinations = [{{ uri = "sip:{}", priority = 1 }}, {{ uri = "sip:{}", priority = 2 }}]

[[route]]
name = "carrier-a-to-user"
source = "group:200"
registered = true
action = "location"

[[route]]
name = "carrier-a-to-nobody"
source = "group:200"
action = "reply:404 User not Registered"

[[route]]
name = "carrier-b"
source = "group:carrier-b"        # group 300 by its name
action = "reply:403 Carrier B calls nobody here"

[[route]]
name = "user"
source = "subscriber"
registered = true
action = "location"

[[route]]
name = "out"
source = "subscriber"
action = "trunk:carrier"
"#,
        gw1.addr(),
        gw2.addr()
    ));
    s.node
        .rpc("ul.add", &["bob", &format!("sip:bob@{}", phone.addr())])
        .expect("bob's phone");
    let carrier_a = Peer::bind("127.0.0.4");
    let carrier_b = Peer::bind("127.0.0.5");
    let subscriber = Peer::bind("127.0.0.3");

    // Carrier A -> registered bob: delivered to his phone, no challenge.
    let r = carrier_a.exchange(
        &s.sip,
        &invite_text("carrier", &format!("sip:bob@{DOMAIN}"), 1, ""),
        Duration::from_millis(300),
    );
    assert_eq!(status(&r[0]), 100, "{r:?}");
    let got = receive(&phone, Duration::from_secs(2)).expect("bob's phone rings");
    assert!(
        got.starts_with(&format!("INVITE sip:bob@{}", phone.addr())),
        "{got}"
    );
    phone
        .sock
        .send_to(answer(&got, 486, "Busy Here").as_bytes(), &s.sip)
        .expect("bob is busy");
    // Carrier A -> nobody: 404 with the seed's reason.
    let r = Peer::bind("127.0.0.4").exchange(
        &s.sip,
        &invite_text("carrier", &format!("sip:nobody@{DOMAIN}"), 2, ""),
        Duration::from_secs(2),
    );
    assert!(
        final_of(&r).starts_with("SIP/2.0 404 User not Registered"),
        "{r:?}"
    );
    // Carrier B -> registered bob: group 300's rule, not group 200's.
    let r = carrier_b.exchange(
        &s.sip,
        &invite_text("carrier-b", &format!("sip:bob@{DOMAIN}"), 1, ""),
        Duration::from_secs(2),
    );
    assert!(
        final_of(&r).starts_with("SIP/2.0 403 Carrier B calls nobody here"),
        "{r:?}"
    );
    let reached = std::iter::from_fn(|| receive(&phone, Duration::from_millis(300)))
        .find(|m| m.contains("raw-invite-carrier-b"));
    assert!(reached.is_none(), "bob's phone never sees carrier B's call");

    // A subscriber's call to a national number: 407, then out through the trunk.
    let call = |cseq_tag: &str| {
        invite_text(
            &format!("alice-{cseq_tag}"),
            &format!("sip:030123456@{DOMAIN}"),
            1,
            "P-Asserted-Identity: <sip:alice@example.com>\r\n",
        )
        .replace(
            &format!("alice-{cseq_tag}@{DOMAIN}>"),
            &format!("alice@{DOMAIN}>"),
        )
    };
    let r = invite_authed(&subscriber, &s, ("alice", "alice-pw"), &call("1"));
    assert_eq!(status(&r[0]), 100, "{r:?}");
    let first = receive(&gw1, Duration::from_secs(2)).expect("destination 1 gets the call");
    assert!(
        first.starts_with("INVITE sip:+4930123456@carrier.example.net SIP/2.0"),
        "{first}"
    );
    assert!(header(&first, "P-Asserted-Identity").is_empty(), "{first}");
    assert!(
        header(&first, "Proxy-Authorization").is_empty(),
        "credentials consumed"
    );
    let send = |peer: &Peer, text: String| {
        peer.sock.send_to(text.as_bytes(), &s.sip).expect("sent");
    };
    // Destination 1 answers 503: the call goes on to destination 2, which answers.
    send(&gw1, answer(&first, 503, "Service Unavailable"));
    let second = receive(&gw2, Duration::from_secs(2)).expect("failover to destination 2");
    assert!(
        second.starts_with("INVITE sip:+4930123456@carrier.example.net"),
        "{second}"
    );
    send(&gw2, answer(&second, 200, "OK"));
    let mut last = String::new();
    while let Some(m) = receive(&subscriber, Duration::from_secs(2)) {
        if m.starts_with("SIP/2.0 200") {
            last = m;
            break;
        }
    }
    assert!(
        last.starts_with("SIP/2.0 200"),
        "the caller gets destination 2's answer"
    );
    // A 486 is passed back as it is: no failover.
    let r = invite_authed(&subscriber, &s, ("alice", "alice-pw"), &call("2"));
    assert_eq!(status(&r[0]), 100, "{r:?}");
    let busy = loop {
        let m = receive(&gw1, Duration::from_secs(2)).expect("destination 1 gets call 2");
        if m.starts_with("INVITE") {
            break m;
        }
    };
    send(&gw1, answer(&busy, 486, "Busy Here"));
    let mut statuses = Vec::new();
    while let Some(m) = receive(&subscriber, Duration::from_secs(1)) {
        statuses.push(status(&m));
    }
    assert!(statuses.contains(&486), "{statuses:?}");
    let stray = std::iter::from_fn(|| receive(&gw2, Duration::from_millis(500)))
        .find(|m| m.starts_with("INVITE"));
    assert!(stray.is_none(), "no failover on 486: {stray:?}");
    assert_eq!(
        s.node
            .metric("limes_trunk_failovers_total{trunk=\"carrier\",reason=\"503\"}"),
        1.0
    );
    let trunks = s.node.rpc("trunk.list", &[]).expect("trunk.list");
    assert_eq!(trunks["trunks"][0]["destinations"][0]["failovers"], 1);
    assert_eq!(trunks["trunks"][0]["destinations"][1]["calls"], 1);

    // An address added over JSON-RPC is carrier B on the next INVITE; removed, it is not.
    let newcomer = Peer::bind("127.0.0.9");
    let try_call = |cseq: u32| {
        newcomer.exchange(
            &s.sip,
            &invite_text("x", &format!("sip:bob@{DOMAIN}"), cseq, ""),
            Duration::from_secs(2),
        )
    };
    s.node
        .rpc("address.add", &["300", "127.0.0.9", "0", "udp", "new"])
        .expect("address.add");
    assert_eq!(status(final_of(&try_call(1))), 403);
    let allowed = s
        .node
        .rpc("permissions.allowSource", &["300", "127.0.0.9", "5060"])
        .expect("allowSource");
    assert_eq!(allowed["allowed"], true);
    assert_eq!(allowed["tag"], "new");
    s.node
        .rpc("address.rm", &["300", "127.0.0.9"])
        .expect("address.rm");
    assert_eq!(status(final_of(&try_call(2))), 407, "a stranger again");
    // A bad parameter is named.
    let e = s
        .node
        .rpc("address.add", &["three hundred", "127.0.0.9"])
        .expect_err("refused");
    assert!(e.contains("GROUP"), "{e}");
}

/// A trunk destination that stops answering OPTIONS is skipped until it answers again,
/// and `trunk.list` shows it; `trunk.set_state` drains one by hand.
#[test]
fn a_destination_that_stops_answering_pings_is_skipped_until_it_answers() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    let gw1 = Peer::bind("127.0.0.6");
    let gw2 = Peer::bind("127.0.0.7");
    let s = start(&format!(
        r#"
[[trunk]]
name = "carrier"
ping_interval_s = 1
ping_failures = 1
destinations = [{{ uri = "sip:{}", priority = 1 }}, {{ uri = "sip:{}", priority = 2 }}]

[[route]]
name = "out"
source = "trusted"
action = "trunk:carrier"
"#,
        gw1.addr(),
        gw2.addr()
    ));
    // gw2 answers every OPTIONS; gw1 only while `alive`.
    let alive = Arc::new(AtomicBool::new(false));
    let answer_pings = |peer: Peer, alive: Arc<AtomicBool>, invites: Arc<AtomicUsize>| {
        std::thread::spawn(move || loop {
            let Some(m) = receive(&peer, Duration::from_millis(200)) else {
                continue;
            };
            if m.starts_with("OPTIONS") && alive.load(Ordering::Relaxed) {
                let to = m
                    .split("\r\n")
                    .find_map(|l| l.strip_prefix("Via: SIP/2.0/UDP "))
                    .and_then(|v| v.split(';').next())
                    .expect("Via")
                    .to_owned();
                let _ = peer.sock.send_to(answer(&m, 200, "OK").as_bytes(), to);
            }
            if m.starts_with("INVITE") {
                invites.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let (gw1_invites, gw2_invites) = (Arc::default(), Arc::<AtomicUsize>::default());
    let (gw1_addr, gw2_addr) = (gw1.addr(), gw2.addr());
    answer_pings(gw1, alive.clone(), Arc::clone(&gw1_invites));
    answer_pings(gw2, Arc::new(AtomicBool::new(true)), gw2_invites.clone());
    let state = |i: usize| {
        s.node.rpc("trunk.list", &[]).expect("trunk.list")["trunks"][0]["destinations"][i]["state"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let wait_for = |i: usize, want: &str| {
        let end = std::time::Instant::now() + Duration::from_secs(8);
        while std::time::Instant::now() < end {
            if state(i) == want {
                return true;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        false
    };
    assert!(
        wait_for(0, "down"),
        "silent destination 1 is down: {}",
        state(0)
    );
    assert_eq!(state(1), "active");
    let gauge = |uri: &str, state: &str| {
        s.node.metric(&format!(
            "limes_trunk_destination_state{{trunk=\"carrier\",destination=\"{uri}\",state=\"{state}\"}}"
        ))
    };
    let gw1_uri = format!("sip:{gw1_addr}");
    assert_eq!(gauge(&gw1_uri, "down"), 1.0);
    assert_eq!(gauge(&gw1_uri, "active"), 0.0);
    alive.store(true, Ordering::Relaxed);
    assert!(wait_for(0, "active"), "answering again: {}", state(0));
    let gw2_uri = format!("sip:{gw2_addr}");
    s.node
        .rpc("trunk.set_state", &["carrier", &gw2_uri, "drained"])
        .expect("drains");
    assert_eq!(state(1), "drained");
    let e = s
        .node
        .rpc(
            "trunk.set_state",
            &["carrier", "sip:127.0.0.6:1", "drained"],
        )
        .expect_err("an unknown destination");
    assert!(e.contains("sip:127.0.0.6:1"), "{e}");
    assert!(
        s.node
            .metric("limes_trunk_pings_total{trunk=\"carrier\",result=\"dead\"}")
            >= 1.0
    );
}
