//! The answering side: INVITE -> (180) -> 200 after a delay, or a configured failure;
//! 2xx retransmitted until the ACK (RFC 3261 §13.3.1.4); BYE, CANCEL (200 + 487), OPTIONS;
//! REGISTER answered 200, or challenged 401 and checked against a users file.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use limes_sip::build::Response;
use limes_sip::digest::{challenge_value, Algorithm, Credentials, NonceKey, NonceStatus};
use limes_sip::transaction::{ServerInput, ServerInviteTx, TimerConfig};
use limes_sip::{HeaderName, Message, Method};
use rustc_hash::FxHashMap;

use crate::engine::{Io, PerSocket, Role, Timers};
use crate::stats::Stats;
use crate::users::User;

pub struct UasConfig {
    pub ring: bool,
    pub answer_after: Duration,
    /// Answer every INVITE with this failure instead of 200.
    pub fail_code: Option<u16>,
    /// Challenge REGISTER (401) and check the credentials against these users.
    pub users: Vec<User>,
    /// Also challenge INVITEs (407), as an edge proxy does.
    pub challenge_invites: bool,
    pub realm: String,
    /// Stop after this long (None: until interrupted).
    pub duration: Option<Duration>,
    /// TCP: the INVITE transaction retransmits nothing (RFC 3261 §17.2.1).
    pub reliable: bool,
}

struct Dialog {
    sock: usize,
    from: SocketAddr,
    invite: Message,
    tx: ServerInviteTx,
    tag: String,
    ok: Option<Bytes>,
    /// 2xx retransmission interval and deadline (64*T1).
    retransmit: Option<(Instant, Duration, Instant)>,
    answer_at: Option<Instant>,
    confirmed: bool,
}

pub struct Uas {
    cfg: UasConfig,
    /// By Call-ID, shared with the timers (queuing a deadline copies no string).
    calls: FxHashMap<Arc<str>, Dialog>,
    timers: Timers<Arc<str>>,
    /// Per socket: the Contact value and the SDP answer.
    locals: PerSocket<(String, String)>,
    stats: Stats,
    start: Instant,
    timer_cfg: TimerConfig,
    nonces: NonceKey,
    /// Challenges sent: the salt of each nonce.
    challenges: u64,
    seq: u64,
}

impl Uas {
    pub fn new(cfg: UasConfig, now: Instant) -> Self {
        let secret = format!("{:?}{}", now, std::process::id());
        Self {
            cfg,
            calls: FxHashMap::default(),
            timers: Timers::default(),
            locals: PerSocket::default(),
            stats: Stats::default(),
            start: now,
            timer_cfg: TimerConfig::default(),
            nonces: NonceKey::new(secret.as_bytes(), 300),
            challenges: 0,
            seq: 0,
        }
    }

    /// A stateless answer to `msg` back to where it came from.
    fn reply(
        io: &mut Io,
        to: (usize, SocketAddr),
        msg: &Message,
        status: u16,
        reason: &str,
        tag: &str,
    ) {
        io.send(
            to.0,
            to.1,
            &Response::to(msg, status, reason, Some(tag)).finish(),
        );
    }

