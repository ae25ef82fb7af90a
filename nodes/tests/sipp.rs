//! Black-box call flows: the real node on loopback between real sipp peers
//! (Debian `sip-tester`).

#[path = "support.rs"]
mod support;

use std::time::Duration;

use support::{ports, successful_calls, uac, uas, Node};

fn addr(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

/// Node on `p` (UDP and TCP), UAS on p+1, UAC on p+2.
fn calls(transport: &str, calls: u32) {
    let p = ports();
    let t = if transport == "tcp" {
        vec!["-t", "t1"]
    } else {
        vec![]
    };
    let next_hop = if transport == "tcp" {
        format!("sip:127.0.0.1:{};transport=tcp", p + 1)
    } else {
        format!("sip:127.0.0.1:{}", p + 1)
    };
    let _uas = uas("call_uas.xml", p + 1, &t);
    let node = Node::start(
        &[
            "--listen",
            &format!("udp:{}", addr(p)),
            "--listen",
            &format!("tcp:{}", addr(p)),
            "--next-hop",
            &next_hop,
        ],
        p + 9,
    );
    let (m, r, l) = (calls.to_string(), "100".to_string(), calls.to_string());
    let proxy = addr(p);
    let mut args = vec![
        "-rsa",
        proxy.as_str(),
        "-m",
        m.as_str(),
        "-r",
        r.as_str(),
        "-l",
        l.as_str(),
        "-d",
        "100",
    ];
    args.extend_from_slice(&t);
    let out = uac("call_uac.xml", &addr(p + 1), p + 2, &args);
    assert_eq!(successful_calls(&out), u64::from(calls));
    assert_eq!(
        node.metric("limes_sip_requests_received_total{method=\"INVITE\"}"),
        f64::from(calls)
    );
    assert_eq!(
        node.metric("limes_sip_requests_received_total{method=\"BYE\"}"),
        f64::from(calls)
    );
    if transport == "tcp" {
        // The UAC's connection closed when sipp exited; the one to the UAS stays open.
        assert!(node.metric("limes_transport_connections{transport=\"tcp\"}") >= 1.0);
        assert_eq!(
            node.metric("limes_transport_send_errors_total{transport=\"tcp\"}"),
            0.0
        );
    }
}

#[test]
fn rfc3261_16_thousand_calls_over_udp_without_failure() {
    calls("udp", 1000);
}

#[test]
fn rfc3261_18_thousand_calls_over_tcp_without_failure() {
    calls("tcp", 1000);
}

#[test]
fn rfc3261_16_10_cancel_while_ringing() {
    let p = ports();
    let _uas = uas("ring_uas.xml", p + 1, &[]);
    let node = Node::start(
        &[
            "--listen",
            &format!("udp:{}", addr(p)),
            "--next-hop",
            &format!("sip:{}", addr(p + 1)),
        ],
        p + 9,
    );
    let proxy = addr(p);
    let out = uac(
        "cancel_uac.xml",
        &addr(p + 1),
        p + 2,
        &["-rsa", &proxy, "-m", "20", "-r", "20"],
    );
    assert_eq!(successful_calls(&out), 20);
    assert_eq!(
        node.metric("limes_sip_requests_received_total{method=\"CANCEL\"}"),
        20.0
    );
    // The 487s came from the UAS through the cancelled branches.
    assert!(node.metric("limes_sip_responses_received_total{class=\"4xx\"}") >= 20.0);
    assert_eq!(
        node.metric("limes_sip_drops_total{reason=\"bad_response\"}"),
        0.0
    );
}

#[test]
fn rfc3261_16_7_parallel_fork_one_answers_other_is_cancelled() {
    let p = ports();
    let _answers = uas("call_uas.xml", p + 1, &[]);
    let _rings = uas("ring_uas.xml", p + 3, &[]);
    let node = Node::start(&["--listen", &format!("udp:{}", addr(p))], p + 9);
    // Two bindings of equal q: forked in parallel (§16.6).
    for uas in [p + 1, p + 3] {
        node.rpc(
            "ul.add",
            &["service", &format!("sip:service@{}", addr(uas))],
        )
        .expect("static contact");
    }
    let proxy = addr(p);
    let out = uac(
        "call_uac.xml",
        &addr(p + 1),
        p + 2,
        &["-rsa", &proxy, "-m", "20", "-r", "20", "-d", "100"],
    );
    assert_eq!(successful_calls(&out), 20);
    // Each call went to both UAS: 40 INVITE branches, 20 of them cancelled (487).
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        node.metric("limes_sip_responses_received_total{class=\"4xx\"}") >= 20.0,
        "every ringing branch was cancelled"
    );
    assert_eq!(
        node.metric("limes_sip_drops_total{reason=\"bad_response\"}"),
        0.0
    );
}

