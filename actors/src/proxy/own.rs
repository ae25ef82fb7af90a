//! Requests the node sends of its own: a context of `limes_sip::proxy` with no server
//! transaction, whose responses and timeouts end as one [`Outcome`] handed to whoever
//! started it. `sip.ping` (OPTIONS) is the first user; BYEs of the node, outbound
//! registration and retries with credentials follow on the same path.

use std::sync::atomic::Ordering;
use std::sync::mpsc::SyncSender;
use std::time::{Duration, Instant};

use limes_sip::build::NewRequest;
use limes_sip::proxy::route;
use limes_sip::proxy::{local_tag, Context};
use limes_sip::uri::Uri;
use limes_sip::{Message, Method};

use super::entry::Entry;
use super::local::{self, host_text};
use super::Proxy;
use crate::transport::dest_of_uri;

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
        let dest =
            dest_of_uri(&parsed).ok_or_else(|| OriginateError::Unreachable(uri.to_owned()))?;
        let out_addr = self.out.local_for(&dest).ok_or(OriginateError::NoSocket)?;
        if self.active() >= self.settings.max_transactions {
            return Err(OriginateError::Full);
        }
        let now = Instant::now();
        let n = self.own_requests.fetch_add(1, Ordering::Relaxed);
        let sid = self.local.hash(&[b"own", &n.to_be_bytes()]);
        let host = host_text(out_addr.ip());
        let via = local::via(dest.transport, out_addr, &route::branch(0, sid, 0), true);
        let from = format!(
            "<sip:limes@{host}:{}>;tag={}",
            out_addr.port(),
            local_tag(sid)
        );
        let to = format!("<{uri}>");
        let call_id = format!("{sid:016x}@{host}");
        let bytes = NewRequest {
            method: method.clone(),
            uri,
            via: &via,
            from: &from,
            to: &to,
            call_id: &call_id,
            cseq: 1,
            max_forwards: 70,
            route: &[],
            contact: None,
            extra: &[("User-Agent", &self.settings.server_name)],
            body: None,
        }
        .build();
        let mut ctx = Context::originate(sid, &method, self.contexts);
        ctx.wait_until(now + timeout);
        ctx.add_branch(now, dest, dest.transport.is_reliable(), bytes)
            .map_err(|_| OriginateError::BadUri(uri.to_owned()))?;
        let entry = Entry {
            key: None,
            ctx,
            scheduled: None,
            later: None,
            waiter: Some(Box::new(Waiter { done, started: now })),
        };
        self.metrics.originated(&method);
        self.insert(sid, entry, now);
        Ok(())
    }
}
