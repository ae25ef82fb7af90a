//! One entry of the transaction table: the §16 response context of `limes_sip::proxy`, the
//! key it was matched by, when the timer thread must next look at it, and the targets the
//! policy has not tried yet.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use limes_sip::proxy::Context;
use limes_sip::transaction::TxKey;

use super::own::Waiter;
use super::{Fork, Routes};
use crate::dialogs::Call;
use crate::transport::Dest;

pub struct Entry {
    /// The server transaction's key; `None` for a request of the node's own.
    pub key: Option<TxKey>,
    pub ctx: Context<Dest>,
    /// The earliest deadline queued in the shard's timer heap for this entry.
    pub scheduled: Option<Instant>,
    /// Targets still to try (serial forking), boxed: most requests have none.
    pub later: Option<Box<Later>>,
    /// Who waits for the outcome of a request of the node's own.
    pub waiter: Option<Box<Waiter>>,
    /// The call a dialog-creating INVITE started.
    pub dialog: Option<Arc<Call>>,
}

/// The groups of targets not started yet (§16.6: lower q after higher q has failed), and
/// what their branches share with the first ones.
pub struct Later {
    pub groups: VecDeque<Routes>,
    pub fork: Fork,
    /// A trunk's call: the next group only on the trunk's failover codes.
    pub failover: Option<super::routing::Failover>,
}
