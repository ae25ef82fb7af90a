//! The live tables: subscribers (digest credentials and attributes), trusted peers and
//! address groups (Kamailio's `subscriber`, `trusted` and `address`). Each entry comes
//! from the configuration file (replaced as a set on every reload) or from the admin API
//! or an import (kept in the `tables` journal, so it survives restarts). Readers on the
//! message path take a read lock on the subscriber map, or load the peers snapshot with
//! no lock at all.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use ipnet::IpNet;
use limes_cluster::Journal;
use limes_sip::digest::{self, Algorithm};
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::groups::Groups;
use crate::settings::Transport;

/// Address group entries held at most (all groups).
const MAX_ADDRESS_ENTRIES: usize = 1_000_000;

/// Where an entry came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// The configuration file: replaced on reload, never journaled.
    Config,
    /// The admin API or an import: journaled.
    Api,
}

/// One subscriber. The password itself is never kept: only its digests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscriber {
    pub user: String,
    pub domain: String,
    /// MD5(user:domain:password), hex.
    pub ha1: String,
    /// SHA-256(user:domain:password), hex; empty when only an MD5 HA1 was imported.
    pub ha1_sha256: String,
    #[serde(default)]
    pub attrs: BTreeMap<String, String>,
    #[serde(default)]
    pub call_limit: Option<u32>,
    /// The digest algorithms offered to this subscriber, in order (`MD5`, `SHA-256`);
    /// empty: `auth.algorithms`. Lets phones that support SHA-256 use it while the node
    /// offers MD5 alone to everyone else.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub algorithms: Vec<String>,
    pub origin: Origin,
}

impl Subscriber {
    /// From a plain password (hashed here, then forgotten).
    pub fn with_password(user: &str, domain: &str, password: &str, origin: Origin) -> Self {
        Self {
            user: user.to_owned(),
            domain: domain.to_ascii_lowercase(),
            ha1: digest::ha1(Algorithm::Md5, user, domain, password),
            ha1_sha256: digest::ha1(Algorithm::Sha256, user, domain, password),
            attrs: BTreeMap::new(),
            call_limit: None,
            algorithms: Vec::new(),
            origin,
        }
    }

    /// Checks and sets the algorithms offered to this subscriber: `MD5` and `SHA-256`,
    /// each at most once (canonical spelling kept).
    pub fn set_algorithms<S: AsRef<str>>(&mut self, names: &[S]) -> Result<(), String> {
        let mut out: Vec<String> = Vec::new();
        for name in names {
            let name = name.as_ref().trim();
            let alg = Algorithm::parse(name)
                .filter(|a| matches!(a, Algorithm::Md5 | Algorithm::Sha256))
                .ok_or_else(|| format!("algorithms: {name:?} (MD5 or SHA-256)"))?;
            if self.ha1_for(alg).is_none() {
                return Err(format!("algorithms: {name} but no {name} HA1 is known"));
            }
            if out.iter().any(|o| o == alg.as_str()) {
                return Err(format!("algorithms: {name} twice"));
            }
            out.push(alg.as_str().to_owned());
        }
        self.algorithms = out;
        Ok(())
    }

    /// `user@domain`, the table key.
    pub fn id(&self) -> String {
        subscriber_id(&self.user, &self.domain)
    }

    /// The HA1 for an algorithm family (MD5 or SHA-256), if known.
    pub fn ha1_for(&self, alg: Algorithm) -> Option<&str> {
        match alg.base() {
            Algorithm::Md5 if !self.ha1.is_empty() => Some(&self.ha1),
            Algorithm::Sha256 if !self.ha1_sha256.is_empty() => Some(&self.ha1_sha256),
            _ => None,
        }
    }
}

pub fn subscriber_id(user: &str, domain: &str) -> String {
    format!("{user}@{}", domain.to_ascii_lowercase())
}

/// Which transports a peer entry covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    #[default]
    Any,
    Udp,
    Tcp,
}

impl Proto {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "any" | "" => Ok(Self::Any),
            "udp" => Ok(Self::Udp),
            "tcp" => Ok(Self::Tcp),
            other => Err(format!("unknown protocol {other:?} (any, udp, tcp)")),
        }
    }

    pub(crate) fn covers(self, t: Transport) -> bool {
        matches!(
            (self, t),
            (Self::Any, _) | (Self::Udp, Transport::Udp) | (Self::Tcp, Transport::Tcp)
        )
    }
}

