//! The multi-region simulation, shared by tests, fuzz targets and benches.
//!
//! 3 to 7 regions write concurrently to a small key space (so conflicts are frequent) while
//! replication delivers partial batches, reorders, duplicates and drops them, links are cut and
//! healed, container policies change, containers are dropped and re-created, and a durable
//! region is closed and reopened. After a full exchange the oracle checks strong eventual
//! consistency and that no version was lost. Everything derives from the seed, so a failure
//! replays exactly.

mod oracle;
mod rng;
mod world;

pub use rng::Rng;
pub(crate) use world::CONTAINER;
pub use world::{BodyGenerator, SimConfig, SimFailure, SimPolicy, SimReport, run};
