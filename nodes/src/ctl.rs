//! `limes ctl`: sends one JSON-RPC call to a node's admin API and prints the answer as a
//! table (or as JSON). A plain HTTP/1.1 client on a blocking socket is all it needs. The
//! node's address and token come from the flags, the environment (`LIMES_ADMIN`,
//! `LIMES_TOKEN`) or the node's configuration file (`--config`), in that order.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{anyhow, Context};
use serde_json::{json, Value};

/// A command-line argument as a JSON value: integers and `true`/`false` keep their type,
/// `s:TEXT` forces a string (as kamcmd does), anything else is a string.
pub fn arg_value(arg: &str) -> Value {
    if let Some(s) = arg.strip_prefix("s:") {
        return json!(s);
    }
    if let Ok(n) = arg.parse::<i64>() {
        return json!(n);
    }
    match arg {
        "true" => json!(true),
        "false" => json!(false),
        _ => json!(arg),
    }
}

/// Where the node's admin API is, and its token.
#[derive(Debug, PartialEq)]
pub struct Target {
    pub admin: String,
    pub token: Option<String>,
}

impl Target {
    /// The flag's (or environment's) address and token, else the configuration file's
    /// (`admin.listen`, an unspecified address reached on loopback; `admin.token`), else
    /// `127.0.0.1:8080` with none.
    pub fn resolve(
        admin: Option<String>,
        token: Option<String>,
        config: Option<&std::path::Path>,
    ) -> anyhow::Result<Self> {
        let file = config
            .map(crate::config::Config::load)
            .transpose()?
            .map(|c| c.admin);
        let from_file = file
            .as_ref()
            .map(|a| match a.listen.parse::<std::net::SocketAddr>() {
                Ok(mut addr) if addr.ip().is_unspecified() => {
                    addr.set_ip(if addr.is_ipv6() {
                        std::net::Ipv6Addr::LOCALHOST.into()
                    } else {
                        std::net::Ipv4Addr::LOCALHOST.into()
                    });
                    addr.to_string()
                }
                _ => a.listen.clone(),
            });
        Ok(Self {
            admin: admin
                .or(from_file)
                .unwrap_or_else(|| "127.0.0.1:8080".to_owned()),
            token: token.or_else(|| file.map(|a| a.token).filter(|t| !t.is_empty())),
        })
    }
}

/// What a call can end with besides a result.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// The node answered with a JSON-RPC error.
    #[error("{message} (code {code})")]
    Rpc { code: i64, message: String },
    /// No answer: the node is not there, refused the token, or answered garbage.
    #[error(transparent)]
    Transport(#[from] anyhow::Error),
}

impl CtlError {
    /// The error as `--json` prints it.
    pub fn to_json(&self) -> Value {
        match self {
            CtlError::Rpc { code, message } => {
                json!({ "error": { "code": code, "message": message } })
            }
            CtlError::Transport(e) => json!({ "error": { "message": format!("{e:#}") } }),
        }
    }
}

/// Calls `method` on the node; returns the `result` or the error.
pub fn call(target: &Target, method: &str, args: &[String]) -> Result<Value, CtlError> {
    let (admin, token) = (target.admin.as_str(), target.token.as_deref());
    let body = json!({
        "jsonrpc": "2.0",
        "method": method,
        "params": args.iter().map(|a| arg_value(a)).collect::<Vec<_>>(),
        "id": 1,
    })
    .to_string();
    let addr = admin
        .to_socket_addrs()
        .with_context(|| format!("admin address {admin:?}"))
        .map_err(CtlError::Transport)?
        .next()
        .ok_or_else(|| anyhow!("admin address {admin:?} resolves to nothing"))?;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .with_context(|| format!("connecting to {admin}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .context("socket")?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "POST /RPC HTTP/1.1\r\nHost: {admin}\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .context("sending the request")?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).context("reading the answer")?;
    let text = String::from_utf8_lossy(&raw);
    let (head, payload) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("malformed HTTP answer"))?;
    let status = head.split_whitespace().nth(1).unwrap_or("");
    match status {
        "200" => {}
        "401" => {
            return Err(anyhow!(
                "admin API answered HTTP 401: a token is needed (--token, LIMES_TOKEN, or --config with admin.token)"
            )
            .into())
        }
        other => return Err(anyhow!("admin API answered HTTP {other}").into()),
    }
    let answer: Value = serde_json::from_str(payload.trim()).context("answer is not JSON")?;
    if let Some(err) = answer.get("error") {
        return Err(CtlError::Rpc {
            code: err.get("code").and_then(Value::as_i64).unwrap_or(0),
            message: err
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("error")
                .to_owned(),
        });
    }
    Ok(answer.get("result").cloned().unwrap_or(Value::Null))
}

