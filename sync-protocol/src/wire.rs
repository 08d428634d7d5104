//! The versioned wire messages of `POST /api/v1/sync`.
//!
//! A sync is a series of small exchanges (pages). In each, the phone pushes the Automerge changes
//! the server does not have yet (`save_after(heads the server is known to have)`), names its feed
//! cursor and says how large an answer it wants ([`SyncRequest::page_bytes`]); the server answers
//! with a verdict per pushed record and the changes of records in the phone's scope that moved
//! after that cursor, cut to fit the page. The phone stores each page and its cursor before it
//! asks for the next, so on a link that drops every half-minute a cut costs at most the page in
//! flight. A record too large for any page comes in slices ([`PullPart`]) that the phone keeps
//! and resumes ([`PartResume`]). A no-op sync is a few dozen bytes, whatever the phone holds.
//!
//! Frame: the 4 bytes `GSYN`, one version byte, then
//! - version 1: the message in postcard encoding (phones built before paging; still accepted);
//! - version 2: one flags byte ([`FLAG_ZSTD`]: the rest is zstd compressed), then the message
//!   in postcard encoding. The phone says in [`SyncRequest::accept`] whether it reads compressed
//!   answers; a decompressed message is bounded by [`MAX_MESSAGE_BYTES`] like a plain one, so
//!   nobody can send a bomb.
//! - version 3 ([`PROTOCOL_VERSION`]): as version 2; the answer also names the store's
//!   [`SyncResponse::epoch`] (which history the server's feed belongs to), so that a phone can
//!   tell when the server forgot what it had acknowledged (a restored backup, a failover).
//!
//! In versions 2 and 3, the flags byte may also say [`FRAME_RECORDS_DICT`]: the sender has the
//! records dictionary ([`FLAG_RECORDS_DICT`]), and made the zstd frame with it if the message
//! is compressed. A server says it in every answer to a phone that accepts the dictionary; a
//! phone says it (and uses it) in its requests once an answer said it. And it may say
//! [`FRAME_SERVER_TIME`]: two bytes after the flags byte give the milliseconds the server
//! spent on the exchange ([`FLAG_SERVER_TIME`]). For a phone on a slow link that keeps page
//! contexts ([`FLAG_PAGE_CONTEXT`]), it may say [`FRAME_CONTEXT`], [`FRAME_KEPT`] and
//! [`FRAME_PUSH_CONTEXT`], each followed by a context's 8-byte id, in that order after the
//! server's time ([`PageContext`]); and, for one that restores checksums ([`FLAG_CHECKSUMS`]),
//! [`FRAME_CHECKSUMS`]: the message's changes come with their Automerge checksums left out.
//! A side sets a bit only for a peer that said it reads it, as a side built before it refuses
//! the frame.
//!
//! **Do not rename, reorder or remove fields or enum variants of the types in this module**:
//! postcard is positional, so that would silently break deployed phones. Add a new protocol
//! version instead.

use std::io::Read;

use serde::{Deserialize, Serialize};

use crate::ids::RecordId;

/// The version this side writes. It reads [`OLDEST_VERSION`]..=`PROTOCOL_VERSION`.
pub const PROTOCOL_VERSION: u8 = 3;
/// The oldest version still read (and answered in its own version).
pub const OLDEST_VERSION: u8 = 1;
const MAGIC: &[u8; 4] = b"GSYN";

/// Flags byte (version 2): the message after it is zstd-compressed.
pub const FLAG_ZSTD: u8 = 1;
/// Flags byte of [`SyncRequest::accept`]: the phone measured its link as slow (2G): the answer
/// is worth more server time per byte saved ([`zstd_level`]; records sent whole may come as
/// their changes rather than as their document, which a phone loads alike). A server that does
/// not know the flag ignores it, and a busy one may.
pub const FLAG_SLOW_LINK: u8 = 2;
/// Flags byte of [`SyncRequest::accept`]: the phone takes a pulled record's server heads from
/// its document when the record comes whole and without them ([`PullDoc::heads`] empty), so the
/// server leaves those 32 bytes a record (which no compressor squeezes) out of the page.
pub const FLAG_HEADS_FROM_DOC: u8 = 4;
/// Flags byte of [`SyncRequest::accept`]: the phone reads answers compressed with the records
/// dictionary ([`RECORDS_DICT`]).
///
/// Each page is compressed on its own, and zstd starts every one cold: a page of a few records
/// (a daily sync) pays for Automerge's chunk layout, the schema's field names and enumerations
/// again each time. The dictionary holds them. Measured by `bench-2g` on its 1,200 case
/// records as changes with their ids (2026-12-04): in pages of 5 at level 9, 385,437 B without
/// and 265,321 B with it (-31%); in pages of 200 at level 15, 134,607 B and 133,066 B (-1%).
pub const FLAG_RECORDS_DICT: u8 = 8;
/// Flags byte of a frame: the sender has [`RECORDS_DICT`], and a compressed message
/// ([`FLAG_ZSTD`]) was made with it. Set on a plain message too, so that even the smallest
/// answer tells a phone that the server reads requests made with it. Sent only to a phone that
/// accepts it ([`FLAG_RECORDS_DICT`]), and by a phone only to a server that said it: a side
/// built before it refuses the bit.
pub const FRAME_RECORDS_DICT: u8 = 2;
/// The records dictionary: 32 KiB that zstd trained on synthetic records of the three kinds,
/// with **no free text** (`scripts/train-dict.sh`, `tests/src/bin/dict_samples.rs`): the
/// layout of Automerge's chunks, field names, enumerations, dates, names of public service
/// providers. It is part of the protocol: never retrain it in place. A new dictionary takes a
/// new accept flag and a new id, and servers keep the old one for the phones that use it.
pub const RECORDS_DICT: &[u8] = include_bytes!("records.zdict");
/// The id zstd writes in a frame made with [`RECORDS_DICT`]: a frame made with another
/// dictionary is refused, never misread.
pub const RECORDS_DICT_ID: u32 = 0x6773_0001;

/// Flags byte of [`SyncRequest::accept`]: the phone reads the server's time in the answer's
/// frame ([`FRAME_SERVER_TIME`]).
///
/// A phone measures its link by the bytes of an exchange over the time it took. That time
/// includes the server's, so a phone of a busy server took its fast link for 2G: it then asked
/// for small pages (more requests for the busy server) and for the slow link's compression. Told
/// the server's time, it takes it out.
pub const FLAG_SERVER_TIME: u8 = 16;
/// Flags byte of a frame: after the flags byte come two bytes (little-endian), the
/// milliseconds the server spent on this exchange, from the request's body read to the
/// answer's framing (at most 65,535). Sent only to a phone that accepts it
/// ([`FLAG_SERVER_TIME`]); never in a request.
pub const FRAME_SERVER_TIME: u8 = 4;

/// Flags byte of [`SyncRequest::accept`]: the phone keeps the tail of an answer the server
/// kept ([`FRAME_KEPT`]) and reads an answer compressed against it ([`FRAME_CONTEXT`]).
///
/// zstd compresses each page on its own, so every page of a first sync starts cold: it pays
/// again for what the pages before it already carried (the commune's actors, its officers'
/// words, the notes' vocabulary). Compressed against the page before it, a page costs what it
/// adds. `bench-2g` (seed 42, 2026-12-04), with [`FLAG_CHECKSUMS`] and level 19 besides: a
/// first sync of 1,200 varied case records went from 144,800 B to 121,600 B, a push of 150
/// from 21,094 B to 17,886 B (the README's "Page contexts and checksums left out").
pub const FLAG_PAGE_CONTEXT: u8 = 32;
/// Flags byte of an answer: the server keeps the tail of this answer's message
/// ([`PageContext`]) under an id, the 8 bytes (little-endian) that follow the flags byte (and
/// the server's time, if told). Given only to a phone that said [`FLAG_PAGE_CONTEXT`] on a
/// slow link, in an answer that has more to come.
pub const FRAME_KEPT: u8 = 8;
/// Flags byte of a frame: a [`PageContext`]'s id follows (8 bytes, little-endian, after the
/// server's time and before a kept id). In a request: the context the phone holds, which the
/// server may compress the answer against. In an answer: the context the compressed message
/// was made against (always one the request named, and only with the records dictionary). A
/// phone names a context only to a server that kept one for it, so a server built before
/// contexts never sees the bit.
pub const FRAME_CONTEXT: u8 = 16;
/// Flags byte of [`SyncRequest::accept`]: the phone restores the checksums of Automerge chunks
/// that an answer's pulled changes leave out ([`crate::checksums`]), and leaves them out of its
/// pushes once an answer says the server does the same ([`FRAME_CHECKSUMS`]). Phones say it on
/// a slow link only: each side then computes a SHA-256 of every record it sends or receives. 4 bytes a record
/// that no compressor squeezes: on `bench-2g`'s 1,200 varied case records as changes with their
/// ids, in pages of 300 against the page before at level 15 (2026-12-04), 123,683 B with them,
/// 117,016 B without (-5.4%).
pub const FLAG_CHECKSUMS: u8 = 64;
/// Flags byte of a frame: the message's changes (a request's pushes, an answer's pulls) come
/// with their Automerge checksums left out, to be restored on reading. In an answer, it also
/// tells the phone that the server reads requests so made: set in every answer to a phone that
/// said [`FLAG_CHECKSUMS`], and by a phone only once an answer said it (a server built before it
/// refuses the bit).
pub const FRAME_CHECKSUMS: u8 = 32;
/// Flags byte of a frame, for a phone that said [`FLAG_PAGE_CONTEXT`] on a slow link: a page
/// context's id follows (8 bytes, little-endian, after any other id). In an answer: the server
/// kept the tail of the request it answers, its pushes, under this id. In a request: the
/// message was compressed against that context (the tail of an earlier request of this phone),
/// so that a push of many pages pays for what the pages before it carried only once. A server
/// that no longer holds it refuses the request (400 `unknown_page_context`), and the phone
/// sends it again without.
pub const FRAME_PUSH_CONTEXT: u8 = 64;
/// How much of the messages so far a [`PageContext`] keeps: their last bytes, where the most
/// recent records are. `bench-2g`'s records (made in one second), in pages of 50 at level 15:
/// each page cold 145,498 B; against the last 32 KiB 123,284 B, 128 KiB 114,178 B, 1 MiB
/// 112,804 B. With the field clock, at level 19: 128 KiB 114,520 B, 512 KiB 111,949 B; in
/// `bench-2g`, 256 KiB against 512 KiB cost 0.3% (2026-12-04).
pub const PAGE_CONTEXT_BYTES: usize = 256 * 1024;

