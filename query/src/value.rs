//! Values during evaluation (JSON, or undefined) and Cosmos's rules for comparing them.

use serde_json::Value;
use std::cmp::Ordering;

/// A value during evaluation: undefined, borrowed from an item or the query, or computed.
#[derive(Clone, Debug)]
pub(crate) enum V<'a> {
    /// Undefined: a missing property, or an operation on the wrong types.
    Undef,
    /// Borrowed.
    Ref(&'a Value),
    /// Computed.
    Own(Value),
}

impl<'a> V<'a> {
    /// The JSON value, or `None` when undefined.
    pub(crate) fn get(&self) -> Option<&Value> {
        match self {
            V::Undef => None,
            V::Ref(v) => Some(v),
            V::Own(v) => Some(v),
        }
    }

    /// The value owned, `None` when undefined.
    pub(crate) fn into_value(self) -> Option<Value> {
        match self {
            V::Undef => None,
            V::Ref(v) => Some(v.clone()),
            V::Own(v) => Some(v),
        }
    }

    pub(crate) fn from_opt(v: Option<Value>) -> V<'a> {
        v.map_or(V::Undef, V::Own)
    }

    pub(crate) fn bool(b: bool) -> V<'a> {
        V::Own(Value::Bool(b))
    }

    pub(crate) fn as_bool(&self) -> Option<bool> {
        self.get().and_then(Value::as_bool)
    }

    pub(crate) fn as_f64(&self) -> Option<f64> {
        self.get().and_then(Value::as_f64)
    }

    pub(crate) fn as_str(&self) -> Option<&str> {
        self.get().and_then(Value::as_str)
    }
}

/// A computed number as JSON: whole numbers that a double holds exactly are written as
/// integers (`3`, not `3.0`), as Cosmos writes them; non-finite results are undefined.
pub(crate) fn number(n: f64) -> Value {
    if n.fract() == 0.0 && n.abs() < 9_007_199_254_740_992.0 {
        // -0.0 becomes 0.
        Value::from(n as i64)
    } else {
        serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number)
    }
}

/// A computed number, undefined unless finite.
pub(crate) fn num<'a>(n: f64) -> V<'a> {
    if n.is_finite() {
        V::Own(number(n))
    } else {
        V::Undef
    }
}

/// The rank of a type in the order ORDER BY, MIN and MAX use:
/// undefined < null < booleans < numbers < strings < arrays < objects.
pub(crate) fn type_rank(v: Option<&Value>) -> u8 {
    match v {
        None => 0,
        Some(Value::Null) => 1,
        Some(Value::Bool(_)) => 2,
        Some(Value::Number(_)) => 3,
        Some(Value::String(_)) => 4,
        Some(Value::Array(_)) => 5,
        Some(Value::Object(_)) => 6,
    }
}

/// The total order of ORDER BY: by type rank, then within a type (numbers by value,
/// strings by code point, arrays element by element, objects by their sorted properties).
pub(crate) fn total_cmp(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    let (ra, rb) = (type_rank(a), type_rank(b));
    if ra != rb {
        return ra.cmp(&rb);
    }
    match (a, b) {
        (Some(Value::Bool(x)), Some(Value::Bool(y))) => x.cmp(y),
        (Some(Value::Number(x)), Some(Value::Number(y))) => {
            let (x, y) = (x.as_f64().unwrap_or(0.0), y.as_f64().unwrap_or(0.0));
            // JSON numbers are finite; -0 and 0 are equal.
            x.partial_cmp(&y).unwrap_or(Ordering::Equal)
        }
        (Some(Value::String(x)), Some(Value::String(y))) => x.cmp(y),
        (Some(Value::Array(x)), Some(Value::Array(y))) => x
            .iter()
            .zip(y)
            .map(|(p, q)| total_cmp(Some(p), Some(q)))
            .find(|o| o.is_ne())
            .unwrap_or_else(|| x.len().cmp(&y.len())),
        (Some(Value::Object(x)), Some(Value::Object(y))) => x
            .iter()
            .zip(y)
            .map(|((kp, p), (kq, q))| kp.cmp(kq).then_with(|| total_cmp(Some(p), Some(q))))
            .find(|o| o.is_ne())
            .unwrap_or_else(|| x.len().cmp(&y.len())),
        _ => Ordering::Equal,
    }
}

