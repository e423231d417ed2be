//! Merkle anti-entropy between two replicas of a record partition, sans-IO.
//!
//! Both replicas keep the same-shape Merkle summary of the partition (`RecordStore`: leaf by
//! BLAKE3 of the key, digest of key and version). An initiator compares roots; where they
//! differ it asks for the children of the differing nodes, level by level, descending only
//! into differing subtrees; at the leaves it asks for the (key, version) lists of the
//! differing leaves and plans what to pull (the peer's version is newer or the key is missing
//! here) and what to push (the other way round). Identical replicas exchange one root.
//!
//! [`Session`] is the initiator's state machine: it turns answers into the next question and
//! counts the bytes each side sent (postcard sizes of the questions and answers), so a driver
//! — the node runtime over libp2p, or a test calling the peer's store directly — only moves
//! messages. [`answer`] is the peer's side over its own tree and items.

use std::collections::BTreeMap;

use chunkstore::{MerkleNode, MerkleTree};
use serde::{Deserialize, Serialize};

use super::records::{KeyVersion, PARTITION_MERKLE_SHAPE, RecordStore, Version};

/// Most tree nodes one question may ask the children of.
pub const NODES_PER_ASK_MAX: usize = 4096;
/// Most leaves one question may ask the items of.
pub const LEAVES_PER_ASK_MAX: usize = 256;
/// Most (key, version) items one answer carries; a leaf set with more is asked in parts.
pub const ITEMS_PER_ANSWER_MAX: usize = 50_000;

/// A question from the initiator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ask {
    /// The root of the partition's tree.
    Root,
    /// The children of these nodes of `level` (level 0 is the root).
    Children {
        /// Level of the nodes asked about.
        level: u32,
        /// Their indices within the level.
        indices: Vec<u32>,
    },
    /// The (key, version) of every record in these leaves, in key order.
    Leaves {
        /// Leaf indices.
        leaves: Vec<u32>,
        /// Only keys after this one: the rest of a cut answer.
        after: Option<Vec<u8>>,
    },
}

/// The peer's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Answer {
    /// The root.
    Root(MerkleNode),
    /// Per asked node, its children in order.
    Children(Vec<Vec<MerkleNode>>),
    /// Items of the asked leaves, in key order; `complete` is false if cut at
    /// `ITEMS_PER_ANSWER_MAX` (the initiator then plans with what it got and syncs again).
    Leaves {
        /// Keys and versions.
        items: Vec<KeyVersion>,
        /// Whether every item of the asked leaves is here.
        complete: bool,
    },
    /// The question was malformed (wrong level, index out of range, too many asked).
    Refused(String),
}

/// What to copy after a session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Keys whose record the peer has newer (or only the peer has): fetch them.
    pub pull: Vec<Vec<u8>>,
    /// Keys whose record this side has newer (or only this side has): send them.
    pub push: Vec<Vec<u8>>,
}

/// Errors of a session: the peer answered something that does not fit the question.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AntiEntropyError {
    /// The answer does not match the question.
    #[error("unexpected anti-entropy answer: {0}")]
    Unexpected(String),
    /// A store could not be read.
    #[error("reading the record store: {0}")]
    Store(String),
}

/// The outcome of [`compare_stores`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Comparison {
    /// What to copy.
    pub plan: Plan,
    /// Bytes of the initiator's questions.
    pub sent_bytes: u64,
    /// Bytes of the peer's answers.
    pub received_bytes: u64,
    /// Question-answer round trips.
    pub rounds: u32,
}

