//! Queries: `POST …/docs` with `Content-Type: application/query+json`, answered by
//! `converge-query` over this region's visible items, and the query plan the JavaScript SDK
//! asks for beside every query. docs/queries.md has the language and the paging rules.

use super::{
    FeedFilter, blocking, check_intended, def_of, json_response, pk_header, set_header, shape,
    text_header, whole_key, with_session,
};
use crate::api::{AppState, read_body};
use crate::error::ApiError;
use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use converge_core::{ContainerDef, PartitionKey, Store};
use converge_query::{Item, Items, Limits, Parsed, Prepared, RunError, Visit, pick};
use serde_json::{Value, json};
use std::ops::ControlFlow;

/// The largest query body read (text and parameters).
const MAX_QUERY_BYTES: usize = 1 << 20;

/// The most results a page holds, in bytes of JSON (at least one result): Cosmos DB's limit.
const MAX_PAGE_BYTES: usize = 4 << 20;

/// How long a streaming query's page reads before it answers with what it has.
const STREAMING_PAGE_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// A query request's body: its text and parameters.
struct QueryBody {
    text: String,
    params: Vec<(String, Value)>,
}

impl QueryBody {
    async fn read(headers: &HeaderMap, body: Body) -> Result<QueryBody, ApiError> {
        let bytes = read_body(headers, body, MAX_QUERY_BYTES, "query").await?;
        let v: Value = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::bad_request(format!("the query body is not JSON: {e}")))?;
        let text = v
            .get("query")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                ApiError::bad_request(
                    "the query body needs \"query\": \"SELECT …\" (and optionally \"parameters\": [{\"name\": \"@x\", \"value\": …}])",
                )
            })?
            .to_owned();
        let mut params = Vec::new();
        match v.get("parameters") {
            None | Some(Value::Null) => {}
            Some(Value::Array(list)) => {
                for (i, p) in list.iter().enumerate() {
                    let name = p
                        .get("name")
                        .and_then(Value::as_str)
                        .filter(|n| n.starts_with('@') && n.len() > 1)
                        .ok_or_else(|| {
                            ApiError::bad_request(format!(
                                "parameter {i} needs a \"name\" that starts with @"
                            ))
                        })?;
                    // A parameter without a value is undefined: using it is the query's error.
                    if let Some(value) = p.get("value") {
                        params.push((name.to_owned(), value.clone()));
                    }
                }
            }
            Some(_) => {
                return Err(ApiError::bad_request(
                    "\"parameters\" must be an array of {\"name\", \"value\"}",
                ));
            }
        }
        Ok(QueryBody { text, params })
    }
}

/// What a query runs over.
#[derive(Debug)]
enum Scope {
    /// The whole container.
    All,
    /// One partition (the header names a whole key): only its items are read.
    Partition(PartitionKey),
    /// A prefix of a hierarchical key, or an effective-partition-key range: the container is
    /// read and the others skipped.
    Filtered(FeedFilter),
}

impl Scope {
    fn from_headers(headers: &HeaderMap, def: &ContainerDef) -> Result<Scope, ApiError> {
        if let Some(range) = text_header(headers, "x-ms-documentdb-partitionkeyrangeid")?
            && range != "0"
        {
            return Err(ApiError::bad_request(format!(
                "the container has one partition key range, \"0\", not {range:?}"
            )));
        }
        let filter = FeedFilter::from_headers(headers, def)?;
        let levels = def.partition_key_paths().len();
        Ok(match (&filter.pk, &filter.epk) {
            (None, None) => Scope::All,
            (Some(c), None) if c.len() == levels => {
                let components = pk_header(headers)?.unwrap_or_default();
                Scope::Partition(whole_key(def, &components)?)
            }
            _ => Scope::Filtered(filter),
        })
    }
}

/// The region's visible items of a container in a scope, shaped as reads return them.
struct StoreItems<'a> {
    store: &'a Store,
    def: &'a ContainerDef,
    scope: &'a Scope,
}

