//! `limes-actors` is the I/O shell around `limes-sip`: the transports, the
//! transaction-stateful proxy and its edge (registrar, digest authentication, location
//! lookup), the live tables, the flood guard and the metrics. Protocol decisions stay
//! in `limes-sip`; this crate feeds them inputs, sends their outputs and arms their timers.
//!
//! # Layout
//! One INVITE from socket to socket:
//! - [`udp`] worker threads (or a [`tcp`] connection task, after Content-Length framing)
//!   receive the bytes and call [`proxy::Proxy::handle`] on the same thread.
//! - [`proxy`] checks the [`flood`] guard, matches retransmissions to their transaction,
//!   applies the sanity rules, decides the target (the route set of a dialog; for an
//!   initial request [`proxy::edge`]: [`tables`] classify the source, [`auth`] challenges
//!   it, REGISTER goes to the [`registrar`], the AoR's bindings or the next hops are the
//!   branches), and starts one client transaction per branch; shards of the transaction
//!   table are locked only while deciding, never while sending.
//! - [`transport::Outbound`] sends: straight on the UDP socket, or through a TCP
//!   connection's bounded queue.
//! - Responses come back the same way, are matched by the branch this node wrote, and go
//!   upstream through the server transaction; the timer thread calls
//!   [`proxy::Proxy::run_timers`].
//! - [`metrics`] registers every family once; the transaction census is computed when
//!   Prometheus scrapes.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod auth;
pub mod flood;
pub mod metrics;
pub mod proxy;
pub mod registrar;
pub mod settings;
pub mod tables;
pub mod tcp;
pub mod transport;
pub mod udp;