/// Runs a whole session between two stores of one process, `a` asking and `b` answering
/// (benchmarks and tests; nodes run the same session over the network).
pub fn compare_stores(a: &RecordStore, b: &RecordStore, partition: u32) -> Result<Comparison, AntiEntropyError> {
    let tree = a
        .merkle_snapshot(partition)
        .or_else(|| MerkleTree::new(PARTITION_MERKLE_SHAPE))
        .ok_or_else(|| AntiEntropyError::Store("bad Merkle shape".into()))?;
    let (mut session, mut ask) = Session::new(tree);
    let b_tree = b.merkle_snapshot(partition);
    let mut failure: Option<String> = None;
    loop {
        let answer = answer(b_tree.as_ref(), PARTITION_MERKLE_SHAPE, &ask, &mut |leaves, after| {
            b.leaf_items(partition, leaves, after, ITEMS_PER_ANSWER_MAX)
                .unwrap_or_else(|e| {
                    failure = Some(e.to_string());
                    (Vec::new(), false)
                })
        });
        let next = session.on_answer(answer, &mut |leaves| {
            a.leaf_items(partition, leaves, None, usize::MAX).map_or_else(
                |e| {
                    failure = Some(e.to_string());
                    Vec::new()
                },
                |(items, _)| items,
            )
        })?;
        if let Some(e) = failure {
            return Err(AntiEntropyError::Store(e));
        }
        match next {
            Some(n) => ask = n,
            None => break,
        }
    }
    Ok(Comparison {
        sent_bytes: session.sent_bytes(),
        received_bytes: session.received_bytes(),
        rounds: session.rounds(),
        plan: session.into_plan(),
    })
}

/// Where a session is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Stage {
    Root,
    Children { level: u32, indices: Vec<u32> },
    Leaves { leaves: Vec<u32>, after: Option<Vec<u8>> },
    Done,
}

/// The initiator's side of one comparison with one peer.
#[derive(Debug)]
pub struct Session {
    local: MerkleTree,
    stage: Stage,
    /// Differing leaves still to ask the items of (after the current question).
    leaves_left: Vec<u32>,
    plan: Plan,
    sent_bytes: u64,
    received_bytes: u64,
    rounds: u32,
}

fn size_of<T: Serialize>(v: &T) -> u64 {
    postcard::to_allocvec(v).map_or(0, |b| b.len() as u64)
}

impl Session {
    /// A session comparing `local` (a snapshot of this replica's tree) with a peer. Returns
    /// it and the first question (the root).
    pub fn new(local: MerkleTree) -> (Session, Ask) {
        let mut s = Session {
            local,
            stage: Stage::Root,
            leaves_left: Vec::new(),
            plan: Plan::default(),
            sent_bytes: 0,
            received_bytes: 0,
            rounds: 0,
        };
        let ask = Ask::Root;
        s.sent_bytes += size_of(&ask);
        (s, ask)
    }

    /// Bytes this side sent (questions).
    pub fn sent_bytes(&self) -> u64 {
        self.sent_bytes
    }

    /// Bytes the peer sent (answers).
    pub fn received_bytes(&self) -> u64 {
        self.received_bytes
    }

    /// Round trips so far.
    pub fn rounds(&self) -> u32 {
        self.rounds
    }

    /// Feeds the answer to the last question; `local_items` gives this side's (key,
    /// version) items of a set of leaves (asked only after a `Leaves` answer). Returns the
    /// next question, or `None` when the comparison is over (then `plan` says what to copy).
    pub fn on_answer(
        &mut self,
        answer: Answer,
        local_items: &mut dyn FnMut(&[u32]) -> Vec<KeyVersion>,
    ) -> Result<Option<Ask>, AntiEntropyError> {
        self.received_bytes += size_of(&answer);
        self.rounds += 1;
        let depth = self.local.shape().depth;
        let fanout = 1usize << self.local.shape().fanout_bits;
        let stage = std::mem::replace(&mut self.stage, Stage::Done);
        let next = match (stage, answer) {
            (Stage::Root, Answer::Root(remote)) => {
                if remote == self.local.root() {
                    None
                } else if depth == 0 {
                    self.leaves_left = vec![0];
                    self.next_leaves()
                } else {
                    Some(self.ask_children(0, vec![0]))
                }
            }
            (Stage::Children { level, indices }, Answer::Children(children)) => {
                if children.len() != indices.len() || children.iter().any(|c| c.len() != fanout) {
                    return Err(AntiEntropyError::Unexpected(format!(
                        "{} child lists for {} nodes",
                        children.len(),
                        indices.len()
                    )));
                }
                let mut differing = Vec::new();
                for (index, remote) in indices.iter().zip(&children) {
                    for child in self.local.differing_children(level, *index, remote) {
                        differing.push(child);
                    }
                }
                if level + 1 == depth {
                    self.leaves_left = differing;
                    self.next_leaves()
                } else if differing.is_empty() {
                    None
                } else {
                    Some(self.ask_children(level + 1, differing))
                }
            }
            (Stage::Leaves { leaves, after }, Answer::Leaves { items, complete }) => {
                let last = items.last().map(|(k, _)| k.clone());
                if !complete && last.is_none() {
                    return Err(AntiEntropyError::Unexpected(
                        "an empty answer that says it was cut".into(),
                    ));
                }
                let local = local_items(&leaves);
                self.reconcile(&leaves, local, items, complete, after.as_deref())?;
                if complete {
                    self.next_leaves()
                } else {
                    // The same leaves again, from where the answer was cut.
                    self.stage = Stage::Leaves {
                        leaves: leaves.clone(),
                        after: last.clone(),
                    };
                    Some(Ask::Leaves { leaves, after: last })
                }
            }
            (stage, Answer::Refused(why)) => {
                return Err(AntiEntropyError::Unexpected(format!("refused at {stage:?}: {why}")));
            }
            (stage, answer) => {
                return Err(AntiEntropyError::Unexpected(format!("{answer:?} at {stage:?}")));
            }
        };
        if let Some(ask) = &next {
            self.sent_bytes += size_of(ask);
        }
        Ok(next)
    }

