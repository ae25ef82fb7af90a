//! [`ClusterStore`]: the one interface through which a node shares what it must not lose,
//! with two backends. [`Embedded`] (the default) is the node alone: its journals in the
//! state directory are its store, so there is nothing more to write and every change is
//! confirmed at once. [`crate::etcd::EtcdStore`] shares the same changes with every node
//! through etcd. The location and the tables journal each change first and then hand it
//! to the store; neither knows which backend it talks to.

use std::collections::BTreeMap;

/// Why a write was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    #[error("the etcd write queue is full")]
    QueueFull,
    #[error("the etcd store is stopped")]
    Stopped,
}

/// How far the writes before a [`ClusterStore::confirm`] got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// In the store every node reads.
    Shared,
    /// Only in this node's journal for now (the store did not answer within its
    /// deadline); the writes wait in the queue and are sent when it answers.
    Local,
}

/// Called once with how far the writes before it got.
pub type Confirm = Box<dyn FnOnce(Written) + Send>;

/// A node of the cluster, as its membership says.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub name: String,
    /// JSON: the node's addresses, since when it is a member, its lease.
    pub info: serde_json::Value,
}

/// The store's state, for `cluster.status` and metrics.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Status {
    /// The newest revision this node has seen.
    pub revision: i64,
    /// Writes waiting to be sent.
    pub queued: u64,
    /// Writes refused on a full queue since start.
    pub refused: u64,
    /// Writes applied since start.
    pub written: u64,
    /// Store operations that failed since start (each then tried on the next member).
    pub failures: u64,
    /// REGISTERs (or other confirmations) waiting for the store now.
    pub confirming: u64,
    /// Confirmations answered from the local journal alone since start (the store did
    /// not answer in time).
    pub confirmed_locally: u64,
    /// Seconds since the watch last heard from the store.
    pub watch_age_s: u64,
    /// No member of the store answers (writes wait, the last known state serves).
    pub degraded: bool,
    pub last_error: Option<String>,
    /// The endpoint each task uses now.
    pub endpoints: BTreeMap<&'static str, String>,
    /// Store operations by kind (`txn`, `range`, `watch`, `lease_grant`, ...).
    pub operations: BTreeMap<&'static str, Operations>,
    /// Leases held for bindings now (one per step of expiries).
    pub binding_leases: u64,
}

/// Upper bounds, in seconds, of [`Operations::buckets`].
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// One kind of store operation: how many, how many failed, how long they took.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Operations {
    pub count: u64,
    pub failed: u64,
    pub seconds: f64,
    /// Operations within each bound of [`LATENCY_BUCKETS`] (not cumulative); the rest
    /// took longer.
    pub buckets: [u64; LATENCY_BUCKETS.len()],
}

impl Operations {
    pub fn record(&mut self, seconds: f64, ok: bool) {
        self.count += 1;
        self.failed += u64::from(!ok);
        self.seconds += seconds;
        if let Some(i) = LATENCY_BUCKETS.iter().position(|b| seconds <= *b) {
            self.buckets[i] += 1;
        }
    }
}

/// Where a node's shared state goes.
pub trait ClusterStore: Send + Sync + std::fmt::Debug {
    /// `embedded` or `etcd`.
    fn backend(&self) -> &'static str;
    /// A table entry's new value (`key` as the tables journal names it).
    fn put_table(&self, key: &str, value: &str) -> Result<(), WriteError>;
    fn delete_table(&self, key: &str) -> Result<(), WriteError>;
    /// A binding's new value (`key` as the location journal names it), kept until
    /// `until` (Unix seconds) at least, and not much longer even if no node deletes it.
    fn put_location(&self, key: &str, value: &str, until: u64) -> Result<(), WriteError>;
    fn delete_location(&self, key: &str) -> Result<(), WriteError>;
    /// Calls `done` once every write handed over before is stored where every node reads
    /// it, or the store's deadline passed first. Never waits itself.
    fn confirm(&self, done: Confirm);
    /// The nodes of the cluster.
    fn members(&self) -> Vec<Member>;
    fn status(&self) -> Status;
}

/// The node alone: its journals are the store.
#[derive(Debug)]
pub struct Embedded {
    me: Member,
}

impl Embedded {
    /// The node named `name`, described by `info` (JSON: its addresses).
    pub fn new(name: &str, mut info: serde_json::Value) -> Self {
        if let Some(o) = info.as_object_mut() {
            let since = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            o.insert("since".into(), since.into());
        }
        Self {
            me: Member {
                name: name.to_owned(),
                info,
            },
        }
    }
}

impl ClusterStore for Embedded {
    fn backend(&self) -> &'static str {
        "embedded"
    }

    fn put_table(&self, _: &str, _: &str) -> Result<(), WriteError> {
        Ok(())
    }

    fn delete_table(&self, _: &str) -> Result<(), WriteError> {
        Ok(())
    }

    fn put_location(&self, _: &str, _: &str, _: u64) -> Result<(), WriteError> {
        Ok(())
    }

    fn delete_location(&self, _: &str) -> Result<(), WriteError> {
        Ok(())
    }

    fn confirm(&self, done: Confirm) {
        done(Written::Shared);
    }

    fn members(&self) -> Vec<Member> {
        vec![self.me.clone()]
    }

    fn status(&self) -> Status {
        Status::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_fall_in_their_latency_bucket() {
        let mut o = Operations::default();
        o.record(0.000_2, true);
        o.record(0.003, true);
        o.record(9.0, false);
        assert_eq!((o.count, o.failed), (3, 1));
        assert_eq!(o.buckets[0], 1, "0.2 ms: within 0.5 ms");
        assert_eq!(o.buckets[3], 1, "3 ms: within 5 ms");
        assert_eq!(o.buckets.iter().sum::<u64>(), 2, "9 s: above every bound");
        assert!((o.seconds - 9.0032).abs() < 1e-9);
    }

    #[test]
    fn the_embedded_store_is_the_node_alone_and_confirms_at_once() {
        let s = Embedded::new(
            "edge-1",
            serde_json::json!({ "sip": ["udp:127.0.0.1:5060"] }),
        );
        assert_eq!(s.backend(), "embedded");
        assert_eq!(s.members().len(), 1);
        assert_eq!(s.members()[0].name, "edge-1");
        assert!(s.members()[0].info["since"].as_u64().is_some());
        let (tx, rx) = std::sync::mpsc::channel();
        s.confirm(Box::new(move |w| tx.send(w).expect("send")));
        assert_eq!(rx.try_recv(), Ok(Written::Shared), "no waiting");
        assert!(!s.status().degraded);
    }
}
