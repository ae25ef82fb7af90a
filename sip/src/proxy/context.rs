//! One response context (RFC 3261 §16): the server transaction of a received request (or
//! the node itself, for a request it originates) and the client transaction of each
//! branch, with the rules that join them.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;

use crate::build::Response;
use crate::transaction::{
    ClientInput, ClientInviteTx, ClientNonInviteTx, Event as TxEvent, ServerInput, ServerInviteTx,
    ServerNonInviteTx, Timer, TimerConfig,
};
use crate::{HeaderName, Message, Method};

mod responses;

/// What every context of a node shares.
#[derive(Debug, Clone, Copy, Default)]
pub struct ContextConfig {
    pub timers: TimerConfig,
}

/// A message to send. `branch`: the branch it belongs to (a request, CANCEL or ACK
/// downstream), or `None` for a response upstream; a failed send of a branch's message is
/// fed back with [`Context::handle_transport_error`].
#[must_use]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit<D> {
    pub dest: D,
    pub bytes: Bytes,
    pub branch: Option<usize>,
}

/// What the context tells its caller. Events of a response carry no copy of it: the
/// caller has the response it just fed in.
#[derive(Debug, Clone)]
pub enum Event {
    /// A branch received a provisional response.
    Provisional { branch: usize, status: u16 },
    /// A 101-199 response to an INVITE with a To tag: an early dialog of that tag.
    EarlyDialog { branch: usize },
    /// A branch received its first 2xx.
    Answered { branch: usize, status: u16 },
    /// The first 2xx of a branch to an INVITE: the dialog of its To tag is established.
    DialogEstablished { branch: usize },
    /// A 2xx to a BYE: the dialog it was sent in has ended.
    DialogEnded { branch: usize },
    /// A branch failed: a 3xx-6xx response other than 401/407, or none (408: Timer B, F
    /// or C; 503: the transport failed).
    BranchFailed { branch: usize, status: u16 },
    /// A branch was challenged (401 or 407): the caller may retry with credentials.
    Challenged { branch: usize, status: u16 },
    /// Every branch has a final response, none a 2xx, and the context is held: add a
    /// branch, or `release` to send the best response (`best`: its status).
    Exhausted { best: u16 },
    /// A response went upstream (the 100 Trying aside); `local`: made here rather than
    /// forwarded. `Final` for the first final one.
    Upstream { status: u16, local: bool },
    /// The final response chosen for upstream (received requests only; once).
    Final { status: u16 },
    /// A request this node originated is complete: its final response (for the best
    /// failure, the one chosen as §16.7 chooses), or none (`status` 408 or 503). Boxed:
    /// the rare event would make every queued event the size of a message.
    Completed {
        status: u16,
        response: Option<Box<Message>>,
    },
    /// A retransmission sent by a timer (A, E or G).
    RetransmissionSent,
    /// A retransmitted request or response absorbed.
    RetransmissionAbsorbed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BranchError {
    #[error("the request already has its final response, or was cancelled")]
    Closed,
}

#[derive(Debug)]
enum ServerTx {
    Invite(ServerInviteTx),
    NonInvite(ServerNonInviteTx),
}

#[derive(Debug)]
enum ClientTx {
    Invite(ClientInviteTx),
    NonInvite(ClientNonInviteTx),
}

/// What both server machines answer alike.
macro_rules! each_tx {
    ($tx:expr, $t:ident => $e:expr) => {
        match $tx {
            ServerTx::Invite($t) => $e,
            ServerTx::NonInvite($t) => $e,
        }
    };
}

/// What both client machines answer alike.
macro_rules! each_branch_tx {
    ($tx:expr, $t:ident => $e:expr) => {
        match $tx {
            ClientTx::Invite($t) => $e,
            ClientTx::NonInvite($t) => $e,
        }
    };
}

/// Where responses to a received request go, and whether that transport is reliable
/// (no retransmissions of the final response).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyTo<D> {
    pub dest: D,
    pub reliable: bool,
}

