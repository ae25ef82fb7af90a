//! Address groups (Kamailio's `address` table and `allow_source_address(GROUP)`): numbered
//! sets of CIDR / port / protocol / tag entries, each group owned by an
//! [`actor::AddressGroupActor`]. The actors publish immutable [`Group`] snapshots (a
//! prefix trie per address family) into one [`ArcSwap`]; the message path loads it with
//! no lock and no message round trip, and a lookup walks at most 32 or 128 trie nodes
//! whatever the group's size.
//!
//! Semantics as Kamailio's permissions module: a source matches a group when an entry of
//! that group contains its address, the entry's port is 0 or the source port, and its
//! protocol is `any` or the transport; the most specific matching entry gives the tag.

pub mod actor;
pub mod trie;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use ipnet::IpNet;
use limes_cluster::Journal;
use ractor::ActorRef;
use tracing::warn;

use self::actor::{GroupMsg, GroupsSupervisor, SupervisorMsg};
use self::trie::Trie;
use crate::settings::Transport;
use crate::tables::{to_json, AddressEntry, Origin, TableError};

/// How long a caller waits for a group actor's answer.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Tries of a change whose actor failed under it.
const CALL_ATTEMPTS: u32 = 3;

/// One group as published: its entries and their tries.
#[derive(Debug)]
pub struct Group {
    pub id: u32,
    pub entries: Vec<AddressEntry>,
    v4: Trie,
    v6: Trie,
}

impl Group {
    pub fn build(id: u32, entries: &[AddressEntry]) -> Self {
        let indexed = || {
            entries
                .iter()
                .enumerate()
                .map(|(i, e)| (e.net.trunc(), i as u32))
        };
        Self {
            id,
            entries: entries.to_vec(),
            v4: Trie::build(32, indexed()),
            v6: Trie::build(128, indexed()),
        }
    }

    /// The most specific entry that admits this source, if any.
    pub fn lookup(&self, ip: IpAddr, port: u16, transport: Transport) -> Option<&AddressEntry> {
        let ip = ip.to_canonical();
        let trie = if ip.is_ipv4() { &self.v4 } else { &self.v6 };
        let accept = |i: u32| {
            let e = &self.entries[i as usize];
            (e.port == 0 || e.port == port) && e.proto.covers(transport)
        };
        trie.longest(ip, accept).map(|i| &self.entries[i as usize])
    }
}

/// Every group, as the message path reads it.
#[derive(Debug, Default)]
pub struct Snapshot {
    groups: BTreeMap<u32, Arc<Group>>,
}

impl Snapshot {
    /// `allow_source_address(group)`: the entry of `group` that admits the source.
    pub fn allow(
        &self,
        group: u32,
        ip: IpAddr,
        port: u16,
        transport: Transport,
    ) -> Option<&AddressEntry> {
        self.groups.get(&group)?.lookup(ip, port, transport)
    }

    /// The lowest-numbered group that admits the source, and its entry.
    pub fn first(&self, ip: IpAddr, port: u16, transport: Transport) -> Option<&AddressEntry> {
        self.groups
            .values()
            .find_map(|g| g.lookup(ip, port, transport))
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    pub fn groups(&self) -> impl Iterator<Item = &Arc<Group>> {
        self.groups.values()
    }
}

/// What the group actors share: the published snapshot and the journal.
pub struct Shared {
    snapshot: ArcSwap<Snapshot>,
    journal: Option<Arc<Journal>>,
    max_entries: usize,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

impl Shared {
    /// Replaces (or, with `None`, removes) one group in the snapshot.
    fn publish(&self, id: u32, group: Option<Arc<Group>>) {
        self.snapshot.rcu(|old| {
            let mut groups = old.groups.clone();
            match &group {
                Some(g) => groups.insert(id, g.clone()),
                None => groups.remove(&id),
            };
            Snapshot { groups }
        });
    }

    fn entries_of(&self, id: u32) -> Vec<AddressEntry> {
        self.snapshot
            .load()
            .groups
            .get(&id)
            .map(|g| g.entries.clone())
            .unwrap_or_default()
    }

    fn group_ids(&self) -> Vec<u32> {
        self.snapshot.load().groups.keys().copied().collect()
    }

    fn total(&self) -> usize {
        self.snapshot
            .load()
            .groups
            .values()
            .map(|g| g.entries.len())
            .sum()
    }

    fn journal_put(&self, key: &str, value: &str) -> Result<(), TableError> {
        if let Some(j) = &self.journal {
            j.put(&format!("address/{key}"), value)?;
        }
        Ok(())
    }

