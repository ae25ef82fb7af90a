//! One load thread: its UDP sockets or TCP connections, a mio poll loop, and a role (UAC, UAS or
//! registration client) that reacts to messages and to time. Nothing is shared between
//! threads but the progress counters.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::io::{Read, Write};

use bytes::{Bytes, BytesMut};
use limes_sip::framing::{check, Frame};
use limes_sip::transaction::{ClientInput, ClientInviteTx, ClientNonInviteTx, Event, Timer};
use limes_sip::{Limits, Message};
use mio::net::{TcpListener, TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Token};

use crate::batch::{Outbox, Receiver};
use crate::stats::Stats;

/// One path messages travel: a UDP socket, or a TCP connection with its buffers.
pub enum Conn {
    Udp(UdpSocket),
    Tcp {
        stream: TcpStream,
        peer: SocketAddr,
        read: BytesMut,
        write: Vec<u8>,
    },
}

/// Sends, and the simulated loss of received packets.
pub struct Io {
    conns: Vec<Conn>,
    /// Datagrams queued per connection (UDP only) until the loop flushes them in batches.
    outboxes: Vec<Outbox>,
    /// Each connection's local address as `ip:port` and `ip`, read and formatted once (a
    /// `getsockname` per message built would cost a syscall).
    local_texts: Vec<(String, String)>,
    drop_per_mille: u32,
    rng: u64,
    pub dropped: u64,
}

impl Io {
    /// Sends on connection or socket `sock`; `to` is used by UDP only (a TCP connection
    /// has one peer).
    pub fn send(&mut self, sock: usize, to: SocketAddr, bytes: &[u8]) {
        match self.conns.get_mut(sock) {
            Some(Conn::Udp(_)) => {
                if let Some(o) = self.outboxes.get_mut(sock) {
                    o.push(to, bytes);
                }
            }
            Some(Conn::Tcp { stream, write, .. }) => {
                write.extend_from_slice(bytes);
                flush(stream, write);
            }
            None => {}
        }
    }

    /// Sends every queued datagram: once per turn of the loop, before it waits.
    fn flush(&mut self) {
        for (c, o) in self.conns.iter().zip(self.outboxes.iter_mut()) {
            if let (Conn::Udp(s), false) = (c, o.is_empty()) {
                o.flush(s);
            }
        }
    }

    /// `ip:port` of connection `sock` (empty if unknown).
    pub fn local_text(&self, sock: usize) -> &str {
        self.local_texts.get(sock).map_or("", |t| t.0.as_str())
    }

    /// The IP address of connection `sock` (empty if unknown).
    pub fn local_ip_text(&self, sock: usize) -> &str {
        self.local_texts.get(sock).map_or("", |t| t.1.as_str())
    }

    fn add(&mut self, c: Conn) {
        let local = match &c {
            Conn::Udp(s) => s.local_addr().ok(),
            Conn::Tcp { stream, .. } => stream.local_addr().ok(),
        };
        self.conns.push(c);
        self.outboxes.push(Outbox::default());
        self.local_texts
            .push(local.map_or_else(Default::default, |l| (l.to_string(), l.ip().to_string())));
    }

    pub fn sockets(&self) -> usize {
        self.conns.len()
    }

    /// xorshift64*: cheap and good enough to pick packets to lose.
    fn lose(&mut self) -> bool {
        if self.drop_per_mille == 0 {
            return false;
        }
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let r = self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d);
        (r % 1000) < u64::from(self.drop_per_mille)
    }
}

/// What a thread does with the traffic.
pub trait Role: Send {
    fn on_message(
        &mut self,
        now: Instant,
        msg: Message,
        sock: usize,
        from: SocketAddr,
        io: &mut Io,
    );
    /// Starts due work and fires due timers; returns when to be called next.
    fn poll(&mut self, now: Instant, io: &mut Io) -> Option<Instant>;
    fn finished(&self, now: Instant) -> bool;
    fn stats(&self) -> &Stats;
    /// The run is over: whatever is still in flight counts as it should.
    fn close(&mut self) {}
}

/// Per-thread counters the progress line reads.
#[derive(Default)]
pub struct Progress {
    pub attempted: AtomicU64,
    pub answered: AtomicU64,
    pub failed: AtomicU64,
    pub retransmissions: AtomicU64,
}

/// Writes as much of `pending` as the socket takes now; the rest waits for writability.
fn flush(stream: &mut TcpStream, pending: &mut Vec<u8>) {
    while !pending.is_empty() {
        match stream.write(pending) {
            Ok(0) => break,
            Ok(n) => {
                pending.drain(..n);
            }
            Err(_) => break,
        }
    }
}

