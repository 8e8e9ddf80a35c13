//! The durable store against a plain model: arbitrary sequences of container and item
//! operations — creates, upserts, replaces and deletes with and without `If-Match`, reads,
//! paged listings, the change feed, drops and re-creations, invalid items, and closing and
//! reopening the store — run on a redb-backed [`Store`] and on a few maps. After every
//! operation the store's answer (the value or the kind of error) must be the model's; after
//! every reopen and at the end the whole content must be; and a fresh region that pulls this
//! one's log must end up showing the same items.

use arbitrary::{Arbitrary, Unstructured};
use converge_core::{Change, Cursor, Error, PartitionKey, Store, StoreOptions};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::path::PathBuf;

const DB: &str = "db";
/// Operations per run, at most: enough to reach deep states, few enough for many runs.
const MAX_OPS: usize = 96;

/// A partition key value: mostly `"a"` or `"b"`, sometimes `1` or `null`, rarely missing
/// (refused under the path `/pk`).
#[derive(Arbitrary, Debug, Clone, Copy)]
struct Pk(u8);

impl Pk {
    fn value(self) -> Option<Value> {
        match self.0 % 16 {
            15 => None,
            14 => Some(json!(1)),
            13 => Some(Value::Null),
            n if n % 2 == 0 => Some(json!("a")),
            _ => Some(json!("b")),
        }
    }
}

/// An item id: one of four, or rarely one the store refuses (empty, too long, with a
/// forbidden character).
#[derive(Arbitrary, Debug, Clone, Copy)]
struct Id(u8);

impl Id {
    fn text(self) -> String {
        match self.0 {
            0..240 => format!("i{}", self.0 % 4),
            240..244 => String::new(),
            244..248 => "a/b".into(),
            248..252 => "why?".into(),
            _ => "x".repeat(256),
        }
    }

    fn valid(self) -> bool {
        self.0 < 240
    }
}

/// An item body.
#[derive(Arbitrary, Debug, Clone)]
struct Doc {
    id: Id,
    pk: Pk,
    v: u16,
    /// Bit 0: a system property the user copied from a read (the store drops it); all bits: a
    /// body that is not an object at all.
    shape: u8,
}

impl Doc {
    fn not_object(&self) -> bool {
        self.shape == u8::MAX
    }

    fn body(&self) -> Value {
        if self.not_object() {
            return json!([self.v]);
        }
        let mut o = Map::new();
        o.insert("id".into(), self.id.text().into());
        if let Some(pk) = self.pk.value() {
            o.insert("pk".into(), pk);
        }
        o.insert("v".into(), self.v.into());
        if self.shape & 1 == 1 {
            o.insert("_etag".into(), "\"stale\"".into());
            o.insert("_ts".into(), 1.into());
        }
        Value::Object(o)
    }
}

/// An item to delete or read: under the path `/id` its partition key is its id.
#[derive(Arbitrary, Debug, Clone, Copy)]
struct Target {
    id: Id,
    pk: Pk,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Precondition {
    None,
    Current,
    /// An etag the item had before, or another item's.
    Stale(u8),
    Any,
    Garbage,
}

#[derive(Arbitrary, Debug, Clone)]
enum Op {
    CreateContainer {
        c: u8,
        pk_is_id: bool,
    },
    DropContainer {
        c: u8,
    },
    Create {
        c: u8,
        doc: Doc,
    },
    Upsert {
        c: u8,
        doc: Doc,
    },
    /// Replaces the item of `doc`'s id, or rarely (`other_id` 255) names another id.
    Replace {
        c: u8,
        other_id: u8,
        doc: Doc,
        if_match: Precondition,
    },
    Delete {
        c: u8,
        target: Target,
        if_match: Precondition,
    },
    Read {
        c: u8,
        target: Target,
    },
    List {
        c: u8,
        pk: Option<Pk>,
        page: u8,
    },
    Changes {
        c: u8,
        page: u8,
    },
    /// Closes and reopens the store when `now` is below 64: a quarter of the time, as a close
    /// and an open of redb cost more than the rest of a run.
    Reopen {
        now: u8,
    },
}

/// A live item in the model.
#[derive(Debug, Clone, PartialEq)]
struct Entry {
    body: Value,
    etag: String,
}

/// One container in the model: its partition key path, its items, and the order of their
/// latest changes (the change feed: each key once, at its latest change).
#[derive(Debug, Default)]
struct Container {
    pk_path: String,
    items: BTreeMap<(String, String), Entry>,
    changed: BTreeMap<(String, String), u64>,
}

#[derive(Debug, Default)]
struct Model {
    containers: BTreeMap<String, Container>,
    /// Every etag handed out, for stale preconditions.
    etags: Vec<String>,
    seq: u64,
}

/// The kind of an error, which is what the model predicts.
fn kind(e: &Error) -> &'static str {
    match e {
        Error::InvalidInput(_) => "invalid input",
        Error::TooLarge { .. } => "too large",
        Error::UnknownContainer { .. } => "unknown container",
        Error::NotFound { .. } => "not found",
        Error::AlreadyExists { .. } => "already exists",
        Error::PreconditionFailed { .. } => "precondition failed",
        Error::InvalidDefinition(_) => "invalid definition",
        Error::InvalidToken(_) => "invalid token",
        other => panic!("the store failed: {other}"),
    }
}

