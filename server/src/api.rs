//! The routes of HTTP-API.md over one region's store. Store calls run on tokio's blocking
//! pool, never on the runtime's threads.

use crate::error::ApiError;
use crate::metrics::Metrics;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use converge_core::{
    Batch, ConflictPolicy, Cursor, MAX_ITEM_BYTES, PartitionKey, Store, validate_name,
};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// The largest resolver module accepted (bytes).
pub const MAX_MODULE_BYTES: usize = 16 << 20;
/// Item bodies may carry this much beyond the item limit (whitespace); the store then checks
/// the serialized size.
const ITEM_BODY_LIMIT: usize = MAX_ITEM_BYTES + (64 << 10);
/// Page size when a list does not ask for one, and the most it may ask for.
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;
/// Most versions per replication batch.
pub const MAX_BATCH: usize = 1000;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The region's store.
    pub store: Arc<Store>,
    /// Counters for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// The bearer key, when authentication is on.
    pub key: Option<Arc<str>>,
    /// The same key as a Cosmos master key (base64), when it is one: Cosmos SDKs sign their
    /// requests with it.
    pub master: Option<crate::cosmos::auth::MasterKey>,
    /// The regions the account document names, this one first: `(name, endpoint)`.
    pub locations: Vec<(String, String)>,
    /// Bumped after every write to the store (the API's and the pullers'), so a peer's
    /// long-polling log request answers as soon as there is something new.
    pub changed: Arc<tokio::sync::watch::Sender<u64>>,
    /// The longest a log request is held (at most [`MAX_LOG_WAIT_MS`]; the server keeps it
    /// under its idle timeout, so a held request is never cut as an idle connection).
    pub max_log_wait: std::time::Duration,
    /// The longest one query page may compute (under the idle timeout, which would cut its
    /// answer off, and so also bounding how long a stop waits for it).
    pub query_budget: std::time::Duration,
    /// Where a region that joined from this one asks to be pulled from (`POST
    /// /_replication/peers`); `None` when the server takes no new peers (in-process tests).
    pub add_peer: Option<std::sync::mpsc::Sender<crate::replication::Peer>>,
    /// The peers this region pulls from, by name: their URLs.
    pub pulling: Arc<std::sync::Mutex<std::collections::BTreeMap<String, String>>>,
}

impl AppState {
    /// The state of a router over `store`, without a key.
    pub fn new(store: Arc<Store>, metrics: Arc<Metrics>) -> Self {
        AppState {
            store,
            metrics,
            key: None,
            master: None,
            locations: Vec::new(),
            changed: Arc::new(tokio::sync::watch::Sender::new(0)),
            max_log_wait: std::time::Duration::from_millis(MAX_LOG_WAIT_MS),
            query_budget: crate::conn::IDLE_TIMEOUT
                .saturating_sub(std::time::Duration::from_secs(2)),
            add_peer: None,
            pulling: Arc::default(),
        }
    }

