//! Stability: what every member has applied, learned through replication.
//!
//! Each region keeps an *applied vector*: for every region `r`, the counter up to which it has
//! applied every version `r` wrote (any incarnation: a store's counter never goes back, and a
//! store takes a counter above wall-clock microseconds when it opens, so a wiped or re-created
//! directory of the same name never reissues a counter). A region's own entry is its counter.
//! It raises its vector from a batch: having applied a peer's log through the batch's end, it
//! has applied everything the peer had applied then, so it takes the peer's vector as of that
//! position (which the batch carries when it reaches the peer's durable end).
//!
//! Batches also relay every member's latest vector, so a chain learns what a full mesh does.
//! A member's vector is *confirmed* here once this region has applied that member's own writes
//! up to the member's counter in it: then no write the member made before it applied those
//! versions is still on its way here. The **stable point** is, per region, the least
//! confirmed entry over all live members; it only grows. What lies at or below it every member
//! has applied, and every write concurrent with it has arrived: collection may remove it, and a
//! version arriving later whose dot is at or below it is a duplicate.

use super::backend::{KvRead, KvWrite, Table};
use super::codec::{decode, encode};
use crate::Result;
use crate::causal::RegionId;
pub use crate::replicate::{Applied, MemberReport};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// One member as a region sees it (`GET /_replication/members`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberStatus {
    /// The member's region name.
    pub region: String,
    /// Whether this is the region answering.
    pub this_region: bool,
    /// Whether it was retired (it no longer holds collection back).
    pub retired: bool,
    /// Its latest applied vector heard here: per region, the counter up to which it applied
    /// every version that region wrote.
    pub applied: BTreeMap<String, u64>,
    /// Its latest vector this region has caught up with (what the stable point uses).
    pub confirmed: BTreeMap<String, u64>,
    /// How far its confirmed vector is behind this region's own: the sum of the counter gaps
    /// (versions, but for a gap across a restart, where a counter jumps ahead).
    pub behind: u64,
    /// How long ago its vector last grew here (ms); `None` if never.
    pub heard_ms_ago: Option<u64>,
    /// Whether it holds the stable point below what this region has applied: collection
    /// waits for it.
    pub holds_back: bool,
}

/// One member as a region persists it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MemberRecord {
    /// The latest vector heard (directly or relayed).
    pub latest: Applied,
    /// The latest vector whose own entry this region has applied up to.
    pub confirmed: Applied,
    /// The earliest vector heard and not yet confirmed: it is confirmed first, so a member
    /// that keeps writing still gets confirmed as this region catches up.
    pub pending: Option<Applied>,
    pub retired: bool,
    /// For a retired member: the counter past which its versions are refused.
    pub cut: u64,
    /// When its vector last grew here (ms since the epoch, this region's clock).
    pub heard_ms: u64,
    /// Which store of the region the vectors are of (see [`MemberReport::store`]).
    pub store: u64,
    /// A region that asked for a snapshot and has not been heard from since: it is forgotten
    /// if it stays silent (a join that never finished must not hold collection back forever).
    pub provisional: bool,
}

impl MemberRecord {
    /// The member runs `store` now, a later store than this record's: what the earlier store
    /// claimed counts no more; `latest` is what the new one claims, none of it confirmed.
    fn start_over(&mut self, store: u64, latest: Applied) {
        self.store = store;
        self.latest = latest;
        self.confirmed = Applied::new();
        self.pending = None;
    }
}

/// Raises `into` to at least `from`, entry by entry; says whether anything grew.
pub(crate) fn raise(into: &mut Applied, from: &Applied) -> bool {
    let mut grew = false;
    for (r, &c) in from {
        let e = into.entry(r.clone()).or_insert(0);
        if c > *e {
            *e = c;
            grew = true;
        }
    }
    grew
}

fn get(v: &Applied, r: &RegionId) -> u64 {
    v.get(r).copied().unwrap_or(0)
}

