//! The reasons a conflict goes to the conflicts feed, in the words of the ABI
//! (`docs/abi.md`, "Output" and "Limits"; `core/tests/reasons_documented.rs` keeps the two
//! the same).
//!
//! Applications match on these texts, so they are part of the contract: every
//! reason the store writes is built here, and [`kind`] tells which one a text is.
//!
//! ```
//! use converge_core::reason::{self, ReasonKind};
//!
//! assert_eq!(reason::trap("cart c1 cannot be merged"), "trap: cart c1 cannot be merged");
//! assert_eq!(reason::kind(&reason::deferred("needs a human")), Some(ReasonKind::Deferred));
//! assert_eq!(reason::kind(reason::OUT_OF_FUEL), Some(ReasonKind::OutOfFuel));
//! assert_eq!(reason::kind("gremlins"), None);
//! ```

use std::fmt::Display;

/// The container's policy is manual: nothing resolves.
pub const MANUAL_POLICY: &str = "manual policy";
/// The container names a resolver this store has not loaded.
pub const RESOLVER_MISSING: &str = "resolver missing";
/// The container was deleted and created again while the item was in conflict.
pub const CONTAINER_REPLACED: &str = "container replaced";
/// The resolver used all of its fuel.
pub const OUT_OF_FUEL: &str = "out of fuel";
/// The resolver asked for more memory than its limit (or `converge_alloc` returned 0).
pub const MEMORY_LIMIT: &str = "memory limit";
/// The resolver overflowed its wasm stack.
pub const STACK_OVERFLOW: &str = "stack overflow";
/// The input was over the input limit; the resolver was not called.
pub const INPUT_TOO_LARGE: &str = "input too large";
/// Prefix of any other trap: the guest's panic message or the trap kind follows.
pub const TRAP: &str = "trap: ";
/// Prefix of an answer that is not a valid decision; why follows.
pub const INVALID_OUTPUT: &str = "invalid output: ";
/// Prefix of a resolver's `{"defer": ...}`; its reason follows.
pub const DEFERRED: &str = "deferred: ";

/// `trap: <message>`.
pub fn trap(message: impl Display) -> String {
    format!("{TRAP}{message}")
}

/// `invalid output: <why>`.
pub fn invalid_output(why: impl Display) -> String {
    format!("{INVALID_OUTPUT}{why}")
}

/// `deferred: <why>`, the resolver's own reason.
pub fn deferred(why: impl Display) -> String {
    format!("{DEFERRED}{why}")
}

/// Which reason a feed entry's text is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReasonKind {
    /// [`MANUAL_POLICY`].
    ManualPolicy,
    /// [`RESOLVER_MISSING`].
    ResolverMissing,
    /// [`CONTAINER_REPLACED`].
    ContainerReplaced,
    /// [`OUT_OF_FUEL`].
    OutOfFuel,
    /// [`MEMORY_LIMIT`].
    MemoryLimit,
    /// [`STACK_OVERFLOW`].
    StackOverflow,
    /// [`INPUT_TOO_LARGE`].
    InputTooLarge,
    /// Starts with [`TRAP`].
    Trap,
    /// Starts with [`INVALID_OUTPUT`].
    InvalidOutput,
    /// Starts with [`DEFERRED`].
    Deferred,
}

impl ReasonKind {
    /// The kinds a resolver call can end in (all but the three the store
    /// decides without calling one: manual policy, resolver missing, container replaced).
    pub const FROM_A_CALL: [ReasonKind; 7] = [
        ReasonKind::OutOfFuel,
        ReasonKind::MemoryLimit,
        ReasonKind::StackOverflow,
        ReasonKind::InputTooLarge,
        ReasonKind::Trap,
        ReasonKind::InvalidOutput,
        ReasonKind::Deferred,
    ];
}

/// The kind of `reason`, or `None` when the store never writes such a text.
pub fn kind(reason: &str) -> Option<ReasonKind> {
    let exact = [
        (MANUAL_POLICY, ReasonKind::ManualPolicy),
        (RESOLVER_MISSING, ReasonKind::ResolverMissing),
        (CONTAINER_REPLACED, ReasonKind::ContainerReplaced),
        (OUT_OF_FUEL, ReasonKind::OutOfFuel),
        (MEMORY_LIMIT, ReasonKind::MemoryLimit),
        (STACK_OVERFLOW, ReasonKind::StackOverflow),
        (INPUT_TOO_LARGE, ReasonKind::InputTooLarge),
    ];
    let prefixed = [
        (TRAP, ReasonKind::Trap),
        (INVALID_OUTPUT, ReasonKind::InvalidOutput),
        (DEFERRED, ReasonKind::Deferred),
    ];
    exact
        .iter()
        .find(|(text, _)| reason == *text)
        .or_else(|| prefixed.iter().find(|(p, _)| reason.starts_with(p)))
        .map(|&(_, k)| k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builders_and_kind_agree() {
        assert_eq!(kind(&trap("boom")), Some(ReasonKind::Trap));
        assert_eq!(
            kind(&invalid_output("not JSON")),
            Some(ReasonKind::InvalidOutput)
        );
        assert_eq!(kind(&deferred("")), Some(ReasonKind::Deferred));
        assert_eq!(kind(MANUAL_POLICY), Some(ReasonKind::ManualPolicy));
        assert_eq!(
            kind(CONTAINER_REPLACED),
            Some(ReasonKind::ContainerReplaced)
        );
    }

    #[test]
    fn fixed_reasons_match_whole_texts_only() {
        assert_eq!(kind("out of fuel!"), None);
        assert_eq!(kind("trap:"), None);
        assert_eq!(kind(""), None);
    }
}
