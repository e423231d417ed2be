//! The history checker: given every operation the workload ran (with its outcome) and the
//! final reads made after the faults healed, finds what a correct object store must never
//! do. Pure: no I/O, so it is unit-tested with hand-made histories.
//!
//! The model: every key has one writer (the client that owns it), whose operations are
//! sequential, so a key's history is a sequence. After each operation the key's value is
//! what the last *acknowledged* write made it (a body's write id, or absent), except that
//! writes that failed or got no answer since may have taken effect too (they are
//! *indeterminate*: a refused PUT can still leave a copy that anti-entropy spreads). A read
//! may return any of those values and nothing else:
//! - an intact body of an older write is a **stale read** (for a key never acknowledged
//!   before, a 404 after an acknowledged PUT is a **read-after-write** violation);
//! - a body that does not decode, or belongs to another key, is **corrupt**;
//! - the final read after healing returning anything else is a **lost write**;
//! - a listing by the key's owner that misses a key whose last acknowledged operation
//!   created it (with no indeterminate delete since), or shows one it deleted (with no
//!   indeterminate PUT since), is a **list** violation.
//!
//! Availability is reported per phase of the fault schedule; a phase marked within the
//! fault tolerance must reach the required fraction of successful operations.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// Client id of the checker's own final reads.
pub const FINAL_CLIENT: u32 = u32::MAX;

/// What an operation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// PutObject.
    Put,
    /// GetObject.
    Get,
    /// DeleteObject.
    Delete,
    /// ListObjectsV2 of the client's prefix.
    List,
}

/// How it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Acknowledged (PUT, DELETE).
    Ok,
    /// GET: an intact body of this write of the key.
    Found(u64),
    /// GET: 404 NoSuchKey.
    NotFound,
    /// GET: a body that is not intact or not of this key.
    Corrupt(String),
    /// LIST: the keys listed.
    Listed(Vec<String>),
    /// The server answered an error.
    Failed(String),
    /// No answer (timeout, connection refused or broken).
    NoAnswer(String),
}

impl Outcome {
    /// Whether the operation succeeded (its answer was a proper one).
    pub fn is_success(&self) -> bool {
        !matches!(self, Outcome::Failed(_) | Outcome::NoAnswer(_))
    }
}

/// One operation of the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    /// The client (its keys start with `c<client>/`); `FINAL_CLIENT` for the final reads.
    pub client: u32,
    /// What it did.
    pub kind: Kind,
    /// The key (for LIST: the prefix).
    pub key: String,
    /// PUT: the write id in the body.
    pub write: Option<u64>,
    /// The gateway it went to (index into the cluster's gateways).
    pub gateway: usize,
    /// Start and end, ms since the run started.
    pub start_ms: u64,
    /// End.
    pub end_ms: u64,
    /// Outcome.
    pub outcome: Outcome,
}

/// A phase of the run (a fault applied or lifted starts a new one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Phase {
    /// When it starts, ms since the run started.
    pub start_ms: u64,
    /// What holds during it.
    pub name: String,
    /// Whether the faults of this phase are within what the cluster must tolerate.
    pub within_tolerance: bool,
}

/// A broken invariant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    /// Which invariant: `lost-write`, `stale-read`, `read-after-write`, `corrupt`, `list`,
    /// `availability`, `convergence`, or `harness` (a fault could not be applied).
    pub invariant: String,
    /// What happened.
    pub detail: String,
}

/// Success counts of one phase.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PhaseAvailability {
    /// The phase.
    pub name: String,
    /// Whether it is within the fault tolerance.
    pub within_tolerance: bool,
    /// Per kind: (succeeded, total).
    pub ops: BTreeMap<Kind, (u64, u64)>,
}

