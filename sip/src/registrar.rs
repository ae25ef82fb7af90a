//! Registrar binding updates (RFC 3261 §10.3), as pure functions: [`Register::read`] turns
//! a REGISTER into the update it asks for (steps 6 and 7: wildcard rules, expiry from the
//! `expires` parameter, the Expires header or the default, 423 below Min-Expires) and
//! [`apply`] applies it to an AoR's bindings (step 7: Call-ID/CSeq ordering, all or
//! nothing; the contact limit). The caller stores the result and answers with
//! [`contact_values`] (step 8). Times are Unix seconds given by the caller.

use crate::addr::NameAddr;
use crate::uri::{Scheme, Uri};
use crate::Message;

/// Registrar policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// Shorter non-zero expiries are refused with 423 Interval Too Brief.
    pub min_expires: u32,
    /// Longer ones are shortened to this.
    pub max_expires: u32,
    /// Used when neither the Contact nor the request gives an expiry.
    pub default_expires: u32,
    /// Bindings one AoR may hold; an update that would exceed it is refused.
    pub max_contacts: usize,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            min_expires: 60,
            max_expires: 3600,
            default_expires: 3600,
            max_contacts: 10,
        }
    }
}

/// One stored binding of an AoR. `M` is what the caller keeps beside it (where it came
/// from, User-Agent, Path ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding<M> {
    /// The Contact URI as registered, without angle brackets.
    pub contact: String,
    /// `q` in thousandths.
    pub q: Option<u16>,
    /// When it expires, in Unix seconds.
    pub expires_at: u64,
    pub call_id: String,
    pub cseq: u32,
    pub meta: M,
}

impl<M> Binding<M> {
    /// Seconds left at `now`.
    pub fn remaining(&self, now: u64) -> u64 {
        self.expires_at.saturating_sub(now)
    }
}

/// A refused REGISTER: the response to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub reason: &'static str,
    /// For 423: the Min-Expires value to send.
    pub min_expires: Option<u32>,
}

impl Refusal {
    fn bad(reason: &'static str) -> Self {
        Self {
            status: 400,
            reason,
            min_expires: None,
        }
    }
}

/// One Contact of a REGISTER, with its expiry decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContactUpdate<'m> {
    pub uri: &'m str,
    /// Seconds, already bounded by the rules; 0 removes the binding.
    pub expires: u32,
    pub q: Option<u16>,
    /// The Contact's header parameters as written (`+sip.instance`, `reg-id` ...).
    pub params: &'m str,
}

/// What a REGISTER asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change<'m> {
    /// No Contact: list the bindings (§10.3 step 6).
    Fetch,
    /// `Contact: *` with `Expires: 0`: remove every binding.
    RemoveAll,
    /// Add, refresh or remove these.
    Set(Vec<ContactUpdate<'m>>),
}

/// A REGISTER, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Register<'m> {
    pub call_id: &'m str,
    pub cseq: u32,
    pub change: Change<'m>,
}

impl<'m> Register<'m> {
    /// §10.3 steps 6 and 7 up to the store: the Contacts, their expiries and the
    /// wildcard rules.
    pub fn read(msg: &'m Message, rules: &Rules) -> Result<Self, Refusal> {
        let call_id = msg.call_id().ok_or(Refusal::bad("Missing Call-ID"))?;
        let cseq = msg
            .cseq()
            .and_then(Result::ok)
            .ok_or(Refusal::bad("Malformed CSeq"))?
            .seq;
        let header_expires = match msg.expires() {
            Some(Ok(e)) => Some(e),
            Some(Err(_)) => return Err(Refusal::bad("Malformed Expires")),
            None => None,
        };
        if msg.is_contact_wildcard() {
            if header_expires != Some(0) || msg.contacts().count() != 1 {
                return Err(Refusal::bad(
                    "Wildcard Contact needs Expires 0 and no other Contact",
                ));
            }
            return Ok(Self {
                call_id,
                cseq,
                change: Change::RemoveAll,
            });
        }
        let mut updates: Vec<ContactUpdate<'m>> = Vec::new();
        for c in msg.contacts() {
            let c: NameAddr<'m> = c.map_err(|_| Refusal::bad("Malformed Contact"))?;
            if c.uri == "*" {
                return Err(Refusal::bad(
                    "Wildcard Contact needs Expires 0 and no other Contact",
                ));
            }
            let uri = Uri::parse(c.uri).map_err(|_| Refusal::bad("Malformed Contact URI"))?;
            if uri.scheme == Scheme::Other {
                return Err(Refusal::bad("Unsupported Contact URI scheme"));
            }
            if c.params.get("q").is_some() && c.q().is_none() {
                return Err(Refusal::bad("Malformed q value"));
            }
            let asked = c
                .expires()
                .or(header_expires)
                .unwrap_or(rules.default_expires);
            if asked != 0 && asked < rules.min_expires {
                return Err(Refusal {
                    status: 423,
                    reason: "Interval Too Brief",
                    min_expires: Some(rules.min_expires),
                });
            }
            let update = ContactUpdate {
                uri: c.uri,
                expires: asked.min(rules.max_expires),
                q: c.q(),
                params: c.params.as_str(),
            };
            // The same URI twice in one request: the last one counts.
            updates.retain(|u| !same_contact(u.uri, update.uri));
            updates.push(update);
        }
        let change = if updates.is_empty() {
            Change::Fetch
        } else {
            Change::Set(updates)
        };
        Ok(Self {
            call_id,
            cseq,
            change,
        })
    }
}

