//! Differential test of `converge-query` against an independent reference model of
//! docs/queries.md (`tests/model/`).
//!
//! Each seed makes up to 30 random items and one random query (the model's own syntax
//! tree, rendered to text with random spelling), evaluates the tree with the reference
//! evaluator, and runs the text through the engine page by page with random page sizes,
//! following continuations, over the items handed over parsed or as JSON text (read with
//! `pick`, as the server reads the store). The two results must be the same sequence
//! (JSON compared deeply, numbers by value). Every continuation the engine hands out must
//! resume where it should, from a freshly prepared copy of the query too; it must be
//! refused by another query, another scope and other parameters; an edited one must not
//! break the engine.
//!
//! `QUERY_DIFF_SEEDS=n` runs `n` seeds (default [`DEFAULT_SEEDS`]); `QUERY_DIFF_SEED=s`
//! runs seed `s` alone (a failure prints its seed, query, parameters and items).
//! `QUERY_DIFF_VERBOSE=1` prints each query and its time. `--nocapture` shows how often
//! each construct was generated.

#[allow(dead_code)]
mod model;

use converge_query::{Limits, Prepared, RunError};
use model::ast::{Count, Ex, Q, Renderer, Root, Sel};
use model::check::{MAX_PAGES, SIZES, follow, follow_within, same_results, show, squeezed};
use model::items::Mem;
use model::reference;
use model::{Rng, generate, items};
use serde_json::{Value, json};
use std::time::Instant;

/// Seeds run by plain `cargo test`.
const DEFAULT_SEEDS: u64 = 5000;

/// What the seeds exercised: how often each construct was generated, how many queries
/// returned something, how many pages were followed.
#[derive(Default)]
struct Stats {
    constructs: std::collections::BTreeMap<String, u64>,
    nonempty: u64,
    documents: u64,
    pages: u64,
}

impl Stats {
    fn note(&mut self, what: impl Into<String>) {
        *self.constructs.entry(what.into()).or_default() += 1;
    }

