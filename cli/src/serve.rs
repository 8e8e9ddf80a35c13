//! `converge serve`: one region as a server (see `converge_server` and docs/http-api.md).

use anyhow::{Context, Result, bail};
use clap::Args;
use converge_server::ServeConfig;
use converge_server::replication::Peer;
use std::io::Write;
use std::path::PathBuf;

/// Options of `converge serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// This region's name.
    #[arg(long)]
    region: String,
    /// Its data directory (created if missing).
    #[arg(long)]
    data: PathBuf,
    /// Address to listen on; port 0 picks a free one (the `listening on` line says which).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// A region to pull changes from, `<region>=<url>` (repeatable).
    #[arg(long = "peer", value_name = "REGION=URL")]
    peers: Vec<Peer>,
    /// File holding the bearer key every request must carry (peers use it too). Without it
    /// only loopback addresses are allowed.
    /// A base64 key (a Cosmos master key, such as the emulator's) also checks the Cosmos SDKs'
    /// signatures.
    #[arg(long)]
    key_file: Option<PathBuf>,
    /// The endpoint this region announces to Cosmos SDKs (its account document), such as
    /// `http://10.0.0.2:8080`; default: its listen address.
    #[arg(long, value_name = "URL")]
    advertise: Option<String>,
    /// Serve HTTPS with this certificate chain (PEM, leaf first); needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Verify peers' HTTPS certificates against the certificates in this PEM file (default:
    /// the public web roots).
    #[arg(long, value_name = "FILE")]
    peer_ca: Option<PathBuf>,
    /// Close a connection that sends or reads nothing for this long (an idle keep-alive
    /// connection, a request cut off mid-way); at least 2.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    idle_timeout: u64,
    /// How long a deleted item's tombstone is kept once every member has it, before
    /// collection purges it: `1h`, `15m`, `30s`, `0s` (tests).
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_duration)]
    tombstone_grace: std::time::Duration,
    /// Start this region from a snapshot of the region at this URL (a new region, or one whose
    /// data was lost), then serve and pull from the peers as usual. The data directory must
    /// hold no store.
    #[arg(long, value_name = "URL")]
    join: Option<String>,
}

