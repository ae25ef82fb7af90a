//! JSON-RPC 2.0 methods, named as Kamailio operators know them. Each takes positional
//! parameters and returns a JSON value or an error with a message.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use limes_actors::proxy::Proxy;

use crate::{rpc_dialog, rpc_routing, rpc_state};
use serde_json::{json, Value};

/// What the methods can see.
pub struct Node {
    pub name: String,
    pub proxy: Arc<Proxy>,
    pub started: Instant,
    pub started_unix: u64,
    pub listens: Vec<String>,
    pub state_dir: String,
    pub reload: Arc<crate::run::Reload>,
    /// Where the node's shared state goes: etcd, or the node alone (embedded).
    pub cluster: Arc<dyn limes_cluster::ClusterStore>,
}

/// A JSON-RPC error: code and message.
#[derive(Debug)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
}

impl RpcError {
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn not_found(method: &str) -> Self {
        Self::new(-32601, format!("Method not found: {method}"))
    }
}

type Method = fn(&Node, &[Value]) -> Result<Value, RpcError>;

/// Every method, with its one-line help (for `system.listMethods` and `system.methodHelp`).
pub const METHODS: &[(&str, &str, Method)] = &[
    ("core.version", "Version of this node", core_version),
    ("core.uptime", "Start time and seconds since", core_uptime),
    ("core.info", "Name, version, listening sockets", core_info),
    (
        "stats.get_statistics",
        "Counters; parameter: group name or \"all\"",
        stats_get_statistics,
    ),
    ("tm.stats", "Transaction counters", tm_stats),
    (
        "sip.ping",
        "Send OPTIONS to a SIP URI and report the status and round-trip time: URI [TIMEOUT_S]",
        sip_ping,
    ),
    (
        "core.reload",
        "Re-read the configuration file: tables, registrar and auth settings",
        rpc_state::core_reload,
    ),
    (
        "subscriber.add",
        "Add or replace a subscriber: USER@DOMAIN PASSWORD [ATTR=VALUE...] (call_limit=N)",
        rpc_state::subscriber_add,
    ),
    (
        "subscriber.rm",
        "Remove a subscriber: USER@DOMAIN",
        rpc_state::subscriber_rm,
    ),
    (
        "subscriber.list",
        "Every subscriber (no credentials)",
        rpc_state::subscriber_list,
    ),
    (
        "subscriber.show",
        "One subscriber: USER@DOMAIN",
        rpc_state::subscriber_show,
    ),
    (
        "permissions.trustedDump",
        "The trusted peers",
        rpc_state::trusted_dump,
    ),
    (
        "trusted.add",
        "Add a trusted peer: CIDR [PROTO] [FROM_PATTERN] [TAG]",
        rpc_state::trusted_add,
    ),
    (
        "trusted.rm",
        "Remove the trusted peers of a CIDR",
        rpc_state::trusted_rm,
    ),
    (
        "permissions.addressDump",
        "The address groups",
        rpc_state::address_dump,
    ),
    (
        "address.add",
        "Add an address group entry: GROUP CIDR [PORT] [PROTO] [TAG]",
        rpc_state::address_add,
    ),
    (
        "permissions.allowSource",
        "Whether a source is in an address group, and the entry: GROUP IP [PORT] [PROTO]",
        rpc_state::allow_source,
    ),
    (
        "address.rm",
        "Remove an address group entry: GROUP CIDR",
        rpc_state::address_rm,
    ),
    (
        "trunk.list",
        "Trunks, their destinations with state, calls, failovers and pings",
        rpc_routing::trunk_list,
    ),
    (
        "trunk.add",
        "Add or replace a trunk: {name, group, destinations: [{uri, priority, weight}], ...}",
        rpc_routing::trunk_add,
    ),
    (
        "trunk.rm",
        "Remove a trunk added over the API: NAME",
        rpc_routing::trunk_rm,
    ),
    (
        "trunk.set_state",
        "Drain or restore a trunk destination: NAME URI active|drained",
        rpc_routing::trunk_set_state,
    ),
    (
        "route.list",
        "The routing rules in evaluation order, and where they come from",
        rpc_routing::route_list,
    ),
    (
        "route.set",
        "Replace the routing rules: [{name, source, method, user, registered, action, ...}]; [] restores the file's",
        rpc_routing::route_set,
    ),
    (
        "cluster.members",
        "The nodes of the cluster: addresses, how long each has been a member",
        crate::cluster::members,
    ),
    (
        "cluster.status",
        "The shared store: backend, revision, write queue, last error",
        crate::cluster::status,
    ),
    (
        "dns.list",
        "The DNS cache: located targets with their servers in order, failures, seconds left",
        rpc_routing::dns_list,
    ),
    (
        "dns.flush",
        "Forget cached DNS locations: [HOST]",
        rpc_routing::dns_flush,
    ),
    (
        "ul.dump",
        "Every AoR and its contacts: [LIMIT]",
        rpc_state::ul_dump,
    ),
    (
        "ul.lookup",
        "The contacts of one AoR: AOR",
        rpc_state::ul_lookup,
    ),
    (
        "ul.rm",
        "Remove an AoR's contacts, or one: AOR [CONTACT]",
        rpc_state::ul_rm,
    ),
    (
        "ul.add",
        "Add a static contact: AOR CONTACT [EXPIRES] [Q]",
        rpc_state::ul_add,
    ),
    (
        "auth.blocked",
        "Sources blocked for repeated authentication failures",
        rpc_state::auth_blocked,
    ),
    ("auth.unblock", "Lift a block: IP", rpc_state::auth_unblock),
    ("dlg.list", "Every tracked call", rpc_dialog::list),
    (
        "dlg.list_ctx",
        "Every tracked call with its lifetime and timeout",
        rpc_dialog::list_ctx,
    ),
    (
        "dlg.stats_active",
        "Early, active and all dialogs",
        rpc_dialog::stats_active,
    ),
    (
        "dlg.profile_get_size",
        "Calls in a profile: PROFILE [VALUE]",
        rpc_dialog::profile_get_size,
    ),
    (
        "dlg.profile_list",
        "The calls in a profile: PROFILE [VALUE]",
        rpc_dialog::profile_list,
    ),
    (
        "dlg.end_dlg",
        "End a call with BYE to both sides: ID",
        rpc_dialog::end_dlg,
    ),
    (
        "dlg.set_var",
        "Set a dialog variable: ID NAME VALUE",
        rpc_dialog::set_var,
    ),
    (
        "system.listMethods",
        "Methods this node answers",
        list_methods,
    ),
    (
        "system.methodHelp",
        "Help for one method; parameter: method name",
        method_help,
    ),
];

