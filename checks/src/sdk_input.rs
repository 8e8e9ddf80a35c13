//! The SDK's input decoding and the example resolvers: arbitrary bytes into the decoders, and
//! arbitrary conflicts (the SDK's `arbitrary` feature) through every example resolver. No
//! panic; every answer has the ABI's shape; a merge keeps the id; a pick is in range.

use crate::valid_answer;
use arbitrary::{Arbitrary, Unstructured};
use converge_udf_sdk::fuzz::check_decision;
use converge_udf_sdk::view::ConflictView;
use converge_udf_sdk::{Conflict, Decision, resolve_json};

type Resolver = fn(&Conflict) -> Decision;

/// The example resolvers' typed entry points.
pub const EXAMPLES: [(&str, Resolver); 4] = [
    ("cart-merge", cart_merge::merge_carts),
    ("highest-version", highest_version::highest_version),
    ("field-merge", field_merge::merge_fields),
    ("keep-live", keep_live::keep_live),
];

/// Checks the decoders on `data` itself, then the resolvers on a conflict built from it.
pub fn check(data: &[u8]) {
    // Raw bytes: decoding never panics and whatever comes back is a valid answer.
    let _ = ConflictView::parse(data);
    for (name, f) in EXAMPLES {
        let out = resolve_json(data, f);
        if let Err(why) = valid_answer(out.as_bytes()) {
            panic!("{name} on raw input answered {out:?}: {why}");
        }
    }
    let raw = highest_version::resolve_bytes(data);
    if let Err(why) = valid_answer(&raw) {
        panic!("highest-version's raw entry answered {raw:?}: {why}");
    }

    // A well-formed conflict: typed and raw decoding agree, answers are valid decisions.
    let Ok(c) = Conflict::arbitrary(&mut Unstructured::new(data)) else {
        return;
    };
    let input = serde_json::to_vec(&c).expect("a conflict serializes");
    let view = ConflictView::parse(&input).unwrap_or_else(|e| panic!("view refused {c:?}: {e}"));
    assert_eq!(view.versions.len(), c.versions.len());
    for (v, t) in view.versions.iter().zip(&c.versions) {
        assert_eq!(v.deleted, t.deleted, "deleted differs");
        assert_eq!(v.item.is_some(), t.item.is_some(), "item presence differs");
    }
    assert_eq!(
        String::from_utf8_lossy(&highest_version::resolve_bytes(&input)),
        resolve_json(&input, highest_version::highest_version),
        "highest-version's raw and typed entries disagree on {c:?}"
    );
    for (name, f) in EXAMPLES {
        let decision = f(&c);
        if let Err(why) = check_decision(&c, &decision, "/pk") {
            panic!("{name} answered {decision:?} to {c:?}: {why}");
        }
    }
}
