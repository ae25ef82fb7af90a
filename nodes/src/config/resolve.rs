//! The configuration resolved: every value checked, addresses parsed, defaults applied,
//! and turned into the settings each part of the node takes ([`Resolved`]); what
//! `limes check-config` prints; which settings only a restart changes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use limes_actors::auth::AuthSettings;
use limes_actors::dialogs::collector::CollectorUrl;
use limes_actors::dialogs::profiles::ValueOf;
use limes_actors::dialogs::DialogSettings;
use limes_actors::dns::DnsSettings;
use limes_actors::policy::{self, Known, Policy, RuleDef};
use limes_actors::settings::{FloodSettings, Listen, ProxySettings, TransportSettings};
use limes_actors::transport::Target;
use limes_actors::trunks::{DestinationDef, TrunkDef, Trunks};
use limes_cluster::etcd::EtcdSettings;

use super::{Config, Log, TableSet, DEFAULT_TRUNK};

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
