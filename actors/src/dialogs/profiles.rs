//! Dialog profiles (Kamailio's `set_dlg_profile`, `profile_get_size`) and call limits.
//!
//! A profile counts the dialogs that belong to it, once per dialog whatever the forking,
//! and with a value (`user`, `type`) once per value. Membership is a [`Membership`] held by
//! the dialog: dropping it (the dialog ended, whatever ended it) gives the count back, so
//! no path can leak one. A limit is checked and the count taken in one atomic step
//! ([`Counter::try_join`]), so parallel INVITEs can never pass a limit together.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;
use serde::Deserialize;

/// What a profile's value is taken from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueOf {
    /// The authenticated user, else the From user.
    Caller,
    /// The source: the address group's or trusted peer's tag, else `subscriber`.
    Source,
    /// The call's class ([`ClassRule`]).
    Class,
    /// The Request-URI user: the number called.
    Callee,
}

/// A profile as configured: without a value it counts every dialog it applies to.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileDef {
    pub name: String,
    /// Counted per value of this field (`profiles_with_value`); none: one count.
    #[serde(default)]
    pub value: Option<ValueOf>,
    /// Only dialogs of this class belong to it (the seed's `international` profile).
    #[serde(default)]
    pub class: Option<String>,
}

/// A class by Request-URI user prefix (`^00` international, `^0` domestic, else local):
/// the longest matching prefix names the call's class.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassRule {
    pub name: String,
    #[serde(default)]
    pub prefix: String,
}

/// A limit on a profile's size, checked before the call is relayed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitDef {
    pub profile: String,
    /// The most dialogs at once; none: the caller's subscriber `call_limit` (no limit for
    /// a caller without one).
    #[serde(default)]
    pub max: Option<u64>,
    /// What a call over the limit gets: 486, 403, 503 ...
    #[serde(default = "default_limit_status")]
    pub status: u16,
    #[serde(default)]
    pub reason: Option<String>,
    /// Sent as Retry-After (with 503).
    #[serde(default)]
    pub retry_after_s: Option<u32>,
}

fn default_limit_status() -> u16 {
    486
}

impl LimitDef {
    pub fn reason(&self) -> &str {
        self.reason.as_deref().unwrap_or(match self.status {
            403 => "Forbidden: call limit reached",
            486 => "Busy Here: call limit reached",
            503 => "Service Unavailable: call limit reached",
            _ => "Call limit reached",
        })
    }
}

/// One count: the size of a profile, or of one value of it.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn size(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    /// Joins when the size is below `max` (none: always), in one atomic step.
    pub fn try_join(self: &Arc<Self>, max: Option<u64>) -> Option<Membership> {
        let joined = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| match max {
                Some(m) if n >= m => None,
                _ => Some(n + 1),
            })
            .is_ok();
        joined.then(|| Membership(self.clone()))
    }
}

/// A dialog's place in a profile; dropping it leaves the profile.
#[derive(Debug)]
pub struct Membership(Arc<Counter>);

impl Drop for Membership {
    fn drop(&mut self) {
        self.0 .0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The facts of a call a profile or class reads.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallFacts<'a> {
    pub caller: &'a str,
    pub source: &'a str,
    pub callee: &'a str,
    /// The caller's subscriber `call_limit`, when it is a subscriber with one.
    pub call_limit: Option<u32>,
}

/// A call refused by a limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("limit on profile {profile} reached ({size} of {max})")]
pub struct LimitReached {
    pub profile: String,
    pub size: u64,
    pub max: u64,
    pub status: u16,
    pub reason: String,
    pub retry_after_s: Option<u32>,
}

/// The declared profiles, classes and limits, and the counts.
#[derive(Debug, Default)]
pub struct Profiles {
    rules: RwLock<Rules>,
    /// profile -> value -> count; `""` is the value of a profile without one. Looked up
    /// by borrowed names: joining a call allocates nothing once its counts exist.
    counts: RwLock<HashMap<String, HashMap<String, Arc<Counter>>>>,
}

#[derive(Debug, Default, Clone)]
struct Rules {
    profiles: Vec<ProfileDef>,
    classes: Vec<ClassRule>,
    limits: Vec<LimitDef>,
}

/// What a call joined: each profile with its value, and the class.
#[derive(Debug, Default)]
pub struct Joined {
    pub class: Option<String>,
    pub profiles: Vec<(String, String)>,
    pub memberships: Vec<Membership>,
}

impl Profiles {
    pub fn new(profiles: Vec<ProfileDef>, classes: Vec<ClassRule>, limits: Vec<LimitDef>) -> Self {
        let p = Self::default();
        p.set_rules(profiles, classes, limits);
        p
    }

    /// New declarations (reload): calls up keep their memberships.
    pub fn set_rules(
        &self,
        profiles: Vec<ProfileDef>,
        classes: Vec<ClassRule>,
        limits: Vec<LimitDef>,
    ) {
        *self.rules.write() = Rules {
            profiles,
            classes,
            limits,
        };
    }

