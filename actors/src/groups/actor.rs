//! `AddressGroupActor`: one per address group, the only writer of its entries. Each change
//! is applied to the actor's list, published as a new immutable [`Group`] in the shared
//! snapshot (readers on the message path never wait), then journaled when it came from
//! the API. A supervisor starts the actors on demand and restarts a failed one from the
//! last published entries.

use std::collections::HashMap;
use std::sync::mpsc::SyncSender;
use std::sync::Arc;

use ipnet::IpNet;
use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use tracing::{info, warn};

use super::{address_key, Group, Shared};
use crate::tables::{AddressEntry, Origin, TableError};

pub type Reply = SyncSender<Result<usize, TableError>>;

/// A change to one group; the reply carries the number of entries it touched.
pub enum GroupMsg {
    /// Add or replace (same network, port and protocol) an entry.
    Add(AddressEntry, Reply),
    /// Remove the entries of a network.
    Remove(IpNet, Reply),
    /// Replace the configuration file's entries of this group.
    SetConfig(Vec<AddressEntry>, Reply),
    /// Fail (the tests of supervision).
    #[cfg(test)]
    Fail,
}

pub struct AddressGroupActor;

pub struct GroupState {
    id: u32,
    entries: Vec<AddressEntry>,
    shared: Arc<Shared>,
}

impl GroupState {
    /// Publishes the entries as the group's snapshot (or removes an empty group).
    fn publish(&self) {
        let group =
            (!self.entries.is_empty()).then(|| Arc::new(Group::build(self.id, &self.entries)));
        self.shared.publish(self.id, group);
    }

    fn apply(&mut self, msg: GroupMsg) {
        let (result, reply) = match msg {
            GroupMsg::Add(entry, reply) => (self.add(entry), reply),
            GroupMsg::Remove(net, reply) => (self.remove(net), reply),
            GroupMsg::SetConfig(list, reply) => {
                self.entries.retain(|e| e.origin != Origin::Config);
                let n = list.len();
                self.entries.extend(list);
                self.publish();
                (Ok(n), reply)
            }
            #[cfg(test)]
            GroupMsg::Fail => return,
        };
        let _ = reply.try_send(result);
    }

    fn add(&mut self, entry: AddressEntry) -> Result<usize, TableError> {
        let key = address_key(&entry);
        let total = self.shared.total();
        let replaces = self.entries.iter().any(|e| address_key(e) == key);
        if !replaces && total >= self.shared.max_entries {
            return Err(TableError::Full(self.shared.max_entries));
        }
        let old = self.entries.clone();
        self.entries.retain(|e| address_key(e) != key);
        let journaled =
            (entry.origin == Origin::Api).then(|| (key, crate::tables::to_json(&entry)));
        self.entries.push(entry);
        self.publish();
        if let Some((key, value)) = journaled {
            if let Err(e) = self.shared.journal_put(&key, &value) {
                self.entries = old;
                self.publish();
                return Err(e);
            }
        }
        Ok(1)
    }

    fn remove(&mut self, net: IpNet) -> Result<usize, TableError> {
        let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.entries)
            .into_iter()
            .partition(|e| e.net == net);
        self.entries = kept;
        if gone.is_empty() {
            return Err(TableError::NotFound(format!("group {} {net}", self.id)));
        }
        self.publish();
        for e in gone.iter().filter(|e| e.origin == Origin::Api) {
            self.shared.journal_delete(&address_key(e))?;
        }
        Ok(gone.len())
    }
}

impl Actor for AddressGroupActor {
    type Msg = GroupMsg;
    type State = GroupState;
    /// The group number, its entries (a restart's or a restore's), the shared snapshot.
    type Arguments = (u32, Vec<AddressEntry>, Arc<Shared>);

    async fn pre_start(
        &self,
        _: ActorRef<Self::Msg>,
        (id, entries, shared): Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let state = GroupState {
            id,
            entries,
            shared,
        };
        state.publish();
        Ok(state)
    }

