//! Shared by the black-box tests: start the real `limes` binary on loopback, wait until
//! its admin API says ready, run sipp against it, read its metrics.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

/// Port blocks for tests running in parallel: each test takes 10 consecutive ports, all
/// below the kernel's ephemeral range (32768-60999), where an outgoing connection of any
/// process could hold one.
static NEXT_PORT: AtomicU16 = AtomicU16::new(0);

pub fn ports() -> u16 {
    let base = 10_000 + (std::process::id() % 80) as u16 * 100;
    base + NEXT_PORT.fetch_add(10, Ordering::Relaxed)
}

pub fn scenario(name: &str) -> String {
    let p: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests", "scenarios", name]
        .iter()
        .collect();
    p.display().to_string()
}

pub struct Node {
    pub child: Child,
    pub admin: String,
}

impl Node {
    /// Starts `limes run ARGS --admin 127.0.0.1:ADMIN_PORT` with a fresh state directory
    /// and waits for readiness. Without a `--config`, loopback is a trusted peer (the sipp
    /// peers of the proxy tests stand for a carrier's trunk, not for subscribers).
    pub fn start(args: &[&str], admin_port: u16) -> Node {
        let admin = format!("127.0.0.1:{admin_port}");
        let state = std::env::temp_dir().join(format!("limes-test-{admin_port}"));
        let _ = std::fs::remove_dir_all(&state);
        let mut all = vec!["run"];
        if !args.contains(&"--config") {
            all.extend_from_slice(&["--trusted", "127.0.0.0/8"]);
        }
        all.extend_from_slice(args);
        let state = state.display().to_string();
        all.extend_from_slice(&["--admin", &admin, "--state-dir", &state]);
        Node::spawn(&all, &admin)
    }

    /// Starts a node with `config` (TOML, written to a temporary file named after `name`)
    /// listening on UDP `127.0.0.1:PORT`, its admin API on `PORT + 9`.
    pub fn with_config(name: &str, config: &str, port: u16) -> Node {
        let path = std::env::temp_dir().join(format!("limes-{name}-{port}.toml"));
        std::fs::write(&path, config).expect("config written");
        Node::start(
            &[
                "--config",
                &path.display().to_string(),
                "--listen",
                &format!("udp:127.0.0.1:{port}"),
            ],
            port + 9,
        )
    }