fn cell(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn is_scalar(v: &Value) -> bool {
    !matches!(v, Value::Object(_) | Value::Array(_))
}

/// Rows of flat objects as columns (the header the union of their keys, in order).
fn columns(rows: &[Value], pad: &str, out: &mut String) {
    let mut cols: Vec<String> = Vec::new();
    for r in rows {
        for k in r.as_object().into_iter().flat_map(|o| o.keys()) {
            if !cols.contains(k) {
                cols.push(k.clone());
            }
        }
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            cols.iter()
                .map(|c| r.get(c).map(cell).unwrap_or_default())
                .collect()
        })
        .collect();
    let widths: Vec<usize> = cols
        .iter()
        .enumerate()
        .map(|(i, c)| {
            cells
                .iter()
                .map(|r| r[i].len())
                .chain([c.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |row: &[String]| {
        let cols: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        format!("{pad}{}\n", cols.join("  ").trim_end())
    };
    out.push_str(&line(&cols));
    for r in &cells {
        out.push_str(&line(r));
    }
}

fn render(v: &Value, depth: usize, out: &mut String) {
    let pad = "  ".repeat(depth);
    match v {
        Value::Object(map) => {
            let width = map
                .iter()
                .filter(|(_, v)| is_scalar(v))
                .map(|(k, _)| k.len())
                .max()
                .unwrap_or(0);
            for (k, v) in map {
                if is_scalar(v) {
                    let line = format!("{pad}{k:<width$}  {}", cell(v));
                    out.push_str(line.trim_end());
                    out.push('\n');
                } else {
                    out.push_str(&format!("{pad}{k}:\n"));
                    render(v, depth + 1, out);
                }
            }
        }
        Value::Array(items) if items.is_empty() => out.push_str(&format!("{pad}(none)\n")),
        Value::Array(rows)
            if rows
                .iter()
                .all(|r| r.as_object().is_some_and(|o| o.values().all(is_scalar))) =>
        {
            columns(rows, &pad, out)
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                if is_scalar(item) {
                    out.push_str(&format!("{pad}{}\n", cell(item)));
                } else {
                    if i > 0 {
                        out.push('\n');
                    }
                    render(item, depth, out);
                }
            }
        }
        other => out.push_str(&format!("{pad}{}\n", cell(other))),
    }
}

/// A readable table: an object as key/value rows (nested values indented under their
/// key), a list of flat objects as columns, other lists item after item, a scalar as
/// itself.
pub fn table(v: &Value) -> String {
    let mut out = String::new();
    render(v, 0, &mut out);
    out
}

/// The methods with their parameters, for `limes ctl --help`.
pub fn methods_help() -> String {
    let mut out = String::from("Methods (system.methodHelp METHOD for details):\n");
    for s in crate::rpc::METHODS {
        let usage = format!("{} {}", s.name, s.sig.usage());
        out.push_str(&format!("  {}\n      {}\n", usage.trim_end(), s.help));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_keep_their_type() {
        assert_eq!(arg_value("42"), json!(42));
        assert_eq!(arg_value("s:42"), json!("42"));
        assert_eq!(arg_value("alice@example.com"), json!("alice@example.com"));
        assert_eq!(arg_value("true"), json!(true));
    }

    #[test]
    fn tables() {
        assert_eq!(table(&json!({"a": 1, "long": "x"})), "a     1\nlong  x\n");
        assert_eq!(
            table(&json!([{"aor": "a", "n": 1}, {"aor": "bb", "n": 22}])),
            "aor  n\na    1\nbb   22\n"
        );
        assert_eq!(table(&json!("limes 0.1.0")), "limes 0.1.0\n");
    }

    #[test]
    fn nested_results_are_indented_tables() {
        let v = json!({"AoR": "alice", "Contacts": [{"Contact": {"Address": "sip:a", "Q": 1}}]});
        assert_eq!(
            table(&v),
            "AoR  alice\nContacts:\n  Contact:\n    Address  sip:a\n    Q        1\n"
        );
        let v = json!({"trusted": [{"src_ip": "10.0.0.0/8", "tag": null}], "empty": []});
        assert_eq!(
            table(&v),
            "empty:\n  (none)\ntrusted:\n  src_ip      tag\n  10.0.0.0/8\n"
        );
    }

    #[test]
    fn the_target_comes_from_flags_then_the_file() {
        let dir = std::env::temp_dir().join(format!("limes-ctl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("limes.toml");
        std::fs::write(
            &file,
            "[admin]\nlisten = \"0.0.0.0:9090\"\ntoken = \"t0k\"\n",
        )
        .expect("file");
        let t = Target::resolve(None, None, Some(&file)).expect("resolved");
        assert_eq!(
            (t.admin.as_str(), t.token.as_deref()),
            ("127.0.0.1:9090", Some("t0k"))
        );
        let t = Target::resolve(Some("10.0.0.1:1".into()), Some("x".into()), Some(&file))
            .expect("resolved");
        assert_eq!(
            (t.admin.as_str(), t.token.as_deref()),
            ("10.0.0.1:1", Some("x"))
        );
        let t = Target::resolve(None, None, None).expect("default");
        assert_eq!((t.admin.as_str(), t.token), ("127.0.0.1:8080", None));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
