//! The key-value layer under the store: redb on disk, or a plain in-memory map for tests and
//! simulations. Both run the same store code through [`KvRead`] and [`KvWrite`].

use crate::{Error, Result};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::Path;
use std::sync::Mutex;

/// The tables of a store. Keys and values are bytes; `store::codec` gives them meaning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Table {
    Meta,
    Actors,
    Incarnations,
    Items,
    Log,
    Changes,
    Conflicts,
    Cursors,
    Creations,
    Dropped,
    Modules,
    Interrupted,
    Members,
}

const TABLE_COUNT: usize = 13;

impl Table {
    const ALL: [Table; TABLE_COUNT] = [
        Table::Meta,
        Table::Actors,
        Table::Incarnations,
        Table::Items,
        Table::Log,
        Table::Changes,
        Table::Conflicts,
        Table::Cursors,
        Table::Creations,
        Table::Dropped,
        Table::Modules,
        Table::Interrupted,
        Table::Members,
    ];

    fn definition(self) -> TableDefinition<'static, &'static [u8], &'static [u8]> {
        TableDefinition::new(match self {
            Table::Meta => "meta",
            Table::Actors => "actors",
            Table::Incarnations => "incarnations",
            Table::Items => "items",
            Table::Log => "log",
            Table::Changes => "changes",
            Table::Conflicts => "conflicts",
            Table::Cursors => "cursors",
            Table::Creations => "creations",
            Table::Dropped => "dropped",
            Table::Modules => "modules",
            Table::Interrupted => "interrupted",
            Table::Members => "members",
        })
    }
}

/// Key-value pairs read by a scan.
pub(crate) type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// Reads inside a transaction.
pub(crate) trait KvRead {
    /// The value at `key` (borrowed where the backend can lend it).
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Cow<'_, [u8]>>>;
    /// Up to `limit` pairs with `from <= key < to` (no upper bound when `to` is `None`).
    fn scan(&self, table: Table, from: &[u8], to: Option<&[u8]>, limit: usize) -> Result<Pairs> {
        Ok(self.scan_capped(table, from, to, limit, usize::MAX)?.0)
    }
    /// How many keys the table holds.
    fn len(&self, table: Table) -> Result<u64> {
        Ok(self.scan(table, &[], None, usize::MAX)?.len() as u64)
    }
    /// As [`scan`](Self::scan), also stopping before a pair that would take the values' total
    /// size over `max_bytes` (the first pair is always returned). Pairs past the cap are not
    /// copied. The flag says whether the cap stopped the scan.
    fn scan_capped(
        &self,
        table: Table,
        from: &[u8],
        to: Option<&[u8]>,
        limit: usize,
        max_bytes: usize,
    ) -> Result<(Pairs, bool)>;
}

/// Writes inside a transaction; all of them commit together or none does.
pub(crate) trait KvWrite: KvRead {
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<()>;
    /// `put` of a value the caller no longer needs: the memory backend keeps it without a copy.
    fn put_owned(&mut self, table: Table, key: &[u8], value: Vec<u8>) -> Result<()> {
        self.put(table, key, &value)
    }
    fn remove(&mut self, table: Table, key: &[u8]) -> Result<()>;
}

/// Whether a commit waits for the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sync {
    /// fsync before the commit returns.
    Durable,
    /// Made durable by a later durable commit.
    Lazy,
}

pub(crate) enum Backend {
    Memory(Mutex<Vec<BTreeMap<Vec<u8>, Vec<u8>>>>),
    Redb(redb::Database),
}

fn bounds<'a>(from: &'a [u8], to: Option<&'a [u8]>) -> (Bound<&'a [u8]>, Bound<&'a [u8]>) {
    (
        Bound::Included(from),
        to.map_or(Bound::Unbounded, Bound::Excluded),
    )
}

impl Backend {
    pub(crate) fn memory() -> Self {
        Backend::Memory(Mutex::new(vec![BTreeMap::new(); TABLE_COUNT]))
    }

