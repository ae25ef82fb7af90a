//! What the edge decides for a request that starts something: REGISTER goes to the
//! registrar (digest 401, bindings, 200 with the Contacts); other initial requests from
//! sources that are neither carriers (address groups) nor trusted peers are challenged
//! with 407 (a configured next hop counts as trusted); then a registered AoR is reached
//! through its bindings (highest q first, equal q in parallel, a lower q only when every
//! higher one failed; each through the flow or Path it registered with), an unregistered
//! one through the next hops, except for requests that came from a carrier or a next hop
//! (404 User Not Registered: never send a call back where it came from).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use limes_sip::addr::PushParams;
use limes_sip::registrar::{ContactUpdate, Register};
use limes_sip::uri::{Scheme, Uri};
use limes_sip::{HeaderName, Message};
use parking_lot::RwLock;
use tracing::{debug, error, warn};

use super::{Proxy, Route};
use crate::auth::{Attempt, Auth, Kind, Verdict};
use crate::dialogs::Origin;
use crate::registrar::{Location, LocationError, Meta, Push};
use crate::settings::Transport;
use crate::tables::{Peer, Tables};
use crate::transport::{dest_of_uri, Dest, Flow};

/// The registrar, authentication and tables the proxy consults.
#[derive(Debug)]
pub struct Edge {
    pub tables: Arc<Tables>,
    pub auth: Arc<Auth>,
    pub location: Arc<Location>,
    /// Domains this node is registrar for; empty: every domain.
    pub domains: RwLock<Vec<String>>,
    /// AoRs are `user@domain` (true) or the user alone, as Kamailio's usrloc does by default.
    pub use_domain: AtomicBool,
}

