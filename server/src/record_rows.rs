//! The typed storage seam of records and their feed: what the data layer reads and writes of
//! them, as rows, with no key in sight.
//!
//! - [`RecordRows`]: one consistent read of the rows (a read cut or a write transaction): the
//!   feed of a scope after a cursor, metadata and documents in batches, the actors' owners, the
//!   review index, and the walks `check` and `rebuild-figures` make over every row.
//! - [`RecordWrites`]: the rows a commit stages: a record at its new feed position (leaving its
//!   old one) with its document, metadata, review-index entry and reporting row; a claimed
//!   actor; the feed's last sequence number.
//!
//! The repositories above (`records`, `review`, `org_units`, `rebuild`, `check`) decide what to
//! read and write; this module alone knows how the rows are laid out. Two implementations:
//! - the keyspace, over any [`KvRead`] and into a [`Batch`]: the one the memory store, sled on
//!   disk and PostgreSQL's `gesync.kv` share (the keys are below);
//! - [`MemRows`] (tests): plain maps and no key, which the seam's conformance suite runs beside
//!   the keyspace on every store, so that the seam stays one a backend can implement in tables
//!   of its own.

use std::collections::HashMap;

use serde_json::Value;
use sync_core::conflicts::StoredConflict;
use sync_core::meta::{ActorOwner, RecordMeta};
use sync_core::push::Stored;
use sync_protocol::RecordId;

use crate::db::{corrupt, key, read_u64, to_json, DbError};
use crate::store::{prefix_end, Batch, KvRead};

/// A row read on its own: `None` when there is none, an error when it is damaged (a read that
/// goes on past damage, the pull, leaves the record out; others stop).
pub(crate) type Row<T> = Option<Result<T, DbError>>;

/// One stored feed entry as read back whole (`check`).
pub(crate) enum FeedRow {
    /// A stored entry whose position cannot be read (the length of its key).
    BadKey(usize),
    /// An entry whose value is no record id.
    NoId { commune: String, seq: u64 },
    Entry { commune: String, seq: u64, id: RecordId },
}

/// One stored metadata row as read back whole (`check`, `rebuild-figures`). Nearly every row
/// is a `Record`: boxing it would allocate once a row to shrink the rare `BadKey`.
#[allow(clippy::large_enum_variant)]
pub(crate) enum MetaRow {
    /// A stored row whose record id cannot be read (the length of its key).
    BadKey(usize),
    Record { id: RecordId, meta: Result<RecordMeta, DbError> },
}

/// Open conflicts of one record, with the commune it was made in.
pub(crate) type ConflictRow = (String, RecordId, Vec<StoredConflict>);

/// One consistent read of the records' rows.
pub(crate) trait RecordRows {
    /// The feed's last sequence number (0 before the first record).
    fn feed_high(&self) -> Result<u64, DbError>;

    /// The feed of each of `communes` in `(after, high]`, in sequence order, at most
    /// `per_commune` entries each: one read for the whole scope.
    fn feed_after(&self, communes: &[String], after: u64, high: u64, per_commune: usize) -> Result<Vec<Vec<(u64, RecordId)>>, DbError>;

    /// How many feed entries of `communes` lie in `(after, high]`, counted up to `cap` per
    /// commune.
    fn feed_count(&self, communes: &[String], after: u64, high: u64, cap: usize) -> Result<u64, DbError>;

    /// Every record of `communes` (the feed holds each record once), in one read.
    fn record_ids_of(&self, communes: &[String]) -> Result<Vec<RecordId>, DbError>;

    /// The metadata of several records, in `ids`' order.
    fn metas(&self, ids: &[RecordId]) -> Result<Vec<Row<RecordMeta>>, DbError>;

    /// [`RecordRows::metas`] for a pull: each record's contribution to the figures is left
    /// unread (`None`; see `rows::meta_for_pull_from`). Never write back what it returns.
    fn metas_for_pull(&self, ids: &[RecordId]) -> Result<Vec<Row<RecordMeta>>, DbError> {
        self.metas(ids)
    }

    /// The documents of several records, in `ids`' order, checked against their checksums.
    fn documents(&self, ids: &[RecordId]) -> Result<Vec<Row<Vec<u8>>>, DbError>;

    /// The owners of those of `actors` that have one.
    fn owners(&self, actors: &[String]) -> Result<HashMap<String, ActorOwner>, DbError>;

    /// A record's open conflicts (none when it has none).
    fn open_conflicts(&self, commune: &str, id: &RecordId) -> Result<Vec<StoredConflict>, DbError>;

    /// The open conflicts of each record of `communes` that has any, commune by commune.
    fn conflicts_of(&self, communes: &[String]) -> Result<Vec<ConflictRow>, DbError>;

    /// How many records of `communes` have open conflicts.
    fn conflicted_records(&self, communes: &[String]) -> Result<usize, DbError>;

    /// Every feed entry, as stored, in (commune, sequence) order (`check`).
    fn feed_rows(&self) -> Result<Vec<FeedRow>, DbError>;

    /// At most `limit` records' metadata in id order after record `after` (from the first
    /// when `None`): a page of a walk that writes between pages (the rebuild).
    fn metas_after(&self, after: Option<&RecordId>, limit: usize) -> Result<Vec<MetaRow>, DbError>;

    /// Calls `f` with every record's metadata in id order, reading `page` rows at a time (a
    /// walk over a million records holds a page, not every record).
    fn for_each_meta(&self, page: usize, f: &mut dyn FnMut(MetaRow) -> Result<(), DbError>) -> Result<(), DbError>;

    /// The id of every stored document.
    fn document_ids(&self) -> Result<Vec<RecordId>, DbError>;

    /// Every record's open conflicts (`check`).
    fn all_conflicts(&self) -> Result<Vec<ConflictRow>, DbError>;

    /// How many records there are, and how many reporting rows (equal on a store that keeps
    /// them and has them all).
    fn records_and_report_rows(&self) -> Result<(usize, usize), DbError>;

    /// Whether the pair `a`, `b` (`a < b`) was marked as not duplicates.
    fn not_duplicates(&self, a: &RecordId, b: &RecordId) -> Result<bool, DbError>;

    /// One record's metadata.
    fn meta(&self, id: &RecordId) -> Result<Option<RecordMeta>, DbError> {
        self.metas(std::slice::from_ref(id))?.pop().flatten().transpose()
    }

    /// One record's document.
    fn document(&self, id: &RecordId) -> Result<Option<Vec<u8>>, DbError> {
        self.documents(std::slice::from_ref(id))?.pop().flatten().transpose()
    }

