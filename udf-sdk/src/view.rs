//! A zero-copy view of the ABI input: finds the fields a resolver asks for without decoding
//! the rest. Nothing is allocated but the list of versions, and a value is only decoded when a
//! resolver asks for it, so a resolver that reads one field of each version costs little more
//! than one pass over the input's bytes.
//!
//! ```
//! use converge_udf_sdk::view::ConflictView;
//!
//! let input = br#"{"abi":1,"container":"orders","id":"o","partitionKey":"p","versions":[
//!   {"item":{"id":"o","version":3,"lines":[1,2]},"deleted":false,"region":"west","timestamp":9,"logical":0},
//!   {"item":null,"deleted":true,"region":"east","timestamp":8,"logical":1}]}"#;
//! let c = ConflictView::parse(input).expect("valid input");
//! assert_eq!(c.versions.len(), 2);
//! assert_eq!(c.versions[0].item.and_then(|i| i.get("version")).and_then(|v| v.as_f64()), Some(3.0));
//! assert!(c.versions[1].deleted && c.versions[1].item.is_none());
//! assert_eq!(c.versions[1].region.as_str().as_deref(), Some("east"));
//! assert_eq!(c.id.as_str().as_deref(), Some("o"));
//! ```
//!
//! The view trusts the host to send valid JSON (it does); on malformed bytes it returns `None`
//! or an error rather than panicking, but it does not report every kind of malformation.

use std::borrow::Cow;

/// One JSON value in the input, not decoded: the bytes of exactly that value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Raw<'a>(&'a [u8]);

impl<'a> Raw<'a> {
    /// The value's JSON text.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.0
    }

    /// Whether the value is `null`.
    pub fn is_null(&self) -> bool {
        self.0 == b"null"
    }

    /// The value as a boolean, if it is one.
    pub fn as_bool(&self) -> Option<bool> {
        match self.0 {
            b"true" => Some(true),
            b"false" => Some(false),
            _ => None,
        }
    }

    /// The value as a number, if it is one.
    pub fn as_f64(&self) -> Option<f64> {
        match self.0.first()? {
            b'-' | b'0'..=b'9' => std::str::from_utf8(self.0).ok()?.parse().ok(),
            _ => None,
        }
    }

    /// The value as an unsigned integer, if it is one.
    pub fn as_u64(&self) -> Option<u64> {
        std::str::from_utf8(self.0).ok()?.parse().ok()
    }

    /// The value as a string, if it is one (borrowed unless it has escapes).
    pub fn as_str(&self) -> Option<Cow<'a, str>> {
        let inner = self.0.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
        if !inner.contains(&b'\\') {
            return std::str::from_utf8(inner).ok().map(Cow::Borrowed);
        }
        serde_json::from_slice::<String>(self.0)
            .ok()
            .map(Cow::Owned)
    }

    /// The member `key` of an object (`None` if this is not an object or has no such key).
    pub fn get(&self, key: &str) -> Option<Raw<'a>> {
        self.members().find(|(k, _)| k.is(key)).map(|(_, v)| v)
    }

    /// The members of an object, in order (empty if this is not an object).
    pub fn members(&self) -> Members<'a> {
        Members {
            bytes: self.0,
            pos: if self.0.first() == Some(&b'{') {
                1
            } else {
                self.0.len()
            },
        }
    }

    /// The elements of an array, in order (empty if this is not an array).
    pub fn elements(&self) -> Elements<'a> {
        Elements {
            bytes: self.0,
            pos: if self.0.first() == Some(&b'[') {
                1
            } else {
                self.0.len()
            },
        }
    }

    /// Decodes the value fully.
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> serde_json::Result<T> {
        serde_json::from_slice(self.0)
    }
}

/// An object key, as written (escapes not decoded).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Key<'a>(&'a [u8]);

impl Key<'_> {
    /// Whether the key is `name` (decoding escapes when the key has any).
    pub fn is(&self, name: &str) -> bool {
        if !self.0.contains(&b'\\') {
            return self.0 == name.as_bytes();
        }
        let quoted = [b"\"", self.0, b"\""].concat();
        serde_json::from_slice::<String>(&quoted).is_ok_and(|k| k == name)
    }
}

/// See [`Raw::members`].
#[derive(Clone, Debug)]
pub struct Members<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for Members<'a> {
    type Item = (Key<'a>, Raw<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        let b = self.bytes;
        let mut i = skip_ws(b, self.pos);
        if b.get(i) == Some(&b',') {
            i = skip_ws(b, i + 1);
        }
        if b.get(i) != Some(&b'"') {
            self.pos = b.len();
            return None;
        }
        let key_end = skip_string(b, i + 1)?;
        let key = Key(b.get(i + 1..key_end - 1)?);
        i = skip_ws(b, key_end);
        if b.get(i) != Some(&b':') {
            self.pos = b.len();
            return None;
        }
        let start = skip_ws(b, i + 1);
        let Some(end) = skip_value(b, start) else {
            self.pos = b.len();
            return None;
        };
        self.pos = end;
        Some((key, Raw(b.get(start..end)?)))
    }
}

