//! The driver of the transaction-stateful proxy (RFC 3261 §16). A message is received,
//! parsed, matched and forwarded on the thread that received it: each request's response
//! context (`limes_sip::proxy::Context`, where every §16 rule lives) sits in a sharded
//! table (one lock per shard, held for microseconds, never across a send), each shard with
//! a timer heap driven by the timer thread. This file feeds contexts their inputs, drains
//! their outputs and answers their events with policy (the next serial group).
//!
//! Request path (`request.rs`): flood guard -> transaction match (retransmission, ACK) ->
//! sanity -> CANCEL / stateless ACK / new request -> loop check -> Route processing ->
//! target (the edge's: location or next hops; or the route set in a dialog) -> a context
//! with one branch per target, inserted only if no other thread inserted the same
//! transaction first. Response path (here): branch match by our Via branch -> the context.

pub mod edge;
mod entry;
pub mod local;
mod locate;
pub mod own;
mod register;
mod request;
pub mod routing;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Instant;

use bytes::Bytes;
use limes_sip::build::{Forward, Response, Source};
use limes_sip::locate::Unresolved;
use limes_sip::proxy::route::{self, Decision};
use limes_sip::proxy::{Context, ContextConfig, Event, ReplyTo};
use limes_sip::sanity;
use limes_sip::transaction::TxKey;
use limes_sip::{Message, Method};
use parking_lot::Mutex;
use smallvec::SmallVec;
use tracing::{debug, trace};

use self::entry::Entry;
use self::local::Local;
use crate::dialogs::{Dialogs, Phase};
use crate::flood::FloodGuard;
use crate::metrics::{Metrics, TxCensus, TxLabels};
use crate::settings::{ProxySettings, Transport};
use crate::transport::{Dest, Flow, Inbound, Outbound, Sends};
use crate::trunks::{Health, Trunk};
use locate::Located;
use routing::Edits;

const SHARDS: usize = 64;

/// Messages to send once the shard lock is released.
const ALLOW: &str =
    "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, PRACK, SUBSCRIBE, NOTIFY, REFER, MESSAGE";