/// A TCP listener with SO_REUSEPORT, so each thread can have its own on one port.
pub fn listen_tcp(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_port(true)?;
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    Ok(TcpListener::from_std(s.into()))
}

/// Opens `count` TCP connections to `peer`.
pub fn connect(peer: SocketAddr, count: usize) -> std::io::Result<Vec<Conn>> {
    (0..count.max(1))
        .map(|_| {
            let stream = std::net::TcpStream::connect(peer)?;
            stream.set_nodelay(true)?;
            stream.set_nonblocking(true)?;
            Ok(Conn::Tcp {
                stream: TcpStream::from_std(stream),
                peer,
                read: BytesMut::new(),
                write: Vec::new(),
            })
        })
        .collect()
}

/// Binds `count` UDP sockets on `ip` (port 0: ephemeral) or on `port` with SO_REUSEPORT.
pub fn bind(addr: SocketAddr, count: usize) -> std::io::Result<Vec<Conn>> {
    use socket2::{Domain, Protocol, Socket, Type};
    (0..count.max(1))
        .map(|_| {
            let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
            if addr.port() != 0 {
                s.set_reuse_port(true)?;
            }
            let _ = s.set_recv_buffer_size(4 << 20);
            let _ = s.set_send_buffer_size(4 << 20);
            s.set_nonblocking(true)?;
            s.bind(&addr.into())?;
            Ok(Conn::Udp(UdpSocket::from_std(s.into())))
        })
        .collect()
}

