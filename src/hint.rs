//! The commands redis-ferry suggests next ("run `redis-ferry resume ...` to
//! continue"), written so that each works when pasted as printed: it names
//! the journal, quoted for the shell where needed, and says when a stored
//! URL's password must be given again (the journal never keeps one).

use std::path::Path;

use crate::endpoint::{Endpoint, Role};

/// `redis-ferry SUBCOMMAND --journal PATH [EXTRA]`.
pub fn command(subcommand: &str, journal: &Path, extra: &str) -> String {
    let mut text = format!(
        "redis-ferry {subcommand} --journal {}",
        shell_word(&journal.display().to_string())
    );
    if !extra.is_empty() {
        text.push(' ');
        text.push_str(extra);
    }
    text
}

/// What a later command needs besides the journal: the passwords of the
/// stored URLs that had one, and where they may come from. Empty when no
/// password is needed. Starts with "; " so it can follow a hint.
pub fn passwords_again(source_url: &str, target_url: &str) -> String {
    let needs = |role: Role, url: &str| {
        Endpoint::parse(role, url)
            .map(|endpoint| endpoint.password_missing())
            .unwrap_or(false)
    };
    let roles: Vec<Role> = [(Role::Source, source_url), (Role::Target, target_url)]
        .into_iter()
        .filter(|(role, url)| needs(*role, url))
        .map(|(role, _)| role)
        .collect();
    if roles.is_empty() {
        return String::new();
    }
    let ways: Vec<String> = roles
        .iter()
        .map(|role| {
            format!(
                "the {role}'s password with {} or --{role}-password-file FILE (or --{role} URL)",
                role.password_variable()
            )
        })
        .collect();
    format!(
        "; the journal keeps no password, so give {} again",
        ways.join(" and ")
    )
}

/// A word the shell passes through unchanged: as is when it holds only
/// safe characters, otherwise in single quotes.
fn shell_word(text: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "/._-+,:=@%".contains(c);
    if !text.is_empty() && text.chars().all(safe) {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_name_the_journal_quoted_for_the_shell() {
        assert_eq!(
            command("resume", Path::new("/var/lib/ferry/job.db"), ""),
            "redis-ferry resume --journal /var/lib/ferry/job.db"
        );
        assert_eq!(
            command(
                "retry",
                Path::new("/tmp/my jobs/it's.db"),
                "--outcome mismatch"
            ),
            r"redis-ferry retry --journal '/tmp/my jobs/it'\''s.db' --outcome mismatch"
        );
    }

    #[test]
    fn the_password_note_names_only_the_sides_that_had_one() {
        assert_eq!(passwords_again("redis://a:1", "redis://b:2"), "");
        let note = passwords_again("redis://a:1", "redis://:***@b:2");
        assert!(note.contains("the target's password"), "{note}");
        assert!(note.contains("REDIS_FERRY_TARGET_PASSWORD"), "{note}");
        assert!(note.contains("--target-password-file"), "{note}");
        assert!(!note.contains("source"), "{note}");
        let note = passwords_again("redis://u:***@a:1", "redis://:***@b:2");
        assert!(note.contains("the source's password") && note.contains("the target's password"));
    }
}