fn user_part(body: &Value) -> Value {
    let mut b = body.clone();
    if let Some(o) = b.as_object_mut() {
        for p in ["_ts", "_etag", "_lsn"] {
            o.remove(p);
        }
    }
    b
}

fn name(c: u8) -> String {
    format!("c{}", c % 2)
}

fn pk_json(pk: Pk) -> String {
    pk.value().unwrap_or(Value::Null).to_string()
}

/// A directory for one run, removed afterwards (also when the check panics).
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        // tmpfs where there is one: fsyncs are cheap there and the fuzzer runs faster.
        let shm = PathBuf::from("/dev/shm");
        let base = if shm.is_dir() {
            shm
        } else {
            std::env::temp_dir()
        };
        let n = N.fetch_add(1, Ordering::Relaxed);
        Scratch(base.join(format!("converge-store-model-{}-{n}", std::process::id())))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn open(dir: &Scratch) -> Store {
    Store::open(&dir.0, "model", StoreOptions::new())
        .unwrap_or_else(|e| panic!("the store does not open: {e}"))
}

/// Runs the operations `data` decodes to on a durable store and on the model, comparing them.
pub fn check(data: &[u8]) {
    run(data);
}

/// As [`check`], returning how many operations of each kind ended how (`"Replace: precondition
/// failed"`, `"Create: ok"`, `"Reopen: ok"`...), to show what a corpus reaches.
pub fn run(data: &[u8]) -> BTreeMap<String, usize> {
    let mut u = Unstructured::new(data);
    let ops: Vec<Op> = crate::decode_many(&mut u, MAX_OPS);
    let dir = Scratch::new();
    let mut store = open(&dir);
    let mut model = Model::default();
    let mut last_lsn = 0u64;
    let mut reached = BTreeMap::new();
    for (step, op) in ops.iter().enumerate() {
        let context = format!("step {step}: {op:?}");
        let outcome = if let Op::Reopen { now } = op {
            if *now >= 64 {
                continue;
            }
            drop(store);
            store = open(&dir);
            compare_all(&store, &model, &context);
            Ok(())
        } else {
            apply(&store, &mut model, op, &mut last_lsn, &context)
        };
        let what = format!("{op:?}");
        let what = what.split([' ', '{']).next().unwrap_or_default();
        *reached
            .entry(format!("{what}: {}", outcome.err().unwrap_or("ok")))
            .or_insert(0) += 1;
    }
    compare_all(&store, &model, "at the end");
    replicate_and_compare(&store, &model);
    reached
}

