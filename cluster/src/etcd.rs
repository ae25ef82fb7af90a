//! The etcd backend of the shared store: what several nodes share, kept in etcd under the
//! [`crate::keys`] schema.
//!
//! Three tasks on the caller's tokio runtime, each with its own connection, so a slow
//! one never holds up another, and none ever on a thread that receives SIP:
//! - the **writer** takes writes from a bounded queue ([`EtcdStore::put_table`] and
//!   the other writes never wait: a full queue is refused and counted), sends what
//!   has gathered as one transaction (the last write of a key wins) and retries until it
//!   is applied;
//! - the **watcher** reads every key once, then follows the changes from the next
//!   revision; after a lost connection it resumes after the last revision it saw, and
//!   after a compaction (that revision is gone) it reads everything again
//!   ([`crate::index::Index::reset`] says what changed meanwhile);
//! - the **member** task holds the node's membership key on a lease it keeps alive; a
//!   node that stops keeping it is gone when the lease ends.
//!
//! etcd-client keeps sending to a dead endpoint, so each task holds one endpoint at a
//! time and moves to the next on any error. Every operation has a deadline.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use etcd_client::{Client, ConnectOptions};
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tracing::warn;

use crate::index::{Change, Index};
use crate::keys;
use crate::store::{ClusterStore, Confirm, Member, Operations, Status, WriteError, Written};

mod tasks;
use tasks::{confirm_late, membership, watcher, writer};

/// Where etcd is and how this node appears in it.
#[derive(Debug, Clone)]
pub struct EtcdSettings {
    /// `http://host:port` of each member.
    pub endpoints: Vec<String>,
    /// This node's name: its membership key.
    pub node: String,
    /// What the membership key says of the node (JSON: addresses); `null`: not a member
    /// (a tool that only writes, such as an import).
    pub member: serde_json::Value,
    /// The membership lease; a node silent this long is gone.
    pub lease_ttl: Duration,
    /// Writes waiting at most.
    pub queue: usize,
    /// One operation's deadline, and how long a confirmation waits for the store.
    pub timeout: Duration,
    /// Bindings share leases by the step of time their expiry falls in: one lease per
    /// step of expiries, ending a step after the last of them.
    pub binding_lease_step: Duration,
}

impl EtcdSettings {
    pub fn new(endpoints: Vec<String>, node: &str, member: serde_json::Value) -> Self {
        Self {
            endpoints,
            node: node.to_owned(),
            member,
            lease_ttl: Duration::from_secs(10),
            queue: 100_000,
            timeout: Duration::from_secs(2),
            binding_lease_step: Duration::from_secs(30),
        }
    }
}

/// A write waiting in the queue; `seq` numbers them in queue order.
struct Write {
    seq: u64,
    key: String,
    /// `None`: delete; else the value and, for a binding, the Unix second it may go.
    value: Option<(String, Option<u64>)>,
}

/// A confirmation waiting for the writes up to `seq`.
struct Waiting {
    seq: u64,
    deadline: Instant,
    done: Confirm,
}

/// What the node is told when a table entry or a binding changes in the store (full
/// store keys: [`keys::table_key`] and [`keys::location_key`] tell them apart).
pub type OnChanges = Box<dyn Fn(&[Change]) + Send + Sync>;

struct Shared {
    settings: EtcdSettings,
    tables: Mutex<Index>,
    location: Mutex<Index>,
    members: Mutex<Index>,
    status: Mutex<Status>,
    queued: AtomicU64,
    refused: AtomicU64,
    written: AtomicU64,
    /// The sequence number of the last write queued; taken with the queue's order.
    last_queued: Mutex<u64>,
    /// Every write up to this sequence number is in etcd.
    applied: AtomicU64,
    /// Confirmations waiting for writes, oldest first.
    waiting: Mutex<VecDeque<Waiting>>,
    confirmed_locally: AtomicU64,
    /// Operations by kind: how many, how many failed, how long they took.
    operations: Mutex<BTreeMap<&'static str, Operations>>,
    /// Leases the writer holds for bindings now.
    binding_leases: AtomicU64,
    /// The writer's last attempt failed: confirmations are not held.
    stuck: AtomicBool,
    on_changes: OnceLock<OnChanges>,
    stopped: AtomicBool,
    /// When the watch last heard from etcd.
    heard: Mutex<Instant>,
    /// Woken when the member list changes.
    members_changed: tokio::sync::Notify,
    /// Set once the first full read is in.
    loaded: tokio::sync::Notify,
    is_loaded: AtomicBool,
}