/// Runs `role` on `conns` (and connections accepted from `listener`) until it is finished
/// or `stop` is set.
pub fn run<R: Role>(
    mut role: R,
    conns: Vec<Conn>,
    listener: Option<TcpListener>,
    drop_per_mille: u32,
    seed: u64,
    stop: Arc<AtomicBool>,
    progress: Arc<Progress>,
) -> std::io::Result<Stats> {
    let mut poll = Poll::new()?;
    let mut io = Io {
        conns: Vec::new(),
        outboxes: Vec::new(),
        local_texts: Vec::new(),
        drop_per_mille,
        rng: seed | 1,
        dropped: 0,
    };
    for mut c in conns {
        register(&poll, &mut c, io.conns.len())?;
        io.add(c);
    }
    let mut listener = listener;
    if let Some(l) = &mut listener {
        poll.registry().register(l, LISTENER, Interest::READABLE)?;
    }
    let limits = Limits::default();
    let mut events = Events::with_capacity(256);
    let mut buf = vec![0u8; 65_536];
    let mut receiver = Receiver::default();
    let mut received: Vec<(Bytes, SocketAddr)> = Vec::new();
    loop {
        let now = Instant::now();
        let next = role.poll(now, &mut io);
        publish(&role, &progress);
        if role.finished(now) || stop.load(Ordering::Relaxed) {
            break;
        }
        io.flush();
        // Work due later is done in ticks of at least TICK: at 30,000 calls/s the pacer
        // alone would otherwise wake the thread for every call.
        let timeout = next
            .map(|t| t.saturating_duration_since(now))
            .unwrap_or(Duration::from_millis(50))
            .min(Duration::from_millis(50));
        let timeout = if timeout.is_zero() {
            timeout
        } else {
            timeout.max(TICK)
        };
        if let Err(e) = poll.poll(&mut events, Some(timeout)) {
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        for ev in events.iter() {
            if ev.token() == LISTENER {
                while let Some(Ok((stream, peer))) = listener.as_ref().map(|l| l.accept()) {
                    let _ = stream.set_nodelay(true);
                    let mut c = Conn::Tcp {
                        stream,
                        peer,
                        read: BytesMut::new(),
                        write: Vec::new(),
                    };
                    register(&poll, &mut c, io.conns.len())?;
                    io.add(c);
                }
                continue;
            }
            let sock = ev.token().0;
            match io.conns.get_mut(sock) {
                Some(Conn::Udp(s)) => {
                    receiver.drain(s, |d, from| {
                        received.push((Bytes::copy_from_slice(d), from));
                    });
                }
                Some(Conn::Tcp {
                    stream,
                    peer,
                    read,
                    write,
                }) => {
                    flush(stream, write);
                    loop {
                        match stream.read(&mut buf) {
                            Ok(0) => break,
                            Ok(n) => read.extend_from_slice(&buf[..n]),
                            Err(_) => break,
                        }
                    }
                    while let Ok(Frame::Message { len }) | Ok(Frame::KeepAlive { len, .. }) =
                        check(read, &limits)
                    {
                        let frame = read.split_to(len).freeze();
                        if !frame.starts_with(b"\r\n") {
                            received.push((frame, *peer));
                        }
                    }
                }
                None => {}
            }
            for (data, from) in received.drain(..) {
                if io.lose() {
                    io.dropped += 1;
                    continue;
                }
                if let Ok(msg) = Message::parse(data, &limits) {
                    role.on_message(Instant::now(), msg, sock, from, &mut io);
                }
            }
        }
    }
    role.close();
    io.flush();
    publish(&role, &progress);
    Ok(role.stats().clone())
}

/// Open-loop pacing: `total` starts, one every `interval`, whatever is in flight (a slow
/// system under test shows as failures, not as a quietly lower rate).
pub struct Pacer {
    next: Instant,
    interval: Duration,
    total: u64,
    pub started: u64,
}

impl Pacer {
    pub fn new(now: Instant, rate: f64, duration: Duration) -> Self {
        let rate = rate.max(0.001);
        Self {
            next: now,
            interval: Duration::from_secs_f64(1.0 / rate),
            total: (rate * duration.as_secs_f64()).round() as u64,
            started: 0,
        }
    }

    /// `true` (and counted) when the next start is due at `now`.
    pub fn take(&mut self, now: Instant) -> bool {
        if self.started < self.total && self.next <= now {
            self.started += 1;
            self.next += self.interval;
            return true;
        }
        false
    }

    /// When the next start is due, if any remain.
    pub fn next(&self) -> Option<Instant> {
        (self.started < self.total).then_some(self.next)
    }
}

/// Deadlines keyed by call (a number or a shared Call-ID: queuing one allocates nothing);
/// an owner re-checks its state when one fires, so a stale entry costs one look-up. A timing wheel of [`TICK`] slots: adding and firing cost the
/// same however many deadlines are queued (a binary heap of a few hundred thousand
/// entries cost the generator 8 % of its time). A deadline fires in the first tick that
/// starts at or after it, never before it.
pub struct Timers<K> {
    origin: Instant,
    slots: Vec<Vec<(Instant, K)>>,
    /// The next tick to fire.
    cursor: u64,
    /// Keys fired and not yet handed out.
    due: Vec<K>,
    queued: usize,
}

/// Ticks in the wheel: a deadline further away goes round and is kept until its turn.
const SLOTS: u64 = 1 << 16;

impl<K> Default for Timers<K> {
    fn default() -> Self {
        Self {
            origin: Instant::now(),
            slots: (0..SLOTS).map(|_| Vec::new()).collect(),
            cursor: 0,
            due: Vec::new(),
            queued: 0,
        }
    }
}

impl<K> Timers<K> {
    fn tick_of(&self, at: Instant) -> u64 {
        let nanos = at.saturating_duration_since(self.origin).as_nanos();
        nanos.div_ceil(TICK.as_nanos()) as u64
    }

    fn slot(&mut self, tick: u64) -> &mut Vec<(Instant, K)> {
        &mut self.slots[(tick % SLOTS) as usize]
    }

    pub fn push(&mut self, at: Instant, key: K) {
        let tick = self.tick_of(at).max(self.cursor);
        self.slot(tick).push((at, key));
        self.queued += 1;
    }

    /// The key of a deadline due at `now`, removed.
    pub fn pop_due(&mut self, now: Instant) -> Option<K> {
        if let Some(k) = self.due.pop() {
            return Some(k);
        }
        let now_tick = now.saturating_duration_since(self.origin).as_nanos() / TICK.as_nanos();
        while self.cursor <= now_tick as u64 && self.queued > 0 {
            let tick = self.cursor;
            let entries = std::mem::take(self.slot(tick));
            for (at, key) in entries {
                if at <= now {
                    self.queued -= 1;
                    self.due.push(key);
                } else {
                    // A full turn of the wheel ahead: back in its slot.
                    self.slot(tick).push((at, key));
                }
            }
            self.cursor += 1;
            if !self.due.is_empty() {
                break;
            }
        }
        if self.queued == 0 {
            // Nothing queued: jump to now instead of walking idle ticks later.
            self.cursor = self.cursor.max(now_tick as u64);
        }
        self.due.pop()
    }

    /// When the next queued deadline can fire (the start of its tick), looking 50 ticks
    /// ahead at most (the loop waits no longer anyway).
    pub fn next(&self) -> Option<Instant> {
        if !self.due.is_empty() {
            return Some(self.origin);
        }
        if self.queued == 0 {
            return None;
        }
        (self.cursor..self.cursor + 50)
            .find(|t| !self.slots[(t % SLOTS) as usize].is_empty())
            .map(|t| self.origin + Duration::from_nanos((TICK.as_nanos() as u64).saturating_mul(t)))
    }
}

/// Text made once per socket or connection (its address is in it), on first use.
pub struct PerSocket<T>(Vec<T>);

impl<T> Default for PerSocket<T> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<T> PerSocket<T> {
    /// Socket `sock`'s value, made by `make(socket)` for it and any before it not made yet.
    pub fn get(&mut self, sock: usize, mut make: impl FnMut(usize) -> T) -> &T {
        while self.0.len() <= sock {
            let n = self.0.len();
            self.0.push(make(n));
        }
        &self.0[sock]
    }
}

/// The client transactions a role drives, INVITE or not, seen the same way.
pub trait ClientTx {
    fn poll_timer(&mut self, now: Instant) -> Option<Timer>;
    fn fire(&mut self, now: Instant, timer: Timer);
    fn poll_transmit(&mut self) -> Option<Bytes>;
    fn poll_event(&mut self) -> Option<Event>;
}

macro_rules! client_tx {
    ($t:ty) => {
        impl ClientTx for $t {
            fn poll_timer(&mut self, now: Instant) -> Option<Timer> {
                <$t>::poll_timer(self, now)
            }
            fn fire(&mut self, now: Instant, timer: Timer) {
                self.handle(now, ClientInput::Timer(timer));
            }
            fn poll_transmit(&mut self) -> Option<Bytes> {
                <$t>::poll_transmit(self).map(|t| t.0)
            }
            fn poll_event(&mut self) -> Option<Event> {
                <$t>::poll_event(self)
            }
        }
    };
}
client_tx!(ClientInviteTx);
client_tx!(ClientNonInviteTx);

/// The client events a role acts on, as [`pump`] saw them.
#[derive(Clone, Copy, Default)]
pub struct Seen {
    /// A response passed to the TU.
    pub response: bool,
    /// Timer B or F fired.
    pub timeout: bool,
}

/// Fires `tx`'s due timers (counting the retransmissions Timers A and E cause), sends what
/// it queued to `to` on `sock`, and returns what happened.
pub fn pump(
    tx: &mut impl ClientTx,
    now: Instant,
    sock: usize,
    to: SocketAddr,
    io: &mut Io,
    stats: &mut Stats,
) -> Seen {
    while let Some(t) = tx.poll_timer(now) {
        if matches!(t, Timer::A | Timer::E) {
            stats.retransmissions += 1;
        }
        tx.fire(now, t);
    }
    while let Some(bytes) = tx.poll_transmit() {
        io.send(sock, to, &bytes);
    }
    let mut seen = Seen::default();
    while let Some(e) = tx.poll_event() {
        match e {
            Event::Response => seen.response = true,
            Event::Timeout => seen.timeout = true,
            Event::Ack | Event::TransportError => {}
        }
    }
    seen
}

const LISTENER: Token = Token(usize::MAX);

/// The shortest wait for due work (incoming messages wake the loop at once).
const TICK: Duration = Duration::from_millis(1);

fn register(poll: &Poll, c: &mut Conn, i: usize) -> std::io::Result<()> {
    match c {
        Conn::Udp(s) => poll.registry().register(s, Token(i), Interest::READABLE),
        Conn::Tcp { stream, .. } => {
            poll.registry()
                .register(stream, Token(i), Interest::READABLE | Interest::WRITABLE)
        }
    }
}

fn publish<R: Role>(role: &R, p: &Progress) {
    let s = role.stats();
    p.attempted.store(s.attempted, Ordering::Relaxed);
    p.answered.store(s.answered, Ordering::Relaxed);
    p.failed.store(s.failed_total(), Ordering::Relaxed);
    p.retransmissions
        .store(s.retransmissions, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_fire_in_order_never_early_and_survive_a_full_turn() {
        let mut t: Timers<&str> = Timers::default();
        let t0 = t.origin;
        let ms = Duration::from_millis;
        t.push(t0 + ms(5), "b");
        t.push(t0 + ms(2), "a");
        t.push(t0 + ms(70_000), "far"); // past one turn of the wheel (65.5 s)
        t.push(t0 + Duration::from_micros(5_500), "c");
        assert_eq!(t.pop_due(t0 + ms(1)), None, "nothing is due yet");
        assert!(t.next().is_some_and(|n| n >= t0 + ms(2)));
        assert_eq!(t.pop_due(t0 + ms(2)), Some("a"));
        assert_eq!(t.pop_due(t0 + ms(5)), Some("b"));
        assert_eq!(
            t.pop_due(t0 + ms(5)),
            None,
            "c is due at 5.5 ms, not before"
        );
        assert_eq!(t.pop_due(t0 + ms(6)), Some("c"));
        assert_eq!(t.pop_due(t0 + ms(65_600)), None, "far went round once");
        assert_eq!(t.pop_due(t0 + ms(70_000)), Some("far"));
        assert_eq!(t.next(), None);
        // After a long idle time, a deadline in the past fires at once.
        t.push(t0 + ms(1), "late");
        assert_eq!(t.pop_due(t0 + ms(200_000)), Some("late"));
    }
}
