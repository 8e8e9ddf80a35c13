//! # converge-server
//!
//! One region as a server: the HTTP API of `docs/http-api.md` over the region's embedded store
//! (axum on tokio; store calls on the blocking pool), pulling from its peers over HTTP
//! ([`replication`]), with bearer-key authentication and Prometheus metrics. `converge serve`
//! is a thin command line over [`run`]; tests and fuzz targets drive [`api::router`]
//! in-process:
//!
//! ```
//! use converge_server::api::{AppState, router};
//! use converge_server::metrics::Metrics;
//! use std::sync::Arc;
//!
//! let store = converge_core::Store::memory("west", Default::default()).unwrap();
//! let app = router(AppState::new(Arc::new(store), Arc::new(Metrics::default())));
//! # drop(app);
//! ```

pub mod api;
pub mod conn;
pub mod cosmos;
pub mod error;
pub mod metrics;
pub mod replication;
pub mod snapshot;
pub mod tls;

use api::AppState;
use converge_core::{Durability, Store, StoreOptions, WasmResolvers};
use metrics::{MeteredResolvers, Metrics};
use replication::Peer;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How `converge serve` runs a region.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// The region's name.
    pub region: String,
    /// Its data directory.
    pub data: PathBuf,
    /// Where to listen (`127.0.0.1:0` picks a free port).
    pub listen: String,
    /// Regions to pull from.
    pub peers: Vec<Peer>,
    /// The bearer key every request (peers' included) must carry; `None` allows loopback only.
    /// When it is base64 (a Cosmos master key) it also checks Cosmos SDKs' signatures.
    pub key: Option<String>,
    /// The endpoint this region announces in its account document (`None`: its listen
    /// address, over http, or https when `tls` is set).
    pub advertise: Option<String>,
    /// Serve HTTPS with this certificate and key (`None`: plain HTTP).
    pub tls: Option<tls::TlsFiles>,
    /// The certificates (PEM) that peers' HTTPS certificates are verified against; `None`:
    /// the public web roots.
    pub peer_ca: Option<PathBuf>,
    /// How long a connection may make no progress before it is closed (at least
    /// [`conn::MIN_IDLE_TIMEOUT`]; [`conn::IDLE_TIMEOUT`] by default).
    pub idle_timeout: std::time::Duration,
    /// How long a tombstone stays after every member has it, before collection purges it
    /// ([`DEFAULT_TOMBSTONE_GRACE`] by default).
    pub tombstone_grace: std::time::Duration,
    /// The URL of the region this one joined from, if it just did: once serving, it asks that
    /// region to pull from it (`POST /_replication/peers`), so its writes reach the deployment.
    pub joined_from: Option<String>,
}

/// The file in a data directory that lists the peers added at run time (`<region>=<url>`
/// lines): regions that joined from this one. They are pulled from after a restart too.
pub const ADDED_PEERS_FILE: &str = "added-peers";

