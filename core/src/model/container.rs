//! Containers: their definition, conflict policy and creation id.

use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;
use xxhash_rust::xxh3::xxh3_128;

/// Identifies one creation of a container: a hash of its database, name, partition key path and
/// epoch (the number of drops of that name the creating region had seen). Regions that create
/// the same container independently get the same id; re-creating after a drop gets a new one.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CreationId(pub u128);

/// Hex text in JSON (a 128-bit number would not survive JavaScript), 16 raw bytes in the
/// binary formats.
impl Serialize for CreationId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&self.to_string())
        } else {
            self.0.to_be_bytes().serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for CreationId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            CreationId::parse(&s).map_err(serde::de::Error::custom)
        } else {
            <[u8; 16]>::deserialize(d).map(|b| CreationId(u128::from_be_bytes(b)))
        }
    }
}

/// The creation id of the system container that holds container definitions.
pub const SYSTEM_CREATION: CreationId = CreationId(0);

impl CreationId {
    /// The id of the creation of `database/container` with `pk_path` at `epoch`.
    pub fn derive(database: &str, container: &str, pk_path: &str, epoch: u64) -> Self {
        let mut buf = Vec::with_capacity(database.len() + container.len() + pk_path.len() + 40);
        for part in [
            database.as_bytes(),
            container.as_bytes(),
            pk_path.as_bytes(),
        ] {
            buf.extend_from_slice(&(part.len() as u64).to_le_bytes());
            buf.extend_from_slice(part);
        }
        buf.extend_from_slice(&epoch.to_le_bytes());
        let h = xxh3_128(&buf);
        // 0 is the system container's id.
        CreationId(if h == 0 { 1 } else { h })
    }

    /// Parses the 32-digit hex form.
    pub fn parse(s: &str) -> Result<Self> {
        u128::from_str_radix(s, 16)
            .map(CreationId)
            .map_err(|_| Error::invalid(format!("{s:?} is not a creation id")))
    }
}

impl fmt::Display for CreationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for CreationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CreationId({self})")
    }
}

/// Per-call limits of a custom resolver (ABI.md). They replicate with the definition, so every
/// region applies the same.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct ResolverLimits {
    /// Fuel (wasm instructions) per call.
    pub fuel: u64,
    /// Linear memory, bytes.
    pub memory_bytes: u64,
    /// Wasm stack, bytes.
    pub stack_bytes: u64,
    /// Input size, bytes.
    pub input_bytes: u64,
    /// Output size, bytes.
    pub output_bytes: u64,
}

impl ResolverLimits {
    /// The most fuel a definition may allow per call (100 times the default): about a second
    /// of wasm here, well inside the watchdog.
    pub const MAX_FUEL: u64 = 1_000_000_000;
    /// The largest linear memory a definition may allow (256 MiB).
    pub const MAX_MEMORY_BYTES: u64 = crate::udf::MAX_MEMORY_LIMIT;
    /// The largest wasm stack a definition may allow (8 MiB).
    pub const MAX_STACK_BYTES: u64 = crate::udf::MAX_STACK_LIMIT;
    /// The largest input a definition may allow (64 MiB).
    pub const MAX_INPUT_BYTES: u64 = 64 << 20;
    /// The largest output a definition may allow (16 MiB).
    pub const MAX_OUTPUT_BYTES: u64 = 16 << 20;

    /// Checks every limit against its minimum and maximum; the error names the limit and the
    /// bound.
    pub fn validate(&self) -> Result<()> {
        let checks = [
            ("fuel", self.fuel, 1, Self::MAX_FUEL),
            (
                "memoryBytes",
                self.memory_bytes,
                65_536,
                Self::MAX_MEMORY_BYTES,
            ),
            ("stackBytes", self.stack_bytes, 1, Self::MAX_STACK_BYTES),
            ("inputBytes", self.input_bytes, 1, Self::MAX_INPUT_BYTES),
            ("outputBytes", self.output_bytes, 1, Self::MAX_OUTPUT_BYTES),
        ];
        for (name, value, min, max) in checks {
            if value < min {
                return Err(Error::InvalidDefinition(format!(
                    "resolver limit {name} is {value}; the minimum is {min}"
                )));
            }
            if value > max {
                return Err(Error::InvalidDefinition(format!(
                    "resolver limit {name} is {value}, over the host's maximum of {max}"
                )));
            }
        }
        Ok(())
    }
}

