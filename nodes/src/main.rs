//! `limes`: the Limes SIP session border controller node.
//!
//! - `limes run [--config FILE] [--listen URI]... [--admin ADDR] [--next-hop URI]...
//!   [--state-dir DIR]` runs a node (with no arguments: UDP and TCP on 127.0.0.1:5060,
//!   admin API on 127.0.0.1:8080).
//! - `limes check-config FILE` validates a configuration file.
//! - `limes import dbtext DIR [--config FILE] [--state-dir DIR | --etcd URL,...]` imports
//!   Kamailio db_text tables into the state directory, or into etcd for a running cluster.
//! - `limes ctl [--admin ADDR] [--json] METHOD [ARG...]` calls a JSON-RPC method.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

mod admin;
mod cluster;
mod config;
mod ctl;
mod dbtext;
mod exposition;
mod logging;
mod rpc;
mod rpc_dialog;
mod rpc_params;
mod rpc_routing;
mod rpc_state;
mod rpc_stats;
mod run;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "limes", version, about = "Limes SIP session border controller")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node.
    Run {
        /// TOML configuration file (every key optional).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Listening socket, e.g. `udp:127.0.0.1:5060` or `tcp:[::1]:5060` (repeatable;
        /// replaces sip.listen).
        #[arg(long)]
        listen: Vec<String>,
        /// Admin API address (replaces admin.listen).
        #[arg(long)]
        admin: Option<String>,
        /// Next hop for initial requests, e.g. sip:192.0.2.10:5060 (repeatable: parallel
        /// fork; replaces sip.next_hop).
        #[arg(long = "next-hop")]
        next_hop: Vec<String>,
        /// State directory (replaces node.state_dir).
        #[arg(long = "state-dir")]
        state_dir: Option<PathBuf>,
        /// A trusted peer CIDR, added to the configuration file's (repeatable).
        #[arg(long)]
        trusted: Vec<String>,
        /// This node's name in logs and in the cluster (replaces node.name).
        #[arg(long = "node-name", env = "LIMES_NODE_NAME")]
        node_name: Option<String>,
        /// etcd client URLs, comma separated or repeated (replaces cluster.etcd): the
        /// nodes share their state through them.
        #[arg(long, env = "LIMES_ETCD", value_delimiter = ',')]
        etcd: Vec<String>,
        /// The admin API's bearer token (replaces admin.token), for containers: set it from
        /// a secret in the environment rather than on the command line.
        #[arg(
            long = "admin-token",
            env = "LIMES_ADMIN_TOKEN",
            hide_env_values = true
        )]
        admin_token: Option<String>,
        /// Start even when a journal in the state directory is damaged in the middle:
        /// with what precedes the damage, the rest set aside as FILE.corrupt (without
        /// it, the node refuses to start and names the file and byte offset).
        #[arg(long = "recover-journal")]
        recover_journal: bool,
    },
    /// Check a configuration file and print what it resolves to.
    CheckConfig { file: PathBuf },
    /// Imports tables from another system into the state directory (node stopped), or
    /// into etcd for a running cluster.
    Import {
        #[command(subcommand)]
        what: Import,
    },
    /// Call a JSON-RPC method on a running node (ARGs: positional parameters; numbers
    /// and true/false keep their type, s:TEXT forces a string).
    Ctl {
        /// Admin API address (default: the --config file's admin.listen, else
        /// 127.0.0.1:8080).
        #[arg(long, env = "LIMES_ADMIN")]
        admin: Option<String>,
        /// Bearer token, if the node has one (default: the --config file's admin.token).
        #[arg(long, env = "LIMES_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// The node's configuration file: its admin address and token.
        #[arg(long, env = "LIMES_CONFIG")]
        config: Option<PathBuf>,
        /// Print the raw JSON result (and errors as JSON).
        #[arg(long)]
        json: bool,
        method: String,
        #[arg(allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(Subcommand)]
enum Import {
    /// Kamailio db_text tables: subscriber, trusted, address, location.
    Dbtext {
        dir: PathBuf,
        #[arg(long)]
        config: Option<PathBuf>,
        /// The node's state directory (node stopped); not with etcd.
        #[arg(long = "state-dir")]
        state_dir: Option<PathBuf>,
        /// etcd client URLs (or cluster.etcd in the file): the tables go to etcd and
        /// every running node takes them.
        #[arg(long, env = "LIMES_ETCD", value_delimiter = ',')]
        etcd: Vec<String>,
        /// Import the good rows when some are bad (each bad one is still listed, with
        /// its table, line and reason); without it a bad row imports nothing and the
        /// command fails.
        #[arg(long = "skip-bad-rows")]
        skip_bad_rows: bool,
    },
}

fn main() -> ExitCode {
    use clap::{CommandFactory, FromArgMatches};
    let command = Cli::command().mut_subcommand("ctl", |c| c.after_help(ctl::methods_help()));
    let cli = match Cli::from_arg_matches(&command.get_matches()) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    match cli.command {
        Command::Run {
            config,
            listen,
            admin,
            next_hop,
            state_dir,
            trusted,
            node_name,
            etcd,
            admin_token,
            recover_journal,
        } => {
            limes_cluster::journal::recover_damaged(recover_journal);
            let overrides = config::Overrides {
                node_name,
                etcd,
                admin_token,
                listen,
                admin,
                next_hop,
                state_dir,
                trusted,
            };
            let mut cfg = match config::Config::load_or_default(config.as_deref()) {
                Ok(c) => c,
                Err(e) => return fail(&e),
            };
            overrides.apply(&mut cfg);
            let resolved = match cfg.resolve() {
                Ok(r) => r,
                Err(e) => return fail(&e),
            };
            let log = match logging::init(
                &resolved.log.level,
                resolved.log.format == "json",
                &resolved.name,
            ) {
                Ok(l) => l,
                Err(e) => return fail(&e),
            };
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => return fail(&e.into()),
            };
            let reload = run::ReloadSource {
                path: config,
                overrides,
                log,
            };
            match runtime.block_on(run::run(resolved, reload)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&e),
            }
        }
        Command::Import {
            what:
                Import::Dbtext {
                    dir,
                    config,
                    state_dir,
                    etcd,
                    skip_bad_rows,
                },
        } => {
            let mut cfg = match config::Config::load_or_default(config.as_deref()) {
                Ok(c) => c,
                Err(e) => return fail(&e),
            };
            if let Some(d) = state_dir {
                cfg.node.state_dir = d;
            }
            config::Overrides {
                etcd,
                ..Default::default()
            }
            .apply(&mut cfg);
            let now = limes_actors::proxy::edge::unix_now();
            let rules = (
                cfg.registrar.use_domain,
                cfg.registrar.max_expires_s,
                skip_bad_rows,
            );
            let result = match cfg.cluster.resolve(&cfg.node.name) {
                Ok(Some(etcd)) => dbtext::import_shared(&dir, etcd, rules, now),
                Ok(None) => run::lock_state_dir(&cfg.node.state_dir)
                    .and_then(|_lock| dbtext::import(&dir, &cfg.node.state_dir, rules, now, None)),
                Err(e) => Err(e),
            };
            match result {
                Ok(report) => {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&report).unwrap_or_default()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
        Command::CheckConfig { file } => {
            match config::Config::load(&file).and_then(|c| c.resolve()) {
                Ok(r) => {
                    print!("{}: ok\n{}", file.display(), config::summary(&r));
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
        Command::Ctl {
            admin,
            token,
            config,
            json,
            method,
            args,
        } => {
            use std::io::Write;
            let target = match ctl::Target::resolve(admin, token, config.as_deref()) {
                Ok(t) => t,
                Err(e) => return fail(&e),
            };
            let (text, code) = match ctl::call(&target, &method, &args) {
                Ok(v) if json => (
                    format!("{}\n", serde_json::to_string_pretty(&v).unwrap_or_default()),
                    ExitCode::SUCCESS,
                ),
                Ok(v) => (ctl::table(&v), ExitCode::SUCCESS),
                Err(e) if json => (
                    format!(
                        "{}\n",
                        serde_json::to_string_pretty(&e.to_json()).unwrap_or_default()
                    ),
                    ExitCode::FAILURE,
                ),
                Err(e) => {
                    eprintln!("limes: {e:#}");
                    return ExitCode::FAILURE;
                }
            };
            // A closed stdout (`| head`) is not an error worth a panic.
            let _ = std::io::stdout().write_all(text.as_bytes());
            code
        }
    }
}

fn fail(e: &anyhow::Error) -> ExitCode {
    eprintln!("limes: {e:#}");
    ExitCode::FAILURE
}
