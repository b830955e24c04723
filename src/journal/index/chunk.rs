//! The on-disk form of a sorted run of the key index: chunks of about one
//! page, each a row of `key_hash_chunks` holding entries (40-bit key hash,
//! seq) in hash order as varints, hashes as differences from the previous
//! one (the chunk's first hash is a column of its own). At a hundred
//! million keys the differences take about two bytes and the seqs four.
//! Reading a chunk: whole, for merges ([`read`]), or only as far as one
//! hash, for lookups ([`find`]).

use anyhow::{Context, Result, bail};
use rusqlite::{Connection, params};

/// A chunk's encoded entries stay below this, so a chunk and its row fit
/// in one 4 KB page (SQLite keeps rows of up to 4061 bytes on the page; the
/// row's other columns and header take about 20).
pub const CHUNK_BYTES: usize = 4000;

/// The longest varint of a u64.
const MAX_VARINT: usize = 10;

/// Collects entries until the next one might not fit.
#[derive(Debug, Default)]
pub struct ChunkWriter {
    first_hash: Option<u64>,
    previous: u64,
    bytes: Vec<u8>,
}

impl ChunkWriter {
    /// Whether another entry is sure to fit.
    pub fn has_room(&self) -> bool {
        self.bytes.len() + 2 * MAX_VARINT <= CHUNK_BYTES
    }

    /// Appends an entry; hashes must not decrease.
    pub fn push(&mut self, hash: u64, seq: i64) {
        let first = *self.first_hash.get_or_insert(hash);
        let previous = if self.bytes.is_empty() {
            first
        } else {
            self.previous
        };
        debug_assert!(hash >= previous, "entries arrive in hash order");
        put_varint(&mut self.bytes, hash - previous);
        put_varint(&mut self.bytes, seq as u64);
        self.previous = hash;
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The chunk's first hash and encoded entries; the writer starts over.
    pub fn take(&mut self) -> (u64, Vec<u8>) {
        let first = self.first_hash.take().unwrap_or(0);
        (first, std::mem::take(&mut self.bytes))
    }
}

/// Calls `each(hash, seq)` for the chunk's entries in order until it
/// returns false.
pub fn decode(first_hash: u64, bytes: &[u8], mut each: impl FnMut(u64, i64) -> bool) -> Result<()> {
    let mut position = 0;
    let mut hash = first_hash;
    while position < bytes.len() {
        hash += get_varint(bytes, &mut position)?;
        let seq = get_varint(bytes, &mut position)? as i64;
        if !each(hash, seq) {
            break;
        }
    }
    Ok(())
}

/// Calls `found(seq)` for the entries of chunk `id` with `hash`. Faster
/// than [`read`] for a lookup (nearly always of a hash the chunk does not
/// hold): it stops past the hash and skips over the seqs before it.
pub fn find(connection: &Connection, id: i64, hash: u64, mut found: impl FnMut(i64)) -> Result<()> {
    with_chunk(connection, id, |mut entry, bytes| {
        let mut position = 0;
        while position < bytes.len() {
            entry += get_varint(bytes, &mut position)?;
            if entry > hash {
                break;
            }
            if entry == hash {
                found(get_varint(bytes, &mut position)? as i64);
            } else {
                skip_varint(bytes, &mut position);
            }
        }
        Ok(())
    })
}

/// Calls `each(hash, seq)` for the entries of chunk `id` in order until it
/// returns false.
pub fn read(connection: &Connection, id: i64, each: impl FnMut(u64, i64) -> bool) -> Result<()> {
    with_chunk(connection, id, |first, bytes| decode(first, bytes, each))
}

/// Reads chunk `id` and hands its first hash and encoded entries to `use_chunk`.
fn with_chunk(
    connection: &Connection,
    id: i64,
    use_chunk: impl FnOnce(u64, &[u8]) -> Result<()>,
) -> Result<()> {
    let mut statement = connection
        .prepare_cached("SELECT first_hash, entries FROM key_hash_chunks WHERE id = ?1")?;
    let mut rows = statement.query(params![id])?;
    let row = rows
        .next()?
        .with_context(|| format!("the journal's key index lacks chunk {id}"))?;
    use_chunk(row.get::<_, i64>(0)? as u64, row.get_ref(1)?.as_blob()?)
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Moves past one varint (a truncated one is caught by the next read).
fn skip_varint(bytes: &[u8], position: &mut usize) {
    while bytes.get(*position).is_some_and(|&byte| byte >= 0x80) {
        *position += 1;
    }
    *position += 1;
}

#[inline]
fn get_varint(bytes: &[u8], position: &mut usize) -> Result<u64> {
    let mut value = 0u64;
    let mut shift = 0;
    while let Some(&byte) = bytes.get(*position) {
        *position += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Ok(value);
        }
        shift += 7;
        if shift > 63 {
            bail!("the journal's key index holds a malformed chunk");
        }
    }
    bail!(
        "the journal's key index holds a truncated chunk; it is rebuilt from the key rows if you delete the rows of key_hash_runs and key_hash_chunks"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_come_back_in_order_and_fill_about_a_page() {
        let mut writer = ChunkWriter::default();
        let mut written = Vec::new();
        let mut hash = 1u64 << 39;
        let mut seq = 1i64;
        while writer.has_room() {
            hash += (seq as u64 * 7919) % 20_000;
            seq += 97;
            writer.push(hash, seq);
            written.push((hash, seq));
        }
        let (first, bytes) = writer.take();
        assert!(bytes.len() <= CHUNK_BYTES && bytes.len() > CHUNK_BYTES - 2 * MAX_VARINT);
        assert!(writer.is_empty());
        let mut read = Vec::new();
        decode(first, &bytes, |h, s| {
            read.push((h, s));
            true
        })
        .unwrap();
        assert_eq!(read, written);
    }

    #[test]
    fn find_returns_the_seqs_of_one_hash_and_nothing_for_others() {
        let connection = Connection::open_in_memory().unwrap();
        connection
            .execute_batch("CREATE TABLE key_hash_chunks (id INTEGER PRIMARY KEY, run INTEGER, first_hash INTEGER, entries BLOB)")
            .unwrap();
        let mut writer = ChunkWriter::default();
        for (hash, seq) in [(100, 1), (300, 7), (300, 90_000_000), (5_000_000, 2)] {
            writer.push(hash, seq);
        }
        let (first, bytes) = writer.take();
        connection
            .execute(
                "INSERT INTO key_hash_chunks (id, run, first_hash, entries) VALUES (1, 1, ?1, ?2)",
                params![first as i64, bytes],
            )
            .unwrap();
        let seqs_of = |hash| {
            let mut seqs = Vec::new();
            find(&connection, 1, hash, |seq| seqs.push(seq)).unwrap();
            seqs
        };
        assert_eq!(seqs_of(300), [7, 90_000_000]);
        assert_eq!(seqs_of(5_000_000), [2]);
        assert_eq!(seqs_of(100), [1]);
        assert!(
            seqs_of(200).is_empty() && seqs_of(99).is_empty() && seqs_of(u64::MAX >> 24).is_empty()
        );
    }

    #[test]
    fn equal_hashes_are_kept_apart() {
        let mut writer = ChunkWriter::default();
        writer.push(5, 10);
        writer.push(5, 11);
        writer.push(9, 3);
        let (first, bytes) = writer.take();
        let mut read = Vec::new();
        decode(first, &bytes, |h, s| {
            read.push((h, s));
            h < 5
        })
        .unwrap();
        assert_eq!(read, [(5, 10)], "decoding stops when asked");
    }
}
