//! What must hold after a full exchange: every region shows the same thing, and nothing is lost.

use super::world::{CONTAINERS, DATABASES, World};
use crate::feed::ConflictStatus;
use crate::model::{ConflictPolicy, ContainerDef, CreationId, ItemKey, SYSTEM_CREATION};
use crate::replicate::Version;
use crate::resolve::item::{self, Decider, Definition, Shown, Sibling};
use crate::resolve::{NoResolvers, ResolverHost};
use std::collections::{BTreeMap, BTreeSet, HashSet};

type Fallible<T> = Result<T, String>;

fn e(x: impl std::fmt::Display) -> String {
    x.to_string()
}

/// Checks strong eventual consistency and that no version was lost.
pub(crate) fn check(world: &mut World) -> Fallible<()> {
    world.record_logs().map_err(e)?;
    let n = world.regions.len();
    let name = |i: usize| world.regions[i].name.clone();

    let defs0 = world.store(0).all_containers().map_err(e)?;
    for i in 1..n {
        let d = world.store(i).all_containers().map_err(e)?;
        if d != defs0 {
            return Err(format!(
                "definitions differ: {} has {defs0:?}, {} has {d:?}",
                name(0),
                name(i)
            ));
        }
    }

    // Visible items, with their etags and bodies.
    let visible = |i: usize, db: &str, c: &str| -> Fallible<Vec<(String, String, String)>> {
        let store = world.store(i);
        let mut out = Vec::new();
        let mut cont = None;
        loop {
            let page = match store.list_items(db, c, None, cont.as_deref(), 2) {
                Ok(p) => p,
                Err(crate::Error::UnknownContainer { .. }) => return Ok(out),
                Err(x) => return Err(e(x)),
            };
            for it in page.items {
                let mut body = it.body.clone();
                if let Some(o) = body.as_object_mut() {
                    o.remove("_lsn"); // region-local
                }
                out.push((it.id().to_owned(), it.etag.clone(), body.to_string()));
            }
            match page.continuation {
                Some(c) => cont = Some(c),
                None => return Ok(out),
            }
        }
    };
    // Open records: (creation, item key, record id, reason).
    type Open = BTreeSet<(CreationId, ItemKey, String, String)>;
    let open = |i: usize, db: &str, c: &str| -> Fallible<Open> {
        let store = world.store(i);
        let mut out = BTreeSet::new();
        let mut cont = None;
        loop {
            let page = match store.conflicts(db, c, cont.as_deref(), 3) {
                Ok(p) => p,
                Err(crate::Error::UnknownContainer { .. }) => return Ok(out),
                Err(x) => return Err(e(x)),
            };
            out.extend(
                page.items
                    .into_iter()
                    .filter(|r| r.status == ConflictStatus::Open)
                    .map(|r| {
                        let key = ItemKey {
                            partition_key: r.partition_key,
                            id: r.item_id,
                        };
                        (r.creation, key, r.id, r.reason)
                    }),
            );
            match page.continuation {
                Some(c) => cont = Some(c),
                None => return Ok(out),
            }
        }
    };
    // Open records of region 0, per (database, container).
    let mut o0: BTreeMap<(&str, &str), Open> = BTreeMap::new();
    for db in DATABASES {
        for c in CONTAINERS {
            let v0 = visible(0, db, c)?;
            let open0 = open(0, db, c)?;
            for i in 1..n {
                let vi = visible(i, db, c)?;
                if vi != v0 {
                    return Err(format!(
                        "visible items of {db}/{c} differ:\n {}: {v0:?}\n {}: {vi:?}",
                        name(0),
                        name(i)
                    ));
                }
                let oi = open(i, db, c)?;
                if oi != open0 {
                    return Err(format!(
                        "open conflicts of {db}/{c} differ:\n {}: {open0:?}\n {}: {oi:?}",
                        name(0),
                        name(i)
                    ));
                }
            }
            o0.insert((db, c), open0);
        }
    }

    // Every version any region logged, including those collection removed since.
    let all: Vec<Version> = world.ledger.clone();
    // Regions shrink contexts to their own stable points: contexts compare above the highest.
    let mut highest = crate::Applied::new();
    for i in 0..n {
        for (r, c) in world.store(i).stable_point().map_err(e)? {
            let h = highest.entry(r).or_insert(0);
            *h = (*h).max(c);
        }
    }
    let above = |ctx: &crate::causal::Context<crate::causal::Writer>| {
        crate::causal::Context::from_entries(
            ctx.entries()
                .iter()
                .filter(|((r, inc), c)| {
                    *inc != crate::Incarnation::FLOOR && *c > highest.get(r).copied().unwrap_or(0)
                })
                .cloned()
                .collect(),
        )
    };
    let stable0 = world.store(0).stable_point().map_err(e)?;
    let dropped: HashSet<CreationId> = all
        .iter()
        .filter(|v| v.creation == SYSTEM_CREATION && v.deleted)
        .filter_map(|v| {
            v.body
                .as_deref()
                .and_then(|b| crate::store::parse_def_body(b).ok())
        })
        .map(|d| d.creation_id)
        .collect();
    // A container shows exactly when some creation of it was made and never dropped, and then
    // shows one of those: a drop takes only the creation it names, never a re-creation it did
    // not see.
    for db in DATABASES {
        for c in CONTAINERS {
            // Every live definition of the name any region logged.
            let made: Vec<ContainerDef> = all
                .iter()
                .filter(|v| v.creation == SYSTEM_CREATION && !v.deleted)
                .filter(|v| v.key == crate::store::def_key(db, c))
                .filter_map(|v| v.body.as_deref())
                .filter_map(|b| crate::store::parse_def_body(b).ok())
                .collect();
            let live: BTreeSet<CreationId> = made
                .iter()
                .map(|d| d.creation_id)
                .filter(|cid| !dropped.contains(cid))
                .collect();
            let shows = defs0
                .iter()
                .find(|d| d.database == db && d.name == c)
                .map(|d| d.creation_id);
            // With two partition key paths, a creation that lost to a concurrent one and was
            // covered by a change of the winner is no live definition anywhere, so no drop
            // names it (docs/design.md, Known limits): then only the second half holds.
            let paths: BTreeSet<&str> = made.iter().map(|d| d.partition_key.as_str()).collect();
            let expected = !live.is_empty();
            if (paths.len() < 2 && shows.is_some() != expected)
                || shows.is_some_and(|cid| !live.contains(&cid))
            {
                return Err(format!(
                    "{db}/{c} shows creation {shows:?}, but the creations made and never \
                     dropped are {live:?}"
                ));
            }
        }
    }
    let mut by_item: BTreeMap<(CreationId, ItemKey), Vec<&Version>> = BTreeMap::new();
    for v in &all {
        by_item
            .entry((v.creation, v.key.clone()))
            .or_default()
            .push(v);
    }
    let active: BTreeMap<CreationId, &ContainerDef> = defs0
        .iter()
        .filter(|d| {
            DATABASES.contains(&d.database.as_str()) && CONTAINERS.contains(&d.name.as_str())
        })
        .map(|d| (d.creation_id, d))
        .collect();
    let mut in_conflict = 0;
    // Per active creation: the siblings its items do not show (a manual policy records each).
    let mut not_shown: BTreeMap<CreationId, usize> = BTreeMap::new();
    for ((cid, key), versions) in &by_item {
        if *cid != SYSTEM_CREATION && dropped.contains(cid) {
            continue;
        }
        let s0 = world.store(0).item_state(*cid, key).map_err(e)?;
        for i in 1..n {
            let si = world.store(i).item_state(*cid, key).map_err(e)?;
            let causal = |s: &Option<crate::ItemState>| {
                s.as_ref().map(|s| (s.siblings.clone(), above(&s.context)))
            };
            // A region that purged the item's tombstones has no record; one that has not yet
            // holds only tombstones.
            let purged = |a: &Option<crate::ItemState>, b: &Option<crate::ItemState>| {
                a.is_none()
                    && b.as_ref().is_some_and(|s| {
                        s.siblings
                            .iter()
                            .all(|d| versions.iter().any(|v| v.dot == *d && v.deleted))
                    })
            };
            if causal(&si) != causal(&s0) && !purged(&si, &s0) && !purged(&s0, &si) {
                return Err(format!(
                    "item {key:?} of {cid:?}: siblings or context differ:\n {}: {s0:?}\n {}: {si:?}",
                    name(0),
                    name(i)
                ));
            }
        }
        // Every version no other version covers: what the item's siblings must be.
        let maximal: Vec<&&Version> = versions
            .iter()
            .filter(|v| {
                !versions
                    .iter()
                    .any(|u| u.dot != v.dot && u.context.covers_dot(&v.dot))
            })
            .collect();
        let Some(state) = s0 else {
            // Collected: only a tombstone every member had may go, and with it the item.
            if maximal.iter().all(|v| v.deleted) {
                continue;
            }
            return Err(format!(
                "item {key:?} of {cid:?} was written but {} does not have it: its latest \
                 versions {:?} are not all deletes",
                name(0),
                maximal
                    .iter()
                    .map(|v| v.dot.to_string())
                    .collect::<Vec<_>>()
            ));
        };
        for v in versions {
            let discarded = *cid == SYSTEM_CREATION
                && !v.deleted
                && v.body
                    .as_deref()
                    .and_then(|b| crate::store::parse_def_body(b).ok())
                    .is_some_and(|d| dropped.contains(&d.creation_id));
            let stable = v.dot.counter <= stable0.get(&v.dot.region).copied().unwrap_or(0);
            if !state.context.covers_dot(&v.dot) && !stable {
                return Err(format!(
                    "version {} of {key:?} never reached {}",
                    v.dot,
                    name(0)
                ));
            }
            let sibling = state.siblings.contains(&v.dot);
            let covered = versions
                .iter()
                .any(|u| u.dot != v.dot && u.context.covers_dot(&v.dot));
            if !sibling && !covered && !discarded {
                return Err(format!(
                    "version {} of {key:?} was lost: neither a sibling nor covered by a later write",
                    v.dot
                ));
            }
            // A sibling some other version covers is a version that came back (a zombie).
            if sibling && covered && *cid != SYSTEM_CREATION {
                return Err(format!(
                    "version {} of {key:?} shows as a sibling, but a later version covers it: \
                     it came back",
                    v.dot
                ));
            }
        }
        if let Some(def) = active.get(cid) {
            in_conflict += usize::from(state.siblings.len() > 1);
            // Concurrent deletes alone are no conflict (docs/design.md, Resolution).
            let all_deleted = state
                .siblings
                .iter()
                .all(|d| versions.iter().any(|v| v.dot == *d && v.deleted));
            if !all_deleted {
                *not_shown.entry(*cid).or_default() += state.siblings.len().saturating_sub(1);
            }
            let records = &o0[&(def.database.as_str(), def.name.as_str())];
            recompute(world, def, key, &state.siblings, versions, records)?;
        }
    }
    // Independently of the recomputation: LWW leaves nothing in the feed, and manual records
    // every sibling but the one shown.
    for def in active.values() {
        let records = &o0[&(def.database.as_str(), def.name.as_str())];
        let (db, c) = (&def.database, &def.name);
        let mine = records.iter().filter(|r| r.0 == def.creation_id).count();
        match &def.conflict_resolution_policy {
            ConflictPolicy::Lww { .. } if mine != 0 => {
                return Err(format!(
                    "LWW {db}/{c} must leave no open conflicts, found {mine}"
                ));
            }
            ConflictPolicy::Manual => {
                let expected = not_shown.get(&def.creation_id).copied().unwrap_or(0);
                if mine != expected {
                    return Err(format!(
                        "manual {db}/{c}: {expected} non-visible siblings but {mine} open records"
                    ));
                }
            }
            _ => {}
        }
    }
    world.report.items_in_conflict = in_conflict;
    world.report.open_conflicts = o0.values().map(BTreeSet::len).sum();
    world.report.reasons = o0.values().flatten().map(|r| r.3.clone()).collect();
    Ok(())
}

