use bytes::Bytes;
use limes_sip::{Limits, Message};

use super::*;
use limes_cluster::store::{Member, Status, WriteError};

fn dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("limes-location-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn register(user: &str, call_id: &str, cseq: u32, contact: &str) -> Message {
    let text = format!(
        "REGISTER sip:example.com SIP/2.0\r\n\
         Via: SIP/2.0/UDP 192.0.2.4:5060;branch=z9hG4bK{cseq}\r\n\
         From: <sip:{user}@example.com>;tag=1\r\n\
         To: <sip:{user}@example.com>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: {cseq} REGISTER\r\n\
         Contact: {contact}\r\n\
         Content-Length: 0\r\n\r\n"
    );
    Message::parse(Bytes::from(text), &Limits::default()).expect("parses")
}

fn meta(_: &ContactUpdate<'_>) -> Meta {
    base_meta()
}

fn base_meta() -> Meta {
    Meta {
        received: "192.0.2.4:5060".parse().expect("addr"),
        transport: Transport::Udp,
        socket: "127.0.0.1:5060".parse().expect("addr"),
        path: vec![],
        user_agent: "test".into(),
        methods: String::new(),
        instance: None,
        reg_id: None,
        push: None,
        updated: 0,
        node: None,
    }
}

/// The location journaled in `d`, opened at `now`, and its metrics.
fn open(d: &std::path::Path, now: u64) -> (Location, Arc<LocationMetrics>) {
    let metrics = Arc::new(LocationMetrics::default());
    let loc = Location::open(Some(d), Rules::default(), 100, now, metrics.clone()).expect("opens");
    (loc, metrics)
}

fn apply(loc: &Location, user: &str, call_id: &str, cseq: u32, contact: &str, now: u64) {
    let msg = register(user, call_id, cseq, contact);
    let req = Register::read(&msg, &loc.rules()).expect("reads");
    loc.register(&format!("{user}@example.com"), &req, now, meta)
        .expect("applies");
}

#[test]
fn bindings_survive_reopening_and_expired_ones_are_dropped() {
    let d = dir("reopen");
    let (loc, metrics) = open(&d, 1000);
    apply(
        &loc,
        "alice",
        "c1",
        1,
        "<sip:alice@192.0.2.4>;expires=3600",
        1000,
    );
    apply(
        &loc,
        "alice",
        "c2",
        1,
        "<sip:alice@192.0.2.5>;expires=60;q=0.5",
        1000,
    );
    apply(
        &loc,
        "bob",
        "c3",
        1,
        "<sip:bob@192.0.2.6>;expires=600",
        1000,
    );
    apply(&loc, "bob", "c3", 2, "<sip:bob@192.0.2.6>;expires=0", 1000);
    assert_eq!(metrics.contacts.get(), 2);
    assert_eq!(metrics.aors.get(), 1);
    drop(loc); // as a crash: nothing flushed beyond the writes themselves

    let loc =
        Location::open(Some(&d), Rules::default(), 100, 1030, metrics.clone()).expect("reopens");
    let alice = loc.lookup("alice@example.com", 1030);
    assert_eq!(
        alice
            .iter()
            .map(|b| (b.contact.as_str(), b.remaining(1030)))
            .collect::<Vec<_>>(),
        [("sip:alice@192.0.2.4", 3570), ("sip:alice@192.0.2.5", 30)],
        "highest q first, remaining expiry kept"
    );
    assert!(
        loc.lookup("bob@example.com", 1030).is_empty(),
        "the removal was journaled"
    );
    drop(loc);

    let loc =
        Location::open(Some(&d), Rules::default(), 100, 1100, metrics.clone()).expect("reopens");
    assert_eq!(
        loc.lookup("alice@example.com", 1100).len(),
        1,
        "the 60 s binding expired"
    );
    assert_eq!(metrics.contacts.get(), 1);
}

#[test]
fn admin_changes_are_journaled_too() {
    let d = dir("admin");
    let (loc, metrics) = open(&d, 1000);
    apply(
        &loc,
        "alice",
        "c1",
        1,
        "<sip:alice@192.0.2.4>, <sip:alice@192.0.2.5>",
        1000,
    );
    assert_eq!(
        loc.remove("alice@example.com", Some("sip:alice@192.0.2.4"))
            .expect("removes"),
        1
    );
    loc.add(
        "carol@example.com",
        Binding {
            contact: "sip:carol@192.0.2.9".into(),
            q: None,
            expires_at: 5000,
            call_id: "admin".into(),
            cseq: 1,
            meta: meta(&ContactUpdate {
                uri: "",
                expires: 0,
                q: None,
                params: "",
            }),
        },
    )
    .expect("adds");
    drop(loc);
    let loc =
        Location::open(Some(&d), Rules::default(), 100, 1001, metrics.clone()).expect("reopens");
    let (all, truncated) = loc.dump(1001, 10);
    assert!(!truncated);
    let listed: Vec<(&str, usize)> = all.iter().map(|(a, l)| (a.as_str(), l.len())).collect();
    assert_eq!(listed, [("alice@example.com", 1), ("carol@example.com", 1)]);
    assert_eq!(loc.remove("alice@example.com", None).expect("removes"), 1);
    assert_eq!(metrics.aors.get(), 1);
}

