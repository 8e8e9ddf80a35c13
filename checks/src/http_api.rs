//! The region server's HTTP API in-process: arbitrary sequences of requests — every route of
//! HTTP-API.md and some that do not exist, any method, names good and bad (empty, `..`,
//! undecodable percent escapes, too long), partition-key, upsert and `If-Match` headers right
//! and wrong, bodies that are items, definitions, modules, garbage or over the limit, with and
//! without the bearer key — through `converge_server::api::router` over a fresh in-memory
//! store that holds a container, an item and a manual conflict.
//!
//! The oracle: never a panic, never a 5xx; every status is one the contract lists for that
//! route and method (405 for a method a route lacks, 401 without the key); every error has the
//! `{"code", "message"}` shape and writes nothing; every success answers the contract's JSON
//! shape; an item written is read back as written.

use arbitrary::{Arbitrary, Unstructured};
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use converge_core::{ConflictPolicy, Cursor, Store, StoreOptions};
use converge_server::api::{AppState, router};
use converge_server::metrics::Metrics;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use tower::ServiceExt;

/// Requests per input, at most.
const MAX_REQUESTS: usize = 24;
/// The bearer key when the input turns authentication on.
const KEY: &str = "fuzz-key";

const DBS: [&str; 6] = ["db", "other", "", "..", "%FF", "a%2Fb"];
const COLLS: [&str; 7] = ["c", "m", "byid", "new", "nope", "%00", "."];
const IDS: [&str; 7] = ["i1", "i2", "x", "", "%C3%A9", "a%3Fb", "%"];
const PKS: [Option<&str>; 7] = [
    Some("\"a\""),
    Some("\"b\""),
    Some("1"),
    Some("null"),
    Some("[1]"),
    Some("not json"),
    None,
];

