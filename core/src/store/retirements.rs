//! Retired regions as items of the system container: a retirement replicates and relays like a
//! definition, and every region that applies it stops counting the region as a member.
//!
//! The item names the region and the *cut*: the counter up to which the retiring region had
//! applied the retired region's versions. Versions of the retired region up to the cut are
//! still accepted everywhere (the retiring region has them, so they reach every member); later
//! ones are refused and counted, in every region alike.

use super::Store;
use super::codec::item_key;
use super::defs::load_item;
use crate::causal::RegionId;
use crate::model::{ItemKey, Operation, PartitionKey, SYSTEM_CREATION};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// Retirements live in the partition `/retired`: database names cannot contain `/`, so it never
/// collides with definitions, resolvers (`/resolvers/<db>`) or databases (`/databases`).
const PARTITION: &str = "/retired";

/// The body of a retirement item.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Retirement {
    pub region: String,
    pub cut: u64,
}

pub(crate) fn retirement_key(region: &str) -> ItemKey {
    ItemKey {
        partition_key: PartitionKey::from(PARTITION),
        id: region.to_owned(),
    }
}

pub(crate) fn is_retirement_key(key: &ItemKey) -> bool {
    key.partition_key.to_value().as_str() == Some(PARTITION)
}

/// Parses a retirement item's body, checked against its key.
pub(crate) fn parse(key: &ItemKey, body: &str) -> Result<(RegionId, u64)> {
    let r: Retirement = serde_json::from_str(body)
        .map_err(|e| Error::CorruptBatch(format!("retirement of {:?}: {e}", key.id)))?;
    if r.region != key.id {
        return Err(Error::CorruptBatch(format!(
            "retirement item {:?} does not match its key",
            key.id
        )));
    }
    Ok((RegionId::new(&r.region)?, r.cut))
}

impl Store {
    /// The cut of `region`'s retirement as this region knows it (`None`: not retired, or not
    /// heard of here). For this region itself: whether it learned it was retired.
    pub fn retired_cut(&self, region: &str) -> Result<Option<u64>> {
        let region = crate::causal::RegionId::new(region)?;
        let view = self.stability_view()?;
        Ok(match region == self.region {
            true => view.retired_self(),
            false => view.retired_cut(&region),
        })
    }

    /// This region learned from the peer `from`, running store `from_store` (what its
    /// fingerprint says), that it was retired with `cut` (the peer refuses its pulls saying
    /// so): from now on it takes no writes ([`crate::Error::Retired`]); reads are served as
    /// before. Persisted. Says whether it is news.
    ///
    /// The claim is believed only from a store this region has replicated with, for a cut it
    /// can have issued: a `--peer` pointing by mistake at another deployment, where a region
    /// of this name was retired, must not silence a live region. Such a claim is an error
    /// saying why, and changes nothing.
    pub fn learn_retired(&self, from: &str, from_store: u64, cut: u64) -> Result<bool> {
        let from = RegionId::new(from)?;
        let me = self.region.clone();
        self.write_tx(self.commit_sync(), |tx| {
            let known = tx.stability().store_of(&from);
            if known == 0 || known != from_store {
                return Err(Error::invalid(format!(
                    "region {from} (store {from_store}) says region {me} was retired, but this \
                     region has not replicated with that store (it knows {}): the claim is \
                     ignored; check that --peer points into this deployment",
                    match known {
                        0 => format!("no store of {from}"),
                        k => format!("store {k}"),
                    }
                )));
            }
            if cut > tx.counter() {
                return Err(Error::invalid(format!(
                    "region {from} says region {me} was retired at counter {cut}, above the {} \
                     it issued: the claim is ignored",
                    tx.counter()
                )));
            }
            let news = tx.stability().retired_self().is_none_or(|c| c < cut);
            if news {
                tx.stability_mut().retire(&me, cut);
            }
            Ok(news)
        })
    }

    /// Retires `region`: it stops being a member (its dots no longer hold collection back) and
    /// its versions past what this region has applied of it are refused, in every region the
    /// retirement reaches. Returns that cut. Retire only a region that is gone for good, from
    /// a region that has everything it wrote; a retired name cannot serve again.
    pub fn retire_region(&self, region: &str) -> Result<u64> {
        let region = RegionId::new(region)?;
        if region == self.region {
            return Err(Error::invalid(format!(
                "region {region} cannot retire itself: retire it from another region"
            )));
        }
        self.write_tx(self.commit_sync(), |tx| {
            if !tx.stability().is_member(&region) {
                return Err(Error::invalid(format!(
                    "region {region} is not a member of this deployment (see GET /_replication/members)"
                )));
            }
            if let Some(cut) = tx.stability().retired_cut(&region) {
                return Ok(cut);
            }
            let cut = tx
                .stability()
                .own(tx.counter())
                .get(&region)
                .copied()
                .unwrap_or(0);
            let key = retirement_key(region.as_str());
            let body = serde_json::to_string(&Retirement {
                region: region.as_str().to_owned(),
                cut,
            })
            .map_err(Error::storage)?;
            let rec = load_item(tx.read(), &item_key(SYSTEM_CREATION, &key))?
                .unwrap_or_else(super::codec::ItemRecord::empty);
            let op = match rec.siblings.is_empty() {
                true => Operation::Create,
                false => Operation::Replace,
            };
            tx.write_local(SYSTEM_CREATION, &key, &rec, op, Some(body))?;
            Ok(cut)
        })
    }
}
