//! A bound on what Automerge bytes inflate to, checked before Automerge sees them.
//!
//! Automerge deflates two things: whole change chunks (chunk type 2) and columns of document
//! chunks (a flag in each column's spec). It inflates them with no limit, so a 4 MiB push could
//! become gigabytes inside the server. [`check_inflation`] walks the chunk headers and the
//! document column metadata (the storage format of the Automerge binary spec), inflates each
//! deflated part through a bound, and refuses the bytes once the total passes it. It accepts
//! what phones send (documents, changes, compressed changes) and refuses anything it cannot
//! walk, so Automerge never parses bytes this check did not account for.

use std::io::Read;

const MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];
const DOCUMENT: u8 = 0;
const CHANGE: u8 = 1;
const COMPRESSED_CHANGE: u8 = 2;
/// A column spec's "deflated" flag.
const DEFLATE_BIT: u64 = 0b1000;

/// The most a record's bytes (a push, a stored document) may inflate to.
pub const MAX_INFLATED_BYTES: usize = 32 * 1024 * 1024;
/// The most all the records pushed in one sync request may inflate to together: a request of
/// many records each just under [`MAX_INFLATED_BYTES`] would otherwise cost gigabytes of work.
pub const MAX_INFLATED_PER_REQUEST: usize = 64 * 1024 * 1024;

/// Why bytes were refused before Automerge parsed them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InflateError {
    #[error("the changes would inflate to more than {0} bytes")]
    TooLarge(usize),
    #[error("not Automerge data in the form phones send ({0})")]
    Unreadable(&'static str),
}

/// Checks that `bytes` (one or more Automerge chunks) inflate to at most `limit` bytes in all.
pub fn check_inflation(bytes: &[u8], limit: usize) -> Result<usize, InflateError> {
    let mut rest = bytes;
    let mut total = 0usize;
    while !rest.is_empty() {
        if rest.len() < 9 || rest[..4] != MAGIC {
            return Err(InflateError::Unreadable("bad chunk header"));
        }
        let chunk_type = rest[8];
        rest = &rest[9..];
        let len = usize::try_from(leb128(&mut rest)?).map_err(|_| InflateError::Unreadable("chunk length"))?;
        let data = take(&mut rest, len)?;
        let room = limit.saturating_sub(total);
        total += match chunk_type {
            DOCUMENT => document_size(data, room)?,
            CHANGE => data.len(),
            COMPRESSED_CHANGE => inflate(data, room)?,
            _ => return Err(InflateError::Unreadable("unsupported chunk type")),
        };
        if total > limit {
            return Err(InflateError::TooLarge(limit));
        }
    }
    Ok(total)
}

/// The inflated size of a document chunk's body: its prefix plus each column, inflating the
/// deflated ones through the bound.
fn document_size(data: &[u8], room: usize) -> Result<usize, InflateError> {
    let mut i = data;
    let actors = leb128(&mut i)?;
    for _ in 0..actors {
        let n = leb128(&mut i)?;
        take(&mut i, usize::try_from(n).map_err(|_| InflateError::Unreadable("actor"))?)?;
    }
    let heads = leb128(&mut i)?;
    take(&mut i, usize::try_from(heads.saturating_mul(32)).map_err(|_| InflateError::Unreadable("heads"))?)?;
    let mut columns = Vec::new();
    for _ in 0..2 {
        // change metadata columns, then op columns: (spec, length) pairs
        let n = leb128(&mut i)?;
        for _ in 0..n {
            let spec = leb128(&mut i)?;
            let len = usize::try_from(leb128(&mut i)?).map_err(|_| InflateError::Unreadable("column length"))?;
            columns.push((spec, len));
        }
    }
    let mut size = data.len() - i.len();
    for (spec, len) in columns {
        let column = take(&mut i, len)?;
        size += if spec & DEFLATE_BIT != 0 { inflate(column, room.saturating_sub(size))? } else { len };
        if size > room {
            return Err(InflateError::TooLarge(room));
        }
    }
    Ok(size + i.len())
}

/// Inflates raw DEFLATE data through `room` bytes: more is refused without being produced.
fn inflate(data: &[u8], room: usize) -> Result<usize, InflateError> {
    let mut sink = std::io::sink();
    let n = std::io::copy(&mut flate2::bufread::DeflateDecoder::new(data).take(room as u64 + 1), &mut sink)
        .map_err(|_| InflateError::Unreadable("bad deflate data"))?;
    if n > room as u64 {
        return Err(InflateError::TooLarge(room));
    }
    Ok(n as usize)
}