    pub(crate) fn open_redb(path: &Path, cache_bytes: usize) -> Result<Self> {
        let db = redb::Builder::new()
            .set_cache_size(cache_bytes)
            .create(path)
            .map_err(|e| {
                Error::Storage(format!("cannot open the store at {}: {e}", path.display()))
            })?;
        let tx = db.begin_write().map_err(Error::storage)?;
        for t in Table::ALL {
            tx.open_table(t.definition()).map_err(Error::storage)?;
        }
        tx.commit().map_err(Error::storage)?;
        Ok(Backend::Redb(db))
    }

    /// Runs `f` in a read transaction (a consistent snapshot).
    pub(crate) fn read<R>(&self, f: impl FnOnce(&dyn KvRead) -> Result<R>) -> Result<R> {
        match self {
            Backend::Memory(m) => {
                let guard = m
                    .lock()
                    .map_err(|_| Error::Storage("store lock poisoned".into()))?;
                f(&MemRead(&guard))
            }
            Backend::Redb(db) => {
                let tx = db.begin_read().map_err(Error::storage)?;
                f(&RedbRead(tx))
            }
        }
    }

    /// Runs `f` in a write transaction; commits if it returns `Ok`, rolls back otherwise.
    pub(crate) fn write<R>(
        &self,
        sync: Sync,
        f: impl FnOnce(&mut dyn KvWrite) -> Result<R>,
    ) -> Result<R> {
        match self {
            Backend::Memory(m) => {
                let mut guard = m
                    .lock()
                    .map_err(|_| Error::Storage("store lock poisoned".into()))?;
                let mut tx = MemWrite {
                    tables: &mut guard,
                    undo: Vec::new(),
                };
                let out = f(&mut tx);
                if out.is_err() {
                    tx.rollback();
                }
                out
            }
            Backend::Redb(db) => {
                let mut tx = db.begin_write().map_err(Error::storage)?;
                tx.set_durability(match sync {
                    Sync::Durable => redb::Durability::Immediate,
                    Sync::Lazy => redb::Durability::None,
                })
                .map_err(Error::storage)?;
                let out = f(&mut RedbWrite {
                    tx: &tx,
                    tables: Default::default(),
                });
                match out {
                    Ok(v) => {
                        tx.commit().map_err(Error::storage)?;
                        Ok(v)
                    }
                    Err(e) => {
                        tx.abort().map_err(Error::storage)?;
                        Err(e)
                    }
                }
            }
        }
    }
}

struct MemRead<'a>(&'a [BTreeMap<Vec<u8>, Vec<u8>>]);

/// Collects pairs up to `limit` and `max_bytes` of values (see [`KvRead::scan_capped`]),
/// copying a pair only once it is known to fit.
fn capped<K: AsRef<[u8]>, V: AsRef<[u8]>>(
    pairs: impl Iterator<Item = Result<(K, V)>>,
    limit: usize,
    max_bytes: usize,
) -> Result<(Pairs, bool)> {
    let mut out = Vec::new();
    let mut bytes = 0usize;
    for pair in pairs.take(limit) {
        let (k, v) = pair?;
        let (k, v) = (k.as_ref(), v.as_ref());
        if !out.is_empty() && bytes.saturating_add(v.len()) > max_bytes {
            return Ok((out, true));
        }
        bytes = bytes.saturating_add(v.len());
        out.push((k.to_vec(), v.to_vec()));
    }
    Ok((out, false))
}

fn mem_scan(
    map: &BTreeMap<Vec<u8>, Vec<u8>>,
    from: &[u8],
    to: Option<&[u8]>,
    limit: usize,
    max_bytes: usize,
) -> Result<(Pairs, bool)> {
    capped(
        map.range::<[u8], _>(bounds(from, to)).map(Ok),
        limit,
        max_bytes,
    )
}

impl KvRead for MemRead<'_> {
    fn len(&self, table: Table) -> Result<u64> {
        Ok(self.0[table as usize].len() as u64)
    }
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Cow<'_, [u8]>>> {
        Ok(self.0[table as usize]
            .get(key)
            .map(|v| Cow::Borrowed(v.as_slice())))
    }
    fn scan_capped(
        &self,
        table: Table,
        from: &[u8],
        to: Option<&[u8]>,
        limit: usize,
        max_bytes: usize,
    ) -> Result<(Pairs, bool)> {
        mem_scan(&self.0[table as usize], from, to, limit, max_bytes)
    }
}

