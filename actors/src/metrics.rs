//! The node's SIP metrics (prometheus-client, `limes_` prefix). Every label value comes
//! from a bounded set: methods (extensions share `other`), status classes, transports,
//! drop reasons named in code.

use std::sync::Arc;

use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
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
}

fn latency_histogram() -> Histogram {
    // 10 us .. ~5 s
    Histogram::new(exponential_buckets(0.000_01, 2.5, 15))
}

impl Metrics {
    pub fn new(registry: &mut Registry) -> Arc<Self> {
        let m = Metrics {
            requests: Family::default(),
            responses_received: Family::default(),
            responses_sent: Family::default(),
            retransmissions: Family::default(),
            drops: Family::default(),
            send_errors: Family::default(),
            connections: Family::default(),
            connect_failures: Counter::default(),
            latency: Family::new_with_constructor(latency_histogram),
            flood_limited: Counter::default(),
            originated: Family::default(),
            originated_outcomes: Family::default(),
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
        self.requests
            .get_or_create(&MethodLabels {
                method: method.label(),
            })
            .inc();
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

    pub fn response_received(&self, status: u16) {
        self.responses_received
            .get_or_create(&ClassLabels {
                class: class_of(status),
            })
            .inc();
    }

    pub fn response_sent(&self, status: u16) {
        self.responses_sent
            .get_or_create(&ClassLabels {
                class: class_of(status),
            })
            .inc();
    }

    pub fn retransmission(&self, direction: &'static str) {
        self.retransmissions
            .get_or_create(&DirectionLabels { direction })
            .inc();
    }

    pub fn drop_reason(&self, reason: &'static str) {
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

    pub fn latency(&self, phase: &'static str, seconds: f64) {
        self.latency
            .get_or_create(&PhaseLabels { phase })
            .observe(seconds);
    }
}
