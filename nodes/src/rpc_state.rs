//! JSON-RPC methods for the live state: subscribers, trusted peers, address groups, the
//! location table (`ul.*`, with Kamailio's field names), blocked sources and reload.

use std::net::{IpAddr, SocketAddr};

use limes_actors::proxy::edge::unix_now;
use limes_actors::registrar::{Contact, Meta};
use limes_actors::tables::{AddressEntry, Origin, Proto, Subscriber, TableError, TrustedPeer};
use limes_actors::transport::dest_of_uri;
use limes_sip::registrar::{q_text, Binding};
use limes_sip::uri::Uri;
use serde_json::{json, Value};

use crate::config::parse_net;
use crate::rpc::{Node, RpcError};
use crate::rpc_params::Args;

fn table_error(e: TableError) -> RpcError {
    match e {
        TableError::NotFound(what) => RpcError::new(404, format!("not found: {what}")),
        TableError::Invalid(why) => RpcError::new(-32602, format!("Invalid params: {why}")),
        other => RpcError::new(500, other.to_string()),
    }
}

fn invalid(why: impl std::fmt::Display) -> RpcError {
    RpcError::new(-32602, format!("Invalid params: {why}"))
}

pub fn core_reload(node: &Node, _: &Args) -> Result<Value, RpcError> {
    (node.reload)().map_err(|e| RpcError::new(500, format!("reload failed: {e:#}")))
}

fn subscriber_json(s: &Subscriber) -> Value {
    let mut hashes = Vec::new();
    if !s.ha1.is_empty() {
        hashes.push("MD5");
    }
    if !s.ha1_sha256.is_empty() {
        hashes.push("SHA-256");
    }
    json!({
        "user": s.user,
        "domain": s.domain,
        "attrs": s.attrs,
        "call_limit": s.call_limit,
        "hashes": hashes,
        "algorithms": if s.algorithms.is_empty() { json!("auth.algorithms") } else { json!(s.algorithms) },
        "origin": s.origin,
    })
}

/// `subscriber.add USER@DOMAIN PASSWORD [ATTR=VALUE...]` (`call_limit=N` sets the limit).
pub fn subscriber_add(node: &Node, args: &Args) -> Result<Value, RpcError> {
    let id = args.need(0)?;
    let password = args.need(1)?;
    let (user, domain) = split_id(id)?;
    let mut s = Subscriber::with_password(user, domain, password, Origin::Api);
    for kv in args.texts_from(2) {
        let (k, v) = kv
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| invalid(format!("subscriber.add: ATTR=VALUE: {kv:?}")))?;
        match k {
            "call_limit" => {
                s.call_limit = Some(v.parse().map_err(|_| {
                    invalid(format!("subscriber.add: call_limit: {v:?} is not a number"))
                })?)
            }
            "algorithms" => {
                let names: Vec<&str> = v.split(',').collect();
                s.set_algorithms(&names)
                    .map_err(|e| invalid(format!("subscriber.add: {e}")))?;
            }
            _ => {
                s.attrs.insert(k.to_owned(), v.to_owned());
            }
        }
    }
    let shown = subscriber_json(&s);
    node.proxy
        .edge()
        .tables
        .put_subscriber(s)
        .map_err(table_error)?;
    Ok(shown)
}

/// `USER@DOMAIN` split.
fn split_id(id: &str) -> Result<(&str, &str), RpcError> {
    id.rsplit_once('@')
        .filter(|(u, d)| !u.is_empty() && !d.is_empty())
        .ok_or_else(|| invalid(format!("USER@DOMAIN: {id:?}")))
}

pub fn subscriber_rm(node: &Node, args: &Args) -> Result<Value, RpcError> {
    let id = args.need(0)?;
    let gone = node
        .proxy
        .edge()
        .tables
        .remove_subscriber(id)
        .map_err(table_error)?;
    Ok(json!({ "removed": gone.id() }))
}

