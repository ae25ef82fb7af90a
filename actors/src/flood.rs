//! The flood guard: a token bucket per source IP address (`governor`), checked before a
//! request is parsed further. Idle keys are evicted on a timer so the table stays bounded
//! by the number of recently active sources.

use std::net::IpAddr;
use std::num::NonZeroU32;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::settings::{FloodAction, FloodSettings};

pub struct FloodGuard {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    pub action: FloodAction,
    pub retry_after_secs: u64,
    max_sources: usize,
}

impl FloodGuard {
    /// `None` when disabled.
    pub fn new(s: &FloodSettings) -> Option<Self> {
        if !s.enabled {
            return None;
        }
        let rate = NonZeroU32::new(s.rate.max(1))?;
        let burst = NonZeroU32::new(s.burst.max(s.rate).max(1))?;
        Some(Self {
            limiter: RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)),
            action: s.action,
            retry_after_secs: s.retry_after.as_secs().max(1),
            max_sources: s.max_sources.max(1),
        })
    }

    /// `true` when a request from `ip` is within its limit.
    pub fn allow(&self, ip: IpAddr) -> bool {
        self.limiter.check_key(&ip).is_ok()
    }

    /// Forgets sources that are back to a full bucket.
    pub fn evict_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    /// Evicts idle state now if more sources than allowed are tracked; `true` if it did.
    pub fn bound(&self) -> bool {
        if self.limiter.len() > self.max_sources {
            self.evict_idle();
            return true;
        }
        false
    }

    /// Sources currently tracked.
    pub fn tracked(&self) -> usize {
        self.limiter.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_past_its_burst_is_limited_and_others_are_not() {
        let s = FloodSettings {
            rate: 5,
            burst: 5,
            ..FloodSettings::default()
        };
        let g = FloodGuard::new(&s).unwrap();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let allowed = (0..20).filter(|_| g.allow(a)).count();
        assert_eq!(allowed, 5);
        assert!(g.allow(b));
        assert_eq!(g.tracked(), 2);
        assert!(FloodGuard::new(&FloodSettings {
            enabled: false,
            ..s
        })
        .is_none());
    }

    #[test]
    fn the_table_of_sources_stays_bounded() {
        let s = FloodSettings {
            rate: 1_000_000,
            burst: 1_000_000,
            max_sources: 10,
            ..FloodSettings::default()
        };
        let g = FloodGuard::new(&s).unwrap();
        for i in 0..100u32 {
            assert!(g.allow(IpAddr::from(i.to_be_bytes())));
        }
        assert_eq!(g.tracked(), 100);
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert!(g.bound(), "past the bound, idle sources are evicted");
        assert!(g.tracked() < 100);
        assert!(!g.bound());
    }
}
