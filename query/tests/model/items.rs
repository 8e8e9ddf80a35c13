//! Random items, and an in-memory [`Items`] source over them (parsed, or as JSON text).

use super::Rng;
use converge_query::{Item, Items, Parsed, Visit, pick};
use serde_json::{Map, Value, json};

/// Numbers the items and the queries draw from: negatives, non-integers, `1.0` next to
/// `1`, and repeats so that DISTINCT and GROUP BY find equal values.
pub const NUMBERS: &[f64] = &[-3.0, -1.0, 0.0, 1.0, 1.0, 2.0, 2.5, -0.5, 3.0, 10.0, 0.1];

/// Strings the items and the queries draw from: case variants, LIKE's special characters,
/// whitespace, quotes, backslashes and characters beyond ASCII.
pub const STRINGS: &[&str] = &[
    "",
    "a",
    "A",
    "abc",
    "Abc",
    "ABC",
    "a%b",
    "a_b",
    "hello world",
    " pad ",
    "50%",
    "ü",
    "Über",
    "日本",
    "x\ny",
    "b",
    "it's",
    "q\"uote",
    "back\\slash",
    "n",
    "s",
    "a/b",
    "ab",
    "😀x",
    "\u{ff21}",
    "t\tb\u{8}\u{c}\r",
];

/// A number from [`NUMBERS`]; `1.0` is written as a double.
pub fn number(rng: &mut Rng) -> Value {
    let n = *rng.pick(NUMBERS);
    if n == 1.0 && rng.chance(50) {
        json!(1.0)
    } else {
        num_value(n)
    }
}

/// `n` as JSON: whole numbers as integers.
pub fn num_value(n: f64) -> Value {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        json!(n as i64)
    } else {
        json!(n)
    }
}

/// A string from [`STRINGS`].
pub fn string(rng: &mut Rng) -> Value {
    json!(*rng.pick(STRINGS))
}

/// A value of any type, `depth` levels deep at most.
pub fn any(rng: &mut Rng, depth: u32) -> Value {
    match rng.below(if depth == 0 { 5 } else { 7 }) {
        0 => number(rng),
        1 => string(rng),
        2 => json!(rng.chance(50)),
        3 => Value::Null,
        4 => number(rng),
        5 => Value::Array((0..rng.below(4)).map(|_| any(rng, depth - 1)).collect()),
        _ => {
            let mut m = Map::new();
            for k in ["a", "b", "q"] {
                if rng.chance(50) {
                    m.insert(k.to_owned(), any(rng, depth - 1));
                }
            }
            Value::Object(m)
        }
    }
}

fn maybe(rng: &mut Rng, m: &mut Map<String, Value>, key: &str, percent: usize, v: Value) {
    if rng.chance(percent) {
        m.insert(key.to_owned(), v);
    }
}

