//! Evaluating an expression over one row (one value per source).

use crate::ast::{BinOp, Expr, Func, UnOp};
use crate::value::{V, deep_eq, equals, num, relate};
use serde_json::{Map, Value};
use std::cmp::Ordering;

/// Values of the aggregates of one group, looked up by the aggregate's node.
pub(crate) type AggValues<'q> = [(&'q Expr, Option<Value>)];

/// Evaluates `e` over `row`; `aggs` gives aggregates their group's values (empty outside
/// a grouped projection, where the parser allows no aggregate).
pub(crate) fn eval<'a>(e: &'a Expr, row: &[V<'a>], aggs: &AggValues<'_>) -> V<'a> {
    match e {
        Expr::Const(v) => V::Ref(v),
        Expr::Undefined => V::Undef,
        Expr::Alias { slot, .. } => row.get(*slot).cloned().unwrap_or(V::Undef),
        Expr::Prop(base, name) => property(eval(base, row, aggs), name),
        Expr::Index(base, index) => {
            let base = eval(base, row, aggs);
            match eval(index, row, aggs).get() {
                Some(Value::String(s)) => property(base, s),
                Some(Value::Number(n)) => match n.as_f64() {
                    Some(f) if f >= 0.0 && f.fract() == 0.0 => element(base, f as usize),
                    _ => V::Undef,
                },
                _ => V::Undef,
            }
        }
        Expr::Unary(op, a) => {
            let a = eval(a, row, aggs);
            match op {
                UnOp::Not => a.as_bool().map_or(V::Undef, |b| V::bool(!b)),
                UnOp::Neg => a.as_f64().map_or(V::Undef, |n| num(-n)),
                UnOp::Plus => a.as_f64().map_or(V::Undef, num),
            }
        }
        Expr::Binary(op, a, b) => binary(*op, a, b, row, aggs),
        Expr::Between {
            expr,
            low,
            high,
            negated,
        } => {
            let v = eval(expr, row, aggs);
            let lo = relate(v.get(), eval(low, row, aggs).get()).map(Ordering::is_ge);
            let hi = relate(v.get(), eval(high, row, aggs).get()).map(Ordering::is_le);
            not_if(*negated, and3(lo, hi))
        }
        Expr::In {
            expr,
            list,
            negated,
        } => {
            let v = eval(expr, row, aggs);
            let mut acc = Some(false);
            for x in list {
                acc = or3(acc, equals(v.get(), eval(x, row, aggs).get()));
                if acc == Some(true) {
                    break;
                }
            }
            not_if(*negated, acc)
        }
        Expr::Like {
            expr,
            pattern,
            escape,
            negated,
        } => {
            let v = eval(expr, row, aggs);
            let p = eval(pattern, row, aggs);
            match (v.as_str(), p.as_str()) {
                (Some(s), Some(p)) => not_if(*negated, Some(like(s, p, *escape))),
                _ => V::Undef,
            }
        }
        Expr::Ternary(c, a, b) => {
            if eval(c, row, aggs).as_bool() == Some(true) {
                eval(a, row, aggs)
            } else {
                eval(b, row, aggs)
            }
        }
        Expr::Coalesce(a, b) => match eval(a, row, aggs) {
            V::Undef => eval(b, row, aggs),
            v => v,
        },
        Expr::Call(f, args) => call(*f, args, row, aggs),
        Expr::Aggregate(..) => aggs
            .iter()
            .find(|(node, _)| std::ptr::eq(*node, e))
            .and_then(|(_, v)| v.clone())
            .map_or(V::Undef, V::Own),
        Expr::Object(fields) => {
            let mut m = Map::new();
            for (k, x) in fields {
                if let Some(v) = eval(x, row, aggs).into_value() {
                    m.insert(k.clone(), v);
                }
            }
            V::Own(Value::Object(m))
        }
        Expr::Array(items) => V::Own(Value::Array(
            items
                .iter()
                .filter_map(|x| eval(x, row, aggs).into_value())
                .collect(),
        )),
    }
}