    /// Tells long-polling log readers that the log may have grown.
    pub fn notify(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// The longest a log request may wait for something new (`wait`, ms).
pub const MAX_LOG_WAIT_MS: u64 = 10_000;

/// The API's router (the fuzz target and the in-process tests call it directly): requests
/// with `x-ms-version` get the Cosmos dialect ([`crate::cosmos`]), others converge's own.
pub fn router(state: AppState) -> Router {
    let plain = plain_router(state.clone());
    let cosmos = crate::cosmos::router(state.clone(), plain.clone());
    Router::new()
        .fallback_service(tower::service_fn(move |mut request: Request| {
            let service = if crate::cosmos::is_cosmos(request.headers()) {
                strip_trailing_slash(&mut request);
                cosmos.clone()
            } else {
                plain.clone()
            };
            tower::ServiceExt::oneshot(service, request)
        }))
        .layer(middleware::from_fn_with_state(state.clone(), guard))
}

/// Cosmos paths end with `/` (`dbs/a/colls/`); the routes are written without it.
fn strip_trailing_slash(request: &mut Request) {
    let path = request.uri().path();
    if path.len() > 1 && path.ends_with('/') {
        let trimmed = path.trim_end_matches('/');
        let trimmed = if trimmed.is_empty() { "/" } else { trimmed };
        let pq = match request.uri().query() {
            Some(q) => format!("{trimmed}?{q}"),
            None => trimmed.to_owned(),
        };
        if let Ok(uri) = pq.parse() {
            *request.uri_mut() = uri;
        }
    }
}

fn plain_router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/dbs/{db}/colls", get(list_containers))
        .route(
            "/dbs/{db}/colls/{coll}",
            get(get_container).put(put_container).delete(drop_container),
        )
        .route("/dbs/{db}/colls/{coll}/resolvers", get(list_resolvers))
        .route(
            "/dbs/{db}/colls/{coll}/resolvers/{name}",
            axum::routing::put(put_resolver),
        )
        .route(
            "/dbs/{db}/colls/{coll}/docs",
            get(list_items).post(create_item),
        )
        .route(
            "/dbs/{db}/colls/{coll}/docs/{id}",
            get(read_item).put(replace_item).delete(delete_item),
        )
        .route("/dbs/{db}/colls/{coll}/conflicts", get(list_conflicts))
        .route(
            "/dbs/{db}/colls/{coll}/conflicts/{cid}",
            get(get_conflict).delete(delete_conflict),
        )
        .route("/dbs/{db}/colls/{coll}/changes", get(changes))
        .route("/_replication/fingerprint", get(fingerprint))
        .route("/_replication/log", get(read_log))
        .route("/_replication/members", get(members))
        .route("/_replication/retire", axum::routing::post(retire))
        .route("/_replication/snapshot", get(snapshot))
        .route("/_replication/peers", axum::routing::post(add_peer))
        .fallback(not_routed)
        .with_state(state)
}

/// Authentication (constant-time bearer key, or a Cosmos master-key signature made with the
/// same key) and error counting, for every route.
async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if let Some(key) = &state.key
        && let Err(why) = authenticate(&state, key, &request)
    {
        state.metrics.error(401);
        return ApiError::unauthorized(why).into_response();
    }
    if let Some(bad) = bad_escape(request.uri().path()) {
        state.metrics.error(400);
        return ApiError::bad_request(format!(
            "the path does not decode: `{bad}` is not a percent-encoded byte (`%` and two hex digits)"
        ))
        .into_response();
    }
    let response = next.run(request).await;
    let status = response.status();
    if status.as_u16() < 400 {
        return response;
    }
    state.metrics.error(status.as_u16());
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json {
        return response;
    }
    // An error axum produced itself (a path that does not decode, a method a route does not
    // have): the same `{"code", "message"}` shape as every other error.
    let text = axum::body::to_bytes(response.into_body(), 64 << 10)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let message = if text.trim().is_empty() {
        status
            .canonical_reason()
            .unwrap_or("the request cannot be served")
            .to_owned()
    } else {
        text
    };
    ApiError::new(status, message).into_response()
}

fn authenticate(state: &AppState, key: &str, request: &Request) -> Result<(), String> {
    let headers = request.headers();
    let given = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
    if let Some(bearer) = given.and_then(|g| g.strip_prefix(b"Bearer ")) {
        return match same_key(bearer, key.as_bytes()) {
            true => Ok(()),
            false => Err("the bearer key is not this region's key".into()),
        };
    }
    let Some(given) = given else {
        return Err("a valid `Authorization` header is required: `Bearer <key>`, or a Cosmos master-key signature".into());
    };
    let Some(master) = &state.master else {
        return Err("this region's key is not a base64 Cosmos master key, so it cannot check signatures: use `Authorization: Bearer <key>`".into());
    };
    let given = std::str::from_utf8(given)
        .map_err(|_| "the Authorization header is not text".to_owned())?;
    let date = headers
        .get("x-ms-date")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| "a master-key signature needs the x-ms-date header".to_owned())?;
    let path = percent_decode(request.uri().path());
    let now = std::time::SystemTime::now();
    let mut first = None;
    for (resource_type, link) in crate::cosmos::auth::signed_resources(&path) {
        match master.verify(
            given,
            request.method().as_str(),
            &resource_type,
            &link,
            date,
            now,
        ) {
            Ok(()) => return Ok(()),
            Err(e) => {
                first.get_or_insert(e);
            }
        }
    }
    Err(first.unwrap_or_else(|| "the signature does not match".into()))
}

