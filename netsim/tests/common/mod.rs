//! Helpers shared by the netsim suites: the hadss binary beside netsim, a guard that stops a
//! cluster when the test ends, phase timing and metric parsing.
#![allow(clippy::unwrap_used, dead_code)]

use std::path::PathBuf;

/// The `hadss` binary built beside netsim (the workspace test build builds every binary).
pub fn hadss_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_netsim")).with_file_name("hadss")
}

/// Prints how long the test has run at each phase.
pub fn phase(started: std::time::Instant, what: &str) {
    eprintln!("[{:>6.1} s] {what}", started.elapsed().as_secs_f64());
}

/// The value of a metric line `name value` in OpenMetrics text.
pub fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

/// Stops the cluster in the directory when dropped (`netsim down`).
pub struct Down(pub PathBuf);

impl Drop for Down {
    fn drop(&mut self) {
        // A thread of its own: this may run inside the test's runtime.
        let dir = self.0.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let _ = rt.block_on(netsim::down(&dir));
        })
        .join();
    }
}

/// A node that is not in the map (so never a replica): it coordinates writes and reads as a
/// client of the cluster.
pub async fn client_node(cluster: &netsim::ClusterFile, data_dir: PathBuf) -> hadss::node::Node {
    let secret = hadss::net::identity::load_cluster_secret(&cluster.cluster_secret_file).unwrap();
    let map_key = hadss::cluster::keys::load_map_public_key(&cluster.map_public_key_file).unwrap();
    hadss::node::Node::start(hadss::node::NodeConfig {
        data_dir,
        listen: "/ip4/127.0.0.1/tcp/0".parse().unwrap(),
        secret,
        map_key,
        chunk_options: chunkstore::Options::default(),
        memory_budget_bytes: hadss::node::MEMORY_BUDGET_BYTES_DEFAULT,
        write_timeouts: Default::default(),
        zone: "client".into(),
        swim: hadss::config::SwimPreset::Fast.config(8),
        role: swim::Role::Gateway,
        clock: hadss::clock::Clock::system(),
        faults: hadss::net::fault::Faults::off(),
    })
    .await
    .unwrap()
}