fn take<'a>(input: &mut &'a [u8], n: usize) -> Result<&'a [u8], InflateError> {
    if input.len() < n {
        return Err(InflateError::Unreadable("truncated"));
    }
    let (head, tail) = input.split_at(n);
    *input = tail;
    Ok(head)
}

/// Unsigned LEB128, at most 10 bytes.
fn leb128(input: &mut &[u8]) -> Result<u64, InflateError> {
    let mut value = 0u64;
    for (n, byte) in input.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * n);
        if byte & 0x80 == 0 {
            *input = &input[n + 1..];
            return Ok(value);
        }
    }
    Err(InflateError::Unreadable("bad LEB128 number"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{doc, RecordKind};
    use automerge::{transaction::Transactable, ActorId, AutoCommit, ObjId};
    use std::io::Write;

    fn record() -> AutoCommit {
        doc::new_record(RecordKind::NewsItem, &serde_json::json!({"commune": "04701", "published_on": "2025-01-01"}), ActorId::random()).unwrap()
    }

    #[test]
    fn what_phones_send_passes_in_every_form() {
        let mut d = record();
        let before = d.get_heads();
        for i in 0..40 {
            // Long values make Automerge deflate columns and changes.
            d.put(ObjId::Root, "title", "tin bình đẳng giới ".repeat(20 + i)).unwrap();
        }
        for (bytes, whole) in [(d.save(), true), (d.save_nocompress(), true), (d.save_after(&before), false), ([d.save(), d.save_after(&before)].concat(), true)] {
            let size = check_inflation(&bytes, MAX_INFLATED_BYTES).expect("a real document");
            assert!(size + 200 >= bytes.len(), "{size} for {} bytes", bytes.len());
            if whole {
                AutoCommit::load(&bytes).unwrap();
            }
        }
        // Deflated forms really were exercised, and counted at their inflated size.
        assert!(d.save().len() < d.save_nocompress().len());
        assert!(check_inflation(&d.save(), MAX_INFLATED_BYTES).unwrap() > d.save().len());
    }

    /// A compressed change chunk whose body inflates to `n` zero bytes (Automerge would reject
    /// it after inflating: the point is that it must never get to inflate it).
    fn compressed_chunk(n: usize) -> Vec<u8> {
        let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..n >> 20 {
            enc.write_all(&zeros).unwrap();
        }
        let body = enc.finish().unwrap();
        let mut out = MAGIC.to_vec();
        out.extend([0, 0, 0, 0, COMPRESSED_CHANGE]);
        let mut len = body.len() as u64;
        loop {
            let b = (len & 0x7f) as u8;
            len >>= 7;
            out.push(if len > 0 { b | 0x80 } else { b });
            if len == 0 {
                break;
            }
        }
        out.extend(body);
        out
    }

    #[test]
    fn a_bomb_is_refused_before_it_inflates() {
        let bomb = compressed_chunk(256 << 20);
        assert!(bomb.len() < 512 * 1024, "{}", bomb.len());
        assert_eq!(check_inflation(&bomb, MAX_INFLATED_BYTES), Err(InflateError::TooLarge(MAX_INFLATED_BYTES)));
        // Within the bound it is only counted (Automerge then refuses it as a change).
        assert_eq!(check_inflation(&compressed_chunk(1 << 20), MAX_INFLATED_BYTES), Ok(1 << 20));
    }

    #[test]
    fn bytes_it_cannot_walk_are_refused() {
        let good = record().save();
        assert!(matches!(check_inflation(&good[..good.len() - 3], MAX_INFLATED_BYTES), Err(InflateError::Unreadable(_))));
        assert!(matches!(check_inflation(b"not automerge", MAX_INFLATED_BYTES), Err(InflateError::Unreadable(_))));
        let mut bundle = good.clone();
        bundle[8] = 3;
        assert!(matches!(check_inflation(&bundle, MAX_INFLATED_BYTES), Err(InflateError::Unreadable(_))));
        assert_eq!(check_inflation(&[], MAX_INFLATED_BYTES), Ok(0));
    }
}
