use std::collections::BTreeMap;
use std::io::Write;

use proptest::prelude::*;

use super::*;

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "limes-journal-{tag}-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = fs::remove_dir_all(&d);
    d
}

#[test]
fn changes_survive_reopening() {
    let dir = temp_dir("reopen");
    let (j, loaded) = Journal::open_map(&dir, "t").expect("opens");
    assert!(loaded.entries.is_empty());
    j.put("a", r#"{"x":1}"#).expect("put");
    j.put("b\tweird\nkey", "2").expect("put");
    j.put("a", r#"{"x":3}"#).expect("put");
    j.put("c", "\"gone\"").expect("put");
    j.delete("c").expect("delete");
    drop(j); // no compaction, as after kill -9
    let (_, loaded) = Journal::open_map(&dir, "t").expect("reopens");
    let want: BTreeMap<String, String> = [("a", r#"{"x":3}"#), ("b\tweird\nkey", "2")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    assert_eq!(loaded.entries, want);
    assert_eq!(loaded.skipped, 0);
}

/// A batch replays as the same records written one by one would.
#[test]
fn a_batch_replays_as_its_records_in_order() {
    let dir = temp_dir("batch");
    let (j, _) = Journal::open_map(&dir, "t").expect("opens");
    j.write_batch(&[
        Record::Put("a", "1"),
        Record::Put("b", "2"),
        Record::Delete("a"),
        Record::Put("c\tkey", "3"),
    ])
    .expect("batch");
    j.write_batch(&[]).expect("an empty batch writes nothing");
    drop(j);
    let (_, loaded) = Journal::open_map(&dir, "t").expect("reopens");
    let keys: Vec<(&str, &str)> = loaded
        .entries
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(keys, [("b", "2"), ("c\tkey", "3")]);
}

#[test]
fn a_torn_last_line_is_skipped_and_later_records_are_kept() {
    let dir = temp_dir("torn");
    let (j, _) = Journal::open_map(&dir, "t").expect("opens");
    j.put("a", "1").expect("put");
    drop(j);
    let mut f = OpenOptions::new()
        .append(true)
        .open(dir.join("t.wal.0"))
        .expect("log exists");
    f.write_all(b"P\t\"b\"\t{\"half").expect("torn write");
    drop(f);
    let (j, loaded) = Journal::open_map(&dir, "t").expect("reopens");
    assert_eq!(loaded.skipped, 1);
    assert_eq!(loaded.entries.len(), 1);
    j.put("c", "3").expect("put after the torn line");
    drop(j);
    let (_, loaded) = Journal::open_map(&dir, "t").expect("reopens");
    assert_eq!(loaded.entries.keys().collect::<Vec<_>>(), ["a", "c"]);
}

#[test]
fn compaction_keeps_writes_made_while_it_runs() {
    let dir = temp_dir("compact");
    let (j, _) = Journal::open_map(&dir, "t").expect("opens");
    for i in 0..100 {
        j.put(&format!("k{i}"), &i.to_string()).expect("put");
    }
    let n = j
        .compact(|emit| {
            // A write lands in the new log while the snapshot is being written; the
            // snapshot still carries the old value.
            j.put("k1", "1001")?;
            j.delete("k2")?;
            for i in 0..100 {
                emit(&format!("k{i}"), &i.to_string())?;
            }
            Ok(())
        })
        .expect("compacts");
    assert_eq!(n, 100);
    let logs: Vec<_> = fs::read_dir(&dir)
        .expect("dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.contains(".wal."))
        .collect();
    assert_eq!(logs, ["t.wal.1"], "the old log is gone");
    drop(j);
    let (_, loaded) = Journal::open_map(&dir, "t").expect("reopens");
    assert_eq!(loaded.entries.len(), 99);
    assert_eq!(loaded.entries["k1"], "1001");
    assert!(!loaded.entries.contains_key("k2"));
}

#[test]
fn growth_asks_for_compaction() {
    let dir = temp_dir("grow");
    let (j, _) = Journal::open_map(&dir, "t").expect("opens");
    assert!(!j.needs_compaction(10));
    for i in 0..10 {
        j.put("k", &i.to_string()).expect("put");
    }
    assert!(j.needs_compaction(10));
    j.compact(|emit| emit("k", "9")).expect("compacts");
    assert!(!j.needs_compaction(10));
}

#[derive(Debug, Clone)]
enum Op {
    Put(u8, u16),
    Delete(u8),
    Compact,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..8, any::<u16>()).prop_map(|(k, v)| Op::Put(k, v)),
        2 => (0u8..8).prop_map(Op::Delete),
        1 => Just(Op::Compact),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Any sequence of writes, compactions and restarts reads back as the model map.
    #[test]
    fn replay_matches_the_model(ops in prop::collection::vec(op(), 1..60)) {
        let dir = temp_dir("prop");
        let (mut j, _) = Journal::open_map(&dir, "t").expect("opens");
        let mut model: BTreeMap<String, String> = BTreeMap::new();
        for op in ops {
            match op {
                Op::Put(k, v) => {
                    j.put(&format!("k{k}"), &v.to_string()).expect("put");
                    model.insert(format!("k{k}"), v.to_string());
                }
                Op::Delete(k) => {
                    j.delete(&format!("k{k}")).expect("delete");
                    model.remove(&format!("k{k}"));
                }
                Op::Compact => {
                    let snapshot = model.clone();
                    j.compact(|emit| {
                        for (k, v) in &snapshot {
                            emit(k, v)?;
                        }
                        Ok(())
                    }).expect("compacts");
                }
                Op::Reopen => {
                    drop(j);
                    let (again, loaded) = Journal::open_map(&dir, "t").expect("reopens");
                    prop_assert_eq!(&loaded.entries, &model);
                    j = again;
                }
            }
        }
        drop(j);
        let (_, loaded) = Journal::open_map(&dir, "t").expect("reopens");
        prop_assert_eq!(loaded.entries, model);
    }
}

#[test]
fn the_observer_hears_every_change_written_and_nothing_else() {
    let dir = temp_dir("observer");
    let (j, _) = Journal::open_map(&dir, "tables").unwrap();
    j.put("before", "0").unwrap();
    let heard = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
    let sink = heard.clone();
    j.observe(Box::new(move |r| {
        sink.lock().push(match r {
            Record::Put(k, v) => format!("put {k}={v}"),
            Record::Delete(k) => format!("delete {k}"),
        })
    }));
    j.put("a", "1").unwrap();
    j.write_batch(&[Record::Put("b", "2"), Record::Delete("a")])
        .unwrap();
    j.delete("b").unwrap();
    j.compact(|emit| emit("kept", "3")).unwrap();
    assert_eq!(
        *heard.lock(),
        ["put a=1", "put b=2", "delete a", "delete b"],
        "changes once each, in order; not what was there before, nor a compaction"
    );
}

#[test]
fn damage_is_named_and_recovered_from_only_when_asked() {
    for damage in [&b"P\t\"x\"\tnot json\n"[..], b"\xff\xfe garbage\n"] {
        let dir = temp_dir("damage");
        let (j, _) = Journal::open_map(&dir, "t").expect("opens");
        j.put("a", "1").expect("put");
        drop(j);
        let wal = dir.join("t.wal.0");
        let offset = std::fs::metadata(&wal).expect("wal").len();
        let mut f = OpenOptions::new().append(true).open(&wal).expect("wal");
        f.write_all(damage).expect("damage");
        f.write_all(b"P\t\"b\"\t2\n")
            .expect("a record after the damage");
        drop(f);
        // A later log, written after the damage.
        std::fs::write(dir.join("t.wal.1"), "P\t\"c\"\t3\n").expect("later log");

        let e = Journal::open_map(&dir, "t").expect_err("damage stops the open");
        let text = e.to_string();
        assert!(
            text.contains(&format!("{} is damaged at byte {offset}", wal.display())),
            "{text}"
        );
        assert!(text.contains("--recover-journal"), "{text}");

        super::recover_damaged(true);
        let opened = Journal::open_map(&dir, "t");
        super::recover_damaged(false);
        let (j, loaded) = opened.expect("recovered");
        // What precedes the damage, nothing after it.
        assert_eq!(loaded.entries.keys().collect::<Vec<_>>(), ["a"]);
        assert_eq!(std::fs::metadata(&wal).expect("wal").len(), offset);
        assert!(dir.join("t.wal.0.corrupt").exists());
        assert!(dir.join("t.wal.1.corrupt").exists() && !dir.join("t.wal.1").exists());
        j.put("d", "4").expect("writes go on");
        drop(j);
        let (_, loaded) = Journal::open_map(&dir, "t").expect("opens cleanly now");
        assert_eq!(loaded.entries.keys().collect::<Vec<_>>(), ["a", "d"]);
    }
}
