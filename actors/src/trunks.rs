//! Carrier trunks: where a carrier's calls come from (an address group) and where calls to
//! it go (destinations tried one after another by priority, weighted among equals), with
//! failover on the trunk's codes or silence, OPTIONS health checks, a calls-per-second
//! limit for its sources (instead of the per-address flood guard), number normalisation,
//! Request-URI host rewrite and header edits.
//!
//! The set of trunks is a snapshot replaced whole on a change; each destination's health
//! and counters are atomics that survive a change of the rest of the set.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::{Deserialize, Serialize};

use crate::policy::HeaderEdits;
use crate::settings::Listen;
use crate::transport::{dest_of_uri, Dest};
use limes_sip::locate::{Proto, Target};

/// A trunk as configured (`[[trunk]]`) or given to `trunk.add`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrunkDef {
    pub name: String,
    /// The address group its calls come from (0: none).
    #[serde(default)]
    pub group: u32,
    pub destinations: Vec<DestinationDef>,
    /// Final responses that send the call on to the next destination.
    #[serde(default = "default_failover")]
    pub failover_on: Vec<u16>,
    /// A destination that sends no response at all within this is skipped (408).
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// OPTIONS to each destination this often; 0: no health checks.
    #[serde(default = "default_ping")]
    pub ping_interval_s: u64,
    /// Unanswered pings in a row before a destination is skipped.
    #[serde(default = "default_ping_failures")]
    pub ping_failures: u32,
    /// New calls per second accepted from the trunk's group; 0: no limit.
    #[serde(default)]
    pub cps: u32,
    /// Calls to the trunk: leading characters of the user removed.
    #[serde(default)]
    pub strip: usize,
    /// Calls to the trunk: prepended to the user (after `strip`).
    #[serde(default)]
    pub prefix: String,
    /// Calls to the trunk: national (`0...`) and international (`00...`) numbers written
    /// as E.164 (`+CC...`) with this country code; empty: left as they are.
    #[serde(default)]
    pub e164_country: String,
    /// The Request-URI host for calls to the trunk (`rewritehost`); empty: the
    /// destination's address when `rewrite_host`, else the host as received.
    #[serde(default)]
    pub host: String,
    #[serde(default = "yes")]
    pub rewrite_host: bool,
    #[serde(default)]
    pub set_headers: BTreeMap<String, String>,
    /// e.g. `P-Asserted-Identity`, `Privacy`, `Diversion`.
    #[serde(default)]
    pub remove_headers: Vec<String>,
}

impl TrunkDef {
    /// A trunk with every optional setting at its default.
    pub fn new(name: &str, destinations: Vec<DestinationDef>) -> Self {
        Self {
            name: name.to_owned(),
            group: 0,
            destinations,
            failover_on: default_failover(),
            timeout_ms: default_timeout(),
            ping_interval_s: default_ping(),
            ping_failures: default_ping_failures(),
            cps: 0,
            strip: 0,
            prefix: String::new(),
            e164_country: String::new(),
            host: String::new(),
            rewrite_host: true,
            set_headers: BTreeMap::new(),
            remove_headers: Vec::new(),
        }
    }
}

/// One destination of a trunk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationDef {
    /// `sip:HOST[:PORT][;transport=tcp]` with an IP address host.
    pub uri: String,
    /// Lower first.
    #[serde(default)]
    pub priority: u16,
    /// Share of calls among destinations of equal priority.
    #[serde(default = "one")]
    pub weight: u16,
    /// The node's socket requests to it leave from (`udp:IP:PORT` or `tcp:IP:PORT`, one
    /// of the node's listening sockets); absent: the first of the address family.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<String>,
    /// The address named in Via and Record-Route of requests to it instead of the
    /// socket's (`IP[:PORT]`, a NAT's public side); the node answers to it as itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advertise: Option<String>,
}

impl DestinationDef {
    /// A destination of priority 0 and weight 1, sent from the default socket.
    pub fn new(uri: &str) -> Self {
        Self {
            uri: uri.to_owned(),
            priority: 0,
            weight: 1,
            socket: None,
            advertise: None,
        }
    }
}