/// A trusted peer: requests from it skip authentication (`allow_trusted`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrustedPeer {
    pub net: IpNet,
    #[serde(default)]
    pub proto: Proto,
    /// A regular expression the From URI must match, when set.
    #[serde(default)]
    pub from_pattern: Option<String>,
    #[serde(default)]
    pub tag: Option<Arc<str>>,
    pub origin: Origin,
}

/// An address group entry (`allow_source_address(group)`): a carrier's addresses.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AddressEntry {
    pub group: u32,
    pub net: IpNet,
    /// 0: any port.
    #[serde(default)]
    pub port: u16,
    #[serde(default)]
    pub proto: Proto,
    #[serde(default)]
    pub tag: Option<Arc<str>>,
    pub origin: Origin,
}

/// How a request's source is classified (tags are shared, so classifying allocates
/// nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// In an address group: a carrier; never challenged.
    Carrier { group: u32, tag: Option<Arc<str>> },
    /// In the trusted table: never challenged.
    Trusted { tag: Option<Arc<str>> },
    /// Anyone else.
    Unknown,
}

impl Peer {
    /// The class of a source in these address groups (the first decides) and trusted
    /// with this tag, or not.
    pub fn of(group: Option<(u32, Option<Arc<str>>)>, trusted: Option<Option<Arc<str>>>) -> Self {
        match (group, trusted) {
            (Some((group, tag)), _) => Peer::Carrier { group, tag },
            (None, Some(tag)) => Peer::Trusted { tag },
            (None, None) => Peer::Unknown,
        }
    }

    /// `carrier`, `trusted` or `subscriber`, as metrics label it.
    pub fn class(&self) -> &'static str {
        match self {
            Peer::Carrier { .. } => "carrier",
            Peer::Trusted { .. } => "trusted",
            Peer::Unknown => "subscriber",
        }
    }
}

struct CompiledTrusted {
    entry: TrustedPeer,
    pattern: Option<regex::Regex>,
}

#[derive(Default)]
struct Peers {
    trusted: Vec<CompiledTrusted>,
}

/// A table change that could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("{0}")]
    Invalid(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("table limit of {0} entries reached")]
    Full(usize),
    #[error("journal write failed: {0}")]
    Journal(#[from] std::io::Error),
}

pub struct Tables {
    subscribers: RwLock<HashMap<String, Arc<Subscriber>>>,
    peers: ArcSwap<Peers>,
    /// Serialises peer-table writers (readers never wait).
    peer_writer: Mutex<()>,
    journal: Option<Arc<Journal>>,
    max_subscribers: usize,
    /// The address groups, each owned by its actor.
    pub groups: Arc<Groups>,
    /// Trunks, rules and drained destinations made over the API, as journaled
    /// (`trunk/NAME`, `routes/api`, `drain/TRUNK/URI`): restored at start, rewritten on
    /// compaction.
    routing: Mutex<BTreeMap<String, String>>,
}

impl std::fmt::Debug for Tables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tables")
            .field("subscribers", &self.subscribers.read().len())
            .finish()
    }
}

fn compile(entry: TrustedPeer) -> Result<CompiledTrusted, TableError> {
    let pattern = entry
        .from_pattern
        .as_deref()
        .filter(|p| !p.is_empty())
        .map(regex::Regex::new)
        .transpose()
        .map_err(|e| TableError::Invalid(format!("from pattern: {e}")))?;
    Ok(CompiledTrusted { entry, pattern })
}

impl Tables {
    /// Tables restored from `journal` (the API's entries); `None` keeps them in memory only.
    pub fn new(
        journal: Option<(Journal, BTreeMap<String, String>)>,
        max_subscribers: usize,
    ) -> std::io::Result<Self> {
        let mut subscribers = HashMap::new();
        let mut peers = Peers::default();
        let mut addresses = Vec::new();
        let mut routing = BTreeMap::new();
        let journal = journal.map(|(j, entries)| {
            for (key, value) in entries {
                let restored = match key.split_once('/') {
                    Some(("subscriber", _)) => {
                        serde_json::from_str::<Subscriber>(&value).map(|s| {
                            subscribers.insert(s.id(), Arc::new(s));
                        })
                    }
                    Some(("trusted", _)) => serde_json::from_str::<TrustedPeer>(&value).map(|t| {
                        if let Ok(c) = compile(t) {
                            peers.trusted.push(c);
                        }
                    }),
                    Some(("address", _)) => {
                        serde_json::from_str::<AddressEntry>(&value).map(|a| addresses.push(a))
                    }
                    Some(("trunk" | "routes" | "drain", _)) => {
                        routing.insert(key.clone(), value);
                        Ok(())
                    }
                    _ => Ok(()),
                };
                if let Err(e) = restored {
                    warn!(key = %key, error = %e, "unreadable table entry skipped");
                }
            }
            Arc::new(j)
        });
        let groups = Groups::start(journal.clone(), addresses, MAX_ADDRESS_ENTRIES)?;
        Ok(Self {
            subscribers: RwLock::new(subscribers),
            peers: ArcSwap::from_pointee(peers),
            peer_writer: Mutex::new(()),
            journal,
            max_subscribers,
            groups,
            routing: Mutex::new(routing),
        })
    }