    pub fn is_declared(&self, profile: &str) -> bool {
        self.rules.read().profiles.iter().any(|p| p.name == profile)
    }

    /// The names of the declared profiles.
    pub fn names(&self) -> Vec<String> {
        self.rules
            .read()
            .profiles
            .iter()
            .map(|p| p.name.clone())
            .collect()
    }

    /// The class of a call by its Request-URI user: the longest matching prefix.
    pub fn class_of(&self, callee: &str) -> Option<String> {
        class_of(&self.rules.read().classes, callee)
    }

    /// Joins every profile the call belongs to, each limit checked as its count is taken;
    /// on a refusal the counts taken so far are given back.
    pub fn join(&self, facts: &CallFacts<'_>) -> Result<Joined, LimitReached> {
        let rules = self.rules.read();
        let class = class_of(&rules.classes, facts.callee);
        let mut joined = Joined {
            class: class.clone(),
            ..Joined::default()
        };
        for p in &rules.profiles {
            if p.class.is_some() && p.class != class {
                continue;
            }
            let value = match p.value {
                None => String::new(),
                Some(ValueOf::Caller) => facts.caller.to_owned(),
                Some(ValueOf::Source) => facts.source.to_owned(),
                Some(ValueOf::Callee) => facts.callee.to_owned(),
                Some(ValueOf::Class) => match &class {
                    Some(c) => c.clone(),
                    None => continue,
                },
            };
            let counter = self.counter(&p.name, &value);
            // The tightest limit on this profile decides (one step for all of them).
            let limit = rules
                .limits
                .iter()
                .filter(|l| l.profile == p.name)
                .filter_map(|l| {
                    let max = l.max.or(facts.call_limit.map(u64::from))?;
                    Some((max, l))
                })
                .min_by_key(|(max, _)| *max);
            match (counter.try_join(limit.map(|(max, _)| max)), limit) {
                (Some(m), _) => joined.memberships.push(m),
                (None, Some((max, l))) => {
                    return Err(LimitReached {
                        profile: p.name.clone(),
                        size: counter.size(),
                        max,
                        status: l.status,
                        reason: l.reason().to_owned(),
                        retry_after_s: l.retry_after_s,
                    })
                }
                // Without a limit a join always succeeds.
                (None, None) => continue,
            }
            joined.profiles.push((p.name.clone(), value));
        }
        Ok(joined)
    }

    pub(crate) fn counter(&self, profile: &str, value: &str) -> Arc<Counter> {
        if let Some(c) = self.counts.read().get(profile).and_then(|v| v.get(value)) {
            return c.clone();
        }
        self.counts
            .write()
            .entry(profile.to_owned())
            .or_default()
            .entry(value.to_owned())
            .or_default()
            .clone()
    }

    /// `dlg.profile_get_size`: the size of one value, or of the whole profile.
    pub fn size(&self, profile: &str, value: Option<&str>) -> u64 {
        let counts = self.counts.read();
        let Some(values) = counts.get(profile) else {
            return 0;
        };
        match value {
            Some(v) => values.get(v).map_or(0, |c| c.size()),
            None => values.values().map(|c| c.size()).sum(),
        }
    }

    /// Every `(profile, value, size)` with a size above zero.
    pub fn sizes(&self) -> Vec<(String, String, u64)> {
        let mut all: Vec<_> = self
            .counts
            .read()
            .iter()
            .flat_map(|(p, values)| {
                values
                    .iter()
                    .map(move |(v, c)| (p.clone(), v.clone(), c.size()))
            })
            .filter(|(_, _, n)| *n > 0)
            .collect();
        all.sort();
        all
    }

