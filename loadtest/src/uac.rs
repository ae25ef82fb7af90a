//! The calling side: places calls at a steady open-loop rate. Each call is INVITE
//! (answering a 401/407 once with digest credentials), 18x, 200, ACK, a hold, BYE, 200.
//! Retransmissions come from limes-sip's own client transactions, so loss shows as
//! retransmissions, not failures.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use limes_sip::build::NewRequest;
use limes_sip::digest::{authorize, Challenge, ClientCredentials};
use limes_sip::transaction::{ClientInput, ClientInviteTx, ClientNonInviteTx, TimerConfig};
use limes_sip::{HeaderName, Limits, Message, Method};
use rustc_hash::FxHashMap;

use crate::engine::{pump, Io, Pacer, PerSocket, Role, Timers};
use crate::stats::Stats;
use crate::users::User;

pub struct UacConfig {
    /// Request-URI of every INVITE, e.g. `sip:service@127.0.0.1:5080`.
    pub target: String,
    /// Where requests are sent (a proxy, or the UAS itself).
    pub proxy: SocketAddr,
    pub rate: f64,
    pub duration: Duration,
    pub call_length: Duration,
    pub max_concurrent: usize,
    pub users: Vec<User>,
    pub transport_token: &'static str,
    /// A call with no final response to its INVITE after this long has failed.
    pub setup_timeout: Duration,
    /// Distinguishes Call-IDs, tags and branches of this thread.
    pub thread: usize,
}

struct Call {
    call_id: String,
    /// The call's number: its key, and the base of its tag and branches.
    seq: u64,
    sock: usize,
    user: Option<usize>,
    cseq: u32,
    invite: ClientInviteTx,
    invite_at: Instant,
    ringing: bool,
    auth_sent: bool,
    /// Set by the 2xx: the dialog.
    to_tag: Option<String>,
    remote_target: String,
    route_set: Vec<String>,
    ack: Option<Bytes>,
    hangup_at: Option<Instant>,
    bye: Option<ClientNonInviteTx>,
    /// The earliest wake-up queued for this call: a later deadline is not queued again
    /// (that wake-up recomputes the call's next deadline), so the timer heap holds about
    /// one entry per call instead of one per state change.
    armed: Option<Instant>,
}

pub struct Uac {
    cfg: UacConfig,
    /// By the number that starts the Call-ID.
    calls: FxHashMap<u64, Call>,
    timers: Timers<u64>,
    pid: u32,
    /// The To header of every INVITE.
    to: String,
    /// The SDP offer of each socket.
    offers: PerSocket<String>,
    /// Header values of the request being built, reused.
    scratch: String,
    start: Instant,
    pacer: Pacer,
    seq: u64,
    stats: Stats,
    limits: Limits,
    timer_cfg: TimerConfig,
    /// After the last call starts, stragglers get this long to finish.
    drain: Duration,
}

impl Uac {
    pub fn new(cfg: UacConfig, now: Instant) -> Self {
        Self {
            pacer: Pacer::new(now, cfg.rate, cfg.duration),
            start: now,
            calls: FxHashMap::default(),
            timers: Timers::default(),
            pid: std::process::id(),
            to: format!("<{}>", cfg.target),
            offers: PerSocket::default(),
            scratch: String::new(),
            seq: 0,
            stats: Stats::default(),
            limits: Limits::default(),
            timer_cfg: TimerConfig::default(),
            drain: cfg.call_length + Duration::from_secs(40),
            cfg,
        }
    }

    fn start_call(&mut self, now: Instant, io: &mut Io) {
        self.seq += 1;
        if self.calls.len() >= self.cfg.max_concurrent {
            self.stats.throttled += 1;
            return;
        }
        self.stats.attempted += 1;
        let seq = self.seq;
        let sock = (seq as usize) % io.sockets().max(1);
        let mut call_id = String::with_capacity(40);
        num(&mut call_id, seq);
        call_id.push('-');
        num(&mut call_id, self.cfg.thread);
        call_id.push('-');
        num(&mut call_id, self.pid);
        call_id.push('@');
        call_id.push_str(io.local_ip_text(sock));
        let user = (!self.cfg.users.is_empty()).then(|| (seq as usize) % self.cfg.users.len());
        let Some(invite) = self.invite(&call_id, seq, user, 1, None, sock, io) else {
            return;
        };
        let mut tx = ClientInviteTx::start(
            now,
            invite,
            self.cfg.transport_token == "TCP",
            self.timer_cfg,
        );
        pump(&mut tx, now, sock, self.cfg.proxy, io, &mut self.stats);
        let call = Call {
            call_id,
            seq,
            sock,
            user,
            cseq: 1,
            invite: tx,
            invite_at: now,
            ringing: false,
            auth_sent: false,
            to_tag: None,
            remote_target: String::new(),
            route_set: Vec::new(),
            ack: None,
            hangup_at: None,
            bye: None,
            armed: None,
        };
        let first = call.next_deadline(self.cfg.setup_timeout);
        self.calls.insert(seq, call);
        self.schedule(now, seq, first);
    }