/// Applies one operation to both and compares the answers; returns the model's prediction.
fn apply(
    store: &Store,
    model: &mut Model,
    op: &Op,
    last_lsn: &mut u64,
    context: &str,
) -> Result<(), &'static str> {
    match op {
        Op::CreateContainer { c, pk_is_id } => {
            let path = if *pk_is_id { "/id" } else { "/pk" };
            let got = store.create_container(DB, &name(*c), path);
            let expected = match model.containers.get(&name(*c)) {
                Some(existing) if existing.pk_path != path => Err("invalid definition"),
                _ => Ok(()),
            };
            let _ = same(got.as_ref().map(|_| ()), expected, context);
            model
                .containers
                .entry(name(*c))
                .or_insert_with(|| Container {
                    pk_path: path.into(),
                    ..Container::default()
                });
            expected
        }
        Op::DropContainer { c } => {
            let got = store.drop_container(DB, &name(*c));
            let expected = match model.containers.remove(&name(*c)) {
                Some(_) => Ok(()),
                None => Err("unknown container"),
            };
            same(got.as_ref().map(|_| ()), expected, context)
        }
        Op::Create { c, doc } | Op::Upsert { c, doc } => {
            let create = matches!(op, Op::Create { .. });
            let got = if create {
                store.create_item(DB, &name(*c), doc.body())
            } else {
                store.upsert_item(DB, &name(*c), doc.body()).map(|(i, _)| i)
            };
            let what = if create { "create" } else { "upsert" };
            let expected = predict_write(model, *c, doc, what, None);
            record_write(model, *c, doc, got, expected, last_lsn, context)
        }
        Op::Replace {
            c,
            other_id,
            doc,
            if_match,
        } => {
            let id = if *other_id == u8::MAX {
                Id(doc.id.0.wrapping_add(1))
            } else {
                doc.id
            };
            let key = model.containers.get(&name(*c)).map(|k| model_key(k, doc));
            let etag = key
                .as_ref()
                .and_then(|key| precondition(model, *c, key, *if_match));
            let got = store.replace_item(DB, &name(*c), &id.text(), doc.body(), etag.as_deref());
            let mut expected = predict_write(model, *c, doc, "replace", Some(id));
            if let (Ok(()), Some(key)) = (expected, &key) {
                expected = check_etag(model, *c, key, etag.as_deref());
            }
            record_write(model, *c, doc, got, expected, last_lsn, context)
        }
        Op::Delete {
            c,
            target,
            if_match,
        } => {
            let (key, model_key) = target_key(model, *c, *target);
            let etag = precondition(model, *c, &model_key, *if_match);
            let got = store.delete_item(DB, &name(*c), &key, &model_key.1, etag.as_deref());
            let expected = match model.containers.get(&name(*c)) {
                None => Err("unknown container"),
                Some(k) if !k.items.contains_key(&model_key) => Err("not found"),
                Some(_) => check_etag(model, *c, &model_key, etag.as_deref()),
            };
            let _ = same(got.as_ref().map(|_| ()), expected, context);
            if expected.is_ok() {
                let seq = next(model);
                let k = model
                    .containers
                    .get_mut(&name(*c))
                    .unwrap_or_else(|| unreachable!());
                k.items.remove(&model_key);
                k.changed.insert(model_key, seq);
            }
            expected
        }
        Op::Read { c, target } => {
            let (key, model_key) = target_key(model, *c, *target);
            let got = store.read_item(DB, &name(*c), &key, &model_key.1);
            match model.containers.get(&name(*c)) {
                None => same(got.as_ref().map(|_| ()), Err("unknown container"), context),
                Some(k) => match (k.items.get(&model_key), got) {
                    (None, got) => same(got.as_ref().map(|_| ()), Err("not found"), context),
                    (Some(e), Ok(item)) => {
                        assert_eq!(user_part(&item.body), e.body, "{context}: body");
                        assert_eq!(item.etag, e.etag, "{context}: etag");
                        assert_eq!(item.body["_etag"], json!(e.etag), "{context}: _etag");
                        Ok(())
                    }
                    (Some(e), Err(err)) => panic!("{context}: {e:?} is not read: {err}"),
                },
            }
        }
        Op::List { c, pk, page } => {
            let got = list(store, &name(*c), *pk, usize::from(page % 5) + 1);
            match model.containers.get(&name(*c)) {
                None => same(got.as_ref().map(|_| ()), Err("unknown container"), context),
                Some(k) => {
                    let got = got.unwrap_or_else(|e| panic!("{context}: {e}"));
                    let expected: Vec<&Entry> = k
                        .items
                        .iter()
                        .filter(|((p, _), _)| pk.is_none_or(|pk| *p == pk_json(pk)))
                        .map(|(_, e)| e)
                        .collect();
                    compare_listing(&got, &expected, &k.pk_path, context);
                    Ok(())
                }
            }
        }
        Op::Changes { c, page } => {
            let got = changes(store, &name(*c), usize::from(page % 7) + 1);
            match model.containers.get(&name(*c)) {
                None => same(got.as_ref().map(|_| ()), Err("unknown container"), context),
                Some(k) => {
                    let got = got.unwrap_or_else(|e| panic!("{context}: {e}"));
                    compare_changes(&got, k, context);
                    Ok(())
                }
            }
        }
        Op::Reopen { .. } => Ok(()),
    }
}

fn next(model: &mut Model) -> u64 {
    model.seq += 1;
    model.seq
}

/// Asserts the store's answer is the model's; returns the model's.
fn same(
    got: Result<(), &Error>,
    expected: Result<(), &'static str>,
    context: &str,
) -> Result<(), &'static str> {
    match (got, expected) {
        (Ok(()), Ok(())) => {}
        (Err(e), Err(k)) => assert_eq!(kind(e), k, "{context}: {e}"),
        (Ok(()), Err(k)) => panic!("{context}: succeeded, the model says {k}"),
        (Err(e), Ok(())) => panic!("{context}: failed with {e}, the model says it succeeds"),
    }
    expected
}

