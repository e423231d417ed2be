//! A full disk (configured capacity, and a real ENOSPC on a small tmpfs): a clear error,
//! nothing stored is harmed, and puts work again once space is freed.
#![allow(clippy::unwrap_used)]

mod common;

use chunkstore::{Error, Options, Store};
use common::{bytes, small_options};

fn fill_and_recover(dir: &std::path::Path, options: Options) {
    let store = Store::open(dir, options.clone()).unwrap();
    let mut stored = Vec::new();
    let mut full = None;
    for i in 0..100_000u64 {
        let d = bytes(i, 30_000);
        match store.put(&d) {
            Ok(out) => stored.push((out.id, d)),
            Err(e) => {
                full = Some(e);
                break;
            }
        }
    }
    let err = full.expect("the store must fill up");
    assert!(matches!(err, Error::Full { .. }), "got {err}");
    assert!(err.is_retryable());
    assert!(stored.len() > 10);
    // Everything already stored is intact.
    for (id, d) in &stored {
        assert_eq!(&store.get(id).unwrap().unwrap()[..], &d[..]);
    }
    // Still full on retry; deletes still work (they use the tombstone reserve).
    assert!(matches!(store.put(&bytes(1 << 40, 30_000)), Err(Error::Full { .. })));
    let half = stored.len() / 2;
    for (id, _) in &stored[..half] {
        assert!(store.delete(id).unwrap());
    }
    store.compact().unwrap();
    // Space is back.
    let d = bytes(1 << 41, 30_000);
    let id = store.put(&d).unwrap().id;
    assert_eq!(&store.get(&id).unwrap().unwrap()[..], &d[..]);
    drop(store);
    let store = Store::open(dir, options).unwrap();
    for (id, d) in &stored[half..] {
        assert_eq!(&store.get(id).unwrap().unwrap()[..], &d[..]);
    }
    assert_eq!(store.stats().corruptions, 0);
}

#[test]
fn configured_capacity() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        capacity_bytes: Some(2 * 1024 * 1024),
        ..small_options()
    };
    fill_and_recover(dir.path(), options);
}

/// A real ENOSPC from the file system. Needs root to mount a tmpfs; without it the test
/// says so on stderr and checks nothing (the capacity test above still runs).
#[test]
fn tmpfs_enospc() {
    let base = tempfile::tempdir().unwrap();
    let mnt = base.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=3m", "hadss-test-tmpfs"])
        .arg(&mnt)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("SKIPPED tmpfs_enospc: cannot mount a tmpfs here (not root?)");
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(mnt.clone());
    fill_and_recover(&mnt.join("store"), small_options());
}