/// See [`Raw::elements`].
#[derive(Clone, Debug)]
pub struct Elements<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for Elements<'a> {
    type Item = Raw<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        let b = self.bytes;
        let mut i = skip_ws(b, self.pos);
        if b.get(i) == Some(&b',') {
            i = skip_ws(b, i + 1);
        }
        match b.get(i) {
            None | Some(b']') => {
                self.pos = b.len();
                None
            }
            Some(_) => {
                let Some(end) = skip_value(b, i) else {
                    self.pos = b.len();
                    return None;
                };
                self.pos = end;
                Some(Raw(b.get(i..end)?))
            }
        }
    }
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\n' | b'\r' | b'\t') = b.get(i) {
        i += 1;
    }
    i
}

// Skipping runs eight bytes at a time: a `u64` word is tested for the bytes that matter with
// the "has zero byte" trick. In `flag` only the lowest flagged byte is exact (false positives
// appear only above a true match), which is all a scan for the next quote needs; `eq` is exact.
const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Flags the bytes of `x` equal to `byte` (the lowest flag is exact).
#[inline(always)]
fn flag(x: u64, byte: u8) -> u64 {
    let v = x ^ (ONES * byte as u64);
    v.wrapping_sub(ONES) & !v & HIGHS
}

#[inline(always)]
fn word(b: &[u8], i: usize) -> Option<u64> {
    let w: [u8; 8] = b.get(i..i + 8)?.try_into().ok()?;
    Some(u64::from_le_bytes(w))
}

