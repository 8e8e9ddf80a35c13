//! Resolution as one pure function: from a container's definition, an item's canonical
//! siblings and the module this region holds for the definition, to what the item shows and
//! which conflict records are open (docs/design.md, "Resolution").
//!
//! The store gathers the inputs, calls [`resolve`] and persists what it returns; nothing about
//! the region that resolves or the order versions arrived in reaches it. `check-resolver` and
//! the simulation use the same canonical order ([`canonical`]).

use super::lww::{LwwKey, canonical_order};
use super::policy::{CanonicalVersion, Outcome, ResolverHost, decide};
use super::reason;
use crate::causal::{Dot, Hlc};
use crate::model::{ConflictPolicy, ContainerDef, CreationId, ItemKey};
use xxhash_rust::xxh3::Xxh3;

/// One sibling of an item, as every region names it.
#[derive(Clone, Debug)]
pub struct Sibling<'a> {
    /// The version's dot.
    pub dot: Dot,
    /// Its HLC timestamp.
    pub hlc: Hlc,
    /// Whether it is a tombstone.
    pub deleted: bool,
    /// Its body (no system properties), when [`needs_bodies`] says resolution reads it.
    pub body: Option<&'a str>,
}

/// What decides an item's siblings.
#[derive(Clone, Copy, Debug)]
pub enum Definition<'a> {
    /// The system container of definitions and resolvers: no feed; live siblings before
    /// tombstones (a drop shows only when no live sibling is left), then the highest epoch,
    /// then LWW on `/_ts`.
    System,
    /// The container's visible definition, and the content hash of the module it runs when
    /// this region holds that module.
    Active {
        /// The definition.
        def: &'a ContainerDef,
        /// The module to run, if held here.
        module: Option<&'a str>,
    },
    /// Another creation of the container's name won: every live sibling becomes a record with
    /// reason `container replaced`, and nothing shows.
    Replaced,
    /// No definition yet, or the creation was dropped: nothing shows, nothing is recorded.
    Hidden,
}

/// How a custom policy's outcome is found.
pub enum Decider<'a> {
    /// Ask the host, with a wall-clock limit for the call if given (see
    /// [`ResolverHost::resolve_within`]).
    Host(&'a dyn ResolverHost, Option<std::time::Duration>),
    /// Use an outcome computed earlier for the same [`conflict_key`] (a retry computed outside
    /// the store's writer).
    Decided(Outcome),
    /// Do not call the resolver now: the outcome is [`Outcome::Interrupted`] (the store retries
    /// later, outside its writer).
    Later,
}

/// What the item shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Shown {
    /// Nothing (deleted, or no definition).
    Hidden,
    /// The sibling at this index of the input.
    Sibling(usize),
    /// A body a resolver merged.
    Merged(String),
}

/// A conflict record the siblings and outcome justify.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenRecord {
    /// The record's id: from the creation, the item, the sorted sibling dots, this sibling's
    /// dot and the reason.
    pub id: u128,
    /// The sibling it records (index into the input).
    pub sibling: usize,
    /// Why it is open.
    pub reason: String,
}

/// The result of [`resolve`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolution {
    /// What the item shows.
    pub shown: Shown,
    /// The etag of the visible version: a hash of the sorted sibling dots and the visible body
    /// (0 when hidden).
    pub etag: u64,
    /// `_ts` in seconds: the greatest sibling's (0 when hidden).
    pub ts: u64,
    /// The siblings that contributed to the visible value (for the count of writes lost to
    /// LWW).
    pub contributors: Vec<usize>,
    /// The open records. Meaningless when [`interrupted`](Self::interrupted): the store keeps
    /// the records it had.
    pub open: Vec<OpenRecord>,
    /// How the resolution ended.
    pub outcome: Outcome,
}

impl Resolution {
    /// Nothing shows, nothing is recorded, and `outcome` says why.
    fn hidden(outcome: Outcome) -> Self {
        Resolution {
            shown: Shown::Hidden,
            etag: 0,
            ts: 0,
            contributors: vec![],
            open: vec![],
            outcome,
        }
    }

    /// Whether the watchdog stopped the call (or it was put off): the LWW winner shows as
    /// tentative, and the item must be resolved again later.
    pub fn interrupted(&self) -> bool {
        self.outcome == Outcome::Interrupted
    }
}

/// The path of the canonical order under a definition.
fn order_path<'d>(definition: &Definition<'d>) -> &'d str {
    match definition {
        Definition::Active { def, .. } => def.conflict_resolution_policy.order_path(),
        _ => "/_ts",
    }
}

/// Whether resolving `n` siblings under `definition` reads their bodies (an LWW order on a
/// path other than `/_ts`, a custom policy, or the system container, whose definitions order
/// by epoch). Bodies live in the log; the store reads them only then.
pub fn needs_bodies(definition: &Definition<'_>, n: usize) -> bool {
    n > 1
        && match definition {
            Definition::System => true,
            Definition::Active { def, .. } => {
                order_path(definition) != "/_ts"
                    || matches!(
                        def.conflict_resolution_policy,
                        ConflictPolicy::Custom { .. }
                    )
            }
            _ => false,
        }
}

