//! One server transaction with its client branches: the unit the proxy locks, drives and
//! times (RFC 3261 §16: the "response context").

use std::time::Instant;

use bytes::Bytes;
use limes_sip::transaction::{
    ClientInput, ClientInviteTx, ClientNonInviteTx, Event, ServerInput, ServerInviteTx,
    ServerNonInviteTx, Timer, TxKey,
};
use limes_sip::Message;

use crate::transport::Dest;

/// Messages to send once the shard lock is released.
pub type Sends = Vec<(Dest, Bytes)>;

pub enum ServerTx {
    Invite(ServerInviteTx),
    NonInvite(ServerNonInviteTx),
}

pub enum ClientTx {
    Invite(ClientInviteTx),
    NonInvite(ClientNonInviteTx),
}

/// A forwarded copy of the request and its client transaction (§16.6).
pub struct Branch {
    pub tx: ClientTx,
    pub dest: Dest,
    /// The forwarded request, kept until the branch has a final response (to build a
    /// CANCEL for it).
    pub request: Option<Message>,
    pub provisional: bool,
    pub final_status: Option<u16>,
    /// Timer C (§16.6 item 11): INVITE branches only.
    pub timer_c: Option<Instant>,
    /// The CANCEL sent for this branch (§16.10), if any.
    pub cancel: Option<ClientNonInviteTx>,
    /// A CANCEL is owed but waits for the first provisional response (§9.1).
    pub cancel_pending: bool,
}

pub struct Entry {
    pub key: TxKey,
    pub server: ServerTx,
    /// Where responses to the request go (§18.2.2).
    pub reply_to: Dest,
    /// The request as received, until a final response has gone upstream.
    pub request: Option<Message>,
    pub branches: Vec<Branch>,
    /// The best failure so far: status and the bytes to send upstream.
    pub best: Option<(u16, Bytes)>,
    /// A final response has gone upstream.
    pub answered: bool,
    /// The earliest deadline queued in the shard's timer heap for this entry.
    pub scheduled: Option<Instant>,
    /// Targets still to try (serial forking), boxed: most requests have none.
    pub later: Option<Box<Later>>,
}

/// The groups of targets not started yet (§16.6: lower q after higher q has failed), and
/// what their branches share with the first ones.
pub struct Later {
    pub groups: std::collections::VecDeque<Vec<super::Route>>,
    pub fork: super::Fork,
    pub sid: u64,
}

impl Entry {
    pub fn is_invite(&self) -> bool {
        matches!(self.server, ServerTx::Invite(_))
    }

    /// Feeds the server transaction and queues what it sends.
    pub fn server_input(&mut self, now: Instant, input: ServerInput, sends: &mut Sends) {
        match &mut self.server {
            ServerTx::Invite(t) => t.handle(now, input),
            ServerTx::NonInvite(t) => t.handle(now, input),
        }
        self.drain_server(sends);
    }

    pub fn drain_server(&mut self, sends: &mut Sends) {
        let to = self.reply_to;
        match &mut self.server {
            ServerTx::Invite(t) => {
                while let Some(x) = t.poll_transmit() {
                    sends.push((to, x.0));
                }
                while t.poll_event().is_some() {}
            }
            ServerTx::NonInvite(t) => {
                while let Some(x) = t.poll_transmit() {
                    sends.push((to, x.0));
                }
                while t.poll_event().is_some() {}
            }
        }
    }

    /// Sends a response upstream through the server transaction.
    pub fn respond(&mut self, now: Instant, status: u16, bytes: Bytes, sends: &mut Sends) {
        if status >= 200 {
            self.answered = true;
            self.request = None;
        }
        self.server_input(now, ServerInput::Respond { status, bytes }, sends);
    }

    /// Feeds branch `i`'s client transaction; returns the events it raised and queues
    /// what it sends.
    pub fn branch_input(
        &mut self,
        i: usize,
        now: Instant,
        input: ClientInput<'_>,
        sends: &mut Sends,
    ) -> Vec<Event> {
        if let Some(b) = self.branches.get_mut(i) {
            match &mut b.tx {
                ClientTx::Invite(t) => t.handle(now, input),
                ClientTx::NonInvite(t) => t.handle(now, input),
            }
        }
        self.drain_branch(i, sends)
    }

