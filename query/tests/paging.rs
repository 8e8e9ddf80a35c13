//! Paging under the limits of docs/queries.md ("Limits of one page") and with items
//! changing between pages, checked against the reference model (`tests/model/`).

#[allow(dead_code)]
mod model;

use converge_query::{Limits, Prepared, RunError};
use model::ast::{Ex, From, Q, Renderer, Root, Sel};
use model::check::{MAX_PAGES, SIZES, follow_within, same_results, show};
use model::generate::{self, Case};
use model::items::{self, Mem};
use model::{Rng, reference};
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::Instant;

/// A generated case whose query satisfies `ok`.
fn case_where(rng: &mut Rng, ok: impl Fn(&Q) -> bool) -> Case {
    loop {
        let case = generate::case(rng);
        if ok(&case.q) {
            return case;
        }
    }
}

/// Whether a query streams (no ORDER BY, DISTINCT, GROUP BY or aggregate).
fn streams(q: &Q) -> bool {
    q.order.is_empty() && !q.distinct && !reference::aggregates(q)
}

/// The container name of `FROM c` without JOIN.
fn plain_root(q: &Q) -> Option<String> {
    match &q.from {
        Some(From {
            root: Root::Items(c),
            joins,
        }) if joins.is_empty() => Some(c.clone()),
        _ => None,
    }
}

fn dot(base: &Ex, name: &str) -> Ex {
    Ex::Dot(Box::new(base.clone()), name.to_owned())
}

/// `n` items with unique ids, their arrays fanning JOINs out.
fn many_items(rng: &mut Rng, n: usize) -> Vec<(Vec<u8>, Value)> {
    (0..n)
        .map(|i| {
            let id = format!("i{i:04}");
            (id.as_bytes().to_vec(), items::item(rng, &id, "a"))
        })
        .collect()
}

/// A streaming page past its deadline answers with what it has and a continuation; the
/// pages together are the whole result. A page that must read its whole scope fails with
/// a QueryError instead (or, with little to read, finishes).
#[test]
fn pages_past_their_deadline_end_early_and_lose_nothing() {
    let mut cut_short = 0;
    let mut failed = 0;
    for seed in 0..24u64 {
        let mut rng = Rng::new(seed ^ 0x0dea_d11e);
        let generated = many_items(&mut rng, 300);
        let mut case = case_where(&mut rng, |q| plain_root(q).is_some());
        let c = Ex::Name(plain_root(&case.q).expect("FROM c"));
        // JOINs over two arrays of each item: thousands of rows, past the deadline checks.
        if let Some(from) = &mut case.q.from {
            from.joins = vec![
                ("j1".into(), dot(&c, "arr")),
                ("j2".into(), dot(&c, "tags")),
                ("j3".into(), dot(&c, "arr")),
            ];
        }
        if matches!(case.q.select, Sel::Star) {
            case.q.select = Sel::Value(Ex::Name("j2".into()));
        }
        let text = Renderer::new(&mut rng).query(&case.q);
        let (mut src, items) = Mem::new(&generated, rng.chance(50), &mut rng);
        let expected = reference::run(&case.q, &items, &case.params);
        let q = Prepared::new(&text, &case.params, "scope").expect("a valid query");
        let past = Instant::now();
        let mut limits = |_: &mut Rng| Limits {
            deadline: Some(past),
            ..Limits::default()
        };
        if streams(&case.q) {
            let first = q
                .page_within(&mut src, None, usize::MAX, limits(&mut rng))
                .expect("a streaming page");
            cut_short += usize::from(first.continuation.is_some());
            let (got, _) =
                follow_within(&q, &mut src, None, &mut rng, &SIZES, MAX_PAGES, &mut limits)
                    .unwrap_or_else(|e| panic!("seed {seed}: {text}: {e}"));
            assert!(
                same_results(&got, &expected),
                "seed {seed}: {text}\nengine    {}\nreference {}",
                show(&got),
                show(&expected)
            );
        } else {
            match q.page_within(&mut src, None, usize::MAX, limits(&mut rng)) {
                Err(RunError::Query(_)) => failed += 1,
                Err(RunError::Source(e)) => match e {},
                Ok(page) => {
                    let n = page.documents.len().min(expected.len());
                    assert!(
                        same_results(&page.documents, &expected[..n]),
                        "seed {seed}: {text}"
                    );
                }
            }
        }
    }
    assert!(cut_short > 0, "no streaming page stopped at its deadline");
    assert!(failed > 0, "no whole-scope page failed at its deadline");
}