#[derive(Arbitrary, Debug)]
enum Route {
    Healthz,
    Metrics,
    Containers {
        db: u8,
    },
    Container {
        db: u8,
        coll: u8,
    },
    Resolvers {
        db: u8,
        coll: u8,
    },
    Resolver {
        db: u8,
        coll: u8,
        name: u8,
    },
    Items {
        db: u8,
        coll: u8,
        continuation: Option<u8>,
    },
    Item {
        db: u8,
        coll: u8,
        id: u8,
    },
    Conflicts {
        db: u8,
        coll: u8,
        continuation: Option<u8>,
    },
    Conflict {
        db: u8,
        coll: u8,
        which: u8,
    },
    Changes {
        db: u8,
        coll: u8,
        since: Option<u8>,
    },
    Fingerprint,
    Log {
        cursor: Option<u8>,
        max: Option<u8>,
    },
    /// A path of arbitrary text.
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum Body_ {
    None,
    /// An item: `id` from the pool (or none), `pk` from the pool, a number.
    Item {
        id: Option<u8>,
        pk: u8,
        v: u16,
    },
    /// A container definition, good or bad.
    Definition {
        pk_path: u8,
        policy: u8,
    },
    /// A resolver module: an example's, or bytes that are not WebAssembly.
    Module {
        example: bool,
    },
    /// Bytes over the item limit (2 MiB), as an item.
    Oversized,
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
struct Req {
    method: u8,
    route: Route,
    body: Body_,
    pk: u8,
    upsert: Option<bool>,
    /// 0: none, 1: the current etag of the item named, 2: `*`, 3: a wrong one, 4: not an etag.
    if_match: u8,
    /// With authentication on: mostly the key, sometimes a wrong one or none.
    auth: u8,
}

fn pick<T: Clone>(pool: &[T], n: u8) -> T {
    pool[usize::from(n) % pool.len()].clone()
}

/// Mostly the first entries of `pool` (the names that exist), sometimes any.
fn mostly<T: Clone>(pool: &[T], good: usize, n: u8) -> T {
    if n < 208 {
        pool[usize::from(n) % good].clone()
    } else {
        pick(pool, n)
    }
}

const METHODS: [Method; 6] = [
    Method::GET,
    Method::PUT,
    Method::POST,
    Method::DELETE,
    Method::PATCH,
    Method::HEAD,
];

/// The path and query of `route`, and which route of the contract it is.
fn target(route: &Route, conflict_ids: &[String], cursors: &[String]) -> (String, &'static str) {
    let c = |db: &u8, coll: &u8| {
        format!(
            "/dbs/{}/colls/{}",
            mostly(&DBS, 1, *db),
            mostly(&COLLS, 4, *coll)
        )
    };
    match route {
        Route::Healthz => ("/healthz".into(), "healthz"),
        Route::Metrics => ("/metrics".into(), "metrics"),
        Route::Containers { db } => (format!("/dbs/{}/colls", mostly(&DBS, 1, *db)), "containers"),
        Route::Container { db, coll } => (c(db, coll), "container"),
        Route::Resolvers { db, coll } => (format!("{}/resolvers", c(db, coll)), "resolvers"),
        Route::Resolver { db, coll, name } => (
            format!(
                "{}/resolvers/{}",
                c(db, coll),
                pick(&["r", "", "%FF"], *name)
            ),
            "resolver",
        ),
        Route::Items {
            db,
            coll,
            continuation,
        } => (
            format!(
                "{}/docs{}",
                c(db, coll),
                token("continuation", *continuation)
            ),
            "items",
        ),
        Route::Item { db, coll, id } => (
            format!("{}/docs/{}", c(db, coll), mostly(&IDS, 3, *id)),
            "item",
        ),
        Route::Conflicts {
            db,
            coll,
            continuation,
        } => (
            format!(
                "{}/conflicts{}",
                c(db, coll),
                token("continuation", *continuation)
            ),
            "conflicts",
        ),
        Route::Conflict { db, coll, which } => {
            let id = match conflict_ids.first() {
                Some(_) if *which < 208 => pick(conflict_ids, *which),
                _ => pick(&["nope", "%FF", ""], *which).to_owned(),
            };
            (format!("{}/conflicts/{id}", c(db, coll)), "conflict")
        }
        Route::Changes { db, coll, since } => (
            format!("{}/changes{}", c(db, coll), token("since", *since)),
            "changes",
        ),
        Route::Fingerprint => ("/_replication/fingerprint".into(), "fingerprint"),
        Route::Log { cursor, max } => {
            let mut q = vec!["wait=0".to_owned()];
            if let Some(n) = cursor {
                q.push(match cursors.get(usize::from(*n)) {
                    Some(c) => format!("cursor={c}"),
                    None => format!("cursor={}", pick(&["", "garbage", "1:2", "%FF"], *n)),
                });
            }
            if let Some(m) = max {
                q.push(format!("max={}", pick(&["0", "1", "5000", "-1", "x"], *m)));
            }
            (format!("/_replication/log?{}", q.join("&")), "log")
        }
        Route::Raw(text) => {
            let mut path: String = text
                .chars()
                .filter(|c| c.is_ascii_graphic())
                .take(200)
                .collect();
            if !path.starts_with('/') {
                path.insert(0, '/');
            }
            (path, "raw")
        }
    }
}

fn token(name: &str, n: Option<u8>) -> String {
    match n {
        None => String::new(),
        Some(n) => format!(
            "?{name}={}",
            pick(
                &[
                    "0",
                    "1",
                    "garbage",
                    "ffff",
                    "%FF",
                    "",
                    "99999999999999999999"
                ],
                n
            )
        ),
    }
}

/// The statuses HTTP-API.md allows for `method` on `route` (besides 401 without the key).
fn allowed(route: &str, method: &Method) -> Option<&'static [u16]> {
    let m = method.as_str();
    Some(match (route, m) {
        ("healthz" | "metrics" | "fingerprint", "GET") => &[200],
        ("containers" | "resolvers", "GET") => &[200, 400, 404],
        ("container", "GET") => &[200, 400, 404],
        ("container", "PUT") => &[200, 201, 400, 404, 413],
        ("container", "DELETE") => &[204, 400, 404],
        ("resolver", "PUT") => &[201, 400, 404, 413],
        ("items" | "conflicts" | "changes", "GET") => &[200, 400, 404],
        ("items", "POST") => &[200, 201, 400, 404, 409, 413],
        ("item", "GET") => &[200, 400, 404],
        ("item", "PUT") => &[200, 400, 404, 412, 413],
        ("item", "DELETE") => &[204, 400, 404, 412],
        ("conflict", "GET") => &[200, 400, 404],
        ("conflict", "DELETE") => &[204, 400, 404],
        ("log", "GET") => &[200, 400],
        ("raw", _) => &[200, 400, 404, 405, 413],
        _ => return None,
    })
}

/// The bytes and content type of `body`; an item without an id of its own takes `path_id`, the
/// id the path names (none: no id at all).
fn body_bytes(body: &Body_, path_id: Option<&str>) -> (Vec<u8>, &'static str) {
    match body {
        Body_::None => (Vec::new(), "application/json"),
        Body_::Item { id, pk, v } => {
            let mut item = json!({ "v": v });
            match (id, path_id) {
                (Some(id), _) => {
                    item["id"] = mostly(&["i1", "i2", "x", "", "a/b", "é"], 2, *id).into();
                }
                (None, Some(id)) => item["id"] = id.into(),
                (None, None) => {}
            }
            if let Some(pk) =
                mostly(&PKS, 2, *pk).and_then(|p| serde_json::from_str::<Value>(p).ok())
            {
                item["pk"] = pk;
            }
            (item.to_string().into_bytes(), "application/json")
        }
        Body_::Definition { pk_path, policy } => {
            let policies = [
                r#"{"mode": "lww"}"#,
                r#"{"mode": "lww", "path": "/v"}"#,
                r#"{"mode": "manual"}"#,
                r#"{"mode": "custom", "resolver": "r"}"#,
                r#"{"mode": "custom"}"#,
                r#"{"mode": "lww", "path": "no-slash"}"#,
                r#""lww""#,
            ];
            let policy: Value =
                serde_json::from_str(pick(&policies, *policy)).unwrap_or_else(|e| panic!("{e}"));
            let def = json!({
                "partitionKey": pick(&["/pk", "/id", "", "pk", "/a/b"], *pk_path),
                "conflictResolutionPolicy": policy,
            });
            (def.to_string().into_bytes(), "application/json")
        }
        Body_::Module { example: true } => (
            converge_udf_examples::HIGHEST_VERSION.to_vec(),
            "application/wasm",
        ),
        Body_::Module { example: false } => {
            (b"\0asm\x01\0\0\0garbage".to_vec(), "application/wasm")
        }
        Body_::Oversized => {
            // Built once: serializing 2 MiB through serde_json on every run took two thirds
            // of the fuzzer's time.
            static BIG: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
            let big = BIG.get_or_init(|| {
                let filler = "x".repeat(2 << 20);
                format!(r#"{{"id":"big","pk":"a","filler":"{filler}"}}"#).into_bytes()
            });
            (big.clone(), "application/json")
        }
        Body_::Raw(bytes) => (bytes.clone(), "application/json"),
    }
}

/// A fresh region: container `db/c` (LWW, `/pk`) with item `i1` in partition `"a"`, `db/byid`
/// partitioned on `/id`, and `db/m` (manual) with one open conflict on `i1`.
fn region() -> (Arc<Store>, Vec<String>) {
    let store = Store::memory("west", StoreOptions::new()).unwrap_or_else(|e| panic!("{e}"));
    let other = Store::memory("east", StoreOptions::new()).unwrap_or_else(|e| panic!("{e}"));
    for s in [&store, &other] {
        let setup = || -> converge_core::Result<()> {
            s.put_container("db", "c", "/pk", ConflictPolicy::default())?;
            s.put_container("db", "byid", "/id", ConflictPolicy::default())?;
            s.put_container("db", "m", "/pk", ConflictPolicy::Manual)?;
            s.upsert_item(
                "db",
                "m",
                json!({"id": "i1", "pk": "a", "by": s.region().as_str()}),
            )?;
            Ok(())
        };
        setup().unwrap_or_else(|e| panic!("{e}"));
    }
    store
        .upsert_item("db", "c", json!({"id": "i1", "pk": "a", "v": 0}))
        .unwrap_or_else(|e| panic!("{e}"));
    let batch = other
        .read_log(Cursor::START, 100)
        .unwrap_or_else(|e| panic!("{e}"));
    store.apply_batch(&batch).unwrap_or_else(|e| panic!("{e}"));
    let conflicts = store
        .conflicts("db", "m", None, 10)
        .unwrap_or_else(|e| panic!("{e}"))
        .items
        .into_iter()
        .map(|c| c.id)
        .collect();
    (Arc::new(store), conflicts)
}

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("no tokio runtime: {e}"));
}

