//! State that must not be lost: bindings and table changes survive `kill -9`; an existing
//! Kamailio db_text installation is imported unchanged.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::{status, Node, Peer};

fn limes(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_limes"))
        .args(args)
        .output()
        .expect("limes runs")
}

fn import(tables: &Path, state: &Path, extra: &[&str]) -> std::process::Output {
    let (tables, state) = (tables.display().to_string(), state.display().to_string());
    let mut args = vec!["import", "dbtext", &tables, "--state-dir", &state];
    args.extend_from_slice(extra);
    limes(&args)
}

/// A successful import's JSON report.
fn imported(tables: &Path, state: &Path, extra: &[&str]) -> serde_json::Value {
    let out = import(tables, state, extra);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON report")
}

fn fresh_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("limes-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("dir");
    d
}

fn spawn(config: &Path, state: &Path, port: u16) -> Node {
    let admin = format!("127.0.0.1:{}", port + 1);
    Node::spawn(
        &[
            "run",
            "--config",
            &config.display().to_string(),
            "--listen",
            &format!("udp:127.0.0.1:{port}"),
            "--admin",
            &admin,
            "--state-dir",
            &state.display().to_string(),
        ],
        &admin,
    )
}

/// The subscriber table as Kamailio's db_text keeps it (the scheme of
/// `../shared/bench/kamailio/gen_subscribers.sh`), ending with the mandatory empty line.
fn subscriber_table(n: usize) -> String {
    let mut t = String::from(
        "id(int,auto) username(string) domain(string) password(string) ha1(string,null) ha1b(string,null) \n",
    );
    for i in 1..=n {
        t.push_str(&format!("{i}:user{i:06}:bench.local:pw{i:06}::\n"));
    }
    t
}