impl Items for StoreItems<'_> {
    type Error = converge_core::Error;

    fn scan(&mut self, from: Option<&[u8]>, visit: &mut Visit<'_>) -> Result<(), Self::Error> {
        let partition = match self.scope {
            Scope::Partition(pk) => Some(pk),
            _ => None,
        };
        let def = self.def;
        let scope = self.scope;
        self.store
            .scan_visible(&def.database, &def.name, partition, from, |key, item| {
                let mut item = StoreItem { def, item };
                if let Scope::Filtered(f) = scope {
                    let keys = item.partial(
                        &def.partition_key_paths()
                            .iter()
                            .filter_map(|p| top_level(p))
                            .collect::<Vec<_>>(),
                    );
                    if !def
                        .partition_key_of(&keys)
                        .is_ok_and(|pk| f.keeps_key(def, &pk))
                    {
                        return ControlFlow::Continue(());
                    }
                }
                visit(key, &mut item)
            })
    }
}

/// The top-level property a partition key path starts in (`/a/b` → `a`).
fn top_level(path: &str) -> Option<String> {
    path.trim_start_matches('/')
        .split('/')
        .next()
        .map(str::to_owned)
}

/// One visible item: its properties parsed only as a query asks for them.
struct StoreItem<'a> {
    def: &'a ContainerDef,
    item: converge_core::VisibleItem<'a>,
}

/// The properties converge adds to an item as reads show it.
const SYSTEM: [&str; 6] = ["_ts", "_etag", "_lsn", "_rid", "_self", "_attachments"];

impl Item for StoreItem<'_> {
    fn partial(&mut self, names: &[String]) -> Value {
        if names.iter().any(|n| n == "_rid" || n == "_self") {
            // These need the whole item (its partition key and id): rare in a query.
            return Parsed(&self.full()).partial(names);
        }
        let mut picked = pick(self.item.body, names).unwrap_or_default();
        for n in names.iter().filter(|n| SYSTEM.contains(&n.as_str())) {
            let v = match n.as_str() {
                "_ts" => Value::from(self.item.ts),
                "_lsn" => Value::from(self.item.lsn),
                "_etag" => Value::from(self.item.etag()),
                _ => Value::from("attachments/"),
            };
            picked.insert(n.clone(), v);
        }
        Value::Object(picked)
    }

    fn full(&mut self) -> Value {
        match self.item.to_item() {
            Ok(item) => shape::item(self.def, item.body),
            Err(_) => Value::Null,
        }
    }
}

/// The page size a query asks for: `x-ms-max-item-count`, 100 if absent, 1,000 for -1 and
/// at most.
fn page_size(headers: &HeaderMap) -> Result<usize, ApiError> {
    match text_header(headers, "x-ms-max-item-count")? {
        None => Ok(100),
        Some(t) => match t.trim().parse::<i64>() {
            Ok(-1) => Ok(1000),
            Ok(n) if n > 0 => Ok(n.min(1000) as usize),
            _ => Err(ApiError::bad_request(format!(
                "x-ms-max-item-count {t:?} must be a positive number of items, or -1"
            ))),
        },
    }
}

fn query_error(e: converge_query::QueryError) -> ApiError {
    ApiError::bad_request(format!("the query is not valid: {e}"))
}

