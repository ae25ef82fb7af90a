//! The request path of the driver: the flood guard and the trunk's rate, the transaction
//! match (retransmission, ACK), sanity, then CANCEL, a stateless ACK or a new request; a
//! new request's admission (loop check, Route processing, the edge's policy and its
//! targets, the call limits) and the forwarded copies its context starts with.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

use limes_sip::build::{Forward, Source};
use limes_sip::proxy::route::{self, Decision};
use limes_sip::proxy::{Context, ReplyTo};
use limes_sip::sanity::{self, Policy};
use limes_sip::transaction::TxKey;
use limes_sip::uri::Uri;
use limes_sip::{Message, Method};
use smallvec::smallvec;
use tracing::{debug, warn};

use super::edge;
use super::entry::{Entry, Later};
use super::locate::{self, Located};
use super::routing::{Edits, Failover};
use super::{reply_dest, Copies, Fork, Pass, Proxy, Route, Routes, ALLOW};
use crate::dialogs::Refused;
use crate::settings::{FloodAction, Transport};
use crate::transport::{Dest, Flow, Sends};

impl Proxy {
    pub(super) fn on_request(&self, msg: Message, flow: Flow, now: Instant) {
        let method = msg.method().cloned().unwrap_or(Method::Options);
        self.metrics.request(&method);

        // A trunk's sources have the trunk's calls-per-second limit instead of the
        // per-address flood guard (one carrier interconnect is not a flood).
        let initial_invite = method == Method::Invite && msg.to_tag().is_none();
        let trunk = self.trunk_admits(&flow, initial_invite);
        if trunk == Some(false) {
            self.reply_stateless(
                &msg,
                &flow,
                503,
                "Service Unavailable: trunk call rate",
                &[("Retry-After", "1")],
            );
            return;
        }
        if let Some(f) = self.flood.as_ref().filter(|_| trunk.is_none()) {
            if !f.allow(flow.remote.ip()) {
                self.metrics.flood_limited.inc();
                if f.action == FloodAction::Reply && method != Method::Ack {
                    let retry = f.retry_after_secs.to_string();
                    self.reply_stateless(
                        &msg,
                        &flow,
                        503,
                        "Service Unavailable",
                        &[("Retry-After", &retry)],
                    );
                } else {
                    self.metrics.drop_reason("flood");
                }
                return;
            }
        }

        self.on_admitted(msg, flow, now, Pass::First);
    }

    /// A request past the flood guard: matched, checked, dispatched.
    pub(super) fn on_admitted(&self, msg: Message, flow: Flow, now: Instant, pass: Pass) {
        let method = msg.method().cloned().unwrap_or(Method::Options);
        // Retransmissions and ACKs of existing server transactions (§17.2.3).
        // The key and its hash, computed once: a new transaction below uses them too.
        let key = TxKey::server(&msg).map(|k| (k.id(), k));
        if let Some((sid, key)) = &key {
            let sid = *sid;
            let mut sends = Sends::new();
            let mut shard = self.shard(sid).lock();
            if let Some(e) = shard
                .entries
                .get_mut(&sid)
                .filter(|e| e.key.as_ref() == Some(key))
            {
                if method == Method::Ack {
                    e.ctx.handle_ack(now);
                } else {
                    e.ctx.handle_request(now);
                }
                self.drive(e, now, &mut sends);
                self.settle(&mut shard, sid);
                drop(shard);
                self.flush(sends);
                return;
            }
        }

        // Only an OPTIONS to this node is answered here; the Request-URI and Route set are
        // read for that check alone, so other requests skip it.
        let local = method == Method::Options
            && msg
                .request_uri()
                .and_then(Result::ok)
                .is_some_and(|u| self.local.uri_is_us(&u))
            && msg.routes().all(|r| {
                r.ok()
                    .and_then(|r| Uri::parse(r.uri).ok())
                    .is_some_and(|u| self.local.uri_is_us(&u))
            });
        let policy = Policy {
            supported: &[],
            local,
            max_uri_len: self.settings.limits.max_uri_len,
        };
        if let Err(r) = sanity::check_request(&msg, &policy) {
            debug!(remote = %flow.remote, status = r.status, reason = %r.reason, "request refused by sanity rules");
            self.metrics.drop_reason("sanity");
            if method != Method::Ack {
                let unsupported = r.unsupported.join(", ");
                let extra: &[(&str, &str)] = if r.unsupported.is_empty() {
                    &[]
                } else {
                    &[("Unsupported", &unsupported)]
                };
                self.reply_local(&msg, &flow, now, r.status, &r.reason, extra);
            }
            return;
        }

        if matches!(method, Method::Cancel | Method::Ack) {
            debug!(
                call_id = msg.call_id().unwrap_or_default(),
                method = method.as_str(),
                source = %flow.remote,
                "request relayed hop by hop (CANCEL to its INVITE's branches, ACK on its way)"
            );
        }
        match method {
            Method::Cancel => self.on_cancel(&msg, &flow, now),
            Method::Ack => self.forward_ack(&msg, &flow),
            _ if local => {
                let server = self.settings.server_name.clone();
                self.reply_stateless(
                    &msg,
                    &flow,
                    200,
                    "OK",
                    &[
                        ("Allow", ALLOW),
                        ("Accept", "application/sdp"),
                        ("Supported", ""),
                        ("Server", &server),
                    ],
                );
            }
            _ => self.on_new_request(msg, key, flow, now, pass),
        }
    }

