//! Three nodes and a real 3-member etcd on loopback: each node lists all three members; a
//! subscriber added on node 3 registers (sipp, digest) on node 1 within a second; a node
//! killed with SIGKILL leaves the member list when its lease ends.

#[path = "../../cluster/tests/etcd_cluster/mod.rs"]
mod etcd_cluster;
mod support;

use std::time::{Duration, Instant};

use etcd_cluster::{eventually, EtcdCluster};
use support::{Node, Peer};

/// etcd's ports for this process (three clusters: + 1_000, + 2_000), below the kernel's
/// ephemeral range and apart from the nodes' ([`support::ports`]).
fn etcd_base() -> u16 {
    20_000 + (std::process::id() % 100) as u16 * 10
}

/// A phone (sipp) registers `user` (password `USER-pw`) through the node on `port`,
/// answering its digest challenge; panics unless it gets its 200. The phone's port.
fn register(port: u16, user: &str) -> u16 {
    let password = format!("{user}-pw");
    let phone = support::ports();
    support::uac(
        "reg_uac.xml",
        &format!("127.0.0.1:{port}"),
        phone,
        &[
            "-s",
            user,
            "-au",
            user,
            "-ap",
            &password,
            "-key",
            "domain",
            "example.com",
            "-key",
            "expires",
            "600",
            "-m",
            "1",
        ],
    );
    phone
}

/// Three nodes `edge-1` .. `edge-3` on UDP loopback ports, each with `config` and the
/// `[cluster]` section for `etcd` (2-second leases); the nodes and their SIP ports.
fn start_nodes(etcd: &EtcdCluster, name: &str, config: &str) -> (Vec<Node>, Vec<u16>) {
    let path = std::env::temp_dir().join(format!("{name}-{}.toml", std::process::id()));
    std::fs::write(
        &path,
        format!(
            "{config}\n[cluster]\netcd = {:?}\nlease_ttl_s = 2\ntimeout_ms = 1000\n",
            etcd.clients
        ),
    )
    .expect("config");
    let path = path.display().to_string();
    let ports: Vec<u16> = (0..3).map(|_| support::ports()).collect();
    let nodes = ports
        .iter()
        .enumerate()
        .map(|(i, port)| {
            Node::start(
                &[
                    "--config",
                    &path,
                    "--node-name",
                    &format!("edge-{}", i + 1),
                    "--listen",
                    &format!("udp:127.0.0.1:{port}"),
                    "--listen",
                    &format!("tcp:127.0.0.1:{port}"),
                ],
                port + 9,
            )
        })
        .collect();
    (nodes, ports)
}

fn member_names(node: &Node) -> Vec<String> {
    node.rpc("cluster.members", &[])
        .ok()
        .and_then(|v| {
            v["members"].as_array().map(|m| {
                m.iter()
                    .filter_map(|x| x["name"].as_str().map(str::to_owned))
                    .collect()
            })
        })
        .unwrap_or_default()
}