    /// Runs `limes ARGS` as given and waits until the admin API at `admin` is ready. The
    /// node's log is shown when `LIMES_TEST_LOG` is set (to a log filter).
    pub fn spawn(args: &[&str], admin: &str) -> Node {
        let log = std::env::var("LIMES_TEST_LOG").ok();
        let child = Command::new(env!("CARGO_BIN_EXE_limes"))
            .args(args)
            .env("RUST_LOG", log.as_deref().unwrap_or("info"))
            .stdout(Stdio::null())
            .stderr(if log.is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .expect("limes starts");
        let node = Node {
            child,
            admin: admin.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if http(&node.admin, "GET", "/health/ready", "").is_some_and(|(s, _)| s == 200) {
                return node;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("limes did not become ready on {}", node.admin);
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The value of one metric sample (`name{labels}`), 0 when absent.
    pub fn metric(&self, sample: &str) -> f64 {
        let (_, body) = http(&self.admin, "GET", "/metrics", "").expect("metrics answer");
        body.lines()
            .find_map(|l| l.strip_prefix(sample).and_then(|r| r.strip_prefix(' ')))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// Resident set size in KiB, from /proc.
    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, then the exit status within `bound`.
    pub fn terminate(&mut self, bound: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + bound;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.1 exchange; `(status, body)`.
pub fn http(addr: &str, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let status = raw.split_whitespace().nth(1)?.parse().ok()?;
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

/// A sipp process left running (a UAS); killed on drop.
pub struct Sipp(pub Child);

impl Sipp {
    /// Waits up to `bound` for a sipp started with `-m N` to end by itself: its exit
    /// status (success: every call completed as its scenario says).
    pub fn wait_done(&mut self, bound: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + bound;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.0.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Sipp {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sipp_command(args: &[&str]) -> Command {
    let mut c = Command::new("sipp");
    c.args(args)
        .args(["-nostdin", "-timeout", "60s", "-timeout_error"]);
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    c
}

/// Starts a sipp UAS on `port` with `scenario`.
pub fn uas(scenario_file: &str, port: u16, extra: &[&str]) -> Sipp {
    let port = port.to_string();
    let sf = scenario(scenario_file);
    let mut args = vec!["-sf", sf.as_str(), "-i", "127.0.0.1", "-p", port.as_str()];
    args.extend_from_slice(extra);
    let child = sipp_command(&args)
        .spawn()
        .expect("sipp is installed (Debian package sip-tester)");
    std::thread::sleep(Duration::from_millis(300));
    Sipp(child)
}

/// Runs a sipp UAC to completion; panics with its output unless every call succeeded.
pub fn uac(scenario_file: &str, remote: &str, port: u16, extra: &[&str]) -> Output {
    let port = port.to_string();
    let sf = scenario(scenario_file);
    let mut args = vec![
        remote,
        "-sf",
        sf.as_str(),
        "-i",
        "127.0.0.1",
        "-p",
        port.as_str(),
        "-s",
        "service",
    ];
    args.extend_from_slice(extra);
    let out = sipp_command(&args)
        .output()
        .expect("sipp is installed (Debian package sip-tester)");
    assert!(
        out.status.success(),
        "sipp {args:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The "Successful call" count from sipp's final screen.
pub fn successful_calls(out: &Output) -> u64 {
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter(|l| l.trim_start().starts_with("Successful call"))
        .filter_map(|l| l.rsplit('|').next()?.trim().parse().ok())
        .next_back()
        .unwrap_or(0)
}

impl Node {
    /// Calls a JSON-RPC method; `Ok(result)` or `Err(error message)`.
    pub fn rpc(&self, method: &str, params: &[&str]) -> Result<serde_json::Value, String> {
        let body =
            serde_json::json!({"jsonrpc": "2.0", "method": method, "params": params, "id": 1});
        let (_, text) = http(&self.admin, "POST", "/RPC", &body.to_string()).expect("RPC answers");
        let v: serde_json::Value = serde_json::from_str(&text).expect("RPC answer is JSON");
        match v.get("result") {
            Some(r) => Ok(r.clone()),
            None => Err(v["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_owned()),
        }
    }
}

/// A UDP peer speaking raw SIP from a chosen loopback address: sends one request and
/// returns the responses that come back within `wait`.
pub struct Peer {
    pub sock: std::net::UdpSocket,
}

impl Peer {
    pub fn bind(ip: &str) -> Peer {
        let sock = std::net::UdpSocket::bind((ip, 0)).expect("binds");
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        Peer { sock }
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        self.sock.local_addr().expect("bound")
    }

    /// Sends `text` (`{addr}` replaced by this peer's address) and collects responses
    /// until a final one arrives or `wait` passes.
    pub fn exchange(&self, to: &str, text: &str, wait: Duration) -> Vec<String> {
        let text = text.replace("{addr}", &self.addr().to_string());
        self.sock.send_to(text.as_bytes(), to).expect("sends");
        let deadline = Instant::now() + wait;
        let mut got = Vec::new();
        let mut buf = vec![0u8; 65536];
        while Instant::now() < deadline {
            if let Ok(n) = self.sock.recv(&mut buf) {
                let r = String::from_utf8_lossy(&buf[..n]).into_owned();
                let status: u16 = r
                    .split(' ')
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                got.push(r);
                if status >= 200 {
                    break;
                }
            }
        }
        got
    }
}

/// The status code of a response's text.
pub fn status(response: &str) -> u16 {
    response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// A response to `request` as a UAS writes it: Via, From, Call-ID and CSeq copied, a tag
/// on To.
pub fn answer(request: &str, status: u16, reason: &str) -> String {
    let mut out = format!("SIP/2.0 {status} {reason}\r\n");
    for line in request.split("\r\n").skip(1) {
        let name = line.split(':').next().unwrap_or_default().trim();
        match name {
            "Via" | "From" | "Call-ID" | "CSeq" | "Record-Route" => {
                out.push_str(line);
                out.push_str("\r\n");
            }
            "To" => {
                out.push_str(line);
                out.push_str(";tag=uas\r\n");
            }
            _ => {}
        }
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    out
}

/// The next message `peer` receives within `wait`.
pub fn receive(peer: &Peer, wait: Duration) -> Option<String> {
    peer.sock.set_read_timeout(Some(wait)).expect("timeout");
    let mut buf = vec![0u8; 65536];
    let n = peer.sock.recv(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// The values of header `name` in `msg` (any case of the name), in order.
pub fn header<'a>(msg: &'a str, name: &str) -> Vec<&'a str> {
    msg.split("\r\n")
        .filter_map(|l| l.split_once(':'))
        .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
        .collect()
}

/// The last of a list of responses (the final one), or "".
pub fn final_of(responses: &[String]) -> &str {
    responses.last().map(String::as_str).unwrap_or("")
}

/// The Authorization value answering a REGISTER challenge for `domain` as `user`
/// (`nc`: the count).
pub fn answer_register(
    c: &limes_sip::digest::Challenge<'_>,
    (user, password): (&str, &str),
    domain: &str,
    nc: u32,
) -> String {
    let creds = limes_sip::digest::ClientCredentials {
        username: user,
        password: Some(password),
        ha1: None,
    };
    limes_sip::digest::authorize(
        c,
        &creds,
        "REGISTER",
        &format!("sip:{domain}"),
        "cn",
        nc,
        b"",
    )
    .expect("the challenge is answerable")
}

/// A REGISTER (`text`, for `domain`) of `user` sent by `peer` to `to`, answered as a
/// phone does: the 401's challenge, then the same request with credentials (the
/// challenge is stateless, so the CSeq is used once by the registrar). The responses to
/// the second.
pub fn register_authed(
    peer: &Peer,
    to: &str,
    domain: &str,
    credentials: (&str, &str),
    cseq: u32,
    text: &str,
) -> Vec<String> {
    let challenge = peer.exchange(to, text, Duration::from_secs(2));
    assert_eq!(status(final_of(&challenge)), 401, "{challenge:?}");
    let www = header(final_of(&challenge), "WWW-Authenticate");
    let c = limes_sip::digest::Challenge::parse(www[0]).expect("challenge parses");
    let auth = answer_register(&c, credentials, domain, cseq);
    let with_auth = text.replacen(
        "Content-Length: 0\r\n",
        &format!("Authorization: {auth}\r\nContent-Length: 0\r\n"),
        1,
    );
    peer.exchange(to, &with_auth, Duration::from_secs(2))
}
