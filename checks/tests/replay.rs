//! Every committed seed and every crash input the fuzzers found (`fuzz/seeds/<target>`,
//! `fuzz/crashes/<target>`) replayed through the checks, plus a short deterministic sweep of
//! pseudo-random inputs per check, in the ordinary test suite.

use converge_udf_sdk::fuzz::pseudo_random_bytes;
use std::path::Path;

type Check = fn(&[u8]);

const CHECKS: [(&str, Check); 6] = [
    ("converge", converge_checks::converge::check),
    ("http_api", converge_checks::http_api::check),
    ("lww_order", converge_checks::lww_order::check),
    ("sdk_input", converge_checks::sdk_input::check),
    ("sandbox", converge_checks::sandbox::check),
    ("store_model", converge_checks::store_model::check),
];

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

#[test]
fn committed_seeds_and_crash_inputs_replay_clean() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut replayed = 0;
    for (target, check) in CHECKS {
        for kind in ["seeds", "crashes"] {
            for (path, bytes) in inputs(&fuzz.join(kind).join(target)) {
                let outcome = std::panic::catch_unwind(|| check(&bytes));
                assert!(outcome.is_ok(), "{path} fails {target}'s check again");
                replayed += 1;
            }
        }
    }
    assert!(replayed > 0, "no seed found under {}", fuzz.display());
}

#[test]
fn a_deterministic_sweep_of_each_check_finds_nothing() {
    let mut seed = 0x853c_49e6_748f_ea9bu64;
    let mut bytes = |n: usize| pseudo_random_bytes(&mut seed, n);
    for (target, check) in CHECKS {
        let runs = match target {
            "sandbox" => 60,
            "converge" => 100,
            _ => 400,
        };
        for i in 0..runs {
            let input = bytes(64 + i * 7 % 2000);
            let outcome = std::panic::catch_unwind(|| check(&input));
            assert!(outcome.is_ok(), "{target} failed on sweep input {i}");
        }
    }
}

/// The sandbox sweep reaches calls, not only refusals: generated modules get installed and
/// end in decisions and in feed reasons.
#[test]
fn generated_modules_are_called_not_only_refused() {
    let mut seed = 0x1234_5678_9abc_def1u64;
    let mut outcomes = std::collections::BTreeMap::<String, usize>::new();
    for i in 0..300 {
        let input = pseudo_random_bytes(&mut seed, 256 + i * 13 % 3000);
        if let Some(o) = converge_checks::sandbox::run(&input) {
            let kind = match o {
                converge_core::Outcome::Failed(r) => r.split(':').next().unwrap_or("").to_owned(),
                other => format!("{other:?}")
                    .split('(')
                    .next()
                    .unwrap_or("")
                    .to_owned(),
            };
            *outcomes.entry(kind).or_default() += 1;
        }
    }
    println!("{outcomes:?}");
    assert!(
        outcomes.values().sum::<usize>() >= 20,
        "too few calls ran: {outcomes:?}"
    );
}

/// Runs `check` over `runs` pseudo-random inputs from `seed` and asserts that every outcome of
/// `must` came up at least once, so the sweep (and a fuzzer's early inputs) gets past the
/// refusals into deep states.
fn sweep_reaches(
    mut seed: u64,
    runs: usize,
    check: fn(&[u8]) -> std::collections::BTreeMap<String, usize>,
    must: &[&str],
) {
    let mut reached = std::collections::BTreeMap::<String, usize>::new();
    for i in 0..runs {
        let input = pseudo_random_bytes(&mut seed, 64 + i * 17 % 2000);
        for (k, n) in check(&input) {
            *reached.entry(k).or_default() += n;
        }
    }
    println!("{reached:#?}");
    for m in must {
        assert!(reached.contains_key(*m), "the sweep never reached {m:?}");
    }
}

/// The store-model sweep gets past refusals: items are written, read, replaced and deleted
/// under preconditions, containers dropped, and the store reopened.
#[test]
fn store_model_sweep_reaches_deep_states() {
    sweep_reaches(
        0x2545_f491_4f6c_dd1d,
        200,
        converge_checks::store_model::run,
        &[
            "Create: ok",
            "Upsert: ok",
            "Replace: ok",
            "Replace: precondition failed",
            "Delete: ok",
            "Read: ok",
            "List: ok",
            "Changes: ok",
            "DropContainer: ok",
            "Reopen: ok",
            "Create: already exists",
            "Create: invalid input",
        ],
    );
}

/// The HTTP sweep reaches every route with successes and with the errors the contract lists.
#[test]
fn http_api_sweep_reaches_every_route() {
    sweep_reaches(
        0x9e37_79b9_7f4a_7c15,
        300,
        converge_checks::http_api::run,
        &[
            "healthz GET 200",
            "container PUT 201",
            "container DELETE 204",
            "items POST 201",
            "items POST 409",
            "item GET 200",
            "item PUT 200",
            "item PUT 412",
            "item DELETE 204",
            "conflicts GET 200",
            "conflict GET 200",
            "changes GET 400",
            "log GET 200",
            "resolver PUT 201",
            "resolver PUT 400",
            "item PATCH 405",
        ],
    );
}