    /// Counts the clauses and every expression node of `q`.
    fn query(&mut self, q: &Q) {
        let mut exprs: Vec<&Ex> = Vec::new();
        match &q.select {
            Sel::Star => self.note("select *"),
            Sel::Value(e) => {
                self.note("select value");
                exprs.push(e);
            }
            Sel::List(l) => {
                self.note("select list");
                for (e, alias) in l {
                    exprs.push(e);
                    self.note(match alias {
                        Some((_, true)) => "alias with AS",
                        Some((_, false)) => "alias without AS",
                        None => "unnamed entry",
                    });
                }
            }
        }
        match &q.from {
            None => self.note("no FROM"),
            Some(f) => {
                self.note(match f.root {
                    Root::Items(_) => "FROM c",
                    Root::Path(..) => "FROM c.path AS x",
                    Root::Each(..) => "FROM x IN c.path",
                });
                for _ in &f.joins {
                    self.note("JOIN");
                }
            }
        }
        for (flag, name) in [
            (q.distinct, "DISTINCT"),
            (q.top.is_some(), "TOP"),
            (q.filter.is_some(), "WHERE"),
            (!q.group.is_empty(), "GROUP BY"),
            (!q.order.is_empty(), "ORDER BY"),
            (q.order.len() > 1, "ORDER BY several keys"),
            (q.order.iter().any(|o| o.1 == Some(true)), "DESC"),
            (q.offset_limit.is_some(), "OFFSET LIMIT"),
        ] {
            if flag {
                self.note(name);
            }
        }
        exprs.extend(q.filter.iter());
        exprs.extend(q.group.iter());
        exprs.extend(q.order.iter().map(|o| &o.0));
        while let Some(e) = exprs.pop() {
            let (name, kids): (String, Vec<&Ex>) = match e {
                Ex::Lit(v) => (format!("literal {}", kind(v)), vec![]),
                Ex::Undef => ("undefined".into(), vec![]),
                Ex::Param(_) => ("@parameter".into(), vec![]),
                Ex::Name(_) => ("source name".into(), vec![]),
                Ex::Dot(b, _) => (".prop".into(), vec![b]),
                Ex::Brk(b, _) => ("[\"prop\"]".into(), vec![b]),
                Ex::Idx(b, i) => ("[expr]".into(), vec![b, i]),
                Ex::Neg(a) => ("unary -".into(), vec![a]),
                Ex::Pos(a) => ("unary +".into(), vec![a]),
                Ex::Not(a) => ("NOT".into(), vec![a]),
                Ex::Bin(op, a, b) => (format!("{op:?}"), vec![a, b]),
                Ex::Between(a, l, h, n) => (
                    if *n { "NOT BETWEEN" } else { "BETWEEN" }.into(),
                    vec![a, l, h],
                ),
                Ex::In(a, l, n) => (
                    if *n { "NOT IN" } else { "IN" }.into(),
                    std::iter::once(&**a).chain(l).collect(),
                ),
                Ex::Like(a, p, esc, n) => (
                    format!(
                        "{}LIKE{}",
                        if *n { "NOT " } else { "" },
                        if esc.is_some() { " ESCAPE" } else { "" }
                    ),
                    vec![a, p],
                ),
                Ex::Cond(c, a, b) => ("? :".into(), vec![c, a, b]),
                Ex::Coalesce(a, b) => ("??".into(), vec![a, b]),
                Ex::Call(f, args) => (format!("{f:?}/{}", args.len()), args.iter().collect()),
                Ex::Agg(k, a) => (format!("{k:?}"), vec![a]),
                Ex::Obj(fs) => ("{object}".into(), fs.iter().map(|f| &f.1).collect()),
                Ex::Arr(xs) => ("[array]".into(), xs.iter().collect()),
                Ex::Paren(a) => ("(parens)".into(), vec![a]),
            };
            self.note(name);
            exprs.extend(kids);
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// What a continuation token resumes: its mode, and for ORDER BY whether it carries the
/// sort keys or names the row to read them again (keys past a kilobyte).
fn token_kind(token: &str) -> &'static str {
    let bytes: Option<Vec<u8>> = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(token.get(i..i + 2)?, 16).ok())
        .collect();
    let t: Value = bytes
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    match t.get("m").and_then(Value::as_str) {
        Some("S") => "token: streaming",
        Some("G") => "token: grouped",
        Some("O") if t.get("keys").is_some_and(|k| !k.is_null()) => "token: ordered, with keys",
        Some("O") => "token: ordered, row read again",
        _ => "token: other",
    }
}

/// The seeds to run: `QUERY_DIFF_SEED`, or `0..QUERY_DIFF_SEEDS`.
fn seeds() -> std::ops::Range<u64> {
    let var = |name: &str| {
        std::env::var(name)
            .ok()
            .map(|v| v.parse::<u64>().expect("a whole number of seeds"))
    };
    match var("QUERY_DIFF_SEED") {
        Some(s) => s..s + 1,
        None => 0..var("QUERY_DIFF_SEEDS").unwrap_or(DEFAULT_SEEDS),
    }
}

/// Runs one seed; `Err` says what differs.
fn check_seed(seed: u64, verbose: bool, stats: &mut Stats) -> Result<(), String> {
    let mut rng = Rng::new(seed);
    let generated = items::items(&mut rng);
    let case = generate::case(&mut rng);
    let text = Renderer::new(&mut rng).query(&case.q);
    // Half the seeds hand the items over parsed, half as JSON text (as the store does).
    let as_text = rng.chance(50);
    let (mut src, items) = Mem::new(&generated, as_text, &mut rng);
    stats.query(&case.q);

    let context = |msg: String| {
        format!(
            "seed {seed}\nquery: {text}\nparams: {}\nitems ({}): {}\nmodel: {:?}\n{msg}",
            serde_json::to_string(&case.params).unwrap_or_default(),
            if as_text { "as text" } else { "parsed" },
            show(&items.iter().map(|(_, v)| v.clone()).collect::<Vec<_>>()),
            case.q,
        )
    };
    let expected = reference::run(&case.q, &items, &case.params);
    if verbose {
        println!(
            "seed {seed}: {} items, {} results: {text}",
            items.len(),
            expected.len()
        );
    }
    let prepared = Prepared::new(&text, &case.params, "scope")
        .map_err(|e| context(format!("the engine refuses a valid query: {e}")))?;
    // A third of the seeds cap pages at a few bytes of results too.
    let squeeze = rng.chance(30);
    let mut limits = |rng: &mut Rng| {
        if squeeze {
            squeezed(rng)
        } else {
            Limits::default()
        }
    };
    let (got, tokens) = follow_within(
        &prepared,
        &mut src,
        None,
        &mut rng,
        &SIZES,
        MAX_PAGES,
        &mut limits,
    )
    .map_err(context)?;
    stats.pages += tokens.len() as u64 + 1;
    for (_, t) in &tokens {
        stats.note(token_kind(t));
    }
    stats.documents += got.len() as u64;
    stats.nonempty += u64::from(!got.is_empty());
    if !same_results(&got, &expected) {
        return Err(context(format!(
            "results differ\nengine:    {}\nreference: {}",
            show(&got),
            show(&expected)
        )));
    }

    // Every continuation resumes where it was handed out.
    for (before, token) in &tokens {
        let size = *rng.pick(&SIZES);
        let page = prepared
            .page_within(&mut src, Some(token), size, limits(&mut rng))
            .map_err(|e| context(format!("a continuation after {before} fails: {e:?}")))?;
        let want = &expected[(*before).min(expected.len())..];
        let n = page.documents.len();
        if n > want.len() || !same_results(&page.documents, &want[..n]) {
            return Err(context(format!(
                "resuming after {before} with pages of {size} gives {}, not a prefix of {}",
                show(&page.documents),
                show(want)
            )));
        }
        if page.continuation.is_none() && n != want.len() {
            return Err(context(format!(
                "resuming after {before} with pages of {size} ends after {}, not {}",
                show(&page.documents),
                show(want)
            )));
        }
    }
    if tokens.is_empty() {
        return Ok(());
    }

    // One continuation followed to the end by a freshly prepared copy of the query.
    let (before, token) = rng.pick(&tokens).clone();
    let again = Prepared::new(&text, &case.params, "scope").map_err(|e| context(e.to_string()))?;
    let (rest, _) = follow_within(
        &again,
        &mut src,
        Some(token.clone()),
        &mut rng,
        &SIZES,
        MAX_PAGES,
        &mut limits,
    )
    .map_err(context)?;
    if !same_results(&rest, &expected[before..]) {
        return Err(context(format!(
            "following the continuation after {before} gives {}, not {}",
            show(&rest),
            show(&expected[before..])
        )));
    }

    // Another query, scope or parameter set refuses it.
    let mut others = vec![
        (format!("{text} "), case.params.clone(), "scope"),
        (text.clone(), case.params.clone(), "another scope"),
        ("SELECT * FROM c".to_owned(), Vec::new(), "scope"),
        (
            "SELECT DISTINCT VALUE c.k FROM c".to_owned(),
            Vec::new(),
            "scope",
        ),
        (
            "SELECT VALUE c.id FROM c ORDER BY c.n".to_owned(),
            Vec::new(),
            "scope",
        ),
    ];
    let mut changed = case.params.clone();
    changed.push(("@extra".to_owned(), json!(1)));
    others.push((text.clone(), changed, "scope"));
    for (other_text, params, scope) in others {
        let other =
            Prepared::new(&other_text, &params, scope).map_err(|e| context(e.to_string()))?;
        match other.page(&mut src, Some(&token), 10) {
            Err(RunError::Query(_)) => {}
            r => {
                return Err(context(format!(
                    "{other_text:?} in {scope:?} takes this query's continuation: {r:?}"
                )));
            }
        }
    }
    // A client may edit the token (hex JSON): a huge count must not break the engine.
    let bytes: Vec<u8> = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&token[i..i + 2], 16).expect("hex"))
        .collect();
    let mut edited: Value = serde_json::from_slice(&bytes).expect("JSON");
    edited["done"] = json!(u64::MAX - rng.below(3) as u64);
    let edited: String = edited
        .to_string()
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect();
    if let Err(RunError::Source(e)) = prepared.page(&mut src, Some(&edited), *rng.pick(&SIZES)) {
        match e {}
    }
    for garbage in ["", "zz", "00", &token[..token.len() - 2], "7b7d"] {
        match prepared.page(&mut src, Some(garbage), 10) {
            Err(RunError::Query(_)) => {}
            r => {
                return Err(context(format!(
                    "the continuation {garbage:?} is taken: {r:?}"
                )));
            }
        }
    }
    Ok(())
}

