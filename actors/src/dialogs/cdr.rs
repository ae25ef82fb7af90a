//! Call detail records: one JSON line per call, answered or not, with the seed's fields
//! (`CallID`, `From`, `To`, `SetupTime`, `AnswerTime`, `EndTime`, `BillSec`) and who ended it.
//! Lines are buffered and written by the state thread once a second (no write per call on
//! the message path); the file is rotated by size, keeping [`KEEP`] old files.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use limes_cluster::json::{self, Object};
use parking_lot::Mutex;
use serde::Serialize;

/// Rotated files kept beside the current one (`cdr.jsonl.1` .. `cdr.jsonl.5`).
pub const KEEP: usize = 5;

/// Bytes of records kept in memory while the file cannot be written; past it they are
/// dropped (and the failure logged) rather than growing without bound.
pub const MAX_PENDING_BYTES: usize = 32 << 20;

/// Who or what ended a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EndedBy {
    /// The caller's BYE, or its CANCEL before an answer.
    Caller,
    /// The callee's BYE.
    Callee,
    /// The call failed before an answer (a 3xx-6xx final response).
    Failure,
    /// Nobody answered in time (Timer C, RFC 3261 §16.8).
    NoAnswer,
    /// The dialog's lifetime ran out; BYEs sent to both sides.
    Timeout,
    /// No session refresh came within the session interval (RFC 4028); BYEs sent.
    SessionExpired,
    /// `dlg.end_dlg`; BYEs sent to both sides.
    Operator,
    /// The node stopped after its drain time; BYEs sent to both sides.
    Shutdown,
    /// Refused by a call limit before it was relayed.
    Limit,
    /// The dialog's actor failed; its counts were given back by its supervisor.
    ActorFailure,
}

impl EndedBy {
    /// Every way a call ends, for metrics that list each from the start.
    pub const ALL: [Self; 10] = [
        Self::Caller,
        Self::Callee,
        Self::Failure,
        Self::NoAnswer,
        Self::Timeout,
        Self::SessionExpired,
        Self::Operator,
        Self::Shutdown,
        Self::Limit,
        Self::ActorFailure,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Caller => "caller",
            Self::Callee => "callee",
            Self::Failure => "failure",
            Self::NoAnswer => "no_answer",
            Self::Timeout => "timeout",
            Self::SessionExpired => "session_expired",
            Self::Operator => "operator",
            Self::Shutdown => "shutdown",
            Self::Limit => "limit",
            Self::ActorFailure => "actor_failure",
        }
    }
}

/// A dialog variable's value: a string or an integer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum Var {
    Int(i64),
    Str(String),
}

/// One call's record. Times are Unix seconds, as the seed's `$TS`. Text is borrowed from
/// the call when written.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Cdr<'a> {
    pub event: &'static str,
    /// Unique per record (node name, start time, dialog number): a collector that gets a
    /// record twice keeps one.
    pub id: Cow<'a, str>,
    pub node: Cow<'a, str>,
    #[serde(rename = "CallID")]
    pub call_id: Cow<'a, str>,
    pub from: Cow<'a, str>,
    pub to: Cow<'a, str>,
    pub request_uri: Cow<'a, str>,
    pub caller: Cow<'a, str>,
    pub source: Cow<'a, str>,
    pub class: Option<Cow<'a, str>>,
    pub setup_time: u64,
    pub answer_time: Option<u64>,
    pub end_time: u64,
    pub bill_sec: u64,
    /// The final response of the INVITE (0: none was sent, as for a node restart).
    pub status: u16,
    pub ended_by: EndedBy,
    pub profiles: Vec<String>,
    pub variables: Cow<'a, BTreeMap<String, Var>>,
}

