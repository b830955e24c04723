//! The checks before anything is written: a job that must not run is
//! refused here, with a message that says what to change, before the
//! journal records it or the target receives a key.
//!
//! Refused: source and target are the same server; the target is a
//! replica; options the servers' versions cannot honour; databases a
//! cluster does not have, or that a server was not configured with.

use anyhow::{Result, bail};

use crate::exit::usage_error;
use crate::job::source_databases;
use crate::options::{CopyOptions, TtlMode};
use crate::side::Side;

/// Every check, in the order an operator would want to hear about them.
pub fn check(source: &mut Side, target: &mut Side, options: &CopyOptions) -> Result<()> {
    refuse_same_server(source, target)?;
    refuse_replica_target(target)?;
    check_versions(source, target, options)?;
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
            "redis-ferry: warning: source runs {} and target {}; RESTORE refuses payloads from a newer version, so keys may fail",
            source.info.product(),
            target.info.product()
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
    if target.is_cluster() {
        let dbs = source_databases(source, options);
        if let Some(db) = dbs.iter().find(|db| options.target_db(**db) != 0) {
            return Err(usage_error(format!(
                "the target is a cluster, which has only db 0, and source db {db} would go to db {}; add --db-map {db}:0 (keys of several databases then share db 0) or choose databases with --db",
                options.target_db(*db)
            )));
        }
    }
    Ok(())
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
