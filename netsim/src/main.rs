//! `netsim`: the local cluster harness (see the library docs for what exists today).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "netsim", about = "Start and stop local multi-process HADSS clusters")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Start a cluster on 127.0.0.1, wait until it is healthy, write DIR/cluster.json.
    Up {
        /// Directory for keys, data, logs and cluster.json.
        #[arg(long)]
        dir: PathBuf,
        /// Storage nodes.
        #[arg(long, default_value_t = 5)]
        storage: usize,
        /// Monitors (not implemented yet: must be 0).
        #[arg(long, default_value_t = 0)]
        monitors: usize,
        /// S3 gateways.
        #[arg(long, default_value_t = 0)]
        gateways: usize,
        /// Zones the storage nodes are spread over.
        #[arg(long, default_value_t = 3)]
        zones: usize,
        /// Map partitions.
        #[arg(long, default_value_t = 256)]
        partitions: u32,
        /// The hadss binary (default: next to this one).
        #[arg(long)]
        hadss: Option<PathBuf>,
        /// With monitors: storage nodes wait for `hadss admin node admit` instead of being
        /// admitted as they ask.
        #[arg(long)]
        manual_admit: bool,
    },
    /// Stop the cluster described by DIR/cluster.json.
    Down {
        /// The cluster's directory.
        #[arg(long)]
        dir: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let cli = Cli::parse();
    let rt = tokio::runtime::Runtime::new()?;
    match cli.command {
        Cmd::Up {
            dir,
            storage,
            monitors,
            gateways,
            zones,
            partitions,
            hadss,
            manual_admit,
        } => {
            let hadss = match hadss {
                Some(h) => h,
                None => std::env::current_exe()?
                    .parent()
                    .map(|p| p.join("hadss"))
                    .ok_or_else(|| anyhow::anyhow!("cannot locate the hadss binary; pass --hadss"))?,
            };
            let opts = netsim::UpOptions {
                dir: dir.clone(),
                storage,
                zones,
                hadss,
                partitions,
                gateways,
                monitors,
                auto_admit: !manual_admit,
            };
            let cluster = rt.block_on(netsim::up(&opts))?;
            println!(
                "cluster of {} nodes up; {}",
                cluster.nodes.len(),
                dir.join("cluster.json").display()
            );
        }
        Cmd::Down { dir } => {
            rt.block_on(netsim::down(&dir))?;
            println!("cluster in {} stopped", dir.display());
        }
    }
    Ok(())
}