fn default_failover() -> Vec<u16> {
    vec![408, 500, 502, 503, 504]
}
fn default_timeout() -> u64 {
    4000
}
fn default_ping() -> u64 {
    30
}
fn default_ping_failures() -> u32 {
    3
}
fn one() -> u16 {
    1
}
fn yes() -> bool {
    true
}

/// A destination's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DestState {
    /// Takes calls.
    Active,
    /// Stopped answering pings: skipped until it answers again.
    Down,
    /// Taken out by the operator: no calls, still pinged.
    Drained,
}

impl DestState {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Down,
            2 => Self::Drained,
            _ => Self::Active,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Down => "down",
            Self::Drained => "drained",
        }
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "active" => Ok(Self::Active),
            "drained" => Ok(Self::Drained),
            other => Err(format!("state {other:?} (active, drained)")),
        }
    }
}

/// Health and counters of one destination, kept across changes of its trunk.
#[derive(Debug, Default)]
pub struct Health {
    state: AtomicU8,
    /// Unanswered pings in a row.
    pub misses: AtomicU32,
    pub calls: AtomicU64,
    pub failovers: AtomicU64,
    /// The last ping's status (0: none yet) and round trip.
    pub last_ping_status: AtomicU32,
    pub last_ping_ms: AtomicU64,
    /// Its `limes_trunk_calls` counter, looked up in the family at its first call (no
    /// label strings or family lock per call after that).
    pub calls_metric: std::sync::OnceLock<prometheus_client::metrics::counter::Counter>,
}

impl Health {
    pub fn state(&self) -> DestState {
        DestState::from_u8(self.state.load(Ordering::Relaxed))
    }

    pub fn set_state(&self, s: DestState) {
        self.state.store(s as u8, Ordering::Relaxed);
    }

    /// A ping's outcome: any response but 408 and 5xx means the destination lives.
    /// Returns the state change, if any.
    pub fn ping_result(&self, status: u16, rtt: Duration, threshold: u32) -> Option<DestState> {
        self.last_ping_status
            .store(u32::from(status), Ordering::Relaxed);
        self.last_ping_ms
            .store(rtt.as_millis() as u64, Ordering::Relaxed);
        let alive = status < 500 && status != 408;
        let before = self.state();
        if alive {
            self.misses.store(0, Ordering::Relaxed);
            if before == DestState::Down {
                self.set_state(DestState::Active);
                return Some(DestState::Active);
            }
        } else {
            let misses = self.misses.fetch_add(1, Ordering::Relaxed) + 1;
            if misses >= threshold.max(1) && before == DestState::Active {
                self.set_state(DestState::Down);
                return Some(DestState::Down);
            }
        }
        None
    }
}

/// A destination, checked.
#[derive(Debug)]
pub struct Destination {
    pub def: DestinationDef,
    /// What DNS locates for a host name (RFC 3263).
    pub target: Target,
    /// Where it is when its host is an IP address (sent from `socket`).
    pub addr: Option<Dest>,
    /// The node's socket its requests leave from.
    pub socket: Option<Listen>,
    /// What Via and Record-Route say instead of the socket's address.
    pub advertise: Option<SocketAddr>,
    /// `host[:port]` of its URI, for the Request-URI.
    pub hostport: String,
    pub health: Arc<Health>,
}

/// A call's destinations in the order they are tried; most trunks have a few (inline).
pub type Plan<'a> = smallvec::SmallVec<[&'a Destination; 4]>;

/// A checked trunk.
pub struct Trunk {
    pub def: TrunkDef,
    /// By priority (lower first), as configured among equals.
    pub destinations: Vec<Destination>,
    pub edits: Arc<HeaderEdits>,
    pub failover_on: Arc<[u16]>,
    limiter: Option<DefaultDirectRateLimiter>,
    /// Turns the weighted choice among destinations of equal priority.
    turn: AtomicU64,
    pub calls: AtomicU64,
    pub refused_cps: AtomicU64,
}

impl std::fmt::Debug for Trunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trunk")
            .field("name", &self.def.name)
            .finish_non_exhaustive()
    }
}

/// Destinations per trunk at most, and trunks at most.
pub const MAX_DESTINATIONS: usize = 64;
pub const MAX_TRUNKS: usize = 10_000;

