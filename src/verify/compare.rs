//! Comparing one batch of keys between the source and the target.
//!
//! Cheapest first, both servers answering in parallel, one pipeline per
//! node per step, and each step only for the keys the previous one left
//! open:
//!
//! 1. **Probe**: `PTTL` and `MEMORY USAGE` of every key on both sides.
//!    Settles keys gone from the source and keys missing on the target, and
//!    tells small values from big ones.
//! 2. **DUMP** of small values (both sides under [`DUMP_MAX_BYTES`]): equal
//!    payloads mean equal values, and this settles almost every key. The RDB
//!    version and checksum at the end of a payload are left out, so servers
//!    of different versions that encode a value alike still compare equal.
//! 3. **TYPE**, only for keys whose DUMPs differ and keys too big to DUMP:
//!    another type is a difference of its own.
//! 4. **Whole values** of small keys whose DUMPs differ: equal values can be
//!    encoded differently (listpack or hashtable, set order, ziplist from an
//!    older server), so `GET` / `LRANGE` / `SMEMBERS` / `ZRANGE` / `HGETALL`
//!    compare them as data ([`whole`](super::whole)).
//! 5. **Chunks** for big values, values whose size the server would not
//!    tell, and streams: never loaded whole ([`chunked`](super::chunked)).
//!
//! TTLs are compared from the probe: equal when both are persistent or
//! both within the tolerance.

use anyhow::Result;
use redis::Value;

use super::reply::{Dbs, Sides, key_level, on_both, unreadable_text};
use super::{chunked, whole};
use crate::connection::{classify, error_text};
use crate::route::{Step, route_rounds, step_for_error};
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// PTTL: -2 when there is no such key, -1 when it has no TTL.
    pub pttl: i64,
    /// `MEMORY USAGE`, when the server answers it.
    pub memory: Option<u64>,
}

impl Probe {
    fn exists(&self) -> bool {
        self.pttl != -2
    }
}

type PerKey<T> = std::result::Result<T, String>;

/// A key whose value is still being compared.
#[derive(Debug, Clone)]
struct Open {
    index: usize,
    /// The larger `MEMORY USAGE` of the two sides, when both answered.
    size: Option<u64>,
    /// DUMP was compared (and differed).
    dumped: bool,
    /// Known after step 3.
    key_type: String,
}

impl Open {
    fn small(&self) -> bool {
        self.size.is_some_and(|size| size <= DUMP_MAX_BYTES)
    }

    /// Bytes this key is expected to hold in memory during a round.
    fn weight(&self) -> u64 {
        self.size.unwrap_or(DUMP_MAX_BYTES).max(1)
    }
}

/// Compares `keys` (of source db `dbs.source`) with the target's keys of
/// the same names in `dbs.target`. One verdict per key, in order.
pub fn compare_keys(
    sides: &mut Sides,
    dbs: Dbs,
    keys: &[Vec<u8>],
    settings: &CompareSettings,
) -> Result<Vec<Verdict>> {
    let all: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
    let (source, target) = on_both(
        sides,
        |side| probe(side, dbs.source, &all),
        |side| probe(side, dbs.target, &all),
    );
    let (source, target) = (source?, target?);
    let mut verdicts: Vec<Option<Verdict>> = vec![None; keys.len()];
    let mut open = Vec::new();
    for (index, (s, t)) in source.iter().zip(&target).enumerate() {
        match first_look(s, t, settings.ttl_tolerance_ms) {
            Some(verdict) => verdicts[index] = Some(verdict),
            None => open.push(Open {
                index,
                size: both_sizes(s, t),
                dumped: false,
                key_type: String::new(),
            }),
        }
    }
    let mut values: Vec<(usize, PerKey<Option<String>>)> = Vec::new();
    let mut open = dump_step(sides, dbs, keys, open, &mut values)?;
    type_step(sides, dbs, keys, &mut open, &mut verdicts, settings)?;
    value_step(sides, dbs, keys, open, &mut values)?;
    for (index, value) in values {
        let ttl = match (&source[index], &target[index]) {
            (Ok(s), Ok(t)) => ttl_difference(s.pttl, t.pttl, settings.ttl_tolerance_ms),
            _ => None,
        };
        verdicts[index] = Some(final_verdict(value, ttl));
    }
    Ok(verdicts
        .into_iter()
        .map(|verdict| verdict.unwrap_or(Verdict::Equal))
        .collect())
}

fn both_sizes(source: &PerKey<Probe>, target: &PerKey<Probe>) -> Option<u64> {
    match (source, target) {
        (Ok(s), Ok(t)) => Some(s.memory?.max(t.memory?)),
        _ => None,
    }
}