/// The tail of an answer's message that a server kept and its phone holds
/// ([`FLAG_PAGE_CONTEXT`]): the next answer may be compressed against it. The zstd dictionary
/// it makes is the records dictionary ([`RECORDS_DICT`]), its entropy tables and content,
/// with these bytes after that content, under a dictionary id of its own, so that zstd refuses
/// a frame made against another context rather than misread it.
#[derive(Clone, PartialEq, Eq)]
pub struct PageContext {
    pub id: u64,
    tail: Vec<u8>,
}

impl std::fmt::Debug for PageContext {
    // Never the bytes: they are records.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PageContext({:#x}, {} B)", self.id, self.tail.len())
    }
}

impl PageContext {
    /// The context of a `message` (its postcard bytes), kept under `id`.
    pub fn of(id: u64, message: &[u8]) -> PageContext {
        PageContext::after(None, id, message)
    }

    /// The context of a `message` that was compressed against `before`: the last
    /// [`PAGE_CONTEXT_BYTES`] of both, so that small pages add up to a context as large as a
    /// large one. (Both sides hold `before`, so both make the same.)
    pub fn after(before: Option<&PageContext>, id: u64, message: &[u8]) -> PageContext {
        let from_before = PAGE_CONTEXT_BYTES.saturating_sub(message.len());
        let before = before.map_or(&[][..], |b| &b.tail[b.tail.len().saturating_sub(from_before)..]);
        let message = &message[message.len().saturating_sub(PAGE_CONTEXT_BYTES)..];
        PageContext { id, tail: [before, message].concat() }
    }

    /// The same bytes, kept under `id`.
    pub fn kept_as(self, id: u64) -> PageContext {
        PageContext { id, ..self }
    }

    /// Bytes it holds.
    pub fn len(&self) -> usize {
        self.tail.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tail.is_empty()
    }

    /// The zstd dictionary: [`RECORDS_DICT`] with its id replaced by this context's
    /// ([`PageContext::dict_id`]), then the tail.
    fn dictionary(&self) -> Vec<u8> {
        let mut dict = Vec::with_capacity(RECORDS_DICT.len() + self.tail.len());
        dict.extend_from_slice(&RECORDS_DICT[..4]);
        dict.extend_from_slice(&self.dict_id().to_le_bytes());
        dict.extend_from_slice(&RECORDS_DICT[8..]);
        dict.extend_from_slice(&self.tail);
        dict
    }

    /// The dictionary id zstd writes in a frame made against this context: from the context's
    /// id, within zstd's unreserved range (32,768 to 2³¹ - 1) and never the records
    /// dictionary's own.
    fn dict_id(&self) -> u32 {
        let id = 32_768 + (self.id % (0x7fff_ffff - 32_768)) as u32;
        if id == RECORDS_DICT_ID { id + 1 } else { id }
    }
}

/// zstd level: 3 is zstd's default, the measured sweet spot for pages of case records on a
/// link that is not the bottleneck.
const ZSTD_LEVEL: i32 = 3;
/// zstd level on a slow link, for a message of [`SLOW_LINK_LARGE`] bytes or more.
/// `bench-2g`'s first sync of 1,200 varied case records, sent as their changes in pages of up
/// to about 340 records (2026-12-04), with every page at one level: 9 165,375 B, 12 154,709 B,
/// 15 148,092 B, 19 140,982 B. At 8 KB/s, level 15's 17 KB fewer than 9 are 2 s of a
/// phone's link. Against the page before ([`FLAG_PAGE_CONTEXT`]), in pages of 300 with the
/// checksums left out: 15 117,053 B, 17 114,520 B, 19 114,520 B, for 258, 331 and 350 ms of
/// CPU (offline, 2026-12-04); with 512 KiB of context, 17 113,460 B, **19 111,949 B** (+16%
/// CPU). `bench-2g`'s first sync: 17 122,510 B, 19 121,370 B.
const SLOW_LINK_ZSTD_LEVEL: i32 = 19;
/// zstd level on a slow link for a smaller message.
const SLOW_LINK_SMALL_ZSTD_LEVEL: i32 = 9;
/// Below this many bytes, a slow link's message is compressed at [`SLOW_LINK_SMALL_ZSTD_LEVEL`].
/// Measured on varied case records as changes (2026-12-04), bytes out of bytes in and CPU a
/// record at levels 9 / 15: pages of 24 KB 0.158 / 0.149, 17 / 101 µs; 49 KB 0.133 / 0.124,
/// 12 / 92 µs; 99 KB 0.119 / 0.108, 12 / 110 µs; 207 KB 0.111 / 0.098, 14 / 124 µs; 414 KB
/// 0.111 / 0.096, 11 / 45 µs (level 12 saves nothing over 9 below 50 KB). A phone's daily sync
/// of a few records gains a few hundred bytes from 15 for several times the CPU; a server
/// under load, which phones may take for a slow link, would pay it on every small page.
pub const SLOW_LINK_LARGE: usize = 64 * 1024;

/// The zstd level of an answer of `len` bytes to a phone whose request carries `accept`. (A
/// phone's own request on a slow link goes at [`SLOW_LINK_ZSTD_LEVEL`] whatever its size: the
/// phone spends its own CPU on its own bytes.)
pub fn zstd_level(accept: u8, len: usize) -> i32 {
    match (accept & FLAG_SLOW_LINK != 0, len >= SLOW_LINK_LARGE) {
        (true, true) => SLOW_LINK_ZSTD_LEVEL,
        (true, false) => SLOW_LINK_SMALL_ZSTD_LEVEL,
        (false, _) => ZSTD_LEVEL,
    }
}

/// Largest sync body either side accepts (a page), before and after decompression.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;
/// The answer size a phone that names none gets (version 1 phones on good links).
pub const DEFAULT_PAGE_BYTES: u32 = 3 * 1024 * 1024;
/// The smallest page a server cuts to: below this, per-request overhead dominates.
pub const MIN_PAGE_BYTES: u32 = 4 * 1024;

/// The MIME type of sync bodies.
pub const CONTENT_TYPE: &str = "application/x-gesync";

/// An Automerge change hash (SHA-256).
pub type Hash = [u8; 32];

/// Phone → server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SyncRequest {
    /// The cursor the server returned last time (empty on first sync). Opaque to the phone.
    pub cursor: Vec<u8>,
    /// Records with changes the server may not have.
    pub push: Vec<PushDoc>,
    /// Records the phone cannot apply incrementally (missing dependencies): send them whole.
    pub want_full: Vec<RecordId>,
    // ---- version 2 ----
    /// How many bytes of pulled changes the phone wants in this answer (before compression);
    /// 0 means [`DEFAULT_PAGE_BYTES`]. The server keeps to it, except that a page always moves
    /// the phone forward: a record larger than the page comes as a slice of this size.
    pub page_bytes: u32,
    /// Compressions the phone reads in the answer ([`FLAG_ZSTD`]).
    pub accept: u8,
    /// Ask the server to count the records still to pull after this page
    /// ([`SyncResponse::remaining`]), for a progress display.
    pub count: bool,
    /// The slice of a large record the phone already holds: continue it.
    pub resume: Option<PartResume>,
    /// A slice of one record too large for the upload page (see [`PushPart`]).
    pub push_part: Option<PushPart>,
    // ---- version 3 ----
    /// The phone's own Automerge actor (the one its edits are made with); empty if it does not
    /// say. An actor the server has not seen becomes this device's only if it is this one;
    /// other devices' changes are taken only while the server accepts relays (after its
    /// history was rewound, see [`SyncResponse::epoch`]).
    pub actor: Vec<u8>,
}

/// One record's outgoing changes. With no changes it is an offer: the server answers
/// [`PushOutcome::Accepted`] when it holds every one of `heads`, [`PushOutcome::NeedFull`] when
/// it lacks any (the phone then pushes the whole document).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushDoc {
    pub id: RecordId,
    /// `save_after(heads the server is known to have)`: Automerge changes in storage format.
    pub changes: Vec<u8>,
    /// The phone's heads for this record once these changes are applied; the server
    /// acknowledges the push only if it then holds every one of them. A phone on a slow link
    /// sends none for a record it sends whole (the server holds all there is of it then, and a
    /// server that stored nothing of it before knows its heads from what it stored).
    pub heads: Vec<Hash>,
}

