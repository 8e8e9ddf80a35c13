//! `converge retire-region`: removes a member for good, through any live region.

use anyhow::{Context, Result, bail};
use clap::Args;
use std::path::PathBuf;

/// Options of `converge retire-region`.
#[derive(Args, Debug)]
pub struct RetireArgs {
    /// The region to retire: a member that is gone for good.
    region: String,
    /// The URL of any live region of the deployment, such as `http://10.0.0.2:8080`.
    #[arg(long)]
    url: String,
    /// The deployment's key file, when it has one.
    #[arg(long)]
    key_file: Option<PathBuf>,
    /// Retire it even though it was heard from in the last minute.
    #[arg(long)]
    force: bool,
}

/// Asks the region at `--url` to retire the region; the retirement replicates from there.
pub fn run(args: &RetireArgs) -> Result<bool> {
    let key = match &args.key_file {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .with_context(|| format!("cannot read the key file {}", p.display()))?
                .trim()
                .to_owned(),
        ),
        None => None,
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(30)))
        .build()
        .into();
    let url = format!("{}/_replication/retire", args.url.trim_end_matches('/'));
    let mut req = agent.post(&url).content_type("application/json");
    if let Some(k) = &key {
        req = req.header("Authorization", format!("Bearer {k}"));
    }
    let body = serde_json::json!({"region": args.region, "force": args.force}).to_string();
    let mut resp = req
        .send(body)
        .with_context(|| format!("cannot reach {}", args.url))?;
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    if status != 200 {
        let why = v["message"].as_str().unwrap_or(&text);
        bail!("{} answered {status}: {why}", args.url);
    }
    println!(
        "retired {}: its versions past counter {} are refused in every region the retirement reaches",
        args.region, v["cut"]
    );
    Ok(true)
}
