//! Resources in Cosmos DB's shapes: resource ids (`_rid`), self links, and the JSON of
//! databases, containers, items and conflicts.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use converge_core::{ConflictPolicy, ConflictRecord, ContainerDef, DatabaseDef};
use serde_json::{Value, json};
use xxhash_rust::xxh3::xxh3_64;

/// Cosmos's rid text: base64 with `-` for `/`.
fn rid_text(bytes: &[u8]) -> String {
    STANDARD.encode(bytes).replace('/', "-")
}

fn db_bytes(db: &str) -> [u8; 4] {
    let h = xxh3_64(db.as_bytes()).to_le_bytes();
    [h[0], h[1], h[2], h[3]]
}

fn coll_bytes(def: &ContainerDef) -> [u8; 8] {
    let d = db_bytes(&def.database);
    let c = (def.creation_id.0 as u32).to_le_bytes();
    // The high bit of the fifth byte marks a collection (rather than a user) in a rid.
    [d[0], d[1], d[2], d[3], c[0], c[1], c[2], c[3] | 0x80]
}

/// A database's `_rid` (4 bytes).
pub fn db_rid(db: &str) -> String {
    rid_text(&db_bytes(db))
}

/// A container's `_rid` (8 bytes): its database's, then its creation's.
pub fn coll_rid(def: &ContainerDef) -> String {
    rid_text(&coll_bytes(def))
}

/// An item's `_rid` (16 bytes): its container's, then a hash of its partition key and id.
pub fn doc_rid(def: &ContainerDef, pk_json: &str, id: &str) -> String {
    let mut b = coll_bytes(def).to_vec();
    let h = xxh3_64(format!("{pk_json}\u{0}{id}").as_bytes());
    b.extend_from_slice(&h.to_le_bytes());
    rid_text(&b)
}

/// A database as Cosmos returns it.
pub fn database(d: &DatabaseDef) -> Value {
    let rid = db_rid(&d.id);
    json!({
        "id": d.id,
        "_rid": rid,
        "_self": format!("dbs/{rid}/"),
        "_etag": format!("\"{rid}-{}\"", d.ts),
        "_colls": "colls/",
        "_users": "users/",
        "_ts": d.ts,
    })
}

/// A conflict resolution policy in Cosmos's shape.
pub fn policy(def: &ContainerDef) -> Value {
    match &def.conflict_resolution_policy {
        ConflictPolicy::Lww { path } => json!({
            "mode": "LastWriterWins",
            "conflictResolutionPath": path,
            "conflictResolutionProcedure": "",
        }),
        ConflictPolicy::Custom { resolver, .. } => json!({
            "mode": "Custom",
            "conflictResolutionPath": "",
            "conflictResolutionProcedure":
                format!("dbs/{}/colls/{}/sprocs/{resolver}", def.database, def.name),
        }),
        ConflictPolicy::Manual => json!({
            "mode": "Custom",
            "conflictResolutionPath": "",
            "conflictResolutionProcedure": "",
        }),
    }
}

/// A container as Cosmos returns it; `ts` is when its definition was written (seconds).
pub fn container(def: &ContainerDef, ts: u64) -> Value {
    let (db, rid) = (db_rid(&def.database), coll_rid(def));
    let paths = def.partition_key_paths();
    let kind = if paths.len() > 1 { "MultiHash" } else { "Hash" };
    json!({
        "id": def.name,
        "partitionKey": {"paths": paths, "kind": kind, "version": 2},
        "conflictResolutionPolicy": policy(def),
        "indexingPolicy": {
            "indexingMode": "consistent",
            "automatic": true,
            "includedPaths": [{"path": "/*"}],
            "excludedPaths": [],
        },
        "_rid": rid,
        "_self": format!("dbs/{db}/colls/{rid}/"),
        "_etag": format!("\"{}\"", def.creation_id),
        "_ts": ts,
        "_docs": "docs/",
        "_sprocs": "sprocs/",
        "_triggers": "triggers/",
        "_udfs": "udfs/",
        "_conflicts": "conflicts/",
        "converge": {"epoch": def.epoch, "creationId": def.creation_id},
    })
}

