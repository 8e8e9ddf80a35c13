//! Dispatch on the container's policy, and the outcome of a resolution.

use super::reason;
use crate::model::{ConflictPolicy, MAX_ITEM_BYTES, PartitionKey, ResolverLimits};
use serde_json::Value;

/// One sibling as a resolver sees it, in canonical order. Nothing in it depends on the region
/// that resolves or on arrival order.
#[derive(Clone, Debug, PartialEq)]
pub struct CanonicalVersion {
    /// The body (system properties other than `_ts` left out); `None` for a tombstone.
    pub body: Option<String>,
    /// Whether the version is a tombstone.
    pub deleted: bool,
    /// The region that wrote it.
    pub region: String,
    /// HLC physical time, ms.
    pub timestamp: u64,
    /// HLC logical counter.
    pub logical: u32,
}

/// What a custom resolver is asked to resolve.
#[derive(Debug)]
pub struct ResolveRequest<'a> {
    /// Container name.
    pub container: &'a str,
    /// Item id.
    pub id: &'a str,
    /// Partition key value.
    pub partition_key: &'a PartitionKey,
    /// The siblings, winner of the LWW order first; at least two.
    pub versions: &'a [CanonicalVersion],
    /// The resolver's name in the container.
    pub resolver: &'a str,
    /// The content hash of the module to run: the one the definition pins. The store asks only
    /// for modules it holds.
    pub hash: &'a str,
    /// Per-call limits from the definition.
    pub limits: &'a ResolverLimits,
}

/// How a resolution ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The sibling at this canonical index is the visible value.
    Pick(usize),
    /// A new body (a JSON object with the item's id and partition key).
    Merge(String),
    /// The item is deleted.
    Delete,
    /// No decision: the LWW winner is shown as tentative and the conflict goes to the feed with
    /// this reason (`manual policy`, `resolver missing`, `trap: …`, …).
    Failed(String),
    /// The wall-clock watchdog stopped the call. Nothing is recorded: the LWW winner shows as
    /// tentative and the store retries the resolution later ([`crate::Store::retry_interrupted`]).
    Interrupted,
}