    /// A request towards the side whose connection a Record-Route token names goes back
    /// over that connection (unless it came from it); `Err` when the connection is gone
    /// (430 Flow Failed, RFC 5626 §5.3).
    pub(super) fn back_over_flow(
        &self,
        back: Option<SocketAddr>,
        from: &Flow,
    ) -> Result<Option<Dest>, ()> {
        match back {
            Some(addr) if addr != from.remote => {
                if self.out.has_tcp(addr) {
                    Ok(Some(Dest::new(Transport::Tcp, addr)))
                } else {
                    Err(())
                }
            }
            _ => Ok(None),
        }
    }

    /// `key`: the server transaction's key and its hash ([`Proxy::sid`]).
    fn on_new_request(
        &self,
        msg: Message,
        key: Option<(u64, TxKey)>,
        flow: Flow,
        now: Instant,
        pass: Pass,
    ) {
        let method = msg.method().cloned().unwrap_or(Method::Options);
        let in_dialog = msg.to_tag().is_some();
        if self.is_draining() && method == Method::Invite && !in_dialog {
            return self.unavailable(&msg, &flow, now, "Service Unavailable", "5");
        }
        if route::is_loop(&msg, &self.local) {
            return self.reply_local(&msg, &flow, now, 482, "Loop Detected", &[]);
        }
        let routing = route::route(&msg, &self.local, self.settings.record_route);
        // Initial requests and REGISTER log their decision where the policy or the
        // registrar makes it; the rest here.
        let call_id = || msg.call_id().unwrap_or_default();
        match &routing.decision {
            Decision::Route { uri, .. } | Decision::RequestUri { uri } => debug!(
                call_id = call_id(),
                method = method.as_str(),
                source = %flow.remote,
                to = uri.raw,
                "request relayed by its Route set or Request-URI"
            ),
            Decision::Refuse { status, reason } => debug!(
                call_id = call_id(),
                method = method.as_str(),
                source = %flow.remote,
                status,
                reason,
                "request refused"
            ),
            Decision::Initial | Decision::Register => {}
        }
        let popped = routing.popped;
        let back_flow = routing.flow;
        let new_ruri = routing.restored_ruri.map(str::to_owned);
        let mut consume_credentials = false;
        let mut origin = None;
        let mut edits = Edits::new();
        let mut failover = None;
        let mut vars = None;
        let mut from_peer = false;
        let targets: Routes = match routing.decision {
            Decision::Refuse { status, reason } => {
                return self.reply_local(&msg, &flow, now, status, reason, &[])
            }
            Decision::Register => return self.on_register(&msg, &flow, now),
            Decision::Route { uri, strict } => match self.locate(&uri, &msg, &flow) {
                Located::At(dests) => {
                    let (routes, records) = locate::one_by_one(dests, strict.then_some(uri.raw));
                    failover = records;
                    routes
                }
                Located::Waiting => return,
                Located::Failed(why) => return self.unresolvable(&msg, &flow, now, why),
            },
            Decision::RequestUri { uri } => match self.locate(&uri, &msg, &flow) {
                Located::At(dests) if !dests.iter().any(|d| self.local.is_us_addr(d.addr)) => {
                    let (routes, records) = locate::one_by_one(dests, None);
                    failover = records;
                    routes
                }
                Located::Waiting => return,
                Located::Failed(why) => return self.unresolvable(&msg, &flow, now, why),
                Located::At(_) => return self.reply_local(&msg, &flow, now, 404, "Not Found", &[]),
            },
            // Another node of the cluster sends a call for a binding whose flow is here.
            Decision::Initial if self.is_from_peer(&flow) => {
                let Some(route) = msg
                    .request_uri()
                    .and_then(Result::ok)
                    .and_then(|u| self.owned_binding_route(&u))
                else {
                    return self.reply_local(
                        &msg,
                        &flow,
                        now,
                        404,
                        "Not Found: no such binding here",
                        &[],
                    );
                };
                from_peer = true;
                smallvec![route]
            }
            Decision::Initial => match self.initial_targets(&msg, &flow, now, pass) {
                Some(initial) => {
                    consume_credentials = initial.authenticated;
                    origin = Some(initial.origin);
                    edits = initial.edits;
                    failover = initial.failover;
                    vars = initial.vars;
                    initial.targets
                }
                None => return,
            },
        };

        // A request inside a tracked dialog updates it (a BYE ends it); one that matches
        // none is refused when so configured.
        if in_dialog && method != Method::Ack {
            match self.dialogs.find(&msg) {
                Some((call, from_caller)) => self.dialogs.on_request(&call, from_caller, &msg),
                None if self.dialogs.rejects_unmatched() => {
                    return self.reply_local(
                        &msg,
                        &flow,
                        now,
                        481,
                        "Call/Transaction Does Not Exist",
                        &[],
                    )
                }
                None => {}
            }
        }
        let targets = match self.back_over_flow(back_flow.filter(|_| in_dialog), &flow) {
            Ok(Some(dest)) => smallvec![Route::to(dest)],
            Ok(None) => targets,
            Err(()) => return self.reply_local(&msg, &flow, now, 430, "Flow Failed", &[]),
        };
        if self.active() >= self.settings.max_transactions {
            self.metrics.drop_reason("transaction_limit");
            return self.unavailable(&msg, &flow, now, "Service Unavailable", "2");
        }
        let Some((sid, key)) = key else {
            return self.reply_local(
                &msg,
                &flow,
                now,
                400,
                "Bad Request: no transaction key",
                &[],
            );
        };
        // A dialog-creating INVITE joins its profiles (limits checked) before it is relayed.
        let mut insert_session_expires = None;
        // A call another node of the cluster sent on is tracked there, not again here.
        let dialog =
            if method == Method::Invite && !in_dialog && !from_peer && self.dialogs.tracks() {
                // RFC 4028 §8.1: a Session-Expires below the node's minimum gets 422; an
                // INVITE without one gets the configured interval.
                let (insert, min_se) = self.dialogs.session_timers();
                match crate::dialogs::session_expires(&msg) {
                    Some(se) if u64::from(se) < min_se.as_secs() => {
                        let min = min_se.as_secs().to_string();
                        return self.reply_local(
                            &msg,
                            &flow,
                            now,
                            422,
                            "Session Interval Too Small",
                            &[("Min-SE", &min)],
                        );
                    }
                    Some(_) => {}
                    None => insert_session_expires = insert.map(|d| d.as_secs().to_string()),
                }
                let mut origin = origin.unwrap_or_else(|| self.routed_origin(&msg, &flow));
                if origin.caller.is_empty() {
                    edge::from_user(&msg).clone_into(&mut origin.caller);
                }
                let caller = Dest {
                    transport: flow.transport,
                    addr: flow.remote,
                    local: Some(flow.local),
                };
                match self.dialogs.admit(&msg, caller, origin) {
                    Ok(call) => {
                        for (name, value) in vars.iter().flat_map(|v| v.iter()) {
                            call.set_var(name, crate::dialogs::cdr::Var::Str(value.clone()));
                        }
                        Some(call)
                    }
                    Err(refused) => return self.refuse_call(&msg, &flow, now, &refused),
                }
            } else {
                None
            };
        let fork = Fork {
            flow,
            popped,
            new_ruri,
            consume_credentials,
            session_expires: insert_session_expires,
            edits,
        };
        // The first group now, the later ones (serial forking) kept: most requests have
        // one group, and then no queue is made and no route moves.
        let mut first = targets;
        let first_group = first.first().map(|f| f.group);
        let cut = first
            .iter()
            .position(|t| Some(t.group) != first_group)
            .unwrap_or(first.len());
        let mut groups: VecDeque<Routes> = VecDeque::new();
        for t in first.drain(cut..) {
            match groups.back_mut() {
                Some(g) if g.first().is_some_and(|f| f.group == t.group) => g.push(t),
                _ => groups.push_back(smallvec![t]),
            }
        }
        // The branches' copies are built from the request before the context owns it.
        let copies = self.branch_copies(&msg, &fork, &first, sid, 0);
        if copies.is_empty() {
            if let Some(call) = &dialog {
                self.dialogs.on_invite_failure(call, 503);
            }
            return self.reply_local(
                &msg,
                &flow,
                now,
                503,
                "Service Unavailable: no usable next hop",
                &[],
            );
        }
        let reply_to = ReplyTo {
            dest: reply_dest(&msg, &flow),
            reliable: flow.transport.is_reliable(),
        };
        let mut entry = Entry {
            key: Some(key),
            ctx: Context::server(now, sid, msg, reply_to, self.contexts),
            scheduled: None,
            later: None,
            waiter: None,
            dialog,
        };
        let failover = failover.map(|on| Failover {
            on,
            current: first
                .first()
                .and_then(|r| r.trunk_dest.as_ref())
                .map(|t| t.2.clone()),
            last_status: 0,
        });
        if !groups.is_empty() {
            entry.ctx.hold();
            entry.later = Some(Box::new(Later {
                groups,
                fork,
                failover,
            }));
        }
        for (dest, bytes, within) in copies {
            let _ =
                entry
                    .ctx
                    .add_branch_within(now, dest, dest.transport.is_reliable(), bytes, within);
        }
        self.insert(sid, entry, now);
        self.metrics.request_latency(now.elapsed().as_secs_f64());
    }