/// Entry ids are already keyed SipHash values: hashing them again is wasted work.
#[derive(Default)]
struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Entries boxed: a context is some 700 bytes and lives 32 s after its answer (Timer J or
/// M); inline, every empty slot of a table that grows by doubling would be as large, and
/// each growth would move them all under the shard's lock.
type EntryMap = HashMap<u64, Box<Entry>, std::hash::BuildHasherDefault<IdHasher>>;

#[derive(Default)]
struct Shard {
    entries: EntryMap,
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
}

/// Counters behind `tm.stats` that no metric holds (responses by class, received
/// responses and retransmissions are read from the metrics: each event is counted once).
#[derive(Debug, Default)]
pub struct TmStats {
    pub created: AtomicU64,
    pub freed: AtomicU64,
    pub replies_local: AtomicU64,
    pub replies_forwarded: AtomicU64,
    /// Stateless replies (no transaction: challenges, the registrar's, refusals) by
    /// class, 1xx .. 6xx: Kamailio's `sl:` statistics.
    pub stateless: [AtomicU64; 6],
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Whether a request is handled for the first time, or again after waiting (for DNS):
/// what it was counted under the first time is not counted again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pass {
    First,
    Again,
}

/// Where the next hop of a request is, and how the request must change to get there.
pub struct Route {
    dest: Dest,
    /// The next hop is a strict router: its URI becomes the Request-URI and the old one
    /// goes to the end of the Route set (§16.6 step 7).
    strict: Option<String>,
    /// A new Request-URI (a registered Contact).
    ruri: Option<String>,
    /// Route values to pre-load (a binding's Path, §16.6 step 5).
    preload: Vec<String>,
    /// Serial forking (§16.6): targets of group 0 go first, group 1 when all of those
    /// failed, and so on (a registered AoR's bindings grouped by q, highest first; a
    /// trunk's destinations one by one).
    group: u16,
    /// A branch that sends no response at all within this fails (a trunk's timer).
    within: Option<std::time::Duration>,
    /// The trunk destination it is: trunk, destination URI, health (counted per call).
    trunk_dest: Option<(Arc<Trunk>, String, Arc<Health>)>,
    /// The address Via and Record-Route name instead of the sending socket's.
    advertise: Option<SocketAddr>,
}

/// A request's routes: most have one, kept inline (no allocation per request).
pub type Routes = SmallVec<[Route; 1]>;

/// The forwarded copies of a request: destination, bytes, and the branch's own timer.
type Copies = SmallVec<[(Dest, Bytes, Option<std::time::Duration>); 1]>;

impl Route {
    fn to(dest: Dest) -> Self {
        Self {
            dest,
            strict: None,
            ruri: None,
            preload: Vec::new(),
            group: 0,
            within: None,
            trunk_dest: None,
            advertise: None,
        }
    }
}

/// What every branch of one request shares, kept for the groups started later.
pub struct Fork {
    flow: Flow,
    popped: usize,
    /// The Request-URI taken from the Route set (a strict router's request).
    new_ruri: Option<String>,
    consume_credentials: bool,
    /// A Session-Expires value to insert (RFC 4028 §8.1).
    session_expires: Option<String>,
    /// Header edits of the routing rule and the trunk.
    edits: Edits,
}

pub struct Proxy {
    /// Itself, for work that finishes later (a request waiting for DNS).
    me: Weak<Proxy>,
    /// Tracked calls, their profiles and CDRs.
    pub dialogs: Arc<Dialogs>,
    shards: Box<[Mutex<Shard>]>,
    local: Local,
    settings: ProxySettings,
    contexts: ContextConfig,
    out: Arc<Outbound>,
    metrics: Arc<Metrics>,
    flood: Option<FloodGuard>,
    edge: edge::Edge,
    /// Where initial requests for nobody registered go; replaced whole on reload.
    next_hops: arc_swap::ArcSwap<Vec<crate::transport::Target>>,
    draining: AtomicBool,
    active: AtomicUsize,
    /// Numbers the node's own requests.
    own_requests: AtomicU64,
    pub stats: TmStats,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("active", &self.active)
            .finish()
    }
}

impl Inbound for Proxy {
    fn on_message(&self, data: Bytes, flow: Flow) {
        self.handle(data, flow, Instant::now());
    }
}

impl TxCensus for Proxy {
    fn census(&self) -> Vec<(TxLabels, i64)> {
        let mut counts: HashMap<(&'static str, &'static str), i64> = HashMap::new();
        for shard in self.shards.iter() {
            let shard = shard.lock();
            for e in shard.entries.values() {
                if let Some(c) = e.ctx.census() {
                    *counts.entry(c).or_default() += 1;
                }
                for b in e.ctx.branch_census() {
                    *counts.entry(b).or_default() += 1;
                }
            }
        }
        counts
            .into_iter()
            .map(|((kind, state), n)| (TxLabels { kind, state }, n))
            .collect()
    }
}