/// Resolves `key` of `def`'s creation again, with [`item::resolve`] over the siblings region 0
/// keeps (`dots`; bodies from `versions`, the item's versions in the logs) and no watchdog, and checks that region 0 shows what it
/// returns: the same etag and `_ts` (or nothing), and exactly its open records with their
/// reasons. Every region showing the same was checked before, so all of them match.
fn recompute(
    world: &World,
    def: &ContainerDef,
    key: &ItemKey,
    dots: &[crate::causal::Dot],
    versions: &[&Version],
    records: &BTreeSet<(CreationId, ItemKey, String, String)>,
) -> Fallible<()> {
    let store = world.store(0);
    let mut siblings = Vec::with_capacity(dots.len());
    for dot in dots {
        let v = versions
            .iter()
            .find(|v| &v.dot == dot)
            .ok_or_else(|| format!("sibling {dot} of {key:?} is in no region's log"))?;
        siblings.push(Sibling {
            dot: dot.clone(),
            hlc: v.hlc,
            deleted: v.deleted,
            body: v.body.as_deref(),
        });
    }
    let module = store.held_module_of(def).map_err(e)?;
    let host: &dyn ResolverHost = match &world.cfg.host {
        Some(h) => &**h,
        None => &NoResolvers,
    };
    let definition = Definition::Active {
        def,
        module: module.as_deref(),
    };
    let res = item::resolve(
        &definition,
        def.creation_id,
        key,
        &siblings,
        Decider::Host(host, None),
    );
    let (db, c) = (def.database.as_str(), def.name.as_str());
    let shown = match store.read_item(db, c, &key.partition_key, &key.id) {
        Ok(it) => Some((it.etag, it.ts)),
        Err(crate::Error::NotFound { .. }) => None,
        Err(x) => return Err(e(x)),
    };
    let expected = match res.shown {
        Shown::Hidden => None,
        Shown::Sibling(_) | Shown::Merged(_) => Some((crate::store::etag_string(res.etag), res.ts)),
    };
    if shown != expected {
        return Err(format!(
            "{db}/{c} {key:?} shows {shown:?} where resolving its siblings gives {expected:?} \
             ({:?})",
            res.outcome
        ));
    }
    let want: BTreeSet<(String, String)> = res
        .open
        .iter()
        .map(|o| (format!("{:032x}", o.id), o.reason.clone()))
        .collect();
    let have: BTreeSet<(String, String)> = records
        .iter()
        .filter(|r| r.0 == def.creation_id && &r.1 == key)
        .map(|r| (r.2.clone(), r.3.clone()))
        .collect();
    if have != want {
        return Err(format!(
            "{db}/{c} {key:?}: open records {have:?} where resolving its siblings gives {want:?}"
        ));
    }
    Ok(())
}
