//! Dialog tracking (Kamailio's `dialog` module as data): every dialog-creating INVITE the
//! node relays becomes a [`Call`], held in a sharded table by Call-ID for the requests of
//! the dialog, joined to its [profiles] (call limits checked in the same step),
//! watched by a [`DialogActor`](actor) for the life around it (lifetime timer, operator
//! end, BYEs of the node's own), and written as a [CDR](cdr) when it ends. A confirmed
//! call is journaled in the state directory (module `saved`) and tracked again after a
//! restart.
//!
//! What a packet needs is read and changed on the thread that received it (DESIGN
//! principle 8): the table, the call's state, the counts. Ending a call ([`Dialogs::finish`])
//! is one idempotent step any thread may take: the first caller gives the profile counts
//! back, removes the call and writes its CDR; the rest find it done. The actors are told
//! of starts, answers and ends through a bounded queue their supervisor drains on a tick,
//! so the message path never wakes the actor runtime.

pub mod actor;
mod call;
pub mod cdr;
pub mod collector;
mod metrics;
pub mod profiles;
mod saved;
mod settings;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::BuildHasher;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use limes_cluster::journal::Record;
use limes_cluster::Journal;
use limes_sip::{Message, Method};
use parking_lot::Mutex;
use ractor::ActorRef;
use serde::Serialize;
use smallvec::SmallVec;
use tracing::{debug, error, info, warn};

use crate::transport::Dest;
use actor::SupervisorMsg;
use cdr::{Cdr, CdrLog, EndedBy};
use collector::Collector;
use profiles::{CallFacts, Joined, LimitDef, LimitReached, Profiles};
use saved::{saved_text, Saved};

use call::{profile_text, CallState};
pub use call::{session_expires, Call, CallView, Origin, Phase, Sides};
pub use metrics::DialogMetrics;
use metrics::{EndLabels, ProfileLabels};
pub use settings::{DialogSettings, VarRule};

const SHARDS: usize = 16;

/// Journal changes kept while the journal cannot be written, at most.
const MAX_UNSAVED: usize = 1_000_000;

/// Early dialogs (forks that answered with a tagged 1xx) kept per call.
const MAX_EARLY_DIALOGS: usize = 16;

/// Calls by Call-ID (forks of one Call-ID share it).
type Shard = HashMap<String, SmallVec<[Arc<Call>; 1]>>;

/// Notices waiting for the supervisor's next tick, at most: past it they are dropped and
/// counted (the calls still end by their BYEs and failures; only their timers are lost).
const MAX_NOTICES: usize = 200_000;

/// Why a call was not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error(transparent)]
    Limit(#[from] LimitReached),
    #[error("dialog table full")]
    Full,
}

/// What the supervisor is told.
#[derive(Debug)]
pub enum Notice {
    Started(Arc<Call>),
    Answered(u64),
    /// A session refresh (re-INVITE or UPDATE) passed.
    Refreshed(u64),
    Ended(u64),
}

/// `stats.get_statistics dialog:` and `dlg.stats_active`.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct Stats {
    pub early_dialogs: u64,
    pub active_dialogs: u64,
    pub all_dialogs: u64,
    pub processed_dialogs: u64,
    pub expired_dialogs: u64,
    pub failed_dialogs: u64,
}

/// The tracked calls, the profiles, the CDR file.
pub struct Dialogs {
    /// Read per INVITE without a lock; replaced whole on reload.
    settings: arc_swap::ArcSwap<DialogSettings>,
    node: String,
    pub profiles: Profiles,
    shards: Vec<Mutex<Shard>>,
    hasher: std::hash::RandomState,
    count: AtomicUsize,
    next_id: AtomicU64,
    processed: AtomicU64,
    expired: AtomicU64,
    failed: AtomicU64,
    cdr: CdrLog,
    notices: Mutex<VecDeque<Notice>>,
    metrics: DialogMetrics,
    /// The supervisor of the dialog actors, once started (operator commands go there).
    supervisor: std::sync::OnceLock<ActorRef<SupervisorMsg>>,
    /// Confirmed calls in the state directory (Kamailio's `db_mode`), and the changes not
    /// written yet: [`Dialogs::flush`] writes them as one batch each second.
    journal: Option<Journal>,
    /// Confirmed calls to write (`Some`) and ended ones to delete (`None`), by number.
    unsaved: Mutex<Vec<(u64, Option<Arc<Call>>)>>,
    /// Ended calls whose CDRs the next flush makes and writes.
    ended: Mutex<Vec<(Arc<Call>, EndedBy, u64)>>,
    /// The queue for the CDR collector, when one is configured (and a state directory).
    collector: Option<Arc<Collector>>,
}