    // ---- routing made over the API ----

    /// The journaled trunks, rules and drains of the API (see `routing`), as JSON.
    pub fn routing_entries(&self) -> BTreeMap<String, String> {
        self.routing.lock().clone()
    }

    /// Journals an API trunk or rule set (`None`: removed); an unchanged value is not
    /// written again.
    pub fn keep_routing(&self, key: &str, value: Option<String>) -> Result<(), TableError> {
        let mut routing = self.routing.lock();
        if routing.get(key) == value.as_ref() {
            return Ok(());
        }
        match value {
            Some(v) => {
                self.journal_put(key.to_owned(), v.clone())?;
                routing.insert(key.to_owned(), v);
            }
            None => {
                self.journal_delete(key.to_owned())?;
                routing.remove(key);
            }
        }
        Ok(())
    }

    // ---- subscribers ----

    pub fn subscriber(&self, user: &str, domain: &str) -> Option<Arc<Subscriber>> {
        self.subscribers
            .read()
            .get(&subscriber_id(user, domain))
            .cloned()
    }

    pub fn subscriber_count(&self) -> usize {
        self.subscribers.read().len()
    }

    /// Adds or replaces a subscriber. An API entry is journaled first; a config entry
    /// never replaces an API one.
    pub fn put_subscriber(&self, s: Subscriber) -> Result<(), TableError> {
        if s.user.is_empty() || s.domain.is_empty() || s.user.contains(['@', ' ']) {
            return Err(TableError::Invalid(format!(
                "{:?}: expected USER@DOMAIN",
                s.id()
            )));
        }
        let id = s.id();
        let mut map = self.subscribers.write();
        if !map.contains_key(&id) && map.len() >= self.max_subscribers {
            return Err(TableError::Full(self.max_subscribers));
        }
        if s.origin == Origin::Config && map.get(&id).is_some_and(|o| o.origin == Origin::Api) {
            return Ok(());
        }
        if s.origin == Origin::Api {
            if let Some(j) = &self.journal {
                j.put(&format!("subscriber/{id}"), &to_json(&s))?;
            }
        }
        map.insert(id, Arc::new(s));
        Ok(())
    }

    pub fn remove_subscriber(&self, id: &str) -> Result<Arc<Subscriber>, TableError> {
        let (user, domain) = id
            .rsplit_once('@')
            .ok_or_else(|| TableError::Invalid(format!("{id:?}: expected USER@DOMAIN")))?;
        let id = subscriber_id(user, domain);
        let mut map = self.subscribers.write();
        let Some(old) = map.get(&id).cloned() else {
            return Err(TableError::NotFound(id));
        };
        if old.origin == Origin::Api {
            if let Some(j) = &self.journal {
                j.delete(&format!("subscriber/{id}"))?;
            }
        }
        map.remove(&id);
        Ok(old)
    }

    /// Every subscriber, sorted by id.
    pub fn subscribers(&self) -> Vec<Arc<Subscriber>> {
        let mut v: Vec<_> = self.subscribers.read().values().cloned().collect();
        v.sort_by_key(|s| s.id());
        v
    }

    /// Replaces the configuration file's subscribers with `list`.
    pub fn set_config_subscribers(&self, list: Vec<Subscriber>) -> Result<(), TableError> {
        self.subscribers
            .write()
            .retain(|_, s| s.origin != Origin::Config);
        for s in list {
            self.put_subscriber(s)?;
        }
        Ok(())
    }

    // ---- trusted peers and address groups ----

    /// Classifies a request's source: address group first (a carrier), then trusted.
    pub fn classify(&self, ip: IpAddr, port: u16, transport: Transport, from: &str) -> Peer {
        if let Some(a) = self.groups.load().first(ip, port, transport) {
            return Peer::Carrier {
                group: a.group,
                tag: a.tag.clone(),
            };
        }
        self.trusted_peer(ip, transport, from)
            .map_or(Peer::Unknown, |tag| Peer::Trusted { tag })
    }

