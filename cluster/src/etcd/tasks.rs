//! The three tasks of the etcd store (see [`super`]): the writer with its transactions
//! and late confirmations, the watcher, and the member task with its lease.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use etcd_client::{Client, EventType, GetOptions, PutOptions, Txn, TxnOp, WatchOptions};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::{Endpoints, Shared, Write, BATCH};
use crate::keys;
use crate::store::Written;

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Sends queued writes, a batch per transaction, until each is applied; then confirms
/// what waited for them.
pub(super) async fn writer(mut ep: Endpoints, mut rx: mpsc::Receiver<Write>) {
    let shared = ep.shared.clone();
    let mut batch = Vec::with_capacity(BATCH);
    // The lease of each step of expiries (`binding_lease_step`).
    let mut leases: BTreeMap<u64, i64> = BTreeMap::new();
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        // The last write of a key wins (etcd refuses a key twice in one transaction).
        let mut last = BTreeMap::new();
        let mut upto = 0;
        let taken = batch.len() as u64;
        for w in batch.drain(..) {
            upto = upto.max(w.seq);
            last.insert(w.key, w.value);
        }
        let n = last.len() as u64;
        loop {
            let mut c = ep.client().await;
            if let Some(ops) = operations(&mut ep, &mut c, &last, &mut leases).await {
                if let Some(done) = ep.attempt("txn", c.txn(Txn::new().and_then(ops))).await {
                    ep.succeeded();
                    if let Some(revision) = done.header().map(|h| h.revision()) {
                        shared.written(&last, revision);
                    }
                    break;
                }
            }
            // The failure may have been a lease etcd no longer has.
            leases.clear();
            shared.stall();
        }
        shared.stuck.store(false, Ordering::Release);
        shared
            .binding_leases
            .store(leases.len() as u64, Ordering::Relaxed);
        // Every write taken leaves the queue, the ones a later write of their key
        // replaced included.
        shared.queued.fetch_sub(
            taken.min(shared.queued.load(Ordering::Relaxed)),
            Ordering::Relaxed,
        );
        shared.written.fetch_add(n, Ordering::Relaxed);
        shared.confirm_upto(upto);
        debug!(writes = n, "etcd batch applied");
    }
}

/// The transaction's operations; a binding's put on the lease of its step (granted
/// when the step has none yet). `None`: a grant failed.
async fn operations(
    ep: &mut Endpoints,
    c: &mut Client,
    writes: &BTreeMap<String, Option<(String, Option<u64>)>>,
    leases: &mut BTreeMap<u64, i64>,
) -> Option<Vec<TxnOp>> {
    let now = unix_now();
    let every = ep.shared.settings.binding_lease_step.as_secs().max(1);
    leases.retain(|step, _| *step > now);
    let mut ops = Vec::with_capacity(writes.len());
    for (k, v) in writes {
        let op = match v {
            None => TxnOp::delete(k.as_str(), None),
            Some((v, None)) => TxnOp::put(k.as_str(), v.as_str(), None),
            Some((v, Some(until))) => {
                let step = (*until).max(now).div_ceil(every) * every;
                let lease = match leases.get(&step) {
                    Some(l) => *l,
                    None => {
                        let ttl = (step + every - now) as i64;
                        let l = ep
                            .attempt("lease_grant", c.lease_grant(ttl, None))
                            .await?
                            .id();
                        leases.insert(step, l);
                        l
                    }
                };
                TxnOp::put(
                    k.as_str(),
                    v.as_str(),
                    Some(PutOptions::new().with_lease(lease)),
                )
            }
        };
        ops.push(op);
    }
    Some(ops)
}

/// Answers, from the local journal alone, confirmations whose deadline passed.
pub(super) async fn confirm_late(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    while !shared.stopped.load(Ordering::Relaxed) {
        tick.tick().await;
        let now = Instant::now();
        shared.release(|w| w.deadline <= now, Written::Local);
    }
}

