//! DNS for SIP targets that are host names: RFC 3263 location ([`limes_sip::locate`])
//! asked of the configured name servers (or the system's) with hickory's resolver, on
//! tokio, never on a receiving thread. Each location is cached until the smallest TTL of
//! the records it used (a failure for `negative_ttl`); a message whose target is not
//! cached waits (bounded) and is handed back to its callback once the answer is in.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::TokioResolver;
use limes_sip::locate::{Answer, Locator, Naptr, Proto, Question, Srv, Step, Target, Unresolved};
use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tracing::{debug, warn};

use crate::settings::Transport;
use crate::transport::Dest;

/// Name servers and bounds of the node's DNS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsSettings {
    /// Name servers (`ip:port`); empty: those of `/etc/resolv.conf`.
    pub servers: Vec<SocketAddr>,
    /// One query's wait for an answer.
    pub timeout: Duration,
    /// Tries of each query.
    pub attempts: usize,
    /// How long "no such name" or a failed server is remembered.
    pub negative_ttl: Duration,
    /// Locations cached at most; past it expired ones go, and new names fail.
    pub max_entries: usize,
}

impl Default for DnsSettings {
    fn default() -> Self {
        Self {
            servers: Vec::new(),
            timeout: Duration::from_secs(2),
            attempts: 2,
            negative_ttl: Duration::from_secs(5),
            max_entries: 10_000,
        }
    }
}

/// Messages waiting for one name at most; more get the failure at once.
const MAX_WAITERS: usize = 256;
/// A location is trusted this long at most, whatever the TTLs say, and at least this
/// long (a message that waited for it must find it).
const MAX_TTL: Duration = Duration::from_secs(3600);
const MIN_TTL: Duration = Duration::from_secs(1);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LookupLabels {
    /// `naptr`, `srv` or `addrs` (A and AAAA).
    pub kind: &'static str,
    /// `ok`, `no_records` or `failed`.
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LocateLabels {
    /// `cached`, `resolved`, `no_records`, `server_failure`, `no_transport`, `busy`.
    pub result: &'static str,
}

/// Metrics of the DNS.
#[derive(Debug, Default)]
pub struct DnsMetrics {
    pub lookups: Family<LookupLabels, Counter>,
    pub locations: Family<LocateLabels, Counter>,
    pub entries: Gauge,
}

impl DnsMetrics {
    pub fn register(registry: &mut Registry) -> Arc<Self> {
        let m = Arc::new(Self::default());
        for kind in ["naptr", "srv", "addrs"] {
            crate::metrics::at_zero(
                &m.lookups,
                ["ok", "no_records", "failed"].map(|result| LookupLabels { kind, result }),
            );
        }
        crate::metrics::at_zero(
            &m.locations,
            [
                "cached",
                "resolved",
                "no_records",
                "server_failure",
                "no_transport",
                "busy",
            ]
            .map(|result| LocateLabels { result }),
        );
        registry.register(
            "limes_dns_lookups",
            "DNS queries sent, by record type and result",
            m.lookups.clone(),
        );
        registry.register(
            "limes_dns_locations",
            "SIP targets located by host name (RFC 3263), by result",
            m.locations.clone(),
        );
        registry.register(
            "limes_dns_cache_entries",
            "Locations held in the DNS cache",
            m.entries.clone(),
        );
        m
    }

    fn located(&self, result: &'static str) {
        self.locations.get_or_create(&LocateLabels { result }).inc();
    }
}

/// What the cache says of a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cached {
    /// Where to send, in the order to try.
    Ready(Arc<[Dest]>),
    Failed(Unresolved),
    /// Being resolved: the callback runs when the answer is in.
    Pending,
}

/// One cached location, for `dns.list`.
#[derive(Debug, Clone)]
pub struct CacheView {
    pub target: Target,
    /// `located`, `pending`, `no_records`, `server_failure`, `no_transport`.
    pub state: &'static str,
    pub servers: Vec<Dest>,
    pub expires_in: Duration,
}

/// Called once a target's location is in (its entry is then cached).
pub type Waiter = Box<dyn FnOnce() + Send>;

