//! Comparing one batch of keys between the source and the target.
//!
//! Cheapest first, both servers answering in parallel, one pipeline per
//! node per step:
//!
//! 1. **Probe**: `TYPE`, `PTTL` and `MEMORY USAGE` of every key on both
//!    sides. Settles keys gone from the source, missing on the target, of
//!    another type, and tells small values from big ones.
//! 2. **DUMP** of small values (both sides under [`DUMP_MAX_BYTES`]): equal
//!    payloads mean equal values. The RDB version and checksum at the end of
//!    a payload are left out, so servers of different versions that encode a
//!    value alike still compare equal.
//! 3. **Whole values** of small keys whose DUMPs differ: equal values can be
//!    encoded differently (listpack or hashtable, set order, ziplist from an
//!    older server), so `GET` / `LRANGE` / `SMEMBERS` / `ZRANGE` / `HGETALL`
//!    compare them as data ([`whole`](super::whole)).
//! 4. **Chunks** for big values, values whose size the server would not
//!    tell, and streams: never loaded whole ([`chunked`](super::chunked)).
//!
//! TTLs are compared from the probe: equal when both are persistent or
//! both within the tolerance.

use anyhow::Result;
use redis::Value;

use super::reply::{Dbs, Sides, key_level, on_both, server_error, unreadable_text};
use super::{chunked, whole};
use crate::connection::{classify, error_text};
use crate::copy::{Step, route_rounds, step_for_error};
use crate::side::Side;

/// Values whose `MEMORY USAGE` is above this on either side are compared in
/// chunks rather than with DUMP or whole reads.
pub const DUMP_MAX_BYTES: u64 = 512 * 1024;
/// DUMP payloads and whole values held at once, per side, at most about this.
const ROUND_BUDGET_BYTES: u64 = 16 * 1024 * 1024;

/// The kinds of difference, in the order the summary lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DiffKind {
    Missing,
    Type,
    Value,
    Ttl,
    /// On the target, not on the source (`--extra`).
    Extra,
    /// A key could not be read on one side (an ACL, for instance).
    Unreadable,
}

impl DiffKind {
    pub const ALL: [DiffKind; 6] = [
        DiffKind::Missing,
        DiffKind::Type,
        DiffKind::Value,
        DiffKind::Ttl,
        DiffKind::Extra,
        DiffKind::Unreadable,
    ];

    pub fn label(self) -> &'static str {
        match self {
            DiffKind::Missing => "missing on target",
            DiffKind::Type => "type differs",
            DiffKind::Value => "value differs",
            DiffKind::Ttl => "ttl differs",
            DiffKind::Extra => "only on target",
            DiffKind::Unreadable => "could not compare",
        }
    }
}

/// What verify concluded about one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Equal,
    /// Gone from the source since it was listed (expired or deleted).
    Gone,
    /// Not a key verify looks at (its type is not the job's `--type`).
    OutOfScope,
    /// `detail` is a sentence starting with the kind's label.
    Differs {
        kind: DiffKind,
        detail: String,
    },
}

impl Verdict {
    pub fn differs(kind: DiffKind, detail: impl Into<String>) -> Verdict {
        Verdict::Differs {
            kind,
            detail: detail.into(),
        }
    }

    pub fn is_difference(&self) -> bool {
        matches!(self, Verdict::Differs { .. })
    }
}

/// What the comparison needs to know besides the keys.
#[derive(Debug, Clone)]
pub struct CompareSettings {
    pub ttl_tolerance_ms: i64,
    /// Only keys of this type are in scope (the job's `--type`).
    pub key_type: Option<String>,
}

/// What the probe found about one key on one side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// `None`: no such key.
    pub key_type: Option<String>,
    pub pttl: i64,
    /// `MEMORY USAGE`, when the server answers it.
    pub memory: Option<u64>,
}

type PerKey<T> = std::result::Result<T, String>;

