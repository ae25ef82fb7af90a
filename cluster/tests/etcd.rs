//! The etcd backend against a real 3-member etcd (Debian's etcd-server) on loopback: two
//! nodes see each other's membership and table changes; a member killed under the writer
//! does not lose a write; a node that stops keeping its lease leaves the member list.

mod etcd_cluster;

use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_cluster::{eventually, EtcdCluster};
use limes_cluster::etcd::{EtcdSettings, EtcdStore};
use limes_cluster::index::Change;
use limes_cluster::{ClusterStore, Written};
use parking_lot::Mutex;

fn base_port() -> u16 {
    // Below the kernel's ephemeral range (32768-60999), with + 3_000 for the second test.
    24_000 + (std::process::id() % 300) as u16 * 10
}

/// A node's store, and the table changes it was told of.
fn node(
    name: &str,
    endpoints: &[String],
    runtime: &tokio::runtime::Runtime,
) -> (Arc<EtcdStore>, Arc<Mutex<Vec<Change>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let mut settings = EtcdSettings::new(
        endpoints.to_vec(),
        name,
        serde_json::json!({ "sip": format!("udp:127.0.0.1:5060/{name}") }),
    );
    settings.lease_ttl = Duration::from_secs(3);
    settings.timeout = Duration::from_millis(700);
    settings.binding_lease_step = Duration::from_secs(2);
    let store = EtcdStore::start(
        settings,
        runtime.handle(),
        Box::new(move |c: &[Change]| sink.lock().extend_from_slice(c)),
    )
    .expect("starts");
    (store, seen)
}

fn new_runtime(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("runtime")
}

fn names(store: &EtcdStore) -> Vec<String> {
    store.members().into_iter().map(|m| m.name).collect()
}