    /// What to copy (complete once `on_answer` returned `None`).
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Takes the plan.
    pub fn into_plan(self) -> Plan {
        self.plan
    }

    fn ask_children(&mut self, level: u32, mut indices: Vec<u32>) -> Ask {
        // Wider than NODES_PER_ASK_MAX cannot happen with the shapes in use (256 leaves);
        // a larger tree is compared in parts by later sessions.
        indices.truncate(NODES_PER_ASK_MAX);
        self.stage = Stage::Children {
            level,
            indices: indices.clone(),
        };
        Ask::Children { level, indices }
    }

    fn next_leaves(&mut self) -> Option<Ask> {
        if self.leaves_left.is_empty() {
            self.stage = Stage::Done;
            return None;
        }
        let take = self.leaves_left.len().min(LEAVES_PER_ASK_MAX);
        let leaves: Vec<u32> = self.leaves_left.drain(..take).collect();
        self.stage = Stage::Leaves {
            leaves: leaves.clone(),
            after: None,
        };
        Some(Ask::Leaves { leaves, after: None })
    }

    /// Compares the peer's items of `leaves` with this side's.
    fn reconcile(
        &mut self,
        leaves: &[u32],
        local: Vec<KeyVersion>,
        remote: Vec<KeyVersion>,
        complete: bool,
        after: Option<&[u8]>,
    ) -> Result<(), AntiEntropyError> {
        let mut remote_by_key: BTreeMap<Vec<u8>, Version> = BTreeMap::new();
        for (key, version) in remote {
            let leaf = self.local.leaf_of(blake3::hash(&key).as_bytes());
            if !leaves.contains(&leaf) {
                return Err(AntiEntropyError::Unexpected("an item outside the asked leaves".into()));
            }
            if after.is_some_and(|a| key.as_slice() <= a) {
                return Err(AntiEntropyError::Unexpected("an item before the asked start".into()));
            }
            remote_by_key.insert(key, version);
        }
        let last_remote = remote_by_key.keys().next_back().cloned();
        // Only this window of keys: after the previous answer's last, up to this one's when cut.
        for (key, version) in local.iter().filter(|(k, _)| after.is_none_or(|a| k.as_slice() > a)) {
            match remote_by_key.remove(key) {
                Some(theirs) if theirs > *version => self.plan.pull.push(key.clone()),
                Some(theirs) if theirs < *version => self.plan.push.push(key.clone()),
                Some(_) => {}
                // Missing there: push, unless the answer was cut before this key.
                None if complete || last_remote.as_ref().is_some_and(|l| key < l) => self.plan.push.push(key.clone()),
                None => {}
            }
        }
        self.plan.pull.extend(remote_by_key.into_keys());
        Ok(())
    }
}

/// Gives the items of a set of leaves in key order and whether that was all of them.
/// Gives the items of a set of leaves after a key (all with `None`), in key order, and
/// whether that was all of them.
pub type LeafItems<'a> = dyn FnMut(&[u32], Option<&[u8]>) -> (Vec<KeyVersion>, bool) + 'a;

