//! Running a query over a source of items, one page at a time.
//!
//! Three ways to run, chosen from the query's shape:
//! - **streaming** (no ORDER BY, DISTINCT, GROUP BY or aggregate): rows come in the
//!   source's order; the continuation is the key of the item to resume at.
//! - **ordered** (ORDER BY): each page scans every item and keeps only the best rows after
//!   the last one returned (memory: the page, plus an OFFSET not yet skipped); the
//!   continuation is that row's sort position.
//! - **grouped** (DISTINCT, GROUP BY or aggregates): one pass builds the groups, or the
//!   distinct values (memory: one entry each); each page is computed again and the
//!   continuation is a count of results already returned.

use crate::QueryError;
use crate::ast::{Expr, Query, Select, SourceKind};
use crate::eval::{AggValues, eval};
use crate::value::{V, canonical, total_cmp, type_rank};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::cmp::Ordering;
use std::collections::HashMap;
use std::ops::ControlFlow;

/// What [`Items::scan`] calls with each item: its key, and the item to read.
pub type Visit<'a> = dyn FnMut(&[u8], &mut dyn Item) -> ControlFlow<()> + 'a;

/// A source of items in a fixed key order.
pub trait Items {
    /// The source's error.
    type Error;
    /// Calls `visit` with each item (its key, and the item to read) from `from` (inclusive)
    /// on, in key order, until `visit` breaks or the items end.
    fn scan(&mut self, from: Option<&[u8]>, visit: &mut Visit<'_>) -> Result<(), Self::Error>;
}

/// One item of a source, read only as far as a query needs: a query that filters on `c.n`
/// asks for `n` alone, and for the whole item only when it returns it.
pub trait Item {
    /// The item as an object with only the named top-level properties (those it has).
    fn partial(&mut self, names: &[String]) -> Value;
    /// The whole item.
    fn full(&mut self) -> Value;
}

/// An item already parsed, as an [`Item`].
pub struct Parsed<'a>(pub &'a Value);

impl Item for Parsed<'_> {
    fn partial(&mut self, names: &[String]) -> Value {
        match self.0 {
            Value::Object(o) => Value::Object(
                o.iter()
                    .filter(|(k, _)| names.contains(k))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    fn full(&mut self) -> Value {
        self.0.clone()
    }
}

/// Why a page could not be computed.
#[derive(Debug)]
pub enum RunError<E> {
    /// The query or its continuation is at fault (a 400).
    Query(QueryError),
    /// The source failed.
    Source(E),
}

impl<E> From<QueryError> for RunError<E> {
    fn from(e: QueryError) -> Self {
        RunError::Query(e)
    }
}

/// What one page may cost.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// When the page's work must end. A query that streams (no ORDER BY, DISTINCT, GROUP BY
    /// or aggregate) then returns the results it has, with a continuation; one that must read
    /// its whole scope for every page fails with a [`QueryError`].
    pub deadline: Option<std::time::Instant>,
    /// The most bytes of results a page holds (about: JSON text), at least one result.
    pub max_bytes: usize,
}

impl Default for Limits {
    /// No deadline, 4 MiB of results a page (Cosmos DB's page limit).
    fn default() -> Self {
        Limits {
            deadline: None,
            max_bytes: 4 << 20,
        }
    }
}

/// About how many bytes `v` takes as JSON text (a page's size is counted with it).
fn json_size(v: &Value) -> usize {
    match v {
        Value::Null | Value::Bool(_) => 5,
        Value::Number(_) => 12,
        Value::String(s) => s.len() + 2,
        Value::Array(a) => 2 + a.iter().map(|x| json_size(x) + 1).sum::<usize>(),
        Value::Object(o) => {
            2 + o
                .iter()
                .map(|(k, x)| k.len() + 4 + json_size(x))
                .sum::<usize>()
        }
    }
}

/// One page of results.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// The results, in order.
    pub documents: Vec<Value>,
    /// Where the next page starts; `None` when this is the last.
    pub continuation: Option<String>,
    /// Items read to compute this page.
    pub scanned: u64,
}

/// A parsed, checked query ready to run page by page.
#[derive(Debug)]
pub struct Prepared {
    query: Query,
    needs: Needs,
    fingerprint: u64,
    limit: Option<u64>,
    offset: u64,
}

/// The continuation token's content (the token is its JSON, in hex).
#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Token {
    /// The query (and scope) the token belongs to.
    q: u64,
    /// Results returned before this page (OFFSET skips included).
    done: u64,
    #[serde(flatten)]
    at: Resume,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
#[serde(tag = "m")]
enum Resume {
    /// Streaming: resume at this item key (hex), skipping its first `row` rows.
    S { key: String, row: u64 },
    /// Ordered: resume after this sort position (each key as [`lossless`] writes it).
    O {
        /// `None` when they are too large for a token: the row is read again to learn them.
        keys: Option<Vec<Value>>,
        key: String,
        row: u64,
        /// With `keys` left out: a hash of them, to tell whether the row read again still has
        /// the keys it was returned with.
        #[serde(default)]
        sum: u64,
    },
    /// Grouped: the results are recomputed; `done` of them were returned.
    G,
}

impl Prepared {
    /// Parses and checks `text`. `params` are `(name with @, value)`; `scope` names what the
    /// query runs over (a container and partition), so that a continuation of one query
    /// is refused by another.
    pub fn new(
        text: &str,
        params: &[(String, Value)],
        scope: &str,
    ) -> Result<Prepared, QueryError> {
        let map: HashMap<String, Value> = params.iter().cloned().collect();
        let query = crate::parser::parse(text, &map)?;
        let count = |e: &Option<Expr>| {
            e.as_ref().and_then(|e| match e {
                Expr::Const(v) => v.as_u64(),
                _ => None,
            })
        };
        let (offset, limit) = match &query.offset_limit {
            Some((o, l)) => (
                count(&Some(o.clone())).unwrap_or(0),
                count(&Some(l.clone())),
            ),
            None => (0, None),
        };
        let top = count(&query.top);
        let limit = match (limit, top) {
            (Some(l), Some(t)) => Some(l.min(t)),
            (l, t) => l.or(t),
        };
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(scope.as_bytes());
        h.update(&[0]);
        h.update(text.as_bytes());
        for (n, v) in params {
            h.update(&[0]);
            h.update(n.as_bytes());
            h.update(v.to_string().as_bytes());
        }
        let needs = Needs::of(&query);
        Ok(Prepared {
            query,
            needs,
            fingerprint: h.digest(),
            limit,
            offset,
        })
    }

    /// The query's syntax tree.
    pub fn query(&self) -> &Query {
        &self.query
    }