/// The engine and the reference agree on thousands of random queries, page by page.
#[test]
fn the_engine_agrees_with_the_reference_model() {
    let verbose = std::env::var("QUERY_DIFF_VERBOSE").is_ok();
    let started = Instant::now();
    let mut failures = Vec::new();
    let mut stats = Stats::default();
    let range = seeds();
    let n = range.end - range.start;
    for seed in range {
        let one = Instant::now();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            check_seed(seed, verbose, &mut stats)
        }));
        if verbose {
            println!("seed {seed} took {:?}", one.elapsed());
        }
        let failure = match outcome {
            Ok(Ok(())) => continue,
            Ok(Err(msg)) => msg,
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                format!("seed {seed} panicked: {msg} (rerun with QUERY_DIFF_SEED={seed})")
            }
        };
        failures.push(failure);
        if failures.len() >= 5 {
            break;
        }
    }
    println!(
        "{n} seeds in {:?}: {} queries returned something, {} documents, {} pages",
        started.elapsed(),
        stats.nonempty,
        stats.documents,
        stats.pages
    );
    for (what, count) in &stats.constructs {
        println!("  {what}: {count}");
    }
    assert!(
        failures.is_empty(),
        "{} failing seeds:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// A query every engine refuses, with the construct it must name (a word of the message).
fn refused(text: &str, params: &[(String, Value)]) -> converge_query::QueryError {
    match Prepared::new(text, params, "scope") {
        Ok(_) => panic!("{text:?} is accepted"),
        Err(e) => {
            assert!(
                e.offset <= text.len(),
                "{text:?}: offset {} past the end",
                e.offset
            );
            e
        }
    }
}

/// The shapes docs/queries.md says are a 400 are refused with a QueryError.
#[test]
fn invalid_shapes_are_refused() {
    let p = [("@n".to_owned(), json!(2)), ("@neg".to_owned(), json!(-1))];
    let cases: &[&str] = &[
        "SELECT * FROM c JOIN t IN c.tags",
        "SELECT * FROM c GROUP BY c.k",
        "SELECT VALUE (SELECT VALUE 1) FROM c",
        "SELECT * FROM c WHERE EXISTS(SELECT VALUE t FROM t IN c.tags)",
        "SELECT ARRAY(SELECT VALUE t FROM t IN c.tags) FROM c",
        "SELECT c.k FROM c GROUP BY c.k HAVING COUNT(1) > 1",
        "SELECT VALUE udf.f(c) FROM c",
        "SELECT VALUE FOO(c.n) FROM c",
        "SELECT VALUE ST_DISTANCE(c.a, c.b) FROM c",
        "SELECT * FROM c WHERE COUNT(1) > 0",
        "SELECT COUNT(1) FROM c GROUP BY COUNT(1)",
        "SELECT c.k FROM c GROUP BY c.k ORDER BY COUNT(1)",
        "SELECT VALUE SUM(COUNT(1)) FROM c",
        "SELECT VALUE MAX(c.n) + c.n FROM c",
        "SELECT c.n, COUNT(1) AS n2 FROM c",
        "SELECT c.n, COUNT(1) AS n2 FROM c GROUP BY c.k",
        "SELECT VALUE c FROM c GROUP BY c.k",
        "SELECT COUNT(1) FROM c ORDER BY c.n",
        "SELECT VALUE c.n FROM c WHERE c.n > @missing",
        "SELECT VALUE x.n FROM c",
        "SELECT VALUE C.n FROM c",
        "SELECT VALUE c.n FROM c.o AS o",
        "SELECT VALUE c FROM c JOIN t IN x.tags",
        "SELECT VALUE 1 FROM c JOIN c IN c.tags",
        "SELECT c.n, c.n FROM c",
        "SELECT c.a.n, c.n FROM c",
        "SELECT c.n AS k, c.k FROM c",
        "SELECT 1, 2 AS $1 FROM c",
        "SELECT TOP -1 * FROM c",
        "SELECT TOP 1.5 * FROM c",
        "SELECT TOP @neg * FROM c",
        "SELECT * FROM c OFFSET @neg LIMIT 1",
        "SELECT * FROM c OFFSET 1",
        "SELECT * FROM c LIMIT 1",
        "SELECT VALUE ABS(1, 2) FROM c",
        "SELECT VALUE CONCAT('a') FROM c",
        "SELECT VALUE SUBSTRING('a', 1) FROM c",
        "SELECT VALUE COUNT(1, 2) FROM c",
        "SELECT VALUE c FROM c.o",
        "SELECT * FROM c WHERE c.s LIKE 'a' ESCAPE 'ab'",
        "SELECT * FROM c WHERE c.s LIKE 'a' ESCAPE ''",
        "SELECT * FROM c WHERE",
        "SELECT FROM c",
        "SELECT * FROM c ORDER c.n",
        "SELECT * FROM c WHERE c.s = 'open",
        "SELECT * FROM c WHERE c.s = '\\q'",
        "SELECT * FROM c WHERE c.n = 1 c.n",
        "SELECT * FROM c WHERE c.n # 1",
        "SELECT *",
        "SELECT VALUE {a: 1, a: 2} FROM c",
        "SELECT VALUE [1, 2 FROM c",
        "SELECT VALUE c.n ? 1 FROM c",
    ];
    for text in cases {
        refused(text, &p);
    }
    // Offsets point at the offending token.
    assert_eq!(refused("SELECT VALUE @nope FROM c", &p).offset, 13);
    assert_eq!(refused("SELECT VALUE FOO(c.n) FROM c", &p).offset, 13);
    assert_eq!(
        refused("SELECT VALUE c.n FROM c WHERE x.n = 1", &p).offset,
        30
    );
}

/// Turns a valid generated query into one that docs/queries.md says is a 400.
fn break_query(q: &Q, rng: &mut Rng) -> Option<Q> {
    let mut bad = q.clone();
    let count1 = Ex::Agg(model::ast::AggK::Count, Box::new(Ex::Lit(json!(1))));
    match rng.below(7) {
        0 => {
            // An aggregate in WHERE.
            let cond = Ex::Bin(
                model::ast::Op::Gt,
                Box::new(count1),
                Box::new(Ex::Lit(json!(0))),
            );
            bad.filter = Some(match bad.filter.take() {
                Some(w) => Ex::Bin(model::ast::Op::And, Box::new(w), Box::new(cond)),
                None => cond,
            });
        }
        1 => {
            // A parameter that is not given.
            bad.filter = Some(Ex::Bin(
                model::ast::Op::Eq,
                Box::new(Ex::Param("@not_given".into())),
                Box::new(Ex::Lit(json!(1))),
            ));
        }
        2 => {
            // A name that is no source.
            bad.order = vec![(
                Ex::Dot(Box::new(Ex::Name("nosuch".into())), "n".into()),
                None,
            )];
            bad.group.clear();
        }
        3 => {
            // An aggregate in ORDER BY.
            bad.order = vec![(count1, Some(true))];
        }
        4 => {
            // Nested aggregates.
            bad.select = Sel::Value(Ex::Agg(model::ast::AggK::Sum, Box::new(count1)));
            bad.order.clear();
        }
        5 => {
            // SELECT * with JOIN.
            let from = bad.from.as_mut()?;
            let root = from.root.alias().to_owned();
            if !matches!(from.root, Root::Items(_)) {
                return None;
            }
            from.joins.push((
                "j0".into(),
                Ex::Dot(Box::new(Ex::Name(root)), "tags".into()),
            ));
            bad.select = Sel::Star;
            bad.group.clear();
        }
        _ => {
            // A negative TOP.
            bad.top = Some(Count::Param("@neg".into()));
        }
    }
    Some(bad)
}

/// Generated queries broken in one of the ways docs/queries.md lists are refused.
#[test]
fn broken_generated_queries_are_refused() {
    for seed in 0..500 {
        let mut rng = Rng::new(seed ^ 0xbad);
        let mut case = generate::case(&mut rng);
        case.params.push(("@neg".into(), json!(-2)));
        let Some(bad) = break_query(&case.q, &mut rng) else {
            continue;
        };
        let text = Renderer::new(&mut rng).query(&bad);
        refused(&text, &case.params);
    }
}

/// ORDER BY keys past a kilobyte (long strings, whole items): the continuation names the
/// row and the next page reads its keys again. Every item has such a key, with ties.
#[test]
fn sort_keys_too_big_for_a_token_resume_by_reading_the_row_again() {
    use model::ast::{From, Q};
    let mut reread = 0;
    for seed in 0..300u64 {
        let mut rng = Rng::new(seed ^ 0xb16);
        let mut generated = items::items(&mut rng);
        for (_, item) in &mut generated {
            let big = format!(
                "{}{}",
                "y".repeat(*rng.pick(&[1100, 1100, 1500])),
                rng.below(4)
            );
            item["big"] = json!(big);
        }
        let c = Ex::Name("c".into());
        let key = match rng.below(3) {
            0 => Ex::Dot(Box::new(c.clone()), "big".into()),
            1 => c.clone(),
            _ => Ex::Arr(vec![Ex::Dot(Box::new(c.clone()), "big".into())]),
        };
        let mut order = vec![(key, *rng.pick(&[None, Some(false), Some(true)]))];
        if rng.chance(50) {
            order.push((Ex::Dot(Box::new(c.clone()), "n".into()), Some(true)));
        }
        let q = Q {
            distinct: false,
            top: None,
            select: Sel::Value(Ex::Dot(Box::new(c), "id".into())),
            from: Some(From {
                root: Root::Items("c".into()),
                joins: Vec::new(),
            }),
            filter: None,
            group: Vec::new(),
            order,
            offset_limit: rng.chance(30).then_some((Count::Lit(1), Count::Lit(20))),
        };
        let text = Renderer::new(&mut rng).query(&q);
        let (mut src, items) = Mem::new(&generated, rng.chance(50), &mut rng);
        let expected = reference::run(&q, &items, &[]);
        let prepared = Prepared::new(&text, &[], "scope").expect("a valid query");
        let (got, tokens) = follow(&prepared, &mut src, None, &mut rng, &[1, 2, 3], MAX_PAGES)
            .unwrap_or_else(|e| panic!("seed {seed}: {text}: {e}"));
        assert!(
            same_results(&got, &expected),
            "seed {seed}: {text}\nengine    {}\nreference {}",
            show(&got),
            show(&expected)
        );
        reread += tokens
            .iter()
            .filter(|(_, t)| token_kind(t) == "token: ordered, row read again")
            .count();
    }
    assert!(
        reread > 100,
        "only {reread} continuations read their row again"
    );
}