pub fn subscriber_list(node: &Node, _: &Args) -> Result<Value, RpcError> {
    let list: Vec<Value> = node
        .proxy
        .edge()
        .tables
        .subscribers()
        .iter()
        .map(|s| subscriber_json(s))
        .collect();
    Ok(Value::Array(list))
}

pub fn subscriber_show(node: &Node, args: &Args) -> Result<Value, RpcError> {
    let id = args.need(0)?;
    let (user, domain) = split_id(id)?;
    node.proxy
        .edge()
        .tables
        .subscriber(user, domain)
        .map(|s| subscriber_json(&s))
        .ok_or_else(|| RpcError::new(404, format!("not found: {id}")))
}

pub fn trusted_dump(node: &Node, _: &Args) -> Result<Value, RpcError> {
    let list: Vec<Value> = node
        .proxy
        .edge()
        .tables
        .trusted()
        .iter()
        .map(|t| {
            json!({
                "src_ip": t.net.to_string(),
                "proto": t.proto,
                "pattern": t.from_pattern,
                "tag": t.tag,
                "origin": t.origin,
            })
        })
        .collect();
    Ok(json!({ "trusted": list }))
}

/// `trusted.add CIDR [PROTO] [FROM_PATTERN] [TAG]`.
pub fn trusted_add(node: &Node, args: &Args) -> Result<Value, RpcError> {
    let net = cidr(args, 0)?;
    let proto = proto(args, 1)?;
    let peer = TrustedPeer {
        net,
        proto,
        from_pattern: args.text(2).map(str::to_owned),
        tag: args.text(3).map(Into::into),
        origin: Origin::Api,
    };
    node.proxy
        .edge()
        .tables
        .add_trusted(peer)
        .map_err(table_error)?;
    Ok(json!({ "added": net.to_string() }))
}

/// A CIDR parameter.
fn cidr(args: &Args, i: usize) -> Result<ipnet::IpNet, RpcError> {
    parse_net(args.need(i)?).map_err(|e| invalid(format!("CIDR: {e}")))
}

/// A PROTO parameter (not given: any).
fn proto(args: &Args, i: usize) -> Result<Proto, RpcError> {
    Proto::parse(args.text(i).unwrap_or("any")).map_err(|e| invalid(format!("PROTO: {e}")))
}

/// An integer parameter in the range its declaration gives.
fn int<T: TryFrom<i64>>(args: &Args, i: usize) -> Option<T> {
    args.int(i).and_then(|n| T::try_from(n).ok())
}

pub fn trusted_rm(node: &Node, args: &Args) -> Result<Value, RpcError> {
    let net = cidr(args, 0)?;
    let n = node
        .proxy
        .edge()
        .tables
        .remove_trusted(net)
        .map_err(table_error)?;
    Ok(json!({ "removed": n }))
}

pub fn address_dump(node: &Node, _: &Args) -> Result<Value, RpcError> {
    let list: Vec<Value> = node
        .proxy
        .edge()
        .tables
        .addresses()
        .iter()
        .map(|a| {
            json!({
                "gid": a.group,
                "ip": a.net.addr().to_string(),
                "mask": a.net.prefix_len(),
                "port": a.port,
                "proto": a.proto,
                "tag": a.tag,
                "origin": a.origin,
            })
        })
        .collect();
    Ok(json!({ "address": list }))
}

/// `address.add GROUP CIDR [PORT] [PROTO] [TAG]`.
pub fn address_add(node: &Node, args: &Args) -> Result<Value, RpcError> {
    let group: u32 = int(args, 0).unwrap_or_default();
    let net = cidr(args, 1)?;
    let port: u16 = int(args, 2).unwrap_or(0);
    let proto = proto(args, 3)?;
    node.proxy
        .edge()
        .tables
        .add_address(AddressEntry {
            group,
            net,
            port,
            proto,
            tag: args.text(4).map(Into::into),
            origin: Origin::Api,
        })
        .map_err(table_error)?;
    Ok(json!({ "added": format!("{group} {net}"), "port": port, "proto": proto }))
}

