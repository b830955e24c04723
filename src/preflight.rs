//! The checks before anything is written: a job that must not run is
//! refused here, with a message that says what to change, before the
//! journal records it or the target receives a key.
//!
//! Refused: source and target are the same server; the target is a
//! replica; options the servers' versions cannot honour; databases a
//! cluster does not have, or that a server was not configured with; a
//! `--type` that names no type the source can hold.

use anyhow::{Result, bail};
use redis::Value;

use crate::exit::usage_error;
use crate::job::source_databases;
use crate::options::{CopyOptions, TtlMode};
use crate::side::Side;

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
    if (source.info.version.0, source.info.version.1)
        > (target.info.version.0, target.info.version.1)
    {
        eprintln!(
            "redis-ferry: warning: source runs Redis {} and target {}; RESTORE refuses payloads from a newer version, so keys may fail",
            source.info.version_text(),
            target.info.version_text()
        );
    }
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
}