/// Refuses to start a region on an empty data directory when a reachable peer has heard from
/// it before: its data was lost, and starting empty would let it write concurrently with
/// deletes its peers already collected. It must `--join` instead. (A peer that does not answer
/// within a few seconds is not waited for.)
fn refuse_a_lost_region(args: &ServeArgs, key: Option<&str>) -> Result<()> {
    let Ok(tls) = converge_server::tls::peer_tls(args.peer_ca.as_deref()) else {
        return Ok(());
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .tls_config(tls)
        .timeout_global(Some(std::time::Duration::from_secs(3)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut answered = 0;
    for peer in &args.peers {
        let mut req = agent.get(format!("{}/_replication/members", peer.url));
        if let Some(k) = key {
            req = req.header("Authorization", format!("Bearer {k}"));
        }
        let Ok(mut resp) = req.call() else { continue };
        if resp.status() != 200 {
            continue;
        }
        answered += 1;
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        let known = v["members"].as_array().is_some_and(|m| {
            m.iter().any(|m| {
                m["region"] == args.region.as_str()
                    && (!m["heard_ms_ago"].is_null()
                        || m["applied"].as_object().is_some_and(|a| !a.is_empty()))
            })
        });
        if known {
            bail!(
                "{} holds no store, but peer {} has heard from region {} before: its data was \
                 lost. Start it from a snapshot instead: the same command with --join {}",
                args.data.display(),
                peer.name,
                args.region,
                peer.url
            );
        }
    }
    if answered == 0 && !args.peers.is_empty() {
        eprintln!(
            "[{}] note: {} holds no store and no peer answered, so this starts as a new region \
             (as the first region of a new deployment does). If it ran before and lost its \
             data, stop it and start it with --join <url>: its peers refuse this store",
            args.region,
            args.data.display()
        );
    }
    Ok(())
}

/// The file that marks a data directory whose `--join` has not finished.
const JOINING: &str = "join-in-progress";

/// Fills the empty data directory from a snapshot of the region at `url`, with a progress bar
/// on stderr (stdout's first line stays the `listening on` line).
fn join(args: &ServeArgs, url: &str, key: Option<&str>) -> Result<()> {
    let file = args.data.join(converge_core::STORE_FILE);
    let marker = args.data.join(JOINING);
    if file.exists() && marker.exists() {
        // An earlier join stopped half-way (killed): what it left is of no use.
        eprintln!("an earlier --join did not finish: starting it over");
        std::fs::remove_file(&file).with_context(|| format!("cannot remove {}", file.display()))?;
    }
    if file.exists() {
        bail!(
            "--join starts a region on an empty data directory, and {} already holds a store: \
             start without --join to keep it, or remove it (its data is lost) to join",
            file.display()
        );
    }
    let tls =
        converge_server::tls::peer_tls(args.peer_ca.as_deref()).map_err(anyhow::Error::msg)?;
    let options = converge_core::StoreOptions::new()
        .resolver_host(std::sync::Arc::new(converge_core::WasmResolvers::new()))
        .durability(converge_core::Durability::Deferred);
    std::fs::create_dir_all(&args.data)
        .with_context(|| format!("cannot create {}", args.data.display()))?;
    std::fs::write(&marker, url).with_context(|| format!("cannot write {}", marker.display()))?;
    let store = converge_core::Store::open(&args.data, &args.region, options)?;
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "joining {msg} {bar:40} {pos}/{len} items ({per_sec}, {eta} left)",
        )
        .map_err(anyhow::Error::msg)?,
    );
    bar.set_message(url.to_owned());
    let started = std::time::Instant::now();
    let result = converge_server::snapshot::join(&store, url, key, tls, &mut |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    });
    bar.finish_and_clear();
    drop(store);
    match result {
        Ok(s) => {
            std::fs::remove_file(&marker)
                .with_context(|| format!("cannot remove {}", marker.display()))?;
            let secs = started.elapsed().as_secs_f64().max(1e-9);
            eprintln!(
                "joined from {url}: {} items, {:.1} MiB in {secs:.1} s ({:.0} items/s); \
                 pulling from the peers from there",
                s.items,
                s.bytes as f64 / (1 << 20) as f64,
                s.items as f64 / secs
            );
            Ok(())
        }
        Err(e) => {
            // A half-filled store is of no use: the directory is left as it was found.
            let _ = std::fs::remove_file(&file);
            let _ = std::fs::remove_file(&marker);
            bail!("{e}; the data directory was left empty")
        }
    }
}

/// `<number><unit>` with unit `ms`, `s`, `m`, `h` or `d`.
fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?}: give a unit, such as 30s, 15m or 1h"))?;
    let (n, unit) = text.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{text:?}: a duration is a number and a unit, such as 1h"))?;
    let ms = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("{text:?}: the unit is one of ms, s, m, h, d")),
    };
    n.checked_mul(ms)
        .map(std::time::Duration::from_millis)
        .ok_or_else(|| format!("{text:?} is too long"))
}

/// Runs until SIGTERM; `Ok(true)` after a clean stop.
pub fn run(args: ServeArgs) -> Result<bool> {
    let key = match &args.key_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the key file {}", path.display()))?;
            let key = text.trim().to_owned();
            if key.len() < 16 || key.chars().any(|c| c.is_whitespace() || c.is_control()) {
                bail!(
                    "the key in {} must be at least 16 characters without spaces",
                    path.display()
                );
            }
            Some(key)
        }
        None => None,
    };
    if let Some(url) = &args.join {
        join(&args, url, key.as_deref())?;
    } else if !args.data.join(converge_core::STORE_FILE).exists() {
        refuse_a_lost_region(&args, key.as_deref())?;
    } else if args.data.join(JOINING).exists() {
        bail!(
            "{} holds a --join that did not finish (the process was stopped): run the same \
             command with --join <url> again to start it over",
            args.data.display()
        );
    }
    let config = ServeConfig {
        region: args.region,
        data: args.data,
        listen: args.listen,
        peers: args.peers,
        key,
        advertise: args.advertise,
        tls: args
            .tls_cert
            .zip(args.tls_key)
            .map(|(cert, key)| converge_server::tls::TlsFiles { cert, key }),
        peer_ca: args.peer_ca,
        idle_timeout: std::time::Duration::from_secs(args.idle_timeout),
        tombstone_grace: args.tombstone_grace,
        joined_from: args.join.clone(),
    };
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    converge_server::run(config, |addr| {
        println!("listening on {scheme}://{addr}");
        let _ = std::io::stdout().flush();
    })?;
    Ok(true)
}