    /// One record, metadata and document (two plain reads).
    fn stored_record(&self, id: &RecordId) -> Result<Option<Stored>, DbError> {
        let Some(meta) = self.meta(id)? else { return Ok(None) };
        let doc = self.document(id)?.ok_or_else(|| corrupt("record", "metadata without its document"))?;
        Ok(Some(Stored { meta, doc }))
    }

    /// The metadata of several records; any damaged one is an error.
    fn metas_whole(&self, ids: &[RecordId]) -> Result<Vec<Option<RecordMeta>>, DbError> {
        self.metas(ids)?.into_iter().map(Option::transpose).collect()
    }

    /// Several records, metadata and document (two reads: the documents only of the records
    /// there are).
    fn stored(&self, ids: &[RecordId]) -> Result<Vec<Option<Stored>>, DbError> {
        let metas = self.metas_whole(ids)?;
        let present: Vec<RecordId> = ids.iter().zip(&metas).filter(|(_, m)| m.is_some()).map(|(id, _)| *id).collect();
        let mut docs = self.documents(&present)?.into_iter();
        metas
            .into_iter()
            .map(|m| match m {
                None => Ok(None),
                Some(meta) => {
                    let doc = docs.next().flatten().ok_or_else(|| corrupt("record", "metadata without its document"))??;
                    Ok(Some(Stored { meta, doc }))
                }
            })
            .collect()
    }
}

/// A record as a commit writes it.
pub(crate) struct RecordRow<'a> {
    pub id: RecordId,
    /// The commune it was made in (its feed's).
    pub commune: &'a str,
    /// Its new feed position.
    pub seq: u64,
    /// The feed position it leaves (its stored version's), if it was stored.
    pub leaves: Option<u64>,
    pub doc: &'a [u8],
    pub meta: &'a RecordMeta,
    pub conflicts: &'a [StoredConflict],
    /// Its facts for the reporting row (`gesync.records` on PostgreSQL).
    pub facts: Option<&'a Value>,
}