impl Default for ResolverLimits {
    fn default() -> Self {
        ResolverLimits {
            fuel: 10_000_000,
            memory_bytes: 64 << 20,
            stack_bytes: 512 << 10,
            input_bytes: 16 << 20,
            output_bytes: 4 << 20,
        }
    }
}

/// How concurrent versions of an item are resolved.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "lowercase", deny_unknown_fields)]
pub enum ConflictPolicy {
    /// The highest number at `path` wins (default `/_ts`: the full HLC); deletes win.
    Lww {
        /// JSON pointer to the number compared.
        #[serde(default = "default_lww_path")]
        path: String,
    },
    /// A WebAssembly resolver installed in the container decides.
    Custom {
        /// The resolver's name in the container.
        resolver: String,
        /// The content hash pinned when the policy was set (hex), when the module was known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hash: Option<String>,
        /// Per-call sandbox limits.
        #[serde(default)]
        limits: ResolverLimits,
    },
    /// Nobody resolves: every conflict goes to the conflicts feed.
    Manual,
}

fn default_lww_path() -> String {
    "/_ts".to_owned()
}

impl Default for ConflictPolicy {
    fn default() -> Self {
        ConflictPolicy::Lww {
            path: default_lww_path(),
        }
    }
}

impl ConflictPolicy {
    /// The path of the LWW order used to rank siblings canonically under this policy.
    pub fn order_path(&self) -> &str {
        match self {
            ConflictPolicy::Lww { path } => path,
            _ => "/_ts",
        }
    }

    /// Checks the policy's fields.
    pub fn validate(&self) -> Result<()> {
        match self {
            ConflictPolicy::Lww { path } if !(path.starts_with('/') && path.len() > 1) => {
                Err(Error::InvalidDefinition(format!(
                    "LWW path {path:?} must be a JSON pointer such as \"/_ts\""
                )))
            }
            ConflictPolicy::Custom {
                resolver,
                hash,
                limits,
            } => {
                crate::model::validate_name("resolver", resolver)
                    .map_err(|e| Error::InvalidDefinition(e.to_string()))?;
                if let Some(h) = hash
                    && !(h.len() == 32 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
                {
                    return Err(Error::InvalidDefinition(format!(
                        "resolver hash {h:?} is not a content hash (32 lowercase hex digits, as PUT .../resolvers/{{name}} returns)"
                    )));
                }
                limits.validate()
            }
            _ => Ok(()),
        }
    }
}

/// A container's replicated definition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerDef {
    /// Database name.
    pub database: String,
    /// Container name.
    #[serde(rename = "id")]
    pub name: String,
    /// Partition key path, fixed at creation (for example `/customerId`); a hierarchical key's
    /// paths as the JSON text of their array (`["/tenant","/user"]`, see
    /// [`partition_key_paths`]).
    pub partition_key: String,
    /// How conflicts are resolved.
    pub conflict_resolution_policy: ConflictPolicy,
    /// Which creation of this name the definition belongs to.
    pub creation_id: CreationId,
    /// Drops of this name the creating region had seen.
    pub epoch: u64,
}

impl ContainerDef {
    /// The partition key's paths: one, or a hierarchical key's in order.
    pub fn partition_key_paths(&self) -> Vec<String> {
        partition_key_paths(&self.partition_key)
    }

    /// The partition key of an item body (an error says which path has no usable value).
    pub fn partition_key_of(&self, body: &Value) -> Result<crate::PartitionKey> {
        crate::model::item::partition_key_at(body, &self.partition_key)
    }

    /// Checks names, partition key path and policy.
    pub fn validate(&self) -> Result<()> {
        crate::model::validate_name("database", &self.database)?;
        crate::model::validate_name("container", &self.name)?;
        validate_pk_path(&self.partition_key)?;
        self.conflict_resolution_policy.validate()
    }
}