    /// The forwarded copy of the request for each route (§16.6 steps 1-10), with its Via
    /// branch numbered from `first_index`. Routes with no socket to send from are skipped.
    pub(super) fn branch_copies(
        &self,
        msg: &Message,
        fork: &Fork,
        routes: &[Route],
        sid: u64,
        first_index: usize,
    ) -> Copies {
        let Fork {
            flow,
            popped,
            new_ruri,
            consume_credentials,
            session_expires,
            edits,
        } = fork;
        let (popped, consume_credentials) = (*popped, *consume_credentials);
        let method = msg.method().cloned().unwrap_or(Method::Options);
        let loop_hash = self.local.loop_hash(msg);
        let call_id = msg.call_id().unwrap_or_default();
        let dialog_creating = matches!(method, Method::Invite | Method::Subscribe | Method::Refer)
            && msg.to_tag().is_none();
        let source = Source {
            ip: flow.remote.ip(),
            port: flow.remote.port(),
        };
        let mut copies = Copies::with_capacity(routes.len());
        for route in routes {
            let i = first_index + copies.len();
            let Some(out_addr) = self.out.local_for(&route.dest) else {
                continue;
            };
            // The address this side sees the node at (a NAT's public one, if advertised).
            let shown = route.advertise.unwrap_or(out_addr);
            let sent_by = self.local.sent_by(route.dest.transport, shown);
            let record_route = self.settings.record_route && dialog_creating;
            let two_sides = shown != flow.local || route.dest.transport != flow.transport;
            // The entry facing the caller names its TCP connection (a single entry faces
            // both sides, so it carries the token too).
            let caller_flow = (flow.transport == Transport::Tcp).then_some(flow.remote);
            let rr_out = record_route.then(|| {
                let token = if two_sides { None } else { caller_flow };
                self.local
                    .record_route(shown, route.dest.transport, call_id, token)
            });
            let rr_in = (record_route && two_sides).then(|| {
                self.local
                    .record_route(flow.local, flow.transport, call_id, caller_flow)
            });
            let old_ruri = route.strict.as_ref().map(|_| {
                format!(
                    "<{}>",
                    new_ruri
                        .as_deref()
                        .unwrap_or(msg.request_uri_str().unwrap_or_default())
                )
            });
            let mut fwd = Forward::new(msg)
                .received_from(source)
                .push_via_branch(&sent_by, (loop_hash, sid, i))
                .decrement_max_forwards()
                .pop_routes(popped);
            for (head, sig) in rr_out.iter().chain(rr_in.iter()) {
                fwd = fwd.record_route_pieces([head, sig.as_str(), ">"]);
            }
            if let Some(uri) = &new_ruri {
                fwd = fwd.request_uri(uri).drop_last_route();
            }
            if let Some(uri) = &route.ruri {
                fwd = fwd.request_uri(uri);
            }
            for r in &route.preload {
                fwd = fwd.push_route(r);
            }
            if consume_credentials {
                fwd = fwd.remove(limes_sip::HeaderName::ProxyAuthorization);
            }
            if let Some(se) = session_expires {
                fwd = fwd.add_header("Session-Expires", se);
            }
            if let (Some(strict), Some(old)) = (&route.strict, &old_ruri) {
                fwd = fwd.request_uri(strict).append_route(old);
            }
            for e in edits {
                for name in &e.remove {
                    fwd = match limes_sip::HeaderName::from_bytes(name.as_bytes()) {
                        limes_sip::HeaderName::Other => fwd.remove_named(name),
                        known => fwd.remove(known),
                    };
                }
                for (name, value) in &e.set {
                    fwd = fwd.add_header(name, value);
                }
            }
            if let Some((trunk, uri, health)) = &route.trunk_dest {
                self.count_trunk_call(trunk, uri, health);
            }
            copies.push((route.dest, fwd.finish(), route.within));
        }
        copies
    }

    /// 503 with Retry-After: the node is draining, or its transaction or dialog table is
    /// full.
    fn unavailable(
        &self,
        msg: &Message,
        flow: &Flow,
        now: Instant,
        reason: &str,
        retry_after_s: &str,
    ) {
        let extra = [("Retry-After", retry_after_s)];
        self.reply_local(msg, flow, now, 503, reason, &extra);
    }

    /// Answers a call refused before relaying: a limit's configured code (with
    /// Retry-After when set), or 503 when the dialog table is full.
    fn refuse_call(&self, msg: &Message, flow: &Flow, now: Instant, refused: &Refused) {
        match refused {
            Refused::Limit(l) => {
                debug!(profile = %l.profile, size = l.size, max = l.max, "call refused by a limit");
                let retry = l.retry_after_s.map(|s| s.to_string());
                let extra: Vec<(&str, &str)> =
                    retry.iter().map(|r| ("Retry-After", r.as_str())).collect();
                self.reply_local(msg, flow, now, l.status, &l.reason, &extra);
            }
            Refused::Full => {
                warn!("dialog table full, INVITE refused");
                let reason = "Service Unavailable: dialog table full";
                self.unavailable(msg, flow, now, reason, "5");
            }
        }
    }
}
