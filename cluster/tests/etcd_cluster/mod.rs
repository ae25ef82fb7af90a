//! A real etcd cluster for tests: N members of Debian's `etcd-server` on loopback ports,
//! each in a data directory of its own, killed (and their directories removed) on drop.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct EtcdCluster {
    members: Vec<Option<Child>>,
    /// Each member's command line, to start it again.
    args: Vec<Vec<String>>,
    pub clients: Vec<String>,
    dir: PathBuf,
}

impl EtcdCluster {
    /// Starts `n` members with client ports from `base` (peer ports from `base + n`) and
    /// waits until every one answers.
    pub fn start(n: usize, base: u16) -> EtcdCluster {
        let dir = std::env::temp_dir().join(format!("limes-etcd-{base}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let peer = |i: usize| format!("http://127.0.0.1:{}", base + (n + i) as u16);
        let clients: Vec<String> = (0..n)
            .map(|i| format!("http://127.0.0.1:{}", base + i as u16))
            .collect();
        let initial: Vec<String> = (0..n).map(|i| format!("m{i}={}", peer(i))).collect();
        let initial = initial.join(",");
        let args: Vec<Vec<String>> = (0..n)
            .map(|i| {
                let data = dir.join(format!("m{i}"));
                std::fs::create_dir_all(&data).expect("etcd data dir");
                [
                    "--name",
                    &format!("m{i}"),
                    "--data-dir",
                    &data.display().to_string(),
                    "--listen-client-urls",
                    &clients[i],
                    "--advertise-client-urls",
                    &clients[i],
                    "--listen-peer-urls",
                    &peer(i),
                    "--initial-advertise-peer-urls",
                    &peer(i),
                    "--initial-cluster",
                    &initial,
                    "--initial-cluster-state",
                    "new",
                    "--initial-cluster-token",
                    &format!("limes-test-{base}"),
                    "--heartbeat-interval",
                    "50",
                    "--election-timeout",
                    "500",
                ]
                .iter()
                .map(|a| a.to_string())
                .collect()
            })
            .collect();
        let members = args.iter().map(|a| Some(spawn(a))).collect();
        let cluster = EtcdCluster {
            members,
            args,
            clients,
            dir,
        };
        for c in &cluster.clients {
            assert!(
                cluster.healthy(c, Duration::from_secs(20)),
                "etcd {c} is not healthy"
            );
        }
        cluster
    }

    /// Whether the member at `client` answers a read (through the cluster) within `bound`.
    pub fn healthy(&self, client: &str, bound: Duration) -> bool {
        let end = Instant::now() + bound;
        let url = format!("{client}/health");
        while Instant::now() < end {
            if let Some(body) = http_get(&url) {
                if body.contains("\"health\":\"true\"") {
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// Starts member `i` again on its data (after [`EtcdCluster::kill`]).
    pub fn restart(&mut self, i: usize) {
        if self.members[i].is_none() {
            self.members[i] = Some(spawn(&self.args[i]));
        }
    }

    /// Kills member `i` (SIGKILL).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn spawn(args: &[String]) -> Child {
    Command::new("etcd")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("etcd runs (Debian package etcd-server)")
}

/// Whether `ok` holds within `bound` (asked every 20 ms).
pub fn eventually(bound: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + bound;
    while Instant::now() < end {
        if ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    ok()
}

/// A plain HTTP GET on loopback; the body.
fn http_get(url: &str) -> Option<String> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest.split_once('/')?;
    let mut s = std::net::TcpStream::connect(host).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    write!(s, "GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())
}