/// The peer's side: answers `ask` from its `tree` of the partition; `items` gives the (key,
/// version) items of a set of leaves in key order, at most `ITEMS_PER_ANSWER_MAX` (and
/// whether that was all of them).
pub fn answer(
    tree: Option<&MerkleTree>,
    shape: chunkstore::MerkleShape,
    ask: &Ask,
    items: &mut LeafItems<'_>,
) -> Answer {
    let empty;
    let tree = match tree {
        Some(t) => t,
        None => match MerkleTree::new(shape) {
            Some(t) => {
                empty = t;
                &empty
            }
            None => return Answer::Refused("bad tree shape".into()),
        },
    };
    match ask {
        Ask::Root => Answer::Root(tree.root()),
        Ask::Children { level, indices } => {
            if indices.len() > NODES_PER_ASK_MAX {
                return Answer::Refused(format!("more than {NODES_PER_ASK_MAX} nodes asked"));
            }
            let mut out = Vec::with_capacity(indices.len());
            for i in indices {
                match tree.children(*level, *i) {
                    Some(c) => out.push(c.to_vec()),
                    None => return Answer::Refused(format!("no node {i} at level {level}")),
                }
            }
            Answer::Children(out)
        }
        Ask::Leaves { leaves, after } => {
            let leaf_count = tree.shape().leaf_count();
            if leaves.len() > LEAVES_PER_ASK_MAX || leaves.iter().any(|l| *l >= leaf_count) {
                return Answer::Refused("bad leaf list".into());
            }
            let (mut items, mut complete) = items(leaves, after.as_deref());
            if items.len() > ITEMS_PER_ANSWER_MAX {
                items.truncate(ITEMS_PER_ANSWER_MAX);
                complete = false;
            }
            Answer::Leaves { items, complete }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::storage::records::{Record, RecordValue};

    const PARTITION: u32 = 7;

    fn rec(i: u64, hlc: u64) -> Record {
        Record {
            partition: PARTITION,
            key: format!("o/bucket/object-{i:08}").into_bytes(),
            version: Version {
                hlc,
                unique: [(i % 251) as u8; 16],
            },
            value: RecordValue::Data(format!("metadata of {i} at {hlc}").into_bytes()),
        }
    }

    /// Runs a session of `a` against `b` the way the node runtime does, minus the network.
    fn sync(a: &RecordStore, b: &RecordStore) -> (Plan, u64, u64, u32) {
        let c = compare_stores(a, b, PARTITION).unwrap();
        (c.plan, c.sent_bytes, c.received_bytes, c.rounds)
    }

    fn copy(keys: &[Vec<u8>], from: &RecordStore, to: &RecordStore) {
        let records: Vec<Record> = keys.iter().map(|k| from.get(PARTITION, k).unwrap().unwrap()).collect();
        to.put(records).unwrap();
    }

    #[test]
    fn replicas_of_100k_records_differing_in_10_converge_exchanging_little() {
        let dir = tempfile::tempdir().unwrap();
        let a = RecordStore::open(&dir.path().join("a.redb")).unwrap();
        let b = RecordStore::open(&dir.path().join("b.redb")).unwrap();
        let all: Vec<Record> = (0..100_000).map(|i| rec(i, 1_000)).collect();
        a.put(all.clone()).unwrap();
        b.put(all).unwrap();

        // Identical replicas: one round, the root each way.
        let (plan, sent, received, rounds) = sync(&a, &b);
        assert_eq!(plan, Plan::default());
        assert_eq!(rounds, 1);
        assert!(
            sent + received < 64,
            "identical replicas exchanged {sent} + {received} bytes"
        );

        // Ten differences: newer on a (4), newer on b (3), only on a (2), only on b (1).
        a.put((0..4).map(|i| rec(i * 10_007, 2_000)).collect()).unwrap();
        b.put((4..7).map(|i| rec(i * 10_007, 2_000)).collect()).unwrap();
        a.put(vec![rec(200_000, 1_000), rec(200_001, 1_000)]).unwrap();
        b.put(vec![rec(300_000, 1_000)]).unwrap();
        assert_ne!(a.merkle_root(PARTITION), b.merkle_root(PARTITION));

        let (plan, sent, received, rounds) = sync(&a, &b);
        assert_eq!(plan.push.len(), 6, "{plan:?}");
        assert_eq!(plan.pull.len(), 4, "{plan:?}");
        copy(&plan.push, &a, &b);
        copy(&plan.pull, &b, &a);
        assert_eq!(a.merkle_root(PARTITION), b.merkle_root(PARTITION));
        for k in plan.push.iter().chain(&plan.pull) {
            assert_eq!(a.get(PARTITION, k).unwrap(), b.get(PARTITION, k).unwrap());
        }
        // The leaf lists of ≤ 10 of 256 leaves (~390 items each) dominate; far below the
        // ~6 MB of (key, version) pairs a full exchange would send.
        eprintln!("10 differences in 100,000 records: {sent} bytes asked, {received} bytes answered, {rounds} rounds");
        assert!(received < 300_000, "{received} bytes answered for 10 differences");
        assert_eq!(rounds, 4, "root, two levels of children, one batch of leaves");

        // Converged: the next session is one round again.
        let (plan, _, _, rounds) = sync(&a, &b);
        assert_eq!((plan, rounds), (Plan::default(), 1));
    }

    #[test]
    fn differences_in_more_items_than_one_answer_carries_converge_in_one_session() {
        // 120,000 records differing in every leaf: the differing leaves hold more items than
        // one answer carries, so the session asks for the rest of each cut answer.
        let dir = tempfile::tempdir().unwrap();
        let a = RecordStore::open(&dir.path().join("a.redb")).unwrap();
        let b = RecordStore::open(&dir.path().join("b.redb")).unwrap();
        let all: Vec<Record> = (0..120_000).map(|i| rec(i, 1_000)).collect();
        a.put(all.clone()).unwrap();
        b.put(all).unwrap();
        // Newer on b in the first third of the keys, newer on a in the last third.
        b.put((0..3_000).map(|i| rec(i * 13, 2_000)).collect()).unwrap();
        a.put((0..3_000).map(|i| rec(80_000 + i * 13, 2_000)).collect())
            .unwrap();
        let (plan, _, received, rounds) = sync(&a, &b);
        assert_eq!(plan.pull.len(), 3_000);
        assert_eq!(plan.push.len(), 3_000);
        assert!(
            rounds >= 5,
            "root, two levels, and the leaves in at least two answers: {rounds}"
        );
        assert!(received < 8_000_000, "{received}");
        copy(&plan.push, &a, &b);
        copy(&plan.pull, &b, &a);
        assert_eq!(a.merkle_root(PARTITION), b.merkle_root(PARTITION));
    }

    #[test]
    fn bad_answers_are_errors_not_panics() {
        let tree = MerkleTree::new(PARTITION_MERKLE_SHAPE).unwrap();
        let mut none = |_: &[u32]| Vec::new();
        let (mut s, _) = Session::new(tree.clone());
        assert!(s.on_answer(Answer::Children(vec![]), &mut none).is_err());
        let (mut s, _) = Session::new(tree.clone());
        let mut other = MerkleTree::new(PARTITION_MERKLE_SHAPE).unwrap();
        other.insert(&[1; 32], &[2; 32]);
        let next = s.on_answer(Answer::Root(other.root()), &mut none).unwrap();
        assert!(matches!(next, Some(Ask::Children { level: 0, .. })));
        assert!(
            s.on_answer(Answer::Children(vec![vec![]]), &mut none).is_err(),
            "short child list"
        );
        let (mut s, _) = Session::new(tree.clone());
        assert!(s.on_answer(Answer::Refused("no".into()), &mut none).is_err());
        // The peer's side refuses out-of-range questions.
        let mut items = |_: &[u32], _: Option<&[u8]>| (Vec::new(), true);
        let shape = PARTITION_MERKLE_SHAPE;
        let too_many = Ask::Children {
            level: 0,
            indices: vec![0; NODES_PER_ASK_MAX + 1],
        };
        assert!(matches!(
            answer(Some(&tree), shape, &too_many, &mut items),
            Answer::Refused(_)
        ));
        let out_of_range = Ask::Children {
            level: 1,
            indices: vec![1_000],
        };
        assert!(matches!(
            answer(Some(&tree), shape, &out_of_range, &mut items),
            Answer::Refused(_)
        ));
        let bad_leaf = Ask::Leaves {
            leaves: vec![256],
            after: None,
        };
        assert!(matches!(answer(None, shape, &bad_leaf, &mut items), Answer::Refused(_)));
    }
}
