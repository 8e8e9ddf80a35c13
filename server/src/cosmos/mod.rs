//! The Cosmos DB dialect of the API: requests that carry `x-ms-version` (every official SDK's
//! do) get Cosmos's paths, shapes, headers and errors over the same store. What Cosmos has no
//! route for (resolver upload, replication, metrics, health) falls through to converge's own
//! routes, so both dialects reach it. See docs/cosmos-compatibility.md.

pub mod auth;
pub mod epk;
mod patch;
mod query;
pub mod shape;

use crate::api::{AppState, blocking, read_body};
use crate::error::ApiError;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use converge_core::{ContainerDef, MAX_ITEM_BYTES, PartitionKey, Store};
use serde_json::{Value, json};
use std::sync::atomic::Ordering;

/// Whether a request speaks the Cosmos dialect.
pub fn is_cosmos(headers: &HeaderMap) -> bool {
    headers.contains_key("x-ms-version")
}

/// The Cosmos routes; anything else goes to `fallback` (converge's own routes).
pub fn router(state: AppState, fallback: Router) -> Router {
    let docs = "/dbs/{db}/colls/{coll}/docs";
    Router::new()
        .route("/", get(account))
        .route("/dbs", get(list_databases).post(create_database))
        .route("/dbs/{db}", get(read_database).delete(delete_database))
        .route(
            "/dbs/{db}/colls",
            get(list_containers).post(create_container),
        )
        .route(
            "/dbs/{db}/colls/{coll}",
            get(read_container)
                .put(replace_container)
                .delete(delete_container),
        )
        .route("/dbs/{db}/colls/{coll}/pkranges", get(pkranges))
        .route(docs, get(read_docs).post(post_doc))
        .route(
            &format!("{docs}/{{id}}"),
            get(read_doc)
                .put(replace_doc)
                .delete(delete_doc)
                .patch(patch_doc),
        )
        .route("/dbs/{db}/colls/{coll}/conflicts", get(list_conflicts))
        .route(
            "/dbs/{db}/colls/{coll}/conflicts/{cid}",
            get(read_conflict).delete(delete_conflict),
        )
        // The JavaScript SDK reads one conflict at this path (a bug of its link building).
        .route(
            "/dbs/{db}/colls/{coll}/conflicts/{cid}/conflicts",
            get(read_conflict),
        )
        .fallback_service(fallback)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            common_headers,
        ))
        .with_state(state)
}

/// The headers every Cosmos answer carries.
async fn common_headers(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let activity = request.headers().get("x-ms-activity-id").cloned();
    let mut r = next.run(request).await;
    let h = r.headers_mut();
    h.insert("x-ms-request-charge", HeaderValue::from_static("1"));
    h.insert("x-ms-gatewayversion", HeaderValue::from_static("2.0.0"));
    h.insert("x-ms-serviceversion", HeaderValue::from_static("converge"));
    h.insert("x-ms-schemaversion", HeaderValue::from_static("1.17"));
    if let Some(a) = activity {
        h.insert("x-ms-activity-id", a);
    }
    if let Ok(v) = HeaderValue::from_str(&state.store.region().to_string()) {
        h.insert("x-ms-cosmos-region", v);
    }
    r
}

fn json_response(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

fn set_header(r: &mut Response, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        r.headers_mut().insert(name, v);
    }
}

/// A container-scoped answer: the session token the SDKs keep per container (`x-ms-content-path`
/// names the container's `_rid`).
fn with_session(mut r: Response, store: &Store, def: &ContainerDef) -> Response {
    set_header(
        &mut r,
        "x-ms-session-token",
        &format!("0:1#{}", store.log_head()),
    );
    set_header(&mut r, "x-ms-content-path", &shape::coll_rid(def));
    r
}

