//! The LWW order is a total order (antisymmetric, transitive, deletes first), and the winner
//! does not depend on the order the versions are given in.
#![no_main]

use arbitrary::Arbitrary;
use converge_core::{Hlc, LwwKey};
use libfuzzer_sys::fuzz_target;
use std::cmp::Ordering;

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

#[derive(Arbitrary, Debug)]
enum Num {
    Int(i64),
    Uint(u64),
    Float(f64),
    Text(u8),
}

fn body(n: &Option<Num>) -> String {
    let v = match n {
        None => serde_json::Value::Null,
        Some(Num::Int(i)) => (*i).into(),
        Some(Num::Uint(u)) => (*u).into(),
        Some(Num::Float(f)) => {
            serde_json::Number::from_f64(*f).map_or(serde_json::Value::Null, Into::into)
        }
        Some(Num::Text(t)) => t.to_string().into(),
    };
    serde_json::json!({ "v": v }).to_string()
}

const REGIONS: [&str; 4] = ["a", "b", "ab", "z"];

fuzz_target!(|vs: Vec<V>| {
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
            assert_eq!(a.compare(a, ts), Ordering::Equal);
            for b in &keys {
                let ab = a.compare(b, ts);
                assert_eq!(ab, b.compare(a, ts).reverse(), "antisymmetric");
                if a.deleted && !b.deleted {
                    assert_eq!(ab, Ordering::Greater, "deletes win");
                }
                for c in &keys {
                    if ab != Ordering::Less && b.compare(c, ts) != Ordering::Less {
                        assert_ne!(a.compare(c, ts), Ordering::Less, "transitive");
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
        let fwd = winner(&mut (0..keys.len()));
        let rev = winner(&mut (0..keys.len()).rev());
        if let (Some(f), Some(r)) = (fwd, rev) {
            assert_eq!(
                keys[f].compare(&keys[r], ts),
                Ordering::Equal,
                "resolution does not depend on input order"
            );
        }
    }
});