#[test]
fn rfc3261_17_1_1_2_late_uas_gets_retransmissions_and_the_call_completes() {
    let p = ports();
    // The UAS waits 1.2 s before answering: Timer A retransmits the INVITE at 0.5 s and 1.5 s.
    let _uas = uas("call_uas.xml", p + 1, &["-d", "1200"]);
    let node = Node::start(
        &[
            "--listen",
            &format!("udp:{}", addr(p)),
            "--next-hop",
            &format!("sip:{}", addr(p + 1)),
        ],
        p + 9,
    );
    let proxy = addr(p);
    let out = uac(
        "call_uac.xml",
        &addr(p + 1),
        p + 2,
        &["-rsa", &proxy, "-m", "5", "-r", "5", "-d", "100"],
    );
    assert_eq!(successful_calls(&out), 5);
    assert!(node.metric("limes_sip_retransmissions_total{direction=\"sent\"}") >= 5.0);
}

#[test]
fn rfc3261_16_3_max_forwards_zero_gets_483() {
    let p = ports();
    let node = Node::start(
        &[
            "--listen",
            &format!("udp:{}", addr(p)),
            "--next-hop",
            &format!("sip:{}", addr(p + 1)),
        ],
        p + 9,
    );
    let proxy = addr(p);
    let out = uac(
        "maxfwd0_uac.xml",
        &addr(p + 1),
        p + 2,
        &["-rsa", &proxy, "-m", "3", "-r", "10"],
    );
    assert_eq!(successful_calls(&out), 3);
    assert_eq!(
        node.metric("limes_sip_responses_sent_total{class=\"4xx\"}"),
        3.0
    );
}

#[test]
fn rfc3261_16_3_a_loop_gets_482() {
    let p = ports();
    // The next hop is the node itself: every INVITE comes back with this node's Via.
    let node = Node::start(
        &[
            "--listen",
            &format!("udp:{}", addr(p)),
            "--next-hop",
            &format!("sip:{}", addr(p)),
        ],
        p + 9,
    );
    let proxy = addr(p);
    let out = uac(
        "loop_uac.xml",
        &addr(p + 1),
        p + 2,
        &["-rsa", &proxy, "-m", "3", "-r", "10"],
    );
    assert_eq!(successful_calls(&out), 3);
    assert!(node.metric("limes_sip_requests_received_total{method=\"INVITE\"}") >= 6.0);
}

/// Requests the node originates: `sip.ping` sends OPTIONS and reports the answer and its
/// round-trip time (sipp answers), or a timeout with no hang (a dead port).
#[test]
fn sip_ping_reports_an_answer_and_a_timeout() {
    let p = ports();
    let _uas = uas("options_uas.xml", p + 1, &[]);
    let node = Node::start(&["--listen", &format!("udp:{}", addr(p))], p + 9);
    let answer = node
        .rpc("sip.ping", &[&format!("sip:127.0.0.1:{}", p + 1)])
        .expect("ping answers");
    assert_eq!(answer["status"], 200, "{answer}");
    assert_eq!(answer["reason"], "OK");
    assert_eq!(answer["answered"], true);
    assert!(answer["rtt_ms"].as_f64().is_some_and(|ms| ms < 1000.0));

    // Nothing listens on p + 3: the ping ends at its timeout with 408, no response.
    let started = std::time::Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_limes"))
        .args(["ctl", "--admin", &node.admin, "--json", "sip.ping"])
        .arg(format!("sip:127.0.0.1:{}", p + 3))
        .arg("1.5")
        .output()
        .expect("ctl runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let dead: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(dead["status"], 408, "{dead}");
    assert_eq!(dead["answered"], false);
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(1400), "{waited:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");

    // A bad URI is refused with a message that names it.
    let err = node.rpc("sip.ping", &["sip:nowhere.invalid"]).unwrap_err();
    assert!(err.contains("nowhere.invalid"), "{err}");
    assert_eq!(
        node.metric("limes_sip_originated_requests_total{method=\"OPTIONS\"}"),
        2.0
    );
    assert_eq!(
        node.metric("limes_sip_originated_outcomes_total{outcome=\"timeout\"}"),
        1.0
    );
    assert_eq!(node.rpc("tm.stats", &[]).expect("stats")["total"], 2);
}
