//! The checks before anything is written: a job that must not run is
//! refused here, with a message that says what to change, before the
//! journal records it or the target receives a key.
//!
//! Refused: source and target are the same server; the target is a
//! replica; options the servers' versions cannot honour; databases a
//! cluster does not have, or that a server was not configured with; a
//! `--type` that names no type the source can hold.
//!
//! Before a *new* job ([`before_new_job`]: `run`, `run --dry-run`), the
//! guards for mistakes that cost a night:
//! - a target that already holds keys in the databases the job writes:
//!   refused unless `--existing replace|skip` is given explicitly (see
//!   [`check_target_holds_keys`] for why not just a warning);
//! - a selection that matches no key (an empty database, a `--match` or
//!   `--type` that matches nothing): a warning, before the job when a short
//!   probe can tell, after it ([`Selection::after_the_job`]) otherwise;
//! - the source's data against the target's `maxmemory`: a warning when it
//!   will not fit.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Result, bail};
use redis::Value;

use crate::connection::expect_text;
use crate::exit::{Exit, usage_error};
use crate::job::source_databases;
use crate::options::{CopyOptions, Existing, TtlMode};
use crate::scan::{parse_scan, scan_command};
use crate::side::Side;
use crate::wire::CommandBuffer;

/// Every check, in the order an operator would want to hear about them.
pub fn check(source: &mut Side, target: &mut Side, options: &CopyOptions) -> Result<()> {
    refuse_same_server(source, target)?;
    refuse_replica_target(target)?;
    check_versions(source, target, options)?;
    check_key_type(source, options)?;
    check_databases(source, target, options)?;
    check_databases_exist(source, target, options)?;
    Ok(())
}

fn refuse_same_server(source: &Side, target: &Side) -> Result<()> {
    if source.is_same_deployment(target) {
        bail!(
            "source {} and target {} are the same server (same run_id); point --target at the new server",
            source.endpoint.redacted(),
            target.endpoint.redacted()
        );
    }
    Ok(())
}

fn refuse_replica_target(target: &Side) -> Result<()> {
    if target.is_cluster() || !target.info.is_replica() {
        return Ok(());
    }
    let primary = target
        .info
        .primary
        .clone()
        .unwrap_or_else(|| "its primary".to_string());
    if target.info.replica_read_only {
        bail!(
            "target {} is a read-only replica of {primary}; point --target at a primary",
            target.endpoint.redacted()
        );
    }
    bail!(
        "target {} is a replica of {primary}: what is written there is lost at its next resync; point --target at a primary",
        target.endpoint.redacted()
    );
}

fn check_versions(source: &Side, target: &Side, options: &CopyOptions) -> Result<()> {
    if options.ttl == TtlMode::Absolute {
        for side in [source, target] {
            if !side.info.at_least(7, 0) {
                bail!(
                    "--ttl absolute needs Redis 7 on both sides, and {} {} runs {}; use --ttl relative",
                    side.role(),
                    side.endpoint.redacted(),
                    side.info.version_text()
                );
            }
        }
    }
    if options.key_type.is_some() && !source.info.at_least(6, 0) {
        bail!(
            "--type needs Redis 6 or later on the source, and {} runs {}",
            source.endpoint.redacted(),
            source.info.version_text()
        );
    }
    // Versions that cannot exchange payloads are not refused: keys are
    // rebuilt by commands then (the run's first lines say which).
    Ok(())
}

fn check_databases(source: &Side, target: &Side, options: &CopyOptions) -> Result<()> {
    if source.is_cluster() && options.dbs.iter().any(|db| *db != 0) {
        return Err(usage_error(
            "the source is a cluster, which has only db 0; drop --db",
        ));
    }
    let dbs = source_databases(source, options);
    if target.is_cluster() {
        if dbs.len() > 1 {
            return Err(usage_error(format!(
                "the target is a cluster, which has only db 0, and the source's databases {} would all go there, where keys of the same name overwrite each other; \
                 copy one database per job (--db N --db-map N:0, each with its own --journal), the later ones with --existing skip, which keeps the keys already there and counts them as skipped",
                list(&dbs)
            )));
        }
        if let Some(db) = dbs.iter().find(|db| options.target_db(**db) != 0) {
            return Err(usage_error(format!(
                "the target is a cluster, which has only db 0, and source db {db} would go to db {}; add --db-map {db}:0 or choose databases with --db",
                options.target_db(*db)
            )));
        }
    }
    refuse_merged_databases(&dbs, options)
}