impl Proxy {
    pub fn new(
        settings: ProxySettings,
        local: Local,
        out: Arc<Outbound>,
        metrics: Arc<Metrics>,
        flood: Option<FloodGuard>,
        edge: edge::Edge,
        dialogs: Arc<Dialogs>,
    ) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            me: me.clone(),
            dialogs,
            next_hops: arc_swap::ArcSwap::from_pointee(settings.next_hops.clone()),
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            local,
            contexts: ContextConfig {
                timers: settings.timers,
            },
            settings,
            out,
            metrics,
            flood,
            edge,
            draining: AtomicBool::new(false),
            active: AtomicUsize::new(0),
            own_requests: AtomicU64::new(0),
            stats: TmStats::default(),
        })
    }

    /// Transactions held now.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Stop taking new INVITEs (503); everything in progress finishes.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    pub fn settings(&self) -> &ProxySettings {
        &self.settings
    }

    /// The node's SIP metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The node's SIP metrics, shared (for the transports).
    pub fn metrics_handle(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// The registrar, authentication and tables.
    pub fn edge(&self) -> &edge::Edge {
        &self.edge
    }

    /// New next hops from a reload; requests already forwarded keep their branches.
    pub fn set_next_hops(&self, hops: Vec<crate::transport::Target>) {
        self.next_hops.store(Arc::new(hops));
    }

    fn shard(&self, sid: u64) -> &Mutex<Shard> {
        &self.shards[Self::shard_index(sid)]
    }

    fn flush(&self, sends: Sends) {
        self.out.send_all(sends);
    }

    /// One received datagram or stream frame.
    pub fn handle(&self, data: Bytes, flow: Flow, now: Instant) {
        if data.iter().all(|&b| b == b'\r' || b == b'\n' || b == 0) {
            return; // keep-alive or padding
        }
        let msg = match Message::parse(data, &self.settings.limits) {
            Ok(m) => m,
            Err(e) => {
                trace!(remote = %flow.remote, reason = e.label(), "unparsable message dropped");
                self.metrics.drop_reason(e.label());
                return;
            }
        };
        if msg.is_request() {
            self.on_request(msg, flow, now);
        } else {
            self.on_response(msg, now);
        }
    }

    /// Drains a context after an input: its events meet the policy (the next serial group
    /// when every branch failed; counters), its messages join `sends`.
    fn drive(&self, e: &mut Entry, now: Instant, sends: &mut Sends) {
        while let Some(event) = e.ctx.poll_event() {
            match event {
                Event::Exhausted { .. } => self.next_group(e, now),
                Event::BranchFailed { status, .. } => {
                    if let Some(f) = e.later.as_mut().and_then(|l| l.failover.as_mut()) {
                        f.last_status = status;
                    }
                }
                Event::Upstream { status, local } => {
                    self.metrics.response_sent(status);
                    bump(if local {
                        &self.stats.replies_local
                    } else {
                        &self.stats.replies_forwarded
                    });
                }
                Event::Final { status } if status >= 300 => {
                    if let Some(call) = &e.dialog {
                        self.dialogs.on_invite_failure(call, status);
                    }
                }
                Event::RetransmissionSent => self.metrics.retransmission_sent(),
                Event::RetransmissionAbsorbed => self.metrics.retransmission_absorbed(),
                Event::Completed { status, response } => {
                    if let Some(w) = e.waiter.take() {
                        self.metrics.originated_outcome(status, response.is_some());
                        let elapsed = now.saturating_duration_since(w.started);
                        let _ = w.done.try_send(own::Outcome {
                            status,
                            response: response.map(|r| *r),
                            elapsed,
                        });
                    }
                }
                _ => {}
            }
        }
        while let Some(t) = e.ctx.poll_transmit() {
            sends.push((t.dest, t.bytes));
        }
        // Answered upstream: the call has its 2xx (a later fork's is not its) or has ended
        // with the failure. The context lives on for Timer L or M (32 s), long after a
        // short call; it need not keep the call's memory that long.
        if e.dialog.is_some() && e.ctx.is_answered() {
            e.dialog = None;
        }
    }

    /// Serial forking (§16.6): every branch so far failed; start the next group of targets
    /// that yields a branch, or let the context send its best response.
    fn next_group(&self, e: &mut Entry, now: Instant) {
        let request = e.ctx.request().cloned();
        while let (Some(later), Some(msg)) = (e.later.as_mut(), request.as_ref()) {
            // A trunk moves on only for its failover codes (never for 486 or a 6xx).
            if later.failover.as_ref().is_some_and(|f| !self.fails_over(f)) {
                break;
            }
            let Some(group) = later.groups.pop_front() else {
                break;
            };
            if let Some(f) = later.failover.as_mut() {
                f.current = group
                    .first()
                    .and_then(|r| r.trunk_dest.as_ref())
                    .map(|t| t.2.clone());
            }
            let first = e.ctx.next_branch();
            let copies = self.branch_copies(msg, &later.fork, &group, e.ctx.id(), first);
            let started = copies
                .into_iter()
                .filter(|(dest, bytes, within)| {
                    e.ctx
                        .add_branch_within(
                            now,
                            *dest,
                            dest.transport.is_reliable(),
                            bytes.clone(),
                            *within,
                        )
                        .is_ok()
                })
                .count();
            if started > 0 {
                if later.groups.is_empty() {
                    e.later = None;
                    e.ctx.release(now);
                }
                return;
            }
        }
        e.later = None;
        e.ctx.release(now);
    }

    fn on_cancel(&self, msg: &Message, flow: &Flow, now: Instant) {
        let found = TxKey::cancel_target(msg).and_then(|key| {
            let sid = key.id();
            let mut sends = Sends::new();
            let mut shard = self.shard(sid).lock();
            let e = shard
                .entries
                .get_mut(&sid)
                .filter(|e| e.key.as_ref() == Some(&key))?;
            // §16.10: every pending branch is cancelled; the 487s come back through them.
            let cancelled = e.ctx.handle_cancel(now);
            self.drive(e, now, &mut sends);
            self.settle(&mut shard, sid);
            drop(shard);
            self.flush(sends);
            cancelled.then_some(())
        });
        match found {
            Some(()) => self.reply_stateless(msg, flow, 200, "OK", &[]),
            None => self.reply_stateless(msg, flow, 481, "Call/Transaction Does Not Exist", &[]),
        }
    }

    /// An ACK that matched no transaction: the ACK for a 2xx, routed statelessly by its
    /// Route set (§16.11); or an ACK for one of this node's own replies, absorbed.
    fn forward_ack(&self, msg: &Message, flow: &Flow) {
        if msg.to_tag().is_some_and(|t| t.starts_with("lm")) {
            return;
        }
        // §16.11: routed by its Route set as any request in a dialog would be; a strict
        // next hop is sent to as it is (its Route value stays).
        let routing = route::route(msg, &self.local, self.settings.record_route);
        let (next, popped) = match &routing.decision {
            Decision::Route { uri, strict } => (
                self.locate(uri, msg, flow),
                routing.popped - usize::from(*strict),
            ),
            Decision::RequestUri { uri } => (self.locate(uri, msg, flow), routing.popped),
            _ => (Located::Failed(Unresolved::NoRecords), 0),
        };
        let next = match (self.back_over_flow(routing.flow, flow), next) {
            (Ok(Some(dest)), _) => Some(dest),
            (Ok(None), Located::At(dests)) => dests.first().copied(),
            (Ok(None), Located::Waiting) => return,
            (Ok(None), Located::Failed(_)) | (Err(()), _) => None,
        };
        let Some(dest) = next.filter(|d| !self.local.is_us_addr(d.addr)) else {
            self.metrics.drop_reason("ack_not_routable");
            return;
        };
        let Some(out_addr) = self.out.local_for(&dest) else {
            return;
        };
        let top_branch = msg
            .top_via()
            .and_then(Result::ok)
            .and_then(|v| v.branch())
            .unwrap_or_default();
        let id = self.local.hash(&[b"ack", top_branch.as_bytes()]);
        let sent_by = self.local.sent_by(dest.transport, out_addr);
        let bytes = Forward::new(msg)
            .received_from(Source {
                ip: flow.remote.ip(),
                port: flow.remote.port(),
            })
            .push_via_branch(&sent_by, (self.local.loop_hash(msg), id, 0))
            .decrement_max_forwards()
            .pop_routes(popped)
            .finish();
        let _ = self.out.send(&dest, bytes);
    }

    fn on_response(&self, msg: Message, now: Instant) {
        let status = msg.status().unwrap_or(0);
        self.metrics.response_received(status);
        if let Err(why) = sanity::check_response(&msg) {
            debug!(reason = %why, "response dropped");
            self.metrics.drop_reason("bad_response");
            return;
        }
        let Some(Ok(via)) = msg.top_via() else { return };
        let Some((sid, idx)) = via.branch().and_then(route::parse_branch) else {
            self.metrics.drop_reason("response_not_ours");
            return;
        };
        let is_cancel = msg
            .cseq()
            .and_then(Result::ok)
            .is_some_and(|c| c.method == "CANCEL");
        let mut sends = Sends::new();
        let mut shard = self.shard(sid).lock();
        let Some(e) = shard.entries.get_mut(&sid) else {
            drop(shard);
            // A 2xx retransmission after the transaction ended: forward it statelessly
            // (§16.7 step 10 with RFC 6026).
            if (200..300).contains(&status) && !is_cancel {
                self.forward_stateless_response(&msg);
            } else {
                self.metrics.drop_reason("no_transaction");
            }
            return;
        };
        if let Some(call) = e.dialog.as_ref().filter(|_| !is_cancel) {
            self.dialogs.on_invite_response(call, &msg);
        }
        e.ctx.handle_response(now, idx, &msg);
        self.drive(e, now, &mut sends);
        self.settle(&mut shard, sid);
        drop(shard);
        self.flush(sends);
        if status >= 200 {
            self.metrics.response_latency(now.elapsed().as_secs_f64());
        }
    }

    fn forward_stateless_response(&self, msg: &Message) {
        let Some((addr, tcp)) = route::response_next_hop(msg) else {
            debug!("stateless response dropped: no usable second Via");
            self.metrics.drop_reason("no_next_via");
            return;
        };
        let transport = if tcp { Transport::Tcp } else { Transport::Udp };
        let dest = Dest::new(transport, addr);
        let _ = self.out.send(&dest, Forward::new(msg).pop_via().finish());
    }

    /// Queues the entry's next deadline, or removes it when it has ended.
    fn settle(&self, shard: &mut Shard, sid: u64) {
        let Some(e) = shard.entries.get_mut(&sid) else {
            return;
        };
        if e.ctx.is_terminated() {
            // An INVITE whose context ended without an answer or a failure upstream (a
            // retry path that never sent one) still ends its call.
            if let Some(call) = e.dialog.take() {
                if call.phase() != Phase::Confirmed {
                    self.dialogs.on_invite_failure(&call, 500);
                }
            }
            shard.entries.remove(&sid);
            self.active.fetch_sub(1, Ordering::Relaxed);
            bump(&self.stats.freed);
            return;
        }
        if let Some(d) = e.ctx.poll_timeout() {
            if e.scheduled.is_none_or(|s| d < s) {
                e.scheduled = Some(d);
                shard.timers.push(Reverse((d, sid)));
            }
        }
    }

    fn shard_index(sid: u64) -> usize {
        (sid as usize) % SHARDS
    }

    /// Fires every timer due at `now`. Called by the timer thread.
    pub fn run_timers(&self, now: Instant) {
        for shard in self.shards.iter() {
            let mut shard = shard.lock();
            // Most ticks find nothing due: no send list is made, moved or dropped then
            // (that was most of an idle node's instructions).
            if shard.timers.peek().is_none_or(|Reverse((at, _))| *at > now) {
                continue;
            }
            let mut sends = Sends::new();
            while let Some(Reverse((at, sid))) = shard.timers.peek().copied() {
                if at > now {
                    break;
                }
                shard.timers.pop();
                let Some(e) = shard.entries.get_mut(&sid) else {
                    continue;
                };
                if e.scheduled.is_some_and(|s| s > now) {
                    continue; // a later deadline is queued for it too
                }
                e.scheduled = None;
                e.ctx.handle_timeout(now);
                self.drive(e, now, &mut sends);
                self.settle(&mut shard, sid);
            }
            drop(shard);
            if !sends.is_empty() {
                self.flush(sends);
            }
        }
    }

    /// Answers a request this node will not forward: INVITE through a server transaction
    /// (so retransmissions and the ACK are absorbed), anything else statelessly.
    fn reply_local(
        &self,
        msg: &Message,
        flow: &Flow,
        now: Instant,
        status: u16,
        reason: &str,
        extra: &[(&str, &str)],
    ) {
        if msg.method() == Some(&Method::Ack) {
            return;
        }
        let Some(key) = TxKey::server(msg).filter(|_| msg.method() == Some(&Method::Invite)) else {
            return self.reply_stateless(msg, flow, status, reason, extra);
        };
        let sid = key.id();
        let tag = self.local.local_tag(msg);
        let mut r = Response::to(msg, status, reason, Some(&tag));
        for (n, v) in extra {
            r = r.header(n, v);
        }
        let reply_to = ReplyTo {
            dest: reply_dest(msg, flow),
            reliable: flow.transport.is_reliable(),
        };
        let ctx = Context::answer(now, sid, msg, reply_to, (status, r.finish()), self.contexts);
        let entry = Entry {
            key: Some(key),
            ctx,
            scheduled: None,
            later: None,
            waiter: None,
            dialog: None,
        };
        self.insert(sid, entry, now);
    }

    /// Puts a new context in the table, unless another thread has just put one there for
    /// the same transaction (the same request received twice at once): then this request
    /// is a retransmission for that one, and the new context is dropped unsent.
    fn insert(&self, sid: u64, entry: Entry, now: Instant) {
        let mut sends = Sends::new();
        let mut shard = self.shard(sid).lock();
        match shard.entries.entry(sid) {
            std::collections::hash_map::Entry::Occupied(mut o) => {
                let e = o.get_mut();
                if e.key.is_some() && e.key == entry.key {
                    e.ctx.handle_request(now);
                    self.drive(e, now, &mut sends);
                }
                // The request was admitted twice at once: the copy's call is no call.
                if let Some(call) = &entry.dialog {
                    self.dialogs.discard(call);
                }
            }
            std::collections::hash_map::Entry::Vacant(v) => {
                let e = v.insert(Box::new(entry));
                bump(&self.stats.created);
                self.active.fetch_add(1, Ordering::Relaxed);
                self.drive(e, now, &mut sends);
            }
        }
        self.settle(&mut shard, sid);
        drop(shard);
        self.flush(sends);
    }

    fn reply_stateless(
        &self,
        msg: &Message,
        flow: &Flow,
        status: u16,
        reason: &str,
        extra: &[(&str, &str)],
    ) {
        let (dest, bytes) = self.stateless_response(msg, flow, status, reason, extra);
        let _ = self.out.send(&dest, bytes);
    }

    /// A response of this node's own to `msg` and where it goes, counted as sent.
    fn stateless_response(
        &self,
        msg: &Message,
        flow: &Flow,
        status: u16,
        reason: &str,
        extra: &[(&str, &str)],
    ) -> (Dest, Bytes) {
        let tag = self.local.local_tag(msg);
        let mut r = Response::to(msg, status, reason, Some(&tag));
        for (n, v) in extra {
            r = r.header(n, v);
        }
        self.count_local(status);
        (reply_dest(msg, flow), r.finish())
    }

    fn count_local(&self, status: u16) {
        self.metrics.response_sent(status);
        bump(&self.stats.replies_local);
        bump(&self.stats.stateless[usize::from((status / 100).clamp(1, 6) - 1)]);
    }

    /// Server transactions still waiting for a final response: what a graceful stop
    /// waits for (answered ones only absorb retransmissions).
    pub fn pending(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                s.lock()
                    .entries
                    .values()
                    .filter(|e| !e.ctx.is_answered())
                    .count()
            })
            .sum()
    }

    /// Periodic work besides timers: evicts idle flood-guard state.
    pub fn housekeeping(&self) {
        if let Some(f) = &self.flood {
            f.evict_idle();
        }
    }

    /// Keeps the flood guard's table within its bound (called every second).
    pub fn bound_flood_table(&self) {
        if self.flood.as_ref().is_some_and(|f| f.bound()) {
            self.metrics.drop_reason("flood_table_full");
        }
    }
}

/// Where responses to a request go (RFC 3261 §18.2.2, RFC 3581 §4): the connection it
/// came on; for UDP the source address, with the source port when `rport` was asked for,
/// else the Via port.
fn reply_dest(msg: &Message, flow: &Flow) -> Dest {
    if flow.transport == Transport::Tcp {
        return Dest {
            transport: Transport::Tcp,
            addr: flow.remote,
            local: Some(flow.local),
        };
    }
    let port = match msg.top_via().and_then(Result::ok) {
        Some(v) if v.rport().is_some() => flow.remote.port(),
        Some(v) => v.port().unwrap_or(5060),
        None => flow.remote.port(),
    };
    // Responses leave from the socket the request came in on.
    Dest {
        transport: Transport::Udp,
        addr: SocketAddr::new(flow.remote.ip(), port),
        local: Some(flow.local),
    }
}