async fn account(State(state): State<AppState>) -> Response {
    let locations: Vec<Value> = state
        .locations
        .iter()
        .map(|(name, url)| json!({"name": name, "databaseAccountEndpoint": url}))
        .collect();
    json_response(
        StatusCode::OK,
        json!({
            "id": format!("converge-{}", state.store.region()),
            "_rid": format!("converge-{}", state.store.region()),
            "_self": "",
            "media": "//media/",
            "addresses": "//addresses/",
            "_dbs": "//dbs/",
            "writableLocations": locations,
            "readableLocations": locations,
            "enableMultipleWriteLocations": true,
            "userReplicationPolicy": {"asyncReplication": true, "minReplicaSetSize": 1, "maxReplicasetSize": 1},
            "userConsistencyPolicy": {"defaultConsistencyLevel": "Session"},
            "systemReplicationPolicy": {"minReplicaSetSize": 1, "maxReplicasetSize": 1},
            "readPolicy": {"primaryReadCoefficient": 1, "secondaryReadCoefficient": 1},
            "queryEngineConfiguration": serde_json::to_string(&json!({
                "maxSqlQueryInputLength": 262144,
                "maxJoinsPerSqlQuery": 5,
                "maxLogicalAndPerSqlQuery": 500,
                "maxLogicalOrPerSqlQuery": 500,
                "maxUdfRefPerSqlQuery": 10,
                "maxInExpressionItemsCount": 16000,
                "queryMaxInMemorySortDocumentCount": 500,
                "maxQueryRequestTimeoutFraction": 0.9,
                "sqlAllowNonFiniteNumbers": false,
                "sqlAllowAggregateFunctions": true,
                "sqlAllowSubQuery": true,
                "sqlAllowScalarSubQuery": true,
                "allowNewKeywords": true,
                "sqlAllowLike": true,
                "sqlAllowGroupByClause": true,
                "maxSpatialQueryCells": 12,
                "spatialMaxGeometryPointCount": 256,
                "sqlDisableQueryILOptimization": false,
                "sqlDisableFilterPlanOptimization": false
            })).unwrap_or_default(),
        }),
    )
}

/// A JSON request body (at most an item's size).
async fn body_json(headers: &HeaderMap, body: Body) -> Result<Value, ApiError> {
    let bytes = read_body(headers, body, MAX_ITEM_BYTES + (64 << 10), "item").await?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("the body is not JSON: {e}")))
}

fn id_of(v: &Value, what: &str) -> Result<String, ApiError> {
    v.get("id")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| ApiError::bad_request(format!("the {what} needs a string \"id\"")))
}

/// The database a path segment names: by name, or by `_rid`.
fn db_name(store: &Store, segment: &str) -> Result<String, ApiError> {
    if converge_core::validate_name("database", segment).is_ok() && store.database(segment).is_ok()
    {
        return Ok(segment.to_owned());
    }
    for d in store.databases()? {
        if shape::db_rid(&d.id) == segment {
            return Ok(d.id);
        }
    }
    Err(converge_core::Error::UnknownDatabase(segment.to_owned()).into())
}

/// The container a path names: by names, or by `_rid`s.
fn def_of(store: &Store, db: &str, coll: &str) -> Result<ContainerDef, ApiError> {
    match store.container(db, coll) {
        Ok(d) => return Ok(d),
        Err(converge_core::Error::UnknownContainer { .. })
        | Err(converge_core::Error::InvalidInput(_)) => {}
        Err(e) => return Err(e.into()),
    }
    for d in store.all_containers()? {
        if shape::coll_rid(&d) == coll && (d.database == db || shape::db_rid(&d.database) == db) {
            return Ok(d);
        }
    }
    Err(converge_core::Error::UnknownContainer {
        database: db.to_owned(),
        container: coll.to_owned(),
    }
    .into())
}

/// `x-ms-documentdb-partitionkey`: a JSON array of the key's values (one, or a hierarchical
/// key's; a prefix of them where the route allows one).
fn pk_header(headers: &HeaderMap) -> Result<Option<Vec<Value>>, ApiError> {
    let Some(raw) = headers.get("x-ms-documentdb-partitionkey") else {
        return Ok(None);
    };
    let v: Value = serde_json::from_slice(raw.as_bytes()).map_err(|_| {
        ApiError::bad_request(
            "x-ms-documentdb-partitionkey must be a JSON array, such as [\"alice\"]",
        )
    })?;
    match v {
        Value::Array(a) if !a.is_empty() => {
            for c in &a {
                match c {
                    Value::Object(o) if o.is_empty() => {
                        return Err(ApiError::bad_request(
                            "the item has no value at the container's partition key path (an undefined partition key is not supported)",
                        ));
                    }
                    other => {
                        PartitionKey::from_value(other)?;
                    }
                }
            }
            Ok(Some(a))
        }
        _ => Err(ApiError::bad_request(
            "x-ms-documentdb-partitionkey must be a JSON array of the key's values, such as [\"alice\"]",
        )),
    }
}