/// What a create, upsert or replace (of the item `replaced`) with `doc` should do, before
/// preconditions.
fn predict_write(
    model: &Model,
    c: u8,
    doc: &Doc,
    what: &str,
    replaced: Option<Id>,
) -> Result<(), &'static str> {
    let Some(k) = model.containers.get(&name(c)) else {
        return Err("unknown container");
    };
    // The partition key path "/id" always finds a value; "/pk" needs the field.
    if doc.not_object() || !doc.id.valid() || (k.pk_path == "/pk" && doc.pk.value().is_none()) {
        return Err("invalid input");
    }
    if replaced.is_some_and(|id| id.text() != doc.id.text()) {
        return Err("invalid input");
    }
    let exists = k.items.contains_key(&model_key(k, doc));
    match what {
        "create" if exists => Err("already exists"),
        "replace" if !exists => Err("not found"),
        _ => Ok(()),
    }
}

/// The partition key to send for `target`, and the model's key of the item it names.
fn target_key(model: &Model, c: u8, target: Target) -> (PartitionKey, (String, String)) {
    let id = target.id.text();
    let pk = match model.containers.get(&name(c)) {
        Some(k) if k.pk_path == "/id" => Value::String(id.clone()),
        _ => target.pk.value().unwrap_or(Value::Null),
    };
    let key = PartitionKey::from_value(&pk).unwrap_or_else(|e| panic!("{e}"));
    (key, (pk.to_string(), id))
}

fn model_key(k: &Container, doc: &Doc) -> (String, String) {
    let pk = if k.pk_path == "/id" {
        Value::String(doc.id.text()).to_string()
    } else {
        pk_json(doc.pk)
    };
    (pk, doc.id.text())
}

/// The etag an operation on the item `key` sends.
fn precondition(model: &Model, c: u8, key: &(String, String), p: Precondition) -> Option<String> {
    match p {
        Precondition::None => None,
        Precondition::Any => Some("*".into()),
        Precondition::Garbage => Some("\"not-an-etag\"".into()),
        Precondition::Current => model
            .containers
            .get(&name(c))
            .and_then(|k| k.items.get(key))
            .map(|e| e.etag.clone()),
        Precondition::Stale(n) if !model.etags.is_empty() => {
            Some(model.etags[usize::from(n) % model.etags.len()].clone())
        }
        Precondition::Stale(_) => Some("\"0\"".into()),
    }
}

/// Whether `etag` lets a write of the item `key` through.
fn check_etag(
    model: &Model,
    c: u8,
    key: &(String, String),
    etag: Option<&str>,
) -> Result<(), &'static str> {
    let current = model
        .containers
        .get(&name(c))
        .and_then(|k| k.items.get(key))
        .map(|e| e.etag.as_str());
    match etag {
        None | Some("*") => Ok(()),
        Some(e) if Some(e) == current => Ok(()),
        Some(_) => Err("precondition failed"),
    }
}

fn record_write(
    model: &mut Model,
    c: u8,
    doc: &Doc,
    got: Result<converge_core::Item, Error>,
    expected: Result<(), &'static str>,
    last_lsn: &mut u64,
    context: &str,
) -> Result<(), &'static str> {
    let _ = same(got.as_ref().map(|_| ()), expected, context);
    let Ok(item) = got else { return expected };
    assert!(
        item.lsn > *last_lsn,
        "{context}: _lsn {} after {last_lsn}",
        item.lsn
    );
    *last_lsn = item.lsn;
    assert!(
        !model.etags.contains(&item.etag),
        "{context}: etag {} handed out twice",
        item.etag
    );
    let body = user_part(&item.body);
    assert_eq!(body, user_part(&doc.body()), "{context}: the written body");
    let seq = next(model);
    model.etags.push(item.etag.clone());
    let k = model
        .containers
        .get_mut(&name(c))
        .unwrap_or_else(|| unreachable!());
    let key = model_key(k, doc);
    k.items.insert(
        key.clone(),
        Entry {
            body,
            etag: item.etag,
        },
    );
    k.changed.insert(key, seq);
    expected
}

