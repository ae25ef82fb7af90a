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
//!   [`proxy::routing`]: the source classified by address [`groups`] and trusted
//!   [`tables`], the [`policy`] rules evaluated, [`auth`] challenging a subscriber
//!   statelessly, the AoR's bindings or a [`trunks`] destination after another as targets;
//!   REGISTER goes to the [`registrar`]), and puts a context with one branch per target into the sharded table
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
pub mod dns;
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

/// Starts `actor` on a thread of its own named `name` with a single-threaded runtime: its
/// work runs there with no other worker to wake (a multi-threaded runtime spent ~4 futex
/// calls and ~4 context switches per call handing dialog work around). The thread ends
/// when the actor stops.
pub fn start_on_own_thread<A>(
    name: &str,
    actor: A,
    args: A::Arguments,
) -> std::io::Result<(ractor::ActorRef<A::Msg>, std::thread::JoinHandle<()>)>
where
    A: ractor::Actor,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let thread = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            runtime.block_on(async move {
                match ractor::Actor::spawn(None, actor, args).await {
                    Ok((started, handle)) => {
                        let _ = tx.send(Ok(started));
                        let _ = handle.await;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(std::io::Error::other(e.to_string())));
                    }
                }
            });
        })?;
    let started = rx
        .recv()
        .map_err(|_| std::io::Error::other(format!("the {name} thread ended at start")))??;
    Ok((started, thread))
}