/// An item body as Cosmos returns it: the store's body (with `_ts`, `_etag`, `_lsn`) and
/// `_rid`, `_self`, `_attachments`.
pub fn item(def: &ContainerDef, mut body: Value) -> Value {
    let pk = def
        .partition_key_of(&body)
        .map_or_else(|_| "null".to_owned(), |k| k.as_json().to_owned());
    let id = body
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if let Value::Object(o) = &mut body {
        let rid = doc_rid(def, &pk, &id);
        let selfl = format!(
            "dbs/{}/colls/{}/docs/{rid}/",
            db_rid(&def.database),
            coll_rid(def)
        );
        o.insert("_rid".into(), rid.into());
        o.insert("_self".into(), selfl.into());
        o.insert("_attachments".into(), "attachments/".into());
    }
    body
}

/// A conflicts-feed record as Cosmos's conflict resource, with converge's own fields.
pub fn conflict(def: &ContainerDef, r: &ConflictRecord) -> Value {
    let mut b = coll_bytes(def).to_vec();
    b.extend_from_slice(&xxh3_64(r.id.as_bytes()).to_le_bytes());
    let rid = rid_text(&b);
    json!({
        "id": r.id,
        "resourceType": "document",
        "operationType": r.operation.as_str(),
        "resourceId": doc_rid(def, r.partition_key.as_json(), &r.item_id),
        "content": r.content.clone().unwrap_or_default(),
        "_rid": rid,
        "_self": format!("dbs/{}/colls/{}/conflicts/{}/", db_rid(&def.database), coll_rid(def), r.id),
        "_etag": format!("\"{}\"", r.id),
        "_ts": r.recorded_at_ms / 1000,
        "itemId": r.item_id,
        "partitionKey": r.partition_key.to_value(),
        "reason": r.reason,
        "status": match r.status {
            converge_core::ConflictStatus::Open => "open",
            converge_core::ConflictStatus::Superseded => "superseded",
        },
        "dot": r.dot,
    })
}

/// A Cosmos conflict resolution policy as converge's.
pub fn parse_policy(db: &str, coll: &str, v: &Value) -> Result<ConflictPolicy, String> {
    let mode = v
        .get("mode")
        .and_then(Value::as_str)
        .unwrap_or("LastWriterWins");
    let text = |k: &str| v.get(k).and_then(Value::as_str).filter(|s| !s.is_empty());
    match mode.to_ascii_lowercase().as_str() {
        "lastwriterwins" => Ok(ConflictPolicy::Lww {
            path: text("conflictResolutionPath").unwrap_or("/_ts").to_owned(),
        }),
        "custom" => match text("conflictResolutionProcedure") {
            None => Ok(ConflictPolicy::Manual),
            Some(p) => {
                let link = p.trim_matches('/');
                let name = match link.rsplit_once("/sprocs/") {
                    Some((parent, name)) => {
                        if parent != format!("dbs/{db}/colls/{coll}") {
                            return Err(format!(
                                "conflictResolutionProcedure {p:?} names another container than dbs/{db}/colls/{coll}"
                            ));
                        }
                        name
                    }
                    None if !link.contains('/') => link,
                    None => {
                        return Err(format!(
                            "conflictResolutionProcedure {p:?} is not dbs/{db}/colls/{coll}/sprocs/<resolver>"
                        ));
                    }
                };
                Ok(ConflictPolicy::Custom {
                    resolver: name.to_owned(),
                    hash: None,
                    limits: Default::default(),
                })
            }
        },
        _ => Err(format!(
            "conflictResolutionPolicy mode {mode:?} is not LastWriterWins or Custom"
        )),
    }
}