    /// Forgets the counts no dialog holds (values of callers long gone), so the table is
    /// bounded by the dialogs up, not by every caller ever seen. A count in use is kept:
    /// a dialog's membership (or a thread joining) holds a reference to it.
    pub fn sweep(&self) -> usize {
        let mut counts = self.counts.write();
        let mut forgotten = 0;
        for values in counts.values_mut() {
            let before = values.len();
            values.retain(|_, c| Arc::strong_count(c) > 1 || c.size() > 0);
            forgotten += before - values.len();
        }
        counts.retain(|_, values| !values.is_empty());
        forgotten
    }
}

fn class_of(classes: &[ClassRule], callee: &str) -> Option<String> {
    classes
        .iter()
        .filter(|c| callee.starts_with(&c.prefix))
        .max_by_key(|c| c.prefix.len())
        .map(|c| c.name.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed_profiles() -> Profiles {
        let profile = |name: &str, value, class: Option<&str>| ProfileDef {
            name: name.into(),
            value,
            class: class.map(Into::into),
        };
        let class = |name: &str, prefix: &str| ClassRule {
            name: name.into(),
            prefix: prefix.into(),
        };
        Profiles::new(
            vec![
                profile("total", None, None),
                profile("user", Some(ValueOf::Caller), None),
                profile("type", Some(ValueOf::Class), None),
                profile("international", None, Some("international")),
            ],
            vec![
                class("international", "00"),
                class("domestic", "0"),
                class("local", ""),
            ],
            vec![LimitDef {
                profile: "user".into(),
                max: None,
                status: 486,
                reason: None,
                retry_after_s: None,
            }],
        )
    }

    /// The seed's classes: `^00` international, `^0` domestic, else local.
    #[test]
    fn classes_by_longest_prefix() {
        let p = seed_profiles();
        for (callee, class) in [
            ("0049301234", "international"),
            ("00", "international"),
            ("030123", "domestic"),
            ("6002", "local"),
            ("", "local"),
        ] {
            assert_eq!(p.class_of(callee).as_deref(), Some(class), "{callee}");
        }
    }

    #[test]
    fn memberships_count_and_give_back() {
        let p = seed_profiles();
        let facts = CallFacts {
            caller: "6001",
            callee: "0049301234",
            ..CallFacts::default()
        };
        let a = p.join(&facts).unwrap();
        assert_eq!(a.class.as_deref(), Some("international"));
        let b = p
            .join(&CallFacts {
                callee: "6002",
                ..facts
            })
            .unwrap();
        assert_eq!(p.size("total", None), 2);
        assert_eq!(p.size("user", Some("6001")), 2);
        assert_eq!(p.size("type", Some("international")), 1);
        assert_eq!(p.size("type", None), 2);
        assert_eq!(p.size("international", None), 1);
        drop(a);
        assert_eq!(p.size("international", None), 0);
        assert_eq!(p.size("total", None), 1);
        drop(b);
        assert!(p.sizes().is_empty());
        assert_eq!(p.sweep(), 5, "every count unused now");
    }

    /// The subscriber's `call_limit` applies when the limit names no number; a refusal
    /// gives back the counts taken before it.
    #[test]
    fn limit_from_the_subscriber_and_rollback() {
        let p = seed_profiles();
        let facts = CallFacts {
            caller: "6001",
            callee: "6002",
            call_limit: Some(2),
            ..CallFacts::default()
        };
        let held: Vec<_> = (0..2).map(|_| p.join(&facts).unwrap()).collect();
        let refused = p.join(&facts).unwrap_err();
        assert_eq!(
            (refused.profile.as_str(), refused.max, refused.status),
            ("user", 2, 486)
        );
        assert_eq!(p.size("total", None), 2, "total given back on the refusal");
        // Another caller is not limited by 6001's calls; without a call_limit, no limit.
        assert!(p
            .join(&CallFacts {
                caller: "6003",
                call_limit: None,
                ..facts
            })
            .is_ok());
        drop(held);
        assert!(p.join(&facts).is_ok());
    }

    /// 100 threads at once against a limit of 10: exactly 10 join.
    #[test]
    fn parallel_joins_never_pass_a_limit() {
        let p = Arc::new(seed_profiles());
        let barrier = Arc::new(std::sync::Barrier::new(100));
        let handles: Vec<_> = (0..100)
            .map(|_| {
                let (p, barrier) = (p.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    p.join(&CallFacts {
                        caller: "6001",
                        callee: "6002",
                        call_limit: Some(10),
                        ..CallFacts::default()
                    })
                    .ok()
                })
            })
            .collect();
        let joined: Vec<_> = handles
            .into_iter()
            .filter_map(|h| h.join().unwrap())
            .collect();
        assert_eq!(joined.len(), 10);
        assert_eq!(p.size("user", Some("6001")), 10);
        assert_eq!(p.size("total", None), 10);
    }

    proptest::proptest! {
        /// Any sequence of joins and leaves: each size equals the memberships held.
        #[test]
        fn sizes_equal_memberships_held(ops in proptest::collection::vec((0u8..3, 0u8..4), 0..200)) {
            let p = seed_profiles();
            let mut held: Vec<(u8, Joined)> = Vec::new();
            for (caller, op) in ops {
                if op == 0 && !held.is_empty() {
                    held.remove(usize::from(caller) % held.len());
                } else {
                    let name = caller.to_string();
                    let facts = CallFacts { caller: &name, callee: "0", call_limit: Some(3), ..CallFacts::default() };
                    if let Ok(j) = p.join(&facts) {
                        held.push((caller, j));
                    }
                }
                proptest::prop_assert_eq!(p.size("total", None), held.len() as u64);
                for c in 0..3u8 {
                    let n = held.iter().filter(|(h, _)| *h == c).count() as u64;
                    proptest::prop_assert!(n <= 3);
                    proptest::prop_assert_eq!(p.size("user", Some(&c.to_string())), n);
                }
            }
        }
    }
}
