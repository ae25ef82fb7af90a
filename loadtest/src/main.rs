//! `limes-load`: a SIP load generator built on limes-sip, for sizing SBCs by calls per
//! second and registrations per second.
//!
//! - `limes-load uas --listen ADDR`: answers calls (optional 180, 200 after a delay, or a
//!   failure code), BYE, CANCEL, OPTIONS, and REGISTER (200, or 401 with digest checking).
//! - `limes-load uac --target URI --proxy ADDR --rate N --duration S`: places full calls
//!   at an open-loop rate; `--ramp` steps the rate until a step misses its bound.
//! - `limes-load register --registrar ADDR --users FILE --rate N --duration S`.
//!
//! Every mode uses `--threads` threads with their own sockets; results are counts by
//! outcome and HDR histograms of setup time and post-dial delay, as text or `--json`; the
//! exit code is non-zero when failures pass `--max-fail-pct` (default 0.1).
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

mod batch;
mod engine;
mod register;
mod stats;
mod uac;
mod uas;
mod users;

use std::io::IsTerminal;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};

use crate::engine::{Progress, Role};
use crate::stats::{Report, Stats};

/// Every message and call state is a short-lived allocation: glibc's allocator was a fifth
/// of the generator's time, mimalloc's thread-local free lists cost a fraction of that.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "limes-load",
    version,
    about = "SIP load generator (UAC, UAS, registrations)"
)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Args, Clone)]
struct Common {
    /// Threads, each with its own sockets and event loop.
    #[arg(long, default_value_t = default_threads())]
    threads: usize,
    /// UDP sockets in all (spread over the threads): many source ports.
    #[arg(long)]
    sockets: Option<usize>,
    /// Local address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    local: IpAddr,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
    /// Fail (exit 1) when failed / attempted passes this percentage.
    #[arg(long, default_value_t = 0.1)]
    max_fail_pct: f64,
    /// Drop this share of received packets, in percent (loss simulation).
    #[arg(long, default_value_t = 0.0)]
    drop_pct: f64,
    /// Transport: udp, or tcp (one connection per socket, Content-Length framing).
    #[arg(long, default_value = "udp", value_parser = ["udp", "tcp"])]
    transport: String,
    /// Users file (`user,password[,domain]` per line) for digest authentication.
    #[arg(long)]
    users: Option<PathBuf>,
    /// Domain for users without one, and the UAS realm.
    #[arg(long, default_value = "bench.local")]
    domain: String,
}