fn list(
    store: &Store,
    container: &str,
    pk: Option<Pk>,
    page: usize,
) -> Result<Vec<converge_core::Item>, Error> {
    let key = pk
        .map(|pk| PartitionKey::from_value(&pk.value().unwrap_or(Value::Null)))
        .transpose()?;
    let mut out = Vec::new();
    let mut token = None;
    loop {
        let p = store.list_items(DB, container, key.as_ref(), token.as_deref(), page)?;
        assert!(
            p.items.len() <= page,
            "a page of {page} held {}",
            p.items.len()
        );
        out.extend(p.items);
        match p.continuation {
            Some(t) => token = Some(t),
            None => return Ok(out),
        }
        assert!(out.len() <= 1000, "the listing does not end");
    }
}

fn compare_listing(got: &[converge_core::Item], expected: &[&Entry], pk_path: &str, context: &str) {
    // Partitions come grouped, ids sorted within one.
    let mut done = Vec::<String>::new();
    for w in got.windows(2) {
        let partition = |i: &converge_core::Item| i.body.pointer(pk_path).map(Value::to_string);
        let (a, b) = (partition(&w[0]), partition(&w[1]));
        if a == b {
            assert!(
                w[0].id() < w[1].id(),
                "{context}: ids out of order in a partition"
            );
        } else {
            done.extend(a);
            assert!(
                b.as_ref().is_none_or(|b| !done.contains(b)),
                "{context}: partition {b:?} listed in two runs"
            );
        }
    }
    let mut got: Vec<(String, Value)> = got
        .iter()
        .map(|i| (i.etag.clone(), user_part(&i.body)))
        .collect();
    let mut want: Vec<(String, Value)> = expected
        .iter()
        .map(|e| (e.etag.clone(), e.body.clone()))
        .collect();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    want.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(got, want, "{context}: the listing");
}

fn changes(store: &Store, container: &str, page: usize) -> Result<Vec<Change>, Error> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let p = store.changes(DB, container, token.as_deref(), page)?;
        if p.items.is_empty() {
            return Ok(out);
        }
        out.extend(p.items);
        token = p.continuation;
        assert!(out.len() <= 1000, "the change feed does not end");
    }
}

fn compare_changes(got: &[Change], k: &Container, context: &str) {
    let mut order: Vec<(&(String, String), &u64)> = k.changed.iter().collect();
    order.sort_by_key(|(_, seq)| **seq);
    let expected: Vec<Value> = order
        .iter()
        .map(|(key, _)| match k.items.get(*key) {
            Some(e) => e.body.clone(),
            None => json!({"deleted": key.1}),
        })
        .collect();
    let got: Vec<Value> = got
        .iter()
        .map(|c| match c {
            Change::Upsert(body) => user_part(body),
            Change::Delete { id, .. } => json!({"deleted": id}),
        })
        .collect();
    assert_eq!(got, expected, "{context}: the change feed");
}

/// Everything the store shows equals the model.
fn compare_all(store: &Store, model: &Model, context: &str) {
    let mut names: Vec<String> = store
        .containers(DB)
        .map(|defs| defs.into_iter().map(|d| d.name).collect())
        .unwrap_or_default();
    names.sort();
    let expected: Vec<String> = model.containers.keys().cloned().collect();
    assert_eq!(names, expected, "{context}: the containers");
    for (name, k) in &model.containers {
        let got = list(store, name, None, 50).unwrap_or_else(|e| panic!("{context}: {e}"));
        let entries: Vec<&Entry> = k.items.values().collect();
        compare_listing(&got, &entries, &k.pk_path, context);
        let feed = changes(store, name, 50).unwrap_or_else(|e| panic!("{context}: {e}"));
        compare_changes(&feed, k, context);
    }
}

/// A fresh in-memory region that pulls this store's whole log shows the model's items.
fn replicate_and_compare(store: &Store, model: &Model) {
    let peer = Store::memory("peer", StoreOptions::new()).unwrap_or_else(|e| panic!("{e}"));
    let mut cursor = Cursor::START;
    for _ in 0..10_000 {
        let batch = store
            .read_log(cursor, 16)
            .unwrap_or_else(|e| panic!("read_log: {e}"));
        peer.apply_batch(&batch)
            .unwrap_or_else(|e| panic!("the peer refuses the log: {e}"));
        cursor = batch.next;
        if !batch.more {
            break;
        }
    }
    for (name, k) in &model.containers {
        let got = list(&peer, name, None, 50).unwrap_or_else(|e| panic!("the peer's {name}: {e}"));
        let mut got: Vec<Value> = got.iter().map(|i| user_part(&i.body)).collect();
        let mut want: Vec<Value> = k.items.values().map(|e| e.body.clone()).collect();
        let key = |v: &Value| v.to_string();
        got.sort_by_key(key);
        want.sort_by_key(key);
        assert_eq!(got, want, "the peer's {name} after pulling the log");
    }
}