/// Compares `keys` (of source db `dbs.source`) with the target's keys of
/// the same names in `dbs.target`. One verdict per key, in order.
pub fn compare_keys(
    sides: &mut Sides,
    dbs: Dbs,
    keys: &[Vec<u8>],
    settings: &CompareSettings,
) -> Result<Vec<Verdict>> {
    let (source, target) = on_both(
        sides,
        |side| probe(side, dbs.source, keys),
        |side| probe(side, dbs.target, keys),
    );
    let (source, target) = (source?, target?);
    let mut verdicts = Vec::with_capacity(keys.len());
    let mut to_compare = Vec::new();
    for (index, (s, t)) in source.iter().zip(&target).enumerate() {
        match first_look(s, t, settings) {
            Some(verdict) => verdicts.push(verdict),
            None => {
                verdicts.push(Verdict::Equal); // decided below
                to_compare.push(index);
            }
        }
    }
    let values = compare_values(sides, dbs, keys, &to_compare, &source, &target)?;
    for (index, value) in to_compare.into_iter().zip(values) {
        let (Ok(s), Ok(t)) = (&source[index], &target[index]) else {
            continue; // first_look settled it
        };
        let ttl = ttl_difference(s.pttl, t.pttl, settings.ttl_tolerance_ms);
        verdicts[index] = final_verdict(value, ttl);
    }
    Ok(verdicts)
}

/// Step 1 on one side.
fn probe(side: &mut Side, db: i64, keys: &[Vec<u8>]) -> Result<Vec<PerKey<Probe>>> {
    let role = side.role();
    let addresses = keys.iter().map(|key| side.address_for_key(key)).collect();
    let probes = route_rounds(
        side,
        db,
        addresses,
        |pipe, i| {
            pipe.cmd("TYPE").arg(&keys[i]);
            pipe.cmd("PTTL").arg(&keys[i]);
            pipe.cmd("MEMORY").arg("USAGE").arg(&keys[i]);
            3
        },
        |_, replies| interpret_probe(replies),
    )?;
    Ok(probes
        .into_iter()
        .map(|probe| probe.map_err(|text| unreadable_text(role, &text)))
        .collect())
}

fn interpret_probe(replies: &mut [Value]) -> Step<PerKey<Probe>> {
    let [key_type, pttl, memory] = replies else {
        return Step::Fatal(format!(
            "expected 3 replies to TYPE, PTTL and MEMORY USAGE, got {}",
            replies.len()
        ));
    };
    // MEMORY USAGE may be refused (renamed, ACL) without harm: the value is
    // then compared in chunks. TYPE and PTTL must answer.
    if let Some(error) = [&*key_type, &*pttl].into_iter().find_map(server_error) {
        return step_for_error(classify(error), || Err(error_text(error)));
    }
    let key_type = match key_type {
        Value::SimpleString(text) => text.clone(),
        Value::BulkString(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        other => return Step::Fatal(format!("TYPE returned {other:?}")),
    };
    let Value::Int(pttl) = *pttl else {
        return Step::Fatal(format!("PTTL returned {pttl:?}"));
    };
    let memory = match memory {
        Value::Int(bytes) if *bytes >= 0 => Some(*bytes as u64),
        _ => None,
    };
    let exists = key_type != "none" && pttl != -2;
    Step::Done(Ok(Probe {
        key_type: exists.then_some(key_type),
        pttl,
        memory,
    }))
}

/// The verdict the probes alone give, or `None` when the values must be
/// compared.
fn first_look(
    source: &PerKey<Probe>,
    target: &PerKey<Probe>,
    settings: &CompareSettings,
) -> Option<Verdict> {
    let source = match source {
        Ok(probe) => probe,
        Err(text) => return Some(unreadable(text)),
    };
    let Some(source_type) = &source.key_type else {
        return Some(Verdict::Gone);
    };
    if let Some(wanted) = &settings.key_type
        && wanted != source_type
    {
        return Some(Verdict::OutOfScope);
    }
    let target = match target {
        Ok(probe) => probe,
        Err(text) => return Some(unreadable(text)),
    };
    let Some(target_type) = &target.key_type else {
        // A key about to expire on the source may already be gone from the
        // target: within the tolerance, that is no difference.
        if (0..=settings.ttl_tolerance_ms).contains(&source.pttl) {
            return Some(Verdict::Equal);
        }
        return Some(Verdict::differs(
            DiffKind::Missing,
            DiffKind::Missing.label(),
        ));
    };
    if source_type != target_type {
        return Some(Verdict::differs(
            DiffKind::Type,
            format!("type differs: source {source_type}, target {target_type}"),
        ));
    }
    None
}

fn unreadable(text: &str) -> Verdict {
    Verdict::differs(DiffKind::Unreadable, format!("could not compare: {text}"))
}

/// `None` when the TTLs agree: both persistent, or both set and no further
/// apart than the tolerance.
pub fn ttl_difference(source: i64, target: i64, tolerance_ms: i64) -> Option<String> {
    let shown = |ttl: i64| {
        if ttl < 0 {
            "none".to_string()
        } else {
            format!("{ttl} ms")
        }
    };
    let differs = match (source < 0, target < 0) {
        (true, true) => false,
        (false, false) => (source - target).abs() > tolerance_ms,
        _ => true,
    };
    differs.then(|| {
        format!(
            "ttl differs: source {}, target {}",
            shown(source),
            shown(target)
        )
    })
}

fn final_verdict(value: PerKey<Option<String>>, ttl: Option<String>) -> Verdict {
    match (value, ttl) {
        (Err(text), _) => unreadable(&text),
        (Ok(Some(detail)), None) => {
            Verdict::differs(DiffKind::Value, format!("value differs: {detail}"))
        }
        (Ok(Some(detail)), Some(ttl)) => {
            Verdict::differs(DiffKind::Value, format!("value differs: {detail}; {ttl}"))
        }
        (Ok(None), Some(ttl)) => Verdict::differs(DiffKind::Ttl, ttl),
        (Ok(None), None) => Verdict::Equal,
    }
}

/// How one key's value will be compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Dump,
    Chunked,
}

