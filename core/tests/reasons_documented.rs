//! The conflicts-feed reasons in `converge_core::reason` and in `docs/abi.md` are the same set:
//! applications match on these texts, so neither may drift from the other.

use converge_core::reason::{self, ReasonKind};

fn abi_doc() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/abi.md");
    std::fs::read_to_string(path).expect("docs/abi.md is readable")
}

/// The texts in backquotes of the last column of the ABI's "Limits" table.
fn limit_table_reasons(doc: &str) -> Vec<String> {
    let table = doc
        .split("| limit (definition field) | default | allowed | when exceeded: feed reason |")
        .nth(1)
        .expect("the Limits table");
    let reasons: Vec<String> = table
        .lines()
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .filter_map(|row| row.trim_end_matches('|').rsplit('|').next())
        .filter_map(|cell| cell.split('`').nth(1).map(str::to_owned))
        .collect();
    assert!(
        reasons.len() >= 5,
        "the Limits table's reasons: {reasons:?}"
    );
    reasons
}

#[test]
fn every_reason_the_store_writes_is_documented() {
    // Sentences wrap across lines; compare with single spaces.
    let doc = abi_doc().split_whitespace().collect::<Vec<_>>().join(" ");
    let fixed = [
        reason::MANUAL_POLICY,
        reason::RESOLVER_MISSING,
        reason::CONTAINER_REPLACED,
        reason::OUT_OF_FUEL,
        reason::MEMORY_LIMIT,
        reason::STACK_OVERFLOW,
        reason::INPUT_TOO_LARGE,
    ];
    for text in fixed {
        assert!(
            doc.contains(&format!("`{text}`")),
            "{text:?} is not in docs/abi.md"
        );
    }
    for prefix in [reason::TRAP, reason::INVALID_OUTPUT, reason::DEFERRED] {
        assert!(
            doc.contains(&format!("`{prefix}")),
            "{prefix:?} is not in docs/abi.md"
        );
    }
}

#[test]
fn every_documented_limit_reason_is_recognised() {
    for text in limit_table_reasons(&abi_doc()) {
        let kind = reason::kind(&text);
        assert!(
            kind.is_some_and(|k| ReasonKind::FROM_A_CALL.contains(&k)),
            "docs/abi.md names {text:?}, which converge_core::reason does not know as a call's reason"
        );
    }
}