/// The stability state of one region: its members and the stable point.
#[derive(Clone, Debug)]
pub(crate) struct Stability {
    me: RegionId,
    /// Every member but this region.
    members: BTreeMap<RegionId, MemberRecord>,
    /// This region's applied vector, without its own entry (which is its counter).
    own: Applied,
    stable: Applied,
    /// Per region, the highest counter of a version collection removed (or of an entry of a
    /// purged item's context): a peer that has applied this much misses nothing removed.
    collected: Applied,
    /// Members whose records changed since the last [`Stability::persist`].
    dirty: BTreeSet<RegionId>,
    /// Members forgotten since then (their records go).
    forgotten: BTreeSet<RegionId>,
    own_dirty: bool,
    /// The cut of this region's own retirement, once it learned of it: it takes no writes.
    retired_self: Option<u64>,
    retired_self_dirty: bool,
    stable_dirty: bool,
    collected_dirty: bool,
}

const COLLECTED_KEY: &[u8] = b"\x00collected";
const OWN_KEY: &[u8] = b"\x00own";
const RETIRED_KEY: &[u8] = b"\x00retired";
const STABLE_KEY: &[u8] = b"\x00stable";

impl Stability {
    /// Reads the persisted state; `writers` are the regions whose versions this store holds
    /// (each is a member, known or not).
    pub(crate) fn load(
        kv: &dyn KvRead,
        me: &RegionId,
        writers: impl Iterator<Item = RegionId>,
    ) -> Result<Self> {
        let mut s = Stability {
            me: me.clone(),
            members: BTreeMap::new(),
            own: Applied::new(),
            stable: Applied::new(),
            collected: Applied::new(),
            dirty: BTreeSet::new(),
            forgotten: BTreeSet::new(),
            own_dirty: false,
            retired_self: None,
            retired_self_dirty: false,
            stable_dirty: false,
            collected_dirty: false,
        };
        for (k, v) in kv.scan(Table::Members, &[], None, usize::MAX)? {
            match k.as_slice() {
                OWN_KEY => s.own = decode("applied vector", &v)?,
                RETIRED_KEY => s.retired_self = Some(decode("retirement", &v)?),
                STABLE_KEY => s.stable = decode("stable point", &v)?,
                COLLECTED_KEY => s.collected = decode("collected point", &v)?,
                name => {
                    let name = String::from_utf8_lossy(name);
                    let region = RegionId::new(&name).map_err(|_| {
                        crate::Error::Storage(format!("the members table names {name:?}"))
                    })?;
                    s.members.insert(region, decode("member", &v)?);
                }
            }
        }
        for w in writers {
            s.know(&w);
        }
        Ok(s)
    }

    /// Makes `region` a member if it is not one yet.
    pub(crate) fn know(&mut self, region: &RegionId) {
        if *region != self.me && !self.members.contains_key(region) {
            self.members.insert(region.clone(), MemberRecord::default());
            self.dirty.insert(region.clone());
        }
    }

    /// This region's applied vector, its own entry being `counter`.
    pub(crate) fn own(&self, counter: u64) -> Applied {
        let mut v = self.own.clone();
        v.insert(self.me.clone(), counter);
        v
    }

    /// The stable point.
    pub(crate) fn stable(&self) -> &Applied {
        &self.stable
    }

    /// The stable entry of `region` (0 when none).
    pub(crate) fn stable_of(&self, region: &RegionId) -> u64 {
        get(&self.stable, region)
    }

    /// What collection has removed up to (see [`Stability::collected`]'s field).
    pub(crate) fn collected(&self) -> &Applied {
        &self.collected
    }

    /// Records that collection removed the version `(region, counter)`, or an item whose
    /// context held it.
    pub(crate) fn mark_collected(&mut self, region: &RegionId, counter: u64) {
        let e = self.collected.entry(region.clone()).or_insert(0);
        if counter > *e {
            *e = counter;
            self.collected_dirty = true;
        }
    }

    /// Whether a peer that has applied `applied` has applied everything collection removed.
    pub(crate) fn has_collected_for(&self, applied: &Applied) -> bool {
        self.collected.iter().all(|(r, &c)| get(applied, r) >= c)
    }

