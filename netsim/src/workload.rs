//! The workload: concurrent S3 clients running PUT, GET, DELETE and LIST against the
//! cluster's gateways until told to stop, recording every operation with its outcome for
//! the checker (`crate::check`).
//!
//! Client `c` owns the keys `c<c>/k<n>` and runs one operation at a time, so each key's
//! history is a sequence. Bodies describe themselves (`crate::body`). Each operation goes to
//! a gateway picked at random, as behind a load balancer (so one key is written through
//! several gateways); a gateway that gave no answer is avoided for `GATEWAY_AVOID_MS`.
//! Every choice comes from a per-client RNG seeded from the run's seed.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tokio::sync::watch;

use crate::body::{self, Decoded};
use crate::check::{Kind, Op, Outcome};
use crate::s3::{Failure, S3};

/// How long a client avoids a gateway that gave no answer.
pub const GATEWAY_AVOID_MS: u64 = 2_000;

/// What the clients do.
#[derive(Debug, Clone)]
pub struct WorkloadOptions {
    /// Concurrent clients.
    pub clients: usize,
    /// Seed of every client's choices.
    pub seed: u64,
    /// Smallest object payload.
    pub size_min_bytes: usize,
    /// Largest object payload.
    pub size_max_bytes: usize,
    /// Percent of PUTs that write a large object instead (stored as chunks, not inline in
    /// the record: bitrot and full disks need those).
    pub large_percent: u32,
    /// Smallest large payload.
    pub large_min_bytes: usize,
    /// Largest large payload.
    pub large_max_bytes: usize,
    /// Most keys a client creates (then it only overwrites, reads, deletes and lists).
    pub keys_per_client_max: usize,
}

impl Default for WorkloadOptions {
    fn default() -> Self {
        WorkloadOptions {
            clients: 6,
            seed: 1,
            size_min_bytes: 100,
            size_max_bytes: 16 * 1024,
            large_percent: 20,
            large_min_bytes: 160 * 1024,
            large_max_bytes: 400 * 1024,
            keys_per_client_max: 300,
        }
    }
}

/// The key prefix of a client.
pub fn prefix_of(client: u32) -> String {
    format!("c{client}/")
}

/// Ms since `started`.
pub fn since_ms(started: Instant) -> u64 {
    started.elapsed().as_millis() as u64
}

fn outcome_of<T>(r: &Result<T, Failure>) -> Option<Outcome> {
    match r {
        Ok(_) => None,
        Err(Failure::Status(code, what)) => Some(Outcome::Failed(format!("{code} {what}"))),
        Err(Failure::NoAnswer(why) | Failure::Refused(why)) => Some(Outcome::NoAnswer(why.clone())),
    }
}

/// A GET's outcome from what came back.
pub fn read_outcome(key: &str, r: Result<Option<Vec<u8>>, Failure>) -> Outcome {
    match r {
        Ok(None) => Outcome::NotFound,
        Ok(Some(bytes)) => match body::decode(&bytes) {
            Decoded::Intact { key: k, write } if k == key => Outcome::Found(write),
            Decoded::Intact { key: k, write } => Outcome::Corrupt(format!("the body of write {write} of {k}")),
            Decoded::Corrupt(why) => Outcome::Corrupt(why),
        },
        Err(e) => outcome_of::<()>(&Err(e)).unwrap_or(Outcome::Ok),
    }
}

/// Runs `opts.clients` clients against `gateways` until `stop` turns true; returns every
/// operation in the order each client ran them.
pub async fn run(
    gateways: Arc<Vec<S3>>,
    opts: WorkloadOptions,
    started: Instant,
    stop: watch::Receiver<bool>,
) -> Vec<Op> {
    assert!(!gateways.is_empty(), "a workload needs a gateway");
    let mut tasks = Vec::new();
    for c in 0..opts.clients as u32 {
        let (gateways, opts, stop) = (gateways.clone(), opts.clone(), stop.clone());
        tasks.push(tokio::spawn(client(c, gateways, opts, started, stop)));
    }
    let mut ops = Vec::new();
    for t in tasks {
        if let Ok(mut o) = t.await {
            ops.append(&mut o);
        }
    }
    ops
}