/// The records' rows one commit stages.
pub(crate) trait RecordWrites {
    /// A record at its new feed position, with all its rows.
    fn put_record(&mut self, row: RecordRow<'_>);
    /// A record's metadata alone (the rebuild's recomputed contribution).
    fn put_meta(&mut self, id: &RecordId, meta: &RecordMeta);
    /// A record's reporting row alone, where the store keeps them.
    fn put_report_row(&mut self, id: &RecordId, meta: &RecordMeta, facts: Option<&Value>);
    /// An Automerge actor claimed by its owner.
    fn claim_actor(&mut self, actor: &str, owner: &ActorOwner);
    /// The feed's last sequence number.
    fn set_feed_high(&mut self, seq: u64);
    /// Marks the pair `a`, `b` (`a < b`) as not duplicates, by whom and when.
    fn mark_not_duplicates(&mut self, a: &RecordId, b: &RecordId, by: &str, at: i64);
}

// ---------------------------------------------------------------------------------------------
// The keyspace (memory, sled, PostgreSQL's `gesync.kv`). Keys (see `db.rs` for the whole
// keyspace): `r/{id16}` document, `m/{id16}` metadata, `fx/{id16}` reporting row,
// `f/{commune}/{seq:be64}` feed, `q/{commune}/{id16}` review index, `x/{actor}` actor claim,
// `n/seq` the feed's last sequence number, `nd/{a}~{b}` a pair marked as not duplicates (by
// whom, when). PostgreSQL's triggers and views read some of them
// (`fx/` into `gesync.records`, `q/` into `gesync.conflicts`, `r/` sealed and `f/` in
// the views of migration 6, `x/` in migration 7's): changing their form needs a migration that
// changes the SQL with it.

const FEED: &[u8] = b"f/";
const METAS: &[u8] = b"m/";
const DOCS: &[u8] = b"r/";
const REPORT_ROWS: &[u8] = b"fx/";
const CONFLICTS: &[u8] = b"q/";
const FEED_SEQ: &[u8] = b"n/seq";

fn feed_key(commune: &str, seq: u64) -> Vec<u8> {
    key("f/", &[commune.as_bytes(), &seq.to_be_bytes()])
}

/// The range of each of `communes` in the table under `prefix` (`f/` the feed, `q/` the review
/// index), for one read of them all ([`KvRead::ranges`]).
fn commune_ranges(prefix: &str, communes: &[String]) -> Vec<(Vec<u8>, Vec<u8>)> {
    communes
        .iter()
        .map(|c| {
            let start = key(prefix, &[c.as_bytes(), b""]);
            let end = prefix_end(&start);
            (start, end)
        })
        .collect()
}

/// The feed of each of `communes` in `(after, high]`.
fn feed_bounds(communes: &[String], after: u64, high: u64) -> Vec<(Vec<u8>, Vec<u8>)> {
    communes.iter().map(|c| (feed_key(c, after + 1), feed_key(c, high + 1))).collect()
}

pub(crate) fn doc_key(id: &RecordId) -> Vec<u8> {
    key("r/", &[&id.0])
}

pub(crate) fn meta_key(id: &RecordId) -> Vec<u8> {
    key("m/", &[&id.0])
}

fn actor_key(actor: &str) -> Vec<u8> {
    key("x/", &[actor.as_bytes()])
}

/// The review index: `q/{commune}/{id16}` → the record's open conflicts.
fn conflict_key(commune: &str, id: &RecordId) -> Vec<u8> {
    key("q/", &[commune.as_bytes(), &id.0])
}

/// A record's reporting row: `fx/{id16}` → [`sync_core::facts::report_row`] (plain JSON: on
/// PostgreSQL the database reads it into `gesync.records`). Kept only by stores that keep
/// tables for people ([`crate::store::Kv::keeps_report_rows`]).
fn report_key(id: &RecordId) -> Vec<u8> {
    key("fx/", &[&id.0])
}

fn not_duplicates_key(a: &RecordId, b: &RecordId) -> Vec<u8> {
    key("nd/", &[format!("{a}~{b}").as_bytes()])
}

/// Whether `k` is a reporting row's key (a restore into a store that keeps none leaves them out).
pub(crate) fn is_report_key(k: &[u8]) -> bool {
    k.starts_with(REPORT_ROWS)
}

/// The record id at the end of a `{prefix}{id16}` key.
fn id_of_key(k: &[u8], prefix: &[u8]) -> Option<RecordId> {
    k.strip_prefix(prefix).and_then(|rest| <[u8; 16]>::try_from(rest).ok()).map(RecordId)
}

fn id_of_value(v: &[u8]) -> Result<RecordId, DbError> {
    Ok(RecordId(v.try_into().map_err(|_| corrupt("feed", "bad id"))?))
}

/// (commune, seq) of a feed key `f/{commune}/{seq:be64}`.
fn parse_feed_key(k: &[u8]) -> Option<(String, u64)> {
    let rest = k.strip_prefix(FEED)?;
    if rest.len() < 9 || rest[rest.len() - 9] != b'/' {
        return None;
    }
    let commune = std::str::from_utf8(&rest[..rest.len() - 9]).ok()?.to_string();
    let seq = u64::from_be_bytes(rest[rest.len() - 8..].try_into().ok()?);
    Some((commune, seq))
}

fn seq_of_feed_key(k: &[u8]) -> Result<u64, DbError> {
    let n = k.len();
    Ok(u64::from_be_bytes(k.get(n.saturating_sub(8)..).and_then(|s| s.try_into().ok()).ok_or_else(|| corrupt("feed", "bad key"))?))
}

/// One stored metadata entry as read.
fn meta_row(k: &[u8], v: Vec<u8>) -> MetaRow {
    match id_of_key(k, METAS) {
        None => MetaRow::BadKey(k.len()),
        Some(id) => MetaRow::Record { id, meta: parse_meta(&id, v) },
    }
}

fn conflicts_of_value(v: &[u8]) -> Result<Vec<StoredConflict>, DbError> {
    crate::rows::conflicts_from(v).map_err(|e| corrupt("conflict index", e))
}

/// The tag of a sealed value (a byte neither an Automerge document nor JSON starts with).
const SEALED: u8 = 0xC5;
/// Bytes of SHA-256 a sealed value carries.
const SEAL_LEN: usize = 8;

/// A record's document and metadata are stored sealed: [`SEALED`], the first 8 bytes of the
/// value's SHA-256, the value. Damage to the stored bytes (a bad sector, a torn copy) then
/// shows on every read, and the record is refused instead of served or merged. Values stored
/// before sealing (no tag) are read as they are.
pub(crate) fn seal(value: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    let mut out = Vec::with_capacity(1 + SEAL_LEN + value.len());
    out.push(SEALED);
    out.extend_from_slice(&sha2::Sha256::digest(value)[..SEAL_LEN]);
    out.extend_from_slice(value);
    out
}

/// The value inside a sealed one, or an error naming the damaged record.
pub(crate) fn unseal(what: &str, id: &RecordId, mut stored: Vec<u8>) -> Result<Vec<u8>, DbError> {
    use sha2::Digest;
    if stored.first() != Some(&SEALED) {
        return Ok(stored);
    }
    if stored.len() < 1 + SEAL_LEN || sha2::Sha256::digest(&stored[1 + SEAL_LEN..])[..SEAL_LEN] != stored[1..1 + SEAL_LEN] {
        return Err(corrupt(&format!("record {id}"), format!("its {what} does not match its checksum (damaged on disk)")));
    }
    stored.drain(..1 + SEAL_LEN);
    Ok(stored)
}

fn parse_meta(id: &RecordId, stored: Vec<u8>) -> Result<RecordMeta, DbError> {
    parse_meta_with(crate::rows::meta_from, id, stored)
}

/// A stored metadata row, checked against its checksum, then read by `read` (whole, or for a
/// pull).
fn parse_meta_with(read: fn(&[u8]) -> Result<RecordMeta, String>, id: &RecordId, stored: Vec<u8>) -> Result<RecordMeta, DbError> {
    read(&unseal("metadata", id, stored)?).map_err(|e| corrupt(&format!("record {id}: metadata"), e))
}

/// The metadata rows of `ids`, each read by `read`.
fn metas_with(r: &(impl KvRead + ?Sized), ids: &[RecordId], read: fn(&[u8]) -> Result<RecordMeta, String>) -> Result<Vec<Row<RecordMeta>>, DbError> {
    let keys: Vec<Vec<u8>> = ids.iter().map(meta_key).collect();
    Ok(r.get_many(&keys)?.into_iter().zip(ids).map(|(v, id)| v.map(|v| parse_meta_with(read, id, v))).collect())
}

/// Rows under `prefix` with keys of `key_len` bytes, read 10,000 at a time.
fn count_rows(r: &(impl KvRead + ?Sized), prefix: &[u8], key_len: usize) -> Result<usize, DbError> {
    let (mut n, mut from, end) = (0, prefix.to_vec(), prefix_end(prefix));
    loop {
        let page = r.range(&from, &end, 10_000)?;
        n += page.iter().filter(|(k, _)| k.len() == key_len).count();
        match page.last() {
            Some((k, _)) if page.len() == 10_000 => from = [k.as_slice(), &[0]].concat(),
            _ => return Ok(n),
        }
    }
}

impl<R: KvRead + ?Sized> RecordRows for R {
    fn feed_high(&self) -> Result<u64, DbError> {
        read_u64(self, FEED_SEQ)
    }

    fn feed_after(&self, communes: &[String], after: u64, high: u64, per_commune: usize) -> Result<Vec<Vec<(u64, RecordId)>>, DbError> {
        if after >= high {
            return Ok(vec![Vec::new(); communes.len()]);
        }
        // One read for the whole scope (one query on PostgreSQL, not one per commune).
        self.ranges(&feed_bounds(communes, after, high), per_commune)?
            .into_iter()
            .map(|got| got.into_iter().map(|(k, v)| Ok((seq_of_feed_key(&k)?, id_of_value(&v)?))).collect())
            .collect()
    }

    fn feed_count(&self, communes: &[String], after: u64, high: u64, cap: usize) -> Result<u64, DbError> {
        if after >= high {
            return Ok(0);
        }
        Ok(self.count_ranges(&feed_bounds(communes, after, high), cap)?.into_iter().sum())
    }

    fn record_ids_of(&self, communes: &[String]) -> Result<Vec<RecordId>, DbError> {
        self.ranges(&commune_ranges("f/", communes), usize::MAX)?.into_iter().flatten().map(|(_, v)| id_of_value(&v)).collect()
    }

    fn metas(&self, ids: &[RecordId]) -> Result<Vec<Row<RecordMeta>>, DbError> {
        metas_with(self, ids, crate::rows::meta_from)
    }

    fn metas_for_pull(&self, ids: &[RecordId]) -> Result<Vec<Row<RecordMeta>>, DbError> {
        metas_with(self, ids, crate::rows::meta_for_pull_from)
    }

