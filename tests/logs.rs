//! What `hadss` writes where: the banner of `hadss dev` alone on stdout, logs on stderr at
//! the default level without dependency chatter, and `--log-format json` one JSON object per
//! line.
#![allow(clippy::unwrap_used, missing_docs)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Starts `hadss dev` with `args` and no `RUST_LOG`, waits for its banner, stops it, and
/// returns (stdout, stderr).
fn dev_output(args: &[&str]) -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let (out_path, err_path) = (dir.path().join("out"), dir.path().join("err"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_hadss"))
        .args(args)
        .args(["dev", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--s3-listen", "127.0.0.1:0"])
        .env_remove("RUST_LOG")
        .env_remove("HADSS_ACCESS_KEY")
        .env_remove("HADSS_SECRET_KEY")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&out_path)
        .unwrap_or_default()
        .contains("credentials:")
    {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "hadss dev exited with {status}: {}",
                std::fs::read_to_string(&err_path).unwrap()
            );
        }
        assert!(Instant::now() < deadline, "hadss dev printed no banner");
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    (
        std::fs::read_to_string(&out_path).unwrap(),
        std::fs::read_to_string(&err_path).unwrap(),
    )
}

#[test]
fn the_banner_is_alone_on_stdout_and_logs_are_quiet_on_stderr() {
    let (out, err) = dev_output(&[]);
    assert!(out.starts_with("HADSS dev cluster:"), "stdout: {out}");
    assert!(
        out.lines().all(|l| !l.contains(" INFO ")),
        "a log line on stdout: {out}"
    );
    assert!(err.contains("node started"), "HADSS' own info lines on stderr: {err}");
    for noisy in ["openraft", "libp2p_swarm", "s3s::"] {
        assert!(!err.contains(noisy), "{noisy} logged at the default level: {err}");
    }
    // A map is announced once per node and epoch, not once per offer.
    let accepted = err.lines().filter(|l| l.contains("accepted cluster map")).count();
    let epochs = out
        .lines()
        .next()
        .and_then(|l| l.rsplit("map epoch ").next())
        .and_then(|e| e.trim().parse::<usize>().ok())
        .unwrap();
    assert!(
        accepted <= 4 * epochs,
        "{accepted} acceptances of {epochs} epochs by 4 nodes: {err}"
    );
}

#[test]
fn json_logs_are_one_object_per_line() {
    let (out, err) = dev_output(&["--log-format", "json"]);
    assert!(out.starts_with("HADSS dev cluster:"), "stdout: {out}");
    let lines: Vec<&str> = err.lines().collect();
    assert!(!lines.is_empty());
    for line in lines {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v.get("level").is_some() && v.get("fields").is_some(), "{line}");
    }
}
