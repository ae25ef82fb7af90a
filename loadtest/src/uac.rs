//! The calling side: places calls at a steady open-loop rate. Each call is INVITE
//! (answering a 401/407 once with digest credentials), 18x, 200, ACK, a hold, BYE, 200.
//! Retransmissions come from limes-sip's own client transactions, so loss shows as
//! retransmissions, not failures.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use limes_sip::build::NewRequest;
use limes_sip::digest::{authorize, Challenge, ClientCredentials};
use limes_sip::transaction::{ClientInput, ClientInviteTx, ClientNonInviteTx, Event, TimerConfig};
use limes_sip::{HeaderName, Limits, Message, Method};

use crate::engine::{pump, Io, Pacer, Role, Timers};
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
    sock: usize,
    user: Option<usize>,
    from_tag: String,
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
    calls: HashMap<String, Call>,
    timers: Timers,
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
            calls: HashMap::new(),
            timers: Timers::default(),
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
        let sock = (self.seq as usize) % io.sockets().max(1);
        let call_id = format!(
            "{}-{}-{}@{}",
            self.seq,
            self.cfg.thread,
            std::process::id(),
            io.local_ip_text(sock)
        );
        let user = (!self.cfg.users.is_empty()).then(|| (self.seq as usize) % self.cfg.users.len());
        let from_tag = format!("t{}x{}", self.seq, self.cfg.thread);
        let Some(invite) = self.invite(&call_id, &from_tag, user, 1, None, sock, io) else {
            return;
        };
        let mut tx = ClientInviteTx::start(
            now,
            invite,
            self.cfg.transport_token == "TCP",
            self.timer_cfg,
        );
        pump(&mut tx, now, sock, self.cfg.proxy, io, &mut self.stats);
        self.schedule(now, &call_id, tx.poll_timeout());
        self.schedule(now, &call_id, Some(now + self.cfg.setup_timeout));
        self.calls.insert(
            call_id.clone(),
            Call {
                call_id,
                sock,
                user,
                from_tag,
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
            },
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn invite(
        &self,
        call_id: &str,
        from_tag: &str,
        user: Option<usize>,
        cseq: u32,
        auth: Option<(&'static str, &str)>,
        sock: usize,
        io: &Io,
    ) -> Option<Message> {
        let (local, ip) = (io.local_text(sock), io.local_ip_text(sock));
        let name = user
            .and_then(|u| self.cfg.users.get(u))
            .map_or("load", |u| u.name.as_str());
        let domain = user
            .and_then(|u| self.cfg.users.get(u))
            .map_or_else(|| ip.to_owned(), |u| u.domain.clone());
        let via = format!(
            "SIP/2.0/{} {local};branch=z9hG4bK{}.{}.{};rport",
            self.cfg.transport_token, self.cfg.thread, self.seq, cseq
        );
        let from = format!("<sip:{name}@{domain}>;tag={from_tag}");
        let to = format!("<{}>", self.cfg.target);
        let contact = format!("<sip:{name}@{local}>");
        let sdp = format!(
            "v=0\r\no=load {sock} 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0 8\r\na=rtpmap:0 PCMU/8000\r\n"
        );
        let extra: Vec<(&str, &str)> = auth.into_iter().collect();
        let bytes = NewRequest {
            method: Method::Invite,
            uri: &self.cfg.target,
            via: &via,
            from: &from,
            to: &to,
            call_id,
            cseq,
            max_forwards: 70,
            route: &[],
            contact: Some(&contact),
            extra: &extra,
            body: Some(("application/sdp", sdp.as_bytes())),
        }
        .build();
        Message::parse(bytes, &self.limits).ok()
    }

    fn schedule(&mut self, now: Instant, call_id: &str, at: Option<Instant>) {
        let Some(at) = at.map(|a| a.max(now)) else {
            return;
        };
        if let Some(call) = self.calls.get_mut(call_id) {
            if call.armed.is_some_and(|a| a <= at) {
                return;
            }
            call.armed = Some(at);
        }
        self.timers.push(at, call_id);
    }

    fn on_invite_response(&mut self, now: Instant, msg: &Message, io: &mut Io) {
        let Some(call_id) = msg.call_id() else { return };
        let Some(call) = self.calls.get_mut(call_id) else {
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
        .contains(&Event::Response);
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
                let ack = in_dialog(&self.cfg, call, Method::Ack, call.cseq, io);
                io.send(call.sock, self.cfg.proxy, &ack);
                call.ack = Some(ack);
                let at = now + self.cfg.call_length;
                call.hangup_at = Some(at);
                let id = call.call_id.clone();
                self.schedule(now, &id, Some(at));
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
                    self.calls.remove(call_id);
                    return;
                };
                let auth_name = if status == 401 {
                    "Authorization"
                } else {
                    "Proxy-Authorization"
                };
                let (id, tag, user_idx, sock) = (
                    call.call_id.clone(),
                    call.from_tag.clone(),
                    call.user,
                    call.sock,
                );
                let cseq = call.cseq + 1;
                let Some(invite) = self.invite(
                    &id,
                    &tag,
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
                if let Some(call) = self.calls.get_mut(&id) {
                    call.invite = tx;
                    call.cseq = cseq;
                    call.auth_sent = true;
                }
                self.schedule(now, &id, next);
            }
            _ => {
                self.stats.fail(format!("status_{status}"));
                self.calls.remove(call_id);
            }
        }
    }

    fn on_bye_response(&mut self, now: Instant, msg: &Message, io: &mut Io) {
        let Some(call_id) = msg.call_id() else { return };
        let Some(call) = self.calls.get_mut(call_id) else {
            return;
        };
        let Some(bye) = &mut call.bye else { return };
        bye.handle(now, ClientInput::Response(msg));
        let events = pump(bye, now, call.sock, self.cfg.proxy, io, &mut self.stats);
        let final_status = msg
            .status()
            .filter(|s| *s >= 200 && events.contains(&Event::Response));
        match final_status {
            Some(200..=299) => {
                self.stats.completed += 1;
                self.calls.remove(call_id);
            }
            Some(s) => {
                self.stats.fail(format!("bye_status_{s}"));
                self.calls.remove(call_id);
            }
            None => {}
        }
    }

    fn fire(&mut self, now: Instant, call_id: &str, io: &mut Io) {
        let Some(call) = self.calls.get_mut(call_id) else {
            return;
        };
        // This wake-up recomputes the next deadline below.
        call.armed = None;
        let mut failed = None;
        let events = pump(
            &mut call.invite,
            now,
            call.sock,
            self.cfg.proxy,
            io,
            &mut self.stats,
        );
        if events.contains(&Event::Timeout) && call.to_tag.is_none() {
            failed = Some("invite_timeout");
        }
        if call.to_tag.is_none() && now.duration_since(call.invite_at) >= self.cfg.setup_timeout {
            failed = Some("setup_timeout");
        }
        if let Some(bye) = &mut call.bye {
            if pump(bye, now, call.sock, self.cfg.proxy, io, &mut self.stats)
                .contains(&Event::Timeout)
            {
                failed = Some("bye_timeout");
            }
        }
        if call.bye.is_none() && call.hangup_at.is_some_and(|t| t <= now) {
            call.cseq += 1;
            let bytes = in_dialog(&self.cfg, call, Method::Bye, call.cseq, io);
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
            self.calls.remove(call_id);
            return;
        }
        let next = [
            call.invite.poll_timeout(),
            call.bye.as_ref().and_then(|b| b.poll_timeout()),
            call.hangup_at.filter(|_| call.bye.is_none()),
        ]
        .into_iter()
        .flatten()
        .min();
        let id = call_id.to_owned();
        self.schedule(now, &id, next);
    }
}

/// An ACK or BYE inside the dialog, through its route set to the remote target.
fn in_dialog(cfg: &UacConfig, call: &Call, method: Method, cseq: u32, io: &Io) -> Bytes {
    let local = io.local_text(call.sock);
    let via = format!(
        "SIP/2.0/{} {local};branch=z9hG4bK{method}{cseq}x{};rport",
        cfg.transport_token, call.from_tag
    );
    let from = format!("<sip:load@{}>;tag={}", local, call.from_tag);
    let to = format!(
        "<{}>;tag={}",
        cfg.target,
        call.to_tag.as_deref().unwrap_or_default()
    );
    let route: Vec<&str> = call.route_set.iter().map(String::as_str).collect();
    NewRequest {
        method,
        uri: &call.remote_target,
        via: &via,
        from: &from,
        to: &to,
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
        while let Some(id) = self.timers.pop_due(now) {
            self.fire(now, &id, io);
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