/// Where the context's final response goes. Not boxed: `Node` is the rare variant, and a
/// box would cost every forwarded request an allocation.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
enum Upstream<D> {
    /// A received request: back through its server transaction.
    Server {
        tx: ServerTx,
        reply_to: D,
        /// The request as received, until its final response (to make local responses).
        request: Option<Message>,
    },
    /// A request the node originated: the final response ends here, as an event.
    Node,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Invite,
    Bye,
    Other,
}

/// A forwarded copy of the request and its client transaction (§16.6).
#[derive(Debug)]
struct Branch<D> {
    tx: ClientTx,
    dest: D,
    provisional: bool,
    final_status: Option<u16>,
    /// Timer C (§16.6 step 11): INVITE branches only.
    timer_c: Option<Instant>,
    /// The CANCEL sent for this branch (§16.10); boxed, as most branches never send one.
    cancel: Option<Box<ClientNonInviteTx>>,
    /// A CANCEL is owed but waits for the first provisional response (§9.1).
    cancel_pending: bool,
    /// The WWW-Authenticate / Proxy-Authenticate values of its 401 or 407 (§16.7 step 7).
    challenges: Vec<(HeaderName, String)>,
}

/// The best failure so far (§16.7 step 6).
#[derive(Debug)]
struct Best {
    branch: Option<usize>,
    /// As received; the status sent upstream may differ (503 -> 500).
    status: u16,
    /// The response it came in, or none when the branch failed without one.
    response: Option<Message>,
}

/// One response context. `D` is where messages go (the driver's destination type).
#[derive(Debug)]
pub struct Context<D> {
    id: u64,
    kind: Kind,
    upstream: Upstream<D>,
    branches: Vec<Branch<D>>,
    /// Boxed: only failures set it, and a context is kept for 32 s after its answer.
    best: Option<Box<Best>>,
    /// A final response went upstream (or, for the node's own, was reported).
    answered: bool,
    /// More branches may follow when every branch has failed.
    held: bool,
    exhausted_reported: bool,
    /// No branch may start any more: a CANCEL, a 2xx or a 6xx came.
    closed: bool,
    wait_until: Option<Instant>,
    config: ContextConfig,
    transmits: VecDeque<Transmit<D>>,
    events: VecDeque<Event>,
}

impl<D: Copy> Context<D> {
    /// The context of a received request that will be forwarded. An INVITE is answered
    /// 100 Trying at once (§16.2). `id` names the context (it makes the To tag of the
    /// responses this context makes itself).
    pub fn server(
        now: Instant,
        id: u64,
        request: Message,
        reply_to: ReplyTo<D>,
        config: ContextConfig,
    ) -> Self {
        let kind = kind_of(request.method());
        let mut ctx = Self::new(id, kind, config, reply_to);
        if kind == Kind::Invite {
            let trying = Response::to(&request, 100, "Trying", None).finish();
            ctx.server_input(
                now,
                ServerInput::Respond {
                    status: 100,
                    bytes: trying,
                },
            );
        }
        if let Upstream::Server { request: r, .. } = &mut ctx.upstream {
            *r = Some(request);
        }
        ctx
    }

    /// The context of a received request answered here at once with `response` (status
    /// `status`), through a server transaction that absorbs retransmissions and the ACK.
    pub fn answer(
        now: Instant,
        id: u64,
        request: &Message,
        reply_to: ReplyTo<D>,
        (status, response): (u16, Bytes),
        config: ContextConfig,
    ) -> Self {
        let mut ctx = Self::new(id, kind_of(request.method()), config, reply_to);
        ctx.send_final(now, status, response, true);
        ctx
    }

    /// The context of a request this node sends of its own (`method`: the request's);
    /// start it with [`Context::add_branch`]. Its outcome is [`Event::Completed`].
    pub fn originate(id: u64, method: &Method, config: ContextConfig) -> Self {
        Self::new_with(id, kind_of(Some(method)), config, Upstream::Node)
    }

