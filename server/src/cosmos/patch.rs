//! Cosmos partial document update: `add`, `set`, `replace`, `remove`, `incr` and `move` at
//! JSON-pointer paths, applied all or nothing.

use crate::error::ApiError;
use serde_json::Value;

/// One patch operation.
#[derive(Debug)]
pub(crate) enum Op {
    Add(String, Value),
    Set(String, Value),
    Replace(String, Value),
    Remove(String),
    Incr(String, Value),
    Move { from: String, path: String },
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::bad_request(msg)
}

/// A patch body's condition (`FROM c WHERE …`), if it has one.
pub(crate) fn condition(body: &Value) -> Result<Option<String>, ApiError> {
    match body.get("condition") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(bad(
            "a patch \"condition\" is a string such as \"FROM c WHERE c.n > 1\"",
        )),
    }
}

/// The operations of a patch body: `{operations: [...]}` or a bare array.
pub(crate) fn parse(body: &Value) -> Result<Vec<Op>, ApiError> {
    let list = match body {
        Value::Array(a) => a,
        Value::Object(o) => o
            .get("operations")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("the patch body needs \"operations\": [...]"))?,
        _ => return Err(bad("the patch body must be {\"operations\": [...]}")),
    };
    if list.is_empty() || list.len() > 10 {
        return Err(bad("a patch holds 1 to 10 operations"));
    }
    list.iter()
        .enumerate()
        .map(|(i, op)| {
            let field = |k: &str| op.get(k).and_then(Value::as_str).map(str::to_owned);
            let kind = field("op").ok_or_else(|| bad(format!("operation {i} has no \"op\"")))?;
            let path =
                field("path").ok_or_else(|| bad(format!("operation {i} has no \"path\"")))?;
            if !path.starts_with('/') || path.len() < 2 {
                return Err(bad(format!(
                    "operation {i}: path {path:?} must be a JSON pointer such as /a/b"
                )));
            }
            let value = || {
                op.get("value")
                    .cloned()
                    .ok_or_else(|| bad(format!("operation {i} ({kind}) has no \"value\"")))
            };
            Ok(match kind.to_ascii_lowercase().as_str() {
                "add" => Op::Add(path, value()?),
                "set" => Op::Set(path, value()?),
                "replace" => Op::Replace(path, value()?),
                "remove" => Op::Remove(path),
                "incr" | "increment" => {
                    let v = value()?;
                    if !v.is_number() {
                        return Err(bad(format!("operation {i}: incr needs a number value")));
                    }
                    Op::Incr(path, v)
                }
                "move" => Op::Move {
                    from: field("from")
                        .ok_or_else(|| bad(format!("operation {i} (move) has no \"from\"")))?,
                    path,
                },
                other => {
                    return Err(bad(format!(
                        "operation {i}: {other:?} is not add, set, replace, remove, incr or move"
                    )));
                }
            })
        })
        .collect()
}

fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

/// The parent container of `path` and the last token.
fn parent<'a>(doc: &'a mut Value, path: &str) -> Result<(&'a mut Value, String), ApiError> {
    let (head, last) = path.rsplit_once('/').unwrap_or(("", path));
    let p = if head.is_empty() {
        Some(doc)
    } else {
        doc.pointer_mut(head)
    };
    let p = p.ok_or_else(|| bad(format!("{path}: the parent {head} does not exist")))?;
    Ok((p, unescape(last)))
}

fn index(a: &[Value], token: &str, path: &str, allow_end: bool) -> Result<usize, ApiError> {
    if allow_end && token == "-" {
        return Ok(a.len());
    }
    let i: usize = token
        .parse()
        .map_err(|_| bad(format!("{path}: {token:?} is not an array index")))?;
    let limit = if allow_end {
        a.len()
    } else {
        a.len().saturating_sub(1)
    };
    if i > limit || (!allow_end && a.is_empty()) {
        return Err(bad(format!(
            "{path}: index {i} is out of the array's bounds"
        )));
    }
    Ok(i)
}

fn put(
    doc: &mut Value,
    path: &str,
    value: Value,
    insert: bool,
    must_exist: bool,
) -> Result<(), ApiError> {
    let (p, last) = parent(doc, path)?;
    match p {
        Value::Object(o) => {
            if must_exist && !o.contains_key(&last) {
                return Err(bad(format!(
                    "{path} does not exist: replace needs an existing value"
                )));
            }
            o.insert(last, value);
        }
        Value::Array(a) => {
            if insert {
                let i = index(a, &last, path, true)?;
                a.insert(i, value);
            } else {
                let i = index(a, &last, path, false)?;
                a[i] = value;
            }
        }
        _ => return Err(bad(format!("{path}: the parent is not an object or array"))),
    }
    Ok(())
}

