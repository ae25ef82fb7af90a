//! The dialog metrics: calls ended by cause, limit rejections, durations, CDRs and
//! dropped notices (counted as they happen), and the census a scrape computes (calls by
//! state, profile sizes, CDRs queued for the collector).

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::cdr::EndedBy;
use super::collector::CollectorMetrics;
use super::Dialogs;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct EndLabels {
    pub(super) ended_by: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ProfileLabels {
    pub(super) profile: String,
}

/// The dialog families, registered once.
pub struct DialogMetrics {
    pub(super) ended: Family<EndLabels, Counter>,
    pub(super) limit_rejections: Family<ProfileLabels, Counter>,
    pub(super) duration: Histogram,
    pub(super) cdrs_written: Counter,
    pub(super) notices_dropped: Counter,
    pub(super) collector: CollectorMetrics,
}

impl DialogMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            ended: Family::default(),
            limit_rejections: Family::default(),
            duration: Histogram::new([
                1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 14_400.0, 43_200.0,
            ]),
            cdrs_written: Counter::default(),
            notices_dropped: Counter::default(),
            collector: CollectorMetrics::register(registry),
        };
        crate::metrics::at_zero(
            &m.ended,
            EndedBy::ALL.map(|by| EndLabels {
                ended_by: by.as_str(),
            }),
        );
        registry.register(
            "limes_dialogs_ended",
            "Calls ended, by who or what ended them",
            m.ended.clone(),
        );
        registry.register(
            "limes_dialog_limit_rejections",
            "Calls refused by a call limit, by profile",
            m.limit_rejections.clone(),
        );
        registry.register_with_unit(
            "limes_dialog_duration",
            "Answered calls' duration from answer to end",
            prometheus_client::registry::Unit::Seconds,
            m.duration.clone(),
        );
        registry.register(
            "limes_cdrs_written",
            "Call detail records written",
            m.cdrs_written.clone(),
        );
        registry.register(
            "limes_dialog_notices_dropped",
            "Lifecycle notices dropped because the dialog actors fell behind",
            m.notices_dropped.clone(),
        );
        m
    }
}

/// Dialogs by state and profile sizes, computed when Prometheus scrapes.
struct DialogCollector(Arc<Dialogs>);

impl std::fmt::Debug for DialogCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DialogCollector")
    }
}

impl prometheus_client::collector::Collector for DialogCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::family::Family;
        use prometheus_client::metrics::gauge::Gauge;
        let stats = self.0.stats();
        let by_state: Family<Vec<(&'static str, &'static str)>, Gauge> = Family::default();
        by_state
            .get_or_create(&vec![("state", "early")])
            .set(stats.early_dialogs as i64);
        by_state
            .get_or_create(&vec![("state", "confirmed")])
            .set(stats.active_dialogs as i64);
        let family = encoder.encode_descriptor(
            "limes_dialogs",
            "Tracked calls, by state",
            None,
            by_state.metric_type(),
        )?;
        by_state.encode(family)?;
        // One series per declared profile (values summed: a per-caller profile has as
        // many values as callers, too many for labels).
        let sizes: Family<Vec<(&'static str, String)>, Gauge> = Family::default();
        for name in self.0.profiles.names() {
            let n = self.0.profiles.size(&name, None);
            sizes.get_or_create(&vec![("profile", name)]).set(n as i64);
        }
        let family = encoder.encode_descriptor(
            "limes_dialog_profile_size",
            "Calls in each declared profile",
            None,
            sizes.metric_type(),
        )?;
        sizes.encode(family)?;
        let queued = prometheus_client::metrics::gauge::ConstGauge::new(
            self.0.collector.as_ref().map_or(0, |c| c.queued()) as i64,
        );
        let family = encoder.encode_descriptor(
            "limes_cdrs_queued",
            "CDRs waiting for the collector",
            None,
            queued.metric_type(),
        )?;
        queued.encode(family)
    }
}

impl Dialogs {
    /// Registers the dialog census (by state, profile sizes).
    pub fn register_census(registry: &mut Registry, dialogs: Arc<Dialogs>) {
        registry.register_collector(Box::new(DialogCollector(dialogs)));
    }
}
