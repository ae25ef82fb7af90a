//! Server transactions (RFC 3261 §17.2, RFC 6026 §7.1).

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{driven, Core, Event, Timer, TimerConfig};

/// What a server transaction is fed.
#[derive(Debug, Clone)]
pub enum ServerInput {
    /// A retransmission of the request that created the transaction.
    Request,
    /// An ACK matched to this (INVITE) transaction.
    Ack,
    /// The TU sends a response with this status.
    Respond {
        status: u16,
        bytes: Bytes,
    },
    Timer(Timer),
    TransportError,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerInviteState {
    Proceeding,
    Completed,
    Confirmed,
    Accepted,
    Terminated,
}

impl ServerInviteState {
    /// Lower-case state name, for metrics and the admin API.
    pub fn label(self) -> &'static str {
        match self {
            Self::Proceeding => "proceeding",
            Self::Completed => "completed",
            Self::Confirmed => "confirmed",
            Self::Accepted => "accepted",
            Self::Terminated => "terminated",
        }
    }
}

/// INVITE server transaction (§17.2.1, Figure 7 as amended by RFC 6026 Figure 5).
#[derive(Debug)]
pub struct ServerInviteTx {
    core: Core,
    state: ServerInviteState,
    last_response: Option<Bytes>,
    timer_g: Duration,
}

driven!(ServerInviteTx);

impl ServerInviteTx {
    /// §17.2.1: created in Proceeding when an INVITE arrives. The TU (or the driver,
    /// within 200 ms) sends the 100 Trying through [`ServerInput::Respond`].
    pub fn new(reliable: bool, config: TimerConfig) -> Self {
        Self {
            core: Core::new(config, reliable),
            state: ServerInviteState::Proceeding,
            last_response: None,
            timer_g: config.t1,
        }
    }

    pub fn state(&self) -> ServerInviteState {
        self.state
    }

    pub fn is_terminated(&self) -> bool {
        self.state == ServerInviteState::Terminated
    }

    pub fn handle(&mut self, now: Instant, input: ServerInput) {
        use ServerInput as I;
        use ServerInviteState as S;
        let c = self.core.config;
        match (self.state, input) {
            (S::Terminated, _) => {}
            // §17.2.1: a retransmitted INVITE in Proceeding gets the last provisional.
            (S::Proceeding, I::Request) => self.resend(),
            // §17.2.1: the TU's provisional responses are sent.
            (S::Proceeding, I::Respond { status, bytes }) if status < 200 => self.send(bytes),
            // RFC 6026 §7.1: a 2xx is sent and the transaction waits in Accepted (Timer L).
            (S::Proceeding, I::Respond { status, bytes }) if status < 300 => {
                self.core.send(&bytes);
                // Accepted absorbs INVITE retransmissions; the 2xx is the TU's to repeat.
                self.last_response = None;
                self.state = S::Accepted;
                self.core.arm(Timer::L, now + c.t1x64());
            }
            // §17.2.1: a 300-699 is sent; Completed starts Timer G (unreliable) and H.
            (S::Proceeding, I::Respond { bytes, .. }) => {
                self.send(bytes);
                self.state = S::Completed;
                if !self.core.reliable {
                    self.core.arm(Timer::G, now + c.t1);
                }
                self.core.arm(Timer::H, now + c.t1x64());
            }
            // §17.2.1: INVITE retransmission in Completed: resend the final response.
            (S::Completed, I::Request) => self.resend(),
            // §17.2.1: Timer G: resend, interval MIN(2G, T2).
            (S::Completed, I::Timer(Timer::G)) => {
                self.resend();
                self.timer_g = (self.timer_g * 2).min(c.t2);
                self.core.arm(Timer::G, now + self.timer_g);
            }
            // §17.2.1: Timer H: the ACK never came.
            (S::Completed, I::Timer(Timer::H)) => self.terminate(Some(Event::Timeout)),
            // §17.2.1: the ACK moves to Confirmed; Timer I absorbs ACK retransmissions
            // (zero when reliable).
            (S::Completed, I::Ack) => {
                self.core.clear();
                if self.core.reliable {
                    self.state = S::Terminated;
                } else {
                    self.state = S::Confirmed;
                    self.core.arm(Timer::I, now + c.t4);
                }
            }
            (S::Confirmed, I::Timer(Timer::I)) => self.terminate(None),
            // RFC 6026 §7.1: further 2xx from the TU are sent; an ACK goes to the TU.
            (S::Accepted, I::Respond { status, bytes }) if (200..300).contains(&status) => {
                self.send(bytes)
            }
            (S::Accepted, I::Ack) => self.core.events.push(Event::Ack),
            (S::Accepted, I::Timer(Timer::L)) => self.terminate(None),
            (_, I::TransportError) => self.terminate(Some(Event::TransportError)),
            // Absorbed: INVITE retransmissions in Confirmed and Accepted, ACKs in
            // Confirmed, late TU responses, stray timers.
            _ => {}
        }
    }

