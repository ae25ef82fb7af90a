//! The local copy of a prefix of the shared store, kept from its events with no I/O:
//! [`Index::apply`] and [`Index::delete`] take a watched change (ignored when it is not
//! newer than what is held for the key: events delivered twice after a resumed watch),
//! [`Index::reset`] takes a full read (after a compaction made the watch impossible to
//! resume) and says what changed; [`Index::written`] records the node's own write, so its
//! event changes nothing. Each returns the changes the owner must make to its own
//! state, so a node's tables follow the store exactly.

use std::collections::BTreeMap;

/// A change to a key, as the owner of the local state applies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Put { key: String, value: String },
    Delete { key: String },
}

/// Keys with their values and the revision each was last written at.
#[derive(Debug, Default)]
pub struct Index {
    entries: BTreeMap<String, (String, i64)>,
    /// The newest revision seen: a resumed watch starts after it.
    revision: i64,
    /// The revision of the last full read: events up to it are in it already.
    floor: i64,
}

impl Index {
    pub fn revision(&self) -> i64 {
        self.revision
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries.get(key).map(|(v, _)| v.as_str())
    }

    /// Every key and value, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries
            .iter()
            .map(|(k, (v, _))| (k.as_str(), v.as_str()))
    }

    /// This node wrote `key` = `value`, applied at `revision`: its own write's event,
    /// when the watch delivers it, is then nothing to do (the node has the value). The
    /// revision a resumed watch starts after is not moved: events of other nodes before
    /// `revision` may still be on their way.
    pub fn written(&mut self, key: &str, value: &str, revision: i64) {
        if self.entries.get(key).is_none_or(|(_, at)| *at < revision) {
            self.entries
                .insert(key.to_owned(), (value.to_owned(), revision));
        }
    }

    /// `key` was written at `revision`.
    pub fn apply(&mut self, key: &str, value: &str, revision: i64) -> Option<Change> {
        if revision <= self.floor {
            return None;
        }
        self.revision = self.revision.max(revision);
        match self.entries.get(key) {
            Some((_, at)) if *at >= revision => return None,
            Some((v, _)) if v == value => {
                self.entries
                    .insert(key.to_owned(), (value.to_owned(), revision));
                return None;
            }
            _ => {}
        }
        self.entries
            .insert(key.to_owned(), (value.to_owned(), revision));
        Some(Change::Put {
            key: key.to_owned(),
            value: value.to_owned(),
        })
    }

    /// `key` was deleted at `revision`.
    pub fn delete(&mut self, key: &str, revision: i64) -> Option<Change> {
        if revision <= self.floor {
            return None;
        }
        self.revision = self.revision.max(revision);
        match self.entries.get(key) {
            Some((_, at)) if *at < revision => {
                self.entries.remove(key);
                Some(Change::Delete {
                    key: key.to_owned(),
                })
            }
            _ => None,
        }
    }

    /// Everything under the prefix as read at `revision`: the index becomes exactly that,
    /// and the changes returned turn the old contents into it.
    pub fn reset(&mut self, snapshot: Vec<(String, String, i64)>, revision: i64) -> Vec<Change> {
        let mut next = BTreeMap::new();
        let mut changes = Vec::new();
        for (key, value, at) in snapshot {
            if self.entries.get(&key).map(|(v, _)| v) != Some(&value) {
                changes.push(Change::Put {
                    key: key.clone(),
                    value: value.clone(),
                });
            }
            next.insert(key, (value, at));
        }
        for key in self.entries.keys().filter(|k| !next.contains_key(*k)) {
            changes.push(Change::Delete { key: key.clone() });
        }
        self.entries = next;
        self.revision = revision;
        self.floor = revision;
        changes
    }
}

#[cfg(test)]
mod tests;