/// docs/queries.md: between pages the items may change; a streaming or ORDER BY query
/// resumes by position, so an item that exists unchanged throughout is returned exactly
/// once. Items are deleted, inserted and rewritten between pages.
#[test]
fn an_item_unchanged_throughout_is_returned_exactly_once() {
    let mut checked = 0;
    let mut restarted = 0;
    'seeds: for seed in 0..400u64 {
        let mut rng = Rng::new(seed ^ 0xc4a9);
        let generated = items::items(&mut rng);
        let mut case = case_where(&mut rng, |q| {
            plain_root(q).is_some() && !q.distinct && !reference::aggregates(q)
        });
        let c = Ex::Name(plain_root(&case.q).expect("FROM c"));
        // Each result names its item: [id, what the query projected].
        let projected = match &case.q.select {
            Sel::Value(e) => e.clone(),
            Sel::List(l) => l[0].0.clone(),
            Sel::Star => c.clone(),
        };
        case.q.select = Sel::Value(Ex::Arr(vec![dot(&c, "id"), projected]));
        // LIMIT, OFFSET and TOP count results, which changes shift.
        case.q.offset_limit = None;
        case.q.top = None;
        let text = Renderer::new(&mut rng).query(&case.q);
        let (mut src, items) = Mem::new(&generated, rng.chance(50), &mut rng);
        let q = Prepared::new(&text, &case.params, "scope").expect("a valid query");

        let mut touched: BTreeSet<Vec<u8>> = BTreeSet::new();
        let mut docs: Vec<Value> = Vec::new();
        let mut cont: Option<String> = None;
        let mut fresh = 0;
        for _ in 0..MAX_PAGES {
            let page = match q.page(&mut src, cont.as_deref(), *rng.pick(&[1, 2, 3])) {
                Ok(p) => p,
                // A key too big for the token is read again from its row: if that row was
                // deleted or changed, the query must be run again (a 400).
                Err(RunError::Query(e)) if !case.q.order.is_empty() => {
                    assert!(e.message.contains("again"), "seed {seed}: {text}: {e}");
                    restarted += 1;
                    continue 'seeds;
                }
                Err(e) => panic!("seed {seed}: {text}: {e:?}"),
            };
            docs.extend(page.documents);
            let Some(t) = page.continuation else { break };
            cont = Some(t);
            // Change a few items: delete, rewrite, insert between existing keys.
            for _ in 0..rng.below(3) {
                let keys = src.keys();
                match rng.below(3) {
                    0 if !keys.is_empty() => {
                        let k = rng.pick(&keys).clone();
                        src.delete(&k);
                        touched.insert(k);
                    }
                    1 if !keys.is_empty() => {
                        let k = rng.pick(&keys).clone();
                        let id = String::from_utf8_lossy(&k[k.len() - 3..]).into_owned();
                        let body = items::item(&mut rng, &id, "a");
                        src.put(k.clone(), &body, &mut rng);
                        touched.insert(k);
                    }
                    _ => {
                        let mut k = keys.first().cloned().unwrap_or_default();
                        k.extend_from_slice(format!("+{fresh}").as_bytes());
                        let id = format!("new{fresh}");
                        fresh += 1;
                        let body = items::item(&mut rng, &id, "a");
                        src.put(k.clone(), &body, &mut rng);
                        touched.insert(k);
                    }
                }
            }
        }
        // Every item never touched: its results, exactly as many as it has alone.
        for (key, item) in items.iter().filter(|(k, _)| !touched.contains(k)) {
            let alone = reference::run(&case.q, &[(key.clone(), item.clone())], &case.params);
            let id = &item["id"];
            let got = docs.iter().filter(|d| &d[0] == id).count();
            assert_eq!(
                got,
                alone.len(),
                "seed {seed}: {text}: item {id} returned {got} times, not {}",
                alone.len()
            );
            checked += 1;
        }
    }
    assert!(checked > 1000, "only {checked} items checked");
    assert!(restarted < 40, "{restarted} runs had to start again");
}
