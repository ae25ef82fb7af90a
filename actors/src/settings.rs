//! What the proxy, the transports and the flood guard are told by the configuration. Every
//! field has a default; `nodes/` reads these from TOML and the command line.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A transport protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
        }
    }

    /// The Via transport token.
    pub fn via_token(self) -> &'static str {
        match self {
            Self::Udp => "UDP",
            Self::Tcp => "TCP",
        }
    }

    pub fn is_reliable(self) -> bool {
        self == Self::Tcp
    }
}

/// A listening socket: `udp:127.0.0.1:5060`, `tcp:[::1]:5060`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Listen {
    pub transport: Transport,
    pub addr: SocketAddr,
}

impl std::str::FromStr for Listen {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (proto, addr) = s
            .split_once(':')
            .ok_or_else(|| format!("{s:?}: expected PROTO:ADDR:PORT, e.g. udp:127.0.0.1:5060"))?;
        let transport = match proto.to_ascii_lowercase().as_str() {
            "udp" => Transport::Udp,
            "tcp" => Transport::Tcp,
            other => return Err(format!("{s:?}: unknown transport {other:?} (udp or tcp)")),
        };
        let addr = addr.parse().map_err(|e| format!("{s:?}: {e}"))?;
        Ok(Listen { transport, addr })
    }
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.transport.as_str(), self.addr)
    }
}

/// Proxy behaviour.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    /// Where initial requests for no registered AoR go (all of them, forked in parallel);
    /// empty: 404, never relay. The proxy's copy is replaced on reload.
    pub next_hops: Vec<crate::transport::Target>,
    /// Record-Route dialog-creating requests (two entries when the transport changes).
    pub record_route: bool,
    /// Host names that also mean "this node" in Request-URIs and Routes.
    pub aliases: Vec<String>,
    /// RFC 3261 timers.
    pub timers: limes_sip::transaction::TimerConfig,
    /// Parser bounds.
    pub limits: limes_sip::Limits,
    /// Transactions held at once; past it new requests get 503.
    pub max_transactions: usize,
    /// Server header and User-Agent of locally generated messages.
    pub server_name: String,
}

impl Default for ProxySettings {
    fn default() -> Self {
        Self {
            next_hops: Vec::new(),
            record_route: true,
            aliases: Vec::new(),
            timers: Default::default(),
            limits: Default::default(),
            max_transactions: 1_000_000,
            server_name: format!("Limes/{}", env!("CARGO_PKG_VERSION")),
        }
    }
}

/// What happens to a request past its source's rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FloodAction {
    /// 503 Service Unavailable with Retry-After.
    Reply,
    /// Dropped and counted.
    Drop,
}

/// Per-source-IP request limits (`governor`).
#[derive(Debug, Clone)]
pub struct FloodSettings {
    pub enabled: bool,
    /// Requests per second allowed from one IP address, sustained.
    pub rate: u32,
    /// Requests allowed in a burst above the rate.
    pub burst: u32,
    pub action: FloodAction,
    /// Retry-After of the 503.
    pub retry_after: Duration,
    /// How often idle per-IP state is evicted.
    pub evict_every: Duration,
    /// Sources tracked at most: past it idle state is evicted at once (a flood from
    /// spoofed addresses must not grow the table between evictions).
    pub max_sources: usize,
}

impl Default for FloodSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            rate: 10_000,
            burst: 20_000,
            action: FloodAction::Reply,
            retry_after: Duration::from_secs(5),
            evict_every: Duration::from_secs(60),
            max_sources: 1_000_000,
        }
    }
}

/// Transport sizing.
#[derive(Debug, Clone)]
pub struct TransportSettings {
    /// Threads on each UDP socket (each handles what it receives, start to end): one
    /// receives, the rest stand by until it cannot keep up (`udp::Crew`).
    pub udp_workers: usize,
    /// Kernel receive and send buffer of each UDP socket.
    pub udp_buffer: usize,
    /// TCP connections held at once; past it new ones are refused.
    pub tcp_max_connections: usize,
    /// Messages queued for one TCP connection before sends to it fail.
    pub tcp_queue: usize,
    /// A TCP connection with no traffic for this long is closed.
    pub tcp_idle_timeout: Duration,
    /// Time allowed to open an outbound TCP connection.
    pub tcp_connect_timeout: Duration,
}

impl Default for TransportSettings {
    fn default() -> Self {
        Self {
            udp_workers: 2,
            udp_buffer: 2 << 20,
            tcp_max_connections: 10_000,
            tcp_queue: 1024,
            tcp_idle_timeout: Duration::from_secs(600),
            tcp_connect_timeout: Duration::from_secs(5),
        }
    }
}
