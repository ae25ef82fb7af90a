//! An append-only journal of key/value changes with snapshot compaction.
//!
//! Files in the state directory, for a journal named `N`:
//! - `N.snap`: the first line `{"generation":G}`, then one `P` record per live key;
//! - `N.wal.G`, `N.wal.G+1` ...: the changes made since that snapshot began, in order.
//!
//! A record is one line: `P\t"key"\tVALUE` (VALUE a JSON text) or `D\t"key"`. The key is
//! a JSON string, so neither part contains a raw tab or newline. Opening reads the
//! snapshot and replays every later log; a torn last line (a crash mid-write) is counted
//! and ignored. [`Journal::compact`] first moves writers to a new log, then writes the
//! snapshot of what the owner holds, renames it into place and deletes the older logs: a
//! crash at any point leaves a snapshot plus logs that replay to the same state, because
//! every record is a whole value and replay applies them in order.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use tracing::{debug, warn};

/// What [`Journal::open_map`] found.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Every live key with its value (JSON text), in key order.
    pub entries: BTreeMap<String, String>,
    /// Lines that could not be read (a torn last write, damage): skipped.
    pub skipped: usize,
}

/// One record, as [`Journal::open`] replays it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record<'a> {
    /// `key` now has `value` (a JSON text).
    Put(&'a str, &'a str),
    Delete(&'a str),
}

struct Log {
    file: File,
    generation: u64,
    /// Bytes appended to the current log.
    bytes: u64,
}

pub struct Journal {
    dir: PathBuf,
    name: String,
    log: Mutex<Log>,
    /// Serialises compactions.
    compacting: Mutex<()>,
    /// Bytes of the last snapshot written.
    snapshot_bytes: Mutex<u64>,
    /// Told of every change once it is written (a cluster shares them).
    observer: std::sync::OnceLock<Observer>,
}

/// What a journal's owner is told of each change written ([`Journal::observe`]).
pub type Observer = Box<dyn Fn(Record<'_>) + Send + Sync>;

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("dir", &self.dir)
            .field("name", &self.name)
            .finish()
    }
}

impl Journal {
    /// Opens the journal `name` in `dir` and collects its live entries in a map.
    pub fn open_map(dir: &Path, name: &str) -> io::Result<(Journal, Loaded)> {
        let mut entries = BTreeMap::new();
        let (journal, skipped) = Self::open(dir, name, |r| match r {
            Record::Put(k, v) => {
                entries.insert(k.to_owned(), v.to_owned());
            }
            Record::Delete(k) => {
                entries.remove(k);
            }
        })?;
        Ok((journal, Loaded { entries, skipped }))
    }