#[test]
fn three_nodes_share_members_and_subscribers() {
    let mut etcd = EtcdCluster::start(3, etcd_base());
    let (mut nodes, ports) = start_nodes(
        &etcd,
        "limes-cluster",
        "[auth]\nalgorithms = [\"MD5\"]\n\n[[trusted]]\ncidr = \"127.0.0.2/32\"\n",
    );
    let all = ["edge-1", "edge-2", "edge-3"];
    for n in &nodes {
        assert!(
            eventually(Duration::from_secs(10), || member_names(n) == all),
            "{:?}",
            member_names(n)
        );
    }
    let status = nodes[0].rpc("cluster.status", &[]).expect("status");
    assert_eq!(status["backend"], "etcd", "{status}");

    // A subscriber added through node 3 is known to node 1 within a second ...
    let started = Instant::now();
    nodes[2]
        .rpc("subscriber.add", &["carol@example.com", "carol-pw"])
        .expect("added on node 3");
    assert!(
        eventually(Duration::from_secs(1), || nodes[0]
            .rpc("subscriber.show", &["carol@example.com"])
            .is_ok()),
        "node 1 knows carol"
    );
    let took = started.elapsed();
    // ... and registers there with her password (sipp answers the digest challenge).
    let phone = register(ports[0], "carol");
    assert!(took < Duration::from_secs(1), "{took:?}");

    // Her binding is every node's: ul.lookup on node 3 names node 1 as its node, and a
    // call through node 2 reaches her phone (UDP, no NAT: sent to it directly).
    assert!(
        eventually(Duration::from_secs(1), || nodes[2]
            .rpc("ul.lookup", &["carol"])
            .is_ok_and(|v| v.to_string().contains("edge-1"))),
        "node 3: {:?}; node 1: {:?}",
        nodes[2].rpc("ul.lookup", &["carol"]),
        nodes[0].rpc("ul.lookup", &["carol"])
    );
    let _carol = support::uas("call_uas.xml", phone, &[]);
    let caller = Peer::bind("127.0.0.2");
    let invite = "INVITE sip:carol@example.com SIP/2.0\r\n\
                  Via: SIP/2.0/UDP {addr};branch=z9hG4bK-cluster-1;rport\r\n\
                  Max-Forwards: 70\r\n\
                  From: <sip:pbx@example.com>;tag=c1\r\n\
                  To: <sip:carol@example.com>\r\n\
                  Call-ID: cluster-call-1@test\r\n\
                  CSeq: 1 INVITE\r\n\
                  Contact: <sip:pbx@{addr}>\r\n\
                  Content-Length: 0\r\n\r\n";
    let r = caller.exchange(
        &format!("127.0.0.1:{}", ports[1]),
        invite,
        Duration::from_secs(5),
    );
    let last = r.last().map(String::as_str).unwrap_or_default();
    assert_eq!(support::status(last), 200, "{r:?}");

    // Behind a NAT: frank's Contact is a private address; only node 1 (which his
    // REGISTER came through) can reach him, at the NAT's address. A call through node 2
    // goes through node 1.
    nodes[0]
        .rpc("subscriber.add", &["frank@example.com", "frank-pw"])
        .expect("added");
    let frank = Peer::bind("127.0.0.8");
    let node1 = format!("127.0.0.1:{}", ports[0]);
    let frank_register = "REGISTER sip:example.com SIP/2.0\r\n\
                    Via: SIP/2.0/UDP {addr};branch=z9hG4bK-frank-1;rport\r\n\
                    Max-Forwards: 70\r\n\
                    From: <sip:frank@example.com>;tag=f1\r\n\
                    To: <sip:frank@example.com>\r\n\
                    Call-ID: frank-reg@test\r\n\
                    CSeq: 1 REGISTER\r\n\
                    Contact: <sip:frank@10.255.0.1:5999>\r\n\
                    Expires: 600\r\n\
                    Content-Length: 0\r\n\r\n";
    let r = support::register_authed(
        &frank,
        &node1,
        "example.com",
        ("frank", "frank-pw"),
        1,
        frank_register,
    );
    assert_eq!(support::status(support::final_of(&r)), 200, "{r:?}");
    assert!(eventually(Duration::from_secs(1), || nodes[1]
        .rpc("ul.lookup", &["frank"])
        .is_ok_and(|v| v.to_string().contains("edge-1"))));
    let to_frank = invite
        .replace("carol", "frank")
        .replace("cluster-call-1", "cluster-call-2")
        .replace("z9hG4bK-cluster-1", "z9hG4bK-cluster-2")
        .replace("{addr}", &caller.addr().to_string());
    caller
        .sock
        .send_to(to_frank.as_bytes(), format!("127.0.0.1:{}", ports[1]))
        .expect("sends");
    let got = support::receive(&frank, Duration::from_secs(3)).expect("the INVITE reaches frank");
    assert!(got.starts_with("INVITE sip:frank@10.255.0.1:5999"), "{got}");
    let vias = support::header(&got, "Via");
    assert!(
        vias[0].contains(&node1) && vias[1].contains(&format!(":{}", ports[1])),
        "through node 2, then node 1 ({ports:?}): {vias:?}"
    );
    frank
        .sock
        .send_to(support::answer(&got, 200, "OK").as_bytes(), &node1)
        .expect("sends");
    assert!(
        answered(&caller, "cluster-call-2"),
        "frank's 200 reaches the caller"
    );

    // Over TCP: henry's phone registers through node 1 on a connection of its own; a call
    // through node 2 reaches him over that connection, from node 1.
    nodes[0]
        .rpc("subscriber.add", &["henry@example.com", "henry-pw"])
        .expect("added");
    let mut henry = std::net::TcpStream::connect(&node1).expect("TCP to node 1");
    henry
        .set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    let at = henry.local_addr().expect("bound").to_string();
    let henry_register = frank_register
        .replace("frank", "henry")
        .replace(
            "SIP/2.0/UDP {addr};branch=z9hG4bK-henry-1;rport",
            &format!("SIP/2.0/TCP {at};branch=z9hG4bK-henry-1"),
        )
        .replace(
            "sip:henry@10.255.0.1:5999",
            &format!("sip:henry@{at};transport=tcp"),
        );
    let challenge = tcp_exchange(&mut henry, &henry_register);
    let www = support::header(&challenge, "WWW-Authenticate");
    let c = limes_sip::digest::Challenge::parse(www[0]).expect("challenge");
    let auth = support::answer_register(&c, ("henry", "henry-pw"), "example.com", 1);
    let authed = henry_register
        .replace("z9hG4bK-henry-1", "z9hG4bK-henry-2")
        .replace("CSeq: 1", "CSeq: 2")
        .replacen(
            "Content-Length: 0\r\n",
            &format!("Authorization: {auth}\r\nContent-Length: 0\r\n"),
            1,
        );
    let ok = tcp_exchange(&mut henry, &authed);
    assert_eq!(support::status(&ok), 200, "{ok}");
    assert!(eventually(Duration::from_secs(1), || nodes[1]
        .rpc("ul.lookup", &["henry"])
        .is_ok_and(|v| v.to_string().contains("edge-1"))));
    let to_henry = to_frank
        .replace("frank", "henry")
        .replace("cluster-call-2", "cluster-call-3")
        .replace("z9hG4bK-cluster-2", "z9hG4bK-cluster-3");
    caller
        .sock
        .send_to(to_henry.as_bytes(), format!("127.0.0.1:{}", ports[1]))
        .expect("sends");
    let got = tcp_read(&mut henry).expect("the INVITE reaches henry over his connection");
    assert!(got.starts_with("INVITE sip:henry@"), "{got}");
    let vias = support::header(&got, "Via");
    assert!(
        vias[0].starts_with("SIP/2.0/TCP") && vias[1].contains(&format!(":{}", ports[1])),
        "through node 2, then node 1 over TCP: {vias:?}"
    );
    std::io::Write::write_all(&mut henry, support::answer(&got, 200, "OK").as_bytes())
        .expect("answers");
    assert!(
        answered(&caller, "cluster-call-3"),
        "henry's 200 reaches the caller"
    );
    nodes[0]
        .rpc("subscriber.rm", &["carol@example.com"])
        .expect("removed on node 1");
    assert!(
        eventually(Duration::from_secs(1), || nodes[2]
            .rpc("subscriber.show", &["carol@example.com"])
            .is_err()),
        "and removed through node 1, gone from node 3"
    );

    // The other tables too: a trusted peer from node 2, an address group entry from
    // node 1, a trunk from node 3, each seen by another node.
    nodes[1]
        .rpc("trusted.add", &["192.0.2.0/24", "any", "", "partner"])
        .expect("trusted on node 2");
    nodes[0]
        .rpc(
            "address.add",
            &["200", "198.51.100.0/24", "0", "any", "carrier"],
        )
        .expect("address on node 1");
    nodes[2]
        .rpc(
            "trunk.add",
            &[r#"{"name":"lab","destinations":[{"uri":"sip:192.0.2.50"}]}"#],
        )
        .expect("trunk on node 3");
    assert!(eventually(Duration::from_secs(1), || nodes[2]
        .rpc("permissions.trustedDump", &[])
        .is_ok_and(|d| d.to_string().contains("192.0.2.0/24"))));
    assert!(eventually(Duration::from_secs(1), || nodes[2]
        .rpc("permissions.allowSource", &["200", "198.51.100.7"])
        .is_ok_and(|r| r.to_string().contains("carrier"))));
    assert!(eventually(Duration::from_secs(1), || nodes[0]
        .rpc("trunk.list", &[])
        .is_ok_and(|t| t["trunks"][0]["name"] == "lab")));

    // `limes import dbtext --etcd` while the nodes run: every node has the imported
    // subscriber and binding within a second of the import's end, and the import never
    // was a member.
    let tables = std::env::temp_dir().join(format!("limes-cluster-dbtext-{}", std::process::id()));
    std::fs::create_dir_all(&tables).expect("dir");
    std::fs::write(
        tables.join("subscriber"),
        "id(int,auto) username(string) domain(string) password(string) \n1:gina:example.com:gina-pw\n",
    )
    .expect("subscriber table");
    std::fs::write(
        tables.join("location"),
        "id(int,auto) username(string) domain(string,null) contact(string) expires(int) q(double) callid(string) cseq(int) user_agent(string) \n\
         1:gina::sip\\:gina@192.0.2.77\\:5060:-1:0:gina-call:1:desk\n",
    )
    .expect("location table");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_limes"))
        .args(["import", "dbtext", &tables.display().to_string(), "--etcd"])
        .arg(etcd.clients.join(","))
        .output()
        .expect("limes import runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("report");
    assert_eq!(report["subscribers"], 1, "{report}");
    assert_eq!(report["location"], 1, "{report}");
    assert!(report["etcd_writes"].as_u64() >= Some(2), "{report}");
    for n in &nodes {
        assert!(
            eventually(Duration::from_secs(1), || n
                .rpc("subscriber.show", &["gina@example.com"])
                .is_ok()
                && n.rpc("ul.lookup", &["gina"]).is_ok()),
            "{} has gina",
            n.admin
        );
        assert_eq!(member_names(n), all);
    }

    // Every etcd member stops: the nodes go on (ready, but degraded), a subscriber
    // known before registers, a change made meanwhile waits and reaches the other nodes
    // once etcd is back.
    nodes[0]
        .rpc("subscriber.add", &["dave@example.com", "dave-pw"])
        .expect("added");
    assert!(eventually(Duration::from_secs(1), || nodes[2]
        .rpc("subscriber.show", &["dave@example.com"])
        .is_ok()));
    for i in 0..3 {
        etcd.kill(i);
    }
    let ready = |n: &Node| {
        support::http(&n.admin, "GET", "/health/ready", "").map(|(s, b)| (s, b.trim().to_owned()))
    };
    assert!(
        eventually(Duration::from_secs(10), || nodes[0]
            .metric("limes_cluster_degraded")
            == 1.0),
        "degraded: {:?}",
        nodes[0].rpc("cluster.status", &[])
    );
    let (code, body) = ready(&nodes[0]).expect("answers");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("degraded"), "{body}");
    register(ports[0], "dave");
    nodes[0]
        .rpc("subscriber.add", &["erin@example.com", "erin-pw"])
        .expect("added while etcd is away");
    assert!(nodes[0].metric("limes_cluster_write_queue") >= 1.0);
    for i in 0..3 {
        etcd.restart(i);
    }
    assert!(
        eventually(Duration::from_secs(20), || nodes[2]
            .rpc("subscriber.show", &["erin@example.com"])
            .is_ok()),
        "erin reaches node 3 once etcd is back: {:?}",
        nodes[0].rpc("cluster.status", &[])
    );
    assert!(eventually(Duration::from_secs(10), || nodes[0]
        .metric("limes_cluster_degraded")
        == 0.0));
    assert_eq!(nodes[0].metric("limes_cluster_write_queue"), 0.0);

    // Node 2 dies without a word: when its two-second lease ends, it is gone.
    let _ = nodes[1].child.kill();
    let _ = nodes[1].child.wait();
    for i in [0, 2] {
        assert!(
            eventually(Duration::from_secs(8), || member_names(&nodes[i])
                == ["edge-1", "edge-3"]),
            "{:?}",
            member_names(&nodes[i])
        );
    }
    // Node 3 stops (SIGTERM): it leaves at once.
    assert!(nodes[2].terminate(Duration::from_secs(10)).is_some());
    assert!(
        eventually(Duration::from_secs(2), || member_names(&nodes[0])
            == ["edge-1"]),
        "{:?}",
        member_names(&nodes[0])
    );
    nodes.clear();
}

/// A node with no etcd is a cluster of one on the embedded store: `cluster.members`
/// lists it, `cluster.status` says so, and the cluster metrics are there from the start.
#[test]
fn a_node_alone_is_a_cluster_of_one_on_the_embedded_store() {
    let port = support::ports();
    let node = Node::start(
        &[
            "--node-name",
            "alone",
            "--listen",
            &format!("udp:127.0.0.1:{port}"),
        ],
        port + 9,
    );
    assert_eq!(member_names(&node), ["alone"]);
    let status = node.rpc("cluster.status", &[]).expect("status");
    assert_eq!(status["backend"], "embedded", "{status}");
    assert_eq!(status["status"]["degraded"], false, "{status}");
    assert_eq!(node.metric("limes_cluster_members"), 1.0);
    let (_, scrape) = support::http(&node.admin, "GET", "/metrics", "").expect("scrape");
    assert!(scrape.contains("\nlimes_cluster_degraded 0\n"), "{scrape}");
}

/// Whether a 200 for the call `call_id` reaches `caller` within three seconds.
fn answered(caller: &Peer, call_id: &str) -> bool {
    let end = Instant::now() + Duration::from_secs(3);
    while Instant::now() < end {
        if support::receive(caller, Duration::from_millis(300))
            .is_some_and(|m| m.starts_with("SIP/2.0 200") && m.contains(call_id))
        {
            return true;
        }
    }
    false
}

/// One SIP message read from a TCP stream (headers, then Content-Length bytes).
fn tcp_read(s: &mut std::net::TcpStream) -> Option<String> {
    use std::io::Read;
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).ok()? == 0 {
            return None;
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let length: usize = support::header(&head, "Content-Length")
        .first()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    s.read_exact(&mut body).ok()?;
    Some(head + &String::from_utf8_lossy(&body))
}

/// Sends `text` on a TCP stream and reads until a final response.
fn tcp_exchange(s: &mut std::net::TcpStream, text: &str) -> String {
    std::io::Write::write_all(s, text.as_bytes()).expect("sends");
    loop {
        let r = tcp_read(s).expect("a response");
        if support::status(&r) >= 200 {
            return r;
        }
    }
}

/// `[[subscriber]]` entries `PREFIX000001` .. `PREFIX{n}` in `domain`, password
/// `pw` + the number (the users file of limes-load says the same).
fn subscribers(prefix: &str, n: usize, domain: &str) -> String {
    (1..=n)
        .map(|i| {
            format!(
                "[[subscriber]]\nuser = \"{prefix}{i:06}\"\ndomain = \"{domain}\"\npassword = \"pw{i:06}\"\n\n"
            )
        })
        .collect()
}

/// `user` (password `pw`) registers `contact` through the node at `to` from `phone`,
/// answering the digest challenge; whether a 200 came back (no panic: the node may be
/// dead).
fn try_register(phone: &Peer, to: &str, (user, pw): (&str, &str), contact: &str) -> bool {
    let register = format!(
        "REGISTER sip:example.com SIP/2.0\r\n\
         Via: SIP/2.0/UDP {{addr}};branch=z9hG4bK-{user};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:{user}@example.com>;tag=r-{user}\r\n\
         To: <sip:{user}@example.com>\r\n\
         Call-ID: reg-{user}@test\r\n\
         CSeq: 1 REGISTER\r\n\
         Contact: <{contact}>\r\n\
         Expires: 600\r\n\
         Content-Length: 0\r\n\r\n"
    );
    let challenge = phone.exchange(to, &register, Duration::from_secs(2));
    let www = support::header(support::final_of(&challenge), "WWW-Authenticate");
    let Some(c) = www
        .first()
        .and_then(|w| limes_sip::digest::Challenge::parse(w).ok())
    else {
        return false;
    };
    let auth = support::answer_register(&c, (user, pw), "example.com", 1);
    let with_auth = register
        .replace("branch=z9hG4bK-", "branch=z9hG4bK-a-")
        .replacen(
            "Content-Length: 0\r\n",
            &format!("Authorization: {auth}\r\nContent-Length: 0\r\n"),
            1,
        );
    let r = phone.exchange(to, &with_auth, Duration::from_secs(2));
    support::status(support::final_of(&r)) == 200
}

/// Every `AoR Contact` a node's location holds.
fn bindings(node: &Node) -> std::collections::BTreeSet<String> {
    let dump = node.rpc("ul.dump", &[]).expect("ul.dump");
    let mut all = std::collections::BTreeSet::new();
    for a in dump["Domains"][0]["Domain"]["AoRs"]
        .as_array()
        .into_iter()
        .flatten()
    {
        for c in a["Info"]["Contacts"].as_array().into_iter().flatten() {
            all.insert(format!(
                "{} {}",
                a["Info"]["AoR"].as_str().unwrap_or_default(),
                c["Contact"]["Address"].as_str().unwrap_or_default()
            ));
        }
    }
    all
}

/// kill -9 a node during a registration load (four phones registering users one after
/// another through node 3, the kill from another thread at a moment of its own): every
/// binding node 3 answered 200 is known to nodes 1 and 2, because the 200 waits until
/// etcd has it.
#[test]
fn a_node_killed_under_registration_load_leaves_every_binding_it_answered() {
    let etcd = EtcdCluster::start(3, etcd_base() + 1_000);
    let users = 4_000;
    let (mut nodes, ports) = start_nodes(
        &etcd,
        "limes-cluster-kill",
        &format!(
            "[auth]\nalgorithms = [\"MD5\"]\n\n{}",
            subscribers("u", users, "example.com")
        ),
    );
    assert!(eventually(Duration::from_secs(10), || member_names(
        &nodes[0]
    )
    .len()
        == 3));
    let node3 = format!("127.0.0.1:{}", ports[2]);
    let pid = nodes[2].pid().to_string();
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1_500));
        std::process::Command::new("kill")
            .args(["-9", &pid])
            .status()
            .expect("kill runs")
    });
    let answered: Vec<String> = std::thread::scope(|s| {
        let phones: Vec<_> = (0..4)
            .map(|t| {
                let node3 = &node3;
                s.spawn(move || {
                    let phone = Peer::bind("127.0.0.1");
                    let mut ok = Vec::new();
                    for i in (1 + t..=users).step_by(4) {
                        let (user, pw) = (format!("u{i:06}"), format!("pw{i:06}"));
                        let contact = format!("sip:{user}@192.0.2.1:5060");
                        if !try_register(&phone, node3, (&user, &pw), &contact) {
                            break;
                        }
                        ok.push(format!("{user} {contact}"));
                    }
                    ok
                })
            })
            .collect();
        phones
            .into_iter()
            .flat_map(|p| p.join().expect("phone"))
            .collect()
    });
    assert!(killer.join().expect("killer").success());
    let _ = nodes[2].child.wait();
    assert!(
        answered.len() >= 50 && answered.len() < users,
        "node 3 answered {} before it died",
        answered.len()
    );
    for n in &nodes[..2] {
        let missing = || {
            let known = bindings(n);
            answered
                .iter()
                .filter(|b| !known.contains(*b))
                .cloned()
                .collect::<Vec<_>>()
        };
        assert!(
            eventually(Duration::from_secs(3), || missing().is_empty()),
            "answered 200 by node 3 but unknown to {}: {} of {}, first {:?}; it knows {:?}",
            n.admin,
            missing().len(),
            answered.len(),
            missing().first(),
            bindings(n).iter().take(3).collect::<Vec<_>>()
        );
    }
}

