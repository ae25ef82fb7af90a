//! Dialog tracking end to end: real sipp calls through the node, read back with the
//! dialog methods, the metrics and the CDR file.

#[path = "support.rs"]
mod support;

use std::time::{Duration, Instant};

use support::{ports, uac, uas, Node};

fn config(next_hop: u16, extra: &str) -> String {
    format!(
        r#"
[sip]
next_hop = ["sip:127.0.0.1:{next_hop}"]

[[trusted]]
cidr = "127.0.0.0/8"
tag = "pbx"

[[dialog.profile]]
name = "total"

[[dialog.profile]]
name = "user"
value = "caller"

[[dialog.profile]]
name = "type"
value = "class"

[[dialog.class]]
name = "international"
prefix = "00"

[[dialog.class]]
name = "local"
prefix = ""
{extra}
"#
    )
}

/// The CDR lines of a node started by [`Node::with_config`] on `port`, once `n` are there
/// (the state thread writes them within a second).
fn cdrs(port: u16, n: usize) -> Vec<serde_json::Value> {
    cdrs_in(
        &std::env::temp_dir().join(format!("limes-test-{}", port + 9)),
        n,
    )
}

/// The CDR lines in a state directory, once `n` are there (or after 5 s).
fn cdrs_in(state: &std::path::Path, n: usize) -> Vec<serde_json::Value> {
    let path = state.join("cdr.jsonl");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let lines: Vec<serde_json::Value> = std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("a CDR is a JSON line"))
            .collect();
        if lines.len() >= n || Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Starts `n` calls (`call_uac.xml`, 200 a second, held `hold_ms`) through the node on