pub fn call(node: &Node, method: &str, params: &[Value]) -> Result<Value, RpcError> {
    let (_, _, f) = METHODS
        .iter()
        .find(|(name, _, _)| *name == method)
        .ok_or_else(|| RpcError::not_found(method))?;
    f(node, params)
}

pub fn version() -> String {
    format!("limes {}", env!("CARGO_PKG_VERSION"))
}

fn core_version(_: &Node, _: &[Value]) -> Result<Value, RpcError> {
    Ok(json!(version()))
}

fn core_uptime(node: &Node, _: &[Value]) -> Result<Value, RpcError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Ok(json!({
        "now": now,
        "up_since": node.started_unix,
        "uptime": node.started.elapsed().as_secs(),
    }))
}

fn core_info(node: &Node, _: &[Value]) -> Result<Value, RpcError> {
    Ok(json!({
        "name": node.name,
        "version": version(),
        "listen": node.listens,
        "state_dir": node.state_dir,
        "draining": node.proxy.is_draining(),
    }))
}

/// `sip.ping URI [TIMEOUT_S]`: an OPTIONS of the node's own; waits for its outcome
/// (the admin server runs methods on its blocking pool, so a wait holds no I/O thread).
fn sip_ping(node: &Node, params: &[Value]) -> Result<Value, RpcError> {
    let invalid = |m: &str| RpcError::new(-32602, format!("sip.ping URI [TIMEOUT_S]: {m}"));
    let uri = params
        .first()
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("URI (a string) is missing"))?;
    let timeout_s = match params.get(1) {
        None => 5.0,
        Some(v) => v
            .as_f64()
            .or_else(|| v.as_str()?.parse().ok())
            .filter(|t| *t > 0.0 && *t <= 60.0)
            .ok_or_else(|| invalid("TIMEOUT_S must be a number of seconds in (0, 60]"))?,
    };
    if params.len() > 2 {
        return Err(invalid("too many parameters"));
    }
    let timeout = std::time::Duration::from_secs_f64(timeout_s);
    let (done, outcome) = std::sync::mpsc::sync_channel(1);
    node.proxy
        .originate(limes_sip::Method::Options, uri, timeout, done)
        .map_err(|e| invalid(&e.to_string()))?;
    let outcome = outcome
        .recv_timeout(timeout + std::time::Duration::from_secs(2))
        .map_err(|_| RpcError::new(-32000, "sip.ping: the request did not end in time"))?;
    Ok(json!({
        "uri": uri,
        "status": outcome.status,
        "reason": outcome.reason(),
        "answered": outcome.response.is_some(),
        "rtt_ms": (outcome.elapsed.as_secs_f64() * 1e6).round() / 1e3,
    }))
}