    async fn handle(
        &self,
        _: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        #[cfg(test)]
        if matches!(msg, GroupMsg::Fail) {
            return Err("a failure the test asked for".into());
        }
        state.apply(msg);
        Ok(())
    }
}

/// What the supervisor is asked.
pub enum SupervisorMsg {
    /// A change for group `0`, its actor started if it has none yet.
    To(u32, GroupMsg),
    /// Replace every group's configuration entries (groups missing from the list lose
    /// theirs); the reply counts the entries.
    Config(Vec<AddressEntry>, Reply),
}

pub struct GroupsSupervisor;

pub struct SupervisorState {
    shared: Arc<Shared>,
    children: HashMap<u32, ActorRef<GroupMsg>>,
}

impl SupervisorState {
    async fn child(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        id: u32,
    ) -> Option<ActorRef<GroupMsg>> {
        if let Some(c) = self.children.get(&id) {
            return Some(c.clone());
        }
        let entries = self.shared.entries_of(id);
        let args = (id, entries, self.shared.clone());
        match Actor::spawn_linked(None, AddressGroupActor, args, myself.get_cell()).await {
            Ok((actor, _)) => {
                self.children.insert(id, actor.clone());
                Some(actor)
            }
            Err(e) => {
                warn!(group = id, error = %e, "address group actor not started");
                None
            }
        }
    }
}

impl Actor for GroupsSupervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = Arc<Shared>;

    async fn pre_start(
        &self,
        _: ActorRef<Self::Msg>,
        shared: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(SupervisorState {
            shared,
            children: HashMap::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::To(id, change) => match state.child(&myself, id).await {
                Some(actor) => {
                    if let Err(e) = actor.cast(change) {
                        warn!(group = id, error = %e, "address group change not delivered");
                    }
                }
                None => reply_failed(change),
            },
            SupervisorMsg::Config(list, reply) => {
                let n = list.len();
                let mut by_group: HashMap<u32, Vec<AddressEntry>> = HashMap::new();
                for e in list {
                    by_group.entry(e.group).or_default().push(e);
                }
                let mut ids: Vec<u32> = state.shared.group_ids();
                ids.extend(by_group.keys().copied());
                ids.sort_unstable();
                ids.dedup();
                // Each group answers on its own; the whole change is acknowledged when
                // every group has applied its part.
                let mut waits = Vec::new();
                for id in ids {
                    let (tx, rx) = std::sync::mpsc::sync_channel(1);
                    let entries = by_group.remove(&id).unwrap_or_default();
                    if let Some(actor) = state.child(&myself, id).await {
                        if actor.cast(GroupMsg::SetConfig(entries, tx)).is_ok() {
                            waits.push(rx);
                        }
                    }
                }
                tokio::task::spawn_blocking(move || {
                    for rx in waits {
                        let _ = rx.recv_timeout(super::CALL_TIMEOUT);
                    }
                    let _ = reply.try_send(Ok(n));
                });
            }
        }
        Ok(())
    }

    /// A failed group actor is started again from its last published entries; one that
    /// stopped is forgotten. The supervisor itself never stops for a child.
    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        evt: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, failed) = match evt {
            SupervisionEvent::ActorFailed(cell, e) => {
                warn!(error = %e, "address group actor failed; restarting it");
                (cell, true)
            }
            SupervisionEvent::ActorTerminated(cell, _, _) => (cell, false),
            _ => return Ok(()),
        };
        let Some(id) = state
            .children
            .iter()
            .find(|(_, a)| a.get_id() == cell.get_id())
            .map(|(id, _)| *id)
        else {
            return Ok(());
        };
        state.children.remove(&id);
        if failed && state.child(&myself, id).await.is_some() {
            info!(group = id, "address group actor restarted");
        }
        Ok(())
    }
}

fn reply_failed(change: GroupMsg) {
    let reply = match change {
        GroupMsg::Add(_, r) | GroupMsg::Remove(_, r) | GroupMsg::SetConfig(_, r) => r,
        #[cfg(test)]
        GroupMsg::Fail => return,
    };
    let _ = reply.try_send(Err(TableError::Invalid("address group unavailable".into())));
}