/// One key whose value is compared: its index in the batch, type and size.
#[derive(Debug, Clone)]
struct Item {
    index: usize,
    key_type: String,
    /// The larger `MEMORY USAGE` of the two sides, when both answered.
    size: Option<u64>,
}

impl Item {
    fn method(&self) -> Method {
        let known = matches!(
            self.key_type.as_str(),
            "string" | "list" | "set" | "zset" | "hash" | "stream"
        );
        match self.size {
            // A module type can only be compared by its DUMP payload.
            _ if !known => Method::Dump,
            Some(size) if size <= DUMP_MAX_BYTES => Method::Dump,
            _ => Method::Chunked,
        }
    }

    /// Bytes this key is expected to hold in memory during a round.
    fn weight(&self) -> u64 {
        self.size.unwrap_or(DUMP_MAX_BYTES).max(1)
    }
}

/// Steps 2 to 4 for the keys at `indexes`; one result per index:
/// `Ok(None)` equal, `Ok(Some(detail))` different, `Err` unreadable.
fn compare_values(
    sides: &mut Sides,
    dbs: Dbs,
    keys: &[Vec<u8>],
    indexes: &[usize],
    source: &[PerKey<Probe>],
    target: &[PerKey<Probe>],
) -> Result<Vec<PerKey<Option<String>>>> {
    let items: Vec<Item> = indexes
        .iter()
        .map(|&index| item(index, &source[index], &target[index]))
        .collect();
    let mut results: Vec<Option<PerKey<Option<String>>>> = vec![None; items.len()];
    let (dumped, mut chunked): (Vec<usize>, Vec<usize>) =
        (0..items.len()).partition(|&i| items[i].method() == Method::Dump);
    let mut read_whole = Vec::new();
    for round in rounds(&dumped, &items) {
        let payloads = dump_round(sides, dbs, keys, &items, &round)?;
        for (slot, payloads) in round.into_iter().zip(payloads) {
            match dump_verdict(&items[slot], payloads) {
                DumpVerdict::Settled(result) => results[slot] = Some(result),
                DumpVerdict::ReadWhole => read_whole.push(slot),
                DumpVerdict::Chunked => chunked.push(slot),
            }
        }
    }
    for round in rounds(&read_whole, &items) {
        let round_keys: Vec<(&[u8], &str)> = round
            .iter()
            .map(|&slot| {
                let item = &items[slot];
                (keys[item.index].as_slice(), item.key_type.as_str())
            })
            .collect();
        let compared = whole::compare_round(sides, dbs, &round_keys)?;
        for (slot, result) in round.into_iter().zip(compared) {
            results[slot] = Some(result);
        }
    }
    for slot in chunked {
        let item = &items[slot];
        let key = &keys[item.index];
        results[slot] = Some(key_level(chunked::compare_key(
            sides,
            dbs,
            key,
            &item.key_type,
        ))?);
    }
    Ok(results
        .into_iter()
        .map(|result| result.unwrap_or(Ok(None)))
        .collect())
}

