//! `DialogActor`: one per tracked call, for the life around it (DESIGN principle 3): it
//! ends its call on the wire (the node's BYEs to both sides, with Reason) when its lifetime
//! or its session interval passes, when the operator asks (`dlg.end_dlg`) or at shutdown.
//! `DialogSupervisor` starts one per call from the notices the message path queues and
//! drains that queue on a tick (so the message path never wakes the runtime); it keeps its
//! children's deadlines (the lifetime from the answer, the session timer from the answer or
//! the last refresh) in one heap checked on the same tick, rather than a task per timer;
//! and it outlives any child: when one fails, the call is ended for it (BYEs sent, counts
//! given back, CDR written with `ended_by: actor_failure`) and the others go on.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::time::Instant;
use tracing::warn;

use super::cdr::EndedBy;
use super::{Call, Dialogs, Notice};

/// How the supervisor's queue is drained.
pub const TICK: Duration = Duration::from_millis(20);

/// Ends a call on the wire: BYE to both sides of a confirmed dialog, then
/// [`Dialogs::finish`]. The proxy implements it.
pub trait Ender: Send + Sync + 'static {
    fn end_call(&self, call: &Arc<Call>, by: EndedBy);
}

pub enum DialogMsg {
    /// The lifetime ran out.
    Expire,
    /// No refresh within the session interval.
    SessionExpired,
    /// End the call now (operator, shutdown).
    End(EndedBy),
    /// A broken invariant, for the supervision test.
    #[cfg(test)]
    Crash,
}

/// One call's actor: told by its supervisor when a deadline passes, by the operator or
/// by the message path, it ends the call on the wire and stops.
pub struct DialogActor;

pub struct DialogState {
    call: Arc<Call>,
    ender: Arc<dyn Ender>,
}

impl Actor for DialogActor {
    type Msg = DialogMsg;
    type State = DialogState;
    type Arguments = (Arc<Call>, Arc<dyn Ender>);

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        (call, ender): Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(DialogState { call, ender })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let by = match msg {
            DialogMsg::Expire => EndedBy::Timeout,
            DialogMsg::SessionExpired => EndedBy::SessionExpired,
            DialogMsg::End(by) => by,
            #[cfg(test)]
            DialogMsg::Crash => panic!("dialog actor crash requested by a test"),
        };
        state.ender.end_call(&state.call, by);
        myself.stop(None);
        Ok(())
    }
}

/// A child and its deadlines.
struct Child {
    actor: ActorRef<DialogMsg>,
    call: Arc<Call>,
    lifetime_at: Option<Instant>,
    session_at: Option<Instant>,
}

pub enum SupervisorMsg {
    /// Drain the notices.
    Tick,
    /// End a call (`dlg.end_dlg`); the reply says whether it was found.
    End(u64, EndedBy, RpcReplyPort<bool>),
    /// End every call (shutdown after the drain time); the reply counts them.
    EndAll(EndedBy, RpcReplyPort<usize>),
    /// The number of live dialog actors.
    Children(RpcReplyPort<usize>),
    /// The number of deadlines queued (live and stale), for the bound's test.
    #[cfg(test)]
    Deadlines(RpcReplyPort<usize>),
    /// Make a child fail, for the supervision test.
    #[cfg(test)]
    Crash(u64),
}

pub struct DialogSupervisor;

impl DialogSupervisor {
    /// Starts the supervisor and its dialog actors on a thread of their own ("dialogs"):
    /// a tick's starts, timers and stops run there ([`crate::start_on_own_thread`]).
    pub fn start_on_own_thread(
        args: SupervisorArgs,
    ) -> std::io::Result<(ActorRef<SupervisorMsg>, std::thread::JoinHandle<()>)> {
        crate::start_on_own_thread("dialogs", DialogSupervisor, args)
    }
}

pub struct SupervisorArgs {
    pub dialogs: Arc<Dialogs>,
    pub ender: Arc<dyn Ender>,
}

pub struct SupervisorState {
    dialogs: Arc<Dialogs>,
    ender: Arc<dyn Ender>,
    children: HashMap<u64, Child>,
    by_actor: HashMap<ActorId, u64>,
    /// The children's deadlines (lifetime, session timer), checked every tick; an entry
    /// whose deadline has moved since is skipped. One heap instead of a task per timer.
    deadlines: BinaryHeap<Reverse<(Instant, u64)>>,
}

impl SupervisorState {
    async fn start(&mut self, myself: &ActorRef<SupervisorMsg>, call: Arc<Call>) {
        let args = (call.clone(), self.ender.clone());
        match Actor::spawn_linked(None, DialogActor, args, myself.get_cell()).await {
            Ok((actor, _)) => {
                self.by_actor.insert(actor.get_id(), call.id);
                let id = call.id;
                // A call restored after a restart has only the rest of its lifetime left;
                // a new one is bounded by the lifetime even if it is never answered.
                let answered_ago = call
                    .answer_ms()
                    .map_or(0, |a| super::unix_ms().saturating_sub(a));
                let lifetime = self
                    .dialogs
                    .lifetime()
                    .saturating_sub(Duration::from_millis(answered_ago));
                self.children.insert(
                    id,
                    Child {
                        actor,
                        call,
                        lifetime_at: None,
                        session_at: None,
                    },
                );
                self.arm(id, Some(lifetime), true);
            }
            Err(e) => warn!(error = %e, call_id = %call.call_id, "dialog actor not started"),
        }
    }

