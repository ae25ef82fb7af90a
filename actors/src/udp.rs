//! UDP: each worker thread receives on the shared socket and handles the datagram itself,
//! start to end (DESIGN principle 8): one `recvfrom` and one `sendto` per message, no
//! channel, no task hand-off.

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use tracing::{info, warn};

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

/// Starts `workers` threads receiving on `socket`.
pub fn spawn_workers(
    socket: &UdpSocket,
    workers: usize,
    inbound: Arc<dyn Inbound>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<Vec<JoinHandle<()>>> {
    let local = socket.local_addr()?;
    info!(%local, workers, "udp listening");
    (0..workers.max(1))
        .map(|i| {
            let socket = socket.try_clone()?;
            let inbound = inbound.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name(format!("udp-{i}"))
                .spawn(move || receive_loop(socket, local, inbound, stop))
        })
        .collect()
}

fn receive_loop(
    socket: UdpSocket,
    local: std::net::SocketAddr,
    inbound: Arc<dyn Inbound>,
    stop: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 65_536];
    while !stop.load(Ordering::Relaxed) {
        match socket.recv_from(&mut buf) {
            Ok((n, remote)) => {
                let flow = Flow {
                    transport: Transport::Udp,
                    remote,
                    local,
                };
                inbound.on_message(Bytes::copy_from_slice(&buf[..n]), flow);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            // ICMP port unreachable from an earlier send shows up here on Linux.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
            Err(e) => {
                warn!(error = %e, "udp receive failed");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}
