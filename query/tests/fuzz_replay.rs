//! The `query` fuzz target's check (`tests/model/check.rs`) in the ordinary test suite:
//! every committed seed and crash input (`fuzz/seeds/query`, `fuzz/crashes/query`)
//! replayed, plus a deterministic sweep of pseudo-random inputs in each mode.

#[allow(dead_code)]
mod model;

use model::Rng;
use model::check::check;
use std::path::Path;

/// The files of `dir`, sorted by name (none when it does not exist).
fn inputs(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(String, Vec<u8>)> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .filter_map(|e| {
            Some((
                e.path().display().to_string(),
                std::fs::read(e.path()).ok()?,
            ))
        })
        .collect();
    out.sort();
    out
}

/// Seeds and crash inputs of the `query` target still pass its check.
#[test]
fn committed_query_seeds_and_crash_inputs_replay_clean() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut replayed = 0;
    for kind in ["seeds", "crashes"] {
        for (path, bytes) in inputs(&fuzz.join(kind).join("query")) {
            let outcome = std::panic::catch_unwind(|| check(&bytes));
            assert!(outcome.is_ok(), "{path} fails the query check again");
            replayed += 1;
        }
    }
    assert!(replayed > 0, "no seed under {}", fuzz.display());
}

/// Pseudo-random inputs in every mode (the first byte picks it) find nothing.
#[test]
fn a_deterministic_sweep_of_the_query_check_finds_nothing() {
    let mut rng = Rng::new(0x5eed);
    for i in 0..800 {
        let n = 1 + rng.below(400);
        let mut input: Vec<u8> = (0..n).map(|_| rng.below(256) as u8).collect();
        input[0] = (i % 8) as u8;
        if i % 8 < 4 && i % 3 == 0 {
            // Text mode with query-shaped text: keywords and symbols, shuffled.
            let words = [
                "SELECT",
                "VALUE",
                "*",
                "FROM",
                "c",
                "WHERE",
                "c.n",
                ">",
                "1",
                "ORDER BY",
                "GROUP BY",
                "c.k",
                ",",
                "COUNT(1)",
                "DISTINCT",
                "TOP",
                "2",
                "OFFSET",
                "LIMIT",
                "(",
                ")",
                "[",
                "]",
                "{a: 1}",
                "JOIN",
                "t IN c.tags",
                "@a",
                "'x'",
                "AND",
                "NOT",
                "IN",
                "BETWEEN",
                "LIKE",
                "??",
                "?",
                ":",
                "x IN c.arr",
                "c.o.a",
                "-",
                "+",
            ];
            let text: Vec<&str> = (0..rng.range(2, 14)).map(|_| *rng.pick(&words)).collect();
            input.truncate(1);
            input.extend_from_slice(text.join(" ").as_bytes());
        }
        let outcome = std::panic::catch_unwind(|| check(&input));
        assert!(outcome.is_ok(), "sweep input {i} fails: {input:?}");
    }
}
