//! The Cosmos DB dialect in-process (no sockets): what an SDK sends that its public API rarely
//! lets a test send, such as headers that disagree with the body.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use converge_core::{ConflictPolicy, Store};
use converge_server::api::{AppState, router};
use converge_server::metrics::Metrics;
use serde_json::{Value, json};
use std::sync::Arc;
use tower::ServiceExt;

/// A memory store with container `db/c` on `/pk`.
fn region() -> AppState {
    let store = Arc::new(Store::memory("west", Default::default()).expect("store"));
    store.create_database("db").expect("database");
    store
        .put_container("db", "c", "/pk", ConflictPolicy::default())
        .expect("container");
    AppState::new(store, Arc::new(Metrics::default()))
}

/// Sends a Cosmos-dialect request; answers the status, the headers and the JSON body (or Null).
async fn send(
    state: &AppState,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> (StatusCode, axum::http::HeaderMap, Value) {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("x-ms-version", "2020-07-15");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let body = body.map_or_else(Body::empty, |b| Body::from(b.to_string()));
    let resp = router(state.clone())
        .oneshot(req.body(body).expect("request"))
        .await
        .expect("answer");
    let (status, headers) = (resp.status(), resp.headers().clone());
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .expect("body");
    let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, headers, v)
}

async fn put(state: &AppState, id: &str, pk: Value) {
    let header = json!([pk]).to_string();
    let (status, _, body) = send(
        state,
        "POST",
        "/dbs/db/colls/c/docs/",
        &[("x-ms-documentdb-partitionkey", &header)],
        Some(json!({"id": id, "pk": pk})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

#[tokio::test]
async fn a_replace_whose_partition_key_header_is_not_the_bodys_is_refused_and_writes_nothing() {
    let state = region();
    put(&state, "a", json!("p")).await;
    let (status, _, body) = send(
        &state,
        "PUT",
        "/dbs/db/colls/c/docs/a/",
        &[("x-ms-documentdb-partitionkey", r#"["other"]"#)],
        Some(json!({"id": "a", "pk": "p", "n": 1})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("partition key")
    );
    let (_, _, read) = send(
        &state,
        "GET",
        "/dbs/db/colls/c/docs/a/",
        &[("x-ms-documentdb-partitionkey", r#"["p"]"#)],
        None,
    )
    .await;
    assert!(read.get("n").is_none(), "{read}");
}

#[tokio::test]
async fn a_request_meant_for_an_earlier_creation_is_400_with_substatus_1024() {
    let state = region();
    let (_, _, coll) = send(&state, "GET", "/dbs/db/colls/c/", &[], None).await;
    let old_rid = coll["_rid"].as_str().expect("rid").to_owned();
    state.store.drop_container("db", "c").expect("drop");
    state
        .store
        .put_container("db", "c", "/pk", ConflictPolicy::default())
        .expect("re-create");
    let (status, headers, body) = send(
        &state,
        "POST",
        "/dbs/db/colls/c/docs/",
        &[
            ("x-ms-documentdb-partitionkey", r#"["p"]"#),
            ("x-ms-cosmos-intended-collection-rid", &old_rid),
        ],
        Some(json!({"id": "a", "pk": "p"})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    // The SDKs refresh their container cache and retry on exactly this sub-status.
    assert_eq!(headers["x-ms-substatus"], "1024");
}

/// Ids in a change-feed answer (empty on 304).
async fn feed(state: &AppState, extra: &[(&str, &str)]) -> Vec<String> {
    let mut headers = vec![("a-im", "Incremental feed")];
    headers.extend_from_slice(extra);
    let (status, _, body) = send(state, "GET", "/dbs/db/colls/c/docs/", &headers, None).await;
    match status {
        StatusCode::NOT_MODIFIED => vec![],
        StatusCode::OK => body["Documents"]
            .as_array()
            .expect("documents")
            .iter()
            .map(|d| d["id"].as_str().unwrap_or_default().to_owned())
            .collect(),
        s => panic!("change feed answered {s}: {body}"),
    }
}

#[tokio::test]
async fn the_change_feed_filters_by_effective_partition_key_range_across_pages() {
    let state = region();
    // "alice"'s one change comes after a page's worth of others: a page the filter empties
    // must not end the feed.
    for i in 0..5 {
        put(&state, &format!("o{i}"), json!("other")).await;
    }
    put(&state, "a", json!("alice")).await;
    // The Python SDK's range for partition key "alice": its effective partition key, and the
    // next one (exclusive).
    let range = [
        ("x-ms-read-key-type", "EffectivePartitionKeyRange"),
        ("x-ms-start-epk", "35EAEE8D6020FFCABDE75797DFE27C34"),
        ("x-ms-end-epk", "35EAEE8D6020FFCABDE75797DFE27C35"),
        ("x-ms-max-item-count", "2"),
    ];
    assert_eq!(feed(&state, &range).await, ["a"]);
    let whole = [("x-ms-start-epk", ""), ("x-ms-end-epk", "FF")];
    assert_eq!(feed(&state, &whole).await.len(), 6);
    let (status, _, _) = send(
        &state,
        "GET",
        "/dbs/db/colls/c/docs/",
        &[("a-im", "Incremental feed"), ("x-ms-start-epk", "00")],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_change_feed_starts_at_if_modified_since() {
    let state = region();
    put(&state, "a", json!("p")).await;
    assert_eq!(
        feed(
            &state,
            &[("if-modified-since", "Thu, 01 Jan 1970 00:00:00 GMT")]
        )
        .await,
        ["a"]
    );
    assert!(
        feed(
            &state,
            &[("if-modified-since", "Fri, 01 Jan 2100 00:00:00 GMT")]
        )
        .await
        .is_empty()
    );
    let (status, _, _) = send(
        &state,
        "GET",
        "/dbs/db/colls/c/docs/",
        &[
            ("a-im", "Incremental feed"),
            ("if-modified-since", "yesterday"),
        ],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_all_versions_and_deletes_feed_is_refused() {
    let state = region();
    let (status, _, body) = send(
        &state,
        "GET",
        "/dbs/db/colls/c/docs/",
        &[("a-im", "Full-Fidelity Feed")],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test]
async fn database_and_container_lists_page_and_containers_have_a_time() {
    let state = region();
    for i in 0..4 {
        state
            .store
            .create_database(&format!("more{i}"))
            .expect("database");
    }
    let mut seen = Vec::new();
    let mut continuation: Option<String> = None;
    loop {
        let mut headers = vec![("x-ms-max-item-count", "2")];
        if let Some(c) = &continuation {
            headers.push(("x-ms-continuation", c));
        }
        let (status, h, body) = send(&state, "GET", "/dbs/", &headers, None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let page = body["Databases"].as_array().expect("databases").clone();
        assert!(page.len() <= 2);
        seen.extend(
            page.iter()
                .map(|d| d["id"].as_str().unwrap_or_default().to_owned()),
        );
        match h.get("x-ms-continuation") {
            Some(c) => continuation = Some(c.to_str().expect("text").to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, ["db", "more0", "more1", "more2", "more3"]);
    let (status, _, _) = send(
        &state,
        "GET",
        "/dbs/",
        &[("x-ms-continuation", "%FF")],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // A database deleted between pages does not make the next page skip one.
    let (_, h, first) = send(
        &state,
        "GET",
        "/dbs/",
        &[("x-ms-max-item-count", "2")],
        None,
    )
    .await;
    assert_eq!(first["Databases"][1]["id"], "more0");
    state.store.create_database("zz").expect("create");
    let c = h["x-ms-continuation"].to_str().expect("token").to_owned();
    state.store.delete_database("more0").expect("delete");
    let (_, _, next) = send(
        &state,
        "GET",
        "/dbs/",
        &[("x-ms-max-item-count", "2"), ("x-ms-continuation", &c)],
        None,
    )
    .await;
    assert_eq!(next["Databases"][0]["id"], "more1", "{next}");

    let (_, _, colls) = send(&state, "GET", "/dbs/db/colls/", &[], None).await;
    let ts = colls["DocumentCollections"][0]["_ts"]
        .as_u64()
        .expect("_ts");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    assert!(
        now.abs_diff(ts) < 60,
        "_ts {ts} is not the definition's time ({now})"
    );
}

/// `1.0` and `1`, `-0.0` and `0` are one partition key, as in Cosmos DB (numbers are doubles).
#[tokio::test]
async fn numbers_that_are_the_same_double_are_one_partition_key() {
    let state = region();
    let (status, _, body) = send(
        &state,
        "POST",
        "/dbs/db/colls/c/docs/",
        &[("x-ms-documentdb-partitionkey", "[1.0]")],
        Some(json!({"id": "dup", "pk": 1.0})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, _, _) = send(
        &state,
        "POST",
        "/dbs/db/colls/c/docs/",
        &[("x-ms-documentdb-partitionkey", "[1]")],
        Some(json!({"id": "dup", "pk": 1})),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "the same item");
    let (status, _, _) = send(
        &state,
        "GET",
        "/dbs/db/colls/c/docs/dup/",
        &[("x-ms-documentdb-partitionkey", "[1]")],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    put(&state, "z", json!(-0.0)).await;
    assert_eq!(
        feed(&state, &[("x-ms-documentdb-partitionkey", "[0]")]).await,
        ["z"]
    );
}

/// A change-feed token names its region: resumed in another region (whose feed is in another
/// order) it restarts from the beginning rather than skip what that region has.
#[tokio::test]
async fn a_change_feed_token_of_another_region_restarts_rather_than_skips() {
    let west = region();
    for i in 0..3 {
        put(&west, &format!("w{i}"), json!("p")).await;
    }
    let (_, headers, _) = send(
        &west,
        "GET",
        "/dbs/db/colls/c/docs/",
        &[("a-im", "Incremental feed")],
        None,
    )
    .await;
    let token = headers["etag"].to_str().expect("etag").to_owned();
    assert!(token.starts_with("\"west!"), "{token}");
    assert!(feed(&west, &[("if-none-match", &token)]).await.is_empty());

    let east = {
        let store = Arc::new(Store::memory("east", Default::default()).expect("store"));
        store.create_database("db").expect("database");
        store
            .put_container("db", "c", "/pk", ConflictPolicy::default())
            .expect("container");
        AppState::new(store, Arc::new(Metrics::default()))
    };
    put(&east, "e0", json!("p")).await;
    assert_eq!(feed(&east, &[("if-none-match", &token)]).await, ["e0"]);
}
