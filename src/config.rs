//! Configuration files of the node roles (TOML). Relative paths are resolved against the
//! directory of the config file. Unknown keys are errors, so a typo never silently falls
//! back to a default.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Membership timing preset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SwimPreset {
    /// Nodes in one data center (1 s probe period).
    #[default]
    Lan,
    /// Nodes across regions (5 s probe period).
    Wan,
    /// Test clusters on one machine (200 ms probe period).
    Fast,
}

impl SwimPreset {
    /// The SWIM settings of this preset for about `cluster_size` members.
    pub fn config(self, cluster_size: u32) -> swim::SwimConfig {
        match self {
            SwimPreset::Lan => swim::SwimConfig::lan(cluster_size),
            SwimPreset::Wan => swim::SwimConfig::wan(cluster_size),
            SwimPreset::Fast => swim::SwimConfig::local(cluster_size),
        }
    }
}

/// `hadss storage --config FILE`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// Where the node keeps its key, map, chunks and records.
    pub data_dir: PathBuf,
    /// libp2p listen address, e.g. `/ip4/0.0.0.0/tcp/7400`.
    pub listen: String,
    /// File holding the cluster secret.
    pub cluster_secret_file: PathBuf,
    /// File holding the monitors' public key (maps must be signed by it).
    pub map_public_key_file: PathBuf,
    /// Failure domain.
    #[serde(default)]
    pub zone: String,
    /// Peers to pull the map from at start and to ask for admission: the monitors, or any
    /// node (`/ip4/…/tcp/…/p2p/<peer id>`).
    #[serde(default)]
    pub bootstrap: Vec<String>,
    /// Membership timing.
    #[serde(default)]
    pub swim_preset: SwimPreset,
    /// Chunk store segment size.
    #[serde(default)]
    pub segment_size_bytes: Option<u64>,
    /// Cap on chunk store disk usage.
    #[serde(default)]
    pub capacity_bytes: Option<u64>,
    /// MiB of memory the node's caches may use (half to the record store's page cache, a
    /// sixteenth to the hint store's; `hadss::node::cache_sizes`). Default 512.
    #[serde(default)]
    pub memory_budget_mib: Option<u64>,
    /// Address of the `/health`, `/ready` and `/metrics` HTTP endpoint, e.g.
    /// `127.0.0.1:7480`. Default: an ephemeral port on 127.0.0.1, written to `node.json`.
    #[serde(default)]
    pub http_listen: Option<String>,
    /// Seconds between Merkle anti-entropy rounds over the record partitions this node
    /// replicates (a round also follows every new map epoch); 0 turns it off. Default 60.
    #[serde(default)]
    pub anti_entropy_interval_s: Option<u64>,
    /// Seconds between maintenance passes (repair, re-replication, rebalancing, garbage
    /// collection; a pass also follows every new epoch); 0 turns them off. Default 60.
    #[serde(default)]
    pub maintenance_interval_s: Option<u64>,
    /// Seconds a chunk must stay unreferenced (and a reference without its holder) before
    /// it is collected. Default 3600.
    #[serde(default)]
    pub gc_grace_s: Option<u64>,
    /// Seconds SWIM must report a storage node down before its partitions get another
    /// replica (its data is copied to the next node of each preference list). Default 600.
    #[serde(default)]
    pub down_out_s: Option<u64>,
    /// MiB per second of chunks a maintenance pass copies; 0: unlimited. Default 100.
    #[serde(default)]
    pub copy_rate_mib_s: Option<u64>,
    /// Seconds between scrubs (every chunk re-read and re-hashed); 0 turns them off.
    /// Default 604800 (a week).
    #[serde(default)]
    pub scrub_interval_s: Option<u64>,
    /// MiB per second a scrub re-reads. Default 32.
    #[serde(default)]
    pub scrub_rate_mib_s: Option<u64>,
    /// Test only: the fault file of netsim's fault layer (`crate::net::fault`: partitions,
    /// delay, loss, clock skew). Never set in production.
    #[serde(default)]
    pub fault_file: Option<PathBuf>,
    /// An S3 endpoint served by this storage node (a `[s3]` table): objects whose chunks
    /// have a copy here are read from the local chunk store, with no network hop and no
    /// encryption, as every Garage node serves S3. Absent: no S3 endpoint.
    #[serde(default)]
    pub s3: Option<NodeS3Config>,
}

/// The `[s3]` table of a storage node's config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeS3Config {
    /// S3 HTTP address, e.g. `0.0.0.0:9000`.
    pub listen: String,
    /// Region reported to clients.
    #[serde(default = "default_region")]
    pub region: String,
    /// Root access key id of this endpoint (cluster keys made with `hadss admin key` work too).
    pub access_key: String,
    /// File holding its secret key (one line); relative to the config file.
    pub secret_key_file: PathBuf,
}