    #[allow(clippy::too_many_arguments)]
    fn invite(
        &mut self,
        call_id: &str,
        seq: u64,
        user: Option<usize>,
        cseq: u32,
        auth: Option<(&'static str, &str)>,
        sock: usize,
        io: &Io,
    ) -> Option<Message> {
        let offer = self.offers.get(sock, |n| {
            let ip = io.local_ip_text(n);
            format!("v=0\r\no=load {n} 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0 8\r\na=rtpmap:0 PCMU/8000\r\n")
        });
        let (local, ip) = (io.local_text(sock), io.local_ip_text(sock));
        let user = user.and_then(|u| self.cfg.users.get(u));
        let name = user.map_or("load", |u| u.name.as_str());
        let domain = user.map_or(ip, |u| u.domain.as_str());
        let s = &mut self.scratch;
        s.clear();
        via(s, self.cfg.transport_token, local);
        num(s, self.cfg.thread);
        s.push('.');
        num(s, seq);
        s.push('.');
        num(s, cseq);
        s.push_str(";rport");
        let via_end = s.len();
        for part in ["<sip:", name, "@", domain, ">;tag="] {
            s.push_str(part);
        }
        tag(s, seq, self.cfg.thread);
        let from_end = s.len();
        for part in ["<sip:", name, "@", local, ">"] {
            s.push_str(part);
        }
        let extra: Vec<(&str, &str)> = auth.into_iter().collect();
        let bytes = NewRequest {
            method: Method::Invite,
            uri: &self.cfg.target,
            via: &s[..via_end],
            from: &s[via_end..from_end],
            to: &self.to,
            call_id,
            cseq,
            max_forwards: 70,
            route: &[],
            contact: Some(&s[from_end..]),
            extra: &extra,
            body: Some(("application/sdp", offer.as_bytes())),
        }
        .build();
        Message::parse(bytes, &self.limits).ok()
    }

    fn schedule(&mut self, now: Instant, seq: u64, at: Option<Instant>) {
        let Some(at) = at.map(|a| a.max(now)) else {
            return;
        };
        if let Some(call) = self.calls.get_mut(&seq) {
            if call.armed.is_some_and(|a| a <= at) {
                return;
            }
            call.armed = Some(at);
        }
        self.timers.push(at, seq);
    }

    /// The call a response belongs to: the number its Call-ID starts with, checked against
    /// the whole Call-ID.
    fn call_of(&self, msg: &Message) -> Option<u64> {
        let call_id = msg.call_id()?;
        let seq = call_id.split_once('-')?.0.parse().ok()?;
        let call = self.calls.get(&seq)?;
        (call.call_id == call_id).then_some(seq)
    }

    fn on_invite_response(&mut self, now: Instant, msg: &Message, io: &mut Io) {
        let Some(seq) = self.call_of(msg) else { return };
        let Some(call) = self.calls.get_mut(&seq) else {
            return;
        };
        let status = msg.status().unwrap_or(0);
        if call.to_tag.is_some() {
            // A retransmitted 2xx: the ACK again (RFC 3261 §13.2.2.4).
            if (200..300).contains(&status) {
                if let Some(ack) = &call.ack {
                    io.send(call.sock, self.cfg.proxy, ack);
                }
            }
            return;
        }
        call.invite.handle(now, ClientInput::Response(msg));
        let passed = pump(
            &mut call.invite,
            now,
            call.sock,
            self.cfg.proxy,
            io,
            &mut self.stats,
        )
        .response;
        if !passed {
            return;
        }
        let elapsed = now.duration_since(call.invite_at).as_micros() as u64;
        match status {
            100 => {}
            101..=199 => {
                if !call.ringing {
                    call.ringing = true;
                    let _ = self.stats.pdd.record(elapsed.max(1));
                }
            }
            200..=299 => {
                let _ = self.stats.setup.record(elapsed.max(1));
                self.stats.answered += 1;
                call.to_tag = msg.to_tag().map(str::to_owned);
                call.remote_target = msg
                    .contacts()
                    .next()
                    .and_then(Result::ok)
                    .map_or_else(|| self.cfg.target.clone(), |c| c.uri.to_owned());
                call.route_set = msg
                    .record_routes()
                    .filter_map(Result::ok)
                    .map(|r| format!("<{}>", r.uri))
                    .collect();
                call.route_set.reverse();
                let ack = in_dialog(&self.cfg, &mut self.scratch, call, Method::Ack, io);
                io.send(call.sock, self.cfg.proxy, &ack);
                call.ack = Some(ack);
                let at = now + self.cfg.call_length;
                call.hangup_at = Some(at);
                self.schedule(now, seq, Some(at));
            }
            401 | 407 if !call.auth_sent && call.user.is_some() => {
                let header = if status == 401 {
                    HeaderName::WwwAuthenticate
                } else {
                    HeaderName::ProxyAuthenticate
                };
                let user = call.user.and_then(|u| self.cfg.users.get(u));
                let answer = msg
                    .get(header)
                    .and_then(|h| Challenge::parse(h).ok())
                    .and_then(|c| {
                        let u = user?;
                        let creds = ClientCredentials {
                            username: &u.name,
                            password: Some(&u.password),
                            ha1: None,
                        };
                        authorize(
                            &c,
                            &creds,
                            "INVITE",
                            &self.cfg.target,
                            &format!("c{}", self.seq),
                            1,
                            b"",
                        )
                        .ok()
                    });
                let Some(answer) = answer else {
                    self.stats.fail(format!("status_{status}"));
                    self.calls.remove(&seq);
                    return;
                };
                let auth_name = if status == 401 {
                    "Authorization"
                } else {
                    "Proxy-Authorization"
                };
                let (id, user_idx, sock) = (call.call_id.clone(), call.user, call.sock);
                let cseq = call.cseq + 1;
                let Some(invite) = self.invite(
                    &id,
                    seq,
                    user_idx,
                    cseq,
                    Some((auth_name, &answer)),
                    sock,
                    io,
                ) else {
                    return;
                };
                let mut tx = ClientInviteTx::start(
                    now,
                    invite,
                    self.cfg.transport_token == "TCP",
                    self.timer_cfg,
                );
                pump(&mut tx, now, sock, self.cfg.proxy, io, &mut self.stats);
                let next = tx.poll_timeout();
                if let Some(call) = self.calls.get_mut(&seq) {
                    call.invite = tx;
                    call.cseq = cseq;
                    call.auth_sent = true;
                }
                self.schedule(now, seq, next);
            }
            _ => {
                self.stats.fail(format!("status_{status}"));
                self.calls.remove(&seq);
            }
        }
    }

    fn on_bye_response(&mut self, now: Instant, msg: &Message, io: &mut Io) {
        let Some(seq) = self.call_of(msg) else { return };
        let Some(call) = self.calls.get_mut(&seq) else {
            return;
        };
        let Some(bye) = &mut call.bye else { return };
        bye.handle(now, ClientInput::Response(msg));
        let seen = pump(bye, now, call.sock, self.cfg.proxy, io, &mut self.stats);
        let final_status = msg.status().filter(|s| *s >= 200 && seen.response);
        match final_status {
            Some(200..=299) => {
                self.stats.completed += 1;
                self.calls.remove(&seq);
            }
            Some(s) => {
                self.stats.fail(format!("bye_status_{s}"));
                self.calls.remove(&seq);
            }
            None => {}
        }
    }

    fn fire(&mut self, now: Instant, seq: u64, io: &mut Io) {
        let Some(call) = self.calls.get_mut(&seq) else {
            return;
        };
        // This wake-up recomputes the next deadline below.
        call.armed = None;
        let mut failed = None;
        let seen = pump(
            &mut call.invite,
            now,
            call.sock,
            self.cfg.proxy,
            io,
            &mut self.stats,
        );
        if seen.timeout && call.to_tag.is_none() {
            failed = Some("invite_timeout");
        }
        if call.to_tag.is_none() && now.duration_since(call.invite_at) >= self.cfg.setup_timeout {
            failed = Some("setup_timeout");
        }
        if let Some(bye) = &mut call.bye {
            if pump(bye, now, call.sock, self.cfg.proxy, io, &mut self.stats).timeout {
                failed = Some("bye_timeout");
            }
        }
        if call.bye.is_none() && call.hangup_at.is_some_and(|t| t <= now) {
            call.cseq += 1;
            let bytes = in_dialog(&self.cfg, &mut self.scratch, call, Method::Bye, io);
            let mut bye = ClientNonInviteTx::start(
                now,
                bytes,
                self.cfg.transport_token == "TCP",
                self.timer_cfg,
            );
            pump(
                &mut bye,
                now,
                call.sock,
                self.cfg.proxy,
                io,
                &mut self.stats,
            );
            call.bye = Some(bye);
        }
        if let Some(reason) = failed {
            self.stats.fail(reason);
            self.calls.remove(&seq);
            return;
        }
        let next = call.next_deadline(self.cfg.setup_timeout);
        self.schedule(now, seq, next);
    }
}

impl Call {
    /// When the call next needs attention: a transaction timer, the hang-up, or the end
    /// of the time allowed to answer.
    fn next_deadline(&self, setup_timeout: Duration) -> Option<Instant> {
        [
            self.invite.poll_timeout(),
            self.bye.as_ref().and_then(|b| b.poll_timeout()),
            self.hangup_at.filter(|_| self.bye.is_none()),
            self.to_tag
                .is_none()
                .then_some(self.invite_at + setup_timeout),
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

/// Appends `n` in decimal (`write!` costs several times as much).
fn num(s: &mut String, n: impl itoa::Integer) {
    s.push_str(itoa::Buffer::new().format(n));
}

/// Appends a call's From tag: `t<call number>x<thread>`.
fn tag(s: &mut String, seq: u64, thread: usize) {
    s.push('t');
    num(s, seq);
    s.push('x');
    num(s, thread);
}

/// Appends a Via value up to its branch's own part: `SIP/2.0/UDP local;branch=z9hG4bK`.
fn via(s: &mut String, transport: &str, local: &str) {
    for part in ["SIP/2.0/", transport, " ", local, ";branch=z9hG4bK"] {
        s.push_str(part);
    }
}

/// An ACK or BYE inside the dialog (at the call's current CSeq), through its route set to
/// the remote target; `scratch` holds the header values while it is built.
fn in_dialog(cfg: &UacConfig, scratch: &mut String, call: &Call, method: Method, io: &Io) -> Bytes {
    let local = io.local_text(call.sock);
    let cseq = call.cseq;
    let s = scratch;
    s.clear();
    via(s, cfg.transport_token, local);
    s.push_str(method.as_str());
    num(s, cseq);
    s.push('x');
    tag(s, call.seq, cfg.thread);
    s.push_str(";rport");
    let via_end = s.len();
    for part in ["<sip:load@", local, ">;tag="] {
        s.push_str(part);
    }
    tag(s, call.seq, cfg.thread);
    let from_end = s.len();
    for part in [
        "<",
        &cfg.target,
        ">;tag=",
        call.to_tag.as_deref().unwrap_or_default(),
    ] {
        s.push_str(part);
    }
    let route: Vec<&str> = call.route_set.iter().map(String::as_str).collect();
    NewRequest {
        method,
        uri: &call.remote_target,
        via: &s[..via_end],
        from: &s[via_end..from_end],
        to: &s[from_end..],
        call_id: &call.call_id,
        cseq,
        max_forwards: 70,
        route: &route,
        contact: None,
        extra: &[],
        body: None,
    }
    .build()
}

impl Role for Uac {
    fn on_message(
        &mut self,
        now: Instant,
        msg: Message,
        _sock: usize,
        _from: SocketAddr,
        io: &mut Io,
    ) {
        if msg.is_request() {
            return;
        }
        match msg.cseq().and_then(Result::ok).map(|c| c.method) {
            Some("INVITE") => self.on_invite_response(now, &msg, io),
            Some("BYE") => self.on_bye_response(now, &msg, io),
            _ => {}
        }
    }

    fn poll(&mut self, now: Instant, io: &mut Io) -> Option<Instant> {
        while self.pacer.take(now) {
            self.start_call(now, io);
        }
        while let Some(seq) = self.timers.pop_due(now) {
            self.fire(now, seq, io);
        }
        [self.pacer.next(), self.timers.next()]
            .into_iter()
            .flatten()
            .min()
    }

    fn finished(&self, now: Instant) -> bool {
        let all_started = self.pacer.next().is_none();
        let deadline = self.start + self.cfg.duration + self.drain;
        (all_started && self.calls.is_empty()) || now >= deadline
    }

    fn stats(&self) -> &Stats {
        &self.stats
    }

    fn close(&mut self) {
        for _ in self.calls.drain() {
            self.stats.fail("unfinished");
        }
    }
}
