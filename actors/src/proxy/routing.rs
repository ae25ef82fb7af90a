//! The routing policy applied to an initial request: the source classified (address
//! groups, trusted peers, anyone), the rules evaluated ([`crate::policy`]), the rule's
//! action turned into targets (location bindings, a trunk's destinations one after
//! another, a fixed URI) or a reply, a subscriber authenticated first. Also the trunks'
//! health checks and the routing metrics.

use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};

use limes_sip::uri::Uri;
use limes_sip::{Message, Method};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use smallvec::SmallVec;
use tracing::{debug, info, warn};

use super::edge::{from_user, source_label, unix_now, Initial};
use super::locate::Located;
use super::own::Outcome;
use super::{Pass, Proxy, Route, Routes};
use crate::auth::Kind;
use crate::dialogs::Origin;
use crate::policy::{Action, Facts, HeaderEdits, SourceMatch};
use crate::tables::Peer;
use crate::transport::{Dest, Flow};
use crate::trunks::{DestState, Health, Trunk};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    /// `carrier`, `trusted` or `subscriber`.
    pub class: &'static str,
    /// The lowest address group the source is in; empty for the other classes.
    pub group: GroupLabel,
}

/// An address group number as a label value (empty for none): no text is made per
/// request.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct GroupLabel(pub u32);