impl Cdr<'_> {
    /// The record as one line of JSON: the text serde_json writes for it (a test holds
    /// them equal), written by hand on the state thread for every call.
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(512);
        let mut o = Object::new(&mut out);
        o.str("Event", self.event)
            .str("Id", &self.id)
            .str("Node", &self.node)
            .str("CallID", &self.call_id)
            .str("From", &self.from)
            .str("To", &self.to)
            .str("RequestUri", &self.request_uri)
            .str("Caller", &self.caller)
            .str("Source", &self.source)
            .opt_str("Class", self.class.as_deref())
            .int("SetupTime", self.setup_time)
            .opt_int("AnswerTime", self.answer_time)
            .int("EndTime", self.end_time)
            .int("BillSec", self.bill_sec)
            .int("Status", self.status)
            .str("EndedBy", self.ended_by.as_str());
        json::push_str_array(
            o.member("Profiles"),
            self.profiles.iter().map(String::as_str),
        );
        push_vars(o.member("Variables"), &self.variables);
        o.end();
        out
    }
}

/// Dialog variables as a JSON object (as serde_json writes the map).
pub fn push_vars(out: &mut String, vars: &BTreeMap<String, Var>) {
    let mut o = Object::new(out);
    for (name, value) in vars {
        let out = o.member_escaped(name);
        match value {
            Var::Int(i) => out.push_str(itoa::Buffer::new().format(*i)),
            Var::Str(s) => json::push_str(out, s),
        }
    }
    o.end();
}

/// The CDR file: lines buffered in memory until [`CdrLog::flush`].
pub struct CdrLog {
    path: Option<PathBuf>,
    rotate_bytes: u64,
    out: Mutex<Out>,
}

struct Out {
    file: Option<BufWriter<File>>,
    size: u64,
    /// Lines not yet handed to the file.
    pending: Vec<u8>,
}

impl CdrLog {
    /// `path`: none keeps no file (records are still counted and logged at debug level).
    pub fn open(path: Option<&Path>, rotate_bytes: u64) -> std::io::Result<Self> {
        let file = match path {
            Some(p) => Some(open_append(p)?),
            None => None,
        };
        let size = file
            .as_ref()
            .and_then(|f| f.get_ref().metadata().ok())
            .map_or(0, |m| m.len());
        Ok(Self {
            path: path.map(Path::to_path_buf),
            rotate_bytes,
            out: Mutex::new(Out {
                file,
                size,
                pending: Vec::new(),
            }),
        })
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Queues one record (no system call).
    pub fn append(&self, cdr: &Cdr<'_>) {
        self.append_line(&cdr.to_json());
    }

    /// Queues one record already written as JSON.
    pub fn append_line(&self, json: &str) {
        if self.path.is_none() {
            return;
        }
        let mut out = self.out.lock();
        out.pending.extend_from_slice(json.as_bytes());
        out.pending.push(b'\n');
    }

    /// Writes the queued records, rotating first when the file has grown past its size.
    pub fn flush(&self) -> std::io::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let mut out = self.out.lock();
        if out.pending.is_empty() {
            return Ok(());
        }
        if self.rotate_bytes > 0 && out.size >= self.rotate_bytes {
            if let Some(mut f) = out.file.take() {
                f.flush()?;
            }
            rotate(path)?;
            out.file = Some(open_append(path)?);
            out.size = 0;
        }
        let pending = std::mem::take(&mut out.pending);
        let written = match &mut out.file {
            Some(f) => Ok(f),
            None => open_append(path).map(|f| out.file.insert(f)),
        }
        .and_then(|f| f.write_all(&pending).and_then(|()| f.flush()));
        match written {
            Ok(()) => {
                out.size += pending.len() as u64;
                Ok(())
            }
            Err(e) => {
                // Kept for the next try, within a bound; a partly written batch may be
                // written again (at least once, and each record has its Id).
                out.file = None;
                if pending.len() + out.pending.len() <= MAX_PENDING_BYTES {
                    let later = std::mem::replace(&mut out.pending, pending);
                    out.pending.extend_from_slice(&later);
                    Err(e)
                } else {
                    Err(std::io::Error::other(format!(
                        "{e}; {} bytes of records dropped (over {MAX_PENDING_BYTES} waiting)",
                        pending.len()
                    )))
                }
            }
        }
    }
}