/// Server → phone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SyncResponse {
    /// One verdict per pushed record, in push order.
    pub results: Vec<PushResult>,
    /// Changes of records in scope that moved after the request's cursor.
    pub pull: Vec<PullDoc>,
    /// The cursor to send next time.
    pub cursor: Vec<u8>,
    /// True when the pull was cut to fit a page: sync again at once.
    pub more: bool,
    // ---- version 2 ----
    /// A slice of a record too large for the page (then `pull` is empty and `more` is true
    /// until the last slice, which moves the cursor past the record).
    pub part: Option<PullPart>,
    /// Records still to pull after this page (when the request asked to `count`).
    pub remaining: Option<u64>,
    /// After a [`PushPart`]: how many bytes of that upload the server now holds (durably).
    /// Once it holds them all, the record is pushed and its verdict is in `results`.
    pub uploaded: Option<Uploaded>,
    /// The communes whose records the phone may hold, sent when its cursor was made for
    /// another scope (or it has none): a phone whose user moved drops the records of communes
    /// it may no longer see.
    pub scope: Option<Vec<String>>,
    // ---- version 3 ----
    /// The store's epoch: a random id the server's store gets when it is made, and a new one
    /// whenever its history is rewound (a backup restored, a standby that was behind promoted).
    /// A phone that held another epoch cannot trust what the server acknowledged before: it
    /// offers every record it holds again ([`PushDoc`] with no changes: "do you have these
    /// heads?") and pulls its scope from the start. 0 in answers to older phones.
    pub epoch: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushResult {
    pub id: RecordId,
    pub outcome: PushOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PushOutcome {
    /// Stored durably (sled flushed) before this answer was sent.
    Accepted,
    /// Refused, with a reason meant for the officer (e.g. "field `victim.sex`: ...").
    Rejected { reason: String },
    /// The pushed changes depend on history the server does not have (the phone's idea of the
    /// server's heads was wrong): push the whole document (`save()`) next time. Nothing stored.
    NeedFull,
}

/// One record's incoming changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullDoc {
    pub id: RecordId,
    /// Automerge changes the phone is not known to have.
    pub changes: Vec<u8>,
    /// The server's heads for the record: the phone records that the server has them. Empty
    /// for a record sent whole to a phone that said [`FLAG_HEADS_FROM_DOC`]: they are the heads
    /// of `changes` alone.
    pub heads: Vec<Hash>,
}

/// A slice `[offset, offset + bytes.len())` of one record's whole stored document, `total`
/// bytes long, as the server holds it at feed position `seq`. The slices of one `(id, seq)` are
/// the same bytes whichever request asks for them; when the record changes meanwhile, the server
/// starts again at offset 0 with the new `seq`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullPart {
    pub id: RecordId,
    pub seq: u64,
    pub offset: u64,
    pub total: u64,
    pub bytes: Vec<u8>,
    /// The record's heads once whole.
    pub heads: Vec<Hash>,
}

/// A slice `[offset, offset + bytes.len())` of one record's outgoing changes (what a [`PushDoc`]
/// would carry), `total` bytes in all, for a record too large to go up in one page on the link.
/// The server keeps one upload per device until it is whole, then pushes it like a `PushDoc`;
/// a slice for another record, or for other `total`/`heads`, starts a new upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushPart {
    pub id: RecordId,
    pub offset: u64,
    pub total: u64,
    pub bytes: Vec<u8>,
    /// The phone's heads for the record once these changes are applied.
    pub heads: Vec<Hash>,
}

/// The server's answer to a [`PushPart`]: it holds the first `have` bytes of `id`'s upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Uploaded {
    pub id: RecordId,
    pub have: u64,
}

/// The largest record changes one upload may carry (a record sent in slices).
pub const MAX_UPLOAD_BYTES: u64 = 16 * 1024 * 1024;

/// "I hold the first `offset` bytes of record `id` at `seq`."
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartResume {
    pub id: RecordId,
    pub seq: u64,
    pub offset: u64,
}

/// Why a body is not a valid sync message. The `Display` text is what the client is told.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("empty body: expected a gesync sync message")]
    Empty,
    #[error("body is {0} bytes, more than the {MAX_MESSAGE_BYTES}-byte limit of one sync page")]
    TooLarge(usize),
    #[error("not a gesync sync message (bad magic bytes)")]
    BadMagic,
    #[error("unsupported sync protocol version {found}; this side speaks versions {OLDEST_VERSION} to {PROTOCOL_VERSION}")]
    Version { found: u8 },
    #[error("malformed or truncated sync message: {0}")]
    Malformed(String),
    #[error("the compressed body inflates past the {MAX_MESSAGE_BYTES}-byte limit of one sync page")]
    Bomb,
    #[error("the request was compressed against a page context this server does not hold: send it again without")]
    UnknownContext,
}

/// How a message travels: its protocol version and whether it is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Framing {
    pub version: u8,
    pub zstd: bool,
    /// The sender has the records dictionary: compressed, the message was made with it
    /// ([`FRAME_RECORDS_DICT`]).
    pub dict: bool,
    /// An answer's time on the server, in milliseconds ([`FRAME_SERVER_TIME`]).
    pub server_ms: Option<u16>,
    /// [`FRAME_CONTEXT`]: in a request, the page context the phone holds; in an answer, the
    /// one its compressed message was made against.
    pub context: Option<u64>,
    /// [`FRAME_KEPT`]: the id under which the server keeps this answer's context.
    pub kept: Option<u64>,
    /// [`FRAME_CHECKSUMS`]: the changes come with their checksums left out.
    pub checksums: bool,
    /// [`FRAME_PUSH_CONTEXT`]: in an answer, the id under which the server keeps the tail of
    /// the request; in a request, the context it was compressed against.
    pub push_context: Option<u64>,
}

impl Framing {
    /// The current version, uncompressed.
    pub const PLAIN: Framing = Framing { version: PROTOCOL_VERSION, zstd: false, dict: false, server_ms: None, context: None, kept: None, checksums: false, push_context: None };
    /// The current version, zstd-compressed when that makes the message smaller.
    pub const ZSTD: Framing = Framing { version: PROTOCOL_VERSION, zstd: true, dict: false, server_ms: None, context: None, kept: None, checksums: false, push_context: None };
    /// [`Framing::ZSTD`] with the records dictionary.
    pub const ZSTD_DICT: Framing = Framing { version: PROTOCOL_VERSION, zstd: true, dict: true, server_ms: None, context: None, kept: None, checksums: false, push_context: None };

    /// A version's framing, uncompressed.
    pub const fn plain(version: u8) -> Framing {
        Framing { version, zstd: false, dict: false, server_ms: None, context: None, kept: None, checksums: false, push_context: None }
    }

    /// How to answer a request that came in `self`: its version, compressed when the phone
    /// reads compressed answers, with the records dictionary when it reads that too.
    pub fn answer(self, request: &SyncRequest) -> Framing {
        let zstd = self.version >= 2 && request.accept & FLAG_ZSTD != 0;
        Framing {
            version: self.version,
            zstd,
            dict: zstd && request.accept & FLAG_RECORDS_DICT != 0,
            checksums: self.version >= 3 && request.accept & FLAG_CHECKSUMS != 0,
            ..Framing::plain(self.version)
        }
    }

    /// Whether an answer in this framing may be compressed against a page context, or kept as
    /// one, for `request`, and the request's tail kept: a phone that keeps contexts, on a slow
    /// link, reading answers made with the records dictionary.
    pub fn pages_in_context(self, request: &SyncRequest) -> bool {
        self.dict && request.accept & (FLAG_PAGE_CONTEXT | FLAG_SLOW_LINK) == FLAG_PAGE_CONTEXT | FLAG_SLOW_LINK
    }

    /// This answer's framing, telling the server's time on it (`secs`) to a phone that reads
    /// it; any other phone is told nothing.
    pub fn timed(self, request: &SyncRequest, secs: f64) -> Framing {
        let told = self.version >= 2 && request.accept & FLAG_SERVER_TIME != 0;
        Framing { server_ms: told.then(|| (secs * 1000.0).round().clamp(0.0, f64::from(u16::MAX)) as u16), ..self }
    }
}

/// The version 1 layouts, read from and written for phones built before paging.
mod v1 {
    use super::*;

    #[derive(Serialize, Deserialize)]
    pub struct Request {
        pub cursor: Vec<u8>,
        pub push: Vec<PushDoc>,
        pub want_full: Vec<RecordId>,
    }

    #[derive(Serialize, Deserialize)]
    pub struct Response {
        pub results: Vec<PushResult>,
        pub pull: Vec<PullDoc>,
        pub cursor: Vec<u8>,
        pub more: bool,
    }
}

/// The version 2 layouts (before the store epoch and the phone's actor).
mod v2 {
    use super::*;

    #[derive(Serialize, Deserialize)]
    pub struct Request {
        pub cursor: Vec<u8>,
        pub push: Vec<PushDoc>,
        pub want_full: Vec<RecordId>,
        pub page_bytes: u32,
        pub accept: u8,
        pub count: bool,
        pub resume: Option<PartResume>,
        pub push_part: Option<PushPart>,
    }

    #[derive(Serialize, Deserialize)]
    pub struct Response {
        pub results: Vec<PushResult>,
        pub pull: Vec<PullDoc>,
        pub cursor: Vec<u8>,
        pub more: bool,
        pub part: Option<PullPart>,
        pub remaining: Option<u64>,
        pub uploaded: Option<Uploaded>,
        pub scope: Option<Vec<String>>,
    }
}

