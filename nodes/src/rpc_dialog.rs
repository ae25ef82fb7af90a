//! Dialog methods, as Kamailio's dialog module names them: `dlg.list`, `dlg.list_ctx`,
//! `dlg.stats_active`, `dlg.profile_get_size`, `dlg.profile_list`, `dlg.end_dlg`, and
//! `dlg.set_var` for dialog variables.

use limes_actors::dialogs::cdr::{EndedBy, Var};
use serde_json::{json, Value};

use crate::rpc::{Node, RpcError};
use crate::rpc_params::{Arg, Args};

fn invalid(usage: &str, m: &str) -> RpcError {
    RpcError::new(-32602, format!("Invalid params: {usage}: {m}"))
}

/// The dialog number (declared a non-negative integer).
fn id_param(args: &Args) -> u64 {
    args.int(0).map_or(0, |n| n.unsigned_abs())
}

/// `dlg.list`: every tracked call.
pub fn list(node: &Node, _: &Args) -> Result<Value, RpcError> {
    let calls: Vec<_> = node.proxy.dialogs.all().iter().map(|c| c.view()).collect();
    Ok(json!(calls))
}

/// `dlg.list_ctx`: the calls with the node's context (lifetime, node name).
pub fn list_ctx(node: &Node, _: &Args) -> Result<Value, RpcError> {
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
pub fn stats_active(node: &Node, _: &Args) -> Result<Value, RpcError> {
    let s = node.proxy.dialogs.stats();
    Ok(json!({
        "early": s.early_dialogs,
        "active": s.active_dialogs,
        "all": s.all_dialogs,
    }))
}

fn profile_param<'a>(
    node: &Node,
    args: &'a Args,
    usage: &str,
) -> Result<(&'a str, Option<&'a str>), RpcError> {
    let profile = args.need(0)?;
    if !node.proxy.dialogs.profiles.is_declared(profile) {
        return Err(invalid(
            usage,
            &format!("no profile {profile:?} is declared"),
        ));
    }
    Ok((profile, args.text(1)))
}

/// `dlg.profile_get_size PROFILE [VALUE]`.
pub fn profile_get_size(node: &Node, args: &Args) -> Result<Value, RpcError> {
    let (profile, value) = profile_param(node, args, "dlg.profile_get_size")?;
    Ok(json!(node.proxy.dialogs.profiles.size(profile, value)))
}

/// `dlg.profile_list PROFILE [VALUE]`: the calls in it.
pub fn profile_list(node: &Node, args: &Args) -> Result<Value, RpcError> {
    let (profile, value) = profile_param(node, args, "dlg.profile_list")?;
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
pub fn end_dlg(node: &Node, args: &Args) -> Result<Value, RpcError> {
    const USAGE: &str = "dlg.end_dlg";
    let id = id_param(args);
    if node.proxy.dialogs.end_blocking(id, EndedBy::Operator) {
        Ok(json!({ "ended": id }))
    } else {
        Err(invalid(USAGE, &format!("no dialog {id}")))
    }
}

/// `dlg.set_var ID NAME VALUE`: a dialog variable (an integer when VALUE is a JSON
/// number, else a string); shown by `dlg.list` and written in the CDR.
pub fn set_var(node: &Node, args: &Args) -> Result<Value, RpcError> {
    const USAGE: &str = "dlg.set_var";
    let id = id_param(args);
    let name = args.need(1)?.to_owned();
    if name.len() > 64 {
        return Err(invalid(USAGE, "NAME: at most 64 characters"));
    }
    let value = match args.get(2) {
        Some(Arg::Int(n)) => Var::Int(*n),
        Some(Arg::Text(s)) if s.len() <= 1024 => Var::Str(s.clone()),
        _ => return Err(invalid(USAGE, "VALUE: a string of at most 1024 bytes")),
    };
    let call = node
        .proxy
        .dialogs
        .get(id)
        .ok_or_else(|| invalid(USAGE, &format!("no dialog {id}")))?;
    call.set_var(&name, value);
    Ok(json!(call.view()))
}

/// The `dialog:` group of `stats.get_statistics`: name, value, whether a counter.
pub fn statistics(node: &Node) -> Vec<(String, u64, bool)> {
    let s = node.proxy.dialogs.stats();
    [
        ("active_dialogs", s.active_dialogs, false),
        ("early_dialogs", s.early_dialogs, false),
        ("processed_dialogs", s.processed_dialogs, true),
        ("expired_dialogs", s.expired_dialogs, true),
        ("failed_dialogs", s.failed_dialogs, true),
    ]
    .into_iter()
    .map(|(k, v, counter)| (format!("dialog:{k}"), v, counter))
    .collect()
}