/// `a = b`: undefined unless both are defined and of one type; arrays and objects compare
/// deeply.
pub(crate) fn equals(a: Option<&Value>, b: Option<&Value>) -> Option<bool> {
    let (a, b) = (a?, b?);
    if type_rank(Some(a)) != type_rank(Some(b)) {
        return None;
    }
    Some(deep_eq(a, b))
}

/// Deep equality with numbers compared by value (`1` equals `1.0`).
pub(crate) fn deep_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| deep_eq(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| deep_eq(v, w)))
        }
        _ => a == b,
    }
}

/// `<`, `<=`, `>`, `>=`, `!=`: undefined across types and for arrays and objects.
pub(crate) fn relate(a: Option<&Value>, b: Option<&Value>) -> Option<Ordering> {
    let (a, b) = (a?, b?);
    match (a, b) {
        (Value::Null, Value::Null) => Some(Ordering::Equal),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

/// A text that is equal for two values exactly when [`deep_eq`] holds: the key of
/// GROUP BY and DISTINCT. Undefined has its own key.
pub(crate) fn canonical(v: Option<&Value>, out: &mut String) {
    use std::fmt::Write;
    match v {
        None => out.push('~'),
        Some(Value::Number(n)) => {
            let f = n.as_f64().unwrap_or(0.0);
            if f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 {
                let _ = write!(out, "{}", f as i64);
            } else {
                let _ = write!(out, "{f:e}");
            }
        }
        Some(Value::Array(a)) => {
            out.push('[');
            for x in a {
                canonical(Some(x), out);
                out.push(',');
            }
            out.push(']');
        }
        Some(Value::Object(o)) => {
            // serde_json's map keeps keys sorted, so equal objects write alike.
            out.push('{');
            for (k, x) in o {
                let _ = write!(out, "{:?}:", k);
                canonical(Some(x), out);
                out.push(',');
            }
            out.push('}');
        }
        Some(other) => {
            let _ = write!(out, "{other}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn computed_numbers_are_written_as_cosmos_writes_them() {
        assert_eq!(number(3.0), json!(3));
        assert_eq!(number(-0.0), json!(0));
        assert_eq!(number(2.5), json!(2.5));
        assert!(matches!(num(f64::INFINITY), V::Undef));
    }

    #[test]
    fn comparisons_across_types_are_undefined() {
        assert_eq!(equals(Some(&json!(1)), Some(&json!("1"))), None);
        assert_eq!(equals(Some(&json!(1)), Some(&json!(1.0))), Some(true));
        assert_eq!(
            equals(Some(&json!([1, {"a": 2}])), Some(&json!([1, {"a": 2.0}]))),
            Some(true)
        );
        assert_eq!(relate(Some(&json!([1])), Some(&json!([1]))), None);
        assert_eq!(
            relate(Some(&json!("a")), Some(&json!("b"))),
            Some(Ordering::Less)
        );
        assert_eq!(equals(None, None), None);
    }

    #[test]
    fn the_sort_order_ranks_types_then_values() {
        let order = [
            json!(null),
            json!(false),
            json!(true),
            json!(-1),
            json!(2.5),
            json!(""),
            json!("a"),
            json!([]),
            json!({}),
        ];
        assert_eq!(total_cmp(None, Some(&order[0])), Ordering::Less);
        for w in order.windows(2) {
            assert_eq!(
                total_cmp(Some(&w[0]), Some(&w[1])),
                Ordering::Less,
                "{} < {}",
                w[0],
                w[1]
            );
        }
        assert_eq!(
            total_cmp(Some(&json!(1)), Some(&json!(1.0))),
            Ordering::Equal
        );
    }

    #[test]
    fn canonical_keys_match_deep_equality() {
        let key = |v: &Value| {
            let mut s = String::new();
            canonical(Some(v), &mut s);
            s
        };
        assert_eq!(key(&json!({"a": [1.0, "x"]})), key(&json!({"a": [1, "x"]})));
        assert_ne!(key(&json!("1")), key(&json!(1)));
        assert_ne!(key(&json!(null)), {
            let mut s = String::new();
            canonical(None, &mut s);
            s
        });
    }
}
