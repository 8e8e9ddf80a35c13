//! Items: validation, limits, partition keys.

use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Largest serialized item (2 MiB).
pub const MAX_ITEM_BYTES: usize = 2 * 1024 * 1024;
/// Longest `id`, in bytes.
pub const MAX_ID_BYTES: usize = 255;

/// System properties the store adds on read; user-supplied values for them are dropped.
const SYSTEM_PROPERTIES: [&str; 3] = ["_ts", "_etag", "_lsn"];

/// The operation a version's writer performed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Operation {
    /// The item did not exist for the writer.
    Create,
    /// The item existed for the writer.
    Replace,
    /// A deletion (a tombstone).
    Delete,
}

impl Operation {
    /// `create`, `replace` or `delete`, as the conflicts feed names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "create",
            Operation::Replace => "replace",
            Operation::Delete => "delete",
        }
    }
}

/// A partition key value, kept as canonical JSON text (`"alice"`, `42`, `null`). Numbers are
/// canonical as Cosmos DB compares them, as doubles: `1.0` is `1` and `-0.0` is `0`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PartitionKey(String);

/// 2^63: whole doubles below it in magnitude are written as integers.
const I64_RANGE: f64 = 9_223_372_036_854_775_808.0;

/// A number as a partition key, as Cosmos DB takes it: a double. A whole one (within the range
/// of 64-bit integers) is written as an integer, so the same value written `1`, `1.0` or `1e0`,
/// or `2**54` and `2.0**54`, is one key; integers that no double holds exactly become the
/// nearest double, as in Cosmos.
fn canonical_number(n: &serde_json::Number) -> Value {
    let f = n.as_f64().unwrap_or(0.0);
    if f.fract() == 0.0 && f.abs() < I64_RANGE {
        Value::from(f as i64)
    } else {
        serde_json::Number::from_f64(f).map_or(Value::Number(n.clone()), Value::Number)
    }
}

impl PartitionKey {
    /// A partition key from a JSON value: a string, number, boolean or null.
    pub fn from_value(v: &Value) -> Result<Self> {
        match v {
            Value::Number(n) => Ok(PartitionKey(canonical_number(n).to_string())),
            Value::String(_) | Value::Bool(_) | Value::Null => Ok(PartitionKey(v.to_string())),
            _ => Err(Error::invalid(format!(
                "partition key value {v} must be a string, number, boolean or null"
            ))),
        }
    }