/// One item, with id `id`.
pub fn item(rng: &mut Rng, id: &str, pk: &str) -> Value {
    let mut m = Map::new();
    m.insert("id".into(), json!(id));
    m.insert("pk".into(), json!(pk));
    let k = match rng.below(10) {
        0..=2 => json!(rng.below(3)),
        3..=5 => json!(*rng.pick(&["x", "y"])),
        6 => json!(1.0),
        7 => Value::Null,
        _ => Value::Bool(rng.chance(50)),
    };
    maybe(rng, &mut m, "k", 85, k);
    let n = match rng.below(20) {
        0 => json!("3"),
        1 => Value::Null,
        2 => json!(true),
        _ => number(rng),
    };
    maybe(rng, &mut m, "n", 88, n);
    let s = match rng.below(20) {
        0 => number(rng),
        1 => Value::Null,
        _ => string(rng),
    };
    maybe(rng, &mut m, "s", 88, s);
    let b = match rng.below(20) {
        0 => Value::Null,
        1 => json!("true"),
        _ => json!(rng.chance(50)),
    };
    maybe(rng, &mut m, "b", 80, b);
    maybe(rng, &mut m, "z", 50, Value::Null);
    let o = match rng.below(10) {
        0 => json!([1]),
        1 => json!("o"),
        _ => {
            let mut o = Map::new();
            let a = if rng.chance(60) {
                number(rng)
            } else {
                string(rng)
            };
            maybe(rng, &mut o, "a", 85, a);
            let c = if rng.chance(60) {
                json!(rng.chance(50))
            } else {
                number(rng)
            };
            maybe(rng, &mut o, "b", 70, json!({ "c": c }));
            Value::Object(o)
        }
    };
    maybe(rng, &mut m, "o", 80, o);
    let arr = if rng.chance(90) {
        Value::Array(
            (0..rng.below(5))
                .map(|_| {
                    if rng.chance(90) {
                        number(rng)
                    } else {
                        string(rng)
                    }
                })
                .collect(),
        )
    } else {
        json!("notarray")
    };
    maybe(rng, &mut m, "arr", 80, arr);
    let tags = Value::Array(
        (0..rng.below(4))
            .map(|_| json!(*rng.pick(&["red", "blue", "a", "A", "green"])))
            .collect(),
    );
    maybe(rng, &mut m, "tags", 75, tags);
    let lines = Value::Array(
        (0..rng.below(4))
            .map(|_| {
                if rng.chance(8) {
                    return any(rng, 1);
                }
                let mut l = Map::new();
                let q = number(rng);
                maybe(rng, &mut l, "q", 90, q);
                let p = string(rng);
                maybe(rng, &mut l, "p", 85, p);
                let t = Value::Array((0..rng.below(3)).map(|_| any(rng, 0)).collect());
                maybe(rng, &mut l, "t", 70, t);
                Value::Object(l)
            })
            .collect(),
    );
    maybe(rng, &mut m, "lines", 70, lines);
    let ab = number(rng);
    maybe(rng, &mut m, "a b", 50, ab);
    let value = string(rng);
    maybe(rng, &mut m, "value", 40, value);
    let mixed = any(rng, 2);
    maybe(rng, &mut m, "m", 80, mixed);
    // Long strings with shared prefixes: sort keys too big for a continuation token.
    let big = format!(
        "{}{}",
        "x".repeat(*rng.pick(&[300, 700, 1500])),
        rng.pick(STRINGS)
    );
    maybe(rng, &mut m, "big", 35, json!(big));
    Value::Object(m)
}