pub fn address_rm(node: &Node, args: &Args) -> Result<Value, RpcError> {
    let group: u32 = int(args, 0).unwrap_or_default();
    let net = cidr(args, 1)?;
    let n = node
        .proxy
        .edge()
        .tables
        .remove_address(group, net)
        .map_err(table_error)?;
    Ok(json!({ "removed": n }))
}

/// `permissions.allowSource GROUP IP [PORT] [PROTO]`: whether that source is in the
/// group, and the entry that admits it (as `allow_source_address` would see it).
pub fn allow_source(node: &Node, args: &Args) -> Result<Value, RpcError> {
    let group: u32 = int(args, 0).unwrap_or_default();
    let ip = ip(args, 1)?;
    let port: u16 = int(args, 2).unwrap_or(5060);
    let transport = match args.text(3).unwrap_or("udp") {
        t if t.eq_ignore_ascii_case("udp") => limes_actors::settings::Transport::Udp,
        t if t.eq_ignore_ascii_case("tcp") => limes_actors::settings::Transport::Tcp,
        other => return Err(invalid(format!("PROTO: {other:?} (udp or tcp)"))),
    };
    let groups = node.proxy.edge().tables.groups.load();
    Ok(match groups.allow(group, ip, port, transport) {
        Some(e) => json!({
            "allowed": true,
            "gid": e.group,
            "ip": e.net.addr().to_string(),
            "mask": e.net.prefix_len(),
            "port": e.port,
            "proto": e.proto,
            "tag": e.tag,
        }),
        None => json!({ "allowed": false, "gid": group }),
    })
}

fn q_json(q: Option<u16>) -> Value {
    match q {
        Some(q) => json!(q_text(q).parse::<f64>().unwrap_or(-1.0)),
        None => json!(-1),
    }
}

/// One contact with the fields `ul.dump` shows in Kamailio, plus flow and push data.
fn contact_json(c: &Contact, now: u64) -> Value {
    let m = &c.meta;
    json!({ "Contact": {
        "Address": c.contact,
        "Expires": c.remaining(now),
        "Q": q_json(c.q),
        "Call-ID": c.call_id,
        "CSeq": c.cseq,
        "User-Agent": m.user_agent,
        "Received": format!("sip:{}", m.received),
        "Path": m.path.join(","),
        "Socket": format!("{}:{}", m.transport.as_str(), m.socket),
        "Node": m.node,
        "Methods": m.methods,
        "Instance": m.instance,
        "Reg-Id": m.reg_id,
        "Flow": { "transport": m.transport.as_str(), "remote": m.received.to_string(), "local": m.socket.to_string() },
        "Push": m.push.as_ref().map(|p| json!({"provider": p.provider, "prid": p.prid, "param": p.param})),
        "Last-Modified": m.updated,
    }})
}

/// `ul.dump [LIMIT]`: every AoR with its contacts (at most LIMIT AoRs, 100,000 by default).
pub fn ul_dump(node: &Node, args: &Args) -> Result<Value, RpcError> {
    let limit: usize = int(args, 0).unwrap_or(100_000);
    let now = unix_now();
    let (all, truncated) = node.proxy.edge().location.dump(now, limit);
    let aors: Vec<Value> = all
        .iter()
        .map(|(aor, contacts)| {
            json!({ "Info": {
                "AoR": aor,
                "Contacts": contacts.iter().map(|c| contact_json(c, now)).collect::<Vec<_>>(),
            }})
        })
        .collect();
    Ok(json!({ "Domains": [ { "Domain": {
        "Domain": "location",
        "Size": aors.len(),
        "Truncated": truncated,
        "AoRs": aors,
    }}]}))
}

fn aor_param(node: &Node, args: &Args) -> Result<String, RpcError> {
    let raw = args.need(0)?;
    let with_scheme = if raw.contains(':') {
        raw.to_owned()
    } else {
        format!("sip:{raw}")
    };
    Uri::parse(&with_scheme)
        .map(|u| node.proxy.edge().aor(&u))
        .map_err(|e| invalid(format!("AOR {raw:?}: {e}")))
}

