//! Locating a SIP server (RFC 3263 §4): the transports, ports and addresses a URI leads
//! to, in the order they are to be tried. A machine with no I/O: it asks DNS questions
//! (NAPTR, SRV, addresses) one at a time and is given the answers.
//!
//! - A numeric host is its own answer (the URI's port, or 5060).
//! - A port in the URI: addresses of the host, by the URI's transport (UDP by default).
//! - A transport but no port: SRV `_sip._udp`/`_sip._tcp` of the host, then addresses.
//! - Neither: NAPTR of the host (`SIP+D2U`, `SIP+D2T` for the transports asked for, by
//!   order and preference), following each replacement to its SRV; with no usable NAPTR,
//!   SRV for each transport asked for; with no SRV either, the host's addresses on UDP
//!   port 5060 (§4.2).
//!
//! SRV targets are ordered by priority and, among equal priorities, by the weighted
//! random choice of RFC 2782, from a seed the caller gives (so tests are exact).

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};

use crate::uri::{Scheme, Uri};

/// A transport a located server is reached over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    Udp,
    Tcp,
}

impl Proto {
    fn srv_label(self) -> &'static str {
        match self {
            Proto::Udp => "_sip._udp",
            Proto::Tcp => "_sip._tcp",
        }
    }

    fn of_service(services: &str) -> Option<Proto> {
        if services.eq_ignore_ascii_case("SIP+D2U") {
            Some(Proto::Udp)
        } else if services.eq_ignore_ascii_case("SIP+D2T") {
            Some(Proto::Tcp)
        } else {
            None
        }
    }

    /// The transport a URI's `transport` parameter names, if this machine knows it.
    pub fn of_param(param: &str) -> Option<Proto> {
        if param.eq_ignore_ascii_case("udp") {
            Some(Proto::Udp)
        } else if param.eq_ignore_ascii_case("tcp") {
            Some(Proto::Tcp)
        } else {
            None
        }
    }
}

/// One NAPTR record (RFC 3403), as far as SIP uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Naptr {
    pub order: u16,
    pub preference: u16,
    pub flags: String,
    pub services: String,
    pub replacement: String,
}

/// One SRV record (RFC 2782).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Srv {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    pub target: String,
}

/// What the machine wants to know next.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Question {
    Naptr(String),
    Srv(String),
    /// A and AAAA records of a host.
    Addrs(String),
}

/// The answer to the last question. An empty list is "no such records" (NXDOMAIN or
/// no data); `Failed` is a server that did not answer or answered an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Naptr(Vec<Naptr>),
    Srv(Vec<Srv>),
    Addrs(Vec<IpAddr>),
    Failed,
}

/// A server to try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Located {
    pub proto: Proto,
    pub addr: SocketAddr,
}

/// Why a URI leads nowhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unresolved {
    #[error("no DNS records")]
    NoRecords,
    #[error("DNS server failure")]
    ServerFailure,
    #[error("no transport this node speaks")]
    NoTransport,
}

/// The machine's next step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Ask(Question),
    Done(Result<Vec<Located>, Unresolved>),
}

/// NAPTR records followed, SRV records kept per query, and servers returned, at most
/// (a hostile zone cannot make a lookup unbounded).
pub const MAX_NAPTR: usize = 4;
pub const MAX_SRV: usize = 8;
pub const MAX_LOCATED: usize = 16;

/// What a URI asks to be located: its host (or `maddr`), port and transport, in the
/// form DNS sees them (no brackets, no root dot, lower case). Equal targets locate alike,
/// so this is the key a cache of locations is kept by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    pub host: String,
    pub port: Option<u16>,
    pub transport: Option<Proto>,
}

impl Target {
    /// The target of a URI; a `sips:` URI or a `transport` parameter this machine does
    /// not know (TLS, SCTP, WS) cannot be located.
    pub fn of(uri: &Uri<'_>) -> Result<Self, Unresolved> {
        if uri.scheme != Scheme::Sip {
            return Err(Unresolved::NoTransport);
        }
        let (transport, maddr) = uri.transport_and_maddr();
        let transport = match transport {
            Some(t) => Some(Proto::of_param(t).ok_or(Unresolved::NoTransport)?),
            None => None,
        };
        let host = maddr
            .unwrap_or(uri.host)
            .trim_start_matches('[')
            .trim_end_matches(']')
            .trim_end_matches('.')
            .to_ascii_lowercase();
        Ok(Target {
            host,
            port: uri.port,
            transport,
        })
    }

    /// Whether the host is an IP address (located with no question).
    pub fn is_numeric(&self) -> bool {
        self.host.parse::<IpAddr>().is_ok()
    }
}

/// One location in progress.
#[derive(Debug)]
pub struct Locator {
    host: String,
    transport: Option<Proto>,
    supported: Vec<Proto>,
    seed: u64,
    /// SRV names still to ask, with the transport each stands for.
    srvs: VecDeque<(Proto, String)>,
    /// Hosts still to ask the addresses of.
    hosts: VecDeque<(Proto, String, u16)>,
    /// The question asked last.
    asked: Option<(Proto, u16)>,
    found: Vec<Located>,
    failed: bool,
    /// The §4.2 fallback (the host itself, port 5060) is no longer open: an SRV record was
    /// seen, or the URI named its port.
    no_fallback: bool,
}