fn tm_stats(node: &Node, _: &[Value]) -> Result<Value, RpcError> {
    let s = &node.proxy.stats;
    let m = node.proxy.metrics();
    let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let class = m.sent_by_class();
    let (retransmitted, absorbed) = m.retransmissions_total();
    Ok(json!({
        "current": node.proxy.active(),
        "total": get(&s.created),
        "freed": get(&s.freed),
        "rpl_received": m.responses_received_total(),
        "rpl_generated": get(&s.replies_local),
        "rpl_sent": get(&s.replies_local) + get(&s.replies_forwarded),
        "retransmissions_sent": retransmitted,
        "retransmissions_absorbed": absorbed,
        "1xx": class[0],
        "2xx": class[1],
        "3xx": class[2],
        "4xx": class[3],
        "5xx": class[4],
        "6xx": class[5],
    }))
}

fn stats_get_statistics(node: &Node, params: &[Value]) -> Result<Value, RpcError> {
    let group = params.first().and_then(Value::as_str).unwrap_or("all");
    let mut out = serde_json::Map::new();
    if let Value::Object(tm) = tm_stats(node, &[])? {
        for (k, v) in tm {
            out.insert(format!("tm:{k}"), v);
        }
    }
    out.insert(
        "core:uptime".into(),
        json!(node.started.elapsed().as_secs()),
    );
    out.insert("core:draining".into(), json!(node.proxy.is_draining()));
    out.extend(rpc_dialog::statistics(node));
    let groups: Vec<&str> = out.keys().filter_map(|k| k.split(':').next()).collect();
    if group != "all" && !groups.contains(&group.trim_end_matches(':')) {
        return Err(RpcError::new(
            -32602,
            format!("unknown statistics group {group:?}"),
        ));
    }
    let prefix = format!("{}:", group.trim_end_matches(':'));
    out.retain(|k, _| group == "all" || k.starts_with(&prefix));
    Ok(Value::Object(out))
}

fn list_methods(_: &Node, _: &[Value]) -> Result<Value, RpcError> {
    Ok(json!(METHODS
        .iter()
        .map(|(n, _, _)| *n)
        .collect::<Vec<_>>()))
}

fn method_help(_: &Node, params: &[Value]) -> Result<Value, RpcError> {
    let name = params
        .first()
        .and_then(Value::as_str)
        .ok_or_else(|| RpcError::new(-32602, "method name expected"))?;
    METHODS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, help, _)| json!(help))
        .ok_or_else(|| RpcError::not_found(name))
}

/// Handles one JSON-RPC request object; `None` for a notification (no `id`).
pub fn handle_one(node: &Node, req: &Value) -> Option<Value> {
    let id = req.get("id").cloned();
    let result = (|| {
        if req.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
            return Err(RpcError::new(
                -32600,
                "Invalid Request: jsonrpc must be \"2.0\"",
            ));
        }
        let method = req
            .get("method")
            .and_then(Value::as_str)
            .ok_or_else(|| RpcError::new(-32600, "Invalid Request: no method"))?;
        let params = match req.get("params") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a.clone(),
            Some(Value::Object(_)) => {
                return Err(RpcError::new(
                    -32602,
                    "Invalid params: positional parameters expected",
                ))
            }
            Some(v) => vec![v.clone()],
        };
        call(node, method, &params)
    })();
    let id = id?;
    Some(match result {
        Ok(v) => json!({"jsonrpc": "2.0", "result": v, "id": id}),
        Err(e) => {
            json!({"jsonrpc": "2.0", "error": {"code": e.code, "message": e.message}, "id": id})
        }
    })
}

/// Handles a request body: one object or a batch.
pub fn handle_body(node: &Node, body: &[u8]) -> Option<Value> {
    let parsed: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            return Some(
                json!({"jsonrpc": "2.0", "error": {"code": -32700, "message": format!("Parse error: {e}")}, "id": null}),
            )
        }
    };
    match parsed {
        Value::Array(batch) if batch.is_empty() => Some(
            json!({"jsonrpc": "2.0", "error": {"code": -32600, "message": "Invalid Request: empty batch"}, "id": null}),
        ),
        Value::Array(batch) => {
            let answers: Vec<Value> = batch.iter().filter_map(|r| handle_one(node, r)).collect();
            (!answers.is_empty()).then_some(Value::Array(answers))
        }
        one => handle_one(node, &one),
    }
}