struct MemWrite<'a> {
    tables: &'a mut [BTreeMap<Vec<u8>, Vec<u8>>],
    undo: Vec<(Table, Vec<u8>, Option<Vec<u8>>)>,
}

impl MemWrite<'_> {
    fn rollback(&mut self) {
        while let Some((t, k, old)) = self.undo.pop() {
            let map = &mut self.tables[t as usize];
            match old {
                Some(v) => map.insert(k, v),
                None => map.remove(&k),
            };
        }
    }
}

impl KvRead for MemWrite<'_> {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Cow<'_, [u8]>>> {
        Ok(self.tables[table as usize]
            .get(key)
            .map(|v| Cow::Borrowed(v.as_slice())))
    }
    fn scan_capped(
        &self,
        table: Table,
        from: &[u8],
        to: Option<&[u8]>,
        limit: usize,
        max_bytes: usize,
    ) -> Result<(Pairs, bool)> {
        mem_scan(&self.tables[table as usize], from, to, limit, max_bytes)
    }
}

impl KvWrite for MemWrite<'_> {
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<()> {
        self.put_owned(table, key, value.to_vec())
    }
    fn put_owned(&mut self, table: Table, key: &[u8], value: Vec<u8>) -> Result<()> {
        let old = self.tables[table as usize].insert(key.to_vec(), value);
        self.undo.push((table, key.to_vec(), old));
        Ok(())
    }
    fn remove(&mut self, table: Table, key: &[u8]) -> Result<()> {
        if let Some(old) = self.tables[table as usize].remove(key) {
            self.undo.push((table, key.to_vec(), Some(old)));
        }
        Ok(())
    }
}

struct RedbRead(redb::ReadTransaction);

impl KvRead for RedbRead {
    fn len(&self, table: Table) -> Result<u64> {
        use redb::ReadableTableMetadata;
        self.0
            .open_table(table.definition())
            .map_err(Error::storage)?
            .len()
            .map_err(Error::storage)
    }
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Cow<'_, [u8]>>> {
        let t = self
            .0
            .open_table(table.definition())
            .map_err(Error::storage)?;
        Ok(t.get(key)
            .map_err(Error::storage)?
            .map(|v| Cow::Owned(v.value().to_vec())))
    }
    fn scan_capped(
        &self,
        table: Table,
        from: &[u8],
        to: Option<&[u8]>,
        limit: usize,
        max_bytes: usize,
    ) -> Result<(Pairs, bool)> {
        let t = self
            .0
            .open_table(table.definition())
            .map_err(Error::storage)?;
        redb_scan(&t, from, to, limit, max_bytes)
    }
}

fn redb_scan(
    t: &impl ReadableTable<&'static [u8], &'static [u8]>,
    from: &[u8],
    to: Option<&[u8]>,
    limit: usize,
    max_bytes: usize,
) -> Result<(Pairs, bool)> {
    let range = t.range::<&[u8]>(bounds(from, to)).map_err(Error::storage)?;
    // redb lends the value without a copy until it is known to fit.
    capped(
        range.map(|e| e.map(|(k, v)| (Lent(k), Lent(v))).map_err(Error::storage)),
        limit,
        max_bytes,
    )
}

/// A key or value redb lends from a page.
struct Lent<'a>(redb::AccessGuard<'a, &'static [u8]>);

impl AsRef<[u8]> for Lent<'_> {
    fn as_ref(&self) -> &[u8] {
        self.0.value()
    }
}

type RedbTable<'a> = redb::Table<'a, &'static [u8], &'static [u8]>;

/// A write transaction whose tables are opened on first use: a commit that touches four
/// tables does not pay for opening ten.
struct RedbWrite<'a> {
    tx: &'a redb::WriteTransaction,
    tables: [std::cell::OnceCell<std::cell::RefCell<RedbTable<'a>>>; TABLE_COUNT],
}

impl<'a> RedbWrite<'a> {
    fn table(&self, table: Table) -> Result<&std::cell::RefCell<RedbTable<'a>>> {
        let cell = &self.tables[table as usize];
        if let Some(t) = cell.get() {
            return Ok(t);
        }
        let t = self
            .tx
            .open_table(table.definition())
            .map_err(Error::storage)?;
        Ok(cell.get_or_init(|| std::cell::RefCell::new(t)))
    }
}

