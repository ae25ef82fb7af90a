//! `limes import dbtext DIR`: reads Kamailio's db_text tables (`subscriber`, `trusted`,
//! `address`, `location`) and stores them in the state directory, so an existing
//! installation moves over unchanged; or, for a cluster, in etcd, from where every
//! running node takes them.
//!
//! The format, as Kamailio's db_text module reads it: the first line is the schema,
//! fields separated by spaces, each `name(type[,null|,auto])` with type `int`, `string`
//! or `double` (datetime is stored as int, text as string); every other line is a record
//! of `:`-separated values, `\:` a colon inside a value (and `\\`, `\n`, `\r`, `\t`,
//! `\0` the other escapes), spaces part of the value, an empty value null. A record is
//! read only when its line ends: the file must end with an empty line, or its last
//! record is not read (and is reported).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;

use anyhow::{bail, Context};
use limes_actors::registrar::{Contact, Location, Meta};
use limes_actors::tables::{AddressEntry, Origin, Proto, Subscriber, Tables, TrustedPeer};
use limes_actors::transport::dest_of_uri;
use limes_sip::registrar::Binding;
use limes_sip::uri::Uri;

/// A column type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    Int,
    String,
    Double,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: String,
    pub ty: Type,
    pub nullable: bool,
    pub auto: bool,
}

/// A value: `None` is null.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(i64),
    Str(String),
    Double(f64),
}

/// A table as read.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<Option<Value>>>,
    /// A last line without its line end: not read, as Kamailio would not read it.
    pub unterminated: Option<String>,
    /// The file's line number of each row (the schema is line 1).
    pub lines: Vec<usize>,
}

impl Table {
    /// The file's line number of row `i`.
    pub fn line(&self, i: usize) -> usize {
        self.lines.get(i).copied().unwrap_or(0)
    }

    /// A row as a map from column name to value.
    pub fn records(&self) -> impl Iterator<Item = HashMap<&str, &Option<Value>>> {
        self.rows.iter().map(|r| {
            self.columns
                .iter()
                .map(|c| c.name.as_str())
                .zip(r.iter())
                .collect()
        })
    }
}

fn parse_column(field: &str) -> anyhow::Result<Column> {
    let (name, rest) = field
        .split_once('(')
        .with_context(|| format!("schema field {field:?}: expected name(type[,null|,auto])"))?;
    let spec = rest
        .strip_suffix(')')
        .with_context(|| format!("schema field {field:?}: missing ')'"))?;
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        bail!("schema field {field:?}: bad column name");
    }
    let mut parts = spec.split(',');
    let ty = match parts.next().map(str::trim) {
        Some("int") => Type::Int,
        Some("string" | "str") => Type::String,
        Some("double") => Type::Double,
        other => bail!("schema field {field:?}: unknown type {other:?} (int, string, double)"),
    };
    let (mut nullable, mut auto) = (false, false);
    for flag in parts {
        match flag.trim() {
            "null" => nullable = true,
            "auto" => auto = true,
            other => bail!("schema field {field:?}: unknown flag {other:?} (null, auto)"),
        }
    }
    Ok(Column {
        name: name.to_owned(),
        ty,
        nullable,
        auto,
    })
}

/// Splits a record at unescaped colons, undoing the escapes.
fn split_record(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('n') => fields.last_mut().map(|f| f.push('\n')),
                Some('r') => fields.last_mut().map(|f| f.push('\r')),
                Some('t') => fields.last_mut().map(|f| f.push('\t')),
                Some('0') => fields.last_mut().map(|f| f.push('\0')),
                Some(other) => fields.last_mut().map(|f| f.push(other)),
                None => fields.last_mut().map(|f| f.push('\\')),
            },
            ':' => {
                fields.push(String::new());
                None
            }
            c => fields.last_mut().map(|f| f.push(c)),
        };
    }
    fields
}

