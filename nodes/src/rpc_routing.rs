//! JSON-RPC methods for trunks and routing rules: `trunk.list` (destinations with health
//! and counters, as `dispatcher.list` shows them), `trunk.add`, `trunk.rm`,
//! `trunk.set_state`, `route.list`, `route.set`. A change is checked whole and applies to
//! the next request; a bad one is refused with a message that names the trunk or rule.

use std::sync::atomic::Ordering;

use limes_actors::policy::RuleDef;
use limes_actors::proxy::edge::DestStateError;
use limes_actors::trunks::{DestState, TrunkDef};
use serde_json::{json, Value};

use crate::rpc::{Node, RpcError};
use crate::rpc_params::Args;

fn invalid(why: impl std::fmt::Display) -> RpcError {
    RpcError::new(-32602, format!("Invalid params: {why}"))
}

/// A JSON parameter (declared, so present) read as `T`; unknown or missing fields are
/// refused with serde's message, which names them.
fn object<T: serde::de::DeserializeOwned>(args: &Args, what: &str) -> Result<T, RpcError> {
    let v = args.json(0).cloned().unwrap_or(Value::Null);
    serde_json::from_value(v).map_err(|e| invalid(format!("{what}: {e}")))
}

pub fn trunk_list(node: &Node, _: &Args) -> Result<Value, RpcError> {
    let dns = &node.proxy.edge().dns;
    let trunks: Vec<Value> = node
        .proxy
        .edge()
        .trunks
        .all()
        .iter()
        .map(|t| {
            let destinations: Vec<Value> = t
                .destinations
                .iter()
                .map(|d| {
                    let h = &d.health;
                    // A name's servers as DNS located them (none while not located).
                    let located = match d.addr {
                        Some(a) => vec![a],
                        None => dns.peek(&d.target).map(|l| l.to_vec()).unwrap_or_default(),
                    };
                    let addresses: Vec<String> = located
                        .iter()
                        .map(|a| format!("{}:{}", a.transport.as_str(), a.addr))
                        .collect();
                    json!({
                        "uri": d.def.uri,
                        "addresses": addresses,
                        "priority": d.def.priority,
                        "weight": d.def.weight,
                        "state": h.state(),
                        "calls": h.calls.load(Ordering::Relaxed),
                        "failovers": h.failovers.load(Ordering::Relaxed),
                        "ping_misses": h.misses.load(Ordering::Relaxed),
                        "last_ping_status": h.last_ping_status.load(Ordering::Relaxed),
                        "last_ping_ms": h.last_ping_ms.load(Ordering::Relaxed),
                    })
                })
                .collect();
            json!({
                "name": t.def.name,
                "group": t.def.group,
                "calls": t.calls.load(Ordering::Relaxed),
                "refused_cps": t.refused_cps.load(Ordering::Relaxed),
                "definition": t.def,
                "destinations": destinations,
            })
        })
        .collect();
    Ok(json!({ "trunks": trunks }))
}

/// `trunk.add {TRUNK}`: adds or replaces a trunk (the configuration file's of the same
/// name is hidden while the API's exists).
pub fn trunk_add(node: &Node, args: &Args) -> Result<Value, RpcError> {
    let def: TrunkDef = object(args, "trunk.add: TRUNK")?;
    let name = def.name.clone();
    node.proxy
        .edge()
        .set_routing(|s| {
            s.api_trunks.insert(def.name.clone(), def);
        })
        .map_err(invalid)?;
    Ok(json!({ "added": name }))
}

/// `trunk.rm NAME`: removes a trunk added over the API (refused while a rule names it).
pub fn trunk_rm(node: &Node, args: &Args) -> Result<Value, RpcError> {
    let name = args.need(0)?;
    let edge = node.proxy.edge();
    if !edge.routing_sources.lock().api_trunks.contains_key(name) {
        return Err(RpcError::new(
            404,
            format!("not found: {name} (only trunks added over the API can be removed)"),
        ));
    }
    edge.set_routing(|s| {
        s.api_trunks.remove(name);
    })
    .map_err(invalid)?;
    Ok(json!({ "removed": name }))
}

/// `trunk.set_state NAME URI active|drained`.
pub fn trunk_set_state(node: &Node, args: &Args) -> Result<Value, RpcError> {
    let (name, uri) = (args.need(0)?, args.need(1)?);
    let state = DestState::parse(args.need(2)?)
        .map_err(|e| invalid(format!("trunk.set_state: STATE: {e}")))?;
    node.proxy
        .edge()
        .set_destination_state(name, uri, state)
        .map_err(|e| match e {
            DestStateError::NotFound(_) => RpcError::new(404, e.to_string()),
            DestStateError::Journal(_) => RpcError::new(500, e.to_string()),
        })?;
    Ok(json!({ "trunk": name, "uri": uri, "state": state }))
}

pub fn route_list(node: &Node, _: &Args) -> Result<Value, RpcError> {
    let edge = node.proxy.edge();
    let from_api = edge.routing_sources.lock().api_rules.is_some();
    let policy = edge.policy.load();
    let rules: Vec<Value> = policy.rules().iter().map(|r| json!(r.def)).collect();
    Ok(json!({ "source": if from_api { "api" } else { "config" }, "rules": rules }))
}

/// `route.set [RULES]`: replaces the rules (in evaluation order as `route.list` shows
/// them); an empty list goes back to the configuration file's.
pub fn route_set(node: &Node, args: &Args) -> Result<Value, RpcError> {
    let rules: Vec<RuleDef> = object(args, "route.set: RULES (an array of rules)")?;
    let n = rules.len();
    node.proxy
        .edge()
        .set_routing(|s| s.api_rules = (!rules.is_empty()).then_some(rules))
        .map_err(invalid)?;
    Ok(json!({ "rules": n }))
}

/// `dns.list`: the DNS cache: each located target with its servers in the order tried,
/// or why it failed, and seconds left.
pub fn dns_list(node: &Node, _: &Args) -> Result<Value, RpcError> {
    let entries: Vec<Value> = node
        .proxy
        .edge()
        .dns
        .entries()
        .iter()
        .map(|e| {
            let servers: Vec<String> = e
                .servers
                .iter()
                .map(|d| format!("{}:{}", d.transport.as_str(), d.addr))
                .collect();
            json!({
                "host": e.target.host,
                "port": e.target.port,
                "transport": e.target.transport.map(|t| format!("{t:?}").to_lowercase()),
                "state": e.state,
                "servers": servers,
                "expires_s": e.expires_in.as_secs(),
            })
        })
        .collect();
    Ok(json!({ "entries": entries }))
}

/// `dns.flush [HOST]`: forgets cached locations (of one host, or all).
pub fn dns_flush(node: &Node, args: &Args) -> Result<Value, RpcError> {
    let host = args.text(0);
    let flushed = node.proxy.edge().dns.flush(host);
    Ok(json!({ "flushed": flushed }))
}
