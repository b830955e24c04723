//! Small values compared as data, read whole in one pipeline per side.
//!
//! Used for keys whose DUMP payloads differ although both are small (under
//! [`DUMP_MAX_BYTES`](super::compare::DUMP_MAX_BYTES)): the same value can
//! be encoded differently on two servers. Sets and hashes are sorted before
//! comparing (their iteration order is the server's business); scores are
//! compared as numbers, not as text.

use anyhow::{Result, bail};
use redis::Value;

use super::reply::{Dbs, Sides, byte_pairs, items, on_both, some_bytes, unreadable_text};
use super::reply::{bytes, shown};
use crate::connection::{classify, error_text};
use crate::route::{Step, route_rounds, step_for_error};
use crate::side::Side;

/// A whole value, normalised for comparison.
#[derive(Debug, Clone, PartialEq)]
pub enum Whole {
    String(Vec<u8>),
    List(Vec<Vec<u8>>),
    /// Sorted members.
    Set(Vec<Vec<u8>>),
    /// (member, score), sorted by member.
    ZSet(Vec<(Vec<u8>, f64)>),
    /// (field, value), sorted by field.
    Hash(Vec<(Vec<u8>, Vec<u8>)>),
    /// Deleted between the probe and this read.
    Gone,
}

type PerKey<T> = std::result::Result<T, String>;

/// Reads `keys` (name, type) whole on both sides and compares them:
/// `Ok(None)` equal, `Ok(Some(detail))` different, `Err` unreadable.
pub fn compare_round(
    sides: &mut Sides,
    dbs: Dbs,
    keys: &[(&[u8], &str)],
) -> Result<Vec<PerKey<Option<String>>>> {
    let (source, target) = on_both(
        sides,
        |side| read(side, dbs.source, keys),
        |side| read(side, dbs.target, keys),
    );
    Ok(source?
        .into_iter()
        .zip(target?)
        .map(|(s, t)| Ok(difference(&s?, &t?)))
        .collect())
}

fn read(side: &mut Side, db: i64, keys: &[(&[u8], &str)]) -> Result<Vec<PerKey<Whole>>> {
    let role = side.role();
    let addresses = keys
        .iter()
        .map(|(key, _)| side.address_for_key(key))
        .collect();
    let values = route_rounds(
        side,
        db,
        addresses,
        |pipe, i| {
            let (key, key_type) = keys[i];
            pipe.add_command(read_command(key, key_type));
            1
        },
        |i, replies| match replies {
            [Value::ServerError(error)] => {
                step_for_error(classify(error), || Err(error_text(error)))
            }
            [reply] => match parse(keys[i].1, std::mem::replace(reply, Value::Nil)) {
                Ok(value) => Step::Done(Ok(value)),
                Err(error) => Step::Fatal(format!("{error:#}")),
            },
            other => Step::Fatal(format!("expected 1 reply, got {}", other.len())),
        },
    )?;
    Ok(values
        .into_iter()
        .map(|value| value.map_err(|text| unreadable_text(role, &text)))
        .collect())
}

fn read_command(key: &[u8], key_type: &str) -> redis::Cmd {
    let mut command = redis::Cmd::new();
    match key_type {
        "string" => command.arg("GET").arg(key),
        "list" => command.arg("LRANGE").arg(key).arg(0).arg(-1),
        "set" => command.arg("SMEMBERS").arg(key),
        "zset" => command
            .arg("ZRANGE")
            .arg(key)
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES"),
        _ => command.arg("HGETALL").arg(key),
    };
    command
}

fn parse(key_type: &str, reply: Value) -> Result<Whole> {
    if reply == Value::Nil {
        return Ok(Whole::Gone);
    }
    Ok(match key_type {
        "string" => Whole::String(some_bytes(reply, "GET")?),
        "list" => Whole::List(byte_list(reply, "LRANGE")?),
        "set" => {
            let mut members = byte_list(reply, "SMEMBERS")?;
            members.sort_unstable();
            Whole::Set(members)
        }
        "zset" => {
            let mut scored = Vec::new();
            for (member, score) in byte_pairs(reply, "ZRANGE")? {
                scored.push((member, parse_score(&score)?));
            }
            scored.sort_by(|a, b| a.0.cmp(&b.0));
            Whole::ZSet(scored)
        }
        _ => {
            let mut pairs = byte_pairs(reply, "HGETALL")?;
            pairs.sort_unstable();
            Whole::Hash(pairs)
        }
    })
}