/// The header's values as one whole partition key of the container.
fn whole_key(def: &ContainerDef, components: &[Value]) -> Result<PartitionKey, ApiError> {
    let levels = def.partition_key_paths().len();
    if components.len() != levels {
        return Err(ApiError::bad_request(format!(
            "the container's partition key has {levels} path(s) {}; x-ms-documentdb-partitionkey gives {} value(s)",
            def.partition_key,
            components.len()
        )));
    }
    Ok(PartitionKey::from_components(components)?)
}

/// The whole partition key the header names, if it names one.
fn partition_key(
    headers: &HeaderMap,
    def: &ContainerDef,
) -> Result<Option<PartitionKey>, ApiError> {
    pk_header(headers)?.map(|c| whole_key(def, &c)).transpose()
}

fn require_pk(headers: &HeaderMap, def: &ContainerDef, id: &str) -> Result<PartitionKey, ApiError> {
    match partition_key(headers, def)? {
        Some(pk) => Ok(pk),
        None if def.partition_key == "/id" => Ok(PartitionKey::from(id)),
        None => Err(ApiError::bad_request(
            "the x-ms-documentdb-partitionkey header is required for this operation",
        )),
    }
}

/// The effective partition key of an item's key under its container's definition.
fn effective_key(def: &ContainerDef, pk: &PartitionKey) -> String {
    let components = pk.components();
    if def.partition_key_paths().len() > 1 {
        epk::multi_hash(&components)
    } else {
        epk::hash_v2(components.first().unwrap_or(&Value::Null))
    }
}

/// The page size a request asks for (`x-ms-max-item-count`; -1 or absent: the default).
fn max_items(headers: &HeaderMap) -> usize {
    headers
        .get("x-ms-max-item-count")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i64>().ok())
        .filter(|n| *n > 0)
        .map_or(100, |n| (n as usize).min(1000))
}

fn text_header(headers: &HeaderMap, name: &str) -> Result<Option<String>, ApiError> {
    headers
        .get(name)
        .map(|v| {
            v.to_str()
                .map(str::to_owned)
                .map_err(|_| ApiError::bad_request(format!("{name} must be text")))
        })
        .transpose()
}

fn is_true(headers: &HeaderMap, name: &str) -> bool {
    headers
        .get(name)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"))
}

fn listing(kind: &str, rid: &str, items: Vec<Value>) -> Value {
    json!({"_rid": rid, kind: items, "_count": items.len()})
}

/// One page of a short list held in memory (databases, containers), in id order:
/// `x-ms-max-item-count` items after the id `x-ms-continuation` names (URL-encoded), so that
/// what is created or deleted between pages never makes a page skip an entry.
fn paged_listing(
    headers: &HeaderMap,
    kind: &str,
    rid: &str,
    mut items: Vec<Value>,
) -> Result<Response, ApiError> {
    let id = |v: &Value| v["id"].as_str().unwrap_or_default().to_owned();
    items.sort_by_key(id);
    let after = text_header(headers, "x-ms-continuation")?
        .map(|c| {
            percent_encoding::percent_decode_str(&c)
                .decode_utf8()
                .map(|s| s.into_owned())
                .map_err(|_| {
                    ApiError::bad_request(format!(
                        "x-ms-continuation {c:?} is not a token of this list"
                    ))
                })
        })
        .transpose()?;
    let max = max_items(headers);
    let rest: Vec<Value> = items
        .into_iter()
        .filter(|v| after.as_ref().is_none_or(|a| id(v) > *a))
        .collect();
    let more = rest.len() > max;
    let page: Vec<Value> = rest.into_iter().take(max).collect();
    let next = page.last().map(id);
    let mut r = json_response(StatusCode::OK, listing(kind, rid, page));
    if let (true, Some(last)) = (more, next) {
        let token =
            percent_encoding::utf8_percent_encode(&last, percent_encoding::NON_ALPHANUMERIC);
        set_header(&mut r, "x-ms-continuation", &token.to_string());
    }
    Ok(r)
}

/// A container as Cosmos returns it, with the time of its visible definition.
fn container_json(s: &Store, def: &ContainerDef) -> Result<Value, ApiError> {
    Ok(shape::container(
        def,
        s.container_ts(&def.database, &def.name)?,
    ))
}

async fn list_databases(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let list = blocking(&state, |s| Ok(s.databases()?)).await?;
    let items = list.iter().map(shape::database).collect();
    paged_listing(&headers, "Databases", "", items)
}