/// The result of an update: the AoR's bindings after it, and what changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome<M> {
    pub bindings: Vec<Binding<M>>,
    /// Indices into `bindings` of the ones added or refreshed.
    pub stored: Vec<usize>,
    /// Contacts removed (by the request, or found expired).
    pub removed: Vec<String>,
}

const OUT_OF_ORDER: Refusal = Refusal {
    status: 400,
    reason: "CSeq out of order",
    min_expires: None,
};

/// §10.3 step 7: applies `req` to `existing` at `now`, all or nothing. A binding from the
/// same Call-ID changes only with a higher CSeq; the same CSeq again is a retransmission
/// and changes nothing (the request is answered with the bindings as they are).
pub fn apply<M: Clone>(
    existing: &[Binding<M>],
    req: &Register<'_>,
    now: u64,
    rules: &Rules,
    meta: impl Fn(&ContactUpdate<'_>) -> M,
) -> Result<Outcome<M>, Refusal> {
    let mut removed: Vec<String> = Vec::new();
    let mut bindings: Vec<Binding<M>> = Vec::with_capacity(existing.len() + 1);
    for b in existing {
        if b.expires_at <= now {
            removed.push(b.contact.clone());
        } else {
            bindings.push(b.clone());
        }
    }
    let mut stored = Vec::new();
    match &req.change {
        Change::Fetch => {}
        Change::RemoveAll => {
            for b in &bindings {
                if b.call_id == req.call_id && req.cseq <= b.cseq {
                    return Err(OUT_OF_ORDER);
                }
            }
            removed.extend(bindings.drain(..).map(|b| b.contact));
        }
        Change::Set(updates) => {
            for u in updates {
                let found = bindings
                    .iter()
                    .position(|b| same_contact(&b.contact, u.uri));
                if let Some(i) = found {
                    let b = &bindings[i];
                    if b.call_id == req.call_id {
                        if req.cseq < b.cseq {
                            return Err(OUT_OF_ORDER);
                        }
                        if req.cseq == b.cseq {
                            continue; // a retransmission
                        }
                    }
                    if u.expires == 0 {
                        removed.push(bindings.remove(i).contact);
                        stored.retain(|&s| s != i);
                        for s in &mut stored {
                            if *s > i {
                                *s -= 1;
                            }
                        }
                        continue;
                    }
                    bindings[i] = new_binding(u, req, now, &meta);
                    stored.push(i);
                } else if u.expires != 0 {
                    bindings.push(new_binding(u, req, now, &meta));
                    stored.push(bindings.len() - 1);
                }
            }
            if bindings.len() > rules.max_contacts && !stored.is_empty() {
                return Err(Refusal {
                    status: 403,
                    reason: "Too Many Registered Contacts",
                    min_expires: None,
                });
            }
        }
    }
    Ok(Outcome {
        bindings,
        stored,
        removed,
    })
}

fn new_binding<M>(
    u: &ContactUpdate<'_>,
    req: &Register<'_>,
    now: u64,
    meta: &impl Fn(&ContactUpdate<'_>) -> M,
) -> Binding<M> {
    Binding {
        contact: u.uri.to_owned(),
        q: u.q,
        expires_at: now + u64::from(u.expires),
        call_id: req.call_id.to_owned(),
        cseq: req.cseq,
        meta: meta(u),
    }
}

/// The Contact values of a 200 OK (§10.3 step 8): every binding with its remaining
/// expiry and q.
pub fn contact_values<M>(bindings: &[Binding<M>], now: u64) -> Vec<String> {
    bindings
        .iter()
        .filter(|b| b.expires_at > now)
        .map(|b| {
            let mut v = format!("<{}>;expires={}", b.contact, b.remaining(now));
            if let Some(q) = b.q {
                v.push_str(&format!(";q={}", q_text(q)));
            }
            v
        })
        .collect()
}

/// A q value in thousandths as RFC 3261 writes it: `1`, `0.5`, `0.25`, `0.125`.
pub fn q_text(q: u16) -> String {
    if q >= 1000 {
        return "1".into();
    }
    let s = format!("0.{q:03}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// URI equality as §19.1.4 asks for Contacts: scheme and host case-insensitive, user and
/// password exact, port as written, and the `user`, `ttl`, `method`, `maddr` and
/// `transport` parameters equal when either side has them; other parameters compared only
/// when both sides carry them. An unparsable URI equals only its exact text.
pub fn same_contact(a: &str, b: &str) -> bool {
    if a == b {
        // Reflexive even for a URI repeating a parameter with different values.
        return true;
    }
    let (Ok(x), Ok(y)) = (Uri::parse(a), Uri::parse(b)) else {
        return a == b;
    };
    if x.scheme != y.scheme
        || x.user != y.user
        || x.password != y.password
        || !x.host.eq_ignore_ascii_case(y.host)
        || x.port != y.port
        || x.headers != y.headers
    {
        return false;
    }
    let eq = |p: Option<Option<&str>>, q: Option<Option<&str>>| match (p, q) {
        (Some(Some(p)), Some(Some(q))) => p.eq_ignore_ascii_case(q),
        (p, q) => p.is_some() == q.is_some() && p.flatten().is_none() && q.flatten().is_none(),
    };
    for name in ["user", "ttl", "method", "maddr", "transport"] {
        if !eq(x.params.get(name), y.params.get(name)) {
            return false;
        }
    }
    x.params.iter().all(|(n, v)| match y.params.get(n) {
        Some(w) => eq(Some(v), Some(w)),
        None => true,
    })
}

#[cfg(test)]
mod tests;