fn byte_list(reply: Value, what: &str) -> Result<Vec<Vec<u8>>> {
    items(reply, what)?
        .into_iter()
        .map(|item| some_bytes(item, what))
        .collect()
}

/// A score as Redis writes it (`1.5`, `1e+10`, `inf`, `-inf`).
pub fn parse_score(text: &[u8]) -> Result<f64> {
    let text = String::from_utf8_lossy(text);
    match text.trim().parse::<f64>() {
        Ok(score) => Ok(score),
        Err(_) => bail!("a score came back as {text:?}, which is not a number"),
    }
}

/// A score reply that may be nil (ZSCORE / ZMSCORE of a missing member).
pub fn optional_score(reply: Value, what: &str) -> Result<Option<f64>> {
    bytes(reply, what)?.map(|b| parse_score(&b)).transpose()
}

/// `None` when equal, else what differs (no values, only names and counts).
pub fn difference(source: &Whole, target: &Whole) -> Option<String> {
    match (source, target) {
        (Whole::String(s), Whole::String(t)) => {
            string_length_difference(s.len(), t.len()).or_else(|| string_difference(s, t, 0))
        }
        (Whole::List(s), Whole::List(t)) => list_difference(s, t, 0),
        (Whole::Set(s), Whole::Set(t)) => count_difference("set", "members", s.len(), t.len())
            .or_else(|| {
                s.iter()
                    .find(|member| t.binary_search(member).is_err())
                    .map(|member| format!("set member {} is missing on the target", shown(member)))
            }),
        (Whole::ZSet(s), Whole::ZSet(t)) => count_difference("zset", "members", s.len(), t.len())
            .or_else(|| {
                s.iter().find_map(|(member, score)| {
                    let found = t
                        .binary_search_by(|(m, _)| m.as_slice().cmp(member))
                        .ok()
                        .map(|i| t[i].1);
                    score_difference(member, *score, found)
                })
            }),
        (Whole::Hash(s), Whole::Hash(t)) => count_difference("hash", "fields", s.len(), t.len())
            .or_else(|| {
                s.iter().find_map(|(field, value)| {
                    let found = t
                        .binary_search_by(|(f, _)| f.as_slice().cmp(field))
                        .ok()
                        .map(|i| &t[i].1);
                    field_difference(field, value, found)
                })
            }),
        (Whole::Gone, _) | (_, Whole::Gone) => {
            Some("the key changed while it was compared".to_string())
        }
        _ => Some("the key changed type while it was compared".to_string()),
    }
}

/// "hash has 3 fields on the source, 2 on the target".
pub fn count_difference(kind: &str, unit: &str, source: usize, target: usize) -> Option<String> {
    (source != target)
        .then(|| format!("{kind} has {source} {unit} on the source, {target} on the target"))
}

/// "string is 100 bytes on the source, 7 on the target".
pub fn string_length_difference(source: usize, target: usize) -> Option<String> {
    (source != target)
        .then(|| format!("string is {source} bytes on the source, {target} on the target"))
}

/// Strings compared window by window: `offset` is where `source` starts.
pub fn string_difference(source: &[u8], target: &[u8], offset: usize) -> Option<String> {
    if source == target {
        return None;
    }
    let at = source
        .iter()
        .zip(target)
        .position(|(s, t)| s != t)
        .unwrap_or(source.len().min(target.len()));
    Some(format!("string differs from byte {}", offset + at))
}