#[test]
fn bindings_and_table_changes_survive_kill_9() {
    const USERS: usize = 1000;
    let dir = fresh_dir("kill9");
    let tables = dir.join("dbtext");
    std::fs::create_dir_all(&tables).expect("dir");
    std::fs::write(tables.join("subscriber"), subscriber_table(USERS)).expect("table");
    let state = dir.join("state");
    let report = imported(&tables, &state, &[]);
    assert_eq!(report["subscribers"], USERS);

    let config = dir.join("limes.toml");
    std::fs::write(
        &config,
        "[auth]\nalgorithms = [\"MD5\"]\n\n[[trusted]]\ncidr = \"127.0.0.2/32\"\n",
    )
    .expect("config");
    let port = support::ports();
    let sip = format!("127.0.0.1:{port}");
    let mut node = spawn(&config, &state, port);

    // 1,000 authenticated registrations, all from one sipp socket.
    let csv = dir.join("users.csv");
    let mut lines = String::from("SEQUENTIAL\n");
    for i in 1..=USERS {
        lines.push_str(&format!(
            "user{i:06};bench.local;[authentication username=user{i:06} password=pw{i:06}]\n"
        ));
    }
    std::fs::write(&csv, lines).expect("csv");
    let phones = support::ports();
    let n = USERS.to_string();
    let out = support::uac(
        "reg_csv_uac.xml",
        &sip,
        phones,
        &[
            "-inf",
            &csv.display().to_string(),
            "-m",
            &n,
            "-r",
            "250",
            "-l",
            "200",
        ],
    );
    assert_eq!(support::successful_calls(&out), USERS as u64);
    assert_eq!(node.metric("limes_registrar_aors"), USERS as f64);
    // Changes made over the API are state too.
    node.rpc("subscriber.add", &["late@bench.local", "late-pw"])
        .expect("added");
    node.rpc("trusted.add", &["192.0.2.0/24", "any", "", "partner"])
        .expect("added");
    node.rpc("subscriber.rm", &["user000999@bench.local"])
        .expect("removed");
    // Trunks and rules made over the API too.
    for name in ["lab", "tmp"] {
        let def = format!(r#"{{"name":"{name}","destinations":[{{"uri":"sip:192.0.2.50"}}]}}"#);
        node.rpc("trunk.add", &[&def]).expect("trunk added");
    }
    node.rpc("trunk.rm", &["tmp"]).expect("trunk removed");
    node.rpc("trunk.set_state", &["lab", "sip:192.0.2.50", "drained"])
        .expect("drained");
    let rules = r#"[{"name":"lab-out","source":"trusted","user":"prefix:77","action":"trunk:lab"},
                    {"name":"to-user","source":"any","registered":true,"action":"location"},
                    {"name":"nobody","source":"any","action":"reply:404 Not Here"}]"#;
    node.rpc("route.set", &[rules]).expect("rules set");

    // kill -9: no shutdown path runs.
    let _ = node.child.kill();
    let _ = node.child.wait();
    assert!(!node.is_running());

    let node = spawn(&config, &state, port);
    let dump = node.rpc("ul.dump", &[]).expect("ul.dump");
    let domain = &dump["Domains"][0]["Domain"];
    assert_eq!(domain["Size"], USERS, "every AoR is back");
    let aors = domain["AoRs"].as_array().expect("AoRs");
    for aor in aors {
        let c = &aor["Info"]["Contacts"][0]["Contact"];
        let left = c["Expires"].as_u64().unwrap_or(0);
        assert!(
            (3300..=3600).contains(&left),
            "{aor}: remaining expiry {left}"
        );
        let address = c["Address"].as_str().unwrap_or_default();
        assert!(address.contains(&format!(":{phones};")), "{address}");
    }
    assert_eq!(node.metric("limes_registrar_contacts"), USERS as f64);
    assert!(node.rpc("subscriber.show", &["late@bench.local"]).is_ok());
    assert!(node
        .rpc("subscriber.show", &["user000999@bench.local"])
        .is_err());
    assert_eq!(
        node.rpc("subscriber.list", &[])
            .expect("list")
            .as_array()
            .map(Vec::len),
        Some(USERS)
    );
    assert!(node
        .rpc("permissions.trustedDump", &[])
        .expect("dump")
        .to_string()
        .contains("192.0.2.0/24"));
    let trunks = node.rpc("trunk.list", &[]).expect("trunk.list");
    let names: Vec<&str> = trunks["trunks"]
        .as_array()
        .expect("trunks")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(
        names,
        ["lab"],
        "the API's trunk is back, the removed one is not"
    );
    // The drain too (journaled as a non-JSON value it was skipped on restart).
    let lab = &trunks["trunks"][0]["destinations"][0];
    assert_eq!(lab["state"], "drained", "{lab}");
    let routes = node.rpc("route.list", &[]).expect("route.list");
    assert_eq!(routes["source"], "api", "{routes}");
    assert_eq!(routes["rules"][0]["name"], "lab-out", "{routes}");

    // A call reaches one of the restored bindings: the trusted PBX calls user000500,
    // whose phone (a sipp UAS on the registered socket) answers.
    let _phone = support::uas("call_uas.xml", phones, &[]);
    let pbx = Peer::bind("127.0.0.2");
    let invite = "INVITE sip:user000500@bench.local SIP/2.0\r\n\
                  Via: SIP/2.0/UDP {addr};branch=z9hG4bK-after-restart;rport\r\n\
                  Max-Forwards: 70\r\n\
                  From: <sip:pbx@bench.local>;tag=p1\r\n\
                  To: <sip:user000500@bench.local>\r\n\
                  Call-ID: after-restart@test\r\n\
                  CSeq: 1 INVITE\r\n\
                  Contact: <sip:pbx@{addr}>\r\n\
                  Content-Length: 0\r\n\r\n";
    let r = pbx.exchange(&sip, invite, Duration::from_secs(3));
    let last = r.last().map(String::as_str).unwrap_or("");
    assert_eq!(status(last), 200, "{r:?}");
    assert!(last.contains("To: <sip:user000500@bench.local>"), "{last}");
    // The restored rules decide: nobody registered under 999 -> the API rule's reply.
    let r = pbx.exchange(
        &sip,
        &invite
            .replace("user000500", "nobody999")
            .replace("after-restart", "after-restart-2"),
        Duration::from_secs(3),
    );
    let last = r.last().map(String::as_str).unwrap_or("");
    assert_eq!(status(last), 404, "{r:?}");
    assert!(last.starts_with("SIP/2.0 404 Not Here"), "{last}");
}