/// How long a stable tombstone is kept by default: one hour.
pub const DEFAULT_TOMBSTONE_GRACE: Duration = Duration::from_secs(3600);

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The store would not open.
    #[error("cannot open the store: {0}")]
    Store(#[from] converge_core::Error),
    /// The address is not one to listen on.
    #[error("{0}")]
    Listen(String),
    /// A certificate, key or CA file is unusable.
    #[error("{0}")]
    Tls(String),
    /// An I/O failure (binding, the runtime).
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// How often interrupted resolutions (stopped by the sandbox's watchdog) are retried.
const RETRY_EVERY: Duration = Duration::from_secs(1);

/// Runs the region until SIGTERM or Ctrl-C: opens the store, binds, calls `listening` with the
/// bound address, serves, pulls from the peers; on the signal stops accepting, finishes what is
/// in flight, stops pulling and returns.
pub fn run(config: ServeConfig, listening: impl FnOnce(SocketAddr)) -> Result<(), ServeError> {
    let addr: SocketAddr = config.listen.parse().map_err(|e| {
        ServeError::Listen(format!("--listen {:?}: {e} (use host:port)", config.listen))
    })?;
    if config.key.is_none() && !addr.ip().is_loopback() {
        return Err(ServeError::Listen(format!(
            "refusing to listen on {addr} without --key-file: without a key only loopback is allowed"
        )));
    }
    // Certificates are checked before anything is opened, so a bad file is the one error.
    let tls_config = config
        .tls
        .as_ref()
        .map(tls::server_config)
        .transpose()
        .map_err(ServeError::Tls)?;
    let peer_tls = tls::peer_tls(config.peer_ca.as_deref()).map_err(ServeError::Tls)?;
    if config.idle_timeout < conn::MIN_IDLE_TIMEOUT {
        return Err(ServeError::Listen(format!(
            "the idle timeout must be at least {:?} (the replication long poll is quiet for 1 s)",
            conn::MIN_IDLE_TIMEOUT
        )));
    }
    let metrics = Arc::new(Metrics::default());
    let host = MeteredResolvers::new(WasmResolvers::new(), metrics.clone());
    let options = StoreOptions::new()
        .resolver_host(Arc::new(host))
        .durability(Durability::GroupCommit);
    let store = Arc::new(Store::open(&config.data, &config.region, options)?);
    let key: Option<Arc<str>> = config.key.as_deref().map(Arc::from);
    let mut state = AppState::new(store.clone(), metrics.clone());
    state.key = key.clone();
    // A held log request makes no I/O: it must end before the connection counts as idle.
    state.max_log_wait = state
        .max_log_wait
        .min(config.idle_timeout.saturating_sub(Duration::from_secs(1)));
    state.query_budget = config
        .idle_timeout
        .saturating_sub(Duration::from_secs(2))
        .max(Duration::from_secs(1));
    state.master = config
        .key
        .as_deref()
        .and_then(cosmos::auth::MasterKey::from_base64);
    let peer_locations: Vec<(String, String)> = config
        .peers
        .iter()
        .map(|p| (p.name.clone(), endpoint(&p.url)))
        .collect();

    // Configured peers are members from the start: collection waits for them even before
    // they are first heard from (safety first: a region that starts late is not refused).
    // A mistyped peer name holds collection back until it is fixed and the ghost retired
    // (`converge retire-region`); the server warns about it.
    for peer in &config.peers {
        store.add_member(&peer.name)?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    {
        let (s, st, m) = (store.clone(), stop.clone(), metrics.clone());
        let grace = config.tombstone_grace;
        threads.push(
            std::thread::Builder::new()
                .name("collect".into())
                .spawn(move || collect_loop(&s, &m, grace, &st))?,
        );
    }
    // Peers added at run time (regions that joined from this one), from earlier runs too.
    let added_file = config.data.join(ADDED_PEERS_FILE);
    let mut peers = config.peers.clone();
    for line in std::fs::read_to_string(&added_file)
        .unwrap_or_default()
        .lines()
    {
        match line.parse::<Peer>() {
            Ok(p) if !peers.iter().any(|q| q.name == p.name) => peers.push(p),
            Ok(_) => {}
            Err(e) => eprintln!("[{}] {}: {e}", config.region, added_file.display()),
        }
    }
    let (add_tx, add_rx) = std::sync::mpsc::channel::<Peer>();
    state.add_peer = Some(add_tx);
    if let Ok(mut pulling) = state.pulling.lock() {
        pulling.extend(peers.iter().map(|p| (p.name.clone(), p.url.clone())));
    }
    {
        let (st, state, tls) = (stop.clone(), state.clone(), peer_tls.clone());
        threads.push(
            std::thread::Builder::new()
                .name("add-peers".into())
                .spawn(move || add_peers(&state, add_rx, &added_file, &tls, &st))?,
        );
    }
    for peer in peers {
        let (st, state, tls) = (stop.clone(), state.clone(), peer_tls.clone());
        threads.push(
            std::thread::Builder::new()
                .name(format!("pull-{}", peer.name))
                .spawn(move || replication::pull_loop(&state, peer, tls, st))?,
        );
    }
    {
        let (s, st) = (store.clone(), stop.clone());
        threads.push(
            std::thread::Builder::new()
                .name("retry".into())
                .spawn(move || {
                    while !st.load(Ordering::Relaxed) {
                        std::thread::sleep(RETRY_EVERY);
                        if s.interrupted_count() > 0
                            && let Err(e) = s.retry_interrupted()
                        {
                            eprintln!("[{}] retrying interrupted resolutions: {e}", s.region());
                        }
                    }
                })?,
        );
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let served = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let bound = listener.local_addr()?;
        let scheme = if tls_config.is_some() {
            "https"
        } else {
            "http"
        };
        let own = match &config.advertise {
            Some(url) => endpoint(url),
            None => format!("{scheme}://{bound}/"),
        };
        state.locations = std::iter::once((config.region.clone(), own))
            .chain(peer_locations)
            .collect();
        listening(bound);
        if let Some(source) = config.joined_from.clone()
            && config.advertise.is_none()
            && bound.ip().is_unspecified()
        {
            eprintln!(
                "[{}] listening on {bound}: pass --advertise <url> so {source} can pull from \
                 this region (it was not asked to)",
                config.region
            );
        } else if let Some(source) = config.joined_from.clone() {
            let own = state.locations[0].1.trim_end_matches('/').to_owned();
            let (region, key) = (config.region.clone(), config.key.clone());
            let tls = peer_tls.clone();
            std::thread::spawn(move || announce(&source, &region, &own, key.as_deref(), tls));
        }
        let app = api::router(state);
        let idle = config.idle_timeout;
        match tls_config {
            Some(tls_config) => {
                let listener =
                    tls::TlsListener::new(listener, tls_config, idle, config.region.clone())?;
                conn::serve(listener, app, idle, shutdown_signal()).await;
            }
            None => {
                let listener = conn::TimedListener::new(listener, idle);
                conn::serve(listener, app, idle, shutdown_signal()).await;
            }
        }
        Ok::<(), std::io::Error>(())
    });
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    store.flush()?;
    served.map_err(ServeError::Io)
}

/// Starts pulling from each peer that asks (`POST /_replication/peers`) and is new, and
/// remembers it in `file`, until `stop`.
fn add_peers(
    state: &AppState,
    rx: std::sync::mpsc::Receiver<Peer>,
    file: &std::path::Path,
    tls: &ureq::tls::TlsConfig,
    stop: &Arc<AtomicBool>,
) {
    let mut threads = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let Ok(peer) = rx.recv_timeout(Duration::from_millis(200)) else {
            continue;
        };
        let new = state.pulling.lock().is_ok_and(|mut pulling| {
            !pulling.contains_key(&peer.name)
                && pulling
                    .insert(peer.name.clone(), peer.url.clone())
                    .is_none()
        });
        if !new {
            continue;
        }
        let line = format!("{}={}\n", peer.name, peer.url);
        let saved = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(file)
            .and_then(|mut f| std::io::Write::write_all(&mut f, line.as_bytes()));
        if let Err(e) = saved {
            eprintln!(
                "[{}] cannot remember peer {}: {e}",
                state.store.region(),
                peer.name
            );
        }
        eprintln!(
            "[{}] pulling from {} at {} (it joined from this region)",
            state.store.region(),
            peer.name,
            peer.url
        );
        let (st, state, tls) = (stop.clone(), state.clone(), tls.clone());
        if let Ok(t) = std::thread::Builder::new()
            .name(format!("pull-{}", peer.name))
            .spawn(move || replication::pull_loop(&state, peer, tls, st))
        {
            threads.push(t);
        }
    }
    for t in threads {
        let _ = t.join();
    }
}