    /// Queues what branch `i`'s client transaction has to send; returns its events.
    pub fn drain_branch(&mut self, i: usize, sends: &mut Sends) -> Vec<Event> {
        let mut events = Vec::new();
        let Some(b) = self.branches.get_mut(i) else {
            return events;
        };
        match &mut b.tx {
            ClientTx::Invite(t) => {
                while let Some(x) = t.poll_transmit() {
                    sends.push((b.dest, x.0));
                }
                while let Some(e) = t.poll_event() {
                    events.push(e);
                }
            }
            ClientTx::NonInvite(t) => {
                while let Some(x) = t.poll_transmit() {
                    sends.push((b.dest, x.0));
                }
                while let Some(e) = t.poll_event() {
                    events.push(e);
                }
            }
        }
        events
    }

    /// Feeds the CANCEL transaction of branch `i`.
    pub fn cancel_input(
        &mut self,
        i: usize,
        now: Instant,
        input: ClientInput<'_>,
        sends: &mut Sends,
    ) {
        if let Some(c) = self.branches.get_mut(i).and_then(|b| b.cancel.as_mut()) {
            c.handle(now, input);
        }
        self.drain_cancel(i, sends);
    }

    /// Queues what branch `i`'s CANCEL transaction has to send.
    pub fn drain_cancel(&mut self, i: usize, sends: &mut Sends) {
        if let Some(b) = self.branches.get_mut(i) {
            if let Some(c) = &mut b.cancel {
                while let Some(x) = c.poll_transmit() {
                    sends.push((b.dest, x.0));
                }
                while c.poll_event().is_some() {}
            }
        }
    }

    /// The earliest time anything in this entry must run.
    pub fn next_deadline(&self) -> Option<Instant> {
        let server = match &self.server {
            ServerTx::Invite(t) => t.poll_timeout(),
            ServerTx::NonInvite(t) => t.poll_timeout(),
        };
        let branches = self.branches.iter().flat_map(|b| {
            let tx = match &b.tx {
                ClientTx::Invite(t) => t.poll_timeout(),
                ClientTx::NonInvite(t) => t.poll_timeout(),
            };
            let cancel = b.cancel.as_ref().and_then(|c| c.poll_timeout());
            let c = if b.final_status.is_none() {
                b.timer_c
            } else {
                None
            };
            [tx, cancel, c]
        });
        std::iter::once(server).chain(branches).flatten().min()
    }

    /// Every machine has ended: the entry can go.
    pub fn is_finished(&self) -> bool {
        let server = match &self.server {
            ServerTx::Invite(t) => t.is_terminated(),
            ServerTx::NonInvite(t) => t.is_terminated(),
        };
        server
            && self.branches.iter().all(|b| {
                let tx = match &b.tx {
                    ClientTx::Invite(t) => t.is_terminated(),
                    ClientTx::NonInvite(t) => t.is_terminated(),
                };
                tx && b.cancel.as_ref().is_none_or(|c| c.is_terminated())
            })
    }

    /// Takes the timers due at `now` from every machine: `(branch or None for the
    /// server, is the CANCEL transaction, timer)`.
    pub fn due_timers(&mut self, now: Instant) -> Vec<(Option<usize>, bool, Timer)> {
        let mut due = Vec::new();
        loop {
            let t = match &mut self.server {
                ServerTx::Invite(t) => t.poll_timer(now),
                ServerTx::NonInvite(t) => t.poll_timer(now),
            };
            match t {
                Some(t) => due.push((None, false, t)),
                None => break,
            }
        }
        for (i, b) in self.branches.iter_mut().enumerate() {
            loop {
                let t = match &mut b.tx {
                    ClientTx::Invite(t) => t.poll_timer(now),
                    ClientTx::NonInvite(t) => t.poll_timer(now),
                };
                match t {
                    Some(t) => due.push((Some(i), false, t)),
                    None => break,
                }
            }
            if let Some(c) = &mut b.cancel {
                while let Some(t) = c.poll_timer(now) {
                    due.push((Some(i), true, t));
                }
            }
        }
        due
    }

    /// A state label of the server transaction, for the census.
    pub fn census(&self) -> (&'static str, &'static str) {
        match &self.server {
            ServerTx::Invite(t) => ("invite_server", t.state().label()),
            ServerTx::NonInvite(t) => ("non_invite_server", t.state().label()),
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
