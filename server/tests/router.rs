//! The router in-process (no sockets): the replication log's long poll.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use converge_core::{Batch, ConflictPolicy, Cursor, Store};
use converge_server::api::{AppState, router};
use converge_server::metrics::Metrics;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower::ServiceExt;

/// A memory store with container `db/c` on `/pk`, and the router's state over it.
fn region_with_container() -> (Arc<Store>, AppState) {
    let store = Arc::new(Store::memory("west", Default::default()).expect("store"));
    store
        .put_container("db", "c", "/pk", ConflictPolicy::default())
        .expect("container");
    let state = AppState::new(store.clone(), Arc::new(Metrics::default()));
    (store, state)
}

async fn log(state: &AppState, cursor: Cursor, wait_ms: u64) -> Batch {
    let uri = format!("/_replication/log?cursor={cursor}&wait={wait_ms}");
    let resp = router(state.clone())
        .oneshot(Request::get(uri).body(Body::empty()).expect("request"))
        .await
        .expect("answer");
    assert_eq!(resp.status(), StatusCode::OK);
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .expect("body");
    Batch::decode(&bytes).expect("a batch")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caught_up_log_request_waits_for_the_next_write_and_no_longer() {
    let (_store, state) = region_with_container();
    let end = log(&state, Cursor::START, 0).await.next;

    // Nothing new: the answer comes after the wait, empty.
    let t = Instant::now();
    let empty = log(&state, end, 300).await;
    assert!(empty.versions.is_empty());
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );

    // A write during the wait: the answer comes with it, long before the wait is over.
    let writer = {
        let state = state.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let item = serde_json::json!({"id": "i", "pk": "p"});
            state.store.upsert_item("db", "c", item).expect("write");
            state.notify();
        })
    };
    let t = Instant::now();
    let batch = log(&state, end, 5_000).await;
    writer.await.expect("writer");
    assert_eq!(batch.versions.len(), 1);
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
}

/// A body without a Content-Length (as a chunked one comes) over the limit is refused with 413
/// while it is read, and nothing is written.
#[tokio::test]
async fn a_body_over_the_limit_without_a_length_is_refused_while_read() {
    let (store, state) = region_with_container();
    let filler = "x".repeat(3 << 20);
    let item = serde_json::json!({"id": "big", "pk": "a", "filler": filler}).to_string();
    let request = Request::post("/dbs/db/colls/c/docs")
        .header("content-type", "application/json")
        .body(Body::from(item))
        .expect("request");
    assert!(request.headers().get("content-length").is_none());
    let resp = router(state).oneshot(request).await.expect("answer");
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .expect("body");
    let error: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON");
    assert_eq!(error["code"], "RequestEntityTooLarge");
    let listed = store.list_items("db", "c", None, None, 10).expect("list");
    assert!(listed.items.is_empty());
}