impl Dialogs {
    /// Dialogs kept in memory only.
    pub fn new(
        settings: DialogSettings,
        node: &str,
        metrics: DialogMetrics,
    ) -> std::io::Result<Self> {
        Self::open(settings, node, metrics, None)
    }

    /// Dialogs journaled in `state_dir`: the confirmed calls found there are tracked again
    /// (their profile counts taken, their actors started with what is left of their
    /// lifetime), so their BYEs end them and their CDRs are written once.
    pub fn open(
        settings: DialogSettings,
        node: &str,
        metrics: DialogMetrics,
        state_dir: Option<&Path>,
    ) -> std::io::Result<Self> {
        let cdr = CdrLog::open(settings.cdr_file.as_deref(), settings.cdr_rotate_bytes)?;
        let collector = match (&settings.cdr_url, state_dir) {
            (Some(url), Some(dir)) => Some(Arc::new(Collector::open(
                url.clone(),
                dir,
                metrics.collector.clone(),
            )?)),
            _ => None,
        };
        let (journal, loaded) = match state_dir {
            Some(dir) => {
                let (j, loaded) = Journal::open_map(dir, "dialogs")?;
                (Some(j), loaded.entries)
            }
            None => (None, BTreeMap::new()),
        };
        let dialogs = Self {
            profiles: Profiles::new(
                settings.profiles.clone(),
                settings.classes.clone(),
                settings.limits.clone(),
            ),
            settings: arc_swap::ArcSwap::from_pointee(settings),
            node: node.to_owned(),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: std::hash::RandomState::new(),
            count: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            processed: AtomicU64::new(0),
            expired: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            cdr,
            notices: Mutex::new(VecDeque::new()),
            metrics,
            supervisor: std::sync::OnceLock::new(),
            journal,
            unsaved: Mutex::new(Vec::new()),
            ended: Mutex::new(Vec::new()),
            collector,
        };
        dialogs.declare_limits(&dialogs.settings.load().limits);
        dialogs.restore(loaded);
        Ok(dialogs)
    }

    /// Each limit's rejection counter, at zero from the moment the limit exists.
    fn declare_limits(&self, limits: &[LimitDef]) {
        crate::metrics::at_zero(
            &self.metrics.limit_rejections,
            limits.iter().map(|l| ProfileLabels {
                profile: l.profile.clone(),
            }),
        );
    }

