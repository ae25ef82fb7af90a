//! Statistics as Kamailio's `stats.*` and `tm.stats` show them: groups `core:`, `tm:`,
//! `sl:`, `usrloc:`, `registrar:`, `auth:`, `dialog:`, with Kamailio's names where there
//! is a counterpart. `stats.reset_statistics` resets what these methods show (a baseline
//! subtracted from each counter); the Prometheus counters behind them stay monotonic, as
//! Prometheus requires.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use serde_json::{json, Map, Value};

use crate::rpc::{Node, RpcError};
use crate::rpc_params::Args;

/// Counter values at the last reset, by full name (`tm:total`).
#[derive(Default)]
pub struct Baseline(Mutex<HashMap<String, u64>>);

/// One statistic: a counter (resettable) or a level (current, never reset).
enum Stat {
    Counter(u64),
    Level(Value),
}

fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// Every statistic, by full name, in group order.
fn all(node: &Node) -> Vec<(String, Stat)> {
    use Stat::{Counter, Level};
    let p = &node.proxy;
    let s = &p.stats;
    let m = p.metrics();
    let edge = p.edge();
    let class = m.sent_by_class();
    let (retransmitted, absorbed) = m.retransmissions_total();
    let sl: Vec<u64> = s.stateless.iter().map(get).collect();
    let loc = &edge.location.metrics;
    let regs = |results: &[&'static str]| -> u64 {
        results
            .iter()
            .map(|&result| {
                loc.registrations
                    .get_or_create(&limes_actors::registrar::ResultLabels { result })
                    .get()
            })
            .sum()
    };
    let auth = &edge.auth.metrics;
    let challenges = |status: &'static str| {
        auth.challenges
            .get_or_create(&limes_actors::auth::ChallengeLabels { status })
            .get()
    };
    let failures: u64 = limes_actors::auth::FAILURE_REASONS
        .iter()
        .map(|&reason| {
            auth.failures
                .get_or_create(&limes_actors::auth::FailureLabels { reason })
                .get()
        })
        .sum();
    let rules = edge.location.rules();
    let mut out: Vec<(&str, &str, Stat)> = vec![
        (
            "core",
            "uptime",
            Level(json!(node.started.elapsed().as_secs())),
        ),
        ("core", "draining", Level(json!(p.is_draining()))),
        ("core", "rcv_replies", Counter(m.responses_received_total())),
        ("tm", "current", Level(json!(p.active()))),
        ("tm", "total", Counter(get(&s.created))),
        ("tm", "freed", Counter(get(&s.freed))),
        ("tm", "rpl_received", Counter(m.responses_received_total())),
        ("tm", "rpl_generated", Counter(get(&s.replies_local))),
        (
            "tm",
            "rpl_sent",
            Counter(get(&s.replies_local) + get(&s.replies_forwarded)),
        ),
        ("tm", "retransmissions_sent", Counter(retransmitted)),
        ("tm", "retransmissions_absorbed", Counter(absorbed)),
    ];
    for (i, c) in ["1xx", "2xx", "3xx", "4xx", "5xx", "6xx"]
        .iter()
        .enumerate()
    {
        out.push(("tm", c, Counter(class[i])));
    }
    for (i, c) in [
        "1xx_replies",
        "2xx_replies",
        "3xx_replies",
        "4xx_replies",
        "5xx_replies",
        "6xx_replies",
    ]
    .iter()
    .enumerate()
    {
        out.push(("sl", c, Counter(sl[i])));
    }
    out.extend([
        ("sl", "401_replies", Counter(challenges("401"))),
        ("sl", "407_replies", Counter(challenges("407"))),
        ("sl", "sent_replies", Counter(sl.iter().sum())),
        ("sl", "sent_err_replies", Counter(sl[3..].iter().sum())),
        ("usrloc", "registered_users", Level(json!(loc.aors.get()))),
        ("usrloc", "location-users", Level(json!(loc.aors.get()))),
        (
            "usrloc",
            "location-contacts",
            Level(json!(loc.contacts.get())),
        ),
        (
            "registrar",
            "accepted_regs",
            Counter(regs(&[
                "registered",
                "refreshed",
                "removed",
                "unchanged",
                "fetched",
            ])),
        ),
        (
            "registrar",
            "rejected_regs",
            Counter(regs(&["refused", "error"])),
        ),
        ("registrar", "max_expires", Level(json!(rules.max_expires))),
        (
            "registrar",
            "max_contacts",
            Level(json!(rules.max_contacts)),
        ),
        (
            "registrar",
            "default_expire",
            Level(json!(rules.default_expires)),
        ),
        ("auth", "challenges_401", Counter(challenges("401"))),
        ("auth", "challenges_407", Counter(challenges("407"))),
        ("auth", "successful_auths", Counter(auth.successes.get())),
        ("auth", "failed_auths", Counter(failures)),
        (
            "auth",
            "blocked_sources",
            Level(json!(auth.blocked_sources.get())),
        ),
        ("auth", "blocks", Counter(auth.blocks.get())),
    ]);
    let mut all: Vec<(String, Stat)> = out
        .into_iter()
        .map(|(g, n, v)| (format!("{g}:{n}"), v))
        .collect();
    all.extend(
        crate::rpc_dialog::statistics(node)
            .into_iter()
            .map(|(name, v, counter)| {
                let stat = if counter { Counter(v) } else { Level(json!(v)) };
                (name, stat)
            }),
    );
    all
}