/// From just after an opening quote to just after the closing one.
fn skip_string(b: &[u8], mut i: usize) -> Option<usize> {
    loop {
        while let Some(x) = word(b, i) {
            let m = flag(x, b'"') | flag(x, b'\\');
            if m != 0 {
                i += (m.trailing_zeros() / 8) as usize;
                break;
            }
            i += 8;
        }
        match b.get(i)? {
            b'"' => return Some(i + 1),
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
}

/// Flags exactly the bytes of `x` equal to `byte`.
#[inline(always)]
fn eq(x: u64, byte: u8) -> u64 {
    let v = x ^ (ONES * byte as u64);
    !((v & !HIGHS).wrapping_add(!HIGHS) | v) & HIGHS
}

/// How many bytes `eq` flagged: `popcnt` where the target has it (wasm always does), else a
/// multiply (baseline x86-64 would fall back to a slow software popcount).
#[inline(always)]
fn count(flags: u64) -> usize {
    if cfg!(any(target_arch = "wasm32", target_feature = "popcnt")) {
        flags.count_ones() as usize
    } else {
        ((flags >> 7).wrapping_mul(ONES) >> 56) as usize
    }
}

/// From an opening `{` or `[` to just after the bracket that closes it. Eight bytes at a
/// time: the quotes' prefix parity marks the bytes inside strings, and brackets outside them
/// only change the depth, unless the word could close the container or holds a backslash;
/// then that word goes byte by byte. The host's JSON is trusted to be well nested (only the
/// depth is tracked); OR-ing 0x20 into every byte maps `[` onto `{` and `]` onto `}`.
fn skip_container(b: &[u8], start: usize) -> Option<usize> {
    let (mut i, mut depth, mut in_string) = (start + 1, 1usize, false);
    loop {
        if let Some(x) = word(b, i)
            && eq(x, b'\\') == 0
        {
            let quotes = eq(x, b'"');
            let mut inside = quotes ^ (quotes << 8);
            inside ^= inside << 16;
            inside ^= inside << 32;
            if in_string {
                inside ^= HIGHS;
            }
            let outside = !inside & HIGHS;
            let folded = x | (ONES * 0x20);
            let opens = count(eq(folded, b'{') & outside);
            let closes = count(eq(folded, b'}') & outside);
            if closes < depth {
                depth = depth + opens - closes;
                in_string = inside >> 63 == 1;
                i += 8;
                continue;
            }
        }
        let stop = i + 8;
        while i < stop {
            let c = *b.get(i)?;
            if in_string {
                match c {
                    b'"' => in_string = false,
                    b'\\' => i += 1,
                    _ => {}
                }
            } else {
                match c {
                    b'"' => in_string = true,
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
            }
            i += 1;
        }
    }
}

/// From the first byte of a value to just after its last.
fn skip_value(b: &[u8], start: usize) -> Option<usize> {
    let mut i = start;
    match b.get(i)? {
        b'"' => skip_string(b, i + 1),
        b'{' | b'[' => skip_container(b, i),
        _ => {
            while let Some(c) = b.get(i) {
                if matches!(c, b',' | b'}' | b']' | b' ' | b'\n' | b'\r' | b'\t') {
                    break;
                }
                i += 1;
            }
            (i > start).then_some(i)
        }
    }
}

/// One version, as located in the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VersionView<'a> {
    /// The body, `None` for a tombstone.
    pub item: Option<Raw<'a>>,
    /// Whether this version is a delete.
    pub deleted: bool,
    /// The writing region (a JSON string).
    pub region: Raw<'a>,
    /// HLC physical time, ms.
    pub timestamp: u64,
    /// HLC logical counter.
    pub logical: u32,
}

/// The conflict, as located in the input: see the [module](self) documentation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConflictView<'a> {
    /// ABI version of the input.
    pub abi: i32,
    /// Container name (a JSON string).
    pub container: Raw<'a>,
    /// Item id (a JSON string).
    pub id: Raw<'a>,
    /// Partition key value.
    pub partition_key: Raw<'a>,
    /// The siblings, the LWW winner first.
    pub versions: Vec<VersionView<'a>>,
}

impl<'a> ConflictView<'a> {
    /// Locates the fields of ABI input in one pass over its bytes; the error says what is
    /// missing or malformed.
    pub fn parse(input: &'a [u8]) -> Result<Self, String> {
        let mut c = Cursor { b: input, i: 0 };
        let (mut abi, mut container, mut id, mut pk) = (None, None, None, None);
        let mut versions = None;
        c.object(|key, c| {
            match key.0 {
                b"abi" => abi = c.value()?.as_u64(),
                b"container" => container = Some(c.value()?),
                b"id" => id = Some(c.value()?),
                b"partitionKey" => pk = Some(c.value()?),
                b"versions" => {
                    let mut list = Vec::new();
                    c.array(|c| {
                        list.push(VersionView::parse(c)?);
                        Ok(())
                    })?;
                    versions = Some(list);
                }
                _ => {
                    c.value()?;
                }
            }
            Ok(())
        })?;
        let missing = |f: &str| format!("missing field `{f}`");
        Ok(ConflictView {
            abi: abi
                .and_then(|a| i32::try_from(a).ok())
                .ok_or_else(|| missing("abi"))?,
            container: container.ok_or_else(|| missing("container"))?,
            id: id.ok_or_else(|| missing("id"))?,
            partition_key: pk.ok_or_else(|| missing("partitionKey"))?,
            versions: versions.ok_or_else(|| missing("versions"))?,
        })
    }

    /// Whether any version is a delete (Cosmos's `isTombstone`).
    pub fn is_tombstone(&self) -> bool {
        self.versions.iter().any(|v| v.deleted)
    }
}

impl<'a> VersionView<'a> {
    fn parse(c: &mut Cursor<'a>) -> Result<Self, String> {
        let (mut item, mut deleted, mut region, mut ts, mut logical) =
            (None, None, None, None, None);
        c.object(|key, c| {
            let v = c.value()?;
            match key.0 {
                b"item" => item = Some(v),
                b"deleted" => deleted = v.as_bool(),
                b"region" => region = Some(v),
                b"timestamp" => ts = v.as_u64(),
                b"logical" => logical = v.as_u64().and_then(|l| u32::try_from(l).ok()),
                _ => {}
            }
            Ok(())
        })?;
        let missing = |f: &str| format!("a version lacks `{f}`");
        let item = item.ok_or_else(|| missing("item"))?;
        Ok(VersionView {
            item: (!item.is_null()).then_some(item),
            deleted: deleted.ok_or_else(|| missing("deleted"))?,
            region: region.ok_or_else(|| missing("region"))?,
            timestamp: ts.ok_or_else(|| missing("timestamp"))?,
            logical: logical.ok_or_else(|| missing("logical"))?,
        })
    }
}

/// A position in the input, for the one-pass parse of [`ConflictView`].
struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn error(&self, what: &str) -> String {
        format!("malformed input at byte {}: {what}", self.i)
    }

    fn expect(&mut self, byte: u8) -> Result<(), String> {
        self.i = skip_ws(self.b, self.i);
        if self.b.get(self.i) == Some(&byte) {
            self.i += 1;
            Ok(())
        } else {
            Err(self.error(&format!("expected `{}`", byte as char)))
        }
    }

    /// The next value, skipped over.
    fn value(&mut self) -> Result<Raw<'a>, String> {
        let start = skip_ws(self.b, self.i);
        let end = skip_value(self.b, start).ok_or_else(|| self.error("expected a value"))?;
        self.i = end;
        Ok(Raw(&self.b[start..end]))
    }

    /// Whether the next byte closes the container (consuming it) or a comma follows.
    fn close(&mut self, close: u8, first: bool) -> Result<bool, String> {
        self.i = skip_ws(self.b, self.i);
        match self.b.get(self.i) {
            Some(&c) if c == close => {
                self.i += 1;
                Ok(true)
            }
            Some(b',') if !first => {
                self.i += 1;
                Ok(false)
            }
            _ if first => Ok(false),
            _ => Err(self.error(&format!("expected `,` or `{}`", close as char))),
        }
    }

    /// Calls `member` with each key, the cursor before its value (which `member` consumes).
    fn object(
        &mut self,
        mut member: impl FnMut(Key<'a>, &mut Self) -> Result<(), String>,
    ) -> Result<(), String> {
        self.expect(b'{')?;
        let mut first = true;
        while !self.close(b'}', first)? {
            first = false;
            self.i = skip_ws(self.b, self.i);
            if self.b.get(self.i) != Some(&b'"') {
                return Err(self.error("expected a key"));
            }
            let end =
                skip_string(self.b, self.i + 1).ok_or_else(|| self.error("unterminated key"))?;
            let key = Key(&self.b[self.i + 1..end - 1]);
            self.i = end;
            self.expect(b':')?;
            member(key, self)?;
        }
        Ok(())
    }

    /// Calls `element` with the cursor before each element (which `element` consumes).
    fn array(
        &mut self,
        mut element: impl FnMut(&mut Self) -> Result<(), String>,
    ) -> Result<(), String> {
        self.expect(b'[')?;
        let mut first = true;
        while !self.close(b']', first)? {
            first = false;
            element(self)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_located_exactly() {
        let doc = br#" { "a" : [1, {"x": "}]\"" }, "s"] , "b":-2.5e3,"c" :"q\"uote","d":null,"e\u0066":true } "#;
        let root = Raw(doc.trim_ascii());
        let a = root.get("a").expect("a");
        assert_eq!(a.as_bytes(), br#"[1, {"x": "}]\"" }, "s"]"#);
        let elems: Vec<_> = a.elements().collect();
        assert_eq!(elems.len(), 3);
        assert_eq!(
            elems[1].get("x").and_then(|x| x.as_str()).as_deref(),
            Some("}]\"")
        );
        assert_eq!(root.get("b").and_then(|b| b.as_f64()), Some(-2500.0));
        assert_eq!(
            root.get("c").and_then(|c| c.as_str()).as_deref(),
            Some("q\"uote")
        );
        assert!(root.get("d").expect("d").is_null());
        assert_eq!(root.get("ef").and_then(|e| e.as_bool()), Some(true));
        assert!(root.get("zz").is_none());
    }

    #[test]
    fn containers_end_where_serde_json_says() {
        // Strings with brackets, escapes and quotes at every offset within a word.
        let mut cases = vec![
            r#"{"a":"}","b":[1,{"c":"]\\\""}],"d":{}}"#.to_owned(),
            r#"[[[[[[[[[[]]]]]]]]]]"#.to_owned(),
            r#"{"k":"\\"}"#.to_owned(),
        ];
        for pad in 0..17 {
            let p = "x".repeat(pad);
            cases.push(format!(
                r#"{{"{p}":"{p}}}]\"{p}","n":[{pad},"{p}[",{{"q":"\\{p}"}}]}}"#
            ));
        }
        for doc in cases {
            let v: serde_json::Value = serde_json::from_str(&doc).expect("test case is JSON");
            let padded = format!("{doc} , 1");
            assert_eq!(skip_value(padded.as_bytes(), 0), Some(doc.len()), "{doc}");
            assert_eq!(
                Raw(doc.as_bytes()).parse::<serde_json::Value>().ok(),
                Some(v)
            );
        }
    }

    #[test]
    fn malformed_bytes_give_none_not_a_panic() {
        for bad in [
            &b""[..],
            b"{",
            b"{\"a\"",
            b"{\"a\":",
            b"[1,",
            b"\"abc",
            b"{\"a\" 1}",
            b"}}}",
            b"\\",
        ] {
            let r = Raw(bad);
            let _ = r.get("a");
            let _ = r.elements().count();
            let _ = r.as_str();
            let _ = ConflictView::parse(bad);
        }
        assert!(ConflictView::parse(b"{}").is_err());
    }
}