/// `v.name`: undefined unless `v` is an object that has it.
pub(crate) fn property<'a>(v: V<'a>, name: &str) -> V<'a> {
    match v {
        V::Ref(Value::Object(m)) => m.get(name).map_or(V::Undef, V::Ref),
        V::Own(Value::Object(mut m)) => m.remove(name).map_or(V::Undef, V::Own),
        _ => V::Undef,
    }
}

fn element(v: V<'_>, i: usize) -> V<'_> {
    match v {
        V::Ref(Value::Array(a)) => a.get(i).map_or(V::Undef, V::Ref),
        V::Own(Value::Array(mut a)) if i < a.len() => V::Own(a.swap_remove(i)),
        _ => V::Undef,
    }
}

fn not_if<'a>(negated: bool, b: Option<bool>) -> V<'a> {
    b.map_or(V::Undef, |b| V::bool(b != negated))
}

/// Three-valued AND: false wins, then undefined.
fn and3(a: Option<bool>, b: Option<bool>) -> Option<bool> {
    match (a, b) {
        (Some(false), _) | (_, Some(false)) => Some(false),
        (Some(true), Some(true)) => Some(true),
        _ => None,
    }
}

/// Three-valued OR: true wins, then undefined.
fn or3(a: Option<bool>, b: Option<bool>) -> Option<bool> {
    match (a, b) {
        (Some(true), _) | (_, Some(true)) => Some(true),
        (Some(false), Some(false)) => Some(false),
        _ => None,
    }
}

fn binary<'a>(op: BinOp, a: &'a Expr, b: &'a Expr, row: &[V<'a>], aggs: &AggValues<'_>) -> V<'a> {
    match op {
        BinOp::And => {
            let x = eval(a, row, aggs).as_bool();
            if x == Some(false) {
                return V::bool(false);
            }
            V::from_opt(and3(x, eval(b, row, aggs).as_bool()).map(Value::Bool))
        }
        BinOp::Or => {
            let x = eval(a, row, aggs).as_bool();
            if x == Some(true) {
                return V::bool(true);
            }
            V::from_opt(or3(x, eval(b, row, aggs).as_bool()).map(Value::Bool))
        }
        _ => {
            let x = eval(a, row, aggs);
            let y = eval(b, row, aggs);
            let (x, y) = (x.get(), y.get());
            let out = match op {
                BinOp::Eq => equals(x, y).map(Value::Bool),
                BinOp::Ne => relate(x, y).map(|o| Value::Bool(o.is_ne())),
                BinOp::Lt => relate(x, y).map(|o| Value::Bool(o.is_lt())),
                BinOp::Le => relate(x, y).map(|o| Value::Bool(o.is_le())),
                BinOp::Gt => relate(x, y).map(|o| Value::Bool(o.is_gt())),
                BinOp::Ge => relate(x, y).map(|o| Value::Bool(o.is_ge())),
                BinOp::Concat => match (x, y) {
                    (Some(Value::String(p)), Some(Value::String(q))) => {
                        Some(Value::String(format!("{p}{q}")))
                    }
                    _ => None,
                },
                _ => {
                    let (Some(p), Some(q)) = (x.and_then(Value::as_f64), y.and_then(Value::as_f64))
                    else {
                        return V::Undef;
                    };
                    let r = match op {
                        BinOp::Add => p + q,
                        BinOp::Sub => p - q,
                        BinOp::Mul => p * q,
                        BinOp::Div if q != 0.0 => p / q,
                        BinOp::Rem if q != 0.0 => p % q,
                        _ => return V::Undef,
                    };
                    return num(r);
                }
            };
            V::from_opt(out)
        }
    }
}