    /// Whether the query streams: its pages read items from where the last one stopped (no
    /// ORDER BY, DISTINCT, GROUP BY or aggregate). Other queries read their whole scope for
    /// every page.
    pub fn streams(&self) -> bool {
        !self.grouped() && self.query.order_by.is_empty()
    }

    fn grouped(&self) -> bool {
        let q = &self.query;
        q.distinct
            || !q.group_by.is_empty()
            || match &q.select {
                Select::Star => false,
                Select::Value(e) => e.has_aggregate(),
                Select::List(l) => l.iter().any(|p| p.expr.has_aggregate()),
            }
    }

    /// Computes the page after `continuation` (the first without one), of at most
    /// `max_items` results, within the default [`Limits`].
    pub fn page<S: Items>(
        &self,
        source: &mut S,
        continuation: Option<&str>,
        max_items: usize,
    ) -> Result<Page, RunError<S::Error>> {
        self.page_within(source, continuation, max_items, Limits::default())
    }

    /// [`page`](Self::page) within `limits`.
    pub fn page_within<S: Items>(
        &self,
        source: &mut S,
        continuation: Option<&str>,
        max_items: usize,
        limits: Limits,
    ) -> Result<Page, RunError<S::Error>> {
        // At most u32::MAX a page (a page may be shorter than asked), so that no count
        // derived from the size overflows.
        let max = max_items.clamp(1, u32::MAX as usize) as u64;
        let token = continuation.map(|t| self.decode(t)).transpose()?;
        let done = token.as_ref().map_or(0, |t| t.done);
        // Results this page may still return under TOP / LIMIT (counted after OFFSET).
        let allowed = self.limit.map_or(u64::MAX, |l| {
            (l + self.offset).saturating_sub(done.max(self.offset))
        });
        let want = max.min(allowed);
        if want == 0 {
            return Ok(Page {
                documents: Vec::new(),
                continuation: None,
                scanned: 0,
            });
        }
        let limits = &limits;
        if self.grouped() {
            self.page_grouped(source, done, want, limits)
        } else if !self.query.order_by.is_empty() {
            self.page_ordered(source, token.map(|t| t.at), done, want, limits)
        } else {
            self.page_streaming(source, token.map(|t| t.at), done, want, limits)
        }
    }

    fn decode(&self, text: &str) -> Result<Token, QueryError> {
        let bad = || QueryError::at(0, "the continuation token is not one this query returned");
        let bytes = from_hex(text).ok_or_else(bad)?;
        let token: Token = serde_json::from_slice(&bytes).map_err(|_| bad())?;
        if token.q != self.fingerprint {
            return Err(QueryError::at(
                0,
                "the continuation token belongs to another query",
            ));
        }
        let fits = match (&token.at, self.grouped(), self.query.order_by.is_empty()) {
            (Resume::G, true, _) => true,
            (Resume::O { keys, .. }, false, false) => keys
                .as_ref()
                .is_none_or(|k| k.len() == self.query.order_by.len()),
            (Resume::S { .. }, false, true) => true,
            _ => false,
        };
        if !fits {
            return Err(bad());
        }
        Ok(token)
    }

    fn encode(&self, done: u64, at: Resume) -> String {
        let t = Token {
            q: self.fingerprint,
            done,
            at,
        };
        to_hex(&serde_json::to_vec(&t).unwrap_or_default())
    }

    /// Calls `f` with each row (one value per source) that passes WHERE, of every item from
    /// `from` on, and a function that gives the row's projection (reading the rest of the item
    /// only when the projection needs more than the scan read).
    ///
    /// Past the deadline it stops and answers the row it stopped before (its item's key and
    /// index), `None` when it went through.
    /// Rows of the item at `from` before `from_row` were returned by an earlier page and
    /// are passed over.
    #[allow(clippy::too_many_arguments)]
    fn rows<S: Items>(
        &self,
        source: &mut S,
        from: Option<&[u8]>,
        from_row: u64,
        scanned: &mut u64,
        limits: &Limits,
        f: &mut RowVisitor<'_>,
    ) -> Result<Option<RowAt>, RunError<S::Error>> {
        let q = &self.query;
        let keeps = |row: &[V<'_>]| {
            q.filter
                .as_ref()
                .is_none_or(|w| eval(w, row, &[]).as_bool() == Some(true))
        };
        if q.from.is_none() {
            // No FROM: one row with no sources, which WHERE filters like any other.
            if keeps(&[]) {
                let _ = f(&[], 0, &[], &mut || self.project(&[], &[]));
            }
            return Ok(None);
        }
        let mut work = 0u32;
        let mut stopped = None;
        let mut walked_too_long = None;
        // Only past the row it resumed at does a page stop at the deadline: each page gets on.
        let mut late = |key: &[u8], idx: u64, stopped: &mut Option<(Vec<u8>, u64)>| {
            work = work.wrapping_add(1);
            let late = work.is_multiple_of(512)
                && limits
                    .deadline
                    .is_some_and(|d| std::time::Instant::now() >= d);
            if late {
                *stopped = Some((key.to_vec(), idx));
            }
            late
        };
        source
            .scan(from, &mut |key, item| {
                if from != Some(key) && late(key, 0, &mut stopped) {
                    return ControlFlow::Break(());
                }
                *scanned += 1;
                let doc = match &self.needs.scan {
                    Some(names) => item.partial(names),
                    None => item.full(),
                };
                let mut more: Option<Value> = None;
                let resumed = from == Some(key);
                self.each_row(&doc, &mut |idx, row| {
                    if resumed && idx < from_row {
                        // Walking back to where the last page stopped inside one item is
                        // work too: past the deadline, the query fails rather than stall.
                        if late(key, idx, &mut walked_too_long) {
                            return ControlFlow::Break(());
                        }
                        return ControlFlow::Continue(());
                    }
                    if (idx > from_row || !resumed && idx > 0) && late(key, idx, &mut stopped) {
                        return ControlFlow::Break(());
                    }
                    if !keeps(row) {
                        return ControlFlow::Continue(());
                    }
                    let mut project = || match &self.needs.project {
                        Project::FromScan => self.project(row, &[]),
                        wider => {
                            let whole = more.get_or_insert_with(|| match wider {
                                Project::Partial(names) => item.partial(names),
                                _ => item.full(),
                            });
                            let mut out = None;
                            let _ = self.each_row(whole, &mut |i, r| {
                                if i == idx {
                                    out = self.project(r, &[]);
                                    return ControlFlow::Break(());
                                }
                                ControlFlow::Continue(())
                            });
                            out
                        }
                    };
                    f(key, idx, row, &mut project)
                })
            })
            .map_err(RunError::Source)?;
        if walked_too_long.is_some() {
            return Err(RunError::Query(QueryError::at(
                0,
                format!(
                    "the continuation resumes {from_row} rows into one item, more than a page can walk back through in time: the query's JOINs give that item too many rows; narrow them with a WHERE on each source"
                ),
            )));
        }
        Ok(stopped)
    }

