//! Big values compared in chunks, so a key of millions of fields is never
//! held whole (by redis-ferry or in one reply buffer of the server).
//!
//! Each type first compares its length on both sides, then walks the source
//! a chunk at a time and asks the target about exactly that chunk:
//!
//! | type   | length  | source chunk           | target                      |
//! | ------ | ------- | ---------------------- | --------------------------- |
//! | string | STRLEN  | GETRANGE (1 MiB)       | GETRANGE, same window       |
//! | list   | LLEN    | LRANGE (1000)          | LRANGE, same window         |
//! | hash   | HLEN    | HSCAN                  | HMGET of those fields       |
//! | set    | SCARD   | SSCAN                  | SMISMEMBER (SISMEMBER < 6.2)|
//! | zset   | ZCARD   | ZSCAN (with scores)    | ZMSCORE (ZSCORE < 6.2)      |
//! | stream | XLEN    | XRANGE (200 entries)   | XRANGE, same window         |
//!
//! Same length and every source element found equal on the target means
//! equal values (HSCAN/SSCAN/ZSCAN may return an element twice; that only
//! checks it twice). Streams also compare their last generated id, their
//! consumer groups, each group's consumers and pending entries (not idle
//! times, which differ by nature).

use anyhow::{Context, Result, anyhow, bail};
use redis::Value;

use super::reply::{Dbs, Sides, ask, ask_both, byte_pairs, bytes, field_text, fields, int};
use super::reply::{items, scan_reply, shown, some_bytes};
use super::whole::{
    count_difference, field_difference, list_difference, optional_score, parse_score,
    score_difference, string_difference, string_length_difference,
};

/// Elements per chunk (SCAN COUNT hint, LRANGE window).
const CHUNK: usize = 1000;
/// Stream entries per XRANGE window (entries can be large).
const STREAM_CHUNK: usize = 200;
/// Bytes per GETRANGE window.
const STRING_WINDOW: i64 = 1024 * 1024;

/// Compares `key`, of type `key_type` on both sides: `None` when equal,
/// else what differs.
pub fn compare_key(
    sides: &mut Sides,
    dbs: Dbs,
    key: &[u8],
    key_type: &str,
) -> Result<Option<String>> {
    let mut pair = Pair { sides, dbs, key };
    match key_type {
        "string" => pair.strings(),
        "list" => pair.lists(),
        "hash" => pair.hashes(),
        "set" => pair.sets(),
        "zset" => pair.zsets(),
        "stream" => pair.streams(),
        other => bail!("a key of type {other} cannot be compared in chunks"),
    }
}

fn cmd(name: &str, key: &[u8]) -> redis::Cmd {
    let mut command = redis::cmd(name);
    command.arg(key);
    command
}

fn first(mut replies: Vec<Value>) -> Value {
    if replies.is_empty() {
        Value::Nil
    } else {
        replies.swap_remove(0)
    }
}

/// One key on both sides.
struct Pair<'a> {
    sides: &'a mut Sides,
    dbs: Dbs,
    key: &'a [u8],
}

