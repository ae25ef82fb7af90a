//! The location service: every AoR's bindings, sharded by AoR, each change written to the
//! `location` journal before the REGISTER is answered (so bindings survive a restart and
//! a crash), expired bindings swept on a timer and dropped on load. The binding rules
//! themselves are `limes_sip::registrar`'s.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use limes_cluster::store::Confirm;
use limes_cluster::{ClusterStore, Journal, Record, Written};
use limes_sip::registrar::{self, Binding, ContactUpdate, Outcome, Refusal, Register, Rules};
use parking_lot::RwLock;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::settings::Transport;

const SHARDS: usize = 64;

/// What Limes keeps beside each binding: where the REGISTER came from and what it said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// The source address of the REGISTER (RFC 3581 `received`): requests go there.
    pub received: SocketAddr,
    pub transport: Transport,
    /// The local socket it arrived on.
    pub socket: SocketAddr,
    /// Path values (RFC 3327), in order: the route towards the UA.
    #[serde(default)]
    pub path: Vec<String>,
    #[serde(default)]
    pub user_agent: String,
    /// Methods the UA accepts (Contact `methods` parameter or Allow header).
    #[serde(default)]
    pub methods: String,
    /// `+sip.instance` and `reg-id` (RFC 5626).
    #[serde(default)]
    pub instance: Option<String>,
    #[serde(default)]
    pub reg_id: Option<u32>,
    /// RFC 8599 push parameters of the Contact URI.
    #[serde(default)]
    pub push: Option<Push>,
    /// When the binding was last written, Unix seconds.
    #[serde(default)]
    pub updated: u64,
    /// The node of a cluster the REGISTER came through (its flow lives there); `None`
    /// on a node alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Push {
    pub provider: String,
    pub prid: Option<String>,
    pub param: Option<String>,
}

pub type Contact = Binding<Meta>;

/// A binding as the journal stores it: borrowed from the table when written, owned when
/// read back.
#[derive(Serialize, Deserialize)]
struct Stored<'a> {
    #[serde(borrow)]
    aor: Cow<'a, str>,
    #[serde(borrow)]
    contact: Cow<'a, str>,
    q: Option<u16>,
    expires_at: u64,
    #[serde(borrow)]
    call_id: Cow<'a, str>,
    cseq: u32,
    meta: Cow<'a, Meta>,
}

/// A stored binding's expiry, read alone.
#[derive(Deserialize)]
struct Expiry {
    expires_at: u64,
}

impl Stored<'_> {
    /// The AoR and the binding, owned.
    fn into_binding(self) -> (String, Contact) {
        let binding = Binding {
            contact: self.contact.into_owned(),
            q: self.q,
            expires_at: self.expires_at,
            call_id: self.call_id.into_owned(),
            cseq: self.cseq,
            meta: self.meta.into_owned(),
        };
        (self.aor.into_owned(), binding)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

/// Every value of the `result` label of `limes_registrar_registrations_total`.
pub const REGISTRATION_RESULTS: [&str; 7] = [
    "registered",
    "refreshed",
    "removed",
    "unchanged",
    "fetched",
    "refused",
    "error",
];

#[derive(Debug, Default)]
pub struct LocationMetrics {
    pub aors: Gauge,
    pub contacts: Gauge,
    pub registrations: Family<ResultLabels, Counter>,
    pub journal_errors: Counter,
}

impl LocationMetrics {
    pub fn register(registry: &mut Registry) -> Arc<Self> {
        let m = Arc::new(Self::default());
        crate::metrics::at_zero(
            &m.registrations,
            REGISTRATION_RESULTS.map(|result| ResultLabels { result }),
        );
        let r = registry.sub_registry_with_prefix("limes_registrar");
        r.register("aors", "AoRs with at least one binding", m.aors.clone());
        r.register("contacts", "Bindings held", m.contacts.clone());
        r.register(
            "registrations",
            "REGISTER requests processed, by result (registered, refreshed, removed, fetched, refused, error)",
            m.registrations.clone(),
        );
        r.register(
            "journal_errors",
            "Binding changes the journal could not write",
            m.journal_errors.clone(),
        );
        m
    }
}

/// Why a binding change failed.
#[derive(Debug, thiserror::Error)]
pub enum LocationError {
    #[error("{}", .0.reason)]
    Refused(Refusal),
    #[error("the location table is full ({0} AoRs)")]
    Full(usize),
    #[error("journal write failed: {0}")]
    Journal(#[from] std::io::Error),
}

type Shard = HashMap<String, Vec<Contact>>;

pub struct Location {
    shards: Box<[RwLock<Shard>]>,
    journal: Option<Journal>,
    rules: RwLock<Rules>,
    max_aors: usize,
    aors: AtomicI64,
    contacts: AtomicI64,
    pub metrics: Arc<LocationMetrics>,
    /// This node's name in a cluster (bindings say which node their flow lives on).
    node: std::sync::OnceLock<String>,
    /// Where binding changes are shared (none: the node alone).
    store: std::sync::OnceLock<Arc<dyn ClusterStore>>,
}

impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Location")
            .field("aors", &self.aors)
            .field("contacts", &self.contacts)
            .finish()
    }
}