    /// The sort keys of the row a continuation names (when they were too large to carry): the
    /// item is read again; an error if it is gone.
    fn keys_of_row<S: Items>(
        &self,
        source: &mut S,
        key: &[u8],
        row: u64,
    ) -> Result<Vec<Option<Value>>, RunError<S::Error>> {
        let mut found = None;
        source
            .scan(Some(key), &mut |k, item| {
                if k == key {
                    let doc = match &self.needs.scan {
                        Some(names) => item.partial(names),
                        None => item.full(),
                    };
                    let _ = self.each_row(&doc, &mut |idx, r| {
                        if idx == row {
                            found = Some(
                                self.query
                                    .order_by
                                    .iter()
                                    .map(|o| eval(&o.expr, r, &[]).into_value())
                                    .collect(),
                            );
                            return ControlFlow::Break(());
                        }
                        ControlFlow::Continue(())
                    });
                }
                ControlFlow::Break(())
            })
            .map_err(RunError::Source)?;
        found.ok_or_else(|| {
            RunError::Query(QueryError::at(
                0,
                "the row this continuation resumes after is gone (its sort key was too large for the token, so it is read again); run the query again",
            ))
        })
    }

    /// The error of a page that must read its whole scope and ran out of time.
    fn too_slow(&self) -> QueryError {
        QueryError::at(
            0,
            "the query ran out of time for one page: ORDER BY, DISTINCT, GROUP BY and aggregates read every item in scope (and every JOIN row) for each page; narrow it with a partition key or a WHERE, or page without ORDER BY",
        )
    }