/// A path whose `%` is not followed by two hex digits is a 400, on every route, and creates
/// nothing (the router would otherwise take `%ZZ` literally as a name).
#[tokio::test]
async fn a_bad_percent_escape_in_the_path_is_refused() {
    let (store, state) = region_with_container();
    for (method, uri) in [
        ("PUT", "/dbs/db/colls/%ZZ"),
        ("PUT", "/dbs/db/colls/%"),
        ("PUT", "/dbs/db/colls/a%2"),
        ("GET", "/dbs/%ZZ/colls/c"),
        ("GET", "/dbs/db/colls/c/docs/x%g1"),
    ] {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .body(Body::from(r#"{"partitionKey": {"paths": ["/pk"]}}"#))
            .expect("request");
        let resp = router(state.clone())
            .oneshot(request)
            .await
            .expect("answer");
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{method} {uri}");
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .expect("body");
        let error: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON");
        assert_eq!(error["code"], "BadRequest", "{method} {uri}");
        assert!(
            error["message"]
                .as_str()
                .is_some_and(|m| m.contains("percent")),
            "{error}"
        );
    }
    let names: Vec<String> = store
        .containers("db")
        .expect("containers")
        .into_iter()
        .map(|d| d.name)
        .collect();
    assert_eq!(names, ["c"]);
    // A good escape still decodes.
    let request = Request::get("/dbs/db/colls/%63")
        .body(Body::empty())
        .expect("request");
    let resp = router(state).oneshot(request).await.expect("answer");
    assert_eq!(resp.status(), StatusCode::OK);
}

/// Converge's own API addresses items of a hierarchical container with the array of the key's
/// values in `x-partition-key`.
#[tokio::test]
async fn the_plain_api_reads_writes_and_deletes_items_of_a_hierarchical_container() {
    let store = Arc::new(Store::memory("west", Default::default()).expect("store"));
    let state = AppState::new(store, Arc::new(Metrics::default()));
    let call = |method: &str, uri: &str, pk: Option<&str>, body: Option<serde_json::Value>| {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(pk) = pk {
            req = req.header("x-partition-key", pk);
        }
        let req = req
            .header("content-type", "application/json")
            .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
            .expect("request");
        let app = router(state.clone());
        async move {
            let resp = app.oneshot(req).await.expect("answer");
            let status = resp.status();
            let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
                .await
                .expect("body");
            (
                status,
                serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
            )
        }
    };
    let def = serde_json::json!({"partitionKey": "[\"/t\",\"/u\"]"});
    assert_eq!(
        call("PUT", "/dbs/d/colls/h", None, Some(def)).await.0,
        StatusCode::CREATED
    );
    let item = serde_json::json!({"id": "1", "t": "acme", "u": "bob"});
    assert_eq!(
        call("POST", "/dbs/d/colls/h/docs", None, Some(item))
            .await
            .0,
        StatusCode::CREATED
    );
    let (status, got) = call(
        "GET",
        "/dbs/d/colls/h/docs/1",
        Some(r#"["acme","bob"]"#),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{got}");
    assert_eq!(got["u"], "bob");
    let (status, list) = call(
        "GET",
        "/dbs/d/colls/h/docs",
        Some(r#"["acme","bob"]"#),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(
        call(
            "GET",
            "/dbs/d/colls/h/docs/1",
            Some(r#"["acme","ann"]"#),
            None
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );
    // A prefix is not a key of this container's items.
    let prefix = call("GET", "/dbs/d/colls/h/docs", Some(r#"["acme"]"#), None).await;
    assert_eq!(prefix.0, StatusCode::BAD_REQUEST, "{}", prefix.1);
    assert_eq!(
        call(
            "DELETE",
            "/dbs/d/colls/h/docs/1",
            Some(r#"["acme","bob"]"#),
            None
        )
        .await
        .0,
        StatusCode::NO_CONTENT
    );
}

/// Converge's own change feed: its token names the region; another region's token starts from
/// the beginning rather than skip what this region has.
#[tokio::test]
async fn a_plain_change_feed_token_of_another_region_starts_from_the_beginning() {
    let changes = |state: AppState, since: Option<String>| async move {
        let uri = match since {
            Some(t) => format!("/dbs/db/colls/c/changes?since={t}"),
            None => "/dbs/db/colls/c/changes".to_owned(),
        };
        let resp = router(state)
            .oneshot(Request::get(uri).body(Body::empty()).expect("request"))
            .await
            .expect("answer");
        assert_eq!(resp.status(), StatusCode::OK);
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .expect("body");
        serde_json::from_slice::<serde_json::Value>(&bytes).expect("json")
    };
    let (west_store, west) = region_with_container();
    for i in 0..3 {
        west_store
            .upsert_item(
                "db",
                "c",
                serde_json::json!({"id": format!("w{i}"), "pk": "p"}),
            )
            .expect("write");
    }
    let token = changes(west.clone(), None).await["continuation"]
        .as_str()
        .expect("token")
        .to_owned();
    assert!(token.starts_with("west!"), "{token}");
    let again = changes(west, Some(token.clone())).await;
    assert_eq!(again["changes"].as_array().map(Vec::len), Some(0));

    let east_store = Arc::new(Store::memory("east", Default::default()).expect("store"));
    east_store
        .put_container("db", "c", "/pk", ConflictPolicy::default())
        .expect("container");
    east_store
        .upsert_item("db", "c", serde_json::json!({"id": "e0", "pk": "p"}))
        .expect("write");
    let east = AppState::new(east_store, Arc::new(Metrics::default()));
    let got = changes(east, Some(token)).await;
    assert_eq!(got["changes"][0]["id"], "e0", "{got}");
}