fn shard_index(aor: &str) -> usize {
    let mut h = std::hash::DefaultHasher::new();
    std::hash::Hasher::write(&mut h, aor.as_bytes());
    (std::hash::Hasher::finish(&h) as usize) % SHARDS
}

/// `AoR SP Contact`: neither contains a space.
fn journal_key(aor: &str, contact: &str) -> String {
    format!("{aor} {contact}")
}

fn to_json(aor: &str, b: &Contact) -> String {
    let s = Stored {
        aor: Cow::Borrowed(aor),
        contact: Cow::Borrowed(&b.contact),
        q: b.q,
        expires_at: b.expires_at,
        call_id: Cow::Borrowed(&b.call_id),
        cseq: b.cseq,
        meta: Cow::Borrowed(&b.meta),
    };
    serde_json::to_string(&s).unwrap_or_else(|_| "null".into())
}

impl Location {
    /// The location table, restored from the journal in `dir` (`None`: memory only).
    /// Bindings expired at `now` are dropped.
    pub fn open(
        dir: Option<&Path>,
        rules: Rules,
        max_aors: usize,
        now: u64,
        metrics: Arc<LocationMetrics>,
    ) -> std::io::Result<Self> {
        let mut shards: Vec<Shard> = (0..SHARDS).map(|_| Shard::new()).collect();
        let mut unreadable = 0usize;
        let journal = match dir {
            None => None,
            Some(dir) => {
                let (journal, _) = Journal::open(dir, "location", |record| match record {
                    Record::Put(_, value) => match serde_json::from_str::<Stored<'_>>(value) {
                        Ok(s) => {
                            let (aor, binding) = s.into_binding();
                            // Most AoRs hold one binding: room for one, not four.
                            let list = shards[shard_index(&aor)]
                                .entry(aor)
                                .or_insert_with(|| Vec::with_capacity(1));
                            list.retain(|b| b.contact != binding.contact);
                            list.push(binding);
                        }
                        Err(_) => unreadable += 1,
                    },
                    Record::Delete(key) => {
                        if let Some((aor, contact)) = key.split_once(' ') {
                            if let Some(list) = shards[shard_index(aor)].get_mut(aor) {
                                list.retain(|b| b.contact != contact);
                            }
                        }
                    }
                })?;
                Some(journal)
            }
        };
        let mut expired = 0usize;
        for shard in &mut shards {
            shard.retain(|_, list| {
                let before = list.len();
                list.retain(|b| b.expires_at > now);
                expired += before - list.len();
                !list.is_empty()
            });
        }
        let location = Location {
            shards: shards.into_iter().map(RwLock::new).collect(),
            journal,
            rules: RwLock::new(rules),
            max_aors,
            aors: AtomicI64::new(0),
            contacts: AtomicI64::new(0),
            metrics,
            node: std::sync::OnceLock::new(),
            store: std::sync::OnceLock::new(),
        };
        location.recount();
        if location.journal.is_some() {
            info!(
                restored = location.contacts.load(Ordering::Relaxed),
                expired, unreadable, "location restored from the journal"
            );
            // Start from a compact journal: the expired bindings are gone from it.
            location.compact();
        }
        Ok(location)
    }

    fn shard(&self, aor: &str) -> &RwLock<Shard> {
        &self.shards[shard_index(aor)]
    }

    pub fn rules(&self) -> Rules {
        *self.rules.read()
    }

    pub fn set_rules(&self, rules: Rules) {
        *self.rules.write() = rules;
    }

    fn adjust(&self, aors: i64, contacts: i64) {
        let a = self.aors.fetch_add(aors, Ordering::Relaxed) + aors;
        let c = self.contacts.fetch_add(contacts, Ordering::Relaxed) + contacts;
        self.metrics.aors.set(a);
        self.metrics.contacts.set(c);
    }

    fn recount(&self) {
        let (mut a, mut c) = (0, 0);
        for s in self.shards.iter() {
            let s = s.read();
            a += s.len() as i64;
            c += s.values().map(|v| v.len() as i64).sum::<i64>();
        }
        self.aors.store(a, Ordering::Relaxed);
        self.contacts.store(c, Ordering::Relaxed);
        self.metrics.aors.set(a);
        self.metrics.contacts.set(c);
    }

    /// Applies a REGISTER for `aor`; the Contact values of its 200 (§10.3 step 8: every
    /// binding after it). The change is journaled before it becomes visible.
    pub fn register(
        &self,
        aor: &str,
        req: &Register<'_>,
        now: u64,
        meta: impl Fn(&ContactUpdate<'_>) -> Meta,
    ) -> Result<Vec<String>, LocationError> {
        let rules = self.rules();
        let mut shard = self.shard(aor).write();
        let existing = shard.get(aor).map(Vec::as_slice).unwrap_or_default();
        let is_new_aor = existing.is_empty();
        if is_new_aor
            && matches!(req.change, registrar::Change::Set(_))
            && self.aors.load(Ordering::Relaxed) as usize >= self.max_aors
        {
            return Err(LocationError::Full(self.max_aors));
        }
        let before = existing.len() as i64;
        let Outcome {
            bindings,
            stored,
            removed,
        } = registrar::apply(existing, req, now, &rules, meta).map_err(LocationError::Refused)?;
        if let Some(j) = &self.journal {
            for c in &removed {
                j.delete(&journal_key(aor, c))?;
            }
            for &i in &stored {
                j.put(
                    &journal_key(aor, &bindings[i].contact),
                    &to_json(aor, &bindings[i]),
                )?;
            }
        }
        let after = bindings.len() as i64;
        let result = match (&req.change, stored.is_empty(), removed.is_empty()) {
            (registrar::Change::Fetch, _, _) => "fetched",
            (_, false, _) if is_new_aor => "registered",
            (_, false, _) => "refreshed",
            (_, true, false) => "removed",
            (_, true, true) => "unchanged",
        };
        self.metrics
            .registrations
            .get_or_create(&ResultLabels { result })
            .inc();
        let aor_delta = i64::from(after > 0) - i64::from(before > 0);
        let values = registrar::contact_values(&bindings, now);
        match shard.get_mut(aor) {
            _ if bindings.is_empty() => {
                shard.remove(aor);
            }
            Some(list) => *list = bindings,
            None => {
                shard.insert(aor.to_owned(), bindings);
            }
        }
        drop(shard);
        self.adjust(aor_delta, after - before);
        Ok(values)
    }

    /// No binding at all: lookups can be skipped.
    pub fn is_empty(&self) -> bool {
        self.contacts.load(Ordering::Relaxed) == 0
    }

    /// The live bindings of `aor`, highest q first (registration order among equals).
    pub fn lookup(&self, aor: &str, now: u64) -> Vec<Contact> {
        let mut v: Vec<Contact> = self
            .shard(aor)
            .read()
            .get(aor)
            .map(|l| l.iter().filter(|b| b.expires_at > now).cloned().collect())
            .unwrap_or_default();
        v.sort_by_key(|b| std::cmp::Reverse(b.q.unwrap_or(1000)));
        v
    }

    /// Every AoR with its live bindings, sorted by AoR; at most `limit` AoRs. Only the
    /// AoRs listed are copied (the names of all of them are, to sort).
    pub fn dump(&self, now: u64, limit: usize) -> (Vec<(String, Vec<Contact>)>, bool) {
        let mut aors: Vec<String> = Vec::new();
        for s in self.shards.iter() {
            aors.extend(
                s.read()
                    .iter()
                    .filter(|(_, list)| list.iter().any(|b| b.expires_at > now))
                    .map(|(aor, _)| aor.clone()),
            );
        }
        aors.sort_unstable();
        let truncated = aors.len() > limit;
        aors.truncate(limit);
        let all = aors
            .into_iter()
            .filter_map(|aor| {
                let live: Vec<Contact> = self
                    .shard(&aor)
                    .read()
                    .get(&aor)?
                    .iter()
                    .filter(|b| b.expires_at > now)
                    .cloned()
                    .collect();
                (!live.is_empty()).then_some((aor, live))
            })
            .collect();
        (all, truncated)
    }

    /// Removes `aor`'s bindings (or the one for `contact`); the number removed.
    pub fn remove(&self, aor: &str, contact: Option<&str>) -> Result<usize, LocationError> {
        let mut shard = self.shard(aor).write();
        let Some(list) = shard.get_mut(aor) else {
            return Ok(0);
        };
        let before = list.len();
        let (gone, kept): (Vec<Contact>, Vec<Contact>) = list
            .drain(..)
            .partition(|b| contact.is_none_or(|c| registrar::same_contact(&b.contact, c)));
        if let Some(j) = &self.journal {
            for b in &gone {
                if let Err(e) = j.delete(&journal_key(aor, &b.contact)) {
                    // Keep memory and journal in step: nothing is removed.
                    *list = gone.into_iter().chain(kept).collect();
                    return Err(e.into());
                }
            }
        }
        *list = kept;
        let after = list.len();
        if after == 0 {
            shard.remove(aor);
        }
        drop(shard);
        self.adjust(
            -i64::from(after == 0 && before > 0),
            after as i64 - before as i64,
        );
        Ok(gone.len())
    }

    /// Adds or replaces one binding (admin `ul.add`), journaled.
    pub fn add(&self, aor: &str, contact: Contact) -> Result<(), LocationError> {
        let mut shard = self.shard(aor).write();
        if !shard.contains_key(aor) && self.aors.load(Ordering::Relaxed) as usize >= self.max_aors {
            return Err(LocationError::Full(self.max_aors));
        }
        if let Some(j) = &self.journal {
            j.put(&journal_key(aor, &contact.contact), &to_json(aor, &contact))?;
        }
        let list = shard
            .entry(aor.to_owned())
            .or_insert_with(|| Vec::with_capacity(1));
        let new_aor = list.is_empty();
        let before = list.len();
        list.retain(|b| !registrar::same_contact(&b.contact, &contact.contact));
        list.push(contact);
        let after = list.len();
        drop(shard);
        self.adjust(i64::from(new_aor), after as i64 - before as i64);
        Ok(())
    }

    /// Drops bindings expired at `now` from memory (the journal forgets them at the next
    /// compaction, and on load); the number dropped. In a cluster the bindings of this
    /// node are also deleted through the journal, so the store forgets them too.
    pub fn expire(&self, now: u64) -> usize {
        let shared = self.journal.as_ref().filter(|j| j.is_observed());
        let me = self.node_name();
        let mut dropped = 0;
        let mut deleted = Vec::new();
        for s in self.shards.iter() {
            let mut s = s.write();
            s.retain(|aor, list| {
                let before = list.len();
                list.retain(|b| {
                    let live = b.expires_at > now;
                    if !live && shared.is_some() && b.meta.node.as_deref() == me {
                        deleted.push(journal_key(aor, &b.contact));
                    }
                    live
                });
                dropped += before - list.len();
                !list.is_empty()
            });
        }
        if let Some(j) = shared {
            let records: Vec<Record<'_>> = deleted.iter().map(|k| Record::Delete(k)).collect();
            if let Err(e) = j.write_batch(&records) {
                self.metrics.journal_errors.inc();
                warn!(error = %e, "expired bindings not journaled");
            }
        }
        if dropped > 0 {
            self.recount();
        }
        dropped
    }

    /// Marks this node's bindings with its cluster name from now on.
    pub fn set_node_name(&self, name: &str) {
        let _ = self.node.set(name.to_owned());
    }

    /// This node's cluster name, if it is in a cluster.
    pub fn node_name(&self) -> Option<&str> {
        self.node.get().map(String::as_str)
    }

    /// A binding written or removed through another node of the cluster (`key` and
    /// `value` as the location journal writes them), applied and journaled here.
    pub fn apply_shared(&self, key: &str, value: Option<&str>) -> Result<(), String> {
        let Some(value) = value else {
            let (aor, contact) = key.split_once(' ').ok_or_else(|| format!("key {key:?}"))?;
            return self
                .remove(aor, Some(contact))
                .map(|_| ())
                .map_err(|e| e.to_string());
        };
        let s: Stored<'_> = serde_json::from_str(value).map_err(|e| e.to_string())?;
        let (aor, binding) = s.into_binding();
        self.add(&aor, binding).map_err(|e| e.to_string())
    }

    /// From now on every binding change, once journaled, goes to `store` too (each
    /// binding on a lease of its expiry), and [`Location::when_shared`] waits for it.
    pub fn share(&self, store: Arc<dyn ClusterStore>) {
        if let Some(j) = &self.journal {
            let to = store.clone();
            j.observe(Box::new(move |r| {
                let handed = match r {
                    Record::Put(k, v) => {
                        let until = serde_json::from_str::<Expiry>(v).map_or(0, |e| e.expires_at);
                        to.put_location(k, v, until)
                    }
                    Record::Delete(k) => to.delete_location(k),
                };
                if let Err(e) = handed {
                    warn!(error = %e, "a binding was not shared with the cluster");
                }
            }));
        }
        let _ = self.store.set(store);
    }

    /// Calls `done` once the binding changes made so far are where every node of the
    /// cluster reads them (at once for a node alone: its journal has them).
    pub fn when_shared(&self, done: Confirm) {
        match self.store.get() {
            Some(s) => s.confirm(done),
            None => done(Written::Shared),
        }
    }

    /// Compacts the journal when it has grown past twice its snapshot; flushes it to disk.
    pub fn maintain(&self) {
        if let Some(j) = &self.journal {
            if j.needs_compaction(8 << 20) {
                self.compact();
            }
            if let Err(e) = j.sync() {
                warn!(error = %e, "location journal sync failed");
            }
        }
    }

    fn compact(&self) {
        let Some(j) = &self.journal else { return };
        let result = j.compact(|emit| {
            for s in self.shards.iter() {
                let lines: Vec<(String, String)> = s
                    .read()
                    .iter()
                    .flat_map(|(aor, list)| {
                        list.iter()
                            .map(|b| (journal_key(aor, &b.contact), to_json(aor, b)))
                    })
                    .collect();
                for (k, v) in lines {
                    emit(&k, &v)?;
                }
            }
            Ok(())
        });
        if let Err(e) = result {
            self.metrics.journal_errors.inc();
            warn!(error = %e, "location journal compaction failed");
        }
    }
}

#[cfg(test)]
mod tests;