/// `p` to the UAS on `p + 1` in the background, and returns once the node has all `n` up;
/// the handle gives sipp's output when they have ended.
fn hold_calls(
    node: &Node,
    p: u16,
    n: u32,
    hold_ms: u32,
) -> std::thread::JoinHandle<std::process::Output> {
    let proxy = format!("127.0.0.1:{p}");
    let remote = format!("127.0.0.1:{}", p + 1);
    let (m, hold) = (n.to_string(), hold_ms.to_string());
    let caller = std::thread::spawn(move || {
        uac(
            "call_uac.xml",
            &remote,
            p + 2,
            &["-rsa", &proxy, "-m", &m, "-r", "200", "-l", &m, "-d", &hold],
        )
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    while node.rpc("dlg.stats_active", &[]).expect("stats")["active"] != n {
        assert!(Instant::now() < deadline, "{n} calls up");
        std::thread::sleep(Duration::from_millis(50));
    }
    caller
}

fn size(node: &Node, profile: &str, value: Option<&str>) -> u64 {
    let mut params = vec![profile];
    params.extend(value);
    node.rpc("dlg.profile_get_size", &params)
        .expect("profile size")
        .as_u64()
        .expect("a number")
}

/// Shown 1: 20 calls held 3 s. While they are up, `dlg.stats_active`, `dlg.list` and every
/// profile count exactly 20; after the BYEs every profile is 0 and each call has one CDR
/// saying the caller ended it, with its answer time and the seed's fields.
#[test]
fn dialogs_and_profiles_follow_calls_up_and_down() {
    let p = ports();
    let _uas = uas("call_uas.xml", p + 1, &[]);
    let node = Node::with_config("dialogs-follow", &config(p + 1, ""), p);
    let caller = hold_calls(&node, p, 20, 3000);
    let active = node.rpc("dlg.stats_active", &[]).expect("stats");
    assert_eq!(active["active"], 20, "{active}");
    assert_eq!(active["early"], 0);
    assert_eq!(size(&node, "total", None), 20);
    assert_eq!(size(&node, "user", Some("caller")), 20);
    assert_eq!(size(&node, "type", Some("local")), 20);
    assert_eq!(size(&node, "type", Some("international")), 0);
    let list = node.rpc("dlg.list", &[]).expect("list");
    assert_eq!(list.as_array().map(Vec::len), Some(20));
    assert_eq!(list[0]["state"], "confirmed");
    assert_eq!(list[0]["source"], "pbx");
    let in_profile = node
        .rpc("dlg.profile_list", &["user", "caller"])
        .expect("list");
    assert_eq!(in_profile.as_array().map(Vec::len), Some(20));
    assert_eq!(
        node.metric("limes_dialogs{state=\"confirmed\"}"),
        20.0,
        "the census agrees"
    );

    caller.join().expect("the calls complete");
    let active = node.rpc("dlg.stats_active", &[]).expect("stats");
    assert_eq!(active["all"], 0, "{active}");
    for profile in ["total", "user", "type"] {
        assert_eq!(size(&node, profile, None), 0, "{profile}");
    }
    let stats = node
        .rpc("stats.get_statistics", &["dialog:"])
        .expect("stats");
    assert_eq!(stats["dialog:processed_dialogs"], 20, "{stats}");
    let cdrs = cdrs(p, 20);
    assert_eq!(cdrs.len(), 20, "one CDR per call");
    let mut ids: Vec<&str> = cdrs.iter().filter_map(|c| c["Id"].as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 20, "unique ids");
    for c in &cdrs {
        assert_eq!(c["EndedBy"], "caller", "{c}");
        assert_eq!(c["Status"], 200);
        assert_eq!(c["Class"], "local");
        assert!(c["AnswerTime"].is_u64() && c["SetupTime"].is_u64() && c["EndTime"].is_u64());
        assert!(
            c["BillSec"].as_u64().is_some_and(|s| (2..=4).contains(&s)),
            "{c}"
        );
        assert_eq!(
            c["Profiles"],
            serde_json::json!(["total", "user=caller", "type=local"])
        );
    }
}

/// Shown 2: 100 calls at once against a limit of 10 (per caller, then per class): exactly
/// 10 are relayed, 90 get the configured 486, and each of the 100 has a CDR.
#[test]
fn a_limit_of_ten_admits_exactly_ten_of_a_hundred() {
    for (profile, label) in [("user", "per caller"), ("type", "per class")] {
        let p = ports();
        let _uas = uas("call_uas.xml", p + 1, &[]);
        let limit =
            format!("\n[[dialog.limit]]\nprofile = \"{profile}\"\nmax = 10\nstatus = 486\n");
        let node = Node::with_config("dialogs-limit", &config(p + 1, &limit), p);
        let proxy = format!("127.0.0.1:{p}");
        uac(
            "limit_uac.xml",
            &format!("127.0.0.1:{}", p + 1),
            p + 2,
            &[
                "-rsa", &proxy, "-m", "100", "-r", "1000", "-l", "100", "-d", "3000",
            ],
        );
        assert_eq!(
            node.metric(&format!(
                "limes_dialog_limit_rejections_total{{profile=\"{profile}\"}}"
            )),
            90.0,
            "{label}"
        );
        assert_eq!(
            node.metric("limes_sip_requests_received_total{method=\"BYE\"}"),
            10.0,
            "{label}: ten calls answered and hung up"
        );
        let cdrs = cdrs(p, 100);
        let ended = |by: &str| cdrs.iter().filter(|c| c["EndedBy"] == by).count();
        assert_eq!((ended("caller"), ended("limit")), (10, 90), "{label}");
        assert!(cdrs
            .iter()
            .filter(|c| c["EndedBy"] == "limit")
            .all(|c| c["Status"] == 486 && c["AnswerTime"].is_null()));
        assert_eq!(size(&node, profile, None), 0, "{label}");
    }
}

/// Shown 3: a dialog's lifetime ends each call with a BYE to both sides (both sipps wait
/// for it, the UAS checks its Reason) and a CDR saying `timeout`; `dlg.end_dlg` does the
/// same for the operator.
#[test]
fn lifetime_and_operator_end_calls_with_byes_to_both_sides() {
    for (lifetime, by) in [(2, "timeout"), (3600, "operator")] {
        let p = ports();
        let mut callee = uas("hangup_uas.xml", p + 1, &["-m", "5"]);
        let extra = format!("\n[dialog]\nlifetime_s = {lifetime}\n");
        let node = Node::with_config("dialogs-hangup", &config(p + 1, &extra), p);
        let proxy = format!("127.0.0.1:{p}");
        let remote = format!("127.0.0.1:{}", p + 1);
        let caller = std::thread::spawn(move || {
            uac(
                "hangup_uac.xml",
                &remote,
                p + 2,
                &["-rsa", &proxy, "-m", "5", "-r", "50", "-l", "5"],
            )
        });
        if by == "operator" {
            let deadline = Instant::now() + Duration::from_secs(5);
            while node.rpc("dlg.stats_active", &[]).expect("stats")["active"] != 5 {
                assert!(Instant::now() < deadline, "5 calls up");
                std::thread::sleep(Duration::from_millis(50));
            }
            for call in node
                .rpc("dlg.list", &[])
                .expect("list")
                .as_array()
                .expect("list")
            {
                let id = call["id"].to_string();
                assert_eq!(
                    node.rpc("dlg.end_dlg", &[&id]).expect("ended")["ended"],
                    call["id"]
                );
            }
            assert!(
                node.rpc("dlg.end_dlg", &["999999"]).is_err(),
                "no such dialog"
            );
        }
        caller.join().expect("the caller got its BYEs");
        assert_eq!(
            callee
                .wait_done(Duration::from_secs(10))
                .map(|s| s.success()),
            Some(true),
            "{by}: the callee got its BYEs"
        );
        let cdrs = cdrs(p, 5);
        assert_eq!(cdrs.len(), 5);
        assert!(cdrs.iter().all(|c| c["EndedBy"] == by), "{by}: {cdrs:?}");
        assert_eq!(size(&node, "total", None), 0);
        if by == "timeout" {
            let stats = node
                .rpc("stats.get_statistics", &["dialog:"])
                .expect("stats");
            assert_eq!(stats["dialog:expired_dialogs"], 5, "{stats}");
        }
    }
}

/// Shown 7: SIGTERM with 50 calls up. `/health/ready` says draining at once, a new INVITE
/// gets 503, the 50 calls end by their own BYEs (sipp counts 50 successful calls), and the
/// node exits once they have, long before its drain time; none needed the node's BYE.
#[test]
fn sigterm_lets_fifty_calls_end_by_their_own_byes() {
    let p = ports();
    let _uas = uas("call_uas.xml", p + 1, &[]);
    let extra = "\n[shutdown]\ndrain_s = 30\n";
    let mut node = Node::with_config("dialogs-drain", &config(p + 1, extra), p);
    let caller = hold_calls(&node, p, 50, 4000);
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &node.pid().to_string()])
        .status();
    std::thread::sleep(Duration::from_millis(300));
    let (status, _) = support::http(&node.admin, "GET", "/health/ready", "").expect("answers");
    assert_eq!(status, 503, "not ready while draining");
    let peer = support::Peer::bind("127.0.0.1");
    let refused = peer.exchange(
        &format!("127.0.0.1:{p}"),
        &format!(
            "INVITE sip:late@127.0.0.1:{} SIP/2.0\r\nVia: SIP/2.0/UDP {{addr}};branch=z9hG4bKlate;rport\r\n\
             From: <sip:late@127.0.0.1>;tag=l1\r\nTo: <sip:late@127.0.0.1>\r\nCall-ID: late-1\r\n\
             CSeq: 1 INVITE\r\nContact: <sip:late@{{addr}}>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            p + 1
        ),
        Duration::from_secs(2),
    );
    assert!(
        refused.iter().any(|r| support::status(r) == 503),
        "a new INVITE while draining: {refused:?}"
    );
    let out = caller.join().expect("the 50 calls complete");
    assert_eq!(support::successful_calls(&out), 50);
    let started = Instant::now();
    let status = node
        .terminate(Duration::from_secs(10))
        .expect("exits once the calls have ended");
    assert!(status.success());
    assert!(started.elapsed() < Duration::from_secs(10));
    let cdrs = cdrs(p, 50);
    let ended = |by: &str| cdrs.iter().filter(|c| c["EndedBy"] == by).count();
    assert_eq!(ended("caller"), 50, "every call ended by its own BYE");
    assert_eq!(ended("shutdown"), 0);
}