/// Parses one table file's text.
pub fn parse(text: &str) -> anyhow::Result<Table> {
    let (body, unterminated) = match text.rfind('\n') {
        Some(i) if i + 1 < text.len() => (&text[..=i], Some(text[i + 1..].to_owned())),
        Some(_) => (text, None),
        None => ("", (!text.is_empty()).then(|| text.to_owned())),
    };
    let mut lines = body.lines();
    let schema = lines
        .next()
        .or(unterminated.as_deref())
        .context("empty table: no schema line")?;
    let columns = schema
        .split(' ')
        .filter(|f| !f.trim().is_empty())
        .map(|f| parse_column(f.trim()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if columns.is_empty() {
        bail!("schema line has no fields");
    }
    let mut rows = Vec::new();
    let mut numbers = Vec::new();
    for (n, line) in lines.enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        let fields = split_record(line);
        if fields.len() != columns.len() {
            bail!(
                "record {} has {} fields, the schema {}",
                n + 2,
                fields.len(),
                columns.len()
            );
        }
        let mut row = Vec::with_capacity(columns.len());
        for (c, f) in columns.iter().zip(fields) {
            if f.is_empty() {
                if !c.nullable && !c.auto && c.ty != Type::String {
                    bail!("record {}: {} is null but not nullable", n + 2, c.name);
                }
                row.push(None);
                continue;
            }
            row.push(Some(match c.ty {
                Type::Int => Value::Int(f.trim().parse().with_context(|| {
                    format!("record {}: {} = {f:?} is not an int", n + 2, c.name)
                })?),
                Type::Double => Value::Double(f.trim().parse().with_context(|| {
                    format!("record {}: {} = {f:?} is not a double", n + 2, c.name)
                })?),
                Type::String => Value::Str(f),
            }));
        }
        rows.push(row);
        numbers.push(n + 2);
    }
    Ok(Table {
        columns,
        rows,
        lines: numbers,
        unterminated: unterminated.filter(|_| body.lines().next().is_some()),
    })
}

fn text<'a>(r: &HashMap<&str, &'a Option<Value>>, name: &str) -> Option<&'a str> {
    match r.get(name).copied() {
        Some(Some(Value::Str(s))) => Some(s.as_str()),
        _ => None,
    }
}

fn int(r: &HashMap<&str, &Option<Value>>, name: &str) -> Option<i64> {
    match r.get(name).copied() {
        Some(Some(Value::Int(i))) => Some(*i),
        Some(Some(Value::Str(s))) => s.trim().parse().ok(),
        _ => None,
    }
}

fn number(r: &HashMap<&str, &Option<Value>>, name: &str) -> Option<f64> {
    match r.get(name).copied() {
        Some(Some(Value::Double(d))) => Some(*d),
        Some(Some(Value::Int(i))) => Some(*i as f64),
        Some(Some(Value::Str(s))) => s.trim().parse().ok(),
        _ => None,
    }
}

/// What an import did.
#[derive(Debug, Default, serde::Serialize)]
pub struct Report {
    pub subscribers: usize,
    pub trusted: usize,
    pub address: usize,
    pub location: usize,
    pub location_expired: usize,
    /// Rows skipped, with why.
    pub skipped: Vec<String>,
    /// Entries written to etcd (an import into a cluster).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etcd_writes: Option<u64>,
}

const SUBSCRIBER_CORE: &[&str] = &["id", "username", "domain", "password", "ha1", "ha1b"];

