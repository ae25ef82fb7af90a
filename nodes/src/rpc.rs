//! JSON-RPC 2.0 methods, named as Kamailio operators know them. Each declares its
//! positional parameters ([`crate::rpc_params`]), checked before it runs, and returns a
//! JSON value or an error with a message.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use limes_actors::proxy::Proxy;

use crate::rpc_params::{opt, req, Args, Kind, Signature, GROUP, PORT};
use crate::{rpc_dialog, rpc_routing, rpc_state, rpc_stats as stats};
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
    /// The running log level.
    pub log: crate::logging::LogControl,
    /// What `stats.reset_statistics` reset.
    pub stats_baseline: stats::Baseline,
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

type Method = fn(&Node, &Args) -> Result<Value, RpcError>;

/// One JSON-RPC method: its name, one-line help, parameters and handler.
pub struct Spec {
    pub name: &'static str,
    pub help: &'static str,
    pub sig: Signature,
    pub run: Method,
}

const fn m(name: &'static str, help: &'static str, sig: Signature, run: Method) -> Spec {
    Spec {
        name,
        help,
        sig,
        run,
    }
}

const TEXT: Kind = Kind::Text;
const NONE: Signature = Signature::NONE;

/// Every method, with its help and parameters (for `system.listMethods`,
/// `system.methodHelp` and `limes ctl --help`).
pub const METHODS: &[Spec] = &[
    m("core.version", "Version of this node", NONE, core_version),
    m("core.uptime", "Start time and seconds since", NONE, core_uptime),
    m("core.info", "Name, version, listening sockets, log level", NONE, core_info),
    m(
        "core.sockets_list",
        "The listening sockets: protocol, address, port",
        NONE,
        core_sockets_list,
    ),
    m(
        "core.set_log_level",
        "Change the log level now (until the next reload or restart): error, warn, info, debug, trace, or TARGET=LEVEL lists",
        Signature::of(&[req("LEVEL", TEXT)]),
        core_set_log_level,
    ),
    m(
        "stats.get_statistics",
        "Statistics by group (core: tm: sl: usrloc: registrar: auth: dialog:), by name (tm:current), or all",
        Signature::with_rest(&[], opt("GROUP_OR_NAME", TEXT)),
        stats::get_statistics,
    ),
    m(
        "stats.reset_statistics",
        "Reset counters as the statistics methods show them (Prometheus counters stay monotonic): GROUP_OR_NAME... or all",
        Signature::with_rest(&[req("GROUP_OR_NAME", TEXT)], opt("MORE", TEXT)),
        stats::reset_statistics,
    ),
    m("tm.stats", "Transaction counters", NONE, stats::tm_stats),
    m(
        "sip.ping",
        "Send OPTIONS to a SIP URI and report the status and round-trip time",
        Signature::of(&[
            req("URI", TEXT),
            opt("TIMEOUT_S", Kind::Number { min: 0.001, max: 60.0 }),
        ]),
        sip_ping,
    ),
    m(
        "core.reload",
        "Re-read the configuration file: tables, registrar, auth, routing, dialogs, next hops, log level; names the restart-only settings it left",
        NONE,
        rpc_state::core_reload,
    ),
    m(
        "subscriber.add",
        "Add or replace a subscriber (call_limit=N and algorithms=SHA-256,MD5 are settings, other ATTR=VALUE attributes)",
        Signature::with_rest(
            &[req("USER@DOMAIN", TEXT), req("PASSWORD", TEXT)],
            opt("ATTR=VALUE", TEXT),
        ),
        rpc_state::subscriber_add,
    ),
    m(
        "subscriber.rm",
        "Remove a subscriber",
        Signature::of(&[req("USER@DOMAIN", TEXT)]),
        rpc_state::subscriber_rm,
    ),
    m(
        "subscriber.list",
        "Every subscriber (no credentials)",
        NONE,
        rpc_state::subscriber_list,
    ),
    m(
        "subscriber.show",
        "One subscriber",
        Signature::of(&[req("USER@DOMAIN", TEXT)]),
        rpc_state::subscriber_show,
    ),
    m("permissions.trustedDump", "The trusted peers", NONE, rpc_state::trusted_dump),
    m(
        "trusted.add",
        "Add a trusted peer",
        Signature::of(&[
            req("CIDR", TEXT),
            opt("PROTO", TEXT),
            opt("FROM_PATTERN", TEXT),
            opt("TAG", TEXT),
        ]),
        rpc_state::trusted_add,
    ),
    m(
        "trusted.rm",
        "Remove the trusted peers of a CIDR",
        Signature::of(&[req("CIDR", TEXT)]),
        rpc_state::trusted_rm,
    ),
    m("permissions.addressDump", "The address groups", NONE, rpc_state::address_dump),
    m(
        "address.add",
        "Add an address group entry (PORT 0: any)",
        Signature::of(&[
            req("GROUP", GROUP),
            req("CIDR", TEXT),
            opt("PORT", PORT),
            opt("PROTO", TEXT),
            opt("TAG", TEXT),
        ]),
        rpc_state::address_add,
    ),
    m(
        "permissions.allowSource",
        "Whether a source is in an address group, and the entry",
        Signature::of(&[
            req("GROUP", GROUP),
            req("IP", TEXT),
            opt("PORT", PORT),
            opt("PROTO", TEXT),
        ]),
        rpc_state::allow_source,
    ),
    m(
        "address.rm",
        "Remove an address group entry",
        Signature::of(&[req("GROUP", GROUP), req("CIDR", TEXT)]),
        rpc_state::address_rm,
    ),
    m(
        "trunk.list",
        "Trunks, their destinations with state, calls, failovers and pings",
        NONE,
        rpc_routing::trunk_list,
    ),
    m(
        "trunk.add",
        "Add or replace a trunk: {name, group, destinations: [{uri, priority, weight}], ...}",
        Signature::of(&[req("TRUNK", Kind::Json)]),
        rpc_routing::trunk_add,
    ),
    m(
        "trunk.rm",
        "Remove a trunk added over the API",
        Signature::of(&[req("NAME", TEXT)]),
        rpc_routing::trunk_rm,
    ),
    m(
        "trunk.set_state",
        "Drain or restore a trunk destination (STATE: active or drained)",
        Signature::of(&[req("NAME", TEXT), req("URI", TEXT), req("STATE", TEXT)]),
        rpc_routing::trunk_set_state,
    ),
    m(
        "route.list",
        "The routing rules in evaluation order, and where they come from",
        NONE,
        rpc_routing::route_list,
    ),
    m(
        "route.set",
        "Replace the routing rules: [{name, source, method, user, registered, action, ...}]; [] restores the file's",
        Signature::of(&[req("RULES", Kind::Json)]),
        rpc_routing::route_set,
    ),
    m(
        "cluster.members",
        "The nodes of the cluster: addresses, how long each has been a member",
        NONE,
        crate::cluster::members,
    ),
    m(
        "cluster.status",
        "The shared store: backend, revision, write queue, last error",
        NONE,
        crate::cluster::status,
    ),
    m(
        "dns.list",
        "The DNS cache: located targets with their servers in order, failures, seconds left",
        NONE,
        rpc_routing::dns_list,
    ),
    m(
        "dns.flush",
        "Forget cached DNS locations (of HOST, or all)",
        Signature::of(&[opt("HOST", TEXT)]),
        rpc_routing::dns_flush,
    ),
    m(
        "ul.dump",
        "Every AoR and its contacts (at most LIMIT AoRs)",
        Signature::of(&[opt("LIMIT", Kind::Int { min: 1, max: 10_000_000 })]),
        rpc_state::ul_dump,
    ),
    m(
        "ul.lookup",
        "The contacts of one AoR",
        Signature::with_table(&[req("AOR", TEXT)], "location"),
        rpc_state::ul_lookup,
    ),
    m(
        "ul.rm",
        "Remove an AoR's contacts, or one",
        Signature::with_table(&[req("AOR", TEXT), opt("CONTACT", TEXT)], "location"),
        rpc_state::ul_rm,
    ),
    m(
        "ul.add",
        "Add a static contact (EXPIRES seconds, default 3600; Q 0 to 1)",
        Signature::with_table(
            &[
                req("AOR", TEXT),
                req("CONTACT", TEXT),
                opt("EXPIRES", Kind::Int { min: 1, max: u32::MAX as i64 }),
                opt("Q", Kind::Number { min: 0.0, max: 1.0 }),
            ],
            "location",
        ),
        rpc_state::ul_add,
    ),
    m(
        "auth.blocked",
        "Sources blocked for repeated authentication failures",
        NONE,
        rpc_state::auth_blocked,
    ),
    m(
        "auth.unblock",
        "Lift a block",
        Signature::of(&[req("IP", TEXT)]),
        rpc_state::auth_unblock,
    ),
    m("dlg.list", "Every tracked call", NONE, rpc_dialog::list),
    m(
        "dlg.list_ctx",
        "Every tracked call with its lifetime and timeout",
        NONE,
        rpc_dialog::list_ctx,
    ),
    m(
        "dlg.stats_active",
        "Early, active and all dialogs",
        NONE,
        rpc_dialog::stats_active,
    ),
    m(
        "dlg.profile_get_size",
        "Calls in a profile (with a VALUE: in that value of it)",
        Signature::of(&[req("PROFILE", TEXT), opt("VALUE", TEXT)]),
        rpc_dialog::profile_get_size,
    ),
    m(
        "dlg.profile_list",
        "The calls in a profile (with a VALUE: in that value of it)",
        Signature::of(&[req("PROFILE", TEXT), opt("VALUE", TEXT)]),
        rpc_dialog::profile_list,
    ),
    m(
        "dlg.end_dlg",
        "End a call with BYE to both sides (ID: its number in dlg.list)",
        Signature::of(&[req("ID", Kind::Int { min: 0, max: i64::MAX })]),
        rpc_dialog::end_dlg,
    ),
    m(
        "dlg.set_var",
        "Set a dialog variable (an integer VALUE stays one)",
        Signature::of(&[
            req("ID", Kind::Int { min: 0, max: i64::MAX }),
            req("NAME", TEXT),
            req("VALUE", Kind::Scalar),
        ]),
        rpc_dialog::set_var,
    ),
    m("system.listMethods", "Methods this node answers", NONE, list_methods),
    m(
        "system.methodHelp",
        "Help for one method: what it does and its parameters",
        Signature::of(&[req("METHOD", TEXT)]),
        method_help,
    ),
];

