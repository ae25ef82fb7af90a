//! `limes-cluster` keeps the state Limes nodes must not lose: registrations and the
//! tables changed at run time. This version is the embedded store of a single node: every
//! change is appended to a journal in the state directory before it is acknowledged, and
//! the journal is compacted into a snapshot in the background, so state survives a restart
//! and a crash of the process.
//!
//! # Layout
//! - [`journal::Journal`]: an append-only log of `put`/`delete` records of string keys and
//!   JSON values, replayed at start, rotated and compacted while the node runs.
//! - [`secret::NodeSecret`]: the node secret, configured or generated once into the state
//!   directory, from which every key a peer's echo is checked with is derived.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod journal;
pub mod secret;

pub use journal::{Journal, Loaded, Record};
pub use secret::{NodeSecret, SecretSource};
