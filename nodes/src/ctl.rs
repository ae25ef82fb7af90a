//! `limes ctl`: sends one JSON-RPC call to a node's admin API and prints the answer as a
//! table (or as JSON). A plain HTTP/1.1 client on a blocking socket is all it needs.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
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

/// Calls `method` on the node at `admin`; returns the `result` or the error message.
pub fn call(
    admin: &str,
    token: Option<&str>,
    method: &str,
    args: &[String],
) -> anyhow::Result<Value> {
    let body = json!({
        "jsonrpc": "2.0",
        "method": method,
        "params": args.iter().map(|a| arg_value(a)).collect::<Vec<_>>(),
        "id": 1,
    })
    .to_string();
    let addr = admin
        .to_socket_addrs()
        .with_context(|| format!("admin address {admin:?}"))?
        .next()
        .ok_or_else(|| anyhow!("admin address {admin:?} resolves to nothing"))?;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .with_context(|| format!("connecting to {admin}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "POST /RPC HTTP/1.1\r\nHost: {admin}\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, payload) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("malformed HTTP answer"))?;
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        bail!("admin API answered HTTP {status}");
    }
    let answer: Value = serde_json::from_str(payload.trim()).context("answer is not JSON")?;
    if let Some(err) = answer.get("error") {
        let msg = err
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("error");
        bail!("{msg}");
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

/// A readable table: an object as key/value rows, a list of objects as columns, a list of
/// scalars one per line, a scalar as itself.
pub fn table(v: &Value) -> String {
    match v {
        Value::Object(map) => {
            let width = map.keys().map(String::len).max().unwrap_or(0);
            map.iter()
                .map(|(k, v)| format!("{k:<width$}  {}\n", cell(v)))
                .collect()
        }
        Value::Array(rows) if rows.iter().all(Value::is_object) && !rows.is_empty() => {
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
                format!("{}\n", cols.join("  ").trim_end())
            };
            let mut out = line(&cols);
            for r in &cells {
                out.push_str(&line(r));
            }
            out
        }
        Value::Array(items) => items.iter().map(|i| format!("{}\n", cell(i))).collect(),
        other => format!("{}\n", cell(other)),
    }
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
}