/// A node on `udp:127.0.0.1:p` with `config` and the state directory `state`, kept as it
/// is (a restart finds what the node before it left).
fn node_on(p: u16, state: &std::path::Path, config: &str) -> Node {
    let path = state.with_extension("toml");
    std::fs::write(&path, config).expect("config written");
    let admin = format!("127.0.0.1:{}", p + 9);
    Node::spawn(
        &[
            "run",
            "--config",
            &path.display().to_string(),
            "--listen",
            &format!("udp:127.0.0.1:{p}"),
            "--admin",
            &admin,
            "--state-dir",
            &state.display().to_string(),
        ],
        &admin,
    )
}

/// Shown 5: kill -9 with 100 calls up, restart on the same state directory: the node
/// tracks the 100 again (profiles counted), each call ends with its caller's BYE, the
/// profiles return to 0, and there are 100 CDRs, none twice.
#[test]
fn confirmed_dialogs_survive_kill_9() {
    let p = ports();
    let state = std::env::temp_dir().join(format!("limes-dialogs-restart-{p}"));
    let _ = std::fs::remove_dir_all(&state);
    let _uas = uas("call_uas.xml", p + 1, &[]);
    let config = config(p + 1, "");
    let mut first = node_on(p, &state, &config);
    let caller = hold_calls(&first, p, 100, 7000);
    // The journal is written once a second.
    std::thread::sleep(Duration::from_millis(1500));
    first.child.kill().expect("SIGKILL");
    let _ = first.child.wait();

    let second = node_on(p, &state, &config);
    let active = second.rpc("dlg.stats_active", &[]).expect("stats");
    assert_eq!(active["active"], 100, "restored: {active}");
    assert_eq!(size(&second, "total", None), 100);
    assert_eq!(size(&second, "user", Some("caller")), 100);

    let out = caller.join().expect("every call ends");
    assert_eq!(support::successful_calls(&out), 100);
    assert_eq!(
        second.rpc("dlg.stats_active", &[]).expect("stats")["all"],
        0
    );
    for profile in ["total", "user", "type"] {
        assert_eq!(size(&second, profile, None), 0, "{profile}");
    }
    let mut call_ids: Vec<String> = cdrs_in(&state, 100)
        .iter()
        .inspect(|c| assert_eq!(c["EndedBy"], "caller", "{c}"))
        .map(|c| c["CallID"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(call_ids.len(), 100, "100 CDRs");
    call_ids.sort();
    call_ids.dedup();
    assert_eq!(call_ids.len(), 100, "none twice");
}

/// A CDR collector: a real HTTP server on `port` that records the `Id` of every CDR
/// posted to it (JSON arrays) and answers 200.
fn collector(port: u16) -> std::sync::Arc<std::sync::Mutex<Vec<String>>> {
    use std::io::{BufRead, BufReader, Read, Write};
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("collector binds");
    let ids = got.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let mut length = 0;
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                if line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                line.clear();
            }
            let mut body = vec![0u8; length];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            let batch: Vec<serde_json::Value> =
                serde_json::from_slice(&body).expect("a JSON array");
            ids.lock().unwrap().extend(
                batch
                    .iter()
                    .filter_map(|c| c["Id"].as_str().map(str::to_owned)),
            );
            let _ = reader
                .get_mut()
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        }
    });
    got
}