    /// The trusted entry that covers this source (its tag), if any.
    pub fn trusted_peer(
        &self,
        ip: IpAddr,
        transport: Transport,
        from: &str,
    ) -> Option<Option<Arc<str>>> {
        self.peers
            .load()
            .trusted
            .iter()
            .find(|t| {
                t.entry.net.contains(&ip)
                    && t.entry.proto.covers(transport)
                    && t.pattern.as_ref().is_none_or(|p| p.is_match(from))
            })
            .map(|t| t.entry.tag.clone())
    }

    pub fn trusted(&self) -> Vec<TrustedPeer> {
        self.peers
            .load()
            .trusted
            .iter()
            .map(|t| t.entry.clone())
            .collect()
    }

    pub fn addresses(&self) -> Vec<AddressEntry> {
        self.groups.entries()
    }

    fn update_peers(
        &self,
        change: impl FnOnce(&mut Vec<CompiledTrusted>) -> Result<(), TableError>,
    ) -> Result<(), TableError> {
        let _w = self.peer_writer.lock();
        let old = self.peers.load();
        let mut trusted: Vec<CompiledTrusted> = old
            .trusted
            .iter()
            .map(|t| CompiledTrusted {
                entry: t.entry.clone(),
                pattern: t.pattern.clone(),
            })
            .collect();
        change(&mut trusted)?;
        self.peers.store(Arc::new(Peers { trusted }));
        Ok(())
    }

    fn journal_put(&self, key: String, value: String) -> Result<(), TableError> {
        if let Some(j) = &self.journal {
            j.put(&key, &value)?;
        }
        Ok(())
    }

    fn journal_delete(&self, key: String) -> Result<(), TableError> {
        if let Some(j) = &self.journal {
            j.delete(&key)?;
        }
        Ok(())
    }

    /// Adds a trusted peer (an entry for the same network and pattern is replaced).
    pub fn add_trusted(&self, t: TrustedPeer) -> Result<(), TableError> {
        let compiled = compile(t)?;
        self.update_peers(|trusted| {
            let e = &compiled.entry;
            let key = trusted_key(e);
            trusted.retain(|o| trusted_key(&o.entry) != key);
            if e.origin == Origin::Api {
                self.journal_put(format!("trusted/{key}"), to_json(e))?;
            }
            trusted.push(compiled);
            Ok(())
        })
    }

    /// Removes every trusted entry for `net`; the number removed.
    pub fn remove_trusted(&self, net: IpNet) -> Result<usize, TableError> {
        let mut removed = 0;
        self.update_peers(|trusted| {
            for t in trusted.iter().filter(|t| t.entry.net == net) {
                if t.entry.origin == Origin::Api {
                    self.journal_delete(format!("trusted/{}", trusted_key(&t.entry)))?;
                }
                removed += 1;
            }
            trusted.retain(|t| t.entry.net != net);
            Ok(())
        })?;
        if removed == 0 {
            return Err(TableError::NotFound(net.to_string()));
        }
        Ok(removed)
    }

    pub fn add_address(&self, a: AddressEntry) -> Result<(), TableError> {
        self.groups.add(a)
    }

    /// Removes the entries of `group` for `net`; the number removed.
    pub fn remove_address(&self, group: u32, net: IpNet) -> Result<usize, TableError> {
        self.groups.remove(group, net)
    }

    /// Replaces the configuration file's peers.
    pub fn set_config_peers(
        &self,
        trusted_list: Vec<TrustedPeer>,
        address_list: Vec<AddressEntry>,
    ) -> Result<(), TableError> {
        let compiled = trusted_list
            .into_iter()
            .map(compile)
            .collect::<Result<Vec<_>, _>>()?;
        self.update_peers(|trusted| {
            trusted.retain(|t| t.entry.origin != Origin::Config);
            trusted.extend(compiled);
            Ok(())
        })?;
        self.groups.set_config(address_list)
    }