/// `s LIKE p`: `%` matches any run of characters, `_` any one; `escape` makes the next
/// character literal.
pub(crate) fn like(s: &str, p: &str, escape: Option<char>) -> bool {
    #[derive(Clone, Copy, PartialEq)]
    enum P {
        Any,
        One,
        Lit(char),
    }
    let mut pat = Vec::new();
    let mut chars = p.chars();
    while let Some(c) = chars.next() {
        pat.push(match c {
            c if Some(c) == escape => match chars.next() {
                Some(n) => P::Lit(n),
                None => P::Lit(c),
            },
            '%' => P::Any,
            '_' => P::One,
            c => P::Lit(c),
        });
    }
    let s: Vec<char> = s.chars().collect();
    // Greedy matching with one backtrack point for the last `%`: linear in practice.
    let (mut i, mut j) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        match pat.get(j) {
            Some(P::Any) => {
                star = Some((j, i));
                j += 1;
            }
            Some(P::One) => {
                i += 1;
                j += 1;
            }
            Some(P::Lit(c)) if *c == s[i] => {
                i += 1;
                j += 1;
            }
            _ => match star {
                Some((sj, si)) => {
                    j = sj + 1;
                    i = si + 1;
                    star = Some((sj, si + 1));
                }
                None => return false,
            },
        }
    }
    pat[j..].iter().all(|p| *p == P::Any)
}

fn call<'a>(f: Func, args: &'a [Expr], row: &[V<'a>], aggs: &AggValues<'_>) -> V<'a> {
    let arg = |i: usize| args.get(i).map_or(V::Undef, |a| eval(a, row, aggs));
    let is = |pred: fn(&Value) -> bool| V::bool(arg(0).get().is_some_and(pred));
    match f {
        Func::IsDefined => V::bool(arg(0).get().is_some()),
        Func::IsNull => is(Value::is_null),
        Func::IsNumber => is(Value::is_number),
        Func::IsString => is(Value::is_string),
        Func::IsBool => is(Value::is_boolean),
        Func::IsArray => is(Value::is_array),
        Func::IsObject => is(Value::is_object),
        Func::ArrayContains => {
            let arr = arg(0);
            let x = arg(1);
            let partial = match args.len() {
                3 => match arg(2).as_bool() {
                    Some(b) => b,
                    None => return V::Undef,
                },
                _ => false,
            };
            match (arr.get(), x.get()) {
                (Some(Value::Array(a)), Some(x)) => {
                    V::bool(a.iter().any(|e| contains_match(e, x, partial)))
                }
                _ => V::Undef,
            }
        }
        Func::ArrayLength => match arg(0).get() {
            Some(Value::Array(a)) => num(a.len() as f64),
            _ => V::Undef,
        },
        Func::ArraySlice => {
            let v = arg(0);
            let Some(Value::Array(a)) = v.get() else {
                return V::Undef;
            };
            let Some(start) = whole(&arg(1)) else {
                return V::Undef;
            };
            let len = a.len() as i64;
            let start = if start < 0 {
                len.saturating_add(start).max(0)
            } else {
                start.min(len)
            };
            let end = if args.len() == 3 {
                match whole(&arg(2)) {
                    Some(n) => start.saturating_add(n.max(0)).min(len),
                    None => return V::Undef,
                }
            } else {
                len
            };
            V::Own(Value::Array(
                a[start as usize..end.max(start) as usize].to_vec(),
            ))
        }
        Func::StartsWith | Func::EndsWith | Func::Contains => {
            let (s, t) = (arg(0), arg(1));
            let (Some(s), Some(t)) = (s.as_str(), t.as_str()) else {
                return V::Undef;
            };
            let fold = match args.len() {
                3 => match arg(2).as_bool() {
                    Some(b) => b,
                    None => return V::Undef,
                },
                _ => false,
            };
            let (s, t) = if fold {
                (s.to_lowercase(), t.to_lowercase())
            } else {
                (s.to_owned(), t.to_owned())
            };
            V::bool(match f {
                Func::StartsWith => s.starts_with(&t),
                Func::EndsWith => s.ends_with(&t),
                _ => s.contains(&t),
            })
        }
        Func::Lower => string_map(arg(0), str::to_lowercase),
        Func::Upper => string_map(arg(0), str::to_uppercase),
        Func::Trim => string_map(arg(0), |s| s.trim().to_owned()),
        Func::Length => arg(0)
            .as_str()
            .map_or(V::Undef, |s| num(s.chars().count() as f64)),
        Func::Substring => {
            let s = arg(0);
            let (Some(s), Some(start), Some(len)) = (s.as_str(), whole(&arg(1)), whole(&arg(2)))
            else {
                return V::Undef;
            };
            let chars: Vec<char> = s.chars().collect();
            let n = chars.len() as i64;
            let start = start.clamp(0, n);
            let end = start.saturating_add(len.max(0)).min(n);
            V::Own(Value::String(
                chars[start as usize..end as usize].iter().collect(),
            ))
        }
        Func::Concat => {
            let mut out = String::new();
            for i in 0..args.len() {
                match arg(i).as_str() {
                    Some(s) => out.push_str(s),
                    None => return V::Undef,
                }
            }
            V::Own(Value::String(out))
        }
        Func::IndexOf => {
            let (s, t) = (arg(0), arg(1));
            let (Some(s), Some(t)) = (s.as_str(), t.as_str()) else {
                return V::Undef;
            };
            let from = if args.len() == 3 {
                match whole(&arg(2)) {
                    Some(n) => n.max(0) as usize,
                    None => return V::Undef,
                }
            } else {
                0
            };
            let chars: Vec<char> = s.chars().collect();
            let needle: Vec<char> = t.chars().collect();
            let found = (from..=chars.len().saturating_sub(needle.len()))
                .filter(|_| from <= chars.len())
                .find(|&i| chars[i..].starts_with(&needle));
            num(found.map_or(-1.0, |i| i as f64))
        }
        Func::Abs => arg(0).as_f64().map_or(V::Undef, |n| num(n.abs())),
        Func::Floor => arg(0).as_f64().map_or(V::Undef, |n| num(n.floor())),
        Func::Ceiling => arg(0).as_f64().map_or(V::Undef, |n| num(n.ceil())),
        Func::Round => arg(0).as_f64().map_or(V::Undef, |n| num(n.round())),
        Func::ToString => match arg(0).get() {
            None => V::Undef,
            Some(Value::String(s)) => V::Own(Value::String(s.clone())),
            Some(Value::Number(n)) => V::Own(Value::String(
                n.as_f64()
                    .map_or_else(|| n.to_string(), |f| crate::value::number(f).to_string()),
            )),
            Some(other) => V::Own(Value::String(other.to_string())),
        },
    }
}