async fn create_database(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let v = body_json(&headers, body).await?;
    let id = id_of(&v, "database")?;
    let db = blocking(&state, move |s| Ok(s.create_database(&id)?)).await?;
    state.notify();
    Ok(json_response(StatusCode::CREATED, shape::database(&db)))
}

async fn read_database(
    State(state): State<AppState>,
    Path(db): Path<String>,
) -> Result<Response, ApiError> {
    let d = blocking(&state, move |s| {
        let name = db_name(s, &db)?;
        Ok(s.database(&name)?)
    })
    .await?;
    Ok(json_response(StatusCode::OK, shape::database(&d)))
}

async fn delete_database(
    State(state): State<AppState>,
    Path(db): Path<String>,
) -> Result<StatusCode, ApiError> {
    blocking(&state, move |s| {
        let name = db_name(s, &db)?;
        Ok(s.delete_database(&name)?)
    })
    .await?;
    state.notify();
    Ok(StatusCode::NO_CONTENT)
}

async fn list_containers(
    State(state): State<AppState>,
    Path(db): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (rid, items) = blocking(&state, move |s| {
        let name = db_name(s, &db)?;
        let defs = s.containers(&name).unwrap_or_default();
        let items = defs
            .iter()
            .map(|d| container_json(s, d))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((shape::db_rid(&name), items))
    })
    .await?;
    paged_listing(&headers, "DocumentCollections", &rid, items)
}

/// A container body as converge's definition: the partition key path and the policy.
fn container_body(
    db: &str,
    v: &Value,
) -> Result<(String, String, converge_core::ConflictPolicy), ApiError> {
    let id = id_of(v, "container")?;
    let paths = v
        .pointer("/partitionKey/paths")
        .and_then(Value::as_array)
        .ok_or_else(|| {
            ApiError::bad_request("the container needs partitionKey.paths, such as [\"/pk\"]")
        })?;
    let paths: Vec<String> = paths
        .iter()
        .map(|p| p.as_str().map(str::to_owned))
        .collect::<Option<_>>()
        .ok_or_else(|| {
            ApiError::bad_request("partitionKey.paths must be strings, such as [\"/pk\"]")
        })?;
    let path = match paths.as_slice() {
        [] => {
            return Err(ApiError::bad_request(
                "partitionKey.paths must hold a path, such as [\"/pk\"]",
            ));
        }
        [one] => one.clone(),
        // A hierarchical key: converge keeps its paths as the JSON text of their array.
        many => serde_json::to_string(many).map_err(|e| ApiError::internal(e.to_string()))?,
    };
    if let Some(kind) = v.pointer("/partitionKey/kind").and_then(Value::as_str)
        && !kind.eq_ignore_ascii_case("hash")
        && !kind.eq_ignore_ascii_case("multihash")
    {
        return Err(ApiError::bad_request(format!(
            "partitionKey.kind {kind:?} is not supported: use Hash (or MultiHash for hierarchical keys)"
        )));
    }
    for unsupported in ["defaultTtl", "uniqueKeyPolicy", "analyticalStorageTtl"] {
        if v.get(unsupported).is_some_and(|x| !x.is_null()) {
            return Err(ApiError::bad_request(format!(
                "{unsupported} is not supported by converge"
            )));
        }
    }
    let policy = match v.get("conflictResolutionPolicy") {
        Some(p) if !p.is_null() => {
            shape::parse_policy(db, &id, p).map_err(ApiError::bad_request)?
        }
        _ => converge_core::ConflictPolicy::default(),
    };
    Ok((id, path, policy))
}

async fn create_container(
    State(state): State<AppState>,
    Path(db): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let v = body_json(&headers, body).await?;
    let def = blocking(&state, move |s| {
        let name = db_name(s, &db)?;
        let (id, path, policy) = container_body(&name, &v)?;
        if s.container(&name, &id).is_ok() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("container {name}/{id} already exists"),
            ));
        }
        match s.put_container(&name, &id, &path, policy)? {
            (def, true) => container_json(s, &def),
            // Created by another request since the check above.
            (_, false) => Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("container {name}/{id} already exists"),
            )),
        }
    })
    .await?;
    state.notify();
    Ok(json_response(StatusCode::CREATED, def))
}