/// Shown 6: the CDR collector is down for the first 10 calls and up for the next 10:
/// the first ten wait in the queue (counted), and every one of the 20 arrives.
#[test]
fn cdrs_wait_for_a_collector_that_is_down_and_all_arrive() {
    let p = ports();
    let _uas = uas("call_uas.xml", p + 1, &[]);
    let extra = format!("\n[dialog]\ncdr_url = \"http://127.0.0.1:{}/cdr\"\n", p + 5);
    let node = Node::with_config("dialogs-collector", &config(p + 1, &extra), p);
    let proxy = format!("127.0.0.1:{p}");
    let remote = format!("127.0.0.1:{}", p + 1);
    let run = |first_port: u16| {
        uac(
            "call_uac.xml",
            &remote,
            first_port,
            &[
                "-rsa", &proxy, "-m", "10", "-r", "50", "-l", "10", "-d", "100",
            ],
        )
    };
    run(p + 2);
    let deadline = Instant::now() + Duration::from_secs(5);
    while node.metric("limes_cdrs_queued") < 10.0
        || node.metric("limes_cdr_post_failures_total") < 1.0
    {
        assert!(
            Instant::now() < deadline,
            "ten CDRs queued, a failed POST counted, while the collector is down"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let got = collector(p + 5);
    run(p + 3);
    let deadline = Instant::now() + Duration::from_secs(40);
    while got.lock().unwrap().len() < 20 {
        assert!(
            Instant::now() < deadline,
            "every CDR arrives: {:?}",
            got.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut posted = got.lock().unwrap().clone();
    posted.sort();
    posted.dedup();
    let mut written: Vec<String> = cdrs(p, 20)
        .iter()
        .filter_map(|c| c["Id"].as_str().map(str::to_owned))
        .collect();
    written.sort();
    assert_eq!(posted, written, "the collector has every CDR of the file");
    assert_eq!(node.metric("limes_cdrs_queued"), 0.0);
    assert_eq!(node.metric("limes_cdrs_posted_total"), 20.0);
}

/// RFC 4028 §8.1 on the wire: a Session-Expires below `min_se_s` gets 422 with Min-SE; an
/// INVITE without one is relayed with the configured Session-Expires.
#[test]
fn session_timers_422_and_insertion() {
    let p = ports();
    let callee = std::net::UdpSocket::bind(("127.0.0.1", p + 1)).expect("callee binds");
    callee
        .set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    let extra = "\n[dialog]\nsession_expires_s = 1800\nmin_se_s = 120\n";
    let _node = Node::with_config("dialogs-session", &config(p + 1, extra), p);
    let invite = |n: u32, session: &str| {
        format!(
            "INVITE sip:6002@127.0.0.1:{} SIP/2.0\r\nVia: SIP/2.0/UDP {{addr}};branch=z9hG4bKse{n};rport\r\n\
             From: <sip:6001@127.0.0.1>;tag=s{n}\r\nTo: <sip:6002@127.0.0.1>\r\nCall-ID: se-{n}\r\n\
             CSeq: 1 INVITE\r\nContact: <sip:6001@{{addr}}>\r\nMax-Forwards: 70\r\n{session}Content-Length: 0\r\n\r\n",
            p + 1
        )
    };
    let caller = support::Peer::bind("127.0.0.1");
    let to = format!("127.0.0.1:{p}");
    let small = caller.exchange(
        &to,
        &invite(1, "Session-Expires: 60\r\n"),
        Duration::from_secs(2),
    );
    let refused = small
        .iter()
        .find(|r| support::status(r) == 422)
        .unwrap_or_else(|| panic!("422 for 60 s: {small:?}"));
    assert!(refused.contains("Min-SE: 120"), "{refused}");

    caller
        .sock
        .send_to(
            invite(2, "")
                .replace("{addr}", &caller.addr().to_string())
                .as_bytes(),
            &to,
        )
        .expect("sends");
    let mut buf = vec![0u8; 8192];
    let (n, _) = callee.recv_from(&mut buf).expect("the INVITE is relayed");
    let relayed = String::from_utf8_lossy(&buf[..n]);
    assert!(relayed.contains("Session-Expires: 1800\r\n"), "{relayed}");
}
