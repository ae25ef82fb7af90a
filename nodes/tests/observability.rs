//! What an operator's tools see, checked by the tools themselves: `promtool check metrics`
//! on the text format, OpenMetrics when asked for, the metrics reference in
//! `dashboards/README.md` against a real scrape, the alert rules (`promtool check rules`,
//! `promtool test rules`), and a real Prometheus scraping a node under a short sipp load:
//! every dashboard and alert expression is queried through its HTTP API and returns
//! data without error. Needs Debian's `prometheus` (promtool) and sipp.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::Node;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf()
}

/// A GET with extra headers; `(status, content type, body)`.
fn get(addr: &str, path: &str, headers: &str) -> Option<(u16, String, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}Connection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let content_type = head
        .lines()
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_owned())
        })
        .unwrap_or_default();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Some((status, content_type, body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Runs `promtool ARGS` (stdin from `input`); its success and output.
fn promtool(args: &[&str], input: Option<&str>) -> (bool, String) {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(args)
        .current_dir(repo().join("dashboards"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed (Debian package prometheus)");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(input.unwrap_or_default().as_bytes())
        .expect("writes");
    drop(stdin);
    let out = child.wait_with_output().expect("promtool ends");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Each family of a text-format scrape: its type and the labels its samples carry.
fn families(text: &str) -> BTreeMap<String, (String, BTreeSet<String>)> {
    let mut out: BTreeMap<String, (String, BTreeSet<String>)> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            out.insert(name.to_owned(), (kind.to_owned(), BTreeSet::new()));
        } else if !line.starts_with('#') && !line.is_empty() {
            let name_end = line.find(['{', ' ']).unwrap_or(line.len());
            let sample = &line[..name_end];
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| {
                    let base = sample.strip_suffix(s)?;
                    out.contains_key(base).then_some(base)
                })
                .unwrap_or(sample)
                .to_owned();
            let labels = line[name_end..]
                .strip_prefix('{')
                .and_then(|l| l.split_once('}'))
                .map(|(l, _)| l)
                .unwrap_or_default();
            let names = labels
                .split("\",")
                .filter_map(|kv| kv.split_once('=').map(|(k, _)| k.trim().to_owned()))
                .filter(|k| k != "le");
            if let Some(f) = out.get_mut(&family) {
                f.1.extend(names);
            }
        }
    }
    out
}

/// The metrics reference: name, type, labels and whether it says the family appears
/// only once its objects or events exist ("none until" / "none while").
fn reference() -> BTreeMap<String, (String, BTreeSet<String>, bool)> {
    let text = std::fs::read_to_string(repo().join("dashboards/README.md")).expect("README");
    text.lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
            let labels = cells[2]
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            let later = cells[3].contains("none until") || cells[3].contains("none while");
            (
                cells[0].trim_matches('`').to_owned(),
                (cells[1].to_owned(), labels, later),
            )
        })
        .collect()
}

struct Prometheus {
    child: Child,
    addr: String,
    dir: PathBuf,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Prometheus {
    /// Prometheus on loopback scraping `target` every second as job `limes`.
    fn start(target: &str, port: u16) -> Prometheus {
        let dir = std::env::temp_dir().join(format!("limes-prometheus-{port}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: limes\n    static_configs:\n      - targets: [\"{target}\"]\n"
            ),
        )
        .expect("config");
        let addr = format!("127.0.0.1:{port}");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus is installed (Debian package prometheus)");
        let p = Prometheus { child, addr, dir };
        let end = Instant::now() + Duration::from_secs(30);
        while Instant::now() < end {
            if get(&p.addr, "/-/ready", "").is_some_and(|(s, _, _)| s == 200) {
                return p;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("prometheus did not become ready");
    }

    /// An instant query's JSON answer.
    fn query(&self, expr: &str) -> serde_json::Value {
        let q: String = expr
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        let (_, _, body) =
            get(&self.addr, &format!("/api/v1/query?query={q}"), "").expect("prometheus answers");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
    }
}

/// What an alert's expression compares: the part before its first comparison outside
/// brackets (it has data whether or not the alert fires).
fn compared(expr: &str) -> &str {
    let bytes = expr.as_bytes();
    let mut depth = 0i32;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'(' | b'{' | b'[' => depth += 1,
            b')' | b'}' | b']' => depth -= 1,
            b'>' | b'<' if depth == 0 => return expr[..i].trim(),
            b'=' if depth == 0 && bytes.get(i + 1) == Some(&b'=') => return expr[..i].trim(),
            _ => {}
        }
    }
    expr.trim()
}

/// The `expr` of every alert in alerts.yml (block scalars included).
fn alert_exprs() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(repo().join("dashboards/alerts.yml")).expect("alerts");
    let mut out = Vec::new();
    let mut lines = text.lines().peekable();
    let mut alert = String::new();
    while let Some(line) = lines.next() {
        let t = line.trim();
        if let Some(a) = t.strip_prefix("- alert: ") {
            alert = a.to_owned();
        } else if let Some(e) = t.strip_prefix("expr: ") {
            let e = if e == "|" {
                let mut block = Vec::new();
                while let Some(l) = lines.peek() {
                    if l.trim().is_empty() || l.trim_start().starts_with("for:") {
                        break;
                    }
                    block.push(l.trim().to_owned());
                    lines.next();
                }
                block.join(" ")
            } else {
                e.to_owned()
            };
            out.push((alert.clone(), e));
        }
    }
    out
}