impl Pair<'_> {
    /// One command on both sides; its reply from each.
    fn both(&mut self, command: redis::Cmd) -> Result<(Value, Value)> {
        let (s, t) = ask_both(self.sides, self.dbs, self.key, &[command])?;
        Ok((first(s), first(t)))
    }

    fn source(&mut self, command: redis::Cmd) -> Result<Value> {
        Ok(first(ask(
            &mut self.sides.source,
            self.dbs.source,
            self.key,
            &[command],
        )?))
    }

    fn target(&mut self, commands: &[redis::Cmd]) -> Result<Vec<Value>> {
        ask(&mut self.sides.target, self.dbs.target, self.key, commands)
    }

    /// `command key` on both sides, as numbers.
    fn lengths(&mut self, command: &str) -> Result<(i64, i64)> {
        let (s, t) = self.both(cmd(command, self.key))?;
        Ok((int(&s, command)?, int(&t, command)?))
    }

    fn target_is_at_least_6_2(&self) -> bool {
        self.sides.target.info.at_least(6, 2)
    }

    fn strings(&mut self) -> Result<Option<String>> {
        let (s, t) = self.lengths("STRLEN")?;
        if let Some(difference) = string_length_difference(s as usize, t as usize) {
            return Ok(Some(difference));
        }
        let mut start = 0;
        while start < s {
            let end = (start + STRING_WINDOW - 1).min(s - 1);
            let mut range = cmd("GETRANGE", self.key);
            range.arg(start).arg(end);
            let (sv, tv) = self.both(range)?;
            let (sv, tv) = (some_bytes(sv, "GETRANGE")?, some_bytes(tv, "GETRANGE")?);
            if let Some(difference) = string_difference(&sv, &tv, start as usize) {
                return Ok(Some(difference));
            }
            start = end + 1;
        }
        Ok(None)
    }

    fn lists(&mut self) -> Result<Option<String>> {
        let (s, t) = self.lengths("LLEN")?;
        if let Some(difference) = count_difference("list", "elements", s as usize, t as usize) {
            return Ok(Some(difference));
        }
        let mut start = 0;
        while start < s {
            let mut range = cmd("LRANGE", self.key);
            range.arg(start).arg(start + CHUNK as i64 - 1);
            let (sv, tv) = self.both(range)?;
            let (sv, tv) = (byte_list(sv, "LRANGE")?, byte_list(tv, "LRANGE")?);
            if let Some(difference) = list_difference(&sv, &tv, start as usize) {
                return Ok(Some(difference));
            }
            start += CHUNK as i64;
        }
        Ok(None)
    }

    fn hashes(&mut self) -> Result<Option<String>> {
        let (s, t) = self.lengths("HLEN")?;
        if let Some(difference) = count_difference("hash", "fields", s as usize, t as usize) {
            return Ok(Some(difference));
        }
        let mut cursor = 0;
        loop {
            let (next, found) = self.scan_chunk("HSCAN", cursor)?;
            let pairs = byte_pairs(found, "HSCAN")?;
            if !pairs.is_empty() {
                let mut hmget = cmd("HMGET", self.key);
                for (field, _) in &pairs {
                    hmget.arg(field.as_slice());
                }
                let values = items(first(self.target(&[hmget])?), "HMGET")?;
                for ((field, value), target) in pairs.iter().zip(values) {
                    let target = bytes(target, "HMGET")?;
                    if let Some(difference) = field_difference(field, value, target.as_ref()) {
                        return Ok(Some(difference));
                    }
                }
            }
            if next == 0 {
                return Ok(None);
            }
            cursor = next;
        }
    }

    fn sets(&mut self) -> Result<Option<String>> {
        let (s, t) = self.lengths("SCARD")?;
        if let Some(difference) = count_difference("set", "members", s as usize, t as usize) {
            return Ok(Some(difference));
        }
        let mut cursor = 0;
        loop {
            let (next, found) = self.scan_chunk("SSCAN", cursor)?;
            let members = byte_list(found, "SSCAN")?;
            let present = self.members_on_target(&members)?;
            if let Some((member, _)) = members.iter().zip(present).find(|(_, present)| !present) {
                return Ok(Some(format!(
                    "set member {} is missing on the target",
                    shown(member)
                )));
            }
            if next == 0 {
                return Ok(None);
            }
            cursor = next;
        }
    }

    fn members_on_target(&mut self, members: &[Vec<u8>]) -> Result<Vec<bool>> {
        if members.is_empty() {
            return Ok(Vec::new());
        }
        let replies = if self.target_is_at_least_6_2() {
            let mut command = cmd("SMISMEMBER", self.key);
            for member in members {
                command.arg(member.as_slice());
            }
            items(first(self.target(&[command])?), "SMISMEMBER")?
        } else {
            let commands: Vec<redis::Cmd> = members
                .iter()
                .map(|member| {
                    let mut command = cmd("SISMEMBER", self.key);
                    command.arg(member.as_slice());
                    command
                })
                .collect();
            self.target(&commands)?
        };
        replies
            .iter()
            .map(|reply| Ok(int(reply, "SMISMEMBER")? == 1))
            .collect()
    }

    fn zsets(&mut self) -> Result<Option<String>> {
        let (s, t) = self.lengths("ZCARD")?;
        if let Some(difference) = count_difference("zset", "members", s as usize, t as usize) {
            return Ok(Some(difference));
        }
        let mut cursor = 0;
        loop {
            let (next, found) = self.scan_chunk("ZSCAN", cursor)?;
            let pairs = byte_pairs(found, "ZSCAN")?;
            let members: Vec<Vec<u8>> = pairs.iter().map(|(member, _)| member.clone()).collect();
            let scores = self.scores_on_target(&members)?;
            for ((member, score), target) in pairs.iter().zip(scores) {
                if let Some(difference) = score_difference(member, parse_score(score)?, target) {
                    return Ok(Some(difference));
                }
            }
            if next == 0 {
                return Ok(None);
            }
            cursor = next;
        }
    }

    fn scores_on_target(&mut self, members: &[Vec<u8>]) -> Result<Vec<Option<f64>>> {
        if members.is_empty() {
            return Ok(Vec::new());
        }
        let replies = if self.target_is_at_least_6_2() {
            let mut command = cmd("ZMSCORE", self.key);
            for member in members {
                command.arg(member.as_slice());
            }
            items(first(self.target(&[command])?), "ZMSCORE")?
        } else {
            let commands: Vec<redis::Cmd> = members
                .iter()
                .map(|member| {
                    let mut command = cmd("ZSCORE", self.key);
                    command.arg(member.as_slice());
                    command
                })
                .collect();
            self.target(&commands)?
        };
        replies
            .into_iter()
            .map(|reply| optional_score(reply, "ZMSCORE"))
            .collect()
    }

    /// One `HSCAN`/`SSCAN`/`ZSCAN` step on the source.
    fn scan_chunk(&mut self, command: &str, cursor: u64) -> Result<(u64, Value)> {
        let mut scan = cmd(command, self.key);
        scan.arg(cursor).arg("COUNT").arg(CHUNK);
        let reply = self.source(scan)?;
        scan_reply(reply, command)
    }

    fn streams(&mut self) -> Result<Option<String>> {
        let (s, t) = self.lengths("XLEN")?;
        if let Some(difference) = count_difference("stream", "entries", s as usize, t as usize) {
            return Ok(Some(difference));
        }
        if let Some(difference) = self.stream_ids()? {
            return Ok(Some(difference));
        }
        if let Some(difference) = self.stream_entries()? {
            return Ok(Some(difference));
        }
        self.stream_groups()
    }

    /// The stream's last generated id (and, on Redis 7, how many entries
    /// were ever added and the largest deleted id): a stream restored with
    /// another last id would hand out other ids to the next XADD.
    fn stream_ids(&mut self) -> Result<Option<String>> {
        let mut info = redis::cmd("XINFO");
        info.arg("STREAM").arg(self.key);
        let (s, t) = self.both(info)?;
        let (s, t) = (fields(s, "XINFO STREAM")?, fields(t, "XINFO STREAM")?);
        for name in ["last-generated-id", "max-deleted-entry-id", "entries-added"] {
            if let (Some(s), Some(t)) = (field_text(&s, name), field_text(&t, name))
                && s != t
            {
                return Ok(Some(format!(
                    "stream {name} differs (source {s}, target {t})"
                )));
            }
        }
        Ok(None)
    }

    fn stream_entries(&mut self) -> Result<Option<String>> {
        let mut start = "-".to_string();
        loop {
            let mut range = cmd("XRANGE", self.key);
            range.arg(&start).arg("+").arg("COUNT").arg(STREAM_CHUNK);
            let (s, t) = self.both(range)?;
            let (s, t) = (items(s, "XRANGE")?, items(t, "XRANGE")?);
            if let Some(at) = (0..s.len().max(t.len())).find(|&i| s.get(i) != t.get(i)) {
                let entry = s.get(at).or(t.get(at)).map(entry_id).transpose()?;
                return Ok(Some(format!(
                    "stream entry {} differs or is missing on one side",
                    entry.unwrap_or_default()
                )));
            }
            match s.last() {
                Some(last) if s.len() == STREAM_CHUNK => start = next_id(&entry_id(last)?)?,
                _ => return Ok(None),
            }
        }
    }

    fn stream_groups(&mut self) -> Result<Option<String>> {
        let mut info = redis::cmd("XINFO");
        info.arg("GROUPS").arg(self.key);
        let (s, t) = self.both(info)?;
        let (source, target) = (groups(s)?, groups(t)?);
        for group in &source {
            match target.iter().find(|g| g.name == group.name) {
                None => {
                    return Ok(Some(format!(
                        "stream consumer group {} is missing on the target",
                        shown(&group.name)
                    )));
                }
                Some(other) if other != group => {
                    return Ok(Some(format!(
                        "stream consumer group {} differs (last delivered id, pending entries or consumers)",
                        shown(&group.name)
                    )));
                }
                Some(_) => {}
            }
        }
        if let Some(difference) =
            count_difference("stream", "consumer groups", source.len(), target.len())
        {
            return Ok(Some(difference));
        }
        for group in &source {
            if let Some(difference) = self.consumers(&group.name)? {
                return Ok(Some(difference));
            }
            if let Some(difference) = self.pending(&group.name)? {
                return Ok(Some(difference));
            }
        }
        Ok(None)
    }

    fn consumers(&mut self, group: &[u8]) -> Result<Option<String>> {
        let mut info = redis::cmd("XINFO");
        info.arg("CONSUMERS").arg(self.key).arg(group);
        let (s, t) = self.both(info)?;
        if consumers(s)? != consumers(t)? {
            return Ok(Some(format!(
                "consumers of stream consumer group {} differ",
                shown(group)
            )));
        }
        Ok(None)
    }

    /// The group's pending entries list, a window at a time: each entry's
    /// id, consumer and delivery count.
    fn pending(&mut self, group: &[u8]) -> Result<Option<String>> {
        let mut start = "-".to_string();
        loop {
            let mut command = cmd("XPENDING", self.key);
            command.arg(group).arg(&start).arg("+").arg(CHUNK);
            let (s, t) = self.both(command)?;
            let (s, t) = (pending_entries(s)?, pending_entries(t)?);
            if s != t {
                return Ok(Some(format!(
                    "pending entries of stream consumer group {} differ",
                    shown(group)
                )));
            }
            match s.last() {
                Some((id, _, _)) if s.len() == CHUNK => start = next_id(id)?,
                _ => return Ok(None),
            }
        }
    }
}

