//! The node's configuration: a TOML file (every key optional), overridden by command-line
//! flags. `limes check-config FILE` validates one. Every key, its meaning and its default
//! are in README.md, "Configuration"; a test parses that block so it cannot drift.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use limes_actors::auth::AuthSettings;
use limes_actors::dialogs::collector::CollectorUrl;
use limes_actors::dialogs::profiles::{ClassRule, LimitDef, ProfileDef, ValueOf};
use limes_actors::dialogs::{DialogSettings, VarRule};
use limes_actors::dns::DnsSettings;
use limes_actors::policy::{self, Known, Policy, RuleDef};
use limes_actors::settings::{
    FloodAction, FloodSettings, Listen, ProxySettings, TransportSettings,
};
use limes_actors::tables::{AddressEntry, Origin, Proto, Subscriber, TrustedPeer};
use limes_actors::transport::Target;
use limes_actors::trunks::{DestinationDef, TrunkDef, Trunks};
use limes_cluster::etcd::EtcdSettings;
use limes_sip::digest::Algorithm;
use serde::Deserialize;

/// The trunk `sip.next_hop` makes.
pub const DEFAULT_TRUNK: &str = "default";

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub node: Node,
    pub sip: Sip,
    pub timers: Timers,
    pub tcp: Tcp,
    pub flood: Flood,
    pub dns: Dns,
    pub cluster: Cluster,
    pub admin: Admin,
    pub shutdown: Shutdown,
    pub log: Log,
    pub registrar: Registrar,
    pub auth: Auth,
    /// `[[subscriber]]` entries (replaced as a set on reload).
    pub subscriber: Vec<SubscriberEntry>,
    /// `[[trusted]]` entries.
    pub trusted: Vec<TrustedEntry>,
    /// `[[address]]` entries (address groups).
    pub address: Vec<AddressConfig>,
    /// `[[address_group]]`: names of address groups, for rules' `group:NAME` sources.
    pub address_group: Vec<GroupName>,
    pub dialog: Dialog,
    /// `[[trunk]]` entries: carriers' trunks.
    pub trunk: Vec<TrunkDef>,
    /// `[[route]]` rules; none: the default policy (see [`policy::default_rules`]).
    pub route: Vec<RuleDef>,
}

/// `[dialog]`: tracking, profiles, limits, CDRs (`[[dialog.profile]]`, `[[dialog.class]]`,
/// `[[dialog.limit]]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Dialog {
    pub track: bool,
    pub lifetime_s: u64,
    pub reject_unmatched: bool,
    pub max_dialogs: usize,
    /// Relative to the state directory; empty: no CDR file.
    pub cdr_file: String,
    pub cdr_rotate_mb: u64,
    /// `http://host:port/path`; empty: CDRs go to the file only.
    pub cdr_url: String,
    /// Session-Expires inserted into INVITEs without one; 0: none inserted.
    pub session_expires_s: u32,
    pub min_se_s: u32,
    pub profile: Vec<ProfileDef>,
    pub class: Vec<ClassRule>,
    pub limit: Vec<LimitDef>,
    pub var: Vec<VarRule>,
}

