//! `netsim`: the local cluster harness: `up` / `down` a real multi-process cluster, inject
//! faults into it (`fault …`), or `run` a scenario with a workload and invariant checks.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use netsim::scenario::{RunOptions, Scenario};

#[derive(Parser, Debug)]
#[command(
    name = "netsim",
    about = "Local multi-process HADSS clusters: start, stop, inject faults, run checked scenarios"
)]
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
        /// Monitors (0: netsim signs the first map itself).
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
        /// Give every node a fault file so `netsim fault` can partition, delay and skew it.
        #[arg(long)]
        faults: bool,
    },
    /// Stop the cluster described by DIR/cluster.json.
    Down {
        /// The cluster's directory.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Inject or lift a fault in the cluster of DIR.
    Fault {
        /// The cluster's directory.
        #[arg(long)]
        dir: PathBuf,
        #[command(subcommand)]
        fault: FaultCmd,
    },
    /// Run a scenario: a fresh cluster, a workload under a fault schedule, invariant checks,
    /// a report ending in PASS or FAIL (exit status 1 on FAIL).
    Run {
        /// The scenario.
        scenario: Scenario,
        /// Seed of the fault schedule and the workload.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// How long the workload runs.
        #[arg(long, default_value_t = 60)]
        duration_s: u64,
        /// Directory of the cluster (cleared first).
        #[arg(long, default_value = "target/netsim-run")]
        dir: PathBuf,
        /// Concurrent S3 clients.
        #[arg(long, default_value_t = 6)]
        clients: usize,
        /// Leave the cluster running afterwards.
        #[arg(long)]
        keep: bool,
        /// Deliberately broken build: the gateways acknowledge writes before replicating
        /// them. The checker must report lost writes.
        #[arg(long)]
        broken_ack: bool,
        /// Bound on replica convergence after the faults are lifted.
        #[arg(long, default_value_t = 90)]
        converge_timeout_s: u64,
        /// Fraction of operations that must succeed in every phase.
        #[arg(long, default_value_t = 0.95)]
        min_availability: f64,
        /// The hadss binary (default: next to this one).
        #[arg(long)]
        hadss: Option<PathBuf>,
    },
    /// The deterministic simulator: run seeds of the sans-IO cores (SWIM, the write
    /// coordinator, the primary-copy sender, anti-entropy) with virtual time and a seeded network; exit status 1 if
    /// any seed breaks an invariant (it is printed, and `--seed` replays it).
    Sim {
        /// Only this core (default: all).
        #[arg(long)]
        only: Option<netsim::sim::SimKind>,
        /// Run just this seed and print what happened.
        #[arg(long)]
        seed: Option<u64>,
        /// Seeds per core.
        #[arg(long, default_value_t = 1000)]
        seeds: u64,
        /// First seed.
        #[arg(long, default_value_t = 0)]
        from: u64,
    },
}