    /// Opens (creating the directory if needed) the journal `name` in `dir` and replays
    /// every record, in order, into `apply`; the owner keeps only what is live, so a large
    /// journal never sits in memory as text. Returns the number of unreadable lines.
    pub fn open(
        dir: &Path,
        name: &str,
        mut apply: impl FnMut(Record<'_>),
    ) -> io::Result<(Journal, usize)> {
        fs::create_dir_all(dir)?;
        let snap = dir.join(format!("{name}.snap"));
        let mut generations: Vec<u64> = fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let n = e.file_name();
                let n = n.to_str()?;
                n.strip_prefix(name)?
                    .strip_prefix(".wal.")?
                    .parse::<u64>()
                    .ok()
            })
            .collect();
        generations.sort_unstable();
        let mut reader = Replay {
            apply: &mut apply,
            skipped: 0,
            set_aside: Vec::new(),
        };
        let mut first_generation = 0;
        let mut snapshot_bytes = 0;
        if snap.exists() {
            snapshot_bytes = fs::metadata(&snap).map_or(0, |m| m.len());
            let mut head = String::new();
            BufReader::new(File::open(&snap)?).read_line(&mut head)?;
            first_generation = serde_json::from_str::<serde_json::Value>(&head)
                .ok()
                .and_then(|v| v.get("generation")?.as_u64())
                .ok_or_else(|| corrupt(&snap, 0, "no generation line"))?;
            if reader.file(&snap, head.len() as u64, false)? == Read::Stopped {
                // What follows the snapshot's damage comes after it: set aside too.
                for g in &generations {
                    reader.set_aside(&wal_path(dir, name, *g), 0)?;
                }
                generations.clear();
            }
        }
        generations.retain(|g| {
            if *g < first_generation {
                // Left over from a compaction that ended after its rename.
                let _ = fs::remove_file(wal_path(dir, name, *g));
                return false;
            }
            true
        });
        for (i, g) in generations.iter().enumerate() {
            let last = i + 1 == generations.len();
            if reader.file(&wal_path(dir, name, *g), 0, last)? == Read::Stopped {
                for later in &generations[i + 1..] {
                    reader.set_aside(&wal_path(dir, name, *later), 0)?;
                }
                generations.truncate(i + 1);
                break;
            }
        }
        let skipped = reader.skipped;
        if !reader.set_aside.is_empty() {
            tracing::error!(
                "journal {name}: started with what precedes the damage (--recover-journal); set aside: {}",
                reader.set_aside.join(", ")
            );
        }
        let generation = generations
            .last()
            .copied()
            .unwrap_or(first_generation)
            .max(first_generation);
        let path = wal_path(dir, name, generation);
        let mut file = OpenOptions::new().create(true).append(true).open(&path)?;
        let mut bytes = file.metadata().map_or(0, |m| m.len());
        if bytes > 0 && !ends_with_newline(&path, bytes)? {
            // A last record whole but for its newline: the next one starts on its own line.
            file.write_all(b"\n")?;
            bytes += 1;
        }
        let journal = Journal {
            dir: dir.to_owned(),
            name: name.to_owned(),
            log: Mutex::new(Log {
                file,
                generation,
                bytes,
            }),
            compacting: Mutex::new(()),
            snapshot_bytes: Mutex::new(snapshot_bytes),
            observer: std::sync::OnceLock::new(),
        };
        Ok((journal, skipped))
    }

    /// Records `key` = `value` (a JSON text). One write to the log; durable against a
    /// crash of the process once it returns.
    pub fn put(&self, key: &str, value: &str) -> io::Result<()> {
        let mut line = String::new();
        push_record(&mut line, &Record::Put(key, value));
        self.append(&line)?;
        self.tell(&[Record::Put(key, value)]);
        Ok(())
    }

    /// From now on `observer` is told of every change written (once set, for good;
    /// compaction rewrites nothing it has not been told).
    pub fn observe(&self, observer: Observer) {
        let _ = self.observer.set(observer);
    }

    /// Whether an observer is told of the changes (a cluster shares them).
    pub fn is_observed(&self) -> bool {
        self.observer.get().is_some()
    }

    fn tell(&self, records: &[Record<'_>]) {
        if let Some(o) = self.observer.get() {
            for r in records {
                o(*r);
            }
        }
    }

    pub fn delete(&self, key: &str) -> io::Result<()> {
        self.write_batch(&[Record::Delete(key)])
    }

    /// Records several changes with one write (a batch gathered by a periodic flush).
    pub fn write_batch(&self, records: &[Record<'_>]) -> io::Result<()> {
        let mut text = String::new();
        for r in records {
            push_record(&mut text, r);
        }
        if text.is_empty() {
            return Ok(());
        }
        self.append(&text)?;
        self.tell(records);
        Ok(())
    }

    fn append(&self, line: &str) -> io::Result<()> {
        let mut log = self.log.lock();
        log.file.write_all(line.as_bytes())?;
        log.bytes += line.len() as u64;
        Ok(())
    }

    /// Flushes the log to the disk (against power loss); called periodically.
    pub fn sync(&self) -> io::Result<()> {
        let file = self.log.lock().file.try_clone()?;
        file.sync_data()
    }

    /// Whether the log has grown past twice the last snapshot (and at least `min_bytes`).
    pub fn needs_compaction(&self, min_bytes: u64) -> bool {
        let bytes = self.log.lock().bytes;
        bytes >= min_bytes && bytes > 2 * *self.snapshot_bytes.lock()
    }

    /// Writes a snapshot of the owner's state and drops the logs it replaces. `dump` is
    /// called once, after writers have moved to a new log, and must pass every live
    /// key/value to the function it is given. Returns the number of records written.
    pub fn compact(
        &self,
        dump: impl FnOnce(&mut dyn FnMut(&str, &str) -> io::Result<()>) -> io::Result<()>,
    ) -> io::Result<u64> {
        let _one = self.compacting.lock();
        let generation = {
            let mut log = self.log.lock();
            let next = log.generation + 1;
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(wal_path(&self.dir, &self.name, next))?;
            log.file.sync_data()?;
            *log = Log {
                file,
                generation: next,
                bytes: 0,
            };
            next
        };
        let tmp = self.dir.join(format!("{}.snap.tmp", self.name));
        let mut out = BufWriter::new(File::create(&tmp)?);
        writeln!(out, "{{\"generation\":{generation}}}")?;
        let mut records = 0;
        let mut line = String::new();
        dump(&mut |k, v| {
            records += 1;
            line.clear();
            push_record(&mut line, &Record::Put(k, v));
            out.write_all(line.as_bytes())
        })?;
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        let bytes = file.metadata().map_or(0, |m| m.len());
        fs::rename(&tmp, self.dir.join(format!("{}.snap", self.name)))?;
        if let Ok(d) = File::open(&self.dir) {
            let _ = d.sync_all();
        }
        for g in 0..generation {
            let p = wal_path(&self.dir, &self.name, g);
            if p.exists() {
                fs::remove_file(p)?;
            }
        }
        *self.snapshot_bytes.lock() = bytes;
        debug!(journal = %self.name, generation, records, bytes, "journal compacted");
        Ok(records)
    }
}

fn wal_path(dir: &Path, name: &str, generation: u64) -> PathBuf {
    dir.join(format!("{name}.wal.{generation}"))
}

fn ends_with_newline(path: &Path, len: u64) -> io::Result<bool> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = File::open(path)?;
    f.seek(SeekFrom::Start(len - 1))?;
    let mut last = [0u8];
    f.read_exact(&mut last)?;
    Ok(last[0] == b'\n')
}

