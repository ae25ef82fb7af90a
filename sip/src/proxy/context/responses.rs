//! §16.7 for one response context: what a branch's responses and failures do upstream
//! (provisional responses and 2xx forwarded at once, the best final response chosen when
//! every branch has ended) and the CANCEL sent to the branches still pending (§16.7 step
//! 10, §9.1).

use std::time::Instant;

use bytes::Bytes;

use super::{local_tag, Best, ClientTx, Context, Event, Kind, Upstream};
use crate::build::{cancel_for, Forward, Response};
use crate::proxy::select;
use crate::transaction::{ClientNonInviteTx, ServerInput};
use crate::{HeaderName, Message};

impl<D: Copy> Context<D> {
    /// §16.7: a response the branch's client transaction passed up.
    pub(super) fn on_branch_response(&mut self, now: Instant, i: usize, msg: &Message) {
        let status = msg.status().unwrap_or(0);
        let timer_c = self.config.timers.timer_c;
        let b = &mut self.branches[i];
        if status < 200 {
            b.provisional = true;
            // §16.7 step 2 (Timer C): a provisional response restarts it.
            if b.timer_c.is_some() && b.cancel.is_none() {
                b.timer_c = Some(now + timer_c);
            }
            let owed = std::mem::take(&mut b.cancel_pending);
            self.events
                .push_back(Event::Provisional { branch: i, status });
            if self.kind == Kind::Invite && status > 100 && msg.to_tag().is_some() {
                self.events.push_back(Event::EarlyDialog { branch: i });
            }
            if owed {
                self.send_cancel(now, i);
            }
            // §16.7 step 5: provisional responses other than 100 go up at once.
            if status > 100 && !self.answered {
                self.forward_up(now, msg, status);
            }
            return;
        }
        let first = b.final_status.is_none();
        if first {
            b.final_status = Some(status);
        }
        if status < 300 {
            if first {
                self.events.push_back(Event::Answered { branch: i, status });
                match self.kind {
                    Kind::Invite => self
                        .events
                        .push_back(Event::DialogEstablished { branch: i }),
                    Kind::Bye => self.events.push_back(Event::DialogEnded { branch: i }),
                    Kind::Other => {}
                }
            }
            // §16.7 step 5 and 10: every 2xx goes up, even after a final one; the other
            // branches are cancelled.
            self.closed = true;
            self.held = false;
            if matches!(self.upstream, Upstream::Node) {
                if !self.answered {
                    self.answered = true;
                    self.events.push_back(Event::Completed {
                        status,
                        response: Some(Box::new(msg.clone())),
                    });
                }
            } else if self.answered {
                self.forward_up(now, msg, status);
            } else {
                let bytes = Forward::new(msg).pop_via().finish();
                self.send_final(now, status, bytes, false);
            }
            self.cancel_branches(now, Some(i));
            return;
        }
        if !first {
            return;
        }
        if matches!(status, 401 | 407) {
            let name = if status == 401 {
                HeaderName::WwwAuthenticate
            } else {
                HeaderName::ProxyAuthenticate
            };
            b.challenges = msg.get_all(name).map(|v| (name, v.to_owned())).collect();
            self.events
                .push_back(Event::Challenged { branch: i, status });
        } else {
            self.events
                .push_back(Event::BranchFailed { branch: i, status });
        }
        self.consider(Some(i), status, Some(msg));
        // §16.7 step 9: a 6xx ends the search; the other branches are cancelled.
        if status >= 600 {
            self.closed = true;
            self.held = false;
            self.cancel_branches(now, Some(i));
        }
        self.complete_if_done(now);
    }

    /// A branch ended without a response (timeout, transport error, Timer C): it counts as
    /// that failure (§16.7 step 2, §16.8).
    pub(super) fn branch_failed(&mut self, now: Instant, i: usize, status: u16) {
        let Some(b) = self.branches.get_mut(i) else {
            return;
        };
        if b.final_status.is_some() {
            return;
        }
        b.final_status = Some(status);
        self.events
            .push_back(Event::BranchFailed { branch: i, status });
        self.consider(Some(i), status, None);
        self.complete_if_done(now);
    }

    /// §16.7 step 6: keeps the better of the best so far and this failure.
    fn consider(&mut self, branch: Option<usize>, status: u16, response: Option<&Message>) {
        if self
            .best
            .as_ref()
            .is_none_or(|b| select::rank(status) < select::rank(b.status))
        {
            self.best = Some(Box::new(Best {
                branch,
                status,
                response: response.cloned(),
            }));
        }
    }

