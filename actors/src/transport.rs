//! Where messages come from and go to: flows, destinations, and the `Outbound` sender that
//! owns the UDP sockets and the TCP connection table.

use smallvec::SmallVec;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use limes_sip::uri::{Scheme, Uri};
use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::metrics::Metrics;
use crate::settings::{Transport, TransportSettings};

/// The path a message arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Flow {
    pub transport: Transport,
    pub remote: SocketAddr,
    pub local: SocketAddr,
}

/// Where a message is to be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Dest {
    pub transport: Transport,
    pub addr: SocketAddr,
    /// The node's socket to send from (UDP) or to name in Via (TCP): the one a request
    /// came in on, for its responses; the one a binding registered over; a trunk
    /// destination's. `None`: the first of the address family.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<SocketAddr>,
}

impl Dest {
    /// A destination sent to from the first socket of its address family.
    pub fn new(transport: Transport, addr: SocketAddr) -> Self {
        Self {
            transport,
            addr,
            local: None,
        }
    }
}

/// A configured next hop: its URI and the address it resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub uri: String,
    pub dest: Dest,
}

impl Target {
    /// Parses and resolves a SIP URI (`sip:192.0.2.1:5060;transport=tcp`). Names are
    /// resolved once, here, with the system resolver.
    pub fn resolve(uri: &str) -> Result<Target, String> {
        let parsed = Uri::parse(uri).map_err(|e| format!("{uri:?}: {e}"))?;
        let dest = dest_of_uri(&parsed).or_else(|| {
            let transport = uri_transport(&parsed)?;
            let port = parsed.port.unwrap_or(5060);
            let host = parsed.host.trim_start_matches('[').trim_end_matches(']');
            let addr = (host, port).to_socket_addrs().ok()?.next()?;
            Some(Dest::new(transport, addr))
        });
        dest.map(|dest| Target {
            uri: uri.to_owned(),
            dest,
        })
        .ok_or_else(|| format!("{uri:?}: cannot resolve to a UDP or TCP address"))
    }
}

/// The transport a SIP URI asks for (`transport` parameter), UDP by default; `None` for
/// transports this node does not speak (TLS, SCTP, WS, `sips:`).
pub fn uri_transport(uri: &Uri<'_>) -> Option<Transport> {
    transport_named(uri, uri.transport())
}

/// The transport a URI's `transport` parameter (`None`: absent) names, if this node has it.
fn transport_named(uri: &Uri<'_>, param: Option<&str>) -> Option<Transport> {
    if uri.scheme != Scheme::Sip {
        return None;
    }
    match param {
        None => Some(Transport::Udp),
        Some(t) if t.eq_ignore_ascii_case("udp") => Some(Transport::Udp),
        Some(t) if t.eq_ignore_ascii_case("tcp") => Some(Transport::Tcp),
        Some(_) => None,
    }
}

/// The destination of a URI whose host is an IP address (`maddr` wins, RFC 3261
/// §19.1.1); names are not resolved on the message path.
pub fn dest_of_uri(uri: &Uri<'_>) -> Option<Dest> {
    let (transport, maddr) = uri.transport_and_maddr();
    let transport = transport_named(uri, transport)?;
    let ip: IpAddr = match maddr {
        Some(m) => limes_sip::uri::host_ip(m)?,
        None => uri.host_ip()?,
    };
    Some(Dest::new(
        transport,
        SocketAddr::new(ip, uri.port.unwrap_or(5060)),
    ))
}

/// Why a send failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("no socket for this address family or transport")]
    NoSocket,
    #[error("socket error")]
    Io,
    #[error("connection queue full")]
    QueueFull,
    #[error("too many connections")]
    TooManyConnections,
}

/// What the transports hand received bytes to.
pub trait Inbound: Send + Sync + 'static {
    fn on_message(&self, data: Bytes, flow: Flow);
}

/// One TCP connection as the table knows it.
pub(crate) struct ConnHandle {
    pub id: u64,
    pub tx: mpsc::Sender<Bytes>,
}

/// Messages to send, gathered while a message is handled (on the stack for the usual few).
pub type Sends = SmallVec<[(Dest, Bytes); 4]>;

