//! Reading the replies of the rebuild reads: bulk strings, integers,
//! arrays, and the field/value maps `XINFO` answers with (flat arrays in
//! RESP2, maps in RESP3).

use anyhow::{Result, anyhow, bail};
use redis::Value;

use crate::connection::error_text;

/// A bulk or simple string's bytes.
pub fn bytes(value: Value, what: &str) -> Result<Vec<u8>> {
    match value {
        Value::BulkString(bytes) => Ok(bytes),
        Value::SimpleString(text) | Value::VerbatimString { text, .. } => Ok(text.into_bytes()),
        Value::Int(n) => Ok(n.to_string().into_bytes()),
        Value::Double(d) => Ok(d.to_string().into_bytes()),
        Value::Okay => Ok(b"OK".to_vec()),
        Value::ServerError(error) => bail!("{what} failed: {}", error_text(&error)),
        other => bail!("{what} returned {other:?} where a string was expected"),
    }
}

/// A string reply as text (IDs, names of fields in XINFO).
pub fn text(value: Value, what: &str) -> Result<String> {
    Ok(String::from_utf8_lossy(&bytes(value, what)?).into_owned())
}

/// A string that may be nil.
pub fn optional_text(value: Value, what: &str) -> Result<Option<String>> {
    match value {
        Value::Nil => Ok(None),
        other => text(other, what).map(Some),
    }
}

/// An integer reply (or an integer sent as a string).
pub fn int(value: Value, what: &str) -> Result<i64> {
    match value {
        Value::Int(n) => Ok(n),
        Value::BulkString(bytes) => std::str::from_utf8(&bytes)
            .ok()
            .and_then(|text| text.parse().ok())
            .ok_or_else(|| anyhow!("{what} returned a string where a number was expected")),
        Value::ServerError(error) => bail!("{what} failed: {}", error_text(&error)),
        other => bail!("{what} returned {other:?} where a number was expected"),
    }
}

/// An integer that may be nil.
pub fn optional_int(value: Value, what: &str) -> Result<Option<i64>> {
    match value {
        Value::Nil => Ok(None),
        other => int(other, what).map(Some),
    }
}

/// An array's items (nil reads as empty).
pub fn items(value: Value, what: &str) -> Result<Vec<Value>> {
    match value {
        Value::Array(items) | Value::Set(items) => Ok(items),
        Value::Nil => Ok(Vec::new()),
        Value::ServerError(error) => bail!("{what} failed: {}", error_text(&error)),
        other => bail!("{what} returned {other:?} where an array was expected"),
    }
}

/// An array of strings.
pub fn byte_items(value: Value, what: &str) -> Result<Vec<Vec<u8>>> {
    items(value, what)?
        .into_iter()
        .map(|item| bytes(item, what))
        .collect()
}

/// A flat array of pairs (`HGETALL`, `ZRANGE ... WITHSCORES`, `HSCAN`).
pub fn byte_pairs(value: Value, what: &str) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let flat = match value {
        Value::Map(pairs) => {
            return pairs
                .into_iter()
                .map(|(k, v)| Ok((bytes(k, what)?, bytes(v, what)?)))
                .collect();
        }
        other => byte_items(other, what)?,
    };
    if flat.len() % 2 != 0 {
        bail!("{what} returned an odd number of items");
    }
    let mut pairs = Vec::with_capacity(flat.len() / 2);
    let mut iter = flat.into_iter();
    while let (Some(first), Some(second)) = (iter.next(), iter.next()) {
        pairs.push((first, second));
    }
    Ok(pairs)
}

/// A reply of named fields (XINFO): `[name, value, name, value, ...]` or a
/// RESP3 map.
pub struct Fields(Vec<(String, Value)>);

impl Fields {
    pub fn parse(value: Value, what: &str) -> Result<Fields> {
        let pairs = match value {
            Value::Map(pairs) => pairs,
            other => {
                let flat = items(other, what)?;
                if flat.len() % 2 != 0 {
                    bail!("{what} returned an odd number of items");
                }
                let mut pairs = Vec::with_capacity(flat.len() / 2);
                let mut iter = flat.into_iter();
                while let (Some(name), Some(value)) = (iter.next(), iter.next()) {
                    pairs.push((name, value));
                }
                pairs
            }
        };
        let fields = pairs
            .into_iter()
            .map(|(name, value)| Ok((text(name, what)?, value)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Fields(fields))
    }

    /// Takes the field `name` out (`None` when the server has no such field,
    /// as older versions lack some).
    pub fn take(&mut self, name: &str) -> Option<Value> {
        let index = self.0.iter().position(|(field, _)| field == name)?;
        Some(self.0.swap_remove(index).1)
    }

    /// Takes a field every version has.
    pub fn require(&mut self, name: &str, what: &str) -> Result<Value> {
        self.take(name)
            .ok_or_else(|| anyhow!("{what} has no {name:?} field"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_come_from_flat_arrays_and_maps() {
        let flat = Value::Array(vec![
            Value::BulkString(b"f".to_vec()),
            Value::BulkString(b"v".to_vec()),
        ]);
        assert_eq!(
            byte_pairs(flat, "HGETALL").unwrap(),
            vec![(b"f".to_vec(), b"v".to_vec())]
        );
        let odd = Value::Array(vec![Value::BulkString(b"f".to_vec())]);
        assert!(byte_pairs(odd, "HGETALL").is_err());
    }

    #[test]
    fn fields_are_taken_by_name() {
        let reply = Value::Array(vec![
            Value::BulkString(b"length".to_vec()),
            Value::Int(3),
            Value::BulkString(b"last-generated-id".to_vec()),
            Value::BulkString(b"5-0".to_vec()),
        ]);
        let mut fields = Fields::parse(reply, "XINFO STREAM").unwrap();
        assert_eq!(
            text(fields.take("last-generated-id").unwrap(), "id").unwrap(),
            "5-0"
        );
        assert!(fields.take("entries-added").is_none());
        assert!(fields.require("max-deleted-entry-id", "XINFO").is_err());
    }
}