/// Step 1 on one side.
fn probe(side: &mut Side, db: i64, keys: &[&[u8]]) -> Result<Vec<PerKey<Probe>>> {
    let role = side.role();
    let addresses = keys.iter().map(|key| side.address_for_key(key)).collect();
    let probes = route_rounds(
        side,
        db,
        addresses,
        |pipe, i| {
            pipe.cmd("PTTL").arg(keys[i]);
            pipe.cmd("MEMORY").arg("USAGE").arg(keys[i]);
            2
        },
        |_, replies| interpret_probe(replies),
    )?;
    Ok(probes
        .into_iter()
        .map(|probe| probe.map_err(|text| unreadable_text(role, &text)))
        .collect())
}

fn interpret_probe(replies: &mut [Value]) -> Step<PerKey<Probe>> {
    let [pttl, memory] = replies else {
        return Step::Fatal(format!(
            "expected 2 replies to PTTL and MEMORY USAGE, got {}",
            replies.len()
        ));
    };
    // MEMORY USAGE may be refused (renamed, ACL) without harm: the value is
    // then compared in chunks. PTTL must answer.
    if let Value::ServerError(error) = pttl {
        return step_for_error(classify(error), || Err(error_text(error)));
    }
    let Value::Int(pttl) = *pttl else {
        return Step::Fatal(format!("PTTL returned {pttl:?}"));
    };
    let memory = match memory {
        Value::Int(bytes) if *bytes >= 0 => Some(*bytes as u64),
        _ => None,
    };
    Step::Done(Ok(Probe { pttl, memory }))
}

/// The verdict the probes alone give, or `None` when the values must be
/// compared.
fn first_look(
    source: &PerKey<Probe>,
    target: &PerKey<Probe>,
    tolerance_ms: i64,
) -> Option<Verdict> {
    let source = match source {
        Ok(probe) => probe,
        Err(text) => return Some(unreadable(text)),
    };
    if !source.exists() {
        return Some(Verdict::Gone);
    }
    let target = match target {
        Ok(probe) => probe,
        Err(text) => return Some(unreadable(text)),
    };
    if !target.exists() {
        return Some(missing(source.pttl, tolerance_ms));
    }
    None
}