    /// Why a batch or a pull from `store`, a store of `region`, is refused, if it is: this
    /// region knows `region` by another of its stores. An earlier store was replaced by a
    /// join; a later one that this region has not heard of either joined elsewhere (its
    /// snapshot's source relays it soon) or was started empty without joining.
    /// `joined` is what a pull said of the store (`None`: a batch, which does not say).
    pub(crate) fn store_refusal(
        &self,
        region: &RegionId,
        store: u64,
        joined: Option<bool>,
    ) -> Option<String> {
        let known = self.members.get(region).map_or(0, |m| m.store);
        if known == 0 || store == known {
            return None;
        }
        Some(if store < known {
            format!(
                "this is an earlier store of region {region} (store {store}; it has been \
                 replaced by store {known}, which joined later): it must not pull or serve \
                 again; start it on an empty data directory with `converge serve --join <url>`"
            )
        } else if joined == Some(false) {
            format!(
                "region {region} now runs store {store}, which did not join (this region knows \
                 its store {known}): its data was lost and it started empty; start it again on \
                 an empty data directory with `converge serve --join <url>`"
            )
        } else {
            format!(
                "region {region} now runs store {store}, which this region has not heard of \
                 (it knows store {known}): if {region} joined from another region's snapshot, \
                 this clears once it pulls from this region or its source's news arrives here; \
                 if it lost its data and started empty, start it again on an empty data \
                 directory with `converge serve --join <url>`"
            )
        })
    }

    /// Whether `region` is known here as a member (or is this region).
    pub(crate) fn is_member(&self, region: &RegionId) -> bool {
        *region == self.me || self.members.contains_key(region)
    }

    /// The cut of `region` if it was retired: its versions past it are refused.
    pub(crate) fn retired_cut(&self, region: &RegionId) -> Option<u64> {
        self.members
            .get(region)
            .filter(|m| m.retired)
            .map(|m| m.cut)
    }

    /// Retires `region` with `cut` (a retirement applied: local or remote, covered or not).
    /// Two retirements of one region keep the higher cut.
    pub(crate) fn retire(&mut self, region: &RegionId, cut: u64) {
        if *region == self.me {
            if self.retired_self.is_none_or(|c| cut > c) {
                self.retired_self = Some(cut);
                self.retired_self_dirty = true;
            }
            return;
        }
        self.know(region);
        let m = self.members.get_mut(region).expect("known above");
        if !m.retired || cut > m.cut {
            m.retired = true;
            m.cut = m.cut.max(cut);
            self.dirty.insert(region.clone());
        }
    }

    /// The cut of this region's own retirement, if it learned of it.
    pub(crate) fn retired_self(&self) -> Option<u64> {
        self.retired_self
    }

    /// What this region tells its pullers about every member (its own vector apart).
    pub(crate) fn reports(&self) -> Vec<MemberReport> {
        self.members
            .iter()
            .map(|(r, m)| MemberReport {
                region: r.clone(),
                applied: m.latest.clone(),
                retired: m.retired,
                store: m.store,
            })
            .collect()
    }

    /// Takes in what a batch from `source` says: the members' vectors it relays and, when the
    /// batch reached the source's durable end, the source's own vector then (everything it had
    /// applied, this region has now applied too). Then confirms and recomputes the stable
    /// point with this region's `counter`.
    pub(crate) fn merge(
        &mut self,
        source: &RegionId,
        source_store: u64,
        source_applied: Option<&Applied>,
        reports: &[MemberReport],
        counter: u64,
        now_ms: u64,
    ) {
        self.know(source);
        for rep in reports {
            if rep.region == self.me {
                continue;
            }
            self.know(&rep.region);
            for r in rep.applied.keys() {
                self.know(r);
            }
            let m = self.members.get_mut(&rep.region).expect("known above");
            // A later store of the region (it joined after its data was lost): its vector
            // replaces what the lost store claimed. An earlier one's claims count no more.
            if rep.store > m.store {
                m.start_over(rep.store, Applied::new());
                self.dirty.insert(rep.region.clone());
            } else if rep.store < m.store {
                continue;
            }
            // Retirement comes from the retirement item alone (the flag is for display).
            if raise(&mut m.latest, &rep.applied) {
                m.heard_ms = m.heard_ms.max(now_ms);
                self.dirty.insert(rep.region.clone());
            }
        }
        {
            let m = self.members.get_mut(source).expect("known above");
            if source_store > m.store {
                m.start_over(source_store, Applied::new());
                self.dirty.insert(source.clone());
            }
            // Heard from directly: a joiner is no longer provisional. (Written at most every
            // 10 s: an idle peer's long polls commit nothing.)
            if m.store == source_store
                && (m.provisional || m.heard_ms.saturating_add(10_000) < now_ms)
            {
                m.provisional = false;
                m.heard_ms = now_ms;
                self.dirty.insert(source.clone());
            }
        }
        if let Some(applied) = source_applied {
            for r in applied.keys() {
                self.know(r);
            }
            let m = self.members.get_mut(source).expect("known above");
            if m.store == source_store && raise(&mut m.latest, applied) {
                m.heard_ms = m.heard_ms.max(now_ms);
                self.dirty.insert(source.clone());
            }
            let mut theirs = applied.clone();
            theirs.remove(&self.me);
            if raise(&mut self.own, &theirs) {
                self.own_dirty = true;
            }
        }
        self.confirm(counter);
        self.recompute(counter);
    }

