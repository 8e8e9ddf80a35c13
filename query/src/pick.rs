//! Reading some top-level properties of a JSON object from its text without parsing the
//! rest: a query that filters on `c.n` parses `n` of each item and skips over the others
//! (strings by a vectorised search for the closing quote, containers by bracket depth).

use serde::Deserialize;
use serde_json::{Map, Value};

/// The properties of the JSON object `text` whose names are in `names`, parsed; `None` when
/// `text` is not a JSON object. A name given twice in the text keeps its last value, as a
/// full parse does.
pub fn pick(text: &str, names: &[String]) -> Option<Map<String, Value>> {
    let b = text.as_bytes();
    let mut out = Map::new();
    let mut i = ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i = ws(b, i + 1);
    if b.get(i) == Some(&b'}') {
        return Some(out);
    }
    loop {
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let end = string_end(b, i)?;
        let raw = &text[i + 1..end - 1];
        let key = if raw.contains('\\') {
            serde_json::from_str::<String>(&text[i..end]).ok()?
        } else {
            raw.to_owned()
        };
        i = ws(b, end);
        if b.get(i) != Some(&b':') {
            return None;
        }
        i = ws(b, i + 1);
        if names.contains(&key) {
            let mut one = serde_json::Deserializer::from_str(&text[i..]);
            let v = Value::deserialize(&mut one).ok()?;
            i += value_end(&b[i..])?;
            out.insert(key, v);
        } else {
            i += value_end(&b[i..])?;
        }
        i = ws(b, i);
        match b.get(i) {
            Some(b',') => i = ws(b, i + 1),
            Some(b'}') => return Some(out),
            _ => return None,
        }
    }
}

fn ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\n' | b'\r' | b'\t') {
        i += 1;
    }
    i
}

/// The index just past the string that starts (with its quote) at `start`.
fn string_end(b: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    loop {
        // `get`: an escape's backslash may be the text's last byte.
        i += memchr::memchr2(b'"', b'\\', b.get(i..)?)?;
        if b[i] == b'\\' {
            i += 2;
        } else {
            return Some(i + 1);
        }
    }
}

/// The length of the JSON value at the start of `b`.
fn value_end(b: &[u8]) -> Option<usize> {
    match b.first()? {
        b'"' => string_end(b, 0),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut i = 0;
            while i < b.len() {
                match b[i] {
                    b'"' => {
                        i = string_end(b, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            None
        }
        _ => {
            let n = b
                .iter()
                .position(|c| matches!(c, b',' | b'}' | b']' | b' ' | b'\n' | b'\r' | b'\t'))
                .unwrap_or(b.len());
            (n > 0).then_some(n)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn picks_the_named_properties_and_skips_the_rest() {
        let doc = json!({"a": 1, "pad": "x\"y\\z}{", "nested": {"a": [1, {"b": "]"}]}, "b": [true, null], "c": -1.5e3, "d\u{e9}": "é"});
        let text = doc.to_string();
        for wanted in [
            vec!["a"],
            vec!["b", "c"],
            vec!["nested"],
            vec!["dé", "missing"],
            vec![],
        ] {
            let got = pick(&text, &names(&wanted)).expect("an object");
            let expected: Map<String, Value> = doc
                .as_object()
                .expect("object")
                .iter()
                .filter(|(k, _)| wanted.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            assert_eq!(got, expected, "{wanted:?}");
        }
        // Whitespace as people write it, escapes in names, the last of a repeated name.
        let text = "{ \"a\" : 1 ,\n \"k\\u0065y\": [ 1 , 2 ] , \"a\": 2 }";
        let got = pick(text, &names(&["a", "key"])).expect("an object");
        assert_eq!(Value::Object(got), json!({"a": 2, "key": [1, 2]}));
        assert_eq!(pick("{}", &names(&["a"])).map(|m| m.len()), Some(0));
    }

    #[test]
    fn text_that_is_not_an_object_is_none() {
        for text in ["[1]", "1", "", "{\"a\" 1}", "{\"a\": 1", "{\"a\": \"open}"] {
            assert!(pick(text, &names(&["a"])).is_none(), "{text}");
        }
    }
}
