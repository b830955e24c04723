//! Temporary keys: where a big key is built on the target before it is
//! renamed over the real key, and how leftovers are found and removed.
//!
//! A temporary key must live in the same hash slot as the key (RENAME
//! between slots fails on a cluster). Wrapping the key in braces does not
//! work for every key (`a}b` has no valid tag; `x{y}z` would hash `y`
//! anyway), so the name carries a short tag chosen for its CRC16: for every
//! slot there is a tag of at most four characters that hashes to it
//! ([`slot_tag`]).
//!
//! Names are `redis-ferry:tmp:<job>:{<tag>}:<hash of the key>`: a fixed
//! prefix and the job's label, so [`cleanup_temp_keys`] finds them with
//! `SCAN MATCH`, and a deterministic tail, so copying the same key again
//! (after a crash, `resume`) starts by replacing the same temporary key.
//! Every temporary key also has a safety TTL, refreshed while it is built:
//! one that a crash leaves behind expires by itself even if nobody cleans.

use std::sync::OnceLock;

use anyhow::{Context, Result};
use redis::Value;

use super::reply::{byte_items, items, text};
use crate::cluster::{SLOTS, key_slot};
use crate::side::Side;

/// Every temporary key starts with this.
pub const TEMP_PREFIX: &str = "redis-ferry:tmp:";

/// A tag string for every slot (index = slot).
fn slot_tags() -> &'static [String] {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    TAGS.get_or_init(|| {
        let mut tags: Vec<Option<String>> = vec![None; SLOTS];
        let mut missing = SLOTS;
        let mut candidate: u64 = 0;
        while missing > 0 {
            let tag = base36(candidate);
            let slot = key_slot(tag.as_bytes()) as usize;
            if tags[slot].is_none() {
                tags[slot] = Some(tag);
                missing -= 1;
            }
            candidate += 1;
        }
        tags.into_iter()
            .map(|tag| tag.expect("filled above"))
            .collect()
    })
}

fn base36(mut n: u64) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).expect("ASCII digits")
}

/// A short string whose CRC16 hash slot is `slot`.
pub fn slot_tag(slot: u16) -> &'static str {
    &slot_tags()[slot as usize % SLOTS]
}

/// The job's label as it appears in names: letters, digits, `-` and `_`
/// (no glob character, no brace).
fn label(job: &str) -> String {
    job.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The temporary name for `key` in job `job`: same slot, recognisable prefix.
pub fn temp_key_name(job: &str, key: &[u8]) -> Vec<u8> {
    let tag = slot_tag(key_slot(key));
    format!("{TEMP_PREFIX}{}:{{{tag}}}:{:016x}", label(job), fnv1a(key)).into_bytes()
}

/// Whether `key` is one of redis-ferry's temporary keys.
pub fn is_temp_key(key: &[u8]) -> bool {
    key.starts_with(TEMP_PREFIX.as_bytes())
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Deletes (`UNLINK`) the temporary keys of job `job` (or of every job, with
/// `None`) from every primary of the target, in databases `dbs` (db 0 on a
/// cluster). Returns how many were removed. Call it when a job resumes:
/// a crash in the middle of a big key leaves its temporary key behind
/// (its safety TTL would remove it later anyway).
pub fn cleanup_temp_keys(target: &mut Side, dbs: &[i64], job: Option<&str>) -> Result<u64> {
    let pattern = match job {
        Some(job) => format!("{TEMP_PREFIX}{}:*", label(job)),
        None => format!("{TEMP_PREFIX}*"),
    };
    let dbs: Vec<i64> = if target.is_cluster() {
        vec![0]
    } else {
        dbs.to_vec()
    };
    let mut removed = 0;
    for address in target.primary_addresses() {
        for &db in &dbs {
            removed += cleanup_node(target, &address, db, &pattern)
                .with_context(|| format!("cannot remove temporary keys from {address} db {db}"))?;
        }
    }
    Ok(removed)
}

fn cleanup_node(target: &mut Side, address: &str, db: i64, pattern: &str) -> Result<u64> {
    let connection = target.connection(address)?;
    connection.select(db);
    let mut cursor = "0".to_string();
    let mut removed = 0;
    loop {
        let reply = connection.command(
            redis::cmd("SCAN")
                .arg(&cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(1000),
        )?;
        let mut parts = items(reply, "SCAN")?.into_iter();
        cursor = text(parts.next().unwrap_or(Value::Nil), "SCAN")?;
        let keys = byte_items(parts.next().unwrap_or(Value::Nil), "SCAN")?;
        if !keys.is_empty() {
            let deleted = connection.command(redis::cmd("UNLINK").arg(&keys))?;
            removed += super::reply::int(deleted, "UNLINK")? as u64;
        }
        if cursor == "0" {
            return Ok(removed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_slot_has_a_short_tag_that_hashes_to_it() {
        for slot in 0..SLOTS as u16 {
            let tag = slot_tag(slot);
            assert!(tag.len() <= 4, "slot {slot}: {tag}");
            assert_eq!(key_slot(tag.as_bytes()), slot);
        }
    }

    #[test]
    fn temporary_names_share_the_key_slot_even_without_a_valid_tag() {
        let keys: [&[u8]; 6] = [
            b"plain",
            b"a}b",
            b"{user1}:cart",
            b"x{}y",
            b"}{",
            b"\xff\x00{\xfe}",
        ];
        for key in keys {
            let temp = temp_key_name("job-1", key);
            assert_eq!(key_slot(&temp), key_slot(key), "{key:?}");
            assert!(is_temp_key(&temp));
            assert!(temp.starts_with(b"redis-ferry:tmp:job-1:{"));
        }
        assert_eq!(temp_key_name("j", b"k"), temp_key_name("j", b"k"));
        assert_ne!(temp_key_name("j", b"k"), temp_key_name("j", b"l"));
    }

    #[test]
    fn job_labels_hold_no_glob_or_brace() {
        let temp = String::from_utf8(temp_key_name("2026-01-01T00:00:00Z *{x}", b"k")).unwrap();
        assert!(
            temp.starts_with("redis-ferry:tmp:2026-01-01T00_00_00Z___x_:{"),
            "{temp}"
        );
    }
}
