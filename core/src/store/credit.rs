//! How much wall-clock time the writer may spend in custom resolver calls, across
//! transactions: a token bucket. A region under sustained conflicts on a slow resolver would
//! otherwise hold the writer for resolvers in every replication batch, and every local write
//! would wait behind them. Past the credit, resolutions are put off to the retry, which calls
//! the resolver without the writer ([`Store::retry_interrupted`](super::Store::retry_interrupted)).

use std::time::{Duration, Instant};

/// The most resolver time the writer may spend in a burst (one transaction, or several in a
/// row).
pub(super) const CAPACITY: Duration = Duration::from_millis(250);

/// How fast the credit comes back: the writer spends at most this share of its time in
/// resolver calls, sustained (1/10).
const REFILL_DIVISOR: u32 = 10;

/// The writer's credit of resolver time.
#[derive(Debug)]
pub(super) struct ResolverCredit {
    available: Duration,
    at: Instant,
    spent: Duration,
}

impl ResolverCredit {
    pub(super) fn new() -> Self {
        ResolverCredit {
            available: CAPACITY,
            at: Instant::now(),
            spent: Duration::ZERO,
        }
    }

    /// The credit available at `now`, refilled for the time since the last call.
    pub(super) fn refill(&mut self, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.at);
        self.at = self.at.max(now);
        self.available = (self.available + elapsed / REFILL_DIVISOR).min(CAPACITY);
        self.available
    }

    /// Takes `d` of resolver time spent off the credit.
    pub(super) fn spend(&mut self, d: Duration) {
        self.available = self.available.saturating_sub(d);
        self.spent += d;
    }

    /// All resolver time spent under the writer since the store opened.
    pub(super) fn spent(&self) -> Duration {
        self.spent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_credit_drains_and_comes_back_at_a_tenth_of_the_time() {
        let mut c = ResolverCredit::new();
        let t0 = c.at;
        assert_eq!(c.refill(t0), CAPACITY);
        c.spend(CAPACITY + Duration::from_millis(40));
        assert_eq!(c.refill(t0), Duration::ZERO, "overspending empties it");
        assert_eq!(
            c.refill(t0 + Duration::from_secs(1)),
            Duration::from_millis(100)
        );
        assert_eq!(c.refill(t0 + Duration::from_secs(60)), CAPACITY, "capped");
        assert_eq!(c.spent(), CAPACITY + Duration::from_millis(40));
        // A clock read out of order refills nothing.
        assert_eq!(c.refill(t0), CAPACITY);
    }
}
