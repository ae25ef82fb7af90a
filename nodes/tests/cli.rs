//! The command line as a user meets it: `limes run` with no arguments, `limes ctl`,
//! `limes check-config`.

#[path = "support.rs"]
mod support;

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::process::Command;
use std::time::Duration;

use support::Node;

fn limes(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_limes"))
        .args(args)
        .output()
        .unwrap()
}

fn options(transport: &str, port: u16) -> String {
    format!(
        "OPTIONS sip:127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/{transport} 127.0.0.1:{port};branch=z9hG4bKping{port}\r\n\
         From: <sip:ping@127.0.0.1>;tag=1\r\nTo: <sip:127.0.0.1:5060>\r\nCall-ID: ping-{port}\r\nCSeq: 1 OPTIONS\r\n\
         Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
}

/// The defaults: UDP and TCP on 127.0.0.1:5060, admin API on 127.0.0.1:8080.
#[test]
fn run_with_no_arguments_answers_options_and_ctl_works() {
    let _node = Node::spawn(&["run"], "127.0.0.1:8080");

    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let port = udp.local_addr().unwrap().port();
    udp.send_to(options("UDP", port).as_bytes(), "127.0.0.1:5060")
        .unwrap();
    let mut buf = [0u8; 4096];
    let (n, _) = udp.recv_from(&mut buf).unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("SIP/2.0 200 OK\r\n"), "{answer}");
    assert!(answer.contains("\r\nAllow: INVITE, ACK, CANCEL, BYE, OPTIONS"));
    assert!(answer.contains("\r\nSupported: "));

    let mut tcp = TcpStream::connect("127.0.0.1:5060").unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let port = tcp.local_addr().unwrap().port();
    tcp.write_all(options("TCP", port).as_bytes()).unwrap();
    let n = tcp.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("SIP/2.0 200 OK\r\n"));

    let out = limes(&["ctl", "core.version"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("limes {}", env!("CARGO_PKG_VERSION"))
    );

    let out = limes(&["ctl", "tm.stats"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("rpl_generated") && l.trim_end().ends_with('2')),
        "{table}"
    );

    let out = limes(&["ctl", "--json", "core.uptime"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["uptime"].as_u64().is_some());

    let out = limes(&["ctl", "no.such.method"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Method not found: no.such.method"));

    let out = limes(&["ctl", "stats.get_statistics", "nosuchgroup"]);
    assert!(!out.status.success());

    let (status, body) = support::http("127.0.0.1:8080", "GET", "/metrics", "").unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("limes_sip_requests_received_total{method=\"OPTIONS\"} 2"));
    assert!(
        !body.contains("# EOF") && body.contains("# TYPE limes_sip_drops_total counter"),
        "without an Accept for OpenMetrics: the text format 0.0.4"
    );
    let (status, _) = support::http("127.0.0.1:8080", "GET", "/health/live", "").unwrap();
    assert_eq!(status, 200);
}

#[test]
fn json_rpc_batch_and_errors() {
    let p = support::ports();
    let node = Node::start(&["--listen", &format!("udp:127.0.0.1:{p}")], p + 9);
    let body = r#"[{"jsonrpc":"2.0","method":"core.version","id":1},{"jsonrpc":"2.0","method":"nope","id":2},{"jsonrpc":"2.0","method":"core.uptime"}]"#;
    let (status, answer) = support::http(&node.admin, "POST", "/RPC", body).unwrap();
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&answer).unwrap();
    let answers = v.as_array().unwrap();
    assert_eq!(answers.len(), 2, "the notification (no id) gets no answer");
    assert_eq!(
        answers[0]["result"],
        format!("limes {}", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(answers[1]["error"]["code"], -32601);
    let (_, answer) = support::http(&node.admin, "POST", "/RPC", "{not json").unwrap();
    assert!(answer.contains("-32700"));
}

#[test]
fn bearer_token_guards_the_admin_api() {
    let p = support::ports();
    let node = Node::with_config("token", "[admin]\ntoken = \"s3cret\"\n", p);
    let (status, _) = support::http(&node.admin, "GET", "/metrics", "").unwrap();
    assert_eq!(status, 401);
    let out = limes(&["ctl", "--admin", &node.admin, "core.version"]);
    assert!(!out.status.success());
    let out = limes(&[
        "ctl",
        "--admin",
        &node.admin,
        "--token",
        "s3cret",
        "core.version",
    ]);
    assert!(out.status.success());

    // The token can come from the command line or the environment (LIMES_ADMIN_TOKEN,
    // the same flag) instead of the file: a container takes it from a secret.
    let p = support::ports();
    let listen = format!("udp:127.0.0.1:{p}");
    let node = Node::start(&["--listen", &listen, "--admin-token", "fr0m-env"], p + 9);
    let (status, _) = support::http(&node.admin, "GET", "/metrics", "").unwrap();
    assert_eq!(status, 401);
    let out = limes(&[
        "ctl",
        "--admin",
        &node.admin,
        "--token",
        "fr0m-env",
        "core.version",
    ]);
    assert!(out.status.success());
}

#[test]
fn check_config_accepts_good_files_and_names_mistakes() {
    let dir = std::env::temp_dir();
    let good = dir.join(format!("limes-good-{}.toml", std::process::id()));
    std::fs::write(
        &good,
        "[sip]\nlisten = [\"udp:127.0.0.1:5070\"]\nnext_hop = [\"sip:127.0.0.1:5080\"]\n",
    )
    .unwrap();
    let out = limes(&["check-config", &good.display().to_string()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("next hops: sip:127.0.0.1:5080"));

    let bad = dir.join(format!("limes-bad-{}.toml", std::process::id()));
    std::fs::write(&bad, "[sip]\nlisen = []\n").unwrap();
    let out = limes(&["check-config", &bad.display().to_string()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown field `lisen`"));
}
