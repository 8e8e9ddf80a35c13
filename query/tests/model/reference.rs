//! The reference evaluator: docs/queries.md's rules written out plainly and slowly.
//!
//! Every row is materialized, then the clauses run in the document's numbered order:
//! rows, WHERE, projection (aggregates and GROUP BY folding groups), ORDER BY (a stable
//! sort), DISTINCT, OFFSET/LIMIT, TOP. Values are `Option<Value>`, `None` for undefined.

use super::ast::{AggK, Count, Ex, Fun, Op, Q, Root, Sel};
use serde_json::{Map, Value};
use std::cmp::Ordering;

/// A value, or undefined (`None`).
pub type Val = Option<Value>;

/// What names mean while evaluating: the sources (in row order) and the parameters.
pub struct Env<'a> {
    /// Source names; a row holds one value per name, in this order.
    pub names: Vec<String>,
    /// `(name with @, value)`.
    pub params: &'a [(String, Value)],
}

impl Env<'_> {
    fn param(&self, p: &str) -> Val {
        self.params
            .iter()
            .find(|(n, _)| n == p)
            .map(|(_, v)| v.clone())
    }
}

/// The JSON type of a value, in the order ORDER BY ranks types (undefined is 0).
fn rank(v: &Val) -> u8 {
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

fn f(v: &Value) -> f64 {
    v.as_f64().expect("a JSON number is a double")
}

/// Deep equality, numbers by value (`1` equals `1.0`); values of different types differ.
pub fn deep_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Null, Value::Null) => true,
        (Value::Bool(x), Value::Bool(y)) => x == y,
        (Value::Number(_), Value::Number(_)) => f(a) == f(b),
        (Value::String(x), Value::String(y)) => x == y,
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| deep_eq(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| deep_eq(v, w)))
        }
        _ => false,
    }
}

/// Two undefined-or-values equal as GROUP BY sees them: undefined is a value of its own.
fn same(a: &Val, b: &Val) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(x), Some(y)) => deep_eq(x, y),
        _ => false,
    }
}

/// `a = b`.
fn equals(a: &Val, b: &Val) -> Option<bool> {
    match (a, b) {
        (Some(x), Some(y)) if rank(a) == rank(b) => Some(deep_eq(x, y)),
        _ => None,
    }
}