impl Default for Dialog {
    fn default() -> Self {
        Self {
            track: true,
            lifetime_s: 43_200,
            reject_unmatched: false,
            max_dialogs: 1_000_000,
            cdr_file: "cdr.jsonl".into(),
            cdr_rotate_mb: 64,
            cdr_url: String::new(),
            session_expires_s: 0,
            min_se_s: 90,
            profile: Vec::new(),
            class: Vec::new(),
            limit: Vec::new(),
            var: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Node {
    pub name: String,
    pub state_dir: PathBuf,
    /// The key behind Record-Route signatures, flow tokens, loop hashes, tags and digest
    /// nonces; the same on every node of a cluster. Empty: the one generated once into
    /// the state directory. `LIMES_NODE_SECRET` in the environment overrides it.
    pub secret: String,
}

impl Default for Node {
    fn default() -> Self {
        Self {
            name: "limes".into(),
            state_dir: PathBuf::from("limes-state"),
            secret: String::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Sip {
    pub listen: Vec<String>,
    pub next_hop: Vec<String>,
    pub record_route: bool,
    pub aliases: Vec<String>,
    pub udp_workers: usize,
    pub udp_buffer_bytes: usize,
    pub max_transactions: usize,
    pub max_message_bytes: usize,
    pub max_headers: usize,
    pub max_line_bytes: usize,
    pub max_list_values: usize,
    pub max_uri_bytes: usize,
}

impl Default for Sip {
    fn default() -> Self {
        let limits = limes_sip::Limits::default();
        let proxy = ProxySettings::default();
        let transport = TransportSettings::default();
        Self {
            listen: vec!["udp:127.0.0.1:5060".into(), "tcp:127.0.0.1:5060".into()],
            next_hop: Vec::new(),
            record_route: proxy.record_route,
            aliases: Vec::new(),
            udp_workers: transport.udp_workers,
            udp_buffer_bytes: transport.udp_buffer,
            max_transactions: proxy.max_transactions,
            max_message_bytes: limits.max_message_size,
            max_headers: limits.max_headers,
            max_line_bytes: limits.max_line_len,
            max_list_values: limits.max_list_values,
            max_uri_bytes: limits.max_uri_len,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Timers {
    pub t1_ms: u64,
    pub t2_ms: u64,
    pub t4_ms: u64,
    pub timer_d_ms: u64,
    pub timer_c_s: u64,
}

impl Default for Timers {
    fn default() -> Self {
        let t = limes_sip::transaction::TimerConfig::default();
        Self {
            t1_ms: t.t1.as_millis() as u64,
            t2_ms: t.t2.as_millis() as u64,
            t4_ms: t.t4.as_millis() as u64,
            timer_d_ms: t.timer_d.as_millis() as u64,
            timer_c_s: t.timer_c.as_secs(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Tcp {
    pub max_connections: usize,
    pub queue: usize,
    pub idle_timeout_s: u64,
    pub connect_timeout_ms: u64,
}

impl Default for Tcp {
    fn default() -> Self {
        let t = TransportSettings::default();
        Self {
            max_connections: t.tcp_max_connections,
            queue: t.tcp_queue,
            idle_timeout_s: t.tcp_idle_timeout.as_secs(),
            connect_timeout_ms: t.tcp_connect_timeout.as_millis() as u64,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Flood {
    pub enabled: bool,
    pub rate: u32,
    pub burst: u32,
    pub action: FloodAction,
    pub retry_after_s: u64,
    pub evict_every_s: u64,
    pub max_sources: usize,
}

impl Default for Flood {
    fn default() -> Self {
        let f = FloodSettings::default();
        Self {
            enabled: f.enabled,
            rate: f.rate,
            burst: f.burst,
            action: f.action,
            retry_after_s: f.retry_after.as_secs(),
            evict_every_s: f.evict_every.as_secs(),
            max_sources: f.max_sources,
        }
    }
}

/// `[cluster]`: the etcd members nodes share state through; none: this node alone.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Cluster {
    pub etcd: Vec<String>,
    pub lease_ttl_s: u64,
    pub queue: usize,
    pub timeout_ms: u64,
}

impl Default for Cluster {
    fn default() -> Self {
        let d = EtcdSettings::new(Vec::new(), "", serde_json::Value::Null);
        Self {
            etcd: Vec::new(),
            lease_ttl_s: d.lease_ttl.as_secs(),
            queue: d.queue,
            timeout_ms: d.timeout.as_millis() as u64,
        }
    }
}

impl Cluster {
    /// The etcd settings of node `name`, or `None` for a node alone.
    pub fn resolve(&self, name: &str) -> anyhow::Result<Option<EtcdSettings>> {
        if self.etcd.is_empty() {
            return Ok(None);
        }
        for url in &self.etcd {
            if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() < 10 {
                bail!("cluster.etcd: {url:?} is not an http:// or https:// URL");
            }
        }
        if self.lease_ttl_s < 2 || self.queue == 0 || self.timeout_ms == 0 {
            bail!("cluster: lease_ttl_s from 2, queue and timeout_ms above 0");
        }
        let mut s = EtcdSettings::new(self.etcd.clone(), name, serde_json::Value::Null);
        s.lease_ttl = Duration::from_secs(self.lease_ttl_s);
        s.queue = self.queue;
        s.timeout = Duration::from_millis(self.timeout_ms);
        Ok(Some(s))
    }
}

/// `[dns]`: the name servers host names are located with (RFC 3263).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Dns {
    pub servers: Vec<String>,
    pub timeout_ms: u64,
    pub attempts: usize,
    pub negative_ttl_s: u64,
    pub max_entries: usize,
}

impl Default for Dns {
    fn default() -> Self {
        let d = DnsSettings::default();
        Self {
            servers: Vec::new(),
            timeout_ms: d.timeout.as_millis() as u64,
            attempts: d.attempts,
            negative_ttl_s: d.negative_ttl.as_secs(),
            max_entries: d.max_entries,
        }
    }
}

impl Dns {
    fn resolve(&self) -> anyhow::Result<DnsSettings> {
        let servers = self
            .servers
            .iter()
            .map(|s| {
                s.parse::<std::net::SocketAddr>()
                    .or_else(|_| s.parse::<std::net::IpAddr>().map(|ip| (ip, 53).into()))
                    .map_err(|_| anyhow!("dns.servers: {s:?} is not an IP address[:port]"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        if self.timeout_ms == 0 || self.attempts == 0 || self.max_entries == 0 {
            bail!("dns: timeout_ms, attempts and max_entries must be above 0");
        }
        Ok(DnsSettings {
            servers,
            timeout: Duration::from_millis(self.timeout_ms),
            attempts: self.attempts,
            negative_ttl: Duration::from_secs(self.negative_ttl_s),
            max_entries: self.max_entries,
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Admin {
    pub listen: String,
    pub token: String,
    /// Serve a non-loopback address without a token (refused unless said here).
    pub open: bool,
}

impl Default for Admin {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            token: String::new(),
            open: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Shutdown {
    pub drain_s: u64,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self { drain_s: 60 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Log {
    pub level: String,
    pub format: String,
}

impl Default for Log {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: "text".into(),
        }
    }
}

/// Everything the node needs, checked and resolved.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Registrar {
    pub domains: Vec<String>,
    pub use_domain: bool,
    pub min_expires_s: u32,
    pub max_expires_s: u32,
    pub default_expires_s: u32,
    pub max_contacts: usize,
    pub max_aors: usize,
}

impl Default for Registrar {
    fn default() -> Self {
        let r = limes_sip::registrar::Rules::default();
        Self {
            domains: Vec::new(),
            use_domain: false,
            min_expires_s: r.min_expires,
            max_expires_s: r.max_expires,
            default_expires_s: r.default_expires,
            max_contacts: r.max_contacts,
            max_aors: 2_000_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Auth {
    pub realm: String,
    pub algorithms: Vec<String>,
    pub nonce_lifetime_s: u64,
    pub challenge_requests: bool,
    pub match_from: bool,
    pub max_failures: u32,
    pub failure_window_s: u64,
    pub block_s: u64,
    pub secret: String,
    pub max_subscribers: usize,
}

impl Default for Auth {
    fn default() -> Self {
        let a = AuthSettings::default();
        Self {
            realm: a.realm,
            algorithms: a.algorithms.iter().map(|a| a.as_str().to_owned()).collect(),
            nonce_lifetime_s: a.nonce_lifetime,
            challenge_requests: a.challenge_requests,
            match_from: a.match_from,
            max_failures: a.max_failures,
            failure_window_s: a.failure_window.as_secs(),
            block_s: a.block_for.as_secs(),
            secret: a.secret,
            max_subscribers: 10_000_000,
        }
    }
}

/// A subscriber in the configuration file: a plain password, or the HA1 digests.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SubscriberEntry {
    pub user: String,
    pub domain: String,
    pub password: String,
    pub ha1: String,
    pub ha1_sha256: String,
    pub attrs: std::collections::BTreeMap<String, String>,
    pub call_limit: Option<u32>,
    /// Digest algorithms offered to this subscriber; empty: `auth.algorithms`.
    pub algorithms: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrustedEntry {
    pub cidr: String,
    pub proto: String,
    pub from_pattern: String,
    pub tag: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AddressConfig {
    pub group: u32,
    pub cidr: String,
    pub port: u16,
    pub proto: String,
    pub tag: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupName {
    pub group: u32,
    pub name: String,
}

/// The tables the configuration file defines.
#[derive(Debug, Clone, Default)]
pub struct TableSet {
    pub subscribers: Vec<Subscriber>,
    pub trusted: Vec<TrustedPeer>,
    pub addresses: Vec<AddressEntry>,
}

/// A CIDR or a single address (`192.0.2.1` means `/32`).
pub fn parse_net(s: &str) -> anyhow::Result<ipnet::IpNet> {
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| anyhow::anyhow!("{s:?}: not an IP address or CIDR"))
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

impl SubscriberEntry {
    pub fn to_subscriber(&self, origin: Origin) -> anyhow::Result<Subscriber> {
        if self.user.is_empty() || self.domain.is_empty() {
            bail!("subscriber: user and domain are required");
        }
        let mut s = if !self.password.is_empty() {
            Subscriber::with_password(&self.user, &self.domain, &self.password, origin)
        } else if !self.ha1.is_empty() || !self.ha1_sha256.is_empty() {
            let hex = |h: &str, n: usize| {
                h.is_empty() || (h.len() == n && h.bytes().all(|b| b.is_ascii_hexdigit()))
            };
            if !hex(&self.ha1, 32) || !hex(&self.ha1_sha256, 64) {
                bail!(
                    "subscriber {}@{}: ha1 must be 32 and ha1_sha256 64 hex digits",
                    self.user,
                    self.domain
                );
            }
            Subscriber {
                user: self.user.clone(),
                domain: self.domain.to_ascii_lowercase(),
                ha1: self.ha1.to_ascii_lowercase(),
                ha1_sha256: self.ha1_sha256.to_ascii_lowercase(),
                attrs: Default::default(),
                call_limit: None,
                algorithms: Vec::new(),
                origin,
            }
        } else {
            bail!(
                "subscriber {}@{}: a password or an ha1 is required",
                self.user,
                self.domain
            );
        };
        s.attrs = self.attrs.clone();
        s.call_limit = self.call_limit;
        s.set_algorithms(&self.algorithms)
            .map_err(|e| anyhow::anyhow!("subscriber {}: {e}", s.id()))?;
        Ok(s)
    }
}

/// What `limes run`'s flags change in the file's configuration (at start and on every
/// reload).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// The node's name (`node.name`).
    pub node_name: Option<String>,
    /// etcd client URLs (`cluster.etcd`).
    pub etcd: Vec<String>,
    pub listen: Vec<String>,
    pub admin: Option<String>,
    pub next_hop: Vec<String>,
    pub state_dir: Option<PathBuf>,
    /// Trusted CIDRs, added to the file's.
    pub trusted: Vec<String>,
    /// The admin API's bearer token (`admin.token`).
    pub admin_token: Option<String>,
}

impl Overrides {
    pub fn apply(&self, cfg: &mut Config) {
        if let Some(n) = &self.node_name {
            cfg.node.name = n.clone();
        }
        if !self.etcd.is_empty() {
            cfg.cluster.etcd = self
                .etcd
                .iter()
                .flat_map(|e| e.split(','))
                .map(|e| e.trim().to_owned())
                .filter(|e| !e.is_empty())
                .collect();
        }
        if !self.listen.is_empty() {
            cfg.sip.listen = self.listen.clone();
        }
        if let Some(a) = &self.admin {
            cfg.admin.listen = a.clone();
        }
        if let Some(t) = &self.admin_token {
            cfg.admin.token = t.clone();
        }
        if !self.next_hop.is_empty() {
            cfg.sip.next_hop = self.next_hop.clone();
        }
        if let Some(d) = &self.state_dir {
            cfg.node.state_dir = d.clone();
        }
        cfg.trusted
            .extend(self.trusted.iter().map(|c| TrustedEntry {
                cidr: c.clone(),
                tag: "command line".into(),
                ..TrustedEntry::default()
            }));
    }
}

impl Config {
    /// The configuration file's tables, checked.
    pub fn tables(&self) -> anyhow::Result<TableSet> {
        let subscribers = self
            .subscriber
            .iter()
            .map(|s| s.to_subscriber(Origin::Config))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let trusted = self
            .trusted
            .iter()
            .map(|t| {
                if !t.from_pattern.is_empty() {
                    regex::Regex::new(&t.from_pattern)
                        .with_context(|| format!("trusted {}: from_pattern", t.cidr))?;
                }
                Ok(TrustedPeer {
                    net: parse_net(&t.cidr)?,
                    proto: Proto::parse(&t.proto).map_err(anyhow::Error::msg)?,
                    from_pattern: non_empty(&t.from_pattern),
                    tag: non_empty(&t.tag).map(Into::into),
                    origin: Origin::Config,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let addresses = self
            .address
            .iter()
            .map(|a| {
                Ok(AddressEntry {
                    group: a.group,
                    net: parse_net(&a.cidr)?,
                    port: a.port,
                    proto: Proto::parse(&a.proto).map_err(anyhow::Error::msg)?,
                    tag: non_empty(&a.tag).map(Into::into),
                    origin: Origin::Config,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(TableSet {
            subscribers,
            trusted,
            addresses,
        })
    }

    pub fn registrar_rules(&self) -> anyhow::Result<limes_sip::registrar::Rules> {
        let r = &self.registrar;
        if r.min_expires_s > r.max_expires_s || r.default_expires_s < r.min_expires_s {
            bail!("registrar: need min_expires_s <= default_expires_s and min_expires_s <= max_expires_s");
        }
        Ok(limes_sip::registrar::Rules {
            min_expires: r.min_expires_s,
            max_expires: r.max_expires_s,
            default_expires: r.default_expires_s.min(r.max_expires_s),
            max_contacts: r.max_contacts.max(1),
        })
    }

    pub fn auth_settings(&self) -> anyhow::Result<AuthSettings> {
        let a = &self.auth;
        let algorithms = a
            .algorithms
            .iter()
            .map(|name| {
                Algorithm::parse(name)
                    .filter(|alg| matches!(alg, Algorithm::Md5 | Algorithm::Sha256))
                    .ok_or_else(|| anyhow::anyhow!("auth.algorithms: {name:?} (MD5 or SHA-256)"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        if algorithms.is_empty() {
            bail!("auth.algorithms: at least one algorithm");
        }
        Ok(AuthSettings {
            realm: a.realm.to_ascii_lowercase(),
            algorithms,
            nonce_lifetime: a.nonce_lifetime_s.max(1),
            challenge_requests: a.challenge_requests,
            match_from: a.match_from,
            max_failures: a.max_failures.max(1),
            failure_window: Duration::from_secs(a.failure_window_s),
            block_for: Duration::from_secs(a.block_s),
            secret: a.secret.clone(),
            ..AuthSettings::default()
        })
    }
}

#[derive(Debug, Clone)]
pub struct Resolved {
    pub name: String,
    pub state_dir: PathBuf,
    /// A configured node secret; `None`: the state directory's.
    pub secret: Option<String>,
    pub listens: Vec<Listen>,
    pub proxy: ProxySettings,
    pub transport: TransportSettings,
    pub flood: FloodSettings,
    pub dns: DnsSettings,
    /// Where the cluster's shared state is; `None`: this node alone.
    pub cluster: Option<EtcdSettings>,
    pub admin: std::net::SocketAddr,
    pub admin_token: Option<String>,
    pub drain: Duration,
    pub log: Log,
    pub rules: limes_sip::registrar::Rules,
    pub domains: Vec<String>,
    pub use_domain: bool,
    pub max_aors: usize,
    pub auth: AuthSettings,
    pub max_subscribers: usize,
    pub tables: TableSet,
    pub dialog: DialogSettings,
    pub trunks: Vec<TrunkDef>,
    pub routes: Vec<RuleDef>,
    pub group_names: BTreeMap<String, u32>,
}

/// What `limes check-config` prints: what the node would run.
pub fn summary(r: &Resolved) -> String {
    let join = |items: Vec<String>| {
        if items.is_empty() {
            "none".to_owned()
        } else {
            items.join(", ")
        }
    };
    let admin_guard = match (r.admin.ip().is_loopback(), &r.admin_token) {
        (true, None) => "loopback, no token",
        (true, Some(_)) => "loopback, token",
        (false, Some(_)) => "reachable from the network, token",
        (false, None) => "reachable from the network, NO TOKEN (admin.open)",
    };
    let groups: std::collections::BTreeSet<u32> =
        r.tables.addresses.iter().map(|a| a.group).collect();
    let store = r.cluster.as_ref().map_or_else(
        || "embedded (this node alone)".to_owned(),
        |c| format!("etcd {}", c.endpoints.join(", ")),
    );
    [
        format!("node: {}", r.name),
        format!(
            "listen: {}",
            join(r.listens.iter().map(ToString::to_string).collect())
        ),
        format!(
            "next hops: {}",
            join(r.proxy.next_hops.iter().map(|t| t.uri.clone()).collect())
        ),
        format!("admin: {} ({admin_guard})", r.admin),
        format!("state directory: {}", r.state_dir.display()),
        format!("cluster store: {store}"),
        format!("subscribers: {}", r.tables.subscribers.len()),
        format!("trusted peers: {}", r.tables.trusted.len()),
        format!(
            "address entries: {} in {} group{}",
            r.tables.addresses.len(),
            groups.len(),
            if groups.len() == 1 { "" } else { "s" }
        ),
        format!(
            "trunks: {}",
            join(r.trunks.iter().map(|t| t.name.clone()).collect())
        ),
        format!(
            "routing rules: {}",
            if r.routes.is_empty() {
                "the defaults".to_owned()
            } else {
                r.routes.len().to_string()
            }
        ),
        format!(
            "auth: {} (realm {})",
            r.auth
                .algorithms
                .iter()
                .map(|a| a.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            if r.auth.realm.is_empty() {
                "from each request"
            } else {
                &r.auth.realm
            }
        ),
        format!("log: {}, {}", r.log.level, r.log.format),
    ]
    .iter()
    .map(|l| format!("{l}\n"))
    .collect()
}

impl Resolved {
    /// The settings a reload does not change (the node reads them once, at start), each
    /// with a fingerprint of its value: a reload compares them to say which it left.
    pub fn restart_only(&self) -> Vec<(&'static str, String)> {
        let proxy = limes_actors::settings::ProxySettings {
            next_hops: Vec::new(),
            ..self.proxy.clone()
        };
        vec![
            ("node.name", self.name.clone()),
            ("node.state_dir", self.state_dir.display().to_string()),
            ("node.secret", format!("{:?}", self.secret)),
            ("sip.listen", format!("{:?}", self.listens)),
            (
                "sip, timers (sip.next_hop is applied)",
                format!("{proxy:?}"),
            ),
            ("transport", format!("{:?}", self.transport)),
            ("flood", format!("{:?}", self.flood)),
            ("dns", format!("{:?}", self.dns)),
            ("cluster", format!("{:?}", self.cluster)),
            ("admin.listen", self.admin.to_string()),
            ("admin.token", format!("{:?}", self.admin_token)),
            ("shutdown.drain_s", format!("{:?}", self.drain)),
            ("log.format", self.log.format.clone()),
            ("registrar.max_aors", self.max_aors.to_string()),
            ("auth.max_subscribers", self.max_subscribers.to_string()),
        ]
    }
}

impl Config {
    /// The file at `path`, or the defaults when there is none.
    pub fn load_or_default(path: Option<&Path>) -> anyhow::Result<Self> {
        path.map_or_else(|| Ok(Self::default()), Self::load)
    }

    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// Checks every value and resolves addresses.
    pub fn resolve(&self) -> anyhow::Result<Resolved> {
        let listens = self
            .sip
            .listen
            .iter()
            .map(|l| l.parse::<Listen>().map_err(anyhow::Error::msg))
            .collect::<anyhow::Result<Vec<_>>>()?;
        if listens.is_empty() {
            bail!("sip.listen: at least one listening address is needed");
        }
        let next_hops = self
            .sip
            .next_hop
            .iter()
            .map(|u| Target::resolve(u).map_err(anyhow::Error::msg))
            .collect::<anyhow::Result<Vec<_>>>()?;
        // The trunk of the next hops sends to the addresses they resolved to.
        let group_names = self.group_names()?;
        let next_hops_uris: Vec<String> = next_hops
            .iter()
            .map(|t| match t.dest.transport {
                limes_actors::settings::Transport::Udp => format!("sip:{}", t.dest.addr),
                limes_actors::settings::Transport::Tcp => {
                    format!("sip:{};transport=tcp", t.dest.addr)
                }
            })
            .collect();
        for t in &next_hops {
            if !listens.iter().any(|l| l.transport == t.dest.transport) {
                bail!(
                    "sip.next_hop {}: no {} listener to send from",
                    t.uri,
                    t.dest.transport.as_str()
                );
            }
        }
        if self.sip.max_message_bytes < 1024 {
            bail!("sip.max_message_bytes must be at least 1024");
        }
        if self.timers.t1_ms == 0 || self.timers.t2_ms < self.timers.t1_ms {
            bail!("timers: t1_ms must be > 0 and t2_ms >= t1_ms");
        }
        if !["text", "json"].contains(&self.log.format.as_str()) {
            bail!("log.format must be \"text\" or \"json\"");
        }
        crate::logging::check_level(&self.log.level)?;
        let limits = limes_sip::Limits {
            max_message_size: self.sip.max_message_bytes,
            max_headers: self.sip.max_headers,
            max_line_len: self.sip.max_line_bytes,
            max_list_values: self.sip.max_list_values,
            max_uri_len: self.sip.max_uri_bytes,
        };
        let timers = limes_sip::transaction::TimerConfig {
            t1: Duration::from_millis(self.timers.t1_ms),
            t2: Duration::from_millis(self.timers.t2_ms),
            t4: Duration::from_millis(self.timers.t4_ms),
            timer_d: Duration::from_millis(self.timers.timer_d_ms),
            timer_c: Duration::from_secs(self.timers.timer_c_s),
        };
        let proxy = ProxySettings {
            next_hops,
            record_route: self.sip.record_route,
            aliases: self.sip.aliases.clone(),
            timers,
            limits,
            max_transactions: self.sip.max_transactions,
            ..ProxySettings::default()
        };
        let transport = TransportSettings {
            udp_workers: self.sip.udp_workers.max(1),
            udp_buffer: self.sip.udp_buffer_bytes,
            tcp_max_connections: self.tcp.max_connections,
            tcp_queue: self.tcp.queue.max(1),
            tcp_idle_timeout: Duration::from_secs(self.tcp.idle_timeout_s.max(1)),
            tcp_connect_timeout: Duration::from_millis(self.tcp.connect_timeout_ms.max(1)),
        };
        let flood = FloodSettings {
            enabled: self.flood.enabled,
            rate: self.flood.rate,
            burst: self.flood.burst,
            action: self.flood.action,
            retry_after: Duration::from_secs(self.flood.retry_after_s),
            evict_every: Duration::from_secs(self.flood.evict_every_s.max(1)),
            max_sources: self.flood.max_sources,
        };
        let admin: std::net::SocketAddr = self
            .admin
            .listen
            .parse()
            .with_context(|| format!("admin.listen {:?}", self.admin.listen))?;
        let secret = std::env::var("LIMES_NODE_SECRET")
            .ok()
            .filter(|s| !s.is_empty())
            .or_else(|| (!self.node.secret.is_empty()).then(|| self.node.secret.clone()));
        if secret.as_ref().is_some_and(|s| s.len() < 16) {
            bail!("node.secret must be at least 16 characters (a shared cluster key)");
        }
        if !admin.ip().is_loopback() && self.admin.token.is_empty() && !self.admin.open {
            bail!(
                "admin.listen {admin} is reachable from the network and admin.token is empty: \
                 set a token (admin.token, --admin-token, LIMES_ADMIN_TOKEN), or admin.open = true \
                 to serve it without one"
            );
        }
        Ok(Resolved {
            name: self.node.name.clone(),
            state_dir: self.node.state_dir.clone(),
            secret,
            listens,
            proxy,
            transport,
            flood,
            dns: self.dns.resolve()?,
            cluster: self.cluster.resolve(&self.node.name)?,
            admin,
            admin_token: (!self.admin.token.is_empty()).then(|| self.admin.token.clone()),
            drain: Duration::from_secs(self.shutdown.drain_s),
            log: self.log.clone(),
            rules: self.registrar_rules()?,
            domains: self.registrar.domains.clone(),
            use_domain: self.registrar.use_domain,
            max_aors: self.registrar.max_aors.max(1),
            auth: self.auth_settings()?,
            max_subscribers: self.auth.max_subscribers.max(1),
            tables: self.tables()?,
            dialog: self.dialog_settings()?,
            trunks: self.trunk_defs(&next_hops_uris, &group_names)?,
            routes: self.route_defs(),
            group_names,
        })
    }

    /// The trunks: the configured ones, and `sip.next_hop` as the trunk `default` (its
    /// hops tried in the order given, the Request-URI kept, no pings). Checked with the
    /// rules that name them.
    /// The `[[address_group]]` names: each a group from 1, a name that is not a number,
    /// neither given twice.
    fn group_names(&self) -> anyhow::Result<BTreeMap<String, u32>> {
        let mut names = BTreeMap::new();
        let mut groups = std::collections::HashSet::new();
        for g in &self.address_group {
            let ok = g.group > 0
                && !g.name.is_empty()
                && g.name.parse::<u32>().is_err()
                && g.name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
            if !ok {
                bail!(
                    "address_group {} {:?}: a group from 1 and a name of letters, digits, - _ . (not a number)",
                    g.group,
                    g.name
                );
            }
            if names.insert(g.name.clone(), g.group).is_some() || !groups.insert(g.group) {
                bail!("address_group {} {:?}: named twice", g.group, g.name);
            }
        }
        Ok(names)
    }

    fn trunk_defs(
        &self,
        next_hops: &[String],
        group_names: &BTreeMap<String, u32>,
    ) -> anyhow::Result<Vec<TrunkDef>> {
        let mut defs = self.trunk.clone();
        if !next_hops.is_empty() {
            if defs.iter().any(|t| t.name == DEFAULT_TRUNK) {
                bail!("trunk {DEFAULT_TRUNK:?}: the name is taken by sip.next_hop");
            }
            let destinations = next_hops
                .iter()
                .enumerate()
                .map(|(i, uri)| DestinationDef {
                    priority: i as u16,
                    ..DestinationDef::new(uri)
                })
                .collect();
            defs.push(TrunkDef {
                ping_interval_s: 0,
                rewrite_host: false,
                timeout_ms: self.timers.timer_c_s.saturating_mul(1000),
                ..TrunkDef::new(DEFAULT_TRUNK, destinations)
            });
        }
        let checked = Trunks::default()
            .compile_set(defs.clone())
            .map_err(anyhow::Error::msg)?;
        let names = Known {
            trunks: |n: &str| checked.contains_key(n),
            groups: group_names,
        };
        Policy::compile(self.route_defs(), &names)?;
        Ok(defs)
    }

    fn route_defs(&self) -> Vec<RuleDef> {
        if self.route.is_empty() {
            policy::default_rules((!self.sip.next_hop.is_empty()).then_some(DEFAULT_TRUNK))
        } else {
            self.route.clone()
        }
    }

    /// `[dialog]` checked: limits name declared profiles, names are unique, codes are
    /// final failure codes, a profile by class has classes to go by.
    fn dialog_settings(&self) -> anyhow::Result<DialogSettings> {
        let d = &self.dialog;
        let mut names = std::collections::HashSet::new();
        for p in &d.profile {
            if p.name.is_empty() || !names.insert(p.name.as_str()) {
                bail!(
                    "dialog.profile {:?}: names must be given and unique",
                    p.name
                );
            }
            let by_class = p.value == Some(ValueOf::Class) || p.class.is_some();
            if by_class && d.class.is_empty() {
                bail!(
                    "dialog.profile {}: counts by class but no [[dialog.class]] is declared",
                    p.name
                );
            }
            if let Some(c) = &p.class {
                if !d.class.iter().any(|k| &k.name == c) {
                    bail!("dialog.profile {}: class {c:?} is not declared", p.name);
                }
            }
        }
        for l in &d.limit {
            if !names.contains(l.profile.as_str()) {
                bail!("dialog.limit: profile {:?} is not declared", l.profile);
            }
            if !(400..700).contains(&l.status) {
                bail!(
                    "dialog.limit on {}: status {} is not a 4xx-6xx code",
                    l.profile,
                    l.status
                );
            }
        }
        for v in &d.var {
            v.check().map_err(anyhow::Error::msg)?;
        }
        if d.min_se_s == 0 || (d.session_expires_s != 0 && d.session_expires_s < d.min_se_s) {
            bail!(
                "dialog: min_se_s must be > 0 and session_expires_s (when set) at least min_se_s"
            );
        }
        Ok(DialogSettings {
            session_expires: (d.session_expires_s > 0)
                .then(|| Duration::from_secs(u64::from(d.session_expires_s))),
            min_se: Duration::from_secs(u64::from(d.min_se_s)),
            vars: d.var.clone(),
            track: d.track,
            lifetime: Duration::from_secs(d.lifetime_s.max(1)),
            reject_unmatched: d.reject_unmatched,
            max_dialogs: d.max_dialogs.max(1),
            profiles: d.profile.clone(),
            classes: d.class.clone(),
            limits: d.limit.clone(),
            cdr_file: (!d.cdr_file.is_empty()).then(|| self.node.state_dir.join(&d.cdr_file)),
            cdr_rotate_bytes: d.cdr_rotate_mb.saturating_mul(1 << 20),
            cdr_url: if d.cdr_url.is_empty() {
                None
            } else {
                Some(
                    CollectorUrl::parse(&d.cdr_url)
                        .map_err(|e| anyhow::anyhow!("dialog.cdr_url: {e}"))?,
                )
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_group_names_are_checked() {
        let with = |groups: &str| {
            toml::from_str::<Config>(&format!(
                "{groups}\n[[route]]\nname = \"r\"\nsource = \"group:carrier-a\"\naction = \"location\"\n"
            ))
            .expect("parses")
            .resolve()
        };
        let ok = with("[[address_group]]\ngroup = 200\nname = \"carrier-a\"\n").expect("named");
        assert_eq!(ok.group_names.get("carrier-a"), Some(&200));
        let missing = with("").expect_err("no such name").to_string();
        assert!(missing.contains("carrier-a"), "{missing}");
        for (bad, why) in [
            ("group = 200\nname = \"300\"", "not a number"),
            ("group = 0\nname = \"carrier-a\"", "a group from 1"),
        ] {
            let e = with(&format!("[[address_group]]\n{bad}\n"))
                .expect_err(bad)
                .to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
        let twice = with(
            "[[address_group]]\ngroup = 200\nname = \"carrier-a\"\n[[address_group]]\ngroup = 201\nname = \"carrier-a\"\n",
        )
        .expect_err("twice")
        .to_string();
        assert!(twice.contains("named twice"), "{twice}");
    }

    #[test]
    fn defaults_resolve() {
        let r = Config::default().resolve().unwrap();
        assert_eq!(r.listens.len(), 2);
        assert_eq!(r.admin.to_string(), "127.0.0.1:8080");
        assert!(r.proxy.next_hops.is_empty());
    }

    /// The first TOML block under `heading` in README.md.
    fn readme_toml(heading: &str) -> String {
        include_str!("../../README.md")
            .lines()
            .skip_while(|l| *l != heading)
            .skip_while(|l| !l.starts_with("```toml"))
            .skip(1)
            .take_while(|l| !l.starts_with("```"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn readme_configuration_block_parses_with_the_defaults() {
        let example = readme_toml("## Configuration");
        assert!(
            example.contains("[flood]"),
            "README.md has the configuration block"
        );
        let c: Config = toml::from_str(&example).unwrap();
        let documented = c.resolve().unwrap();
        let defaults = Config::default().resolve().unwrap();
        assert_eq!(
            format!("{documented:?}"),
            format!("{defaults:?}"),
            "README values are the defaults"
        );
    }

    #[test]
    fn readme_trunk_and_route_example_resolves_and_bad_rules_are_named() {
        let example = readme_toml("### Trunks and routing rules");
        let c: Config = toml::from_str(&example).unwrap();
        let r = c.resolve().unwrap();
        assert_eq!(r.trunks.len(), 1);
        assert_eq!(r.routes.len(), 5);
        let mut bad = c.clone();
        bad.route[4].action = "trunk:carrier-b".into();
        let e = bad.resolve().unwrap_err().to_string();
        assert!(e.contains("\"out\"") && e.contains("carrier-b"), "{e}");
        // The next hops become the trunk the default rules send calls out through.
        let mut hops = Config::default();
        hops.sip.next_hop = vec!["sip:127.0.0.1:5080".into()];
        let r = hops.resolve().unwrap();
        assert_eq!(r.trunks[0].name, DEFAULT_TRUNK);
        assert!(r.routes.iter().any(|x| x.action == "trunk:default"));
    }

    #[test]
    fn mistakes_are_reported() {
        assert!(
            toml::from_str::<Config>("[sip]\nlisen = []").is_err(),
            "unknown key"
        );
        let mut c = Config::default();
        c.sip.listen = vec!["sctp:127.0.0.1:5060".into()];
        assert!(c.resolve().is_err());
        let mut c = Config::default();
        c.sip.next_hop = vec!["sip:127.0.0.1:5080;transport=tcp".into()];
        c.sip.listen = vec!["udp:127.0.0.1:5060".into()];
        assert!(c.resolve().is_err(), "no tcp listener for a tcp next hop");
    }
}