/// A record's line: `P\t"key"\tvalue\n` or `D\t"key"\n`, the key a JSON string.
fn push_record(out: &mut String, record: &Record<'_>) {
    let (tag, key, value) = match record {
        Record::Put(k, v) => ("P\t", k, Some(v)),
        Record::Delete(k) => ("D\t", k, None),
    };
    out.push_str(tag);
    crate::json::push_str(out, key);
    if let Some(v) = value {
        out.push('\t');
        out.push_str(v);
    }
    out.push('\n');
}

/// Whether journals damaged in the middle are opened with what precedes the damage
/// (`limes run --recover-journal`); otherwise opening fails and names the file and offset.
static RECOVER: AtomicBool = AtomicBool::new(false);

/// Opens damaged journals with what precedes the damage from now on, setting the rest
/// aside (`FILE.corrupt`) instead of refusing to start.
pub fn recover_damaged(on: bool) {
    RECOVER.store(on, Ordering::Relaxed);
}

fn corrupt(path: &Path, offset: u64, why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "journal {} is damaged at byte {offset} ({why}); nothing after it was read. \
             Start with --recover-journal to keep what precedes it (the rest is set aside \
             as {}.corrupt), or restore the state directory",
            path.display(),
            path.display()
        ),
    )
}

#[derive(Debug, PartialEq, Eq)]
enum Read {
    Whole,
    /// Damage found and recovery asked for: what follows was set aside.
    Stopped,
}

/// Replays files in order, checking each line.
struct Replay<'f, F: FnMut(Record<'_>)> {
    apply: &'f mut F,
    /// Torn last writes dropped.
    skipped: usize,
    /// Files (or their tails) moved aside by a recovery.
    set_aside: Vec<String>,
}

impl<F: FnMut(Record<'_>)> Replay<'_, F> {
    /// Replays `path` from byte `from`. A last line cut short in the newest log (a crash
    /// mid-write) is dropped: the file is cut before it, logged with its offset. Any other
    /// unreadable line is damage: an error naming file and offset, or with recovery, the
    /// file is cut there (the tail kept as `.corrupt`) and the caller sets aside the rest.
    fn file(&mut self, path: &Path, from: u64, newest: bool) -> io::Result<Read> {
        use std::io::{Seek, SeekFrom};
        let mut f = BufReader::new(File::open(path)?);
        f.seek(SeekFrom::Start(from))?;
        let mut offset = from;
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = f.read_until(b'\n', &mut line)?;
            if n == 0 {
                return Ok(Read::Whole);
            }
            let complete = line.last() == Some(&b'\n');
            let text = std::str::from_utf8(&line[..line.len() - usize::from(complete)]);
            let outcome = match text {
                Ok(t) => replay(t, &mut *self.apply),
                Err(_) => Err("not UTF-8"),
            };
            match outcome {
                Ok(()) => {}
                Err(why) if newest && !complete => {
                    warn!(
                        "journal {}: last write cut short by a crash ({why}) at byte {offset}: dropped",
                        path.display()
                    );
                    self.skipped += 1;
                    cut(path, offset)?;
                    return Ok(Read::Whole);
                }
                Err(why) => {
                    if !RECOVER.load(Ordering::Relaxed) {
                        return Err(corrupt(path, offset, why));
                    }
                    self.set_aside(path, offset)?;
                    return Ok(Read::Stopped);
                }
            }
            offset += n as u64;
        }
    }

    /// Moves `path` from byte `offset` on aside (copied to `PATH.corrupt`, cut there).
    fn set_aside(&mut self, path: &Path, offset: u64) -> io::Result<()> {
        let aside = PathBuf::from(format!("{}.corrupt", path.display()));
        fs::copy(path, &aside)?;
        if offset == 0 {
            fs::remove_file(path)?;
        } else {
            cut(path, offset)?;
        }
        warn!(
            "journal {}: set aside from byte {offset} on, as {}",
            path.display(),
            aside.display()
        );
        self.set_aside
            .push(format!("{} (from byte {offset})", path.display()));
        Ok(())
    }
}

fn cut(path: &Path, offset: u64) -> io::Result<()> {
    OpenOptions::new().write(true).open(path)?.set_len(offset)
}

/// Applies one line's record (an empty line is none); the reason when it is not one.
fn replay(line: &str, apply: &mut impl FnMut(Record<'_>)) -> Result<(), &'static str> {
    if line.is_empty() {
        return Ok(());
    }
    let mut parts = line.splitn(3, '\t');
    let op = parts.next();
    let key = parts
        .next()
        .map(|k| serde_json::from_str::<String>(k).map_err(|_| "a key that is not a JSON string"))
        .transpose()?;
    match (op, key, parts.next()) {
        (Some("P"), Some(k), Some(v)) => {
            serde_json::from_str::<serde::de::IgnoredAny>(v)
                .map_err(|_| "a value that is not JSON")?;
            apply(Record::Put(&k, v));
        }
        (Some("D"), Some(k), None) => apply(Record::Delete(&k)),
        _ => return Err("not a journal record"),
    }
    Ok(())
}

#[cfg(test)]
mod tests;