/// Subscribers from the `subscriber` table: a plain password is hashed (HA1 for MD5 and
/// SHA-256, realm = domain) and dropped; without one the MD5 `ha1` is kept. Every other
/// non-null column (`email_address`, `rpid`, ...) becomes an attribute.
pub fn subscribers(t: &Table, report: &mut Report) -> Vec<Subscriber> {
    let mut out = Vec::new();
    for (i, r) in t.records().enumerate() {
        let skip = |why: String| format!("subscriber line {}: {why}", t.line(i));
        let (Some(user), Some(domain)) = (text(&r, "username"), text(&r, "domain")) else {
            report.skipped.push(skip("no username or domain".into()));
            continue;
        };
        let mut s = match (text(&r, "password"), text(&r, "ha1")) {
            (Some(p), _) => Subscriber::with_password(user, domain, p, Origin::Api),
            (None, Some(h)) if h.len() != 32 || !h.bytes().all(|b| b.is_ascii_hexdigit()) => {
                report.skipped.push(skip(format!(
                    "{user}@{domain}: ha1 {h:?} is not an MD5 HA1 (32 hex digits, found {} characters)",
                    h.chars().count()
                )));
                continue;
            }
            (None, Some(h)) => Subscriber {
                user: user.to_owned(),
                domain: domain.to_ascii_lowercase(),
                ha1: h.to_ascii_lowercase(),
                ha1_sha256: String::new(),
                attrs: BTreeMap::new(),
                call_limit: None,
                algorithms: Vec::new(),
                origin: Origin::Api,
            },
            (None, None) => {
                report
                    .skipped
                    .push(skip(format!("{user}@{domain}: no password and no ha1")));
                continue;
            }
        };
        for (name, v) in &r {
            if SUBSCRIBER_CORE.contains(name) {
                continue;
            }
            let value = match v {
                Some(Value::Str(s)) => s.clone(),
                Some(Value::Int(n)) => n.to_string(),
                Some(Value::Double(d)) => d.to_string(),
                None => continue,
            };
            let key = if *name == "email_address" {
                "email"
            } else {
                name
            };
            s.attrs.insert(key.to_owned(), value);
        }
        out.push(s);
    }
    out
}

fn proto(p: Option<&str>) -> Result<Proto, String> {
    match p.map(str::to_ascii_lowercase).as_deref() {
        None | Some("any") | Some("") => Ok(Proto::Any),
        Some("udp") => Ok(Proto::Udp),
        Some("tcp") => Ok(Proto::Tcp),
        Some(other) => Err(format!("protocol {other:?} is not spoken here")),
    }
}

/// Every row `read` accepts; the others are reported as skipped, with why.
fn rows<T>(
    t: &Table,
    table: &str,
    report: &mut Report,
    read: impl Fn(&HashMap<&str, &Option<Value>>) -> Result<T, String>,
) -> Vec<T> {
    let mut out = Vec::new();
    for (i, r) in t.records().enumerate() {
        match read(&r) {
            Ok(e) => out.push(e),
            Err(why) => report
                .skipped
                .push(format!("{table} line {}: {why}", t.line(i))),
        }
    }
    out
}

pub fn trusted(t: &Table, report: &mut Report) -> Vec<TrustedPeer> {
    rows(t, "trusted", report, |r| {
        let ip = text(r, "src_ip").ok_or("no src_ip")?;
        let net = crate::config::parse_net(ip).map_err(|e| e.to_string())?;
        Ok(TrustedPeer {
            net,
            proto: proto(text(r, "proto"))?,
            from_pattern: text(r, "from_pattern").map(str::to_owned),
            tag: text(r, "tag").map(Into::into),
            origin: Origin::Api,
        })
    })
}

