//! Hybrid logical clock: physical milliseconds plus a logical counter.

use serde::{Deserialize, Serialize};
use std::time::{SystemTime, UNIX_EPOCH};

/// How far ahead of local physical time a remote timestamp may pull the clock (5 s).
pub const MAX_CLOCK_LEAD_MS: u64 = 5_000;

/// A hybrid logical clock timestamp. Ordered by physical time, then logical counter.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Hlc {
    /// Physical time in milliseconds since the Unix epoch.
    pub physical_ms: u64,
    /// Logical counter that orders events within one millisecond.
    pub logical: u32,
}

impl Hlc {
    /// A timestamp from its two parts.
    pub const fn new(physical_ms: u64, logical: u32) -> Self {
        Hlc {
            physical_ms,
            logical,
        }
    }

    /// Seconds since the Unix epoch, as Cosmos's `_ts`.
    pub fn seconds(self) -> u64 {
        self.physical_ms / 1000
    }
}

/// A region's clock. `now` always returns a timestamp greater than any it returned or observed.
#[derive(Debug, Clone)]
pub struct Clock {
    last: Hlc,
    physical: fn() -> u64,
    /// Remote timestamps further ahead than this are not followed.
    max_lead_ms: u64,
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new(Hlc::default())
    }
}

impl Clock {
    /// A clock on wall time that never goes below `last`.
    pub fn new(last: Hlc) -> Self {
        Clock {
            last,
            physical: wall_ms,
            max_lead_ms: MAX_CLOCK_LEAD_MS,
        }
    }

    /// A clock whose physical source is `physical` (simulations use a fake one).
    pub fn with_source(last: Hlc, physical: fn() -> u64) -> Self {
        Clock {
            last,
            physical,
            max_lead_ms: MAX_CLOCK_LEAD_MS,
        }
    }

    /// Current physical time from the clock's source, ms.
    pub fn physical_now(&self) -> u64 {
        (self.physical)()
    }

    /// The greatest timestamp issued or observed.
    pub fn last(&self) -> Hlc {
        self.last
    }

    /// A new timestamp for a local event, using `physical` as the current physical time.
    pub fn tick_at(&mut self, physical: u64) -> Hlc {
        self.last = if physical > self.last.physical_ms {
            Hlc::new(physical, 0)
        } else {
            advance(self.last)
        };
        self.last
    }

    /// A new timestamp for a local event.
    pub fn now(&mut self) -> Hlc {
        let p = (self.physical)();
        self.tick_at(p)
    }

    /// Takes a remote timestamp into account. Returns false when the timestamp is further ahead
    /// of local physical time than the allowed lead: the clock then does not follow it.
    pub fn observe(&mut self, remote: Hlc) -> bool {
        let p = (self.physical)();
        self.observe_at(remote, p)
    }

    /// `observe` with an explicit physical time.
    pub fn observe_at(&mut self, remote: Hlc, physical: u64) -> bool {
        if remote.physical_ms > physical.saturating_add(self.max_lead_ms) {
            return false;
        }
        if remote > self.last {
            self.last = remote;
        }
        true
    }
}

fn advance(h: Hlc) -> Hlc {
    match h.logical.checked_add(1) {
        Some(l) => Hlc::new(h.physical_ms, l),
        None => Hlc::new(h.physical_ms + 1, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_strictly_increasing_even_when_wall_time_stalls() {
        let mut c = Clock::new(Hlc::default());
        let a = c.tick_at(100);
        let b = c.tick_at(100);
        let d = c.tick_at(50);
        assert!(a < b && b < d);
        assert_eq!(c.tick_at(200), Hlc::new(200, 0));
    }

    #[test]
    fn remote_time_is_followed_only_within_the_lead() {
        let mut c = Clock::new(Hlc::default());
        assert!(c.observe_at(Hlc::new(1_000 + MAX_CLOCK_LEAD_MS, 3), 1_000));
        assert_eq!(c.last(), Hlc::new(1_000 + MAX_CLOCK_LEAD_MS, 3));
        assert!(!c.observe_at(Hlc::new(2_000 + MAX_CLOCK_LEAD_MS + 1, 0), 2_000));
        assert_eq!(c.last(), Hlc::new(1_000 + MAX_CLOCK_LEAD_MS, 3));
    }
}
