//! Requests the node sends of its own: a context of `limes_sip::proxy` with no server
//! transaction, whose responses and timeouts end as one [`Outcome`] handed to whoever
//! started it. `sip.ping` (OPTIONS) is the first user; BYEs of the node, outbound
//! registration and retries with credentials follow on the same path.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use limes_sip::build::NewRequest;
use limes_sip::proxy::{local_tag, Context};
use limes_sip::uri::Uri;
use limes_sip::{Message, Method};

use super::entry::Entry;
use super::local::host_text;
use super::Proxy;
use crate::dialogs::actor::Ender;
use crate::dialogs::cdr::EndedBy;
use crate::dialogs::{Call, Sides};
use crate::transport::{dest_of_uri, Dest};
use tracing::warn;

/// How a request of the node's own ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The final status; 408 with no response when nothing answered in time, 503 when the
    /// transport failed.
    pub status: u16,
    pub response: Option<Message>,
    /// From sending to the final response.
    pub elapsed: Duration,
}

impl Outcome {
    pub fn reason(&self) -> &str {
        match &self.response {
            Some(r) => r.reason().unwrap_or_default(),
            None if self.status == 408 => "no answer",
            None => "transport failure",
        }
    }
}

/// Who waits for the outcome.
pub struct Waiter {
    pub done: SyncSender<Outcome>,
    pub started: Instant,
}

#[derive(Debug, thiserror::Error)]
pub enum OriginateError {
    #[error("{0}: not a SIP URI")]
    BadUri(String),
    #[error("{0}: needs an IP address host and a UDP or TCP transport")]
    Unreachable(String),
    #[error("no local socket for that address family and transport")]
    NoSocket,
    #[error("transaction table full")]
    Full,
}

/// A request of the node's own inside a dialog: the BYE it ends a call with.
#[derive(Debug, Clone)]
pub struct InDialog<'a> {
    pub method: Method,
    /// The remote target (the side's Contact).
    pub uri: &'a str,
    pub from: &'a str,
    pub to: &'a str,
    pub call_id: &'a str,
    pub cseq: u32,
    pub route: &'a [&'a str],
    /// Where it is sent: the first Route's address, or the side's flow or Contact.
    pub dest: Dest,
    pub extra: &'a [(&'a str, &'a str)],
}

impl Proxy {
    /// Sends `method` to `uri` (an IP address host; UDP, or TCP with `;transport=tcp`,
    /// reusing an open connection) as a request of the node's own. Its outcome is sent to
    /// `done` once: the final response, or 408 when none came within `timeout`.
    pub fn originate(
        &self,
        method: Method,
        uri: &str,
        timeout: Duration,
        done: SyncSender<Outcome>,
    ) -> Result<(), OriginateError> {
        let parsed = Uri::parse(uri).map_err(|_| OriginateError::BadUri(uri.to_owned()))?;
        // A host name must have been located already (the DNS cache is only read here).
        let dest = dest_of_uri(&parsed)
            .or_else(|| {
                let target = limes_sip::locate::Target::of(&parsed).ok()?;
                self.edge.dns.peek(&target)?.first().copied()
            })
            .ok_or_else(|| OriginateError::Unreachable(uri.to_owned()))?;
        self.start_own(&method, dest, timeout, done, |sid, out_addr, via| {
            let host = host_text(out_addr.ip());
            let from = format!(
                "<sip:limes@{host}:{}>;tag={}",
                out_addr.port(),
                local_tag(sid)
            );
            NewRequest {
                method: method.clone(),
                uri,
                via,
                from: &from,
                to: &format!("<{uri}>"),
                call_id: &format!("{sid:016x}@{host}"),
                cseq: 1,
                max_forwards: 70,
                route: &[],
                contact: None,
                extra: &[("User-Agent", &self.settings.server_name)],
                body: None,
            }
            .build()
        })
    }

    /// Sends a request of the node's own inside a dialog; its outcome goes to `done`.
    pub fn send_in_dialog(
        &self,
        req: &InDialog<'_>,
        timeout: Duration,
        done: SyncSender<Outcome>,
    ) -> Result<(), OriginateError> {
        self.start_own(&req.method, req.dest, timeout, done, |_, _, via| {
            let mut extra = vec![("User-Agent", self.settings.server_name.as_str())];
            extra.extend_from_slice(req.extra);
            NewRequest {
                method: req.method.clone(),
                uri: req.uri,
                via,
                from: req.from,
                to: req.to,
                call_id: req.call_id,
                cseq: req.cseq,
                max_forwards: 70,
                route: req.route,
                contact: None,
                extra: &extra,
                body: None,
            }
            .build()
        })
    }

