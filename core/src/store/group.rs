//! Group commit: concurrent writers share one fsync.
//!
//! The first writer to arrive becomes the leader: it takes every write queued so far, applies
//! them in one transaction, commits once with fsync, and hands each writer its own result.
//! Writers that arrive meanwhile queue up for the next group. Each write still succeeds or
//! fails on its own, and none returns before it is durable.

use super::Store;
use super::backend::Sync;
use super::items::{WriteOp, WriteOutcome, apply_op};
use crate::{Error, Result};
use std::collections::HashMap;
use std::sync::{Condvar, Mutex};

struct Pending {
    ticket: u64,
    database: String,
    container: String,
    op: WriteOp,
}

#[derive(Default)]
struct Queue {
    pending: Vec<Pending>,
    leading: bool,
    next_ticket: u64,
    done: HashMap<u64, Result<WriteOutcome>>,
}

/// The queue of writes waiting for the next group.
#[derive(Default)]
pub(crate) struct GroupCommit {
    queue: Mutex<Queue>,
    wake: Condvar,
}

fn poisoned() -> Error {
    Error::Storage("group commit lock poisoned".into())
}

impl Store {
    pub(crate) fn write_grouped(
        &self,
        database: &str,
        container: &str,
        op: WriteOp,
    ) -> Result<WriteOutcome> {
        let g = &self.group;
        let mut q = g.queue.lock().map_err(|_| poisoned())?;
        let ticket = q.next_ticket;
        q.next_ticket += 1;
        q.pending.push(Pending {
            ticket,
            database: database.to_owned(),
            container: container.to_owned(),
            op,
        });
        loop {
            if let Some(r) = q.done.remove(&ticket) {
                return r;
            }
            if q.leading {
                q = g.wake.wait(q).map_err(|_| poisoned())?;
                continue;
            }
            q.leading = true;
            let batch = std::mem::take(&mut q.pending);
            drop(q);
            let results = self.commit_group(batch);
            q = g.queue.lock().map_err(|_| poisoned())?;
            q.done.extend(results);
            q.leading = false;
            g.wake.notify_all();
        }
    }

    fn commit_group(&self, batch: Vec<Pending>) -> Vec<(u64, Result<WriteOutcome>)> {
        let tickets: Vec<u64> = batch.iter().map(|p| p.ticket).collect();
        let out = self.write_tx(Sync::Durable, |tx| {
            let mut out = Vec::with_capacity(batch.len());
            for p in batch {
                let r = self
                    .def_cached(tx.read(), self.defs_generation(), &p.database, &p.container)
                    .and_then(|def| apply_op(tx, &def, p.op));
                if let Err(Error::Storage(e)) = r {
                    return Err(Error::Storage(e));
                }
                out.push((p.ticket, r));
            }
            Ok(out)
        });
        match out {
            Ok(v) => v,
            Err(e) => {
                let msg = e.to_string();
                tickets
                    .into_iter()
                    .map(|t| (t, Err(Error::Storage(msg.clone()))))
                    .collect()
            }
        }
    }
}