#[test]
fn alert_rules_pass_promtool_and_their_unit_tests() {
    let (ok, out) = promtool(&["check", "rules", "alerts.yml"], None);
    assert!(ok, "{out}");
    assert!(out.contains("SUCCESS: 9 rules found"), "{out}");
    let (ok, out) = promtool(&["test", "rules", "alerts.test.yml"], None);
    assert!(ok, "{out}");
    assert_eq!(alert_exprs().len(), 9);
}

#[test]
fn dashboards_are_generated_from_their_definitions() {
    let out = Command::new("python3")
        .arg(repo().join("dashboards/generate.py"))
        .arg("--check")
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_real_prometheus_scrapes_a_node_and_every_expression_has_data() {
    let port = support::ports();
    let uas_port = port + 1;
    let dead = port + 3;
    // A trunk whose first destination never answers (its calls fail over after 300 ms)
    // and whose second is the sipp UAS; a declared profile and limit; dialogs tracked.
    let config = format!(
        "[flood]\nrate = 1000000\nburst = 2000000\n\n\
         [[trusted]]\ncidr = \"127.0.0.1/32\"\n\n\
         [dialog]\ntrack = true\n\n\
         [[dialog.profile]]\nname = \"total\"\n\n\
         [[dialog.limit]]\nprofile = \"total\"\nmax = 1000\nstatus = 503\n\n\
         [[trunk]]\nname = \"lab\"\ntimeout_ms = 300\nping_interval_s = 1\nping_failures = 100\n\
         destinations = [ {{ uri = \"sip:127.0.0.1:{dead}\", priority = 1 }}, {{ uri = \"sip:127.0.0.1:{uas_port}\", priority = 2 }} ]\n\n\
         [[route]]\nname = \"to-lab\"\nsource = \"trusted\"\naction = \"trunk:lab\"\n"
    );
    let node = Node::with_config("observability", &config, port);

    // The text format passes promtool; OpenMetrics comes when asked for.
    let (status, content_type, text) = get(&node.admin, "/metrics", "").expect("scrape");
    assert_eq!(status, 200);
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let (ok, out) = promtool(&["check", "metrics"], Some(&text));
    assert!(ok && out.trim().is_empty(), "promtool check metrics: {out}");
    let (_, om_type, om) = get(
        &node.admin,
        "/metrics",
        "Accept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5\r\n",
    )
    .expect("scrape");
    assert!(
        om_type.starts_with("application/openmetrics-text"),
        "{om_type}"
    );
    assert!(om.ends_with("# EOF\n"));
    assert!(text.contains("\nlimes_build_info{version=\""), "{text}");
    for f in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
    ] {
        assert!(text.contains(&format!("\n{f} ")), "{f}");
    }
    assert!(
        !text.contains("00000000001\""),
        "float noise in a bucket label"
    );

    // The metrics reference and the node agree.
    let documented = reference();
    let scraped = families(&text);
    for (name, (kind, labels)) in &scraped {
        let Some((dkind, dlabels, _)) = documented.get(name) else {
            panic!("{name} is not in dashboards/README.md");
        };
        assert_eq!(kind, dkind, "{name}: type");
        if !labels.is_empty() {
            assert_eq!(labels, dlabels, "{name}: labels");
        }
    }

    // Prometheus scrapes the node (asking for OpenMetrics) under a short sipp load.
    let prometheus = Prometheus::start(&node.admin, port + 5);
    let _uas = support::uas("call_uas.xml", uas_port, &[]);
    let proxy = format!("127.0.0.1:{port}");
    support::uac(
        "call_uac.xml",
        &format!("127.0.0.1:{uas_port}"),
        port + 2,
        &["-rsa", &proxy, "-m", "40", "-r", "10", "-d", "200"],
    );
    std::thread::sleep(Duration::from_secs(3));
    let up = prometheus.query("up{job=\"limes\"}");
    assert_eq!(up["data"]["result"][0]["value"][1], "1", "{up}");

    // Every family the reference lists is scraped now, unless it says it appears later.
    let (_, _, text) = get(&node.admin, "/metrics", "").expect("scrape");
    let scraped = families(&text);
    for (name, (_, _, later)) in &documented {
        assert!(
            *later || scraped.contains_key(name),
            "{name} is documented but not exported"
        );
    }

    let dashboards = Command::new("python3")
        .arg(repo().join("dashboards/generate.py"))
        .arg("--exprs")
        .output()
        .expect("python3 runs");
    let listing = String::from_utf8_lossy(&dashboards.stdout).into_owned();
    let mut exprs: Vec<(String, String)> = listing
        .lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, '\t');
            let (board, panel, expr) = (parts.next()?, parts.next()?, parts.next()?);
            Some((format!("{board}: {panel}"), expr.to_owned()))
        })
        .collect();
    assert!(exprs.len() >= 30, "{listing}");
    for (alert, expr) in alert_exprs() {
        exprs.push((format!("{alert} (as written)"), expr.clone()));
        exprs.push((
            format!("{alert} (what it compares)"),
            compared(&expr).to_owned(),
        ));
    }
    let mut empty = Vec::new();
    for (what, expr) in &exprs {
        let expr = expr
            .replace("$instance", ".+")
            .replace("$__rate_interval", "15s");
        let answer = prometheus.query(&expr);
        assert_eq!(answer["status"], "success", "{what}: {expr}: {answer}");
        let fires_only = what.ends_with("(as written)");
        if !fires_only
            && answer["data"]["result"]
                .as_array()
                .is_none_or(Vec::is_empty)
        {
            empty.push(format!("{what}: {expr}"));
        }
    }
    assert!(empty.is_empty(), "no data for:\n{}", empty.join("\n"));
}
