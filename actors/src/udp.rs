//! UDP: a worker thread receives on the socket and handles each datagram itself, start to
//! end (DESIGN principle 8): no channel, no task hand-off; the socket's other workers stand
//! by until there is more than one keeps up with ([`Crew`]). A receive takes the
//! datagrams waiting, up to [`BATCH`], in one `recvmmsg` (under load, fewer than one system
//! call per datagram; `limes_udp_datagrams_received_total / limes_udp_receive_calls_total`
//! says how many per call), and the messages one datagram makes the node send leave in
//! one `sendmmsg` (see `transport::Outbound::send_all`).
//!
//! The workers share one socket rather than one `SO_REUSEPORT` socket each: the kernel
//! spreads `SO_REUSEPORT` traffic by source address and port, so a carrier trunk (one
//! source) would land on a single worker; on a shared socket any worker can take the next
//! datagram.

use smallvec::SmallVec;
use std::io::{IoSlice, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::{Condvar, Mutex};
use tracing::{info, warn};

use nix::sys::socket::{recvmmsg, sendmmsg, MsgFlags, MultiHeaders, SockaddrStorage};

use crate::metrics::Metrics;
use crate::settings::Transport;
use crate::transport::{Flow, Inbound};

/// Binds a UDP socket with the kernel buffers asked for.
pub fn bind(addr: std::net::SocketAddr, buffer: usize) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    let _ = socket.set_recv_buffer_size(buffer);
    let _ = socket.set_send_buffer_size(buffer);
    socket.bind(&addr.into())?;
    let socket: UdpSocket = socket.into();
    // Workers wake at least this often to notice a shutdown.
    socket.set_read_timeout(Some(Duration::from_millis(500)))?;
    Ok(socket)
}

/// Datagrams one receive call takes at most; each has a buffer of the largest datagram.
/// Small on purpose: a worker handles its batch in order while the others wait for more
/// (full batches in a row call a standby worker),
/// so a large batch serialises work that two cores could share (with 16, sipp at 6,000
/// calls/s lost about 100 calls in 60,000; with 4, none, at about 3 datagrams per call).
pub const BATCH: usize = 4;

/// Full batches in a row that call a standby worker (a backlog of 16 datagrams, some
/// 0.3 ms of work). Fewer called one at 1,000 calls/s for the bursts a generator or a trunk
/// sends and for the moments the receiving worker's core runs another process, and each
/// call costs a wake-up and shared cache lines: more CPU per call than it saved.
const CALL_AFTER: u32 = 4;

/// The workers of one socket. One of them receives, blocking; the others stand by, parked,
/// and are called when receives keep finding full batches waiting (`CALL_AFTER` in a
/// row) or when the receiving worker has been on one batch for a whole timer tick
/// ([`Crew::watch`]). A called worker receives without blocking until the socket is
/// empty, then parks again.
///
/// Workers all blocking on the socket would each be woken in turn: a datagram that comes
/// while one worker is busy wakes another, though the first would take it a few
/// microseconds later, and a wake-up costs more than handling the datagram (at 1,000
/// calls/s, one such worker used 15 % less CPU per call than two). The standbys give the
/// other cores only when there is more to do than one core keeps up with.
pub struct Crew {
    standby: Mutex<Standby>,
    called: Condvar,
    /// The receiving worker is handling a batch.
    busy: AtomicBool,
    /// Batches the receiving worker has started; [`Crew::watch`] compares it tick to tick.
    batches: AtomicU64,
    watched: AtomicU64,
}

#[derive(Default)]
struct Standby {
    parked: usize,
    /// Calls not taken yet (at most `parked`).
    calls: usize,
    stopping: bool,
}

impl Crew {
    fn new() -> Self {
        Self {
            standby: Mutex::new(Standby::default()),
            called: Condvar::new(),
            busy: AtomicBool::new(false),
            batches: AtomicU64::new(0),
            watched: AtomicU64::new(0),
        }
    }

    /// Wakes one parked worker, if one is parked and not already called.
    fn call(&self, metrics: &Metrics) {
        let mut s = self.standby.lock();
        if s.calls < s.parked {
            s.calls += 1;
            self.called.notify_one();
            metrics.udp_standby_called();
        }
    }

