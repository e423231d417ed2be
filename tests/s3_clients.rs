//! The README's main command, `hadss dev`, as a real process, driven by real S3 clients
//! (boto3, the aws cli and s3cmd, installed by `scripts/test` into `target/py-venv`): buckets,
//! objects inline and in chunks, ranges, conditionals, metadata, copy, listings with
//! pagination and URL encoding, multipart uploads (transfer manager, by hand, part copy,
//! abort), version listing of unversioned buckets, deletes, S3 error codes, refusal of
//! anonymous and badly signed requests, presigned URLs (good, tampered, expired);
//! `aws s3 mb/cp/sync/ls/rm/rb`; s3cmd put/get/ls/del and rclone copy/sync/check/purge of
//! small, multipart and oddly named objects compared by sha256; then a clean SIGTERM
//! shutdown and a restart on the same data directory that serves every object again.
#![allow(clippy::unwrap_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

mod common;
use common::dev::start_dev;

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("HADSS_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/py-venv/bin/python");
    assert!(
        venv.exists(),
        "no Python with boto3: run scripts/test (it creates target/py-venv) or set HADSS_PYTHON"
    );
    venv
}

/// rclone: `HADSS_RCLONE`, else the one on PATH (`scripts/test` installs Debian's package).
fn rclone() -> PathBuf {
    std::env::var_os("HADSS_RCLONE").map_or_else(|| PathBuf::from("rclone"), PathBuf::from)
}

/// Runs `tests/s3/<script> CREDENTIALS TOOL` and checks it printed `<name>: PASS`.
fn run_shell_suite(credentials: &Path, script: &str, tool: &Path, name: &str) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/s3").join(script);
    let out = Command::new("bash")
        .arg(script)
        .arg(credentials)
        .arg(tool)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{name} failed:\n{text}");
    assert!(text.contains(&format!("{name}: PASS")), "{text}");
}

/// Runs `tests/s3/<script> ARGS…` with the venv's Python and checks it printed `pass`.
fn run_python_suite(script: &str, args: &[&std::ffi::OsStr], pass: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/s3").join(script);
    let out = Command::new(python()).arg(path).args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{script} {args:?} failed:\n{text}");
    assert!(text.contains(pass), "{text}");
}

fn run_suite(credentials: &Path, phase: &str) {
    run_python_suite(
        "boto3_suite.py",
        &[credentials.as_os_str(), std::ffi::OsStr::new(phase)],
        &format!("phase {phase}: PASS"),
    );
}

#[test]
fn s3_clients_against_hadss_dev_and_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("hadss-data");
    let (mut dev, endpoint) = start_dev(&data, 1);
    let credentials = data.join("credentials.env");
    let text = std::fs::read_to_string(&credentials).unwrap();
    for var in [
        "AWS_ACCESS_KEY_ID=",
        "AWS_SECRET_ACCESS_KEY=",
        "AWS_ENDPOINT_URL=",
        "AWS_REGION=",
    ] {
        assert!(text.contains(var), "credentials.env lacks {var}: {text}");
    }
    assert!(text.contains(&format!("AWS_ENDPOINT_URL={endpoint}\n")), "{text}");
    run_suite(&credentials, "main");
    run_shell_suite(
        &credentials,
        "awscli_suite.sh",
        &python().with_file_name("aws"),
        "aws cli suite",
    );
    run_shell_suite(
        &credentials,
        "s3cmd_suite.sh",
        &python().with_file_name("s3cmd"),
        "s3cmd suite",
    );
    run_shell_suite(&credentials, "rclone_suite.sh", &rclone(), "rclone suite");

    // SIGTERM: a clean exit.
    let pid = rustix::process::Pid::from_raw(dev.0.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = dev.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "hadss dev did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status {status}");
    drop(dev);

    // Same data directory, same keys: every object is back.
    let (_dev, endpoint) = start_dev(&data, 2);
    let again = std::fs::read_to_string(&credentials).unwrap();
    let keys = |t: &str| {
        t.lines()
            .filter(|l| l.contains("_KEY"))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(keys(&again), keys(&text), "same keys after restart");
    assert!(again.contains(&format!("AWS_ENDPOINT_URL={endpoint}\n")), "{again}");
    run_suite(&credentials, "restart");
}

/// Access keys made with `hadss admin key` against the dev cluster's monitor, used by boto3:
/// grants per bucket, bucket creation and ownership, copy sources, import, revoke, delete.
#[test]
fn access_keys_made_with_hadss_admin() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("hadss-data");
    let (_dev, _endpoint) = start_dev(&data, 1);
    let printed = std::fs::read_to_string(data.with_extension("out1")).unwrap();
    let monitor = printed
        .lines()
        .find_map(|l| l.trim().strip_prefix("monitor:"))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no monitor address printed:\n{printed}"))
        .to_string();
    run_python_suite(
        "keys_suite.py",
        &[
            data.join("credentials.env").as_os_str(),
            std::ffi::OsStr::new(env!("CARGO_BIN_EXE_hadss")),
            data.join("keys/cluster.secret").as_os_str(),
            std::ffi::OsStr::new(&monitor),
        ],
        "keys suite: PASS",
    );
}
