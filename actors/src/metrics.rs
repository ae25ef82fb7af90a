//! The node's SIP metrics (prometheus-client, `limes_` prefix). Every label value comes
//! from a bounded set: methods (extensions share `other`), status classes, transports,
//! drop reasons named in code.

use std::sync::Arc;

use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::settings::Transport;
use crate::transport::SendError;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    pub method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassLabels {
    pub class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransportLabels {
    pub transport: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabels {
    pub direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// A status class, or `timeout` / `transport_error` when no response came.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TxLabels {
    pub kind: &'static str,
    pub state: &'static str,
}

/// `1xx` .. `6xx`.
pub fn class_of(status: u16) -> &'static str {
    match status / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        5 => "5xx",
        _ => "6xx",
    }
}

/// Counts transactions by kind and state when Prometheus scrapes (no hot-path cost).
pub trait TxCensus: Send + Sync + std::fmt::Debug + 'static {
    fn census(&self) -> Vec<(TxLabels, i64)>;
}

#[derive(Debug)]
struct TxCollector(Arc<dyn TxCensus>);

impl prometheus_client::collector::Collector for TxCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(
            "limes_transactions",
            "Transactions held now, by kind and RFC 3261 state",
            None,
            MetricType::Gauge,
        )?;
        for (labels, n) in self.0.census() {
            ConstGauge::new(n).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

#[derive(Debug)]
pub struct Metrics {
    pub requests: Family<MethodLabels, Counter>,
    pub responses_received: Family<ClassLabels, Counter>,
    pub responses_sent: Family<ClassLabels, Counter>,
    pub retransmissions: Family<DirectionLabels, Counter>,
    pub drops: Family<ReasonLabels, Counter>,
    pub send_errors: Family<TransportLabels, Counter>,
    pub connections: Family<TransportLabels, Gauge>,
    pub connect_failures: Counter,
    pub latency: Family<PhaseLabels, Histogram, fn() -> Histogram>,
    pub flood_limited: Counter,
    pub originated: Family<MethodLabels, Counter>,
    pub originated_outcomes: Family<OutcomeLabels, Counter>,
    pub udp_receive_calls: Counter,
    pub udp_datagrams: Counter,
    pub udp_standby_calls: Counter,
    /// The hot path's series, resolved once: an increment is one atomic add, with no lock
    /// and no hash; every one of them is exported from the start, at zero.
    hot: Hot,
}

#[derive(Debug)]
struct Hot {
    requests: [Counter; METHOD_LABELS.len()],
    received: [Counter; 6],
    sent: [Counter; 6],
    retransmissions_sent: Counter,
    retransmissions_absorbed: Counter,
    request_latency: Histogram,
    response_latency: Histogram,
}

/// Every value of the `method` label, in the order of [`method_slot`].
const METHOD_LABELS: [&str; 15] = [
    "INVITE",
    "ACK",
    "BYE",
    "CANCEL",
    "REGISTER",
    "OPTIONS",
    "INFO",
    "UPDATE",
    "PRACK",
    "SUBSCRIBE",
    "NOTIFY",
    "REFER",
    "MESSAGE",
    "PUBLISH",
    "other",
];

const CLASS_LABELS: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "6xx"];

/// Every value of the `reason` label of `limes_sip_drops_total` besides the parse and
/// framing errors' own ([`limes_sip::ParseError::ALL`], [`limes_sip::framing::FrameError::ALL`]).
pub const DROP_REASONS: [&str; 11] = [
    "ack_not_routable",
    "auth_blocked",
    "bad_response",
    "flood",
    "flood_table_full",
    "no_next_via",
    "no_transaction",
    "response_not_ours",
    "sanity",
    "tcp_connection_limit",
    "transaction_limit",
];

/// Creates the series of `family` for each of `labels`, at zero: a series that exists
/// from the start leaves no gap in `rate()` and can be alerted on by its absence.
pub fn at_zero<L, M, C>(family: &Family<L, M, C>, labels: impl IntoIterator<Item = L>)
where
    L: Clone + std::hash::Hash + Eq,
    M: Clone,
    C: prometheus_client::metrics::family::MetricConstructor<M>,
{
    for l in labels {
        drop(family.get_or_create(&l));
    }
}

fn method_slot(m: &limes_sip::Method) -> usize {
    use limes_sip::Method as M;
    match m {
        M::Invite => 0,
        M::Ack => 1,
        M::Bye => 2,
        M::Cancel => 3,
        M::Register => 4,
        M::Options => 5,
        M::Info => 6,
        M::Update => 7,
        M::Prack => 8,
        M::Subscribe => 9,
        M::Notify => 10,
        M::Refer => 11,
        M::Message => 12,
        M::Publish => 13,
        M::Extension(_) => 14,
    }
}