/// The canonical order of siblings under LWW on `path`, winner first (indices into
/// `siblings`).
pub fn canonical(siblings: &[Sibling<'_>], path: &str) -> Vec<usize> {
    if siblings.len() < 2 {
        return (0..siblings.len()).collect();
    }
    let keys: Vec<LwwKey<'_>> = siblings
        .iter()
        .map(|s| {
            LwwKey::new(
                path,
                s.deleted,
                s.body,
                s.hlc,
                s.dot.region.as_str(),
                s.dot.incarnation.0,
                s.dot.counter,
            )
        })
        .collect();
    canonical_order(&keys, path)
}

/// The siblings in `order` as a resolver sees them: bodies with their own `_ts`.
pub fn canonical_versions(siblings: &[Sibling<'_>], order: &[usize]) -> Vec<CanonicalVersion> {
    order
        .iter()
        .map(|&i| {
            let s = &siblings[i];
            CanonicalVersion {
                body: match s.deleted {
                    true => None,
                    false => s.body.map(|b| with_ts(b, s.hlc)),
                },
                deleted: s.deleted,
                region: s.dot.region.to_string(),
                timestamp: s.hlc.physical_ms,
                logical: s.hlc.logical,
            }
        })
        .collect()
}

/// Names what a custom resolution depends on: the creation, the item, the policy (resolver,
/// pinned hash, limits), the module run and the sibling dots (which name their bodies). Two
/// resolutions with the same key have the same outcome, so an outcome computed outside the
/// store's writer may be committed if the key has not changed meanwhile.
pub fn conflict_key(definition: &Definition<'_>, item: &ItemKey, siblings: &[Sibling<'_>]) -> u128 {
    let mut h = Xxh3::new();
    if let Definition::Active { def, module } = definition {
        h.update(&def.creation_id.0.to_be_bytes());
        h.update(
            serde_json::to_string(&def.conflict_resolution_policy)
                .unwrap_or_default()
                .as_bytes(),
        );
        h.update(&[0]);
        h.update(module.unwrap_or_default().as_bytes());
    }
    h.update(&[0]);
    h.update(item.partition_key.as_json().as_bytes());
    h.update(&[0]);
    h.update(item.id.as_bytes());
    for d in sorted_dots(siblings) {
        hash_dot(&mut h, d);
    }
    h.digest128()
}

fn sorted_dots<'s>(siblings: &'s [Sibling<'_>]) -> Vec<&'s Dot> {
    let mut dots: Vec<&Dot> = siblings.iter().map(|s| &s.dot).collect();
    dots.sort();
    dots
}

/// Resolves an item of creation `creation` with key `key`: see the [module](self)
/// documentation. `siblings` carry bodies where [`needs_bodies`] says so.
pub fn resolve(
    definition: &Definition<'_>,
    creation: CreationId,
    key: &ItemKey,
    siblings: &[Sibling<'_>],
    decider: Decider<'_>,
) -> Resolution {
    let hidden = Resolution::hidden;
    let def = match definition {
        Definition::Hidden => return hidden(Outcome::Pick(0)),
        Definition::Replaced => {
            let mut r = hidden(Outcome::Failed(reason::CONTAINER_REPLACED.into()));
            for (i, s) in siblings.iter().enumerate().filter(|(_, s)| !s.deleted) {
                let mut h = Xxh3::new();
                h.update(reason::CONTAINER_REPLACED.as_bytes());
                h.update(&creation.0.to_be_bytes());
                hash_dot(&mut h, &s.dot);
                r.open.push(OpenRecord {
                    id: h.digest128(),
                    sibling: i,
                    reason: reason::CONTAINER_REPLACED.into(),
                });
            }
            return r;
        }
        Definition::System => None,
        Definition::Active { def, .. } => Some(*def),
    };
    if siblings.is_empty() {
        return hidden(Outcome::Pick(0));
    }
    let mut order = canonical(siblings, order_path(definition));
    if def.is_none() {
        // A drop tombstone names the creation it drops, and the store removes live definitions
        // of dropped creations from the siblings: a live sibling left is a creation no drop
        // names (a re-creation, say), which a concurrent drop of an earlier creation must not
        // hide. Tombstones show only when no live sibling is left. Among live definitions the
        // highest epoch wins: a creation of epoch e is made only by a region that knew a
        // creation of epoch e - 1 dropped, so a region that has not learnt of that drop yet
        // still shows (and changes) the re-creation, never the creation it replaced.
        order.sort_by_key(|&i| {
            let s = &siblings[i];
            (s.deleted, std::cmp::Reverse(s.body.map_or(0, epoch_of)))
        });
    }
    let finish = |outcome| shown_by(creation, key, siblings, &order, outcome);
    let outcome = match def {
        Some(d) if siblings.len() > 1 => {
            let policy = &d.conflict_resolution_policy;
            let custom = matches!(policy, ConflictPolicy::Custom { .. });
            let module = match definition {
                Definition::Active { module, .. } => *module,
                _ => None,
            };
            let (host, within): (&dyn ResolverHost, _) = match decider {
                Decider::Decided(outcome) if custom => return finish(outcome),
                Decider::Later if custom => return finish(Outcome::Interrupted),
                Decider::Host(host, within) => (host, within),
                // Other policies never call a resolver.
                _ => (&super::NoResolvers, None),
            };
            decide(
                policy,
                module,
                host,
                within,
                &d.name,
                &key.id,
                &key.partition_key,
                &d.partition_key,
                &canonical_versions(siblings, &order),
            )
        }
        _ => Outcome::Pick(0),
    };
    finish(outcome)
}

/// What an outcome shows and records; see [`resolve`].
fn shown_by(
    creation: CreationId,
    key: &ItemKey,
    siblings: &[Sibling<'_>],
    order: &[usize],
    outcome: Outcome,
) -> Resolution {
    let hidden = Resolution::hidden;
    let ts = siblings
        .iter()
        .map(|s| s.hlc)
        .max()
        .unwrap_or_default()
        .seconds();
    let dots = sorted_dots(siblings);
    // The etag names the visible version: the sibling set and which sibling (a dot names its
    // body) or the merged body shows.
    let etag_of = |shown: &[u8]| {
        let mut h = Xxh3::new();
        for d in &dots {
            hash_dot(&mut h, d);
        }
        h.update(shown);
        h.digest()
    };
    let pick = |i: usize, open: Vec<OpenRecord>, outcome: Outcome| {
        let s = &siblings[i];
        if s.deleted {
            return Resolution {
                contributors: vec![i],
                open,
                ..hidden(outcome)
            };
        }
        let mut h = Xxh3::new();
        hash_dot(&mut h, &s.dot);
        Resolution {
            shown: Shown::Sibling(i),
            etag: etag_of(&h.digest128().to_le_bytes()),
            ts,
            contributors: vec![i],
            open,
            outcome,
        }
    };
    match outcome {
        Outcome::Pick(c) => pick(order[c], vec![], outcome),
        Outcome::Merge(body) => Resolution {
            etag: etag_of(body.as_bytes()),
            shown: Shown::Merged(body.clone()),
            ts,
            contributors: (0..siblings.len()).collect(),
            open: vec![],
            outcome: Outcome::Merge(body),
        },
        Outcome::Delete => Resolution {
            contributors: (0..siblings.len()).collect(),
            ..hidden(Outcome::Delete)
        },
        Outcome::Interrupted => pick(order[0], vec![], Outcome::Interrupted),
        Outcome::Failed(why) => {
            let open = order[1..]
                .iter()
                .map(|&i| OpenRecord {
                    id: record_id(creation, key, &dots, &siblings[i].dot, &why),
                    sibling: i,
                    reason: why.clone(),
                })
                .collect();
            pick(order[0], open, Outcome::Failed(why))
        }
    }
}

/// The id of the open record of sibling `dot` among `dots` with `reason`. The reason is part
/// of the identity: when only the outcome changes (a module arrives, the policy changes mode),
/// the old record is superseded and one with the new reason opens, in every region alike.
fn record_id(creation: CreationId, key: &ItemKey, dots: &[&Dot], dot: &Dot, reason: &str) -> u128 {
    let mut h = Xxh3::new();
    h.update(&creation.0.to_be_bytes());
    h.update(key.partition_key.as_json().as_bytes());
    h.update(&[0]);
    h.update(key.id.as_bytes());
    h.update(&[0]);
    for d in dots {
        hash_dot(&mut h, d);
    }
    hash_dot(&mut h, dot);
    h.update(&(reason.len() as u64).to_le_bytes());
    h.update(reason.as_bytes());
    h.digest128()
}

fn hash_dot(h: &mut Xxh3, d: &Dot) {
    h.update(&(d.region.as_str().len() as u32).to_le_bytes());
    h.update(d.region.as_str().as_bytes());
    h.update(&d.incarnation.0.to_le_bytes());
    h.update(&d.counter.to_le_bytes());
}

/// The epoch a definition's body names (0 for other bodies of the system container).
fn epoch_of(body: &str) -> u64 {
    #[derive(serde::Deserialize)]
    struct Epoch {
        #[serde(default)]
        epoch: u64,
    }
    serde_json::from_str::<Epoch>(body).map_or(0, |e| e.epoch)
}

/// The body as a resolver sees it: with `_ts`, the version's own seconds.
fn with_ts(body: &str, hlc: Hlc) -> String {
    let rest = body.trim_start().strip_prefix('{').unwrap_or("}");
    let sep = if rest.trim_start().starts_with('}') {
        ""
    } else {
        ","
    };
    format!("{{\"_ts\":{}{sep}{rest}", hlc.seconds())
}