/// A whole number argument.
/// Any whole double is one (`1e21` too): `as` saturates beyond `i64`, and the callers
/// clamp into a string or an array, so the result is exact.
fn whole(v: &V<'_>) -> Option<i64> {
    v.as_f64().filter(|n| n.fract() == 0.0).map(|n| n as i64)
}

fn string_map<'a>(v: V<'a>, f: impl Fn(&str) -> String) -> V<'a> {
    v.as_str().map_or(V::Undef, |s| V::Own(Value::String(f(s))))
}

/// ARRAY_CONTAINS's match: equality, or with `partial` an object element having every
/// property of an object `x`.
fn contains_match(element: &Value, x: &Value, partial: bool) -> bool {
    match (partial, element, x) {
        (true, Value::Object(e), Value::Object(x)) => x
            .iter()
            .all(|(k, v)| e.get(k).is_some_and(|w| deep_eq(v, w))),
        _ => equals(Some(element), Some(x)) == Some(true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_matches_runs_single_characters_and_escapes() {
        assert!(like("hello", "h%o", None));
        assert!(like("hello", "h_llo", None));
        assert!(!like("hello", "h_lo", None));
        assert!(like("50%", "50!%", Some('!')));
        assert!(!like("500", "50!%", Some('!')));
        assert!(like("", "%", None));
        assert!(like("abcabd", "%ab_", None));
        assert!(!like("abc", "", None));
    }
}