impl Shared {
    fn failed(&self, task: &'static str, e: &str) {
        let mut s = self.status.lock();
        s.degraded = true;
        s.failures += 1;
        s.last_error = Some(format!("{task}: {e}"));
    }

    fn ok(&self) {
        self.status.lock().degraded = false;
    }

    /// The puts of a transaction applied at `revision`: their events change nothing here.
    fn written(&self, writes: &BTreeMap<String, Option<(String, Option<u64>)>>, revision: i64) {
        for (key, write) in writes {
            if let (Some((value, _)), Some(index)) = (write, self.index_of(key)) {
                index.lock().written(key, value, revision);
            }
        }
    }

    fn measured(&self, kind: &'static str, took: Duration, ok: bool) {
        self.operations
            .lock()
            .entry(kind)
            .or_default()
            .record(took.as_secs_f64(), ok);
    }

    /// The writer cannot reach etcd: nothing waits for it until it can.
    fn stall(&self) {
        self.stuck.store(true, Ordering::Release);
        self.release(|_| true, Written::Local);
    }

    /// Every write up to `seq` is applied.
    fn confirm_upto(&self, seq: u64) {
        self.applied.fetch_max(seq, Ordering::AcqRel);
        self.release(|w| w.seq <= seq, Written::Shared);
    }

    /// Calls the confirmations `which` picks (outside the lock) with `how`.
    fn release(&self, which: impl Fn(&Waiting) -> bool, how: Written) {
        let ready: Vec<Confirm> = {
            let mut waiting = self.waiting.lock();
            // The deadline tick mostly finds nothing due: the queue is not rebuilt then.
            if !waiting.iter().any(&which) {
                return;
            }
            let (ready, keep): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut *waiting)
                .into_iter()
                .partition(|w| which(w));
            *waiting = keep;
            ready.into_iter().map(|w| w.done).collect()
        };
        if how == Written::Local {
            self.confirmed_locally
                .fetch_add(ready.len() as u64, Ordering::Relaxed);
        }
        for done in ready {
            done(how);
        }
    }

    fn using(&self, task: &'static str, endpoint: &str) {
        self.status
            .lock()
            .endpoints
            .insert(task, endpoint.to_owned());
    }

    fn changed(&self, changes: &[Change]) {
        if let (false, Some(f)) = (changes.is_empty(), self.on_changes.get()) {
            f(changes);
        }
    }

    /// The index a store key belongs in (`None`: not one this node follows).
    fn index_of(&self, key: &str) -> Option<&Mutex<Index>> {
        if key.starts_with(keys::MEMBERS) {
            Some(&self.members)
        } else if key.starts_with(keys::TABLES) {
            Some(&self.tables)
        } else if key.starts_with(keys::LOCATION) {
            Some(&self.location)
        } else {
            None
        }
    }

    /// The newest revision any index has seen.
    fn revision(&self) -> i64 {
        [&self.tables, &self.location, &self.members]
            .iter()
            .map(|i| i.lock().revision())
            .max()
            .unwrap_or(0)
    }
}

/// A connection to one endpoint at a time, moving on after a failure.
struct Endpoints {
    shared: Arc<Shared>,
    task: &'static str,
    next: usize,
    client: Option<Client>,
    failures: u32,
}

impl Endpoints {
    fn new(shared: Arc<Shared>, task: &'static str, first: usize) -> Self {
        Self {
            shared,
            task,
            next: first,
            client: None,
            failures: 0,
        }
    }

    /// A connected client, trying the endpoints in turn.
    async fn client(&mut self) -> Client {
        loop {
            if let Some(c) = &self.client {
                return c.clone();
            }
            let eps = &self.shared.settings.endpoints;
            let ep = eps[self.next % eps.len()].clone();
            let opts = ConnectOptions::new()
                .with_connect_timeout(self.shared.settings.timeout)
                .with_timeout(self.shared.settings.timeout)
                .with_keep_alive(Duration::from_secs(2), self.shared.settings.timeout);
            match Client::connect([ep.as_str()], Some(opts)).await {
                Ok(c) => {
                    self.shared.using(self.task, &ep);
                    self.client = Some(c);
                }
                Err(e) => self.failed(&e.to_string()).await,
            }
        }
    }