/// Reads everything, then follows the changes; resumes after a lost connection and reads
/// everything again after a compaction.
pub(super) async fn watcher(mut ep: Endpoints) {
    let shared = ep.shared.clone();
    let mut reload = true;
    loop {
        if shared.stopped.load(Ordering::Relaxed) {
            return;
        }
        let mut c = ep.client().await;
        if reload {
            let read = c.get(keys::ROOT, Some(GetOptions::new().with_prefix()));
            let Some(resp) = ep.attempt("range", read).await else {
                continue;
            };
            let revision = resp.header().map_or(0, |h| h.revision());
            let (mut tables, mut location, mut members) = (Vec::new(), Vec::new(), Vec::new());
            for kv in resp.kvs() {
                let (Ok(k), Ok(v)) = (kv.key_str(), kv.value_str()) else {
                    continue;
                };
                let entry = (k.to_owned(), v.to_owned(), kv.mod_revision());
                if k.starts_with(keys::MEMBERS) {
                    members.push(entry);
                } else if k.starts_with(keys::TABLES) {
                    tables.push(entry);
                } else if k.starts_with(keys::LOCATION) {
                    location.push(entry);
                }
            }
            *shared.heard.lock() = Instant::now();
            shared.members.lock().reset(members, revision);
            shared.members_changed.notify_one();
            let mut changes = shared.tables.lock().reset(tables, revision);
            changes.extend(shared.location.lock().reset(location, revision));
            shared.changed(&changes);
            reload = false;
            if !shared.is_loaded.swap(true, Ordering::AcqRel) {
                shared.loaded.notify_waiters();
                info!(revision, "cluster state read from etcd");
            }
        }
        let from = shared.revision() + 1;
        let opts = WatchOptions::new()
            .with_prefix()
            .with_start_revision(from)
            .with_progress_notify();
        let Some(mut stream) = ep.attempt("watch", c.watch(keys::ROOT, Some(opts))).await else {
            continue;
        };
        ep.succeeded();
        loop {
            // A progress notification comes at least every ten minutes; silence for
            // longer than a few keep-alives means the connection is gone.
            let msg = match tokio::time::timeout(Duration::from_secs(600), stream.message()).await {
                Ok(Ok(Some(m))) => m,
                Ok(Ok(None)) => {
                    ep.failed("watch stream ended").await;
                    break;
                }
                Ok(Err(e)) => {
                    ep.failed(&e.to_string()).await;
                    break;
                }
                Err(_) => {
                    ep.failed("watch silent").await;
                    break;
                }
            };
            *shared.heard.lock() = Instant::now();
            if msg.canceled() || msg.compact_revision() > 0 {
                warn!(
                    compacted = msg.compact_revision(),
                    reason = msg.cancel_reason(),
                    "etcd watch cancelled; reading everything again"
                );
                reload = true;
                break;
            }
            let mut changes = Vec::new();
            for ev in msg.events() {
                let Some(kv) = ev.kv() else { continue };
                let (Ok(k), rev) = (kv.key_str(), kv.mod_revision()) else {
                    continue;
                };
                let Some(index) = shared.index_of(k) else {
                    continue;
                };
                let change = match ev.event_type() {
                    EventType::Put => match kv.value_str() {
                        Ok(v) => index.lock().apply(k, v, rev),
                        Err(_) => None,
                    },
                    EventType::Delete => index.lock().delete(k, rev),
                };
                match (change, k.starts_with(keys::MEMBERS)) {
                    (Some(c), false) => changes.push(c),
                    (Some(_), true) => shared.members_changed.notify_one(),
                    (None, _) => {}
                }
            }
            shared.changed(&changes);
        }
    }
}

/// Holds the node's membership key on a lease kept alive at a third of its time to live;
/// a lost lease is granted again and the key written again.
pub(super) async fn membership(mut ep: Endpoints) {
    let shared = ep.shared.clone();
    let ttl = shared.settings.lease_ttl.as_secs().max(2) as i64;
    let key = keys::member(&shared.settings.node);
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    loop {
        if shared.stopped.load(Ordering::Relaxed) {
            return;
        }
        let mut c = ep.client().await;
        let Some(lease) = ep
            .attempt("lease_grant", c.lease_grant(ttl, None))
            .await
            .map(|l| l.id())
        else {
            continue;
        };
        let mut info = shared.settings.member.clone();
        if let Some(o) = info.as_object_mut() {
            o.insert("since".into(), since.into());
            o.insert("lease_ttl_s".into(), ttl.into());
        }
        let put = c.put(
            key.as_str(),
            info.to_string(),
            Some(PutOptions::new().with_lease(lease)),
        );
        if ep.attempt("put", put).await.is_none() {
            continue;
        }
        let Some((mut keeper, mut answers)) = ep
            .attempt("lease_keep_alive", c.lease_keep_alive(lease))
            .await
        else {
            continue;
        };
        ep.succeeded();
        info!(node = %shared.settings.node, lease, "cluster membership held");
        let every = Duration::from_secs((ttl / 3).max(1) as u64);
        loop {
            if shared.stopped.load(Ordering::Relaxed) {
                return;
            }
            tokio::time::sleep(every).await;
            let started = Instant::now();
            let alive = async {
                keeper.keep_alive().await?;
                answers.message().await
            };
            let answer = tokio::time::timeout(shared.settings.timeout, alive).await;
            let kept = matches!(&answer, Ok(Ok(Some(a))) if a.ttl() > 0);
            shared.measured("lease_keep_alive", started.elapsed(), kept);
            match answer {
                Ok(Ok(Some(a))) if a.ttl() > 0 => {
                    debug!(
                        lease,
                        rtt_ms = started.elapsed().as_millis() as u64,
                        "lease kept"
                    );
                }
                Ok(Ok(_)) => {
                    ep.failed("the lease expired").await;
                    break;
                }
                Ok(Err(e)) => {
                    ep.failed(&e.to_string()).await;
                    break;
                }
                Err(_) => {
                    ep.failed("lease keep-alive timed out").await;
                    break;
                }
            }
        }
    }
}