/// Runs a query: one page of results.
pub(super) async fn run(
    state: AppState,
    db: String,
    coll: String,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let query = QueryBody::read(&headers, body).await?;
    let max = page_size(&headers)?;
    let continuation = text_header(&headers, "x-ms-continuation")?.filter(|c| !c.is_empty());
    let budget = state.query_budget;
    let (def, page) = blocking(&state, move |s| {
        let def = def_of(s, &db, &coll)?;
        check_intended(&headers, &def)?;
        let scope = Scope::from_headers(&headers, &def)?;
        let fingerprint = format!(
            "{}/{}/{}/{scope:?}",
            def.database, def.name, def.creation_id
        );
        let prepared =
            Prepared::new(&query.text, &query.params, &fingerprint).map_err(query_error)?;
        let mut items = StoreItems {
            store: s,
            def: &def,
            scope: &scope,
        };
        // A page that streams ends after a few seconds with what it has; one that must read
        // its whole scope fails rather than run past the connection's idle timeout (or hold
        // up a shutdown).
        let budget = if prepared.streams() {
            budget.min(STREAMING_PAGE_TIME)
        } else {
            budget
        };
        let limits = Limits {
            deadline: Some(std::time::Instant::now() + budget),
            max_bytes: MAX_PAGE_BYTES,
        };
        let page = prepared
            .page_within(&mut items, continuation.as_deref(), max, limits)
            .map_err(|e| match e {
                RunError::Query(e) => query_error(e),
                RunError::Source(e) => ApiError::from(e),
            })?;
        Ok((def, page))
    })
    .await?;
    let count = page.documents.len();
    let mut r = json_response(
        StatusCode::OK,
        json!({"_rid": shape::coll_rid(&def), "Documents": page.documents, "_count": count}),
    );
    if let Some(c) = &page.continuation {
        set_header(&mut r, "x-ms-continuation", c);
    }
    set_header(&mut r, "x-ms-item-count", &count.to_string());
    Ok(with_session(r, &state.store, &def))
}

/// The query plan (`x-ms-cosmos-is-query-plan-request`): the container has one partition key
/// range and converge evaluates whole queries, so the plan asks the SDK for no work of its
/// own — no rewritten query, no client-side ordering, aggregation, DISTINCT or TOP — and
/// names the one range. A query that does not parse is a 400 here too.
pub(super) async fn plan(
    state: AppState,
    db: String,
    coll: String,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let query = QueryBody::read(&headers, body).await?;
    blocking(&state, move |s| {
        def_of(s, &db, &coll)?;
        Prepared::new(&query.text, &query.params, "").map_err(query_error)?;
        Ok(())
    })
    .await?;
    Ok(json_response(
        StatusCode::OK,
        json!({
            "partitionedQueryExecutionInfoVersion": 2,
            "queryInfo": {
                "distinctType": "None",
                "top": null,
                "offset": null,
                "limit": null,
                "orderBy": [],
                "orderByExpressions": [],
                "groupByExpressions": [],
                "groupByAliases": [],
                "aggregates": [],
                "groupByAliasToAggregateType": {},
                "rewrittenQuery": "",
                "hasSelectValue": false,
                "hasNonStreamingOrderBy": false,
            },
            "queryRanges": [
                {"min": "", "max": "FF", "isMinInclusive": true, "isMaxInclusive": false}
            ],
        }),
    ))
}

/// A patch's `condition` (`FROM c WHERE …`) as a query over the one item it patches.
pub(super) fn condition(text: &str) -> Result<Prepared, ApiError> {
    if !text
        .trim_start()
        .get(..4)
        .is_some_and(|w| w.eq_ignore_ascii_case("from"))
    {
        return Err(ApiError::bad_request(format!(
            "a patch condition is a FROM clause with a WHERE, such as \"FROM c WHERE c.n > 1\", not {text:?}"
        )));
    }
    Prepared::new(&format!("SELECT VALUE 1 {text}"), &[], "patch")
        .map_err(|e| ApiError::bad_request(format!("the patch condition is not valid: {e}")))
}

/// Whether `item` (as reads show it) satisfies a patch condition.
pub(super) fn holds(condition: &Prepared, item: &Value) -> Result<bool, ApiError> {
    struct One<'a>(&'a Value);
    impl Items for One<'_> {
        type Error = std::convert::Infallible;
        fn scan(&mut self, _from: Option<&[u8]>, visit: &mut Visit<'_>) -> Result<(), Self::Error> {
            let _ = visit(b"item", &mut Parsed(self.0));
            Ok(())
        }
    }
    match condition.page(&mut One(item), None, 1) {
        Ok(page) => Ok(!page.documents.is_empty()),
        Err(RunError::Query(e)) => Err(query_error(e)),
        Err(RunError::Source(never)) => match never {},
    }
}