/// Two source databases poured into one target database overwrite each
/// other's keys of the same name, and the journal would call both copies
/// `restored`: refused, with the two ways that lose nothing.
fn refuse_merged_databases(dbs: &[i64], options: &CopyOptions) -> Result<()> {
    let mut by_target: std::collections::BTreeMap<i64, Vec<i64>> = Default::default();
    for &db in dbs {
        by_target.entry(options.target_db(db)).or_default().push(db);
    }
    match by_target.iter().find(|(_, sources)| sources.len() > 1) {
        None => Ok(()),
        Some((target_db, sources)) => Err(usage_error(format!(
            "source databases {} would all go to target db {target_db}, where keys of the same name overwrite each other; \
             give each its own target database (--db-map SRC:DST), or copy one per job (--db N, each with its own --journal), the later ones with --existing skip, which keeps the keys already there and counts them as skipped",
            list(sources)
        ))),
    }
}

/// "0, 1 and 2".
fn list(dbs: &[i64]) -> String {
    let names: Vec<String> = dbs.iter().map(i64::to_string).collect();
    match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => names.join(""),
    }
}

/// Every database the job reads or writes can be selected: a server has a
/// fixed number of them (`databases` in redis.conf, 16 by default).
fn check_databases_exist(
    source: &mut Side,
    target: &mut Side,
    options: &CopyOptions,
) -> Result<()> {
    if source.is_cluster() && target.is_cluster() {
        return Ok(());
    }
    for db in source_databases(source, options) {
        can_select(source, db, "")?;
        can_select(
            target,
            options.target_db(db),
            " (use --db-map to choose another)",
        )?;
    }
    Ok(())
}

fn can_select(side: &mut Side, db: i64, advice: &str) -> Result<()> {
    if side.is_cluster() {
        return Ok(());
    }
    let address = side.seed_address().to_string();
    let connection = side.connection(&address)?;
    connection.select(db);
    if let Err(error) = connection.command(&redis::cmd("PING")) {
        let reason = format!("{error:#}");
        if reason.contains("DB index is out of range") || reason.contains("invalid DB index") {
            connection.select(0);
            bail!(
                "{} {} has no database {db}{advice}",
                side.role(),
                side.endpoint.redacted()
            );
        }
        return Err(error);
    }
    connection.select(0);
    Ok(())
}

/// The types every server has; `TYPE` and `SCAN ... TYPE` use these names.
const BUILT_IN_TYPES: [&str; 6] = ["string", "list", "set", "zset", "hash", "stream"];

/// Data types of the modules redis-ferry knows, by the name `MODULE LIST`
/// gives: what `TYPE` returns for their keys. A module that is not here
/// may have types redis-ferry cannot list (Redis has no command for them).
const MODULE_TYPES: [(&str, &[&str]); 7] = [
    ("ReJSON", &["ReJSON-RL"]),
    ("timeseries", &["TSDB-TYPE"]),
    (
        "bf",
        &[
            "MBbloom--",
            "MBbloomCF",
            "TopK-TYPE",
            "CMSk-TYPE",
            "TDIS-TYPE",
        ],
    ),
    ("graph", &["graphdata"]),
    ("vectorset", &["vectorset"]),
    // Indexes are not keys: the search module adds no key type.
    ("search", &[]),
    ("ft", &[]),
];

/// What `--type` may name on this source.
#[derive(Debug, Default, PartialEq, Eq)]
struct KnownTypes {
    names: Vec<String>,
    /// Loaded modules whose type names cannot be listed, or why the
    /// modules themselves could not be listed.
    unlisted: Vec<String>,
}

