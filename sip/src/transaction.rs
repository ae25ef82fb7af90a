//! RFC 3261 §17 transactions, with the RFC 6026 Accepted states, as sans-IO state
//! machines. Each one is driven the same way: feed an input with `handle(now, input)`,
//! then send every [`Transmit`] from `poll_transmit`, hand every [`Event`] from
//! `poll_event` to the transaction user, and arm one timer at `poll_timeout`; when it
//! fires, feed the [`Timer`] that `poll_timer` names.
//!
//! The four machines, each one `match (state, input)`:
//! [`ClientInviteTx`] (§17.1.1), [`ClientNonInviteTx`] (§17.1.2),
//! [`ServerInviteTx`] (§17.2.1), [`ServerNonInviteTx`] (§17.2.2).
//! [`TxKey`] matches messages to them (§17.1.3, §17.2.3, RFC 2543 fallback).

use std::time::{Duration, Instant};

use bytes::Bytes;
use smallvec::SmallVec;

mod client;
mod key;
mod server;
#[cfg(test)]
mod tests;

pub use client::{
    ClientInput, ClientInviteState, ClientInviteTx, ClientNonInviteState, ClientNonInviteTx,
};
pub use key::TxKey;
pub use server::{
    ServerInput, ServerInviteState, ServerInviteTx, ServerNonInviteState, ServerNonInviteTx,
};

/// RFC 3261's timer values (§17.1.1.1, Table 4), and the proxy's Timer C (§16.6 step 11).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerConfig {
    /// RTT estimate, default 500 ms.
    pub t1: Duration,
    /// Longest retransmit interval for non-INVITE requests and INVITE responses, 4 s.
    pub t2: Duration,
    /// Longest time a message stays in the network, 5 s.
    pub t4: Duration,
    /// Wait for response retransmissions after a non-2xx INVITE response, >= 32 s (UDP).
    pub timer_d: Duration,
    /// Proxy INVITE timer: no final response within it cancels the branch, > 3 min.
    pub timer_c: Duration,
}

impl Default for TimerConfig {
    fn default() -> Self {
        Self {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
            timer_d: Duration::from_secs(32),
            timer_c: Duration::from_secs(181),
        }
    }
}

impl TimerConfig {
    /// 64*T1: Timers B, F, H, J (unreliable), L and M.
    pub fn t1x64(&self) -> Duration {
        self.t1 * 64
    }
}

/// RFC 3261 timer names (A-K) and RFC 6026's L and M.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timer {
    /// INVITE request retransmit (client, unreliable).
    A,
    /// INVITE transaction timeout (client).
    B,
    /// Wait for response retransmissions (client INVITE, Completed).
    D,
    /// Non-INVITE request retransmit (client, unreliable).
    E,
    /// Non-INVITE transaction timeout (client).
    F,
    /// INVITE final response retransmit (server, unreliable).
    G,
    /// Wait for ACK (server INVITE).
    H,
    /// Wait for ACK retransmissions (server INVITE, Confirmed).
    I,
    /// Wait for request retransmissions (server non-INVITE, Completed).
    J,
    /// Wait for response retransmissions (client non-INVITE, Completed).
    K,
    /// Wait for 2xx retransmissions from the TU (server INVITE, Accepted).
    L,
    /// Wait for 2xx retransmissions (client INVITE, Accepted).
    M,
}

/// A message the driver must send to the transaction's peer.
#[must_use]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit(pub Bytes);

/// What the transaction user learns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Client: the response just handled goes to the TU (not absorbed).
    Response,
    /// Server INVITE in Accepted: an ACK for the 2xx, for the TU (RFC 6026 §7.1).
    Ack,
    /// Timer B, F or H fired: no response, or no ACK.
    Timeout,
    /// The transport could not send.
    TransportError,
}

/// The oldest item of a machine's outbox.
fn pop_front<A: smallvec::Array>(queue: &mut SmallVec<A>) -> Option<A::Item> {
    (!queue.is_empty()).then(|| queue.remove(0))
}

/// Timers, outputs and events a machine shares; at most two timers run at once.
#[derive(Debug)]
struct Core {
    config: TimerConfig,
    reliable: bool,
    timers: [Option<(Timer, Instant)>; 2],
    /// Drained by the driver after every input, so never more than a few: kept inline,
    /// no allocation per transaction.
    transmits: SmallVec<[Transmit; 2]>,
    events: SmallVec<[Event; 2]>,
}

impl Core {
    fn new(config: TimerConfig, reliable: bool) -> Self {
        Self {
            config,
            reliable,
            timers: [None, None],
            transmits: SmallVec::new(),
            events: SmallVec::new(),
        }
    }

    /// Arms `timer`, replacing its earlier deadline if it was armed.
    fn arm(&mut self, timer: Timer, at: Instant) {
        let slot = match self
            .timers
            .iter()
            .position(|t| t.is_some_and(|(name, _)| name == timer))
        {
            Some(i) => Some(i),
            None => self.timers.iter().position(Option::is_none),
        };
        if let Some(i) = slot {
            self.timers[i] = Some((timer, at));
        }
    }

    fn clear(&mut self) {
        self.timers = [None, None];
    }

    fn send(&mut self, bytes: &Bytes) {
        self.transmits.push(Transmit(bytes.clone()));
    }

    fn next_timer(&self) -> Option<(Timer, Instant)> {
        self.timers
            .iter()
            .flatten()
            .min_by_key(|(_, at)| *at)
            .copied()
    }

    /// Removes and returns the earliest timer due at `now`.
    fn take_due(&mut self, now: Instant) -> Option<Timer> {
        let (timer, at) = self.next_timer()?;
        if at > now {
            return None;
        }
        for slot in &mut self.timers {
            if slot.is_some_and(|(t, _)| t == timer) {
                *slot = None;
            }
        }
        Some(timer)
    }
}

/// The polling surface all four machines share.
macro_rules! driven {
    ($t:ty) => {
        impl $t {
            pub fn poll_transmit(&mut self) -> Option<crate::transaction::Transmit> {
                crate::transaction::pop_front(&mut self.core.transmits)
            }

            pub fn poll_event(&mut self) -> Option<crate::transaction::Event> {
                crate::transaction::pop_front(&mut self.core.events)
            }

            /// When the next timer is due.
            pub fn poll_timeout(&self) -> Option<std::time::Instant> {
                self.core.next_timer().map(|(_, at)| at)
            }

            /// The timer due at `now`, if any, removed from the schedule: feed it back
            /// with `handle`.
            pub fn poll_timer(
                &mut self,
                now: std::time::Instant,
            ) -> Option<crate::transaction::Timer> {
                self.core.take_due(now)
            }

            /// The timers armed now and when each is due, for inspection and tests.
            pub fn armed(&self) -> Vec<(crate::transaction::Timer, std::time::Instant)> {
                self.core.timers.iter().flatten().copied().collect()
            }
        }
    };
}
use driven;
