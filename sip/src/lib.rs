//! `limes-sip` is the sans-IO SIP core of Limes: framing, zero-copy parsing, typed header
//! views, message building and forwarding edits, sanity rules, digest authentication, the
//! RFC 3261 transaction state machines and the dialog state machine. Every decision here is
//! a pure function of (state, input, now); the crate has no socket, no clock and no runtime.
//!
//! # Layout
//! Follow one INVITE through the crate:
//! - [`framing::check`] cuts a message out of a TCP stream (Content-Length); a UDP datagram
//!   is one message.
//! - [`Message::parse`] indexes the start line and header fields ([`message`]), recording
//!   [`Defect`]s that still allow an answer; [`limits::Limits`] bounds every step.
//! - Typed views borrow from the message: [`via::Via`], [`addr::NameAddr`] (From, To,
//!   Contact, Route, Record-Route, Path), [`cseq::CSeq`], [`uri::Uri`], [`params::Params`].
//! - [`sanity::check_request`] maps each defect to the RFC's answer (400 with a reason,
//!   416, 420, 483, 505, 513); [`sanity::check_response`] says whether a response is fit
//!   to forward.
//! - [`transaction::TxKey`] names the transaction (RFC 3261 §17.1.3, §17.2.3 and the RFC
//!   2543 fallback); [`transaction`] holds the four state machines with timers A-M.
//! - [`proxy::Context`] is the §16 response context: the server transaction and the client
//!   transaction of each branch, forking, Timer C, CANCEL and the best response (§16.7),
//!   reporting what happened as events for the caller's policy.
//! - [`digest`] challenges and verifies (server) or answers (client) RFC 7616/8760 digest.
//! - [`build`] writes responses (§8.2.6), new requests (REGISTER, BYE, CANCEL, ACK,
//!   OPTIONS) and the forwarding edit that rewrites only what changes.
//! - [`registrar`] reads a REGISTER and applies it to an AoR's bindings (§10.3).
//! - [`dialog`] follows a dialog from early to terminated and translates CSeq numbers
//!   after an upstream authentication retry.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod addr;
pub mod build;
pub mod cseq;
pub mod dialog;
pub mod digest;
pub mod error;
pub mod framing;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod header;
pub mod limits;
pub mod locate;
pub mod message;
pub mod method;
pub mod params;
pub mod proxy;
pub mod registrar;
pub mod sanity;
mod text;
pub mod transaction;
pub mod uri;
pub mod via;

pub use error::{Defect, ParseError};
pub use header::HeaderName;
pub use limits::Limits;
pub use message::Message;
pub use method::Method;
