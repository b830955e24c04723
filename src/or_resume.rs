//! `run --or-resume`: is the job in the journal the one this command line
//! describes? Same source, same target, same options (the job's `--rate`
//! aside: like `resume --rate`, a different one applies to this run only).
//!
//! Options are compared field by field as the journal stores them, so an
//! option added later is compared too without a change here; each
//! difference is named by its flag, with the journal's value and this
//! command line's.

use serde_json::Value;

use crate::endpoint::Endpoint;
use crate::journal::JobRecord;
use crate::options::CopyOptions;

/// Option fields that do not make another job: the rate applies per run.
const PER_RUN: [&str; 1] = ["rate"];

/// How the journal's job differs from the job this command line asks
/// for, one phrase per difference; empty when it is the same job.
pub fn differences(
    job: &JobRecord,
    source: &Endpoint,
    target: &Endpoint,
    options: &CopyOptions,
) -> Vec<String> {
    let mut found = Vec::new();
    for (recorded, given) in [(&job.source_url, source), (&job.target_url, target)] {
        if !same_server(recorded, given) {
            found.push(format!(
                "--{} {recorded} in the journal, {} here",
                given.role,
                given.redacted()
            ));
        }
    }
    found.extend(option_differences(&job.options, options, &PER_RUN));
    found
}

/// Whether `given` names the server the journal recorded: the same
/// address, user and database (the password is never stored, and may come
/// from the URL, a file or the environment).
fn same_server(recorded: &str, given: &Endpoint) -> bool {
    Endpoint::parse(given.role, recorded).is_ok_and(|stored| {
        stored.address == given.address
            && stored.username == given.username
            && stored.db == given.db
    })
}

/// The options that differ, named by their flags (`--scan-count 1000 in
/// the journal, 500 here`), leaving out the `ignored` fields.
pub fn option_differences(
    recorded: &CopyOptions,
    given: &CopyOptions,
    ignored: &[&str],
) -> Vec<String> {
    let as_map = |options: &CopyOptions| match serde_json::to_value(options) {
        Ok(Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    let (recorded, given) = (as_map(recorded), as_map(given));
    let mut names: Vec<&String> = recorded.keys().chain(given.keys()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter(|name| !ignored.contains(&name.as_str()))
        .filter_map(|name| {
            let then = recorded.get(name).unwrap_or(&Value::Null);
            let now = given.get(name).unwrap_or(&Value::Null);
            (then != now).then(|| {
                format!(
                    "{} {} in the journal, {} here",
                    flag_of(name),
                    shown(name, then),
                    shown(name, now)
                )
            })
        })
        .collect()
}

/// The command-line flag that sets an option field.
fn flag_of(field: &str) -> String {
    let flag = match field {
        "match_pattern" => "match",
        "key_type" => "type",
        "dbs" => "db",
        "db_map" => "db-map",
        "reconnect_timeout_secs" => "reconnect-timeout",
        "fence_hold_ms" => "fence-hold",
        other => return format!("--{}", other.replace('_', "-")),
    };
    format!("--{flag}")
}

/// An option's value as an operator would write it.
fn shown(field: &str, value: &Value) -> String {
    match (field, value) {
        ("shard", Value::Object(shard)) => format!(
            "{}/{}",
            shard.get("index").unwrap_or(&Value::Null),
            shard.get("count").unwrap_or(&Value::Null)
        ),
        ("dbs", Value::Array(dbs)) if dbs.is_empty() => "(every database)".to_string(),
        ("db_map", Value::Object(map)) if map.is_empty() => "(none)".to_string(),
        ("db_map", Value::Object(map)) => map
            .iter()
            .map(|(from, to)| format!("{from}:{to}"))
            .collect::<Vec<_>>()
            .join(","),
        (_, Value::Null) | (_, Value::Bool(false)) => "(not given)".to_string(),
        (_, Value::Bool(true)) => "(given)".to_string(),
        (_, Value::String(text)) => text.clone(),
        (_, Value::Array(items)) => items
            .iter()
            .map(|item| shown("", item))
            .collect::<Vec<_>>()
            .join(","),
        (_, other) => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::Role;
    use crate::journal::JobState;
    use crate::shard::ShardSpec;

    fn job(options: CopyOptions) -> JobRecord {
        JobRecord::new(
            JobState::Interrupted,
            "redis://old:7000",
            "redis://:***@new:7000",
            options,
        )
    }

    fn endpoint(role: Role, url: &str) -> Endpoint {
        Endpoint::parse(role, url).unwrap()
    }

    #[test]
    fn the_same_job_has_no_difference_whatever_its_rate() {
        let options = CopyOptions {
            shard: Some(ShardSpec::new(1, 3).unwrap()),
            rate: Some(100),
            ..CopyOptions::default()
        };
        let again = CopyOptions {
            rate: None,
            ..options.clone()
        };
        let source = endpoint(Role::Source, "redis://old:7000");
        let recorded = job(options);
        // The password now from the URL, now from elsewhere: the same server.
        for url in ["redis://:secret@new:7000", "redis://new:7000"] {
            let target = endpoint(Role::Target, url);
            assert!(differences(&recorded, &source, &target, &again).is_empty());
        }
        let elsewhere = endpoint(Role::Target, "redis://new:7001");
        assert_eq!(
            differences(&recorded, &source, &elsewhere, &again),
            ["--target redis://:***@new:7000 in the journal, redis://new:7001 here"]
        );
    }

    #[test]
    fn each_difference_is_named_by_its_flag() {
        let recorded = CopyOptions {
            shard: Some(ShardSpec::new(1, 3).unwrap()),
            ..CopyOptions::default()
        };
        let given = CopyOptions {
            shard: Some(ShardSpec::new(1, 4).unwrap()),
            scan_count: 500,
            match_pattern: Some("user:*".into()),
            no_fence: true,
            ..CopyOptions::default()
        };
        let found = differences(
            &job(recorded),
            &endpoint(Role::Source, "redis://other:7000"),
            &endpoint(Role::Target, "redis://new:7000"),
            &given,
        );
        assert_eq!(
            found,
            vec![
                "--source redis://old:7000 in the journal, redis://other:7000 here",
                "--match (not given) in the journal, user:* here",
                "--no-fence (not given) in the journal, (given) here",
                "--scan-count 1000 in the journal, 500 here",
                "--shard 1/3 in the journal, 1/4 here",
            ]
        );
    }
}