pub fn spec(method: &str) -> Option<&'static Spec> {
    METHODS.iter().find(|s| s.name == method)
}

/// Checks the parameters against the method's declaration, then runs it.
pub fn call(node: &Node, method: &str, params: &[Value]) -> Result<Value, RpcError> {
    let spec = spec(method).ok_or_else(|| RpcError::not_found(method))?;
    let args = spec.sig.check(method, params)?;
    (spec.run)(node, &args)
}

pub fn version() -> String {
    format!("limes {}", env!("CARGO_PKG_VERSION"))
}

fn core_version(_: &Node, _: &Args) -> Result<Value, RpcError> {
    Ok(json!(version()))
}

fn core_uptime(node: &Node, _: &Args) -> Result<Value, RpcError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Ok(json!({
        "now": now,
        "up_since": node.started_unix,
        "uptime": node.started.elapsed().as_secs(),
    }))
}

fn core_info(node: &Node, _: &Args) -> Result<Value, RpcError> {
    Ok(json!({
        "name": node.name,
        "version": version(),
        "listen": node.listens,
        "state_dir": node.state_dir,
        "draining": node.proxy.is_draining(),
        "log_level": node.log.level(),
    }))
}

/// `core.sockets_list`: the listening sockets, as Kamailio lists them.
fn core_sockets_list(node: &Node, _: &Args) -> Result<Value, RpcError> {
    let sockets: Vec<Value> = node
        .listens
        .iter()
        .filter_map(|l| {
            let (proto, addr) = l.split_once(':')?;
            let addr: std::net::SocketAddr = addr.parse().ok()?;
            Some(json!({
                "proto": proto,
                "address": addr.ip().to_string(),
                "port": addr.port(),
                "ipv6": addr.is_ipv6(),
                "connections": (proto == "tcp").then(|| {
                    node.proxy
                        .metrics()
                        .connections
                        .get_or_create(&limes_actors::metrics::TransportLabels { transport: "tcp" })
                        .get()
                }),
            }))
        })
        .collect();
    Ok(json!({ "socket": sockets }))
}