/// Frames `payload`: compressed at `level(its length)` if `framing` says so, against the page
/// context `against` if given (with the records dictionary only: the caller names it in
/// `framing`, and a reader uses it only for a compressed message). Says whether the message
/// went compressed (so against `against`).
fn frame(framing: Framing, level: impl FnOnce(usize) -> i32, payload: &[u8], against: Option<&PageContext>) -> (Vec<u8>, bool) {
    let mut out = Vec::with_capacity(payload.len() + 22);
    out.extend_from_slice(MAGIC);
    out.push(framing.version);
    // The flags byte is written below; the server's time, the context and the kept id, when
    // said, follow it in that order.
    let after_flags = |out: &mut Vec<u8>, framing: Framing| {
        if let Some(ms) = framing.server_ms {
            out.extend_from_slice(&ms.to_le_bytes());
        }
        for id in [framing.context, framing.kept, framing.push_context].into_iter().flatten() {
            out.extend_from_slice(&id.to_le_bytes());
        }
    };
    if framing.version >= 2 {
        if framing.zstd {
            let level = level(payload.len());
            let against = against.filter(|_| framing.dict);
            // Compressing into a Vec fails only on allocation failure.
            let packed = compressors::with(|c| match against {
                // With zstd's checksum of the content: a context that differs from the one
                // the server kept (a bug on either side) fails the read rather than misreads.
                Some(context) => c.set_dictionary(level, &context.dictionary()).and_then(|()| {
                    c.set_parameter(zstd::zstd_safe::CParameter::ChecksumFlag(true))?;
                    c.compress(payload)
                }),
                None if framing.dict => c.set_prepared_dictionary(dict::encoder(level)).and_then(|()| c.compress(payload)),
                None => c.set_compression_level(level).and_then(|()| c.compress(payload)),
            })
            .expect("zstd compresses into a Vec");
            // A tiny message (a no-op sync) grows under zstd's frame header: send it plain.
            if packed.len() < payload.len() {
                out.push(FLAG_ZSTD | extra_bits(framing));
                after_flags(&mut out, framing);
                out.extend(packed);
                return (out, true);
            }
        }
        out.push(extra_bits(framing));
        after_flags(&mut out, framing);
    }
    out.extend_from_slice(payload);
    (out, false)
}

/// zstd compressors kept between messages: making one (`ZSTD_createCCtx` and its first
/// tables) cost the server about 22 µs a sync request, 3% of a pull's CPU in `load`. At most
/// [`kept::KEPT`] are kept, each holding the tables of the largest message it compressed
/// lately (zstd shrinks them after a long run of small ones); more at once are made and
/// dropped.
mod compressors {
    use zstd::bulk::Compressor;
    use zstd::zstd_safe::ResetDirective;

    use super::kept::Kept;

    pub(super) static KEPT_COMPRESSORS: Kept<Compressor<'static>> = Kept::new();

    /// Runs `f` on a compressor with zstd's defaults, no dictionary and no parameter of an
    /// earlier message left; kept afterwards unless [`super::kept::KEPT`] are.
    pub(super) fn with<R>(f: impl FnOnce(&mut Compressor<'static>) -> std::io::Result<R>) -> std::io::Result<R> {
        let mut compressor = match KEPT_COMPRESSORS.take() {
            Some(c) => c,
            None => Compressor::new(0)?,
        };
        let result = f(&mut compressor);
        // Its dictionary (a page context, or the prepared records dictionary it refers to) and
        // its parameters go; its tables stay.
        if compressor.context_mut().reset(ResetDirective::SessionAndParameters).is_ok() {
            KEPT_COMPRESSORS.keep(compressor);
        }
        result
    }
}

/// The zstd contexts of one kind kept between messages, for [`compressors`] and
/// [`decompressors`] alike.
mod kept {
    use std::sync::{Mutex, MutexGuard};

    /// About the syncs a server works on at once (four a core): past that a context is made
    /// for the message and dropped after it.
    pub(super) const KEPT: usize = 8;

    /// At most [`KEPT`] contexts, each taken by one message at a time.
    pub(super) struct Kept<T>(Mutex<Vec<T>>);

    impl<T> Kept<T> {
        pub(super) const fn new() -> Self {
            Kept(Mutex::new(Vec::new()))
        }

        /// A kept context, if one is free.
        pub(super) fn take(&self) -> Option<T> {
            self.lock().pop()
        }

        /// Keeps `context` for a later message, unless [`KEPT`] already are (then it is dropped).
        pub(super) fn keep(&self, context: T) {
            let mut kept = self.lock();
            if kept.len() < KEPT {
                kept.push(context);
            }
        }

        /// A panic elsewhere while the lock was held leaves a list of sound contexts.
        pub(super) fn lock(&self) -> MutexGuard<'_, Vec<T>> {
            self.0.lock().unwrap_or_else(|e| e.into_inner())
        }
    }
}

/// [`RECORDS_DICT`], prepared once: for decompression, and for compression at each level used.
mod dict {
    use std::sync::OnceLock;

    use zstd::dict::{DecoderDictionary, EncoderDictionary};

    use super::RECORDS_DICT;

    pub(super) fn decoder() -> &'static DecoderDictionary<'static> {
        static PREPARED: OnceLock<DecoderDictionary<'static>> = OnceLock::new();
        PREPARED.get_or_init(|| DecoderDictionary::copy(RECORDS_DICT))
    }

    /// zstd's levels are 0 to 22 (the negative ones are not used here).
    const LEVELS: usize = 23;

    /// The dictionary prepared for `level` (zstd prepares a dictionary for one level), once
    /// per level and kept: no lock once prepared.
    pub(super) fn encoder(level: i32) -> &'static EncoderDictionary<'static> {
        static PREPARED: [OnceLock<EncoderDictionary<'static>>; LEVELS] = [const { OnceLock::new() }; LEVELS];
        let level = level.clamp(0, LEVELS as i32 - 1);
        PREPARED[level as usize].get_or_init(|| EncoderDictionary::copy(RECORDS_DICT, level))
    }
}

/// The flags a frame says besides [`FLAG_ZSTD`].
fn extra_bits(framing: Framing) -> u8 {
    let bit = |on: bool, bit: u8| if on { bit } else { 0 };
    bit(framing.dict, FRAME_RECORDS_DICT)
        | bit(framing.server_ms.is_some(), FRAME_SERVER_TIME)
        | bit(framing.context.is_some(), FRAME_CONTEXT)
        | bit(framing.kept.is_some(), FRAME_KEPT)
        | bit(framing.checksums, FRAME_CHECKSUMS)
        | bit(framing.push_context.is_some(), FRAME_PUSH_CONTEXT)
}

/// `docs`' changes with their checksums left out ([`crate::checksums`]).
fn checksums_left_out<T: Clone>(docs: &[T], changes: impl Fn(&mut T) -> &mut Vec<u8>) -> Vec<T> {
    let mut docs = docs.to_vec();
    for doc in &mut docs {
        crate::checksums::leave_out(changes(doc));
    }
    docs
}

fn postcard_bytes<T: Serialize>(msg: &T) -> Vec<u8> {
    // Serialising plain structs of Vec<u8>/arrays into a Vec cannot fail.
    postcard::to_allocvec(msg).expect("postcard encoding into a Vec is infallible")
}

/// Which message a frame holds, and the page context it may be compressed against: for a
/// request, the server's contexts by id; for an answer, the one its phone holds.
#[derive(Clone, Copy)]
enum Reading<'a> {
    Request(&'a dyn Fn(u64) -> Option<std::sync::Arc<PageContext>>),
    Answer(Option<&'a PageContext>),
}

/// The decompressed postcard payload of a frame, and the page context it was read against.
type Unframed<'b, 'c> = (Framing, std::borrow::Cow<'b, [u8]>, Option<std::borrow::Cow<'c, PageContext>>);

/// Checks the frame and returns its framing, the (decompressed) postcard payload, and the page
/// context it was read against.
fn unframe<'b, 'c>(bytes: &'b [u8], reading: Reading<'c>) -> Result<Unframed<'b, 'c>, WireError> {
    if bytes.is_empty() {
        return Err(WireError::Empty);
    }
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(WireError::TooLarge(bytes.len()));
    }
    if bytes.len() < 5 || &bytes[..4] != MAGIC {
        return Err(WireError::BadMagic);
    }
    let version = bytes[4];
    match version {
        1 => Ok((Framing::plain(version), bytes[5..].into(), None)),
        2 | 3 => {
            let (&flags, rest) = bytes[5..].split_first().ok_or_else(|| WireError::Malformed("no flags byte".into()))?;
            if flags & !(FLAG_ZSTD | FRAME_RECORDS_DICT | FRAME_SERVER_TIME | FRAME_CONTEXT | FRAME_KEPT | FRAME_CHECKSUMS | FRAME_PUSH_CONTEXT) != 0 {
                return Err(WireError::Malformed(format!("unknown flags {flags:#04x}")));
            }
            let (server_ms, rest) = match flags & FRAME_SERVER_TIME {
                0 => (None, rest),
                _ => match rest {
                    [a, b, rest @ ..] => (Some(u16::from_le_bytes([*a, *b])), rest),
                    _ => return Err(WireError::Malformed("the server's time is cut short".into())),
                },
            };
            let (context, rest) = context_id(flags & FRAME_CONTEXT != 0, rest)?;
            let (kept, rest) = context_id(flags & FRAME_KEPT != 0, rest)?;
            let (push_context, rest) = context_id(flags & FRAME_PUSH_CONTEXT != 0, rest)?;
            let framing = Framing {
                version,
                zstd: flags & FLAG_ZSTD != 0,
                dict: flags & FRAME_RECORDS_DICT != 0,
                server_ms,
                context,
                kept,
                checksums: flags & FRAME_CHECKSUMS != 0,
                push_context,
            };
            // A message made against a context is read against the one this side holds: an
            // answer against the phone's, a request against the server's.
            let against = match (reading, framing.zstd) {
                (_, false) => None,
                (Reading::Answer(held), true) => match context {
                    Some(id) => match held.filter(|held| held.id == id && framing.dict) {
                        Some(held) => Some(std::borrow::Cow::Borrowed(held)),
                        None => return Err(WireError::Malformed("the answer was compressed against a page context this phone does not hold".into())),
                    },
                    None => None,
                },
                (Reading::Request(held), true) => match push_context {
                    Some(id) if framing.dict => Some(std::borrow::Cow::Owned(held(id).ok_or(WireError::UnknownContext)?.as_ref().clone())),
                    Some(_) => return Err(WireError::Malformed("a page context without the records dictionary".into())),
                    None => None,
                },
            };
            let payload = match (framing.zstd, framing.dict, &against) {
                (false, _, _) => rest.into(),
                (true, false, _) => inflate(rest, None)?.into(),
                (true, true, None) => inflate(rest, Some(dict::decoder()))?.into(),
                (true, true, Some(context)) => inflate(rest, Some(&zstd::dict::DecoderDictionary::copy(&context.dictionary())))?.into(),
            };
            Ok((framing, payload, against))
        }
        found => Err(WireError::Version { found }),
    }
}

/// A page context's id after the flags byte, if `said`.
fn context_id(said: bool, rest: &[u8]) -> Result<(Option<u64>, &[u8]), WireError> {
    if !said {
        return Ok((None, rest));
    }
    match rest.split_first_chunk::<8>() {
        Some((id, rest)) => Ok((Some(u64::from_le_bytes(*id)), rest)),
        None => Err(WireError::Malformed("a page context's id is cut short".into())),
    }
}

/// Decompresses at most [`MAX_MESSAGE_BYTES`]: the decoder is read through a bound, so a bomb
/// costs the bound, never more memory. On a kept decompression context
/// ([`decompressors::with`]): making one for every message was 3% of a server's CPU in a rush
/// of small pushes.
fn inflate(compressed: &[u8], dict: Option<&zstd::dict::DecoderDictionary<'static>>) -> Result<Vec<u8>, WireError> {
    let bad = |e: std::io::Error| WireError::Malformed(format!("bad zstd data: {e}"));
    decompressors::with(|context| {
        if let Some(dict) = dict {
            context.ref_ddict(dict.as_ddict()).map_err(|code| WireError::Malformed(format!("bad zstd dictionary: {}", zstd::zstd_safe::get_error_name(code))))?;
        }
        let mut out = Vec::new();
        zstd::stream::read::Decoder::with_context(compressed, context)
            .take(MAX_MESSAGE_BYTES as u64 + 1)
            .read_to_end(&mut out)
            .map_err(bad)?;
        if out.len() > MAX_MESSAGE_BYTES {
            return Err(WireError::Bomb);
        }
        Ok(out)
    })
}

/// Decompression contexts kept between messages, as [`compressors`] keeps compressors.
mod decompressors {
    use zstd::zstd_safe::{DCtx, ResetDirective};