fn item(index: usize, source: &PerKey<Probe>, target: &PerKey<Probe>) -> Item {
    let (source, target) = match (source, target) {
        (Ok(s), Ok(t)) => (s, t),
        // Unreachable: first_look settles unreadable keys.
        _ => {
            return Item {
                index,
                key_type: String::new(),
                size: None,
            };
        }
    };
    let size = match (source.memory, target.memory) {
        (Some(s), Some(t)) => Some(s.max(t)),
        _ => None,
    };
    Item {
        index,
        key_type: source.key_type.clone().unwrap_or_default(),
        size,
    }
}

/// Splits `slots` into rounds that each hold about [`ROUND_BUDGET_BYTES`].
fn rounds(slots: &[usize], items: &[Item]) -> Vec<Vec<usize>> {
    let mut rounds = Vec::new();
    let mut current = Vec::new();
    let mut weight = 0;
    for &slot in slots {
        let item_weight = items[slot].weight();
        if !current.is_empty() && weight + item_weight > ROUND_BUDGET_BYTES {
            rounds.push(std::mem::take(&mut current));
            weight = 0;
        }
        current.push(slot);
        weight += item_weight;
    }
    if !current.is_empty() {
        rounds.push(current);
    }
    rounds
}

type Payload = PerKey<Option<Vec<u8>>>;

/// DUMP of the round's keys on both sides: (source, target) per key.
fn dump_round(
    sides: &mut Sides,
    dbs: Dbs,
    keys: &[Vec<u8>],
    items: &[Item],
    round: &[usize],
) -> Result<Vec<(Payload, Payload)>> {
    let round_keys: Vec<&[u8]> = round
        .iter()
        .map(|&slot| keys[items[slot].index].as_slice())
        .collect();
    let (source, target) = on_both(
        sides,
        |side| dump(side, dbs.source, &round_keys),
        |side| dump(side, dbs.target, &round_keys),
    );
    Ok(source?.into_iter().zip(target?).collect())
}

fn dump(side: &mut Side, db: i64, keys: &[&[u8]]) -> Result<Vec<Payload>> {
    let role = side.role();
    let addresses = keys.iter().map(|key| side.address_for_key(key)).collect();
    let payloads = route_rounds(
        side,
        db,
        addresses,
        |pipe, i| {
            pipe.cmd("DUMP").arg(keys[i]);
            1
        },
        |_, replies| match replies {
            [Value::ServerError(error)] => {
                step_for_error(classify(error), || Err(error_text(error)))
            }
            [Value::BulkString(payload)] => Step::Done(Ok(Some(std::mem::take(payload)))),
            [Value::Nil] => Step::Done(Ok(None)),
            other => Step::Fatal(format!("DUMP returned {} replies", other.len())),
        },
    )?;
    Ok(payloads
        .into_iter()
        .map(|payload| payload.map_err(|text| unreadable_text(role, &text)))
        .collect())
}

enum DumpVerdict {
    Settled(PerKey<Option<String>>),
    ReadWhole,
    Chunked,
}

fn dump_verdict(item: &Item, payloads: (Payload, Payload)) -> DumpVerdict {
    let (source, target) = match payloads {
        (Ok(Some(s)), Ok(Some(t))) => (s, t),
        (Err(text), _) | (_, Err(text)) => return DumpVerdict::Settled(Err(text)),
        // Deleted between the probe and DUMP: changing right now. The
        // recheck of differing keys looks again.
        _ => {
            return DumpVerdict::Settled(Ok(Some(
                "the key changed while it was compared".to_string(),
            )));
        }
    };
    if payload_body(&source) == payload_body(&target) {
        return DumpVerdict::Settled(Ok(None));
    }
    match item.key_type.as_str() {
        "string" | "list" | "set" | "zset" | "hash" => DumpVerdict::ReadWhole,
        "stream" => DumpVerdict::Chunked,
        module => DumpVerdict::Settled(Ok(Some(format!(
            "DUMP payloads differ (type {module} can only be compared by its DUMP payload, which may also differ between server versions)"
        )))),
    }
}