    /// The last operation failed: the next endpoint, after a pause that grows.
    async fn failed(&mut self, e: &str) {
        self.shared.failed(self.task, e);
        warn!(task = self.task, error = %e, "etcd operation failed; trying the next member");
        self.client = None;
        self.next += 1;
        self.failures += 1;
        let pause = Duration::from_millis(50 << self.failures.min(5)).min(Duration::from_secs(2));
        tokio::time::sleep(pause).await;
    }

    /// One operation within the deadline; after an error or silence the endpoint is left
    /// ([`Endpoints::failed`]) and `None` returned.
    async fn attempt<T>(
        &mut self,
        kind: &'static str,
        op: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
    ) -> Option<T> {
        let started = Instant::now();
        let result = tokio::time::timeout(self.shared.settings.timeout, op).await;
        let ok = matches!(result, Ok(Ok(_)));
        self.shared.measured(kind, started.elapsed(), ok);
        match result {
            Ok(Ok(v)) => Some(v),
            Ok(Err(e)) => {
                self.failed(&e.to_string()).await;
                None
            }
            Err(_) => {
                self.failed("timed out").await;
                None
            }
        }
    }

    fn succeeded(&mut self) {
        if self.failures > 0 {
            self.shared.ok();
        }
        self.failures = 0;
    }
}

/// The etcd store of one node.
pub struct EtcdStore {
    tx: mpsc::Sender<Write>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.shared.settings.endpoints)
            .finish()
    }
}

/// Writes sent in one transaction at most.
const BATCH: usize = 64;

impl EtcdStore {
    /// Starts the tasks on `runtime`; `on_changes` hears of every table and binding change
    /// made in the store (by any node, this one included) once the first read is in.
    pub fn start(
        settings: EtcdSettings,
        runtime: &tokio::runtime::Handle,
        on_changes: OnChanges,
    ) -> Result<Arc<Self>, String> {
        if settings.endpoints.is_empty() {
            return Err("no etcd endpoint".into());
        }
        let (tx, rx) = mpsc::channel(settings.queue.max(1));
        let shared = Arc::new(Shared {
            settings,
            tables: Mutex::default(),
            location: Mutex::default(),
            members: Mutex::default(),
            status: Mutex::default(),
            queued: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            written: AtomicU64::new(0),
            last_queued: Mutex::new(0),
            applied: AtomicU64::new(0),
            waiting: Mutex::default(),
            confirmed_locally: AtomicU64::new(0),
            operations: Mutex::default(),
            binding_leases: AtomicU64::new(0),
            stuck: AtomicBool::new(false),
            on_changes: OnceLock::new(),
            stopped: AtomicBool::new(false),
            heard: Mutex::new(Instant::now()),
            members_changed: tokio::sync::Notify::new(),
            loaded: tokio::sync::Notify::new(),
            is_loaded: AtomicBool::new(false),
        });
        let _ = shared.on_changes.set(on_changes);
        let n = shared.settings.endpoints.len();
        runtime.spawn(writer(Endpoints::new(shared.clone(), "writer", 0), rx));
        runtime.spawn(confirm_late(shared.clone()));
        runtime.spawn(watcher(Endpoints::new(shared.clone(), "watcher", 1 % n)));
        if !shared.settings.member.is_null() {
            runtime.spawn(membership(Endpoints::new(shared.clone(), "member", 2 % n)));
        }
        Ok(Arc::new(Self { tx, shared }))
    }

    /// Waits (at most `bound`) until the first full read is in; whether it is.
    pub async fn loaded(&self, bound: Duration) -> bool {
        if self.shared.is_loaded.load(Ordering::Acquire) {
            return true;
        }
        let _ = tokio::time::timeout(bound, self.shared.loaded.notified()).await;
        self.shared.is_loaded.load(Ordering::Acquire)
    }

    /// Queues `key` = `value` unless `index` (what the store holds) has it already: a
    /// change that came from the store and was applied here does not go back to it.
    fn put_unless_held(
        &self,
        index: &Mutex<Index>,
        key: String,
        value: &str,
        until: Option<u64>,
    ) -> Result<(), WriteError> {
        if index.lock().get(&key) == Some(value) {
            return Ok(());
        }
        self.send(key, Some((value.to_owned(), until)))
    }