fn byte_list(reply: Value, what: &str) -> Result<Vec<Vec<u8>>> {
    items(reply, what)?
        .into_iter()
        .map(|item| some_bytes(item, what))
        .collect()
}

/// What is compared of a consumer group.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Group {
    name: Vec<u8>,
    last_delivered: Option<String>,
    pending: Option<String>,
    consumers: Option<String>,
}

fn groups(reply: Value) -> Result<Vec<Group>> {
    let mut groups = Vec::new();
    for group in items(reply, "XINFO GROUPS")? {
        let group = fields(group, "XINFO GROUPS")?;
        let name = group
            .iter()
            .find(|(n, _)| n == "name")
            .map(|(_, v)| some_bytes(v.clone(), "XINFO GROUPS"))
            .transpose()?
            .context("XINFO GROUPS returned a group without a name")?;
        groups.push(Group {
            name,
            last_delivered: field_text(&group, "last-delivered-id"),
            pending: field_text(&group, "pending"),
            consumers: field_text(&group, "consumers"),
        });
    }
    groups.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(groups)
}

/// (name, pending) of each consumer, sorted.
fn consumers(reply: Value) -> Result<Vec<(String, Option<String>)>> {
    let mut out = Vec::new();
    for consumer in items(reply, "XINFO CONSUMERS")? {
        let consumer = fields(consumer, "XINFO CONSUMERS")?;
        let name = field_text(&consumer, "name").unwrap_or_default();
        out.push((name, field_text(&consumer, "pending")));
    }
    out.sort();
    Ok(out)
}