#[derive(Subcommand, Debug)]
enum FaultCmd {
    /// kill -9 a node.
    Kill {
        /// Node name (`storage-2`, `gateway-1`, `monitor-3`).
        node: String,
    },
    /// Stop a node cleanly (SIGTERM).
    Stop {
        /// Node name.
        node: String,
    },
    /// Start a stopped node with its recorded command; wait until it is ready.
    Restart {
        /// Node name.
        node: String,
    },
    /// SIGSTOP a node.
    Pause {
        /// Node name.
        node: String,
    },
    /// SIGCONT a node.
    Resume {
        /// Node name.
        node: String,
    },
    /// Cut the links between two sets of nodes.
    Partition {
        /// One side, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        a: Vec<String>,
        /// The other side (default: every other node).
        #[arg(long, value_delimiter = ',')]
        b: Vec<String>,
        /// Only what side A sends is lost.
        #[arg(long)]
        one_way: bool,
    },
    /// Add delay and stream loss between two sets of nodes.
    Degrade {
        /// One side, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        a: Vec<String>,
        /// The other side (default: every other node).
        #[arg(long, value_delimiter = ',')]
        b: Vec<String>,
        /// Delay each way.
        #[arg(long, default_value_t = 0)]
        delay_ms: u64,
        /// Probability a stream is lost.
        #[arg(long, default_value_t = 0.0)]
        loss: f64,
    },
    /// Lift every partition, delay and loss.
    Heal,
    /// Skew a node's clock.
    Skew {
        /// Node name.
        node: String,
        /// Milliseconds added to its wall clock (negative: behind).
        #[arg(long, allow_hyphen_values = true)]
        ms: i64,
    },
    /// Flip bits in random bytes of a storage node's segment files.
    Bitrot {
        /// Node name.
        node: String,
        /// Bytes to flip.
        #[arg(long, default_value_t = 100)]
        bytes: usize,
        /// RNG seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Fill a storage node's disk: restart it capped at its current usage.
    FillDisk {
        /// Node name.
        node: String,
    },
    /// Lift the cap (restarts the node).
    UnfillDisk {
        /// Node name.
        node: String,
    },
}

fn hadss_next_to_me(hadss: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    match hadss {
        Some(h) => Ok(h),
        None => std::env::current_exe()?
            .parent()
            .map(|p| p.join("hadss"))
            .ok_or_else(|| anyhow::anyhow!("cannot locate the hadss binary; pass --hadss")),
    }
}

fn others(cluster: &netsim::ClusterFile, a: &[String], b: Vec<String>) -> Vec<String> {
    if !b.is_empty() {
        return b;
    }
    cluster
        .nodes
        .iter()
        .map(|n| n.name.clone())
        .filter(|n| !a.contains(n))
        .collect()
}

async fn fault(dir: PathBuf, cmd: FaultCmd) -> anyhow::Result<String> {
    use netsim::fault;
    let mut cluster = netsim::read_cluster_file(&dir)?;
    Ok(match cmd {
        FaultCmd::Kill { node } => {
            fault::kill(&cluster, &node).await?;
            format!("{node} killed")
        }
        FaultCmd::Stop { node } => {
            fault::stop(&cluster, &node).await?;
            format!("{node} stopped")
        }
        FaultCmd::Restart { node } => {
            fault::restart(&mut cluster, &dir, &node).await?;
            format!("{node} restarted")
        }
        FaultCmd::Pause { node } => {
            fault::pause(&cluster, &node)?;
            format!("{node} paused")
        }
        FaultCmd::Resume { node } => {
            fault::resume(&cluster, &node)?;
            format!("{node} resumed")
        }
        FaultCmd::Partition { a, b, one_way } => {
            let b = others(&cluster, &a, b);
            fault::partition(&cluster, &a, &b, one_way)?;
            format!(
                "{} {} {}",
                a.join(","),
                if one_way { "-/->" } else { "<-/->" },
                b.join(",")
            )
        }
        FaultCmd::Degrade { a, b, delay_ms, loss } => {
            let b = others(&cluster, &a, b);
            fault::degrade(&cluster, &a, &b, delay_ms, loss)?;
            format!("{delay_ms} ms, {loss} loss between {} and {}", a.join(","), b.join(","))
        }
        FaultCmd::Heal => {
            fault::heal_network(&cluster)?;
            "network healed".into()
        }
        FaultCmd::Skew { node, ms } => {
            fault::skew(&cluster, &node, ms)?;
            format!("clock of {node} {ms:+} ms")
        }
        FaultCmd::Bitrot { node, bytes, seed } => {
            use rand::SeedableRng;
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let n = fault::bitrot(&cluster, &node, bytes, &mut rng)?;
            format!("{n} bytes flipped in {node}'s segment files")
        }
        FaultCmd::FillDisk { node } => {
            let cap = fault::fill_disk(&mut cluster, &dir, &node, 256 * 1024).await?;
            format!("{node} capped at {cap} bytes")
        }
        FaultCmd::UnfillDisk { node } => {
            fault::set_capacity(&mut cluster, &dir, &node, None).await?;
            format!("{node} uncapped")
        }
    })
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
            faults,
        } => {
            let mut opts = netsim::UpOptions::new(dir.clone(), hadss_next_to_me(hadss)?);
            opts.storage = storage;
            opts.zones = zones;
            opts.partitions = partitions;
            opts.gateways = gateways;
            opts.monitors = monitors;
            opts.auto_admit = !manual_admit;
            opts.faults = faults;
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
        Cmd::Sim {
            only,
            seed,
            seeds,
            from,
        } => {
            use netsim::sim::{SimKind, run_seed, run_seeds};
            let kinds: Vec<SimKind> = only.map_or_else(|| SimKind::ALL.to_vec(), |k| vec![k]);
            let mut failed = false;
            if let Some(seed) = seed {
                for k in kinds {
                    match run_seed(k, seed) {
                        Ok(what) => println!("{} seed {seed}: PASS: {what}", k.name()),
                        Err(why) => {
                            failed = true;
                            println!("{} seed {seed}: FAIL: {why}", k.name());
                        }
                    }
                }
            } else {
                for (k, passed, first_failure) in run_seeds(&kinds, from, seeds) {
                    println!(
                        "{}: {passed}/{seeds} seeds passed (seeds {from}..{})",
                        k.name(),
                        from + seeds
                    );
                    if let Some((seed, why)) = first_failure {
                        failed = true;
                        println!("  first failure: seed {seed}: {why}");
                        println!("  replay: netsim sim --only {} --seed {seed}", k.name());
                    }
                }
            }
            println!("{}", if failed { "FAIL" } else { "PASS" });
            if failed {
                std::process::exit(1);
            }
        }
        Cmd::Fault { dir, fault: cmd } => {
            println!("{}", rt.block_on(fault(dir, cmd))?);
        }
        Cmd::Run {
            scenario,
            seed,
            duration_s,
            dir,
            clients,
            keep,
            broken_ack,
            converge_timeout_s,
            min_availability,
            hadss,
        } => {
            let opts = RunOptions {
                scenario,
                seed,
                duration_s,
                dir: std::path::absolute(dir)?,
                hadss: hadss_next_to_me(hadss)?,
                clients,
                keep,
                broken_ack,
                converge_timeout_s,
                min_availability,
            };
            eprintln!(
                "netsim run {} --seed {seed} --duration-s {duration_s}: starting the cluster in {}",
                scenario.name(),
                opts.dir.display()
            );
            let report = rt.block_on(netsim::scenario::run(&opts))?;
            print!("{}", report.render());
            if !report.pass {
                std::process::exit(1);
            }
        }
    }
    Ok(())
}
