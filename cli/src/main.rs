//! `converge`: the command line of the converge multi-region document store.

mod check;
mod cluster;
mod demo;
mod retire;
mod serve;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "converge",
    version,
    about = "Multi-region JSON document store with programmable conflict resolution"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run three regions in one process, write concurrently while replication is cut, heal,
    /// and show how each policy resolved the conflicts.
    Demo(demo::DemoArgs),
    /// Check a resolver module before it ships: generated conflicts run twice each (traps,
    /// invalid answers, defers, fuel, differences, properties), then the multi-region
    /// simulation with it. Exit status 1 when anything is wrong.
    CheckResolver(check::CheckArgs),
    /// Run one region as a server: the HTTP API of docs/http-api.md, pulling from its peers.
    Serve(serve::ServeArgs),
    /// Retire a region that is gone for good: it stops holding collection back, and its later
    /// versions are refused. Replicated from the region at --url to every other.
    RetireRegion(retire::RetireArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(args) => demo::run(&args),
        Command::CheckResolver(args) => check::run(&args),
        Command::Serve(args) => serve::run(args),
        Command::RetireRegion(args) => retire::run(&args),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
