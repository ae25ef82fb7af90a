//! The RFC 3261 §16 proxy core as a sans-IO machine: one [`Context`] per request a proxy
//! forwards (the "response context" of §16), or per request the node sends of its own.
//!
//! A context is driven like the transaction machines, in the shape of quinn-proto: the
//! caller feeds inputs (`handle_response`, `handle_request`, `handle_ack`, `handle_cancel`,
//! `handle_timeout`, `handle_transport_error`), adds branches (`add_branch`), and decides
//! what policy decides (`hold`, `release`, `respond`, `wait_until`); then it drains the
//! outputs: every [`Transmit`] from `poll_transmit` (where it goes and the bytes), every
//! [`Event`] from `poll_event`, and one timer from `poll_timeout`.
//!
//! What the context decides itself, each rule a row of `proxy/tests.rs`:
//! - §16.2: an INVITE is answered 100 Trying at once.
//! - §16.7: provisional responses other than 100 go upstream at once (step 5); every 2xx
//!   goes upstream at once (step 5, RFC 6026) and cancels the other branches (step 10); a
//!   6xx cancels them too (step 9); failures wait until every branch has a final response,
//!   then the best one goes (step 6: a 6xx, else the lowest class, 401/407/415/420/484
//!   first within 4xx, a 503 sent as 500), carrying the challenges of every 401 and 407
//!   received (step 7).
//! - §16.8: Timer C cancels a branch that rang too long, and abandons one that never
//!   answered, as a 408.
//! - §16.10: a CANCEL cancels every pending branch; a branch with no provisional response
//!   yet is cancelled when its first one arrives (§9.1).
//!
//! Before a context exists, [`route`] decides where a received request goes: loop
//! detection (§16.3), Route processing (§16.4), the next hop of a Route set or a dialog
//! (§16.6 steps 6-7), or the policy's targets for an initial request; and where a
//! response with no transaction goes (§16.7 step 10).
//!
//! What the caller decides, fed back as inputs: the targets and the forwarded copies of the
//! request (built with [`crate::build::Forward`]), whether more targets may follow when
//! every branch has failed ([`Context::hold`]: serial forking, failover, a retry with
//! credentials; [`Event::Exhausted`] tells it when), a response of its own choice
//! ([`Context::respond`]), and how long a context may wait with no branch at all
//! ([`Context::wait_until`]: a call suspended until a device registers).

mod context;
pub mod route;
mod select;
#[cfg(test)]
mod tests;

pub use context::{local_tag, BranchError, Context, ContextConfig, Event, ReplyTo, Transmit};
pub use select::{rank, upstream_status};