/// Lists compared window by window: `offset` is the first element's index.
pub fn list_difference(source: &[Vec<u8>], target: &[Vec<u8>], offset: usize) -> Option<String> {
    if offset == 0 && source.len() != target.len() {
        return count_difference("list", "elements", source.len(), target.len());
    }
    let at = source
        .iter()
        .zip(target)
        .position(|(s, t)| s != t)
        .or_else(|| (source.len() != target.len()).then(|| source.len().min(target.len())))?;
    Some(format!("list element {} differs", offset + at))
}

pub fn field_difference(field: &[u8], source: &[u8], target: Option<&Vec<u8>>) -> Option<String> {
    match target {
        None => Some(format!(
            "hash field {} is missing on the target",
            shown(field)
        )),
        Some(value) if value.as_slice() != source => {
            Some(format!("hash field {} differs", shown(field)))
        }
        Some(_) => None,
    }
}

pub fn score_difference(member: &[u8], source: f64, target: Option<f64>) -> Option<String> {
    match target {
        None => Some(format!(
            "zset member {} is missing on the target",
            shown(member)
        )),
        // Exact: a score is a double on both sides and travels losslessly.
        Some(score) if score != source => {
            Some(format!("score of zset member {} differs", shown(member)))
        }
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(text: &str) -> Vec<u8> {
        text.as_bytes().to_vec()
    }

    #[test]
    fn equal_values_in_another_order_are_equal() {
        let source = parse(
            "hash",
            Value::Array(vec![
                Value::BulkString(v("b")),
                Value::BulkString(v("2")),
                Value::BulkString(v("a")),
                Value::BulkString(v("1")),
            ]),
        )
        .unwrap();
        let target = Whole::Hash(vec![(v("a"), v("1")), (v("b"), v("2"))]);
        assert_eq!(difference(&source, &target), None);
        let set_a = parse(
            "set",
            Value::Array(vec![Value::BulkString(v("y")), Value::BulkString(v("x"))]),
        )
        .unwrap();
        assert_eq!(difference(&set_a, &Whole::Set(vec![v("x"), v("y")])), None);
    }

    #[test]
    fn differences_name_the_field_member_or_element_but_never_the_value() {
        let s = Whole::Hash(vec![(v("f1"), v("secret")), (v("f2"), v("x"))]);
        let t = Whole::Hash(vec![(v("f1"), v("other")), (v("f2"), v("x"))]);
        assert_eq!(
            difference(&s, &t).as_deref(),
            Some("hash field \"f1\" differs")
        );
        let t = Whole::Hash(vec![(v("f1"), v("secret"))]);
        assert_eq!(
            difference(&s, &t).as_deref(),
            Some("hash has 2 fields on the source, 1 on the target")
        );
        let list = difference(
            &Whole::List(vec![v("a"), v("b")]),
            &Whole::List(vec![v("a"), v("c")]),
        );
        assert_eq!(list.as_deref(), Some("list element 1 differs"));
        let string = difference(&Whole::String(v("hello")), &Whole::String(v("help!")));
        assert_eq!(string.as_deref(), Some("string differs from byte 3"));
        let short = difference(&Whole::String(v("hello")), &Whole::String(v("hell")));
        assert_eq!(
            short.as_deref(),
            Some("string is 5 bytes on the source, 4 on the target")
        );
    }

    #[test]
    fn scores_compare_as_numbers() {
        assert_eq!(parse_score(b"1e10").unwrap(), 10_000_000_000.0);
        assert_eq!(parse_score(b"10000000000").unwrap(), 10_000_000_000.0);
        assert_eq!(parse_score(b"-inf").unwrap(), f64::NEG_INFINITY);
        let s = Whole::ZSet(vec![(v("m"), 1.5)]);
        assert_eq!(difference(&s, &Whole::ZSet(vec![(v("m"), 1.5)])), None);
        assert_eq!(
            difference(&s, &Whole::ZSet(vec![(v("m"), 2.0)])).as_deref(),
            Some("score of zset member \"m\" differs")
        );
        assert_eq!(
            difference(&s, &Whole::ZSet(vec![(v("n"), 1.5)])).as_deref(),
            Some("zset member \"m\" is missing on the target")
        );
    }
}
