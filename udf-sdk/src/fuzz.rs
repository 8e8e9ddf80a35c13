//! `arbitrary::Arbitrary` for the SDK's input and output types (cargo feature `arbitrary`), so
//! a cargo-fuzz target can feed a resolver conflicts shaped like the host's: 2 to 7 versions,
//! deletes among them, bodies that are JSON objects with the conflict's `id`.
//!
//! ```
//! use arbitrary::{Arbitrary, Unstructured};
//! use converge_udf_sdk::{Conflict, resolve_json};
//!
//! let bytes = [7u8; 256];
//! let conflict = Conflict::arbitrary(&mut Unstructured::new(&bytes)).unwrap();
//! assert!((2..=7).contains(&conflict.versions.len()));
//! let input = serde_json::to_vec(&conflict).unwrap(); // the ABI input the host would send
//! let _answer = resolve_json(&input, |_| converge_udf_sdk::Decision::Pick(0));
//! ```

use crate::{ABI_VERSION, Conflict, Decision, Version};
use arbitrary::{Arbitrary, Result, Unstructured};
use serde_json::{Map, Value};

const REGIONS: [&str; 7] = [
    "west", "east", "north", "south", "central", "asia", "europe",
];
const KEYS: [&str; 8] = [
    "n", "name", "lines", "qty", "sku", "version", "tags", "done",
];

/// A JSON value of bounded depth: the leaves the resolvers see most (numbers, short strings,
/// booleans, null), arrays and objects over a small key set, so fields collide across versions.
fn value(u: &mut Unstructured<'_>, depth: u32) -> Result<Value> {
    let kinds = if depth >= 3 { 5 } else { 7 };
    Ok(match u.choose_index(kinds)? {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => Value::from(u.int_in_range(-5i64..=100)?),
        3 => Value::from(f64::from(u.arbitrary::<i16>()?) / 8.0),
        4 => Value::String(String::from(
            *u.choose(&["a", "b", "sku-1", "é", "\"q\"", ""])?,
        )),
        5 => {
            let n = u.int_in_range(0..=4)?;
            Value::Array((0..n).map(|_| value(u, depth + 1)).collect::<Result<_>>()?)
        }
        _ => Value::Object(object(u, depth + 1)?),
    })
}

fn object(u: &mut Unstructured<'_>, depth: u32) -> Result<Map<String, Value>> {
    let mut m = Map::new();
    for _ in 0..u.int_in_range(0..=5)? {
        m.insert((*u.choose(&KEYS)?).to_owned(), value(u, depth)?);
    }
    Ok(m)
}

impl<'a> Arbitrary<'a> for Conflict {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let id = String::from(*u.choose(&["item-1", "cart-42", "x"])?);
        let partition_key = Value::String(String::from(*u.choose(&["alice", "bob"])?));
        let n = u.int_in_range(2..=7)?;
        let mut versions = Vec::with_capacity(n);
        for region in &REGIONS[..n] {
            let deleted = u.ratio(1, 6)?;
            let item = if deleted {
                None
            } else {
                let mut body = object(u, 1)?;
                body.insert("id".into(), Value::String(id.clone()));
                body.insert("pk".into(), partition_key.clone());
                Some(Value::Object(body))
            };
            versions.push(Version {
                item,
                deleted,
                region: (*region).to_owned(),
                timestamp: 1_764_230_400_000 + u64::from(u.arbitrary::<u16>()?),
                logical: u32::from(u.arbitrary::<u8>()?),
            });
        }
        Ok(Conflict {
            abi: ABI_VERSION,
            container: "items".into(),
            id,
            partition_key,
            versions,
        })
    }
}

impl<'a> Arbitrary<'a> for Version {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let deleted = u.arbitrary()?;
        Ok(Version {
            item: if deleted {
                None
            } else {
                Some(Value::Object(object(u, 1)?))
            },
            deleted,
            region: String::from(*u.choose(&REGIONS)?),
            timestamp: u.arbitrary()?,
            logical: u.arbitrary()?,
        })
    }
}

