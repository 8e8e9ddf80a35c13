//! Running the engine page by page, comparing results, and the `query` fuzz target's check.
//!
//! [`check`] never panics on any input unless the engine misbehaves: it feeds the input
//! to `Prepared::new` as query text, runs what parses to completion over a few items
//! (parsed and as JSON text), feeds it as a continuation, edits real continuations with
//! it, reads it as an item's JSON text through `pick`, or (structured mode) takes its
//! bytes as the generator's choices and compares the engine with the reference model.

use super::ast::Renderer;
use super::items::Mem;
use super::reference::{self, deep_eq};
use super::{Rng, generate, items};
use converge_query::{Item, Items, Limits, Prepared, RunError, Visit, pick};
use serde_json::{Map, Value, json};

/// Page sizes runs pick from, page by page.
pub const SIZES: [usize; 9] = [1, 2, 3, 7, 100, 1, 5, 1000, usize::MAX];

/// A run that needs more pages than this is looping.
pub const MAX_PAGES: usize = 5000;

/// The documents of every page from a start on, and each continuation handed out with the
/// number of documents returned before it.
pub type Run = (Vec<Value>, Vec<(usize, String)>);

/// Two results equal: same length, each pair deeply equal with numbers by value.
pub fn same_results(a: &[Value], b: &[Value]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| deep_eq(x, y))
}

/// Values as compact JSON, for messages.
pub fn show(v: &[Value]) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// Every page of `q` from `start` on, each of a size picked from `sizes`, at most
/// `max_pages` of them; `Err` when a page fails, is too long, or the pages do not end.
pub fn follow<S: Items>(
    q: &Prepared,
    src: &mut S,
    start: Option<String>,
    rng: &mut Rng,
    sizes: &[usize],
    max_pages: usize,
) -> Result<Run, String>
where
    S::Error: std::fmt::Debug,
{
    follow_within(q, src, start, rng, sizes, max_pages, &mut |_| {
        Limits::default()
    })
}

/// [`follow`] with each page's [`Limits`] from `limits`.
pub fn follow_within<S: Items>(
    q: &Prepared,
    src: &mut S,
    start: Option<String>,
    rng: &mut Rng,
    sizes: &[usize],
    max_pages: usize,
    limits: &mut dyn FnMut(&mut Rng) -> Limits,
) -> Result<Run, String>
where
    S::Error: std::fmt::Debug,
{
    let mut docs = Vec::new();
    let mut tokens = Vec::new();
    let mut cont = start;
    for _ in 0..max_pages {
        let size = *rng.pick(sizes);
        let page = q
            .page_within(src, cont.as_deref(), size, limits(rng))
            .map_err(|e| format!("a page of {size} failed: {e:?}"))?;
        if page.documents.len() > size {
            return Err(format!(
                "a page of {size} has {} documents",
                page.documents.len()
            ));
        }
        docs.extend(page.documents);
        match page.continuation {
            None => return Ok((docs, tokens)),
            Some(t) => {
                tokens.push((docs.len(), t.clone()));
                cont = Some(t);
            }
        }
    }
    Err(format!("no last page after {max_pages} pages"))
}

/// Limits of a few bytes of results a page (at least one result), or the default.
pub fn squeezed(rng: &mut Rng) -> Limits {
    Limits {
        max_bytes: *rng.pick(&[1, 40, 300, 4 << 20]),
        ..Limits::default()
    }
}

/// Parameters the text mode binds: one of each type, and counts.
fn params() -> Vec<(String, Value)> {
    [
        ("@a", json!(1)),
        ("@b", json!(2.5)),
        ("@s", json!("a%b")),
        ("@n", json!(null)),
        ("@t", json!(true)),
        ("@arr", json!([1, "x", [2]])),
        ("@o", json!({"a": 1, "b": {"c": "d"}})),
        ("@top", json!(3)),
        ("@p", json!("n")),
    ]
    .into_iter()
    .map(|(n, v)| (n.to_owned(), v))
    .collect()
}

/// The items the text mode runs over.
fn fixed_items() -> Vec<(Vec<u8>, Value)> {
    [
        json!({"id": "a", "k": 1, "n": 3, "s": "abc", "b": true, "arr": [1, 2, 2.5], "tags": ["x", "y"], "o": {"a": 1, "b": {"c": true}}, "lines": [{"q": 1, "p": "p1", "t": [1, "a"]}, {"q": 2.5}]}),
        json!({"id": "b", "k": "x", "n": "3", "s": "ABC", "b": null, "arr": [], "o": [1], "lines": "no", "a b": 1}),
        json!({"id": "c", "k": 1.0, "n": -0.5, "s": "a_b", "arr": [3, "3", null, {"a": 1}], "tags": ["y"], "m": {"a": [1, {"b": 2}]}}),
        json!({"id": "d", "n": 10, "s": "😀\u{ff21}", "b": false, "z": null, "tags": [], "lines": [{"q": -1, "p": "", "t": []}, 5]}),
        json!({"id": "e", "k": [1], "n": 2, "o": {"a": "s", "b": {"c": 2}}, "arr": [[1, 2], {"x": 1}], "value": "v"}),
        json!({"id": "f"}),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, v)| (vec![b'k', i as u8], v))
    .collect()
}

/// Items as arbitrary text: read leniently, as the server reads the store.
struct Junk(Vec<(Vec<u8>, String)>);

struct JunkItem<'a>(&'a str);

impl Item for JunkItem<'_> {
    fn partial(&mut self, names: &[String]) -> Value {
        Value::Object(pick(self.0, names).unwrap_or_default())
    }

    fn full(&mut self) -> Value {
        serde_json::from_str(self.0).unwrap_or(Value::Null)
    }
}

