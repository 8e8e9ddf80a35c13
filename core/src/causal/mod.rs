//! Causality: hybrid logical clocks, dots, version vectors.

mod context;
mod dot;
mod hlc;

pub use context::Context;
pub use dot::{Dot, Incarnation, RegionId, Writer};
pub use hlc::{Clock, Hlc, MAX_CLOCK_LEAD_MS};
