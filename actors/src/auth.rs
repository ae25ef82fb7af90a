//! Digest authentication of requests from subscribers (RFC 3261 §22, RFC 7616, RFC 8760):
//! REGISTER is challenged with 401 (`WWW-Authenticate`), other requests with 407
//! (`Proxy-Authenticate`). Nonces are stateless HMACs (any restart or node can check
//! them); counts are guarded against replay; failures are counted per source and a source
//! that fails too often is blocked for a while.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use limes_cluster::NodeSecret;
use limes_sip::digest::{
    challenge_value, Algorithm, Credentials, NonceKey, NonceStatus, Replay, ReplayGuard,
};
use limes_sip::{HeaderName, Message};
use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tracing::{info, warn};

use crate::metrics::at_zero;
use crate::tables::{Subscriber, Tables};

/// Authentication policy.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// The realm; empty: the From domain of each request.
    pub realm: String,
    /// Offered in this order, one challenge header each (RFC 8760 §2.4: preferred first),
    /// unless the subscriber has a list of its own. MD5 alone by default: clients that
    /// read only the first challenge (sipp) or refuse a request that offers any other
    /// algorithm (baresip 1.0, many deployed phones) could not register otherwise.
    pub algorithms: Vec<Algorithm>,
    /// How long a nonce stays fresh, seconds; older ones are answered `stale=true`.
    pub nonce_lifetime: u64,
    /// Challenge requests other than REGISTER (407) from sources that are not trusted.
    pub challenge_requests: bool,
    /// The authenticated user must be the From user (REGISTER: the To user).
    pub match_from: bool,
    /// Failures from one source within `failure_window` that block it.
    pub max_failures: u32,
    pub failure_window: Duration,
    pub block_for: Duration,
    /// Sources tracked for failures at most (the oldest forgotten first).
    pub max_tracked_sources: usize,
    /// Nonces tracked for replay at most.
    pub max_tracked_nonces: usize,
    /// Shared by every node of a cluster so any node checks any nonce; empty: random.
    pub secret: String,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            realm: String::new(),
            algorithms: vec![Algorithm::Md5],
            nonce_lifetime: 300,
            challenge_requests: true,
            match_from: true,
            max_failures: 10,
            failure_window: Duration::from_secs(60),
            block_for: Duration::from_secs(300),
            max_tracked_sources: 100_000,
            max_tracked_nonces: 1_000_000,
            secret: String::new(),
        }
    }
}

/// The outcome of checking a request's credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Authenticated as this subscriber.
    Authenticated(Arc<Subscriber>),
    /// Send a challenge (`stale`: the credentials were right but the nonce old).
    Challenge { stale: bool },
    /// 403 with this reason.
    Forbidden(&'static str),
    /// The source is blocked: drop the request.
    Blocked,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChallengeLabels {
    pub status: &'static str,
}

#[derive(Debug, Default)]
pub struct AuthMetrics {
    pub challenges: Family<ChallengeLabels, Counter>,
    pub failures: Family<FailureLabels, Counter>,
    pub successes: Counter,
    pub blocked_sources: Gauge,
    pub blocks: Counter,
    pub blocked_requests: Counter,
}

/// Every value of the `reason` label of `limes_auth_failures_total`.
pub const FAILURE_REASONS: [&str; 8] = [
    "algorithm",
    "bad_nonce",
    "malformed",
    "replay",
    "stale_nonce",
    "unknown_user",
    "user_mismatch",
    "wrong_password",
];

impl AuthMetrics {
    pub fn register(registry: &mut Registry) -> Arc<Self> {
        let m = Arc::new(Self::default());
        at_zero(
            &m.challenges,
            ["401", "407"].map(|status| ChallengeLabels { status }),
        );
        at_zero(
            &m.failures,
            FAILURE_REASONS.map(|reason| FailureLabels { reason }),
        );
        let r = registry.sub_registry_with_prefix("limes_auth");
        r.register(
            "challenges",
            "Digest challenges sent, by status (401, 407)",
            m.challenges.clone(),
        );
        r.register(
            "failures",
            "Failed authentications, by reason",
            m.failures.clone(),
        );
        r.register("successes", "Requests authenticated", m.successes.clone());
        r.register(
            "blocked_sources",
            "Sources blocked now for repeated failures",
            m.blocked_sources.clone(),
        );
        r.register("blocks", "Times a source was blocked", m.blocks.clone());
        r.register(
            "blocked_requests",
            "Requests dropped from blocked sources",
            m.blocked_requests.clone(),
        );
        m
    }
}

struct FailState {
    first: Instant,
    count: u32,
    blocked_until: Option<Instant>,
}

pub struct Auth {
    /// Replaced whole on reload (the secret and the table bounds stay as started).
    settings: ArcSwap<AuthSettings>,
    nonces: NonceKey,
    replay: Mutex<ReplayGuard>,
    failures: Mutex<HashMap<IpAddr, FailState>>,
    /// Makes every nonce unique; starts at a random value so restarts do not repeat.
    salt: AtomicU64,
    pub metrics: Arc<AuthMetrics>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("settings", &self.settings)
            .finish()
    }
}