/// Asks the region this one joined from to pull from it, retrying for a minute.
fn announce(source: &str, region: &str, own: &str, key: Option<&str>, tls: ureq::tls::TlsConfig) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .tls_config(tls)
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .into();
    let body = serde_json::json!({"region": region, "url": own}).to_string();
    for _ in 0..60 {
        let mut req = agent
            .post(format!(
                "{}/_replication/peers",
                source.trim_end_matches('/')
            ))
            .content_type("application/json");
        if let Some(k) = key {
            req = req.header("Authorization", format!("Bearer {k}"));
        }
        match req.send(&body) {
            Ok(r) if r.status() == 200 => {
                eprintln!("[{region}] {source} pulls from this region now");
                return;
            }
            Ok(mut r) => {
                let text = r.body_mut().read_to_string().unwrap_or_default();
                eprintln!("[{region}] asking {source} to pull from this region: {text}");
                if r.status() != 503 {
                    return;
                }
            }
            Err(e) => eprintln!("[{region}] asking {source} to pull from this region: {e}"),
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// How often collection runs: a quarter of the grace, between 1 s and 60 s.
fn collect_every(grace: Duration) -> Duration {
    (grace / 4).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

/// A member that holds collection back for this long is named in a warning (and again every
/// [`WARN_AGAIN`] while it does).
const WARN_AFTER: Duration = Duration::from_secs(60);
const WARN_AGAIN: Duration = Duration::from_secs(600);

/// Runs collection until `stop`; warns about members that hold it back for long.
fn collect_loop(store: &Store, metrics: &Metrics, grace: Duration, stop: &AtomicBool) {
    let every = collect_every(grace);
    let mut warned: std::collections::HashMap<String, std::time::Instant> = Default::default();
    let mut holding: std::collections::HashMap<String, std::time::Instant> = Default::default();
    let mut next = std::time::Instant::now() + every;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        if std::time::Instant::now() < next {
            continue;
        }
        next = std::time::Instant::now() + every;
        match store.collect(grace) {
            Ok(r) => {
                metrics
                    .collected_tombstones
                    .fetch_add(r.tombstones as u64, Ordering::Relaxed);
                metrics
                    .collected_log_entries
                    .fetch_add(r.log_entries as u64, Ordering::Relaxed);
            }
            Err(e) => eprintln!("[{}] collection: {e}", store.region()),
        }
        let Ok(members) = store.members() else {
            continue;
        };
        // A member holding back since this process started is warned about after a minute
        // too (one never heard from, right after start, is no news yet).
        holding.retain(|r, _| members.iter().any(|m| m.holds_back && m.region == *r));
        for m in members.iter().filter(|m| m.holds_back) {
            let since = *holding
                .entry(m.region.clone())
                .or_insert_with(std::time::Instant::now);
            let quiet = since.elapsed() >= WARN_AFTER
                && m.heard_ms_ago
                    .is_none_or(|ms| ms >= WARN_AFTER.as_millis() as u64);
            let due = warned
                .get(&m.region)
                .is_none_or(|at| at.elapsed() >= WARN_AGAIN);
            if quiet && due {
                let heard = m.heard_ms_ago.map_or_else(
                    || "never heard from".to_owned(),
                    |ms| format!("last heard {} s ago", ms / 1000),
                );
                eprintln!(
                    "[{}] warning: member {} ({heard}) has not confirmed what this region has \
                     applied: collection waits for it (if it is up, see whether one of you \
                     refuses the other's pulls; retire it with `converge retire-region` only if \
                     it is gone for good)",
                    store.region(),
                    m.region
                );
                warned.insert(m.region.clone(), std::time::Instant::now());
            }
        }
    }
}

/// A URL as an account document's endpoint: with a trailing `/`.
fn endpoint(url: &str) -> String {
    format!("{}/", url.trim_end_matches('/'))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