async fn read_container(
    State(state): State<AppState>,
    Path((db, coll)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let (def, body) = blocking(&state, move |s| {
        let def = def_of(s, &db, &coll)?;
        let body = container_json(s, &def)?;
        Ok((def, body))
    })
    .await?;
    Ok(with_session(
        json_response(StatusCode::OK, body),
        &state.store,
        &def,
    ))
}

async fn replace_container(
    State(state): State<AppState>,
    Path((db, coll)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let v = body_json(&headers, body).await?;
    let def = blocking(&state, move |s| {
        let old = def_of(s, &db, &coll)?;
        let (id, path, policy) = container_body(&old.database, &v)?;
        if id != old.name {
            return Err(ApiError::bad_request(format!(
                "the body's id {id:?} is not the container's {:?}",
                old.name
            )));
        }
        let def = s.put_container(&old.database, &old.name, &path, policy)?.0;
        container_json(s, &def)
    })
    .await?;
    state.notify();
    Ok(json_response(StatusCode::OK, def))
}

async fn delete_container(
    State(state): State<AppState>,
    Path((db, coll)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    blocking(&state, move |s| {
        let def = def_of(s, &db, &coll)?;
        Ok(s.drop_container(&def.database, &def.name)?)
    })
    .await?;
    state.notify();
    Ok(StatusCode::NO_CONTENT)
}

async fn pkranges(
    State(state): State<AppState>,
    Path((db, coll)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let def = blocking(&state, move |s| def_of(s, &db, &coll)).await?;
    let rid = shape::coll_rid(&def);
    let etag = format!("\"{}-ranges\"", def.creation_id);
    let unchanged = headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == etag.as_bytes());
    let mut r = if unchanged {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let range = json!({
            "id": "0",
            "_rid": format!("{}AgAAAAAAAA==", rid.trim_end_matches('=')),
            "_etag": etag,
            "minInclusive": "",
            "maxExclusive": "FF",
            "ridPrefix": 0,
            "_self": format!("dbs/{}/colls/{rid}/pkranges/0/", shape::db_rid(&def.database)),
            "throughputFraction": 1,
            "status": "online",
            "parents": [],
            "_ts": 0,
        });
        json_response(
            StatusCode::OK,
            listing("PartitionKeyRanges", &rid, vec![range]),
        )
    };
    set_header(&mut r, "etag", &etag);
    Ok(r)
}

async fn post_doc(
    State(state): State<AppState>,
    Path((db, coll)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    if is_true(&headers, "x-ms-cosmos-is-query-plan-request") {
        return query::plan(state, db, coll, headers, body).await;
    }
    if is_true(&headers, "x-ms-documentdb-isquery")
        || headers
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/query+json"))
    {
        return query::run(state, db, coll, headers, body).await;
    }
    let item = body_json(&headers, body).await?;
    if !item.is_object() {
        return Err(ApiError::bad_request("the item must be a JSON object"));
    }
    let upsert = is_true(&headers, "x-ms-documentdb-is-upsert");
    let metrics = state.metrics.clone();
    let (def, item, created) = blocking(&state, move |s| {
        let def = def_of(s, &db, &coll)?;
        check_intended(&headers, &def)?;
        check_body_pk(&headers, &def, &item)?;
        let (item, created) = if upsert {
            s.upsert_item(&def.database, &def.name, item)?
        } else {
            (s.create_item(&def.database, &def.name, item)?, true)
        };
        Ok((def, item, created))
    })
    .await?;
    state.notify();
    metrics.writes.fetch_add(1, Ordering::Relaxed);
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(item_answer(&state, status, &def, item))
}

fn item_answer(
    state: &AppState,
    status: StatusCode,
    def: &ContainerDef,
    item: converge_core::Item,
) -> Response {
    let mut r = json_response(status, shape::item(def, item.body));
    set_header(&mut r, "etag", &item.etag);
    with_session(r, &state.store, def)
}

/// A written item's partition key must be the header's, when the request sends one.
fn check_body_pk(headers: &HeaderMap, def: &ContainerDef, item: &Value) -> Result<(), ApiError> {
    if let Some(pk) = partition_key(headers, def)? {
        let given = def.partition_key_of(item)?;
        if given != pk {
            return Err(ApiError::bad_request(format!(
                "the partition key {} of the header is not the item's {} at {}",
                pk.as_json(),
                given.as_json(),
                def.partition_key
            )));
        }
    }
    Ok(())
}

/// `x-ms-cosmos-intended-collection-rid`: the container the client means, which must still be
/// the one the name shows (not a re-creation).
fn check_intended(headers: &HeaderMap, def: &ContainerDef) -> Result<(), ApiError> {
    match headers.get("x-ms-cosmos-intended-collection-rid") {
        Some(rid) if rid.as_bytes() != shape::coll_rid(def).as_bytes() => Err(ApiError::bad_request(
            format!(
                "the container {}/{} is not the one the request was meant for (its _rid is {}): it was re-created",
                def.database,
                def.name,
                shape::coll_rid(def)
            ),
        )
        // The SDKs refresh their container cache on 400/1024 and retry once.
        .with_substatus(1024)),
        _ => Ok(()),
    }
}

async fn read_doc(
    State(state): State<AppState>,
    Path((db, coll, id)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let metrics = state.metrics.clone();
    let (def, item) = blocking(&state, move |s| {
        let def = def_of(s, &db, &coll)?;
        check_intended(&headers, &def)?;
        let pk = require_pk(&headers, &def, &id)?;
        let item = s.read_item(&def.database, &def.name, &pk, &id)?;
        Ok((def, item))
    })
    .await?;
    metrics.reads.fetch_add(1, Ordering::Relaxed);
    Ok(item_answer(&state, StatusCode::OK, &def, item))
}

async fn replace_doc(
    State(state): State<AppState>,
    Path((db, coll, id)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let item = body_json(&headers, body).await?;
    if item.get("id").and_then(Value::as_str) != Some(id.as_str()) {
        return Err(ApiError::bad_request(format!(
            "the body's id must be the path's id {id:?}"
        )));
    }
    let if_match = text_header(&headers, "if-match")?;
    let metrics = state.metrics.clone();
    let (def, item) = blocking(&state, move |s| {
        let def = def_of(s, &db, &coll)?;
        check_intended(&headers, &def)?;
        check_body_pk(&headers, &def, &item)?;
        let item = s.replace_item(&def.database, &def.name, &id, item, if_match.as_deref())?;
        Ok((def, item))
    })
    .await?;
    state.notify();
    metrics.writes.fetch_add(1, Ordering::Relaxed);
    Ok(item_answer(&state, StatusCode::OK, &def, item))
}

async fn delete_doc(
    State(state): State<AppState>,
    Path((db, coll, id)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let if_match = text_header(&headers, "if-match")?;
    let metrics = state.metrics.clone();
    let def = blocking(&state, move |s| {
        let def = def_of(s, &db, &coll)?;
        check_intended(&headers, &def)?;
        let pk = require_pk(&headers, &def, &id)?;
        s.delete_item(&def.database, &def.name, &pk, &id, if_match.as_deref())?;
        Ok(def)
    })
    .await?;
    state.notify();
    metrics.writes.fetch_add(1, Ordering::Relaxed);
    Ok(with_session(
        StatusCode::NO_CONTENT.into_response(),
        &state.store,
        &def,
    ))
}

/// How many times a patch reads and writes back before it gives up on a busy item.
const PATCH_ATTEMPTS: u32 = 64;

async fn patch_doc(
    State(state): State<AppState>,
    Path((db, coll, id)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let v = body_json(&headers, body).await?;
    let ops = patch::parse(&v)?;
    let condition = patch::condition(&v)?
        .map(|c| query::condition(&c))
        .transpose()?;
    let if_match = text_header(&headers, "if-match")?;
    let metrics = state.metrics.clone();
    let (def, item) = blocking(&state, move |s| {
        let def = def_of(s, &db, &coll)?;
        check_intended(&headers, &def)?;
        let pk = require_pk(&headers, &def, &id)?;
        // Read, apply, and write back only if nothing changed the item in between; a local
        // write in between means reading again (unless the caller named the version).
        for attempt in 0..PATCH_ATTEMPTS {
            if attempt > 0 {
                // Concurrent patches of one item: back off a little, staggered per thread.
                let jitter = std::hash::BuildHasher::hash_one(
                    &std::collections::hash_map::RandomState::new(),
                    attempt,
                ) % 500;
                std::thread::sleep(std::time::Duration::from_micros(50 * u64::from(attempt.min(20)) + jitter));
            }
            let current = s.read_item(&def.database, &def.name, &pk, &id)?;
            if let Some(m) = &if_match
                && m != "*"
                && m.trim_matches('"') != current.etag.trim_matches('"')
            {
                return Err(converge_core::Error::PreconditionFailed {
                    expected: m.clone(),
                    current: current.etag,
                }
                .into());
            }
            if let Some(c) = &condition
                && !query::holds(c, &shape::item(&def, current.body.clone()))?
            {
                return Err(ApiError::new(
                    StatusCode::PRECONDITION_FAILED,
                    "the item does not meet the patch's condition",
                ));
            }
            let patched = patch::apply(&ops, current.body, &def.partition_key_paths())?;
            match s.replace_item(&def.database, &def.name, &id, patched, Some(&current.etag)) {
                Ok(item) => return Ok((def, item)),
                Err(converge_core::Error::PreconditionFailed { .. }) if if_match.is_none() => {}
                Err(e) => return Err(e.into()),
            }
        }
        // 429: the SDKs wait `x-ms-retry-after-ms` and retry (a 409 would read as "exists").
        Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "the item kept changing while the patch was applied (other writes won every race); try again",
        ))
    })
    .await?;
    state.notify();
    metrics.writes.fetch_add(1, Ordering::Relaxed);
    Ok(item_answer(&state, StatusCode::OK, &def, item))
}

/// `GET …/docs/`: the read feed, or with `A-IM: Incremental feed` the change feed.
async fn read_docs(
    State(state): State<AppState>,
    Path((db, coll)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let incremental = headers
        .get("a-im")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"incremental feed"));
    let max = max_items(&headers);
    if incremental {
        return change_feed(state, db, coll, headers, max).await;
    }
    if let Some(mode) = text_header(&headers, "a-im")? {
        return Err(ApiError::bad_request(format!(
            "A-IM {mode:?} is not supported: converge serves the latest-version change feed (A-IM: Incremental feed); all versions and deletes mode is not supported"
        )));
    }
    let continuation = text_header(&headers, "x-ms-continuation")?;
    let (def, page) = blocking(&state, move |s| {
        let def = def_of(s, &db, &coll)?;
        let pk = partition_key(&headers, &def)?;
        let page = s.list_items(
            &def.database,
            &def.name,
            pk.as_ref(),
            continuation.as_deref(),
            max,
        )?;
        Ok((def, page))
    })
    .await?;
    let items = page
        .items
        .into_iter()
        .map(|i| shape::item(&def, i.body))
        .collect();
    let mut r = json_response(
        StatusCode::OK,
        listing("Documents", &shape::coll_rid(&def), items),
    );
    if let Some(c) = &page.continuation {
        set_header(&mut r, "x-ms-continuation", c);
    }
    Ok(with_session(r, &state.store, &def))
}

/// The change feed's filters besides the container: a partition key (header), an effective
/// partition key range (`x-ms-start-epk`/`x-ms-end-epk`, which the SDKs send for a partition key
/// or a feed range), and a start time (`If-Modified-Since`, compared with `_ts`).
#[derive(Debug)]
struct FeedFilter {
    /// The header's values: a whole key, or a prefix of a hierarchical one.
    pk: Option<Vec<PartitionKey>>,
    epk: Option<(String, String)>,
    since_ts: Option<u64>,
}

impl FeedFilter {
    fn from_headers(headers: &HeaderMap, def: &ContainerDef) -> Result<Self, ApiError> {
        let epk = match (
            text_header(headers, "x-ms-start-epk")?,
            text_header(headers, "x-ms-end-epk")?,
        ) {
            (None, None) => None,
            (Some(s), Some(e)) => Some((s, e)),
            _ => {
                return Err(ApiError::bad_request(
                    "x-ms-start-epk and x-ms-end-epk come together",
                ));
            }
        };
        let since_ts = text_header(headers, "if-modified-since")?
            .map(|t| {
                httpdate::parse_http_date(&t)
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| d.as_secs())
                    .ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "If-Modified-Since {t:?} is not an HTTP date such as \"Tue, 01 Dec 2026 10:00:00 GMT\""
                        ))
                    })
            })
            .transpose()?;
        let pk = match pk_header(headers)? {
            Some(c) if c.len() > def.partition_key_paths().len() => {
                return Err(ApiError::bad_request(format!(
                    "x-ms-documentdb-partitionkey gives {} values; the container's partition key {} has fewer paths",
                    c.len(),
                    def.partition_key
                )));
            }
            Some(c) => Some(
                c.iter()
                    .map(PartitionKey::from_value)
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            None => None,
        };
        Ok(FeedFilter { pk, epk, since_ts })
    }

    fn keeps(&self, def: &ContainerDef, change: &converge_core::Change) -> bool {
        let (key, ts) = match change {
            converge_core::Change::Upsert(v) => (
                def.partition_key_of(v).ok(),
                v.get("_ts").and_then(Value::as_u64),
            ),
            converge_core::Change::Delete { partition_key, .. } => {
                (Some(partition_key.clone()), None)
            }
        };
        let Some(key) = key else { return false };
        if !self.keeps_key(def, &key) {
            return false;
        }
        // A delete carries no time: it is kept (it happened after every version it removed).
        match (self.since_ts, ts) {
            (Some(since), Some(ts)) => ts >= since,
            _ => true,
        }
    }

    /// Whether an item with partition key `key` is in the filter's partitions and range.
    fn keeps_key(&self, def: &ContainerDef, key: &PartitionKey) -> bool {
        if let Some(wanted) = &self.pk {
            let have = key.components();
            let prefix = wanted.len() <= have.len()
                && wanted
                    .iter()
                    .zip(&have)
                    .all(|(w, h)| PartitionKey::from_value(h).ok().as_ref() == Some(w));
            if !prefix {
                return false;
            }
        }
        match &self.epk {
            Some((start, end)) => epk::in_range(&effective_key(def, key), start, end),
            None => true,
        }
    }
}

async fn change_feed(
    state: AppState,
    db: String,
    coll: String,
    headers: HeaderMap,
    max: usize,
) -> Result<Response, ApiError> {
    let since = text_header(&headers, "if-none-match")?;
    let (def, page) = blocking(&state, move |s| {
        let def = def_of(s, &db, &coll)?;
        let filter = FeedFilter::from_headers(&headers, &def)?;
        let mut since = match since.as_deref() {
            None => None,
            Some("*") => Some(s.log_head().to_string()),
            Some(etag) => crate::api::feed_position(s, Some(etag.trim_matches('"'))),
        };
        // Pages whose changes the filter drops all are skipped: an empty answer (304) means
        // caught up, so it is given only when nothing after `since` passes.
        loop {
            let mut page = s.changes(&def.database, &def.name, since.as_deref(), max)?;
            let caught_up = page.items.is_empty();
            page.items.retain(|c| filter.keeps(&def, c));
            if page.continuation.is_none() {
                page.continuation = since;
            }
            if caught_up || !page.items.is_empty() {
                return Ok((def, page));
            }
            since = page.continuation;
        }
    })
    .await?;
    let etag = format!(
        "\"{}\"",
        crate::api::feed_token(&state.store, page.continuation.as_deref().unwrap_or("0"))
    );
    let mut r = if page.items.is_empty() {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let items = page
            .items
            .into_iter()
            .map(|c| match c {
                converge_core::Change::Upsert(v) => shape::item(&def, v),
                other => other.to_json(),
            })
            .collect();
        json_response(
            StatusCode::OK,
            listing("Documents", &shape::coll_rid(&def), items),
        )
    };
    set_header(&mut r, "etag", &etag);
    Ok(with_session(r, &state.store, &def))
}

async fn list_conflicts(
    State(state): State<AppState>,
    Path((db, coll)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let max = max_items(&headers);
    let continuation = text_header(&headers, "x-ms-continuation")?;
    let (def, page) = blocking(&state, move |s| {
        let def = def_of(s, &db, &coll)?;
        let page = s.conflicts(&def.database, &def.name, continuation.as_deref(), max)?;
        Ok((def, page))
    })
    .await?;
    let items = page
        .items
        .iter()
        .map(|c| shape::conflict(&def, c))
        .collect();
    let mut r = json_response(
        StatusCode::OK,
        listing("Conflicts", &shape::coll_rid(&def), items),
    );
    if let Some(c) = &page.continuation {
        set_header(&mut r, "x-ms-continuation", c);
    }
    Ok(r)
}

async fn read_conflict(
    State(state): State<AppState>,
    Path(p): Path<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let get = |k: &str| {
        p.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let (db, coll, cid) = (get("db"), get("coll"), get("cid"));
    let (def, record) = blocking(&state, move |s| {
        let def = def_of(s, &db, &coll)?;
        let record = s.conflict(&def.database, &def.name, &cid)?;
        Ok((def, record))
    })
    .await?;
    Ok(json_response(
        StatusCode::OK,
        shape::conflict(&def, &record),
    ))
}

async fn delete_conflict(
    State(state): State<AppState>,
    Path((db, coll, cid)): Path<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    blocking(&state, move |s| {
        let def = def_of(s, &db, &coll)?;
        Ok(s.delete_conflict(&def.database, &def.name, &cid)?)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
