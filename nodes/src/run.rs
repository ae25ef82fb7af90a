//! Wiring: binds the sockets, builds the proxy, starts the UDP workers, TCP listeners,
//! timer thread and admin server, then waits for SIGTERM/SIGINT and drains.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use limes_actors::flood::FloodGuard;
use limes_actors::metrics::Metrics;
use limes_actors::proxy::local::Local;
use limes_actors::proxy::Proxy;
use limes_actors::settings::Transport;
use limes_actors::transport::{Inbound, Outbound};
use limes_actors::{tcp, udp};
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::admin::{self, AdminState};
use crate::config::Resolved;
use crate::rpc::Node;

/// Runs a node until it is told to stop; returns once it has drained.
pub async fn run(cfg: Resolved) -> anyhow::Result<()> {
    if let Err(e) = std::fs::create_dir_all(&cfg.state_dir) {
        warn!(dir = %cfg.state_dir.display(), error = %e, "state directory unavailable");
    }
    let mut registry = Registry::default();
    let metrics = Metrics::new(&mut registry);

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
    let local = Local::new(listens.clone(), cfg.proxy.aliases.clone());
    let proxy = Proxy::new(
        cfg.proxy.clone(),
        local,
        out.clone(),
        metrics,
        FloodGuard::new(&cfg.flood),
    );
    Metrics::register_census(&mut registry, proxy.clone());
    let inbound: Arc<dyn Inbound> = proxy.clone();
    out.set_inbound(inbound.clone());

    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for s in &udp_sockets {
        threads.extend(udp::spawn_workers(
            s,
            cfg.transport.udp_workers,
            inbound.clone(),
            stop.clone(),
        )?);
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
        stop.clone(),
        cfg.flood.evict_every,
    )?);

    let started_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let state = Arc::new(AdminState {
        node: Node {
            name: cfg.name.clone(),
            proxy: proxy.clone(),
            started: Instant::now(),
            started_unix,
            listens: listens.iter().map(ToString::to_string).collect(),
            state_dir: cfg.state_dir.display().to_string(),
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
        listen = ?listens.iter().map(ToString::to_string).collect::<Vec<_>>(),
        admin = %cfg.admin,
        next_hops = cfg.proxy.next_hops.len(),
        "limes running"
    );

    wait_for_signal().await;
    info!(
        pending = proxy.pending(),
        "stopping: new INVITEs refused, draining"
    );
    proxy.drain();
    let deadline = Instant::now() + cfg.drain;
    while proxy.pending() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if proxy.pending() > 0 {
        warn!(
            pending = proxy.pending(),
            "drain bound reached, stopping with transactions pending"
        );
    }
    stop.store(true, Ordering::Relaxed);
    let _ = shutdown_tx.send(true);
    server_handle.stop(false).await;
    for t in threads {
        let _ = t.join();
    }
    info!("limes stopped");
    Ok(())
}

/// Fires transaction timers every 10 ms and housekeeping on its own period.
fn spawn_timer_thread(
    proxy: Arc<Proxy>,
    stop: Arc<AtomicBool>,
    housekeeping: Duration,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("timers".into())
        .spawn(move || {
            let tick = Duration::from_millis(10);
            let mut last_housekeeping = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(tick);
                let now = Instant::now();
                proxy.run_timers(now);
                if now.duration_since(last_housekeeping) >= housekeeping {
                    proxy.housekeeping();
                    last_housekeeping = now;
                }
            }
        })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, "cannot listen for SIGTERM");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = tokio::signal::ctrl_c() => {},
    }
}
