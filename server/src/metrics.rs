//! Prometheus metrics: requests, resolver calls and their latency, replication per peer.

use converge_core::{Outcome, ResolveRequest, ResolverHost, WasmResolvers};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Upper bounds of the resolver-latency histogram, seconds.
const BUCKETS: [f64; 10] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.005, 0.05, 1.0,
];

/// Upper bounds of the replication-lag histogram, seconds.
pub const LAG_BUCKETS: [f64; 13] = [
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
];

/// The index of the histogram bucket `value` falls in (`bounds.len()` for +Inf).
fn bucket(bounds: &[f64], value: f64) -> usize {
    bounds
        .iter()
        .position(|b| value <= *b)
        .unwrap_or(bounds.len())
}

/// Writes a Prometheus histogram's series: cumulative buckets, the optional sum, the count.
fn write_histogram(
    out: &mut String,
    name: &str,
    labels: &str,
    bounds: &[f64],
    counts: &[u64],
    sum: Option<f64>,
) {
    let mut cumulative = 0;
    for (b, n) in bounds.iter().zip(counts) {
        cumulative += n;
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{b}\"}} {cumulative}");
    }
    cumulative += counts.get(bounds.len()).copied().unwrap_or(0);
    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {cumulative}");
    if let Some(sum) = sum {
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
    }
    let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
}

/// Replication state of one peer.
#[derive(Clone, Debug, Default)]
pub struct PeerStats {
    /// Versions applied from the peer by lag (from their HLC time to being applied here):
    /// counts per [`LAG_BUCKETS`] bucket, the last for anything slower.
    pub lag_histogram: [u64; LAG_BUCKETS.len() + 1],
    /// Versions applied from it.
    pub applied: u64,
    /// Failed pulls.
    pub errors: u64,
    /// Seconds between a pull finding nothing new and the previous successful pull's newest
    /// version (approximate lag): 0 when caught up.
    pub lag_seconds: f64,
    /// Whether its engine fingerprint differs from ours.
    pub fingerprint_mismatch: bool,
    /// Whether the last pull succeeded.
    pub up: bool,
}

/// The gauges of each member's stability (`converge_member_*`), appended to [`Metrics::render`]'s
/// text: how far each member is behind this region, whether it holds collection back, and how
/// long ago its applied vector last grew here.
pub fn render_members(region: &str, members: &[converge_core::MemberStatus]) -> String {
    let mut out = String::new();
    let others: Vec<&converge_core::MemberStatus> =
        members.iter().filter(|m| !m.this_region).collect();
    let mut family =
        |name: &str, help: &str, value: &dyn Fn(&converge_core::MemberStatus) -> String| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for m in &others {
                let _ = writeln!(
                    out,
                    "{name}{{region=\"{region}\",member=\"{}\"}} {}",
                    m.region,
                    value(m)
                );
            }
        };
    family(
        "converge_member_behind",
        "Versions of this region's applied vector a member has not confirmed applying (counter gaps).",
        &|m| m.behind.to_string(),
    );
    family(
        "converge_member_holds_back",
        "Whether a member holds the stable point (and so collection) back.",
        &|m| u8::from(m.holds_back).to_string(),
    );
    family(
        "converge_member_heard_seconds",
        "Seconds since a member's applied vector last grew here (-1: never).",
        &|m| {
            m.heard_ms_ago
                .map_or("-1".to_owned(), |ms| format!("{:.3}", ms as f64 / 1000.0))
        },
    );
    out
}

/// Every counter the server exports.
#[derive(Default)]
pub struct Metrics {
    /// Item writes acknowledged.
    pub writes: AtomicU64,
    /// Item reads answered.
    pub reads: AtomicU64,
    /// Requests answered with an error status, by status.
    errors: Mutex<BTreeMap<u16, u64>>,
    /// Resolver calls by outcome (`pick`, `merge`, `delete`, `failed`, `interrupted`).
    outcomes: Mutex<BTreeMap<&'static str, u64>>,
    /// Resolver latency histogram: counts per bucket, then the sum of seconds.
    latency: Mutex<([u64; BUCKETS.len() + 1], f64)>,
    peers: Mutex<BTreeMap<String, PeerStats>>,
    /// Tombstones purged by collection.
    pub collected_tombstones: AtomicU64,
    /// Log entries removed by collection.
    pub collected_log_entries: AtomicU64,
}