/// The paths of a partition key definition: one path (`/customerId`), or a hierarchical key's
/// paths, kept as the JSON text of their array (`["/tenant","/user"]`; no single path starts
/// with `[`). See [`ContainerDef::partition_key`].
pub fn partition_key_paths(definition: &str) -> Vec<String> {
    if definition.starts_with('[') {
        serde_json::from_str(definition).unwrap_or_default()
    } else {
        vec![definition.to_owned()]
    }
}

/// The most levels of a hierarchical partition key (as Cosmos DB).
pub const MAX_PARTITION_KEY_LEVELS: usize = 3;

/// A partition key path is a JSON pointer to one property, such as `/customerId` or `/a/b`; a
/// hierarchical definition is a JSON array of 2 to 3 distinct such paths.
pub(crate) fn validate_pk_path(definition: &str) -> Result<()> {
    let one = |path: &str| {
        path.starts_with('/')
            && path.len() > 1
            && path.len() <= 255
            && path[1..].split('/').all(|seg| !seg.is_empty())
            && !path.starts_with("/_")
    };
    let ok = if definition.starts_with('[') {
        match serde_json::from_str::<Vec<String>>(definition) {
            Ok(paths) => {
                let distinct: std::collections::BTreeSet<&String> = paths.iter().collect();
                (2..=MAX_PARTITION_KEY_LEVELS).contains(&paths.len())
                    && distinct.len() == paths.len()
                    && paths.iter().all(|p| one(p))
                    && serde_json::to_string(&paths).ok().as_deref() == Some(definition)
            }
            Err(_) => false,
        }
    } else {
        one(definition)
    };
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidDefinition(format!(
            "partition key path {definition:?} must be a JSON pointer like \"/customerId\" to a user property, or a hierarchical key's 2 to {MAX_PARTITION_KEY_LEVELS} such paths as a JSON array like [\"/tenant\",\"/user\"]"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn creation_ids_depend_on_every_part() {
        let a = CreationId::derive("db", "c", "/pk", 0);
        assert_eq!(a, CreationId::derive("db", "c", "/pk", 0));
        assert_ne!(a, CreationId::derive("db", "c", "/pk", 1));
        assert_ne!(a, CreationId::derive("db", "c", "/id", 0));
        assert_ne!(
            CreationId::derive("ab", "c", "/p", 0),
            CreationId::derive("a", "bc", "/p", 0)
        );
        assert_eq!(CreationId::parse(&a.to_string()).expect("hex"), a);
        let json = serde_json::to_string(&a).expect("json");
        assert_eq!(json, format!("\"{a}\""));
        assert_eq!(serde_json::from_str::<CreationId>(&json).expect("back"), a);
        let bin = postcard::to_allocvec(&a).expect("postcard");
        assert_eq!(bin.len(), 16);
        assert_eq!(postcard::from_bytes::<CreationId>(&bin).expect("back"), a);
    }

    #[test]
    fn policies_parse_as_the_http_contract_writes_them() {
        let p: ConflictPolicy = serde_json::from_value(json!({"mode": "lww"})).expect("lww");
        assert_eq!(
            p,
            ConflictPolicy::Lww {
                path: "/_ts".into()
            }
        );
        let p: ConflictPolicy =
            serde_json::from_value(json!({"mode": "custom", "resolver": "cart"})).expect("custom");
        assert!(
            matches!(p, ConflictPolicy::Custom { ref limits, .. } if limits.fuel == 10_000_000)
        );
        assert!(serde_json::from_value::<ConflictPolicy>(json!({"mode": "other"})).is_err());
        assert!(ConflictPolicy::Lww { path: "x".into() }.validate().is_err());
        let huge = ResolverLimits {
            memory_bytes: 1 << 40,
            ..ResolverLimits::default()
        };
        let custom = ConflictPolicy::Custom {
            resolver: "r".into(),
            hash: None,
            limits: huge,
        };
        assert!(
            matches!(custom.validate(), Err(Error::InvalidDefinition(m)) if m.contains("maximum"))
        );
        assert!(validate_pk_path("/customerId").is_ok());
        assert!(validate_pk_path("customerId").is_err());
        assert!(validate_pk_path("/_ts").is_err());
    }
}
