//! `notify-keyspace-events`: what following needs, and putting the
//! operator's own setting back.
//!
//! Following listens on the keyevent channels (`E`) for every class of
//! change (`A`: generic commands, strings, lists, sets, hashes, sorted sets,
//! streams, expirations, evictions, modules: whatever this server version
//! has). A setting that lacks some of them is extended with `CONFIG SET`
//! for the job and restored when it stops; a server that does not allow
//! CONFIG must be configured by the operator (on a managed service: its
//! parameter group).

use anyhow::{Context, Result, bail};

use crate::connection::{NodeConnection, expect_text};

/// The classes `A` stands for (Redis 5 has no `d`, which `A` then omits).
const ALL_CLASSES: &str = "g$lshzxet";

/// What following needs added to `current`, or `None` when it has it all.
pub fn missing(current: &str) -> Option<String> {
    let has_keyevents = current.contains('E');
    let has_classes =
        current.contains('A') || ALL_CLASSES.chars().all(|class| current.contains(class));
    if has_keyevents && has_classes {
        return None;
    }
    let mut wanted = current.to_string();
    if !has_keyevents {
        wanted.push('E');
    }
    if !has_classes {
        wanted.push('A');
    }
    Some(wanted)
}

/// A server's setting as found, and whether redis-ferry changed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifySetting {
    pub address: String,
    pub original: String,
    pub changed: bool,
}

/// Makes `connection`'s server publish what following needs. Refuses, with
/// the setting to change, when it lacks them and CONFIG is not allowed.
/// `need` says who needs them, for the error ("--follow needs keyspace
/// notifications").
pub fn ensure(
    connection: &mut NodeConnection,
    assume_set: bool,
    need: &str,
) -> Result<NotifySetting> {
    let address = connection.address();
    let server = format!(
        "{} {}",
        connection.endpoint().role,
        connection.endpoint().redacted()
    );
    if assume_set {
        return Ok(NotifySetting {
            address,
            original: String::new(),
            changed: false,
        });
    }
    let current = match connection.command(
        redis::cmd("CONFIG")
            .arg("GET")
            .arg("notify-keyspace-events"),
    ) {
        Ok(reply) => read_config_value(reply)?,
        Err(error) => bail!(
            "{need}, and {server} does not let redis-ferry read notify-keyspace-events ({error:#}): set notify-keyspace-events to KEA in its configuration (on a managed service: its parameter group), then run again with --notify-configured"
        ),
    };
    let Some(wanted) = missing(&current) else {
        return Ok(NotifySetting {
            address,
            original: current,
            changed: false,
        });
    };
    connection
        .command(
            redis::cmd("CONFIG")
                .arg("SET")
                .arg("notify-keyspace-events")
                .arg(&wanted),
        )
        .map_err(|error| {
            anyhow::anyhow!(
                "{need}, and {server} has notify-keyspace-events {current:?} and refused CONFIG SET ({error:#}): set notify-keyspace-events to KEA (or add E and A to it) in its configuration (on a managed service: its parameter group), then run again"
            )
        })?;
    crate::log::info(format!(
        "{server}: notify-keyspace-events set to {wanted:?} for the job (it was {current:?}; put back when the job stops; if redis-ferry is killed first, put it back with CONFIG SET notify-keyspace-events {current:?})"
    ));
    Ok(NotifySetting {
        address,
        original: current,
        changed: true,
    })
}

/// Puts back a setting redis-ferry changed.
pub fn restore(connection: &mut NodeConnection, setting: &NotifySetting) -> Result<()> {
    if !setting.changed {
        return Ok(());
    }
    connection
        .command(
            redis::cmd("CONFIG")
                .arg("SET")
                .arg("notify-keyspace-events")
                .arg(&setting.original),
        )
        .with_context(|| {
            format!(
                "cannot put notify-keyspace-events back to {:?} on {}; set it by hand",
                setting.original, setting.address
            )
        })?;
    Ok(())
}

/// `CONFIG GET` answers `[name, value]` (RESP2) or a map (RESP3).
pub fn read_config_value(reply: redis::Value) -> Result<String> {
    let values: Vec<redis::Value> = match reply {
        redis::Value::Array(values) => values,
        redis::Value::Map(pairs) => pairs.into_iter().flat_map(|(k, v)| [k, v]).collect(),
        other => bail!("CONFIG GET returned {other:?}"),
    };
    let value = values
        .into_iter()
        .nth(1)
        .context("CONFIG GET notify-keyspace-events returned no value")?;
    expect_text(value, "CONFIG GET notify-keyspace-events")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_following_needs_is_added_to_what_is_there() {
        assert_eq!(missing(""), Some("EA".to_string()));
        assert_eq!(missing("Ex"), Some("ExA".to_string()));
        assert_eq!(missing("AK"), Some("AKE".to_string()));
        assert_eq!(missing("AKE"), None);
        assert_eq!(missing("g$lshzxetE"), None);
        assert_eq!(missing("KEA"), None);
    }
}