impl Metrics {
    /// Counts an error response.
    pub fn error(&self, status: u16) {
        if let Ok(mut e) = self.errors.lock() {
            *e.entry(status).or_default() += 1;
        }
    }

    /// Updates a peer's replication state.
    pub fn peer(&self, name: &str, update: impl FnOnce(&mut PeerStats)) {
        if let Ok(mut p) = self.peers.lock() {
            update(p.entry(name.to_owned()).or_default());
        }
    }

    /// Records a batch applied from `peer` at `now_ms`: how many versions were new, and each
    /// version's lag from its write time (ms since the epoch, from its HLC).
    pub fn replicated(
        &self,
        peer: &str,
        applied: usize,
        written_ms: &[u64],
        now_ms: u64,
        more: bool,
    ) {
        self.peer(peer, |p| {
            p.applied += applied as u64;
            for t in written_ms {
                let lag = now_ms.saturating_sub(*t) as f64 / 1000.0;
                p.lag_histogram[bucket(&LAG_BUCKETS, lag)] += 1;
            }
            match written_ms.iter().max() {
                Some(newest) => p.lag_seconds = now_ms.saturating_sub(*newest) as f64 / 1000.0,
                None if !more => p.lag_seconds = 0.0,
                None => {}
            }
        });
    }

    /// A peer's replication state.
    pub fn peer_stats(&self, name: &str) -> PeerStats {
        self.peers
            .lock()
            .ok()
            .and_then(|p| p.get(name).cloned())
            .unwrap_or_default()
    }

    fn resolved(&self, outcome: &Outcome, seconds: f64) {
        let label = match outcome {
            Outcome::Pick(_) => "pick",
            Outcome::Merge(_) => "merge",
            Outcome::Delete => "delete",
            Outcome::Failed(_) => "failed",
            Outcome::Interrupted => "interrupted",
        };
        if let Ok(mut o) = self.outcomes.lock() {
            *o.entry(label).or_default() += 1;
        }
        if let Ok(mut l) = self.latency.lock() {
            l.0[bucket(&BUCKETS, seconds)] += 1;
            l.1 += seconds;
        }
    }