    fn send(&mut self, bytes: Bytes) {
        self.core.send(&bytes);
        self.last_response = Some(bytes);
    }

    fn resend(&mut self) {
        if let Some(r) = &self.last_response {
            self.core.send(&r.clone());
        }
    }

    fn terminate(&mut self, event: Option<Event>) {
        self.core.clear();
        self.state = ServerInviteState::Terminated;
        self.core.events.extend(event);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerNonInviteState {
    Trying,
    Proceeding,
    Completed,
    Terminated,
}

impl ServerNonInviteState {
    /// Lower-case state name, for metrics and the admin API.
    pub fn label(self) -> &'static str {
        match self {
            Self::Trying => "trying",
            Self::Proceeding => "proceeding",
            Self::Completed => "completed",
            Self::Terminated => "terminated",
        }
    }
}

/// Non-INVITE server transaction (§17.2.2, Figure 8).
#[derive(Debug)]
pub struct ServerNonInviteTx {
    core: Core,
    state: ServerNonInviteState,
    last_response: Option<Bytes>,
}

driven!(ServerNonInviteTx);

impl ServerNonInviteTx {
    /// §17.2.2: created in Trying when the request arrives.
    pub fn new(reliable: bool, config: TimerConfig) -> Self {
        Self {
            core: Core::new(config, reliable),
            state: ServerNonInviteState::Trying,
            last_response: None,
        }
    }

    pub fn state(&self) -> ServerNonInviteState {
        self.state
    }

    pub fn is_terminated(&self) -> bool {
        self.state == ServerNonInviteState::Terminated
    }

    pub fn handle(&mut self, now: Instant, input: ServerInput) {
        use ServerInput as I;
        use ServerNonInviteState as S;
        match (self.state, input) {
            (S::Terminated, _) => {}
            // §17.2.2: a provisional response moves Trying to Proceeding.
            (S::Trying | S::Proceeding, I::Respond { status, bytes }) if status < 200 => {
                self.send(bytes);
                self.state = S::Proceeding;
            }
            // §17.2.2: a final response moves to Completed; Timer J absorbs request
            // retransmissions (zero when reliable).
            (S::Trying | S::Proceeding, I::Respond { bytes, .. }) => {
                self.send(bytes);
                if self.core.reliable {
                    self.state = S::Terminated;
                } else {
                    self.state = S::Completed;
                    self.core.arm(Timer::J, now + self.core.config.t1x64());
                }
            }
            // §17.2.2: retransmissions in Proceeding and Completed get the last response;
            // in Trying they are discarded.
            (S::Proceeding | S::Completed, I::Request) => {
                if let Some(r) = &self.last_response {
                    self.core.send(&r.clone());
                }
            }
            (S::Completed, I::Timer(Timer::J)) => {
                self.core.clear();
                self.state = S::Terminated;
            }
            (_, I::TransportError) => {
                self.core.clear();
                self.state = S::Terminated;
                self.core.events.push(Event::TransportError);
            }
            // Absorbed: retransmissions in Trying, responses after the final one, stray
            // timers.
            _ => {}
        }
    }

    fn send(&mut self, bytes: Bytes) {
        self.core.send(&bytes);
        self.last_response = Some(bytes);
    }
}