async fn client(
    c: u32,
    gateways: Arc<Vec<S3>>,
    opts: WorkloadOptions,
    started: Instant,
    stop: watch::Receiver<bool>,
) -> Vec<Op> {
    let mut rng = StdRng::seed_from_u64(opts.seed ^ (u64::from(c) + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut avoid_until_ms = vec![0u64; gateways.len()];
    let mut keys: Vec<String> = Vec::new();
    let mut writes = 0u64;
    let mut ops = Vec::new();
    while !*stop.borrow() {
        let roll = rng.random_range(0..100u32);
        let (kind, key) = if keys.is_empty() || (roll < 35 && keys.len() < opts.keys_per_client_max) {
            let key = format!("{}k{}", prefix_of(c), keys.len());
            keys.push(key.clone());
            (Kind::Put, key)
        } else {
            let key = keys[rng.random_range(0..keys.len())].clone();
            match roll {
                0..50 => (Kind::Put, key),
                50..82 => (Kind::Get, key),
                82..90 => (Kind::Delete, key),
                _ => (Kind::List, prefix_of(c)),
            }
        };
        let start_ms = since_ms(started);
        let write = (kind == Kind::Put).then(|| {
            writes += 1;
            (u64::from(c) << 40) | writes
        });
        let body = write.map(|w| {
            let (min, max) = if rng.random_range(0..100u32) < opts.large_percent {
                (opts.large_min_bytes, opts.large_max_bytes)
            } else {
                (opts.size_min_bytes, opts.size_max_bytes)
            };
            Bytes::from(body::make(&key, w, rng.random_range(min..=max.max(min))))
        });
        // A gateway that refuses the connection never saw the request: like any S3 SDK,
        // send it to another one (each at most once).
        let mut tried: Vec<usize> = Vec::new();
        let (used, outcome) = loop {
            let now_ms = since_ms(started);
            let open: Vec<usize> = (0..gateways.len())
                .filter(|g| avoid_until_ms[*g] <= now_ms && !tried.contains(g))
                .collect();
            let untried: Vec<usize> = (0..gateways.len()).filter(|g| !tried.contains(g)).collect();
            let pool = if open.is_empty() { &untried } else { &open };
            let used = pool[rng.random_range(0..pool.len())];
            tried.push(used);
            let s3 = &gateways[used];
            let (outcome, refused) = match kind {
                Kind::Put => {
                    let r = s3.put(&key, body.clone().unwrap_or_default()).await;
                    (
                        outcome_of(&r).unwrap_or(Outcome::Ok),
                        matches!(r, Err(Failure::Refused(_))),
                    )
                }
                Kind::Get => {
                    let r = s3.get(&key).await;
                    let refused = matches!(r, Err(Failure::Refused(_)));
                    (read_outcome(&key, r), refused)
                }
                Kind::Delete => {
                    let r = s3.delete(&key).await;
                    (
                        outcome_of(&r).unwrap_or(Outcome::Ok),
                        matches!(r, Err(Failure::Refused(_))),
                    )
                }
                Kind::List => {
                    let r = s3.list(&key).await;
                    let refused = matches!(r, Err(Failure::Refused(_)));
                    let o = outcome_of(&r);
                    (o.unwrap_or_else(|| Outcome::Listed(r.unwrap_or_default())), refused)
                }
            };
            if matches!(outcome, Outcome::NoAnswer(_)) {
                avoid_until_ms[used] = since_ms(started) + GATEWAY_AVOID_MS;
            }
            if !refused || tried.len() == gateways.len() {
                break (used, outcome);
            }
        };
        ops.push(Op {
            client: c,
            kind,
            key,
            write,
            gateway: used,
            start_ms,
            end_ms: since_ms(started),
            outcome,
        });
    }
    ops
}
