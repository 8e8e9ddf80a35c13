//! Pulling from peers: one thread per `--peer`, each reading the peer's log after the cursor
//! this store persisted for it, in batches, and applying them. Backs off with jitter while a
//! peer is down; resumes from the persisted cursor after either side restarts. Relays: a peer's
//! log holds every version it applied, whoever wrote it.

use crate::api::AppState;
use crate::metrics::Metrics;
use converge_core::{Applied, Batch, EngineFingerprint, RegionId};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A region to pull from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// Its region name.
    pub name: String,
    /// Its base URL, such as `http://10.0.0.2:8080`.
    pub url: String,
}

impl std::str::FromStr for Peer {
    type Err = String;

    /// `<region>=<url>`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (name, url) = s.split_once('=').ok_or_else(|| {
            format!("{s:?}: a peer is <region>=<url>, such as east=http://10.0.0.2:8080")
        })?;
        converge_core::RegionId::new(name).map_err(|e| format!("{s:?}: {e}"))?;
        let rest = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"))
            .ok_or_else(|| format!("{s:?}: the peer's URL must start with http:// or https://"))?;
        if rest.is_empty() || rest.starts_with('/') {
            return Err(format!("{s:?}: the peer's URL names no host"));
        }
        if !url.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!(
                "{s:?}: the peer's URL holds a space or a control character"
            ));
        }
        Ok(Peer {
            name: name.to_owned(),
            url: url.trim_end_matches('/').to_owned(),
        })
    }
}

/// How long a caught-up pull asks the peer to hold the request for something new (long poll).
pub const WAIT: Duration = Duration::from_millis(1000);
/// The shortest time between two pulls that found nothing.
pub const POLL: Duration = Duration::from_millis(20);
/// Versions asked for per pull.
const PULL_MAX: usize = 500;
/// Backoff bounds while a peer is down.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// The largest batch body read (bytes): a peer's batch holds at most
/// `converge_core::MAX_BATCH_BYTES` of log entries, plus one version, plus the wire's framing
/// and region names; four times the cap leaves room and still bounds a broken peer.
const MAX_BATCH_BYTES: u64 = 4 * converge_core::MAX_BATCH_BYTES as u64;