    fn send(&self, key: String, value: Option<(String, Option<u64>)>) -> Result<(), WriteError> {
        // Numbered under the lock, so the numbers follow the queue's order.
        let mut last = self.shared.last_queued.lock();
        let seq = *last + 1;
        match self.tx.try_send(Write { seq, key, value }) {
            Ok(()) => {
                *last = seq;
                self.shared.queued.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.shared.refused.fetch_add(1, Ordering::Relaxed);
                Err(WriteError::QueueFull)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(WriteError::Stopped),
        }
    }

    /// The table entries as the store has them now (journal keys).
    pub fn tables(&self) -> Vec<(String, String)> {
        self.shared
            .tables
            .lock()
            .iter()
            .filter_map(|(k, v)| Some((keys::table_key(k)?.to_owned(), v.to_owned())))
            .collect()
    }

    /// Returns when the member list has changed since the last call (at once the first
    /// time after a change).
    pub async fn members_changed(&self) {
        self.shared.members_changed.notified().await;
    }

    /// Stops the tasks and removes the membership key, so the others see the node leave
    /// at once (bounded: with etcd unreachable the lease ends it later).
    pub async fn leave(&self) {
        self.shared.stopped.store(true, Ordering::Relaxed);
        if self.shared.settings.member.is_null() {
            return;
        }
        let bound = self.shared.settings.timeout * 3;
        let _ = tokio::time::timeout(bound, self.remove_membership()).await;
    }

    async fn remove_membership(&self) {
        let key = keys::member(&self.shared.settings.node);
        let mut ep = Endpoints::new(self.shared.clone(), "leave", 0);
        for _ in 0..self.shared.settings.endpoints.len() * 2 {
            let mut c = ep.client().await;
            if ep
                .attempt("delete", c.delete(key.as_str(), None))
                .await
                .is_some()
            {
                return;
            }
        }
    }
}

impl ClusterStore for EtcdStore {
    fn backend(&self) -> &'static str {
        "etcd"
    }

    fn put_table(&self, key: &str, value: &str) -> Result<(), WriteError> {
        self.put_unless_held(&self.shared.tables, keys::table(key), value, None)
    }

    /// A table entry the store no longer has comes back as no event at all.
    fn delete_table(&self, key: &str) -> Result<(), WriteError> {
        self.send(keys::table(key), None)
    }

    /// On a lease that ends within two `binding_lease_step`s after `until`, so that the
    /// binding of a node that died goes when it expires.
    fn put_location(&self, key: &str, value: &str, until: u64) -> Result<(), WriteError> {
        self.put_unless_held(
            &self.shared.location,
            keys::location(key),
            value,
            Some(until),
        )
    }

    fn delete_location(&self, key: &str) -> Result<(), WriteError> {
        self.send(keys::location(key), None)
    }

    /// Held until the writer has applied every write queued before it, at most
    /// `cluster.timeout_ms`; answered [`Written::Local`] at once while the writer cannot
    /// reach etcd.
    fn confirm(&self, done: Confirm) {
        let shared = &self.shared;
        if !shared.stuck.load(Ordering::Acquire) {
            let upto = *shared.last_queued.lock();
            let mut waiting = shared.waiting.lock();
            if shared.applied.load(Ordering::Acquire) >= upto {
                drop(waiting);
                return done(Written::Shared);
            }
            if waiting.len() < shared.settings.queue {
                waiting.push_back(Waiting {
                    seq: upto,
                    deadline: Instant::now() + shared.settings.timeout,
                    done,
                });
                return;
            }
        }
        shared.confirmed_locally.fetch_add(1, Ordering::Relaxed);
        done(Written::Local);
    }

    /// The nodes whose membership lease is alive.
    fn members(&self) -> Vec<Member> {
        self.shared
            .members
            .lock()
            .iter()
            .filter_map(|(k, v)| {
                Some(Member {
                    name: keys::member_name(k)?.to_owned(),
                    info: serde_json::from_str(v).ok()?,
                })
            })
            .collect()
    }

    fn status(&self) -> Status {
        let mut s = self.shared.status.lock().clone();
        s.confirming = self.shared.waiting.lock().len() as u64;
        s.confirmed_locally = self.shared.confirmed_locally.load(Ordering::Relaxed);
        s.operations = self.shared.operations.lock().clone();
        s.binding_leases = self.shared.binding_leases.load(Ordering::Relaxed);
        s.revision = self.shared.revision();
        s.queued = self.shared.queued.load(Ordering::Relaxed);
        s.refused = self.shared.refused.load(Ordering::Relaxed);
        s.written = self.shared.written.load(Ordering::Relaxed);
        s.watch_age_s = self.shared.heard.lock().elapsed().as_secs();
        s
    }
}