/// A family's series for `labels`, as a handle of its own (the family's lock is released
/// when this returns).
fn handle<L, M, C>(family: &Family<L, M, C>, labels: &L) -> M
where
    L: Clone + std::hash::Hash + Eq,
    M: Clone,
    C: prometheus_client::metrics::family::MetricConstructor<M>,
{
    family.get_or_create(labels).clone()
}

fn class_slot(status: u16) -> usize {
    usize::from((status / 100).clamp(1, 6) - 1)
}

/// Upper bounds of the latency buckets, in seconds: 1-2.5-5 steps from 10 µs to 5 s,
/// written out so that every `le` label is the number an operator reads (a computed
/// series carries float noise such as `0.006103515625000001`).
const LATENCY_BUCKETS: [f64; 19] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

impl Metrics {
    pub fn new(registry: &mut Registry) -> Arc<Self> {
        let requests = Family::<MethodLabels, Counter>::default();
        let responses_received = Family::<ClassLabels, Counter>::default();
        let responses_sent = Family::<ClassLabels, Counter>::default();
        let retransmissions = Family::<DirectionLabels, Counter>::default();
        let latency: Family<PhaseLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        // Each handle is taken in a statement of its own: a family's read guard must be
        // gone before the next `get_or_create` of the same family takes its write lock.
        let by_class = |f: &Family<ClassLabels, Counter>| {
            CLASS_LABELS.map(|class| handle(f, &ClassLabels { class }))
        };
        let hot = Hot {
            requests: METHOD_LABELS.map(|method| handle(&requests, &MethodLabels { method })),
            received: by_class(&responses_received),
            sent: by_class(&responses_sent),
            retransmissions_sent: handle(&retransmissions, &DirectionLabels { direction: "sent" }),
            retransmissions_absorbed: handle(
                &retransmissions,
                &DirectionLabels {
                    direction: "absorbed",
                },
            ),
            request_latency: handle(&latency, &PhaseLabels { phase: "request" }),
            response_latency: handle(&latency, &PhaseLabels { phase: "response" }),
        };
        let drops = Family::<ReasonLabels, Counter>::default();
        let parse = limes_sip::ParseError::ALL.map(|e| e.label());
        let framing = limes_sip::framing::FrameError::ALL.map(|e| e.label());
        let reasons = DROP_REASONS.iter().chain(&parse).chain(&framing);
        at_zero(&drops, reasons.map(|&reason| ReasonLabels { reason }));
        let transports = ["udp", "tcp"].map(|transport| TransportLabels { transport });
        let send_errors = Family::default();
        at_zero(&send_errors, transports.clone());
        let connections = Family::default();
        at_zero(&connections, [TransportLabels { transport: "tcp" }]);
        let originated = Family::default();
        at_zero(
            &originated,
            METHOD_LABELS.map(|method| MethodLabels { method }),
        );
        let originated_outcomes = Family::default();
        let outcomes = CLASS_LABELS.iter().chain(&["timeout", "transport_error"]);
        at_zero(
            &originated_outcomes,
            outcomes.map(|&outcome| OutcomeLabels { outcome }),
        );
        let m = Metrics {
            requests,
            responses_received,
            responses_sent,
            retransmissions,
            drops,
            send_errors,
            connections,
            connect_failures: Counter::default(),
            latency,
            flood_limited: Counter::default(),
            originated,
            originated_outcomes,
            udp_receive_calls: Counter::default(),
            udp_datagrams: Counter::default(),
            udp_standby_calls: Counter::default(),
            hot,
        };
        let r = registry.sub_registry_with_prefix("limes");
        r.register(
            "sip_requests_received",
            "SIP requests received, by method",
            m.requests.clone(),
        );
        r.register(
            "sip_responses_received",
            "SIP responses received, by status class",
            m.responses_received.clone(),
        );
        r.register(
            "sip_responses_sent",
            "SIP responses sent (forwarded or local), by status class",
            m.responses_sent.clone(),
        );
        r.register(
            "sip_retransmissions",
            "Retransmissions: sent by this node's timers, or received and absorbed",
            m.retransmissions.clone(),
        );
        r.register("sip_drops", "Messages dropped, by reason", m.drops.clone());
        r.register(
            "transport_send_errors",
            "Sends that failed, by transport",
            m.send_errors.clone(),
        );
        r.register(
            "transport_connections",
            "Open connections, by transport",
            m.connections.clone(),
        );
        r.register(
            "transport_connect_failures",
            "Outbound TCP connections that failed",
            m.connect_failures.clone(),
        );
        r.register(
            "proxy_latency_seconds",
            "Time from receiving a request (or final response) to forwarding it",
            m.latency.clone(),
        );
        r.register(
            "flood_limited",
            "Requests over their source's rate limit",
            m.flood_limited.clone(),
        );
        r.register(
            "udp_receive_calls",
            "UDP receive system calls (recvmmsg) that returned datagrams",
            m.udp_receive_calls.clone(),
        );
        r.register(
            "udp_datagrams_received",
            "UDP datagrams received; divided by limes_udp_receive_calls_total: datagrams per receive call",
            m.udp_datagrams.clone(),
        );
        r.register(
            "udp_standby_calls",
            "Times a standby UDP worker was called to help the receiving one (full batches kept waiting, or one batch took a whole timer tick)",
            m.udp_standby_calls.clone(),
        );
        r.register(
            "sip_originated_requests",
            "Requests this node sent of its own (pings, BYEs, registrations), by method",
            m.originated.clone(),
        );
        r.register(
            "sip_originated_outcomes",
            "How the node's own requests ended: final status class, or timeout",
            m.originated_outcomes.clone(),
        );
        Arc::new(m)
    }

