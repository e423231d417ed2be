//! `hadss`: the one binary of HADSS. Subcommands start the node roles; until the gateway and
//! node runtime land, only the chunk store exists and `hadss dev` says so.

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "hadss",
    version,
    about = "HADSS: a high-availability distributed object store"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a local development cluster with an S3 endpoint (lands with the gateway issue).
    Dev,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Dev => {
            anyhow::bail!(
                "`hadss dev` is not implemented yet: the storage engine (crates/chunkstore) exists, \
                 the node runtime and S3 gateway do not (see the project's issues)"
            )
        }
    }
}
