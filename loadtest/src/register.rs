//! Registrations at a rate: REGISTER, 401 with a digest challenge, REGISTER with
//! credentials, 200. Users are taken in turn from the users file; each keeps its Call-ID
//! and a growing CSeq, so after one pass through the file the registrations are refreshes.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use limes_sip::build::NewRequest;
use limes_sip::digest::{authorize, Algorithm, Challenge, ClientCredentials};
use limes_sip::transaction::{ClientInput, ClientNonInviteTx, Event, TimerConfig};
use limes_sip::{HeaderName, Message, Method};

use rustc_hash::FxHashMap;

use crate::engine::{pump, Io, Pacer, Role, Timers};
use crate::stats::Stats;
use crate::users::User;

pub struct RegisterConfig {
    pub registrar: SocketAddr,
    pub rate: f64,
    pub duration: Duration,
    pub expires: u32,
    pub users: Vec<User>,
    pub thread: usize,
    pub threads: usize,
    pub transport_token: &'static str,
    /// The challenge to answer when several are offered; `None`: the first.
    pub algorithm: Option<Algorithm>,
}

struct Pending {
    sock: usize,
    tx: ClientNonInviteTx,
    started: Instant,
    authed: bool,
}

pub struct Register {
    cfg: RegisterConfig,
    cseq: Vec<u32>,
    /// By user index: one registration in flight per user.
    pending: FxHashMap<usize, Pending>,
    timers: Timers<usize>,
    pid: u32,
    stats: Stats,
    start: Instant,
    pacer: Pacer,
    seq: u64,
    timer_cfg: TimerConfig,
}

impl Register {
    pub fn new(cfg: RegisterConfig, now: Instant) -> Self {
        Self {
            cseq: vec![0; cfg.users.len()],
            pending: FxHashMap::default(),
            timers: Timers::default(),
            pid: std::process::id(),
            stats: Stats::default(),
            start: now,
            pacer: Pacer::new(now, cfg.rate, cfg.duration),
            seq: 0,
            timer_cfg: TimerConfig::default(),
            cfg,
        }
    }

    /// One Call-ID per user for the whole run (refreshes keep it, RFC 3261 §10.2.4).
    fn call_id(&self, user: usize) -> String {
        format!("r{user}-{}-{}", self.cfg.thread, self.pid)
    }

    fn request(
        &mut self,
        user: usize,
        sock: usize,
        auth: Option<&str>,
        io: &Io,
    ) -> Option<bytes::Bytes> {
        let u = self.cfg.users.get(user)?;
        let local = io.local_text(sock);
        self.cseq[user] += 1;
        let cseq = self.cseq[user];
        let uri = format!("sip:{}", u.domain);
        let via = format!(
            "SIP/2.0/UDP {local};branch=z9hG4bKr{}.{}.{};rport",
            self.cfg.thread, user, cseq
        );
        let aor = format!("<sip:{}@{}>", u.name, u.domain);
        let from = format!("{aor};tag=r{user}");
        let contact = format!("<sip:{}@{local}>", u.name);
        let expires = self.cfg.expires.to_string();
        let mut extra = vec![("Expires", expires.as_str())];
        if let Some(a) = auth {
            extra.push(("Authorization", a));
        }
        Some(
            NewRequest {
                method: Method::Register,
                uri: &uri,
                via: &via,
                from: &from,
                to: &aor,
                call_id: &self.call_id(user),
                cseq,
                max_forwards: 70,
                route: &[],
                contact: Some(&contact),
                extra: &extra,
                body: None,
            }
            .build(),
        )
    }

    fn start_one(&mut self, now: Instant, io: &mut Io) {
        self.seq += 1;
        if self.cfg.users.is_empty() {
            return;
        }
        // This thread's share of the users: thread, thread + threads, ...
        let per_thread = self
            .cfg
            .users
            .len()
            .div_ceil(self.cfg.threads.max(1))
            .max(1);
        let user = (self.cfg.thread + self.cfg.threads * ((self.seq as usize - 1) % per_thread))
            % self.cfg.users.len();
        if self.pending.contains_key(&user) {
            self.stats.throttled += 1;
            return;
        }
        self.stats.attempted += 1;
        let sock = (self.seq as usize) % io.sockets().max(1);
        self.send(now, user, sock, None, now, io);
    }

    /// Sends a REGISTER for `user` (with `auth` once challenged) in a new transaction.
    fn send(
        &mut self,
        now: Instant,
        user: usize,
        sock: usize,
        auth: Option<&str>,
        started: Instant,
        io: &mut Io,
    ) {
        let Some(bytes) = self.request(user, sock, auth, io) else {
            return;
        };
        let mut tx = ClientNonInviteTx::start(
            now,
            bytes,
            self.cfg.transport_token == "TCP",
            self.timer_cfg,
        );
        pump(&mut tx, now, sock, self.cfg.registrar, io, &mut self.stats);
        if let Some(at) = tx.poll_timeout() {
            self.timers.push(at, user);
        }
        self.pending.insert(
            user,
            Pending {
                sock,
                tx,
                started,
                authed: auth.is_some(),
            },
        );
    }

