//! Wiring: binds the sockets, builds the proxy, starts the UDP workers, TCP listeners,
//! timer thread and admin server, then waits for SIGTERM/SIGINT and drains.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use std::path::PathBuf;

use anyhow::Context;
use limes_actors::auth::{Auth, AuthMetrics};
use limes_actors::dialogs::actor::{DialogSupervisor, Ender, SupervisorArgs};
use limes_actors::dialogs::cdr::EndedBy;
use limes_actors::dialogs::{DialogMetrics, Dialogs};
use limes_actors::dns::{Dns, DnsMetrics};
use limes_actors::flood::FloodGuard;
use limes_actors::metrics::Metrics;
use limes_actors::proxy::edge::{unix_now, Edge};
use limes_actors::proxy::local::Local;
use limes_actors::proxy::routing::{HealthChecks, RoutingMetrics};
use limes_actors::proxy::Proxy;
use limes_actors::registrar::{Location, LocationMetrics};
use limes_actors::settings::Transport;
use limes_actors::tables::Tables;
use limes_actors::transport::{Inbound, Outbound};
use limes_actors::trunks::Trunks;
use limes_actors::{tcp, udp};
use limes_cluster::{Journal, NodeSecret, SecretSource};
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::admin::{self, AdminState};
use crate::config::{Config, Resolved};
use crate::rpc::Node;

/// Creates the state directory and takes its lock: one process at a time writes its
/// journals. The lock goes with the returned file (and with the process).
pub fn lock_state_dir(dir: &std::path::Path) -> anyhow::Result<std::fs::File> {
    std::fs::create_dir_all(dir).with_context(|| {
        format!(
            "state directory {} (set node.state_dir or --state-dir)",
            dir.display()
        )
    })?;
    let path = dir.join("lock");
    let file =
        std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    file.try_lock().map_err(|_| {
        anyhow::anyhow!(
            "state directory {} is in use by another limes process",
            dir.display()
        )
    })?;
    Ok(file)
}

/// What a reload reads: the configuration file (none: the defaults) and the flags of the
/// command line, applied over it as at start.
pub struct ReloadSource {
    pub path: Option<PathBuf>,
    pub overrides: crate::config::Overrides,
    /// The log, whose level a reload changes.
    pub log: crate::logging::LogControl,
}

