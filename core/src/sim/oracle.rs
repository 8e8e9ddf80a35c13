//! What must hold after a full exchange: every region shows the same thing, and nothing is lost.

use super::world::{CONTAINER, DATABASES, World};
use crate::Cursor;
use crate::feed::ConflictStatus;
use crate::model::{CreationId, ItemKey, SYSTEM_CREATION};
use crate::replicate::Version;
use std::collections::{BTreeMap, BTreeSet, HashSet};

type Fallible<T> = Result<T, String>;

fn e(x: impl std::fmt::Display) -> String {
    x.to_string()
}

/// Checks strong eventual consistency and that no version was lost.
pub(crate) fn check(world: &mut World) -> Fallible<()> {
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
    let visible = |i: usize, db: &str| -> Fallible<Vec<(String, String, String)>> {
        let store = world.store(i);
        let mut out = Vec::new();
        let mut cont = None;
        loop {
            let page = match store.list_items(db, CONTAINER, None, cont.as_deref(), 2) {
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
    let open = |i: usize, db: &str| -> Fallible<BTreeSet<(String, String)>> {
        let store = world.store(i);
        let mut out = BTreeSet::new();
        let mut cont = None;
        loop {
            let page = match store.conflicts(db, CONTAINER, cont.as_deref(), 3) {
                Ok(p) => p,
                Err(crate::Error::UnknownContainer { .. }) => return Ok(out),
                Err(x) => return Err(e(x)),
            };
            out.extend(
                page.items
                    .into_iter()
                    .filter(|r| r.status == ConflictStatus::Open)
                    .map(|r| (r.id, r.reason)),
            );
            match page.continuation {
                Some(c) => cont = Some(c),
                None => return Ok(out),
            }
        }
    };
    let mut o0 = BTreeSet::new();
    for db in DATABASES {
        let v0 = visible(0, db)?;
        let open0 = open(0, db)?;
        for i in 1..n {
            let vi = visible(i, db)?;
            if vi != v0 {
                return Err(format!(
                    "visible items of {db} differ:\n {}: {v0:?}\n {}: {vi:?}",
                    name(0),
                    name(i)
                ));
            }
            let oi = open(i, db)?;
            if oi != open0 {
                return Err(format!(
                    "open conflicts of {db} differ:\n {}: {open0:?}\n {}: {oi:?}",
                    name(0),
                    name(i)
                ));
            }
        }
        o0.extend(open0);
    }

    // Every version any region logged.
    let mut all: Vec<Version> = Vec::new();
    let mut seen = HashSet::new();
    for i in 0..n {
        for v in world
            .store(i)
            .read_log(Cursor::START, usize::MAX)
            .map_err(e)?
            .versions
        {
            if seen.insert((v.creation, v.dot.clone())) {
                all.push(v);
            }
        }
    }
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
    let mut by_item: BTreeMap<(CreationId, ItemKey), Vec<&Version>> = BTreeMap::new();
    for v in &all {
        by_item
            .entry((v.creation, v.key.clone()))
            .or_default()
            .push(v);
    }
    let active: HashSet<CreationId> = defs0
        .iter()
        .filter(|d| DATABASES.contains(&d.database.as_str()) && d.name == CONTAINER)
        .map(|d| d.creation_id)
        .collect();
    let mut expected_open = 0;
    let mut in_conflict = 0;
    for ((cid, key), versions) in &by_item {
        if *cid != SYSTEM_CREATION && dropped.contains(cid) {
            continue;
        }
        let s0 = world.store(0).item_state(*cid, key).map_err(e)?;
        for i in 1..n {
            let si = world.store(i).item_state(*cid, key).map_err(e)?;
            let causal = |s: &Option<crate::ItemState>| {
                s.as_ref().map(|s| (s.siblings.clone(), s.context.clone()))
            };
            if causal(&si) != causal(&s0) {
                return Err(format!(
                    "item {key:?} of {cid:?}: siblings or context differ:\n {}: {s0:?}\n {}: {si:?}",
                    name(0),
                    name(i)
                ));
            }
        }
        let Some(state) = s0 else {
            return Err(format!(
                "item {key:?} of {cid:?} was written but {} never stored it",
                name(0)
            ));
        };
        for v in versions {
            let discarded = *cid == SYSTEM_CREATION
                && !v.deleted
                && v.body
                    .as_deref()
                    .and_then(|b| crate::store::parse_def_body(b).ok())
                    .is_some_and(|d| dropped.contains(&d.creation_id));
            if !state.context.covers(&v.dot.writer(), v.dot.counter) {
                return Err(format!(
                    "version {} of {key:?} never reached {}",
                    v.dot,
                    name(0)
                ));
            }
            let sibling = state.siblings.contains(&v.dot);
            let covered = versions
                .iter()
                .any(|u| u.dot != v.dot && u.context.covers(&v.dot.writer(), v.dot.counter));
            if !sibling && !covered && !discarded {
                return Err(format!(
                    "version {} of {key:?} was lost: neither a sibling nor covered by a later write",
                    v.dot
                ));
            }
        }
        if active.contains(cid) && state.siblings.len() > 1 {
            in_conflict += 1;
            expected_open += state.siblings.len() - 1;
        }
    }
    let manual_like = !matches!(world.cfg.policy, super::SimPolicy::Lww);
    let expected = if manual_like { None } else { Some(0) };
    if let Some(x) = expected {
        if o0.len() != x {
            return Err(format!(
                "LWW must leave no open conflicts, found {}",
                o0.len()
            ));
        }
    } else if world.cfg.policy == super::SimPolicy::Manual && o0.len() != expected_open {
        return Err(format!(
            "manual policy: {expected_open} non-visible siblings but {} open records",
            o0.len()
        ));
    }
    world.report.items_in_conflict = in_conflict;
    world.report.open_conflicts = o0.len();
    Ok(())
}
