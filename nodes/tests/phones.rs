//! Real SIP phones through the node: two baresip user agents (Debian's `baresip`)
//! register with digest authentication, call each other, answer and hang up, over UDP and
//! over TCP, against a node with the default configuration (only the two subscribers
//! added). Each phone is driven through its `ctrl_tcp` module: netstring-framed JSON
//! commands in, events (`CALL_INCOMING`, `CALL_ESTABLISHED`, `CALL_CLOSED`)
//! out.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{ports, Node};

/// One baresip process and its control connection.
struct Phone {
    child: Child,
    ctrl: TcpStream,
    /// Bytes received and not yet framed.
    pending: Vec<u8>,
    /// Events seen so far, in order.
    events: Vec<Value>,
    user: &'static str,
    dir: PathBuf,
}

impl Drop for Phone {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// 30 s of silence, 8 kHz mono: the phones' microphone (baresip's `ausine` works at
/// 48 kHz only, and the phones speak G.711).
fn silence(path: &Path) {
    let samples = 8000 * 30u32;
    let mut wav = Vec::with_capacity(44 + samples as usize * 2);
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + samples * 2).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    for v in [16u32, 0x0001_0001, 8000, 16000, 0x0010_0002] {
        wav.extend_from_slice(&v.to_le_bytes());
    }
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&(samples * 2).to_le_bytes());
    wav.resize(44 + samples as usize * 2, 0);
    std::fs::write(path, wav).expect("wav written");
}