#[test]
fn two_nodes_share_members_and_tables_through_three_etcd_members() {
    let mut etcd = EtcdCluster::start(3, base_port());
    let runtime = new_runtime(2);
    let (a, _) = node("edge-a", &etcd.clients, &runtime);
    let (b, seen_b) = node("edge-b", &etcd.clients, &runtime);
    assert!(
        runtime.block_on(b.loaded(Duration::from_secs(5))),
        "b read the store"
    );
    assert!(
        eventually(Duration::from_secs(5), || names(&a) == ["edge-a", "edge-b"]
            && names(&b) == ["edge-a", "edge-b"]),
        "each lists both: {:?} {:?}",
        names(&a),
        names(&b)
    );
    let info = &a.members()[1].info;
    assert_eq!(info["sip"], "udp:127.0.0.1:5060/edge-b", "{info}");
    assert_eq!(info["lease_ttl_s"], 3);

    // A change made on a reaches b (well within a second).
    let started = Instant::now();
    a.put_table("subscriber/alice@example.com", r#"{"user":"alice"}"#)
        .expect("queued");
    let put = Change::Put {
        key: "/limes/v1/tables/subscriber/alice@example.com".into(),
        value: r#"{"user":"alice"}"#.into(),
    };
    assert!(eventually(Duration::from_secs(1), || seen_b
        .lock()
        .contains(&put)));
    let took = started.elapsed();
    assert!(took < Duration::from_secs(1), "{took:?}");
    assert_eq!(
        b.tables(),
        vec![(
            "subscriber/alice@example.com".to_owned(),
            r#"{"user":"alice"}"#.to_owned()
        )]
    );

    // The member a's writer talks to dies: the write goes through another.
    let writer_endpoint = a.status().endpoints["writer"].clone();
    let dead = etcd
        .clients
        .iter()
        .position(|c| *c == writer_endpoint)
        .expect("known");
    etcd.kill(dead);
    a.delete_table("subscriber/alice@example.com")
        .expect("queued");
    let gone = Change::Delete {
        key: "/limes/v1/tables/subscriber/alice@example.com".into(),
    };
    assert!(
        eventually(Duration::from_secs(10), || seen_b.lock().contains(&gone)),
        "the delete arrives through the remaining members: {:?}",
        a.status()
    );
    assert!(b.tables().is_empty());
    // b's watch can see the delete before a's writer has its transaction's answer and
    // takes the write off its queue.
    assert!(
        eventually(Duration::from_secs(2), || a.status().queued == 0),
        "{:?}",
        a.status()
    );
    assert_ne!(a.status().endpoints["writer"], writer_endpoint);

    // b stops keeping its lease (its tasks die with their runtime): after the lease's
    // time to live a lists only itself.
    let other = new_runtime(1);
    let (c, _) = node("edge-c", &etcd.clients, &other);
    assert!(eventually(Duration::from_secs(5), || names(&a)
        .contains(&"edge-c".to_owned())));
    drop(c);
    drop(other);
    assert!(
        eventually(Duration::from_secs(8), || !names(&a)
            .contains(&"edge-c".to_owned())),
        "c's lease ended: {:?}",
        names(&a)
    );
    // b leaves on purpose: at once.
    runtime.block_on(b.leave());
    assert!(
        eventually(Duration::from_secs(2), || names(&a) == ["edge-a"]),
        "{:?}",
        names(&a)
    );
}

/// What a REGISTER's 200 waits for: a confirmation comes once the binding is in etcd
/// (another node has it then); a binding goes with its lease when no node deletes it (its
/// node died); with no member answering, confirmations come at the deadline from the
/// local journal alone and the write follows when etcd is back.
#[test]
fn bindings_are_confirmed_once_in_etcd_and_go_with_their_lease() {
    let mut etcd = EtcdCluster::start(3, base_port() + 3_000);
    let runtime = new_runtime(2);
    let (a, _) = node("edge-a", &etcd.clients, &runtime);
    let (b, seen_b) = node("edge-b", &etcd.clients, &runtime);
    assert!(runtime.block_on(b.loaded(Duration::from_secs(5))));
    let confirm = |s: &EtcdStore| {
        let (tx, rx) = std::sync::mpsc::channel();
        s.confirm(Box::new(move |w| {
            tx.send((w, Instant::now())).expect("sent")
        }));
        rx
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let key = "/limes/v1/location/alice@example.com sip:alice@192.0.2.1";
    let put = Change::Put {
        key: key.into(),
        value: "{}".into(),
    };
    // Written twice in a row (a REGISTER and its retransmission): one write reaches
    // etcd, and the queue is empty again after it.
    for value in ["{\"first\":1}", "{}"] {
        a.put_location("alice@example.com sip:alice@192.0.2.1", value, now + 1)
            .expect("queued");
    }
    let (how, _) = confirm(&a)
        .recv_timeout(Duration::from_secs(2))
        .expect("confirmed");
    assert_eq!(how, Written::Shared);
    assert_eq!(a.status().queued, 0, "{:?}", a.status());
    // Confirmed means in etcd: b's watch has it (or is about to).
    assert!(eventually(Duration::from_millis(500), || seen_b
        .lock()
        .contains(&put)));
    // Nothing left to wait for: at once.
    assert!(matches!(confirm(&a).try_recv(), Ok((Written::Shared, _))));
    // Nobody deletes it: its lease does, within two steps of its expiry.
    let gone = Change::Delete { key: key.into() };
    assert!(
        eventually(Duration::from_secs(8), || seen_b.lock().contains(&gone)),
        "the lease ended the binding"
    );

    // No member answers: a confirmation comes from the journal alone at the deadline
    // (700 ms here), later ones at once; the write arrives once etcd is back.
    for i in 0..3 {
        etcd.kill(i);
    }
    a.put_location("bob@example.com sip:bob@192.0.2.2", "{}", now + 600)
        .expect("queued");
    let asked = Instant::now();
    let (how, at) = confirm(&a)
        .recv_timeout(Duration::from_secs(3))
        .expect("answered");
    assert_eq!(how, Written::Local);
    assert!(at - asked < Duration::from_millis(1500), "{:?}", at - asked);
    assert!(eventually(Duration::from_secs(3), || matches!(
        confirm(&a).try_recv(),
        Ok((Written::Local, _))
    )));
    assert!(a.status().confirmed_locally >= 2, "{:?}", a.status());
    for i in 0..3 {
        etcd.restart(i);
    }
    let bob = Change::Put {
        key: "/limes/v1/location/bob@example.com sip:bob@192.0.2.2".into(),
        value: "{}".into(),
    };
    assert!(
        eventually(Duration::from_secs(15), || seen_b.lock().contains(&bob)),
        "bob's binding follows: {:?}",
        a.status()
    );
    assert!(eventually(Duration::from_secs(5), || matches!(
        confirm(&a).try_recv(),
        Ok((Written::Shared, _))
    )));
}