/// The order of `<`, `<=`, `>`, `>=`, `!=`: both defined, of one type among null, boolean,
/// number, string.
fn relate(a: &Val, b: &Val) -> Option<Ordering> {
    match (a.as_ref()?, b.as_ref()?) {
        (Value::Null, Value::Null) => Some(Ordering::Equal),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        (x @ Value::Number(_), y @ Value::Number(_)) => f(x).partial_cmp(&f(y)),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

/// ORDER BY's total order: undefined < null < false < true < numbers < strings < arrays
/// < objects; arrays element by element then shorter first; objects property by property
/// in name order (name, then value), then fewer first.
pub fn total(a: &Val, b: &Val) -> Ordering {
    if rank(a) != rank(b) {
        return rank(a).cmp(&rank(b));
    }
    match (a, b) {
        (Some(Value::Bool(x)), Some(Value::Bool(y))) => x.cmp(y),
        (Some(x @ Value::Number(_)), Some(y @ Value::Number(_))) => {
            f(x).partial_cmp(&f(y)).expect("JSON numbers are finite")
        }
        (Some(Value::String(x)), Some(Value::String(y))) => x.cmp(y),
        (Some(Value::Array(x)), Some(Value::Array(y))) => {
            for i in 0..x.len().min(y.len()) {
                let o = total(&Some(x[i].clone()), &Some(y[i].clone()));
                if o != Ordering::Equal {
                    return o;
                }
            }
            x.len().cmp(&y.len())
        }
        (Some(Value::Object(x)), Some(Value::Object(y))) => {
            let mut xs: Vec<(&String, &Value)> = x.iter().collect();
            let mut ys: Vec<(&String, &Value)> = y.iter().collect();
            xs.sort_by(|p, q| p.0.cmp(q.0));
            ys.sort_by(|p, q| p.0.cmp(q.0));
            for i in 0..xs.len().min(ys.len()) {
                let o = xs[i].0.cmp(ys[i].0);
                if o != Ordering::Equal {
                    return o;
                }
                let o = total(&Some(xs[i].1.clone()), &Some(ys[i].1.clone()));
                if o != Ordering::Equal {
                    return o;
                }
            }
            xs.len().cmp(&ys.len())
        }
        _ => Ordering::Equal,
    }
}

/// A computed number: undefined unless finite; whole numbers written as integers.
fn num(x: f64) -> Val {
    if !x.is_finite() {
        return None;
    }
    if x.fract() == 0.0 && x.abs() < 9_007_199_254_740_992.0 {
        Some(Value::from(x as i64))
    } else {
        serde_json::Number::from_f64(x).map(Value::Number)
    }
}

fn number(v: &Val) -> Option<f64> {
    v.as_ref().and_then(Value::as_f64)
}

fn string(v: &Val) -> Option<&str> {
    v.as_ref().and_then(Value::as_str)
}

fn boolean(v: &Val) -> Option<bool> {
    v.as_ref().and_then(Value::as_bool)
}

/// A whole-number argument (`start`, `length`); beyond `i64` it saturates (`as` does),
/// which clamping into a string or array makes exact.
fn whole(v: &Val) -> Option<i64> {
    let n = number(v)?;
    (n.fract() == 0.0).then_some(n as i64)
}

fn bool_val(b: Option<bool>) -> Val {
    b.map(Value::Bool)
}

/// Three-valued AND.
fn and(a: Option<bool>, b: Option<bool>) -> Option<bool> {
    if a == Some(false) || b == Some(false) {
        Some(false)
    } else if a == Some(true) && b == Some(true) {
        Some(true)
    } else {
        None
    }
}

/// Three-valued OR.
fn or(a: Option<bool>, b: Option<bool>) -> Option<bool> {
    if a == Some(true) || b == Some(true) {
        Some(true)
    } else if a == Some(false) && b == Some(false) {
        Some(false)
    } else {
        None
    }
}

/// One piece of a LIKE pattern.
#[derive(Clone, Copy, PartialEq)]
enum Pat {
    Run,
    One,
    Char(char),
}

/// `s LIKE p [ESCAPE e]`, by plain backtracking.
pub fn like(s: &str, p: &str, escape: Option<char>) -> bool {
    let mut pat = Vec::new();
    let mut chars = p.chars();
    while let Some(c) = chars.next() {
        if Some(c) == escape {
            // The generator never ends a pattern with its escape character.
            if let Some(next) = chars.next() {
                pat.push(Pat::Char(next));
            }
        } else if c == '%' {
            pat.push(Pat::Run);
        } else if c == '_' {
            pat.push(Pat::One);
        } else {
            pat.push(Pat::Char(c));
        }
    }
    let s: Vec<char> = s.chars().collect();
    fn go(s: &[char], p: &[Pat]) -> bool {
        match p.first() {
            None => s.is_empty(),
            Some(Pat::Run) => (0..=s.len()).any(|i| go(&s[i..], &p[1..])),
            Some(Pat::One) => !s.is_empty() && go(&s[1..], &p[1..]),
            Some(Pat::Char(c)) => s.first() == Some(c) && go(&s[1..], &p[1..]),
        }
    }
    go(&s, &pat)
}

/// ToString of a number: as converge writes numbers (`3`, `2.5`).
fn number_text(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 9_007_199_254_740_992.0 {
        format!("{}", x as i64)
    } else {
        serde_json::Number::from_f64(x)
            .map(|n| n.to_string())
            .unwrap_or_default()
    }
}

/// Evaluates `e` over `row` (one value per source of `env`). `group` is the group's rows
/// when `e` is projected over a group: aggregates fold them.
pub fn eval(e: &Ex, env: &Env<'_>, row: &[Value], group: Option<&[Vec<Value>]>) -> Val {
    let ev = |x: &Ex| eval(x, env, row, group);
    match e {
        Ex::Lit(v) => Some(v.clone()),
        Ex::Undef => None,
        Ex::Param(p) => env.param(p),
        Ex::Name(n) => {
            let i = env.names.iter().position(|m| m == n)?;
            row.get(i).cloned()
        }
        Ex::Paren(x) => ev(x),
        Ex::Dot(b, p) | Ex::Brk(b, p) => match ev(b) {
            Some(Value::Object(m)) => m.get(p).cloned(),
            _ => None,
        },
        Ex::Idx(b, i) => {
            let base = ev(b);
            match ev(i) {
                Some(Value::String(s)) => match base {
                    Some(Value::Object(m)) => m.get(&s).cloned(),
                    _ => None,
                },
                Some(n @ Value::Number(_)) => {
                    let n = f(&n);
                    if n >= 0.0 && n.fract() == 0.0 {
                        match base {
                            Some(Value::Array(a)) => a.get(n as usize).cloned(),
                            _ => None,
                        }
                    } else {
                        None
                    }
                }
                _ => None,
            }
        }
        Ex::Neg(a) => number(&ev(a)).and_then(|x| num(-x)),
        Ex::Pos(a) => number(&ev(a)).and_then(num),
        Ex::Not(a) => boolean(&ev(a)).map(|b| Value::Bool(!b)),
        Ex::Bin(op, a, b) => {
            let (x, y) = (ev(a), ev(b));
            match op {
                Op::And => bool_val(and(boolean(&x), boolean(&y))),
                Op::Or => bool_val(or(boolean(&x), boolean(&y))),
                Op::Eq => bool_val(equals(&x, &y)),
                Op::Ne | Op::Ne2 => bool_val(relate(&x, &y).map(|o| o != Ordering::Equal)),
                Op::Lt => bool_val(relate(&x, &y).map(|o| o == Ordering::Less)),
                Op::Le => bool_val(relate(&x, &y).map(|o| o != Ordering::Greater)),
                Op::Gt => bool_val(relate(&x, &y).map(|o| o == Ordering::Greater)),
                Op::Ge => bool_val(relate(&x, &y).map(|o| o != Ordering::Less)),
                Op::Cat => match (string(&x), string(&y)) {
                    (Some(p), Some(q)) => Some(Value::String(format!("{p}{q}"))),
                    _ => None,
                },
                Op::Add | Op::Sub | Op::Mul | Op::Div | Op::Rem => {
                    let (p, q) = (number(&x)?, number(&y)?);
                    match op {
                        Op::Add => num(p + q),
                        Op::Sub => num(p - q),
                        Op::Mul => num(p * q),
                        Op::Div if q == 0.0 => None,
                        Op::Div => num(p / q),
                        Op::Rem if q == 0.0 => None,
                        _ => num(p % q),
                    }
                }
            }
        }
        Ex::Between(x, lo, hi, neg) => {
            let x = ev(x);
            let ge = relate(&x, &ev(lo)).map(|o| o != Ordering::Less);
            let le = relate(&x, &ev(hi)).map(|o| o != Ordering::Greater);
            let r = and(ge, le);
            bool_val(if *neg { r.map(|b| !b) } else { r })
        }
        Ex::In(x, list, neg) => {
            let x = ev(x);
            let mut r = Some(false);
            for c in list {
                r = or(r, equals(&x, &ev(c)));
            }
            bool_val(if *neg { r.map(|b| !b) } else { r })
        }
        Ex::Like(x, p, esc, neg) => {
            let (x, p) = (ev(x), ev(p));
            match (string(&x), string(&p)) {
                (Some(s), Some(p)) => Some(Value::Bool(like(s, p, *esc) != *neg)),
                _ => None,
            }
        }
        Ex::Cond(c, a, b) => {
            if boolean(&ev(c)) == Some(true) {
                ev(a)
            } else {
                ev(b)
            }
        }
        Ex::Coalesce(a, b) => ev(a).or_else(|| ev(b)),
        Ex::Obj(fields) => {
            let mut m = Map::new();
            for (k, x) in fields {
                if let Some(v) = ev(x) {
                    m.insert(k.clone(), v);
                }
            }
            Some(Value::Object(m))
        }
        Ex::Arr(xs) => Some(Value::Array(xs.iter().filter_map(ev).collect())),
        Ex::Agg(k, arg) => {
            let rows = group.expect("an aggregate is evaluated over a group");
            let args: Vec<Value> = rows
                .iter()
                .filter_map(|r| eval(arg, env, r, None))
                .collect();
            aggregate(*k, &args)
        }
        Ex::Call(fun, args) => {
            let vals: Vec<Val> = args.iter().map(ev).collect();
            call(*fun, &vals)
        }
    }
}

/// An aggregate over the defined arguments of a group's rows.
fn aggregate(k: AggK, args: &[Value]) -> Val {
    match k {
        AggK::Count => Some(Value::from(args.len() as u64)),
        AggK::Sum | AggK::Avg => {
            let mut sum = 0.0;
            for a in args {
                sum += a.as_f64()?;
            }
            if k == AggK::Sum {
                num(sum)
            } else if args.is_empty() {
                None
            } else {
                num(sum / args.len() as f64)
            }
        }
        AggK::Min | AggK::Max => {
            if args.iter().any(|a| a.is_array() || a.is_object()) {
                return None;
            }
            let mut best: Option<&Value> = None;
            for a in args {
                let better = match best {
                    None => true,
                    Some(b) => {
                        let o = total(&Some(a.clone()), &Some(b.clone()));
                        if k == AggK::Min {
                            o == Ordering::Less
                        } else {
                            o == Ordering::Greater
                        }
                    }
                };
                if better {
                    best = Some(a);
                }
            }
            best.cloned()
        }
    }
}

/// A function of the table, over its evaluated arguments.
fn call(fun: Fun, a: &[Val]) -> Val {
    let is = |p: fn(&Value) -> bool| Some(Value::Bool(a[0].as_ref().is_some_and(p)));
    // An optional boolean argument: absent is false, not a boolean is wrong.
    let flag = |i: usize| -> Option<bool> {
        match a.get(i) {
            None => Some(false),
            Some(v) => boolean(v),
        }
    };
    match fun {
        Fun::IsDefined => Some(Value::Bool(a[0].is_some())),
        Fun::IsNull => is(Value::is_null),
        Fun::IsNumber => is(Value::is_number),
        Fun::IsString => is(Value::is_string),
        Fun::IsBool => is(Value::is_boolean),
        Fun::IsArray => is(Value::is_array),
        Fun::IsObject => is(Value::is_object),
        Fun::ArrayContains => {
            let Some(Value::Array(arr)) = &a[0] else {
                return None;
            };
            let x = a[1].as_ref()?;
            let partial = flag(2)?;
            let found = arr.iter().any(|el| match (partial, x, el) {
                (true, Value::Object(want), Value::Object(have)) => want
                    .iter()
                    .all(|(k, v)| have.get(k).is_some_and(|w| deep_eq(v, w))),
                (true, Value::Object(_), _) => false,
                _ => equals(&Some(el.clone()), &Some(x.clone())) == Some(true),
            });
            Some(Value::Bool(found))
        }
        Fun::ArrayLength => match &a[0] {
            Some(Value::Array(arr)) => num(arr.len() as f64),
            _ => None,
        },
        Fun::ArraySlice => {
            let Some(Value::Array(arr)) = &a[0] else {
                return None;
            };
            let len = arr.len() as i64;
            let mut start = whole(&a[1])?;
            if start < 0 {
                start = start.saturating_add(len);
            }
            let start = start.clamp(0, len);
            let end = match a.get(2) {
                None => len,
                Some(l) => {
                    let l = whole(l)?;
                    if l < 0 {
                        start
                    } else {
                        start.saturating_add(l).min(len)
                    }
                }
            };
            Some(Value::Array(arr[start as usize..end as usize].to_vec()))
        }
        Fun::StartsWith | Fun::EndsWith | Fun::Contains => {
            let (s, p) = (string(&a[0])?, string(&a[1])?);
            let (s, p) = if flag(2)? {
                (s.to_lowercase(), p.to_lowercase())
            } else {
                (s.to_owned(), p.to_owned())
            };
            Some(Value::Bool(match fun {
                Fun::StartsWith => s.starts_with(&p),
                Fun::EndsWith => s.ends_with(&p),
                _ => s.contains(&p),
            }))
        }
        Fun::Lower => string(&a[0]).map(|s| Value::String(s.to_lowercase())),
        Fun::Upper => string(&a[0]).map(|s| Value::String(s.to_uppercase())),
        Fun::Trim => string(&a[0]).map(|s| Value::String(s.trim().to_owned())),
        Fun::Length => string(&a[0]).and_then(|s| num(s.chars().count() as f64)),
        Fun::Substring => {
            let chars: Vec<char> = string(&a[0])?.chars().collect();
            let (start, length) = (whole(&a[1])?, whole(&a[2])?);
            let n = chars.len() as i64;
            let start = start.clamp(0, n);
            let end = start.saturating_add(length.max(0)).min(n);
            Some(Value::String(
                chars[start as usize..end as usize].iter().collect(),
            ))
        }
        Fun::Concat => {
            let mut out = String::new();
            for v in a {
                out.push_str(string(v)?);
            }
            Some(Value::String(out))
        }
        Fun::IndexOf => {
            let s: Vec<char> = string(&a[0])?.chars().collect();
            let p: Vec<char> = string(&a[1])?.chars().collect();
            let start = match a.get(2) {
                None => 0,
                Some(v) => whole(v)?.max(0) as usize,
            };
            let mut found = -1.0;
            let mut i = start;
            while i + p.len() <= s.len() {
                if s[i..i + p.len()] == p[..] {
                    found = i as f64;
                    break;
                }
                i += 1;
            }
            num(found)
        }
        Fun::Abs => number(&a[0]).and_then(|x| num(x.abs())),
        Fun::Floor => number(&a[0]).and_then(|x| num(x.floor())),
        Fun::Ceiling => number(&a[0]).and_then(|x| num(x.ceil())),
        // f64::round rounds halves away from zero.
        Fun::Round => number(&a[0]).and_then(|x| num(x.round())),
        Fun::ToString => match a[0].as_ref()? {
            Value::String(s) => Some(Value::String(s.clone())),
            n @ Value::Number(_) => Some(Value::String(number_text(f(n)))),
            other => Some(Value::String(other.to_string())),
        },
    }
}

/// The names of a projection list's entries: the alias, else the last property of a
/// path, else the source name, else `$1`, `$2`, … counting the unnamed entries.
pub fn projection_names(list: &[(Ex, Option<(String, bool)>)]) -> Vec<String> {
    let mut unnamed = 0;
    list.iter()
        .map(|(e, alias)| match alias {
            Some((a, _)) => a.clone(),
            None => auto_name(e).unwrap_or_else(|| {
                unnamed += 1;
                format!("${unnamed}")
            }),
        })
        .collect()
}

fn auto_name(e: &Ex) -> Option<String> {
    match e {
        Ex::Paren(x) => auto_name(x),
        Ex::Dot(_, p) | Ex::Brk(_, p) => Some(p.clone()),
        // Written `e["s"]`: a path step (the renderer never parenthesizes it).
        Ex::Idx(_, i) => match &**i {
            Ex::Lit(Value::String(s)) => Some(s.clone()),
            _ => None,
        },
        Ex::Name(n) => Some(n.clone()),
        _ => None,
    }
}

/// The container's name at the root of a FROM path.
fn path_root(e: &Ex) -> &str {
    match e {
        Ex::Name(n) => n,
        Ex::Dot(b, _) | Ex::Brk(b, _) | Ex::Idx(b, _) => path_root(b),
        _ => "",
    }
}

fn count(c: &Count, params: &[(String, Value)]) -> u64 {
    match c {
        Count::Lit(n) => *n,
        Count::Param(p) => params
            .iter()
            .find(|(n, _)| n == p)
            .and_then(|(_, v)| v.as_f64())
            .map(|n| n as u64)
            .expect("the generator binds count parameters to whole numbers"),
    }
}

/// Whether the query aggregates (GROUP BY, or an aggregate in the projection).
pub fn aggregates(q: &Q) -> bool {
    !q.group.is_empty()
        || match &q.select {
            Sel::Star => false,
            Sel::Value(e) => has_agg(e),
            Sel::List(l) => l.iter().any(|(e, _)| has_agg(e)),
        }
}

/// Whether an aggregate occurs in `e`.
pub fn has_agg(e: &Ex) -> bool {
    match e {
        Ex::Agg(..) => true,
        Ex::Lit(_) | Ex::Undef | Ex::Param(_) | Ex::Name(_) => false,
        Ex::Dot(b, _) | Ex::Brk(b, _) => has_agg(b),
        Ex::Neg(a) | Ex::Pos(a) | Ex::Not(a) | Ex::Paren(a) => has_agg(a),
        Ex::Idx(a, b) | Ex::Bin(_, a, b) | Ex::Coalesce(a, b) | Ex::Like(a, b, _, _) => {
            has_agg(a) || has_agg(b)
        }
        Ex::Between(a, b, c, _) | Ex::Cond(a, b, c) => has_agg(a) || has_agg(b) || has_agg(c),
        Ex::In(a, l, _) => has_agg(a) || l.iter().any(has_agg),
        Ex::Call(_, l) | Ex::Arr(l) => l.iter().any(has_agg),
        Ex::Obj(fs) => fs.iter().any(|(_, x)| has_agg(x)),
    }
}

/// Runs `q` over `items` (in key order) with `params`: the whole result, in order.
pub fn run(q: &Q, items: &[(Vec<u8>, Value)], params: &[(String, Value)]) -> Vec<Value> {
    // 1. Rows: one value per source.
    let names: Vec<String> = q.from.as_ref().map_or_else(Vec::new, |f| f.names());
    let mut rows: Vec<Vec<Value>> = Vec::new();
    match &q.from {
        None => rows.push(Vec::new()),
        Some(from) => {
            for (_, item) in items {
                let mut item_rows: Vec<Vec<Value>> = Vec::new();
                match &from.root {
                    Root::Items(_) => item_rows.push(vec![item.clone()]),
                    Root::Path(container, p, _, _) => {
                        let env = Env {
                            names: vec![container.clone()],
                            params,
                        };
                        if let Some(v) = eval(p, &env, std::slice::from_ref(item), None) {
                            item_rows.push(vec![v]);
                        }
                    }
                    Root::Each(_, p) => {
                        let env = Env {
                            names: vec![path_root(p).to_owned()],
                            params,
                        };
                        if let Some(Value::Array(a)) =
                            eval(p, &env, std::slice::from_ref(item), None)
                        {
                            for x in a {
                                item_rows.push(vec![x]);
                            }
                        }
                    }
                }
                for (j, (_, path)) in from.joins.iter().enumerate() {
                    let env = Env {
                        names: names[..=j].to_vec(),
                        params,
                    };
                    let mut next = Vec::new();
                    for r in item_rows {
                        if let Some(Value::Array(a)) = eval(path, &env, &r, None) {
                            for x in a {
                                let mut r2 = r.clone();
                                r2.push(x);
                                next.push(r2);
                            }
                        }
                    }
                    item_rows = next;
                }
                rows.extend(item_rows);
            }
        }
    }
    let env = Env { names, params };

    // 2. WHERE keeps the rows whose condition is exactly true.
    if let Some(w) = &q.filter {
        rows.retain(|r| eval(w, &env, r, None) == Some(Value::Bool(true)));
    }

    // 3-5. Projection, aggregates, GROUP BY: (ORDER BY keys, result) pairs.
    let project = |row: &[Value], group: Option<&[Vec<Value>]>| -> Val {
        match &q.select {
            Sel::Star => row.first().cloned(),
            Sel::Value(e) => eval(e, &env, row, group),
            Sel::List(list) => {
                let mut m = Map::new();
                for ((e, _), name) in list.iter().zip(projection_names(list)) {
                    if let Some(v) = eval(e, &env, row, group) {
                        m.insert(name, v);
                    }
                }
                Some(Value::Object(m))
            }
        }
    };
    let keys = |row: &[Value], group: Option<&[Vec<Value>]>| -> Vec<Val> {
        q.order
            .iter()
            .map(|(e, _)| eval(e, &env, row, group))
            .collect()
    };
    let mut results: Vec<(Vec<Val>, Value)> = Vec::new();
    if aggregates(q) {
        let mut groups: Vec<(Vec<Val>, Vec<Vec<Value>>)> = Vec::new();
        if q.group.is_empty() {
            groups.push((Vec::new(), rows));
        } else {
            for r in rows {
                let key: Vec<Val> = q.group.iter().map(|g| eval(g, &env, &r, None)).collect();
                let found = groups.iter().position(|(k, _)| {
                    k.len() == key.len() && k.iter().zip(&key).all(|(a, b)| same(a, b))
                });
                match found {
                    Some(i) => groups[i].1.push(r),
                    None => groups.push((key, vec![r])),
                }
            }
        }
        for (_, members) in &groups {
            let first: Vec<Value> = members.first().cloned().unwrap_or_default();
            if let Some(doc) = project(&first, Some(members)) {
                results.push((keys(&first, Some(members)), doc));
            }
        }
    } else {
        for r in &rows {
            if let Some(doc) = project(r, None) {
                results.push((keys(r, None), doc));
            }
        }
    }

    // 7. ORDER BY: a stable sort, each key ascending or descending.
    if !q.order.is_empty() {
        results.sort_by(|a, b| {
            for (i, (_, dir)) in q.order.iter().enumerate() {
                let o = total(&a.0[i], &b.0[i]);
                let o = if *dir == Some(true) { o.reverse() } else { o };
                if o != Ordering::Equal {
                    return o;
                }
            }
            Ordering::Equal
        });
    }

    // 6. DISTINCT (after sorting): the first of each set of equal results.
    let mut out: Vec<Value> = Vec::new();
    for (_, doc) in results {
        if q.distinct && out.iter().any(|d| deep_eq(d, &doc)) {
            continue;
        }
        out.push(doc);
    }

    // 8. OFFSET / LIMIT, then 9. TOP.
    if let Some((o, l)) = &q.offset_limit {
        let (o, l) = (count(o, params) as usize, count(l, params) as usize);
        out = out.into_iter().skip(o).take(l).collect();
    }
    if let Some(t) = &q.top {
        out.truncate(count(t, params) as usize);
    }
    out
}
