//! Regression tests for engine bugs found by the differential test (`tests/differential.rs`)
//! and the `query` fuzz target, one test per bug, each named after what it protects.

use converge_query::{Items, Parsed, Prepared, QueryError, RunError, Visit, pick};
use serde_json::{Value, json};

/// Items in key order, handed over parsed.
struct Source(Vec<(Vec<u8>, Value)>);

impl Items for Source {
    type Error = std::convert::Infallible;

    fn scan(&mut self, from: Option<&[u8]>, visit: &mut Visit<'_>) -> Result<(), Self::Error> {
        for (k, v) in self
            .0
            .iter()
            .filter(|(k, _)| from.is_none_or(|f| k.as_slice() >= f))
        {
            if visit(k, &mut Parsed(v)).is_break() {
                break;
            }
        }
        Ok(())
    }
}

/// Items `{"id": i, "n": i % 3}` for i in `0..n`.
fn source(n: u8) -> Source {
    Source(
        (0..n)
            .map(|i| (vec![i], json!({"id": i.to_string(), "n": i % 3})))
            .collect(),
    )
}

/// Every result of `text`, following continuations with pages of `size`.
fn all(text: &str, params: &[(String, Value)], src: &mut Source, size: usize) -> Vec<Value> {
    let q = Prepared::new(text, params, "scope").expect("a valid query");
    let mut out = Vec::new();
    let mut cont: Option<String> = None;
    for _ in 0..1000 {
        let page = q.page(src, cont.as_deref(), size).expect("a page");
        out.extend(page.documents);
        match page.continuation {
            Some(c) => cont = Some(c),
            None => return out,
        }
    }
    panic!("{text}: no last page");
}

/// docs/queries.md: "Without FROM the query has one row", and WHERE keeps the rows whose
/// condition is true. The engine used to return the row whatever WHERE said (seed 17:
/// `SELECT ToString(1) ... WHERE false` gave one result).
#[test]
fn where_filters_the_single_row_of_a_query_without_from() {
    let mut src = source(0);
    assert_eq!(
        all("SELECT VALUE 1 WHERE false", &[], &mut src, 10),
        Vec::<Value>::new()
    );
    assert_eq!(
        all("SELECT VALUE 1 WHERE 1 = 1", &[], &mut src, 10),
        vec![json!(1)]
    );
    // Undefined is not true either.
    assert_eq!(
        all("SELECT VALUE 1 WHERE undefined", &[], &mut src, 10),
        Vec::<Value>::new()
    );
    // Aggregates fold no rows: COUNT is 0, SUM is 0, MAX is undefined (no result).
    assert_eq!(
        all(
            "SELECT COUNT(1) AS n, SUM(2) AS s WHERE false",
            &[],
            &mut src,
            10
        ),
        vec![json!({"n": 0, "s": 0})]
    );
    assert_eq!(
        all("SELECT VALUE MAX(1) WHERE false", &[], &mut src, 10),
        Vec::<Value>::new()
    );
    assert_eq!(
        all(
            "SELECT DISTINCT VALUE false WHERE IS_NUMBER([0])",
            &[],
            &mut src,
            10
        ),
        Vec::<Value>::new()
    );
}

/// A projection is named after the last property of a path, and a path's `["prop"]` is a
/// literal: `c[@p]` is an unnamed entry (`$1`) whatever `@p` holds. The engine used to
/// name it after the parameter's value (`{"id": …}` for `@p = "id"`, but `$1` for a
/// number), so a result's shape depended on a parameter.
#[test]
fn a_string_parameter_index_does_not_name_a_projection() {
    let mut src = source(2);
    let p = |v: Value| vec![("@p".to_owned(), v)];
    assert_eq!(
        all("SELECT c[@p] FROM c", &p(json!("id")), &mut src, 10),
        vec![json!({"$1": "0"}), json!({"$1": "1"})]
    );
    assert_eq!(
        all(
            "SELECT c[@p], c['n'], c.n AS k FROM c",
            &p(json!("id")),
            &mut src,
            10
        ),
        vec![
            json!({"$1": "0", "n": 0, "k": 0}),
            json!({"$1": "1", "n": 1, "k": 1})
        ]
    );
    // The numbering counts unnamed entries only: the parameter's one still counts.
    assert_eq!(
        all(
            "SELECT 'x', c[@p], c.n FROM c",
            &p(json!("nope")),
            &mut src,
            1
        ),
        vec![json!({"$1": "x", "n": 0}), json!({"$1": "x", "n": 1})]
    );
    // It still reads the property, in WHERE and ORDER BY too.
    assert_eq!(
        all(
            "SELECT VALUE c.id FROM c WHERE c[@p] >= 0 ORDER BY c[@p] DESC",
            &p(json!("n")),
            &mut src,
            1
        ),
        vec![json!("1"), json!("0")]
    );
}