impl Phone {
    /// Starts baresip as `user` on `IP:SIP_PORT`, its outbound proxy the node at `node`
    /// over `transport`, controlled on `ctrl_port`. A subscriber's phone (`subscriber`)
    /// registers with the password `USER-pw`; another (a PBX) neither registers nor
    /// knows a password.
    fn start(
        user: &'static str,
        (ip, subscriber): (&str, bool),
        node: &str,
        transport: &str,
        sip_port: u16,
        ctrl_port: u16,
    ) -> Phone {
        let dir = std::env::temp_dir().join(format!("limes-phone-{user}-{sip_port}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("phone dir");
        let wav = dir.join("silence.wav");
        silence(&wav);
        let config = format!(
            "sip_listen {ip}:{sip_port}\n\
             audio_player aufile,/dev/null\n\
             audio_alert aufile,/dev/null\n\
             audio_source aufile,{}\n\
             module_path /usr/lib/baresip/modules\n\
             module g711.so\n\
             module aufile.so\n\
             module_app account.so\n\
             module_app menu.so\n\
             module_app ctrl_tcp.so\n\
             ctrl_tcp_listen 127.0.0.1:{ctrl_port}\n",
            wav.display()
        );
        std::fs::write(dir.join("config"), config).expect("config");
        let (auth, regint) = if subscriber {
            (format!("auth_pass={user}-pw;"), 300)
        } else {
            (String::new(), 0)
        };
        let account = format!(
            "<sip:{user}@127.0.0.1;transport={transport}>;{auth}\
             outbound=\"sip:{node};transport={transport}\";regint={regint}\n"
        );
        std::fs::write(dir.join("accounts"), account).expect("accounts");
        let child = Command::new("baresip")
            .arg("-f")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("baresip starts (apt-get install baresip)");
        let deadline = Instant::now() + Duration::from_secs(10);
        let ctrl = loop {
            match TcpStream::connect(("127.0.0.1", ctrl_port)) {
                Ok(s) => break s,
                Err(e) if Instant::now() > deadline => panic!("{user}'s ctrl_tcp: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        ctrl.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        Phone {
            child,
            ctrl,
            pending: Vec::new(),
            events: Vec::new(),
            user,
            dir,
        }
    }

    fn command(&mut self, command: &str, params: &str) {
        let body = json!({"command": command, "params": params, "token": command}).to_string();
        let frame = format!("{}:{body},", body.len());
        self.ctrl.write_all(frame.as_bytes()).expect("command sent");
    }

    /// Reads what has arrived; keeps each complete netstring's event.
    fn poll(&mut self) {
        let mut buf = [0u8; 8192];
        match self.ctrl.read(&mut buf) {
            Ok(0) => panic!("{}'s baresip closed its control connection", self.user),
            Ok(n) => self.pending.extend_from_slice(&buf[..n]),
            Err(_) => return,
        }
        loop {
            let Some(colon) = self.pending.iter().position(|b| *b == b':') else {
                return;
            };
            let Some(len) = std::str::from_utf8(&self.pending[..colon])
                .ok()
                .and_then(|l| l.parse::<usize>().ok())
            else {
                panic!("bad netstring from {}: {:?}", self.user, self.pending);
            };
            if self.pending.len() < colon + 1 + len + 1 {
                return;
            }
            let v: Value = serde_json::from_slice(&self.pending[colon + 1..colon + 1 + len])
                .expect("ctrl_tcp sends JSON");
            self.pending.drain(..colon + len + 2);
            if v.get("event") == Some(&json!(true)) {
                self.events.push(v);
            }
        }
    }

    /// Waits for an event of `kind`; panics with every event seen when none comes.
    fn expect(&mut self, kind: &str, bound: Duration) -> Value {
        let deadline = Instant::now() + bound;
        let mut seen = 0;
        loop {
            if let Some(i) = self.events[seen..].iter().position(|e| e["type"] == kind) {
                let e = self.events[seen + i].clone();
                self.events.drain(..=seen + i);
                return e;
            }
            seen = self.events.len();
            assert!(
                Instant::now() < deadline,
                "{}: no {kind} within {bound:?}; events: {:?}",
                self.user,
                self.events
            );
            self.poll();
        }
    }
}

/// A node with the default configuration and the phones' subscribers, `127.0.0.2` a
/// trusted PBX; its SIP address and port, and its state directory.
fn node() -> (Node, (String, u16), PathBuf) {
    let p = ports();
    let config = std::env::temp_dir().join(format!("limes-phones-{p}.toml"));
    std::fs::write(
        &config,
        "[[subscriber]]\nuser = \"alice\"\ndomain = \"127.0.0.1\"\npassword = \"alice-pw\"\n\n\
         [[subscriber]]\nuser = \"bob\"\ndomain = \"127.0.0.1\"\npassword = \"bob-pw\"\n\n\
         [[trusted]]\ncidr = \"127.0.0.2/32\"\ntag = \"pbx\"\n",
    )
    .expect("config");
    let sip = format!("127.0.0.1:{p}");
    let node = Node::start(
        &[
            "--config",
            &config.display().to_string(),
            "--listen",
            &format!("udp:{sip}"),
            "--listen",
            &format!("tcp:{sip}"),
        ],
        p + 1,
    );
    let state = std::env::temp_dir().join(format!("limes-test-{}", p + 1));
    (node, (sip, p), state)
}

/// Waits until `user` has a binding; it must be over `transport` from a baresip.
fn registered(node: &Node, user: &str, transport: &str) {
    // A phone registers as it starts, often before its control connection is up (so
    // its REGISTER_OK event may be missed): the node's location says when.
    {
        let deadline = Instant::now() + Duration::from_secs(10);
        let contacts = loop {
            match node.rpc("ul.lookup", &[user]) {
                Ok(c) => break c,
                Err(e) if Instant::now() > deadline => panic!("{user} did not register: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        let c = &contacts["Contacts"][0]["Contact"];
        assert_eq!(c["Socket"].as_str().map(|s| &s[..3]), Some(transport));
        assert!(c["User-Agent"].as_str().unwrap_or("").contains("baresip"));
    }
}

/// `caller` calls bob, bob answers, they talk a second, `caller` hangs up; the dialog's
/// CDR is returned.
fn call(node: &Node, state: &Path, caller: &mut Phone, bob: &mut Phone) -> Value {
    caller.command("dial", "sip:bob@127.0.0.1");
    let incoming = bob.expect("CALL_INCOMING", Duration::from_secs(10));
    assert_eq!(
        incoming["peeruri"],
        format!("sip:{}@127.0.0.1", caller.user),
        "{incoming}"
    );
    caller.expect("CALL_RINGING", Duration::from_secs(5));
    bob.command("accept", "");
    caller.expect("CALL_ESTABLISHED", Duration::from_secs(10));
    bob.expect("CALL_ESTABLISHED", Duration::from_secs(10));
    let active = node.rpc("dlg.stats_active", &[]).expect("dlg.stats_active");
    assert_eq!(active["active"], 1, "{active}");

    std::thread::sleep(Duration::from_secs(1));
    caller.command("hangup", "");
    caller.expect("CALL_CLOSED", Duration::from_secs(10));
    let closed = bob.expect("CALL_CLOSED", Duration::from_secs(10));
    assert!(
        closed["param"]
            .as_str()
            .is_some_and(|p| p.contains("reset by peer")),
        "bob's call ends by the caller's BYE: {closed}"
    );
    // The BYE went through the node: the dialog ended by the caller, answered.
    let deadline = Instant::now() + Duration::from_secs(5);
    while node.rpc("dlg.stats_active", &[]).expect("stats")["all"] != 0 {
        assert!(Instant::now() < deadline, "the dialog did not end");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The CDR is written by the dialog's actor, a moment after the end.
    let file = state.join("cdr.jsonl");
    let cdr: Value = loop {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        if let Some(line) = text.lines().last() {
            break serde_json::from_str(line).expect("a CDR is JSON");
        }
        assert!(Instant::now() < deadline, "no CDR in {}", file.display());
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(cdr["Status"], 200, "{cdr}");
    assert_eq!(cdr["EndedBy"], "caller", "{cdr}");
    assert!(cdr["BillSec"].as_u64().is_some(), "{cdr}");
    cdr
}

fn subscribers_call(transport: &str) {
    let (node, (sip, p), state) = node();
    // baresip also binds the port after its SIP port: leave it free.
    let mut alice = Phone::start("alice", ("127.0.0.1", true), &sip, transport, p + 3, p + 5);
    let mut bob = Phone::start("bob", ("127.0.0.1", true), &sip, transport, p + 6, p + 8);
    registered(&node, "alice", transport);
    registered(&node, "bob", transport);
    // Both registered through a 401 challenge, alice's INVITE through a 407.
    assert_eq!(
        node.metric("limes_auth_challenges_total{status=\"401\"}"),
        2.0
    );
    let cdr = call(&node, &state, &mut alice, &mut bob);
    assert_eq!(
        node.metric("limes_auth_challenges_total{status=\"407\"}"),
        1.0
    );
    assert_eq!(cdr["Caller"], "alice", "{cdr}");
    assert_eq!(cdr["Source"], "subscriber", "{cdr}");
}

#[test]
fn two_baresip_phones_call_over_udp() {
    subscribers_call("udp");
}

#[test]
fn two_baresip_phones_call_over_tcp() {
    subscribers_call("tcp");
}

/// A PBX on a trusted address calls a registered phone: no challenge, no registration.
#[test]
fn a_trusted_pbx_calls_a_registered_baresip() {
    let (node, (sip, p), state) = node();
    let mut pbx = Phone::start("pbx", ("127.0.0.2", false), &sip, "udp", p + 3, p + 5);
    let mut bob = Phone::start("bob", ("127.0.0.1", true), &sip, "udp", p + 6, p + 8);
    registered(&node, "bob", "udp");
    let cdr = call(&node, &state, &mut pbx, &mut bob);
    assert_eq!(
        node.metric("limes_auth_challenges_total{status=\"407\"}"),
        0.0
    );
    assert_eq!(cdr["Source"], "pbx", "{cdr}"); // the trusted entry's tag
}