#[test]
fn import_of_every_dbtext_table() {
    let dir = fresh_dir("import");
    let tables = dir.join("dbtext");
    std::fs::create_dir_all(&tables).expect("dir");
    let files = [
        (
            "subscriber",
            "id(int,auto) username(string) domain(string) password(string) email_address(string,null) ha1(string,null) ha1b(string,null) rpid(string,null) \n\
             1:3000:192.168.16.5:secret:ops\\:desk@example.com:::\n\
             2:3001:192.168.16.5:other::::\n\
             3:3002:192.168.16.5:::abc123::\n",
        ),
        (
            "trusted",
            "id(int,auto) src_ip(string) proto(string) from_pattern(string,null) tag(string,null) \n\
             1:192.168.16.5:any::tm-ip\n",
        ),
        (
            "address",
            "id(int,auto) grp(int) ip_addr(string) mask(int) port(int) tag(string,null) \n\
             1:200:198.51.100.0:24:0:carrier\n",
        ),
        (
            "location",
            // The last record has no line end: db_text would not read it, nor do we.
            "id(int,auto) username(string) domain(string,null) contact(string) received(string,null) path(string,null) expires(int) q(double) callid(string) cseq(int) user_agent(string) socket(string,null) methods(int,null) \n\
             1:3000::sip\\:3000@192.168.16.195:::-1:0:2297E7@host:42:SJphone/1.65:udp\\:192.168.16.5\\:5060:\n\
             2:3001::sip\\:3001@192.168.16.198\\:5060:::-1:0:ff68b7bb:30752596:TAU-1::8159",
        ),
    ];
    for (name, text) in files {
        std::fs::write(tables.join(name), text).expect("table");
    }
    let state = dir.join("state");
    // Bad rows: each named by table, line and reason, and nothing imported.
    let out = import(&tables, &state, &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("2 bad rows, nothing imported"), "{err}");
    assert!(
        err.contains(
            "subscriber line 4: 3002@192.168.16.5: ha1 \"abc123\" is not an MD5 HA1 \
             (32 hex digits, found 6 characters)"
        ),
        "{err}"
    );
    assert!(err.contains("location: last line"), "{err}");
    assert!(!state.join("tables.wal.0").exists(), "nothing written");
    let report = imported(&tables, &state, &["--skip-bad-rows"]);
    assert_eq!(report["subscribers"], 2);
    assert_eq!(report["trusted"], 1);
    assert_eq!(report["address"], 1);
    assert_eq!(report["location"], 1);
    assert!(
        report["skipped"].to_string().contains("no line end"),
        "{report}"
    );

    let config = dir.join("limes.toml");
    std::fs::write(&config, "").expect("config");
    let port = support::ports();
    let node = spawn(&config, &state, port);
    let sub = node
        .rpc("subscriber.show", &["3000@192.168.16.5"])
        .expect("imported");
    assert_eq!(sub["attrs"]["email"], "ops:desk@example.com");
    assert!(node
        .rpc("permissions.trustedDump", &[])
        .expect("dump")
        .to_string()
        .contains("192.168.16.5/32"));
    let addresses = node.rpc("permissions.addressDump", &[]).expect("dump");
    assert_eq!(addresses["address"][0]["gid"], 200);
    assert_eq!(addresses["address"][0]["mask"], 24);
    let c = node.rpc("ul.lookup", &["3000"]).expect("imported binding");
    let contact = &c["Contacts"][0]["Contact"];
    assert_eq!(contact["Address"], "sip:3000@192.168.16.195");
    assert_eq!(contact["Call-ID"], "2297E7@host");
    assert_eq!(contact["Socket"], "udp:192.168.16.5:5060");

    // While the node runs, its state directory is locked.
    let out = import(&tables, &state, &["--skip-bad-rows"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use"));
}

/// A journal damaged in the middle (not a torn last write): the node refuses to start and
/// names the file and byte; with `--recover-journal` it starts with what precedes the
/// damage and sets the rest aside.
#[test]
fn a_damaged_journal_is_named_and_recovered_only_when_asked() {
    let dir = fresh_dir("damaged");
    let state = dir.join("state");
    let config = dir.join("limes.toml");
    std::fs::write(&config, "").expect("config");
    let port = support::ports();
    let mut node = spawn(&config, &state, port);
    for user in ["before", "after"] {
        node.rpc("subscriber.add", &[&format!("{user}@example.com"), "pw"])
            .expect("added");
    }
    assert!(node.terminate(Duration::from_secs(10)).is_some());
    let wal = state.join("tables.wal.0");
    let text = std::fs::read_to_string(&wal).expect("tables journal");
    let split = text.find('\n').expect("a first record") + 1;
    let damaged = format!(
        "{}P\t\"subscriber/x\"\t{{broken\n{}",
        &text[..split],
        &text[split..]
    );
    std::fs::write(&wal, damaged).expect("damage");

    let args = |extra: &[&str]| {
        let mut a = vec![
            "run".to_owned(),
            "--config".into(),
            config.display().to_string(),
            "--listen".into(),
            format!("udp:127.0.0.1:{port}"),
            "--admin".into(),
            format!("127.0.0.1:{}", port + 1),
            "--state-dir".into(),
            state.display().to_string(),
        ];
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let out = Command::new(env!("CARGO_BIN_EXE_limes"))
        .args(args(&[]))
        .output()
        .expect("limes runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{} is damaged at byte {split}", wal.display())),
        "{err}"
    );
    assert!(err.contains("--recover-journal"), "{err}");

    let recovered = args(&["--recover-journal"]);
    let recovered: Vec<&str> = recovered.iter().map(String::as_str).collect();
    let node = Node::spawn(&recovered, &format!("127.0.0.1:{}", port + 1));
    assert!(node.rpc("subscriber.show", &["before@example.com"]).is_ok());
    assert!(node.rpc("subscriber.show", &["after@example.com"]).is_err());
    assert!(state.join("tables.wal.0.corrupt").exists());
}