/// Which statistics a selector names: `all`, a group (`tm` or `tm:`) or a full name.
fn selected<'a>(
    stats: &'a [(String, Stat)],
    selector: &str,
) -> Result<Vec<&'a (String, Stat)>, RpcError> {
    let group = selector.trim_end_matches(':');
    let chosen: Vec<_> = stats
        .iter()
        .filter(|(name, _)| {
            selector == "all"
                || name == selector
                || (!selector.contains(':') || selector.ends_with(':'))
                    && name.split(':').next() == Some(group)
        })
        .collect();
    if chosen.is_empty() {
        let groups: Vec<&str> =
            stats
                .iter()
                .filter_map(|(n, _)| n.split(':').next())
                .fold(Vec::new(), |mut v, g| {
                    if !v.contains(&g) {
                        v.push(g);
                    }
                    v
                });
        return Err(RpcError::new(
            -32602,
            format!(
                "Invalid params: unknown statistic or group {selector:?} (groups: {}:)",
                groups.join(": ")
            ),
        ));
    }
    Ok(chosen)
}

/// A statistic as shown: a counter less its baseline, a level as it is.
fn shown(base: &HashMap<String, u64>, name: &str, stat: &Stat) -> Value {
    match stat {
        Stat::Counter(n) => json!(n.saturating_sub(base.get(name).copied().unwrap_or(0))),
        Stat::Level(v) => v.clone(),
    }
}

/// `stats.get_statistics [GROUP_OR_NAME...]` (none: all).
pub fn get_statistics(node: &Node, args: &Args) -> Result<Value, RpcError> {
    let stats = all(node);
    let mut selectors: Vec<&str> = args.texts_from(0).collect();
    if selectors.is_empty() {
        selectors.push("all");
    }
    let base = node.stats_baseline.0.lock();
    let mut out = Map::new();
    for sel in selectors {
        for (name, stat) in selected(&stats, sel)? {
            out.insert(name.clone(), shown(&base, name, stat));
        }
    }
    Ok(Value::Object(out))
}

/// `stats.reset_statistics GROUP_OR_NAME...`: counters restart from 0 as these methods
/// show them; levels (`tm:current`, `usrloc:registered_users`) are not counters and stay.
pub fn reset_statistics(node: &Node, args: &Args) -> Result<Value, RpcError> {
    let stats = all(node);
    let mut base = node.stats_baseline.0.lock();
    let mut reset = Vec::new();
    for sel in args.texts_from(0) {
        for (name, stat) in selected(&stats, sel)? {
            if let Stat::Counter(n) = stat {
                base.insert(name.clone(), *n);
                reset.push(name.clone());
            }
        }
    }
    Ok(json!({ "reset": reset }))
}

/// `tm.stats`: the `tm:` group without its prefix.
pub fn tm_stats(node: &Node, _: &Args) -> Result<Value, RpcError> {
    let stats = all(node);
    let base = node.stats_baseline.0.lock();
    let mut out = Map::new();
    for (name, stat) in selected(&stats, "tm:")? {
        out.insert(
            name.trim_start_matches("tm:").to_owned(),
            shown(&base, name, stat),
        );
    }
    Ok(Value::Object(out))
}