    /// Confirms each member's vectors this region has caught up with.
    fn confirm(&mut self, counter: u64) {
        let own = self.own(counter);
        for (r, m) in &mut self.members {
            let caught_up = |v: &Applied| get(&own, r) >= get(v, r);
            let mut changed = false;
            if let Some(p) = m.pending.take() {
                if caught_up(&p) {
                    changed |= raise(&mut m.confirmed, &p);
                } else {
                    m.pending = Some(p);
                }
            }
            if m.latest != m.confirmed && m.pending.is_none() {
                if caught_up(&m.latest) {
                    changed |= raise(&mut m.confirmed, &m.latest.clone());
                } else {
                    m.pending = Some(m.latest.clone());
                    changed = true;
                }
            }
            if changed {
                self.dirty.insert(r.clone());
            }
        }
    }

    /// The stable point from the confirmed vectors: never below what it was.
    pub(crate) fn recompute(&mut self, counter: u64) {
        let own = self.own(counter);
        let live: Vec<&Applied> = std::iter::once(&own)
            .chain(
                self.members
                    .values()
                    .filter(|m| !m.retired)
                    .map(|m| &m.confirmed),
            )
            .collect();
        let mut regions: BTreeSet<&RegionId> = own.keys().collect();
        regions.extend(self.members.keys());
        for r in regions {
            let least = live.iter().map(|v| get(v, r)).min().unwrap_or(0);
            if least > get(&self.stable, r) {
                self.stable.insert(r.clone(), least);
                self.stable_dirty = true;
            }
        }
    }

    /// Every member's record (for a snapshot).
    pub(crate) fn records(&self) -> Vec<(RegionId, MemberRecord)> {
        self.members
            .iter()
            .map(|(r, m)| (r.clone(), m.clone()))
            .collect()
    }

    /// A region joins from this region's snapshot, holding `applied`: its record starts over
    /// from that (an earlier store of the same name may have claimed more).
    pub(crate) fn joined(&mut self, region: &RegionId, store: u64, applied: &Applied, now_ms: u64) {
        if *region == self.me {
            return;
        }
        let mut applied = applied.clone();
        applied.remove(region);
        self.members.insert(
            region.clone(),
            MemberRecord {
                latest: applied.clone(),
                confirmed: applied,
                pending: None,
                retired: false,
                cut: 0,
                heard_ms: now_ms,
                store,
                provisional: true,
            },
        );
        self.dirty.insert(region.clone());
    }

    /// The store of `region` this region replicates with (0: none recorded).
    pub(crate) fn store_of(&self, region: &RegionId) -> u64 {
        self.members.get(region).map_or(0, |m| m.store)
    }

    /// Whether `store` is a later store of `region` than the one recorded here.
    pub(crate) fn is_later_store(&self, region: &RegionId, store: u64) -> bool {
        self.members
            .get(region)
            .is_some_and(|m| m.store != 0 && store > m.store)
    }

