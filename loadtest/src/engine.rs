//! One load thread: its UDP sockets, a mio poll loop, and a role (UAC, UAS or
//! registration client) that reacts to messages and to time. Nothing is shared between
//! threads but the progress counters.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use limes_sip::{Limits, Message};
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};

use crate::stats::Stats;

/// Sends, and the simulated loss of received packets.
pub struct Io {
    sockets: Vec<UdpSocket>,
    drop_per_mille: u32,
    rng: u64,
    pub dropped: u64,
}

impl Io {
    pub fn send(&mut self, sock: usize, to: SocketAddr, bytes: &[u8]) {
        if let Some(s) = self.sockets.get(sock) {
            // A full socket buffer drops the datagram, as the network would; the
            // transaction timers retransmit it.
            let _ = s.send_to(bytes, to);
        }
    }

    pub fn local(&self, sock: usize) -> Option<SocketAddr> {
        self.sockets.get(sock)?.local_addr().ok()
    }

    pub fn sockets(&self) -> usize {
        self.sockets.len()
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

/// Binds `count` UDP sockets on `ip` (port 0: ephemeral) or on `port` with SO_REUSEPORT.
pub fn bind(addr: SocketAddr, count: usize) -> std::io::Result<Vec<UdpSocket>> {
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
            Ok(UdpSocket::from_std(s.into()))
        })
        .collect()
}

/// Runs `role` on `sockets` until it is finished or `stop` is set.
pub fn run<R: Role>(
    mut role: R,
    sockets: Vec<UdpSocket>,
    drop_per_mille: u32,
    seed: u64,
    stop: Arc<AtomicBool>,
    progress: Arc<Progress>,
) -> std::io::Result<Stats> {
    let mut poll = Poll::new()?;
    let mut io = Io {
        sockets,
        drop_per_mille,
        rng: seed | 1,
        dropped: 0,
    };
    for (i, s) in io.sockets.iter_mut().enumerate() {
        poll.registry().register(s, Token(i), Interest::READABLE)?;
    }
    let limits = Limits::default();
    let mut events = Events::with_capacity(256);
    let mut buf = vec![0u8; 65_536];
    loop {
        let now = Instant::now();
        let next = role.poll(now, &mut io);
        publish(&role, &progress);
        if role.finished(now) || stop.load(Ordering::Relaxed) {
            break;
        }
        let timeout = next
            .map(|t| t.saturating_duration_since(now))
            .unwrap_or(Duration::from_millis(50))
            .min(Duration::from_millis(50));
        if let Err(e) = poll.poll(&mut events, Some(timeout)) {
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        for ev in events.iter() {
            let sock = ev.token().0;
            // Read until the socket would block (or fails).
            while let Some(Ok((n, from))) = io.sockets.get(sock).map(|s| s.recv_from(&mut buf)) {
                if io.lose() {
                    io.dropped += 1;
                    continue;
                }
                if let Ok(msg) = Message::parse(Bytes::copy_from_slice(&buf[..n]), &limits) {
                    role.on_message(Instant::now(), msg, sock, from, &mut io);
                }
            }
        }
    }
    role.close();
    publish(&role, &progress);
    Ok(role.stats().clone())
}

fn publish<R: Role>(role: &R, p: &Progress) {
    let s = role.stats();
    p.attempted.store(s.attempted, Ordering::Relaxed);
    p.answered.store(s.answered, Ordering::Relaxed);
    p.failed.store(s.failed_total(), Ordering::Relaxed);
    p.retransmissions
        .store(s.retransmissions, Ordering::Relaxed);
}
