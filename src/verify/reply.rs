//! The plumbing under `verify`'s comparisons: both sides at once, commands
//! about one key sent to the node that serves it, and reading replies.
//!
//! Errors come in two kinds. An error about one key (an ACL on that key, a
//! WRONGTYPE because the key changed under us) is a [`KeyUnreadable`] in the
//! chain: that key is reported "could not compare" and verify goes on.
//! Anything else (connection lost past the budget, NOAUTH, a cluster that
//! does not settle) stops verify with exit 1.

use std::fmt;

use anyhow::{Result, anyhow, bail};
use redis::Value;

use crate::connection::{classify, error_text};
use crate::endpoint::Role;
use crate::escape::escape_key;
use crate::route::{Step, route_rounds, step_for_error};
use crate::side::Side;

/// The source and the target, each with its own connections.
pub struct Sides {
    pub source: Side,
    pub target: Side,
}

impl Sides {
    /// Handles for another thread: same deployments, own connections.
    pub fn fork(&self) -> Sides {
        Sides {
            source: self.source.fork(),
            target: self.target.fork(),
        }
    }
}

/// The database a key lives in on each side (`--db-map` may differ them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dbs {
    pub source: i64,
    pub target: i64,
}

/// One key could not be read on one side; verify reports it and goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyUnreadable(pub String);

impl fmt::Display for KeyUnreadable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for KeyUnreadable {}

/// Splits a key-level failure from a fatal error: `Ok(Err(text))` for the
/// former, `Err` for the latter.
pub fn key_level<T>(result: Result<T>) -> Result<std::result::Result<T, String>> {
    match result {
        Ok(value) => Ok(Ok(value)),
        Err(error) => match error.downcast_ref::<KeyUnreadable>() {
            Some(unreadable) => Ok(Err(unreadable.0.clone())),
            None => Err(error),
        },
    }
}

/// Runs `on_source` and `on_target` at the same time, one on a scoped
/// thread: the two servers answer in parallel.
pub fn on_both<A: Send, B: Send>(
    sides: &mut Sides,
    on_source: impl FnOnce(&mut Side) -> A + Send,
    on_target: impl FnOnce(&mut Side) -> B,
) -> (A, B) {
    let Sides { source, target } = sides;
    std::thread::scope(|scope| {
        let handle = scope.spawn(move || on_source(source));
        let b = on_target(target);
        let a = handle
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (a, b)
    })
}

/// Sends `commands` about `key` to the node serving it (following
/// redirections) and returns their replies. A server error about the key
/// becomes a [`KeyUnreadable`] naming the side.
pub fn ask(side: &mut Side, db: i64, key: &[u8], commands: &[redis::Cmd]) -> Result<Vec<Value>> {
    let role = side.role();
    let address = side.address_for_key(key);
    let mut replies = route_rounds(
        side,
        db,
        vec![address],
        |pipe, _| {
            for command in commands {
                pipe.add_command(command.clone());
            }
            commands.len()
        },
        |_, replies| {
            if let Some(error) = replies.iter().find_map(server_error) {
                return step_for_error(classify(error), || Err(error_text(error)));
            }
            Step::Done(Ok(replies
                .iter_mut()
                .map(|reply| std::mem::replace(reply, Value::Nil))
                .collect()))
        },
    )?;
    match replies.pop() {
        Some(Ok(values)) => Ok(values),
        Some(Err(text)) => Err(anyhow!(KeyUnreadable(unreadable_text(role, &text)))),
        None => bail!("no reply from the {role}"),
    }
}

/// The same commands about one key on both sides, at once.
pub fn ask_both(
    sides: &mut Sides,
    dbs: Dbs,
    key: &[u8],
    commands: &[redis::Cmd],
) -> Result<(Vec<Value>, Vec<Value>)> {
    let (source, target) = on_both(
        sides,
        |source| ask(source, dbs.source, key, commands),
        |target| ask(target, dbs.target, key, commands),
    );
    Ok((source?, target?))
}

/// "the source answered NOPERM ..." for a key-level error.
pub fn unreadable_text(role: Role, error: &str) -> String {
    format!("the {role} answered \"{error}\"")
}

pub fn server_error(value: &Value) -> Option<&redis::ServerError> {
    match value {
        Value::ServerError(error) => Some(error),
        _ => None,
    }
}

/// An integer reply.
pub fn int(value: &Value, what: &str) -> Result<i64> {
    match value {
        Value::Int(n) => Ok(*n),
        other => bail!(
            "{what} returned {} where a number was expected",
            shape(other)
        ),
    }
}

/// A bulk string reply; `None` for a nil.
pub fn bytes(value: Value, what: &str) -> Result<Option<Vec<u8>>> {
    match value {
        Value::BulkString(bytes) => Ok(Some(bytes)),
        Value::SimpleString(text) => Ok(Some(text.into_bytes())),
        Value::Okay => Ok(Some(b"OK".to_vec())),
        Value::Int(n) => Ok(Some(n.to_string().into_bytes())),
        Value::Double(n) => Ok(Some(n.to_string().into_bytes())),
        Value::Nil => Ok(None),
        other => bail!(
            "{what} returned {} where a string was expected",
            shape(&other)
        ),
    }
}