    /// Registers the scrape-time transaction census.
    pub fn register_census(registry: &mut Registry, census: Arc<dyn TxCensus>) {
        registry.register_collector(Box::new(TxCollector(census)));
    }

    pub fn request(&self, method: &limes_sip::Method) {
        self.hot.requests[method_slot(method)].inc();
    }

    pub fn originated(&self, method: &limes_sip::Method) {
        self.originated
            .get_or_create(&MethodLabels {
                method: method.label(),
            })
            .inc();
    }

    pub fn originated_outcome(&self, status: u16, answered: bool) {
        let outcome = match (answered, status) {
            (true, s) => class_of(s),
            (false, 408) => "timeout",
            (false, _) => "transport_error",
        };
        self.originated_outcomes
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// One receive call that returned `datagrams`.
    pub fn udp_received(&self, datagrams: usize) {
        self.udp_receive_calls.inc();
        self.udp_datagrams.inc_by(datagrams as u64);
    }

    pub fn udp_standby_called(&self) {
        self.udp_standby_calls.inc();
    }

    pub fn response_received(&self, status: u16) {
        self.hot.received[class_slot(status)].inc();
    }

    pub fn response_sent(&self, status: u16) {
        self.hot.sent[class_slot(status)].inc();
    }

    pub fn retransmission_sent(&self) {
        self.hot.retransmissions_sent.inc();
    }

    pub fn retransmission_absorbed(&self) {
        self.hot.retransmissions_absorbed.inc();
    }

    /// Responses sent so far by class (1xx .. 6xx), for `tm.stats`.
    pub fn sent_by_class(&self) -> [u64; 6] {
        self.hot.sent.clone().map(|c| c.get())
    }

    pub fn responses_received_total(&self) -> u64 {
        self.hot.received.iter().map(Counter::get).sum()
    }

    pub fn retransmissions_total(&self) -> (u64, u64) {
        (
            self.hot.retransmissions_sent.get(),
            self.hot.retransmissions_absorbed.get(),
        )
    }

    pub fn drop_reason(&self, reason: &'static str) {
        debug_assert!(
            self.drops.get(&ReasonLabels { reason }).is_some(),
            "drop reason {reason:?} is not in DROP_REASONS"
        );
        self.drops.get_or_create(&ReasonLabels { reason }).inc();
    }

    pub fn send_error(&self, transport: Transport, _e: SendError) {
        self.send_errors
            .get_or_create(&TransportLabels {
                transport: transport.as_str(),
            })
            .inc();
    }

    pub fn tcp_connection(&self, delta: i64) {
        self.connections
            .get_or_create(&TransportLabels { transport: "tcp" })
            .inc_by(delta);
    }

    pub fn tcp_connect_failed(&self) {
        self.connect_failures.inc();
    }

    /// Time from receiving a request to forwarding it.
    pub fn request_latency(&self, seconds: f64) {
        self.hot.request_latency.observe(seconds);
    }

    /// Time from receiving a final response to forwarding it.
    pub fn response_latency(&self, seconds: f64) {
        self.hot.response_latency.observe(seconds);
    }
}