/// Sends messages: UDP directly on the listening sockets, TCP through each connection's
/// bounded queue (opening a connection when none exists).
pub struct Outbound {
    udp: Vec<(SocketAddr, UdpSocket)>,
    pub(crate) tcp: Mutex<HashMap<SocketAddr, ConnHandle>>,
    pub(crate) tcp_listens: Vec<SocketAddr>,
    pub(crate) settings: TransportSettings,
    pub(crate) limits: limes_sip::Limits,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) runtime: tokio::runtime::Handle,
    pub(crate) inbound: OnceLock<Arc<dyn Inbound>>,
    pub(crate) next_conn_id: AtomicU64,
}

impl Outbound {
    pub fn new(
        udp: Vec<UdpSocket>,
        tcp_listens: Vec<SocketAddr>,
        settings: TransportSettings,
        limits: limes_sip::Limits,
        metrics: Arc<Metrics>,
        runtime: tokio::runtime::Handle,
    ) -> std::io::Result<Arc<Self>> {
        let udp = udp
            .into_iter()
            .map(|s| Ok((s.local_addr()?, s)))
            .collect::<std::io::Result<_>>()?;
        Ok(Arc::new(Self {
            udp,
            tcp: Mutex::new(HashMap::new()),
            tcp_listens,
            settings,
            limits,
            metrics,
            runtime,
            inbound: OnceLock::new(),
            next_conn_id: AtomicU64::new(1),
        }))
    }

    /// Where received messages go, including those on connections this node opens.
    pub fn set_inbound(&self, inbound: Arc<dyn Inbound>) {
        let _ = self.inbound.set(inbound);
    }

    /// The local address messages to `dest` leave from, as advertised in Via and
    /// Record-Route.
    pub fn local_for(&self, dest: &Dest) -> Option<SocketAddr> {
        match dest.transport {
            Transport::Udp => self.udp_socket(dest).map(|(a, _)| *a),
            Transport::Tcp => dest
                .local
                .filter(|l| self.tcp_listens.contains(l))
                .or_else(|| {
                    self.tcp_listens
                        .iter()
                        .find(|a| a.is_ipv4() == dest.addr.is_ipv4())
                        .copied()
                }),
        }
    }

    /// The UDP socket `dest` names, else the first of its address family.
    fn udp_socket(&self, dest: &Dest) -> Option<&(SocketAddr, UdpSocket)> {
        dest.local
            .and_then(|l| self.udp.iter().find(|(a, _)| *a == l))
            .or_else(|| {
                self.udp
                    .iter()
                    .find(|(a, _)| a.is_ipv4() == dest.addr.is_ipv4())
            })
    }

    pub fn send(self: &Arc<Self>, dest: &Dest, bytes: Bytes) -> Result<(), SendError> {
        let r = match dest.transport {
            Transport::Udp => {
                let (_, sock) = self.udp_socket(dest).ok_or(SendError::NoSocket)?;
                sock.send_to(&bytes, dest.addr)
                    .map(|_| ())
                    .map_err(|_| SendError::Io)
            }
            Transport::Tcp => crate::tcp::send(self, dest.addr, bytes),
        };
        if let Err(e) = r {
            self.metrics.send_error(dest.transport, e);
        }
        r
    }

    /// Sends every message; UDP datagrams that all leave the same socket go in one
    /// `sendmmsg` (what one received message makes the node send: a 100 Trying and the
    /// forwarded INVITE, say).
    pub fn send_all(self: &Arc<Self>, sends: Sends) {
        let Some((first, _)) = sends.first() else {
            return;
        };
        let socket = self.udp_socket(first);
        let batch = sends.len() >= 2
            && sends.iter().all(|(d, _)| {
                d.transport == Transport::Udp
                    && self.udp_socket(d).map(|(a, _)| a) == socket.map(|(a, _)| a)
            });
        let sent = match (batch, socket) {
            (true, Some((_, sock))) => crate::udp::send_batch(sock, &sends),
            _ => 0,
        };
        for (dest, bytes) in sends.into_iter().skip(sent) {
            let _ = self.send(&dest, bytes);
        }
    }

    pub(crate) fn next_id(&self) -> u64 {
        self.next_conn_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Whether a TCP connection to `remote` is open now.
    pub fn has_tcp(&self, remote: SocketAddr) -> bool {
        self.tcp.lock().contains_key(&remote)
    }

    /// Open TCP connections.
    pub fn tcp_connections(&self) -> usize {
        self.tcp.lock().len()
    }
}
