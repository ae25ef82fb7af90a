//! `DialogActor`: one per tracked call, for the life around it (DESIGN principle 3): the
//! lifetime timer (re-armed at the answer), the operator's `dlg.end_dlg`, and the BYEs of
//! the node's own when either ends the call. `DialogSupervisor` starts one per call from
//! the notices the message path queues, drains that queue on a tick (so the message path
//! never wakes the runtime), and outlives any child: when one fails, the call is ended for
//! it (BYEs sent, counts given back, CDR written with `ended_by: actor_failure`) and the
//! others go on.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ractor::concurrency::JoinHandle;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tracing::warn;

use super::cdr::EndedBy;
use super::{Call, Dialogs, Notice};

/// How the supervisor's queue is drained.
pub const TICK: Duration = Duration::from_millis(20);

/// Ends a call on the wire: BYE to both sides of a confirmed dialog, then
/// [`Dialogs::finish`]. The proxy implements it.
pub trait Ender: Send + Sync + 'static {
    fn end_call(&self, call: &Call, by: EndedBy);
}

pub enum DialogMsg {
    /// The call was answered: the lifetime runs from now, and the session timer when the
    /// answer agreed one.
    Answered,
    /// A session refresh passed: the session timer starts again.
    Refreshed,
    /// The lifetime ran out.
    Expire,
    /// No refresh within the session interval.
    SessionExpired,
    /// End the call now (operator, shutdown).
    End(EndedBy),
    /// The call ended by itself (BYE, failure): nothing left to do.
    Ended,
    /// A broken invariant, for the supervision test.
    #[cfg(test)]
    Crash,
}

pub struct DialogActor;

pub struct DialogArgs {
    pub call: Arc<Call>,
    pub ender: Arc<dyn Ender>,
    /// Until the timer fires first (less than the lifetime for a restored call).
    pub lifetime: Duration,
}

type Timer = JoinHandle<Result<(), ractor::MessagingErr<DialogMsg>>>;

pub struct DialogState {
    call: Arc<Call>,
    ender: Arc<dyn Ender>,
    lifetime: Duration,
    timer: Option<Timer>,
    session_timer: Option<Timer>,
}

impl DialogState {
    fn arm(&mut self, myself: &ActorRef<DialogMsg>, lifetime: Duration) {
        if let Some(t) = self.timer.take() {
            t.abort();
        }
        self.timer = Some(myself.send_after(lifetime, || DialogMsg::Expire));
    }

    /// (Re)starts the session timer when the call has a session interval.
    fn arm_session(&mut self, myself: &ActorRef<DialogMsg>) {
        if let Some(t) = self.session_timer.take() {
            t.abort();
        }
        if let Some(interval) = self.call.session_interval() {
            self.session_timer = Some(myself.send_after(interval, || DialogMsg::SessionExpired));
        }
    }
}

impl Actor for DialogActor {
    type Msg = DialogMsg;
    type State = DialogState;
    type Arguments = DialogArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: DialogArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut state = DialogState {
            call: args.call,
            ender: args.ender,
            lifetime: args.lifetime,
            timer: None,
            session_timer: None,
        };
        // A call that never gets a final response is bounded by the lifetime too.
        state.arm(&myself, args.lifetime);
        // A restored call's session timer starts again from now.
        state.arm_session(&myself);
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            DialogMsg::Answered => {
                let full = state.lifetime;
                state.arm(&myself, full);
                state.arm_session(&myself);
            }
            DialogMsg::Refreshed => state.arm_session(&myself),
            DialogMsg::SessionExpired => {
                state.ender.end_call(&state.call, EndedBy::SessionExpired);
                myself.stop(None);
            }
            DialogMsg::Expire => {
                state.ender.end_call(&state.call, EndedBy::Timeout);
                myself.stop(None);
            }
            DialogMsg::End(by) => {
                state.ender.end_call(&state.call, by);
                myself.stop(None);
            }
            DialogMsg::Ended => myself.stop(None),
            #[cfg(test)]
            DialogMsg::Crash => panic!("dialog actor crash requested by a test"),
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        for t in [state.timer.take(), state.session_timer.take()]
            .into_iter()
            .flatten()
        {
            t.abort();
        }
        Ok(())
    }
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
    /// Make a child fail, for the supervision test.
    #[cfg(test)]
    Crash(u64),
}

