//! Client transactions (RFC 3261 §17.1, RFC 6026 §7.2).

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{driven, Core, Event, Timer, TimerConfig};
use crate::build;
use crate::message::Message;

/// What a client transaction is fed.
#[derive(Debug, Clone, Copy)]
pub enum ClientInput<'a> {
    /// A response matched to this transaction by [`super::TxKey::client`].
    Response(&'a Message),
    Timer(Timer),
    TransportError,
    /// The TU gives up on the transaction: a CANCELled INVITE with no final response after
    /// 64*T1 (§9.1: the client "SHOULD then consider the original transaction cancelled and
    /// SHOULD destroy" it). Terminates without an event.
    Abandon,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientInviteState {
    Calling,
    Proceeding,
    Completed,
    Accepted,
    Terminated,
}

impl ClientInviteState {
    /// Lower-case state name, for metrics and the admin API.
    pub fn label(self) -> &'static str {
        match self {
            Self::Calling => "calling",
            Self::Proceeding => "proceeding",
            Self::Completed => "completed",
            Self::Accepted => "accepted",
            Self::Terminated => "terminated",
        }
    }
}

/// INVITE client transaction (§17.1.1, Figure 5 as amended by RFC 6026 Figure 3).
#[derive(Debug)]
pub struct ClientInviteTx {
    core: Core,
    state: ClientInviteState,
    /// Held while it may be retransmitted or ACKed; released once a 2xx arrives, so a
    /// transaction waiting in Accepted costs little memory.
    request: Option<Held>,
    ack: Option<Bytes>,
    timer_a: Duration,
}

/// The INVITE as the transaction holds it: parsed, or the bytes a proxy just built,
/// parsed only if a CANCEL or an ACK for a failure must be derived from it (most calls
/// never need that). Boxed when parsed: held for the transaction's life, the inline
/// message would make every INVITE branch that much larger.
#[derive(Debug)]
enum Held {
    Parsed(Box<Message>),
    Built(Bytes),
}

impl Held {
    fn bytes(&self) -> &Bytes {
        match self {
            Held::Parsed(m) => m.as_bytes(),
            Held::Built(b) => b,
        }
    }

    fn parsed(&mut self) -> Option<&Message> {
        if let Held::Built(b) = self {
            // Built by this node's own builders: the default bounds hold it.
            let m = Message::parse(b.clone(), &crate::Limits::default()).ok()?;
            *self = Held::Parsed(Box::new(m));
        }
        match self {
            Held::Parsed(m) => Some(m),
            Held::Built(_) => None,
        }
    }
}

driven!(ClientInviteTx);

impl ClientInviteTx {
    /// §17.1.1.2: send the INVITE, start Timer A (unreliable transport) and Timer B.
    pub fn start(now: Instant, request: Message, reliable: bool, config: TimerConfig) -> Self {
        Self::start_held(now, Held::Parsed(Box::new(request)), reliable, config)
    }

    /// [`ClientInviteTx::start`] for an INVITE this node has just built (a proxy's
    /// forwarded copy): not parsed again unless a CANCEL or an ACK needs it.
    pub fn start_built(now: Instant, request: Bytes, reliable: bool, config: TimerConfig) -> Self {
        Self::start_held(now, Held::Built(request), reliable, config)
    }

    fn start_held(now: Instant, request: Held, reliable: bool, config: TimerConfig) -> Self {
        let mut core = Core::new(config, reliable);
        core.send(request.bytes());
        if !reliable {
            core.arm(Timer::A, now + config.t1);
        }
        core.arm(Timer::B, now + config.t1x64());
        Self {
            core,
            state: ClientInviteState::Calling,
            request: Some(request),
            ack: None,
            timer_a: config.t1,
        }
    }

    pub fn state(&self) -> ClientInviteState {
        self.state
    }

    /// Whether it runs over a reliable transport (no retransmissions).
    pub fn is_reliable(&self) -> bool {
        self.core.reliable
    }

    /// Whether the INVITE is still held (no final response yet, or a failure not ACKed).
    pub fn has_request(&self) -> bool {
        self.request.is_some()
    }

    /// The INVITE, until a final response releases it (parsed now if it was held as built).
    pub fn request(&mut self) -> Option<&Message> {
        self.request.as_mut()?.parsed()
    }

    pub fn is_terminated(&self) -> bool {
        self.state == ClientInviteState::Terminated
    }