    use super::kept::Kept;

    pub(super) static KEPT_DECOMPRESSORS: Kept<DCtx<'static>> = Kept::new();

    /// The largest context kept, bytes. Its buffers grow to the window a frame declares, which
    /// the sender chooses (up to 128 MiB by zstd's default): a context that read a frame with a
    /// large window is dropped rather than kept, so that what is kept stays within
    /// [`super::kept::KEPT`] times this.
    pub(super) const KEPT_AT_MOST_BYTES: usize = 2 << 20;

    /// Runs `f` on a decompression context with zstd's defaults, no dictionary and nothing of
    /// an earlier message left; kept afterwards unless [`super::kept::KEPT`] are or it grew past
    /// [`KEPT_AT_MOST_BYTES`]. A dictionary `f` refers it to must outlive `f` only: the reset
    /// after `f` lets go of it.
    pub(super) fn with<R>(f: impl FnOnce(&mut DCtx<'static>) -> R) -> R {
        let mut context = KEPT_DECOMPRESSORS.take().unwrap_or_else(DCtx::create);
        let result = f(&mut context);
        // Its dictionary, parameters and any frame left half read go; its buffers stay.
        if context.reset(ResetDirective::SessionAndParameters).is_ok() && context.sizeof() <= KEPT_AT_MOST_BYTES {
            KEPT_DECOMPRESSORS.keep(context);
        }
        result
    }
}

fn from_postcard<'a, T: Deserialize<'a>>(payload: &'a [u8]) -> Result<T, WireError> {
    let (msg, rest) = postcard::take_from_bytes(payload).map_err(|e| WireError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(WireError::Malformed(format!("{} trailing bytes", rest.len())));
    }
    Ok(msg)
}

impl SyncRequest {
    /// The current version, uncompressed.
    pub fn encode(&self) -> Vec<u8> {
        self.encode_as(Framing::PLAIN)
    }

    /// Encodes in the given framing (version 1 drops the version 2 fields).
    pub fn encode_as(&self, framing: Framing) -> Vec<u8> {
        self.encode_paged(framing, None).0
    }

    /// [`SyncRequest::encode_as`], compressed against the page context `against` (the tail of
    /// an earlier request that the server said it kept) when given and the framing has the
    /// records dictionary; with this request's own tail when it asks for page contexts on a
    /// slow link, which becomes a context once an answer says the server kept it (its id is set
    /// then).
    pub fn encode_paged(&self, framing: Framing, against: Option<&PageContext>) -> (Vec<u8>, Option<PageContext>) {
        let against = against.filter(|_| framing.zstd && framing.dict);
        let framing = Framing { push_context: against.map(|c| c.id), ..framing };
        let payload = match framing.version {
            1 => postcard_bytes(&v1::Request { cursor: self.cursor.clone(), push: self.push.clone(), want_full: self.want_full.clone() }),
            2 => postcard_bytes(&v2::Request {
                cursor: self.cursor.clone(),
                push: self.push.clone(),
                want_full: self.want_full.clone(),
                page_bytes: self.page_bytes,
                accept: self.accept,
                count: self.count,
                resume: self.resume,
                push_part: self.push_part.clone(),
            }),
            _ if framing.checksums => postcard_bytes(&SyncRequest { push: checksums_left_out(&self.push, |p| &mut p.changes), ..self.clone() }),
            _ => postcard_bytes(self),
        };
        // A phone on a slow link compresses its own pushes harder too.
        let (bytes, packed) = frame(framing, |_| zstd_level(self.accept, usize::MAX), &payload, against);
        // The reader reads a message sent plain against nothing.
        (bytes, self.keeps_context().then(|| PageContext::after(against.filter(|_| packed), 0, &payload)))
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        Self::decode_framed(bytes).map(|(m, _)| m)
    }

    /// Decodes any version this side reads, and says how it came (a request made against a page
    /// context is refused: [`WireError::UnknownContext`]).
    pub fn decode_framed(bytes: &[u8]) -> Result<(Self, Framing), WireError> {
        Self::decode_paged(bytes, &|_| None).map(|(m, framing, _)| (m, framing))
    }

    /// [`SyncRequest::decode_framed`], reading a request made against a page context with the
    /// one `held` gives for its id; with the request's tail, to keep as a context, when it asks
    /// for page contexts on a slow link.
    pub fn decode_paged(bytes: &[u8], held: &dyn Fn(u64) -> Option<std::sync::Arc<PageContext>>) -> Result<(Self, Framing, Option<PageContext>), WireError> {
        let (framing, payload, against) = unframe(bytes, Reading::Request(held))?;
        let mut msg = match framing.version {
            1 => {
                let r: v1::Request = from_postcard(&payload)?;
                SyncRequest { cursor: r.cursor, push: r.push, want_full: r.want_full, ..Default::default() }
            }
            2 => {
                let v2::Request { cursor, push, want_full, page_bytes, accept, count, resume, push_part } = from_postcard(&payload)?;
                SyncRequest { cursor, push, want_full, page_bytes, accept, count, resume, push_part, actor: Vec::new() }
            }
            _ => from_postcard(&payload)?,
        };
        if framing.checksums {
            msg.push.iter_mut().for_each(|p| crate::checksums::restore(&mut p.changes));
        }
        let tail = msg.keeps_context().then(|| PageContext::after(against.as_deref(), 0, &payload));
        Ok((msg, framing, tail))
    }

    /// Whether this request's tail may become a page context: it asks for them, on a slow link.
    fn keeps_context(&self) -> bool {
        self.accept & (FLAG_PAGE_CONTEXT | FLAG_SLOW_LINK) == FLAG_PAGE_CONTEXT | FLAG_SLOW_LINK
    }
}

impl SyncResponse {
    /// The current version, uncompressed.
    pub fn encode(&self) -> Vec<u8> {
        self.encode_as(Framing::PLAIN)
    }

    /// Encodes in the given framing. A version 1 phone never asked for slices or counts, so it
    /// is never given any: dropping them loses nothing. A version 2 phone is not told the epoch
    /// (it could not act on it; its cursor still starts again from zero after a restore).
    pub fn encode_as(&self, framing: Framing) -> Vec<u8> {
        self.encode_for(framing, 0)
    }

    /// [`SyncResponse::encode_as`] for a request that said `accept`: compressed at the level
    /// its link is worth ([`zstd_level`]).
    pub fn encode_for(&self, framing: Framing, accept: u8) -> Vec<u8> {
        self.encode_paged(framing, accept, None).0
    }

    /// [`SyncResponse::encode_for`], compressed against the page context `against` when given
    /// (one the request named, [`Framing::pages_in_context`]); with the context this answer
    /// leaves when `framing.kept` names one.
    pub fn encode_paged(&self, framing: Framing, accept: u8, against: Option<&PageContext>) -> (Vec<u8>, Option<PageContext>) {
        let against = against.filter(|_| framing.zstd && framing.dict);
        let framing = Framing { context: against.map(|c| c.id), ..framing };
        let payload = match framing.version {
            1 => postcard_bytes(&v1::Response { results: self.results.clone(), pull: self.pull.clone(), cursor: self.cursor.clone(), more: self.more }),
            2 => postcard_bytes(&v2::Response {
                results: self.results.clone(),
                pull: self.pull.clone(),
                cursor: self.cursor.clone(),
                more: self.more,
                part: self.part.clone(),
                remaining: self.remaining,
                uploaded: self.uploaded,
                scope: self.scope.clone(),
            }),
            _ if framing.checksums => postcard_bytes(&SyncResponse { pull: checksums_left_out(&self.pull, |p| &mut p.changes), ..self.clone() }),
            _ => postcard_bytes(self),
        };
        let (bytes, packed) = frame(framing, |len| zstd_level(accept, len), &payload, against);
        // The reader reads a message sent plain against nothing.
        let kept = framing.kept.map(|id| PageContext::after(against.filter(|_| packed), id, &payload));
        (bytes, kept)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        Self::decode_framed(bytes).map(|(m, _)| m)
    }