    fn on_response(&mut self, now: Instant, msg: &Message, io: &mut Io) {
        let Some(user) = msg
            .call_id()
            .and_then(|c| user_of(c, self.cfg.thread, self.pid))
        else {
            return;
        };
        let Some(p) = self.pending.get_mut(&user) else {
            return;
        };
        p.tx.handle(now, ClientInput::Response(msg));
        let mut passed = false;
        while let Some(e) = p.tx.poll_event() {
            passed |= e == Event::Response;
        }
        let status = msg.status().unwrap_or(0);
        if !passed || status < 200 {
            return;
        }
        let (sock, started, authed) = (p.sock, p.started, p.authed);
        match status {
            200..=299 => {
                self.stats.answered += 1;
                self.stats.completed += 1;
                let _ = self
                    .stats
                    .setup
                    .record(now.duration_since(started).as_micros().max(1) as u64);
                self.pending.remove(&user);
            }
            401 if !authed => {
                let u = &self.cfg.users[user];
                let uri = format!("sip:{}", u.domain);
                let wanted = self.cfg.algorithm;
                let answer = msg
                    .get_all(HeaderName::WwwAuthenticate)
                    .filter_map(|h| Challenge::parse(h).ok())
                    .find(|c| wanted.is_none() || c.algorithm() == wanted)
                    .and_then(|c| {
                        let creds = ClientCredentials {
                            username: &u.name,
                            password: Some(&u.password),
                            ha1: None,
                        };
                        authorize(
                            &c,
                            &creds,
                            "REGISTER",
                            &uri,
                            &format!("c{}", self.seq),
                            1,
                            b"",
                        )
                        .ok()
                    });
                let Some(answer) = answer else {
                    self.stats.fail("bad_challenge");
                    self.pending.remove(&user);
                    return;
                };
                self.send(now, user, sock, Some(&answer), started, io);
            }
            s => {
                self.stats.fail(format!("status_{s}"));
                self.pending.remove(&user);
            }
        }
    }
}

/// The user a response's Call-ID names, if thread `thread` of process `pid` made it.
fn user_of(call_id: &str, thread: usize, pid: u32) -> Option<usize> {
    let mut parts = call_id.strip_prefix('r')?.splitn(3, '-');
    let user = parts.next()?.parse().ok()?;
    let ours = parts.next()?.parse() == Ok(thread) && parts.next()?.parse() == Ok(pid);
    ours.then_some(user)
}

impl Role for Register {
    fn on_message(
        &mut self,
        now: Instant,
        msg: Message,
        _sock: usize,
        _from: SocketAddr,
        io: &mut Io,
    ) {
        if !msg.is_request() {
            self.on_response(now, &msg, io);
        }
    }

    fn poll(&mut self, now: Instant, io: &mut Io) -> Option<Instant> {
        while self.pacer.take(now) {
            self.start_one(now, io);
        }
        while let Some(user) = self.timers.pop_due(now) {
            let Some(p) = self.pending.get_mut(&user) else {
                continue;
            };
            let timeout = pump(
                &mut p.tx,
                now,
                p.sock,
                self.cfg.registrar,
                io,
                &mut self.stats,
            )
            .timeout;
            if timeout {
                self.stats.fail("timeout");
                self.pending.remove(&user);
            } else if let Some(at) = p.tx.poll_timeout() {
                self.timers.push(at, user);
            }
        }
        [self.pacer.next(), self.timers.next()]
            .into_iter()
            .flatten()
            .min()
    }

    fn finished(&self, now: Instant) -> bool {
        (self.pacer.next().is_none() && self.pending.is_empty())
            || now >= self.start + self.cfg.duration + Duration::from_secs(40)
    }

    fn stats(&self) -> &Stats {
        &self.stats
    }

    fn close(&mut self) {
        for _ in self.pending.drain() {
            self.stats.fail("unfinished");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::user_of;

    #[test]
    fn only_this_threads_call_ids_name_a_user() {
        assert_eq!(user_of("r17-1-4242", 1, 4242), Some(17));
        assert_eq!(user_of("r17-2-4242", 1, 4242), None, "another thread");
        assert_eq!(user_of("r17-1-4243", 1, 4242), None, "another run");
        assert_eq!(user_of("r17-1-4242x", 1, 4242), None);
        assert_eq!(user_of("17-1-4242", 1, 4242), None);
        assert_eq!(user_of("rx-1-4242", 1, 4242), None);
        assert_eq!(user_of("r17", 1, 4242), None);
    }
}
