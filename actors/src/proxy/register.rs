//! The registrar's side of the edge (RFC 3261 §10.3): a REGISTER for a domain this node
//! serves is challenged (or let in by a register rule), its bindings are stored, and the
//! 200 lists the Contacts.

use std::time::Instant;

use limes_sip::addr::PushParams;
use limes_sip::registrar::{ContactUpdate, Register};
use limes_sip::uri::Uri;
use limes_sip::{HeaderName, Message};
use tracing::{debug, error, warn};

use super::edge::{http_date, unix_now};
use super::Proxy;
use crate::auth::Kind;
use crate::policy::Facts;
use crate::registrar::{LocationError, Meta, Push};
use crate::transport::Flow;

impl Proxy {
    /// A REGISTER for a domain this node serves (RFC 3261 §10.3).
    pub(super) fn on_register(&self, msg: &Message, flow: &Flow, now: Instant) {
        let Some(Ok(to)) = msg.to_uri() else {
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
        // Only a register rule naming the source's address group and the AoR lets a
        // REGISTER in unchallenged (a PBX registering its own users).
        let user = to.user.unwrap_or_default();
        if !self.register_exempt(msg, flow, user, to.host)
            && self.authenticate(msg, flow, now, Kind::Www, user).is_none()
        {
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
        let node = location.node_name();
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
                node: node.map(str::to_owned),
            }
        };
        let outcome = location.register(&aor, &req, unix, meta);
        debug!(
            call_id = msg.call_id().unwrap_or_default(),
            source = %flow.remote,
            %aor,
            result = match &outcome {
                Ok(_) => "200",
                Err(LocationError::Refused(r)) => r.reason,
                Err(LocationError::Full(_)) => "503: location table full",
                Err(LocationError::Journal(_)) => "500: journal write failed",
            },
            "REGISTER answered"
        );
        match outcome {
            Ok(contacts) => {
                let date = http_date(unix);
                let path = paths.join(", ");
                let mut extra: Vec<(&str, &str)> =
                    contacts.iter().map(|c| ("Contact", c.as_str())).collect();
                if !paths.is_empty() && msg.has_option_tag(HeaderName::Supported, "path") {
                    extra.push(("Path", &path));
                }
                extra.push(("Date", &date));
                // In a cluster the 200 waits until every node can read the binding
                // (bounded by the store's deadline); this thread does not.
                let (dest, ok) = self.stateless_response(msg, flow, 200, "OK", &extra);
                let out = self.out.clone();
                location.when_shared(Box::new(move |_| {
                    let _ = out.send(&dest, ok);
                }));
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

    /// Whether a register rule lets this REGISTER (To user and host) in unchallenged;
    /// the rule is counted in `limes_route_decisions_total`.
    fn register_exempt(&self, msg: &Message, flow: &Flow, user: &str, host: &str) -> bool {
        let policy = self.edge.policy.load();
        if !policy.has_register_rules() {
            return false;
        }
        let (groups, _) = self.source_of(msg, flow);
        if groups.is_empty() {
            return false;
        }
        let facts = Facts {
            method: &limes_sip::Method::Register,
            user,
            domain: host,
            local_domain: true,
            groups: &groups,
            trusted: false,
            authenticated: false,
        };
        let Some(rule) = policy.register_exempt(&facts) else {
            return false;
        };
        debug!(rule = %rule.def.name, remote = %flow.remote, %user, "REGISTER accepted by a register rule");
        rule.decided.inc();
        true
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
}
