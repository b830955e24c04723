//! Redis's glob patterns (`SCAN MATCH`, `KEYS`), matched on our side.
//!
//! `verify` needs them where the server cannot apply a pattern: keys drawn
//! with `RANDOMKEY` for `--sample`, and a `--match` that narrows a job's own
//! pattern (SCAN takes only one). The rules are Redis's `stringmatchlen`:
//! `*` any bytes, `?` one byte, `[abc]` / `[^abc]` / `[a-z]` a class, `\x`
//! the byte `x` literally; everything is byte-wise and case-sensitive.

/// One element of a compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Byte(u8),
    /// `?`
    One,
    /// `*` (consecutive stars collapse into one)
    Star,
    /// `[...]`: inclusive byte ranges, possibly negated.
    Class {
        negated: bool,
        ranges: Vec<(u8, u8)>,
    },
}

/// A compiled glob pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    tokens: Vec<Token>,
}

impl Glob {
    pub fn new(pattern: &str) -> Glob {
        Glob::from_bytes(pattern.as_bytes())
    }

    pub fn from_bytes(pattern: &[u8]) -> Glob {
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < pattern.len() {
            match pattern[i] {
                b'*' => {
                    if tokens.last() != Some(&Token::Star) {
                        tokens.push(Token::Star);
                    }
                    i += 1;
                }
                b'?' => {
                    tokens.push(Token::One);
                    i += 1;
                }
                b'[' => {
                    let (token, next) = parse_class(pattern, i + 1);
                    tokens.push(token);
                    i = next;
                }
                b'\\' if i + 1 < pattern.len() => {
                    tokens.push(Token::Byte(pattern[i + 1]));
                    i += 2;
                }
                byte => {
                    tokens.push(Token::Byte(byte));
                    i += 1;
                }
            }
        }
        Glob { tokens }
    }

    /// Whether `key` matches the whole pattern.
    pub fn matches(&self, key: &[u8]) -> bool {
        // Classic wildcard matching with one backtrack point: on a mismatch,
        // let the latest `*` swallow one more byte. Linear in practice, and
        // never worse than pattern length × key length.
        let tokens = &self.tokens;
        let (mut t, mut k) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while k < key.len() {
            match tokens.get(t) {
                Some(Token::Star) => {
                    star = Some((t, k));
                    t += 1;
                }
                Some(token) if token_matches(token, key[k]) => {
                    t += 1;
                    k += 1;
                }
                _ => match star {
                    Some((star_t, star_k)) => {
                        t = star_t + 1;
                        k = star_k + 1;
                        star = Some((star_t, star_k + 1));
                    }
                    None => return false,
                },
            }
        }
        tokens[t..].iter().all(|token| *token == Token::Star)
    }
}

fn token_matches(token: &Token, byte: u8) -> bool {
    match token {
        Token::Byte(expected) => *expected == byte,
        Token::One => true,
        Token::Star => false,
        Token::Class { negated, ranges } => {
            let inside = ranges
                .iter()
                .any(|(low, high)| (*low..=*high).contains(&byte));
            inside != *negated
        }
    }
}

/// Parses a class starting after its `[`; returns it and the index after
/// its `]`. An unclosed class runs to the end of the pattern, as in Redis.
fn parse_class(pattern: &[u8], mut i: usize) -> (Token, usize) {
    let negated = pattern.get(i) == Some(&b'^');
    if negated {
        i += 1;
    }
    let mut ranges = Vec::new();
    while i < pattern.len() && pattern[i] != b']' {
        let mut low = pattern[i];
        if low == b'\\' && i + 1 < pattern.len() {
            i += 1;
            low = pattern[i];
            ranges.push((low, low));
            i += 1;
            continue;
        }
        if pattern.get(i + 1) == Some(&b'-') && i + 2 < pattern.len() && pattern[i + 2] != b']' {
            let mut high = pattern[i + 2];
            if low > high {
                std::mem::swap(&mut low, &mut high);
            }
            ranges.push((low, high));
            i += 3;
        } else {
            ranges.push((low, low));
            i += 1;
        }
    }
    (Token::Class { negated, ranges }, (i + 1).min(pattern.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, key: &[u8]) -> bool {
        Glob::new(pattern).matches(key)
    }

    #[test]
    fn stars_and_question_marks() {
        assert!(m("*", b""));
        assert!(m("*", b"anything"));
        assert!(m("user:*", b"user:1"));
        assert!(!m("user:*", b"users:1"));
        assert!(m("*:session", b"a:b:session"));
        assert!(m("a*b*c", b"aXXbYYc"));
        assert!(!m("a*b*c", b"aXXbYY"));
        assert!(m("h?llo", b"hello"));
        assert!(!m("h?llo", b"hllo"));
        assert!(m("**x", b"x"));
    }

    #[test]
    fn classes_ranges_negation_and_escapes() {
        assert!(m("h[ae]llo", b"hallo"));
        assert!(!m("h[ae]llo", b"hillo"));
        assert!(m("h[^e]llo", b"hallo"));
        assert!(!m("h[^e]llo", b"hello"));
        assert!(m("k[a-c]", b"kb"));
        assert!(m("k[c-a]", b"kb"));
        assert!(!m("k[a-c]", b"kd"));
        assert!(m("a\\*b", b"a*b"));
        assert!(!m("a\\*b", b"axb"));
        assert!(m("[\\]]", b"]"));
    }

    #[test]
    fn binary_keys_match_byte_by_byte() {
        assert!(Glob::from_bytes(b"\x00*\xff").matches(b"\x00middle\xff"));
        assert!(!m("abc", b"ABC"));
    }
}