/// One request to authenticate: whom it speaks for and where it came from.
#[derive(Debug, Clone, Copy)]
pub struct Attempt<'a> {
    pub kind: Kind,
    pub realm: &'a str,
    /// The From user (the To user of a REGISTER).
    pub user: &'a str,
    pub source: IpAddr,
    pub now: Instant,
    /// The wall clock, Unix seconds (nonces carry it).
    pub unix: u64,
}

/// Which header pair a request uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// REGISTER: `Authorization`, challenged with 401 `WWW-Authenticate`.
    Www,
    /// Everything else: `Proxy-Authorization`, 407 `Proxy-Authenticate`.
    Proxy,
}

impl Kind {
    pub fn status(self) -> (u16, &'static str) {
        match self {
            Self::Www => (401, "Unauthorized"),
            Self::Proxy => (407, "Proxy Authentication Required"),
        }
    }

    pub fn challenge_header(self) -> &'static str {
        match self {
            Self::Www => "WWW-Authenticate",
            Self::Proxy => "Proxy-Authenticate",
        }
    }

    fn credentials_header(self) -> HeaderName {
        match self {
            Self::Www => HeaderName::Authorization,
            Self::Proxy => HeaderName::ProxyAuthorization,
        }
    }
}

impl Auth {
    /// `node_secret` keys the nonces unless `auth.secret` is set: a nonce one node issued
    /// is accepted by every node with the same secret, and after a restart.
    pub fn new(
        settings: AuthSettings,
        metrics: Arc<AuthMetrics>,
        node_secret: &NodeSecret,
    ) -> Self {
        let keys = std::hash::RandomState::new();
        let salt = AtomicU64::new(keys.hash_one(u64::MAX));
        let secret = if settings.secret.is_empty() {
            node_secret.subkey("digest-nonce").to_vec()
        } else {
            settings.secret.as_bytes().to_vec()
        };
        Self {
            nonces: NonceKey::new(&secret, settings.nonce_lifetime),
            replay: Mutex::new(ReplayGuard::new(settings.max_tracked_nonces)),
            failures: Mutex::new(HashMap::new()),
            salt,
            settings: ArcSwap::from_pointee(settings),
            metrics,
        }
    }

    pub fn settings(&self) -> Arc<AuthSettings> {
        self.settings.load_full()
    }

    /// New settings from a reload; a changed nonce lifetime applies to new nonces.
    pub fn set_settings(&self, settings: AuthSettings) {
        self.settings.store(Arc::new(settings));
    }

    /// The realm for a request: the configured one, else the From domain.
    pub fn realm(&self, msg: &Message) -> String {
        let configured = &self.settings.load().realm;
        if !configured.is_empty() {
            return configured.clone();
        }
        msg.from_uri()
            .and_then(Result::ok)
            .map_or(String::new(), |u| u.host.to_ascii_lowercase())
    }