/// `hadss monitor --config FILE`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorFileConfig {
    /// Where the monitor keeps its node key, Raft log and state, and the map it holds.
    pub data_dir: PathBuf,
    /// libp2p listen address, e.g. `/ip4/0.0.0.0/tcp/7100`.
    pub listen: String,
    /// Address of `/health`, `/ready` and `/metrics` (default: ephemeral on 127.0.0.1).
    #[serde(default)]
    pub http_listen: Option<String>,
    /// File holding the cluster secret.
    pub cluster_secret_file: PathBuf,
    /// File holding the monitors' map-signing key (`map.key`, private).
    pub map_key_file: PathBuf,
    /// Failure domain.
    #[serde(default)]
    pub zone: String,
    /// The first monitors, `/ip4/…/tcp/…/p2p/<peer id>`, the same list on each (this one
    /// included). Read only on a monitor's first start; leave empty for a monitor that a
    /// running quorum adds with `hadss admin monitor add`.
    #[serde(default)]
    pub initial_monitors: Vec<String>,
    /// Admit storage nodes that ask to join (they hold the cluster secret) without an
    /// operator's `hadss admin node admit`.
    #[serde(default)]
    pub auto_admit: bool,
    /// Copies of every chunk and record in the first map (N).
    #[serde(default = "default_replication")]
    pub replication: u8,
    /// Durable copies before a write is acknowledged in the first map (W).
    #[serde(default = "default_quorum")]
    pub write_quorum: u8,
    /// Replicas asked on a read in the first map (R).
    #[serde(default = "default_quorum")]
    pub read_quorum: u8,
    /// Partitions, fixed for the life of the cluster.
    #[serde(default = "default_partitions")]
    pub partitions: u32,
    /// Membership timing.
    #[serde(default)]
    pub swim_preset: SwimPreset,
    /// Raft leader heartbeat period.
    #[serde(default)]
    pub raft_heartbeat_ms: Option<u64>,
    /// Shortest Raft election timeout (the longest is twice this).
    #[serde(default)]
    pub raft_election_timeout_ms: Option<u64>,
    /// Test only: the fault file of netsim's fault layer (`crate::net::fault`: partitions,
    /// delay, loss, clock skew). Never set in production.
    #[serde(default)]
    pub fault_file: Option<PathBuf>,
}

fn default_replication() -> u8 {
    3
}

fn default_quorum() -> u8 {
    2
}

fn default_partitions() -> u32 {
    1024
}

impl MonitorFileConfig {
    /// Loads a config file, resolving relative paths against its directory.
    pub fn load(path: &Path) -> Result<MonitorFileConfig, ConfigError> {
        let mut cfg: MonitorFileConfig = read_toml(path)?;
        resolve(
            path,
            [&mut cfg.data_dir, &mut cfg.cluster_secret_file, &mut cfg.map_key_file],
        );
        Ok(cfg)
    }
}

/// `hadss gateway --config FILE`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Where the gateway keeps its node key and the map it holds (no object data).
    pub data_dir: PathBuf,
    /// libp2p listen address.
    pub listen: String,
    /// S3 HTTP address, e.g. `0.0.0.0:9000`.
    pub s3_listen: String,
    /// Address of `/health`, `/ready` and `/metrics` (default: ephemeral on 127.0.0.1).
    #[serde(default)]
    pub http_listen: Option<String>,
    /// File holding the cluster secret.
    pub cluster_secret_file: PathBuf,
    /// File holding the monitors' public key.
    pub map_public_key_file: PathBuf,
    /// Peers to pull the map from (`/ip4/…/tcp/…/p2p/<peer id>`).
    pub bootstrap: Vec<String>,
    /// Region reported to clients.
    #[serde(default = "default_region")]
    pub region: String,
    /// Access key id accepted by this gateway.
    pub access_key: String,
    /// File holding its secret key (one line).
    pub secret_key_file: PathBuf,
    /// Test only: the fault file of netsim's fault layer (`crate::net::fault`: partitions,
    /// delay, loss, clock skew). Never set in production.
    #[serde(default)]
    pub fault_file: Option<PathBuf>,
}

fn default_region() -> String {
    "us-east-1".into()
}

/// Why a config file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Reading failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The TOML does not parse or holds unknown keys.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// Largest config file read.
const CONFIG_SIZE_BYTES_MAX: u64 = 1024 * 1024;

