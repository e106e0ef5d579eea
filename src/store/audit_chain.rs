//! The audit log as a hash chain: each record carries the hash of the one
//! before it, so that changing, deleting or reordering a record breaks
//! every link after it (tamper evidence, in the manner of RFC 6962's log
//! or a blockchain without the consensus).
//!
//! A chained record is stored as `0x01 ‖ prev (32) ‖ hash (32) ‖ event`,
//! `event` being the event's JSON exactly as written, and
//!
//! ```text
//! hash = SHA-256("slcs-audit-v1" ‖ 0x00 ‖ seq (8 bytes, big-endian) ‖ prev ‖ event)
//! ```
//!
//! with `prev` the hash of the record before it in sequence order (32 zero
//! bytes for the first). Hashing the stored bytes, not a re-encoding, lets
//! anyone verify an export without slcs's JSON encoder. Records written
//! before the chain existed are plain JSON; they are reported as such and
//! the chain starts after them.
//!
//! What a chain cannot show on its own is the loss of its newest records:
//! the head (the last hash) must be kept somewhere else, which is what
//! `slcs audit verify` prints it for and what an export to a SIEM does.

use aws_lc_rs::digest;
use serde::Serialize;

/// Bytes of a hash.
pub const HASH_BYTES: usize = 32;
/// The `prev` of the first chained record.
pub const GENESIS: [u8; HASH_BYTES] = [0; HASH_BYTES];
/// The format byte of a chained record.
pub const CHAINED: u8 = 1;
/// The domain tag every link hash begins with.
pub const DOMAIN: &[u8] = b"slcs-audit-v1\0";

/// The hash of the record `seq` holding `event` after `prev`.
pub fn link_hash(seq: u64, prev: &[u8; HASH_BYTES], event: &[u8]) -> [u8; HASH_BYTES] {
    let mut context = digest::Context::new(&digest::SHA256);
    context.update(DOMAIN);
    context.update(&seq.to_be_bytes());
    context.update(prev);
    context.update(event);
    let mut out = [0u8; HASH_BYTES];
    for (o, b) in out.iter_mut().zip(context.finish().as_ref()) {
        *o = *b;
    }
    out
}

/// The stored form of `event` (its JSON) as record `seq` after `prev`,
/// and the record's hash.
pub fn seal(seq: u64, prev: &[u8; HASH_BYTES], event: &[u8]) -> (Vec<u8>, [u8; HASH_BYTES]) {
    let hash = link_hash(seq, prev, event);
    let mut stored = Vec::with_capacity(1 + 2 * HASH_BYTES + event.len());
    stored.push(CHAINED);
    stored.extend_from_slice(prev);
    stored.extend_from_slice(&hash);
    stored.extend_from_slice(event);
    (stored, hash)
}

/// A stored audit record taken apart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Sequence number.
    pub seq: u64,
    /// `prev` and `hash` of a chained record; `None` for one written before
    /// the chain existed.
    pub link: Option<([u8; HASH_BYTES], [u8; HASH_BYTES])>,
    /// The event's JSON as stored.
    pub event: Vec<u8>,
}

impl Entry {
    /// Takes the stored bytes of record `seq` apart; `None` if they are
    /// neither a chained record nor plain JSON.
    pub fn parse(seq: u64, stored: &[u8]) -> Option<Self> {
        match stored.first() {
            Some(&CHAINED) => {
                let prev = stored.get(1..=HASH_BYTES)?.try_into().ok()?;
                let hash = stored
                    .get(1 + HASH_BYTES..1 + 2 * HASH_BYTES)?
                    .try_into()
                    .ok()?;
                Some(Self {
                    seq,
                    link: Some((prev, hash)),
                    event: stored.get(1 + 2 * HASH_BYTES..)?.to_vec(),
                })
            }
            Some(b'{') => Some(Self {
                seq,
                link: None,
                event: stored.to_vec(),
            }),
            _ => None,
        }
    }
}

/// What is wrong at one record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(tag = "problem", rename_all = "snake_case")]
#[schema(as = AuditProblem)]
pub enum Problem {
    /// Its stored hash is not the hash of its contents: the record (or its
    /// hash) was changed.
    Modified {
        /// The record.
        seq: u64,
    },
    /// Its `prev` is not the hash of the record before it: a record was
    /// deleted or inserted before it, or records were reordered.
    Broken {
        /// The record.
        seq: u64,
    },
    /// An unchained record after the chain began: written around slcs.
    Unchained {
        /// The record.
        seq: u64,
    },
    /// Bytes that are no record at all.
    Unreadable {
        /// The record.
        seq: u64,
    },
}

/// The result of checking the chain.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[schema(as = AuditReport)]
pub struct Report {
    /// Records read.
    pub records: u64,
    /// Records written before the chain existed (at its start).
    pub unchained_before_chain: u64,
    /// Chained records whose links checked out.
    pub verified: u64,
    /// The hash of the last record, hex: keep it elsewhere to detect the
    /// loss of the newest records later.
    pub head: Option<String>,
    /// The sequence number of the last record.
    pub last_seq: Option<u64>,
    /// What is wrong, record by record (empty: intact).
    pub problems: Vec<Problem>,
}