pub struct DialogSupervisor;

impl DialogSupervisor {
    /// Starts the supervisor and its dialog actors on a thread of their own ("dialogs")
    /// with a single-threaded runtime: a tick's starts, timers and stops run there with no
    /// other worker to wake (a multi-threaded runtime spent ~4 futex calls and ~4 context
    /// switches per call handing them around). The thread ends when the supervisor stops.
    pub fn start_on_own_thread(
        args: SupervisorArgs,
    ) -> std::io::Result<(ActorRef<SupervisorMsg>, std::thread::JoinHandle<()>)> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()?;
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("dialogs".into())
            .spawn(move || {
                runtime.block_on(async move {
                    match Actor::spawn(None, DialogSupervisor, args).await {
                        Ok((supervisor, handle)) => {
                            let _ = tx.send(Ok(supervisor));
                            let _ = handle.await;
                        }
                        Err(e) => {
                            let _ = tx.send(Err(std::io::Error::other(e.to_string())));
                        }
                    }
                });
            })?;
        let supervisor = rx
            .recv()
            .map_err(|_| std::io::Error::other("the dialogs thread ended at start"))??;
        Ok((supervisor, thread))
    }
}

pub struct SupervisorArgs {
    pub dialogs: Arc<Dialogs>,
    pub ender: Arc<dyn Ender>,
}

pub struct SupervisorState {
    dialogs: Arc<Dialogs>,
    ender: Arc<dyn Ender>,
    children: HashMap<u64, ActorRef<DialogMsg>>,
    calls: HashMap<ActorId, Arc<Call>>,
}

impl SupervisorState {
    async fn start(&mut self, myself: &ActorRef<SupervisorMsg>, call: Arc<Call>) {
        // A call restored after a restart has only the rest of its lifetime left.
        let answered_ago = call
            .answer_ms()
            .map_or(0, |a| super::unix_ms().saturating_sub(a));
        let args = DialogArgs {
            call: call.clone(),
            ender: self.ender.clone(),
            lifetime: self
                .dialogs
                .lifetime()
                .saturating_sub(Duration::from_millis(answered_ago)),
        };
        match Actor::spawn_linked(None, DialogActor, args, myself.get_cell()).await {
            Ok((child, _)) => {
                self.calls.insert(child.get_id(), call.clone());
                self.children.insert(call.id, child);
            }
            Err(e) => warn!(error = %e, call_id = %call.call_id, "dialog actor not started"),
        }
    }

    fn tell(&self, id: u64, msg: DialogMsg) -> bool {
        self.children
            .get(&id)
            .is_some_and(|child| child.cast(msg).is_ok())
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
            calls: HashMap::new(),
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
                            state.tell(id, DialogMsg::Answered);
                        }
                        Notice::Refreshed(id) => {
                            state.tell(id, DialogMsg::Refreshed);
                        }
                        Notice::Ended(id) => {
                            state.tell(id, DialogMsg::Ended);
                        }
                    }
                }
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
                if let Some(call) = state.calls.remove(&cell.get_id()) {
                    state.children.remove(&call.id);
                }
            }
            SupervisionEvent::ActorFailed(cell, error) => {
                if let Some(call) = state.calls.remove(&cell.get_id()) {
                    state.children.remove(&call.id);
                    warn!(call_id = %call.call_id, error = %error, "dialog actor failed; the call is ended for it");
                    state.ender.end_call(&call, EndedBy::ActorFailure);
                }
            }
            _ => {}
        }
        Ok(())
    }
}