/// `--type` must name a type the source can hold: a typo would otherwise
/// run a "completed" job that copied nothing and used up the journal.
fn check_key_type(source: &mut Side, options: &CopyOptions) -> Result<()> {
    let Some(wanted) = options.key_type.as_deref() else {
        return Ok(());
    };
    let known = known_types(source);
    if known
        .names
        .iter()
        .any(|name| name.eq_ignore_ascii_case(wanted))
    {
        return Ok(());
    }
    if !known.unlisted.is_empty() {
        crate::log::warn(format!(
            "--type {wanted:?} is not a type redis-ferry knows, and the source {} has {} whose type names it cannot list; copying the keys whose TYPE is {wanted:?} (none, if it is a typo)",
            source.endpoint.redacted(),
            known.unlisted.join(", ")
        ));
        return Ok(());
    }
    Err(usage_error(format!(
        "--type {wanted:?} is not a type the source {} can hold; use one of: {}",
        source.endpoint.redacted(),
        known.names.join(", ")
    )))
}

fn known_types(source: &mut Side) -> KnownTypes {
    let mut known = KnownTypes {
        names: BUILT_IN_TYPES.iter().map(|name| name.to_string()).collect(),
        unlisted: Vec::new(),
    };
    // Vector sets are built in from Redis 8 (as a module that MODULE LIST
    // may or may not show).
    if source.info.at_least(8, 0) {
        known.names.push("vectorset".to_string());
    }
    match loaded_modules(source) {
        Ok(modules) => {
            for module in modules {
                match MODULE_TYPES
                    .iter()
                    .find(|(name, _)| name.eq_ignore_ascii_case(&module))
                {
                    Some((_, types)) => known.names.extend(types.iter().map(|t| t.to_string())),
                    None => known.unlisted.push(format!("module {module}")),
                }
            }
        }
        Err(error) => known
            .unlisted
            .push(format!("modules that MODULE LIST cannot show ({error:#})")),
    }
    let mut seen = std::collections::HashSet::new();
    known.names.retain(|name| seen.insert(name.to_lowercase()));
    known
}

/// Module names from `MODULE LIST`.
fn loaded_modules(source: &mut Side) -> Result<Vec<String>> {
    let address = source.seed_address().to_string();
    let reply = source
        .connection(&address)?
        .command(redis::cmd("MODULE").arg("LIST"))?;
    let Value::Array(modules) = reply else {
        return Ok(Vec::new());
    };
    Ok(modules.iter().filter_map(module_name).collect())
}

/// The `name` field of one `MODULE LIST` entry (a flat array in RESP2, a
/// map in RESP3).
fn module_name(entry: &Value) -> Option<String> {
    let pairs: Vec<(&Value, &Value)> = match entry {
        Value::Array(items) => items
            .chunks(2)
            .filter_map(|pair| match pair {
                [key, value] => Some((key, value)),
                _ => None,
            })
            .collect(),
        Value::Map(pairs) => pairs.iter().map(|(k, v)| (k, v)).collect(),
        _ => return None,
    };
    pairs
        .into_iter()
        .find_map(|(key, value)| (text(key)? == "name").then(|| text(value)).flatten())
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        Value::SimpleString(text) => Some(text.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        _ => None,
    }
}

/// How a new job was asked for, as far as the guards care.
#[derive(Debug, Clone, Copy, Default)]
pub struct NewJob {
    /// `--existing` was given on the command line (not left at its default).
    pub existing_explicit: bool,
    /// `--dry-run`: nothing will be written; say what a run would do.
    pub dry_run: bool,
}

/// What the guards learned about the selection, for the end of the job.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Keys INFO keyspace counts in the selected source databases.
    pub keys_in_databases: u64,
    /// `--match` / `--type`, as the operator wrote them, if any.
    pub filters: Option<String>,
}

/// The guards before a new job writes anything (see the module doc).
pub fn before_new_job(
    source: &mut Side,
    target: &mut Side,
    options: &CopyOptions,
    new_job: NewJob,
) -> Result<Selection> {
    check_target_holds_keys(source, target, options, new_job)?;
    let selection = check_selection(source, options)?;
    warn_if_memory_will_not_fit(source, target, options, &selection);
    Ok(selection)
}

