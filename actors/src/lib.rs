//! `limes-actors` is the I/O shell around `limes-sip`: the transports, the
//! transaction-stateful proxy and its edge (registrar, digest authentication, location
//! lookup), dialog tracking (profiles, limits, CDRs, dialog actors), the live tables, the
//! flood guard and the metrics. Protocol decisions stay
//! in `limes-sip`; this crate feeds them inputs, sends their outputs and arms their timers.
//!
//! # Layout
//! One INVITE from socket to socket:
//! - [`udp`] worker threads (`recvmmsg`, or a [`tcp`] connection task, after Content-Length
//!   framing) receive the bytes and call [`proxy::Proxy::handle`] on the same thread.
//! - [`proxy`] drives `limes_sip::proxy`: it checks the [`flood`] guard, matches
//!   retransmissions to their context, applies the sanity rules, asks
//!   `limes_sip::proxy::route` where the request goes (for an initial request
//!   [`proxy::edge`]: [`tables`] classify the source, [`auth`] challenges it statelessly,
//!   REGISTER goes to the [`registrar`], the AoR's bindings or the next hops are the
//!   targets), and puts a context with one branch per target into the sharded table
//!   (inserted only if no other thread did first); shards are locked only while deciding,
//!   never while sending. [`proxy::own`] sends requests of the node's own.
//! - [`transport::Outbound`] sends: straight on the UDP socket, or through a TCP
//!   connection's bounded queue.
//! - Responses come back the same way, are matched by the branch this node wrote, and go
//!   upstream through the server transaction; the timer thread calls
//!   [`proxy::Proxy::run_timers`].
//! - A dialog-creating INVITE is admitted by [`dialogs`] first (profiles joined, limits
//!   checked in one atomic step); the call follows its responses and in-dialog requests on
//!   the receiving thread, and a `DialogActor` per call (on its own thread) owns its
//!   timers and the node's BYEs; every end writes one CDR.
//! - [`metrics`] registers every family once; the transaction census is computed when
//!   Prometheus scrapes.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod auth;
pub mod dialogs;
pub mod flood;
pub mod groups;
pub mod metrics;
pub mod policy;
pub mod proxy;
pub mod registrar;
pub mod settings;
pub mod tables;
pub mod tcp;
pub mod transport;
pub mod trunks;
pub mod udp;