impl Report {
    /// Whether no problem was found.
    pub fn is_intact(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks records one at a time, in sequence order.
#[derive(Debug, Default)]
pub struct Verifier {
    report: Report,
    /// The hash the next chained record's `prev` must be; `None` until the
    /// chain has begun.
    expected_prev: Option<[u8; HASH_BYTES]>,
}

impl Verifier {
    /// Checks the next record (`None`: bytes that did not parse).
    pub fn check(&mut self, seq: u64, entry: Option<&Entry>) {
        let report = &mut self.report;
        report.records += 1;
        report.last_seq = Some(seq);
        let Some(entry) = entry else {
            report.problems.push(Problem::Unreadable { seq });
            return;
        };
        let Some((prev, hash)) = entry.link else {
            if self.expected_prev.is_some() {
                report.problems.push(Problem::Unchained { seq });
            } else {
                report.unchained_before_chain += 1;
            }
            return;
        };
        let expected = self.expected_prev.unwrap_or(GENESIS);
        let mut sound = true;
        if prev != expected {
            report.problems.push(Problem::Broken { seq });
            sound = false;
        }
        if link_hash(seq, &prev, &entry.event) != hash {
            report.problems.push(Problem::Modified { seq });
            sound = false;
        }
        if sound {
            report.verified += 1;
        }
        // The chain goes on from what this record claims, so one bad
        // record is reported once, not with every record after it.
        self.expected_prev = Some(hash);
        report.head = Some(hex::encode(hash));
    }

    /// The report.
    pub fn finish(self) -> Report {
        self.report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(events: &[&str]) -> Vec<(u64, Vec<u8>)> {
        let mut prev = GENESIS;
        events
            .iter()
            .enumerate()
            .map(|(i, event)| {
                let seq = (i as u64 + 1) * 10;
                let (stored, hash) = seal(seq, &prev, event.as_bytes());
                prev = hash;
                (seq, stored)
            })
            .collect()
    }

    fn verify(records: &[(u64, Vec<u8>)]) -> Report {
        let mut verifier = Verifier::default();
        for (seq, stored) in records {
            verifier.check(*seq, Entry::parse(*seq, stored).as_ref());
        }
        verifier.finish()
    }

    const EVENTS: [&str; 4] = [
        r#"{"action":"client.create"}"#,
        r#"{"action":"token.issue"}"#,
        r#"{"action":"approval.revoke"}"#,
        r#"{"action":"keys.rotate"}"#,
    ];

    #[test]
    fn an_intact_chain_verifies_and_names_its_head() {
        let records = chain(&EVENTS);
        let report = verify(&records);
        assert!(report.is_intact(), "{report:?}");
        assert_eq!(report.verified, 4);
        assert_eq!(report.last_seq, Some(40));
        let last = Entry::parse(40, &records[3].1).unwrap();
        assert_eq!(report.head, Some(hex::encode(last.link.unwrap().1)));
    }

    #[test]
    fn a_modified_deleted_or_reordered_record_is_found() {
        // Modified: one byte of an event.
        let mut modified = chain(&EVENTS);
        let last = modified[1].1.len() - 3;
        modified[1].1[last] ^= 1;
        assert_eq!(
            verify(&modified).problems,
            vec![Problem::Modified { seq: 20 }]
        );
        // Modified with its own hash recomputed: the next link breaks.
        let mut rehashed = chain(&EVENTS);
        let entry = Entry::parse(20, &rehashed[1].1).unwrap();
        let (prev, _) = entry.link.unwrap();
        rehashed[1].1 = seal(20, &prev, br#"{"action":"nothing.here"}"#).0;
        assert_eq!(
            verify(&rehashed).problems,
            vec![Problem::Broken { seq: 30 }]
        );
        // Deleted.
        let mut deleted = chain(&EVENTS);
        deleted.remove(2);
        assert_eq!(verify(&deleted).problems, vec![Problem::Broken { seq: 40 }]);
        // Reordered: two records' contents swapped.
        let mut swapped = chain(&EVENTS);
        let second = swapped[1].1.clone();
        swapped[1].1 = swapped[2].1.clone();
        swapped[2].1 = second;
        let problems = verify(&swapped).problems;
        assert!(
            problems.contains(&Problem::Modified { seq: 20 }),
            "{problems:?}"
        );
        assert!(
            problems.contains(&Problem::Broken { seq: 20 }),
            "{problems:?}"
        );
        // A plain record slipped in after the chain began, and junk.
        let mut inserted = chain(&EVENTS);
        inserted.insert(2, (25, br#"{"action":"forged"}"#.to_vec()));
        inserted.push((50, vec![7, 7, 7]));
        assert_eq!(
            verify(&inserted).problems,
            vec![
                Problem::Unchained { seq: 25 },
                Problem::Unreadable { seq: 50 }
            ]
        );
    }

    #[test]
    fn records_from_before_the_chain_are_counted_not_condemned() {
        let mut records = vec![(1, br#"{"action":"old"}"#.to_vec())];
        records.extend(chain(&EVENTS));
        let report = verify(&records);
        assert!(report.is_intact(), "{report:?}");
        assert_eq!(report.unchained_before_chain, 1);
        assert_eq!(report.verified, 4);
        assert_eq!(Entry::parse(1, b"").map(|e| e.seq), None);
    }
}