    fn restore(&self, saved: BTreeMap<String, String>) {
        let mut restored = 0;
        for (key, text) in saved {
            let (Ok(id), Ok(s)) = (key.parse::<u64>(), serde_json::from_str::<Saved<'_>>(&text))
            else {
                warn!(key = %key, "unreadable dialog in the journal skipped");
                self.unsaved.lock().push((key.parse().unwrap_or(0), None));
                continue;
            };
            let memberships = s
                .profiles
                .iter()
                .filter_map(|(p, v)| self.profiles.counter(p, v).try_join(None))
                .collect();
            let call = Arc::new(s.into_call(id, memberships));
            self.next_id.fetch_max(id + 1, Ordering::Relaxed);
            self.track(call);
            restored += 1;
        }
        if restored > 0 {
            info!(
                dialogs = restored,
                "confirmed dialogs restored from the journal"
            );
        }
    }

    /// Puts a call in the table and tells the supervisor.
    fn track(&self, call: Arc<Call>) {
        self.shard(&call.call_id)
            .lock()
            .entry(call.call_id.clone())
            .or_default()
            .push(call.clone());
        self.count.fetch_add(1, Ordering::Relaxed);
        self.notify(Notice::Started(call));
    }

    /// Queues a confirmed call for the journal.
    fn save(&self, call: &Arc<Call>) {
        if self.journal.is_some() {
            self.unsaved.lock().push((call.id, Some(call.clone())));
        }
    }

    /// New profiles, classes, limits and timers (reload); calls up keep theirs. The CDR
    /// file stays (a restart changes it).
    pub fn set_settings(&self, s: DialogSettings) {
        self.profiles
            .set_rules(s.profiles.clone(), s.classes.clone(), s.limits.clone());
        self.declare_limits(&s.limits);
        self.settings.store(Arc::new(s));
    }

    pub fn tracks(&self) -> bool {
        self.settings.load().track
    }

    pub fn lifetime(&self) -> Duration {
        self.settings.load().lifetime
    }

    /// Session timer settings: what to insert, the smallest accepted.
    pub fn session_timers(&self) -> (Option<Duration>, Duration) {
        let s = self.settings.load();
        (s.session_expires, s.min_se)
    }

    pub fn rejects_unmatched(&self) -> bool {
        self.settings.load().reject_unmatched
    }

    fn shard(&self, call_id: &str) -> &Mutex<Shard> {
        &self.shards[(self.hasher.hash_one(call_id) as usize) % SHARDS]
    }

    /// Admits a dialog-creating INVITE: joins its profiles (limits checked) and tracks it.
    pub fn admit(
        &self,
        msg: &Message,
        caller_dest: Dest,
        origin: Origin,
    ) -> Result<Arc<Call>, Refused> {
        if self.count.load(Ordering::Relaxed) >= self.settings.load().max_dialogs {
            return Err(Refused::Full);
        }
        let ruri = msg.request_uri().and_then(Result::ok);
        let callee = ruri.and_then(|u| u.user).unwrap_or_default();
        let facts = CallFacts {
            caller: &origin.caller,
            source: &origin.source,
            callee,
            call_limit: origin.call_limit,
        };
        let joined = match self.profiles.join(&facts) {
            Ok(j) => j,
            Err(limit) => {
                self.metrics
                    .limit_rejections
                    .get_or_create(&ProfileLabels {
                        profile: limit.profile.clone(),
                    })
                    .inc();
                let class = self.profiles.class_of(callee);
                let call = self.new_call(
                    msg,
                    caller_dest,
                    origin,
                    Joined {
                        class,
                        ..Joined::default()
                    },
                );
                call.state.lock().status = limit.status;
                self.write_cdr(&Arc::new(call), EndedBy::Limit);
                return Err(Refused::Limit(limit));
            }
        };
        let call = Arc::new(self.new_call(msg, caller_dest, origin, joined));
        self.track(call.clone());
        Ok(call)
    }

    fn new_call(&self, msg: &Message, caller_dest: Dest, origin: Origin, joined: Joined) -> Call {
        let seq = msg.cseq().and_then(Result::ok).map_or(0, |c| c.seq);
        let vars = self
            .settings
            .load()
            .vars
            .iter()
            .filter_map(|r| Some((r.name.clone(), r.eval(msg, &origin)?)))
            .collect();
        Call {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            call_id: msg.call_id().unwrap_or_default().to_owned(),
            caller_tag: msg.from_tag().unwrap_or_default().to_owned(),
            from: msg
                .get(limes_sip::HeaderName::From)
                .unwrap_or_default()
                .to_owned(),
            to: msg
                .get(limes_sip::HeaderName::To)
                .unwrap_or_default()
                .to_owned(),
            request_uri: msg.request_uri_str().unwrap_or_default().to_owned(),
            origin,
            class: joined.class,
            setup_ms: unix_ms(),
            caller_dest,
            caller_contact: msg
                .contacts()
                .next()
                .and_then(Result::ok)
                .map(|c| c.uri.to_owned())
                .unwrap_or_default(),
            state: Mutex::new(CallState {
                phase: Phase::Setup,
                callee_tag: None,
                early_tags: SmallVec::new(),
                callee_contact: None,
                record_route: Vec::new(),
                answer_ms: None,
                status: 0,
                caller_cseq: seq,
                callee_cseq: None,
                profiles: joined.profiles,
                memberships: joined.memberships,
                vars,
                ended_by: None,
                session: None,
            }),
        }
    }

    /// A response to the call's INVITE from the callee (§12.1): a To tag makes the dialog
    /// early, the first 2xx confirms it and fixes its route set; later 2xx of other forks
    /// are relayed but not tracked.
    pub fn on_invite_response(&self, call: &Arc<Call>, msg: &Message) {
        let status = msg.status().unwrap_or(0);
        let Some(tag) = msg.to_tag() else { return };
        if !(101..300).contains(&status) {
            return;
        }
        let mut s = call.state.lock();
        match s.phase {
            Phase::Setup | Phase::Early => {
                if let Some(c) = msg.contacts().next().and_then(Result::ok) {
                    s.callee_contact = Some(c.uri.to_owned());
                }
                if status >= 200 {
                    s.callee_tag = Some(tag.to_owned());
                    s.early_tags.clear();
                    s.phase = Phase::Confirmed;
                    s.status = status;
                    s.session = session_expires(msg).map(|n| Duration::from_secs(u64::from(n)));
                    s.answer_ms = Some(unix_ms());
                    s.record_route = msg
                        .record_routes()
                        .filter_map(Result::ok)
                        .map(|r| format!("<{}>", r.uri))
                        .collect();
                    drop(s);
                    self.save(call);
                    self.notify(Notice::Answered(call.id));
                } else {
                    // Forked early dialogs are kept (bounded) until one is answered.
                    if s.early_tags.len() < MAX_EARLY_DIALOGS
                        && !s.early_tags.iter().any(|t| t == tag)
                    {
                        s.early_tags.push(tag.to_owned());
                    }
                    s.phase = Phase::Early;
                }
            }
            Phase::Confirmed | Phase::Ended => {}
        }
    }

    /// The final failure the caller got (§16.7): the call ends with it.
    pub fn on_invite_failure(&self, call: &Arc<Call>, status: u16) {
        if call.phase() == Phase::Confirmed {
            return;
        }
        call.state.lock().status = status;
        let by = match status {
            487 => EndedBy::Caller,
            408 => EndedBy::NoAnswer,
            _ => EndedBy::Failure,
        };
        self.finish(call, by);
    }

    /// The tracked call an in-dialog request belongs to, from either side (`true`: from
    /// the caller).
    pub fn find(&self, msg: &Message) -> Option<(Arc<Call>, bool)> {
        // No call tracked (tracking off, or an idle node): nothing to look up. A call is
        // counted as soon as its INVITE is admitted, long before a request inside it can
        // come.
        if self.count.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let call_id = msg.call_id()?;
        let from = msg.from_tag()?;
        let to = msg.to_tag()?;
        let shard = self.shard(call_id).lock();
        shard.get(call_id)?.iter().find_map(|c| {
            let s = c.state.lock();
            let is_callee = |tag: &str| match &s.callee_tag {
                Some(t) => t == tag,
                None => s.early_tags.iter().any(|t| t == tag),
            };
            if c.caller_tag == from && is_callee(to) {
                Some((c.clone(), true))
            } else if c.caller_tag == to && is_callee(from) {
                Some((c.clone(), false))
            } else {
                None
            }
        })
    }

    /// A request inside a tracked dialog: its side's CSeq is noted; a re-INVITE or UPDATE
    /// of a call with a session timer refreshes it (RFC 4028, a new interval taken from
    /// its Session-Expires); a BYE ends the call.
    pub fn on_request(&self, call: &Arc<Call>, from_caller: bool, msg: &Message) {
        let Some(method) = msg.method() else { return };
        let cseq = msg.cseq().and_then(Result::ok).map_or(0, |c| c.seq);
        let refreshed = {
            let mut s = call.state.lock();
            let refresh = s.phase == Phase::Confirmed
                && s.session.is_some()
                && matches!(method, Method::Invite | Method::Update);
            if refresh {
                if let Some(n) = session_expires(msg) {
                    s.session = Some(Duration::from_secs(u64::from(n)));
                }
            }
            refresh
        };
        if refreshed {
            self.notify(Notice::Refreshed(call.id));
        }
        {
            let mut s = call.state.lock();
            if !matches!(method, Method::Ack | Method::Cancel) {
                if from_caller {
                    s.caller_cseq = s.caller_cseq.max(cseq);
                } else {
                    s.callee_cseq = Some(s.callee_cseq.map_or(cseq, |n| n.max(cseq)));
                }
            }
        }
        if *method == Method::Bye {
            let by = if from_caller {
                EndedBy::Caller
            } else {
                EndedBy::Callee
            };
            self.finish(call, by);
        }
    }

    /// Forgets a call that never was one (the same INVITE admitted by two threads at
    /// once; the copy not relayed): counts given back, no CDR.
    pub fn discard(&self, call: &Call) {
        let memberships = {
            let mut s = call.state.lock();
            if s.ended_by.is_some() {
                return;
            }
            s.ended_by = Some(EndedBy::Failure);
            s.phase = Phase::Ended;
            std::mem::take(&mut s.memberships)
        };
        drop(memberships);
        self.forget(call);
        self.notify(Notice::Ended(call.id));
    }

    /// Takes the call out of the table.
    fn forget(&self, call: &Call) {
        {
            let mut shard = self.shard(&call.call_id).lock();
            if let Some(calls) = shard.get_mut(&call.call_id) {
                calls.retain(|c| c.id != call.id);
                if calls.is_empty() {
                    shard.remove(&call.call_id);
                }
            }
        }
        self.count.fetch_sub(1, Ordering::Relaxed);
    }

    /// Ends a call: once, whoever calls first. The profile counts are given back, the call
    /// leaves the table, its CDR is queued and its actor told. `false` when it had ended.
    pub fn finish(&self, call: &Arc<Call>, by: EndedBy) -> bool {
        let memberships = {
            let mut s = call.state.lock();
            if s.ended_by.is_some() {
                return false;
            }
            s.ended_by = Some(by);
            if s.phase == Phase::Confirmed && self.journal.is_some() {
                self.unsaved.lock().push((call.id, None));
            }
            s.phase = Phase::Ended;
            std::mem::take(&mut s.memberships)
        };
        drop(memberships);
        self.forget(call);
        self.processed.fetch_add(1, Ordering::Relaxed);
        match by {
            EndedBy::Timeout | EndedBy::SessionExpired => {
                self.expired.fetch_add(1, Ordering::Relaxed);
            }
            EndedBy::Failure | EndedBy::NoAnswer | EndedBy::ActorFailure => {
                self.failed.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
        self.metrics
            .ended
            .get_or_create(&EndLabels {
                ended_by: by.as_str(),
            })
            .inc();
        self.write_cdr(call, by);
        self.notify(Notice::Ended(call.id));
        debug!(call_id = %call.call_id, ended_by = by.as_str(), "dialog ended");
        true
    }

    /// Queues the call's CDR; it is made and written by the next [`Dialogs::flush`], off
    /// the message path.
    fn write_cdr(&self, call: &Arc<Call>, by: EndedBy) {
        let end_ms = unix_ms();
        if let Some(a) = call.answer_ms() {
            self.metrics
                .duration
                .observe(end_ms.saturating_sub(a) as f64 / 1000.0);
        }
        self.ended.lock().push((call.clone(), by, end_ms));
        self.metrics.cdrs_written.inc();
    }

    /// The call's CDR as a JSON line's text.
    fn cdr_json(&self, call: &Call, by: EndedBy, end_ms: u64) -> (String, String) {
        let s = call.state.lock();
        // `node-setup_ms-number`: unique per record.
        let mut id = String::with_capacity(self.node.len() + 24);
        let mut digits = itoa::Buffer::new();
        id.push_str(&self.node);
        id.push('-');
        id.push_str(digits.format(call.setup_ms));
        id.push('-');
        id.push_str(digits.format(call.id));
        let cdr = Cdr {
            event: "Call_End",
            id: Cow::Borrowed(&id),
            node: Cow::Borrowed(&self.node),
            call_id: Cow::Borrowed(&call.call_id),
            from: Cow::Borrowed(&call.from),
            to: Cow::Borrowed(&call.to),
            request_uri: Cow::Borrowed(&call.request_uri),
            caller: Cow::Borrowed(&call.origin.caller),
            source: Cow::Borrowed(&call.origin.source),
            class: call.class.as_deref().map(Cow::Borrowed),
            setup_time: call.setup_ms / 1000,
            answer_time: s.answer_ms.map(|ms| ms / 1000),
            end_time: end_ms / 1000,
            bill_sec: s.answer_ms.map_or(0, |a| end_ms.saturating_sub(a) / 1000),
            status: s.status,
            ended_by: by,
            profiles: s.profiles.iter().map(|(p, v)| profile_text(p, v)).collect(),
            variables: Cow::Borrowed(&s.vars),
        };
        let json = cdr.to_json();
        (id, json)
    }

    /// Writes the queued CDRs and journal changes (the state thread, once a second, and at
    /// shutdown): a call confirmed in the second before a kill -9 may be lost, as with
    /// Kamailio's `db_mode` 2 and a one-second period.
    pub fn flush(&self) {
        let ended = std::mem::take(&mut *self.ended.lock());
        for (call, by, end_ms) in ended {
            let (id, json) = self.cdr_json(&call, by, end_ms);
            self.cdr.append_line(&json);
            if let Some(c) = &self.collector {
                c.push(id, json);
            }
        }
        if let Err(e) = self.cdr.flush() {
            warn!(error = %e, file = %self.cdr.path().map_or_else(String::new, |p| p.display().to_string()), "CDR file write failed; records kept for the next try within a bound");
        }
        if let Some(c) = &self.collector {
            c.persist();
        }
        let Some(journal) = &self.journal else {
            return;
        };
        let changes = std::mem::take(&mut *self.unsaved.lock());
        // A call that ended since it was queued is not written (its delete follows).
        let texts: Vec<(String, Option<String>)> = changes
            .iter()
            .filter_map(|(id, call)| match call {
                Some(c) => saved_text(c).map(|t| (id.to_string(), Some(t))),
                None => Some((id.to_string(), None)),
            })
            .collect();
        let records: Vec<Record<'_>> = texts
            .iter()
            .map(|(key, text)| match text {
                Some(t) => Record::Put(key, t),
                None => Record::Delete(key),
            })
            .collect();
        if let Err(e) = journal.write_batch(&records) {
            let mut unsaved = self.unsaved.lock();
            if changes.len() + unsaved.len() > MAX_UNSAVED {
                error!(error = %e, changes = changes.len(), "dialog journal write failed; changes dropped (too many waiting)");
                return;
            }
            warn!(error = %e, "dialog journal write failed; changes kept for the next try");
            let later = std::mem::take(&mut *unsaved);
            *unsaved = changes;
            unsaved.extend(later);
            return;
        }
        if journal.needs_compaction(1 << 20) {
            // Changes queued meanwhile go to the new log, after the snapshot.
            let result = journal.compact(|put| {
                for call in self.all() {
                    if call.phase() == Phase::Confirmed {
                        if let Some(t) = saved_text(&call) {
                            put(&call.id.to_string(), &t)?;
                        }
                    }
                }
                Ok(())
            });
            if let Err(e) = result {
                warn!(error = %e, "dialog journal compaction failed");
            }
        }
    }

    fn notify(&self, n: Notice) {
        let mut q = self.notices.lock();
        if q.len() >= MAX_NOTICES {
            self.metrics.notices_dropped.inc();
            return;
        }
        q.push_back(n);
    }

    /// Everything the actors have not been told yet (the supervisor's tick).
    pub fn take_notices(&self) -> VecDeque<Notice> {
        std::mem::take(&mut *self.notices.lock())
    }

    /// The CDR collector's queue, for its posting thread.
    pub fn collector(&self) -> Option<Arc<Collector>> {
        self.collector.clone()
    }

    pub fn set_supervisor(&self, s: ActorRef<SupervisorMsg>) {
        let _ = self.supervisor.set(s);
    }

    /// Asks the call's actor to end it (BYE to both sides, CDR): `dlg.end_dlg`. `false`
    /// when no actor holds a call of that number. Blocks until the supervisor answers:
    /// for the admin methods' blocking pool, never an async task.
    pub fn end_blocking(&self, id: u64, by: EndedBy) -> bool {
        let Some(s) = self.supervisor.get() else {
            return false;
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        s.cast(SupervisorMsg::End(id, by, tx.into())).is_ok() && rx.blocking_recv().unwrap_or(false)
    }

    /// Ends every call (shutdown after the drain time); how many were asked to end.
    pub async fn end_all(&self, by: EndedBy) -> usize {
        let Some(s) = self.supervisor.get() else {
            return 0;
        };
        ractor::call!(s, SupervisorMsg::EndAll, by).unwrap_or(0)
    }

    /// A tracked call by its number.
    pub fn get(&self, id: u64) -> Option<Arc<Call>> {
        self.all().into_iter().find(|c| c.id == id)
    }

    /// Every tracked call, oldest first.
    pub fn all(&self) -> Vec<Arc<Call>> {
        let mut all: Vec<Arc<Call>> = self
            .shards
            .iter()
            .flat_map(|s| s.lock().values().flatten().cloned().collect::<Vec<_>>())
            .collect();
        all.sort_by_key(|c| c.id);
        all
    }

    /// The calls in a profile (`dlg.profile_list`).
    pub fn in_profile(&self, profile: &str, value: Option<&str>) -> Vec<Arc<Call>> {
        self.all()
            .into_iter()
            .filter(|c| c.in_profile(profile, value))
            .collect()
    }

    pub fn stats(&self) -> Stats {
        let (mut early, mut active) = (0, 0);
        for shard in &self.shards {
            for c in shard.lock().values().flatten() {
                match c.phase() {
                    Phase::Setup | Phase::Early => early += 1,
                    Phase::Confirmed => active += 1,
                    Phase::Ended => {}
                }
            }
        }
        Stats {
            early_dialogs: early,
            active_dialogs: active,
            all_dialogs: early + active,
            processed_dialogs: self.processed.load(Ordering::Relaxed),
            expired_dialogs: self.expired.load(Ordering::Relaxed),
            failed_dialogs: self.failed.load(Ordering::Relaxed),
        }
    }

    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests;
