//! `hadss dev` as a real process for the S3 client tests.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `hadss dev`; dropping it kills the process.
pub struct Dev(pub Child);

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `hadss dev` on an OS-picked S3 port (no collision with other tests) and waits
/// for it to print its endpoint. Returns the process and the endpoint.
pub fn start_dev(data: &Path, run: u32) -> (Dev, String) {
    let out_path = data.with_extension(format!("out{run}"));
    let out = std::fs::File::create(&out_path).unwrap();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(data.with_extension("log"))
        .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_hadss"))
        .args(["dev", "--data-dir"])
        .arg(data)
        .args(["--s3-listen", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .env_remove("HADSS_ACCESS_KEY")
        .env_remove("HADSS_SECRET_KEY")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(log)
        .spawn()
        .unwrap();
    let mut dev = Dev(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let printed = std::fs::read_to_string(&out_path).unwrap_or_default();
        if let Some(endpoint) = printed
            .lines()
            .find_map(|l| l.trim().strip_prefix("S3 endpoint:"))
            .map(|e| e.trim().to_string())
        {
            return (dev, endpoint);
        }
        if let Some(status) = dev.0.try_wait().unwrap() {
            let log = std::fs::read_to_string(data.with_extension("log")).unwrap_or_default();
            panic!("hadss dev exited with {status}:\n{printed}\n{log}");
        }
        assert!(Instant::now() < deadline, "hadss dev did not print its endpoint");
        std::thread::sleep(Duration::from_millis(50));
    }
}