/// A DUMP payload without its footer: 2 bytes of RDB version and 8 of CRC64.
fn payload_body(payload: &[u8]) -> &[u8] {
    &payload[..payload.len().saturating_sub(10)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(key_type: Option<&str>, pttl: i64) -> PerKey<Probe> {
        Ok(Probe {
            key_type: key_type.map(str::to_string),
            pttl,
            memory: Some(64),
        })
    }

    fn settings() -> CompareSettings {
        CompareSettings {
            ttl_tolerance_ms: 5000,
            key_type: None,
        }
    }

    #[test]
    fn probes_settle_missing_gone_and_type_differences() {
        let s = settings();
        assert_eq!(
            first_look(&probe(Some("hash"), -1), &probe(None, -2), &s),
            Some(Verdict::differs(DiffKind::Missing, "missing on target"))
        );
        assert_eq!(
            first_look(&probe(None, -2), &probe(Some("hash"), -1), &s),
            Some(Verdict::Gone)
        );
        assert_eq!(
            first_look(&probe(Some("hash"), -1), &probe(Some("string"), -1), &s),
            Some(Verdict::differs(
                DiffKind::Type,
                "type differs: source hash, target string"
            ))
        );
        assert_eq!(
            first_look(&probe(Some("hash"), -1), &probe(Some("hash"), -1), &s),
            None
        );
    }

    #[test]
    fn a_key_about_to_expire_may_already_be_gone_from_the_target() {
        let s = settings();
        assert_eq!(
            first_look(&probe(Some("string"), 1200), &probe(None, -2), &s),
            Some(Verdict::Equal)
        );
        assert!(
            first_look(&probe(Some("string"), 60_000), &probe(None, -2), &s)
                .unwrap()
                .is_difference()
        );
    }

    #[test]
    fn keys_of_other_types_are_out_of_a_typed_jobs_scope() {
        let s = CompareSettings {
            key_type: Some("hash".into()),
            ..settings()
        };
        assert_eq!(
            first_look(&probe(Some("string"), -1), &probe(None, -2), &s),
            Some(Verdict::OutOfScope)
        );
    }

    #[test]
    fn ttls_compare_within_the_tolerance_and_on_both_sides() {
        assert_eq!(ttl_difference(-1, -1, 5000), None);
        assert_eq!(ttl_difference(7_200_000, 7_196_000, 5000), None);
        assert_eq!(
            ttl_difference(7_200_000, -1, 5000).as_deref(),
            Some("ttl differs: source 7200000 ms, target none")
        );
        assert_eq!(
            ttl_difference(-1, 3_600_000, 5000).as_deref(),
            Some("ttl differs: source none, target 3600000 ms")
        );
        assert!(ttl_difference(7_200_000, 3_600_000, 5000).is_some());
    }

    #[test]
    fn a_value_difference_mentions_a_ttl_difference_too() {
        let verdict = final_verdict(
            Ok(Some("list element 3 differs".into())),
            ttl_difference(-1, 10, 0),
        );
        assert_eq!(
            verdict,
            Verdict::differs(
                DiffKind::Value,
                "value differs: list element 3 differs; ttl differs: source none, target 10 ms"
            )
        );
    }

    #[test]
    fn payload_footers_are_ignored_but_bodies_are_not() {
        let body = b"\x00\x05hello".to_vec();
        let mut v10 = body.clone();
        v10.extend_from_slice(&[10, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
        let mut v11 = body.clone();
        v11.extend_from_slice(&[11, 0, 9, 9, 9, 9, 9, 9, 9, 9]);
        assert_eq!(payload_body(&v10), payload_body(&v11));
        assert_ne!(payload_body(&v10), payload_body(b"\x00\x05hellx0123456789"));
    }

    #[test]
    fn big_values_go_to_chunks_and_rounds_stay_within_budget() {
        let small = Item {
            index: 0,
            key_type: "hash".into(),
            size: Some(1000),
        };
        let big = Item {
            size: Some(DUMP_MAX_BYTES + 1),
            ..small.clone()
        };
        let unknown = Item {
            size: None,
            ..small.clone()
        };
        let module = Item {
            key_type: "ReJSON-RL".into(),
            size: None,
            ..small.clone()
        };
        assert_eq!(small.method(), Method::Dump);
        assert_eq!(big.method(), Method::Chunked);
        assert_eq!(unknown.method(), Method::Chunked);
        assert_eq!(module.method(), Method::Dump);
        let items = vec![
            Item {
                size: Some(10 * 1024 * 1024),
                ..small.clone()
            };
            4
        ];
        assert_eq!(
            rounds(&[0, 1, 2, 3], &items),
            vec![vec![0], vec![1], vec![2], vec![3]]
        );
        let items = vec![small; 3];
        assert_eq!(rounds(&[0, 1, 2], &items), vec![vec![0, 1, 2]]);
    }
}