fn percent_decode(path: &str) -> String {
    percent_encoding::percent_decode_str(path)
        .decode_utf8_lossy()
        .into_owned()
}

/// The first `%` escape of `path` that is not `%` and two hex digits (the router would take
/// it literally), with what follows it.
fn bad_escape(path: &str) -> Option<&str> {
    let bytes = path.as_bytes();
    let at = (0..bytes.len()).find(|&i| {
        bytes[i] == b'%'
            && !bytes
                .get(i + 1..i + 3)
                .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
    })?;
    let end = (at + 3).min(path.len());
    Some(path.get(at..end).unwrap_or(&path[at..]))
}

/// Compares keys in time independent of where they differ.
fn same_key(given: &[u8], key: &[u8]) -> bool {
    let mut diff = given.len() ^ key.len();
    for (i, k) in key.iter().enumerate() {
        diff |= usize::from(given.get(i).copied().unwrap_or(0) ^ k);
    }
    diff == 0
}

async fn not_routed() -> ApiError {
    ApiError::not_found("no such route")
}

/// Runs `f` on the blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&Store) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let store = state.store.clone();
    tokio::task::spawn_blocking(move || f(&store))
        .await
        .map_err(|e| ApiError::internal(format!("the request's task failed: {e}")))?
}

fn names(pairs: &[(&str, &str)]) -> Result<(), ApiError> {
    for (kind, name) in pairs {
        validate_name(kind, name).map_err(ApiError::from)?;
    }
    Ok(())
}

/// Reads a request body of at most `limit` bytes: one announced as longer is refused before a
/// byte of it is read, one that turns out longer (chunked) as soon as it passes the limit.
pub(crate) async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    what: &str,
) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::too_large(format!(
            "the body is over the {what} limit of {limit} bytes"
        ))
    };
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    // Without a Content-Length (chunked), the limit is found while reading.
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let inner = e.into_inner();
        if inner.is::<http_body_util::LengthLimitError>() {
            too_large()
        } else {
            ApiError::bad_request(format!("cannot read the body: {inner}"))
        }
    })
}

/// A request body as JSON, with the contract's errors: 413 over the limit, 400 when not JSON
/// or not an object.
async fn json_object(headers: &HeaderMap, body: Body) -> Result<Value, ApiError> {
    let bytes = read_body(headers, body, ITEM_BODY_LIMIT, "item").await?;
    let v: Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("the body is not JSON: {e}")))?;
    if !v.is_object() {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    }
    Ok(v)
}

fn created_or_ok(created: bool) -> StatusCode {
    if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    }
}