    /// Parks until called; `false` when the node stops.
    fn park(&self, stop: &AtomicBool) -> bool {
        let mut s = self.standby.lock();
        s.parked += 1;
        while s.calls == 0 && !s.stopping && !stop.load(Ordering::Relaxed) {
            self.called.wait(&mut s);
        }
        s.parked -= 1;
        if s.calls > 0 {
            s.calls -= 1;
            return true;
        }
        false
    }

    /// Releases the parked workers for good (the receiving worker, on its way out).
    fn stop(&self) {
        self.standby.lock().stopping = true;
        self.called.notify_all();
    }

    /// Called once per timer tick: when the receiving worker is on the same batch as at the
    /// last tick (a slow request, a lock held long), a standby takes over the socket.
    pub fn watch(&self, metrics: &Metrics) {
        let batches = self.batches.load(Ordering::Relaxed);
        let before = self.watched.swap(batches, Ordering::Relaxed);
        if before == batches && self.busy.load(Ordering::Relaxed) {
            self.call(metrics);
        }
    }
}

/// Starts `workers` threads on `socket`: one receiving, the rest standing by ([`Crew`]).
pub fn spawn_workers(
    socket: &UdpSocket,
    workers: usize,
    inbound: Arc<dyn Inbound>,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<(Vec<JoinHandle<()>>, Arc<Crew>)> {
    let local = socket.local_addr()?;
    info!(%local, workers, batch = BATCH, "udp listening");
    let crew = Arc::new(Crew::new());
    let threads = (0..workers.max(1))
        .map(|i| {
            let worker = Worker {
                socket: socket.try_clone()?,
                local,
                inbound: inbound.clone(),
                metrics: metrics.clone(),
                crew: crew.clone(),
                stop: stop.clone(),
            };
            std::thread::Builder::new()
                .name(format!("udp-{i}"))
                .spawn(move || {
                    if i == 0 {
                        worker.receive();
                    } else {
                        worker.stand_by();
                    }
                })
        })
        .collect::<std::io::Result<_>>()?;
    Ok((threads, crew))
}

struct Worker {
    socket: UdpSocket,
    local: SocketAddr,
    inbound: Arc<dyn Inbound>,
    metrics: Arc<Metrics>,
    crew: Arc<Crew>,
    stop: Arc<AtomicBool>,
}

/// A worker's receive buffers, one per datagram of a batch.
struct Buffers {
    bufs: Box<[[u8; 65_536]; BATCH]>,
    headers: MultiHeaders<SockaddrStorage>,
    got: Vec<(usize, Option<SocketAddr>)>,
}

impl Buffers {
    fn new() -> Option<Self> {
        Some(Self {
            bufs: vec![[0u8; 65_536]; BATCH]
                .into_boxed_slice()
                .try_into()
                .ok()?,
            headers: MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None),
            got: Vec::with_capacity(BATCH),
        })
    }
}

impl Worker {
    /// The receiving worker: blocks (up to the socket's read timeout) for the first
    /// datagram, then takes what is already waiting.
    fn receive(self) {
        let Some(mut b) = Buffers::new() else {
            self.crew.stop();
            return;
        };
        let (mut batches, mut full) = (0u64, 0);
        while !self.stop.load(Ordering::Relaxed) {
            if !self.take(&mut b, MsgFlags::MSG_WAITFORONE, &mut full) {
                continue;
            }
            batches += 1;
            self.crew.batches.store(batches, Ordering::Relaxed);
            self.crew.busy.store(true, Ordering::Relaxed);
            self.handle(&b);
            self.crew.busy.store(false, Ordering::Relaxed);
        }
        self.crew.stop();
    }

    /// A standby worker: parked until called, then receives without blocking until the
    /// socket is empty.
    fn stand_by(self) {
        let Some(mut b) = Buffers::new() else { return };
        while self.crew.park(&self.stop) {
            let mut full = 0;
            while self.take(&mut b, MsgFlags::MSG_DONTWAIT, &mut full) {
                self.handle(&b);
            }
        }
    }