    /// Puts a context of the node's own in the table with one branch to `dest`; `build`
    /// writes the request from the context id, the local address and the Via.
    fn start_own(
        &self,
        method: &Method,
        dest: Dest,
        timeout: Duration,
        done: SyncSender<Outcome>,
        build: impl FnOnce(u64, SocketAddr, &str) -> Bytes,
    ) -> Result<(), OriginateError> {
        let out_addr = self.out.local_for(&dest).ok_or(OriginateError::NoSocket)?;
        if self.active() >= self.settings.max_transactions {
            return Err(OriginateError::Full);
        }
        let now = Instant::now();
        let n = self.own_requests.fetch_add(1, Ordering::Relaxed);
        let sid = self.local.hash(&[b"own", &n.to_be_bytes()]);
        let via = self.local.via(dest.transport, out_addr, (0, sid, 0), true);
        let bytes = build(sid, out_addr, &via);
        let mut ctx = Context::originate(sid, method, self.contexts);
        ctx.wait_until(now + timeout);
        ctx.add_branch(now, dest, dest.transport.is_reliable(), bytes)
            .map_err(|_| OriginateError::Full)?;
        let entry = Entry {
            key: None,
            ctx,
            scheduled: None,
            later: None,
            waiter: Some(Box::new(Waiter { done, started: now })),
            dialog: None,
        };
        self.metrics.originated(method);
        self.insert(sid, entry, now);
        Ok(())
    }

    /// BYE to both sides of a confirmed dialog (RFC 3261 §15.1.1), each with the Reason of
    /// RFC 3326 and the route set that side's requests take from this node.
    fn bye_both(&self, call: &Call, sides: &Sides, by: EndedBy) {
        let reason = match by {
            EndedBy::Timeout => "SIP;cause=408;text=\"dialog lifetime reached\"",
            EndedBy::SessionExpired => "SIP;cause=408;text=\"session expired without refresh\"",
            EndedBy::Shutdown => "SIP;cause=503;text=\"node shutting down\"",
            EndedBy::ActorFailure => "SIP;cause=500;text=\"dialog state lost\"",
            _ => "Q.850;cause=16;text=\"ended by operator\"",
        };
        let ours = |rr: &String| {
            limes_sip::addr::NameAddr::parse(rr)
                .ok()
                .and_then(|a| Uri::parse(a.uri).ok())
                .is_some_and(|u| self.local.uri_is_us(&u))
        };
        let rr = &sides.record_route;
        let first_ours = rr.iter().position(ours).unwrap_or(rr.len());
        let last_ours = rr.iter().rposition(ours).map_or(0, |i| i + 1);
        let to_callee: Vec<&str> = rr[..first_ours].iter().rev().map(String::as_str).collect();
        let to_caller: Vec<&str> = rr[last_ours.min(rr.len())..]
            .iter()
            .map(String::as_str)
            .collect();
        let first_hop = |route: &[&str], target: &str| {
            let uri = route.first().copied().unwrap_or(target);
            let uri = limes_sip::addr::NameAddr::parse(uri).map_or(uri, |a| a.uri);
            Uri::parse(uri).ok().and_then(|u| dest_of_uri(&u))
        };
        let callee_to = format!("{};tag={}", call.to, sides.callee_tag);
        let extra = [("Reason", reason)];
        let legs = [
            (
                first_hop(&to_callee, &sides.callee_contact),
                sides.callee_contact.as_str(),
                call.from.as_str(),
                callee_to.as_str(),
                &to_callee,
                true,
            ),
            (
                if to_caller.is_empty() {
                    Some(call.caller_dest)
                } else {
                    first_hop(&to_caller, &call.caller_contact)
                },
                call.caller_contact.as_str(),
                callee_to.as_str(),
                call.from.as_str(),
                &to_caller,
                false,
            ),
        ];
        for (dest, uri, from, to, route, towards_callee) in legs {
            let Some(dest) = dest else {
                warn!(call_id = %call.call_id, callee = towards_callee, "no address to send the BYE to");
                continue;
            };
            let (done, _) = std::sync::mpsc::sync_channel(1);
            let req = InDialog {
                method: Method::Bye,
                uri,
                from,
                to,
                call_id: &call.call_id,
                cseq: call.next_cseq(towards_callee),
                route,
                dest,
                extra: &extra,
            };
            if let Err(e) = self.send_in_dialog(&req, Duration::from_secs(32), done) {
                warn!(call_id = %call.call_id, error = %e, "BYE not sent");
            }
        }
    }
}

impl Ender for Proxy {
    fn end_call(&self, call: &Arc<Call>, by: EndedBy) {
        if let Some(sides) = call.sides() {
            self.bye_both(call, &sides, by);
        }
        self.dialogs.finish(call, by);
    }
}
