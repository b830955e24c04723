//! Writing binary keys as text, losslessly.
//!
//! Redis keys are arbitrary bytes. Everything redis-ferry prints (status,
//! reports, CSV, JSON, error messages) shows a key in the contract's escaped
//! form: printable ASCII (0x20..=0x7E, space included) as is, a backslash as
//! `\\`, a double quote as `\"`, and every other byte as `\xHH` with
//! lower-case hex. [`unescape_key`] reverses it exactly.

use std::fmt::Write as _;

/// Escapes a key for display; see the module doc for the rules.
pub fn escape_key(key: &[u8]) -> String {
    let mut out = String::with_capacity(key.len());
    for &byte in key {
        match byte {
            b'\\' => out.push_str("\\\\"),
            b'"' => out.push_str("\\\""),
            0x20..=0x7e => out.push(byte as char),
            _ => {
                let _ = write!(out, "\\x{byte:02x}");
            }
        }
    }
    out
}

/// Reverses [`escape_key`]. Fails on a dangling backslash or a bad `\x`
/// sequence, naming the position, so a hand-edited key list is caught.
pub fn unescape_key(text: &str) -> Result<Vec<u8>, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        match bytes.get(i + 1) {
            Some(b'\\') => out.push(b'\\'),
            Some(b'"') => out.push(b'"'),
            Some(b'x') => {
                let hex = text
                    .get(i + 2..i + 4)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("bad \\x escape at byte {i} of {text:?}"))?;
                out.push(hex);
                i += 2;
            }
            _ => return Err(format!("dangling backslash at byte {i} of {text:?}")),
        }
        i += 2;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_value_round_trips() {
        let all: Vec<u8> = (0..=255u8).collect();
        let escaped = escape_key(&all);
        assert!(escaped.is_ascii());
        assert_eq!(unescape_key(&escaped).unwrap(), all);
        for byte in 0..=255u8 {
            let key = [b'a', byte, b'z'];
            assert_eq!(unescape_key(&escape_key(&key)).unwrap(), key);
        }
    }

    #[test]
    fn printable_ascii_stays_readable_and_specials_are_escaped() {
        assert_eq!(escape_key(b"user:1 name"), "user:1 name");
        assert_eq!(escape_key(b"a\\b\"c"), "a\\\\b\\\"c");
        assert_eq!(escape_key(b"\x00\r\n\xff"), "\\x00\\x0d\\x0a\\xff");
        assert_eq!(escape_key(b""), "");
    }

    #[test]
    fn malformed_escapes_are_rejected() {
        assert!(unescape_key("abc\\").is_err());
        assert!(unescape_key("\\x4").is_err());
        assert!(unescape_key("\\xzz").is_err());
        assert!(unescape_key("\\n").is_err());
    }
}