/// A target that already holds keys where the job writes.
///
/// Refused unless `--existing` is given explicitly, rather than only
/// warned about: pointing `--target` at the wrong server (a production one,
/// another team's) overwrites its keys of the same name, and a warning
/// scrolls by unread in an overnight run. A target that holds keys on
/// purpose — the dual-write procedure, where the application already writes
/// its new keys to the target; a second attempt; `--follow` started again —
/// needs one flag that says how to treat them, and the refusal names it.
/// With the flag, the line still says how many keys and where. A dry run
/// says it all and refuses nothing.
pub fn check_target_holds_keys(
    source: &Side,
    target: &mut Side,
    options: &CopyOptions,
    new_job: NewJob,
) -> Result<()> {
    let written: BTreeSet<i64> = source_databases(source, options)
        .into_iter()
        .map(|db| {
            if target.is_cluster() {
                0
            } else {
                options.target_db(db)
            }
        })
        .collect();
    // The workers of a sharded job all write the same target: a worker
    // looks only at the keys of its own slots, which no other worker writes.
    let (counts, place) = match &options.shard {
        None => (target.key_counts()?, String::new()),
        Some(shard) => (
            crate::shard::keys::counts_in_slots(target, &written, &shard.slot_set())?,
            format!(
                " in the slots of shard {} ({})",
                shard.label(),
                shard.slots_text()
            ),
        ),
    };
    let (holding, others): (BTreeMap<i64, u64>, BTreeMap<i64, u64>) = counts
        .into_iter()
        .filter(|(_, keys)| *keys > 0)
        .partition(|(db, _)| written.contains(db));
    let url = target.endpoint.redacted();
    if holding.is_empty() {
        if !others.is_empty() {
            crate::log::info(format!(
                "note: target {url} holds keys in databases this job does not write ({})",
                list_counts(&others)
            ));
        }
        return Ok(());
    }
    let total: u64 = holding.values().sum();
    let listing = list_counts(&holding);
    if !new_job.existing_explicit {
        if new_job.dry_run {
            crate::log::warn(format!(
                "target {url} already holds {total} keys{place} in the databases this job would write ({listing}); \
                 a real run refuses to start unless --existing replace (keys of the same name are overwritten) or --existing skip (they are kept) is given"
            ));
            return Ok(());
        }
        bail!(
            "target {url} already holds {total} keys{place} in the databases this job would write ({listing}): \
             is --target the new server? If it is meant to hold keys already (dual writes, a second attempt), \
             say how to treat keys of the same name: --existing replace (overwrite them with the source's) or --existing skip (keep the target's)"
        );
    }
    let treatment = match options.existing {
        Existing::Replace => "keys of the same name are replaced with the source's",
        Existing::Skip => "keys of the same name are kept as they are (outcome skipped)",
    };
    crate::log::warn(format!(
        "target {url} already holds {total} keys{place} in the databases this job writes ({listing}); --existing {}: {treatment}",
        existing_name(options.existing)
    ));
    Ok(())
}

fn existing_name(existing: Existing) -> &'static str {
    match existing {
        Existing::Replace => "replace",
        Existing::Skip => "skip",
    }
}