    /// A table change made through another node (the cluster store's), applied and
    /// journaled here as an API change is. `key` as the journal names it; routing keys
    /// (trunks, rules, drains) are the edge's to apply.
    pub fn apply_shared(&self, key: &str, value: Option<&str>) -> Result<(), TableError> {
        fn read<T: serde::de::DeserializeOwned>(v: &str) -> Result<T, TableError> {
            serde_json::from_str(v).map_err(|e| TableError::Invalid(e.to_string()))
        }
        let not_found_is_done = |r: Result<usize, TableError>| match r {
            Ok(_) | Err(TableError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        };
        let (kind, rest) = key
            .split_once('/')
            .ok_or_else(|| TableError::Invalid(format!("key {key:?}")))?;
        let net_of = |text: &str| {
            text.parse::<IpNet>()
                .map_err(|e| TableError::Invalid(format!("key {key:?}: {e}")))
        };
        match (kind, value) {
            ("subscriber", Some(v)) => self.put_subscriber(Subscriber {
                origin: Origin::Api,
                ..read(v)?
            }),
            ("subscriber", None) => match self.remove_subscriber(rest) {
                Ok(_) | Err(TableError::NotFound(_)) => Ok(()),
                Err(e) => Err(e),
            },
            ("trusted", Some(v)) => self.add_trusted(TrustedPeer {
                origin: Origin::Api,
                ..read(v)?
            }),
            ("trusted", None) => {
                let net = net_of(rest.split('|').next().unwrap_or_default())?;
                not_found_is_done(self.remove_trusted(net))
            }
            ("address", Some(v)) => self.add_address(AddressEntry {
                origin: Origin::Api,
                ..read(v)?
            }),
            ("address", None) => {
                let mut parts = rest.split('|');
                let group = parts.next().and_then(|g| g.parse::<u32>().ok());
                let net = net_of(parts.next().unwrap_or_default())?;
                let group = group.ok_or_else(|| TableError::Invalid(format!("key {key:?}")))?;
                not_found_is_done(self.remove_address(group, net))
            }
            _ => Err(TableError::Invalid(format!("key {key:?}: not a table"))),
        }
    }

    /// From now on every change this node's API (or import) makes to its tables goes,
    /// once journaled, to `store` too.
    pub fn share(&self, store: Arc<dyn limes_cluster::ClusterStore>) {
        if let Some(j) = &self.journal {
            j.observe(Box::new(move |r| {
                let handed = match r {
                    limes_cluster::Record::Put(k, v) => store.put_table(k, v),
                    limes_cluster::Record::Delete(k) => store.delete_table(k),
                };
                if let Err(e) = handed {
                    warn!(error = %e, "a table change was not shared with the cluster");
                }
            }));
        }
    }

    /// Rewrites the journal as a snapshot when it has grown.
    pub fn compact_if_needed(&self) {
        let Some(j) = &self.journal else { return };
        if !j.needs_compaction(1 << 20) {
            return;
        }
        let subs: Vec<Arc<Subscriber>> = self
            .subscribers
            .read()
            .values()
            .filter(|s| s.origin == Origin::Api)
            .cloned()
            .collect();
        let peers = self.peers.load();
        let result = j.compact(|emit| {
            for s in &subs {
                emit(&format!("subscriber/{}", s.id()), &to_json(&**s))?;
            }
            for t in peers
                .trusted
                .iter()
                .filter(|t| t.entry.origin == Origin::Api)
            {
                emit(
                    &format!("trusted/{}", trusted_key(&t.entry)),
                    &to_json(&t.entry),
                )?;
            }
            for (key, value) in self.groups.journaled() {
                emit(&key, &value)?;
            }
            for (key, value) in self.routing.lock().iter() {
                emit(key, value)?;
            }
            Ok(())
        });
        if let Err(e) = result {
            warn!(error = %e, "tables journal compaction failed");
        }
    }
}

/// Table sizes, computed when Prometheus scrapes.
#[derive(Debug)]
struct TableCollector(Arc<Tables>);

impl prometheus_client::collector::Collector for TableCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::gauge::ConstGauge;
        let peers = self.0.peers.load();
        let sizes = [
            (
                "limes_subscribers",
                "Subscribers in the table",
                self.0.subscriber_count(),
            ),
            (
                "limes_trusted_peers",
                "Trusted peer entries",
                peers.trusted.len(),
            ),
            (
                "limes_address_entries",
                "Address group entries",
                self.0.groups.load().groups().map(|g| g.entries.len()).sum(),
            ),
        ];
        for (name, help, n) in sizes {
            let metric = ConstGauge::new(n as i64);
            let family = encoder.encode_descriptor(name, help, None, metric.metric_type())?;
            metric.encode(family)?;
        }
        Ok(())
    }
}

impl Tables {
    /// Registers the table-size gauges.
    pub fn register_census(
        registry: &mut prometheus_client::registry::Registry,
        tables: Arc<Tables>,
    ) {
        registry.register_collector(Box::new(TableCollector(tables)));
    }
}

fn trusted_key(t: &TrustedPeer) -> String {
    format!(
        "{}|{:?}|{}",
        t.net,
        t.proto,
        t.from_pattern.as_deref().unwrap_or_default()
    )
}

pub(crate) fn to_json<T: Serialize>(v: &T) -> String {
    // Plain structs of strings and numbers: serialising cannot fail.
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

#[cfg(test)]
mod tests;