    /// Decodes an answer made against no page context.
    pub fn decode_framed(bytes: &[u8]) -> Result<(Self, Framing), WireError> {
        Self::decode_paged(bytes, None).map(|(m, framing, _)| (m, framing))
    }

    /// Decodes an answer, reading it against the page context `held` (the one the request
    /// named) if it was made against one; with the context the answer leaves, if the server
    /// kept one ([`FRAME_KEPT`]).
    pub fn decode_paged(bytes: &[u8], held: Option<&PageContext>) -> Result<(Self, Framing, Option<PageContext>), WireError> {
        let (framing, payload, against) = unframe(bytes, Reading::Answer(held))?;
        let kept = framing.kept.map(|id| PageContext::after(against.as_deref(), id, &payload));
        let mut msg = match framing.version {
            1 => {
                let r: v1::Response = from_postcard(&payload)?;
                SyncResponse { results: r.results, pull: r.pull, cursor: r.cursor, more: r.more, ..Default::default() }
            }
            2 => {
                let r: v2::Response = from_postcard(&payload)?;
                let v2::Response { results, pull, cursor, more, part, remaining, uploaded, scope } = r;
                SyncResponse { results, pull, cursor, more, part, remaining, uploaded, scope, epoch: 0 }
            }
            _ => from_postcard(&payload)?,
        };
        if framing.checksums {
            msg.pull.iter_mut().for_each(|p| crate::checksums::restore(&mut p.changes));
        }
        Ok((msg, framing, kept))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SyncRequest {
        SyncRequest {
            cursor: vec![1, 2, 3],
            push: vec![PushDoc { id: RecordId([7; 16]), changes: vec![9; 40], heads: vec![[5; 32]] }],
            want_full: vec![RecordId([8; 16])],
            page_bytes: 48 * 1024,
            accept: FLAG_ZSTD,
            count: true,
            resume: Some(PartResume { id: RecordId([3; 16]), seq: 12, offset: 4096 }),
            push_part: Some(PushPart { id: RecordId([4; 16]), offset: 8, total: 20, bytes: vec![6; 12], heads: vec![[2; 32]] }),
            actor: vec![0xab; 16],
        }
    }

    fn sample_response() -> SyncResponse {
        SyncResponse {
            results: vec![PushResult { id: RecordId([1; 16]), outcome: PushOutcome::Rejected { reason: "x".into() } }],
            pull: vec![PullDoc { id: RecordId([2; 16]), changes: b"ghi chu ghi chu ghi chu ghi chu".repeat(20), heads: vec![[4; 32]] }],
            cursor: vec![5, 6],
            more: true,
            part: Some(PullPart { id: RecordId([3; 16]), seq: 9, offset: 0, total: 100, bytes: vec![1; 10], heads: vec![] }),
            remaining: Some(1200),
            uploaded: Some(Uploaded { id: RecordId([4; 16]), have: 20 }),
            scope: Some(vec!["04701".into()]),
            epoch: 0x1234_5678_9abc_def0,
        }
    }

    #[test]
    fn a_slow_link_gets_harder_compression_that_reads_the_same() {
        // A small page (about 40 KB) and a large one (about 120 KB): each level of the slow link.
        for records in [40u8, 120] {
            let mut resp = sample_response();
            resp.pull = (0..records)
                .map(|i| PullDoc { id: RecordId([i; 16]), changes: format!("{{\"notes\": \"ghi chú số {i} về vụ việc ở xã {}\"}}", i % 7).repeat(20).into_bytes(), heads: vec![[i; 32]] })
                .collect();
            let usual = resp.encode_for(Framing::ZSTD, FLAG_ZSTD);
            let slow = resp.encode_for(Framing::ZSTD, FLAG_ZSTD | FLAG_SLOW_LINK);
            assert_eq!(usual, resp.encode_as(Framing::ZSTD));
            assert!(slow.len() < usual.len(), "{records} records: {} B at the slow link's level, {} B usually", slow.len(), usual.len());
            assert_eq!(SyncResponse::decode_framed(&slow).unwrap(), (resp, Framing::ZSTD));
        }
        let slow = FLAG_ZSTD | FLAG_SLOW_LINK;
        assert_eq!(
            [zstd_level(FLAG_ZSTD, 1 << 20), zstd_level(slow, SLOW_LINK_LARGE - 1), zstd_level(slow, SLOW_LINK_LARGE)],
            [ZSTD_LEVEL, SLOW_LINK_SMALL_ZSTD_LEVEL, SLOW_LINK_ZSTD_LEVEL]
        );
    }

    #[test]
    fn round_trip_in_every_framing() {
        let r = sample();
        let resp = sample_response();
        for framing in [Framing::PLAIN, Framing::ZSTD, Framing::ZSTD_DICT] {
            assert_eq!(SyncRequest::decode_framed(&r.encode_as(framing)).unwrap().0, r);
            assert_eq!(SyncResponse::decode_framed(&resp.encode_as(framing)).unwrap(), (resp.clone(), framing));
        }
        // A message that zstd would not shrink goes plain, whatever was asked.
        let tiny = SyncRequest { cursor: vec![1, 2], ..Default::default() };
        let bytes = tiny.encode_as(Framing::ZSTD);
        assert_eq!(SyncRequest::decode_framed(&bytes).unwrap(), (tiny.clone(), Framing::PLAIN));
        assert_eq!(bytes, tiny.encode_as(Framing::PLAIN));
        // ... and still says that its sender has the records dictionary.
        let bytes = tiny.encode_as(Framing::ZSTD_DICT);
        assert_eq!(SyncRequest::decode_framed(&bytes).unwrap(), (tiny.clone(), Framing { zstd: false, ..Framing::ZSTD_DICT }));
        assert_eq!(bytes[5], FRAME_RECORDS_DICT);
    }

    #[test]
    fn version_1_phones_are_still_read_and_answered_in_version_1() {
        let v1 = Framing::plain(1);
        let bytes = sample().encode_as(v1);
        assert_eq!(bytes[4], 1);
        let (got, framing) = SyncRequest::decode_framed(&bytes).unwrap();
        assert_eq!(framing, v1);
        assert_eq!(got.page_bytes, 0, "a version 1 phone names no page size");
        assert_eq!((got.cursor, got.push, got.want_full), (sample().cursor, sample().push, sample().want_full));
        // The answer goes in version 1, uncompressed even if the request's fields said otherwise.
        let answer = framing.answer(&sample());
        assert_eq!(answer, v1);
        let (resp, f) = SyncResponse::decode_framed(&sample_response().encode_as(answer)).unwrap();
        assert_eq!(f, v1);
        assert_eq!(resp.pull, sample_response().pull);
    }

    #[test]
    fn version_2_phones_are_read_and_answered_in_version_2() {
        let v2 = Framing { version: 2, ..Framing::ZSTD };
        let bytes = sample().encode_as(v2);
        assert_eq!(bytes[4], 2);
        let (got, framing) = SyncRequest::decode_framed(&bytes).unwrap();
        assert_eq!((got, framing), (SyncRequest { actor: vec![], ..sample() }, v2), "a version 2 request names no actor");
        let answer = framing.answer(&sample());
        assert_eq!(answer, v2);
        let encoded = sample_response().encode_as(answer);
        assert_eq!(encoded[4], 2);
        let (resp, f) = SyncResponse::decode_framed(&encoded).unwrap();
        assert_eq!(f, v2);
        assert_eq!(resp, SyncResponse { epoch: 0, ..sample_response() });
        // Today's phones are told the epoch.
        let (resp, _) = SyncResponse::decode_framed(&sample_response().encode_as(Framing::ZSTD)).unwrap();
        assert_eq!(resp.epoch, sample_response().epoch);
    }

    #[test]
    fn answers_are_compressed_only_for_phones_that_accept_it() {
        let mut r = sample();
        assert_eq!(Framing::PLAIN.answer(&r), Framing::ZSTD);
        r.accept = FLAG_ZSTD | FLAG_RECORDS_DICT;
        assert_eq!(Framing::PLAIN.answer(&r), Framing::ZSTD_DICT);
        assert_eq!(Framing { version: 2, ..Framing::ZSTD_DICT }.answer(&r), Framing { version: 2, ..Framing::ZSTD_DICT });
        assert_eq!(Framing::plain(1).answer(&r), Framing::plain(1), "version 1 has no flags byte");
        r.accept = FLAG_RECORDS_DICT;
        assert_eq!(Framing::ZSTD.answer(&r), Framing::PLAIN, "the dictionary only with zstd");
        r.accept = 0;
        assert_eq!(Framing::ZSTD.answer(&r), Framing::PLAIN);
    }

    #[test]
    fn the_servers_time_is_told_only_to_a_phone_that_reads_it() {
        let mut resp = sample_response();
        let mut req = sample();
        for (accept, framing) in [(FLAG_ZSTD, Framing::ZSTD), (0, Framing::PLAIN), (FLAG_ZSTD | FLAG_RECORDS_DICT, Framing::ZSTD_DICT)] {
            req.accept = accept;
            assert_eq!(framing.timed(&req, 0.25), framing, "not asked: not told");
            req.accept = accept | FLAG_SERVER_TIME;
            let told = framing.timed(&req, 0.25);
            assert_eq!(told.server_ms, Some(250));
            let bytes = resp.encode_as(told);
            assert_eq!(bytes[5] & FRAME_SERVER_TIME, FRAME_SERVER_TIME);
            assert_eq!(SyncResponse::decode_framed(&bytes).unwrap(), (resp.clone(), told));
            // A two-minute exchange is told as the most two bytes hold.
            assert_eq!(framing.timed(&req, 120.0).server_ms, Some(u16::MAX));
        }
        // Version 1 has no flags byte: never told.
        assert_eq!(Framing::plain(1).timed(&req, 0.25).server_ms, None);
        // A tiny answer too, and a frame cut inside the two bytes is refused.
        resp = SyncResponse::default();
        let bytes = resp.encode_as(Framing::ZSTD.timed(&req, 0.003));
        assert_eq!(SyncResponse::decode_framed(&bytes).unwrap().1.server_ms, Some(3));
        assert!(matches!(SyncResponse::decode(&bytes[..7]), Err(WireError::Malformed(_))));
    }

    /// `n` case records as a phone would get them in a page: each one's first change.
    fn case_records(n: usize) -> Vec<PullDoc> {
        let actor = automerge::ActorId::from([0x5a; 16].to_vec());
        (0..n)
            .map(|i| {
                let record = serde_json::json!({
                    "commune": "04701", "detected_on": format!("2025-{:02}-{:02}", 1 + i % 12, 1 + i % 28), "setting": "domestic",
                    "violence_types": ["physical"], "victim": {"sex": "female", "birth_year": 1960 + i as i64, "ethnic_minority": i % 2 == 0},
                    "services": [{"kind": "health", "provided_on": "2025-03-04", "provider": "Trạm y tế xã"}],
                    "perpetrator": {"detected": true, "sex": "male", "counselled": i % 3 == 0}, "status": "open",
                    "notes": format!("ghi chú {i}"),
                });
                let mut d = crate::doc::new_record(crate::RecordKind::GbvCase, &record, actor.clone()).unwrap();
                PullDoc { id: RecordId([i as u8; 16]), changes: d.save_after(&[]), heads: vec![] }
            })
            .collect()
    }

    #[test]
    fn the_records_dictionary_makes_small_pages_smaller_and_reads_the_same() {
        let accept = FLAG_ZSTD | FLAG_RECORDS_DICT;
        for n in [1, 5, 40] {
            let resp = SyncResponse { pull: case_records(n), cursor: vec![1, 2, 3], ..Default::default() };
            let cold = resp.encode_for(Framing::ZSTD, FLAG_ZSTD);
            let warm = resp.encode_for(Framing::ZSTD_DICT, accept);
            assert_eq!(warm[5], FLAG_ZSTD | FRAME_RECORDS_DICT);
            assert_eq!(SyncResponse::decode_framed(&warm).unwrap(), (resp.clone(), Framing::ZSTD_DICT));
            // Measured: 1 record 389 -> 162 B, 5 records 497 -> 265 B, 40 alike records 1,269 -> 1,180 B.
            let bound = if n < 40 { 0.7 } else { 0.95 };
            assert!((warm.len() as f64) < bound * cold.len() as f64, "{n} records: {} B with the dictionary, {} B without", warm.len(), cold.len());
            // zstd names the dictionary in the frame, so another one is refused, never misread.
            assert_eq!(zstd::zstd_safe::get_dict_id_from_frame(&warm[6..]), std::num::NonZeroU32::new(RECORDS_DICT_ID));
        }
        assert_eq!(RECORDS_DICT[..4], [0x37, 0xa4, 0x30, 0xec], "a zstd dictionary");
        assert_eq!(RECORDS_DICT[4..8], RECORDS_DICT_ID.to_le_bytes());
    }

    /// A kept compressor carries nothing of its last message into the next: each frame is the
    /// one a new compressor makes with the same settings, whatever came before it (a page
    /// context, the records dictionary at another level, none).
    #[test]
    fn a_kept_compressor_frames_as_a_new_one_does() {
        let payload = SyncResponse { pull: case_records(6), ..Default::default() }.encode()[6..].to_vec();
        let context = PageContext::of(7, &SyncResponse { pull: case_records(3), ..Default::default() }.encode()[6..]);
        let framing = |dict| Framing { dict, ..Framing::ZSTD };
        let packed = |out: (Vec<u8>, bool)| {
            assert!(out.1, "compressed");
            out.0[6..].to_vec()
        };
        for round in 0..3 {
            for level in [3, 19] {
                let with_context = packed(frame(framing(true), |_| level, &payload, Some(&context)));
                let mut fresh = zstd::bulk::Compressor::with_dictionary(level, &context.dictionary()).unwrap();
                fresh.set_parameter(zstd::zstd_safe::CParameter::ChecksumFlag(true)).unwrap();
                assert_eq!(with_context, fresh.compress(&payload).unwrap(), "round {round}, level {level}, a page context");
                let with_dict = packed(frame(framing(true), |_| level, &payload, None));
                assert_eq!(with_dict, zstd::bulk::Compressor::with_prepared_dictionary(dict::encoder(level)).unwrap().compress(&payload).unwrap(), "round {round}, level {level}, the records dictionary");
                let plain = packed(frame(framing(false), |_| level, &payload, None));
                assert_eq!(plain, zstd::bulk::compress(&payload, level).unwrap(), "round {round}, level {level}, no dictionary");
                assert_eq!(zstd::bulk::decompress(&plain, payload.len()).unwrap(), payload);
            }
        }
        assert!(compressors::KEPT_COMPRESSORS.lock().len() <= kept::KEPT);
    }

    /// A kept decompression context carries nothing of its last message into the next: not
    /// the dictionary (a frame made with it but flagged without is still refused), not a frame
    /// left half read by the bound or by damage.
    #[test]
    fn a_kept_decompression_context_reads_each_message_as_a_new_one_would() {
        let resp = SyncResponse { pull: case_records(5), ..Default::default() };
        let warm = resp.encode_for(Framing::ZSTD_DICT, FLAG_ZSTD | FLAG_RECORDS_DICT);
        let mut unflagged = warm.clone();
        unflagged[5] = FLAG_ZSTD;
        let cold = resp.encode_for(Framing::ZSTD, FLAG_ZSTD);
        let zeros = vec![0u8; 16 * 1024 * 1024];
        let bomb = [MAGIC.as_slice(), &[PROTOCOL_VERSION, FLAG_ZSTD], &zstd::bulk::compress(&zeros, 3).unwrap()].concat();
        let mut cut = cold.clone();
        cut.truncate(cold.len() - 7);
        for round in 0..3 {
            assert_eq!(SyncResponse::decode(&warm).unwrap(), resp, "round {round}");
            assert!(matches!(SyncResponse::decode(&unflagged), Err(WireError::Malformed(_))), "round {round}: the dictionary was let go");
            assert_eq!(SyncRequest::decode(&bomb), Err(WireError::Bomb));
            assert_eq!(SyncResponse::decode(&cold).unwrap(), resp, "round {round}: after a bomb stopped half way");
            assert!(matches!(SyncResponse::decode(&cut), Err(WireError::Malformed(_))), "round {round}");
            assert_eq!(SyncResponse::decode(&cold).unwrap(), resp, "round {round}: after a frame cut short");
        }
        // The bomb's frame declares a window (2 MiB, zstd's at level 3) that grows its context
        // past the bound: the context that read it was not kept.
        let contexts = decompressors::KEPT_DECOMPRESSORS.lock();
        assert!(contexts.len() <= kept::KEPT);
        assert!(contexts.iter().all(|c| c.sizeof() <= decompressors::KEPT_AT_MOST_BYTES), "{:?}", contexts.iter().map(|c| c.sizeof()).collect::<Vec<_>>());
    }

    #[test]
    fn a_frame_and_its_dictionary_must_agree() {
        let resp = SyncResponse { pull: case_records(5), ..Default::default() };
        let warm = resp.encode_for(Framing::ZSTD_DICT, FLAG_ZSTD | FLAG_RECORDS_DICT);
        // The same frame flagged as made without a dictionary: zstd refuses it.
        let mut unflagged = warm.clone();
        unflagged[5] = FLAG_ZSTD;
        assert!(matches!(SyncResponse::decode(&unflagged), Err(WireError::Malformed(_))));
        // A frame made with some other dictionary, flagged as the records dictionary.
        let mut other_dict = RECORDS_DICT.to_vec();
        other_dict[4..8].copy_from_slice(&(RECORDS_DICT_ID + 1).to_le_bytes());
        let other = zstd::bulk::Compressor::with_dictionary(3, &other_dict).unwrap().compress(&resp.encode()[6..]).unwrap();
        let forged = [MAGIC.as_slice(), &[PROTOCOL_VERSION, FLAG_ZSTD | FRAME_RECORDS_DICT], &other].concat();
        assert!(matches!(SyncResponse::decode(&forged), Err(WireError::Malformed(_))));
        // A bomb made with the dictionary stops at the bound too.
        let zeros = vec![0u8; 16 * 1024 * 1024];
        let packed = zstd::bulk::Compressor::with_dictionary(3, RECORDS_DICT).unwrap().compress(&zeros).unwrap();
        let bomb = [MAGIC.as_slice(), &[PROTOCOL_VERSION, FLAG_ZSTD | FRAME_RECORDS_DICT], &packed].concat();
        assert_eq!(SyncRequest::decode(&bomb), Err(WireError::Bomb));
    }

    /// Case records with notes that differ, as officers write them (a few hundred words, drawn
    /// at random): what a page context pays on.
    fn varied_case_records(n: usize, seed: u64) -> Vec<PullDoc> {
        use rand::{Rng, SeedableRng};
        let words = ["chồng", "vợ", "đánh", "say rượu", "hàng xóm", "báo", "công an xã", "trạm y tế", "con", "mẹ", "đêm", "nhà", "chạy", "sang", "bị thương", "tay", "mặt"];
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut records = case_records(n);
        for (i, doc) in records.iter_mut().enumerate() {
            let notes: Vec<&str> = (0..rng.gen_range(25..70)).map(|_| words[rng.gen_range(0..words.len())]).collect();
            let record = serde_json::json!({
                "commune": "04701", "detected_on": "2025-03-04", "setting": "domestic", "violence_types": ["physical"],
                "victim": {"sex": "female", "birth_year": rng.gen_range(1950..2010), "ethnic_minority": rng.gen_bool(0.5)},
                "perpetrator": {"detected": true, "sex": "male"}, "status": "open", "notes": notes.join(" "),
            });
            let actor = automerge::ActorId::from([(i % 3) as u8; 16].to_vec());
            doc.changes = crate::doc::new_record(crate::RecordKind::GbvCase, &record, actor).unwrap().save_after(&[]);
        }
        records
    }

    #[test]
    fn pages_in_a_context_read_the_same_and_weigh_less() {
        let accept = FLAG_ZSTD | FLAG_RECORDS_DICT | FLAG_SLOW_LINK | FLAG_PAGE_CONTEXT;
        let request = SyncRequest { accept, ..Default::default() };
        let answer = Framing::ZSTD_DICT.answer(&request);
        assert!(answer.pages_in_context(&request));
        assert!(!answer.pages_in_context(&SyncRequest { accept: accept & !FLAG_SLOW_LINK, ..Default::default() }), "only on a slow link");
        let no_dict = SyncRequest { accept: accept & !FLAG_RECORDS_DICT, ..Default::default() };
        assert!(!Framing::ZSTD_DICT.answer(&no_dict).pages_in_context(&no_dict), "only with the records dictionary");
        let records = varied_case_records(120, 7);
        let pages: Vec<SyncResponse> = records.chunks(40).map(|page| SyncResponse { pull: page.to_vec(), more: true, cursor: vec![9], ..Default::default() }).collect();
        let (mut server_kept, mut phone_held): (Option<PageContext>, Option<PageContext>) = (None, None);
        let (mut cold_bytes, mut warm_bytes, mut sent) = (0, 0, 0);
        for (i, page) in pages.iter().enumerate() {
            let id = 1000 + i as u64;
            let framing = Framing { kept: Some(id), ..answer };
            let (bytes, kept) = page.encode_paged(framing, accept, server_kept.as_ref());
            assert_eq!(bytes[5] & (FRAME_CONTEXT | FRAME_KEPT), if i == 0 { FRAME_KEPT } else { FRAME_CONTEXT | FRAME_KEPT });
            let (read, read_framing, held) = SyncResponse::decode_paged(&bytes, phone_held.as_ref()).unwrap();
            assert_eq!(&read, page);
            assert_eq!((read_framing.context, read_framing.kept), (server_kept.as_ref().map(|c| c.id), Some(id)));
            assert_eq!(held, kept, "both sides keep the same bytes");
            // The pages so far, up to PAGE_CONTEXT_BYTES of them.
            sent += page.encode().len() - 6;
            assert_eq!(held.as_ref().unwrap().len(), sent.min(PAGE_CONTEXT_BYTES), "the pages so far are kept whole");
            if i > 0 {
                cold_bytes += page.encode_for(answer, accept).len();
                warm_bytes += bytes.len();
                // A frame made against the context names its own dictionary.
                assert_eq!(zstd::zstd_safe::get_dict_id_from_frame(&bytes[6 + 16..]), std::num::NonZeroU32::new(server_kept.as_ref().unwrap().dict_id()));
            }
            (server_kept, phone_held) = (kept, held);
        }
        // Measured (seeded, so exact): 7,332 B cold, 6,656 B against the page before; these
        // notes share a small vocabulary that a cold page soon learns (`bench-2g`'s, -22%).
        assert!((warm_bytes as f64) < 0.95 * cold_bytes as f64, "{warm_bytes} B against the page before, {cold_bytes} B cold");
        // The tail only, of a page larger than that, or of pages that add up to more.
        let big = PageContext::of(1, &vec![7; PAGE_CONTEXT_BYTES + 10]);
        assert_eq!(big.len(), PAGE_CONTEXT_BYTES);
        let small = PageContext::of(2, &[1, 2, 3]);
        let next = PageContext::after(Some(&small), 3, &vec![9; PAGE_CONTEXT_BYTES - 1]);
        assert_eq!((next.len(), next.tail[0], next.tail[1]), (PAGE_CONTEXT_BYTES, 3, 9), "the last byte before, then the page");
    }

    #[test]
    fn an_answer_against_a_context_the_phone_does_not_hold_is_refused() {
        let accept = FLAG_ZSTD | FLAG_RECORDS_DICT | FLAG_SLOW_LINK | FLAG_PAGE_CONTEXT;
        let records = varied_case_records(60, 8);
        let first = SyncResponse { pull: records[..30].to_vec(), more: true, ..Default::default() };
        let second = SyncResponse { pull: records[30..].to_vec(), ..Default::default() };
        let (_, kept) = first.encode_paged(Framing { kept: Some(5), ..Framing::ZSTD_DICT }, accept, None);
        let kept = kept.unwrap();
        let (bytes, none) = second.encode_paged(Framing::ZSTD_DICT, accept, Some(&kept));
        assert!(none.is_none(), "kept only when the framing names an id");
        assert_eq!(SyncResponse::decode_paged(&bytes, Some(&kept)).unwrap().0, second);
        let refused = |held: Option<&PageContext>| matches!(SyncResponse::decode_paged(&bytes, held), Err(WireError::Malformed(_)));
        assert!(refused(None), "no context held");
        assert!(refused(Some(&PageContext { id: 6, ..kept.clone() })), "another context");
        // The same id over other bytes (a bug on one side): zstd's checksum refuses it.
        let mut other = kept.clone();
        other.tail.iter_mut().for_each(|b| *b ^= 0x55);
        assert!(refused(Some(&other)));
        // Read as a request, the context is only a name: the server holds the phone's, not this.
        let named = SyncRequest { cursor: vec![1], ..Default::default() }.encode_as(Framing { context: Some(42), ..Framing::ZSTD_DICT });
        assert_eq!(named[5] & FRAME_CONTEXT, FRAME_CONTEXT);
        assert_eq!(SyncRequest::decode_framed(&named).unwrap().1.context, Some(42));
        // A context's id cut short.
        let cut = [MAGIC.as_slice(), &[PROTOCOL_VERSION, FRAME_KEPT, 1, 2, 3]].concat();
        assert!(matches!(SyncResponse::decode(&cut), Err(WireError::Malformed(_))));
        // Its Debug never shows the bytes (they are records).
        assert_eq!(format!("{kept:?}"), format!("PageContext(0x5, {} B)", kept.len()));
    }

    #[test]
    fn compression_pays_on_repetitive_records() {
        let resp = sample_response();
        let plain = resp.encode_as(Framing::PLAIN).len();
        let packed = resp.encode_as(Framing::ZSTD).len();
        assert!(packed * 2 < plain, "zstd {packed} vs plain {plain}");
    }

    #[test]
    fn a_noop_request_is_tiny() {
        let r = SyncRequest { cursor: vec![0; 16], page_bytes: 64 * 1024, accept: FLAG_ZSTD, ..Default::default() };
        assert!(r.encode().len() < 40, "{}", r.encode().len());
    }

    #[test]
    fn a_compression_bomb_is_refused_without_inflating_it() {
        // 64 MiB of zeros compress to a few KiB; the decoder stops at the page limit.
        let zeros = vec![0u8; 64 * 1024 * 1024];
        let bomb = [MAGIC.as_slice(), &[2, FLAG_ZSTD], &zstd::bulk::compress(&zeros, 3).unwrap()].concat();
        assert!(bomb.len() < 64 * 1024, "{}", bomb.len());
        assert_eq!(SyncRequest::decode(&bomb), Err(WireError::Bomb));
        let garbage = [MAGIC.as_slice(), &[2, FLAG_ZSTD], b"not zstd at all"].concat();
        assert!(matches!(SyncRequest::decode(&garbage), Err(WireError::Malformed(_))));
        let flags = [MAGIC.as_slice(), &[2, 0x80], b"x"].concat();
        assert!(matches!(SyncRequest::decode(&flags), Err(WireError::Malformed(_))));
    }

    #[test]
    fn bad_bodies_are_refused_with_a_reason() {
        assert_eq!(SyncRequest::decode(b""), Err(WireError::Empty));
        assert_eq!(SyncRequest::decode(b"hello world"), Err(WireError::BadMagic));
        let mut v = sample().encode();
        v[4] = 9;
        assert_eq!(SyncRequest::decode(&v), Err(WireError::Version { found: 9 }));
        for framing in [Framing::PLAIN, Framing::ZSTD, Framing::ZSTD_DICT, Framing::plain(1)] {
            let full = sample().encode_as(framing);
            for cut in 5..full.len() {
                assert!(matches!(SyncRequest::decode(&full[..cut]), Err(WireError::Malformed(_))), "cut at {cut} in {framing:?}");
            }
        }
        let mut extra = sample().encode();
        extra.push(0);
        assert!(matches!(SyncRequest::decode(&extra), Err(WireError::Malformed(_))));
        let huge = vec![0u8; MAX_MESSAGE_BYTES + 1];
        assert_eq!(SyncRequest::decode(&huge), Err(WireError::TooLarge(MAX_MESSAGE_BYTES + 1)));
    }
}
