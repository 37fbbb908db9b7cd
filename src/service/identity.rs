//! What a username, an email address and a password may be, and when two usernames are one.

use unicode_normalization::UnicodeNormalization;

use super::password::{MAX_PASSWORD_CHARS, MIN_PASSWORD_CHARS};

/// The most characters a username may have.
pub const MAX_USERNAME_CHARS: usize = 64;
/// The most bytes an email address may have (RFC 5321's path limit).
const MAX_EMAIL_BYTES: usize = 254;

/// The key two usernames are compared by: NFKC, Unicode default case folding, NFKC again
/// (the last pass because folding can undo normalisation). `Alice`, `ALICE`, `ａｌｉｃｅ`
/// (full-width) and `alice` are one key.
pub(crate) fn username_key(username: &str) -> String {
    let normalized: String = username.nfkc().collect();
    caseless::default_case_fold_str(&normalized)
        .nfkc()
        .collect()
}

/// A username fit for registration: its display form (NFKC, case kept) and its key.
///
/// Allowed: 1 to 64 characters (after NFKC), each a Unicode letter or digit, `.`, `_` or `-`.
/// No spaces, no punctuation that could pass for something else in a log or a URL.
pub(crate) fn registrable_username(username: &str) -> Result<(String, String), &'static str> {
    let display: String = username.nfkc().collect();
    let count = display.chars().count();
    if count == 0 || count > MAX_USERNAME_CHARS {
        return Err("must be 1 to 64 characters");
    }
    if !display
        .chars()
        .all(|c| c.is_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err("may only contain letters, digits, '.', '_' and '-'");
    }
    let key = username_key(&display);
    Ok((display, key))
}

/// A plausible email address: `local@domain`, the domain with at least one dot and no empty
/// label, no spaces or control characters, at most 254 bytes. Whether it receives mail is
/// for a confirmation message to find out, not for a parser.
pub(crate) fn valid_email(email: &str) -> Result<(), &'static str> {
    const INVALID: &str = "must be an email address like name@example.com";
    if email.len() > MAX_EMAIL_BYTES
        || email
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | '"' | ','))
    {
        return Err(INVALID);
    }
    let Some((local, domain)) = email.rsplit_once('@') else {
        return Err(INVALID);
    };
    if local.is_empty()
        || local.len() > 64
        || local.contains('@')
        || !domain.contains('.')
        || domain.split('.').any(str::is_empty)
    {
        return Err(INVALID);
    }
    Ok(())
}

/// Whether a password's length is acceptable, counted in characters.
pub(crate) fn acceptable_password_length(password: &str) -> bool {
    (MIN_PASSWORD_CHARS..=MAX_PASSWORD_CHARS).contains(&password.chars().count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_and_compatibility_forms_share_a_key() {
        let key = username_key("alice");
        for variant in ["Alice", "ALICE", "ａｌｉｃｅ", "ＡＬＩＣＥ"] {
            assert_eq!(username_key(variant), key, "{variant}");
        }
        assert_eq!(username_key("Straße"), username_key("STRASSE"));
        assert_ne!(username_key("alice"), username_key("alicia"));
    }

    #[test]
    fn usernames_are_checked() {
        assert_eq!(registrable_username("Zoë_1.x-y").unwrap().0, "Zoë_1.x-y");
        assert_eq!(registrable_username("ａｌｉｃｅ").unwrap().0, "alice");
        for bad in ["", "a b", "a/b", "a@b", &"x".repeat(65), "tab\t"] {
            assert!(registrable_username(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn emails_are_checked() {
        assert!(valid_email("alice@example.com").is_ok());
        for bad in [
            "",
            "alice",
            "alice@",
            "@example.com",
            "a@b",
            "a@b..c",
            "a b@c.d",
            "a@b@c.d",
        ] {
            assert!(valid_email(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn password_length_is_counted_in_characters() {
        assert!(!acceptable_password_length("1234567"));
        assert!(acceptable_password_length("ééééééééé"));
        assert!(acceptable_password_length(&"é".repeat(1024)));
        assert!(!acceptable_password_length(&"é".repeat(1025)));
        assert!(!acceptable_password_length("ééé"));
    }
}
