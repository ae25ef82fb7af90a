//! What a run measured: counts by outcome, retransmissions, and HDR histograms of setup
//! time (INVITE -> 200) and post-dial delay (INVITE -> first 18x), in microseconds.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::Serialize;

#[derive(Clone)]
pub struct Stats {
    pub attempted: u64,
    pub answered: u64,
    pub completed: u64,
    pub failed: BTreeMap<String, u64>,
    pub retransmissions: u64,
    pub throttled: u64,
    pub setup: Histogram<u64>,
    pub pdd: Histogram<u64>,
}

impl Default for Stats {
    fn default() -> Self {
        // 1 us .. 60 s, 3 significant digits.
        let h = || {
            Histogram::new_with_bounds(1, 60_000_000, 3)
                .unwrap_or_else(|_| unreachable!("valid bounds"))
        };
        Self {
            attempted: 0,
            answered: 0,
            completed: 0,
            failed: BTreeMap::new(),
            retransmissions: 0,
            throttled: 0,
            setup: h(),
            pdd: h(),
        }
    }
}

impl Stats {
    pub fn fail(&mut self, reason: impl Into<String>) {
        *self.failed.entry(reason.into()).or_default() += 1;
    }

    pub fn failed_total(&self) -> u64 {
        self.failed.values().sum()
    }

    pub fn merge(&mut self, other: &Stats) {
        self.attempted += other.attempted;
        self.answered += other.answered;
        self.completed += other.completed;
        for (k, v) in &other.failed {
            *self.failed.entry(k.clone()).or_default() += v;
        }
        self.retransmissions += other.retransmissions;
        self.throttled += other.throttled;
        let _ = self.setup.add(&other.setup);
        let _ = self.pdd.add(&other.pdd);
    }

    pub fn report(&self, elapsed_s: f64) -> Report {
        let q = |h: &Histogram<u64>| Quantiles {
            count: h.len(),
            p50_ms: h.value_at_quantile(0.5) as f64 / 1000.0,
            p90_ms: h.value_at_quantile(0.9) as f64 / 1000.0,
            p99_ms: h.value_at_quantile(0.99) as f64 / 1000.0,
            p999_ms: h.value_at_quantile(0.999) as f64 / 1000.0,
            max_ms: h.max() as f64 / 1000.0,
        };
        Report {
            attempted: self.attempted,
            answered: self.answered,
            completed: self.completed,
            failed: self.failed_total(),
            failed_by_reason: self.failed.clone(),
            retransmissions: self.retransmissions,
            throttled: self.throttled,
            elapsed_s,
            achieved_rate: if elapsed_s > 0.0 {
                self.attempted as f64 / elapsed_s
            } else {
                0.0
            },
            failure_pct: if self.attempted > 0 {
                100.0 * self.failed_total() as f64 / self.attempted as f64
            } else {
                0.0
            },
            setup: q(&self.setup),
            pdd: q(&self.pdd),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Quantiles {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub attempted: u64,
    pub answered: u64,
    pub completed: u64,
    pub failed: u64,
    pub failed_by_reason: BTreeMap<String, u64>,
    pub retransmissions: u64,
    pub throttled: u64,
    pub elapsed_s: f64,
    pub achieved_rate: f64,
    pub failure_pct: f64,
    pub setup: Quantiles,
    pub pdd: Quantiles,
}

impl Report {
    pub fn text(&self, what: &str) -> String {
        let mut s = format!(
            "{what}: attempted {} answered {} completed {} failed {} ({:.3} %) retransmissions {} throttled {}\n\
             achieved {:.1}/s over {:.1} s\n",
            self.attempted,
            self.answered,
            self.completed,
            self.failed,
            self.failure_pct,
            self.retransmissions,
            self.throttled,
            self.achieved_rate,
            self.elapsed_s
        );
        for (k, v) in &self.failed_by_reason {
            s.push_str(&format!("  failed {k}: {v}\n"));
        }
        for (name, q) in [("setup", &self.setup), ("post-dial delay", &self.pdd)] {
            if q.count > 0 {
                s.push_str(&format!(
                    "{name} ms: p50 {:.2} p90 {:.2} p99 {:.2} p99.9 {:.2} max {:.2} (n={})\n",
                    q.p50_ms, q.p90_ms, q.p99_ms, q.p999_ms, q.max_ms, q.count
                ));
            }
        }
        s
    }
}