/// What a reload compares and counts: the restart-only settings the node runs with, and
/// the metrics that tell an operator a reload left some of them.
struct Reloading {
    source: ReloadSource,
    running: Vec<(&'static str, String)>,
    /// Restart-only settings the last reload read with another value than the running one.
    pending: prometheus_client::metrics::gauge::Gauge,
    reloads: prometheus_client::metrics::family::Family<
        ResultLabel,
        prometheus_client::metrics::counter::Counter,
    >,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

impl Reloading {
    fn new(source: ReloadSource, cfg: &Resolved, registry: &mut Registry) -> Self {
        let r = Self {
            source,
            running: cfg.restart_only(),
            pending: Default::default(),
            reloads: Default::default(),
        };
        registry.register(
            "limes_config_restart_pending",
            "Restart-only settings the last reload found changed in the file and left as they run",
            r.pending.clone(),
        );
        registry.register(
            "limes_config_reloads",
            "Reloads of the configuration, by result (ok, failed)",
            r.reloads.clone(),
        );
        limes_actors::metrics::at_zero(
            &r.reloads,
            ["ok", "failed"].map(|result| ResultLabel { result }),
        );
        r
    }

    fn reload(&self, proxy: &Proxy) -> anyhow::Result<serde_json::Value> {
        let outcome = reload(proxy, self);
        let result = if outcome.is_ok() { "ok" } else { "failed" };
        self.reloads.get_or_create(&ResultLabel { result }).inc();
        outcome
    }
}

/// Runs a node until it is told to stop; returns once it has drained. The configuration
/// is read again on SIGHUP and `core.reload`.
pub async fn run(cfg: Resolved, source: ReloadSource) -> anyhow::Result<()> {
    let _lock = lock_state_dir(&cfg.state_dir)?;
    let secret = node_secret(&cfg)?;
    let mut registry = Registry::default();
    let log = source.log.clone();
    let reloading = Reloading::new(source, &cfg, &mut registry);
    let metrics = Metrics::new(&mut registry);
    registry.register_collector(Box::new(crate::exposition::ProcessCollector));
    crate::exposition::register_build_info(&mut registry);

    let mut udp_sockets = Vec::new();
    let mut tcp_listeners = Vec::new();
    for l in &cfg.listens {
        match l.transport {
            Transport::Udp => udp_sockets.push(
                udp::bind(l.addr, cfg.transport.udp_buffer)
                    .with_context(|| format!("binding {l}"))?,
            ),
            Transport::Tcp => tcp_listeners.push(
                tokio::net::TcpListener::bind(l.addr)
                    .await
                    .with_context(|| format!("binding {l}"))?,
            ),
        }
    }
    // Port 0 in a listen address is resolved now, so Via and Record-Route name the real one.
    let mut listens = Vec::new();
    for s in &udp_sockets {
        listens.push(limes_actors::settings::Listen {
            transport: Transport::Udp,
            addr: s.local_addr()?,
        });
    }
    for t in &tcp_listeners {
        listens.push(limes_actors::settings::Listen {
            transport: Transport::Tcp,
            addr: t.local_addr()?,
        });
    }
    let edge = open_state(&cfg, &listens, &secret, &mut registry)?;
    let sockets_for_send = udp_sockets
        .iter()
        .map(|s| s.try_clone())
        .collect::<std::io::Result<Vec<_>>>()?;
    let tcp_addrs = listens
        .iter()
        .filter(|l| l.transport == Transport::Tcp)
        .map(|l| l.addr)
        .collect();
    let out = Outbound::new(
        sockets_for_send,
        tcp_addrs,
        cfg.transport.clone(),
        cfg.proxy.limits,
        metrics.clone(),
        tokio::runtime::Handle::current(),
    )?;
    let local = Local::new(listens.clone(), cfg.proxy.aliases.clone(), &secret)
        .with_advertised(edge.trunks.advertised.clone());
    let dialogs = Arc::new(
        Dialogs::open(
            cfg.dialog.clone(),
            &cfg.name,
            DialogMetrics::register(&mut registry),
            Some(&cfg.state_dir),
        )
        .context("opening the dialog journal and the CDR file")?,
    );
    Dialogs::register_census(&mut registry, dialogs.clone());
    let proxy = Proxy::new(
        cfg.proxy.clone(),
        local,
        out.clone(),
        metrics,
        FloodGuard::new(&cfg.flood),
        edge,
        dialogs.clone(),
    );
    Metrics::register_census(&mut registry, proxy.clone());
    let ender: Arc<dyn Ender> = proxy.clone();
    let (supervisor, dialogs_thread) = DialogSupervisor::start_on_own_thread(SupervisorArgs {
        dialogs: dialogs.clone(),
        ender,
    })
    .context("starting the dialog supervisor")?;
    proxy.dialogs.set_supervisor(supervisor.clone());
    let inbound: Arc<dyn Inbound> = proxy.clone();
    out.set_inbound(inbound.clone());

    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    let mut crews = Vec::new();
    for s in &udp_sockets {
        let (workers, crew) = udp::spawn_workers(
            s,
            cfg.transport.udp_workers,
            inbound.clone(),
            proxy.metrics_handle(),
            stop.clone(),
        )?;
        threads.extend(workers);
        crews.push(crew);
    }
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    for l in tcp_listeners {
        tokio::spawn(tcp::listen(
            out.clone(),
            l,
            inbound.clone(),
            shutdown_rx.clone(),
        ));
    }
    threads.push(spawn_timer_thread(
        proxy.clone(),
        crews,
        stop.clone(),
        cfg.flood.evict_every,
    )?);
    threads.push(spawn_state_thread(proxy.clone(), stop.clone())?);
    if let Some(collector) = proxy.dialogs.collector() {
        threads.push(limes_actors::dialogs::collector::spawn(
            collector,
            stop.clone(),
        )?);
    }
    let reload: Arc<Reload> = {
        let proxy = proxy.clone();
        Arc::new(move || reloading.reload(&proxy))
    };

    let sip_addresses: Vec<String> = listens.iter().map(ToString::to_string).collect();
    let etcd = match cfg.cluster.clone() {
        Some(settings) => Some(
            crate::cluster::join(settings, &proxy, &sip_addresses, &cfg.admin.to_string())
                .await
                .context("joining the cluster")?,
        ),
        None => None,
    };
    let cluster: Arc<dyn limes_cluster::ClusterStore> = match &etcd {
        Some(e) => e.clone(),
        None => Arc::new(limes_cluster::Embedded::new(
            &cfg.name,
            serde_json::json!({ "sip": sip_addresses, "admin": cfg.admin.to_string() }),
        )),
    };
    crate::cluster::register_metrics(&mut registry, cluster.clone());
    let started_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let state = Arc::new(AdminState {
        node: Node {
            name: cfg.name.clone(),
            proxy: proxy.clone(),
            started: Instant::now(),
            started_unix,
            listens: sip_addresses,
            state_dir: cfg.state_dir.display().to_string(),
            reload: reload.clone(),
            cluster: cluster.clone(),
            log,
            stats_baseline: Default::default(),
        },
        registry,
        ready: AtomicBool::new(false),
        token: cfg.admin_token.clone(),
    });
    let server = admin::serve(state.clone(), cfg.admin)
        .with_context(|| format!("binding admin {}", cfg.admin))?;
    let server_handle = server.handle();
    tokio::spawn(server);
    state.ready.store(true, Ordering::Relaxed);
    info!(
        name = %cfg.name,
        listen = %listens.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
        admin = %cfg.admin,
        next_hops = cfg.proxy.next_hops.len(),
        "limes running"
    );

    wait_for_signal(&*reload).await;
    info!(
        pending = proxy.pending(),
        "stopping: new INVITEs refused, draining"
    );
    proxy.drain();
    // Calls up go on until their own BYEs or the drain time, then get the node's BYEs.
    let deadline = Instant::now() + cfg.drain;
    while (proxy.pending() > 0 || !proxy.dialogs.is_empty()) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if !proxy.dialogs.is_empty() {
        let n = proxy.dialogs.end_all(EndedBy::Shutdown).await;
        warn!(calls = n, "drain time reached, calls ended with BYE");
        let bye_deadline = Instant::now() + Duration::from_secs(2);
        while (proxy.pending() > 0 || !proxy.dialogs.is_empty()) && Instant::now() < bye_deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    if proxy.pending() > 0 {
        warn!(
            pending = proxy.pending(),
            "drain bound reached, stopping with transactions pending"
        );
    }
    if let Some(c) = &etcd {
        // The others see this node leave now rather than when its lease ends.
        c.leave().await;
    }
    stop.store(true, Ordering::Relaxed);
    supervisor.stop(None);
    threads.push(dialogs_thread);
    let _ = shutdown_tx.send(true);
    server_handle.stop(false).await;
    for t in threads {
        let _ = t.join();
    }
    info!("limes stopped");
    Ok(())
}

/// Fires transaction timers every 10 ms and housekeeping on its own period, and watches
/// that each UDP socket's receiving worker moves on ([`udp::Crew::watch`]).
fn spawn_timer_thread(
    proxy: Arc<Proxy>,
    crews: Vec<Arc<udp::Crew>>,
    stop: Arc<AtomicBool>,
    housekeeping: Duration,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("timers".into())
        .spawn(move || {
            let metrics = proxy.metrics_handle();
            let tick = Duration::from_millis(10);
            let mut last_housekeeping = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(tick);
                let now = Instant::now();
                proxy.run_timers(now);
                for crew in &crews {
                    crew.watch(&metrics);
                }
                if now.duration_since(last_housekeeping) >= housekeeping {
                    proxy.housekeeping();
                    last_housekeeping = now;
                }
            }
        })
}

/// Re-reads the configuration file (none: the defaults) and applies what changes live:
/// the tables, the registrar's rules and domains, the authentication policy, routing,
/// dialogs, the next hops and the log level. The restart-only settings
/// ([`Resolved::restart_only`]) that differ from the running ones are named in the log,
/// the answer (`not_applied`) and `limes_config_restart_pending`.
pub type Reload = dyn Fn() -> anyhow::Result<serde_json::Value> + Send + Sync;

fn reload(proxy: &Proxy, reloading: &Reloading) -> anyhow::Result<serde_json::Value> {
    let source = &reloading.source;
    let path = source.path.as_deref();
    let mut cfg = Config::load_or_default(path)?;
    source.overrides.apply(&mut cfg);
    let r = cfg.resolve()?;
    let not_applied: Vec<&str> = r
        .restart_only()
        .iter()
        .zip(&reloading.running)
        .filter(|((_, new), (_, old))| new != old)
        .map(|((name, _), _)| *name)
        .collect();
    let edge = proxy.edge();
    let counts = serde_json::json!({
        "subscribers": r.tables.subscribers.len(),
        "trusted": r.tables.trusted.len(),
        "address": r.tables.addresses.len(),
        "next_hops": r.proxy.next_hops.len(),
    });
    edge.tables.set_config_subscribers(r.tables.subscribers)?;
    edge.tables
        .set_config_peers(r.tables.trusted, r.tables.addresses)?;
    edge.location.set_rules(r.rules);
    *edge.domains.write() = r.domains;
    edge.use_domain
        .store(r.use_domain, std::sync::atomic::Ordering::Relaxed);
    edge.auth.set_settings(r.auth);
    edge.set_routing(|s| {
        s.config_trunks = r.trunks;
        s.config_rules = r.routes;
        s.group_names = r.group_names;
    })
    .map_err(anyhow::Error::msg)?;
    proxy.set_next_hops(r.proxy.next_hops);
    proxy.dialogs.set_settings(r.dialog);
    let level = source.log.level();
    if r.log.level != level {
        source.log.set(&r.log.level)?;
        info!(
            "log level changed from {level} to {} by the reload",
            r.log.level
        );
    }
    let file = path.map_or_else(|| "(defaults)".to_owned(), |p| p.display().to_string());
    reloading.pending.set(not_applied.len() as i64);
    if not_applied.is_empty() {
        info!("configuration reloaded from {file}");
    } else {
        warn!(
            "configuration reloaded from {file}; not applied until a restart: {}",
            not_applied.join(", ")
        );
    }
    Ok(serde_json::json!({
        "reloaded": path.map(|p| p.display().to_string()),
        "config_entries": counts,
        "not_applied": not_applied,
    }))
}

/// The node secret: configured (`node.secret`, `LIMES_NODE_SECRET`), else the one kept in
/// the state directory, generated there on first start.
fn node_secret(cfg: &Resolved) -> anyhow::Result<NodeSecret> {
    if let Some(text) = &cfg.secret {
        info!("node secret configured");
        return Ok(NodeSecret::from_text(text));
    }
    let (secret, source) = NodeSecret::load_or_create(&cfg.state_dir)?;
    match source {
        SecretSource::Generated => info!(
            dir = %cfg.state_dir.display(),
            "node secret generated and kept in the state directory"
        ),
        _ => info!(dir = %cfg.state_dir.display(), "node secret read from the state directory"),
    }
    Ok(secret)
}

/// Opens the state directory's journals and builds the registrar, tables and auth.
fn open_state(
    cfg: &Resolved,
    listens: &[limes_actors::settings::Listen],
    secret: &NodeSecret,
    registry: &mut Registry,
) -> anyhow::Result<Edge> {
    let tables_journal = Journal::open_map(&cfg.state_dir, "tables")
        .with_context(|| format!("opening the tables journal in {}", cfg.state_dir.display()))?;
    let tables = Arc::new(Tables::new(
        Some((tables_journal.0, tables_journal.1.entries)),
        cfg.max_subscribers,
    )?);
    tables.set_config_subscribers(cfg.tables.subscribers.clone())?;
    tables.set_config_peers(cfg.tables.trusted.clone(), cfg.tables.addresses.clone())?;
    let location = Location::open(
        Some(&cfg.state_dir),
        cfg.rules,
        cfg.max_aors,
        unix_now(),
        LocationMetrics::register(registry),
    )
    .with_context(|| {
        format!(
            "opening the location journal in {}",
            cfg.state_dir.display()
        )
    })?;
    let auth = Auth::new(cfg.auth.clone(), AuthMetrics::register(registry), secret);
    let transports: Vec<Transport> = listens.iter().map(|l| l.transport).collect();
    let dns = Dns::new(
        cfg.dns.clone(),
        &transports,
        tokio::runtime::Handle::current(),
        DnsMetrics::register(registry),
    );
    let edge = Edge::new(
        tables.clone(),
        Arc::new(auth),
        Arc::new(location),
        cfg.domains.clone(),
        cfg.use_domain,
        RoutingMetrics::register(registry),
        Arc::new(dns),
    );
    edge.trunks.set_listens(listens.to_vec());
    edge.set_routing(|s| {
        s.config_trunks = cfg.trunks.clone();
        s.config_rules = cfg.routes.clone();
        s.group_names = cfg.group_names.clone();
    })
    .map_err(anyhow::Error::msg)?;
    edge.restore_api_routing();
    Tables::register_census(registry, tables);
    Trunks::register_census(registry, edge.trunks.clone());
    Ok(edge)
}

/// Journals and housekeeping of the state, off the message and timer paths: every second
/// the location journal is flushed (and compacted when it has grown), blocked sources are
/// reviewed, trunk destinations due a health check are pinged; every ten seconds expired
/// bindings are swept.
fn spawn_state_thread(
    proxy: Arc<Proxy>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("state".into())
        .spawn(move || {
            let mut tick = 0u64;
            let mut health = HealthChecks::new();
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_secs(1));
                tick += 1;
                health.tick(&proxy, Instant::now());
                let edge = proxy.edge();
                edge.auth.housekeeping(Instant::now());
                if tick.is_multiple_of(10) {
                    edge.location.expire(unix_now());
                }
                edge.location.maintain();
                edge.tables.compact_if_needed();
                proxy.dialogs.flush();
                if tick.is_multiple_of(60) {
                    proxy.dialogs.profiles.sweep();
                }
            }
            // A last flush on the way out.
            proxy.edge().location.maintain();
            proxy.dialogs.flush();
        })
}

async fn wait_for_signal(reload: &Reload) {
    use tokio::signal::unix::{signal, SignalKind};
    let (mut term, mut hup) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) {
        (Ok(t), Ok(h)) => (t, h),
        (Err(e), _) | (_, Err(e)) => {
            warn!(error = %e, "cannot listen for SIGTERM/SIGHUP");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    loop {
        tokio::select! {
            _ = term.recv() => return,
            _ = tokio::signal::ctrl_c() => return,
            _ = hup.recv() => {
                if let Err(e) = reload() {
                    warn!(error = %format!("{e:#}"), "reload on SIGHUP failed; the running configuration stays");
                }
            }
        }
    }
}