/// Runs custom resolvers. The WebAssembly sandbox implements it; [`NoResolvers`] is the host
/// of a store without one.
pub trait ResolverHost: Send + Sync {
    /// Resolves one conflict. Must be deterministic: the same request gives the same outcome
    /// in every region.
    fn resolve(&self, request: &ResolveRequest<'_>) -> Outcome;

    /// As [`resolve`](Self::resolve), stopping the call with [`Outcome::Interrupted`] if it
    /// runs longer than `limit` on the wall clock (the store calls it while it holds its
    /// writer, with a short limit, and retries interrupted calls without the writer). A host
    /// whose calls are always quick may ignore the limit.
    fn resolve_within(&self, request: &ResolveRequest<'_>, limit: std::time::Duration) -> Outcome {
        let _ = limit;
        self.resolve(request)
    }

    /// Loads a module, known afterwards by its content hash, which it returns (a store calls it
    /// for every module version it stores, local or from a peer, and for each stored module
    /// at open). A host without a sandbox refuses, and conflicts show `resolver missing`.
    fn load(&self, module: &[u8]) -> Result<String, String> {
        let _ = module;
        Err("this store runs no resolver sandbox".into())
    }
}

/// A host with no resolvers: every custom conflict goes to the feed as `resolver missing`.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoResolvers;

impl ResolverHost for NoResolvers {
    fn resolve(&self, _: &ResolveRequest<'_>) -> Outcome {
        Outcome::Failed(reason::RESOLVER_MISSING.into())
    }
}

/// Decides the visible value of siblings in canonical order under `policy`. `module` is the
/// content hash of the module a custom policy runs, when this region holds it; `within` limits
/// the call's wall-clock time (see [`ResolverHost::resolve_within`]).
#[allow(clippy::too_many_arguments)]
pub(crate) fn decide(
    policy: &ConflictPolicy,
    module: Option<&str>,
    host: &dyn ResolverHost,
    within: Option<std::time::Duration>,
    container: &str,
    id: &str,
    partition_key: &PartitionKey,
    pk_path: &str,
    versions: &[CanonicalVersion],
) -> Outcome {
    // Concurrent deletes are no conflict under any policy: the item is deleted whichever
    // shows, and nothing is left to resolve (or to keep: its tombstones can be collected).
    if versions.len() < 2 || versions.iter().all(|v| v.deleted) {
        return Outcome::Pick(0);
    }
    match policy {
        ConflictPolicy::Lww { .. } => Outcome::Pick(0),
        ConflictPolicy::Manual => Outcome::Failed(reason::MANUAL_POLICY.into()),
        ConflictPolicy::Custom {
            resolver, limits, ..
        } => {
            let Some(hash) = module else {
                return Outcome::Failed(reason::RESOLVER_MISSING.into());
            };
            let req = ResolveRequest {
                container,
                id,
                partition_key,
                versions,
                resolver,
                hash,
                limits,
            };
            let outcome = match within {
                Some(limit) => host.resolve_within(&req, limit),
                None => host.resolve(&req),
            };
            check_answer(outcome, versions.len(), id, partition_key, pk_path)
        }
    }
}

/// Checks a custom resolver's answer for siblings of item `id`: a pick in range, a merge that
/// keeps the id and partition key within the size limit. Anything else is passed through.
pub(crate) fn check_answer(
    outcome: Outcome,
    versions: usize,
    id: &str,
    partition_key: &PartitionKey,
    pk_path: &str,
) -> Outcome {
    match outcome {
        Outcome::Pick(i) if i >= versions => Outcome::Failed(reason::invalid_output(format_args!(
            "pick {i} is out of range for {versions} versions"
        ))),
        Outcome::Merge(body) => check_merge(body, id, partition_key, pk_path),
        other => other,
    }
}

fn check_merge(body: String, id: &str, pk: &PartitionKey, pk_path: &str) -> Outcome {
    if body.len() > MAX_ITEM_BYTES {
        return Outcome::Failed(reason::invalid_output(
            "merged item over the item size limit",
        ));
    }
    let Ok(Value::Object(mut obj)) = serde_json::from_str::<Value>(&body) else {
        return Outcome::Failed(reason::invalid_output("merge is not a JSON object"));
    };
    crate::model::strip_system_properties(&mut obj);
    if obj.get("id").and_then(Value::as_str) != Some(id) {
        return Outcome::Failed(reason::invalid_output("merge changes the id"));
    }
    let obj = Value::Object(obj);
    match crate::model::partition_key_at(&obj, pk_path) {
        Ok(p) if &p == pk => {}
        _ => return Outcome::Failed(reason::invalid_output("merge changes the partition key")),
    }
    match serde_json::to_string(&obj) {
        Ok(s) => Outcome::Merge(s),
        Err(e) => Outcome::Failed(reason::invalid_output(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(Outcome);
    impl ResolverHost for Fixed {
        fn resolve(&self, _: &ResolveRequest<'_>) -> Outcome {
            self.0.clone()
        }
    }

    fn v() -> CanonicalVersion {
        CanonicalVersion {
            body: Some("{}".into()),
            deleted: false,
            region: "a".into(),
            timestamp: 1,
            logical: 0,
        }
    }

    fn run(host: &dyn ResolverHost) -> Outcome {
        let policy = ConflictPolicy::Custom {
            resolver: "r".into(),
            hash: None,
            limits: ResolverLimits::default(),
        };
        decide(
            &policy,
            Some("h"),
            host,
            None,
            "c",
            "x",
            &PartitionKey::from("p"),
            "/pk",
            &[v(), v()],
        )
    }

    #[test]
    fn invalid_answers_become_feed_reasons() {
        assert!(
            matches!(run(&Fixed(Outcome::Pick(2))), Outcome::Failed(r) if r.contains("out of range"))
        );
        let changes_id = Outcome::Merge(r#"{"id":"y","pk":"p"}"#.into());
        assert!(
            matches!(run(&Fixed(changes_id)), Outcome::Failed(r) if r.contains("changes the id"))
        );
        let changes_pk = Outcome::Merge(r#"{"id":"x","pk":"q"}"#.into());
        assert!(
            matches!(run(&Fixed(changes_pk)), Outcome::Failed(r) if r.contains("partition key"))
        );
        let ok = Outcome::Merge(r#"{"id":"x","pk":"p","_ts":5}"#.into());
        assert_eq!(
            run(&Fixed(ok)),
            Outcome::Merge(r#"{"id":"x","pk":"p"}"#.into())
        );
        assert_eq!(
            run(&NoResolvers),
            Outcome::Failed("resolver missing".into())
        );
    }
}