    /// Sets a child's lifetime deadline (when given) and its session deadline (from its
    /// call's session interval, when `session`).
    fn arm(&mut self, id: u64, lifetime: Option<Duration>, session: bool) {
        let now = Instant::now();
        let Some(child) = self.children.get_mut(&id) else {
            return;
        };
        if let Some(l) = lifetime {
            let at = now + l;
            child.lifetime_at = Some(at);
            self.deadlines.push(Reverse((at, id)));
        }
        if session {
            if let Some(interval) = child.call.session_interval() {
                let at = now + interval;
                child.session_at = Some(at);
                self.deadlines.push(Reverse((at, id)));
            }
        }
    }

    /// Drops the deadlines of calls that have ended and those that moved: each call
    /// leaves one or two behind (its answer moves its lifetime), and they would otherwise
    /// stay queued for the whole lifetime (12 h), at 1,000 calls/s some 100 million.
    /// Rebuilt from the live children once stale entries outnumber live ones (at most two
    /// per child), so the queue stays within a bound and each push costs O(1) amortised.
    fn compact(&mut self) {
        if self.deadlines.len() <= 4 * self.children.len() + 1024 {
            return;
        }
        self.deadlines = self
            .children
            .iter()
            .flat_map(|(id, c)| {
                [c.lifetime_at, c.session_at]
                    .into_iter()
                    .flatten()
                    .map(move |at| Reverse((at, *id)))
            })
            .collect();
    }

    /// Tells the children whose deadlines have passed.
    fn expire(&mut self) {
        let now = Instant::now();
        while let Some(Reverse((at, id))) = self.deadlines.peek().copied() {
            if at > now {
                break;
            }
            self.deadlines.pop();
            let Some(child) = self.children.get_mut(&id) else {
                continue;
            };
            let msg = if child.lifetime_at == Some(at) {
                child.lifetime_at = None;
                DialogMsg::Expire
            } else if child.session_at == Some(at) {
                child.session_at = None;
                DialogMsg::SessionExpired
            } else {
                continue; // moved since
            };
            let _ = child.actor.cast(msg);
        }
    }

    fn tell(&self, id: u64, msg: DialogMsg) -> bool {
        self.children
            .get(&id)
            .is_some_and(|child| child.actor.cast(msg).is_ok())
    }

    fn forget(&mut self, actor: ActorId) -> Option<Arc<Call>> {
        let id = self.by_actor.remove(&actor)?;
        self.children.remove(&id).map(|c| c.call)
    }
}

impl Actor for DialogSupervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: SupervisorArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        myself.send_interval(TICK, || SupervisorMsg::Tick);
        Ok(SupervisorState {
            dialogs: args.dialogs,
            ender: args.ender,
            children: HashMap::new(),
            by_actor: HashMap::new(),
            deadlines: BinaryHeap::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::Tick => {
                for notice in state.dialogs.take_notices() {
                    match notice {
                        Notice::Started(call) => state.start(&myself, call).await,
                        Notice::Answered(id) => {
                            let lifetime = state.dialogs.lifetime();
                            state.arm(id, Some(lifetime), true);
                        }
                        Notice::Refreshed(id) => state.arm(id, None, true),
                        // The call ended by itself (BYE, failure): nothing left for its
                        // actor to do; stopped without a message to handle.
                        Notice::Ended(id) => {
                            if let Some(child) = state.children.get(&id) {
                                child.actor.stop(None);
                            }
                        }
                    }
                }
                state.expire();
                state.compact();
            }
            SupervisorMsg::End(id, by, reply) => {
                let found = state.tell(id, DialogMsg::End(by));
                let _ = reply.send(found);
            }
            SupervisorMsg::EndAll(by, reply) => {
                let n = state
                    .children
                    .keys()
                    .copied()
                    .collect::<Vec<_>>()
                    .into_iter()
                    .filter(|id| state.tell(*id, DialogMsg::End(by)))
                    .count();
                let _ = reply.send(n);
            }
            SupervisorMsg::Children(reply) => {
                let _ = reply.send(state.children.len());
            }
            #[cfg(test)]
            SupervisorMsg::Deadlines(reply) => {
                let _ = reply.send(state.deadlines.len());
            }
            #[cfg(test)]
            SupervisorMsg::Crash(id) => {
                state.tell(id, DialogMsg::Crash);
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                state.forget(cell.get_id());
            }
            SupervisionEvent::ActorFailed(cell, error) => {
                if let Some(call) = state.forget(cell.get_id()) {
                    warn!(call_id = %call.call_id, error = %error, "dialog actor failed; the call is ended for it");
                    state.ender.end_call(&call, EndedBy::ActorFailure);
                }
            }
            _ => {}
        }
        Ok(())
    }
}