fn take(doc: &mut Value, path: &str) -> Result<Value, ApiError> {
    let (p, last) = parent(doc, path)?;
    match p {
        Value::Object(o) => o
            .remove(&last)
            .ok_or_else(|| bad(format!("{path} does not exist"))),
        Value::Array(a) => {
            let i = index(a, &last, path, false)?;
            Ok(a.remove(i))
        }
        _ => Err(bad(format!("{path} does not exist"))),
    }
}

fn protected(path: &str, pk_paths: &[String]) -> bool {
    let first = path.split('/').nth(1).unwrap_or_default();
    path == "/id"
        || pk_paths
            .iter()
            .any(|pk| path == pk || pk.starts_with(&format!("{path}/")))
        || first.starts_with('_')
}

/// Applies the operations to an item body (as read), or refuses them all.
pub(crate) fn apply(ops: &[Op], mut doc: Value, pk_paths: &[String]) -> Result<Value, ApiError> {
    if let Value::Object(o) = &mut doc {
        o.retain(|k, _| !k.starts_with('_'));
    }
    for op in ops {
        let touched: Vec<&str> = match op {
            Op::Move { from, path } => vec![from, path],
            Op::Add(p, _) | Op::Set(p, _) | Op::Replace(p, _) | Op::Remove(p) | Op::Incr(p, _) => {
                vec![p]
            }
        };
        if let Some(p) = touched.into_iter().find(|p| protected(p, pk_paths)) {
            return Err(bad(format!(
                "{p} cannot be patched: the id, the partition key and system properties are fixed"
            )));
        }
        match op {
            Op::Add(p, v) => put(&mut doc, p, v.clone(), true, false)?,
            Op::Set(p, v) => put(&mut doc, p, v.clone(), false, false)?,
            Op::Replace(p, v) => put(&mut doc, p, v.clone(), false, true)?,
            Op::Remove(p) => {
                take(&mut doc, p)?;
            }
            Op::Incr(p, by) => {
                let next = match doc.pointer(p) {
                    None => by.clone(),
                    Some(cur) => add(cur, by)
                        .ok_or_else(|| bad(format!("{p}: incr needs a number there")))?,
                };
                put(&mut doc, p, next, false, false)?;
            }
            Op::Move { from, path } => {
                let v = take(&mut doc, from)?;
                put(&mut doc, path, v, true, false)?;
            }
        }
    }
    if !doc.is_object() {
        return Err(bad("the patched item is not an object"));
    }
    Ok(doc)
}

fn add(a: &Value, b: &Value) -> Option<Value> {
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
        return x.checked_add(y).map(Value::from);
    }
    let s = a.as_f64()? + b.as_f64()?;
    serde_json::Number::from_f64(s).map(Value::Number)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(ops: Value, doc: Value) -> Result<Value, ApiError> {
        apply(
            &parse(&json!({"operations": ops}))?,
            doc,
            &["/pk".to_owned()],
        )
    }

    #[test]
    fn every_operation_applies() {
        let doc =
            json!({"id": "1", "pk": "p", "n": 1, "tags": ["a", "c"], "o": {"x": 1}, "_ts": 5});
        let out = run(
            json!([
                {"op": "add", "path": "/tags/1", "value": "b"},
                {"op": "add", "path": "/tags/-", "value": "d"},
                {"op": "set", "path": "/new", "value": true},
                {"op": "replace", "path": "/o/x", "value": 2},
                {"op": "incr", "path": "/n", "value": 41},
                {"op": "incr", "path": "/f", "value": 0.5},
                {"op": "move", "from": "/o", "path": "/moved"},
                {"op": "remove", "path": "/new"},
            ]),
            doc,
        )
        .expect("patched");
        assert_eq!(
            out,
            json!({"id": "1", "pk": "p", "n": 42, "f": 0.5, "tags": ["a", "b", "c", "d"], "moved": {"x": 2}})
        );
    }

    #[test]
    fn a_bad_operation_refuses_the_whole_patch() {
        let doc = json!({"id": "1", "pk": "p", "n": "text"});
        for ops in [
            json!([{"op": "replace", "path": "/missing", "value": 1}]),
            json!([{"op": "remove", "path": "/missing"}]),
            json!([{"op": "incr", "path": "/n", "value": 1}]),
            json!([{"op": "set", "path": "/id", "value": "2"}]),
            json!([{"op": "set", "path": "/pk", "value": "q"}]),
            json!([{"op": "copy", "path": "/a", "value": 1}]),
            json!([{"op": "add", "path": "/a/b", "value": 1}]),
            json!([]),
        ] {
            assert!(run(ops.clone(), doc.clone()).is_err(), "{ops}");
        }
        let conditional = json!({"operations": [{"op": "set", "path": "/a", "value": 1}], "condition": "from c where c.n = 1"});
        assert!(parse(&conditional).is_ok());
        assert_eq!(
            condition(&conditional).expect("a string").as_deref(),
            Some("from c where c.n = 1")
        );
        assert!(condition(&json!({"condition": 1})).is_err());
    }
}