/// `pick` returns `None` for text that is not a JSON object; text that ends inside a
/// string right after a backslash made it slice past the end and panic.
#[test]
fn pick_refuses_text_ending_inside_an_escape() {
    let names = ["a".to_owned()];
    for text in ["{\"a\\", "{\"b\": \"\\", "{\"b\": [\"x\\", "{\"a\": \"\\"] {
        assert_eq!(pick(text, &names), None, "{text:?}");
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// A continuation is hex-encoded JSON a client can edit without touching its query
/// fingerprint. A count of results done near `u64::MAX`, or a page size of `usize::MAX`,
/// overflowed the engine's arithmetic (a panic in a debug build) in every mode.
#[test]
fn edited_continuation_counts_and_huge_page_sizes_do_not_overflow() {
    let queries = [
        "SELECT VALUE c.n FROM c",
        "SELECT VALUE c.n FROM c ORDER BY c.n",
        "SELECT DISTINCT VALUE c.n FROM c",
        "SELECT VALUE c.n FROM c ORDER BY c.n OFFSET 2 LIMIT 5",
    ];
    for text in queries {
        let mut src = source(10);
        let q = Prepared::new(text, &[], "scope").expect("valid");
        let first = q
            .page(&mut src, None, usize::MAX)
            .expect("one page of everything");
        assert!(!first.documents.is_empty(), "{text}");
        let token = q
            .page(&mut src, None, 1)
            .expect("a page")
            .continuation
            .expect("more pages");
        let resumed = q.page(&mut src, Some(&token), usize::MAX).expect("resumes");
        assert!(
            resumed.continuation.is_none(),
            "{text}: the rest in one page"
        );
        let mut edited: Value = serde_json::from_slice(&unhex(&token)).expect("JSON");
        for done in [u64::MAX, u64::MAX / 2, 1 << 40] {
            edited["done"] = json!(done);
            let forged = hex(edited.to_string().as_bytes());
            for size in [1, 1000, usize::MAX] {
                match q.page(&mut src, Some(&forged), size) {
                    Ok(_) | Err(RunError::Query(QueryError { .. })) => {}
                    Err(RunError::Source(e)) => match e {},
                }
            }
        }
    }
}

/// docs/queries.md: `start` and `length` "must be whole numbers", then are clamped into the
/// string or array. A whole double of 9e15 or more (`1e21`) made the engine's result
/// undefined instead of clamped (seed 7760: `SUBSTRING(@prop, 1.0, 1.5e+300)` gave no
/// result, the reference `" b"`).
#[test]
fn huge_whole_number_arguments_are_clamped() {
    let mut src = source(0);
    let value = |text: &str, src: &mut Source| all(text, &[], src, 10);
    let cases = [
        ("SELECT VALUE SUBSTRING('abc', 1e21, 2)", json!("")),
        ("SELECT VALUE SUBSTRING('abc', 1, 1.5e300)", json!("bc")),
        ("SELECT VALUE SUBSTRING('abc', -1e21, 2)", json!("ab")),
        (
            "SELECT VALUE ARRAY_SLICE([1, 2, 3], -1e21)",
            json!([1, 2, 3]),
        ),
        (
            "SELECT VALUE ARRAY_SLICE([1, 2, 3], 1, 1e300)",
            json!([2, 3]),
        ),
        ("SELECT VALUE ARRAY_SLICE([1, 2, 3], 1e300)", json!([])),
        ("SELECT VALUE INDEX_OF('abc', 'b', 1e21)", json!(-1)),
        ("SELECT VALUE INDEX_OF('abc', 'b', -1e21)", json!(1)),
    ];
    for (text, want) in cases {
        assert_eq!(value(text, &mut src), vec![want], "{text}");
    }
    // Not whole: still undefined.
    assert_eq!(
        value("SELECT VALUE SUBSTRING('abc', 0.5, 1)", &mut src),
        Vec::<Value>::new()
    );
}

/// docs/queries.md: strings take `\uXXXX` escapes. A character above U+FFFF is written as
/// two (a UTF-16 surrogate pair, as in JSON); the lexer refused the pair, so there was no
/// escape for those characters. It also took a sign as a hex digit (`\u+041` was `A`).
#[test]
fn string_escapes_take_surrogate_pairs_and_only_hex_digits() {
    let mut src = source(0);
    assert_eq!(
        all(
            r#"SELECT VALUE "\uD83D\ude00x" || '\u00e9'"#,
            &[],
            &mut src,
            10
        ),
        vec![json!("😀xé")]
    );
    for bad in [
        r#"SELECT VALUE "\uD83D""#,
        r#"SELECT VALUE "\uD83Dx""#,
        r#"SELECT VALUE "\uD83D\u0041""#,
        r#"SELECT VALUE "\uDE00""#,
        r#"SELECT VALUE "\u+041""#,
        r#"SELECT VALUE "\u12""#,
    ] {
        let e = Prepared::new(bad, &[], "scope").expect_err(bad);
        assert_eq!(e.offset, 14, "{bad}: {e}");
    }
}