/// A bulk string reply that must be there.
pub fn some_bytes(value: Value, what: &str) -> Result<Vec<u8>> {
    bytes(value, what)?.ok_or_else(|| anyhow!("{what} returned nil where a string was expected"))
}

/// An array reply (a RESP3 map is flattened to `[k, v, k, v, ...]`).
pub fn items(value: Value, what: &str) -> Result<Vec<Value>> {
    match value {
        Value::Array(items) | Value::Set(items) => Ok(items),
        Value::Map(pairs) => Ok(pairs.into_iter().flat_map(|(k, v)| [k, v]).collect()),
        Value::Nil => Ok(Vec::new()),
        other => bail!(
            "{what} returned {} where a list was expected",
            shape(&other)
        ),
    }
}

/// `[k1, v1, k2, v2, ...]` → pairs of strings.
pub fn byte_pairs(value: Value, what: &str) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let flat = items(value, what)?;
    if flat.len() % 2 != 0 {
        bail!("{what} returned an odd number of items");
    }
    let mut pairs = Vec::with_capacity(flat.len() / 2);
    let mut flat = flat.into_iter();
    while let (Some(k), Some(v)) = (flat.next(), flat.next()) {
        pairs.push((some_bytes(k, what)?, some_bytes(v, what)?));
    }
    Ok(pairs)
}

/// `[k1, v1, ...]` with text keys (XINFO replies) → (name, value) pairs.
pub fn fields(value: Value, what: &str) -> Result<Vec<(String, Value)>> {
    let flat = items(value, what)?;
    let mut out = Vec::with_capacity(flat.len() / 2);
    let mut flat = flat.into_iter();
    while let (Some(k), Some(v)) = (flat.next(), flat.next()) {
        let name = String::from_utf8_lossy(&some_bytes(k, what)?).into_owned();
        out.push((name, v));
    }
    Ok(out)
}

/// A field of an XINFO-style reply, as text (`None` when absent or nil).
pub fn field_text(fields: &[(String, Value)], name: &str) -> Option<String> {
    fields
        .iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, value)| bytes(value.clone(), name).ok().flatten())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// A SCAN-family reply `[cursor, [items]]` → (next cursor, items).
pub fn scan_reply(value: Value, what: &str) -> Result<(u64, Value)> {
    let mut parts = items(value, what)?.into_iter();
    let (Some(cursor), Some(found)) = (parts.next(), parts.next()) else {
        bail!("{what} returned a reply without cursor and items");
    };
    let cursor = String::from_utf8_lossy(&some_bytes(cursor, what)?)
        .parse::<u64>()
        .map_err(|_| anyhow!("{what} returned a cursor that is not a number"))?;
    Ok((cursor, found))
}

/// A member, field or element name for a message: escaped like keys, in
/// quotes, and cut short when long (values themselves are never shown).
pub fn shown(name: &[u8]) -> String {
    const MAX: usize = 60;
    let escaped = escape_key(&name[..name.len().min(MAX)]);
    if name.len() > MAX {
        format!("\"{escaped}...\" ({} bytes)", name.len())
    } else {
        format!("\"{escaped}\"")
    }
}

/// A reply's kind, for messages (never its content, which may be large).
fn shape(value: &Value) -> &'static str {
    match value {
        Value::Nil => "nil",
        Value::Int(_) => "a number",
        Value::BulkString(_) | Value::SimpleString(_) | Value::Okay => "a string",
        Value::Array(_) | Value::Set(_) => "a list",
        Value::Map(_) => "a map",
        Value::ServerError(_) => "an error",
        _ => "an unexpected reply",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_escaped_and_cut_short() {
        assert_eq!(shown(b"f1"), "\"f1\"");
        assert_eq!(shown(b"a\"b\x00"), "\"a\\\"b\\x00\"");
        let long = vec![b'x'; 100];
        assert!(shown(&long).ends_with("...\" (100 bytes)"));
    }

    #[test]
    fn scan_replies_and_pairs_parse() {
        let reply = Value::Array(vec![
            Value::BulkString(b"17".to_vec()),
            Value::Array(vec![
                Value::BulkString(b"f".to_vec()),
                Value::BulkString(b"v".to_vec()),
            ]),
        ]);
        let (cursor, found) = scan_reply(reply, "HSCAN").unwrap();
        assert_eq!(cursor, 17);
        assert_eq!(
            byte_pairs(found, "HSCAN").unwrap(),
            vec![(b"f".to_vec(), b"v".to_vec())]
        );
    }

    #[test]
    fn key_level_errors_are_told_apart_from_fatal_ones() {
        let key: Result<()> = Err(anyhow!(KeyUnreadable("NOPERM".into())));
        assert_eq!(key_level(key).unwrap(), Err("NOPERM".to_string()));
        let fatal: Result<()> = Err(anyhow!("connection lost"));
        assert!(key_level(fatal).is_err());
    }
}
