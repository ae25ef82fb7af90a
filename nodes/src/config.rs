//! The node's configuration: a TOML file (every key optional), overridden by command-line
//! flags. `limes check-config FILE` validates one. Every key, its meaning and its default
//! are in README.md, "Configuration"; a test parses that block so it cannot drift.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use limes_actors::auth::AuthSettings;
use limes_actors::dialogs::profiles::{ClassRule, LimitDef, ProfileDef};
use limes_actors::dialogs::VarRule;
use limes_actors::dns::DnsSettings;
use limes_actors::policy::RuleDef;
use limes_actors::settings::{FloodAction, FloodSettings, ProxySettings, TransportSettings};
use limes_actors::tables::{AddressEntry, Origin, Proto, Subscriber, TrustedPeer};
use limes_actors::trunks::TrunkDef;
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
    /// `[[route]]` rules; none: the default policy (see [`limes_actors::policy::default_rules`]).
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

mod resolve;

pub use resolve::{summary, Resolved};

#[cfg(test)]
mod tests;