    /// The Prometheus text exposition, with the store's own counters.
    pub fn render(
        &self,
        region: &str,
        store: &converge_core::StoreStats,
        interrupted: usize,
    ) -> String {
        let mut out = String::new();
        let r = region;
        let mut counter = |name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name}{{region=\"{r}\"}} {value}"
            );
        };
        counter(
            "converge_writes_total",
            "Item writes acknowledged.",
            self.writes.load(Ordering::Relaxed),
        );
        counter(
            "converge_reads_total",
            "Item reads answered.",
            self.reads.load(Ordering::Relaxed),
        );
        counter(
            "converge_remote_versions_applied_total",
            "Versions applied from peers.",
            store.remote_applied,
        );
        counter(
            "converge_remote_duplicates_total",
            "Versions from peers already seen.",
            store.remote_duplicates,
        );
        counter(
            "converge_lost_to_lww_total",
            "Writes covered before they were ever visible here.",
            store.lost_to_lww,
        );
        counter(
            "converge_commits_total",
            "Write transactions committed.",
            store.commits,
        );
        counter(
            "converge_refused_retired_total",
            "Versions refused because a retired region wrote them after its retirement.",
            store.refused_retired,
        );
        counter(
            "converge_collected_tombstones_total",
            "Tombstones purged by collection (stable everywhere, past the grace).",
            self.collected_tombstones.load(Ordering::Relaxed),
        );
        counter(
            "converge_collected_log_entries_total",
            "Log entries removed by collection (versions every member has, shown by no item).",
            self.collected_log_entries.load(Ordering::Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP converge_interrupted_resolutions Resolutions stopped by the watchdog, waiting for a retry.\n# TYPE converge_interrupted_resolutions gauge\nconverge_interrupted_resolutions{{region=\"{r}\"}} {interrupted}"
        );
        let _ = writeln!(
            out,
            "# HELP converge_http_errors_total Requests answered with an error, by status.\n# TYPE converge_http_errors_total counter"
        );
        if let Ok(e) = self.errors.lock() {
            for (status, n) in e.iter() {
                let _ = writeln!(
                    out,
                    "converge_http_errors_total{{region=\"{r}\",status=\"{status}\"}} {n}"
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP converge_conflicts_resolved_total Custom resolutions by outcome.\n# TYPE converge_conflicts_resolved_total counter"
        );
        if let Ok(o) = self.outcomes.lock() {
            for (label, n) in o.iter() {
                let _ = writeln!(
                    out,
                    "converge_conflicts_resolved_total{{region=\"{r}\",outcome=\"{label}\"}} {n}"
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP converge_resolver_call_seconds Resolver call latency.\n# TYPE converge_resolver_call_seconds histogram"
        );
        if let Ok(l) = self.latency.lock() {
            let labels = format!("region=\"{r}\"");
            write_histogram(
                &mut out,
                "converge_resolver_call_seconds",
                &labels,
                &BUCKETS,
                &l.0,
                Some(l.1),
            );
        }
        // Per peer, one family at a time: the exposition format wants a family's lines together.
        if let Ok(p) = self.peers.lock() {
            let family = |out: &mut String,
                          name: &str,
                          kind: &str,
                          help: &str,
                          value: fn(&PeerStats) -> String| {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
                for (peer, s) in p.iter() {
                    let _ = writeln!(out, "{name}{{region=\"{r}\",peer=\"{peer}\"}} {}", value(s));
                }
            };
            family(
                &mut out,
                "converge_peer_versions_applied_total",
                "counter",
                "Versions applied from each peer.",
                |s| s.applied.to_string(),
            );
            family(
                &mut out,
                "converge_peer_errors_total",
                "counter",
                "Failed pulls from each peer.",
                |s| s.errors.to_string(),
            );
            family(
                &mut out,
                "converge_peer_lag_seconds",
                "gauge",
                "Age of the newest version pulled from each peer when the pull caught up.",
                |s| s.lag_seconds.to_string(),
            );
            family(
                &mut out,
                "converge_peer_up",
                "gauge",
                "Whether the last pull from each peer succeeded.",
                |s| u8::from(s.up).to_string(),
            );
            family(
                &mut out,
                "converge_peer_fingerprint_mismatch",
                "gauge",
                "Whether a peer runs another engine (converge, wasmtime, architecture).",
                |s| u8::from(s.fingerprint_mismatch).to_string(),
            );
            let name = "converge_peer_replication_lag_seconds";
            let _ = writeln!(
                out,
                "# HELP {name} Time from a version's write (its HLC) to its application here.\n# TYPE {name} histogram"
            );
            for (peer, s) in p.iter() {
                let labels = format!("region=\"{r}\",peer=\"{peer}\"");
                write_histogram(
                    &mut out,
                    name,
                    &labels,
                    &LAG_BUCKETS,
                    &s.lag_histogram,
                    None,
                );
            }
        }
        out
    }
}

/// The sandbox, counting every call's outcome and latency.
pub struct MeteredResolvers {
    inner: WasmResolvers,
    metrics: std::sync::Arc<Metrics>,
}

impl MeteredResolvers {
    /// Wraps a sandbox.
    pub fn new(inner: WasmResolvers, metrics: std::sync::Arc<Metrics>) -> Self {
        MeteredResolvers { inner, metrics }
    }
}

impl ResolverHost for MeteredResolvers {
    fn resolve(&self, request: &ResolveRequest<'_>) -> Outcome {
        let start = Instant::now();
        let outcome = self.inner.resolve(request);
        self.metrics
            .resolved(&outcome, start.elapsed().as_secs_f64());
        outcome
    }

    fn resolve_within(&self, request: &ResolveRequest<'_>, limit: std::time::Duration) -> Outcome {
        let start = Instant::now();
        let outcome = self.inner.resolve_within(request, limit);
        self.metrics
            .resolved(&outcome, start.elapsed().as_secs_f64());
        outcome
    }

    fn load(&self, module: &[u8]) -> Result<String, String> {
        ResolverHost::load(&self.inner, module)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With several peers, each metric family's samples stand together under its `# TYPE`
    /// line, as the exposition format requires.
    #[test]
    fn each_family_is_one_group() {
        let metrics = Metrics::default();
        for peer in ["east", "north"] {
            metrics.replicated(peer, 2, &[1_000, 2_000], 3_000, false);
            metrics.peer(peer, |p| p.up = true);
        }
        let text = metrics.render("west", &converge_core::StoreStats::default(), 0);
        let mut done = std::collections::BTreeSet::new();
        let mut current = String::new();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap_or_default();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name)
                .to_owned();
            if family != current {
                assert!(
                    done.insert(family.clone()),
                    "{family} comes in two groups:\n{text}"
                );
                current = family;
            }
        }
        assert!(text.contains("converge_peer_up{region=\"west\",peer=\"north\"} 1"));
    }
}
