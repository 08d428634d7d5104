//! The checksums of Automerge chunks, left out of a sync page and restored by the side that
//! reads it ([`crate::wire::FLAG_CHECKSUMS`]).
//!
//! Every Automerge chunk (a change, a document) begins with the 4 bytes `85 6f 4a 83`, then a
//! 4-byte checksum: the first bytes of the SHA-256 of the chunk's type, length and data. Those
//! 4 bytes are what no compressor squeezes: on `bench-2g`'s 1,200 varied case records, 6% of a
//! first sync. The reader can compute them again from the chunk itself, so a page carries them
//! as zeros. Only a checksum that is right is left out (so restoring it gives back the same
//! bytes), and only of a change or document chunk (a compressed change's checksum is of its
//! uncompressed form); a chunk whose checksum is wrong keeps it, and Automerge refuses it as
//! before. A restorer fills in only checksums that are zero.

use sha2::{Digest, Sha256};

const MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];
/// Chunk types whose checksum is of their own data: document and change.
const PLAIN_TYPES: [u8; 2] = [0, 1];

/// Leaves out (zeroes) the right checksums of the chunks in `bytes`, a run of Automerge
/// chunks; stops at the first bytes that are no chunk, leaving them as they are.
pub fn leave_out(bytes: &mut [u8]) {
    for chunk in chunks(bytes) {
        let right = checksum(bytes, &chunk);
        let sum = &mut bytes[chunk.at + 4..chunk.at + 8];
        if sum == right {
            sum.fill(0);
        }
    }
}

/// Restores the checksums [`leave_out`] zeroed in `bytes`.
pub fn restore(bytes: &mut [u8]) {
    for chunk in chunks(bytes) {
        if bytes[chunk.at + 4..chunk.at + 8] == [0; 4] {
            let right = checksum(bytes, &chunk);
            bytes[chunk.at + 4..chunk.at + 8].copy_from_slice(&right);
        }
    }
}

/// One chunk: where it starts, its type, where its data lies.
struct Chunk {
    at: usize,
    kind: u8,
    data: std::ops::Range<usize>,
}

/// The change and document chunks of `bytes`, in order, up to the first bytes that are no
/// whole chunk.
fn chunks(bytes: &[u8]) -> Vec<Chunk> {
    let mut out = Vec::new();
    let mut at = 0;
    while bytes.len() >= at + 9 && bytes[at..at + 4] == MAGIC {
        let kind = bytes[at + 8];
        let Some((len, used)) = uleb128(&bytes[at + 9..]) else { break };
        let start = at + 9 + used;
        let Some(end) = usize::try_from(len).ok().and_then(|len| start.checked_add(len)).filter(|end| *end <= bytes.len()) else { break };
        if PLAIN_TYPES.contains(&kind) {
            out.push(Chunk { at, kind, data: start..end });
        }
        at = end;
    }
    out
}

/// The checksum Automerge gives `chunk`: SHA-256 of its type, its data's length (LEB128) and
/// its data.
fn checksum(bytes: &[u8], chunk: &Chunk) -> [u8; 4] {
    let data = &bytes[chunk.data.clone()];
    let mut hasher = Sha256::new();
    hasher.update([chunk.kind]);
    let mut len = data.len() as u64;
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        hasher.update([if len == 0 { byte } else { byte | 0x80 }]);
        if len == 0 {
            break;
        }
    }
    hasher.update(data);
    let hash = hasher.finalize();
    [hash[0], hash[1], hash[2], hash[3]]
}

/// An unsigned LEB128 number at the start of `bytes`, and how many bytes it took.
fn uleb128(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, byte) in bytes.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::transaction::Transactable;
    use automerge::{AutoCommit, ReadDoc, ROOT};

    fn record(notes: &str) -> AutoCommit {
        let mut doc = AutoCommit::new();
        doc.put(ROOT, "kind", "gbv_case").unwrap();
        doc.put(ROOT, "notes", notes).unwrap();
        doc.commit();
        doc
    }

    #[test]
    fn left_out_and_restored_the_bytes_are_the_same() {
        let mut doc = record("một ghi chú");
        let first = doc.save_after(&[]);
        doc.put(ROOT, "notes", "ghi chú khác, dài hơn ".repeat(40)).unwrap();
        doc.commit();
        // A document (compressed columns), a run of two changes, one change.
        let (old, new) = ("một ghi chú".to_string(), doc.get(ROOT, "notes").unwrap().unwrap().0.as_str().unwrap().to_string());
        for (bytes, notes) in [(doc.save(), &new), (doc.save_after(&[]), &new), (first, &old)] {
            let mut sent = bytes.clone();
            leave_out(&mut sent);
            assert_ne!(sent, bytes);
            assert_eq!(chunks(&sent).iter().filter(|c| sent[c.at + 4..c.at + 8] == [0; 4]).count(), chunks(&bytes).len(), "every checksum left out");
            assert!(AutoCommit::load(&sent).is_err(), "Automerge refuses a chunk without its checksum");
            restore(&mut sent);
            assert_eq!(sent, bytes);
            assert_eq!(AutoCommit::load(&sent).unwrap().get(ROOT, "notes").unwrap().unwrap().0.as_str(), Some(notes.as_str()));
        }
    }

    #[test]
    fn a_wrong_checksum_and_bytes_that_are_no_chunk_stay_as_they_are() {
        let mut bytes = record("x").save_after(&[]);
        bytes[5] ^= 1;
        let wrong = bytes.clone();
        leave_out(&mut bytes);
        assert_eq!(bytes, wrong, "a wrong checksum is not left out");
        restore(&mut bytes);
        assert_eq!(bytes, wrong, "nor mended");
        for junk in [vec![], vec![0x85, 0x6f, 0x4a, 0x83, 0, 0, 0, 0, 1, 0xff], vec![7; 40]] {
            let mut same = junk.clone();
            leave_out(&mut same);
            restore(&mut same);
            assert_eq!(same, junk);
        }
        // A chunk whose length runs past the end: neither it nor what follows is touched.
        let mut cut = record("y").save_after(&[]);
        cut.truncate(cut.len() - 1);
        let before = cut.clone();
        leave_out(&mut cut);
        assert_eq!(cut, before);
    }
}
