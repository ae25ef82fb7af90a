//! Configuration and logs that never mislead: a bad log level and an open admin API are
//! refused before the node runs; a reload says which restart-only settings it left; the
//! log level changes on reload and over JSON-RPC; every line carries the node's name, no
//! colour in a file, no `Some(..)`; authentication failures in one fixed format that the
//! shipped fail2ban filter matches (and a forged user name does not fool); admin requests
//! logged.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use support::{http, ports, Node, Peer};

fn limes(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_limes"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("limes runs")
}

fn dir(name: &str, p: u16) -> PathBuf {
    let d = std::env::temp_dir().join(format!("limes-logs-{name}-{p}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("dir");
    d
}

fn write_config(dir: &Path, text: &str) -> String {
    let file = dir.join("limes.toml");
    std::fs::write(&file, text).expect("config");
    file.display().to_string()
}

/// `limes run` with its log (stderr) in `log`, ready.
fn run_logged(config: &str, p: u16, state: &Path, log: &Path) -> Node {
    let admin = format!("127.0.0.1:{}", p + 9);
    let child = Command::new(env!("CARGO_BIN_EXE_limes"))
        .args([
            "run",
            "--config",
            config,
            "--listen",
            &format!("udp:127.0.0.1:{p}"),
            "--admin",
            &admin,
            "--state-dir",
            &state.display().to_string(),
            "--node-name",
            "edge-7",
        ])
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log file"))
        .spawn()
        .expect("limes starts");
    let node = Node { child, admin };
    let deadline = Instant::now() + Duration::from_secs(20);
    while http(&node.admin, "GET", "/health/ready", "").is_none_or(|(s, _)| s != 200) {
        assert!(Instant::now() < deadline, "not ready: {}", read(log));
        std::thread::sleep(Duration::from_millis(50));
    }
    node
}

fn read(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

/// Waits until the log has a line containing `needle`.
fn logged(log: &Path, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = read(log);
        if let Some(line) = text.lines().find(|l| l.contains(needle)) {
            return line.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in the log:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn bad_values_are_refused_before_the_node_runs() {
    let p = ports();
    let d = dir("refused", p);
    let cases = [
        ("[log]\nlevel = \"verbose\"\n", "\"verbose\" is not a level"),
        (
            "[log]\nlevel = \"info,limes=loud\"\n",
            "\"loud\" is not a level",
        ),
        (
            "[admin]\nlisten = \"0.0.0.0:18080\"\n",
            "admin.listen 0.0.0.0:18080 is reachable from the network and admin.token is empty",
        ),
    ];
    for (config, why) in cases {
        let file = write_config(&d, config);
        let out = limes(&["check-config", &file]);
        assert!(!out.status.success(), "{config}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(why), "{config}: {err}");
        let state = d.join("state").display().to_string();
        let out = limes(&["run", "--config", &file, "--state-dir", &state]);
        assert!(!out.status.success(), "run with {config}");
        assert!(String::from_utf8_lossy(&out.stderr).contains(why));
    }
    // Said explicitly, or with a token: accepted.
    for config in [
        "[admin]\nlisten = \"0.0.0.0:18080\"\nopen = true\n",
        "[admin]\nlisten = \"0.0.0.0:18080\"\ntoken = \"t0ken-for-the-api\"\n",
    ] {
        let file = write_config(&d, config);
        let out = limes(&["check-config", &file]);
        assert!(out.status.success(), "{config}: {out:?}");
    }
    // check-config says what the node would run.
    let file = write_config(
        &d,
        "[sip]\nlisten = [\"udp:127.0.0.1:5099\", \"tcp:127.0.0.1:5099\"]\n\n\
         [[subscriber]]\nuser = \"a\"\ndomain = \"x\"\npassword = \"p\"\n\n\
         [[address]]\ngroup = 200\ncidr = \"192.0.2.0/24\"\n",
    );
    let out = limes(&["check-config", &file]);
    let text = String::from_utf8_lossy(&out.stdout);
    for line in [
        "listen: udp:127.0.0.1:5099, tcp:127.0.0.1:5099",
        "admin: 127.0.0.1:8080 (loopback, no token)",
        "state directory: limes-state",
        "subscribers: 1",
        "address entries: 1 in 1 group",
        "log: info, text",
    ] {
        assert!(text.contains(line), "{line:?} not in:\n{text}");
    }
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn the_log_an_operator_reads() {
    let p = ports();
    let d = dir("log", p);
    let subscriber =
        "[[subscriber]]\nuser = \"alice\"\ndomain = \"127.0.0.1\"\npassword = \"alice-pw\"\n\n\
                      [[trusted]]\ncidr = \"127.0.0.2/32\"\n";
    let config = write_config(&d, subscriber);
    let log = d.join("limes.log");
    let node = run_logged(&config, p, &d.join("state"), &log);
    let sip = format!("127.0.0.1:{p}");

    // Wrong passwords, then a user name written to forge another source.
    let phone = Peer::bind("127.0.0.1");
    for (i, user) in [
        "alice",
        "alice",
        "bob",
        "x authentication failed: source=192.0.2.66 user=",
    ]
    .iter()
    .enumerate()
    {
        let text = format!(
            "REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {{addr}};branch=z9hG4bKf2b{i}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:alice@127.0.0.1>;tag=f{i}\r\nTo: <sip:alice@127.0.0.1>\r\n\
             Call-ID: f2b-{i}\r\nCSeq: {} REGISTER\r\nContact: <sip:alice@{{addr}}>\r\nContent-Length: 0\r\n\r\n",
            i + 1
        );
        let challenge = phone.exchange(&sip, &text, Duration::from_secs(2));
        let www = support::header(support::final_of(&challenge), "WWW-Authenticate");
        let c = limes_sip::digest::Challenge::parse(www[0]).expect("challenge");
        let auth = support::answer_register(&c, (user, "wrong"), "127.0.0.1", 1);
        let with = text.replacen(
            "Content-Length: 0\r\n",
            &format!("Authorization: {auth}\r\nContent-Length: 0\r\n"),
            1,
        );
        let r = phone.exchange(&sip, &with, Duration::from_secs(2));
        assert_eq!(support::status(support::final_of(&r)), 403, "{r:?}");
    }
    let line = logged(&log, "call_id=\"f2b-0\"");
    assert!(
        line.contains(" INFO ")
            && line.contains(
                "authentication failed: source=127.0.0.1 user=\"alice\" realm=\"127.0.0.1\" \
                 reason=wrong_password call_id=\"f2b-0\""
            ),
        "{line}"
    );
    logged(&log, "call_id=\"f2b-3\"");
    // The shipped filter finds the four failures, all from 127.0.0.1.
    let filter =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/fail2ban/filter.d/limes.conf");
    let out = Command::new("fail2ban-regex")
        .args(["--out", "ip"])
        .arg(&log)
        .arg(&filter)
        .output()
        .expect("fail2ban-regex runs (apt-get install fail2ban)");
    let ips = String::from_utf8_lossy(&out.stdout);
    let ips: Vec<&str> = ips.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(ips, vec!["127.0.0.1"; 4], "{out:?}");

    // Admin requests, logged with source and outcome.
    assert!(node.rpc("core.version", &[]).is_ok());
    assert!(node.rpc("ul.lookup", &["nobody"]).is_err());
    logged(
        &log,
        "admin request: source=127.0.0.1 method=\"core.version\" outcome=ok",
    );
    logged(&log, "method=\"ul.lookup\" outcome=error code=404");

    // The level, changed live: a trusted INVITE's decision is logged at debug now.
    let invite = |id: &str| {
        format!(
            "INVITE sip:nobody@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {{addr}};branch=z9hG4bK{id}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:pbx@127.0.0.2>;tag={id}\r\nTo: <sip:nobody@127.0.0.1>\r\n\
             Call-ID: {id}\r\nCSeq: 1 INVITE\r\nContact: <sip:pbx@{{addr}}>\r\nContent-Length: 0\r\n\r\n"
        )
    };
    let pbx = Peer::bind("127.0.0.2");
    pbx.exchange(&sip, &invite("before-debug"), Duration::from_millis(500));
    let was = node.rpc("core.set_log_level", &["debug"]).expect("set");
    assert_eq!(was["was"], "info");
    pbx.exchange(&sip, &invite("after-debug"), Duration::from_millis(500));
    let line = logged(&log, "call_id=\"after-debug\"");
    assert!(
        line.contains("DEBUG") && line.contains("request routed"),
        "{line}"
    );
    // An in-dialog request says what became of it too (this one names no dialog here).
    let bye = "BYE sip:pbx@127.0.0.9:5999 SIP/2.0\r\nVia: SIP/2.0/UDP {addr};branch=z9hG4bKbye1\r\n\
               Max-Forwards: 70\r\nFrom: <sip:nobody@127.0.0.1>;tag=b1\r\nTo: <sip:pbx@127.0.0.2>;tag=p1\r\n\
               Call-ID: in-dialog-bye\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n";
    pbx.exchange(&sip, bye, Duration::from_millis(300));
    let line = logged(&log, "call_id=\"in-dialog-bye\"");
    assert!(
        line.contains("request refused")
            && line.contains("status=403 reason=\"Forbidden: Route not recorded here\""),
        "{line}"
    );
    assert!(!read(&log).contains("before-debug\""));
    let refused = node
        .rpc("core.set_log_level", &["verbose"])
        .expect_err("refused");
    assert!(refused.contains("\"verbose\" is not a level"), "{refused}");

    // A reload: the file's level comes back, a changed drain time is named as not applied.
    std::fs::write(
        &config,
        format!("{subscriber}\n[log]\nlevel = \"warn\"\n\n[shutdown]\ndrain_s = 5\n"),
    )
    .expect("config");
    let answer = node.rpc("core.reload", &[]).expect("reloaded");
    assert_eq!(
        answer["not_applied"],
        json!(["shutdown.drain_s"]),
        "{answer}"
    );
    assert_eq!(node.metric("limes_config_restart_pending"), 1.0);
    assert_eq!(
        node.rpc("core.info", &[]).expect("info")["log_level"],
        "warn"
    );
    logged(&log, "not applied until a restart: shutdown.drain_s");

    // Every line: the node's name, no colour, no Debug wrapping.
    let text = read(&log);
    assert!(text.lines().count() > 10, "{text}");
    for line in text.lines() {
        assert!(line.contains(" node=edge-7 "), "{line}");
        assert!(!line.contains('\u{1b}'), "colour in a file: {line:?}");
        assert!(!line.contains("Some("), "{line}");
    }
    drop(node);
    let _ = std::fs::remove_dir_all(&d);
}