impl Locator {
    /// Starts locating `target` over the transports in `supported` (in preference
    /// order); `seed` drives the weighted choice among SRV records of equal priority.
    pub fn new(target: &Target, supported: &[Proto], seed: u64) -> (Self, Step) {
        let mut l = Locator {
            host: target.host.clone(),
            transport: target.transport,
            supported: supported.to_vec(),
            seed: seed | 1,
            srvs: VecDeque::new(),
            hosts: VecDeque::new(),
            asked: None,
            found: Vec::new(),
            failed: false,
            no_fallback: false,
        };
        if target.transport.is_some_and(|t| !supported.contains(&t)) {
            return (l, Step::Done(Err(Unresolved::NoTransport)));
        }
        let proto = l.transport.unwrap_or(Proto::Udp);
        if let Ok(ip) = l.host.parse::<IpAddr>() {
            let addr = SocketAddr::new(ip, target.port.unwrap_or(5060));
            return (l, Step::Done(Ok(vec![Located { proto, addr }])));
        }
        let step = if let Some(port) = target.port {
            l.no_fallback = true;
            l.hosts.push_back((proto, l.host.clone(), port));
            l.next()
        } else if let Some(t) = l.transport {
            l.srvs
                .push_back((t, format!("{}.{}", t.srv_label(), l.host)));
            l.next()
        } else {
            Step::Ask(Question::Naptr(l.host.clone()))
        };
        (l, step)
    }

    /// Takes the answer to the last question.
    pub fn answer(&mut self, answer: Answer) -> Step {
        match answer {
            Answer::Failed => self.failed = true,
            Answer::Naptr(records) => self.on_naptr(records),
            Answer::Srv(records) => self.on_srv(records),
            Answer::Addrs(ips) => {
                if let Some((proto, port)) = self.asked.take() {
                    for ip in ips {
                        let found = Located {
                            proto,
                            addr: SocketAddr::new(ip, port),
                        };
                        if !self.found.contains(&found) && self.found.len() < MAX_LOCATED {
                            self.found.push(found);
                        }
                    }
                }
            }
        }
        self.next()
    }

    /// §4.1: the NAPTR records for the transports asked for, by order then preference;
    /// without any, an SRV query for each transport asked for.
    fn on_naptr(&mut self, mut records: Vec<Naptr>) {
        records.retain(|r| {
            r.flags.eq_ignore_ascii_case("s")
                && Proto::of_service(&r.services).is_some_and(|p| self.supported.contains(&p))
        });
        records.sort_by_key(|r| (r.order, r.preference));
        for r in records.into_iter().take(MAX_NAPTR) {
            if let Some(p) = Proto::of_service(&r.services) {
                let name = r.replacement.trim_end_matches('.').to_ascii_lowercase();
                self.srvs.push_back((p, name));
            }
        }
        if self.srvs.is_empty() {
            for &p in &self.supported {
                self.srvs
                    .push_back((p, format!("{}.{}", p.srv_label(), self.host)));
            }
        }
    }

    fn on_srv(&mut self, mut records: Vec<Srv>) {
        let Some((proto, _)) = self.asked.take() else {
            return;
        };
        // A target of "." says the service is not offered there (RFC 2782).
        records.retain(|r| !r.target.is_empty() && r.target != ".");
        records.truncate(MAX_SRV);
        if !records.is_empty() {
            self.no_fallback = true;
        }
        for r in self.order_srv(records) {
            let target = r.target.trim_end_matches('.').to_ascii_lowercase();
            self.hosts.push_back((proto, target, r.port));
        }
    }

    /// RFC 2782: by priority; among equal priorities, zero weights first, then each pick
    /// at random in proportion to the weights left.
    fn order_srv(&mut self, mut records: Vec<Srv>) -> Vec<Srv> {
        records.sort_by_key(|r| (r.priority, r.weight != 0));
        let mut ordered = Vec::with_capacity(records.len());
        while !records.is_empty() {
            let priority = records[0].priority;
            let same = records
                .iter()
                .take_while(|r| r.priority == priority)
                .count();
            let mut group: Vec<Srv> = records.drain(..same).collect();
            while !group.is_empty() {
                let total: u64 = group.iter().map(|r| u64::from(r.weight)).sum();
                let pick = if total == 0 {
                    0
                } else {
                    self.random() % (total + 1)
                };
                let mut running = 0;
                let i = group
                    .iter()
                    .position(|r| {
                        running += u64::from(r.weight);
                        running >= pick
                    })
                    .unwrap_or(0);
                ordered.push(group.remove(i));
            }
        }
        ordered
    }

    /// xorshift64: enough to spread calls over equal-priority servers.
    fn random(&mut self) -> u64 {
        let mut x = self.seed;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.seed = x;
        x
    }

    fn next(&mut self) -> Step {
        if self.found.len() >= MAX_LOCATED {
            return self.done();
        }
        if let Some((proto, name)) = self.srvs.pop_front() {
            self.asked = Some((proto, 0));
            return Step::Ask(Question::Srv(name));
        }
        if !self.no_fallback && self.hosts.is_empty() && self.found.is_empty() && !self.failed {
            // §4.2: no SRV records at all: the host itself, port 5060.
            self.no_fallback = true;
            let proto = self.transport.unwrap_or(Proto::Udp);
            if self.supported.contains(&proto) {
                self.hosts.push_back((proto, self.host.clone(), 5060));
            }
        }
        if let Some((proto, host, port)) = self.hosts.pop_front() {
            self.asked = Some((proto, port));
            return Step::Ask(Question::Addrs(host));
        }
        self.done()
    }

    fn done(&mut self) -> Step {
        self.srvs.clear();
        self.hosts.clear();
        Step::Done(if !self.found.is_empty() {
            Ok(std::mem::take(&mut self.found))
        } else if self.failed {
            Err(Unresolved::ServerFailure)
        } else {
            Err(Unresolved::NoRecords)
        })
    }
}

#[cfg(test)]
mod tests;