impl prometheus_client::encoding::EncodeLabelValue for GroupLabel {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelValueEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        if self.0 == 0 {
            return Ok(());
        }
        prometheus_client::encoding::EncodeLabelValue::encode(&self.0, encoder)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleLabels {
    pub rule: String,
    pub action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TrunkLabels {
    pub trunk: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DestinationLabels {
    pub trunk: String,
    pub destination: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailoverLabels {
    pub trunk: String,
    /// The status that caused it (`408` for silence).
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PingLabels {
    pub trunk: String,
    pub result: &'static str,
}

/// Metrics of the routing policy and the trunks.
#[derive(Debug, Default)]
pub struct RoutingMetrics {
    pub sources: Family<SourceLabels, Counter>,
    pub decisions: Family<RuleLabels, Counter>,
    pub rejections: Family<RejectLabels, Counter>,
    pub trunk_calls: Family<DestinationLabels, Counter>,
    pub failovers: Family<FailoverLabels, Counter>,
    pub cps_refused: Family<TrunkLabels, Counter>,
    pub pings: Family<PingLabels, Counter>,
}

/// Every value of the `reason` label of `limes_route_rejections_total`.
const REJECTIONS: [&str; 10] = [
    "loop_to_trunk",
    "no_rule",
    "not_registered",
    "relay_unresolvable",
    "rule_reply",
    "trunk_down",
    "trunk_missing",
    "dns_failure",
    "dns_no_records",
    "no_transport",
];

impl RoutingMetrics {
    pub fn register(registry: &mut Registry) -> Arc<Self> {
        let m = Arc::new(Self::default());
        crate::metrics::at_zero(
            &m.rejections,
            REJECTIONS.map(|reason| RejectLabels { reason }),
        );
        registry.register(
            "limes_requests_by_source",
            "Initial requests by source class and address group",
            m.sources.clone(),
        );
        registry.register(
            "limes_route_decisions",
            "Initial requests by the routing rule that decided and its action",
            m.decisions.clone(),
        );
        registry.register(
            "limes_route_rejections",
            "Initial requests answered without relaying, by reason",
            m.rejections.clone(),
        );
        registry.register(
            "limes_trunk_calls",
            "Branches started to a trunk destination",
            m.trunk_calls.clone(),
        );
        registry.register(
            "limes_trunk_failovers",
            "Calls moved on to a trunk's next destination, by the status that caused it",
            m.failovers.clone(),
        );
        registry.register(
            "limes_trunk_cps_refused",
            "New calls from a trunk's sources refused above its calls-per-second limit",
            m.cps_refused.clone(),
        );
        registry.register(
            "limes_trunk_pings",
            "OPTIONS health checks of trunk destinations, by result",
            m.pings.clone(),
        );
        m
    }

    /// Counters of the rules' decisions, from the metric family (attached once per rule
    /// set, not looked up per request).
    pub(crate) fn count_decisions(&self, policy: &mut crate::policy::Policy) {
        policy.count_with(|r| {
            self.decisions
                .get_or_create(&RuleLabels {
                    rule: r.def.name.clone(),
                    action: r.action.label(),
                })
                .clone()
        });
    }

    pub(crate) fn reject(&self, reason: &'static str) {
        debug_assert!(REJECTIONS.contains(&reason), "{reason}");
        self.rejections
            .get_or_create(&RejectLabels { reason })
            .inc();
    }
}

/// What decides whether a call moves on to its next targets.
pub enum Alternatives {
    /// A trunk's destinations: on the trunk's failover codes.
    Trunk(Arc<Trunk>),
    /// The servers DNS located for one next hop (RFC 3263 §4.3): on 503 or no answer.
    Records,
}

/// What a call's entry remembers for failover.
pub struct Failover {
    pub on: Alternatives,
    /// The destination being tried, and the status its branch failed with.
    pub current: Option<Arc<Health>>,
    pub last_status: u16,
}

/// The address groups a source is in, with the tag of the entry that admits it.
pub type SourceGroups = SmallVec<[(u32, Option<Arc<str>>); 2]>;

/// The tag of a configured next hop classified as trusted, made once.
static NEXT_HOP_TAG: std::sync::LazyLock<Arc<str>> = std::sync::LazyLock::new(|| "next hop".into());

impl Proxy {
    /// The address groups a source is in (with the admitting entry's tag), and its
    /// trusted tag when it is trusted (a configured next hop counts as trusted).
    pub(super) fn source_of(
        &self,
        msg: &Message,
        flow: &Flow,
    ) -> (SourceGroups, Option<Option<Arc<str>>>) {
        let (ip, port, transport) = (flow.remote.ip(), flow.remote.port(), flow.transport);
        let snapshot = self.edge.tables.groups.load();
        let groups = if snapshot.is_empty() {
            SmallVec::new()
        } else {
            snapshot
                .groups()
                .filter_map(|g| g.lookup(ip, port, transport).map(|e| (g.id, e.tag.clone())))
                .collect()
        };
        let from = msg.from_uri().and_then(Result::ok).map_or("", |u| u.raw);
        let trusted = self
            .edge
            .tables
            .trusted_peer(ip, transport, from)
            .or_else(|| self.is_next_hop(flow).then(|| Some(NEXT_HOP_TAG.clone())));
        (groups, trusted)
    }

    /// Targets for an initial request with no Route set, as the routing policy decides;
    /// `None` when the request was answered (challenge, reply, 404).
    pub(super) fn initial_targets(
        &self,
        msg: &Message,
        flow: &Flow,
        now: Instant,
        pass: Pass,
    ) -> Option<Initial> {
        let first = pass == Pass::First;
        let method = msg.method().cloned().unwrap_or(Method::Options);
        let (groups, trusted) = self.source_of(msg, flow);
        let routing = &self.edge.routing;
        let peer = Peer::of(groups.first().cloned(), trusted.clone());
        let group = match &peer {
            Peer::Carrier { group, .. } => *group,
            _ => 0,
        };
        if first {
            routing
                .sources
                .get_or_create(&SourceLabels {
                    class: peer.class(),
                    group: GroupLabel(group),
                })
                .inc();
        }
        let mut origin = Origin {
            source: source_label(&peer),
            // The authenticated user, or the From user once a dialog is tracked
            // (`Proxy::on_admitted`): a pure proxy needs it nowhere.
            caller: String::new(),
            call_limit: None,
            attrs: Default::default(),
        };
        let ruri = msg.request_uri().and_then(Result::ok)?;
        let user = ruri.user.unwrap_or_default();
        let local_domain = self.edge.serves(ruri.host, &self.local);
        let policy = self.edge.policy.load();
        let mut contacts = None;
        let mut after = None;
        let mut authenticated = false;
        loop {
            let facts = Facts {
                method: &method,
                user,
                domain: ruri.host,
                local_domain,
                groups: &groups,
                trusted: trusted.is_some(),
                authenticated,
            };
            let found = policy.evaluate(&facts, after, &mut || {
                // With nobody registered (a pure proxy) the AoR is not even built.
                let found = if local_domain && !self.edge.location.is_empty() {
                    self.edge.location.lookup(&self.edge.aor(&ruri), unix_now())
                } else {
                    Vec::new()
                };
                let registered = !found.is_empty();
                contacts = Some(found);
                registered
            });
            let Some((i, rule)) = found else {
                debug!(
                    call_id = msg.call_id().unwrap_or_default(),
                    method = method.as_str(),
                    source = %flow.remote,
                    "request refused: no rule matches (404)"
                );
                routing.reject("no_rule");
                self.reply_local(msg, flow, now, 404, "Not Found: no route", &[]);
                return None;
            };
            let subscriber = rule.source == SourceMatch::Subscriber
                && trusted.is_none()
                && groups.is_empty()
                && self.edge.auth.settings().challenge_requests;
            let challenge = matches!(rule.action, Action::Challenge);
            if !authenticated && (subscriber || challenge) {
                let sub = self.authenticate(msg, flow, now, Kind::Proxy, from_user(msg))?;
                origin.caller.clone_from(&sub.user);
                origin.call_limit = sub.call_limit;
                origin.attrs.clone_from(&sub.attrs);
                authenticated = true;
            }
            if first {
                rule.decided.inc();
            }
            debug!(
                call_id = msg.call_id().unwrap_or_default(),
                method = method.as_str(),
                source = %flow.remote,
                rule = %rule.def.name,
                action = %rule.def.action,
                "request routed"
            );
            let mut initial = Initial {
                targets: Routes::new(),
                authenticated,
                origin,
                edits: SmallVec::new(),
                failover: None,
                vars: (!rule.vars.is_empty()).then(|| rule.vars.clone()),
            };
            if !rule.edits.is_empty() {
                initial.edits.push(rule.edits.clone());
            }
            match &rule.action {
                // A register rule never matches here (the registrar takes REGISTER).
                Action::Challenge | Action::Register => {
                    after = Some(i);
                    origin = initial.origin;
                    continue;
                }
                Action::Reply { status, reason } => {
                    routing.reject("rule_reply");
                    self.reply_local(msg, flow, now, *status, reason, &[]);
                    return None;
                }
                Action::Location => {
                    let found = contacts.take().unwrap_or_else(|| {
                        if local_domain {
                            self.edge.location.lookup(&self.edge.aor(&ruri), unix_now())
                        } else {
                            Vec::new()
                        }
                    });
                    initial.targets = self.location_routes(found);
                    if initial.targets.is_empty() {
                        routing.reject("not_registered");
                        self.reply_local(msg, flow, now, 404, "User Not Registered", &[]);
                        return None;
                    }
                }
                Action::Relay(uri) => {
                    let Ok(uri) = Uri::parse(uri) else {
                        routing.reject("relay_unresolvable");
                        self.reply_local(msg, flow, now, 503, "Service Unavailable", &[]);
                        return None;
                    };
                    match self.locate(&uri, msg, flow) {
                        Located::At(dests) => {
                            (initial.targets, initial.failover) =
                                super::locate::one_by_one(dests, None);
                        }
                        Located::Waiting => return None,
                        Located::Failed(why) => {
                            self.unresolvable(msg, flow, now, why);
                            return None;
                        }
                    }
                }
                Action::Trunk(name) => {
                    let Some(trunk) = self.edge.trunks.get(name) else {
                        routing.reject("trunk_missing");
                        self.reply_local(msg, flow, now, 503, "Service Unavailable", &[]);
                        return None;
                    };
                    // Never back where it came from.
                    let from_trunk = (trunk.def.group != 0
                        && groups.iter().any(|(g, _)| *g == trunk.def.group))
                        || trunk
                            .destinations
                            .iter()
                            .any(|d| d.addr.is_some_and(|a| a.addr == flow.remote));
                    if from_trunk {
                        routing.reject("loop_to_trunk");
                        self.reply_local(msg, flow, now, 404, "User Not Registered", &[]);
                        return None;
                    }
                    let plan = trunk.plan();
                    if plan.is_empty() {
                        routing.reject("trunk_down");
                        warn!(trunk = %name, "no destination of the trunk is up");
                        self.reply_local(
                            msg,
                            flow,
                            now,
                            503,
                            "Service Unavailable: trunk down",
                            &[("Retry-After", "30")],
                        );
                        return None;
                    }
                    // Each destination's servers in turn; a name is located by DNS. The
                    // call waits for DNS only when it has no server yet; a later
                    // destination not yet located is skipped (and located for the next).
                    let mut unresolved = None;
                    for d in plan {
                        let dests = match d.addr {
                            Some(a) => smallvec::smallvec![a],
                            None => {
                                let wait = initial.targets.is_empty().then_some((msg, flow));
                                match self.locate_target(&d.target, wait) {
                                    Located::At(dests) => dests,
                                    Located::Waiting if wait.is_some() => return None,
                                    Located::Waiting => continue,
                                    Located::Failed(why) => {
                                        unresolved = Some(why);
                                        continue;
                                    }
                                }
                            }
                        };
                        for dest in dests {
                            // A located server is sent to from the destination's socket
                            // when the transport DNS chose is the socket's.
                            let local = d
                                .socket
                                .filter(|s| s.transport == dest.transport)
                                .map(|s| s.addr);
                            let dest = Dest {
                                local: local.or(dest.local),
                                ..dest
                            };
                            initial.targets.push(Route {
                                advertise: d.advertise,
                                ruri: trunk.request_uri(user, (ruri.host, ruri.port), d),
                                group: initial.targets.len() as u16,
                                within: Some(trunk.timeout()),
                                trunk_dest: Some((
                                    trunk.clone(),
                                    d.def.uri.clone(),
                                    d.health.clone(),
                                )),
                                ..Route::to(dest)
                            });
                        }
                    }
                    if let (true, Some(why)) = (initial.targets.is_empty(), unresolved) {
                        self.unresolvable(msg, flow, now, why);
                        return None;
                    }
                    if !trunk.edits.is_empty() {
                        initial.edits.push(trunk.edits.clone());
                    }
                    initial.failover = Some(Alternatives::Trunk(trunk));
                }
            }
            return Some(initial);
        }
    }

    /// Calls from a trunk's sources within its calls-per-second limit (the per-address
    /// flood guard does not apply to them): `None` when the source is no trunk's, else
    /// whether the request may go on.
    pub(super) fn trunk_admits(&self, flow: &Flow, initial_invite: bool) -> Option<bool> {
        if !self.edge.trunks.has_groups() {
            return None;
        }
        let snapshot = self.edge.tables.groups.load();
        let (ip, port, t) = (flow.remote.ip(), flow.remote.port(), flow.transport);
        let trunk = snapshot
            .groups()
            .filter(|g| g.lookup(ip, port, t).is_some())
            .find_map(|g| self.edge.trunks.of_group(g.id))?;
        if !initial_invite || trunk.admit() {
            return Some(true);
        }
        self.edge
            .routing
            .cps_refused
            .get_or_create(&TrunkLabels {
                trunk: trunk.def.name.clone(),
            })
            .inc();
        Some(false)
    }

    /// A trunk destination's branch starts: counted.
    pub(super) fn count_trunk_call(&self, trunk: &Trunk, uri: &str, health: &Health) {
        health
            .calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        trunk
            .calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        health
            .calls_metric
            .get_or_init(|| {
                self.edge
                    .routing
                    .trunk_calls
                    .get_or_create(&DestinationLabels {
                        trunk: trunk.def.name.clone(),
                        destination: uri.to_owned(),
                    })
                    .clone()
            })
            .inc();
    }

    /// Every branch so far failed: whether the call moves on to the trunk's next
    /// destination (the last failure is one of the trunk's failover codes).
    pub(super) fn fails_over(&self, f: &Failover) -> bool {
        let (moves_on, trunk) = match &f.on {
            Alternatives::Trunk(t) => (t.fails_over_on(f.last_status), t.def.name.as_str()),
            Alternatives::Records => (matches!(f.last_status, 408 | 503), "dns"),
        };
        if !moves_on {
            return false;
        }
        if let Some(h) = &f.current {
            h.failovers
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        self.edge
            .routing
            .failovers
            .get_or_create(&FailoverLabels {
                trunk: trunk.to_owned(),
                reason: f.last_status.to_string(),
            })
            .inc();
        debug!(
            trunk,
            status = f.last_status,
            "failover to the next destination"
        );
        true
    }
}

/// How long before its records expire a trunk destination's name is located again.
const DNS_AHEAD: Duration = Duration::from_secs(10);

/// A ping on its way: the trunk, the destination's URI and health, the outcome to come.
type Ping = (Arc<Trunk>, String, Arc<Health>, Receiver<Outcome>);

/// Pings every trunk destination whose interval has come (OPTIONS, the node's own
/// requests) and applies the answers of earlier pings. Called every second by the
/// health thread.
pub struct HealthChecks {
    pending: Vec<Ping>,
    last: std::collections::HashMap<(String, String), Instant>,
}

impl Default for HealthChecks {
    fn default() -> Self {
        Self::new()
    }
}

impl HealthChecks {
    pub fn new() -> Self {
        Self {
            pending: Vec::new(),
            last: std::collections::HashMap::new(),
        }
    }

    pub fn tick(&mut self, proxy: &Proxy, now: Instant) {
        let routing = &proxy.edge.routing;
        self.pending.retain(|(trunk, uri, health, rx)| {
            let Ok(outcome) = rx.try_recv() else {
                return true;
            };
            let alive = outcome.status < 500 && outcome.status != 408;
            routing
                .pings
                .get_or_create(&PingLabels {
                    trunk: trunk.def.name.clone(),
                    result: if alive { "alive" } else { "dead" },
                })
                .inc();
            match health.ping_result(outcome.status, outcome.elapsed, trunk.def.ping_failures) {
                Some(DestState::Down) => {
                    warn!(trunk = %trunk.def.name, destination = %uri, status = outcome.status, "trunk destination stopped answering; skipped")
                }
                Some(state) => {
                    info!(trunk = %trunk.def.name, destination = %uri, state = state.as_str(), "trunk destination answers again")
                }
                None => {}
            }
            false
        });
        for trunk in proxy.edge.trunks.all() {
            // Names are located again before their records expire: calls never wait.
            for d in trunk.destinations.iter().filter(|d| d.addr.is_none()) {
                proxy.edge.dns.refresh(&d.target, DNS_AHEAD);
            }
            if trunk.def.ping_interval_s == 0 {
                continue;
            }
            let every = Duration::from_secs(trunk.def.ping_interval_s);
            for d in &trunk.destinations {
                let key = (trunk.def.name.clone(), d.def.uri.clone());
                let busy = self
                    .pending
                    .iter()
                    .any(|(t, u, _, _)| t.def.name == key.0 && *u == key.1);
                if busy || self.last.get(&key).is_some_and(|l| now < *l + every) {
                    continue;
                }
                self.last.insert(key, now);
                let (tx, rx) = std::sync::mpsc::sync_channel(1);
                let timeout = every
                    .min(Duration::from_secs(5))
                    .max(Duration::from_millis(500));
                match proxy.originate(Method::Options, &d.def.uri, timeout, tx) {
                    Ok(()) => {
                        self.pending
                            .push((trunk.clone(), d.def.uri.clone(), d.health.clone(), rx))
                    }
                    Err(e) => {
                        warn!(trunk = %trunk.def.name, destination = %d.def.uri, error = %e, "ping not sent")
                    }
                }
            }
        }
        // Destinations no trunk has any more are forgotten.
        let trunks = proxy.edge.trunks.all();
        self.last.retain(|(t, u), _| {
            trunks
                .iter()
                .any(|x| x.def.name == *t && x.destinations.iter().any(|d| d.def.uri == *u))
        });
    }
}

/// The edits of a request's rule and trunk, applied to each forwarded copy.
pub type Edits = SmallVec<[Arc<HeaderEdits>; 2]>;
