//! The admin API as an operator's tools use it: every JSON-RPC method's declared
//! parameters (a wrong type, a missing one, an extra one: each refused with a message
//! that names it), Kamailio's numeric forms through `limes ctl`, the JSON-RPC 2.0 batch
//! rules, Kamailio's statistics groups and `stats.reset_statistics`, `core.sockets_list`,
//! and `limes ctl`'s own contract (address and token from a configuration file or the
//! environment, errors as JSON, `--help` listing the methods).

mod support;

use std::process::{Command, Output};

use serde_json::{json, Value};
use support::{http, ports, Node};

fn limes(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_limes"))
        .args(args)
        .env_remove("LIMES_ADMIN")
        .env_remove("LIMES_TOKEN")
        .envs(env.iter().copied())
        .output()
        .expect("limes runs")
}

fn ctl(node: &Node, args: &[&str]) -> Output {
    let mut all = vec!["ctl", "--admin", &node.admin];
    all.extend_from_slice(args);
    limes(&all, &[])
}

/// The whole answer to a raw JSON-RPC body (`None`: HTTP 204, nothing to answer).
fn post(node: &Node, body: &str) -> Option<Value> {
    let (status, text) = http(&node.admin, "POST", "/RPC", body).expect("admin answers");
    if status == 204 {
        return None;
    }
    assert_eq!(status, 200, "{text}");
    Some(serde_json::from_str(&text).expect("JSON"))
}

fn call(node: &Node, method: &str, params: Value) -> Value {
    post(
        node,
        &json!({"jsonrpc": "2.0", "method": method, "params": params, "id": 7}).to_string(),
    )
    .expect("an answer")
}

/// A value of the declared type (the methods are not run: a later parameter is wrong).
fn sample(kind: &str) -> Value {
    match kind {
        "integer" => json!(1),
        "number" => json!(0.5),
        "json" => json!({}),
        _ => json!("x"),
    }
}

/// A value of another type than declared.
fn wrong(kind: &str) -> Value {
    match kind {
        "integer" => json!("ten"),
        "number" => json!([1]),
        "json" => json!(5),
        "string|integer" => json!({"a": 1}),
        _ => json!({"a": 1}),
    }
}

fn refused(answer: &Value, needle: &str, what: &str) {
    let e = &answer["error"];
    assert_eq!(e["code"], -32602, "{what}: {answer}");
    let m = e["message"].as_str().unwrap_or_default();
    assert!(m.contains(needle), "{what}: {m:?} should name {needle:?}");
}

#[test]
fn every_method_refuses_wrong_missing_and_extra_parameters() {
    let p = ports();
    let node = Node::start(&["--listen", &format!("udp:127.0.0.1:{p}")], p + 9);
    let methods = call(&node, "system.listMethods", json!([]))["result"].clone();
    let methods: Vec<String> = serde_json::from_value(methods).expect("a list");
    assert!(methods.len() >= 45, "{methods:?}");
    let mut checked = 0;
    for method in &methods {
        let help = call(&node, "system.methodHelp", json!([method]))["result"].clone();
        let params = help["params"].as_array().cloned().unwrap_or_default();
        let fixed: Vec<&Value> = params.iter().filter(|p| p["repeated"] != true).collect();
        let repeated = params.iter().any(|p| p["repeated"] == true);
        let kinds: Vec<&str> = fixed
            .iter()
            .map(|p| p["type"].as_str().unwrap_or(""))
            .collect();
        // Each parameter of the wrong type, the ones before it right.
        for (i, p) in fixed.iter().enumerate() {
            let mut values: Vec<Value> = kinds[..i].iter().map(|k| sample(k)).collect();
            values.push(wrong(kinds[i]));
            let name = p["name"].as_str().unwrap_or_default();
            refused(
                &call(&node, method, json!(values)),
                &format!("{name}: "),
                &format!("{method} with a wrong {name}"),
            );
            checked += 1;
        }
        // Each required parameter missing.
        for (i, p) in fixed
            .iter()
            .enumerate()
            .filter(|(_, p)| p["required"] == true)
        {
            let values: Vec<Value> = kinds[..i].iter().map(|k| sample(k)).collect();
            let name = p["name"].as_str().unwrap_or_default();
            refused(
                &call(&node, method, json!(values)),
                &format!("{name} is missing"),
                &format!("{method} without {name}"),
            );
            checked += 1;
        }
        // One too many.
        if !repeated {
            let mut values: Vec<Value> = kinds.iter().map(|k| sample(k)).collect();
            values.push(json!("extra"));
            refused(
                &call(&node, method, json!(values)),
                "parameters given, at most",
                &format!("{method} with an extra parameter"),
            );
            checked += 1;
        }
        assert!(
            help["usage"]
                .as_str()
                .is_some_and(|u| u.starts_with(method.as_str())),
            "{help}"
        );
    }
    assert!(checked > 100, "{checked} cases");
    // Nothing was added by the refused calls.
    assert_eq!(
        call(&node, "permissions.addressDump", json!([]))["result"]["address"],
        json!([])
    );
}

