//! Dialog methods, as Kamailio's dialog module names them: `dlg.list`, `dlg.list_ctx`,
//! `dlg.stats_active`, `dlg.profile_get_size`, `dlg.profile_list`, `dlg.end_dlg`, and
//! `dlg.set_var` for dialog variables.

use limes_actors::dialogs::cdr::{EndedBy, Var};
use serde_json::{json, Value};

use crate::rpc::{Node, RpcError};

fn invalid(usage: &str, m: &str) -> RpcError {
    RpcError::new(-32602, format!("{usage}: {m}"))
}

fn text_param(params: &[Value], i: usize) -> Option<&str> {
    params.get(i).and_then(Value::as_str)
}

/// A dialog number given as a number or a string.
fn id_param(params: &[Value], usage: &str) -> Result<u64, RpcError> {
    params
        .first()
        .and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()))
        .ok_or_else(|| invalid(usage, "ID (the dialog's number in dlg.list) is missing"))
}

/// `dlg.list`: every tracked call.
pub fn list(node: &Node, _: &[Value]) -> Result<Value, RpcError> {
    let calls: Vec<_> = node.proxy.dialogs.all().iter().map(|c| c.view()).collect();
    Ok(json!(calls))
}

/// `dlg.list_ctx`: the calls with the node's context (lifetime, node name).
pub fn list_ctx(node: &Node, _: &[Value]) -> Result<Value, RpcError> {
    let d = &node.proxy.dialogs;
    let lifetime = d.lifetime().as_secs();
    let calls: Vec<_> = d
        .all()
        .iter()
        .map(|c| {
            let v = c.view();
            let timeout = v.start_ts.unwrap_or(v.init_ts) + lifetime;
            json!({ "dialog": v, "lifetime": lifetime, "timeout": timeout, "node": node.name })
        })
        .collect();
    Ok(json!(calls))
}

/// `dlg.stats_active`: early, active and all dialogs.
pub fn stats_active(node: &Node, _: &[Value]) -> Result<Value, RpcError> {
    let s = node.proxy.dialogs.stats();
    Ok(json!({
        "early": s.early_dialogs,
        "active": s.active_dialogs,
        "all": s.all_dialogs,
    }))
}

fn profile_param<'a>(
    node: &Node,
    params: &'a [Value],
    usage: &str,
) -> Result<(&'a str, Option<&'a str>), RpcError> {
    let profile = text_param(params, 0).ok_or_else(|| invalid(usage, "PROFILE is missing"))?;
    if !node.proxy.dialogs.profiles.is_declared(profile) {
        return Err(invalid(
            usage,
            &format!("no profile {profile:?} is declared"),
        ));
    }
    Ok((profile, text_param(params, 1)))
}

/// `dlg.profile_get_size PROFILE [VALUE]`.
pub fn profile_get_size(node: &Node, params: &[Value]) -> Result<Value, RpcError> {
    let (profile, value) = profile_param(node, params, "dlg.profile_get_size PROFILE [VALUE]")?;
    Ok(json!(node.proxy.dialogs.profiles.size(profile, value)))
}

/// `dlg.profile_list PROFILE [VALUE]`: the calls in it.
pub fn profile_list(node: &Node, params: &[Value]) -> Result<Value, RpcError> {
    let (profile, value) = profile_param(node, params, "dlg.profile_list PROFILE [VALUE]")?;
    let calls: Vec<_> = node
        .proxy
        .dialogs
        .in_profile(profile, value)
        .iter()
        .map(|c| c.view())
        .collect();
    Ok(json!(calls))
}

/// `dlg.end_dlg ID`: BYE to both sides, CDR with `ended_by: operator`.
pub fn end_dlg(node: &Node, params: &[Value]) -> Result<Value, RpcError> {
    const USAGE: &str = "dlg.end_dlg ID";
    let id = id_param(params, USAGE)?;
    if node.proxy.dialogs.end_blocking(id, EndedBy::Operator) {
        Ok(json!({ "ended": id }))
    } else {
        Err(invalid(USAGE, &format!("no dialog {id}")))
    }
}

/// `dlg.set_var ID NAME VALUE`: a dialog variable (an integer when VALUE is a JSON
/// number, else a string); shown by `dlg.list` and written in the CDR.
pub fn set_var(node: &Node, params: &[Value]) -> Result<Value, RpcError> {
    const USAGE: &str = "dlg.set_var ID NAME VALUE";
    let id = id_param(params, USAGE)?;
    let name = text_param(params, 1)
        .filter(|n| !n.is_empty() && n.len() <= 64)
        .ok_or_else(|| invalid(USAGE, "NAME (1 to 64 characters) is missing"))?;
    let value = match params.get(2) {
        Some(Value::Number(n)) => Var::Int(
            n.as_i64()
                .ok_or_else(|| invalid(USAGE, "an integer VALUE must fit 64 bits"))?,
        ),
        Some(Value::String(s)) if s.len() <= 1024 => Var::Str(s.clone()),
        _ => {
            return Err(invalid(
                USAGE,
                "VALUE (an integer, or a string of at most 1024 bytes) is missing",
            ))
        }
    };
    let call = node
        .proxy
        .dialogs
        .get(id)
        .ok_or_else(|| invalid(USAGE, &format!("no dialog {id}")))?;
    call.set_var(name, value);
    Ok(json!(call.view()))
}

/// The `dialog:` group of `stats.get_statistics`.
pub fn statistics(node: &Node) -> Vec<(String, Value)> {
    let s = node.proxy.dialogs.stats();
    [
        ("active_dialogs", s.active_dialogs),
        ("early_dialogs", s.early_dialogs),
        ("processed_dialogs", s.processed_dialogs),
        ("expired_dialogs", s.expired_dialogs),
        ("failed_dialogs", s.failed_dialogs),
    ]
    .into_iter()
    .map(|(k, v)| (format!("dialog:{k}"), json!(v)))
    .collect()
}
