//! The fuzz targets' seed corpora (and every crash ever committed there) run as ordinary
//! tests, and random inputs exercise the same drivers on every test run.

use limes_sip::fuzzing::{parse_and_forward, transaction_ops};
use proptest::prelude::*;

fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = format!("{}/fuzz/seeds/{target}", env!("CARGO_MANIFEST_DIR"));
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .map(|e| {
            let path = e.unwrap().path();
            (path.display().to_string(), std::fs::read(&path).unwrap())
        })
        .collect();
    out.sort();
    out
}

#[test]
fn parse_forward_seed_corpus() {
    let all = seeds("parse_forward");
    assert!(all.len() >= 60);
    for (name, data) in all {
        let r = std::panic::catch_unwind(|| parse_and_forward(&data));
        assert!(r.is_ok(), "{name}");
    }
}

#[test]
fn transaction_ops_seed_corpus() {
    let all = seeds("transaction_ops");
    assert!(!all.is_empty());
    for (name, data) in all {
        let r = std::panic::catch_unwind(|| transaction_ops(&data));
        assert!(r.is_ok(), "{name}");
    }
}

proptest! {
    #[test]
    fn parse_forward_random_bytes(data in prop::collection::vec(any::<u8>(), 0..512)) {
        parse_and_forward(&data);
    }

    /// Random edits of a real message: far more of these reach the deep parts of the
    /// parser than random bytes do.
    #[test]
    fn parse_forward_mutated_messages(
        file in prop::sample::select(seeds("parse_forward")),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let mut data = file.1;
        for (at, byte) in edits {
            if !data.is_empty() {
                let i = at.index(data.len());
                data[i] = byte;
            }
        }
        parse_and_forward(&data);
    }

    #[test]
    fn transaction_ops_random(data in prop::collection::vec(any::<u8>(), 0..256)) {
        transaction_ops(&data);
    }
}