    /// `region` runs `store` now, a later store that joined from a snapshot and has applied
    /// `applied`: its record starts over (nothing confirmed until its own writes are here).
    pub(crate) fn later_store(&mut self, region: &RegionId, store: u64, applied: &Applied) {
        if let Some(m) = self.members.get_mut(region) {
            m.start_over(store, applied.clone());
            self.dirty.insert(region.clone());
        }
    }

    /// Forgets the joiners not heard from within `ttl_ms` of asking for a snapshot; says
    /// whether any was. (One that joins later is refused a collected log and joins again.)
    pub(crate) fn forget_silent_joiners(&mut self, now_ms: u64, ttl_ms: u64) -> bool {
        let silent: Vec<RegionId> = self
            .members
            .iter()
            .filter(|(_, m)| m.provisional && m.heard_ms.saturating_add(ttl_ms) < now_ms)
            .map(|(r, _)| r.clone())
            .collect();
        for r in &silent {
            self.members.remove(r);
            self.forgotten.insert(r.clone());
        }
        !silent.is_empty()
    }

    /// This (new) region starts from `source`'s snapshot: its members, its vector (as this
    /// region's, since it holds all of it), its stable point and what it collected.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn adopt(
        &mut self,
        source: &RegionId,
        source_store: u64,
        now_ms: u64,
        applied: &Applied,
        stable: &Applied,
        collected: &Applied,
        members: Vec<(RegionId, MemberRecord)>,
    ) {
        for (r, m) in members {
            if r != self.me {
                self.dirty.insert(r.clone());
                self.members.insert(r, m);
            }
        }
        let mut theirs = applied.clone();
        theirs.remove(&self.me);
        let src = self.members.entry(source.clone()).or_default();
        src.store = source_store;
        src.heard_ms = now_ms;
        src.provisional = false;
        raise(&mut src.latest, applied);
        raise(&mut src.confirmed, applied);
        src.pending = None;
        self.dirty.insert(source.clone());
        self.own_dirty |= raise(&mut self.own, &theirs);
        self.stable_dirty |= raise(&mut self.stable, stable);
        self.collected_dirty |= raise(&mut self.collected, collected);
    }

    /// Whether anything needs writing.
    pub(crate) fn is_dirty(&self) -> bool {
        !self.dirty.is_empty()
            || !self.forgotten.is_empty()
            || self.own_dirty
            || self.retired_self_dirty
            || self.stable_dirty
            || self.collected_dirty
    }

    /// Writes what changed.
    pub(crate) fn persist(&mut self, kv: &mut dyn KvWrite) -> Result<()> {
        for r in std::mem::take(&mut self.forgotten) {
            kv.remove(Table::Members, r.as_str().as_bytes())?;
        }
        for r in std::mem::take(&mut self.dirty) {
            if let Some(m) = self.members.get(&r) {
                kv.put(Table::Members, r.as_str().as_bytes(), &encode(m)?)?;
            }
        }
        if std::mem::take(&mut self.retired_self_dirty)
            && let Some(cut) = self.retired_self
        {
            kv.put(Table::Members, RETIRED_KEY, &encode(&cut)?)?;
        }
        if std::mem::take(&mut self.own_dirty) {
            kv.put(Table::Members, OWN_KEY, &encode(&self.own)?)?;
        }
        if std::mem::take(&mut self.stable_dirty) {
            kv.put(Table::Members, STABLE_KEY, &encode(&self.stable)?)?;
        }
        if std::mem::take(&mut self.collected_dirty) {
            kv.put(Table::Members, COLLECTED_KEY, &encode(&self.collected)?)?;
        }
        Ok(())
    }

    /// Every member with what this region knows of it, this region first.
    pub(crate) fn status(&self, counter: u64, now_ms: u64) -> Vec<MemberStatus> {
        let own = self.own(counter);
        let behind = |v: &Applied| {
            own.iter()
                .map(|(r, &c)| c.saturating_sub(get(v, r)))
                .fold(0u64, u64::saturating_add)
        };
        let names = |v: &Applied| {
            v.iter()
                .map(|(r, c)| (r.as_str().to_owned(), *c))
                .collect::<BTreeMap<_, _>>()
        };
        let mut out = vec![MemberStatus {
            region: self.me.as_str().to_owned(),
            this_region: true,
            retired: false,
            applied: names(&own),
            confirmed: names(&own),
            behind: 0,
            heard_ms_ago: Some(0),
            holds_back: false,
        }];
        for (r, m) in &self.members {
            out.push(MemberStatus {
                region: r.as_str().to_owned(),
                this_region: false,
                retired: m.retired,
                applied: names(&m.latest),
                confirmed: names(&m.confirmed),
                behind: behind(&m.confirmed),
                heard_ms_ago: (m.heard_ms > 0).then(|| now_ms.saturating_sub(m.heard_ms)),
                holds_back: !m.retired && behind(&m.confirmed) > 0,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(name: &str) -> RegionId {
        RegionId::new(name).expect("name")
    }

    fn v(entries: &[(&str, u64)]) -> Applied {
        entries.iter().map(|(n, c)| (r(n), *c)).collect()
    }

    fn empty(me: &str) -> Stability {
        Stability {
            me: r(me),
            members: BTreeMap::new(),
            own: Applied::new(),
            stable: Applied::new(),
            collected: Applied::new(),
            dirty: BTreeSet::new(),
            forgotten: BTreeSet::new(),
            own_dirty: false,
            retired_self: None,
            retired_self_dirty: false,
            stable_dirty: false,
            collected_dirty: false,
        }
    }

    #[test]
    fn the_stable_point_waits_for_every_member_and_for_their_own_writes() {
        let mut west = empty("west");
        // East reports it applied west's writes up to 5, at its own counter 9; west has not
        // applied east's writes up to 9 yet: east's report is pending, nothing is stable.
        west.merge(
            &r("east"),
            0,
            Some(&v(&[("east", 9), ("west", 5)])),
            &[],
            7,
            1,
        );
        // The batch carried east's vector at its end: west applied east through 9.
        assert_eq!(west.own(7), v(&[("east", 9), ("west", 7)]));
        assert_eq!(west.stable_of(&r("west")), 5);
        assert_eq!(west.stable_of(&r("east")), 9);
        // A third member heard of through a relay, with nothing confirmed, holds everything.
        let mut three = empty("west");
        three.merge(
            &r("east"),
            0,
            Some(&v(&[("east", 9), ("west", 5)])),
            &[MemberReport {
                region: r("north"),
                applied: v(&[("north", 4), ("west", 6), ("east", 9)]),
                retired: false,
                store: 0,
            }],
            7,
            1,
        );
        assert_eq!(
            three.stable_of(&r("west")),
            0,
            "north's report waits for north's writes"
        );
        // Once west applied north's writes up to 4, north's report is confirmed.
        three.merge(&r("north"), 0, Some(&v(&[("north", 4)])), &[], 7, 2);
        assert_eq!(three.stable_of(&r("west")), 5);
        assert_eq!(
            three.stable_of(&r("north")),
            0,
            "east never said it has north's writes"
        );
    }

    #[test]
    fn the_stable_point_never_goes_back_when_a_member_appears() {
        let mut west = empty("west");
        west.merge(
            &r("east"),
            0,
            Some(&v(&[("east", 3), ("west", 2)])),
            &[],
            2,
            1,
        );
        assert_eq!(west.stable_of(&r("west")), 2);
        west.know(&r("south"));
        west.recompute(2);
        assert_eq!(west.stable_of(&r("west")), 2);
    }

    #[test]
    fn a_member_that_keeps_writing_is_confirmed_as_this_region_catches_up() {
        let mut west = empty("west");
        west.know(&r("east"));
        // Relayed reports that always run ahead of what west applied of east.
        for i in 1..=5u64 {
            let rep = MemberReport {
                region: r("east"),
                applied: v(&[("east", 10 * i), ("west", i)]),
                retired: false,
                store: 0,
            };
            west.merge(
                &r("relay"),
                0,
                Some(&v(&[("east", 10 * i - 5)])),
                &[rep],
                9,
                i,
            );
        }
        // The first pending report (east at 10) was confirmed once west reached east's 15.
        let east = &west.members[&r("east")];
        assert!(east.confirmed.get(&r("west")).copied().unwrap_or(0) >= 1);
    }
}
