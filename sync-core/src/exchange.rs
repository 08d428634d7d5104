//! One sync exchange, as the core decides it for any server: whose records the phone may read
//! (its scope and the scope's fingerprint), which actor it says is its own, where its cursor
//! stands, which pushed records the page need not send back, the answer itself, and whether
//! the reading it served is audited ([`read_audit`]).
//!
//! A server drives it around its own storage: it makes an [`Exchange`] of the request, merges
//! and commits the pushes ([`crate::push`], [`crate::plan`]), reads the feed and plans the page
//! ([`crate::pull`]) from [`Exchange::cursor`] and [`Exchange::accepted`], and hands the results
//! back to [`Exchange::reply`]. The real server (`server/src/records.rs`, over a store) and the
//! simulation's in-memory server (`tests/support`) are both such drivers, so the rules of an
//! exchange are written once.

use std::collections::HashMap;

use sync_protocol::automerge::ActorId;
use sync_protocol::wire::{Hash, PushDoc, PushOutcome, PushResult, SyncRequest, SyncResponse, Uploaded};
use sync_protocol::RecordId;

use crate::org::{OrgTree, Principal};
use crate::plan::AuditEvent;
use crate::pull::{scope_fingerprint, Cursor, Page, PageSpec, Written};

/// One request being answered.
pub struct Exchange<'r> {
    req: &'r SyncRequest,
    communes: Vec<String>,
    scope: u64,
}

impl<'r> Exchange<'r> {
    /// `req` from `who`, with the tree the server reads now.
    pub fn new(who: &Principal, tree: &OrgTree, req: &'r SyncRequest) -> Exchange<'r> {
        let communes = who.record_communes(tree);
        let scope = scope_fingerprint(&communes);
        Exchange { req, communes, scope }
    }

    /// The communes whose records the phone reads, sorted.
    pub fn communes(&self) -> &[String] {
        &self.communes
    }

    /// The pushing phone's own Automerge actor (hex), if it named one.
    pub fn own_actor(&self) -> Option<String> {
        (!self.req.actor.is_empty()).then(|| ActorId::from(self.req.actor.as_slice()).to_hex_string())
    }

    /// The page the phone asked for.
    pub fn spec(&self) -> PageSpec {
        PageSpec::of(self.req)
    }

    /// The phone's cursor as a store in `epoch` understands it (`None`: the page starts from
    /// the beginning, see [`Cursor::decode`]).
    pub fn cursor(&self, epoch: u64) -> Option<Cursor> {
        Cursor::decode(&self.req.cursor, self.scope, epoch)
    }

    /// The heads of each record this exchange's pushes put on the server, `whole` being the
    /// record completed from slices (its result after those of `req.push`): the page sends the
    /// phone none of what it has just sent.
    ///
    /// A record pushed whole without its heads (a phone on a slow link leaves out those 32
    /// bytes a head, which no compressor squeezes) has on the phone what `written` stored of it
    /// when the store held nothing of it before; otherwise (a record the server had asked
    /// whole, or a retry found unchanged) its heads are not known, and the page sends it again.
    pub fn accepted(&self, whole: Option<&PushDoc>, results: &[PushResult], written: &Written) -> HashMap<RecordId, Vec<Hash>> {
        self.req
            .push
            .iter()
            .chain(whole)
            .zip(results)
            .filter(|(_, r)| r.outcome == PushOutcome::Accepted)
            .map(|(p, _)| {
                let heads = match written.get(&p.id) {
                    Some(w) if p.heads.is_empty() && w.created => w.heads.clone(),
                    _ => p.heads.clone(),
                };
                (p.id, heads)
            })
            .collect()
    }

    /// The answer: `results` of the pushes, the `page` read from a cursor the store understood
    /// as `known` in `epoch`; a phone whose cursor was not understood gets its scope too.
    pub fn reply(self, results: Vec<PushResult>, page: Page, known: Option<Cursor>, epoch: u64, remaining: Option<u64>, uploaded: Option<Uploaded>) -> SyncResponse {
        SyncResponse {
            results,
            pull: page.docs,
            cursor: Cursor { seq: page.next, scope: self.scope, read_at: page.high, epoch }.encode(),
            more: page.more,
            part: page.part,
            remaining,
            uploaded,
            scope: known.is_none().then_some(self.communes),
            epoch,
        }
    }
}

/// The audit entry an answer's reading of records calls for: staff above a commune reading
/// records through sync is audited as reading them through the API is (who, where, how many;
/// never what). `None` for a commune officer, whose phone holds its own commune's records, and
/// for an answer that delivered none: a record sent in slices counts once, with its last slice.
pub fn read_audit(who: &Principal, resp: &SyncResponse) -> Option<AuditEvent> {
    let whole_part = resp.part.as_ref().is_some_and(|part| part.offset + part.bytes.len() as u64 == part.total);
    let pulled = resp.pull.len() + usize::from(whole_part);
    (who.reads_are_audited() && pulled > 0).then(|| AuditEvent {
        user: who.username.clone(),
        device_id: Some(who.device_id.clone()),
        action: "sync_pull",
        target: format!("{}: {pulled} records", who.org_unit),
    })
}