    /// The Contact value and the SDP answer of socket `sock` (a free function of the
    /// fields it reads, so a dialog can stay borrowed meanwhile).
    fn local<'a>(
        locals: &'a mut PerSocket<(String, String)>,
        reliable: bool,
        io: &Io,
        sock: usize,
    ) -> &'a (String, String) {
        locals.get(sock, |n| {
            let (local, ip) = (io.local_text(n), io.local_ip_text(n));
            let transport = if reliable { ";transport=tcp" } else { "" };
            (
                format!("<sip:uas@{local}{transport}>"),
                format!("v=0\r\no=uas 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\n"),
            )
        })
    }

    fn on_invite(
        &mut self,
        now: Instant,
        msg: Message,
        sock: usize,
        from: SocketAddr,
        io: &mut Io,
    ) {
        let Some(call_id) = msg.call_id() else {
            return;
        };
        if let Some(d) = self.calls.get_mut(call_id) {
            // A retransmission: the transaction repeats its last response.
            d.tx.handle(now, ServerInput::Request);
            while let Some(t) = d.tx.poll_transmit() {
                io.send(d.sock, d.from, &t.0);
            }
            return;
        }
        if self.cfg.challenge_invites
            && !self.cfg.users.is_empty()
            && self.authenticate(&msg, (sock, from), io, true).is_err()
        {
            return;
        }
        self.stats.attempted += 1;
        self.seq += 1;
        let call_id: Arc<str> = Arc::from(call_id);
        let tag = format!("uas{}", self.seq);
        let mut tx = ServerInviteTx::new(self.cfg.reliable, self.timer_cfg);
        if self.cfg.ring {
            let contact = &Self::local(&mut self.locals, self.cfg.reliable, io, sock).0;
            let ringing = Response::to(&msg, 180, "Ringing", Some(&tag))
                .header("Contact", contact)
                .finish();
            tx.handle(
                now,
                ServerInput::Respond {
                    status: 180,
                    bytes: ringing,
                },
            );
        }
        let answer_at = now + self.cfg.answer_after;
        let mut d = Dialog {
            sock,
            from,
            invite: msg,
            tx,
            tag,
            ok: None,
            retransmit: None,
            answer_at: Some(answer_at),
            confirmed: false,
        };
        while let Some(t) = d.tx.poll_transmit() {
            io.send(sock, from, &t.0);
        }
        self.calls.insert(call_id.clone(), d);
        self.timers.push(answer_at, call_id);
    }

    fn answer(&mut self, now: Instant, call_id: Arc<str>, io: &mut Io) {
        let Some(d) = self.calls.get_mut(&call_id) else {
            return;
        };
        d.answer_at = None;
        let (contact, sdp) = Self::local(&mut self.locals, self.cfg.reliable, io, d.sock);
        match self.cfg.fail_code {
            Some(code) => {
                let bytes = Response::to(&d.invite, code, "Load Failure", Some(&d.tag)).finish();
                d.tx.handle(
                    now,
                    ServerInput::Respond {
                        status: code,
                        bytes,
                    },
                );
            }
            None => {
                let mut r =
                    Response::to(&d.invite, 200, "OK", Some(&d.tag)).header("Contact", contact);
                for rr in d.invite.get_all(HeaderName::RecordRoute) {
                    r = r.header("Record-Route", rr);
                }
                let ok = r.with_body("application/sdp", sdp.as_bytes());
                d.tx.handle(
                    now,
                    ServerInput::Respond {
                        status: 200,
                        bytes: ok.clone(),
                    },
                );
                let t1 = self.timer_cfg.t1;
                d.retransmit = Some((now + t1, t1, now + self.timer_cfg.t1x64()));
                d.ok = Some(ok);
                self.stats.answered += 1;
                self.timers.push(now + t1, call_id.clone());
            }
        }
        while let Some(t) = d.tx.poll_transmit() {
            io.send(d.sock, d.from, &t.0);
        }
        if let Some(at) = d.tx.poll_timeout() {
            self.timers.push(at, call_id);
        }
    }

    fn fire(&mut self, now: Instant, call_id: Arc<str>, io: &mut Io) {
        if self
            .calls
            .get(&call_id)
            .is_some_and(|d| d.answer_at.is_some_and(|t| t <= now))
        {
            return self.answer(now, call_id, io);
        }
        let Some(d) = self.calls.get_mut(&call_id) else {
            return;
        };
        while let Some(t) = d.tx.poll_timer(now) {
            d.tx.handle(now, ServerInput::Timer(t));
        }
        while let Some(t) = d.tx.poll_transmit() {
            self.stats.retransmissions += 1;
            io.send(d.sock, d.from, &t.0);
        }
        let mut next = d.tx.poll_timeout();
        if let (Some((at, interval, give_up)), false) = (d.retransmit, d.confirmed) {
            if now >= give_up {
                self.stats.fail("no_ack");
                self.calls.remove(&call_id);
                return;
            }
            if at <= now {
                if let Some(ok) = &d.ok {
                    self.stats.retransmissions += 1;
                    io.send(d.sock, d.from, ok);
                }
                let interval = (interval * 2).min(self.timer_cfg.t2);
                d.retransmit = Some((now + interval, interval, give_up));
            }
            next = [next, d.retransmit.map(|r| r.0)]
                .into_iter()
                .flatten()
                .min();
        }
        if d.tx.is_terminated() && (d.confirmed || d.ok.is_none()) && self.cfg.fail_code.is_some() {
            self.calls.remove(&call_id);
            return;
        }
        if let Some(at) = next {
            self.timers.push(at, call_id);
        }
    }

    /// Digest authentication of `msg` against the users file: `Ok(())` when its
    /// credentials (in `header`) are right and fresh, else the response already sent
    /// (401/407 challenge, or 403).
    fn authenticate(
        &mut self,
        msg: &Message,
        to: (usize, SocketAddr),
        io: &mut Io,
        proxy: bool,
    ) -> Result<(), ()> {
        let now_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let (header, status, reason, challenge_header) = if proxy {
            (
                HeaderName::ProxyAuthorization,
                407,
                "Proxy Authentication Required",
                "Proxy-Authenticate",
            )
        } else {
            (
                HeaderName::Authorization,
                401,
                "Unauthorized",
                "WWW-Authenticate",
            )
        };
        let tag = "auth";
        let Some(creds) = msg.get(header).and_then(|h| Credentials::parse(h).ok()) else {
            self.challenges += 1;
            let nonce = self.nonces.make(now_unix, self.challenges, &self.cfg.realm);
            let chal = challenge_value(&self.cfg.realm, &nonce, Algorithm::Md5, false, None);
            let r = Response::to(msg, status, reason, Some(tag))
                .header(challenge_header, &chal)
                .finish();
            io.send(to.0, to.1, &r);
            return Err(());
        };
        let method = msg.method().map_or("", |m| m.as_str());
        let fresh = self.nonces.check(creds.nonce, now_unix, &self.cfg.realm) == NonceStatus::Fresh;
        let ok = self
            .cfg
            .users
            .iter()
            .find(|u| u.name == creds.username)
            .is_some_and(|u| {
                let ha1 =
                    limes_sip::digest::ha1(Algorithm::Md5, &u.name, &self.cfg.realm, &u.password);
                creds.verify(method, &ha1, b"")
            });
        if ok && fresh {
            return Ok(());
        }
        self.stats.fail(if fresh {
            "bad_credentials"
        } else {
            "stale_nonce"
        });
        Self::reply(io, to, msg, 403, "Forbidden", tag);
        Err(())
    }

    fn on_register(&mut self, msg: &Message, sock: usize, from: SocketAddr, io: &mut Io) {
        if !self.cfg.users.is_empty() {
            if msg.get(HeaderName::Authorization).is_none() {
                self.stats.attempted += 1;
            }
            if self.authenticate(msg, (sock, from), io, false).is_err() {
                return;
            }
        }
        self.stats.answered += 1;
        let contact = msg.get(HeaderName::Contact).unwrap_or("*");
        let r = Response::to(msg, 200, "OK", Some("reg"))
            .header("Contact", &format!("{contact};expires=3600"))
            .finish();
        io.send(sock, from, &r);
    }
}

