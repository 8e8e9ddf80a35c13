//! `check_resolver` on the example resolvers: a sound one passes; a trapping one, an invalid
//! one and a violated property are each caught with the reason.

use converge_core::check::{CheckOptions, FindingKind, Property, check_resolver};
use converge_core::{ModuleError, Outcome};
use converge_udf_examples::{self as examples, adversarial};
use serde_json::json;

fn options(sample: serde_json::Value) -> CheckOptions {
    let mut o = CheckOptions::new(sample);
    o.conflicts = 60;
    o.simulation_seeds = 4;
    o
}

fn order() -> serde_json::Value {
    json!({"id": "order-1", "pk": "alice", "version": 3, "status": "open", "lines": [{"sku": "a", "qty": 1}]})
}

#[test]
fn a_sound_resolver_passes_with_its_figures() {
    let mut steps = 0;
    let report = check_resolver(examples::HIGHEST_VERSION, &options(order()), &mut |_| {
        steps += 1
    })
    .expect("installs");
    assert!(report.passed(), "{:#?}", report.findings);
    assert_eq!(report.calls, 120);
    assert!(
        report.decisions.pick > 0 && report.decisions.delete > 0,
        "{:?}",
        report.decisions
    );
    assert!(report.fuel.p99 > 0 && report.fuel.max < report.fuel.limit);
    assert!(!report.fuel.close_to_limit);
    assert_eq!(report.simulation.converged, 4);
    assert_eq!(steps, 64, "one progress step per conflict and per seed");
}

#[test]
fn traps_and_invalid_answers_are_caught_with_their_reasons() {
    let report =
        check_resolver(adversarial::PANIC, &options(order()), &mut |_| {}).expect("installs");
    assert!(!report.passed());
    let trap = &report.findings[0];
    assert_eq!(trap.kind, FindingKind::Trap);
    assert_eq!(trap.message, "trap: cart order-1 cannot be merged");
    assert_eq!(trap.count, 60);
    assert!(trap.example.contains(r#""id":"order-1""#));
    // Trapping in every conflict still converges: everything goes to the feed alike.
    assert_eq!(report.simulation.converged, 4);

    let report =
        check_resolver(adversarial::NOT_JSON, &options(order()), &mut |_| {}).expect("installs");
    assert_eq!(report.findings[0].kind, FindingKind::InvalidAnswer);
    assert_eq!(report.findings[0].message, "invalid output: not JSON");

    let report =
        check_resolver(adversarial::CHANGES_ID, &options(order()), &mut |_| {}).expect("installs");
    assert_eq!(
        report.findings[0].message,
        "invalid output: merge changes the id"
    );
    assert!(!report.passed());
}

#[test]
fn a_violated_property_is_caught_and_a_refused_module_is_an_error() {
    // keep-live lets a flagged live version beat a delete: "deletes always win" is wrong for it.
    let mut o = options(json!({"id": "doc-1", "pk": "p", "keepLive": true, "body": "x"}));
    o.properties
        .push(Property::new("a delete among the versions wins", |r| {
            let any_delete = r.versions.iter().any(Option::is_none);
            if any_delete && r.outcome != &Outcome::Delete {
                Err(format!("decided {:?}", r.outcome))
            } else {
                Ok(())
            }
        }));
    let report = check_resolver(examples::KEEP_LIVE, &o, &mut |_| {}).expect("installs");
    let violated: Vec<_> = report
        .findings
        .iter()
        .filter(|f| f.kind == FindingKind::PropertyViolated)
        .collect();
    assert!(!violated.is_empty(), "{:#?}", report.findings);
    assert!(
        violated[0]
            .message
            .starts_with("a delete among the versions wins: decided Pick(")
    );
    assert!(!report.passed());

    // cart-merge keeps every line present in all versions (by SKU) unless a removal marker
    // newer than the line says otherwise; a sample without markers keeps them all.
    let mut o = options(json!({"id": "cart-1", "pk": "alice", "customerId": "alice",
        "lines": [{"sku": "a", "qty": 1, "updated": 5}, {"sku": "b", "qty": 2, "updated": 6}],
        "removed": {}}));
    o.properties.push(Property::keeps("/lines", Some("sku")));
    let report = check_resolver(examples::CART_MERGE, &o, &mut |_| {}).expect("installs");
    assert!(report.passed(), "{:#?}", report.findings);
    assert!(report.decisions.merge > 0);

    assert!(matches!(
        check_resolver(adversarial::BAD_IMPORT, &o, &mut |_| {}),
        Err(ModuleError::Import { .. })
    ));
}