/// Reads a TOML config file of at most `CONFIG_SIZE_BYTES_MAX`.
fn read_toml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let io = |source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    };
    if std::fs::metadata(path).map_err(io)?.len() > CONFIG_SIZE_BYTES_MAX {
        return Err(ConfigError::Parse {
            path: path.to_path_buf(),
            message: "config file larger than 1 MiB".into(),
        });
    }
    let text = std::fs::read_to_string(path).map_err(io)?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Resolves relative paths against the directory of the config file.
fn resolve(path: &Path, paths: [&mut PathBuf; 3]) {
    let base = path.parent().unwrap_or(Path::new("."));
    for p in paths {
        if p.is_relative() {
            *p = base.join(&*p);
        }
    }
}

impl GatewayConfig {
    /// Loads a config file, resolving relative paths against its directory.
    pub fn load(path: &Path) -> Result<GatewayConfig, ConfigError> {
        let mut cfg: GatewayConfig = read_toml(path)?;
        resolve(
            path,
            [
                &mut cfg.data_dir,
                &mut cfg.cluster_secret_file,
                &mut cfg.map_public_key_file,
            ],
        );
        if cfg.secret_key_file.is_relative() {
            cfg.secret_key_file = path.parent().unwrap_or(Path::new(".")).join(&cfg.secret_key_file);
        }
        Ok(cfg)
    }
}

impl StorageConfig {
    /// The maintenance settings, defaults where unset.
    pub fn maintenance(&self) -> crate::node::MaintenanceConfig {
        let d = crate::node::MaintenanceConfig::default();
        const MIB: u64 = 1024 * 1024;
        crate::node::MaintenanceConfig {
            interval_ms: self
                .maintenance_interval_s
                .map_or(d.interval_ms, |s| s.saturating_mul(1000)),
            gc_grace_ms: self.gc_grace_s.map_or(d.gc_grace_ms, |s| s.saturating_mul(1000)),
            down_out_ms: self.down_out_s.map_or(d.down_out_ms, |s| s.saturating_mul(1000)),
            copy_rate_bytes_per_s: self
                .copy_rate_mib_s
                .map_or(d.copy_rate_bytes_per_s, |m| m.saturating_mul(MIB)),
            scrub_interval_ms: self
                .scrub_interval_s
                .map_or(d.scrub_interval_ms, |s| s.saturating_mul(1000)),
            scrub_rate_bytes_per_s: self
                .scrub_rate_mib_s
                .map_or(d.scrub_rate_bytes_per_s, |m| m.saturating_mul(MIB)),
        }
    }

    /// Loads a config file, resolving relative paths against its directory.
    pub fn load(path: &Path) -> Result<StorageConfig, ConfigError> {
        let mut cfg: StorageConfig = read_toml(path)?;
        resolve(
            path,
            [
                &mut cfg.data_dir,
                &mut cfg.cluster_secret_file,
                &mut cfg.map_public_key_file,
            ],
        );
        if let Some(s3) = &mut cfg.s3
            && s3.secret_key_file.is_relative()
        {
            s3.secret_key_file = path.parent().unwrap_or(Path::new(".")).join(&s3.secret_key_file);
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_resolves_paths() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("storage.toml");
        std::fs::write(
            &path,
            "data_dir = \"data\"\nlisten = \"/ip4/127.0.0.1/tcp/0\"\ncluster_secret_file = \"/etc/hadss/secret\"\nmap_public_key_file = \"map.pub\"\nzone = \"a\"\nswim_preset = \"fast\"\n",
        )
        .expect("write");
        let cfg = StorageConfig::load(&path).expect("load");
        assert_eq!(cfg.data_dir, dir.path().join("data"));
        assert_eq!(cfg.cluster_secret_file, PathBuf::from("/etc/hadss/secret"));
        assert_eq!(cfg.swim_preset, SwimPreset::Fast);
        assert_eq!(cfg.s3, None);
        std::fs::write(
            &path,
            "data_dir = \"d\"\nlisten = \"x\"\ncluster_secret_file = \"s\"\nmap_public_key_file = \"k\"\n[s3]\nlisten = \"127.0.0.1:9000\"\naccess_key = \"AK\"\nsecret_key_file = \"sk\"\n",
        )
        .expect("write");
        let s3 = StorageConfig::load(&path).expect("load").s3.expect("the [s3] table");
        assert_eq!(s3.secret_key_file, dir.path().join("sk"));
        assert_eq!(s3.region, "us-east-1");
        std::fs::write(
            &path,
            "data_dir = \"d\"\nlisten = \"x\"\ncluster_secret_file = \"s\"\nmap_public_key_file = \"k\"\ntypo = 1\n",
        )
        .expect("write");
        assert!(StorageConfig::load(&path).is_err(), "unknown keys are refused");
    }
}