#[test]
fn the_table_is_bounded_and_expiry_sweeps() {
    let metrics = Arc::new(LocationMetrics::default());
    let loc = Location::open(None, Rules::default(), 2, 1000, metrics.clone()).expect("opens");
    apply(&loc, "a", "c1", 1, "<sip:a@192.0.2.1>;expires=60", 1000);
    apply(&loc, "b", "c2", 1, "<sip:b@192.0.2.2>;expires=120", 1000);
    let msg = register("c", "c3", 1, "<sip:c@192.0.2.3>");
    let req = Register::read(&msg, &loc.rules()).expect("reads");
    assert!(matches!(
        loc.register("c@example.com", &req, 1000, meta),
        Err(LocationError::Full(2))
    ));
    assert_eq!(loc.expire(1070), 1);
    assert_eq!(metrics.aors.get(), 1);
    loc.register("c@example.com", &req, 1070, meta)
        .expect("room again after the sweep");
}

/// In a cluster a node's expired bindings are deleted through its journal (the store
/// forgets them); another node's binding it follows is not its to delete, and a node
/// alone writes nothing on expiry.
#[test]
fn in_a_cluster_expired_bindings_of_this_node_are_deleted_through_the_journal() {
    let d = dir("expire-shared");
    let (loc, _) = open(&d, 1000);
    apply(
        &loc,
        "alice",
        "c1",
        1,
        "<sip:alice@192.0.2.4>;expires=60",
        1000,
    );
    assert_eq!(loc.expire(2000), 1, "alone: dropped");
    loc.set_node_name("edge-1");
    let store = Arc::new(Recorder::default());
    loc.share(store.clone());
    let own = |_: &ContactUpdate<'_>| Meta {
        node: Some("edge-1".into()),
        ..base_meta()
    };
    let msg = register("bob", "c2", 1, "<sip:bob@192.0.2.4>;expires=60");
    let req = Register::read(&msg, &loc.rules()).expect("reads");
    loc.register("bob@example.com", &req, 2000, own)
        .expect("applies");
    let other = Binding {
        contact: "sip:carol@192.0.2.9".into(),
        q: None,
        expires_at: 2060,
        call_id: "c3".into(),
        cseq: 1,
        meta: Meta {
            node: Some("edge-2".into()),
            ..base_meta()
        },
    };
    loc.add("carol@example.com", other).expect("follows");
    assert_eq!(loc.expire(3000), 2);
    assert_eq!(
        *store.deleted.lock(),
        ["bob@example.com sip:bob@192.0.2.4"],
        "only this node's binding"
    );
    assert_eq!(
        *store.put.lock(),
        [
            ("bob@example.com sip:bob@192.0.2.4".to_owned(), 2060),
            // Handed back too: the etcd store sends nothing it holds already.
            ("carol@example.com sip:carol@192.0.2.9".to_owned(), 2060)
        ],
        "shared on a lease of its expiry"
    );
}

/// A cluster store that keeps what it is handed and holds confirmations until told.
#[derive(Default)]
struct Recorder {
    put: parking_lot::Mutex<Vec<(String, u64)>>,
    deleted: parking_lot::Mutex<Vec<String>>,
    held: parking_lot::Mutex<Vec<limes_cluster::store::Confirm>>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Recorder")
    }
}

impl ClusterStore for Recorder {
    fn backend(&self) -> &'static str {
        "test"
    }
    fn put_table(&self, _: &str, _: &str) -> Result<(), WriteError> {
        Ok(())
    }
    fn delete_table(&self, _: &str) -> Result<(), WriteError> {
        Ok(())
    }
    fn put_location(&self, key: &str, _: &str, until: u64) -> Result<(), WriteError> {
        self.put.lock().push((key.to_owned(), until));
        Ok(())
    }
    fn delete_location(&self, key: &str) -> Result<(), WriteError> {
        self.deleted.lock().push(key.to_owned());
        Ok(())
    }
    fn confirm(&self, done: limes_cluster::store::Confirm) {
        self.held.lock().push(done);
    }
    fn members(&self) -> Vec<Member> {
        Vec::new()
    }
    fn status(&self) -> Status {
        Status::default()
    }
}

/// A REGISTER's answer waits for the store's confirmation when the node shares its
/// bindings; a node alone answers at once.
#[test]
fn the_answer_waits_for_the_store_in_a_cluster_only() {
    let d = dir("when-shared");
    let (loc, _) = open(&d, 1000);
    let answered = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let a = answered.clone();
    loc.when_shared(Box::new(move |w| a.lock().push(w)));
    assert_eq!(*answered.lock(), [Written::Shared], "alone: at once");
    let store = Arc::new(Recorder::default());
    loc.share(store.clone());
    let a = answered.clone();
    loc.when_shared(Box::new(move |w| a.lock().push(w)));
    assert_eq!(answered.lock().len(), 1, "held by the store");
    for done in store.held.lock().drain(..) {
        done(Written::Local);
    }
    assert_eq!(*answered.lock(), [Written::Shared, Written::Local]);
}
