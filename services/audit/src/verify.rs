//! `audit verify` against the database: reads the `events` table itself, by position, as a
//! stream (constant memory), and trusts none of what it reads.
//!
//! For each position `1, 2, …` in order it checks, and stops at the first failure:
//! 1. the row exists (positions are gapless from 1);
//! 2. `event_hash = SHA-256(0x00 || canonical_bytes(row))`;
//! 3. `chain_hash = SHA-256(previous chain_hash || event_hash)`;
//! 4. the hash from the content equals the leaf recorded in `merkle_nodes` when the event was
//!    checkpointed (this names the position even when an attacker recomputed every hash);
//! 5. when the tree recomputed from the content reaches the size of a stored checkpoint: the
//!    checkpoint's signature (if a key is given), and its root equals the recomputed root —
//!    what catches an edit whose hashes were all recomputed consistently, since nobody but the
//!    key holder can sign a new root.
//!
//! Finally `log_head` must end where the rows end, and no checkpoint may cover more events
//! than there are.

use std::collections::VecDeque;
use std::fmt;

use futures::TryStreamExt;
use merkle::{Checkpoint, Frontier, Hash, VerifierKey};
use sqlx::{PgPool, Row};

use crate::store::{self, StoreError, StoredCheckpoint};

/// The first thing that does not match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The first position found wrong (for a checkpoint that does not match, its tree size: the
    /// altered position is at or before it).
    pub position: u64,
    pub problem: Problem,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// No row at this position; `next` is the next stored position, if any.
    Missing { next: Option<u64> },
    /// The row does not decode.
    Undecodable(String),
    /// The stored `event_hash` is not the hash of the row's content.
    EventHash,
    /// The stored `chain_hash` does not follow from the previous one and the event hash.
    ChainHash,
    /// The content's hash differs from the leaf the Merkle tree recorded for this position.
    TreeLeaf,
    /// A checkpoint's signed note does not verify against the key given.
    Signature { tree_size: u64, reason: String },
    /// A checkpoint row's columns disagree with its signed note.
    CheckpointRecord { tree_size: u64, reason: String },
    /// The root recomputed from the events differs from the signed checkpoint's.
    CheckpointRoot { tree_size: u64 },
    /// `log_head` does not end where the rows end.
    Head(String),
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.position;
        match &self.problem {
            Problem::Missing { next: Some(next) } => {
                write!(
                    f,
                    "position {p}: missing (the next stored position is {next})"
                )
            }
            Problem::Missing { next: None } => write!(f, "position {p}: missing"),
            Problem::Undecodable(why) => write!(f, "position {p}: undecodable row: {why}"),
            Problem::EventHash => write!(
                f,
                "position {p}: event_hash does not match the event's content (altered or moved)"
            ),
            Problem::ChainHash => write!(
                f,
                "position {p}: chain_hash does not follow from the previous chain hash and event_hash"
            ),
            Problem::TreeLeaf => write!(
                f,
                "position {p}: the event's hash differs from the one checkpointed in the Merkle tree (altered after checkpointing)"
            ),
            Problem::Signature { tree_size, reason } => write!(
                f,
                "checkpoint of size {tree_size}: signature does not verify: {reason}"
            ),
            Problem::CheckpointRecord { tree_size, reason } => {
                write!(f, "checkpoint of size {tree_size}: {reason}")
            }
            Problem::CheckpointRoot { tree_size } => write!(
                f,
                "position {p} or before: the events do not reproduce the signed root of the checkpoint of size {tree_size}"
            ),
            Problem::Head(why) => write!(f, "position {p}: log_head: {why}"),
        }
    }
}

/// What was verified when everything matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub events: u64,
    pub checkpoints: u64,
    pub signatures_checked: bool,
    /// The largest checkpoint verified: size and root.
    pub latest: Option<(u64, Hash)>,
    /// The root of the whole log as recomputed.
    pub root: Hash,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Intact(Report),
    Tampered(Finding),
}

/// Checkpoints read a page at a time, smallest first.
struct Checkpoints<'a> {
    pool: &'a PgPool,
    enabled: bool,
    buffered: VecDeque<StoredCheckpoint>,
    after: u64,
    done: bool,
}

impl Checkpoints<'_> {
    async fn peek(&mut self) -> Result<Option<&StoredCheckpoint>, StoreError> {
        if self.buffered.is_empty() && self.enabled && !self.done {
            let mut conn = self.pool.acquire().await?;
            let page = store::checkpoints_after(&mut conn, self.after, 1000).await?;
            self.done = page.len() < 1000;
            if let Some(last) = page.last() {
                self.after = last.tree_size;
            }
            self.buffered.extend(page);
        }
        Ok(self.buffered.front())
    }

    fn pop(&mut self) -> Option<StoredCheckpoint> {
        self.buffered.pop_front()
    }
}

/// The note text of a signed note (without verifying it).
fn note_text(note: &str) -> Option<&str> {
    note.rfind("\n\n").map(|i| &note[..=i])
}