/// `db 0: 1200, db 3: 34`.
fn list_counts(counts: &BTreeMap<i64, u64>) -> String {
    counts
        .iter()
        .map(|(db, keys)| format!("db {db}: {keys}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// SCAN calls a probe of one database may spend looking for a key that
/// matches `--match` / `--type` (each examines `PROBE_COUNT` keys).
const PROBE_SCANS: usize = 10;
const PROBE_COUNT: u32 = 1000;

/// Warns about a selection that matches no key. Empty databases are known
/// from INFO keyspace at once. Whether a `--match`/`--type` matches
/// anything is only known for sure by scanning everything, so a short probe
/// looks first (conclusive on a small database, or as soon as one key
/// matches); otherwise the end of the job tells ([`Selection::after_the_job`]).
fn check_selection(source: &mut Side, options: &CopyOptions) -> Result<Selection> {
    let dbs = source_databases(source, options);
    let counts = source.key_counts()?;
    let keys_in_databases: u64 = dbs.iter().filter_map(|db| counts.get(db)).sum();
    let url = source.endpoint.redacted();
    let selection = Selection {
        keys_in_databases,
        filters: describe_filters(options),
    };
    if keys_in_databases == 0 {
        let which = match dbs.as_slice() {
            [] => String::new(),
            dbs => format!(" in {}", name_dbs(dbs)),
        };
        crate::log::warn(format!(
            "source {url} holds no keys{which}: the job will copy nothing; check --source (and its /db) and --db"
        ));
        return Ok(selection);
    }
    let empty: Vec<i64> = dbs
        .iter()
        .copied()
        .filter(|db| counts.get(db).copied().unwrap_or(0) == 0)
        .collect();
    if !empty.is_empty() {
        crate::log::warn(format!(
            "source {url} holds no keys in {}: nothing is copied from there",
            name_dbs(&empty)
        ));
    }
    if let Some(filters) = &selection.filters
        && probe_finds_nothing(source, options, &dbs)?
    {
        crate::log::warn(format!(
            "no key of source {url} matches {filters} ({keys_in_databases} keys in {}): the job will copy nothing; \
             check the pattern (a case-sensitive glob, such as 'user:*')",
            name_dbs(&dbs)
        ));
    }
    Ok(selection)
}

/// `--match 'user:*' --type hash`, or `None` when neither is given.
fn describe_filters(options: &CopyOptions) -> Option<String> {
    let mut parts = Vec::new();
    if let Some(pattern) = &options.match_pattern {
        parts.push(format!("--match '{pattern}'"));
    }
    if let Some(key_type) = &options.key_type {
        parts.push(format!("--type {key_type}"));
    }
    (!parts.is_empty()).then(|| parts.join(" "))
}

/// `db 5` / `dbs 0, 1`.
fn name_dbs(dbs: &[i64]) -> String {
    let names: Vec<String> = dbs.iter().map(i64::to_string).collect();
    match names.as_slice() {
        [one] => format!("db {one}"),
        _ => format!("dbs {}", names.join(", ")),
    }
}

/// True only when the probe scanned every selected database to its end and
/// found no matching key: a conclusive "nothing matches".
fn probe_finds_nothing(source: &mut Side, options: &CopyOptions, dbs: &[i64]) -> Result<bool> {
    let probe = CopyOptions {
        scan_count: PROBE_COUNT,
        ..options.clone()
    };
    for node in source.primary_addresses() {
        for &db in dbs {
            match probe_one(source, &node, db, &probe)? {
                Probe::Found | Probe::Unfinished => return Ok(false),
                Probe::NothingMatches => {}
            }
        }
    }
    Ok(true)
}

enum Probe {
    Found,
    NothingMatches,
    Unfinished,
}

fn probe_one(source: &mut Side, node: &str, db: i64, probe: &CopyOptions) -> Result<Probe> {
    let mut cursor = 0u64;
    for _ in 0..PROBE_SCANS {
        let mut pipe = CommandBuffer::new();
        pipe.add_command(scan_command(cursor, probe));
        let reply = source
            .run_pipelines(db, vec![(node.to_string(), pipe)])?
            .into_iter()
            .next()
            .and_then(|(_, mut replies)| replies.pop())
            .unwrap_or(Value::Nil);
        let (keys, next) = parse_scan(reply)?;
        if !keys.is_empty() {
            return Ok(Probe::Found);
        }
        if next == 0 {
            return Ok(Probe::NothingMatches);
        }
        cursor = next;
    }
    Ok(Probe::Unfinished)
}

impl Selection {
    /// After a job that completed: a filtered selection that journaled no
    /// key (`keys_seen`, any outcome) out of databases that hold keys
    /// matched nothing; say so, because "0 keys" in a long summary line is
    /// easy to miss.
    pub fn after_the_job(&self, exit: Exit, keys_seen: u64) {
        if exit != Exit::Success || keys_seen > 0 || self.keys_in_databases == 0 {
            return;
        }
        if let Some(filters) = &self.filters {
            crate::log::warn(format!(
                "no key matched {filters} in the {} keys of the selected databases: nothing was copied; \
                 check the pattern (a case-sensitive glob, such as 'user:*')",
                self.keys_in_databases
            ));
        }
    }
}

/// One server's `INFO memory` figures the fit check needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Memory {
    used: u64,
    /// `used_memory_dataset` (the data itself, without the server's own
    /// overhead); `used_memory` where a server does not report it.
    dataset: u64,
    /// 0: no limit.
    maxmemory: u64,
    policy: String,
}

impl Memory {
    fn parse(text: &str) -> Memory {
        let field = |name: &str| {
            text.lines()
                .find_map(|line| line.trim_end().strip_prefix(name)?.strip_prefix(':'))
        };
        let number = |name: &str| field(name).and_then(|v| v.parse::<u64>().ok());
        let used = number("used_memory").unwrap_or(0);
        Memory {
            used,
            dataset: number("used_memory_dataset").unwrap_or(used),
            maxmemory: number("maxmemory").unwrap_or(0),
            policy: field("maxmemory_policy")
                .unwrap_or("noeviction")
                .to_string(),
        }
    }
}

fn memory_of(side: &mut Side) -> Result<Vec<Memory>> {
    let mut figures = Vec::new();
    for address in side.primary_addresses() {
        let connection = side.connection(&address)?;
        let reply = connection.command(redis::cmd("INFO").arg("memory"))?;
        figures.push(Memory::parse(&expect_text(reply, "INFO memory")?));
    }
    Ok(figures)
}

/// Warns when the source's data (the selected databases' share of it) is
/// more than the target's `maxmemory` leaves room for. Only a warning: the
/// figures are estimates (encodings differ between versions, `--match`
/// selects less). A server that will not tell (INFO refused) is not
/// guessed about.
fn warn_if_memory_will_not_fit(
    source: &mut Side,
    target: &mut Side,
    options: &CopyOptions,
    selection: &Selection,
) {
    let (Ok(source_memory), Ok(target_memory)) = (memory_of(source), memory_of(target)) else {
        return;
    };
    let all_keys: u64 = source.info.keyspace.values().sum::<u64>().max(1);
    let in_scope = if source.is_cluster() {
        1.0
    } else {
        (selection.keys_in_databases as f64 / all_keys as f64).min(1.0)
    };
    let data: u64 = source_memory.iter().map(|m| m.dataset).sum();
    if let Some(warning) = fit_warning(
        (data as f64 * in_scope) as u64,
        &target_memory,
        &target.endpoint.redacted(),
        options.match_pattern.is_some() || options.key_type.is_some(),
    ) {
        crate::log::warn(warning);
    }
}

fn fit_warning(needed: u64, target: &[Memory], url: &str, filtered: bool) -> Option<String> {
    // A primary without a limit can take anything; no sum can say more.
    if target.is_empty() || target.iter().any(|m| m.maxmemory == 0) {
        return None;
    }
    let limit: u64 = target.iter().map(|m| m.maxmemory).sum();
    let used: u64 = target.iter().map(|m| m.used).sum();
    let room = limit.saturating_sub(used);
    if needed <= room {
        return None;
    }
    let policy = &target[0].policy;
    let consequence = if policy == "noeviction" {
        "writes will fail with OOM and the job will stop (resumable)".to_string()
    } else {
        format!("with maxmemory-policy {policy} the target will evict keys, copied ones included")
    };
    let estimate = if filtered {
        " (the whole databases; --match/--type may select less)"
    } else {
        ""
    };
    Some(format!(
        "the source's data is about {}{estimate}, and target {url} has room for {} (maxmemory {}, {} used): it will not fit; \
         {consequence}. Raise maxmemory on the target, or copy less",
        human_bytes(needed),
        human_bytes(room),
        human_bytes(limit),
        human_bytes(used)
    ))
}

/// `3.2 GiB`.
fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    #[test]
    fn databases_poured_into_one_are_refused() {
        let options = |map: &[(i64, i64)]| CopyOptions {
            db_map: map.iter().copied().collect(),
            ..CopyOptions::default()
        };
        assert!(refuse_merged_databases(&[0, 1], &options(&[(0, 2), (1, 3)])).is_ok());
        let error = refuse_merged_databases(&[0, 1], &options(&[(0, 2), (1, 2)])).unwrap_err();
        let text = format!("{error:#}");
        assert!(
            text.starts_with("source databases 0 and 1 would all go to target db 2"),
            "{text}"
        );
        assert_eq!(
            crate::exit::Exit::for_error(&error),
            crate::exit::Exit::Usage
        );
        // db 1 mapped onto db 0, which is copied as itself.
        let error = refuse_merged_databases(&[0, 1, 4], &options(&[(1, 0)])).unwrap_err();
        assert!(format!("{error:#}").contains("0 and 1 would all go to target db 0"));
    }

    #[test]
    fn module_names_are_read_from_both_reply_shapes() {
        let resp2 = Value::Array(vec![
            bulk("name"),
            bulk("ReJSON"),
            bulk("ver"),
            Value::Int(20609),
        ]);
        assert_eq!(module_name(&resp2).as_deref(), Some("ReJSON"));
        let resp3 = Value::Map(vec![
            (bulk("ver"), Value::Int(1)),
            (Value::SimpleString("name".into()), bulk("timeseries")),
        ]);
        assert_eq!(module_name(&resp3).as_deref(), Some("timeseries"));
        assert_eq!(module_name(&Value::Int(3)), None);
    }

    #[test]
    fn memory_figures_come_from_info_memory() {
        let text = "# Memory\r\nused_memory:2048000\r\nused_memory_human:1.95M\r\n\
                    used_memory_dataset:1500000\r\nmaxmemory:4096000\r\nmaxmemory_policy:allkeys-lru\r\n";
        let memory = Memory::parse(text);
        assert_eq!(
            memory,
            Memory {
                used: 2_048_000,
                dataset: 1_500_000,
                maxmemory: 4_096_000,
                policy: "allkeys-lru".into()
            }
        );
    }

    fn target(maxmemory: u64, used: u64, policy: &str) -> Memory {
        Memory {
            used,
            dataset: used,
            maxmemory,
            policy: policy.into(),
        }
    }

    #[test]
    fn data_beyond_the_room_left_warns_and_names_the_consequence() {
        let gib = 1 << 30;
        let warning = fit_warning(
            3 * gib,
            &[target(2 * gib, gib / 2, "noeviction")],
            "redis://new:6379",
            false,
        )
        .expect("3 GiB do not fit in 1.5 GiB");
        assert!(warning.contains("about 3.0 GiB"), "{warning}");
        assert!(
            warning.contains("room for 1.5 GiB (maxmemory 2.0 GiB, 512.0 MiB used)"),
            "{warning}"
        );
        assert!(warning.contains("fail with OOM"), "{warning}");
        let evicting =
            fit_warning(3 * gib, &[target(2 * gib, 0, "allkeys-lru")], "t", true).unwrap();
        assert!(evicting.contains("will evict keys"), "{evicting}");
        assert!(evicting.contains("may select less"), "{evicting}");
    }

    #[test]
    fn no_limit_or_enough_room_says_nothing() {
        let gib = 1 << 30;
        assert_eq!(
            fit_warning(3 * gib, &[target(0, 0, "noeviction")], "t", false),
            None
        );
        assert_eq!(
            fit_warning(gib, &[target(2 * gib, 0, "noeviction")], "t", false),
            None
        );
        // One cluster primary without a limit: the sum cannot tell.
        assert_eq!(
            fit_warning(
                9 * gib,
                &[target(gib, 0, "noeviction"), target(0, 0, "noeviction")],
                "t",
                false
            ),
            None
        );
    }

    #[test]
    fn counts_and_databases_are_listed_for_people() {
        assert_eq!(
            list_counts(&BTreeMap::from([(0, 1200), (3, 34)])),
            "db 0: 1200, db 3: 34"
        );
        assert_eq!(name_dbs(&[5]), "db 5");
        assert_eq!(name_dbs(&[0, 1]), "dbs 0, 1");
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }
}