    fn documents(&self, ids: &[RecordId]) -> Result<Vec<Row<Vec<u8>>>, DbError> {
        let keys: Vec<Vec<u8>> = ids.iter().map(doc_key).collect();
        Ok(self.get_many(&keys)?.into_iter().zip(ids).map(|(v, id)| v.map(|v| unseal("document", id, v))).collect())
    }

    // One row on its own is one plain read, not a batch of one (on PostgreSQL a batched read
    // is a heavier query: the pull reads documents one at a time).
    fn meta(&self, id: &RecordId) -> Result<Option<RecordMeta>, DbError> {
        self.get(&meta_key(id))?.map(|v| parse_meta(id, v)).transpose()
    }

    fn document(&self, id: &RecordId) -> Result<Option<Vec<u8>>, DbError> {
        self.get(&doc_key(id))?.map(|v| unseal("document", id, v)).transpose()
    }

    fn owners(&self, actors: &[String]) -> Result<HashMap<String, ActorOwner>, DbError> {
        let keys: Vec<Vec<u8>> = actors.iter().map(|a| actor_key(a)).collect();
        let mut owners = HashMap::new();
        for (actor, v) in actors.iter().zip(self.get_many(&keys)?) {
            if let Some(v) = v {
                owners.insert(actor.clone(), crate::rows::owner_from(&v).map_err(|e| corrupt("actor owner", e))?);
            }
        }
        Ok(owners)
    }

    fn open_conflicts(&self, commune: &str, id: &RecordId) -> Result<Vec<StoredConflict>, DbError> {
        self.get(&conflict_key(commune, id))?.map(|v| conflicts_of_value(&v)).transpose().map(Option::unwrap_or_default)
    }

    fn conflicts_of(&self, communes: &[String]) -> Result<Vec<ConflictRow>, DbError> {
        let mut out = Vec::new();
        let bounds = commune_ranges("q/", communes);
        for ((commune, (prefix, _)), rows) in communes.iter().zip(&bounds).zip(self.ranges(&bounds, usize::MAX)?) {
            for (k, v) in rows {
                let id = id_of_key(&k, prefix).ok_or_else(|| corrupt("conflict index", "bad key"))?;
                out.push((commune.clone(), id, conflicts_of_value(&v)?));
            }
        }
        Ok(out)
    }

    fn conflicted_records(&self, communes: &[String]) -> Result<usize, DbError> {
        Ok(self.count_ranges(&commune_ranges("q/", communes), usize::MAX)?.into_iter().sum::<u64>() as usize)
    }

    fn feed_rows(&self) -> Result<Vec<FeedRow>, DbError> {
        Ok(self
            .range(FEED, &prefix_end(FEED), usize::MAX)?
            .into_iter()
            .map(|(k, v)| match parse_feed_key(&k) {
                None => FeedRow::BadKey(k.len()),
                Some((commune, seq)) => match <[u8; 16]>::try_from(v.as_slice()) {
                    Ok(id) => FeedRow::Entry { commune, seq, id: RecordId(id) },
                    Err(_) => FeedRow::NoId { commune, seq },
                },
            })
            .collect())
    }

    fn metas_after(&self, after: Option<&RecordId>, limit: usize) -> Result<Vec<MetaRow>, DbError> {
        let from = after.map_or_else(|| METAS.to_vec(), |id| [meta_key(id), vec![0]].concat());
        Ok(self.range(&from, &prefix_end(METAS), limit)?.into_iter().map(|(k, v)| meta_row(&k, v)).collect())
    }

    fn for_each_meta(&self, page: usize, f: &mut dyn FnMut(MetaRow) -> Result<(), DbError>) -> Result<(), DbError> {
        // Pages go by the stored keys, so a key that is not a record's (`MetaRow::BadKey`) is
        // passed over like any.
        let (mut from, end) = (METAS.to_vec(), prefix_end(METAS));
        loop {
            let rows = self.range(&from, &end, page)?;
            let full = rows.len() == page;
            if let Some((k, _)) = rows.last() {
                from = [k.as_slice(), &[0]].concat();
            }
            for (k, v) in rows {
                f(meta_row(&k, v))?;
            }
            if !full {
                return Ok(());
            }
        }
    }

    fn document_ids(&self) -> Result<Vec<RecordId>, DbError> {
        let mut ids = Vec::new();
        let (mut from, end) = (DOCS.to_vec(), prefix_end(DOCS));
        // In pages: documents are the store's largest values.
        loop {
            let page = self.range(&from, &end, 1_000)?;
            ids.extend(page.iter().filter_map(|(k, _)| id_of_key(k, DOCS)));
            match page.last() {
                Some((k, _)) if page.len() == 1_000 => from = [k.as_slice(), &[0]].concat(),
                _ => return Ok(ids),
            }
        }
    }

    fn all_conflicts(&self) -> Result<Vec<ConflictRow>, DbError> {
        let bad = || corrupt("conflict index", "bad key");
        let mut out = Vec::new();
        for (k, v) in self.range(CONFLICTS, &prefix_end(CONFLICTS), usize::MAX)? {
            // `q/{commune}/{id16}`: the id is the last 16 bytes, after a '/'.
            let (head, id) = k.split_at(k.len().checked_sub(16).ok_or_else(bad)?);
            let commune = head.strip_prefix(CONFLICTS).and_then(|h| h.strip_suffix(b"/")).ok_or_else(bad)?;
            let id = RecordId(id.try_into().map_err(|_| bad())?);
            out.push((String::from_utf8_lossy(commune).into_owned(), id, conflicts_of_value(&v)?));
        }
        Ok(out)
    }

    fn records_and_report_rows(&self) -> Result<(usize, usize), DbError> {
        Ok((count_rows(self, METAS, METAS.len() + 16)?, count_rows(self, REPORT_ROWS, REPORT_ROWS.len() + 16)?))
    }

    fn not_duplicates(&self, a: &RecordId, b: &RecordId) -> Result<bool, DbError> {
        Ok(self.get(&not_duplicates_key(a, b))?.is_some())
    }
}

/// The keyspace's [`RecordWrites`]: rows staged into one batch.
/// The figures' rows (`figure_rows.rs`) are staged through the same type, into the same batch.
pub(crate) struct KeyspaceWrites<'b> {
    pub(crate) batch: &'b mut Batch,
    /// Whether the store keeps reporting rows ([`crate::store::Kv::keeps_report_rows`]).
    report_rows: bool,
    /// The form record metadata is written in (the store's form level).
    meta_form: crate::rows::MetaForm,
}