/// Pulls from `peer` into the state's store until `stop` is set; an `https://` peer is verified
/// with `tls` (see [`crate::tls::peer_tls`]).
pub fn pull_loop(state: &AppState, peer: Peer, tls: ureq::tls::TlsConfig, stop: Arc<AtomicBool>) {
    let (store, metrics, key) = (&state.store, &state.metrics, &state.key);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .tls_config(tls)
        .timeout_global(Some(Duration::from_secs(30)))
        .http_status_as_error(false)
        .build()
        .into();
    let get = |path: &str| {
        let mut req = agent.get(format!("{}{path}", peer.url));
        if let Some(k) = &key {
            req = req.header("Authorization", format!("Bearer {k}"));
        }
        req.call()
    };
    let ours = store.engine_fingerprint();
    let mut verified = false;
    // The peer's store, as its fingerprint named it.
    let mut peer_store = 0;
    let mut backoff = BACKOFF_MIN;
    let mut last_error: Option<(String, Instant)> = None;
    let mut rng = jitter_seed(&peer.name);
    while !stop.load(Ordering::Relaxed) {
        let asked = Instant::now();
        let pulled = verified;
        let step = if verified {
            pull_once(state, &peer, peer_store, &get)
        } else {
            check_peer(&peer, &ours, metrics, &get).and_then(|(id, joined)| {
                verified = true;
                peer_store = id;
                // A joined store of the peer this region knows by an earlier one: taken in
                // here too, so a region that only pulls from it does not refuse it for good.
                if joined {
                    store
                        .take_joined_store(&peer.name, id, &Default::default())
                        .map_err(|e| e.to_string())?;
                }
                Ok(true)
            })
        };
        match step {
            Ok(more) => {
                // Only a pull resets the backoff: a peer that answers its info route and
                // refuses every pull (a 409) is asked less and less often.
                if pulled {
                    backoff = BACKOFF_MIN;
                    last_error = None;
                }
                metrics.peer(&peer.name, |p| p.up = true);
                // The peer held the request until it had something or `WAIT` passed; a peer
                // that answers an empty batch at once (no long poll) is asked again after POLL.
                if !more && asked.elapsed() < POLL {
                    sleep_unless(&stop, POLL);
                }
            }
            Err(why) => {
                verified = false;
                metrics.peer(&peer.name, |p| {
                    p.errors += 1;
                    p.up = false;
                });
                // The same error again is logged once a minute, not at every retry.
                // The kind of error: its text up to the first figures (a refusal names the
                // puller's vector, which grows with every write).
                let kind = why.split('(').next().unwrap_or_default().to_owned();
                let repeat = last_error
                    .as_ref()
                    .is_some_and(|(w, at): &(String, Instant)| {
                        *w == kind && at.elapsed() < Duration::from_secs(60)
                    });
                if !repeat {
                    eprintln!(
                        "[{}] pulling from {} ({}): {why}",
                        store.region(),
                        peer.name,
                        peer.url
                    );
                    last_error = Some((kind, Instant::now()));
                }
                // Full jitter: anywhere between half the backoff and all of it.
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let half = backoff.as_millis() as u64 / 2;
                sleep_unless(&stop, Duration::from_millis(half + rng % (half + 1)));
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

type Get<'a> = dyn Fn(&str) -> Result<ureq::http::Response<ureq::Body>, ureq::Error> + 'a;

/// Asks the peer who it is: its region must be the one configured, and a different engine
/// fingerprint is reported (resolver outcomes near the fuel limit could then differ).
/// Returns the peer's store id (0 from a peer too old to say) and whether that store joined
/// from a snapshot.
fn check_peer(
    peer: &Peer,
    ours: &EngineFingerprint,
    metrics: &Metrics,
    get: &Get<'_>,
) -> Result<(u64, bool), String> {
    let mut resp = get("/_replication/fingerprint").map_err(|e| e.to_string())?;
    if resp.status() != 200 {
        return Err(format!("fingerprint request answered {}", resp.status()));
    }
    let text = resp
        .body_mut()
        .read_to_string()
        .map_err(|e| format!("fingerprint response: {e}"))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("fingerprint response: {e}"))?;
    let region = v["region"].as_str().unwrap_or_default();
    if region != peer.name {
        return Err(format!(
            "the peer at this URL is region {region:?}, not {:?}: check --peer",
            peer.name
        ));
    }
    let theirs: Option<EngineFingerprint> = serde_json::from_value(v["fingerprint"].clone()).ok();
    let mismatch = theirs.as_ref() != Some(ours);
    if mismatch {
        eprintln!(
            "warning: peer {} runs {}, this region runs {ours}: resolver outcomes near a limit may differ",
            peer.name,
            theirs.map_or_else(|| "an unknown engine".to_owned(), |t| t.to_string())
        );
    }
    metrics.peer(&peer.name, |p| p.fingerprint_mismatch = mismatch);
    // Its store, and whether that store joined from a snapshot.
    Ok((
        v["store"].as_u64().unwrap_or(0),
        v["joined"].as_bool() == Some(true),
    ))
}

/// One pull; `Ok(true)` when the peer has more right away.
/// `peer_store` is the store the peer's fingerprint named.
fn pull_once(
    state: &AppState,
    peer: &Peer,
    peer_store: u64,
    get: &Get<'_>,
) -> Result<bool, String> {
    let (store, metrics) = (&state.store, &state.metrics);
    let cursor = store.cursor(&peer.name).map_err(|e| e.to_string())?;
    let joined = store.joined_store();
    // Who this region is, what it has applied, which store it is and whether it joined: a
    // peer serves only regions that have what it collected, from a store it knows or one
    // that joined.
    let mut resp = get(&format!(
        "/_replication/log?cursor={cursor}&max={PULL_MAX}&wait={}&region={}&applied={}&store={}&joined={}",
        WAIT.as_millis(),
        store.region(),
        applied_text(&store.applied()),
        store.store_id(),
        u8::from(joined)
    ))
    .map_err(|e| e.to_string())?;
    if resp.status() != 200 {
        // Told it was retired: this region stops taking writes (they would be refused), if
        // the peer is a store it replicates with (not one of another deployment).
        let cut = resp
            .headers()
            .get(crate::api::RETIRED_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        let answered = format!("log request answered {}: {text}", resp.status());
        return match cut.map(|cut| (cut, store.learn_retired(&peer.name, peer_store, cut))) {
            Some((cut, Ok(true))) => {
                eprintln!(
                    "[{}] {} says this region was retired (cut {cut}): it takes no more writes",
                    store.region(),
                    peer.name
                );
                Err(answered)
            }
            Some((_, Err(why))) => Err(format!("{answered}; {why}")),
            _ => Err(answered),
        };
    }
    let bytes = resp
        .body_mut()
        .with_config()
        .limit(MAX_BATCH_BYTES)
        .read_to_vec()
        .map_err(|e| e.to_string())?;
    let batch = Batch::decode(&bytes).map_err(|e| e.to_string())?;
    if batch.source.as_str() != peer.name {
        return Err(format!(
            "the batch comes from {}, not {}",
            batch.source, peer.name
        ));
    }
    let refused = store.stats().refused_retired;
    let report = store.apply_batch(&batch).map_err(|e| e.to_string())?;
    let newly = store.stats().refused_retired.saturating_sub(refused);
    if newly > 0 {
        eprintln!(
            "[{}] refused {newly} versions from {}: they were written by a retired region \
             after its retirement",
            store.region(),
            peer.name
        );
    }
    if report.applied > 0 {
        // What this region applied is in its own log now: its own pullers' peers may wait.
        state.notify();
    }
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let written: Vec<u64> = batch.versions.iter().map(|v| v.hlc.physical_ms).collect();
    metrics.replicated(&peer.name, report.applied, &written, now_ms, batch.more);
    Ok(batch.more)
}

/// An applied vector as a query parameter: `region:counter` joined by commas.
pub fn applied_text(v: &Applied) -> String {
    v.iter()
        .map(|(r, c)| format!("{r}:{c}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Parses [`applied_text`]'s form (empty: the empty vector).
pub fn parse_applied(text: &str) -> Result<Applied, converge_core::Error> {
    let bad = |why: String| converge_core::Error::InvalidInput(format!("applied={text:?}: {why}"));
    let mut out = Applied::new();
    for part in text.split(',').filter(|p| !p.is_empty()) {
        let (r, c) = part
            .split_once(':')
            .ok_or_else(|| bad(format!("{part:?} is not region:counter")))?;
        let region = RegionId::new(r)?;
        let counter: u64 = c
            .parse()
            .map_err(|_| bad(format!("{c:?} is not a counter")))?;
        out.insert(region, counter);
    }
    Ok(out)
}

fn sleep_unless(stop: &AtomicBool, d: Duration) {
    let until = Instant::now() + d;
    while !stop.load(Ordering::Relaxed) {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}

fn jitter_seed(name: &str) -> u64 {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    name.bytes()
        .fold(t | 1, |h, b| h.rotate_left(5) ^ u64::from(b))
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_urls_name_a_host_and_hold_no_space_or_control_character() {
        assert!("east=http://10.0.0.2:8080".parse::<Peer>().is_ok());
        for bad in [
            "east=http://",
            "east=https:///x",
            "east=http://a b",
            "east=http://127.0.0.1:1\nnorth=http://x",
            "east=ftp://x",
            "east",
            "..=http://x",
        ] {
            assert!(bad.parse::<Peer>().is_err(), "{bad:?} was taken");
        }
    }

    #[test]
    fn applied_vectors_round_trip_and_bad_ones_are_refused() {
        let v = parse_applied("west:5,east:7").expect("parse");
        assert_eq!(parse_applied(&applied_text(&v)).expect("again"), v);
        assert!(parse_applied("").expect("empty").is_empty());
        for bad in ["west", "west:x", ":5", "we st:1"] {
            assert!(parse_applied(bad).is_err(), "{bad:?}");
        }
    }
}
