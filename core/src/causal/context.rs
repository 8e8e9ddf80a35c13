//! Version vectors: the causal context of a version and of an item.
//!
//! A context maps each writer (a region incarnation) to the highest counter seen from it for
//! this item. That is exact, not an approximation: a region's writes to one item form a chain
//! (each local write's context covers every earlier one), so having seen counter `n` from a
//! writer implies having seen all of its earlier writes to the item.

use serde::{Deserialize, Serialize};

/// A version vector over writers of type `A`, kept sorted by writer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Context<A: Ord> {
    entries: Vec<(A, u64)>,
}

impl<A: Ord + Clone> Context<A> {
    /// The empty context.
    pub fn new() -> Self {
        Context {
            entries: Vec::new(),
        }
    }

    /// Builds a context from entries in any order; duplicate writers keep the highest counter.
    pub fn from_entries(mut entries: Vec<(A, u64)>) -> Self {
        entries.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        entries.dedup_by(|later, earlier| later.0 == earlier.0);
        Context { entries }
    }

    /// The entries, sorted by writer.
    pub fn entries(&self) -> &[(A, u64)] {
        &self.entries
    }

    /// The highest counter seen from `writer` (0 when none).
    pub fn get(&self, writer: &A) -> u64 {
        match self.entries.binary_search_by(|e| e.0.cmp(writer)) {
            Ok(i) => self.entries[i].1,
            Err(_) => 0,
        }
    }

    /// Whether the dot `(writer, counter)` is covered.
    pub fn covers(&self, writer: &A, counter: u64) -> bool {
        counter <= self.get(writer)
    }

    /// Adds the dot `(writer, counter)`.
    pub fn insert(&mut self, writer: A, counter: u64) {
        match self.entries.binary_search_by(|e| e.0.cmp(&writer)) {
            Ok(i) => self.entries[i].1 = self.entries[i].1.max(counter),
            Err(i) => self.entries.insert(i, (writer, counter)),
        }
    }

    /// The union of both contexts.
    pub fn merge(&mut self, other: &Context<A>) {
        for (w, c) in &other.entries {
            self.insert(w.clone(), *c);
        }
    }

    /// Maps the writers, for example from interned ids to names.
    pub fn map<B: Ord + Clone>(&self, mut f: impl FnMut(&A) -> B) -> Context<B> {
        Context::from_entries(self.entries.iter().map(|(a, c)| (f(a), *c)).collect())
    }

    /// Keeps only the entries for which `keep(writer, counter)` holds.
    pub fn retain(&mut self, mut keep: impl FnMut(&A, u64) -> bool) {
        self.entries.retain(|(a, c)| keep(a, *c));
    }

    /// Whether the context is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl Context<crate::causal::Writer> {
    /// Whether the context covers `dot`: by the entry of its writer, or by its region's floor
    /// entry ([`Incarnation::FLOOR`](crate::causal::Incarnation::FLOOR)).
    pub fn covers_dot(&self, dot: &crate::causal::Dot) -> bool {
        self.covers(&dot.writer(), dot.counter)
            || self.covers(
                &(dot.region.clone(), crate::causal::Incarnation::FLOOR),
                dot.counter,
            )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covers_merge_and_insert_keep_the_maximum() {
        let mut a = Context::from_entries(vec![(2u32, 5), (1, 3), (2, 7)]);
        assert_eq!(a.entries(), &[(1, 3), (2, 7)]);
        assert!(a.covers(&2, 7) && !a.covers(&2, 8) && !a.covers(&9, 1));
        a.insert(1, 2);
        assert_eq!(a.get(&1), 3);
        a.merge(&Context::from_entries(vec![(3, 1), (1, 4)]));
        assert_eq!(a.entries(), &[(1, 4), (2, 7), (3, 1)]);
    }

    #[test]
    fn a_floor_entry_covers_every_incarnation_of_its_region() {
        use crate::causal::{Dot, Incarnation, RegionId};
        let west = RegionId::new("west").expect("name");
        let east = RegionId::new("east").expect("name");
        let dot = |r: &RegionId, inc, counter| Dot {
            region: r.clone(),
            incarnation: Incarnation(inc),
            counter,
        };
        let ctx = Context::from_entries(vec![
            ((west.clone(), Incarnation::FLOOR), 10),
            ((east.clone(), Incarnation(7)), 3),
        ]);
        assert!(ctx.covers_dot(&dot(&west, 5, 10)) && ctx.covers_dot(&dot(&west, 9, 1)));
        assert!(!ctx.covers_dot(&dot(&west, 5, 11)));
        assert!(ctx.covers_dot(&dot(&east, 7, 3)) && !ctx.covers_dot(&dot(&east, 8, 3)));
    }
}