    /// When every branch has a final response and none was a 2xx: report exhaustion to a
    /// holding caller, or send the best response.
    pub(super) fn complete_if_done(&mut self, now: Instant) {
        if self.answered || self.branches.iter().any(|b| b.final_status.is_none()) {
            return;
        }
        if self.branches.is_empty() && self.wait_until.is_some() && !self.closed {
            return; // waits for its first branch
        }
        if self.held && !self.closed {
            if !self.exhausted_reported {
                self.exhausted_reported = true;
                let best = self.best.as_ref().map_or(408, |b| b.status);
                self.events.push_back(Event::Exhausted { best });
            }
            return;
        }
        self.send_best_or(now, 408, "Request Timeout");
    }

    /// Sends the best failure upstream (§16.7 steps 6 and 7), or `status` when no branch
    /// gave one.
    pub(super) fn send_best_or(&mut self, now: Instant, status: u16, reason: &str) {
        if self.answered {
            return;
        }
        let best = self.best.take().map(|b| *b);
        if matches!(self.upstream, Upstream::Node) {
            self.answered = true;
            let (status, response) = best.map_or((status, None), |b| (b.status, b.response));
            self.events.push_back(Event::Completed {
                status,
                response: response.map(Box::new),
            });
            return;
        }
        let (bytes, status, local) = match best {
            Some(Best {
                branch,
                status,
                response: Some(r),
            }) => {
                let up = select::upstream_status(status);
                let mut fwd = Forward::new(&r).pop_via();
                if up != status {
                    fwd = fwd.status(up, "Server Internal Error");
                }
                // Step 7: a 401 or 407 carries the challenges of every 401 and 407.
                let others: Vec<(&str, &str)> = if matches!(up, 401 | 407) {
                    self.branches
                        .iter()
                        .enumerate()
                        .filter(|(j, _)| Some(*j) != branch)
                        .flat_map(|(_, b)| b.challenges.iter())
                        .map(|(n, v)| (n.as_str(), v.as_str()))
                        .collect()
                } else {
                    Vec::new()
                };
                for (n, v) in others {
                    fwd = fwd.add_header(n, v);
                }
                (fwd.finish(), up, false)
            }
            Some(Best {
                status,
                response: None,
                ..
            }) => {
                let status = select::upstream_status(status);
                let Some(bytes) = self.local_response(status, crate::build::default_reason(status))
                else {
                    return;
                };
                (bytes, status, true)
            }
            None => {
                let Some(bytes) = self.local_response(status, reason) else {
                    return;
                };
                (bytes, status, true)
            }
        };
        self.send_final(now, status, bytes, local);
    }

    fn local_response(&self, status: u16, reason: &str) -> Option<Bytes> {
        let req = self.request()?;
        let tag = local_tag(self.id);
        Some(Response::to(req, status, reason, Some(&tag)).finish())
    }

    /// Forwards a response upstream: provisional, or a 2xx after the final one.
    fn forward_up(&mut self, now: Instant, msg: &Message, status: u16) {
        if matches!(self.upstream, Upstream::Node) {
            return;
        }
        let bytes = Forward::new(msg).pop_via().finish();
        self.events.push_back(Event::Upstream {
            status,
            local: false,
        });
        self.server_input(now, ServerInput::Respond { status, bytes });
    }

    /// Sends the final response upstream through the server transaction.
    pub(super) fn send_final(&mut self, now: Instant, status: u16, bytes: Bytes, local: bool) {
        self.answered = true;
        self.best = None;
        if let Upstream::Server { request, .. } = &mut self.upstream {
            *request = None;
        }
        self.events.push_back(Event::Upstream { status, local });
        self.events.push_back(Event::Final { status });
        self.server_input(now, ServerInput::Respond { status, bytes });
    }

    /// CANCELs every branch without a final response except `except` (§16.10, §16.7
    /// step 10); branches without a provisional response get theirs when one arrives.
    pub(super) fn cancel_branches(&mut self, now: Instant, except: Option<usize>) {
        for i in 0..self.branches.len() {
            let b = &mut self.branches[i];
            if Some(i) == except || b.final_status.is_some() || b.cancel.is_some() {
                continue;
            }
            if !matches!(&b.tx, ClientTx::Invite(t) if t.has_request()) {
                continue;
            }
            if b.provisional {
                self.send_cancel(now, i);
            } else {
                b.cancel_pending = true;
            }
        }
    }

    pub(super) fn send_cancel(&mut self, now: Instant, i: usize) {
        let timers = self.config.timers;
        let b = &mut self.branches[i];
        let ClientTx::Invite(t) = &mut b.tx else {
            return;
        };
        let reliable = t.is_reliable();
        let Some(req) = t.request() else { return };
        b.cancel = Some(Box::new(ClientNonInviteTx::start(
            now,
            cancel_for(req),
            reliable,
            timers,
        )));
        // After a CANCEL the INVITE gets 64*T1 more to end (§9.1), then it is abandoned.
        b.timer_c = Some(now + timers.t1x64());
        self.drain_branch(i);
    }
}
