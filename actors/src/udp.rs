//! UDP: each worker thread receives on the shared socket and handles each datagram itself,
//! start to end (DESIGN principle 8): no channel, no task hand-off. A receive takes the
//! datagrams waiting, up to [`BATCH`], in one `recvmmsg` (under load, fewer than one system
//! call per datagram; `limes_udp_datagrams_received_total / limes_udp_receive_calls_total`
//! says how many per call), and the messages one datagram makes the node send leave in
//! one `sendmmsg` (see `transport::Outbound::send_all`).
//!
//! The workers share one socket rather than one `SO_REUSEPORT` socket each: the kernel
//! spreads `SO_REUSEPORT` traffic by source address and port, so a carrier trunk (one
//! source) would land on a single worker; on a shared socket every idle worker takes the
//! next datagram.

use smallvec::SmallVec;
use std::io::{IoSlice, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
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
/// Small on purpose: a worker handles its batch in order while the others wait for more,
/// so a large batch serialises work that two cores could share (with 16, sipp at 6,000
/// calls/s lost about 100 calls in 60,000; with 4, none, at about 3 datagrams per call).
pub const BATCH: usize = 4;

/// Starts `workers` threads receiving on `socket`.
pub fn spawn_workers(
    socket: &UdpSocket,
    workers: usize,
    inbound: Arc<dyn Inbound>,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<Vec<JoinHandle<()>>> {
    let local = socket.local_addr()?;
    info!(%local, workers, batch = BATCH, "udp listening");
    (0..workers.max(1))
        .map(|i| {
            let socket = socket.try_clone()?;
            let inbound = inbound.clone();
            let metrics = metrics.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name(format!("udp-{i}"))
                .spawn(move || receive_loop(socket, local, inbound, metrics, stop))
        })
        .collect()
}

fn receive_loop(
    socket: UdpSocket,
    local: SocketAddr,
    inbound: Arc<dyn Inbound>,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
) {
    let mut bufs: Box<[[u8; 65_536]; BATCH]> =
        match vec![[0u8; 65_536]; BATCH].into_boxed_slice().try_into() {
            Ok(b) => b,
            Err(_) => return,
        };
    let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
    let mut got: Vec<(usize, Option<SocketAddr>)> = Vec::with_capacity(BATCH);
    let fd = socket.as_raw_fd();
    while !stop.load(Ordering::Relaxed) {
        got.clear();
        {
            let mut slices = bufs.each_mut().map(|b| [IoSliceMut::new(b)]);
            // Blocks (up to the socket's read timeout) for the first datagram, then takes
            // what is already waiting.
            match recvmmsg(
                fd,
                &mut headers,
                slices.iter_mut(),
                MsgFlags::MSG_WAITFORONE,
                None,
            ) {
                Ok(results) => {
                    got.extend(results.map(|r| (r.bytes, r.address.and_then(socket_addr))));
                }
                Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => continue,
                // ICMP port unreachable from an earlier send shows up here on Linux.
                Err(nix::errno::Errno::ECONNREFUSED) => continue,
                Err(e) => {
                    warn!(error = %e, "udp receive failed");
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            }
        }
        metrics.udp_received(got.len());
        for (i, (n, remote)) in got.iter().enumerate() {
            let Some(remote) = *remote else { continue };
            let flow = Flow {
                transport: Transport::Udp,
                remote,
                local,
            };
            inbound.on_message(Bytes::copy_from_slice(&bufs[i][..*n]), flow);
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
