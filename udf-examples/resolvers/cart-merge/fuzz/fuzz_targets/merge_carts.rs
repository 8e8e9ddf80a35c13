//! cart-merge under arbitrary conflicts: the host accepts every answer, and merging a merged
//! cart again changes nothing.
#![no_main]

use converge_udf_sdk::fuzz::check_decision;
use converge_udf_sdk::{Conflict, Decision};

libfuzzer_sys::fuzz_target!(|conflict: Conflict| {
    let decision = cart_merge::merge_carts(&conflict);
    // 1. What every resolver must do: answer something the host accepts.
    if let Err(why) = check_decision(&conflict, &decision, "/pk") {
        panic!("{why}: {conflict:?} answered {decision:?}");
    }
    // 2. What this one promises: a merge is a fixed point.
    if let Decision::Merge(cart) = decision {
        let again = Conflict::for_test(
            &conflict.container,
            &conflict.id,
            conflict.partition_key.clone(),
            vec![Some(cart.clone()), Some(cart.clone())],
        );
        assert_eq!(cart_merge::merge_carts(&again), Decision::Merge(cart));
    }
});