/// The AoR of a URI: `user@host` (host lowercased, no port) or, without `use_domain`,
/// the user alone; the host when there is no user; the number of a `tel:` URI.
pub fn aor_of(uri: &Uri<'_>, use_domain: bool) -> String {
    match (uri.scheme, uri.user) {
        (Scheme::Tel, Some(u)) => u.to_owned(),
        (_, Some(u)) if use_domain => format!("{u}@{}", uri.host.to_ascii_lowercase()),
        (_, Some(u)) => u.to_owned(),
        (_, None) => uri.host.to_ascii_lowercase(),
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// An HTTP-date (RFC 7231 §7.1.1.1), as the Date header of RFC 3261 §20.17 wants it.
pub fn http_date(unix: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = unix / 86_400;
    let secs = unix % 86_400;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        day,
        MONTHS[(month - 1) as usize],
        year,
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

impl Edge {
    pub fn aor(&self, uri: &Uri<'_>) -> String {
        aor_of(uri, self.use_domain.load(Ordering::Relaxed))
    }

    /// Whether this node is registrar for `host`.
    pub fn serves(&self, host: &str, local: &super::local::Local) -> bool {
        let domains = self.domains.read();
        domains.is_empty()
            || domains.iter().any(|d| d.eq_ignore_ascii_case(host))
            || local.is_us(host, None)
    }
}

/// The tag of a configured next hop classified as trusted, made once.
static NEXT_HOP_TAG: std::sync::LazyLock<Arc<str>> = std::sync::LazyLock::new(|| "next hop".into());

fn from_uri(msg: &Message) -> &str {
    msg.from().and_then(Result::ok).map_or("", |f| f.uri)
}

fn user_of(v: Option<Result<limes_sip::addr::NameAddr<'_>, limes_sip::uri::UriError>>) -> String {
    v.and_then(Result::ok)
        .and_then(|a| a.parse_uri().ok())
        .and_then(|u| u.user)
        .unwrap_or_default()
        .to_owned()
}

/// The source a call is counted under: the peer's tag, else its class.
fn source_of(peer: &Peer) -> String {
    match peer {
        Peer::Carrier { tag, .. } => tag.as_deref().unwrap_or("carrier").to_owned(),
        Peer::Trusted { tag } => tag.as_deref().unwrap_or("trusted").to_owned(),
        Peer::Unknown => "subscriber".to_owned(),
    }
}

/// Where an initial request goes, and who it is from.
pub(super) struct Initial {
    pub targets: Vec<Route>,
    /// Credentials were checked (and are consumed: not forwarded).
    pub authenticated: bool,
    pub origin: Origin,
}

impl Proxy {
    /// The source's class; a configured next hop (a gateway) counts as trusted.
    fn classify(&self, msg: &Message, flow: &Flow) -> Peer {
        match self.edge.tables.classify(
            flow.remote.ip(),
            flow.remote.port(),
            flow.transport,
            from_uri(msg),
        ) {
            Peer::Unknown if self.is_next_hop(flow) => Peer::Trusted {
                tag: Some(NEXT_HOP_TAG.clone()),
            },
            peer => peer,
        }
    }

    /// Who a dialog-creating INVITE routed by its Route set is from (no authentication
    /// runs for it): the From user and the source's class.
    pub(super) fn routed_origin(&self, msg: &Message, flow: &Flow) -> Origin {
        Origin {
            source: source_of(&self.classify(msg, flow)),
            caller: user_of(msg.from()),
            call_limit: None,
            attrs: Default::default(),
        }
    }

    fn is_next_hop(&self, flow: &Flow) -> bool {
        self.next_hops
            .load()
            .iter()
            .any(|t| t.dest.addr == flow.remote)
    }

    /// Runs digest authentication for an untrusted request: the subscriber, or `None` when
    /// the request was answered (challenge, 403) or dropped (blocked source).
    fn authenticate(
        &self,
        msg: &Message,
        flow: &Flow,
        now: Instant,
        kind: Kind,
        user: &str,
    ) -> Option<Arc<crate::tables::Subscriber>> {
        let auth = &self.edge.auth;
        let unix = unix_now();
        let realm = auth.realm(msg);
        let attempt = Attempt {
            kind,
            realm: &realm,
            user,
            source: flow.remote.ip(),
            now,
            unix,
        };
        match auth.check(msg, &attempt, &self.edge.tables) {
            Verdict::Authenticated(sub) => Some(sub),
            Verdict::Challenge { stale } => {
                let (status, reason) = kind.status();
                auth.metrics
                    .challenges
                    .get_or_create(&crate::auth::ChallengeLabels {
                        status: if status == 401 { "401" } else { "407" },
                    })
                    .inc();
                let values = auth.challenges(&realm, stale, unix);
                let extra: Vec<(&str, &str)> = values
                    .iter()
                    .map(|v| (kind.challenge_header(), v.as_str()))
                    .collect();
                // Stateless (DESIGN principle 10): an unauthenticated source gets one
                // response per request and costs no transaction, so a spoofed flood is not
                // amplified by retransmissions and leaves no state behind. A retransmitted
                // request is challenged again; the ACK for it is absorbed by its To tag.
                self.reply_stateless(msg, flow, status, reason, &extra);
                None
            }
            Verdict::Forbidden(reason) => {
                debug!(remote = %flow.remote, reason, "authentication refused");
                self.reply_stateless(msg, flow, 403, reason, &[]);
                None
            }
            Verdict::Blocked => {
                self.metrics.drop_reason("auth_blocked");
                None
            }
        }
    }

    /// A REGISTER for a domain this node serves (RFC 3261 §10.3).
    pub(super) fn on_register(&self, msg: &Message, flow: &Flow, now: Instant) {
        let Some(Ok(to)) = msg.to().map(|t| t.and_then(|a| a.parse_uri())) else {
            return self.reply_stateless(msg, flow, 400, "Malformed To", &[]);
        };
        if !self.edge.serves(to.host, &self.local) {
            return self.reply_stateless(
                msg,
                flow,
                403,
                "Forbidden: not a domain served here",
                &[],
            );
        }
        let aor = self.edge.aor(&to);
        // DESIGN principle 10: trust by address never covers REGISTER. A trusted peer or a
        // carrier's address (UDP sources can be spoofed) would otherwise add its Contact to
        // any subscriber's bindings, and that subscriber's calls would fork to it.
        let user = to.user.unwrap_or_default();
        if self.authenticate(msg, flow, now, Kind::Www, user).is_none() {
            return;
        }
        let location = &self.edge.location;
        let rules = location.rules();
        let req = match Register::read(msg, &rules) {
            Ok(r) => r,
            Err(r) => return self.refuse_register(msg, flow, r.status, r.reason, r.min_expires),
        };
        let unix = unix_now();
        let paths: Vec<String> = msg
            .paths()
            .filter_map(Result::ok)
            .map(|p| p.uri.to_owned())
            .collect();
        let allow = msg.get_all(HeaderName::Allow).collect::<Vec<_>>().join(",");
        let user_agent = msg.user_agent().unwrap_or_default().to_owned();
        let meta = |u: &ContactUpdate<'_>| {
            let params = limes_sip::params::Params::new(u.params);
            let push = Uri::parse(u.uri).ok().and_then(|uri| {
                PushParams::from_uri(&uri).map(|p| Push {
                    provider: p.provider.to_owned(),
                    prid: p.prid.map(str::to_owned),
                    param: p.param.map(str::to_owned),
                })
            });
            Meta {
                received: flow.remote,
                transport: flow.transport,
                socket: flow.local,
                path: paths.clone(),
                user_agent: user_agent.clone(),
                methods: params
                    .get_unquoted("methods")
                    .map_or_else(|| allow.clone(), str::to_owned),
                instance: params.get_unquoted("+sip.instance").map(str::to_owned),
                reg_id: params.get("reg-id").flatten().and_then(|v| v.parse().ok()),
                push,
                updated: unix,
            }
        };
        match location.register(&aor, &req, unix, meta) {
            Ok(contacts) => {
                let date = http_date(unix);
                let path = paths.join(", ");
                let mut extra: Vec<(&str, &str)> =
                    contacts.iter().map(|c| ("Contact", c.as_str())).collect();
                if !paths.is_empty() && msg.has_option_tag(HeaderName::Supported, "path") {
                    extra.push(("Path", &path));
                }
                extra.push(("Date", &date));
                self.reply_stateless(msg, flow, 200, "OK", &extra);
            }
            Err(LocationError::Refused(r)) => {
                self.refuse_register(msg, flow, r.status, r.reason, r.min_expires)
            }
            Err(LocationError::Full(n)) => {
                warn!(aors = n, "location table full, REGISTER refused");
                self.count_registration("refused");
                self.reply_stateless(
                    msg,
                    flow,
                    503,
                    "Service Unavailable: location table full",
                    &[("Retry-After", "60")],
                );
            }
            Err(LocationError::Journal(e)) => {
                error!(error = %e, aor = %aor, "location journal write failed, REGISTER refused");
                location.metrics.journal_errors.inc();
                self.count_registration("error");
                self.reply_stateless(
                    msg,
                    flow,
                    500,
                    "Server Internal Error: state not saved",
                    &[],
                );
            }
        }
    }

    fn count_registration(&self, result: &'static str) {
        self.edge
            .location
            .metrics
            .registrations
            .get_or_create(&crate::registrar::ResultLabels { result })
            .inc();
    }

    fn refuse_register(
        &self,
        msg: &Message,
        flow: &Flow,
        status: u16,
        reason: &str,
        min: Option<u32>,
    ) {
        self.count_registration("refused");
        let min = min.map(|m| m.to_string());
        let extra: Vec<(&str, &str)> = min.iter().map(|m| ("Min-Expires", m.as_str())).collect();
        self.reply_stateless(msg, flow, status, reason, &extra);
    }

    /// Targets for an initial request with no Route set: authentication first, then the
    /// location service, then the next hops. `None` when the request was answered.
    pub(super) fn initial_targets(
        &self,
        msg: &Message,
        flow: &Flow,
        now: Instant,
    ) -> Option<Initial> {
        let peer = self.classify(msg, flow);
        let mut authenticated = false;
        let mut origin = Origin {
            source: source_of(&peer),
            caller: user_of(msg.from()),
            call_limit: None,
            attrs: Default::default(),
        };
        if peer == Peer::Unknown && self.edge.auth.settings().challenge_requests {
            let sub = self.authenticate(msg, flow, now, Kind::Proxy, &origin.caller)?;
            origin.caller.clone_from(&sub.user);
            origin.call_limit = sub.call_limit;
            origin.attrs.clone_from(&sub.attrs);
            authenticated = true;
        }
        let done = |targets| {
            Some(Initial {
                targets,
                authenticated,
                origin,
            })
        };
        let ruri = msg.request_uri().and_then(Result::ok)?;
        let ours = self.edge.serves(ruri.host, &self.local);
        // With nobody registered (a pure proxy) the AoR is not even built.
        if ours && !self.edge.location.is_empty() {
            let contacts = self.edge.location.lookup(&self.edge.aor(&ruri), unix_now());
            // Highest q first; each q value is a group tried after the one before has
            // failed (serial forking), equal q values in parallel.
            let mut group = 0u16;
            let mut last_q = None;
            let targets: Vec<Route> = contacts
                .into_iter()
                .filter_map(|c| {
                    let q = c.q.unwrap_or(1000);
                    if last_q.is_some_and(|l| l != q) {
                        group += 1;
                    }
                    last_q = Some(q);
                    let (dest, preload) = match c.meta.path.first() {
                        Some(first) => (
                            Uri::parse(first).ok().and_then(|u| dest_of_uri(&u))?,
                            c.meta.path.clone(),
                        ),
                        None => (self.flow_dest(&c.meta, &c.contact)?, Vec::new()),
                    };
                    Some(Route {
                        dest,
                        strict: None,
                        ruri: Some(c.contact),
                        preload,
                        group,
                    })
                })
                .collect();
            if !targets.is_empty() {
                return done(targets);
            }
        }
        if matches!(peer, Peer::Carrier { .. })
            || self.is_next_hop(flow)
            || self.next_hops.load().is_empty()
        {
            let reason = if ours {
                "User Not Registered"
            } else {
                "Not Found"
            };
            self.reply_local(msg, flow, now, 404, reason, &[]);
            return None;
        }
        let hops = self
            .next_hops
            .load()
            .iter()
            .map(|t| Route::to(t.dest))
            .collect();
        done(hops)
    }

    /// Where a binding is reached: the flow its REGISTER came on (the connection, if it is
    /// still open; the source address for UDP, RFC 3581), else its Contact's address.
    fn flow_dest(&self, meta: &Meta, contact: &str) -> Option<Dest> {
        let via_flow = Dest {
            transport: meta.transport,
            addr: meta.received,
        };
        match meta.transport {
            Transport::Udp => Some(via_flow),
            Transport::Tcp if self.out.has_tcp(meta.received) => Some(via_flow),
            Transport::Tcp => Uri::parse(contact).ok().and_then(|u| dest_of_uri(&u)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates() {
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(http_date(1_795_987_845), "Sun, 29 Nov 2026 21:30:45 GMT");
    }

    #[test]
    fn aors() {
        // (uri, use_domain, aor)
        let cases = [
            (
                "sip:Alice@Example.COM:5060;transport=tcp",
                true,
                "Alice@example.com",
            ),
            ("sip:Alice@Example.COM:5060;transport=tcp", false, "Alice"),
            ("sip:example.com", true, "example.com"),
            ("tel:+4930123456", true, "+4930123456"),
        ];
        for (uri, use_domain, aor) in cases {
            assert_eq!(aor_of(&Uri::parse(uri).expect("uri"), use_domain), aor);
        }
    }
}
