//! The LWW order (DESIGN.md) over arbitrary versions: a total order — reflexive, antisymmetric,
//! transitive — in which a delete beats any live version, on a JSON path (`/v`, numbers,
//! strings and missing values mixed) and on `/_ts`; and the winner of a set does not depend on
//! the order the versions come in.

use arbitrary::{Arbitrary, Unstructured};
use converge_core::{Hlc, LwwKey};
use serde_json::Value;
use std::cmp::Ordering;

/// One version as the order sees it, kept small so that ties are common.
#[derive(Arbitrary, Debug)]
struct V {
    deleted: bool,
    value: Option<Num>,
    ms: u16,
    logical: u8,
    region: u8,
    incarnation: u8,
    counter: u8,
}

/// The value at the conflict path.
#[derive(Arbitrary, Debug)]
enum Num {
    Int(i64),
    Uint(u64),
    Float(f64),
    Text(u8),
}

/// Region names, among them one that is a prefix of another.
const REGIONS: [&str; 4] = ["a", "b", "ab", "z"];

fn body(n: &Option<Num>) -> String {
    let v = match n {
        None => Value::Null,
        Some(Num::Int(i)) => (*i).into(),
        Some(Num::Uint(u)) => (*u).into(),
        Some(Num::Float(f)) => serde_json::Number::from_f64(*f).map_or(Value::Null, Into::into),
        Some(Num::Text(t)) => t.to_string().into(),
    };
    serde_json::json!({ "v": v }).to_string()
}

/// Decodes versions from `data` and checks the order's laws over them.
pub fn check(data: &[u8]) {
    let Ok(vs) = Vec::<V>::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    // Every triple is compared: keep the cube small.
    let vs = &vs[..vs.len().min(24)];
    let bodies: Vec<String> = vs.iter().map(|v| body(&v.value)).collect();
    for path in ["/v", "/_ts"] {
        let ts = path == "/_ts";
        let keys: Vec<LwwKey<'_>> = vs
            .iter()
            .zip(&bodies)
            .map(|(v, b)| {
                LwwKey::new(
                    path,
                    v.deleted,
                    Some(b),
                    Hlc::new(u64::from(v.ms), u32::from(v.logical)),
                    REGIONS[usize::from(v.region) % REGIONS.len()],
                    u64::from(v.incarnation),
                    u64::from(v.counter),
                )
            })
            .collect();
        for a in &keys {
            assert_eq!(a.compare(a, ts), Ordering::Equal, "reflexive: {a:?}");
            for b in &keys {
                let ab = a.compare(b, ts);
                assert_eq!(ab, b.compare(a, ts).reverse(), "antisymmetric: {a:?} {b:?}");
                if a.deleted && !b.deleted {
                    assert_eq!(ab, Ordering::Greater, "a delete wins: {a:?} {b:?}");
                }
                for c in &keys {
                    if ab != Ordering::Less && b.compare(c, ts) != Ordering::Less {
                        assert_ne!(
                            a.compare(c, ts),
                            Ordering::Less,
                            "transitive: {a:?} {b:?} {c:?}"
                        );
                    }
                }
            }
        }
        // The winner is the same whatever the input order.
        let winner = |order: &mut dyn Iterator<Item = usize>| {
            order.fold(None, |best: Option<usize>, i| match best {
                Some(j) if keys[j].compare(&keys[i], ts) != Ordering::Less => Some(j),
                _ => Some(i),
            })
        };
        let forward = winner(&mut (0..keys.len()));
        let backward = winner(&mut (0..keys.len()).rev());
        if let (Some(f), Some(b)) = (forward, backward) {
            assert_eq!(
                keys[f].compare(&keys[b], ts),
                Ordering::Equal,
                "the winner depends on the input order"
            );
        }
    }
}