/// Checks a stored checkpoint's note against its columns and, with a key, its signature.
fn check_record(
    c: &StoredCheckpoint,
    verifier: Option<&VerifierKey>,
) -> Result<Checkpoint, Problem> {
    let tree_size = c.tree_size;
    let stated = match verifier {
        Some(key) => key.verify(&c.note).map_err(|e| Problem::Signature {
            tree_size,
            reason: e.to_string(),
        })?,
        None => note_text(&c.note)
            .ok_or_else(|| "the note has no signature part".to_owned())
            .and_then(|t| Checkpoint::parse_text(t).map_err(|e| e.to_string()))
            .map_err(|reason| Problem::CheckpointRecord { tree_size, reason })?,
    };
    if stated.size != c.tree_size || stated.root != c.root {
        return Err(Problem::CheckpointRecord {
            tree_size,
            reason: format!(
                "the row says size {} root {}, its signed note size {} root {}",
                c.tree_size,
                hex::encode(c.root),
                stated.size,
                hex::encode(stated.root)
            ),
        });
    }
    Ok(stated)
}

/// Verifies the whole log in the database. `Err` only when the database cannot be read.
pub async fn verify_database(
    pool: &PgPool,
    verifier: Option<&VerifierKey>,
) -> Result<Outcome, StoreError> {
    let audited: bool = sqlx::query_scalar(
        "SELECT to_regclass('merkle_nodes') IS NOT NULL AND to_regclass('checkpoints') IS NOT NULL",
    )
    .fetch_one(pool)
    .await?;
    let mut checkpoints = Checkpoints {
        pool,
        enabled: audited,
        buffered: VecDeque::new(),
        after: 0,
        done: false,
    };
    let query = if audited {
        "SELECT e.*, n.hash AS tree_leaf FROM events e \
         LEFT JOIN merkle_nodes n ON n.level = 0 AND n.idx = e.position - 1 \
         ORDER BY e.position"
    } else {
        "SELECT e.*, NULL::bytea AS tree_leaf FROM events e ORDER BY e.position"
    };
    let mut conn = pool.acquire().await?;
    let mut rows = sqlx::query(query).fetch(&mut *conn);

    let mut frontier = Frontier::empty();
    let mut chain = eventlog::GENESIS_CHAIN_HASH;
    let mut verified_checkpoints = 0u64;
    let mut latest = None;
    let tampered = |position, problem| Ok(Outcome::Tampered(Finding { position, problem }));

    while let Some(row) = rows.try_next().await? {
        let expected = frontier.size() + 1;
        let position: i64 = row.try_get("position")?;
        if u64::try_from(position) != Ok(expected) {
            // Rows come in position order, so a position below `expected` (even negative) is
            // not a gap but a row that should not exist.
            return match u64::try_from(position) {
                Ok(next) if next > expected => {
                    tampered(expected, Problem::Missing { next: Some(next) })
                }
                _ => tampered(
                    expected,
                    Problem::Undecodable(format!("a row at position {position}")),
                ),
            };
        }
        let event = match store::decode_event(&row) {
            Ok(event) => event,
            Err(why) => return tampered(expected, Problem::Undecodable(why)),
        };
        let leaf = eventlog::event_hash(&eventlog::canonical_bytes(&event));
        if leaf != event.event_hash {
            return tampered(expected, Problem::EventHash);
        }
        chain = eventlog::chain_hash(&chain, &leaf);
        if chain != event.chain_hash {
            return tampered(expected, Problem::ChainHash);
        }
        let tree_leaf: Option<Vec<u8>> = row.try_get("tree_leaf")?;
        if tree_leaf.is_some_and(|t| t.as_slice() != leaf.as_slice()) {
            return tampered(expected, Problem::TreeLeaf);
        }
        frontier.push(leaf);

        while let Some(c) = checkpoints.peek().await? {
            if c.tree_size > frontier.size() {
                break;
            }
            let Some(c) = checkpoints.pop() else { break };
            if let Err(problem) = check_record(&c, verifier) {
                return tampered(c.tree_size, problem);
            }
            if frontier.root() != c.root {
                return tampered(
                    c.tree_size,
                    Problem::CheckpointRoot {
                        tree_size: c.tree_size,
                    },
                );
            }
            verified_checkpoints += 1;
            latest = Some((c.tree_size, c.root));
        }
    }
    drop(rows);

    let events = frontier.size();
    if audited && store::tree_size(&mut conn).await? > events {
        // The tree recorded leaves for events the table no longer has.
        return tampered(events + 1, Problem::Missing { next: None });
    }
    if let Some(c) = checkpoints.peek().await? {
        // A signed checkpoint covers events the table no longer has.
        let tree_size = c.tree_size;
        if let Err(problem) = check_record(c, verifier) {
            return tampered(tree_size, problem);
        }
        return tampered(events + 1, Problem::Missing { next: None });
    }
    let head = sqlx::query("SELECT position, chain_hash FROM log_head")
        .fetch_optional(&mut *conn)
        .await?;
    if let Some(head) = head {
        let head_position: i64 = head.try_get("position")?;
        let head_chain: Vec<u8> = head.try_get("chain_hash")?;
        let head_size = u64::try_from(head_position).ok();
        if head_size.is_some_and(|h| h > events) {
            return tampered(events + 1, Problem::Missing { next: None });
        }
        if head_size != Some(events) || head_chain.as_slice() != chain.as_slice() {
            return tampered(
                events,
                Problem::Head(format!(
                    "it says position {head_position} chain {}, the rows end at {events} chain {}",
                    hex::encode(&head_chain),
                    hex::encode(chain)
                )),
            );
        }
    }
    Ok(Outcome::Intact(Report {
        events,
        checkpoints: verified_checkpoints,
        signatures_checked: verifier.is_some(),
        latest,
        root: frontier.root(),
    }))
}