/// (id, consumer, deliveries) of each XPENDING entry (idle time left out).
fn pending_entries(reply: Value) -> Result<Vec<(String, Vec<u8>, i64)>> {
    let mut out = Vec::new();
    for entry in items(reply, "XPENDING")? {
        let mut parts = items(entry, "XPENDING")?.into_iter();
        let (Some(id), Some(consumer), Some(_idle), Some(deliveries)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            bail!("XPENDING returned an entry without id, consumer, idle time and deliveries");
        };
        out.push((
            String::from_utf8_lossy(&some_bytes(id, "XPENDING")?).into_owned(),
            some_bytes(consumer, "XPENDING")?,
            int(&deliveries, "XPENDING")?,
        ));
    }
    Ok(out)
}

/// The id of an XRANGE entry `[id, [field, value, ...]]`.
fn entry_id(entry: &Value) -> Result<String> {
    let parts = items(entry.clone(), "XRANGE")?;
    let id = parts
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("XRANGE returned an entry without an id"))?;
    Ok(String::from_utf8_lossy(&some_bytes(id, "XRANGE")?).into_owned())
}

/// The smallest stream id after `id` (`5-3` → `5-4`), so a window starts
/// after the previous one on every Redis version (the exclusive `(` range
/// needs 6.2).
fn next_id(id: &str) -> Result<String> {
    let (ms, seq) = id
        .split_once('-')
        .and_then(|(ms, seq)| Some((ms.parse::<u64>().ok()?, seq.parse::<u64>().ok()?)))
        .ok_or_else(|| anyhow!("{id:?} is not a stream id"))?;
    Ok(match seq.checked_add(1) {
        Some(seq) => format!("{ms}-{seq}"),
        None => format!("{}-0", ms.saturating_add(1)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_windows_start_right_after_the_last_id() {
        assert_eq!(next_id("5-3").unwrap(), "5-4");
        assert_eq!(next_id(&format!("7-{}", u64::MAX)).unwrap(), "8-0");
        assert!(next_id("nonsense").is_err());
    }

    #[test]
    fn pending_entries_leave_idle_times_out() {
        let entry = |idle: i64| {
            Value::Array(vec![Value::Array(vec![
                Value::BulkString(b"1-1".to_vec()),
                Value::BulkString(b"alice".to_vec()),
                Value::Int(idle),
                Value::Int(2),
            ])])
        };
        assert_eq!(
            pending_entries(entry(10)).unwrap(),
            pending_entries(entry(99_999)).unwrap()
        );
    }
}
