//! The edge's state (registrar, authentication, tables, trunks, routing) and what the
//! proxy asks of it: where a request comes from, digest authentication of requests other
//! than REGISTER (a stateless 407) when the routing policy ([`super::routing`]) asks for
//! it, and the routes to a registered AoR's bindings (highest q first, equal q in
//! parallel, a lower q only when every higher one failed; each through the flow or Path
//! it registered with). REGISTER itself is in `register.rs`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use limes_sip::uri::{Scheme, Uri};
use limes_sip::Message;
use parking_lot::RwLock;
use tracing::{debug, info, warn};

use super::routing::{Edits, RoutingMetrics};
use super::{Proxy, Route, Routes};
use crate::auth::{Attempt, Auth, Kind, Verdict};
use crate::dialogs::Origin;
use crate::dns::Dns;
use crate::policy::{Known, Policy, RuleDef};
use crate::registrar::{Contact, Location, Meta};
use crate::settings::Transport;
use crate::tables::{to_json, Peer, Tables};
use crate::transport::{dest_of_uri, Dest, Flow};
use crate::trunks::{DestState, TrunkDef, Trunks};

/// The registrar, authentication and tables the proxy consults.
#[derive(Debug)]
pub struct Edge {
    pub tables: Arc<Tables>,
    pub auth: Arc<Auth>,
    pub location: Arc<Location>,
    /// Domains this node is registrar for; empty: every domain.
    pub domains: RwLock<Vec<String>>,
    /// AoRs are `user@domain` (true) or the user alone, as Kamailio's usrloc does by default.
    pub use_domain: AtomicBool,
    /// The routing rules, replaced whole by a reload or `route.set`.
    pub policy: ArcSwap<Policy>,
    pub trunks: Arc<Trunks>,
    pub routing: Arc<RoutingMetrics>,
    /// Locates host names (trunk destinations, relay URIs, next hops in dialogs).
    pub dns: Arc<Dns>,
    /// The other nodes of the cluster and where each takes SIP (empty: a node alone).
    pub peers: ArcSwap<Vec<ClusterPeer>>,
    /// Where the trunks and rules come from; changed only through [`Edge::set_routing`].
    pub routing_sources: parking_lot::Mutex<RoutingSources>,
}

/// Another node of the cluster: its name and the sockets it takes SIP on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterPeer {
    pub name: String,
    pub sip: Vec<crate::settings::Listen>,
}

impl ClusterPeer {
    /// Where this node sends a request for the peer: its first socket of `transport`
    /// (UDP preferred) in the family of `like`.
    fn dest(&self, like: SocketAddr) -> Option<Dest> {
        [Transport::Udp, Transport::Tcp].iter().find_map(|t| {
            self.sip
                .iter()
                .find(|l| l.transport == *t && l.addr.is_ipv4() == like.is_ipv4())
                .map(|l| Dest::new(l.transport, l.addr))
        })
    }
}

/// Why a destination's state was not changed.
#[derive(Debug, thiserror::Error)]
pub enum DestStateError {
    #[error("not found: {0}")]
    NotFound(String),
    #[error(transparent)]
    Journal(#[from] crate::tables::TableError),
}

/// The journal key of the rules set over the API.
const API_RULES_KEY: &str = "routes/api";

/// The trunks and rules of the configuration file and of the admin API; the API's win
/// (a trunk by name, the rules as a whole).
#[derive(Debug, Clone, Default)]
pub struct RoutingSources {
    pub config_trunks: Vec<TrunkDef>,
    pub config_rules: Vec<RuleDef>,
    pub api_trunks: std::collections::BTreeMap<String, TrunkDef>,
    pub api_rules: Option<Vec<RuleDef>>,
    /// Address groups by name (`[[address_group]]`), for `group:NAME` sources.
    pub group_names: std::collections::BTreeMap<String, u32>,
}

impl RoutingSources {
    pub fn trunks(&self) -> Vec<TrunkDef> {
        let mut v: Vec<TrunkDef> = self
            .config_trunks
            .iter()
            .filter(|t| !self.api_trunks.contains_key(&t.name))
            .cloned()
            .collect();
        v.extend(self.api_trunks.values().cloned());
        v
    }