impl Trunk {
    /// Checks a definition; health of destinations that `previous` had is carried over.
    pub fn compile(def: TrunkDef, previous: Option<&Trunk>) -> Result<Self, String> {
        let name = &def.name;
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(format!("trunk {name:?}: a name of letters, digits, - _ ."));
        }
        if def.destinations.is_empty() || def.destinations.len() > MAX_DESTINATIONS {
            return Err(format!(
                "trunk {name}: 1 to {MAX_DESTINATIONS} destinations"
            ));
        }
        for code in &def.failover_on {
            if !(300..700).contains(code) {
                return Err(format!(
                    "trunk {name}: failover_on {code} is not a 3xx-6xx code"
                ));
            }
            if *code == 486 || *code >= 600 {
                return Err(format!(
                    "trunk {name}: failover_on {code}: a busy or global failure is final"
                ));
            }
        }
        if !def.e164_country.bytes().all(|b| b.is_ascii_digit()) || def.e164_country.len() > 3 {
            return Err(format!(
                "trunk {name}: e164_country {:?}: 1 to 3 digits",
                def.e164_country
            ));
        }
        if def
            .prefix
            .bytes()
            .any(|b| !(b.is_ascii_alphanumeric() || b"+*#".contains(&b)))
        {
            return Err(format!(
                "trunk {name}: prefix {:?}: digits, letters, + * #",
                def.prefix
            ));
        }
        if def
            .host
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b"<>@;?\"".contains(&b))
        {
            return Err(format!("trunk {name}: host {:?}", def.host));
        }
        for (h, v) in &def.set_headers {
            crate::policy::check_header(h, v).map_err(|e| format!("trunk {name}: {e}"))?;
        }
        for h in &def.remove_headers {
            crate::policy::check_header(h, "").map_err(|e| format!("trunk {name}: {e}"))?;
        }
        let mut destinations = def
            .destinations
            .iter()
            .map(|d| {
                let uri = limes_sip::uri::Uri::parse(&d.uri)
                    .map_err(|e| format!("trunk {name}: destination {:?}: {e}", d.uri))?;
                let target = Target::of(&uri).map_err(|_| {
                    format!(
                        "trunk {name}: destination {:?}: a sip: URI over UDP or TCP",
                        d.uri
                    )
                })?;
                let hostport = match uri.port {
                    Some(p) => format!("{}:{p}", uri.host),
                    None => uri.host.to_owned(),
                };
                let health = previous
                    .and_then(|p| p.destinations.iter().find(|o| o.def.uri == d.uri))
                    .map_or_else(Arc::default, |o| o.health.clone());
                if d.weight == 0 {
                    return Err(format!("trunk {name}: destination {:?}: weight 0", d.uri));
                }
                let bad = |what: &str, e: String| {
                    format!("trunk {name}: destination {:?}: {what}: {e}", d.uri)
                };
                let socket = d
                    .socket
                    .as_deref()
                    .map(str::parse::<Listen>)
                    .transpose()
                    .map_err(|e| bad("socket", e))?;
                let advertise = d
                    .advertise
                    .as_deref()
                    .map(|a| {
                        a.parse::<SocketAddr>().or_else(|_| {
                            let port = socket.map_or(5060, |s| s.addr.port());
                            a.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, port))
                        })
                    })
                    .transpose()
                    .map_err(|e| bad("advertise", e.to_string()))?;
                let addr = dest_of_uri(&uri).map(|dest| Dest {
                    local: socket
                        .filter(|s| s.transport == dest.transport)
                        .map(|s| s.addr),
                    ..dest
                });
                if let (Some(s), Some(a)) = (socket, addr) {
                    if s.transport != a.transport || s.addr.is_ipv4() != a.addr.is_ipv4() {
                        return Err(bad("socket", format!("{} cannot reach {}", s, a.addr)));
                    }
                }
                Ok(Destination {
                    def: d.clone(),
                    addr,
                    socket,
                    advertise,
                    target,
                    hostport,
                    health,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        destinations.sort_by_key(|d| d.def.priority);
        let limiter =
            NonZeroU32::new(def.cps).map(|cps| RateLimiter::direct(Quota::per_second(cps)));
        Ok(Self {
            edits: Arc::new(HeaderEdits {
                set: def.set_headers.clone().into_iter().collect(),
                remove: def.remove_headers.clone(),
            }),
            failover_on: def.failover_on.clone().into(),
            destinations,
            limiter,
            turn: AtomicU64::new(0),
            calls: AtomicU64::new(0),
            refused_cps: AtomicU64::new(0),
            def,
        })
    }

    /// A new call from the trunk's sources is within its calls-per-second limit.
    pub fn admit(&self) -> bool {
        let ok = self.limiter.as_ref().is_none_or(|l| l.check().is_ok());
        if !ok {
            self.refused_cps.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    /// The destinations to try for a call, in order: active ones by priority, the first
    /// of equal priority chosen by weight (turning from call to call).
    pub fn plan(&self) -> Plan<'_> {
        let active: Plan<'_> = self
            .destinations
            .iter()
            .filter(|d| d.health.state() == DestState::Active)
            .collect();
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        let mut plan = Plan::with_capacity(active.len());
        for same in active.chunk_by(|a, b| a.def.priority == b.def.priority) {
            let total: u64 = same.iter().map(|d| u64::from(d.def.weight)).sum();
            let mut at = turn % total.max(1);
            let first = same
                .iter()
                .position(|d| {
                    let w = u64::from(d.def.weight);
                    if at < w {
                        return true;
                    }
                    at -= w;
                    false
                })
                .unwrap_or(0);
            plan.extend(same[first..].iter().chain(same[..first].iter()).copied());
        }
        plan
    }

    /// The user part for a call to this trunk: E.164, then strip, then prefix.
    pub fn normalise(&self, user: &str) -> String {
        let d = &self.def;
        let e164 = if d.e164_country.is_empty() || user.starts_with('+') {
            user.to_owned()
        } else if let Some(intl) = user.strip_prefix("00") {
            format!("+{intl}")
        } else if let Some(national) = user.strip_prefix('0') {
            format!("+{}{national}", d.e164_country)
        } else {
            user.to_owned()
        };
        let stripped = e164.get(d.strip.min(e164.len())..).unwrap_or_default();
        format!("{}{stripped}", d.prefix)
    }

    /// The Request-URI of a call to `dest`, when the trunk changes the received one (its
    /// number normalised, its host rewritten); `None`: it goes as received.
    /// `received` is the received Request-URI's host and port.
    pub fn request_uri(
        &self,
        user: &str,
        received: (&str, Option<u16>),
        dest: &Destination,
    ) -> Option<String> {
        let d = &self.def;
        let normalises = !d.e164_country.is_empty() || d.strip > 0 || !d.prefix.is_empty();
        if !normalises && !d.rewrite_host && d.host.is_empty() {
            return None;
        }
        let user = self.normalise(user);
        let mut uri = String::with_capacity(4 + user.len() + 1 + 48);
        uri.push_str("sip:");
        uri.push_str(&user);
        uri.push('@');
        if !d.host.is_empty() {
            uri.push_str(&d.host);
        } else if d.rewrite_host {
            uri.push_str(&dest.hostport);
        } else {
            uri.push_str(received.0);
            if let Some(port) = received.1 {
                uri.push(':');
                uri.push_str(itoa::Buffer::new().format(port));
            }
        }
        if dest.target.transport == Some(Proto::Tcp) {
            uri.push_str(";transport=tcp");
        }
        Some(uri)
    }

    pub fn fails_over_on(&self, status: u16) -> bool {
        self.failover_on.contains(&status)
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.def.timeout_ms.max(100))
    }
}