    /// Whether `ip` is blocked now (counted as a dropped request when it is).
    pub fn is_blocked(&self, ip: IpAddr, now: Instant) -> bool {
        let blocked = self
            .failures
            .lock()
            .get(&ip)
            .and_then(|f| f.blocked_until)
            .is_some_and(|until| until > now);
        if blocked {
            self.metrics.blocked_requests.inc();
        }
        blocked
    }

    /// Checks the credentials of `msg` for the attempt's realm and user.
    pub fn check(&self, msg: &Message, attempt: &Attempt<'_>, tables: &Tables) -> Verdict {
        let Attempt {
            kind,
            realm,
            user,
            source,
            now,
            unix,
        } = *attempt;
        if self.is_blocked(source, now) {
            return Verdict::Blocked;
        }
        let settings = self.settings.load();
        let method = msg.method().map_or("", |m| m.as_str());
        // Several credentials may be present (one per realm): use the one for ours.
        let creds = msg
            .get_all(kind.credentials_header())
            .filter_map(|v| Credentials::parse(v).ok())
            .find(|c| c.realm == realm);
        let Some(c) = creds else {
            return Verdict::Challenge { stale: false };
        };
        let fail = |user: &str, reason, v| self.fail(msg, attempt, user, reason, v);
        let Some(sub) = tables.subscriber(c.username, realm) else {
            return fail(
                c.username,
                "unknown_user",
                Verdict::Forbidden("Forbidden: unknown user"),
            );
        };
        let Some(alg) = c.algorithm().filter(|a| self.offers(&sub, a.base())) else {
            return fail(c.username, "algorithm", Verdict::Challenge { stale: false });
        };
        if settings.match_from && c.username != user {
            return fail(
                c.username,
                "user_mismatch",
                Verdict::Forbidden("Forbidden: credentials do not match the user"),
            );
        }
        let Some(ha1) = sub.ha1_for(alg) else {
            return fail(c.username, "algorithm", Verdict::Challenge { stale: false });
        };
        let status = self.nonces.check(c.nonce, unix, realm);
        if status == NonceStatus::Invalid {
            return fail(c.username, "bad_nonce", Verdict::Challenge { stale: false });
        }
        let qop = match c.qop() {
            Ok(q) => q,
            Err(_) => {
                return fail(
                    c.username,
                    "malformed",
                    Verdict::Forbidden("Forbidden: malformed credentials"),
                )
            }
        };
        // The digest covers the `uri` the client wrote; it is not required to equal the
        // Request-URI (clients such as sipp write the registrar's address, and a proxy on
        // the way may have rewritten the Request-URI). Replays are stopped by nonce and nc.
        if !c.verify(method, ha1, &msg.body()) {
            return fail(
                c.username,
                "wrong_password",
                Verdict::Forbidden("Forbidden: wrong credentials"),
            );
        }
        if status == NonceStatus::Stale {
            self.metrics
                .failures
                .get_or_create(&FailureLabels {
                    reason: "stale_nonce",
                })
                .inc();
            return Verdict::Challenge { stale: true };
        }
        if qop.is_some() {
            let nc = c.nc.unwrap_or(0);
            let request = request_id(msg);
            match self.replay.lock().check(c.nonce, nc, request) {
                Replay::New | Replay::Repeat => {}
                Replay::Forgotten => return Verdict::Challenge { stale: true },
                Replay::Replayed => {
                    return fail(c.username, "replay", Verdict::Challenge { stale: true })
                }
            }
        }
        self.metrics.successes.inc();
        Verdict::Authenticated(sub)
    }

    /// Whether `alg` is offered to (and accepted from) a subscriber: its own list, else
    /// the node's.
    fn offers(&self, sub: &Subscriber, alg: Algorithm) -> bool {
        if sub.algorithms.is_empty() {
            return self.settings.load().algorithms.contains(&alg);
        }
        sub.algorithms
            .iter()
            .any(|a| Algorithm::parse(a) == Some(alg))
    }