#[test]
fn kamailio_numeric_forms_through_ctl() {
    let p = ports();
    let node = Node::start(&["--listen", &format!("udp:127.0.0.1:{p}")], p + 9);
    // kamcmd's forms: numbers as numbers, s: forcing a string, the table name first.
    for args in [
        &["address.add", "200", "127.0.0.5", "5060", "udp", "peer"][..],
        &[
            "address.add",
            "s:201",
            "203.0.113.7",
            "s:5061",
            "udp",
            "carrier-b",
        ],
    ] {
        let out = ctl(&node, args);
        assert!(out.status.success(), "{args:?}: {out:?}");
    }
    let dump = call(&node, "permissions.addressDump", json!([]))["result"]["address"].clone();
    let ports: Vec<(u64, u64)> = dump
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| {
            (
                e["gid"].as_u64().unwrap_or(0),
                e["port"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert!(
        ports.contains(&(200, 5060)) && ports.contains(&(201, 5061)),
        "{dump}"
    );

    let out = ctl(
        &node,
        &["ul.add", "s:3009", "sip:3009@127.0.0.1:5999", "600", "0.5"],
    );
    assert!(out.status.success(), "{out:?}");
    for args in [
        &["--json", "ul.lookup", "3009"][..],
        &["--json", "ul.lookup", "location", "3009"],
    ] {
        let out = ctl(&node, args);
        assert!(out.status.success(), "{args:?}: {out:?}");
        let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
        let c = &v["Contacts"][0]["Contact"];
        assert_eq!(c["Q"], 0.5, "{v}");
        let expires = c["Expires"].as_u64().expect("Expires");
        assert!((590..=600).contains(&expires), "{v}");
    }
    // The numbers a user means, refused when out of range instead of dropped.
    let out = ctl(
        &node,
        &["--json", "address.add", "200", "127.0.0.6", "70000"],
    );
    assert!(!out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).expect("errors are JSON with --json");
    assert_eq!(v["error"]["code"], -32602, "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("PORT: 70000"));
    let out = ctl(
        &node,
        &["ul.add", "3010", "sip:3010@127.0.0.1:5999", "soon"],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("EXPIRES"),
        "{out:?}"
    );
    // Nested results as indented tables, not JSON on one line.
    let out = ctl(&node, &["ul.dump"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("\n          Contact:\n            Address        sip:3009@"),
        "{text}"
    );
    assert!(!text.contains("{\""), "{text}");
}

#[test]
fn batches_follow_json_rpc_2() {
    let p = ports();
    let node = Node::start(&["--listen", &format!("udp:127.0.0.1:{p}")], p + 9);
    let answer = post(
        &node,
        r#"[
        {"jsonrpc": "2.0", "method": "core.version", "id": 1},
        1,
        {"jsonrpc": "2.0", "method": "core.version"},
        {"foo": "boo"},
        {"jsonrpc": "2.0", "method": "no.such", "id": "x"},
        {"jsonrpc": "2.0", "method": "core.version", "params": 5, "id": 3},
        {"jsonrpc": "2.0", "method": "core.version", "id": {"a": 1}},
        {"jsonrpc": "1.0", "method": "core.version", "id": 4},
        {"jsonrpc": "2.0", "method": "no.such"}
    ]"#,
    )
    .expect("answers");
    let answers = answer.as_array().expect("an array");
    let codes: Vec<(Value, Value)> = answers
        .iter()
        .map(|a| (a["id"].clone(), a["error"]["code"].clone()))
        .collect();
    // The notifications (no id) get nothing, even the one that fails; every invalid
    // member gets -32600, with its id when it has a valid one.
    assert_eq!(
        codes,
        vec![
            (json!(1), Value::Null),
            (Value::Null, json!(-32600)),
            (Value::Null, json!(-32600)),
            (json!("x"), json!(-32601)),
            (json!(3), json!(-32600)),
            (Value::Null, json!(-32600)),
            (json!(4), json!(-32600)),
        ],
        "{answer}"
    );
    assert_eq!(post(&node, "[]").expect("answer")["error"]["code"], -32600);
    assert_eq!(
        post(&node, "[1,2]")
            .expect("answer")
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    assert_eq!(post(&node, "{").expect("answer")["error"]["code"], -32700);
    assert!(post(&node, r#"[{"jsonrpc":"2.0","method":"core.version"}]"#).is_none());
    assert_eq!(
        post(
            &node,
            r#"{"jsonrpc":"2.0","method":"core.version","id":null}"#
        )
        .expect("an id of null is answered")["result"],
        format!("limes {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn statistics_groups_reset_and_sockets() {
    let p = ports();
    let node = Node::start(
        &[
            "--listen",
            &format!("udp:127.0.0.1:{p}"),
            "--listen",
            &format!("tcp:127.0.0.1:{p}"),
        ],
        p + 9,
    );
    let all = call(&node, "stats.get_statistics", json!(["all"]))["result"].clone();
    for name in [
        "core:uptime",
        "tm:current",
        "sl:sent_replies",
        "sl:4xx_replies",
        "usrloc:registered_users",
        "usrloc:location-contacts",
        "registrar:accepted_regs",
        "registrar:rejected_regs",
        "registrar:max_expires",
        "auth:successful_auths",
        "auth:failed_auths",
        "dialog:active_dialogs",
    ] {
        assert!(all.get(name).is_some(), "{name} missing: {all}");
    }
    // A REGISTER for nobody: challenged (a stateless 401).
    let peer = support::Peer::bind("127.0.0.1");
    let register = "REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {addr};branch=z9hG4bKst1\r\n\
                    Max-Forwards: 70\r\nFrom: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:a@127.0.0.1>\r\n\
                    Call-ID: st1\r\nCSeq: 1 REGISTER\r\nContact: <sip:a@{addr}>\r\nContent-Length: 0\r\n\r\n";
    let r = peer.exchange(
        &format!("127.0.0.1:{p}"),
        register,
        std::time::Duration::from_secs(2),
    );
    assert_eq!(support::status(support::final_of(&r)), 401);
    let sl = call(&node, "stats.get_statistics", json!(["sl:"]))["result"].clone();
    assert_eq!(sl["sl:4xx_replies"], 1, "{sl}");
    assert_eq!(sl["sl:401_replies"], 1, "{sl}");
    assert!(sl
        .as_object()
        .is_some_and(|m| m.keys().all(|k| k.starts_with("sl:"))));
    let one = call(
        &node,
        "stats.get_statistics",
        json!(["sl:401_replies", "tm:current"]),
    );
    assert_eq!(one["result"].as_object().map(|m| m.len()), Some(2), "{one}");

    let reset = call(&node, "stats.reset_statistics", json!(["sl:"]));
    assert!(reset["result"]["reset"]
        .as_array()
        .is_some_and(|r| r.contains(&json!("sl:4xx_replies"))));
    let sl = call(&node, "stats.get_statistics", json!(["sl:"]))["result"].clone();
    assert_eq!(sl["sl:4xx_replies"], 0, "{sl}");
    // Prometheus's counter did not go back.
    assert_eq!(
        node.metric("limes_auth_challenges_total{status=\"401\"}"),
        1.0
    );
    refused(
        &call(&node, "stats.get_statistics", json!(["shmem:"])),
        "unknown statistic or group",
        "an unknown group",
    );

    let sockets = call(&node, "core.sockets_list", json!([]))["result"]["socket"].clone();
    assert_eq!(
        sockets.as_array().map(|s| s
            .iter()
            .map(|s| (s["proto"].clone(), s["port"].clone()))
            .collect::<Vec<_>>()),
        Some(vec![(json!("udp"), json!(p)), (json!("tcp"), json!(p))]),
        "{sockets}"
    );
}

#[test]
fn ctl_finds_the_node_from_its_configuration_or_the_environment() {
    let p = ports();
    let dir = std::env::temp_dir().join(format!("limes-ctl-conf-{p}"));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("limes.toml");
    std::fs::write(
        &file,
        format!(
            "[admin]\nlisten = \"127.0.0.1:{}\"\ntoken = \"s3cret-token\"\n",
            p + 9
        ),
    )
    .expect("config");
    let _node = Node::spawn(
        &[
            "run",
            "--config",
            &file.display().to_string(),
            "--listen",
            &format!("udp:127.0.0.1:{p}"),
            "--state-dir",
            &dir.join("state").display().to_string(),
        ],
        &format!("127.0.0.1:{}", p + 9),
    );
    let conf = file.display().to_string();
    let out = limes(&["ctl", "--config", &conf, "core.version"], &[]);
    assert!(out.status.success(), "{out:?}");
    let admin = format!("127.0.0.1:{}", p + 9);
    let env = [
        ("LIMES_ADMIN", admin.as_str()),
        ("LIMES_TOKEN", "s3cret-token"),
    ];
    let out = limes(&["ctl", "core.version"], &env);
    assert!(out.status.success(), "{out:?}");
    // Without the token: refused, and said why.
    let out = limes(&["ctl", "--admin", &admin, "--json", "core.version"], &[]);
    assert!(!out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON error");
    assert!(
        v["error"]["message"].as_str().unwrap_or("").contains("401"),
        "{v}"
    );

    let help = limes(&["ctl", "--help"], &[]);
    let text = String::from_utf8_lossy(&help.stdout);
    for line in [
        "address.add GROUP CIDR [PORT] [PROTO] [TAG]",
        "ul.lookup [location] AOR",
    ] {
        assert!(text.contains(line), "{line} not in {text}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