/// Every trunk, replaced whole on a change.
#[derive(Debug, Default)]
pub struct Trunks {
    set: ArcSwap<BTreeMap<String, Arc<Trunk>>>,
    /// Trunks by the address group their calls come from.
    by_group: ArcSwap<BTreeMap<u32, Arc<Trunk>>>,
    /// Serialises writers.
    writer: parking_lot::Mutex<()>,
    /// The node's listening sockets, which a destination's `socket` must be one of
    /// (unchecked while empty).
    listens: parking_lot::RwLock<Vec<Listen>>,
    /// Every destination's advertised address: the node is these too.
    pub advertised: Arc<ArcSwap<Vec<SocketAddr>>>,
}

impl Trunks {
    pub fn get(&self, name: &str) -> Option<Arc<Trunk>> {
        self.set.load().get(name).cloned()
    }

    pub fn all(&self) -> Vec<Arc<Trunk>> {
        self.set.load().values().cloned().collect()
    }

    /// The trunk whose calls come from `group`.
    pub fn of_group(&self, group: u32) -> Option<Arc<Trunk>> {
        self.by_group.load().get(&group).cloned()
    }

    /// Whether any trunk names a source group (the per-request check is skipped if not).
    pub fn has_groups(&self) -> bool {
        !self.by_group.load().is_empty()
    }