/// A process killed when dropped.
struct Running(Option<std::process::Child>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `limes-load ARGS --json`, started (the binary beside `limes`; built when missing).
fn limes_load(args: &[&str]) -> Running {
    use std::process::{Command, Stdio};
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_limes")).with_file_name("limes-load");
    if !bin.exists() {
        let mut build = Command::new(env!("CARGO"));
        build.args(["build", "-q", "-p", "limes-loadtest", "--bin", "limes-load"]);
        if !cfg!(debug_assertions) {
            build.arg("--release");
        }
        assert!(build.status().expect("cargo runs").success());
    }
    Running(Some(
        Command::new(bin)
            .args(args)
            .arg("--json")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("limes-load starts"),
    ))
}

/// A limes-load run's JSON report, once it ends.
fn report(mut run: Running) -> serde_json::Value {
    let child = run.0.take().expect("running");
    let out = child.wait_with_output().expect("limes-load ends");
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("no report ({e}): {text}"))
}

/// The `AoR Contact` of every binding etcd holds (its JSON gateway, keys only).
fn etcd_bindings(endpoint: &str) -> Option<std::collections::BTreeSet<String>> {
    use base64::Engine;
    use std::io::{Read, Write};
    let b64 = base64::engine::general_purpose::STANDARD;
    let body = serde_json::json!({
        "key": b64.encode("/limes/v1/location/"),
        "range_end": b64.encode("/limes/v1/location0"),
        "keys_only": true,
    })
    .to_string();
    let host = endpoint.strip_prefix("http://")?;
    let mut s = std::net::TcpStream::connect(host).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "POST /v3/kv/range HTTP/1.0\r\nHost: {host}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let v: serde_json::Value = serde_json::from_str(raw.split_once("\r\n\r\n")?.1).ok()?;
    Some(
        v["kvs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|kv| b64.decode(kv["key"].as_str()?).ok())
            .filter_map(|k| {
                Some(
                    String::from_utf8(k)
                        .ok()?
                        .strip_prefix("/limes/v1/location/")?
                        .to_owned(),
                )
            })
            .collect(),
    )
}

/// Two minutes of registrations (limes-load, 20 a second through node 3) and calls (20
/// a second through node 2 to a user whose binding was made on node 1); one etcd member killed
/// for 30 s, later every member stopped for 30 s. No call and no registration fails;
/// while etcd is away registrations are answered from the journal; once it is back every
/// binding answered 200 is in etcd and on every node.
#[test]
fn two_minutes_of_load_through_a_lost_member_and_a_full_etcd_outage() {
    const USERS: usize = 300;
    let mut etcd = EtcdCluster::start(3, etcd_base() + 2_000);
    let (nodes, ports) = start_nodes(
        &etcd,
        "limes-cluster-load",
        &format!(
            "[auth]\nalgorithms = [\"MD5\"]\n\n[flood]\nenabled = false\n\n\
             [[trusted]]\ncidr = \"127.0.0.1/32\"\n\n{}",
            subscribers("user", USERS, "bench.local")
        ),
    );
    assert!(eventually(Duration::from_secs(10), || member_names(
        &nodes[0]
    )
    .len()
        == 3));
    let uas_port = support::ports();
    let _uas = limes_load(&[
        "uas",
        "--listen",
        &format!("127.0.0.1:{uas_port}"),
        "--threads",
        "1",
    ]);
    // The callee's binding, made on node 1 (its address is the limes-load UAS, so
    // node 2 sends calls to it directly).
    nodes[0]
        .rpc(
            "ul.add",
            &[
                "callee",
                &format!("sip:callee@127.0.0.1:{uas_port}"),
                "3600",
            ],
        )
        .expect("ul.add");
    let users = std::env::temp_dir().join(format!("limes-cluster-users-{}", std::process::id()));
    let text: String = (1..=USERS)
        .map(|i| format!("user{i:06},pw{i:06},bench.local\n"))
        .collect();
    std::fs::write(&users, text).expect("users file");
    // Two minutes unless LIMES_CLUSTER_LOAD_S says otherwise (the outages scale with it).
    let total: u64 = std::env::var("LIMES_CLUSTER_LOAD_S")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120);
    let seconds = &total.to_string();
    let registrations = limes_load(&[
        "register",
        "--registrar",
        &format!("127.0.0.1:{}", ports[2]),
        "--users",
        &users.display().to_string(),
        "--rate",
        "20",
        "--duration",
        seconds,
        "--threads",
        "1",
        "--max-fail-pct",
        "0",
    ]);
    let calls = limes_load(&[
        "uac",
        "--target",
        "sip:callee@example.com",
        "--proxy",
        &format!("127.0.0.1:{}", ports[1]),
        "--rate",
        "20",
        "--duration",
        seconds,
        "--call-length",
        "1000",
        "--threads",
        "1",
        "--max-fail-pct",
        "0",
    ]);
    let started = Instant::now();
    // At eighths of the run: one member away from 1/8 to 3/8, every member from 4/8
    // to 6/8 (15 s to 45 s, and 60 s to 90 s of two minutes).
    let at = |eighths: u64| {
        let when = Duration::from_secs(total) * eighths as u32 / 8;
        if let Some(wait) = when.checked_sub(started.elapsed()) {
            std::thread::sleep(wait);
        }
    };
    at(1);
    etcd.kill(0);
    at(3);
    etcd.restart(0);
    at(4);
    for i in 0..3 {
        etcd.kill(i);
    }
    assert!(
        eventually(Duration::from_secs(10), || nodes[2]
            .metric("limes_cluster_degraded")
            == 1.0),
        "node 3 says degraded"
    );
    at(6);
    for i in 0..3 {
        etcd.restart(i);
    }
    let (registrations, calls) = (report(registrations), report(calls));
    for (what, r) in [("registrations", &registrations), ("calls", &calls)] {
        assert_eq!(r["failed"], 0, "{what}: {r}");
        assert!(
            r["attempted"].as_u64().unwrap_or(0) >= total * 19,
            "{what}: {r}"
        );
        assert_eq!(r["completed"], r["attempted"], "{what}: {r}");
    }
    assert!(
        nodes[2].metric("limes_cluster_confirmed_locally_total") > 0.0,
        "registrations were answered from the journal while etcd was away"
    );
    // Every binding answered 200 is in etcd and on every node.
    let in_etcd = || etcd_bindings(&etcd.clients[0]).unwrap_or_default();
    assert!(
        eventually(Duration::from_secs(20), || {
            let e = in_etcd();
            e.len() > USERS && nodes.iter().all(|n| bindings(n) == e)
        }),
        "etcd holds {} bindings; the nodes {:?}",
        in_etcd().len(),
        nodes.iter().map(|n| bindings(n).len()).collect::<Vec<_>>()
    );
    let e = in_etcd();
    for i in 1..=USERS {
        let user = format!("user{i:06} ");
        assert!(e.iter().any(|b| b.starts_with(&user)), "{user}");
    }
}