    /// A hierarchical key from its components (one component: the same as [`Self::from_value`]).
    /// Two or more are kept as a JSON array, `["acme","bob"]`, which no single-path key can be.
    pub fn from_components(components: &[Value]) -> Result<Self> {
        match components {
            [] => Err(Error::invalid("a partition key needs at least one value")),
            [one] => Self::from_value(one),
            many => {
                let canonical = many
                    .iter()
                    .map(|c| {
                        Self::from_value(c)?;
                        Ok(match c {
                            Value::Number(n) => canonical_number(n),
                            other => other.clone(),
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok(PartitionKey(Value::Array(canonical).to_string()))
            }
        }
    }

    /// Parses the JSON text of a partition key value (as the `x-partition-key` header gives it):
    /// a value, or a hierarchical key's array of values.
    pub fn parse(json: &str) -> Result<Self> {
        let v: Value = serde_json::from_str(json).map_err(|e| {
            Error::invalid(format!("partition key {json:?} is not a JSON value: {e}"))
        })?;
        match &v {
            Value::Array(components) => Self::from_components(components),
            one => Self::from_value(one),
        }
    }

    /// The key's components: one value, or a hierarchical key's values in order.
    pub fn components(&self) -> Vec<Value> {
        match self.to_value() {
            Value::Array(components) => components,
            one => vec![one],
        }
    }

    /// The canonical JSON text.
    pub fn as_json(&self) -> &str {
        &self.0
    }

    /// The value.
    pub fn to_value(&self) -> Value {
        serde_json::from_str(&self.0).unwrap_or(Value::Null)
    }

    pub(crate) fn from_canonical(s: String) -> Self {
        PartitionKey(s)
    }
}

impl From<&str> for PartitionKey {
    fn from(s: &str) -> Self {
        PartitionKey(Value::String(s.to_owned()).to_string())
    }
}

/// Where an item lives in a container: partition key value and id.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ItemKey {
    /// The partition key value.
    pub partition_key: PartitionKey,
    /// The item's id.
    pub id: String,
}

/// Checks a database, container or resolver name: 1 to 255 bytes, no `/ \ ? #`, no control
/// characters, not `.` or `..`.
pub fn validate_name(kind: &str, name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_ID_BYTES {
        return Err(Error::invalid(format!(
            "{kind} name must be 1 to {MAX_ID_BYTES} bytes"
        )));
    }
    if name == "." || name == ".." {
        return Err(Error::invalid(format!("{kind} name {name:?} is reserved")));
    }
    if let Some(c) = name
        .chars()
        .find(|c| "/\\?#".contains(*c) || c.is_control())
    {
        return Err(Error::invalid(format!(
            "{kind} name {name:?} must not contain {c:?}"
        )));
    }
    Ok(())
}

fn validate_id(id: &str) -> Result<()> {
    if id.is_empty() || id.len() > MAX_ID_BYTES {
        return Err(Error::invalid(format!(
            "id must be 1 to {MAX_ID_BYTES} bytes, got {} bytes",
            id.len()
        )));
    }
    if let Some(c) = id.chars().find(|c| "/\\?#".contains(*c)) {
        return Err(Error::invalid(format!("id {id:?} must not contain {c:?}")));
    }
    Ok(())
}

/// An item that passed validation, with its key and canonical body text.
pub(crate) struct ValidItem {
    pub key: ItemKey,
    pub body: String,
}

/// Removes the system properties a user may have copied from a read.
pub(crate) fn strip_system_properties(obj: &mut Map<String, Value>) {
    for p in SYSTEM_PROPERTIES {
        obj.remove(p);
    }
}

/// Validates a user item for a container with the given partition key path.
/// The partition key of `body` under a container's partition key definition: one path
/// (`/customerId`), or a hierarchical key's paths as a JSON array (`["/tenant","/user"]`).
pub fn partition_key_at(body: &Value, definition: &str) -> Result<PartitionKey> {
    let one = |path: &str| match body.pointer(path) {
        Some(v) => PartitionKey::from_value(v).map(|_| v.clone()).map_err(|_| {
            Error::invalid(format!(
                "the partition key at {path} must be a string, number, boolean or null, got {}",
                kind_of(v)
            ))
        }),
        None => Err(Error::invalid(format!(
            "the item has no partition key value at {path}"
        ))),
    };
    let paths = crate::model::partition_key_paths(definition);
    let components = paths.iter().map(|p| one(p)).collect::<Result<Vec<_>>>()?;
    PartitionKey::from_components(&components)
}

pub(crate) fn validate_item(item: Value, pk_path: &str) -> Result<ValidItem> {
    let Value::Object(mut obj) = item else {
        return Err(Error::invalid(format!(
            "an item must be a JSON object, got {}",
            kind_of(&item)
        )));
    };
    strip_system_properties(&mut obj);
    let id = match obj.get("id") {
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(Error::invalid(format!(
                "\"id\" must be a string, got {}",
                kind_of(other)
            )));
        }
        None => return Err(Error::invalid("an item needs a string \"id\"")),
    };
    validate_id(&id)?;
    let obj = Value::Object(obj);
    let pk = partition_key_at(&obj, pk_path)?;
    let body = serde_json::to_string(&obj).map_err(|e| Error::invalid(e.to_string()))?;
    if body.len() > MAX_ITEM_BYTES {
        return Err(Error::TooLarge {
            size: body.len(),
            limit: MAX_ITEM_BYTES,
        });
    }
    Ok(ValidItem {
        key: ItemKey {
            partition_key: pk,
            id,
        },
        body,
    })
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_that_are_the_same_double_are_the_same_key() {
        let key = |t: &str| PartitionKey::parse(t).expect("key");
        assert_eq!(key("1.0"), key("1"));
        assert_eq!(key("1e0"), key("1"));
        assert_eq!(key("-0.0"), key("0"));
        assert_eq!(key("[\"a\", 2.0]"), key("[\"a\", 2]"));
        assert_eq!(key("1.0").as_json(), "1");
        assert_ne!(key("1.5"), key("1"));
        // As doubles: whole numbers written as floats beyond 2^53 are the integer they are,
        // and an integer no double holds is the nearest double (as in Cosmos DB).
        assert_eq!(key("18014398509481984.0"), key("18014398509481984"));
        assert_eq!(key("1e16"), key("10000000000000000"));
        assert_eq!(key("9007199254740993"), key("9007199254740992"));
        assert_eq!(
            key("-1152921504606846976.0").as_json(),
            "-1152921504606846976"
        );
        assert_eq!(key("1e300").to_value(), json!(1e300));
    }

    fn err(v: Value) -> String {
        match validate_item(v, "/pk") {
            Err(e) => e.to_string(),
            Ok(_) => panic!("expected an error"),
        }
    }

    #[test]
    fn rejects_malformed_items_with_a_reason() {
        assert!(err(json!([1])).contains("JSON object"));
        assert!(err(json!({"pk": "a"})).contains("string \"id\""));
        assert!(err(json!({"id": 5, "pk": "a"})).contains("must be a string"));
        assert!(err(json!({"id": "a/b", "pk": "a"})).contains("'/'"));
        assert!(err(json!({"id": "a#b", "pk": "a"})).contains("'#'"));
        assert!(err(json!({"id": "x".repeat(256), "pk": "a"})).contains("1 to 255"));
        assert!(err(json!({"id": "a"})).contains("no partition key"));
        assert!(err(json!({"id": "a", "pk": {"x": 1}})).contains("partition key at /pk"));
        let big = "y".repeat(MAX_ITEM_BYTES);
        assert!(matches!(
            validate_item(json!({"id": "a", "pk": "a", "b": big}), "/pk"),
            Err(Error::TooLarge { .. })
        ));
    }

    #[test]
    fn strips_system_properties_and_extracts_nested_keys() {
        let v = validate_item(
            json!({"id": "a", "c": {"k": 7}, "_ts": 3, "_etag": "x"}),
            "/c/k",
        )
        .expect("valid");
        assert_eq!(v.key.partition_key.as_json(), "7");
        assert!(!v.body.contains("_ts") && !v.body.contains("_etag"));
    }

    #[test]
    fn names_are_validated() {
        assert!(validate_name("database", "shop").is_ok());
        assert!(validate_name("database", "..").is_err());
        assert!(validate_name("database", "a/b").is_err());
        assert!(validate_name("database", "").is_err());
    }
}