    pub fn handle(&mut self, now: Instant, input: ClientInput<'_>) {
        use ClientInput as I;
        use ClientInviteState as S;
        let status = match input {
            I::Response(r) => r.status().unwrap_or(0),
            _ => 0,
        };
        match (self.state, input) {
            (S::Terminated, _) => {}
            // §17.1.1.2: Timer A fires: retransmit and double the interval.
            (S::Calling, I::Timer(Timer::A)) => {
                if let Some(r) = &self.request {
                    self.core.send(r.bytes());
                }
                self.timer_a *= 2;
                self.core.arm(Timer::A, now + self.timer_a);
            }
            // §17.1.1.2: Timer B fires in Calling: timeout.
            (S::Calling, I::Timer(Timer::B)) => self.terminate(Some(Event::Timeout)),
            // §17.1.1.2: a provisional response moves to Proceeding; no more retransmits.
            (S::Calling | S::Proceeding, I::Response(_)) if status < 200 => {
                self.core.clear();
                self.state = S::Proceeding;
                self.core.events.push(Event::Response);
            }
            // RFC 6026 §7.2: a 2xx moves to Accepted and starts Timer M.
            (S::Calling | S::Proceeding, I::Response(_)) if status < 300 => {
                self.core.clear();
                self.state = S::Accepted;
                self.request = None;
                self.core.events.push(Event::Response);
                self.core.arm(Timer::M, now + self.core.config.t1x64());
            }
            // §17.1.1.2: a 300-699 response is passed up, ACKed, and Completed starts
            // Timer D (zero on reliable transports).
            (S::Calling | S::Proceeding, I::Response(r)) => {
                self.core.clear();
                if let Some(req) = self.request.take().as_mut().and_then(Held::parsed) {
                    let ack = build::ack_for_non_2xx(req, r);
                    self.core.send(&ack);
                    self.ack = Some(ack);
                }
                self.core.events.push(Event::Response);
                if self.core.reliable {
                    self.state = S::Terminated;
                } else {
                    self.state = S::Completed;
                    self.core.arm(Timer::D, now + self.core.config.timer_d);
                }
            }
            // §17.1.1.2: a retransmitted final response in Completed is ACKed again and
            // not passed up.
            (S::Completed, I::Response(_)) if status >= 300 => {
                if let Some(ack) = &self.ack {
                    self.core.send(&ack.clone());
                }
            }
            (S::Completed, I::Timer(Timer::D)) => self.terminate(None),
            // RFC 6026 §7.2: 2xx retransmissions in Accepted go to the TU.
            (S::Accepted, I::Response(_)) if (200..300).contains(&status) => {
                self.core.events.push(Event::Response);
            }
            (S::Accepted, I::Timer(Timer::M)) => self.terminate(None),
            // §17.1.1.2 / §17.1.4: a transport error terminates and is reported.
            (_, I::TransportError) => self.terminate(Some(Event::TransportError)),
            // §9.1: the TU destroys a cancelled transaction that never completed.
            (_, I::Abandon) => self.terminate(None),
            // Anything else (late provisional, stray timer) is absorbed.
            _ => {}
        }
    }

    fn terminate(&mut self, event: Option<Event>) {
        self.core.clear();
        self.state = ClientInviteState::Terminated;
        self.core.events.extend(event);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientNonInviteState {
    Trying,
    Proceeding,
    Completed,
    Terminated,
}

impl ClientNonInviteState {
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

/// Non-INVITE client transaction (§17.1.2, Figure 6).
#[derive(Debug)]
pub struct ClientNonInviteTx {
    core: Core,
    state: ClientNonInviteState,
    request: Bytes,
    timer_e: Duration,
}

driven!(ClientNonInviteTx);

impl ClientNonInviteTx {
    /// §17.1.2.2: send the request, start Timer E (unreliable) and Timer F.
    pub fn start(now: Instant, request: Bytes, reliable: bool, config: TimerConfig) -> Self {
        let mut core = Core::new(config, reliable);
        core.send(&request);
        if !reliable {
            core.arm(Timer::E, now + config.t1);
        }
        core.arm(Timer::F, now + config.t1x64());
        Self {
            core,
            state: ClientNonInviteState::Trying,
            request,
            timer_e: config.t1,
        }
    }

    pub fn state(&self) -> ClientNonInviteState {
        self.state
    }

    pub fn is_terminated(&self) -> bool {
        self.state == ClientNonInviteState::Terminated
    }

    pub fn handle(&mut self, now: Instant, input: ClientInput<'_>) {
        use ClientInput as I;
        use ClientNonInviteState as S;
        let status = match input {
            I::Response(r) => r.status().unwrap_or(0),
            _ => 0,
        };
        let t2 = self.core.config.t2;
        match (self.state, input) {
            (S::Terminated, _) => {}
            // §17.1.2.2: Timer E in Trying: retransmit, interval MIN(2E, T2).
            (S::Trying, I::Timer(Timer::E)) => {
                self.core.send(&self.request);
                self.timer_e = (self.timer_e * 2).min(t2);
                self.core.arm(Timer::E, now + self.timer_e);
            }
            // §17.1.2.2: Timer E in Proceeding: retransmit every T2.
            (S::Proceeding, I::Timer(Timer::E)) => {
                self.core.send(&self.request);
                self.timer_e = t2;
                self.core.arm(Timer::E, now + t2);
            }
            // §17.1.2.2: Timer F: timeout.
            (S::Trying | S::Proceeding, I::Timer(Timer::F)) => self.terminate(Some(Event::Timeout)),
            // §17.1.2.2: provisional responses move to Proceeding and go up.
            (S::Trying | S::Proceeding, I::Response(_)) if status < 200 => {
                self.state = S::Proceeding;
                self.core.events.push(Event::Response);
            }
            // §17.1.2.2: a final response goes up; Completed starts Timer K (zero when
            // reliable).
            (S::Trying | S::Proceeding, I::Response(_)) => {
                self.core.clear();
                self.request = Bytes::new();
                self.core.events.push(Event::Response);
                if self.core.reliable {
                    self.state = S::Terminated;
                } else {
                    self.state = S::Completed;
                    self.core.arm(Timer::K, now + self.core.config.t4);
                }
            }
            (S::Completed, I::Timer(Timer::K)) => self.terminate(None),
            (_, I::TransportError) => self.terminate(Some(Event::TransportError)),
            (_, I::Abandon) => self.terminate(None),
            // Completed absorbs response retransmissions; stray timers are ignored.
            _ => {}
        }
    }

    fn terminate(&mut self, event: Option<Event>) {
        self.core.clear();
        self.state = ClientNonInviteState::Terminated;
        self.core.events.extend(event);
    }
}