#[derive(Subcommand)]
enum Mode {
    /// Answer calls and registrations.
    Uas {
        #[arg(long)]
        listen: SocketAddr,
        /// Send 180 Ringing before answering.
        #[arg(long)]
        ring: bool,
        /// Answer after this many milliseconds.
        #[arg(long, default_value_t = 0)]
        answer_delay_ms: u64,
        /// Answer every INVITE with this status instead of 200.
        #[arg(long)]
        fail_code: Option<u16>,
        /// Stop after this many seconds (default: until interrupted).
        #[arg(long)]
        duration: Option<f64>,
        /// With --users: challenge INVITEs with 407 and check the answer.
        #[arg(long)]
        challenge_invites: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Place calls.
    Uac {
        /// Request-URI of the calls, e.g. sip:service@127.0.0.1:5080.
        #[arg(long)]
        target: String,
        /// Address to send to (a proxy, or the UAS).
        #[arg(long)]
        proxy: SocketAddr,
        /// New calls per second.
        #[arg(long, default_value_t = 100.0)]
        rate: f64,
        /// Seconds of new calls (per ramp step).
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// Call hold time in milliseconds.
        #[arg(long, default_value_t = 1000)]
        call_length: u64,
        /// Calls in flight at most; new calls past it are counted as throttled.
        #[arg(long, default_value_t = 100_000)]
        max_concurrent: usize,
        /// Rates to step through (comma-separated); stops at the first failing step.
        #[arg(long, value_delimiter = ',')]
        ramp: Vec<f64>,
        /// A call whose INVITE has no final response after this many ms has failed.
        #[arg(long, default_value_t = 5000)]
        setup_timeout_ms: u64,
        #[command(flatten)]
        common: Common,
    },
    /// Register users with digest authentication.
    Register {
        #[arg(long)]
        registrar: SocketAddr,
        #[arg(long, default_value_t = 100.0)]
        rate: f64,
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        #[arg(long, default_value_t = 3600)]
        expires: u32,
        #[arg(long, value_delimiter = ',')]
        ramp: Vec<f64>,
        /// Answer the challenge for this algorithm (MD5, SHA-256) when the registrar
        /// offers several; default: the first offered.
        #[arg(long)]
        algorithm: Option<String>,
        #[command(flatten)]
        common: Common,
    },
}

fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Where a thread's traffic goes: bound UDP sockets, TCP connections to `peer`, or a TCP
/// listener on `listen` (UAS).
#[derive(Clone, Copy)]
enum Endpoints {
    Client { peer: SocketAddr },
    Server { listen: SocketAddr },
}

fn endpoints(
    common: &Common,
    which: Endpoints,
    count: usize,
) -> anyhow::Result<(Vec<engine::Conn>, Option<mio::net::TcpListener>)> {
    let tcp = common.transport == "tcp";
    Ok(match (which, tcp) {
        (Endpoints::Client { .. }, false) => {
            (engine::bind(SocketAddr::new(common.local, 0), count)?, None)
        }
        (Endpoints::Client { peer }, true) => (
            engine::connect(peer, count).with_context(|| format!("connecting to {peer}"))?,
            None,
        ),
        (Endpoints::Server { listen }, false) => (
            engine::bind(listen, count).with_context(|| format!("binding {listen}"))?,
            None,
        ),
        (Endpoints::Server { listen }, true) => (
            Vec::new(),
            Some(engine::listen_tcp(listen).with_context(|| format!("listening on {listen}"))?),
        ),
    })
}

/// Runs one role per thread and merges what they measured.
fn run_threads<R, F>(common: &Common, which: Endpoints, make: F) -> anyhow::Result<(Stats, f64)>
where
    R: Role + 'static,
    F: Fn(usize, Instant) -> R,
{
    let threads = common.threads.max(1);
    let sockets = common.sockets.unwrap_or(threads).max(threads);
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut handles = Vec::new();
    let mut progress = Vec::new();
    for t in 0..threads {
        let count = sockets / threads + usize::from(t < sockets % threads);
        let (conns, listener) = endpoints(common, which, count)?;
        let role = make(t, started);
        let p = Arc::new(Progress::default());
        progress.push(p.clone());
        let stop = stop.clone();
        let drop = (common.drop_pct * 10.0).round() as u32;
        handles.push(std::thread::spawn(move || {
            engine::run(role, conns, listener, drop, 0x9e37_79b9 + t as u64, stop, p)
        }));
    }
    let tty = std::io::stderr().is_terminal();
    let mut last = Instant::now();
    while handles.iter().any(|h| !h.is_finished()) {
        std::thread::sleep(Duration::from_millis(50));
        if tty && last.elapsed() >= Duration::from_secs(1) {
            last = Instant::now();
            let sum = |f: fn(&Progress) -> u64| progress.iter().map(|p| f(p)).sum::<u64>();
            eprint!(
                "\r{:6.1}s attempted {} answered {} failed {} retransmissions {}   ",
                started.elapsed().as_secs_f64(),
                sum(|p| p.attempted.load(Ordering::Relaxed)),
                sum(|p| p.answered.load(Ordering::Relaxed)),
                sum(|p| p.failed.load(Ordering::Relaxed)),
                sum(|p| p.retransmissions.load(Ordering::Relaxed)),
            );
        }
    }
    if tty {
        eprintln!();
    }
    let mut total = Stats::default();
    for h in handles {
        let s = h
            .join()
            .map_err(|_| anyhow::anyhow!("a load thread panicked"))??;
        total.merge(&s);
    }
    Ok((total, started.elapsed().as_secs_f64()))
}

fn users(common: &Common) -> anyhow::Result<Vec<users::User>> {
    match &common.users {
        Some(p) => users::load(p, &common.domain),
        None => Ok(Vec::new()),
    }
}

/// Prints one result; `true` when it is within the failure bound and at least 95 % of the
/// target rate was offered (below that the generator, not the system under test, was the
/// limit: an underrun).
fn emit(what: &str, report: &Report, target_rate: f64, common: &Common) -> bool {
    if common.json {
        println!("{}", serde_json::to_string(report).unwrap_or_default());
    } else {
        print!("{}", report.text(what));
    }
    let underrun = report.achieved_rate < 0.95 * target_rate;
    if underrun {
        eprintln!(
            "limes-load: underrun: offered {:.0}/s of {target_rate:.0}/s",
            report.achieved_rate
        );
    }
    report.failure_pct <= common.max_fail_pct && report.attempted > 0 && !underrun
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("limes-load: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<bool> {
    match cli.mode {
        Mode::Uas {
            listen,
            ring,
            answer_delay_ms,
            fail_code,
            duration,
            challenge_invites,
            common,
        } => {
            let users = users(&common)?;
            let realm = common.domain.clone();
            let common = Common {
                sockets: Some(common.threads),
                ..common
            };
            let (stats, elapsed) = run_threads(&common, Endpoints::Server { listen }, |_, now| {
                uas::Uas::new(
                    uas::UasConfig {
                        ring,
                        answer_after: Duration::from_millis(answer_delay_ms),
                        fail_code,
                        users: users.clone(),
                        challenge_invites,
                        realm: realm.clone(),
                        duration: duration.map(Duration::from_secs_f64),
                        reliable: common.transport == "tcp",
                    },
                    now,
                )
            })?;
            let report = stats.report(elapsed);
            if common.json {
                println!("{}", serde_json::to_string(&report).unwrap_or_default());
            } else {
                print!("{}", report.text("uas"));
            }
            Ok(true)
        }
        Mode::Uac {
            target,
            proxy,
            rate,
            duration,
            call_length,
            max_concurrent,
            ramp,
            setup_timeout_ms,
            common,
        } => {
            let users = users(&common)?;
            let steps = if ramp.is_empty() { vec![rate] } else { ramp };
            let mut best = None;
            for step in steps {
                let threads = common.threads.max(1);
                let (stats, elapsed) =
                    run_threads(&common, Endpoints::Client { peer: proxy }, |t, now| {
                        uac::Uac::new(
                            uac::UacConfig {
                                target: target.clone(),
                                proxy,
                                rate: step / threads as f64,
                                duration: Duration::from_secs_f64(duration),
                                call_length: Duration::from_millis(call_length),
                                max_concurrent: max_concurrent / threads,
                                users: users.clone(),
                                transport_token: if common.transport == "tcp" {
                                    "TCP"
                                } else {
                                    "UDP"
                                },
                                setup_timeout: Duration::from_millis(setup_timeout_ms),
                                thread: t,
                            },
                            now,
                        )
                    })?;
                let mut report = stats.report(elapsed);
                report.achieved_rate = report.attempted as f64 / duration;
                if !emit(&format!("uac {step}/s"), &report, step, &common) {
                    if best.is_some() {
                        eprintln!(
                            "limes-load: highest passing rate {:?}/s",
                            best.unwrap_or(0.0)
                        );
                    }
                    return Ok(false);
                }
                best = Some(step);
            }
            Ok(true)
        }
        Mode::Register {
            registrar,
            rate,
            duration,
            expires,
            ramp,
            algorithm,
            common,
        } => {
            let users = users(&common)?;
            if users.is_empty() {
                bail!("register needs --users FILE");
            }
            let algorithm = algorithm
                .map(|a| {
                    limes_sip::digest::Algorithm::parse(&a)
                        .ok_or_else(|| anyhow::anyhow!("--algorithm {a:?}: MD5 or SHA-256"))
                })
                .transpose()?;
            let steps = if ramp.is_empty() { vec![rate] } else { ramp };
            for step in steps {
                let threads = common.threads.max(1);
                let (stats, elapsed) =
                    run_threads(&common, Endpoints::Client { peer: registrar }, |t, now| {
                        register::Register::new(
                            register::RegisterConfig {
                                registrar,
                                rate: step / threads as f64,
                                duration: Duration::from_secs_f64(duration),
                                expires,
                                users: users.clone(),
                                thread: t,
                                threads,
                                transport_token: if common.transport == "tcp" {
                                    "TCP"
                                } else {
                                    "UDP"
                                },
                                algorithm,
                            },
                            now,
                        )
                    })?;
                let mut report = stats.report(elapsed);
                report.achieved_rate = report.attempted as f64 / duration;
                if !emit(&format!("register {step}/s"), &report, step, &common) {
                    return Ok(false);
                }
            }
            Ok(true)
        }
    }
}
