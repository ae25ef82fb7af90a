//! `limes-cluster` keeps the state Limes nodes must not lose: registrations and the
//! tables changed at run time. Each node keeps its own in the embedded store: every change
//! is appended to a journal in the state directory before it is acknowledged, and the
//! journal is compacted into a snapshot in the background, so state survives a restart
//! and a crash of the process. Clustered nodes also share state through etcd.
//!
//! # Layout
//! - [`journal::Journal`]: an append-only log of `put`/`delete` records of string keys and
//!   JSON values, replayed at start, rotated and compacted while the node runs.
//! - [`keys`]: the versioned key schema of the shared store.
//! - [`index::Index`]: the local copy of a prefix of the shared store, kept from its
//!   events with no I/O.
//! - [`etcd::EtcdStore`]: the etcd backend: membership on a lease, a bounded write queue,
//!   a watch that resumes or reloads, each on the next member when one fails.
//! - [`store::ClusterStore`]: the one interface to what nodes share, with two backends:
//!   [`store::Embedded`] (the node alone, its journals) and [`etcd::EtcdStore`].
//! - [`secret::NodeSecret`]: the node secret, configured or generated once into the state
//!   directory, from which every key a peer's echo is checked with is derived.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod etcd;
pub mod index;
pub mod journal;
pub mod json;
pub mod keys;
pub mod secret;
pub mod store;

pub use journal::{Journal, Loaded, Record};
pub use secret::{NodeSecret, SecretSource};
pub use store::{ClusterStore, Embedded, Written};
