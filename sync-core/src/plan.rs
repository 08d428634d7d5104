//! One request's writes as one [`CommitPlan`]: what a store must apply atomically and durably.
//!
//! The plan says *what* changes; the store decides *where* (keys, tables) and assigns the feed
//! sequence numbers. A plan is made in the write transaction that commits it, with the org
//! tree that transaction reads (the counter deltas follow its chains), and a store commits it
//! only if every record's stored version is still the one it was merged onto (`base_seq`).

use std::collections::HashMap;

use indicators::{Contribution, Counters, Quarter};
use sync_protocol::RecordId;

use crate::conflicts::StoredConflict;
use crate::meta::{ActorOwner, RecordMeta};
use crate::org::{OrgTree, Principal};
use crate::push::Prepared;

/// What to audit: who did what to which target. Never record contents, tokens or passwords.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    pub user: String,
    pub device_id: Option<String>,
    pub action: &'static str,
    pub target: String,
}

/// One record's write.
#[derive(Debug, Clone)]
pub struct RecordWrite {
    pub id: RecordId,
    /// The stored version this write replaces (`None`: a new record). The record leaves its
    /// feed position `base_seq` for the one the store assigns.
    pub base_seq: Option<u64>,
    pub doc: Vec<u8>,
    /// `seq` is 0 until the store stamps it ([`RecordMeta::stamp`]).
    pub meta: RecordMeta,
    /// The record's open conflicts: the review index holds exactly these afterwards (none:
    /// the record leaves the index).
    pub conflicts: Vec<StoredConflict>,
    /// Its de-identified facts, for its reporting row ([`crate::facts::report_row`]).
    pub facts: Option<serde_json::Value>,
}

/// Counter deltas per (org unit, quarter): each record's old contribution out, the new one in,
/// along its chain of units.
#[derive(Debug, Default, Clone)]
pub struct CounterDeltas {
    deltas: HashMap<(String, Quarter), Counters>,
}

impl CounterDeltas {
    /// Adds one record's change along `chain` (the units a commune's records count for).
    pub fn record_change(&mut self, chain: &impl Fn(&str) -> Vec<String>, old: Option<&Contribution>, new: Option<&Contribution>) {
        for (unit, q, d) in indicators::deltas(old, new, |c| chain(c)) {
            self.deltas.entry((unit, q)).or_default().add(&d);
        }
    }

    /// Adds `d` to the delta of `unit` in quarter `q` (a rebuild's correction).
    pub fn add(&mut self, unit: String, q: Quarter, d: &Counters) {
        self.deltas.entry((unit, q)).or_default().add(d);
    }

    /// The non-zero deltas.
    pub fn iter(&self) -> impl Iterator<Item = (&(String, Quarter), &Counters)> {
        self.deltas.iter().filter(|(_, d)| !d.is_zero())
    }

    /// Every (unit, quarter) whose counters change: approvals of these are flagged.
    pub fn touched(&self) -> Vec<(String, Quarter)> {
        self.iter().map(|(k, _)| k.clone()).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }
}

/// Everything one request writes, atomically.
#[derive(Debug, Clone, Default)]
pub struct CommitPlan {
    pub records: Vec<RecordWrite>,
    /// Added to the stored counters (exactly, whatever commits run at the same time).
    pub counters: CounterDeltas,
    /// New Automerge actors, now owned by the pushing device.
    pub actor_claims: Vec<(String, ActorOwner)>,
    pub audit: Option<AuditEvent>,
}

impl CommitPlan {
    /// The plan of `writes` made by `who`, with counter deltas along `tree`'s chains.
    pub fn of(who: &Principal, tree: &OrgTree, writes: Vec<Prepared>, audit: Option<AuditEvent>) -> CommitPlan {
        let mut plan = CommitPlan { audit, ..CommitPlan::default() };
        let chain = |c: &str| tree.chain(c);
        for p in writes {
            plan.counters.record_change(&chain, p.old_contribution.as_ref(), p.meta.contribution.as_ref());
            for actor in p.new_actors {
                if !plan.actor_claims.iter().any(|(a, _)| *a == actor) {
                    plan.actor_claims.push((actor, ActorOwner { username: who.username.clone(), device_id: who.device_id.clone() }));
                }
            }
            plan.records.push(RecordWrite { id: p.id, base_seq: p.base_seq, doc: p.doc, meta: p.meta, conflicts: p.conflicts, facts: p.facts });
        }
        plan
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty() && self.counters.is_empty() && self.actor_claims.is_empty() && self.audit.is_none()
    }
}