    fn journal_delete(&self, key: &str) -> Result<(), TableError> {
        if let Some(j) = &self.journal {
            j.delete(&format!("address/{key}"))?;
        }
        Ok(())
    }
}

/// The address groups: the snapshot readers load, and the supervisor of the actors that
/// change it.
pub struct Groups {
    shared: Arc<Shared>,
    supervisor: ActorRef<SupervisorMsg>,
}

impl std::fmt::Debug for Groups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Groups")
            .field("groups", &self.shared.group_ids())
            .finish()
    }
}

impl Groups {
    /// Starts the supervisor on a thread of its own ("groups", a single-threaded runtime)
    /// with `restored` entries (the journal's) published at once. API entries are
    /// journaled under `address/` in `journal`.
    pub fn start(
        journal: Option<Arc<Journal>>,
        restored: Vec<AddressEntry>,
        max_entries: usize,
    ) -> std::io::Result<Arc<Self>> {
        let mut by_group: BTreeMap<u32, Vec<AddressEntry>> = BTreeMap::new();
        for e in restored {
            by_group.entry(e.group).or_default().push(e);
        }
        let groups = by_group
            .into_iter()
            .map(|(id, list)| (id, Arc::new(Group::build(id, &list))))
            .collect();
        let shared = Arc::new(Shared {
            snapshot: ArcSwap::from_pointee(Snapshot { groups }),
            journal,
            max_entries,
        });
        let (supervisor, _thread) =
            crate::start_on_own_thread("groups", GroupsSupervisor, shared.clone())?;
        Ok(Arc::new(Self { shared, supervisor }))
    }

    /// The current snapshot (per request: no lock).
    pub fn load(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.shared.snapshot.load()
    }

    /// Sends a change to `group`'s actor and waits for its answer. A change that went
    /// down with a failing actor (its reply dropped unanswered) is sent again, to the
    /// actor the supervisor starts in its place.
    fn call(
        &self,
        group: u32,
        change: impl Fn(actor::Reply) -> GroupMsg,
    ) -> Result<usize, TableError> {
        use std::sync::mpsc::RecvTimeoutError;
        for attempt in 1..=CALL_ATTEMPTS {
            let (tx, rx) = std::sync::mpsc::sync_channel(1);
            self.supervisor
                .cast(SupervisorMsg::To(group, change(tx)))
                .map_err(|_| TableError::Invalid("address groups stopped".into()))?;
            match rx.recv_timeout(CALL_TIMEOUT) {
                Ok(result) => return result,
                Err(RecvTimeoutError::Disconnected) if attempt < CALL_ATTEMPTS => {
                    warn!(
                        group,
                        attempt, "address group change lost with its actor; sent again"
                    );
                    std::thread::sleep(Duration::from_millis(20 * u64::from(attempt)));
                }
                Err(_) => break,
            }
        }
        Err(TableError::Invalid("address group did not answer".into()))
    }

    /// Adds or replaces (same group, network, port, protocol) an entry; readers see it
    /// when this returns.
    pub fn add(&self, entry: AddressEntry) -> Result<(), TableError> {
        if entry.group == 0 {
            return Err(TableError::Invalid("group: a number from 1".into()));
        }
        self.call(entry.group, |r| GroupMsg::Add(entry.clone(), r))
            .map(|_| ())
    }

    /// Removes `group`'s entries for `net`; the number removed.
    pub fn remove(&self, group: u32, net: IpNet) -> Result<usize, TableError> {
        self.call(group, |r| GroupMsg::Remove(net, r))
    }

    /// Replaces the configuration file's entries of every group.
    pub fn set_config(&self, list: Vec<AddressEntry>) -> Result<(), TableError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.supervisor
            .cast(SupervisorMsg::Config(list, tx))
            .map_err(|_| TableError::Invalid("address groups stopped".into()))?;
        rx.recv_timeout(CALL_TIMEOUT * 2)
            .map_err(|_| TableError::Invalid("address groups did not answer".into()))?
            .map(|_| ())
    }

    /// Every entry, by group.
    pub fn entries(&self) -> Vec<AddressEntry> {
        self.load()
            .groups()
            .flat_map(|g| g.entries.iter().cloned())
            .collect()
    }

    /// The API's entries, for a journal snapshot: (key, value).
    pub fn journaled(&self) -> Vec<(String, String)> {
        self.entries()
            .iter()
            .filter(|a| a.origin == Origin::Api)
            .map(|a| (format!("address/{}", address_key(a)), to_json(a)))
            .collect()
    }
}

fn address_key(a: &AddressEntry) -> String {
    format!("{}|{}|{}|{:?}", a.group, a.net, a.port, a.proto)
}

#[cfg(test)]
mod tests;