impl PhaseAvailability {
    /// Fraction of operations that succeeded (1 when there were none).
    pub fn fraction(&self) -> f64 {
        let (ok, all) = self.ops.values().fold((0, 0), |(a, b), (o, t)| (a + o, b + t));
        if all == 0 { 1.0 } else { ok as f64 / all as f64 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Value {
    Absent,
    Present(u64),
}

#[derive(Default)]
struct KeyState {
    acked: Option<Value>,
    maybe: BTreeSet<Value>,
    /// Every write id ever sent for the key.
    writes: BTreeSet<u64>,
    /// Acknowledged PUTs so far.
    acked_puts: u32,
}

impl KeyState {
    fn allowed(&self, v: Value) -> bool {
        self.acked.unwrap_or(Value::Absent) == v || self.maybe.contains(&v)
    }
    fn settle(&mut self, v: Value) {
        self.acked = Some(v);
        self.maybe.clear();
        if matches!(v, Value::Present(_)) {
            self.acked_puts += 1;
        }
    }
    fn expected(&self) -> String {
        let mut s = format!("{:?}", self.acked.unwrap_or(Value::Absent));
        if !self.maybe.is_empty() {
            s.push_str(&format!(" or one of {:?}", self.maybe));
        }
        s
    }
}

/// The owner client of a key (`c<client>/…`).
pub fn owner_of(key: &str) -> Option<u32> {
    key.strip_prefix('c')?.split('/').next()?.parse().ok()
}

/// Checks the history (ops of every client, then the final reads with
/// `client == FINAL_CLIENT`, each in the order they ran). Returns the violations.
pub fn check(ops: &[Op]) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut keys: BTreeMap<&str, KeyState> = BTreeMap::new();
    let mut by_client: BTreeMap<u32, Vec<&Op>> = BTreeMap::new();
    for op in ops {
        by_client.entry(op.client).or_default().push(op);
    }
    // Clients own disjoint keys, so each client's ops can be replayed on its own; the
    // final reads come after all of them.
    let finals = by_client.remove(&FINAL_CLIENT).unwrap_or_default();
    for client_ops in by_client.values() {
        for op in client_ops {
            replay(op, &mut keys, &mut out, false);
        }
    }
    for op in finals {
        replay(op, &mut keys, &mut out, true);
    }
    out
}

fn replay<'a>(op: &'a Op, keys: &mut BTreeMap<&'a str, KeyState>, out: &mut Vec<Violation>, last: bool) {
    let v = |invariant: &str, detail: String| Violation {
        invariant: invariant.into(),
        detail,
    };
    let at = format!(
        "client {} at {}–{} ms via gateway {}",
        op.client, op.start_ms, op.end_ms, op.gateway
    );
    match op.kind {
        Kind::Put => {
            let Some(w) = op.write else { return };
            let k = keys.entry(&op.key).or_default();
            k.writes.insert(w);
            if op.outcome == Outcome::Ok {
                k.settle(Value::Present(w));
            } else {
                k.maybe.insert(Value::Present(w));
            }
        }
        Kind::Delete => {
            let k = keys.entry(&op.key).or_default();
            if op.outcome == Outcome::Ok {
                k.settle(Value::Absent);
            } else {
                k.maybe.insert(Value::Absent);
            }
        }
        Kind::Get => {
            let k = keys.entry(&op.key).or_default();
            let seen = match &op.outcome {
                Outcome::Found(w) => Value::Present(*w),
                Outcome::NotFound => Value::Absent,
                Outcome::Corrupt(why) => {
                    out.push(v(
                        "corrupt",
                        format!("GET {} ({at}) returned a bad body: {why}", op.key),
                    ));
                    return;
                }
                _ => {
                    if last {
                        out.push(v(
                            "lost-write",
                            format!(
                                "final GET {} failed ({at}): {:?}; expected {}",
                                op.key,
                                op.outcome,
                                k.expected()
                            ),
                        ));
                    }
                    return;
                }
            };
            if let Value::Present(w) = seen
                && !k.writes.contains(&w)
            {
                out.push(v(
                    "corrupt",
                    format!("GET {} ({at}) returned write {w}, never sent for this key", op.key),
                ));
                return;
            }
            if k.allowed(seen) {
                return;
            }
            let expected = k.expected();
            let (invariant, what) = if last {
                ("lost-write", "final read")
            } else if seen == Value::Absent && k.acked_puts == 1 && matches!(k.acked, Some(Value::Present(_))) {
                // The key's first acknowledged PUT, not visible: a new object.
                ("read-after-write", "read")
            } else {
                ("stale-read", "read")
            };
            out.push(v(
                invariant,
                format!("{what} of {} ({at}) saw {seen:?}; expected {expected}", op.key),
            ));
        }
        Kind::List => {
            let Outcome::Listed(listed) = &op.outcome else { return };
            let listed: BTreeSet<&str> = listed.iter().map(String::as_str).collect();
            for (key, k) in keys.iter().filter(|(key, _)| key.starts_with(op.key.as_str())) {
                if !(op.client == FINAL_CLIENT || owner_of(key) == Some(op.client)) {
                    continue;
                }
                let must_be = matches!(k.acked, Some(Value::Present(_))) && !k.maybe.contains(&Value::Absent);
                let must_not = matches!(k.acked, Some(Value::Absent) | None)
                    && !k.maybe.iter().any(|m| matches!(m, Value::Present(_)));
                let shown = listed.contains(key);
                if must_be && !shown {
                    out.push(v(
                        "list",
                        format!("LIST {} ({at}) misses {key}; expected {}", op.key, k.expected()),
                    ));
                } else if must_not && shown {
                    out.push(v(
                        "list",
                        format!("LIST {} ({at}) shows {key}; expected {}", op.key, k.expected()),
                    ));
                }
            }
        }
    }
}

/// Availability per phase: each op counts in the phase it started in.
pub fn availability(ops: &[Op], phases: &[Phase]) -> Vec<PhaseAvailability> {
    let mut out: Vec<PhaseAvailability> = phases
        .iter()
        .map(|p| PhaseAvailability {
            name: p.name.clone(),
            within_tolerance: p.within_tolerance,
            ops: BTreeMap::new(),
        })
        .collect();
    if out.is_empty() {
        return out;
    }
    for op in ops.iter().filter(|o| o.client != FINAL_CLIENT) {
        let i = phases.iter().rposition(|p| p.start_ms <= op.start_ms).unwrap_or(0);
        let e = out[i].ops.entry(op.kind).or_default();
        e.1 += 1;
        if op.outcome.is_success() {
            e.0 += 1;
        }
    }
    out
}

/// Latency percentiles of successful operations of one kind, in ms: (p50, p99, max, count).
pub fn latency_ms(ops: &[Op], kind: Kind) -> (u64, u64, u64, usize) {
    let mut l: Vec<u64> = ops
        .iter()
        .filter(|o| o.kind == kind && o.client != FINAL_CLIENT && o.outcome.is_success())
        .map(|o| o.end_ms.saturating_sub(o.start_ms))
        .collect();
    if l.is_empty() {
        return (0, 0, 0, 0);
    }
    l.sort_unstable();
    let at = |p: f64| l[((l.len() - 1) as f64 * p).round() as usize];
    (at(0.5), at(0.99), l[l.len() - 1], l.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(client: u32, kind: Kind, key: &str, write: Option<u64>, t: u64, outcome: Outcome) -> Op {
        Op {
            client,
            kind,
            key: key.into(),
            write,
            gateway: 0,
            start_ms: t,
            end_ms: t + 1,
            outcome,
        }
    }

    fn invariants(ops: &[Op]) -> Vec<String> {
        check(ops).into_iter().map(|v| v.invariant).collect()
    }

    #[test]
    fn a_clean_history_passes() {
        let k = "c0/k1";
        let ops = vec![
            op(0, Kind::Put, k, Some(1), 0, Outcome::Ok),
            op(0, Kind::Get, k, None, 1, Outcome::Found(1)),
            op(0, Kind::List, "c0/", None, 2, Outcome::Listed(vec![k.into()])),
            op(0, Kind::Put, k, Some(2), 3, Outcome::NoAnswer("timeout".into())),
            // Either value may be read while the second write is indeterminate.
            op(0, Kind::Get, k, None, 4, Outcome::Found(1)),
            op(0, Kind::Get, k, None, 5, Outcome::Found(2)),
            op(0, Kind::Delete, k, None, 6, Outcome::Ok),
            op(0, Kind::Get, k, None, 7, Outcome::NotFound),
            op(0, Kind::List, "c0/", None, 8, Outcome::Listed(vec![])),
            op(FINAL_CLIENT, Kind::Get, k, None, 9, Outcome::NotFound),
        ];
        assert_eq!(invariants(&ops), Vec::<String>::new());
    }

    #[test]
    fn each_kind_of_violation_is_found() {
        let k = "c0/k1";
        // An acknowledged write the final read does not see.
        let lost = vec![
            op(0, Kind::Put, k, Some(1), 0, Outcome::Ok),
            op(FINAL_CLIENT, Kind::Get, k, None, 9, Outcome::NotFound),
        ];
        assert_eq!(invariants(&lost), ["lost-write"]);
        // A new object not visible after its PUT was acknowledged.
        let raw = vec![
            op(0, Kind::Put, k, Some(1), 0, Outcome::Ok),
            op(0, Kind::Get, k, None, 1, Outcome::NotFound),
        ];
        assert_eq!(invariants(&raw), ["read-after-write"]);
        // An overwrite acknowledged, then the old body read.
        let stale = vec![
            op(0, Kind::Put, k, Some(1), 0, Outcome::Ok),
            op(0, Kind::Put, k, Some(2), 1, Outcome::Ok),
            op(0, Kind::Get, k, None, 2, Outcome::Found(1)),
        ];
        assert_eq!(invariants(&stale), ["stale-read"]);
        // A bad body, and a write id never sent for the key.
        let corrupt = vec![
            op(0, Kind::Put, k, Some(1), 0, Outcome::Ok),
            op(0, Kind::Get, k, None, 1, Outcome::Corrupt("payload".into())),
            op(0, Kind::Get, k, None, 2, Outcome::Found(7)),
        ];
        assert_eq!(invariants(&corrupt), ["corrupt", "corrupt"]);
        // A listing missing an acknowledged key, and one showing a deleted key.
        let list = vec![
            op(0, Kind::Put, k, Some(1), 0, Outcome::Ok),
            op(0, Kind::List, "c0/", None, 1, Outcome::Listed(vec![])),
            op(0, Kind::Delete, k, None, 2, Outcome::Ok),
            op(0, Kind::List, "c0/", None, 3, Outcome::Listed(vec![k.into()])),
        ];
        assert_eq!(invariants(&list), ["list", "list"]);
        // A final read that fails is a lost write too (the data could not be shown to exist).
        let unreadable = vec![
            op(0, Kind::Put, k, Some(1), 0, Outcome::Ok),
            op(FINAL_CLIENT, Kind::Get, k, None, 9, Outcome::Failed("503".into())),
        ];
        assert_eq!(invariants(&unreadable), ["lost-write"]);
    }

    #[test]
    fn availability_counts_ops_in_the_phase_they_started() {
        let phases = vec![
            Phase {
                start_ms: 0,
                name: "healthy".into(),
                within_tolerance: true,
            },
            Phase {
                start_ms: 10,
                name: "storage-1 killed".into(),
                within_tolerance: true,
            },
        ];
        let ops = vec![
            op(0, Kind::Put, "c0/a", Some(1), 0, Outcome::Ok),
            op(0, Kind::Put, "c0/b", Some(2), 10, Outcome::Failed("503".into())),
            op(0, Kind::Get, "c0/a", None, 11, Outcome::Found(1)),
        ];
        let a = availability(&ops, &phases);
        assert_eq!(a[0].fraction(), 1.0);
        assert_eq!(a[1].ops[&Kind::Put], (0, 1));
        assert_eq!(a[1].fraction(), 0.5);
    }
}