impl<'b> KeyspaceWrites<'b> {
    pub(crate) fn new(batch: &'b mut Batch, report_rows: bool, meta_form: crate::rows::MetaForm) -> Self {
        KeyspaceWrites { batch, report_rows, meta_form }
    }
}

impl RecordWrites for KeyspaceWrites<'_> {
    fn put_record(&mut self, row: RecordRow<'_>) {
        if let Some(old) = row.leaves {
            self.batch.delete(feed_key(row.commune, old));
        }
        self.batch.put(feed_key(row.commune, row.seq), row.id.0.to_vec());
        if row.conflicts.is_empty() {
            // A new record has no review-index entry to remove (a removal costs sled a write
            // of its own).
            if row.leaves.is_some() {
                self.batch.delete(conflict_key(row.commune, &row.id));
            }
        } else {
            self.batch.put(conflict_key(row.commune, &row.id), crate::rows::conflicts_bytes(row.conflicts));
        }
        self.batch.put(doc_key(&row.id), seal(row.doc));
        self.put_meta(&row.id, row.meta);
        self.put_report_row(&row.id, row.meta, row.facts);
    }

    fn put_meta(&mut self, id: &RecordId, meta: &RecordMeta) {
        self.batch.put(meta_key(id), seal(&crate::rows::meta_bytes(meta, self.meta_form)));
    }

    fn put_report_row(&mut self, id: &RecordId, meta: &RecordMeta, facts: Option<&Value>) {
        if self.report_rows {
            self.batch.put(report_key(id), to_json(&sync_core::facts::report_row(meta, facts)));
        }
    }

    fn claim_actor(&mut self, actor: &str, owner: &ActorOwner) {
        self.batch.put(actor_key(actor), crate::rows::owner_bytes(owner));
    }

    fn set_feed_high(&mut self, seq: u64) {
        self.batch.put(FEED_SEQ.to_vec(), seq.to_be_bytes().to_vec());
    }

    fn mark_not_duplicates(&mut self, a: &RecordId, b: &RecordId, by: &str, at: i64) {
        self.batch.put(not_duplicates_key(a, b), to_json(&(by, at)));
    }
}

/// The seam without keys: the records' rows in plain maps, as a backend with tables of its own
/// would hold them. The seam's conformance suite runs it beside the keyspace on every store.
#[cfg(test)]
#[derive(Clone, Default)]
pub(crate) struct MemRows {
    high: u64,
    feed: std::collections::BTreeMap<(String, u64), RecordId>,
    metas: std::collections::BTreeMap<RecordId, RecordMeta>,
    docs: std::collections::BTreeMap<RecordId, Vec<u8>>,
    report_rows: std::collections::BTreeSet<RecordId>,
    conflicts: std::collections::BTreeMap<(String, RecordId), Vec<StoredConflict>>,
    owners: HashMap<String, ActorOwner>,
    not_duplicates: std::collections::BTreeSet<(RecordId, RecordId)>,
    /// The figures' rows (`figure_rows.rs`): counters by label, targets, approvals.
    pub(crate) counters: std::collections::BTreeMap<String, indicators::Counters>,
    pub(crate) targets: std::collections::BTreeMap<(String, String), indicators::Milestones>,
    pub(crate) approvals: std::collections::BTreeMap<(String, String), crate::figure_rows::Approval>,
    pub(crate) mended: u64,
    /// The audit chain's rows (`audit_rows.rs`).
    pub(crate) audit: std::collections::BTreeMap<u64, crate::audit_rows::AuditEntry>,
    pub(crate) audit_checkpoints: std::collections::BTreeMap<u64, crate::audit_rows::AuditCheckpoint>,
    /// Accounts and devices (`account_rows.rs`).
    pub(crate) users: std::collections::BTreeMap<String, crate::model::User>,
    pub(crate) devices: std::collections::BTreeMap<(String, String), crate::model::Device>,
    /// Sessions and refresh tokens by hash, ended families (`login_rows.rs`).
    pub(crate) sessions: std::collections::BTreeMap<String, crate::login_rows::StoredSession>,
    pub(crate) refresh: std::collections::BTreeMap<String, crate::login_rows::RefreshRecord>,
    pub(crate) ended_families: std::collections::BTreeSet<String>,
    /// Uploads in progress: heads by (username, device), slices by (username, device, offset).
    pub(crate) upload_heads: std::collections::BTreeMap<(String, String), crate::upload_rows::UploadHead>,
    pub(crate) upload_slices: std::collections::BTreeMap<(String, String, u64), Vec<u8>>,
    /// The store's own rows (`store_rows.rs`): org units by code, the tree's version, the
    /// epoch and when it was renewed, secrets.
    pub(crate) org_units: std::collections::BTreeMap<String, crate::model::OrgUnit>,
    pub(crate) tree_version: u64,
    pub(crate) epoch: (u64, i64),
    pub(crate) form_level: u64,
    pub(crate) secrets: std::collections::BTreeMap<String, Vec<u8>>,
}

#[cfg(test)]
impl MemRows {
    fn feed_of(&self, commune: &str, after: u64, high: u64) -> impl Iterator<Item = (u64, RecordId)> + '_ {
        let (from, to) = ((commune.to_string(), after + 1), (commune.to_string(), high.max(after + 1)));
        self.feed.range(from..=to).filter(move |_| after < high).map(|((_, s), id)| (*s, *id))
    }
}