    pub fn rules(&self) -> Vec<RuleDef> {
        self.api_rules
            .clone()
            .unwrap_or_else(|| self.config_rules.clone())
    }
}

/// The AoR of a URI: `user@host` (host lowercased, no port) or, without `use_domain`,
/// the user alone; the host when there is no user; the number of a `tel:` URI.
pub fn aor_of(uri: &Uri<'_>, use_domain: bool) -> String {
    match (uri.scheme, uri.user) {
        (Scheme::Tel, Some(u)) => u.to_owned(),
        (_, Some(u)) if use_domain => format!("{u}@{}", uri.host.to_ascii_lowercase()),
        (_, Some(u)) => u.to_owned(),
        (_, None) => uri.host.to_ascii_lowercase(),
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// An HTTP-date (RFC 7231 §7.1.1.1), as the Date header of RFC 3261 §20.17 wants it.
pub fn http_date(unix: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = unix / 86_400;
    let secs = unix % 86_400;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        day,
        MONTHS[(month - 1) as usize],
        year,
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

impl Edge {
    /// An edge with no trunks and the default rules of a node without next hops.
    pub fn new(
        tables: Arc<Tables>,
        auth: Arc<Auth>,
        location: Arc<Location>,
        domains: Vec<String>,
        use_domain: bool,
        routing: Arc<RoutingMetrics>,
        dns: Arc<Dns>,
    ) -> Self {
        let rules = crate::policy::default_rules(None);
        // The default rules name no trunk: they always compile.
        let mut policy = Policy::compile(rules.clone(), &|_: &str| false).unwrap_or_default();
        routing.count_decisions(&mut policy);
        Self {
            tables,
            auth,
            location,
            domains: RwLock::new(domains),
            use_domain: use_domain.into(),
            policy: ArcSwap::from_pointee(policy),
            trunks: Arc::default(),
            routing,
            dns,
            peers: ArcSwap::default(),
            routing_sources: parking_lot::Mutex::new(RoutingSources {
                config_rules: rules,
                ..RoutingSources::default()
            }),
        }
    }

    /// Changes the trunks or rules: the new set is checked whole (every trunk valid, every
    /// rule naming a trunk that exists), what the API changed is journaled, and the set is
    /// installed for the next request; on an error nothing changes and the message names
    /// the trunk or rule.
    pub fn set_routing(&self, change: impl FnOnce(&mut RoutingSources)) -> Result<(), String> {
        let mut sources = self.routing_sources.lock();
        let mut next = sources.clone();
        change(&mut next);
        let set = self.trunks.compile_set(next.trunks())?;
        let names = Known {
            trunks: |n: &str| set.contains_key(n),
            groups: &next.group_names,
        };
        let mut policy = Policy::compile(next.rules(), &names).map_err(|e| e.to_string())?;
        self.routing.count_decisions(&mut policy);
        self.journal_api_routing(&sources, &next)
            .map_err(|e| e.to_string())?;
        self.trunks.install(set);
        self.policy.store(Arc::new(policy));
        *sources = next;
        Ok(())
    }

    /// Journals the API's trunks and rules that differ between `old` and `new`.
    fn journal_api_routing(
        &self,
        old: &RoutingSources,
        new: &RoutingSources,
    ) -> Result<(), crate::tables::TableError> {
        for (name, def) in &new.api_trunks {
            if old.api_trunks.get(name) != Some(def) {
                self.tables
                    .keep_routing(&format!("trunk/{name}"), Some(to_json(def)))?;
            }
        }
        for name in old.api_trunks.keys() {
            if !new.api_trunks.contains_key(name) {
                self.tables.keep_routing(&format!("trunk/{name}"), None)?;
            }
        }
        if old.api_rules != new.api_rules {
            let rules = new.api_rules.as_ref().map(to_json);
            self.tables.keep_routing(API_RULES_KEY, rules)?;
        }
        Ok(())
    }

    /// Trunks and rules of the API restored from the journal, over the configuration's;
    /// entries that no longer read or fit are named in the log and left out.
    pub fn restore_api_routing(&self) {
        let mut trunks = std::collections::BTreeMap::new();
        let mut rules = None;
        let entries = self.tables.routing_entries();
        for (key, value) in &entries {
            let read = if key.starts_with("drain/") {
                continue;
            } else if key == API_RULES_KEY {
                serde_json::from_str::<Vec<RuleDef>>(value).map(|r| rules = Some(r))
            } else {
                serde_json::from_str::<TrunkDef>(value).map(|t| {
                    trunks.insert(t.name.clone(), t);
                })
            };
            if let Err(e) = read {
                warn!(%key, error = %e, "unreadable journaled routing entry skipped");
            }
        }
        let restored = (trunks.len(), rules.as_ref().map_or(0, Vec::len));
        match self.set_routing(|s| {
            s.api_trunks = trunks;
            s.api_rules = rules;
        }) {
            Ok(()) if restored != (0, 0) => {
                info!(
                    trunks = restored.0,
                    rules = restored.1,
                    "API trunks and rules restored"
                )
            }
            Ok(()) => {}
            Err(e) => {
                warn!(error = %e, "API trunks and rules from the journal do not fit the configuration; the configuration's apply")
            }
        }
        for key in entries.keys() {
            let Some((trunk, uri)) = key.strip_prefix("drain/").and_then(|k| k.split_once('/'))
            else {
                continue;
            };
            if self
                .set_destination_state(trunk, uri, DestState::Drained)
                .is_err()
            {
                // Its trunk or destination is gone: so is the drain.
                let _ = self.tables.keep_routing(key, None);
            }
        }
    }

    /// A change made through another node (the cluster store's): routing keys (trunks,
    /// rules, drains) change the routing, the others the tables; journaled here too.
    pub fn apply_shared(&self, key: &str, value: Option<&str>) -> Result<(), String> {
        let read_err = |e: serde_json::Error| format!("{key}: {e}");
        if let Some(name) = key.strip_prefix("trunk/") {
            let def = value
                .map(serde_json::from_str::<TrunkDef>)
                .transpose()
                .map_err(read_err)?;
            return self.set_routing(|s| match def {
                Some(d) => {
                    s.api_trunks.insert(name.to_owned(), d);
                }
                None => {
                    s.api_trunks.remove(name);
                }
            });
        }
        if key == API_RULES_KEY {
            let rules = value
                .map(serde_json::from_str::<Vec<RuleDef>>)
                .transpose()
                .map_err(read_err)?;
            return self.set_routing(|s| s.api_rules = rules);
        }
        if let Some((trunk, uri)) = key.strip_prefix("drain/").and_then(|k| k.split_once('/')) {
            let state = if value.is_some() {
                DestState::Drained
            } else {
                DestState::Active
            };
            return self
                .set_destination_state(trunk, uri, state)
                .map_err(|e| e.to_string());
        }
        self.tables
            .apply_shared(key, value)
            .map_err(|e| e.to_string())
    }

    /// Drains a trunk destination or puts it back (`trunk.set_state`); journaled, so a
    /// drain outlives a restart.
    pub fn set_destination_state(
        &self,
        trunk: &str,
        uri: &str,
        state: DestState,
    ) -> Result<(), DestStateError> {
        let t = self
            .trunks
            .get(trunk)
            .ok_or_else(|| DestStateError::NotFound(format!("trunk {trunk}")))?;
        let d = t
            .destinations
            .iter()
            .find(|d| d.def.uri == uri)
            .ok_or_else(|| DestStateError::NotFound(format!("{uri} in trunk {trunk}")))?;
        // A journal value is a JSON text: the string "drained".
        let drained = (state == DestState::Drained).then(|| "\"drained\"".to_owned());
        self.tables
            .keep_routing(&format!("drain/{trunk}/{uri}"), drained)?;
        d.health.set_state(state);
        Ok(())
    }

    pub fn aor(&self, uri: &Uri<'_>) -> String {
        aor_of(uri, self.use_domain.load(Ordering::Relaxed))
    }

    /// Whether this node is registrar for `host`.
    pub fn serves(&self, host: &str, local: &super::local::Local) -> bool {
        let domains = self.domains.read();
        domains.is_empty()
            || domains.iter().any(|d| d.eq_ignore_ascii_case(host))
            || local.is_us(host, None)
    }
}

/// The user part of the From URI ("" when it has none or does not parse).
pub(super) fn from_user(msg: &Message) -> &str {
    msg.from_uri()
        .and_then(Result::ok)
        .and_then(|u| u.user)
        .unwrap_or_default()
}

/// The source a call is counted under: the peer's tag, else its class.
pub(super) fn source_label(peer: &Peer) -> Arc<str> {
    /// The class names, made once: a label is shared, not copied, per call.
    static CLASSES: LazyLock<[Arc<str>; 3]> =
        LazyLock::new(|| ["carrier".into(), "trusted".into(), "subscriber".into()]);
    let [carrier, trusted, subscriber] = &*CLASSES;
    match peer {
        Peer::Carrier { tag, .. } => tag.as_ref().unwrap_or(carrier).clone(),
        Peer::Trusted { tag } => tag.as_ref().unwrap_or(trusted).clone(),
        Peer::Unknown => subscriber.clone(),
    }
}

/// Where an initial request goes, and who it is from.
pub(super) struct Initial {
    pub targets: Routes,
    /// Credentials were checked (and are consumed: not forwarded).
    pub authenticated: bool,
    pub origin: Origin,
    /// Header edits of the rule and the trunk.
    pub edits: Edits,
    /// The trunk whose destinations are tried one after another.
    pub failover: Option<super::routing::Alternatives>,
    /// Dialog variables the rule sets.
    pub vars: Option<Arc<Vec<(String, String)>>>,
}

impl Proxy {
    /// The source's class; a configured next hop (a gateway) counts as trusted.
    fn classify(&self, msg: &Message, flow: &Flow) -> Peer {
        let (groups, trusted) = self.source_of(msg, flow);
        Peer::of(groups.into_iter().next(), trusted)
    }

    /// Who a dialog-creating INVITE routed by its Route set is from (no authentication
    /// runs for it): the source's class (the caller, the From user, is read where the
    /// dialog is tracked, as for every unauthenticated call).
    pub(super) fn routed_origin(&self, msg: &Message, flow: &Flow) -> Origin {
        Origin {
            source: source_label(&self.classify(msg, flow)),
            caller: String::new(),
            call_limit: None,
            attrs: Default::default(),
        }
    }

    pub(super) fn is_next_hop(&self, flow: &Flow) -> bool {
        self.next_hops
            .load()
            .iter()
            .any(|t| t.dest.addr == flow.remote)
    }

    /// Runs digest authentication for an untrusted request: the subscriber, or `None` when
    /// the request was answered (challenge, 403) or dropped (blocked source).
    pub(super) fn authenticate(
        &self,
        msg: &Message,
        flow: &Flow,
        now: Instant,
        kind: Kind,
        user: &str,
    ) -> Option<Arc<crate::tables::Subscriber>> {
        let auth = &self.edge.auth;
        let unix = unix_now();
        let realm = auth.realm(msg);
        let attempt = Attempt {
            kind,
            realm: &realm,
            user,
            source: flow.remote.ip(),
            now,
            unix,
        };
        match auth.check(msg, &attempt, &self.edge.tables) {
            Verdict::Authenticated(sub) => Some(sub),
            Verdict::Challenge { stale } => {
                let (status, reason) = kind.status();
                debug!(
                    call_id = msg.call_id().unwrap_or_default(),
                    source = %flow.remote,
                    status,
                    stale,
                    "request challenged"
                );
                auth.metrics
                    .challenges
                    .get_or_create(&crate::auth::ChallengeLabels {
                        status: if status == 401 { "401" } else { "407" },
                    })
                    .inc();
                let sub = self.edge.tables.subscriber(user, &realm);
                let values = auth.challenges(&realm, stale, unix, sub.as_deref());
                let extra: Vec<(&str, &str)> = values
                    .iter()
                    .map(|v| (kind.challenge_header(), v.as_str()))
                    .collect();
                // Stateless (DESIGN principle 10): an unauthenticated source gets one
                // response per request and costs no transaction, so a spoofed flood is not
                // amplified by retransmissions and leaves no state behind. A retransmitted
                // request is challenged again; the ACK for it is absorbed by its To tag.
                self.reply_stateless(msg, flow, status, reason, &extra);
                None
            }
            Verdict::Forbidden(reason) => {
                debug!(remote = %flow.remote, reason, "authentication refused");
                self.reply_stateless(msg, flow, 403, reason, &[]);
                None
            }
            Verdict::Blocked => {
                self.metrics.drop_reason("auth_blocked");
                None
            }
        }
    }

    /// The routes to an AoR's bindings: highest q first; each q value is a group tried
    /// after the one before has failed (serial forking), equal q values in parallel; each
    /// binding through the flow or Path it registered with.
    pub(super) fn location_routes(&self, contacts: Vec<Contact>) -> Routes {
        let mut group = 0u16;
        let mut last_q = None;
        let me = self.edge.location.node_name();
        let peers = self.edge.peers.load();
        contacts
            .into_iter()
            .filter_map(|c| {
                let q = c.q.unwrap_or(1000);
                if last_q.is_some_and(|l| l != q) {
                    group += 1;
                }
                last_q = Some(q);
                let owner = c
                    .meta
                    .node
                    .as_deref()
                    .filter(|n| me != Some(*n))
                    .and_then(|n| peers.iter().find(|p| p.name == n));
                let (dest, preload) = match (c.meta.path.first(), owner) {
                    (Some(first), _) => (
                        Uri::parse(first).ok().and_then(|u| dest_of_uri(&u))?,
                        c.meta.path.clone(),
                    ),
                    // Registered through another node, over a flow only it holds (TCP,
                    // or a NAT that lets only its address through): through that node.
                    (None, Some(peer)) if needs_owner(&c) => {
                        (peer.dest(c.meta.received)?, Vec::new())
                    }
                    (None, _) => (self.flow_dest(&c.meta, &c.contact)?, Vec::new()),
                };
                Some(Route {
                    ruri: Some(c.contact),
                    preload,
                    group,
                    ..Route::to(dest)
                })
            })
            .collect()
    }

    /// The source is another node of the cluster (it sends requests for the bindings
    /// this node holds the flows of).
    pub(super) fn is_from_peer(&self, flow: &Flow) -> bool {
        let peers = self.edge.peers.load();
        // A peer sends UDP from its listening socket; TCP from a port of the kernel's.
        !peers.is_empty()
            && peers.iter().any(|p| {
                p.sip.iter().any(|l| match flow.transport {
                    Transport::Udp => l.addr == flow.remote,
                    Transport::Tcp => l.addr.ip() == flow.remote.ip(),
                })
            })
    }

    /// A request another node sent for a binding this node holds the flow of: the
    /// binding's flow, found by the Request-URI (its Contact); `None` when this node has
    /// no such binding of its own.
    pub(super) fn owned_binding_route(&self, ruri: &Uri<'_>) -> Option<Route> {
        let location = &self.edge.location;
        let me = location.node_name();
        let found = location.lookup(&self.edge.aor(ruri), unix_now());
        let c = found.into_iter().find(|c| {
            c.meta.node.as_deref() == me && limes_sip::registrar::same_contact(&c.contact, ruri.raw)
        })?;
        let dest = self.flow_dest(&c.meta, &c.contact)?;
        Some(Route {
            ruri: Some(c.contact),
            ..Route::to(dest)
        })
    }

    /// Where a binding is reached: the flow its REGISTER came on (the connection, if it is
    /// still open; the source address for UDP, RFC 3581), else its Contact's address.
    fn flow_dest(&self, meta: &Meta, contact: &str) -> Option<Dest> {
        // Back over the socket the binding registered on (a NAT keeps only that path).
        let via_flow = Dest {
            transport: meta.transport,
            addr: meta.received,
            local: Some(meta.socket),
        };
        match meta.transport {
            Transport::Udp => Some(via_flow),
            Transport::Tcp if self.out.has_tcp(meta.received) => Some(via_flow),
            Transport::Tcp => Uri::parse(contact).ok().and_then(|u| dest_of_uri(&u)),
        }
    }
}

/// Whether only the node a binding registered through can reach it: a TCP flow, or a UDP
/// source address other than its Contact's (a NAT).
fn needs_owner(c: &Contact) -> bool {
    c.meta.transport == Transport::Tcp
        || Uri::parse(&c.contact)
            .ok()
            .and_then(|u| dest_of_uri(&u))
            .is_none_or(|d| d.addr != c.meta.received)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates() {
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(http_date(1_795_987_845), "Sun, 29 Nov 2026 21:30:45 GMT");
    }

    #[test]
    fn aors() {
        // (uri, use_domain, aor)
        let cases = [
            (
                "sip:Alice@Example.COM:5060;transport=tcp",
                true,
                "Alice@example.com",
            ),
            ("sip:Alice@Example.COM:5060;transport=tcp", false, "Alice"),
            ("sip:example.com", true, "example.com"),
            ("tel:+4930123456", true, "+4930123456"),
        ];
        for (uri, use_domain, aor) in cases {
            assert_eq!(aor_of(&Uri::parse(uri).expect("uri"), use_domain), aor);
        }
    }
}
