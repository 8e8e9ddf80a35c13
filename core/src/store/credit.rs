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

/// How long a module whose call ran past the in-writer limit is called only by the retry.
const SLOW_FOR: Duration = Duration::from_secs(10);

/// Modules recently seen slow: a call under the writer ran (about) to its limit, or a retry's
/// call took at least that long. Their conflicts go to the retry at once, so the writer does
/// not spend a call's limit on each of them only to stop it. Which calls are made under the
/// writer never changes an outcome, only when it is committed.
#[derive(Debug, Default)]
pub(super) struct SlowModules(std::sync::Mutex<std::collections::HashMap<String, Instant>>);

impl SlowModules {
    /// Whether module `hash` was seen slow within [`SLOW_FOR`] before `now`.
    pub(super) fn is_slow(&self, hash: &str, now: Instant) -> bool {
        self.0
            .lock()
            .map(|m| m.get(hash).is_some_and(|until| now < *until))
            .unwrap_or(false)
    }

    /// Notes that a call of module `hash` was slow at `now`.
    pub(super) fn mark(&self, hash: &str, now: Instant) {
        if let Ok(mut m) = self.0.lock() {
            m.retain(|_, until| now < *until);
            m.insert(hash.to_owned(), now + SLOW_FOR);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_module_is_put_off_for_a_while() {
        let slow = SlowModules::default();
        let t0 = Instant::now();
        assert!(!slow.is_slow("h", t0));
        slow.mark("h", t0);
        assert!(slow.is_slow("h", t0 + Duration::from_secs(1)));
        assert!(!slow.is_slow("other", t0));
        assert!(!slow.is_slow("h", t0 + SLOW_FOR), "then tried again");
    }

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
