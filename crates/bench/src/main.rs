//! `hadss-bench`: throughput measured against the physical limits of this machine in the
//! same run (disk append + fdatasync, loopback, a single chunk store), with results printed
//! as Markdown tables for `docs/BENCHMARKS.md`. Kept out of the production `hadss` binary;
//! in-process clusters come from `hadss-testkit`, the same kit the tests use.
//!
//! - `replication`: replicated chunk put/get through three in-process nodes;
//! - `s3`: S3 PUT/GET of small and large objects against `hadss dev` (the real binary, as a
//!   child process: build it first) or any endpoint;
//! - `repair`: anti-entropy bytes versus differences, and re-replication after a node dies.

mod repair;
mod replication;
mod s3;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// HADSS benchmarks.
#[derive(Parser, Debug)]
#[command(name = "hadss-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Bench,
}

#[derive(Subcommand, Debug)]
enum Bench {
    /// Replicated chunk put/get through three local nodes vs the disk, loopback and a
    /// single chunk store.
    Replication(replication::ReplicationBench),
    /// S3 PUT/GET of small and large objects against `hadss dev` (or any endpoint), beside
    /// the disk and chunk store limits measured in the same run.
    S3(s3::S3Bench),
    /// Anti-entropy bytes versus differences, and re-replication after a node is killed
    /// versus the disk's write rate.
    Repair(repair::RepairBench),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    match cli.command {
        Bench::Replication(opts) => runtime.block_on(replication::run(opts)),
        Bench::S3(opts) => runtime.block_on(s3::run(opts)),
        Bench::Repair(opts) => runtime.block_on(repair::run(opts)),
    }
}