impl<'a> Arbitrary<'a> for Decision {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(match u.choose_index(4)? {
            0 => Decision::Pick(u.int_in_range(0..=7)?),
            1 => Decision::Merge(Value::Object(object(u, 1)?)),
            2 => Decision::Delete,
            _ => Decision::Defer(String::from(*u.choose(&["needs review", "", "\"x\""])?)),
        })
    }
}

/// The largest merged item the host accepts, serialized (ABI.md: the item size limit).
pub const MAX_MERGE_BYTES: usize = 2 << 20;

/// Whether the host would accept `decision` for `conflict` (ABI.md), the property every
/// resolver's fuzz target should assert: a pick in range; a merge that is a JSON object of at
/// most [`MAX_MERGE_BYTES`] with the conflict's `id` and its partition key at `pk_path`
/// (generated conflicts keep it at `/pk`); a delete; a defer. Otherwise the reason the host
/// would put the conflict in the feed with.
///
/// ```
/// use converge_udf_sdk::{Conflict, Decision, fuzz::check_decision};
/// use serde_json::json;
///
/// let c = Conflict::for_test("carts", "c1", json!("alice"), vec![None, Some(json!({}))]);
/// assert!(check_decision(&c, &Decision::Pick(1), "/pk").is_ok());
/// assert!(check_decision(&c, &Decision::Pick(2), "/pk").is_err());
/// let changed = Decision::Merge(json!({"id": "c2", "pk": "alice"}));
/// assert_eq!(check_decision(&c, &changed, "/pk").unwrap_err(), "merge changes the id");
/// ```
pub fn check_decision(
    conflict: &Conflict,
    decision: &Decision,
    pk_path: &str,
) -> std::result::Result<(), String> {
    match decision {
        Decision::Pick(i) if *i >= conflict.versions.len() => Err(format!(
            "pick {i} is out of range for {} versions",
            conflict.versions.len()
        )),
        Decision::Merge(body) => {
            if !body.is_object() {
                return Err("merge is not a JSON object".into());
            }
            if body.get("id").and_then(Value::as_str) != Some(conflict.id.as_str()) {
                return Err("merge changes the id".into());
            }
            if body.pointer(pk_path) != Some(&conflict.partition_key) {
                return Err("merge changes the partition key".into());
            }
            let size = body.to_string().len();
            if size > MAX_MERGE_BYTES {
                return Err(format!(
                    "merged item is {size} bytes, over the item size limit"
                ));
            }
            Ok(())
        }
        Decision::Pick(_) | Decision::Delete | Decision::Defer(_) => Ok(()),
    }
}

/// Deterministic pseudo-random bytes (xorshift64 on `seed`, which advances), to feed
/// [`Unstructured`] in property tests that run without a fuzzer: the same seed gives the same
/// conflicts on every run.
pub fn pseudo_random_bytes(seed: &mut u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|_| {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            *seed as u8
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolve_json;

    #[test]
    fn generated_conflicts_are_valid_input_and_decisions_valid_output() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..500 {
            let bytes: Vec<u8> = pseudo_random_bytes(&mut seed, 512);
            let mut u = Unstructured::new(&bytes);
            let c = Conflict::arbitrary(&mut u).expect("conflict");
            assert!((2..=7).contains(&c.versions.len()));
            assert!(c.versions.iter().all(|v| v.deleted == v.item.is_none()));
            let input = serde_json::to_vec(&c).expect("input");
            let back = resolve_json(&input, |seen| {
                assert_eq!(seen, &c, "the input decodes to the same conflict");
                Decision::Pick(0)
            });
            assert_eq!(back, r#"{"pick":0}"#);
            let d = Decision::arbitrary(&mut u).unwrap_or(Decision::Delete);
            let out: Value = serde_json::from_str(&d.to_json()).expect("decisions are JSON");
            assert_eq!(out.as_object().map(Map::len), Some(1));
        }
    }
}