impl Items for Junk {
    type Error = std::convert::Infallible;

    fn scan(&mut self, from: Option<&[u8]>, visit: &mut Visit<'_>) -> Result<(), Self::Error> {
        for (k, t) in &self.0 {
            if from.is_some_and(|f| k.as_slice() < f) {
                continue;
            }
            if visit(k, &mut JunkItem(t)).is_break() {
                break;
            }
        }
        Ok(())
    }
}

/// Runs `q` to completion (at most 64 pages of `size`, and of `max_bytes` of results);
/// every failure must be a QueryError. Returns the continuations handed out.
fn run_out<S: Items<Error = std::convert::Infallible>>(
    q: &Prepared,
    src: &mut S,
    size: usize,
    max_bytes: usize,
) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut cont: Option<String> = None;
    let limits = || Limits {
        max_bytes,
        ..Limits::default()
    };
    for _ in 0..64 {
        match q.page_within(src, cont.as_deref(), size, limits()) {
            Ok(page) => {
                assert!(page.documents.len() <= size.max(1), "a page too long");
                match page.continuation {
                    Some(t) => {
                        tokens.push(t.clone());
                        cont = Some(t);
                    }
                    None => break,
                }
            }
            Err(RunError::Query(_)) => break,
            Err(RunError::Source(e)) => match e {},
        }
    }
    tokens
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A real continuation with one field replaced by a value taken from `bytes`: what a
/// client editing its token can send.
fn edited(token: &str, bytes: &[u8]) -> Option<String> {
    let mut t: Value = serde_json::from_slice(&unhex(token)?).ok()?;
    let fields: Vec<String> = t.as_object()?.keys().cloned().collect();
    let (&which, rest) = bytes.split_first()?;
    let field = &fields[which as usize % fields.len()];
    let text = String::from_utf8_lossy(rest);
    let value = serde_json::from_str::<Value>(&text).unwrap_or_else(|_| {
        let mut n = [0u8; 8];
        for (d, s) in n.iter_mut().zip(rest) {
            *d = *s;
        }
        json!(u64::from_le_bytes(n))
    });
    t[field.as_str()] = value;
    Some(hex(t.to_string().as_bytes()))
}

/// The input as query text (lossy UTF-8), over the fixed items with pages of 1 to 4.
fn text_mode(size: usize, data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let params = params();
    let q = match Prepared::new(&text, &params, "fuzz") {
        Ok(q) => q,
        Err(e) => {
            assert!(e.offset <= text.len(), "an error offset past the end: {e}");
            return;
        }
    };
    let items = fixed_items();
    let mut parsed = Mem::Parsed(items.clone());
    let tokens = run_out(&q, &mut parsed, size, Limits::default().max_bytes);
    let mut as_text = Junk(
        items
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect(),
    );
    run_out(&q, &mut as_text, size + 1, 1 + data.len() % 200);
    // The text itself as a continuation, and real ones edited with it.
    let _ = q.page(&mut parsed, Some(&text), size);
    for t in tokens.iter().take(3) {
        if let Some(e) = edited(t, data) {
            let _ = q.page(&mut parsed, Some(&e), size);
        }
    }
}

/// The input's bytes as the generator's choices: the engine must agree with the model.
fn structured_mode(data: &[u8]) {
    let mut rng = Rng::from_bytes(data);
    let generated = items::items(&mut rng);
    let case = generate::case(&mut rng);
    let text = Renderer::new(&mut rng).query(&case.q);
    let (mut src, items) = Mem::new(&generated, rng.chance(50), &mut rng);
    let expected = reference::run(&case.q, &items, &case.params);
    let q = Prepared::new(&text, &case.params, "fuzz")
        .unwrap_or_else(|e| panic!("a valid query is refused: {text}: {e}"));
    match follow(&q, &mut src, None, &mut rng, &SIZES, MAX_PAGES) {
        Ok((got, _)) => assert!(
            same_results(&got, &expected),
            "{text}\nparams {:?}\nengine    {}\nreference {}",
            case.params,
            show(&got),
            show(&expected)
        ),
        Err(e) => panic!("{text}: {e}"),
    }
}

/// The input as an item's JSON text: `pick` agrees with a full parse on an object, never
/// panics on anything else, and queries over the item run.
fn item_mode(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let names: Vec<String> = ["a", "id", "n", "a b", "é", "", "k"]
        .into_iter()
        .map(String::from)
        .collect();
    let picked = pick(&text, &names);
    if let Ok(Value::Object(all)) = serde_json::from_str::<Value>(&text) {
        let want: Map<String, Value> = all.into_iter().filter(|(k, _)| names.contains(k)).collect();
        assert_eq!(
            picked,
            Some(want),
            "pick disagrees with a full parse of {text:?}"
        );
    }
    let mut src = Junk(vec![(b"k".to_vec(), text.to_string())]);
    for query in [
        "SELECT * FROM c",
        "SELECT VALUE c.a FROM c WHERE c.n > 0 ORDER BY c.id",
        "SELECT c.k, COUNT(1) AS n FROM c GROUP BY c.k",
        "SELECT VALUE x FROM x IN c.a",
        "SELECT DISTINCT VALUE c['a b'] FROM c",
    ] {
        let q = Prepared::new(query, &[], "fuzz").expect("a valid query");
        run_out(&q, &mut src, 1, Limits::default().max_bytes);
    }
}

/// The `query` fuzz target: the first byte picks a mode.
pub fn check(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 8 {
        0..=3 => text_mode(1 + mode as usize % 4, rest),
        4 | 5 => structured_mode(rest),
        _ => item_mode(rest),
    }
}