/// A key the source has and the target has not.
fn missing(source_pttl: i64, tolerance_ms: i64) -> Verdict {
    // A key about to expire on the source may already be gone from the
    // target: within the tolerance, that is no difference.
    if (0..=tolerance_ms).contains(&source_pttl) {
        Verdict::Equal
    } else {
        Verdict::differs(DiffKind::Missing, DiffKind::Missing.label())
    }
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

/// Step 2: DUMP of the small keys. Equal payloads settle the value (into
/// `values`); the rest, and every big key, stay open.
fn dump_step(
    sides: &mut Sides,
    dbs: Dbs,
    keys: &[Vec<u8>],
    open: Vec<Open>,
    values: &mut Vec<(usize, PerKey<Option<String>>)>,
) -> Result<Vec<Open>> {
    let (small, mut still_open): (Vec<Open>, Vec<Open>) = open.into_iter().partition(Open::small);
    for round in rounds(small) {
        let round_keys: Vec<&[u8]> = round.iter().map(|o| keys[o.index].as_slice()).collect();
        let (source, target) = on_both(
            sides,
            |side| dump(side, dbs.source, &round_keys),
            |side| dump(side, dbs.target, &round_keys),
        );
        for ((mut item, s), t) in round.into_iter().zip(source?).zip(target?) {
            match (s, t) {
                (Ok(Some(s)), Ok(Some(t))) if payload_body(&s) == payload_body(&t) => {
                    values.push((item.index, Ok(None)));
                }
                (Err(text), _) | (_, Err(text)) => values.push((item.index, Err(text))),
                // Different payloads, or gone since the probe: TYPE tells.
                _ => {
                    item.dumped = true;
                    still_open.push(item);
                }
            }
        }
    }
    Ok(still_open)
}

/// Splits keys into rounds that each hold about [`ROUND_BUDGET_BYTES`].
fn rounds(items: Vec<Open>) -> Vec<Vec<Open>> {
    let mut rounds = Vec::new();
    let mut current = Vec::new();
    let mut weight = 0;
    for item in items {
        if !current.is_empty() && weight + item.weight() > ROUND_BUDGET_BYTES {
            rounds.push(std::mem::take(&mut current));
            weight = 0;
        }
        weight += item.weight();
        current.push(item);
    }
    if !current.is_empty() {
        rounds.push(current);
    }
    rounds
}

type Payload = PerKey<Option<Vec<u8>>>;

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

/// A DUMP payload without its footer: 2 bytes of RDB version and 8 of CRC64.
fn payload_body(payload: &[u8]) -> &[u8] {
    &payload[..payload.len().saturating_sub(10)]
}

/// Step 3: TYPE of the keys still open, on both sides. Settles keys of
/// another type (or gone, or out of the job's `--type`) into `verdicts`,
/// and notes the type of the others.
fn type_step(
    sides: &mut Sides,
    dbs: Dbs,
    keys: &[Vec<u8>],
    open: &mut Vec<Open>,
    verdicts: &mut [Option<Verdict>],
    settings: &CompareSettings,
) -> Result<()> {
    if open.is_empty() {
        return Ok(());
    }
    let open_keys: Vec<&[u8]> = open.iter().map(|o| keys[o.index].as_slice()).collect();
    let (source, target) = on_both(
        sides,
        |side| types(side, dbs.source, &open_keys),
        |side| types(side, dbs.target, &open_keys),
    );
    let mut still_open = Vec::with_capacity(open.len());
    for ((mut item, s), t) in open.drain(..).zip(source?).zip(target?) {
        match typed_look(s, t, settings) {
            Ok(key_type) => {
                item.key_type = key_type;
                still_open.push(item);
            }
            Err(verdict) => verdicts[item.index] = Some(verdict),
        }
    }
    *open = still_open;
    Ok(())
}

/// The common type of a key, or the verdict when the types settle it.
fn typed_look(
    source: PerKey<Option<String>>,
    target: PerKey<Option<String>>,
    settings: &CompareSettings,
) -> std::result::Result<String, Verdict> {
    let source = match source {
        Ok(Some(key_type)) => key_type,
        Ok(None) => return Err(Verdict::Gone),
        Err(text) => return Err(unreadable(&text)),
    };
    if settings
        .key_type
        .as_ref()
        .is_some_and(|wanted| *wanted != source)
    {
        return Err(Verdict::OutOfScope);
    }
    let target = match target {
        Ok(Some(key_type)) => key_type,
        // Gone from the target since the probe.
        Ok(None) => return Err(missing(-1, 0)),
        Err(text) => return Err(unreadable(&text)),
    };
    if source != target {
        return Err(Verdict::differs(
            DiffKind::Type,
            format!("type differs: source {source}, target {target}"),
        ));
    }
    Ok(source)
}

fn types(side: &mut Side, db: i64, keys: &[&[u8]]) -> Result<Vec<PerKey<Option<String>>>> {
    let role = side.role();
    let addresses = keys.iter().map(|key| side.address_for_key(key)).collect();
    let types = route_rounds(
        side,
        db,
        addresses,
        |pipe, i| {
            pipe.cmd("TYPE").arg(keys[i]);
            1
        },
        |_, replies| match replies {
            [Value::ServerError(error)] => {
                step_for_error(classify(error), || Err(error_text(error)))
            }
            [Value::SimpleString(name)] => {
                Step::Done(Ok((name.as_str() != "none").then(|| name.clone())))
            }
            other => Step::Fatal(format!("TYPE returned {other:?}")),
        },
    )?;
    Ok(types
        .into_iter()
        .map(|key_type| key_type.map_err(|text| unreadable_text(role, &text)))
        .collect())
}

/// How a key whose type is known gets its value compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    /// Read whole and compared as data (small, DUMPs differ).
    Whole,
    /// In chunks (big, size unknown, or a stream).
    Chunked,
    /// By DUMP payload only (module types).
    Dump,
}

fn method(item: &Open) -> Method {
    match item.key_type.as_str() {
        "string" | "list" | "set" | "zset" | "hash" if item.dumped => Method::Whole,
        "string" | "list" | "set" | "zset" | "hash" | "stream" => Method::Chunked,
        _ => Method::Dump,
    }
}

/// Steps 4 and 5: the values of the keys still open.
fn value_step(
    sides: &mut Sides,
    dbs: Dbs,
    keys: &[Vec<u8>],
    open: Vec<Open>,
    values: &mut Vec<(usize, PerKey<Option<String>>)>,
) -> Result<()> {
    let mut whole_items = Vec::new();
    let mut module_items = Vec::new();
    for item in open {
        match method(&item) {
            Method::Whole => whole_items.push(item),
            Method::Dump => module_items.push(item),
            Method::Chunked => {
                let key = &keys[item.index];
                let result = chunked::compare_key(sides, dbs, key, &item.key_type);
                values.push((item.index, key_level(result)?));
            }
        }
    }
    for round in rounds(whole_items) {
        let round_keys: Vec<(&[u8], &str)> = round
            .iter()
            .map(|item| (keys[item.index].as_slice(), item.key_type.as_str()))
            .collect();
        let compared = whole::compare_round(sides, dbs, &round_keys)?;
        values.extend(round.iter().map(|item| item.index).zip(compared));
    }
    for item in module_items {
        values.push((item.index, module_value(sides, dbs, keys, &item)?));
    }
    Ok(())
}