    /// The node's listening sockets, for checking destinations' `socket`.
    pub fn set_listens(&self, listens: Vec<Listen>) {
        *self.listens.write() = listens;
    }

    /// Checks a whole set against the current one (health carried over by URI); nothing
    /// changes unless every trunk is valid.
    pub fn compile_set(&self, defs: Vec<TrunkDef>) -> Result<BTreeMap<String, Arc<Trunk>>, String> {
        if defs.len() > MAX_TRUNKS {
            return Err(format!("more than {MAX_TRUNKS} trunks"));
        }
        let old = self.set.load();
        let listens = self.listens.read();
        let mut set = BTreeMap::new();
        for def in defs {
            let name = def.name.clone();
            let trunk = Trunk::compile(def, old.get(&name).map(|t| &**t))?;
            for d in &trunk.destinations {
                if let Some(s) = d
                    .socket
                    .filter(|s| !listens.is_empty() && !listens.contains(s))
                {
                    return Err(format!(
                        "trunk {name}: destination {:?}: socket {s} is not one the node listens on",
                        d.def.uri
                    ));
                }
            }
            if set.insert(name.clone(), Arc::new(trunk)).is_some() {
                return Err(format!("trunk {name}: defined twice"));
            }
        }
        let mut groups = BTreeMap::new();
        for t in set.values().filter(|t| t.def.group != 0) {
            if let Some(other) = groups.insert(t.def.group, &t.def.name) {
                return Err(format!(
                    "trunk {}: group {} is already the source of trunk {other}",
                    t.def.name, t.def.group
                ));
            }
        }
        Ok(set)
    }

    /// Installs a checked set.
    pub fn install(&self, set: BTreeMap<String, Arc<Trunk>>) {
        let _w = self.writer.lock();
        let by_group = set
            .values()
            .filter(|t| t.def.group != 0)
            .map(|t| (t.def.group, t.clone()))
            .collect();
        let advertised = set
            .values()
            .flat_map(|t| t.destinations.iter().filter_map(|d| d.advertise))
            .collect();
        self.set.store(Arc::new(set));
        self.by_group.store(Arc::new(by_group));
        self.advertised.store(Arc::new(advertised));
    }

    /// The definitions now in force.
    pub fn defs(&self) -> Vec<TrunkDef> {
        self.set.load().values().map(|t| t.def.clone()).collect()
    }
}

/// The state of every trunk destination, read when Prometheus scrapes: one series per
/// destination and state, 1 for the state it is in (`limes_trunk_destination_state`).
#[derive(Debug)]
struct TrunkCollector(Arc<Trunks>);

impl prometheus_client::collector::Collector for TrunkCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::family::Family;
        use prometheus_client::metrics::gauge::Gauge;
        type Labels = Vec<(&'static str, String)>;
        let states: Family<Labels, Gauge> = Family::default();
        for t in self.0.all() {
            for d in &t.destinations {
                let now = d.health.state();
                for state in [DestState::Active, DestState::Down, DestState::Drained] {
                    let labels = vec![
                        ("trunk", t.def.name.clone()),
                        ("destination", d.def.uri.clone()),
                        ("state", state.as_str().to_owned()),
                    ];
                    states.get_or_create(&labels).set(i64::from(now == state));
                }
            }
        }
        let family = encoder.encode_descriptor(
            "limes_trunk_destination_state",
            "Trunk destinations by state: 1 for the state each is in",
            None,
            states.metric_type(),
        )?;
        states.encode(family)
    }
}

impl Trunks {
    /// Registers the destination-state gauges.
    pub fn register_census(
        registry: &mut prometheus_client::registry::Registry,
        trunks: Arc<Trunks>,
    ) {
        registry.register_collector(Box::new(TrunkCollector(trunks)));
    }
}

#[cfg(test)]
mod tests;