pub fn ul_lookup(node: &Node, args: &Args) -> Result<Value, RpcError> {
    let aor = aor_param(node, args)?;
    let now = unix_now();
    let contacts = node.proxy.edge().location.lookup(&aor, now);
    if contacts.is_empty() {
        return Err(RpcError::new(404, format!("AoR not found: {aor}")));
    }
    Ok(json!({
        "AoR": aor,
        "Contacts": contacts.iter().map(|c| contact_json(c, now)).collect::<Vec<_>>(),
    }))
}

/// `ul.rm AOR [CONTACT]`.
pub fn ul_rm(node: &Node, args: &Args) -> Result<Value, RpcError> {
    let aor = aor_param(node, args)?;
    let n = node
        .proxy
        .edge()
        .location
        .remove(&aor, args.text(1))
        .map_err(|e| RpcError::new(500, e.to_string()))?;
    if n == 0 {
        return Err(RpcError::new(404, format!("AoR not found: {aor}")));
    }
    Ok(json!({ "removed": n }))
}

/// `ul.add AOR CONTACT [EXPIRES] [Q]`: a static binding, reached at the Contact's
/// address (which must be an IP address).
pub fn ul_add(node: &Node, args: &Args) -> Result<Value, RpcError> {
    let aor = aor_param(node, args)?;
    let contact = args.need(1)?;
    let expires: u64 = int(args, 2).unwrap_or(3600);
    // Q in thousandths, as the registrar keeps it (declared 0 to 1).
    let q = args.number(3).map(|q| (q * 1000.0).round() as u16);
    let uri = Uri::parse(contact).map_err(|e| invalid(format!("CONTACT: {e}")))?;
    let dest = dest_of_uri(&uri)
        .ok_or_else(|| invalid("CONTACT: needs an IP address host and udp or tcp"))?;
    let max = node.proxy.edge().location.rules().max_expires;
    let expires = expires.min(u64::from(max)).max(1);
    let now = unix_now();
    let local: SocketAddr = node
        .listens
        .iter()
        .find_map(|l| {
            let (proto, addr) = l.split_once(':')?;
            (proto == dest.transport.as_str()).then(|| addr.parse().ok())?
        })
        .unwrap_or_else(|| SocketAddr::new(IpAddr::from([0, 0, 0, 0]), 0));
    let binding = Binding {
        contact: contact.to_owned(),
        q,
        expires_at: now + expires,
        call_id: format!("ul.add-{now}"),
        cseq: 1,
        meta: Meta {
            received: dest.addr,
            transport: dest.transport,
            socket: local,
            path: Vec::new(),
            user_agent: "ul.add".into(),
            methods: String::new(),
            instance: None,
            reg_id: None,
            push: None,
            updated: now,
            node: node.proxy.edge().location.node_name().map(str::to_owned),
        },
    };
    node.proxy
        .edge()
        .location
        .add(&aor, binding)
        .map_err(|e| RpcError::new(500, e.to_string()))?;
    Ok(json!({ "added": contact, "aor": aor, "expires": expires }))
}

pub fn auth_blocked(node: &Node, _: &Args) -> Result<Value, RpcError> {
    let list: Vec<Value> = node
        .proxy
        .edge()
        .auth
        .blocked(std::time::Instant::now())
        .into_iter()
        .map(|(ip, left)| json!({ "source": ip.to_string(), "seconds_left": left }))
        .collect();
    Ok(Value::Array(list))
}

/// An IP address parameter.
fn ip(args: &Args, i: usize) -> Result<IpAddr, RpcError> {
    let text = args.need(i)?;
    text.parse()
        .map_err(|_| invalid(format!("IP: {text:?} is not an IP address")))
}

pub fn auth_unblock(node: &Node, args: &Args) -> Result<Value, RpcError> {
    let ip = ip(args, 0)?;
    if node.proxy.edge().auth.unblock(ip) {
        Ok(json!({ "unblocked": ip.to_string() }))
    } else {
        Err(RpcError::new(404, format!("not blocked: {ip}")))
    }
}
