//! The multi-region simulation.