    /// Calls `f` with every row of one item (before WHERE) and its index among them.
    fn each_row<'d>(
        &'d self,
        doc: &'d Value,
        f: &mut dyn FnMut(u64, &[V<'d>]) -> ControlFlow<()>,
    ) -> ControlFlow<()> {
        let Some(from_clause) = &self.query.from else {
            return ControlFlow::Continue(());
        };
        let mut n = 0u64;
        let mut row: Vec<V<'d>> = Vec::with_capacity(1 + from_clause.joins.len());
        let base = [V::Ref(doc)];
        let mut visit = |row: &[V<'d>]| {
            let idx = n;
            n += 1;
            f(idx, row)
        };
        match &from_clause.root.kind {
            SourceKind::Items(e) => {
                let v = eval(e, &base, &[]);
                if matches!(v, V::Undef) {
                    return ControlFlow::Continue(());
                }
                row.push(v);
                joins(&from_clause.joins, &mut row, &mut visit)
            }
            SourceKind::Each(e) => {
                if let V::Ref(Value::Array(a)) = eval(e, &base, &[]) {
                    for x in a {
                        row.push(V::Ref(x));
                        let flow = joins(&from_clause.joins, &mut row, &mut visit);
                        row.pop();
                        flow?;
                    }
                }
                ControlFlow::Continue(())
            }
        }
    }

    /// The projection of one row (`None`: undefined, no result).
    fn project(&self, row: &[V<'_>], aggs: &AggValues<'_>) -> Option<Value> {
        match &self.query.select {
            Select::Star => row.first().and_then(|v| v.get().cloned()),
            Select::Value(e) => eval(e, row, aggs).into_value(),
            Select::List(list) => {
                let mut m = Map::new();
                for p in list {
                    if let Some(v) = eval(&p.expr, row, aggs).into_value() {
                        m.insert(p.name.clone(), v);
                    }
                }
                Some(Value::Object(m))
            }
        }
    }

    fn page_streaming<S: Items>(
        &self,
        source: &mut S,
        at: Option<Resume>,
        done: u64,
        want: u64,
        limits: &Limits,
    ) -> Result<Page, RunError<S::Error>> {
        let (from, skip_rows) = match at {
            Some(Resume::S { key, row }) => (Some(from_hex(&key).ok_or_else(bad_token)?), row),
            _ => (None, 0),
        };
        let mut docs = Vec::new();
        let mut done = done;
        let mut next: Option<(Vec<u8>, u64)> = None;
        let mut scanned = 0;
        let mut bytes = 0usize;
        let stopped = self.rows(
            source,
            from.as_deref(),
            skip_rows,
            &mut scanned,
            limits,
            &mut |key, idx, _, project| {
                if docs.len() as u64 == want || bytes >= limits.max_bytes {
                    next = Some((key.to_vec(), idx));
                    return ControlFlow::Break(());
                }
                let Some(doc) = project() else {
                    return ControlFlow::Continue(());
                };
                // Saturating: `done` comes from a token a client may have edited.
                done = done.saturating_add(1);
                if done > self.offset {
                    bytes += json_size(&doc);
                    docs.push(doc);
                }
                ControlFlow::Continue(())
            },
        )?;
        // Out of time: the page ends where the scan stopped.
        let next = next.or(stopped);
        let finished = self.limit.is_some_and(|l| done >= l + self.offset);
        let continuation = match next {
            Some((key, row)) if !finished => Some(self.encode(
                done,
                Resume::S {
                    key: to_hex(&key),
                    row,
                },
            )),
            _ => None,
        };
        Ok(Page {
            documents: docs,
            continuation,
            scanned,
        })
    }

    fn page_ordered<S: Items>(
        &self,
        source: &mut S,
        at: Option<Resume>,
        done: u64,
        want: u64,
        limits: &Limits,
    ) -> Result<Page, RunError<S::Error>> {
        let after = match at {
            Some(Resume::O {
                keys,
                key,
                row,
                sum,
            }) => {
                let key = from_hex(&key).ok_or_else(bad_token)?;
                let keys = match keys {
                    Some(keys) => keys
                        .iter()
                        .map(restore)
                        .collect::<Option<Vec<_>>>()
                        .ok_or_else(bad_token)?,
                    None => {
                        let keys = self.keys_of_row(source, &key, row)?;
                        if keys_sum(&keys) != sum {
                            return Err(RunError::Query(QueryError::at(
                                0,
                                "the row this continuation resumes after has changed its sort key (too large for the token, it is read again); run the query again",
                            )));
                        }
                        keys
                    }
                };
                Some(Position { keys, key, row })
            }
            _ => None,
        };
        let desc: Vec<bool> = self.query.order_by.iter().map(|o| o.descending).collect();
        let skip = self.offset.saturating_sub(done);
        let mut need = (skip + want) as usize;
        let mut best: Vec<(Position, Value)> = Vec::new();
        let mut held = 0usize;
        let mut scanned = 0;
        let mut more = false;
        let mut threshold: Option<Position> = None;
        // How many of the sorted rows a page of `max_bytes` keeps (the skipped ones, then at
        // least one).
        let fit = |best: &[(Position, Value)]| {
            let mut bytes = 0;
            let mut n = 0;
            for (i, (_, doc)) in best.iter().enumerate() {
                if i as u64 >= skip {
                    if bytes >= limits.max_bytes {
                        break;
                    }
                    bytes += json_size(doc);
                }
                n += 1;
            }
            n
        };
        let stopped = self.rows(
            source,
            None,
            0,
            &mut scanned,
            limits,
            &mut |key, idx, row, project| {
                let keys: Vec<Option<Value>> = self
                    .query
                    .order_by
                    .iter()
                    .map(|o| eval(&o.expr, row, &[]).into_value())
                    .collect();
                let pos = Position {
                    keys,
                    key: key.to_vec(),
                    row: idx,
                };
                if let Some(a) = &after
                    && pos.cmp(a, &desc).is_le()
                {
                    return ControlFlow::Continue(());
                }
                // Once `need` rows are held, a row not better than the worst of them cannot be
                // on this page.
                if let Some(t) = &threshold
                    && pos.cmp(t, &desc).is_ge()
                {
                    more = true;
                    return ControlFlow::Continue(());
                }
                let Some(doc) = project() else {
                    return ControlFlow::Continue(());
                };
                held += json_size(&doc);
                best.push((pos, doc));
                if best.len() >= 2 * need.max(16) || held > 2 * limits.max_bytes {
                    best.sort_by(|a, b| a.0.cmp(&b.0, &desc));
                    // Rows past a full page (in count or in bytes) wait for a later page.
                    need = need.min(fit(&best));
                    best.truncate(need);
                    held = best.iter().map(|(_, d)| json_size(d)).sum();
                    threshold = best.last().map(|(p, _)| p.clone());
                    more = true;
                }
                ControlFlow::Continue(())
            },
        )?;
        if stopped.is_some() {
            return Err(RunError::Query(self.too_slow()));
        }
        best.sort_by(|a, b| a.0.cmp(&b.0, &desc));
        let keep = need.min(fit(&best));
        if best.len() > keep {
            best.truncate(keep);
            more = true;
        }
        let mut done = done;
        let mut last = None;
        let mut docs = Vec::new();
        for (pos, doc) in best {
            done = done.saturating_add(1);
            if done > self.offset {
                docs.push(doc);
            }
            last = Some(pos);
        }
        let finished = !more || self.limit.is_some_and(|l| done >= l + self.offset);
        let continuation = match last {
            Some(p) if !finished => Some(self.encode(
                done,
                Resume::O {
                    sum: keys_sum(&p.keys),
                    keys: {
                        let keys: Vec<Value> =
                            p.keys.iter().map(|k| lossless(k.as_ref())).collect();
                        // Past a kilobyte (or a nesting serde_json may not read back), the token
                        // names the row and the next page reads its keys again.
                        let small = serde_json::to_vec(&keys)
                            .is_ok_and(|t| t.len() <= MAX_TOKEN_KEYS)
                            && keys.iter().all(|k| depth(k) <= 32);
                        small.then_some(keys)
                    },
                    key: to_hex(&p.key),
                    row: p.row,
                },
            )),
            _ => None,
        };
        Ok(Page {
            documents: docs,
            continuation,
            scanned,
        })
    }

    fn page_grouped<S: Items>(
        &self,
        source: &mut S,
        done: u64,
        want: u64,
        limits: &Limits,
    ) -> Result<Page, RunError<S::Error>> {
        let q = &self.query;
        let mut scanned = 0;
        let mut results: Vec<(Vec<Option<Value>>, Value)> = Vec::new();
        let aggregated = !q.group_by.is_empty()
            || match &q.select {
                Select::Value(e) => e.has_aggregate(),
                Select::List(l) => l.iter().any(|p| p.expr.has_aggregate()),
                Select::Star => false,
            };
        if aggregated {
            let nodes = aggregate_nodes(q);
            let mut index: HashMap<String, usize> = HashMap::new();
            let mut groups: Vec<Group> = Vec::new();
            if q.group_by.is_empty() {
                groups.push(Group::new(Vec::new(), &nodes));
                index.insert(String::new(), 0);
            }
            let stopped = self.rows(
                source,
                None,
                0,
                &mut scanned,
                limits,
                &mut |_, _, row, _| {
                    let mut key = String::new();
                    for g in &q.group_by {
                        canonical(eval(g, row, &[]).get(), &mut key);
                        key.push('|');
                    }
                    let at = *index.entry(key).or_insert_with(|| {
                        groups.push(Group::new(
                            row.iter().map(|v| v.get().cloned()).collect(),
                            &nodes,
                        ));
                        groups.len() - 1
                    });
                    let group = &mut groups[at];
                    for (acc, node) in group.accs.iter_mut().zip(&nodes) {
                        if let Expr::Aggregate(_, arg) = node {
                            acc.add(eval(arg, row, &[]).get());
                        }
                    }
                    ControlFlow::Continue(())
                },
            )?;
            if stopped.is_some() {
                return Err(RunError::Query(self.too_slow()));
            }
            for g in groups {
                let values: Vec<(&Expr, Option<Value>)> = nodes
                    .iter()
                    .copied()
                    .zip(g.accs.into_iter().map(Acc::finish))
                    .collect();
                let row: Vec<V<'_>> = g
                    .row
                    .iter()
                    .map(|v| v.as_ref().map_or(V::Undef, V::Ref))
                    .collect();
                if let Some(doc) = self.project(&row, &values) {
                    let keys = q
                        .order_by
                        .iter()
                        .map(|o| eval(&o.expr, &row, &values).into_value())
                        .collect();
                    results.push((keys, doc));
                }
            }
        } else {
            let mut seen: HashMap<String, ()> = HashMap::new();
            let stopped = self.rows(
                source,
                None,
                0,
                &mut scanned,
                limits,
                &mut |_, _, row, project| {
                    if let Some(doc) = project() {
                        let keys = q
                            .order_by
                            .iter()
                            .map(|o| eval(&o.expr, row, &[]).into_value())
                            .collect();
                        results.push((keys, doc));
                        if q.order_by.is_empty() {
                            // Without ORDER BY, duplicates go as they come.
                            let mut k = String::new();
                            canonical(results.last().map(|r| &r.1), &mut k);
                            if seen.insert(k, ()).is_some() {
                                results.pop();
                            }
                        }
                    }
                    ControlFlow::Continue(())
                },
            )?;
            if stopped.is_some() {
                return Err(RunError::Query(self.too_slow()));
            }
        }
        if !q.order_by.is_empty() {
            let desc: Vec<bool> = q.order_by.iter().map(|o| o.descending).collect();
            // A stable sort: ties keep the scan order.
            results.sort_by(|a, b| cmp_keys(&a.0, &b.0, &desc));
        }
        if q.distinct && (!q.order_by.is_empty() || aggregated) {
            let mut seen: HashMap<String, ()> = HashMap::new();
            results.retain(|(_, doc)| {
                let mut k = String::new();
                canonical(Some(doc), &mut k);
                seen.insert(k, ()).is_none()
            });
        }
        let start = done.max(self.offset) as usize;
        let mut end = start
            .saturating_add(want as usize)
            .min(results.len().max(start));
        let mut bytes = 0;
        let mut docs: Vec<Value> = Vec::new();
        for (i, (_, d)) in results.iter().enumerate().take(end).skip(start) {
            if bytes >= limits.max_bytes {
                end = i;
                break;
            }
            bytes += json_size(d);
            docs.push(d.clone());
        }
        let total = self.limit.map_or(results.len() as u64, |l| {
            (l + self.offset).min(results.len() as u64)
        });
        let continuation = ((end as u64) < total).then(|| self.encode(end as u64, Resume::G));
        Ok(Page {
            documents: docs,
            continuation,
            scanned,
        })
    }
}

/// A row's place: its item's key and its index among the item's rows.
type RowAt = (Vec<u8>, u64);

/// Receives each row that passes WHERE: its item's key, its index among the item's rows, its
/// values (one per source), and a function that gives its projection.
type RowVisitor<'f> =
    dyn FnMut(&[u8], u64, &[V<'_>], &mut dyn FnMut() -> Option<Value>) -> ControlFlow<()> + 'f;

/// What of each item a query reads.
#[derive(Debug)]
struct Needs {
    /// The properties the scan reads of each item (`None`: the whole item) for FROM, WHERE,
    /// ORDER BY and JOIN (and, for grouped queries, everything).
    scan: Option<Vec<String>>,
    /// What the projection of a row that passes needs.
    project: Project,
}

#[derive(Debug)]
enum Project {
    /// What the scan read.
    FromScan,
    /// These properties.
    Partial(Vec<String>),
    /// The whole item.
    Full,
}

impl Needs {
    fn of(q: &Query) -> Needs {
        let Some(from) = &q.from else {
            return Needs {
                scan: Some(Vec::new()),
                project: Project::FromScan,
            };
        };
        // Whether source 0 is the item itself (`FROM c`), or a value inside it.
        let root_is_item = matches!(&from.root.kind, SourceKind::Items(Expr::Alias { .. }));
        let mut scan = std::collections::BTreeSet::new();
        let mut whole = false;
        if !root_is_item {
            match &from.root.kind {
                SourceKind::Items(e) | SourceKind::Each(e) => {
                    whole |= !first_property(e, &mut scan)
                }
            }
        }
        let read = |e: &Expr, names: &mut std::collections::BTreeSet<String>| {
            !root_is_item || item_properties(e, names)
        };
        let select: Vec<&Expr> = match &q.select {
            Select::Star => Vec::new(),
            Select::Value(e) => vec![e],
            Select::List(l) => l.iter().map(|p| &p.expr).collect(),
        };
        let star_needs_item = matches!(q.select, Select::Star) && root_is_item;
        let grouped =
            q.distinct || !q.group_by.is_empty() || select.iter().any(|e| e.has_aggregate());
        let mut scan_exprs: Vec<&Expr> = Vec::new();
        scan_exprs.extend(q.filter.iter());
        scan_exprs.extend(q.order_by.iter().map(|o| &o.expr));
        scan_exprs.extend(q.group_by.iter());
        for j in &from.joins {
            match &j.kind {
                SourceKind::Items(e) | SourceKind::Each(e) => scan_exprs.push(e),
            }
        }
        if grouped {
            scan_exprs.extend(select.iter().copied());
            whole |= star_needs_item;
        }
        for e in scan_exprs {
            whole |= !read(e, &mut scan);
        }
        // With JOIN or IN an item has several rows: its projection is read with the scan, as
        // finding row n again in a wider read would cost a pass over the rows per row.
        let several_rows = !from.joins.is_empty() || matches!(from.root.kind, SourceKind::Each(_));
        if several_rows && !grouped {
            for e in &select {
                whole |= !read(e, &mut scan);
            }
            whole |= star_needs_item;
        }
        let scan_names = (!whole).then(|| scan.iter().cloned().collect::<Vec<_>>());
        let project = if grouped || several_rows {
            Project::FromScan
        } else {
            let mut wider = scan.clone();
            let mut needs_item = star_needs_item || whole;
            for e in &select {
                needs_item |= !read(e, &mut wider);
            }
            if needs_item {
                Project::Full
            } else if wider == scan {
                Project::FromScan
            } else {
                Project::Partial(wider.into_iter().collect())
            }
        };
        let project = match (&scan_names, project) {
            // A scan of the whole item has read all a projection can want.
            (None, _) => Project::FromScan,
            (_, p) => p,
        };
        Needs {
            scan: scan_names,
            project,
        }
    }
}

/// Adds the item properties `e` reads (source 0 being the item) to `names`; false when it
/// uses the item as a whole (`c` alone, or `c[expr]` with a computed name).
fn item_properties(e: &Expr, names: &mut std::collections::BTreeSet<String>) -> bool {
    let is_item = |x: &Expr| matches!(x, Expr::Alias { slot: 0, .. });
    match e {
        Expr::Prop(base, name) if is_item(base) => {
            names.insert(name.clone());
            true
        }
        Expr::Index(base, index) if is_item(base) => match &**index {
            Expr::Const(Value::String(name)) => {
                names.insert(name.clone());
                true
            }
            _ => false,
        },
        Expr::Alias { slot: 0, .. } => false,
        other => other
            .children()
            .into_iter()
            .all(|c| item_properties(c, names)),
    }
}

/// The first property of a source path (`c.lines` → `lines`); false when the path is the
/// item itself or starts with a computed index.
fn first_property(e: &Expr, names: &mut std::collections::BTreeSet<String>) -> bool {
    match e {
        Expr::Prop(base, name) if matches!(**base, Expr::Alias { .. }) => {
            names.insert(name.clone());
            true
        }
        Expr::Index(base, index) if matches!(**base, Expr::Alias { .. }) => match &**index {
            Expr::Const(Value::String(name)) => {
                names.insert(name.clone());
                true
            }
            _ => false,
        },
        Expr::Prop(base, _) | Expr::Index(base, _) => first_property(base, names),
        _ => false,
    }
}

/// A row's place in ORDER BY order: its sort keys, then its item's key and its index among
/// the item's rows, so that ties keep the scan order.
#[derive(Debug, Clone)]
struct Position {
    keys: Vec<Option<Value>>,
    key: Vec<u8>,
    row: u64,
}

impl Position {
    fn cmp(&self, other: &Position, desc: &[bool]) -> Ordering {
        cmp_keys(&self.keys, &other.keys, desc)
            .then_with(|| self.key.cmp(&other.key))
            .then_with(|| self.row.cmp(&other.row))
    }
}

fn cmp_keys(a: &[Option<Value>], b: &[Option<Value>], desc: &[bool]) -> Ordering {
    for ((x, y), d) in a.iter().zip(b).zip(desc) {
        let o = total_cmp(x.as_ref(), y.as_ref());
        let o = if *d { o.reverse() } else { o };
        if o.is_ne() {
            return o;
        }
    }
    Ordering::Equal
}

fn joins<'a>(
    rest: &'a [crate::ast::Source],
    row: &mut Vec<V<'a>>,
    visit: &mut dyn FnMut(&[V<'a>]) -> ControlFlow<()>,
) -> ControlFlow<()> {
    let Some((first, rest)) = rest.split_first() else {
        return visit(row);
    };
    let expr = match &first.kind {
        SourceKind::Each(e) | SourceKind::Items(e) => e,
    };
    let arr = eval(expr, row, &[]);
    let elements: Vec<V<'a>> = match arr {
        V::Ref(Value::Array(a)) => a.iter().map(V::Ref).collect(),
        V::Own(Value::Array(a)) => a.into_iter().map(V::Own).collect(),
        _ => return ControlFlow::Continue(()),
    };
    for x in elements {
        row.push(x);
        let flow = joins(rest, row, visit);
        row.pop();
        flow?;
    }
    ControlFlow::Continue(())
}

/// The aggregate nodes of the projection (and ORDER BY), in order.
fn aggregate_nodes(q: &Query) -> Vec<&Expr> {
    let mut out = Vec::new();
    let mut collect = |e| {
        Expr::walk(e, &mut |x| {
            if matches!(x, Expr::Aggregate(..)) {
                out.push(x);
            }
        })
    };
    match &q.select {
        Select::Star => {}
        Select::Value(e) => collect(e),
        Select::List(l) => l.iter().for_each(|p| collect(&p.expr)),
    }
    q.order_by.iter().for_each(|o| collect(&o.expr));
    out
}

struct Group {
    row: Vec<Option<Value>>,
    accs: Vec<Acc>,
}

impl Group {
    fn new(row: Vec<Option<Value>>, nodes: &[&Expr]) -> Group {
        let accs = nodes
            .iter()
            .map(|n| match n {
                Expr::Aggregate(a, _) => Acc::new(*a),
                _ => Acc::new(crate::ast::Agg::Count),
            })
            .collect();
        Group { row, accs }
    }
}

/// An aggregate's running state.
enum Acc {
    Count(u64),
    Sum {
        sum: f64,
        ok: bool,
    },
    Avg {
        sum: f64,
        n: u64,
        ok: bool,
    },
    Extreme {
        max: bool,
        best: Option<Value>,
        ok: bool,
    },
}

impl Acc {
    fn new(a: crate::ast::Agg) -> Acc {
        use crate::ast::Agg;
        match a {
            Agg::Count => Acc::Count(0),
            Agg::Sum => Acc::Sum { sum: 0.0, ok: true },
            Agg::Avg => Acc::Avg {
                sum: 0.0,
                n: 0,
                ok: true,
            },
            Agg::Min => Acc::Extreme {
                max: false,
                best: None,
                ok: true,
            },
            Agg::Max => Acc::Extreme {
                max: true,
                best: None,
                ok: true,
            },
        }
    }

    /// Adds one row's argument; undefined is skipped by every aggregate.
    fn add(&mut self, v: Option<&Value>) {
        let Some(v) = v else { return };
        match self {
            Acc::Count(n) => *n += 1,
            Acc::Sum { sum, ok } => match v.as_f64() {
                Some(x) => *sum += x,
                None => *ok = false,
            },
            Acc::Avg { sum, n, ok } => match v.as_f64() {
                Some(x) => {
                    *sum += x;
                    *n += 1;
                }
                None => *ok = false,
            },
            Acc::Extreme { max, best, ok } => {
                if type_rank(Some(v)) >= 5 {
                    *ok = false;
                    return;
                }
                let better = match best {
                    None => true,
                    Some(b) => {
                        let o = total_cmp(Some(v), Some(b));
                        if *max { o.is_gt() } else { o.is_lt() }
                    }
                };
                if better {
                    *best = Some(v.clone());
                }
            }
        }
    }

    fn finish(self) -> Option<Value> {
        match self {
            Acc::Count(n) => Some(Value::from(n)),
            Acc::Sum { sum, ok } => ok.then(|| crate::value::num(sum).into_value()).flatten(),
            Acc::Avg { sum, n, ok } => (ok && n > 0)
                .then(|| crate::value::num(sum / n as f64).into_value())
                .flatten(),
            Acc::Extreme { best, ok, .. } => best.filter(|_| ok),
        }
    }
}

/// A hash of sort keys.
fn keys_sum(keys: &[Option<Value>]) -> u64 {
    let text: Vec<Value> = keys.iter().map(|k| lossless(k.as_ref())).collect();
    xxhash_rust::xxh3::xxh3_64(&serde_json::to_vec(&text).unwrap_or_default())
}

/// The most bytes of sort keys a continuation token carries.
const MAX_TOKEN_KEYS: usize = 1024;

/// How deeply `v` nests.
fn depth(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// A sort key as the continuation token holds it: JSON that names every type and writes
/// numbers as their bits, so that the key read back is exactly the key written (JSON's
/// decimal text of a double read back by serde_json can be one bit off).
fn lossless(v: Option<&Value>) -> Value {
    match v {
        None => json!(["u"]),
        Some(Value::Null) => json!(["z"]),
        Some(Value::Bool(b)) => json!(["b", b]),
        Some(Value::Number(n)) => json!(["n", n.as_f64().unwrap_or(0.0).to_bits()]),
        Some(Value::String(s)) => json!(["s", s]),
        Some(Value::Array(a)) => {
            json!(["a", a.iter().map(|x| lossless(Some(x))).collect::<Vec<_>>()])
        }
        Some(Value::Object(o)) => json!([
            "o",
            o.iter()
                .map(|(k, x)| json!([k, lossless(Some(x))]))
                .collect::<Vec<_>>()
        ]),
    }
}

/// The sort key [`lossless`] wrote (`Some(None)` for undefined); `None` for anything else.
fn restore(v: &Value) -> Option<Option<Value>> {
    let a = v.as_array()?;
    Some(match (a.first()?.as_str()?, a.get(1)) {
        ("u", None) => None,
        ("z", None) => Some(Value::Null),
        ("b", Some(Value::Bool(b))) => Some(Value::Bool(*b)),
        ("n", Some(bits)) => Some(crate::value::number(f64::from_bits(bits.as_u64()?))),
        ("s", Some(Value::String(s))) => Some(Value::String(s.clone())),
        ("a", Some(Value::Array(xs))) => Some(Value::Array(
            xs.iter()
                .map(|x| restore(x).map(Option::unwrap_or_default))
                .collect::<Option<_>>()?,
        )),
        ("o", Some(Value::Array(kvs))) => {
            let mut m = Map::new();
            for kv in kvs {
                let pair = kv.as_array()?;
                let (k, x) = (pair.first()?.as_str()?, pair.get(1)?);
                m.insert(k.to_owned(), restore(x)??);
            }
            Some(Value::Object(m))
        }
        _ => return None,
    })
}

fn bad_token() -> QueryError {
    QueryError::at(0, "the continuation token is not one this query returned")
}

fn to_hex(b: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push(HEX[(x >> 4) as usize] as char);
        s.push(HEX[(x & 15) as usize] as char);
    }
    s
}

fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || s.len() > 1 << 20 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Mem(Vec<(Vec<u8>, Value)>);

    impl Items for Mem {
        type Error = std::convert::Infallible;
        fn scan(&mut self, from: Option<&[u8]>, visit: &mut Visit<'_>) -> Result<(), Self::Error> {
            for (k, v) in &self.0 {
                if from.is_some_and(|f| k.as_slice() < f) {
                    continue;
                }
                if visit(k, &mut Parsed(v)).is_break() {
                    break;
                }
            }
            Ok(())
        }
    }

    fn all_pages(q: &Prepared, items: &mut Mem, size: usize) -> Vec<Value> {
        let mut out = Vec::new();
        let mut cont: Option<String> = None;
        loop {
            let page = q.page(items, cont.as_deref(), size).expect("page");
            out.extend(page.documents);
            match page.continuation {
                Some(c) => cont = Some(c),
                None => return out,
            }
        }
    }

    /// Found by the differential test: `1 % 0.1` is 0.09999999999999995, whose decimal text
    /// serde_json reads back one bit off, so a continuation after it re-returned its rows.
    #[test]
    fn an_order_by_key_that_decimal_text_cannot_carry_resumes_exactly() {
        let mut items = Mem(
            (0..6)
                .map(|i| (vec![i], json!({"n": 1.0, "q": 0.1, "i": i, "f": [0.1 * i as f64, {"x": 1e-7 * i as f64}]})))
                .collect(),
        );
        for text in [
            "SELECT VALUE c.i FROM c ORDER BY c.n % c.q DESC",
            "SELECT VALUE c.i FROM c ORDER BY c.f DESC",
        ] {
            let q = Prepared::new(text, &[], "t").expect("query");
            assert_eq!(
                all_pages(&q, &mut items, 1),
                all_pages(&q, &mut items, 100),
                "{text}"
            );
            assert_eq!(all_pages(&q, &mut items, 100).len(), 6, "{text}");
        }
    }

    /// The deepest trees the parser lets through evaluate (and drop) on a 2 MiB stack, the
    /// size of the threads that run queries in the server.
    #[test]
    fn the_deepest_allowed_expressions_evaluate() {
        let deep = crate::parser::MAX_DEPTH - 2;
        let nested = crate::parser::MAX_NESTING - 2;
        let texts = [
            format!("SELECT VALUE c.n{} FROM c", " + 1".repeat(deep)),
            format!(
                "SELECT VALUE {}c.n{} FROM c",
                "ABS(".repeat(nested),
                ")".repeat(nested)
            ),
            format!(
                "SELECT * FROM c WHERE c.n = 0{}",
                " OR c.n = 1".repeat(deep / 2)
            ),
        ];
        std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || {
                for text in texts {
                    let q = Prepared::new(&text, &[], "t").expect("within the limits");
                    let mut items = Mem(vec![(vec![0], json!({"n": 1}))]);
                    assert_eq!(
                        q.page(&mut items, None, 10).expect("runs").documents.len(),
                        1,
                        "{text}"
                    );
                }
            })
            .expect("thread")
            .join()
            .expect("no overflow");
    }

    /// Found by review: a 20,000-character sort key made a 40 KB token (past the SDKs'
    /// header limits), and one nested 60 deep a token serde_json would not read back.
    #[test]
    fn large_sort_keys_page_with_small_tokens() {
        let mut deep = json!(1);
        for _ in 0..60 {
            deep = json!({"v": deep});
        }
        let mut items = Mem((0..5u8)
            .map(|i| {
                (
                    vec![i],
                    json!({"i": i, "s": format!("{}{i}", "x".repeat(20_000)), "d": deep.clone()}),
                )
            })
            .collect());
        for text in [
            "SELECT VALUE c.i FROM c ORDER BY c.s DESC",
            "SELECT VALUE c.i FROM c ORDER BY c.d, c.i DESC",
        ] {
            let q = Prepared::new(text, &[], "t").expect("query");
            let mut cont: Option<String> = None;
            let mut got = Vec::new();
            loop {
                let page = q.page(&mut items, cont.as_deref(), 1).expect("page");
                got.extend(page.documents);
                match page.continuation {
                    Some(c) => {
                        assert!(c.len() < 4096, "{text}: a token of {} bytes", c.len());
                        cont = Some(c);
                    }
                    None => break,
                }
            }
            assert_eq!(
                got,
                vec![json!(4), json!(3), json!(2), json!(1), json!(0)],
                "{text}"
            );
        }
    }

    /// Found by review: a JOIN that fans out to billions of rows ran for hours. A page that
    /// streams ends at the deadline with a continuation; one that must read everything fails.
    #[test]
    fn a_page_past_its_deadline_ends_or_fails() {
        let arr: Vec<u32> = (0..400).collect();
        let mut items = Mem(vec![(vec![0], json!({"arr": arr}))]);
        let late = Limits {
            deadline: Some(std::time::Instant::now()),
            ..Limits::default()
        };
        let join = "SELECT VALUE 1 FROM c JOIN a IN c.arr JOIN b IN c.arr JOIN d IN c.arr WHERE a + b + d < 0";
        let q = Prepared::new(join, &[], "t").expect("query");
        let page = q
            .page_within(&mut items, None, 10, late)
            .expect("a short page");
        assert!(page.documents.is_empty());
        let next = page.continuation.expect("a continuation where it stopped");
        // The next page goes on from there.
        let page = q
            .page_within(&mut items, Some(&next), 10, late)
            .expect("a short page");
        assert_ne!(page.continuation.as_deref(), Some(next.as_str()));
        let sorted = Prepared::new(&format!("{join} ORDER BY a"), &[], "t").expect("query");
        match sorted.page_within(&mut items, None, 10, late) {
            Err(RunError::Query(e)) => {
                assert!(e.message.contains("ran out of time"), "{}", e.message)
            }
            other => panic!("expected a timeout, got {other:?}"),
        }
    }

    /// Found by the second review: resuming deep inside one item walks its earlier rows, and
    /// a token naming row 10^12 kept a thread (and a shutdown) busy for minutes. The walk back
    /// is held to the deadline too.
    #[test]
    fn walking_back_to_a_deep_row_is_held_to_the_deadline() {
        let arr: Vec<u32> = (0..400).collect();
        let mut items = Mem(vec![(vec![0], json!({"arr": arr}))]);
        let join = "SELECT VALUE 1 FROM c JOIN a IN c.arr JOIN b IN c.arr JOIN d IN c.arr WHERE a + b + d < 0";
        let q = Prepared::new(join, &[], "t").expect("query");
        let late = Limits {
            deadline: Some(std::time::Instant::now()),
            ..Limits::default()
        };
        let token = q
            .page_within(&mut items, None, 10, late)
            .expect("page")
            .continuation
            .expect("token");
        let text = String::from_utf8(from_hex(&token).expect("hex")).expect("utf8");
        let deep = text.replace(r#""row":511"#, r#""row":1000000000000"#);
        assert_ne!(deep, text, "{text}");
        let started = std::time::Instant::now();
        let soon = Limits {
            deadline: Some(started + std::time::Duration::from_millis(200)),
            ..Limits::default()
        };
        match q.page_within(&mut items, Some(&to_hex(deep.as_bytes())), 10, soon) {
            Err(RunError::Query(e)) => {
                assert!(e.message.contains("rows into one item"), "{}", e.message)
            }
            other => panic!("expected an error, got {other:?}"),
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    /// Found by the second review: an ORDER BY key too large for the token is read again from
    /// the row, and a row whose key changed between pages made the next page skip or repeat
    /// rows that never changed. Now that is a 400 that says to run the query again.
    #[test]
    fn a_reread_sort_key_that_changed_is_an_error_not_a_skip() {
        let long = |c: char, i: u8| format!("{}{i}", c.to_string().repeat(2000));
        let mut items = Mem((0..6u8)
            .map(|i| (vec![i], json!({"i": i, "s": long('m', i)})))
            .collect());
        let q = Prepared::new("SELECT VALUE c.i FROM c ORDER BY c.s", &[], "t").expect("query");
        let first = q.page(&mut items, None, 2).expect("page");
        assert_eq!(first.documents, vec![json!(0), json!(1)]);
        let token = first.continuation.expect("token");
        // The last row returned changes its key; nothing else does.
        items.0[1].1["s"] = json!(long('z', 1));
        match q.page(&mut items, Some(&token), 2) {
            Err(RunError::Query(e)) => {
                assert!(e.message.contains("changed its sort key"), "{}", e.message)
            }
            other => panic!("expected an error, got {other:?}"),
        }
        // Unchanged, it resumes.
        items.0[1].1["s"] = json!(long('m', 1));
        let second = q.page(&mut items, Some(&token), 2).expect("page");
        assert_eq!(second.documents, vec![json!(2), json!(3)]);
    }

    /// Found by review: a page held max-item-count results whatever their size (600 × 1 MB).
    #[test]
    fn a_page_holds_about_max_bytes_of_results() {
        let big = json!("x".repeat(1 << 20));
        let mut items = Mem((0..12u8).map(|i| (vec![i], json!({"i": i}))).collect());
        let params = [("@p".to_owned(), big)];
        for text in [
            "SELECT VALUE @p FROM c",
            "SELECT VALUE @p FROM c ORDER BY c.i",
            "SELECT DISTINCT VALUE [@p, c.i] FROM c",
        ] {
            let q = Prepared::new(text, &params, "t").expect("query");
            let mut cont: Option<String> = None;
            let mut total = 0;
            loop {
                let page = q.page(&mut items, cont.as_deref(), 1000).expect("page");
                let bytes: usize = page.documents.iter().map(json_size).sum();
                assert!(bytes <= (5 << 20) + 100, "{text}: a page of {bytes} bytes");
                total += page.documents.len();
                match page.continuation {
                    Some(c) => cont = Some(c),
                    None => break,
                }
            }
            assert_eq!(total, 12, "{text}");
        }
    }

    #[test]
    fn sort_keys_survive_the_token_bit_for_bit() {
        for v in [
            json!(0.09999999999999995),
            json!([1, "a", {"b": [null, true, 2.5e-300]}]),
            json!({}),
        ] {
            assert_eq!(restore(&lossless(Some(&v))), Some(Some(v.clone())));
        }
        assert_eq!(restore(&lossless(None)), Some(None));
        assert_eq!(restore(&json!(["n", "x"])), None);
    }

    #[test]
    fn a_query_reads_only_the_properties_it_needs() {
        let needs = |text: &str| Needs::of(Prepared::new(text, &[], "t").expect("query").query());
        let n = needs("SELECT * FROM c WHERE c.n = 1 AND c['a b'] > 0 ORDER BY c.m");
        assert_eq!(n.scan, Some(vec!["a b".to_owned(), "m".into(), "n".into()]));
        assert!(matches!(n.project, Project::Full));
        let n = needs("SELECT c.id, c.x FROM c WHERE c.n = 1");
        assert_eq!(n.scan, Some(vec!["n".to_owned()]));
        assert!(matches!(&n.project, Project::Partial(p) if p == &["id", "n", "x"]));
        let n = needs("SELECT VALUE COUNT(1) FROM c");
        assert_eq!(n.scan, Some(Vec::new()));
        // With JOIN, the projection is read with the scan (no second pass per row).
        let n = needs("SELECT c.name, a FROM c JOIN a IN c.arr WHERE a >= 0");
        assert_eq!(n.scan, Some(vec!["arr".to_owned(), "name".into()]));
        assert!(matches!(n.project, Project::FromScan));
        let n = needs("SELECT VALUE l.q FROM l IN c.lines WHERE l.q > 1");
        assert_eq!(n.scan, Some(vec!["lines".to_owned()]));
        assert!(matches!(n.project, Project::FromScan));
        // The item as a whole: everything is read.
        assert_eq!(needs("SELECT * FROM c WHERE IS_DEFINED(c)").scan, None);
        assert_eq!(needs("SELECT DISTINCT VALUE c FROM c").scan, None);
    }
}