#[cfg(test)]
impl RecordRows for MemRows {
    fn feed_high(&self) -> Result<u64, DbError> {
        Ok(self.high)
    }
    fn feed_after(&self, communes: &[String], after: u64, high: u64, per_commune: usize) -> Result<Vec<Vec<(u64, RecordId)>>, DbError> {
        Ok(communes.iter().map(|c| self.feed_of(c, after, high).take(per_commune).collect()).collect())
    }
    fn feed_count(&self, communes: &[String], after: u64, high: u64, cap: usize) -> Result<u64, DbError> {
        Ok(communes.iter().map(|c| self.feed_of(c, after, high).take(cap).count() as u64).sum())
    }
    fn record_ids_of(&self, communes: &[String]) -> Result<Vec<RecordId>, DbError> {
        Ok(communes.iter().flat_map(|c| self.feed_of(c, 0, u64::MAX - 1).map(|(_, id)| id)).collect())
    }
    fn metas(&self, ids: &[RecordId]) -> Result<Vec<Row<RecordMeta>>, DbError> {
        Ok(ids.iter().map(|id| self.metas.get(id).cloned().map(Ok)).collect())
    }
    fn documents(&self, ids: &[RecordId]) -> Result<Vec<Row<Vec<u8>>>, DbError> {
        Ok(ids.iter().map(|id| self.docs.get(id).cloned().map(Ok)).collect())
    }
    fn owners(&self, actors: &[String]) -> Result<HashMap<String, ActorOwner>, DbError> {
        Ok(actors.iter().filter_map(|a| Some((a.clone(), self.owners.get(a)?.clone()))).collect())
    }
    fn open_conflicts(&self, commune: &str, id: &RecordId) -> Result<Vec<StoredConflict>, DbError> {
        Ok(self.conflicts.get(&(commune.to_string(), *id)).cloned().unwrap_or_default())
    }
    fn conflicts_of(&self, communes: &[String]) -> Result<Vec<ConflictRow>, DbError> {
        Ok(communes.iter().flat_map(|c| self.conflicts.iter().filter(move |((cc, _), _)| cc == c).map(|((cc, id), v)| (cc.clone(), *id, v.clone()))).collect())
    }
    fn conflicted_records(&self, communes: &[String]) -> Result<usize, DbError> {
        Ok(self.conflicts_of(communes)?.len())
    }
    fn feed_rows(&self) -> Result<Vec<FeedRow>, DbError> {
        Ok(self.feed.iter().map(|((commune, seq), id)| FeedRow::Entry { commune: commune.clone(), seq: *seq, id: *id }).collect())
    }
    fn metas_after(&self, after: Option<&RecordId>, limit: usize) -> Result<Vec<MetaRow>, DbError> {
        let from = after.map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded);
        Ok(self.metas.range((from, std::ops::Bound::Unbounded)).take(limit).map(|(id, m)| MetaRow::Record { id: *id, meta: Ok(m.clone()) }).collect())
    }
    fn for_each_meta(&self, _page: usize, f: &mut dyn FnMut(MetaRow) -> Result<(), DbError>) -> Result<(), DbError> {
        self.metas.iter().try_for_each(|(id, m)| f(MetaRow::Record { id: *id, meta: Ok(m.clone()) }))
    }
    fn document_ids(&self) -> Result<Vec<RecordId>, DbError> {
        Ok(self.docs.keys().copied().collect())
    }
    fn all_conflicts(&self) -> Result<Vec<ConflictRow>, DbError> {
        Ok(self.conflicts.iter().map(|((c, id), v)| (c.clone(), *id, v.clone())).collect())
    }
    fn records_and_report_rows(&self) -> Result<(usize, usize), DbError> {
        Ok((self.metas.len(), self.report_rows.len()))
    }
    fn not_duplicates(&self, a: &RecordId, b: &RecordId) -> Result<bool, DbError> {
        Ok(self.not_duplicates.contains(&(*a, *b)))
    }
}

#[cfg(test)]
impl RecordWrites for MemRows {
    fn put_record(&mut self, row: RecordRow<'_>) {
        if let Some(old) = row.leaves {
            self.feed.remove(&(row.commune.to_string(), old));
        }
        self.feed.insert((row.commune.to_string(), row.seq), row.id);
        let at = (row.commune.to_string(), row.id);
        if row.conflicts.is_empty() {
            self.conflicts.remove(&at);
        } else {
            self.conflicts.insert(at, row.conflicts.to_vec());
        }
        self.docs.insert(row.id, row.doc.to_vec());
        self.put_meta(&row.id, row.meta);
        self.put_report_row(&row.id, row.meta, row.facts);
    }
    fn put_meta(&mut self, id: &RecordId, meta: &RecordMeta) {
        self.metas.insert(*id, meta.clone());
    }
    fn put_report_row(&mut self, id: &RecordId, _meta: &RecordMeta, _facts: Option<&Value>) {
        self.report_rows.insert(*id);
    }
    fn claim_actor(&mut self, actor: &str, owner: &ActorOwner) {
        self.owners.insert(actor.to_string(), owner.clone());
    }
    fn set_feed_high(&mut self, seq: u64) {
        self.high = seq;
    }
    fn mark_not_duplicates(&mut self, a: &RecordId, b: &RecordId, _by: &str, _at: i64) {
        self.not_duplicates.insert((*a, *b));
    }
}

/// The seam's conformance suite: what every implementation of [`RecordRows`] and
/// [`RecordWrites`] does, run on [`MemRows`] and on the keyspace over every store
/// (`conformance.rs`: memory, sled, PostgreSQL, two PostgreSQL handles).
#[cfg(test)]
pub(crate) mod conform {
    use super::*;
    use crate::store::Kv;
    use sync_core::conflicts::StoredConflict;
    use sync_protocol::RecordKind;

    /// Every seam's writes at once, as one commit stages them.
    pub(crate) trait SeamWrites: RecordWrites + crate::figure_rows::FigureWrites + crate::audit_rows::AuditWrites + crate::account_rows::AccountWrites + crate::login_rows::LoginWrites + crate::upload_rows::UploadWrites + crate::store_rows::StoreWrites {}
    impl<W: RecordWrites + crate::figure_rows::FigureWrites + crate::audit_rows::AuditWrites + crate::account_rows::AccountWrites + crate::login_rows::LoginWrites + crate::upload_rows::UploadWrites + crate::store_rows::StoreWrites> SeamWrites for W {}

    /// A store under the suite: commits rows, and reads them back in a consistent cut.
    pub(crate) trait RowStore {
        type Cut<'c>: RecordRows + crate::figure_rows::FigureRows + crate::audit_rows::AuditRows + crate::account_rows::AccountRows + crate::login_rows::LoginRows + crate::upload_rows::UploadRows + crate::store_rows::StoreRows + ?Sized
        where
            Self: 'c;
        fn commit(&mut self, f: &mut dyn FnMut(&mut dyn SeamWrites));
        fn cut(&self) -> Box<Self::Cut<'_>>;
        /// Whether it keeps the records' reporting rows.
        fn keeps_report_rows(&self) -> bool;
    }

    impl RowStore for MemRows {
        type Cut<'c> = MemRows;
        fn commit(&mut self, f: &mut dyn FnMut(&mut dyn SeamWrites)) {
            f(self)
        }
        fn cut(&self) -> Box<MemRows> {
            Box::new(self.clone())
        }
        fn keeps_report_rows(&self) -> bool {
            true
        }
    }