    /// Counts a failure against the source (blocking it after too many) and logs it at
    /// info in one fixed format for fail2ban (`contrib/fail2ban/`): the source comes first,
    /// before anything the peer wrote (quoted and escaped), so a user name cannot forge it.
    fn fail(
        &self,
        msg: &Message,
        attempt: &Attempt<'_>,
        user: &str,
        reason: &'static str,
        v: Verdict,
    ) -> Verdict {
        debug_assert!(FAILURE_REASONS.contains(&reason), "{reason}");
        let (source, now) = (attempt.source, attempt.now);
        info!(
            "authentication failed: source={source} user={user:?} realm={:?} reason={reason} call_id={:?}",
            attempt.realm,
            msg.call_id().unwrap_or_default(),
        );
        self.metrics
            .failures
            .get_or_create(&FailureLabels { reason })
            .inc();
        let settings = self.settings.load();
        let mut map = self.failures.lock();
        if !map.contains_key(&source) && map.len() >= settings.max_tracked_sources {
            // Forget an unblocked source to stay within the bound: the first one found,
            // not the oldest (a search for the oldest would cost a scan of the whole table
            // for every failure of a flood from new addresses).
            if let Some(old) = map
                .iter()
                .find(|(_, f)| f.blocked_until.is_none())
                .map(|(ip, _)| *ip)
            {
                map.remove(&old);
            } else {
                return v;
            }
        }
        let f = map.entry(source).or_insert(FailState {
            first: now,
            count: 0,
            blocked_until: None,
        });
        if now.duration_since(f.first) > settings.failure_window {
            f.first = now;
            f.count = 0;
        }
        f.count += 1;
        if f.count >= settings.max_failures && f.blocked_until.is_none() {
            f.blocked_until = Some(now + settings.block_for);
            self.metrics.blocks.inc();
            self.metrics.blocked_sources.inc();
            warn!(source = %source, failures = f.count, block_s = settings.block_for.as_secs(), "source blocked after repeated authentication failures");
        }
        v
    }

    /// The challenge header values for `realm`, one per algorithm: the subscriber's own
    /// list when the request names one that has it, else the node's.
    pub fn challenges(
        &self,
        realm: &str,
        stale: bool,
        unix: u64,
        sub: Option<&Subscriber>,
    ) -> Vec<String> {
        let salt = self.salt.fetch_add(1, Ordering::Relaxed);
        let nonce = self.nonces.make(unix, salt, realm);
        let value = |alg: Algorithm| challenge_value(realm, &nonce, alg, stale, None);
        match sub.filter(|s| !s.algorithms.is_empty()) {
            Some(s) => s
                .algorithms
                .iter()
                .filter_map(|a| Algorithm::parse(a))
                .map(value)
                .collect(),
            None => self
                .settings
                .load()
                .algorithms
                .iter()
                .copied()
                .map(value)
                .collect(),
        }
    }

    /// Unblocks sources whose time is up and forgets quiet ones (called periodically).
    pub fn housekeeping(&self, now: Instant) {
        let window = self.settings.load().failure_window;
        let mut map = self.failures.lock();
        map.retain(|ip, f| match f.blocked_until {
            Some(until) if until <= now => {
                self.metrics.blocked_sources.dec();
                info!(source = %ip, "source unblocked");
                false
            }
            Some(_) => true,
            None => now.duration_since(f.first) <= window,
        });
    }

    /// Sources blocked now, with seconds left.
    pub fn blocked(&self, now: Instant) -> Vec<(IpAddr, u64)> {
        self.failures
            .lock()
            .iter()
            .filter_map(|(ip, f)| {
                let until = f.blocked_until.filter(|u| *u > now)?;
                Some((*ip, until.duration_since(now).as_secs()))
            })
            .collect()
    }

    /// Lifts a block (admin).
    pub fn unblock(&self, ip: IpAddr) -> bool {
        let removed = self.failures.lock().remove(&ip);
        if removed.as_ref().is_some_and(|f| f.blocked_until.is_some()) {
            self.metrics.blocked_sources.dec();
            return true;
        }
        false
    }
}

/// Identifies a request for replay checks: its Call-ID and CSeq number.
fn request_id(msg: &Message) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    h.write(msg.call_id().unwrap_or_default().as_bytes());
    h.write_u32(msg.cseq().and_then(Result::ok).map_or(0, |c| c.seq));
    h.finish()
}