/// Sends the requests `data` decodes to and checks every answer.
pub fn check(data: &[u8]) {
    run(data);
}

/// As [`check`], returning how many answers of each route, method and status came back
/// (`"item PUT 412"`), to show what a corpus reaches.
pub fn run(data: &[u8]) -> BTreeMap<String, usize> {
    let mut u = Unstructured::new(data);
    let with_key = u.arbitrary::<u8>().is_ok_and(|b| b < 64);
    let requests: Vec<Req> = crate::decode_many(&mut u, MAX_REQUESTS);
    let (store, conflicts) = region();
    let mut state = AppState::new(store.clone(), Arc::new(Metrics::default()));
    if with_key {
        state.key = Some(KEY.into());
    }
    let cursors = vec![
        Cursor::START.to_string(),
        store
            .read_log(Cursor::START, 1)
            .map(|b| b.next.to_string())
            .unwrap_or_default(),
    ];
    let mut reached = BTreeMap::new();
    RUNTIME.with(|rt| {
        rt.block_on(async {
            for (n, req) in requests.iter().enumerate() {
                let what = send(&state, req, &conflicts, &cursors, n).await;
                *reached.entry(what).or_insert(0) += 1;
            }
        })
    });
    reached
}

struct Answer {
    status: StatusCode,
    json: Option<Value>,
    content_type: String,
}