fn item_response(status: StatusCode, item: converge_core::Item) -> Response {
    let mut r = (status, axum::Json(item.body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&item.etag) {
        r.headers_mut().insert(header::ETAG, v);
    }
    r
}

/// `x-partition-key` as a JSON value, or the id when the container is partitioned on `/id`.
fn partition_key(
    store: &Store,
    headers: &HeaderMap,
    db: &str,
    coll: &str,
    id: &str,
) -> Result<PartitionKey, ApiError> {
    match headers.get("x-partition-key") {
        Some(raw) => {
            let text = raw.to_str().map_err(|_| {
                ApiError::bad_request("x-partition-key must be a JSON value, such as \"alice\"")
            })?;
            // A value, or a hierarchical key's array of values.
            Ok(PartitionKey::parse(text)?)
        }
        None if store.container(db, coll)?.partition_key == "/id" => Ok(PartitionKey::from(id)),
        None => Err(ApiError::bad_request(
            "the x-partition-key header is required (the container is not partitioned on /id)",
        )),
    }
}

fn if_match(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    headers
        .get(header::IF_MATCH)
        .map(|v| {
            v.to_str()
                .map(str::to_owned)
                .map_err(|_| ApiError::bad_request("If-Match must be text"))
        })
        .transpose()
}

#[derive(Deserialize)]
struct PageQuery {
    continuation: Option<String>,
    #[serde(rename = "maxItemCount")]
    max_item_count: Option<usize>,
}

impl PageQuery {
    fn max(&self) -> usize {
        self.max_item_count
            .unwrap_or(DEFAULT_PAGE)
            .clamp(1, MAX_PAGE)
    }
}

fn query<T>(q: Result<Query<T>, axum::extract::rejection::QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(q)| q)
        .map_err(|e| ApiError::bad_request(format!("bad query string: {}", e.body_text())))
}