/// Between 0 and 30 items with their keys (partition key, a zero byte, id), sorted by key.
pub fn items(rng: &mut Rng) -> Vec<(Vec<u8>, Value)> {
    let n = match rng.below(20) {
        0 => 0,
        1..=9 => rng.range(1, 8),
        _ => rng.range(8, 30),
    };
    let mut out: Vec<(Vec<u8>, Value)> = (0..n)
        .map(|i| {
            let pk = *rng.pick(&["a", "b", "c"]);
            let id = format!("i{i:02}");
            let mut key = pk.as_bytes().to_vec();
            key.push(0);
            key.extend_from_slice(id.as_bytes());
            (key, item(rng, &id, pk))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// An in-memory source: items in key order, scanned from a key on, each either parsed
/// already or kept as JSON text (read with [`pick`] for the properties a query needs, as
/// the server reads the store).
#[derive(Clone, Debug)]
pub enum Mem {
    /// Parsed items.
    Parsed(Vec<(Vec<u8>, Value)>),
    /// Items as JSON text.
    Text(Vec<(Vec<u8>, String)>),
}

/// An item kept as JSON text.
struct TextItem<'a>(&'a str);

impl Item for TextItem<'_> {
    fn partial(&mut self, names: &[String]) -> Value {
        Value::Object(pick(self.0, names).expect("the item text is an object"))
    }

    fn full(&mut self) -> Value {
        serde_json::from_str(self.0).expect("the item text is JSON")
    }
}

impl Mem {
    /// A source over `items`, as parsed values or (when `text`) as JSON text written with
    /// random spelling; with the items as the source reads them back.
    pub fn new(
        items: &[(Vec<u8>, Value)],
        text: bool,
        rng: &mut Rng,
    ) -> (Mem, Vec<(Vec<u8>, Value)>) {
        if !text {
            return (Mem::Parsed(items.to_vec()), items.to_vec());
        }
        let texts: Vec<(Vec<u8>, String)> = items
            .iter()
            .map(|(k, v)| (k.clone(), json_text(v, rng)))
            .collect();
        let read = texts
            .iter()
            .map(|(k, t)| {
                let v: Value = serde_json::from_str(t).expect("json_text writes JSON");
                (k.clone(), v)
            })
            .collect();
        (Mem::Text(texts), read)
    }
}

impl Mem {
    /// The keys, in order.
    pub fn keys(&self) -> Vec<Vec<u8>> {
        match self {
            Mem::Parsed(items) => items.iter().map(|(k, _)| k.clone()).collect(),
            Mem::Text(items) => items.iter().map(|(k, _)| k.clone()).collect(),
        }
    }

    /// Writes `value` at `key` (in key order), replacing what is there.
    pub fn put(&mut self, key: Vec<u8>, value: &Value, rng: &mut Rng) {
        match self {
            Mem::Parsed(items) => match items.binary_search_by(|(k, _)| k.cmp(&key)) {
                Ok(i) => items[i].1 = value.clone(),
                Err(i) => items.insert(i, (key, value.clone())),
            },
            Mem::Text(items) => {
                let text = json_text(value, rng);
                match items.binary_search_by(|(k, _)| k.cmp(&key)) {
                    Ok(i) => items[i].1 = text,
                    Err(i) => items.insert(i, (key, text)),
                }
            }
        }
    }

    /// Deletes the item at `key`.
    pub fn delete(&mut self, key: &[u8]) {
        match self {
            Mem::Parsed(items) => items.retain(|(k, _)| k != key),
            Mem::Text(items) => items.retain(|(k, _)| k != key),
        }
    }
}

impl Items for Mem {
    type Error = std::convert::Infallible;

    fn scan(&mut self, from: Option<&[u8]>, visit: &mut Visit<'_>) -> Result<(), Self::Error> {
        let after = |k: &[u8]| from.is_none_or(|f| k >= f);
        match self {
            Mem::Parsed(items) => {
                for (k, v) in items.iter().filter(|(k, _)| after(k)) {
                    if visit(k, &mut Parsed(v)).is_break() {
                        break;
                    }
                }
            }
            Mem::Text(items) => {
                for (k, t) in items.iter().filter(|(k, _)| after(k)) {
                    if visit(k, &mut TextItem(t)).is_break() {
                        break;
                    }
                }
            }
        }
        Ok(())
    }
}

/// `v` as JSON text: compact, pretty, or hand-written with random whitespace, `\u`
/// escapes (surrogate pairs above U+FFFF), `\/`, and (in objects) a duplicate key before
/// or after the real one (the last one wins, as in a full parse).
pub fn json_text(v: &Value, rng: &mut Rng) -> String {
    match rng.below(4) {
        0 => serde_json::to_string(v).expect("JSON"),
        1 => serde_json::to_string_pretty(v).expect("JSON"),
        _ => {
            let mut out = String::new();
            write_json(v, rng, &mut out);
            out
        }
    }
}

fn ws(rng: &mut Rng, out: &mut String) {
    match rng.below(8) {
        0 => out.push(' '),
        1 => out.push_str("\n  "),
        2 => out.push_str(" \t\r\n"),
        _ => {}
    }
}

fn write_str(s: &str, rng: &mut Rng, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '/' if rng.chance(50) => out.push_str("\\/"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c if rng.chance(15) => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{u:04X}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Values a duplicate key may hold: brackets and quotes inside strings, nesting.
const TRICKY: [&str; 6] = [
    r#""}""#,
    r#""\"}]""#,
    r#"{"a": "]", "b": [1, "{"]}"#,
    r#"[1, "[", {"q": "}"}, []]"#,
    "-1.5e3",
    "null",
];

fn write_json(v: &Value, rng: &mut Rng, out: &mut String) {
    match v {
        Value::Object(m) => {
            out.push('{');
            ws(rng, out);
            let mut first = true;
            // A duplicate key, first (skipped) or last (it wins): the reader must agree
            // with a full parse either way.
            let dup = (!m.is_empty() && rng.chance(20)).then(|| {
                let keys: Vec<&String> = m.keys().collect();
                ((*rng.pick(&keys)).clone(), rng.chance(50))
            });
            let write_dup = |k: &str, rng: &mut Rng, out: &mut String| {
                write_str(k, rng, out);
                out.push(':');
                out.push_str(TRICKY[rng.below(TRICKY.len())]);
            };
            if let Some((k, false)) = &dup {
                write_dup(k, rng, out);
                first = false;
            }
            for (k, x) in m {
                if !first {
                    out.push(',');
                }
                first = false;
                ws(rng, out);
                write_str(k, rng, out);
                ws(rng, out);
                out.push(':');
                ws(rng, out);
                write_json(x, rng, out);
                ws(rng, out);
            }
            if let Some((k, true)) = &dup {
                out.push(',');
                write_dup(k, rng, out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                ws(rng, out);
                write_json(x, rng, out);
            }
            ws(rng, out);
            out.push(']');
        }
        Value::String(s) => write_str(s, rng, out),
        other => out.push_str(&other.to_string()),
    }
}