impl Role for Uas {
    fn on_message(
        &mut self,
        now: Instant,
        msg: Message,
        sock: usize,
        from: SocketAddr,
        io: &mut Io,
    ) {
        let Some(method) = msg.method().cloned() else {
            return;
        };
        if method == Method::Invite {
            return self.on_invite(now, msg, sock, from, io);
        }
        let call_id = msg.call_id().unwrap_or_default();
        match method {
            Method::Ack => {
                if let Some(d) = self.calls.get_mut(call_id) {
                    if d.ok.is_some() {
                        d.confirmed = true;
                    } else {
                        d.tx.handle(now, ServerInput::Ack);
                    }
                }
            }
            Method::Bye => {
                let tag = msg.to_tag().unwrap_or("bye");
                Self::reply(io, (sock, from), &msg, 200, "OK", tag);
                if self.calls.remove(call_id).is_some() {
                    self.stats.completed += 1;
                }
            }
            Method::Cancel => {
                Self::reply(io, (sock, from), &msg, 200, "OK", "cancel");
                let Some(id) = self.calls.get_key_value(call_id).map(|(k, _)| k.clone()) else {
                    return;
                };
                if let Some(d) = self.calls.get_mut(&id).filter(|d| d.ok.is_none()) {
                    d.answer_at = None;
                    let bytes =
                        Response::to(&d.invite, 487, "Request Terminated", Some(&d.tag)).finish();
                    d.tx.handle(now, ServerInput::Respond { status: 487, bytes });
                    while let Some(t) = d.tx.poll_transmit() {
                        io.send(d.sock, d.from, &t.0);
                    }
                    self.stats.fail("cancelled");
                    if let Some(at) = d.tx.poll_timeout() {
                        self.timers.push(at, id);
                    }
                }
            }
            Method::Register => self.on_register(&msg, sock, from, io),
            _ => Self::reply(io, (sock, from), &msg, 200, "OK", "opt"),
        }
    }

    fn poll(&mut self, now: Instant, io: &mut Io) -> Option<Instant> {
        while let Some(id) = self.timers.pop_due(now) {
            self.fire(now, id, io);
        }
        // Dialogs are forgotten at BYE; those that never see one stay until the run ends
        // (bounded by the run's calls).
        self.timers.next()
    }

    fn finished(&self, now: Instant) -> bool {
        self.cfg.duration.is_some_and(|d| now >= self.start + d)
    }

    fn stats(&self) -> &Stats {
        &self.stats
    }
}
