//! Host names on the message path: a Route, Request-URI, relay URI or trunk destination
//! that is a name is located by the node's DNS ([`crate::dns`], RFC 3263). A cached
//! location is used at once; otherwise the message waits off the receiving thread and is
//! handled again from the top once the answer is in (nothing was held for it: no
//! transaction, no dialog), so it then finds the location cached.

use std::time::Instant;

use bytes::Bytes;
use limes_sip::locate::{Target, Unresolved};
use limes_sip::uri::Uri;
use limes_sip::Message;
use smallvec::{smallvec, SmallVec};
use tracing::trace;

use super::routing::Alternatives;
use super::{Pass, Proxy, Route, Routes};
use crate::dns::Cached;
use crate::transport::{dest_of_uri, Dest, Flow};

/// The servers DNS located for one next hop, tried one after another (each its own
/// serial group), and what moves the request on between them (RFC 3263 §4.3); `strict`:
/// the next hop is a strict router, whose URI becomes the Request-URI.
pub(super) fn one_by_one(
    dests: SmallVec<[Dest; 2]>,
    strict: Option<&str>,
) -> (Routes, Option<Alternatives>) {
    let failover = (dests.len() > 1).then_some(Alternatives::Records);
    let routes = dests
        .into_iter()
        .enumerate()
        .map(|(n, dest)| Route {
            strict: strict.map(str::to_owned),
            group: n as u16,
            ..Route::to(dest)
        })
        .collect();
    (routes, failover)
}

/// Where a target leads.
pub(super) enum Located {
    /// The servers to try, in order.
    At(SmallVec<[Dest; 2]>),
    /// Being looked up: the message comes back when the answer is in.
    Waiting,
    Failed(Unresolved),
}

impl Proxy {
    /// Where `uri` leads: an IP address at once, a name from the DNS (see the module).
    pub(super) fn locate(&self, uri: &Uri<'_>, msg: &Message, flow: &Flow) -> Located {
        if let Some(dest) = dest_of_uri(uri) {
            return Located::At(smallvec![dest]);
        }
        match Target::of(uri) {
            Ok(target) => self.locate_target(&target, Some((msg, flow))),
            Err(why) => Located::Failed(why),
        }
    }

    /// Where a host-name target leads (see [`Proxy::locate`]); with no message to
    /// `wait`, a miss only starts the lookup.
    pub(super) fn locate_target(
        &self,
        target: &Target,
        wait: Option<(&Message, &Flow)>,
    ) -> Located {
        let again: crate::dns::Waiter = match wait {
            Some((msg, flow)) => {
                let me = self.me.clone();
                let data = msg.as_bytes().clone();
                let flow = *flow;
                Box::new(move || {
                    if let Some(proxy) = me.upgrade() {
                        proxy.handle_again(data, flow);
                    }
                })
            }
            None => Box::new(|| {}),
        };
        match self.edge.dns.locate(target, again) {
            Cached::Ready(dests) => Located::At(dests.iter().copied().collect()),
            Cached::Pending => {
                trace!(host = %target.host, "request waits for DNS");
                Located::Waiting
            }
            Cached::Failed(why) => Located::Failed(why),
        }
    }

    /// A message that waited for DNS, handled again past the flood guard and counters
    /// (it was counted once).
    fn handle_again(&self, data: Bytes, flow: Flow) {
        if let Ok(msg) = Message::parse(data, &self.settings.limits) {
            self.on_admitted(msg, flow, Instant::now(), Pass::Again);
        }
    }

    /// A request whose next hop cannot be located: 503, the reason counted.
    pub(super) fn unresolvable(&self, msg: &Message, flow: &Flow, now: Instant, why: Unresolved) {
        let (label, reason) = match why {
            Unresolved::ServerFailure => ("dns_failure", "Service Unavailable: DNS failure"),
            Unresolved::NoRecords => (
                "dns_no_records",
                "Service Unavailable: unresolvable destination",
            ),
            Unresolved::NoTransport => ("no_transport", "Service Unavailable: no usable transport"),
        };
        self.edge.routing.reject(label);
        self.reply_local(msg, flow, now, 503, reason, &[]);
    }
}