async fn call(state: &AppState, request: Request<Body>) -> Answer {
    let response = router(state.clone())
        .oneshot(request)
        .await
        .unwrap_or_else(|e| match e {});
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap_or_else(|e| panic!("the body does not read: {e}"));
    Answer {
        status,
        json: serde_json::from_slice(&bytes).ok(),
        content_type,
    }
}

/// The current etag of the item a request names, if it exists.
fn current_etag(state: &AppState, path: &str, pk: Option<&str>) -> Option<String> {
    let rest = path.strip_prefix("/dbs/db/colls/")?;
    let (coll, id) = rest.split_once("/docs/")?;
    let pk_value = match pk {
        Some(p) => serde_json::from_str(p).ok()?,
        None => Value::String(id.to_owned()),
    };
    let key = converge_core::PartitionKey::from_value(&pk_value).ok()?;
    state
        .store
        .read_item("db", coll, &key, id)
        .ok()
        .map(|i| i.etag)
}

async fn send(
    state: &AppState,
    req: &Req,
    conflicts: &[String],
    cursors: &[String],
    n: usize,
) -> String {
    let (path, route) = target(&req.route, conflicts, cursors);
    let path_id = match &req.route {
        Route::Item { id, .. } => Some(mostly(&IDS, 3, *id)),
        _ => None,
    };
    let method = {
        let has: Vec<&Method> = METHODS
            .iter()
            .filter(|m| allowed(route, m).is_some())
            .collect();
        if req.method < 208 && !has.is_empty() {
            has[usize::from(req.method) % has.len()].clone()
        } else {
            pick(&METHODS, req.method)
        }
    };
    let (body, content_type) = match &req.body {
        // What the route takes, when the input has no opinion.
        Body_::None if route == "item" || route == "items" => body_bytes(
            &Body_::Item {
                id: (route == "items").then_some(req.pk),
                pk: req.pk,
                v: n as u16,
            },
            path_id,
        ),
        Body_::None if route == "container" => body_bytes(
            &Body_::Definition {
                pk_path: 0,
                policy: req.pk,
            },
            None,
        ),
        other => body_bytes(other, path_id),
    };
    let pk = mostly(&PKS, 2, req.pk);
    let mut builder = Request::builder()
        .method(method.clone())
        .uri(&path)
        .header("content-type", content_type);
    if let Some(pk) = pk {
        builder = builder.header("x-partition-key", pk);
    }
    if let Some(upsert) = req.upsert {
        builder = builder.header("x-upsert", if upsert { "true" } else { "false" });
    }
    let etag = match req.if_match % 5 {
        1 => current_etag(state, &path, pk),
        2 => Some("*".into()),
        3 => Some("\"00000000\"".into()),
        4 => Some("not an etag".into()),
        _ => None,
    };
    if let Some(e) = &etag {
        builder = builder.header("if-match", e);
    }
    let authorized = state.key.is_none() || req.auth < 224;
    if state.key.is_some() {
        match req.auth {
            0..224 => builder = builder.header("authorization", format!("Bearer {KEY}")),
            224..240 => builder = builder.header("authorization", "Bearer wrong"),
            _ => {}
        }
    }
    // Some paths are not even a URI (`%` alone is fine, a space is not): nothing to send.
    let Ok(request) = builder.body(Body::from(body)) else {
        return format!("{route} unsendable");
    };
    let commits = state.store.stats().commits;
    let answer = call(state, request).await;
    let status = answer.status.as_u16();
    let context = format!("request {n}: {method} {path} ({req:?}) answered {status}");

    assert!(status < 500, "{context}: a server error");
    if !authorized {
        assert_eq!(status, 401, "{context}: without the key");
    } else if method == Method::HEAD {
        // axum answers HEAD as GET without the body; anything a GET may answer, or 405.
        assert!(
            allowed(route, &Method::GET).is_some_and(|a| a.contains(&status))
                || [405, 404, 400].contains(&status),
            "{context}"
        );
    } else {
        match allowed(route, &method) {
            Some(ok) => assert!(
                ok.contains(&status),
                "{context}: not a status the contract lists"
            ),
            None => assert!(
                status == 405 || status == 400 || status == 404,
                "{context}: a method the route lacks"
            ),
        }
    }
    if status >= 400 {
        if method != Method::HEAD {
            assert!(
                answer.content_type.starts_with("application/json"),
                "{context}: an error that is not JSON ({})",
                answer.content_type
            );
            let json = answer
                .json
                .as_ref()
                .unwrap_or_else(|| panic!("{context}: not JSON"));
            let code = json["code"].as_str().unwrap_or_default();
            assert!(
                code.chars().next().is_some_and(|c| c.is_ascii_uppercase())
                    && code.chars().all(|c| c.is_ascii_alphanumeric()),
                "{context}: code {:?} is not PascalCase",
                json["code"]
            );
            assert!(
                json["message"].as_str().is_some_and(|m| !m.is_empty()),
                "{context}: no message"
            );
        }
        assert_eq!(
            state.store.stats().commits,
            commits,
            "{context}: a refused request wrote"
        );
    } else if method != Method::HEAD {
        success_shape(state, route, &method, &path, &answer, &context).await;
    }
    format!("{route} {method} {status}")
}