enum Entry {
    Ready {
        dests: Arc<[Dest]>,
        until: Instant,
        /// Being located again ahead of expiry; it serves until then.
        refreshing: bool,
    },
    Failed {
        why: Unresolved,
        until: Instant,
    },
    Pending {
        waiters: Vec<Waiter>,
    },
}

impl Entry {
    fn expired(&self, now: Instant) -> bool {
        match self {
            Entry::Ready { until, .. } | Entry::Failed { until, .. } => *until <= now,
            Entry::Pending { .. } => false,
        }
    }
}

/// The node's DNS: a resolver, the cache of locations, the transports the node speaks.
pub struct Dns {
    resolver: Option<TokioResolver>,
    runtime: tokio::runtime::Handle,
    settings: DnsSettings,
    supported: Vec<Proto>,
    cache: Mutex<HashMap<Target, Entry>>,
    seed: AtomicU64,
    metrics: Arc<DnsMetrics>,
}

impl std::fmt::Debug for Dns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dns")
            .field("servers", &self.settings.servers)
            .finish()
    }
}

impl Dns {
    /// A DNS asking `settings.servers` (or the system's name servers) for the transports
    /// the node listens on. With no name server to ask, every name fails (logged once).
    pub fn new(
        settings: DnsSettings,
        transports: &[Transport],
        runtime: tokio::runtime::Handle,
        metrics: Arc<DnsMetrics>,
    ) -> Self {
        let resolver = build_resolver(&settings)
            .inspect_err(|e| warn!(error = %e, "no DNS resolver: host names cannot be located"))
            .ok();
        let mut supported = Vec::new();
        for t in [Transport::Udp, Transport::Tcp] {
            if transports.contains(&t) {
                supported.push(match t {
                    Transport::Udp => Proto::Udp,
                    Transport::Tcp => Proto::Tcp,
                });
            }
        }
        Self {
            resolver,
            runtime,
            settings,
            supported,
            cache: Mutex::new(HashMap::new()),
            seed: AtomicU64::new(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64),
            ),
            metrics,
        }
    }

    /// Where `target` leads, from the cache; on a miss the location starts (on tokio)
    /// and `waiter` is called once it is in, and `Pending` is returned.
    pub fn locate(self: &Arc<Self>, target: &Target, waiter: Waiter) -> Cached {
        let now = Instant::now();
        let mut cache = self.cache.lock();
        match cache.get_mut(target) {
            Some(Entry::Ready { dests, until, .. }) if *until > now => {
                self.metrics.located("cached");
                return Cached::Ready(dests.clone());
            }
            Some(Entry::Failed { why, until }) if *until > now => return Cached::Failed(*why),
            Some(Entry::Pending { waiters }) => {
                if waiters.len() >= MAX_WAITERS {
                    self.metrics.located("busy");
                    return Cached::Failed(Unresolved::ServerFailure);
                }
                waiters.push(waiter);
                return Cached::Pending;
            }
            _ => {}
        }
        if cache.len() >= self.settings.max_entries {
            cache.retain(|_, e| !e.expired(now));
            if cache.len() >= self.settings.max_entries {
                self.metrics.located("busy");
                return Cached::Failed(Unresolved::ServerFailure);
            }
        }
        cache.insert(
            target.clone(),
            Entry::Pending {
                waiters: vec![waiter],
            },
        );
        self.metrics.entries.set(cache.len() as i64);
        drop(cache);
        let me = self.clone();
        let target = target.clone();
        self.runtime.spawn(async move { me.resolve(target).await });
        Cached::Pending
    }

    /// The servers of a target if a fresh location is cached (nothing is started).
    pub fn peek(&self, target: &Target) -> Option<Arc<[Dest]>> {
        match self.cache.lock().get(target) {
            Some(Entry::Ready { dests, until, .. }) if *until > Instant::now() => {
                Some(dests.clone())
            }
            _ => None,
        }
    }

    /// Locates a target again when its location expires within `ahead` (the old one
    /// serves meanwhile, and stays if the new lookup fails before it expires); health
    /// checks keep their trunks' names warm this way, so calls do not wait.
    pub fn refresh(self: &Arc<Self>, target: &Target, ahead: Duration) {
        let now = Instant::now();
        let mut cache = self.cache.lock();
        match cache.get_mut(target) {
            Some(Entry::Ready {
                until, refreshing, ..
            }) => {
                if *refreshing || *until > now + ahead {
                    return;
                }
                *refreshing = true;
            }
            Some(Entry::Pending { .. }) => return,
            Some(Entry::Failed { until, .. }) if *until > now => return,
            _ => {
                drop(cache);
                let _ = self.locate(target, Box::new(|| {}));
                return;
            }
        }
        drop(cache);
        let me = self.clone();
        let target = target.clone();
        self.runtime.spawn(async move { me.resolve(target).await });
    }

    /// The cache as an operator sees it, by host.
    pub fn entries(&self) -> Vec<CacheView> {
        let now = Instant::now();
        let mut v: Vec<CacheView> = self
            .cache
            .lock()
            .iter()
            .map(|(t, e)| {
                let (state, servers, left) = match e {
                    Entry::Ready { dests, until, .. } => ("located", dests.to_vec(), *until),
                    Entry::Failed { why, until } => (
                        match why {
                            Unresolved::NoRecords => "no_records",
                            Unresolved::ServerFailure => "server_failure",
                            Unresolved::NoTransport => "no_transport",
                        },
                        Vec::new(),
                        *until,
                    ),
                    Entry::Pending { .. } => ("pending", Vec::new(), now),
                };
                CacheView {
                    target: t.clone(),
                    state,
                    servers,
                    expires_in: left.saturating_duration_since(now),
                }
            })
            .collect();
        v.sort_by(|a, b| a.target.host.cmp(&b.target.host));
        v
    }

    /// Forgets the locations of `host` (every host when `None`) and the resolver's
    /// records (all of them), so the next message asks the name servers again; lookups
    /// in progress finish. Returns how many locations were forgotten.
    pub fn flush(&self, host: Option<&str>) -> usize {
        if let Some(r) = &self.resolver {
            r.clear_cache();
        }
        let mut cache = self.cache.lock();
        let before = cache.len();
        cache.retain(|t, e| {
            matches!(e, Entry::Pending { .. })
                || host.is_some_and(|h| !t.host.eq_ignore_ascii_case(h.trim_end_matches('.')))
        });
        self.metrics.entries.set(cache.len() as i64);
        before - cache.len()
    }

    async fn resolve(self: Arc<Self>, target: Target) {
        let started = Instant::now();
        let (result, until) = self.run_locator(&target).await;
        let now = Instant::now();
        let mut cache = self.cache.lock();
        let entry = match &result {
            Ok(dests) => {
                self.metrics.located("resolved");
                debug!(host = %target.host, ?dests, "located");
                Entry::Ready {
                    dests: dests.clone(),
                    // A TTL of 0 still serves the messages that waited for it.
                    until: until.max(now + MIN_TTL),
                    refreshing: false,
                }
            }
            Err(why) => {
                self.metrics.located(match why {
                    Unresolved::NoRecords => "no_records",
                    Unresolved::ServerFailure => "server_failure",
                    Unresolved::NoTransport => "no_transport",
                });
                warn!(host = %target.host, error = %why, elapsed_ms = started.elapsed().as_millis() as u64, "cannot locate");
                if let Some(Entry::Ready {
                    until, refreshing, ..
                }) = cache.get_mut(&target)
                {
                    if *until > now {
                        *refreshing = false;
                        return;
                    }
                }
                Entry::Failed {
                    why: *why,
                    until: now + self.settings.negative_ttl,
                }
            }
        };
        let waiters = match cache.insert(target, entry) {
            Some(Entry::Pending { waiters }) => waiters,
            _ => Vec::new(),
        };
        self.metrics.entries.set(cache.len() as i64);
        drop(cache);
        for w in waiters {
            w();
        }
    }

    async fn run_locator(&self, target: &Target) -> (Result<Arc<[Dest]>, Unresolved>, Instant) {
        let seed = self
            .seed
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
        let (mut locator, mut step) = Locator::new(target, &self.supported, seed);
        let mut until = Instant::now() + MAX_TTL;
        loop {
            match step {
                Step::Ask(q) => {
                    let answer = self.ask(&q, &mut until).await;
                    step = locator.answer(answer);
                }
                Step::Done(r) => {
                    let dests = r.map(|found| {
                        found
                            .iter()
                            .map(|l| {
                                let transport = match l.proto {
                                    Proto::Udp => Transport::Udp,
                                    Proto::Tcp => Transport::Tcp,
                                };
                                Dest::new(transport, l.addr)
                            })
                            .collect()
                    });
                    return (dests, until);
                }
            }
        }
    }

    /// One question to the name servers; `until` is lowered to the answer's validity.
    async fn ask(&self, q: &Question, until: &mut Instant) -> Answer {
        let Some(resolver) = &self.resolver else {
            return Answer::Failed;
        };
        let (kind, name) = match q {
            Question::Naptr(n) => ("naptr", n),
            Question::Srv(n) => ("srv", n),
            Question::Addrs(n) => ("addrs", n),
        };
        let fqdn = format!("{name}.");
        let outcome = match q {
            Question::Naptr(_) => {
                resolver
                    .lookup(fqdn.as_str(), RecordType::NAPTR)
                    .await
                    .map(|l| {
                        let records = l.answers().iter().filter_map(|r| match &r.data {
                            RData::NAPTR(n) => Some(Naptr {
                                order: n.order,
                                preference: n.preference,
                                flags: String::from_utf8_lossy(&n.flags).into_owned(),
                                services: String::from_utf8_lossy(&n.services).into_owned(),
                                replacement: n.replacement.to_string(),
                            }),
                            _ => None,
                        });
                        (Answer::Naptr(records.collect()), l.valid_until())
                    })
            }
            Question::Srv(_) => resolver
                .lookup(fqdn.as_str(), RecordType::SRV)
                .await
                .map(|l| {
                    let records = l.answers().iter().filter_map(|r| match &r.data {
                        RData::SRV(s) => Some(Srv {
                            priority: s.priority,
                            weight: s.weight,
                            port: s.port,
                            target: s.target.to_string(),
                        }),
                        _ => None,
                    });
                    (Answer::Srv(records.collect()), l.valid_until())
                }),
            Question::Addrs(_) => resolver
                .lookup_ip(fqdn.as_str())
                .await
                .map(|l| (Answer::Addrs(l.iter().collect()), l.valid_until())),
        };
        let (answer, result) = match outcome {
            Ok((answer, valid)) => {
                *until = (*until).min(valid);
                (answer, "ok")
            }
            Err(e) if e.is_no_records_found() => {
                *until = (*until).min(Instant::now() + self.settings.negative_ttl);
                let empty = match q {
                    Question::Naptr(_) => Answer::Naptr(Vec::new()),
                    Question::Srv(_) => Answer::Srv(Vec::new()),
                    Question::Addrs(_) => Answer::Addrs(Vec::new()),
                };
                (empty, "no_records")
            }
            Err(e) => {
                debug!(%name, kind, error = %e, "DNS query failed");
                (Answer::Failed, "failed")
            }
        };
        self.metrics
            .lookups
            .get_or_create(&LookupLabels { kind, result })
            .inc();
        answer
    }
}

fn build_resolver(s: &DnsSettings) -> Result<TokioResolver, String> {
    let provider = TokioRuntimeProvider::default();
    let mut builder = if s.servers.is_empty() {
        TokioResolver::builder(provider).map_err(|e| e.to_string())?
    } else {
        let servers = s
            .servers
            .iter()
            .map(|a| {
                let mut udp = ConnectionConfig::udp();
                udp.port = a.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = a.port();
                NameServerConfig::new(a.ip(), true, vec![udp, tcp])
            })
            .collect();
        TokioResolver::builder_with_config(ResolverConfig::from_name_servers(servers), provider)
    };
    let opts: &mut ResolverOpts = builder.options_mut();
    opts.timeout = s.timeout;
    opts.attempts = s.attempts;
    opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    opts.negative_max_ttl = Some(s.negative_ttl);
    opts.positive_max_ttl = Some(MAX_TTL);
    builder.build().map_err(|e| e.to_string())
}
