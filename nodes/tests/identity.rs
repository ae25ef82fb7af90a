//! Route identity that survives the process (DESIGN principle 9): a call set up through
//! one node is hung up normally after that node was killed with SIGKILL and started again
//! on the same state directory, and through another node that has the same `node.secret`
//! and took over the first one's address. A node with another secret refuses the BYE:
//! the signature really is checked.

#[path = "support.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::{ports, scenario, uas, Node};

fn fresh_dir(tag: &str, p: u16) -> PathBuf {
    let d = std::env::temp_dir().join(format!("limes-identity-{tag}-{p}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

/// A node on udp:127.0.0.1:p relaying to the UAS on p+1; `config` may set `node.secret`.
fn node(p: u16, state: &Path, config: Option<&Path>) -> Node {
    let listen = format!("udp:127.0.0.1:{p}");
    let next_hop = format!("sip:127.0.0.1:{}", p + 1);
    let admin = format!("127.0.0.1:{}", p + 9);
    let state = state.display().to_string();
    let mut args = vec![
        "run",
        "--listen",
        &listen,
        "--next-hop",
        &next_hop,
        "--trusted",
        "127.0.0.0/8",
        "--admin",
        &admin,
        "--state-dir",
        &state,
    ];
    let config = config.map(|c| c.display().to_string());
    if let Some(c) = &config {
        args.extend_from_slice(&["--config", c]);
    }
    Node::spawn(&args, &admin)
}

/// One call whose caller waits `hold_ms` between its ACK and its BYE, started in the
/// background.
fn caller(p: u16, hold_ms: u32) -> Child {
    let hold = hold_ms.to_string();
    Command::new("sipp")
        .arg(format!("127.0.0.1:{}", p + 1))
        .args(["-sf", &scenario("call_uac.xml")])
        .args([
            "-i",
            "127.0.0.1",
            "-p",
            &(p + 2).to_string(),
            "-s",
            "service",
        ])
        .args(["-rsa", &format!("127.0.0.1:{p}")])
        .args(["-m", "1", "-d", &hold])
        .args(["-nostdin", "-timeout", "60s", "-timeout_error"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sipp is installed (Debian package sip-tester)")
}

/// Sets up a call through `first`, kills it with SIGKILL once the call is answered, starts
/// `second()` on the same address, and returns whether the caller's BYE got its 200.
fn bye_after_takeover(p: u16, mut first: Node, second: impl FnOnce() -> Node) -> (bool, Node) {
    let mut call = caller(p, 3000);
    // The call is answered within a few milliseconds; wait until the node has relayed the ACK.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while first.metric("limes_sip_requests_received_total{method=\"ACK\"}") < 1.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the call was not set up"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    first.child.kill().expect("SIGKILL");
    let _ = first.child.wait();
    let second = second();
    let ok = call.wait().expect("sipp ends").success();
    (ok, second)
}

#[test]
fn principle_9_calls_end_normally_after_kill_9_and_on_a_node_with_the_same_secret() {
    let p = ports();
    let _uas = uas("call_uas.xml", p + 1, &[]);

    // Restart on the same state directory: the generated secret was kept there.
    let state = fresh_dir("restart", p);
    let first = node(p, &state, None);
    let (ok, restarted) = bye_after_takeover(p, first, || node(p, &state, None));
    assert!(ok, "BYE after kill -9 and restart was not answered 200");
    assert_eq!(
        restarted.metric("limes_sip_requests_received_total{method=\"BYE\"}"),
        1.0
    );
    assert!(state.join("node.secret").exists());
    drop(restarted);

    // Another node, its own state directory, the same configured secret.
    let config = fresh_dir("config", p).join("limes.toml");
    std::fs::write(&config, "[node]\nsecret = \"a cluster-wide secret\"\n").expect("config");
    let first = node(p, &fresh_dir("a", p), Some(&config));
    let (ok, other) = bye_after_takeover(p, first, || node(p, &fresh_dir("b", p), Some(&config)));
    assert!(
        ok,
        "BYE through a node with the same secret was not answered 200"
    );
    drop(other);

    // A node with a secret of its own does not recognise the route: 403.
    let first = node(p, &fresh_dir("c", p), Some(&config));
    let (ok, stranger) = bye_after_takeover(p, first, || node(p, &fresh_dir("d", p), None));
    assert!(!ok, "a node with another secret must refuse the BYE");
    assert!(stranger.metric("limes_sip_responses_sent_total{class=\"4xx\"}") >= 1.0);
}