    /// One receive call into `b`; `false` when it took nothing. [`CALL_AFTER`] full batches
    /// in a row call a standby worker: more is waiting than this one keeps up with.
    fn take(&self, b: &mut Buffers, flags: MsgFlags, full_in_a_row: &mut u32) -> bool {
        b.got.clear();
        let mut slices = b.bufs.each_mut().map(|b| [IoSliceMut::new(b)]);
        match recvmmsg(
            self.socket.as_raw_fd(),
            &mut b.headers,
            slices.iter_mut(),
            flags,
            None,
        ) {
            Ok(results) => {
                b.got
                    .extend(results.map(|r| (r.bytes, r.address.and_then(socket_addr))));
            }
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => return false,
            // ICMP port unreachable from an earlier send shows up here on Linux.
            Err(nix::errno::Errno::ECONNREFUSED) => return false,
            Err(e) => {
                warn!(error = %e, "udp receive failed");
                std::thread::sleep(Duration::from_millis(10));
                return false;
            }
        }
        if b.got.is_empty() {
            return false;
        }
        self.metrics.udp_received(b.got.len());
        if b.got.len() < BATCH {
            *full_in_a_row = 0;
        } else {
            *full_in_a_row += 1;
            if *full_in_a_row >= CALL_AFTER {
                self.crew.call(&self.metrics);
            }
        }
        true
    }

    fn handle(&self, b: &Buffers) {
        for (i, (n, remote)) in b.got.iter().enumerate() {
            let Some(remote) = *remote else { continue };
            let flow = Flow {
                transport: Transport::Udp,
                remote,
                local: self.local,
            };
            self.inbound
                .on_message(Bytes::copy_from_slice(&b.bufs[i][..*n]), flow);
        }
    }
}

thread_local! {
    /// Message headers for `sendmmsg`, made once per thread.
    static SEND_HEADERS: std::cell::RefCell<MultiHeaders<SockaddrStorage>> =
        std::cell::RefCell::new(MultiHeaders::preallocate(BATCH, None));
}