/// `core.set_log_level LEVEL`: the new level applies at once (a reload sets the file's).
fn core_set_log_level(node: &Node, args: &Args) -> Result<Value, RpcError> {
    let level = args.need(0)?;
    let was = node
        .log
        .set(level)
        .map_err(|e| RpcError::new(-32602, format!("Invalid params: core.set_log_level: {e:#}")))?;
    tracing::info!("log level changed from {was} to {level} over JSON-RPC");
    Ok(json!({ "level": level, "was": was }))
}

/// `sip.ping URI [TIMEOUT_S]`: an OPTIONS of the node's own; waits for its outcome
/// (the admin server runs methods on its blocking pool, so a wait holds no I/O thread).
fn sip_ping(node: &Node, args: &Args) -> Result<Value, RpcError> {
    let uri = args.need(0)?;
    let timeout = std::time::Duration::from_secs_f64(args.number(1).unwrap_or(5.0));
    let (done, outcome) = std::sync::mpsc::sync_channel(1);
    node.proxy
        .originate(limes_sip::Method::Options, uri, timeout, done)
        .map_err(|e| RpcError::new(-32602, format!("Invalid params: sip.ping: URI: {e}")))?;
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

fn list_methods(_: &Node, _: &Args) -> Result<Value, RpcError> {
    Ok(json!(METHODS.iter().map(|s| s.name).collect::<Vec<_>>()))
}

fn method_help(_: &Node, args: &Args) -> Result<Value, RpcError> {
    let name = args.need(0)?;
    let s = spec(name).ok_or_else(|| RpcError::not_found(name))?;
    Ok(json!({
        "method": s.name,
        "help": s.help,
        "usage": format!("{} {}", s.name, s.sig.usage()).trim_end(),
        "params": s.sig.describe(),
    }))
}

fn error(code: i64, message: &str, id: Value) -> Value {
    json!({"jsonrpc": "2.0", "error": {"code": code, "message": message}, "id": id})
}

/// Handles one member of a call (JSON-RPC 2.0 §4, §5, §6): `None` for a notification (a
/// valid request with no `id`). What is not a valid request object is answered `-32600`
/// with its `id` when that can be read, else `null`, notification or not. Each call is
/// logged (method, source, outcome).
pub fn handle_one(node: &Node, req: &Value, source: &str) -> Option<Value> {
    let Some(obj) = req.as_object() else {
        return Some(error(-32600, "Invalid Request: not an object", Value::Null));
    };
    let id = obj.get("id");
    let valid_id = match id {
        None => None,
        Some(v @ (Value::String(_) | Value::Number(_) | Value::Null)) => Some(v.clone()),
        Some(_) => {
            return Some(error(
                -32600,
                "Invalid Request: id must be a string, a number or null",
                Value::Null,
            ))
        }
    };
    let invalid = |m: &str| Some(error(-32600, m, valid_id.clone().unwrap_or(Value::Null)));
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return invalid("Invalid Request: jsonrpc must be \"2.0\"");
    }
    let Some(method) = obj.get("method").and_then(Value::as_str) else {
        return invalid("Invalid Request: method must be a string");
    };
    let result = match obj.get("params") {
        None => call(node, method, &[]),
        Some(Value::Array(a)) => call(node, method, a),
        Some(Value::Object(_)) => Err(RpcError::new(
            -32602,
            format!("Invalid params: {method}: positional parameters expected"),
        )),
        Some(_) => return invalid("Invalid Request: params must be an array or an object"),
    };
    match &result {
        Ok(_) => tracing::info!("admin request: source={source} method={method:?} outcome=ok"),
        Err(e) => tracing::info!(
            "admin request: source={source} method={method:?} outcome=error code={} message={:?}",
            e.code,
            e.message
        ),
    }
    let id = valid_id?;
    Some(match result {
        Ok(v) => json!({"jsonrpc": "2.0", "result": v, "id": id}),
        Err(e) => error(e.code, &e.message, id),
    })
}

/// Handles a request body: one object or a batch (each member answered on its own; no
/// answer at all when every member is a notification).
pub fn handle_body(node: &Node, body: &[u8], source: &str) -> Option<Value> {
    let parsed: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return Some(error(-32700, &format!("Parse error: {e}"), Value::Null)),
    };
    match parsed {
        Value::Array(batch) if batch.is_empty() => {
            Some(error(-32600, "Invalid Request: empty batch", Value::Null))
        }
        Value::Array(batch) => {
            let answers: Vec<Value> = batch
                .iter()
                .filter_map(|r| handle_one(node, r, source))
                .collect();
            (!answers.is_empty()).then_some(Value::Array(answers))
        }
        one => handle_one(node, &one, source),
    }
}