/// A module type can only be compared by its DUMP payload (which may also
/// differ between module versions).
fn module_value(
    sides: &mut Sides,
    dbs: Dbs,
    keys: &[Vec<u8>],
    item: &Open,
) -> Result<PerKey<Option<String>>> {
    let differs = format!(
        "DUMP payloads differ (type {} can only be compared by its DUMP payload)",
        item.key_type
    );
    if item.dumped {
        return Ok(Ok(Some(differs)));
    }
    let key = [keys[item.index].as_slice()];
    let (source, target) = on_both(
        sides,
        |side| dump(side, dbs.source, &key),
        |side| dump(side, dbs.target, &key),
    );
    let (source, target) = (source?.pop(), target?.pop());
    Ok(match (source, target) {
        (Some(Ok(Some(s))), Some(Ok(Some(t)))) if payload_body(&s) == payload_body(&t) => Ok(None),
        (Some(Err(text)), _) | (_, Some(Err(text))) => Err(text),
        _ => Ok(Some(differs)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(pttl: i64) -> PerKey<Probe> {
        Ok(Probe {
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

    fn typed(
        s: Option<&str>,
        t: Option<&str>,
        settings: &CompareSettings,
    ) -> Result<String, Verdict> {
        typed_look(
            Ok(s.map(str::to_string)),
            Ok(t.map(str::to_string)),
            settings,
        )
    }

    #[test]
    fn probes_settle_missing_and_gone_keys() {
        assert_eq!(
            first_look(&probe(-1), &probe(-2), 5000),
            Some(Verdict::differs(DiffKind::Missing, "missing on target"))
        );
        assert_eq!(
            first_look(&probe(-2), &probe(-1), 5000),
            Some(Verdict::Gone)
        );
        assert_eq!(first_look(&probe(-1), &probe(-1), 5000), None);
        let refused: PerKey<Probe> = Err("the target answered \"NOPERM\"".into());
        assert_eq!(
            first_look(&probe(-1), &refused, 5000),
            Some(Verdict::differs(
                DiffKind::Unreadable,
                "could not compare: the target answered \"NOPERM\""
            ))
        );
    }

    #[test]
    fn types_settle_type_differences_and_a_typed_jobs_scope() {
        let s = settings();
        assert_eq!(
            typed(Some("hash"), Some("string"), &s),
            Err(Verdict::differs(
                DiffKind::Type,
                "type differs: source hash, target string"
            ))
        );
        assert_eq!(
            typed(Some("hash"), Some("hash"), &s),
            Ok("hash".to_string())
        );
        assert_eq!(typed(None, Some("hash"), &s), Err(Verdict::Gone));
        let hashes_only = CompareSettings {
            key_type: Some("hash".into()),
            ..settings()
        };
        assert_eq!(
            typed(Some("string"), None, &hashes_only),
            Err(Verdict::OutOfScope)
        );
    }

    #[test]
    fn a_key_about_to_expire_may_already_be_gone_from_the_target() {
        assert_eq!(
            first_look(&probe(1200), &probe(-2), 5000),
            Some(Verdict::Equal)
        );
        assert!(
            first_look(&probe(60_000), &probe(-2), 5000)
                .unwrap()
                .is_difference()
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
        let item = |key_type: &str, size: Option<u64>, dumped: bool| Open {
            index: 0,
            size,
            dumped,
            key_type: key_type.to_string(),
        };
        assert!(item("hash", Some(1000), false).small());
        assert!(!item("hash", Some(DUMP_MAX_BYTES + 1), false).small());
        assert!(!item("hash", None, false).small());
        assert_eq!(method(&item("hash", Some(1000), true)), Method::Whole);
        assert_eq!(method(&item("hash", None, false)), Method::Chunked);
        assert_eq!(method(&item("stream", Some(1000), true)), Method::Chunked);
        assert_eq!(method(&item("ReJSON-RL", None, false)), Method::Dump);
        let big = vec![item("hash", Some(10 * 1024 * 1024), false); 4];
        assert_eq!(rounds(big).len(), 4);
        let small = vec![item("hash", Some(1000), false); 3];
        assert_eq!(rounds(small).len(), 1);
    }
}
