use super::*;

fn put(k: &str, v: &str) -> Option<Change> {
    Some(Change::Put {
        key: k.into(),
        value: v.into(),
    })
}

#[test]
fn events_apply_once_in_revision_order() {
    let mut i = Index::default();
    assert_eq!(i.apply("a", "1", 5), put("a", "1"));
    assert_eq!(
        i.apply("a", "1", 5),
        None,
        "the same event again (a resumed watch)"
    );
    assert_eq!(i.apply("a", "0", 4), None, "an older write");
    assert_eq!(i.apply("a", "2", 7), put("a", "2"));
    assert_eq!(
        i.apply("a", "2", 8),
        None,
        "rewritten unchanged: nothing to do"
    );
    assert_eq!(i.delete("a", 6), None, "a delete older than the value");
    assert_eq!(i.delete("a", 9), Some(Change::Delete { key: "a".into() }));
    assert_eq!(i.delete("a", 10), None, "already gone");
    assert_eq!(i.revision(), 10);
    assert!(i.is_empty());
}

#[test]
fn a_reset_says_what_changed_while_the_watch_was_lost() {
    let mut i = Index::default();
    i.apply("kept", "1", 1);
    i.apply("changed", "old", 2);
    i.apply("gone", "x", 3);
    let mut changes = i.reset(
        vec![
            ("kept".into(), "1".into(), 1),
            ("changed".into(), "new".into(), 40),
            ("new".into(), "n".into(), 41),
        ],
        50,
    );
    changes.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
    assert_eq!(
        changes,
        vec![
            Change::Delete { key: "gone".into() },
            put("changed", "new").unwrap(),
            put("new", "n").unwrap(),
        ]
    );
    assert_eq!(i.revision(), 50);
    assert_eq!(i.len(), 3);
    assert_eq!(i.get("changed"), Some("new"));
    assert_eq!(
        i.apply("new", "n2", 45),
        None,
        "older than the reset's read"
    );
}

#[test]
fn a_write_of_this_node_comes_back_as_nothing_to_do() {
    let mut i = Index::default();
    i.apply("other", "x", 3);
    i.written("mine", "1", 5);
    assert_eq!(i.revision(), 3, "a resumed watch still starts after 3");
    assert_eq!(i.apply("mine", "1", 5), None, "its own event");
    assert_eq!(i.apply("mine", "0", 4), None, "another node's older write");
    assert_eq!(i.apply("mine", "2", 6), put("mine", "2"), "a newer one");
    i.written("mine", "stale", 5);
    assert_eq!(i.get("mine"), Some("2"), "a write older than what is held");
}