async fn healthz(State(state): State<AppState>) -> Response {
    axum::Json(json!({"region": state.store.region().as_str(), "status": "ok"})).into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    let mut text = state.metrics.render(
        state.store.region().as_str(),
        &state.store.stats(),
        state.store.interrupted_count(),
    );
    if let Ok(members) = state.store.members() {
        text.push_str(&crate::metrics::render_members(
            state.store.region().as_str(),
            &members,
        ));
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

async fn list_containers(
    State(state): State<AppState>,
    Path(db): Path<String>,
) -> Result<Response, ApiError> {
    names(&[("database", &db)])?;
    let missing = format!("database {db:?} does not exist (it holds no container)");
    let defs = blocking(&state, move |s| match s.containers(&db) {
        Ok(defs) => Ok(defs),
        Err(converge_core::Error::UnknownContainer { .. }) => Ok(Vec::new()),
        Err(e) => Err(e.into()),
    })
    .await?;
    if defs.is_empty() {
        return Err(ApiError::not_found(missing));
    }
    Ok(axum::Json(json!({ "containers": defs })).into_response())
}

async fn get_container(
    State(state): State<AppState>,
    Path((db, coll)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    names(&[("database", &db), ("container", &coll)])?;
    let def = blocking(&state, move |s| Ok(s.container(&db, &coll)?)).await?;
    Ok(axum::Json(def).into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ContainerBody {
    partition_key: String,
    #[serde(default)]
    conflict_resolution_policy: Option<ConflictPolicy>,
}

async fn put_container(
    State(state): State<AppState>,
    Path((db, coll)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    names(&[("database", &db), ("container", &coll)])?;
    let body: ContainerBody = serde_json::from_value(json_object(&headers, body).await?)
        .map_err(|e| ApiError::bad_request(format!("bad container definition: {e}")))?;
    let (def, created) = blocking(&state, move |s| {
        Ok(s.put_container(
            &db,
            &coll,
            &body.partition_key,
            body.conflict_resolution_policy.unwrap_or_default(),
        )?)
    })
    .await?;
    state.notify();
    Ok((created_or_ok(created), axum::Json(def)).into_response())
}

async fn drop_container(
    State(state): State<AppState>,
    Path((db, coll)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    names(&[("database", &db), ("container", &coll)])?;
    blocking(&state, move |s| Ok(s.drop_container(&db, &coll)?)).await?;
    state.notify();
    Ok(StatusCode::NO_CONTENT)
}

async fn list_resolvers(
    State(state): State<AppState>,
    Path((db, coll)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    names(&[("database", &db), ("container", &coll)])?;
    let list = blocking(&state, move |s| Ok(s.resolvers(&db, &coll)?)).await?;
    let list: Vec<Value> = list
        .into_iter()
        .map(|(name, hash)| json!({"name": name, "hash": hash}))
        .collect();
    Ok(axum::Json(json!({ "resolvers": list })).into_response())
}

async fn put_resolver(
    State(state): State<AppState>,
    Path((db, coll, name)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    names(&[("database", &db), ("container", &coll), ("resolver", &name)])?;
    let bytes = read_body(&headers, body, MAX_MODULE_BYTES, "resolver module").await?;
    let n = name.clone();
    let hash = blocking(&state, move |s| Ok(s.put_resolver(&db, &coll, &n, &bytes)?)).await?;
    state.notify();
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({"name": name, "hash": hash})),
    )
        .into_response())
}

async fn create_item(
    State(state): State<AppState>,
    Path((db, coll)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    names(&[("database", &db), ("container", &coll)])?;
    let item = json_object(&headers, body).await?;
    let upsert = headers
        .get("x-upsert")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
    let metrics = state.metrics.clone();
    let (item, created) = blocking(&state, move |s| {
        if upsert {
            Ok(s.upsert_item(&db, &coll, item)?)
        } else {
            Ok((s.create_item(&db, &coll, item)?, true))
        }
    })
    .await?;
    state.notify();
    metrics.writes.fetch_add(1, Ordering::Relaxed);
    Ok(item_response(created_or_ok(created), item))
}

async fn replace_item(
    State(state): State<AppState>,
    Path((db, coll, id)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    names(&[("database", &db), ("container", &coll)])?;
    let item = json_object(&headers, body).await?;
    if item.get("id").and_then(Value::as_str) != Some(id.as_str()) {
        return Err(ApiError::bad_request(format!(
            "the body's id must be the path's id {id:?}"
        )));
    }
    let if_match = if_match(&headers)?;
    let metrics = state.metrics.clone();
    let item = blocking(&state, move |s| {
        // The body names the item's partition key (the contract's PUT takes no header).
        Ok(s.replace_item(&db, &coll, &id, item, if_match.as_deref())?)
    })
    .await?;
    state.notify();
    metrics.writes.fetch_add(1, Ordering::Relaxed);
    Ok(item_response(StatusCode::OK, item))
}

async fn read_item(
    State(state): State<AppState>,
    Path((db, coll, id)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    names(&[("database", &db), ("container", &coll)])?;
    let metrics = state.metrics.clone();
    let item = blocking(&state, move |s| {
        let pk = partition_key(s, &headers, &db, &coll, &id)?;
        Ok(s.read_item(&db, &coll, &pk, &id)?)
    })
    .await?;
    metrics.reads.fetch_add(1, Ordering::Relaxed);
    Ok(item_response(StatusCode::OK, item))
}

async fn delete_item(
    State(state): State<AppState>,
    Path((db, coll, id)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    names(&[("database", &db), ("container", &coll)])?;
    let if_match = if_match(&headers)?;
    let metrics = state.metrics.clone();
    blocking(&state, move |s| {
        let pk = partition_key(s, &headers, &db, &coll, &id)?;
        Ok(s.delete_item(&db, &coll, &pk, &id, if_match.as_deref())?)
    })
    .await?;
    state.notify();
    metrics.writes.fetch_add(1, Ordering::Relaxed);
    Ok(StatusCode::NO_CONTENT)
}

async fn list_items(
    State(state): State<AppState>,
    Path((db, coll)): Path<(String, String)>,
    headers: HeaderMap,
    q: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    names(&[("database", &db), ("container", &coll)])?;
    let q = query(q)?;
    let page = blocking(&state, move |s| {
        let pk = match headers.get("x-partition-key") {
            Some(_) => {
                let pk = partition_key(s, &headers, &db, &coll, "")?;
                let levels = s.container(&db, &coll)?.partition_key_paths().len();
                if pk.components().len() != levels {
                    return Err(ApiError::bad_request(format!(
                        "x-partition-key gives {} value(s); the container's partition key has {levels}",
                        pk.components().len()
                    )));
                }
                Some(pk)
            }
            None => None,
        };
        Ok(s.list_items(&db, &coll, pk.as_ref(), q.continuation.as_deref(), q.max())?)
    })
    .await?;
    let items: Vec<Value> = page.items.into_iter().map(|i| i.body).collect();
    Ok(axum::Json(json!({"items": items, "continuation": page.continuation})).into_response())
}

async fn list_conflicts(
    State(state): State<AppState>,
    Path((db, coll)): Path<(String, String)>,
    q: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    names(&[("database", &db), ("container", &coll)])?;
    let q = query(q)?;
    let page = blocking(&state, move |s| {
        Ok(s.conflicts(&db, &coll, q.continuation.as_deref(), q.max())?)
    })
    .await?;
    let records: Vec<Value> = page.items.iter().map(|r| r.to_json()).collect();
    Ok(
        axum::Json(json!({"conflicts": records, "continuation": page.continuation}))
            .into_response(),
    )
}

async fn get_conflict(
    State(state): State<AppState>,
    Path((db, coll, cid)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    names(&[("database", &db), ("container", &coll)])?;
    let record = blocking(&state, move |s| Ok(s.conflict(&db, &coll, &cid)?)).await?;
    Ok(axum::Json(record.to_json()).into_response())
}

async fn delete_conflict(
    State(state): State<AppState>,
    Path((db, coll, cid)): Path<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    names(&[("database", &db), ("container", &coll)])?;
    blocking(&state, move |s| Ok(s.delete_conflict(&db, &coll, &cid)?)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct ChangesQuery {
    since: Option<String>,
    #[serde(rename = "maxItemCount")]
    max_item_count: Option<usize>,
}

async fn changes(
    State(state): State<AppState>,
    Path((db, coll)): Path<(String, String)>,
    q: Result<Query<ChangesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    names(&[("database", &db), ("container", &coll)])?;
    let q = query(q)?;
    let max = q.max_item_count.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    let page = blocking(&state, move |s| {
        let since = feed_position(s, q.since.as_deref());
        let mut page = s.changes(&db, &coll, since.as_deref(), max)?;
        page.continuation = page.continuation.map(|p| feed_token(s, &p));
        Ok(page)
    })
    .await?;
    let changes: Vec<Value> = page.items.iter().map(|c| c.to_json()).collect();
    Ok(axum::Json(json!({"changes": changes, "continuation": page.continuation})).into_response())
}

/// A change-feed token: a position in this region's feed, `<region>!<position>`.
pub(crate) fn feed_token(store: &Store, position: &str) -> String {
    format!("{}!{position}", store.region())
}

/// The position in this region's feed a change-feed token names. A bare position is this
/// region's (tokens given before they named their region). Another region's feed is in another
/// order, so its token starts from the beginning (`None`): a reader that fails over sees
/// changes again but never misses one.
pub(crate) fn feed_position(store: &Store, token: Option<&str>) -> Option<String> {
    let token = token?;
    match token.split_once('!') {
        Some((region, position)) if region == store.region().as_str() => Some(position.to_owned()),
        Some(_) => None,
        None => Some(token.to_owned()),
    }
}

async fn fingerprint(State(state): State<AppState>) -> Response {
    axum::Json(json!({
        "region": state.store.region().as_str(),
        "fingerprint": state.store.engine_fingerprint(),
        "store": state.store.store_id(),
        "joined": state.store.joined_store(),
    }))
    .into_response()
}

/// Every member this region knows of, with the stable point (see docs/http-api.md).
async fn members(State(state): State<AppState>) -> Result<Response, ApiError> {
    let (members, stable) = blocking(&state, |s| Ok((s.members()?, s.stable_point()?))).await?;
    let stable: std::collections::BTreeMap<&str, u64> =
        stable.iter().map(|(r, c)| (r.as_str(), *c)).collect();
    Ok(axum::Json(json!({
        "region": state.store.region().as_str(),
        "stable": stable,
        "members": members,
    }))
    .into_response())
}

/// A member that was heard from this recently is not retired without `force`.
const RETIRE_QUIET: u64 = 60_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RetireBody {
    region: String,
    #[serde(default)]
    force: bool,
}

/// Retires a member (see docs/http-api.md): replicated like a definition change.
async fn retire(
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let req: RetireBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "the body must be {{\"region\": <name>, \"force\": <bool, optional>}}: {e}"
        ))
    })?;
    let region = req.region.clone();
    let cut = blocking(&state, move |s| {
        let members = s.members()?;
        if let Some(m) = members.iter().find(|m| m.region == req.region && !m.this_region)
            && !m.retired
            && !req.force
            && m.heard_ms_ago.is_some_and(|ms| ms < RETIRE_QUIET)
        {
            return Err(ApiError::new(
                axum::http::StatusCode::CONFLICT,
                format!(
                    "region {} was heard from {} s ago: retire only a region that is gone for \
                     good (its later writes will be refused everywhere); pass force to retire it anyway",
                    req.region,
                    m.heard_ms_ago.unwrap_or(0) / 1000
                ),
            ));
        }
        Ok(s.retire_region(&req.region)?)
    })
    .await?;
    state.notify();
    Ok(axum::Json(json!({"retired": region, "cut": cut})).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PeerBody {
    region: String,
    url: String,
}

/// A region that joined from this one asks to be pulled from (see docs/http-api.md): only a
/// member may, so a stray request cannot make this region pull from anywhere.
async fn add_peer(
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let req: PeerBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "the body must be {{\"region\": <name>, \"url\": <its URL>}}: {e}"
        ))
    })?;
    let peer: crate::replication::Peer = format!("{}={}", req.region, req.url)
        .parse()
        .map_err(ApiError::bad_request)?;
    let Some(tx) = state.add_peer.clone() else {
        return Err(ApiError::new(
            axum::http::StatusCode::CONFLICT,
            "this server takes no new peers",
        ));
    };
    let name = peer.name.clone();
    let pulled_at = state
        .pulling
        .lock()
        .map_err(|_| ApiError::internal("peer list poisoned"))?
        .get(&name)
        .cloned();
    match pulled_at {
        Some(url) if url == peer.url => {
            return Ok(axum::Json(json!({"pulling_from": name})).into_response());
        }
        Some(url) => {
            return Err(ApiError::new(
                axum::http::StatusCode::CONFLICT,
                format!(
                    "this region already pulls from {name} at {url}: to move it to {}, restart \
                     this region with --peer {name}={} (and remove its line from {})",
                    peer.url,
                    peer.url,
                    crate::ADDED_PEERS_FILE
                ),
            ));
        }
        None => {}
    }
    let members = blocking(&state, |s| Ok(s.members()?)).await?;
    match members.iter().find(|m| m.region == name) {
        Some(m) if m.this_region => {
            return Err(ApiError::bad_request(format!("{name} is this region")));
        }
        Some(m) if m.retired => {
            return Err(ApiError::new(
                axum::http::StatusCode::CONFLICT,
                format!("region {name} was retired"),
            ));
        }
        Some(_) => {}
        None => {
            return Err(ApiError::new(
                axum::http::StatusCode::CONFLICT,
                format!(
                    "region {name} is not a member: a region joins first (converge serve --join), then asks to be pulled from"
                ),
            ));
        }
    }
    tx.send(peer)
        .map_err(|_| ApiError::internal("the server is stopping"))?;
    Ok(axum::Json(json!({"pulling_from": name})).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotQuery {
    /// The joining region's name.
    region: String,
    /// The joining store's id (`Store::store_id`).
    #[serde(default)]
    store: u64,
}

/// A snapshot of this region for a joining region, streamed as it is read (see
/// docs/http-api.md and `Store::snapshot_to`).
async fn snapshot(
    State(state): State<AppState>,
    q: Result<Query<SnapshotQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    converge_core::RegionId::new(&q.region)?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, converge_core::Error>>(16);
    let store = state.store.clone();
    tokio::task::spawn_blocking(move || {
        let mut out = crate::snapshot::ChannelWriter::new(tx.clone());
        let result = store
            .snapshot_to(&q.region, q.store, &mut out)
            .and_then(|s| out.finish().map(|()| s));
        match result {
            Ok(s) => eprintln!(
                "[{}] snapshot for {}: {} items, {} bytes",
                store.region(),
                q.region,
                s.items,
                s.bytes
            ),
            Err(e) => {
                eprintln!("[{}] snapshot for {}: {e}", store.region(), q.region);
                let _ = tx.blocking_send(Err(e));
            }
        }
    });
    // The first chunk says whether the snapshot started: an error before it is an answer.
    let first = match rx.recv().await {
        Some(Ok(b)) => b,
        Some(Err(e)) => return Err(e.into()),
        None => return Err(ApiError::internal("the snapshot ended before it began")),
    };
    Ok((
        [(header::CONTENT_TYPE, "application/octet-stream")],
        axum::body::Body::new(crate::snapshot::ChannelBody::new(first, rx)),
    )
        .into_response())
}

/// The header of a log route's 409 to a retired puller: the cut of its retirement.
pub const RETIRED_HEADER: &str = "x-converge-retired-cut";

#[derive(Deserialize)]
struct LogQuery {
    cursor: Option<String>,
    max: Option<usize>,
    /// The pulling region's name, with `applied`: what it has applied.
    region: Option<String>,
    /// The pulling region's applied vector, `region:counter` joined by commas.
    applied: Option<String>,
    /// The pulling region's store id (with `region`): a store its peers do not know of is
    /// refused.
    store: Option<u64>,
    /// `1` when the puller's store joined from a snapshot (see `converge_core::Puller`).
    joined: Option<u8>,
    /// When nothing is new, wait up to this many ms for something (long poll).
    wait: Option<u64>,
}

/// A batch of the log after `cursor`, in the binary batch format (see docs/design.md).
async fn read_log(
    State(state): State<AppState>,
    q: Result<Query<LogQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let cursor = match q.cursor.as_deref() {
        Some(t) => Cursor::parse(t)?,
        None => Cursor::START,
    };
    let max = q.max.unwrap_or(MAX_BATCH).clamp(1, MAX_BATCH);
    let puller = match (&q.region, &q.applied, q.store) {
        (Some(r), applied, store) => Some(converge_core::Puller {
            region: converge_core::RegionId::new(r)?,
            applied: crate::replication::parse_applied(applied.as_deref().unwrap_or(""))?,
            store,
            joined: q.joined == Some(1),
        }),
        (None, None, None) => None,
        (None, _, _) => {
            return Err(ApiError::bad_request(
                "applied= and store= need region= (the pulling region's name)",
            ));
        }
    };
    let name = puller.as_ref().map(|p| p.region.as_str().to_owned());
    let read = move |s: &converge_core::Store| Ok(s.read_log_for(puller.as_ref(), cursor, max)?);
    // Subscribe before reading, so a write between the read and the wait is not missed.
    let mut changed = state.changed.subscribe();
    let mut batch: Batch = match blocking(&state, read.clone()).await {
        Ok(b) => b,
        // A retired puller is told so in a header too, with its cut: it stops taking writes.
        Err(e) => {
            let Some(name) = name else { return Err(e) };
            let Some(cut) = blocking(&state, move |s| Ok(s.retired_cut(&name)?)).await? else {
                return Err(e);
            };
            let mut r = e.into_response();
            r.headers_mut()
                .insert(RETIRED_HEADER, axum::http::HeaderValue::from(cut));
            return Ok(r);
        }
    };
    let wait = std::time::Duration::from_millis(q.wait.unwrap_or(0)).min(state.max_log_wait);
    if batch.versions.is_empty() && !batch.more && !wait.is_zero() {
        let _ = tokio::time::timeout(wait, changed.changed()).await;
        batch = blocking(&state, read).await?;
    }
    Ok((
        [(header::CONTENT_TYPE, "application/octet-stream")],
        batch.encode(),
    )
        .into_response())
}