pub fn addresses(t: &Table, report: &mut Report) -> Vec<AddressEntry> {
    rows(t, "address", report, |r| {
        let ip = text(r, "ip_addr").ok_or("no ip_addr")?;
        let addr: std::net::IpAddr = ip.parse().map_err(|_| format!("{ip:?}: not an address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let mask = int(r, "mask").unwrap_or(max);
        let net = ipnet::IpNet::new(addr, u8::try_from(mask).unwrap_or(u8::MAX))
            .map_err(|_| format!("mask {mask} out of range"))?;
        Ok(AddressEntry {
            group: int(r, "grp")
                .and_then(|g| u32::try_from(g).ok())
                .unwrap_or(1),
            net: net.trunc(),
            port: int(r, "port")
                .and_then(|p| u16::try_from(p).ok())
                .unwrap_or(0),
            proto: proto(text(r, "proto"))?,
            tag: text(r, "tag").map(Into::into),
            origin: Origin::Api,
        })
    })
}

/// Seconds since the epoch from an int, or a `YYYY-MM-DD HH:MM:SS` datetime (UTC).
fn unix_time(r: &HashMap<&str, &Option<Value>>, name: &str) -> Option<i64> {
    if let Some(i) = int(r, name) {
        return Some(i);
    }
    let s = text(r, name)?;
    let (date, time) = s.trim().split_once(' ')?;
    let d: Vec<i64> = date
        .split('-')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let t: Vec<i64> = time
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let ([y, m, day], [hh, mm, ss]) = (d.as_slice(), t.as_slice()) else {
        return None;
    };
    // Days from civil (H. Hinnant).
    let y = if *m <= 2 { y - 1 } else { *y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// Bindings from the `location` table; `use_domain` decides the AoR as the registrar
/// does. Rows expired at `now` are dropped; `expires` 0 (permanent) becomes `max_expires`.
pub fn bindings(
    t: &Table,
    use_domain: bool,
    now: u64,
    max_expires: u32,
    report: &mut Report,
) -> Vec<(String, Contact)> {
    let mut out = Vec::new();
    for (i, r) in t.records().enumerate() {
        let row = (|| {
            let user = text(&r, "username").ok_or("no username")?;
            let aor = match text(&r, "domain") {
                Some(d) if use_domain => format!("{user}@{}", d.to_ascii_lowercase()),
                _ => user.to_owned(),
            };
            let contact = text(&r, "contact").ok_or("no contact")?;
            let expires = unix_time(&r, "expires").unwrap_or(0);
            let expires_at = if expires <= 0 {
                now + u64::from(max_expires)
            } else {
                expires as u64
            };
            if expires_at <= now {
                return Ok(None);
            }
            // Requests go to `received` when the UA was behind a NAT, else to the Contact.
            let reach = text(&r, "received").unwrap_or(contact);
            let dest = Uri::parse(reach)
                .ok()
                .and_then(|u| dest_of_uri(&u))
                .ok_or_else(|| format!("{reach:?}: no IP address to reach"))?;
            let socket = text(&r, "socket")
                .and_then(|s| s.split_once(':'))
                .and_then(|(_, a)| a.parse::<SocketAddr>().ok())
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
            let q = number(&r, "q")
                .filter(|q| (0.0..=1.0).contains(q))
                .map(|q| (q * 1000.0).round() as u16);
            let path = text(&r, "path")
                .map(|p| {
                    p.split(',')
                        .map(|v| {
                            v.trim()
                                .trim_start_matches('<')
                                .trim_end_matches('>')
                                .to_owned()
                        })
                        .filter(|v| !v.is_empty())
                        .collect()
                })
                .unwrap_or_default();
            Ok::<_, String>(Some((
                aor,
                Binding {
                    contact: contact.to_owned(),
                    q,
                    expires_at,
                    call_id: text(&r, "callid").unwrap_or("imported").to_owned(),
                    cseq: int(&r, "cseq")
                        .and_then(|c| u32::try_from(c).ok())
                        .unwrap_or(1),
                    meta: Meta {
                        received: dest.addr,
                        transport: dest.transport,
                        socket,
                        path,
                        user_agent: text(&r, "user_agent").unwrap_or_default().to_owned(),
                        methods: int(&r, "methods")
                            .map(|m| m.to_string())
                            .unwrap_or_default(),
                        instance: text(&r, "instance").map(str::to_owned),
                        reg_id: int(&r, "reg_id").and_then(|v| u32::try_from(v).ok()),
                        push: None,
                        updated: unix_time(&r, "last_modified").map_or(now, |t| t.max(0) as u64),
                        node: None,
                    },
                },
            )))
        })();
        match row {
            Ok(Some(b)) => out.push(b),
            Ok(None) => report.location_expired += 1,
            Err(why) => report
                .skipped
                .push(format!("location line {}: {why}", t.line(i))),
        }
    }
    out
}

fn read_table(dir: &Path, name: &str, report: &mut Report) -> anyhow::Result<Option<Table>> {
    let path = dir.join(name);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let table = parse(&text).with_context(|| format!("{}", path.display()))?;
    if let Some(last) = &table.unterminated {
        report.skipped.push(format!(
            "{name}: last line {last:?} has no line end (db_text needs an empty last line): not read"
        ));
    }
    Ok(Some(table))
}

/// Imports into a cluster: every table found in `dir` goes to etcd (through journals in
/// a scratch directory, handed over as a node's are), and this returns once etcd has it
/// all; the running nodes take it from there within a second. No node needs stopping.
pub fn import_shared(
    dir: &Path,
    mut settings: limes_cluster::etcd::EtcdSettings,
    rules: (bool, u32, bool),
    now: u64,
) -> anyhow::Result<Report> {
    use limes_cluster::{ClusterStore, Written};
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    // Not a member: an import only writes.
    settings.member = serde_json::Value::Null;
    let wait = settings.timeout * 2;
    let store = limes_cluster::etcd::EtcdStore::start(settings, runtime.handle(), Box::new(|_| {}))
        .map_err(anyhow::Error::msg)?;
    let scratch = std::env::temp_dir().join(format!("limes-import-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    let shared: std::sync::Arc<dyn ClusterStore> = store.clone();
    let imported = import(dir, &scratch, rules, now, Some(shared));
    let _ = std::fs::remove_dir_all(&scratch);
    let mut report = imported?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (tx, rx) = std::sync::mpsc::channel();
        store.confirm(Box::new(move |w| {
            let _ = tx.send(w);
        }));
        if rx.recv_timeout(wait) == Ok(Written::Shared) {
            break;
        }
        if std::time::Instant::now() > deadline {
            bail!(
                "etcd did not take the import within a minute: {}",
                store.status().last_error.unwrap_or_default()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    report.etcd_writes = Some(store.status().written);
    runtime.block_on(store.leave());
    Ok(report)
}

/// Imports every table found in `dir` into the journals of `state_dir`, and into `share`
/// as they are journaled. The node must not be running on that state directory (it holds
/// its lock).
pub fn import(
    dir: &Path,
    state_dir: &Path,
    (use_domain, max_expires, skip_bad): (bool, u32, bool),
    now: u64,
    share: Option<std::sync::Arc<dyn limes_cluster::ClusterStore>>,
) -> anyhow::Result<Report> {
    let mut report = Report::default();
    let tables = [
        ("subscriber", read_table(dir, "subscriber", &mut report)?),
        ("trusted", read_table(dir, "trusted", &mut report)?),
        ("address", read_table(dir, "address", &mut report)?),
        ("location", read_table(dir, "location", &mut report)?),
    ];
    if tables.iter().all(|(_, t)| t.is_none()) {
        bail!(
            "{}: no subscriber, trusted, address or location table",
            dir.display()
        );
    }
    let table = |name: &str| {
        tables
            .iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, t)| t.as_ref())
    };
    // Every row converted before anything is written: with a bad row and no
    // `skip_bad`, nothing is imported.
    let subs = table("subscriber").map_or_else(Vec::new, |t| subscribers(t, &mut report));
    let peers = table("trusted").map_or_else(Vec::new, |t| trusted(t, &mut report));
    let addrs = table("address").map_or_else(Vec::new, |t| addresses(t, &mut report));
    let binds = table("location").map(|t| bindings(t, use_domain, now, max_expires, &mut report));
    if !skip_bad && !report.skipped.is_empty() {
        bail!(
            "{} bad rows, nothing imported (--skip-bad-rows imports the others):\n  {}",
            report.skipped.len(),
            report.skipped.join("\n  ")
        );
    }
    let (journal, loaded) = limes_cluster::Journal::open_map(state_dir, "tables")
        .with_context(|| format!("opening {}", state_dir.display()))?;
    let store = Tables::new(Some((journal, loaded.entries)), usize::MAX)?;
    if let Some(s) = &share {
        store.share(s.clone());
    }
    for s in subs {
        store.put_subscriber(s)?;
        report.subscribers += 1;
    }
    for e in peers {
        store.add_trusted(e)?;
        report.trusted += 1;
    }
    for e in addrs {
        store.add_address(e)?;
        report.address += 1;
    }
    if let Some(binds) = binds {
        let location = Location::open(
            Some(state_dir),
            limes_sip::registrar::Rules::default(),
            usize::MAX,
            now,
            std::sync::Arc::default(),
        )?;
        if let Some(s) = &share {
            location.share(s.clone());
        }
        for (aor, b) in binds {
            location.add(&aor, b)?;
            report.location += 1;
        }
        location.maintain();
    }
    Ok(report)
}

#[cfg(test)]
mod tests;