/// A successful answer has the contract's shape; an item written reads back as written.
async fn success_shape(
    state: &AppState,
    route: &str,
    method: &Method,
    path: &str,
    answer: &Answer,
    context: &str,
) {
    let json = || {
        answer
            .json
            .as_ref()
            .unwrap_or_else(|| panic!("{context}: a success that is not JSON"))
    };
    match (route, method.as_str()) {
        ("items", "GET") => assert!(json()["items"].is_array(), "{context}"),
        ("conflicts", "GET") => assert!(json()["conflicts"].is_array(), "{context}"),
        ("changes", "GET") => {
            assert!(json()["changes"].is_array(), "{context}");
            assert!(json()["continuation"].is_string(), "{context}");
        }
        ("containers", "GET") => assert!(json()["containers"].is_array(), "{context}"),
        ("healthz", "GET") => assert_eq!(json()["status"], "ok", "{context}"),
        ("resolver", "PUT") => assert!(json()["hash"].is_string(), "{context}"),
        ("items", "POST") | ("item", "PUT") | ("item", "GET") => {
            let item = json();
            for p in ["id", "_ts", "_etag", "_lsn"] {
                assert!(item.get(p).is_some(), "{context}: the item has no {p}");
            }
            if method != Method::GET {
                // Read it back.
                let coll = path
                    .strip_prefix("/dbs/db/colls/")
                    .and_then(|r| r.split('/').next())
                    .unwrap_or_else(|| panic!("{context}: written outside db"));
                let id = item["id"].as_str().unwrap_or_default();
                let encoded: String = id
                    .bytes()
                    .map(|b| {
                        if b.is_ascii_alphanumeric() {
                            (b as char).to_string()
                        } else {
                            format!("%{b:02X}")
                        }
                    })
                    .collect();
                let mut get = Request::get(format!("/dbs/db/colls/{coll}/docs/{encoded}"));
                // The item's partition key value is at `/pk`, but for `byid`.
                if let Some(p) = item
                    .get("pk")
                    .map(Value::to_string)
                    .filter(|_| coll != "byid")
                {
                    get = get.header("x-partition-key", p);
                }
                if let Some(k) = &state.key {
                    get = get.header("authorization", format!("Bearer {k}"));
                }
                let request = get
                    .body(Body::empty())
                    .unwrap_or_else(|e| panic!("{context}: {e}"));
                let back = call(state, request).await;
                assert_eq!(
                    back.status,
                    StatusCode::OK,
                    "{context}: the write does not read back"
                );
                assert_eq!(
                    back.json.as_ref(),
                    Some(item),
                    "{context}: read back differently"
                );
            }
        }
        _ => {}
    }
}