fn open_append(path: &Path) -> std::io::Result<BufWriter<File>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    Ok(BufWriter::new(
        OpenOptions::new().create(true).append(true).open(path)?,
    ))
}

/// `cdr.jsonl` -> `cdr.jsonl.1`, `.1` -> `.2` ... the oldest beyond [`KEEP`] dropped.
fn rotate(path: &Path) -> std::io::Result<()> {
    let numbered = |n: usize| {
        let mut p = path.as_os_str().to_owned();
        p.push(format!(".{n}"));
        PathBuf::from(p)
    };
    let _ = std::fs::remove_file(numbered(KEEP));
    for n in (1..KEEP).rev() {
        let from = numbered(n);
        if from.exists() {
            std::fs::rename(&from, numbered(n + 1))?;
        }
    }
    std::fs::rename(path, numbered(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cdr(n: u64) -> Cdr<'static> {
        Cdr {
            event: "Call_End",
            id: format!("node-{n}").into(),
            node: "node".into(),
            call_id: format!("call-{n}").into(),
            from: "sip:6001@example.com".into(),
            to: "sip:6002@example.com".into(),
            request_uri: "sip:6002@example.com".into(),
            caller: "6001".into(),
            source: "subscriber".into(),
            class: Some("local".into()),
            setup_time: 100,
            answer_time: Some(102),
            end_time: 110,
            bill_sec: 8,
            status: 200,
            ended_by: EndedBy::Caller,
            profiles: vec!["total".into()],
            variables: Cow::Owned(BTreeMap::from([("account".into(), Var::Int(7))])),
        }
    }

    #[test]
    fn the_seeds_fields_one_line_each() {
        let dir = tempfile::tempdir().unwrap();
        let log = CdrLog::open(Some(&dir.path().join("cdr.jsonl")), 0).unwrap();
        log.append(&cdr(1));
        log.append(&cdr(2));
        assert_eq!(
            std::fs::read_to_string(dir.path().join("cdr.jsonl")).unwrap(),
            "",
            "nothing written before the flush"
        );
        log.flush().unwrap();
        let text = std::fs::read_to_string(dir.path().join("cdr.jsonl")).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        let first = &lines[0];
        for field in [
            "CallID",
            "From",
            "To",
            "SetupTime",
            "AnswerTime",
            "EndTime",
            "BillSec",
        ] {
            assert!(first.get(field).is_some(), "{field} missing: {first}");
        }
        assert_eq!(first["Event"], "Call_End");
        assert_eq!(first["EndedBy"], "caller");
        assert_eq!(first["BillSec"], 8);
        assert_eq!(first["Variables"]["account"], 7);
    }

    #[test]
    fn records_are_written_as_serde_json_writes_them() {
        let mut c = cdr(3);
        for record in [c.clone(), {
            c.class = None;
            c.answer_time = None;
            c.from = "\"Bob \\ Co\" <sip:bob@example.com>;tag=a\tb".into();
            c.profiles = vec!["total".into(), "user=bob".into()];
            c.variables = Cow::Owned(BTreeMap::from([
                ("a".into(), Var::Str("x\ny".into())),
                ("the \"key\"".into(), Var::Int(0)),
                ("n".into(), Var::Int(-5)),
            ]));
            c.ended_by = EndedBy::ActorFailure;
            c
        }] {
            assert_eq!(record.to_json(), serde_json::to_string(&record).unwrap());
        }
    }

    #[test]
    fn rotation_keeps_five_old_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cdr.jsonl");
        let log = CdrLog::open(Some(&path), 1).unwrap();
        for n in 0..8 {
            log.append(&cdr(n));
            log.flush().unwrap();
        }
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "cdr.jsonl",
                "cdr.jsonl.1",
                "cdr.jsonl.2",
                "cdr.jsonl.3",
                "cdr.jsonl.4",
                "cdr.jsonl.5"
            ]
        );
        let newest = std::fs::read_to_string(&path).unwrap();
        assert!(newest.contains("call-7"));
        assert!(std::fs::read_to_string(dir.path().join("cdr.jsonl.1"))
            .unwrap()
            .contains("call-6"));
    }
}