impl KvRead for RedbWrite<'_> {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Cow<'_, [u8]>>> {
        let t = self.table(table)?.borrow();
        Ok(t.get(key)
            .map_err(Error::storage)?
            .map(|v| Cow::Owned(v.value().to_vec())))
    }
    fn scan_capped(
        &self,
        table: Table,
        from: &[u8],
        to: Option<&[u8]>,
        limit: usize,
        max_bytes: usize,
    ) -> Result<(Pairs, bool)> {
        redb_scan(&*self.table(table)?.borrow(), from, to, limit, max_bytes)
    }
}

impl KvWrite for RedbWrite<'_> {
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<()> {
        self.table(table)?
            .borrow_mut()
            .insert(key, value)
            .map_err(Error::storage)?;
        Ok(())
    }
    fn remove(&mut self, table: Table, key: &[u8]) -> Result<()> {
        self.table(table)?
            .borrow_mut()
            .remove(key)
            .map_err(Error::storage)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exercise(b: &Backend) {
        b.write(Sync::Durable, |tx| {
            tx.put(Table::Items, b"a", b"1")?;
            tx.put(Table::Items, b"b", b"2")?;
            tx.put(Table::Items, b"c", b"3")
        })
        .expect("write");
        let failed: Result<()> = b.write(Sync::Durable, |tx| {
            tx.put(Table::Items, b"a", b"changed")?;
            tx.remove(Table::Items, b"b")?;
            Err(Error::invalid("abort"))
        });
        assert!(failed.is_err());
        let (a, range) = b
            .read(|tx| {
                Ok((
                    tx.get(Table::Items, b"a")?.map(|c| c.into_owned()),
                    tx.scan(Table::Items, b"b", Some(b"c"), 10)?,
                ))
            })
            .expect("read");
        assert_eq!(
            a.as_deref(),
            Some(&b"1"[..]),
            "a failed transaction leaves nothing behind"
        );
        assert_eq!(range, vec![(b"b".to_vec(), b"2".to_vec())]);
    }

    /// Regression (issue 10, defect 10): `read_log` asked for 500 versions of 2 MiB items
    /// copied all 500 rows (a gigabyte) before its byte cap dropped all but eight.
    #[test]
    fn a_capped_scan_copies_no_row_past_the_cap() {
        let pulled = std::cell::Cell::new(0);
        let rows = (0..500u32).map(|i| {
            pulled.set(pulled.get() + 1);
            Ok((i.to_be_bytes().to_vec(), vec![0u8; 2 << 20]))
        });
        let (out, capped) = capped(rows, 500, 16 << 20).expect("scan");
        assert_eq!(out.len(), 8);
        assert!(capped);
        assert_eq!(
            pulled.get(),
            9,
            "one row past the cap is looked at, none copied"
        );
        for b in [Backend::memory(), {
            let dir = tempfile::tempdir().expect("tempdir");
            Backend::open_redb(&dir.path().join("s.redb"), 1 << 20).expect("open")
        }] {
            b.write(Sync::Durable, |tx| {
                for i in 0..10u8 {
                    tx.put(Table::Log, &[i], &[i; 100])?;
                }
                Ok(())
            })
            .expect("write");
            let (small, capped_small) = b
                .read(|kv| kv.scan_capped(Table::Log, &[], None, 100, 250))
                .expect("read");
            assert_eq!((small.len(), capped_small), (2, true));
            let (one, _) = b
                .read(|kv| kv.scan_capped(Table::Log, &[], None, 100, 1))
                .expect("read");
            assert_eq!(one.len(), 1, "the first row always comes");
            let (all, capped_all) = b
                .read(|kv| kv.scan_capped(Table::Log, &[], None, 100, usize::MAX))
                .expect("read");
            assert_eq!((all.len(), capped_all), (10, false));
        }
    }

    #[test]
    fn memory_and_redb_behave_alike() {
        exercise(&Backend::memory());
        let dir = tempfile::tempdir().expect("tempdir");
        exercise(&Backend::open_redb(&dir.path().join("s.redb"), 1 << 20).expect("open"));
    }
}