    fn new(id: u64, kind: Kind, config: ContextConfig, reply_to: ReplyTo<D>) -> Self {
        let tx = if kind == Kind::Invite {
            ServerTx::Invite(ServerInviteTx::new(reply_to.reliable, config.timers))
        } else {
            ServerTx::NonInvite(ServerNonInviteTx::new(reply_to.reliable, config.timers))
        };
        let upstream = Upstream::Server {
            tx,
            reply_to: reply_to.dest,
            request: None,
        };
        Self::new_with(id, kind, config, upstream)
    }

    fn new_with(id: u64, kind: Kind, config: ContextConfig, upstream: Upstream<D>) -> Self {
        Self {
            id,
            kind,
            upstream,
            branches: Vec::new(),
            best: None,
            answered: false,
            held: false,
            exhausted_reported: false,
            closed: false,
            wait_until: None,
            config,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn is_invite(&self) -> bool {
        self.kind == Kind::Invite
    }

    /// A final response has gone upstream (or the node's own request is complete).
    pub fn is_answered(&self) -> bool {
        self.answered
    }

    /// The index the next branch will have (for the branch parameter of its Via).
    pub fn next_branch(&self) -> usize {
        self.branches.len()
    }

    /// How many branches have started.
    pub fn branch_count(&self) -> usize {
        self.branches.len()
    }

    /// The request as received, while it has no final response (received requests only).
    pub fn request(&self) -> Option<&Message> {
        match &self.upstream {
            Upstream::Server { request, .. } => request.as_ref(),
            Upstream::Node => None,
        }
    }

    /// Starts a branch (§16.6 step 12): `request` is the forwarded copy, `dest` where it
    /// goes. INVITE branches run Timer C (step 11).
    pub fn add_branch(
        &mut self,
        now: Instant,
        dest: D,
        reliable: bool,
        request: Bytes,
    ) -> Result<usize, BranchError> {
        self.add_branch_within(now, dest, reliable, request, None)
    }

    /// As [`Context::add_branch`]; an INVITE branch that has sent no response at all
    /// within `first_response` is abandoned as a 408, as Timer C would (a trunk's
    /// failover timer). Its first provisional response gives it the full Timer C.
    pub fn add_branch_within(
        &mut self,
        now: Instant,
        dest: D,
        reliable: bool,
        request: Bytes,
        first_response: Option<std::time::Duration>,
    ) -> Result<usize, BranchError> {
        if self.answered || self.closed {
            return Err(BranchError::Closed);
        }
        let c = self.config.timers;
        let tx = if self.kind == Kind::Invite {
            ClientTx::Invite(ClientInviteTx::start_built(now, request, reliable, c))
        } else {
            ClientTx::NonInvite(ClientNonInviteTx::start(now, request, reliable, c))
        };
        let i = self.branches.len();
        // Most contexts have one branch for their whole life (a 32 s Timer J or M after
        // the answer): room for exactly one, not the four a first push would make.
        self.branches.reserve_exact(1);
        self.branches.push(Branch {
            tx,
            dest,
            provisional: false,
            final_status: None,
            timer_c: (self.kind == Kind::Invite)
                .then(|| now + first_response.map_or(c.timer_c, |f| f.min(c.timer_c))),
            cancel: None,
            cancel_pending: false,
            challenges: Vec::new(),
        });
        self.exhausted_reported = false;
        self.drain_branch(i);
        Ok(i)
    }

    /// More branches may follow: when every branch has failed, report
    /// [`Event::Exhausted`] and wait for a new branch or [`Context::release`].
    pub fn hold(&mut self) {
        self.held = true;
    }

    /// No more branches will follow: send the best response once every branch has one.
    pub fn release(&mut self, now: Instant) {
        self.held = false;
        self.complete_if_done(now);
    }

    /// Ends the context at `at` if it has not been answered by then: pending branches are
    /// cancelled and the best response so far (408 when there is none) goes upstream. A
    /// context with no branch waits for one until then.
    pub fn wait_until(&mut self, at: Instant) {
        self.wait_until = Some(at);
    }

    /// A response of the caller's choice goes upstream as the final one; pending branches
    /// are cancelled. For INVITE, a 2xx may be forwarded later still (§16.7 step 10).
    pub fn respond(&mut self, now: Instant, status: u16, bytes: Bytes) {
        if self.answered {
            return;
        }
        self.held = false;
        self.cancel_branches(now, None);
        self.send_final(now, status, bytes, true);
    }

    /// A retransmission of the request (§17.2.3 matched it here): absorbed, and the last
    /// response sent again.
    pub fn handle_request(&mut self, now: Instant) {
        self.events.push_back(Event::RetransmissionAbsorbed);
        self.server_input(now, ServerInput::Request);
    }

    /// The ACK for a non-2xx final response of this INVITE.
    pub fn handle_ack(&mut self, now: Instant) {
        self.server_input(now, ServerInput::Ack);
    }

    /// A CANCEL for this request (§16.10): every pending branch is cancelled, no new one
    /// starts, and the 487s that come back make the final response. `false` when there is
    /// nothing to cancel (not an INVITE, or already answered).
    pub fn handle_cancel(&mut self, now: Instant) -> bool {
        if self.kind != Kind::Invite || self.answered {
            return false;
        }
        self.held = false;
        self.closed = true;
        self.cancel_branches(now, None);
        if self.branches.is_empty() {
            self.send_best_or(now, 487, "Request Terminated");
        } else {
            self.complete_if_done(now);
        }
        true
    }

    /// A response that matched branch `branch` (by the branch parameter of its Via).
    /// Responses to a branch's CANCEL are recognised by their CSeq method.
    pub fn handle_response(&mut self, now: Instant, branch: usize, msg: &Message) {
        let Some(b) = self.branches.get_mut(branch) else {
            return;
        };
        let is_cancel = msg
            .cseq()
            .and_then(Result::ok)
            .is_some_and(|c| c.method == "CANCEL");
        if is_cancel {
            if let Some(c) = &mut b.cancel {
                c.handle(now, ClientInput::Response(msg));
            }
            self.drain_branch(branch);
            return;
        }
        each_branch_tx!(&mut b.tx, t => t.handle(now, ClientInput::Response(msg)));
        if self.drain_branch(branch) == Some(TxEvent::Response) {
            self.on_branch_response(now, branch, msg);
        } else {
            self.events.push_back(Event::RetransmissionAbsorbed);
        }
    }

    /// A branch's message could not be sent: the branch fails with 503 (§16.7 step 2).
    pub fn handle_transport_error(&mut self, now: Instant, branch: usize) {
        let Some(b) = self.branches.get_mut(branch) else {
            return;
        };
        each_branch_tx!(&mut b.tx, t => t.handle(now, ClientInput::TransportError));
        if self.drain_branch(branch) == Some(TxEvent::TransportError) {
            self.branch_failed(now, branch, 503);
        }
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(t) = self.server_timer(now) {
            if t == Timer::G {
                self.events.push_back(Event::RetransmissionSent);
            }
            self.server_input(now, ServerInput::Timer(t));
        }
        for i in 0..self.branches.len() {
            loop {
                let b = &mut self.branches[i];
                let t = each_branch_tx!(&mut b.tx, t => t.poll_timer(now));
                let Some(t) = t else { break };
                if matches!(t, Timer::A | Timer::E) {
                    self.events.push_back(Event::RetransmissionSent);
                }
                match &mut b.tx {
                    ClientTx::Invite(tx) => tx.handle(now, ClientInput::Timer(t)),
                    ClientTx::NonInvite(tx) => tx.handle(now, ClientInput::Timer(t)),
                }
                match self.drain_branch(i) {
                    Some(TxEvent::Timeout) => self.branch_failed(now, i, 408),
                    Some(TxEvent::TransportError) => self.branch_failed(now, i, 503),
                    _ => {}
                }
            }
            if let Some(c) = &mut self.branches[i].cancel {
                while let Some(t) = c.poll_timer(now) {
                    if t == Timer::E {
                        self.events.push_back(Event::RetransmissionSent);
                    }
                    c.handle(now, ClientInput::Timer(t));
                }
                self.drain_branch(i);
            }
            self.timer_c(now, i);
        }
        if self.wait_until.is_some_and(|w| w <= now) && !self.answered {
            self.wait_until = None;
            self.held = false;
            self.closed = true;
            // INVITE branches are cancelled; a non-INVITE one cannot be (§9.1) and is
            // abandoned as a 408.
            self.cancel_branches(now, None);
            for i in 0..self.branches.len() {
                let b = &mut self.branches[i];
                if let (None, ClientTx::NonInvite(t)) = (b.final_status, &mut b.tx) {
                    t.handle(now, ClientInput::Abandon);
                    self.drain_branch(i);
                    self.branch_failed(now, i, 408);
                }
            }
            if self.branches.iter().all(|b| b.final_status.is_some()) {
                self.send_best_or(now, 408, "Request Timeout");
            }
        }
    }

    /// §16.8: Timer C fired for branch `i`: a branch that rang is cancelled (and gets 64*T1
    /// more to end, §9.1); one that never answered, or stays silent after its CANCEL,
    /// counts as 408 and is abandoned.
    fn timer_c(&mut self, now: Instant, i: usize) {
        let b = &mut self.branches[i];
        if b.final_status.is_some() || b.timer_c.is_none_or(|t| t > now) {
            return;
        }
        if b.provisional && b.cancel.is_none() {
            self.send_cancel(now, i);
        } else {
            b.timer_c = None;
            each_branch_tx!(&mut b.tx, t => t.handle(now, ClientInput::Abandon));
            self.drain_branch(i);
            self.branch_failed(now, i, 408);
        }
    }

    fn server_timer(&mut self, now: Instant) -> Option<Timer> {
        match &mut self.upstream {
            Upstream::Server { tx, .. } => each_tx!(tx, t => t.poll_timer(now)),
            Upstream::Node => None,
        }
    }

    fn server_input(&mut self, now: Instant, input: ServerInput) {
        let Upstream::Server { tx, reply_to, .. } = &mut self.upstream else {
            return;
        };
        let dest = *reply_to;
        let transmits = &mut self.transmits;
        let mut up = |bytes| {
            transmits.push_back(Transmit {
                dest,
                bytes,
                branch: None,
            })
        };
        // The server's events (its timeouts) change nothing upstream: they are dropped.
        each_tx!(tx, t => {
            t.handle(now, input);
            std::iter::from_fn(|| t.poll_transmit()).for_each(|x| up(x.0));
            while t.poll_event().is_some() {}
        })
    }

    /// Queues what branch `i`'s transactions send; returns its client transaction's event.
    fn drain_branch(&mut self, i: usize) -> Option<TxEvent> {
        let b = self.branches.get_mut(i)?;
        let mut event = None;
        let dest = b.dest;
        let tx = |bytes| Transmit {
            dest,
            bytes,
            branch: Some(i),
        };
        match &mut b.tx {
            ClientTx::Invite(t) => {
                while let Some(x) = t.poll_transmit() {
                    self.transmits.push_back(tx(x.0));
                }
                while let Some(e) = t.poll_event() {
                    event = Some(e);
                }
            }
            ClientTx::NonInvite(t) => {
                while let Some(x) = t.poll_transmit() {
                    self.transmits.push_back(tx(x.0));
                }
                while let Some(e) = t.poll_event() {
                    event = Some(e);
                }
            }
        }
        if let Some(c) = &mut b.cancel {
            while let Some(x) = c.poll_transmit() {
                self.transmits.push_back(tx(x.0));
            }
            while c.poll_event().is_some() {}
        }
        event
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit<D>> {
        let t = self.transmits.pop_front();
        if t.is_none() && self.answered {
            release(&mut self.transmits);
        }
        t
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        let e = self.events.pop_front();
        if e.is_none() && self.answered {
            release(&mut self.events);
        }
        e
    }

    /// Bytes of the buffers the context itself holds: its branches and its queues.
    #[cfg(test)]
    pub(crate) fn buffer_bytes(&self) -> usize {
        self.branches.capacity() * std::mem::size_of::<Branch<D>>()
            + self.transmits.capacity() * std::mem::size_of::<Transmit<D>>()
            + self.events.capacity() * std::mem::size_of::<Event>()
    }

    /// The earliest time anything in this context must run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let server = match &self.upstream {
            Upstream::Server { tx, .. } => each_tx!(tx, t => t.poll_timeout()),
            Upstream::Node => None,
        };
        let branches = self.branches.iter().flat_map(|b| {
            let tx = each_branch_tx!(&b.tx, t => t.poll_timeout());
            let cancel = b.cancel.as_ref().and_then(|c| c.poll_timeout());
            let c = b.timer_c.filter(|_| b.final_status.is_none());
            [tx, cancel, c]
        });
        let wait = self.wait_until.filter(|_| !self.answered);
        std::iter::once(server)
            .chain(branches)
            .chain(std::iter::once(wait))
            .flatten()
            .min()
    }

    /// Every machine has ended and nothing is owed: the context can go.
    pub fn is_terminated(&self) -> bool {
        let server = match &self.upstream {
            Upstream::Server { tx, .. } => each_tx!(tx, t => t.is_terminated()),
            Upstream::Node => self.answered,
        };
        server
            && self.branches.iter().all(|b| {
                let tx = each_branch_tx!(&b.tx, t => t.is_terminated());
                tx && b.cancel.as_ref().is_none_or(|c| c.is_terminated())
            })
    }

    /// The server transaction's kind and state, for the census (`None`: the node's own).
    pub fn census(&self) -> Option<(&'static str, &'static str)> {
        match &self.upstream {
            Upstream::Server {
                tx: ServerTx::Invite(t),
                ..
            } => Some(("invite_server", t.state().label())),
            Upstream::Server {
                tx: ServerTx::NonInvite(t),
                ..
            } => Some(("non_invite_server", t.state().label())),
            Upstream::Node => None,
        }
    }

    /// Client transactions by kind and state, for the census.
    pub fn branch_census(&self) -> impl Iterator<Item = (&'static str, &'static str)> + '_ {
        self.branches.iter().map(|b| match &b.tx {
            ClientTx::Invite(t) => ("invite_client", t.state().label()),
            ClientTx::NonInvite(t) => ("non_invite_client", t.state().label()),
        })
    }
}

fn kind_of(method: Option<&Method>) -> Kind {
    match method {
        Some(Method::Invite) => Kind::Invite,
        Some(Method::Bye) => Kind::Bye,
        _ => Kind::Other,
    }
}

/// The To tag of the responses a context makes itself: `lm` and its id, so the ACK for
/// one is recognised as the node's.
pub fn local_tag(id: u64) -> String {
    let mut tag = String::with_capacity(18);
    tag.push_str("lm");
    for shift in (0..16).rev() {
        tag.push(char::from(
            b"0123456789abcdef"[((id >> (shift * 4)) & 15) as usize],
        ));
    }
    tag
}

/// Frees a drained queue's buffer: once the final response is out a context mostly waits
/// for its timers (Timer J or M: 32 s over UDP), and the buffer would wait with it.
fn release<T>(queue: &mut VecDeque<T>) {
    if queue.capacity() != 0 {
        *queue = VecDeque::new();
    }
}
