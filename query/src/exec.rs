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
use serde_json::{Map, Value};
use std::cmp::Ordering;
use std::collections::HashMap;
use std::ops::ControlFlow;

/// A source of items in a fixed key order.
pub trait Items {
    /// The source's error.
    type Error;
    /// Calls `visit` with each item (its key and body) from `from` (inclusive) on, in key
    /// order, until `visit` breaks or the items end.
    fn scan(
        &mut self,
        from: Option<&[u8]>,
        visit: &mut dyn FnMut(&[u8], &Value) -> ControlFlow<()>,
    ) -> Result<(), Self::Error>;
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
    /// Ordered: resume after this sort position (each key `[]` for undefined, `[v]`).
    O {
        keys: Vec<Vec<Value>>,
        key: String,
        row: u64,
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
        Ok(Prepared {
            query,
            fingerprint: h.digest(),
            limit,
            offset,
        })
    }

    /// The query's syntax tree.
    pub fn query(&self) -> &Query {
        &self.query
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
    /// `max_items` results.
    pub fn page<S: Items>(
        &self,
        source: &mut S,
        continuation: Option<&str>,
        max_items: usize,
    ) -> Result<Page, RunError<S::Error>> {
        let max = max_items.max(1) as u64;
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
        if self.grouped() {
            self.page_grouped(source, done, want)
        } else if !self.query.order_by.is_empty() {
            self.page_ordered(source, token.map(|t| t.at), done, want)
        } else {
            self.page_streaming(source, token.map(|t| t.at), done, want)
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
            (Resume::O { keys, .. }, false, false) => keys.len() == self.query.order_by.len(),
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

    /// Calls `f` with each row (one value per source) of every item from `from` on.
    fn rows<S: Items>(
        &self,
        source: &mut S,
        from: Option<&[u8]>,
        scanned: &mut u64,
        f: &mut RowVisitor<'_>,
    ) -> Result<(), RunError<S::Error>> {
        let Some(from_clause) = &self.query.from else {
            // No FROM: one row with no sources.
            let _ = f(&[], 0, &[]);
            return Ok(());
        };
        let q = &self.query;
        source
            .scan(from, &mut |key, item| {
                *scanned += 1;
                let mut n = 0u64;
                let mut row: Vec<V<'_>> = Vec::with_capacity(1 + from_clause.joins.len());
                let mut flow = ControlFlow::Continue(());
                let base = [V::Ref(item)];
                let mut visit = |row: &[V<'_>]| {
                    let idx = n;
                    n += 1;
                    if let Some(w) = &q.filter
                        && eval(w, row, &[]).as_bool() != Some(true)
                    {
                        return ControlFlow::Continue(());
                    }
                    f(key, idx, row)
                };
                match &from_clause.root.kind {
                    SourceKind::Items(e) => {
                        let v = eval(e, &base, &[]);
                        if !matches!(v, V::Undef) {
                            row.push(v);
                            flow = joins(&from_clause.joins, &mut row, &mut visit);
                        }
                    }
                    SourceKind::Each(e) => {
                        if let V::Ref(Value::Array(a)) = eval(e, &base, &[]) {
                            for x in a {
                                row.push(V::Ref(x));
                                flow = joins(&from_clause.joins, &mut row, &mut visit);
                                row.pop();
                                if flow.is_break() {
                                    break;
                                }
                            }
                        }
                    }
                }
                flow
            })
            .map_err(RunError::Source)
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
    ) -> Result<Page, RunError<S::Error>> {
        let (from, skip_rows) = match at {
            Some(Resume::S { key, row }) => (Some(from_hex(&key).ok_or_else(bad_token)?), row),
            _ => (None, 0),
        };
        let mut docs = Vec::new();
        let mut done = done;
        let mut next: Option<(Vec<u8>, u64)> = None;
        let mut scanned = 0;
        self.rows(
            source,
            from.as_deref(),
            &mut scanned,
            &mut |key, idx, row| {
                if from.as_deref() == Some(key) && idx < skip_rows {
                    return ControlFlow::Continue(());
                }
                if docs.len() as u64 == want {
                    next = Some((key.to_vec(), idx));
                    return ControlFlow::Break(());
                }
                let Some(doc) = self.project(row, &[]) else {
                    return ControlFlow::Continue(());
                };
                done += 1;
                if done > self.offset {
                    docs.push(doc);
                }
                ControlFlow::Continue(())
            },
        )?;
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
    ) -> Result<Page, RunError<S::Error>> {
        let after = match at {
            Some(Resume::O { keys, key, row }) => Some(Position {
                keys: keys.into_iter().map(|k| k.into_iter().next()).collect(),
                key: from_hex(&key).ok_or_else(bad_token)?,
                row,
            }),
            _ => None,
        };
        let desc: Vec<bool> = self.query.order_by.iter().map(|o| o.descending).collect();
        let skip = self.offset.saturating_sub(done);
        let need = (skip + want) as usize;
        let mut best: Vec<(Position, Value)> = Vec::new();
        let mut scanned = 0;
        let mut more = false;
        let mut threshold: Option<Position> = None;
        self.rows(source, None, &mut scanned, &mut |key, idx, row| {
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
            let Some(doc) = self.project(row, &[]) else {
                return ControlFlow::Continue(());
            };
            best.push((pos, doc));
            if best.len() >= 2 * need.max(16) {
                best.sort_by(|a, b| a.0.cmp(&b.0, &desc));
                best.truncate(need);
                threshold = best.last().map(|(p, _)| p.clone());
                more = true;
            }
            ControlFlow::Continue(())
        })?;
        best.sort_by(|a, b| a.0.cmp(&b.0, &desc));
        if best.len() > need {
            best.truncate(need);
            more = true;
        }
        let mut done = done;
        let mut last = None;
        let mut docs = Vec::new();
        for (pos, doc) in best {
            done += 1;
            if done > self.offset {
                docs.push(doc);
            }
            last = Some(pos);
        }
        let finished = !more || self.limit.is_some_and(|l| done >= l + self.offset);
        let continuation = match last {
            Some(p) if !finished => Some(
                self.encode(
                    done,
                    Resume::O {
                        keys: p
                            .keys
                            .into_iter()
                            .map(|k| k.into_iter().collect())
                            .collect(),
                        key: to_hex(&p.key),
                        row: p.row,
                    },
                ),
            ),
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
            self.rows(source, None, &mut scanned, &mut |_, _, row| {
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
            })?;
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
            self.rows(source, None, &mut scanned, &mut |_, _, row| {
                if let Some(doc) = self.project(row, &[]) {
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
            })?;
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
        let end = start + want as usize;
        let docs: Vec<Value> = results
            .iter()
            .skip(start)
            .take(end.saturating_sub(start))
            .map(|(_, d)| d.clone())
            .collect();
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

/// Receives each row that passes WHERE: its item's key, its index among the item's rows,
/// and its values (one per source).
type RowVisitor<'f> = dyn FnMut(&[u8], u64, &[V<'_>]) -> ControlFlow<()> + 'f;

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