    /// The keyspace, written through one handle and read through another (the same one, or a
    /// second replica's on the same database).
    pub(crate) struct Keyspace<'a> {
        pub write: &'a dyn Kv,
        pub read: &'a dyn Kv,
        /// The form metadata is written in (the store's form level).
        pub meta_form: crate::rows::MetaForm,
    }

    impl RowStore for Keyspace<'_> {
        type Cut<'c>
            = dyn KvRead + 'c
        where
            Self: 'c;
        fn commit(&mut self, f: &mut dyn FnMut(&mut dyn SeamWrites)) {
            let tx = self.write.begin_write().unwrap();
            let mut batch = Batch::default();
            f(&mut KeyspaceWrites::new(&mut batch, self.write.keeps_report_rows(), self.meta_form));
            tx.commit(batch).unwrap();
        }
        fn cut(&self) -> Box<dyn KvRead + '_> {
            self.read.begin_read().unwrap()
        }
        fn keeps_report_rows(&self) -> bool {
            self.write.keeps_report_rows()
        }
    }

    fn meta(commune: &str, seq: u64, day: u32) -> RecordMeta {
        RecordMeta {
            kind: RecordKind::NewsItem,
            commune: commune.into(),
            seq,
            deleted: false,
            date: Some(format!("2025-01-{day:02}")),
            history: [(seq, vec![[day as u8; 32]])].into(),
            ends: Default::default(),
            updated_at: 1_736_000_000 + seq as i64,
            contribution: None,
            dup: None,
            conflicts: 0,
        }
    }

    fn conflict(path: &str) -> Vec<StoredConflict> {
        vec![StoredConflict { path: path.into(), values: Vec::new() }]
    }

    fn ids_of(rows: &[Vec<(u64, RecordId)>]) -> Vec<Vec<u64>> {
        rows.iter().map(|c| c.iter().map(|e| e.0).collect()).collect()
    }

    /// Writes records into two communes, moves and rewrites some, and reads every row back
    /// through each of the seam's reads.
    pub(crate) fn suite<S: RowStore>(store: &mut S) {
        let (c1, c2) = ("04701".to_string(), "04702".to_string());
        let both = [c1.clone(), c2.clone()];
        // Ids in a known order (metadata walks go in id order).
        let [a, b, c, missing] = [1u8, 2, 3, 9].map(|n| RecordId([n; 16]));
        {
            let cut = store.cut();
            assert_eq!(cut.feed_high().unwrap(), 0, "an empty store's feed");
            assert_eq!(ids_of(&cut.feed_after(&both, 0, 0, 10).unwrap()).concat(), Vec::<u64>::new());
            assert!(cut.meta(&a).unwrap().is_none() && cut.document(&a).unwrap().is_none());
            assert!(cut.record_ids_of(&both).unwrap().is_empty() && cut.document_ids().unwrap().is_empty());
        }
        let owner = ActorOwner { username: "officer1".into(), device_id: "phone1".into() };
        let (ma, mb, mc) = (meta(&c1, 1, 1), meta(&c2, 2, 2), meta(&c1, 3, 3));
        let facts = serde_json::json!({"title_present": true});
        store.commit(&mut |w| {
            w.put_record(RecordRow { id: a, commune: &c1, seq: 1, leaves: None, doc: b"doc a", meta: &ma, conflicts: &[], facts: Some(&facts) });
            w.put_record(RecordRow { id: b, commune: &c2, seq: 2, leaves: None, doc: b"doc b", meta: &mb, conflicts: &[], facts: None });
            w.put_record(RecordRow { id: c, commune: &c1, seq: 3, leaves: None, doc: b"doc c", meta: &mc, conflicts: &conflict("title"), facts: None });
            w.claim_actor("aa01", &owner);
            w.set_feed_high(3);
        });
        {
            let cut = store.cut();
            assert_eq!(cut.feed_high().unwrap(), 3);
            let feed = cut.feed_after(&both, 0, 3, 10).unwrap();
            assert_eq!(feed, vec![vec![(1, a), (3, c)], vec![(2, b)]], "each commune's feed in sequence order");
            assert_eq!(cut.feed_after(&both, 0, 3, 1).unwrap(), vec![vec![(1, a)], vec![(2, b)]], "at most per_commune each");
            assert_eq!(cut.feed_after(&both, 1, 3, 10).unwrap(), vec![vec![(3, c)], vec![(2, b)]], "after the cursor");
            assert_eq!(cut.feed_after(&both, 0, 2, 10).unwrap(), vec![vec![(1, a)], vec![(2, b)]], "up to high");
            assert_eq!(ids_of(&cut.feed_after(&both, 3, 3, 10).unwrap()).concat(), Vec::<u64>::new(), "nothing after the end");
            assert_eq!(cut.feed_count(&both, 0, 3, 10).unwrap(), 3);
            assert_eq!(cut.feed_count(&both, 0, 3, 1).unwrap(), 2, "counted up to the cap per commune");
            assert_eq!(cut.feed_count(&both, 3, 3, 10).unwrap(), 0);
            assert_eq!(cut.record_ids_of(std::slice::from_ref(&c1)).unwrap(), vec![a, c]);
            assert_eq!(cut.record_ids_of(&both).unwrap(), vec![a, c, b]);
            assert_eq!(cut.metas_whole(&[c, missing, a]).unwrap(), vec![Some(mc.clone()), None, Some(ma.clone())], "in the ids' order");
            let docs: Vec<Option<Vec<u8>>> = cut.documents(&[b, missing]).unwrap().into_iter().map(|d| d.transpose().unwrap()).collect();
            assert_eq!(docs, vec![Some(b"doc b".to_vec()), None]);
            let stored = cut.stored(&[missing, c]).unwrap();
            assert!(stored[0].is_none());
            assert_eq!(stored[1].as_ref().map(|s| (&s.meta, s.doc.as_slice())), Some((&mc, &b"doc c"[..])));
            assert_eq!(cut.owners(&["aa01".into(), "bb02".into()]).unwrap(), HashMap::from([("aa01".to_string(), owner.clone())]));
            assert_eq!(cut.open_conflicts(&c1, &c).unwrap(), conflict("title"));
            assert!(cut.open_conflicts(&c1, &a).unwrap().is_empty());
            assert!(cut.open_conflicts(&c2, &c).unwrap().is_empty(), "a record's conflicts are under its own commune");
            assert_eq!(cut.conflicts_of(&both).unwrap(), vec![(c1.clone(), c, conflict("title"))]);
            assert_eq!(cut.conflicted_records(&both).unwrap(), 1);
            assert_eq!(cut.conflicted_records(std::slice::from_ref(&c2)).unwrap(), 0);
            assert_eq!(cut.all_conflicts().unwrap(), vec![(c1.clone(), c, conflict("title"))]);
            let feed_rows: Vec<(String, u64, RecordId)> = cut
                .feed_rows()
                .unwrap()
                .into_iter()
                .map(|r| match r {
                    FeedRow::Entry { commune, seq, id } => (commune, seq, id),
                    _ => panic!("a bad feed row"),
                })
                .collect();
            assert_eq!(feed_rows, vec![(c1.clone(), 1, a), (c1.clone(), 3, c), (c2.clone(), 2, b)]);
            let walk = |after: Option<&RecordId>, limit| -> Vec<RecordId> {
                cut.metas_after(after, limit)
                    .unwrap()
                    .into_iter()
                    .map(|r| match r {
                        MetaRow::Record { id, meta } => {
                            meta.unwrap();
                            id
                        }
                        MetaRow::BadKey(_) => panic!("a bad key"),
                    })
                    .collect()
            };
            assert_eq!(walk(None, 2), vec![a, b]);
            assert_eq!(walk(Some(&b), 2), vec![c]);
            for page in [1, 2, 10] {
                let mut seen = Vec::new();
                cut.for_each_meta(page, &mut |r| {
                    let MetaRow::Record { id, meta } = r else { panic!("a bad key") };
                    seen.push((id, meta?.seq));
                    Ok(())
                })
                .unwrap();
                assert_eq!(seen, vec![(a, 1), (b, 2), (c, 3)], "pages of {page}");
            }
            assert_eq!(cut.document_ids().unwrap(), vec![a, b, c]);
            let kept = if store.keeps_report_rows() { 3 } else { 0 };
            assert_eq!(cut.records_and_report_rows().unwrap(), (3, kept), "records, and the reporting rows the store keeps");
        }
        // A: edited, to the feed's end; C: its conflict resolved; B: its metadata alone.
        let (ma2, mc2) = (meta(&c1, 4, 4), meta(&c1, 5, 5));
        let mb2 = RecordMeta { deleted: true, ..mb.clone() };
        store.commit(&mut |w| {
            w.put_record(RecordRow { id: a, commune: &c1, seq: 4, leaves: Some(1), doc: b"doc a, edited", meta: &ma2, conflicts: &[], facts: None });
            w.put_record(RecordRow { id: c, commune: &c1, seq: 5, leaves: Some(3), doc: b"doc c", meta: &mc2, conflicts: &[], facts: None });
            w.put_meta(&b, &mb2);
            w.set_feed_high(5);
            w.mark_not_duplicates(&a, &c, "district1", 1_736_000_000);
        });
        let cut = store.cut();
        assert_eq!(cut.feed_high().unwrap(), 5);
        assert_eq!(cut.feed_after(&both, 0, 5, 10).unwrap(), vec![vec![(4, a), (5, c)], vec![(2, b)]], "a record is in the feed once, at its latest change");
        assert_eq!(cut.feed_after(&both, 2, 5, 10).unwrap(), vec![vec![(4, a), (5, c)], vec![]]);
        assert_eq!(cut.document(&a).unwrap().as_deref(), Some(&b"doc a, edited"[..]));
        assert_eq!(cut.metas_whole(&[a, b, c]).unwrap(), vec![Some(ma2), Some(mb2), Some(mc2)]);
        assert!(cut.open_conflicts(&c1, &c).unwrap().is_empty() && cut.all_conflicts().unwrap().is_empty(), "a resolved conflict leaves the index");
        assert_eq!(cut.conflicted_records(&both).unwrap(), 0);
        assert_eq!(cut.record_ids_of(&both).unwrap(), vec![a, c, b]);
        assert_eq!(cut.feed_rows().unwrap().len(), 3);
        assert!(cut.not_duplicates(&a, &c).unwrap(), "a pair marked");
        assert!(!cut.not_duplicates(&a, &b).unwrap() && !cut.not_duplicates(&c, &a).unwrap(), "only that pair, in that order");
    }

    #[test]
    fn rows_in_plain_maps_conform() {
        suite(&mut MemRows::default());
        crate::figure_rows::conform::suite(&mut MemRows::default());
        crate::audit_rows::conform::suite(&mut MemRows::default());
        crate::account_rows::conform::suite(&mut MemRows::default());
        crate::login_rows::conform::suite(&mut MemRows::default());
        crate::upload_rows::conform::suite(&mut MemRows::default());
        crate::store_rows::conform::suite(&mut MemRows::default());
    }

    /// The keyspace's walk over every record's metadata in pages sees each record once and
    /// every key under `m/` that is not a record's, wherever the pages end (a page ending on
    /// such a key must not start the next one over again).
    #[test]
    fn a_walk_over_the_metadata_in_pages_sees_each_row_once() {
        use std::collections::BTreeSet;
        let kv = crate::store::MemKv::default();
        let ids: BTreeSet<RecordId> = (0..5).map(|_| RecordId::random()).collect();
        let mut batch = Batch::default();
        let mut rows = KeyspaceWrites::new(&mut batch, false, crate::rows::MetaForm::Json);
        for (n, id) in ids.iter().enumerate() {
            rows.put_meta(id, &meta("04701", n as u64 + 1, 1));
        }
        for bad in [&b"m/"[..], b"m/short", &[b"m/".as_slice(), &[0xFF; 17]].concat()] {
            batch.put(bad.to_vec(), b"{}".to_vec());
        }
        kv.write(batch).unwrap();
        for page in [1, 2, 3, 7, 100] {
            let (mut seen, mut bad) = (Vec::new(), 0);
            kv.for_each_meta(page, &mut |row| {
                match row {
                    MetaRow::BadKey(_) => bad += 1,
                    MetaRow::Record { id, meta } => {
                        assert!(meta.is_ok());
                        seen.push(id);
                    }
                }
                Ok(())
            })
            .unwrap();
            assert_eq!((seen.len(), bad), (5, 3), "pages of {page}");
            assert_eq!(seen.iter().copied().collect::<BTreeSet<_>>(), ids, "pages of {page}");
            assert!(seen.windows(2).all(|w| w[0] < w[1]), "in id order");
        }
        // The walk stops at the first error its caller returns.
        let mut calls = 0;
        let stopped = kv.for_each_meta(2, &mut |_| {
            calls += 1;
            Err(DbError::Invalid("stop".into()))
        });
        assert!(stopped.is_err() && calls == 1);
    }

}