/// Sends up to [`BATCH`] datagrams in one `sendmmsg`; returns how many left (the caller
/// sends the rest one by one, so a partial or failed batch loses nothing).
pub fn send_batch(socket: &UdpSocket, datagrams: &[(crate::transport::Dest, Bytes)]) -> usize {
    let datagrams = &datagrams[..datagrams.len().min(BATCH)];
    let slices: SmallVec<[[IoSlice<'_>; 1]; BATCH]> =
        datagrams.iter().map(|(_, b)| [IoSlice::new(b)]).collect();
    let addrs: SmallVec<[Option<SockaddrStorage>; BATCH]> = datagrams
        .iter()
        .map(|(d, _)| Some(SockaddrStorage::from(d.addr)))
        .collect();
    SEND_HEADERS.with(|headers| {
        let Ok(mut headers) = headers.try_borrow_mut() else {
            return 0;
        };
        sendmmsg(
            socket.as_raw_fd(),
            &mut headers,
            slices.iter(),
            &addrs,
            [],
            MsgFlags::empty(),
        )
        .map_or(0, Iterator::count)
    })
}

/// A received datagram's source as a socket address.
fn socket_addr(a: SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    a.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::registry::Registry;
    use std::sync::mpsc;

    /// Records which worker handled each datagram; the datagram `hold` blocks its worker
    /// until the test lets it go.
    struct Recorder {
        seen: Mutex<Vec<(String, Vec<u8>)>>,
        release: Mutex<Option<mpsc::Receiver<()>>>,
        holding: mpsc::SyncSender<()>,
    }

    impl Inbound for Recorder {
        fn on_message(&self, data: Bytes, _flow: Flow) {
            if &data[..] == b"hold" {
                let _ = self.holding.send(());
                if let Some(rx) = self.release.lock().take() {
                    let _ = rx.recv_timeout(Duration::from_secs(10));
                }
            }
            let name = std::thread::current().name().unwrap_or("").to_string();
            self.seen.lock().push((name, data.to_vec()));
        }
    }

    struct Setup {
        crew: Arc<Crew>,
        metrics: Arc<Metrics>,
        recorder: Arc<Recorder>,
        holding: mpsc::Receiver<()>,
        release: mpsc::Sender<()>,
        peer: UdpSocket,
        to: SocketAddr,
        stop: Arc<AtomicBool>,
        threads: Vec<JoinHandle<()>>,
    }

    fn setup(workers: usize) -> Setup {
        let socket = bind("127.0.0.1:0".parse().unwrap(), 1 << 20).unwrap();
        let to = socket.local_addr().unwrap();
        let (release, release_rx) = mpsc::channel();
        let (holding_tx, holding) = mpsc::sync_channel(4);
        let recorder = Arc::new(Recorder {
            seen: Mutex::new(Vec::new()),
            release: Mutex::new(Some(release_rx)),
            holding: holding_tx,
        });
        let metrics = Metrics::new(&mut Registry::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (threads, crew) = spawn_workers(
            &socket,
            workers,
            recorder.clone(),
            metrics.clone(),
            stop.clone(),
        )
        .unwrap();
        // The standbys park before the test starts: a call made while none is parked
        // yet finds no one to wake.
        for _ in 0..5000 {
            if crew.standby.lock().parked == workers - 1 {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(crew.standby.lock().parked, workers - 1, "standbys parked");
        Setup {
            crew,
            metrics,
            recorder,
            holding,
            release,
            peer: UdpSocket::bind("127.0.0.1:0").unwrap(),
            to,
            stop,
            threads,
        }
    }

    /// A node whose receiving worker is held on the datagram `hold`.
    fn held(workers: usize) -> Setup {
        let s = setup(workers);
        s.send(b"hold");
        s.holding.recv_timeout(Duration::from_secs(5)).unwrap();
        s
    }

    impl Setup {
        fn send(&self, data: &[u8]) {
            self.peer.send_to(data, self.to).unwrap();
        }

        /// Waits until `n` datagrams were handled; returns who handled each.
        fn wait_for(&self, n: usize) -> Vec<(String, Vec<u8>)> {
            for _ in 0..500 {
                if self.recorder.seen.lock().len() >= n {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            self.recorder.seen.lock().clone()
        }

        fn finish(self) {
            self.stop.store(true, Ordering::Relaxed);
            let _ = self.release.send(());
            for t in self.threads {
                t.join().unwrap();
            }
        }
    }

    #[test]
    fn datagrams_that_come_one_at_a_time_are_all_taken_by_the_receiving_worker() {
        let s = setup(2);
        for i in 0..20 {
            s.send(format!("m{i}").as_bytes());
            assert_eq!(s.wait_for(i + 1).len(), i + 1);
        }
        let seen = s.wait_for(20);
        assert!(seen.iter().all(|(who, _)| who == "udp-0"), "{seen:?}");
        assert_eq!(s.metrics.udp_standby_calls.get(), 0);
        s.finish();
    }

    #[test]
    fn a_backlog_of_full_batches_calls_a_standby_worker() {
        let s = held(2);
        // Queued while the receiving worker is held: more full batches than CALL_AFTER.
        let queued = (CALL_AFTER as usize + 2) * BATCH;
        for i in 0..queued {
            s.send(format!("m{i}").as_bytes());
        }
        std::thread::sleep(Duration::from_millis(50));
        s.release.send(()).unwrap();
        let seen = s.wait_for(1 + queued);
        assert_eq!(seen.len(), 1 + queued, "each datagram handled once");
        assert!(s.metrics.udp_standby_calls.get() >= 1);
        s.finish();
    }

    #[test]
    fn a_receiving_worker_stuck_on_one_batch_for_a_tick_is_relieved_by_a_standby() {
        let s = held(2);
        s.send(b"after");
        // Two ticks on the same batch: the second calls the standby.
        s.crew.watch(&s.metrics);
        s.crew.watch(&s.metrics);
        let seen = s.wait_for(1);
        assert_eq!(seen, vec![("udp-1".to_string(), b"after".to_vec())]);
        assert_eq!(s.metrics.udp_standby_calls.get(), 1);
        s.release.send(()).unwrap();
        assert_eq!(s.wait_for(2).len(), 2);
        s.finish();
    }

    #[test]
    fn a_single_worker_is_never_helped_and_stops() {
        let s = held(1);
        s.crew.watch(&s.metrics);
        s.crew.watch(&s.metrics);
        assert_eq!(s.metrics.udp_standby_calls.get(), 0);
        s.release.send(()).unwrap();
        assert_eq!(s.wait_for(1).len(), 1);
        s.finish();
    }
}
