//! What a username, an email address and a password may be, and when two usernames are one.

use unicode_normalization::UnicodeNormalization;
use unicode_security::{skeleton, RestrictionLevel, RestrictionLevelDetection as _};

use super::password::{MAX_PASSWORD_CHARS, MIN_PASSWORD_CHARS};

/// The most characters a username may have.
pub const MAX_USERNAME_CHARS: usize = 64;
/// The most bytes an email address may have (RFC 5321's path limit).
const MAX_EMAIL_BYTES: usize = 254;

/// Names nobody may register, because users and operators read them as the site speaking:
/// compared by look-alike key, so `Admin`, `ADMIN` and `аdmin` are all refused.
pub const RESERVED_USERNAMES: &[&str] = &[
    "admin",
    "administrator",
    "root",
    "system",
    "support",
    "security",
    "postmaster",
    "webmaster",
    "abuse",
    "noreply",
    "null",
    "undefined",
    "anonymous",
];

/// The key two usernames are compared by: NFKC, Unicode default case folding, NFKC again
/// (the last pass because folding can undo normalisation). `Alice`, `ALICE`, `ａｌｉｃｅ`
/// (full-width) and `alice` are one key. It is what a login looks a user up by, and the
/// tokens' `sub`.
pub(crate) fn username_key(username: &str) -> String {
    let normalized: String = username.nfkc().collect();
    fold(&normalized)
}

fn fold(text: &str) -> String {
    caseless::default_case_fold_str(text).nfkc().collect()
}

/// The key two usernames must not share to be told apart by a reader: the UTS #39 skeleton
/// of the [`username_key`], folded once more. The skeleton maps characters to the prototype
/// they are confused with (Cyrillic `а` and Greek `α` to Latin `a`, `0` to `O`, `m` to `rn`);
/// folding its result catches the pairs that differ only through case on the way (`b0b`
/// reads as `bOb`, which is `bob`).
pub(crate) fn lookalike_key(key: &str) -> String {
    fold(&skeleton(key).collect::<String>())
}

/// A username fit for registration: its display form (NFKC, case kept) and its key.
///
/// Allowed: 1 to 64 characters (after NFKC), each a Unicode letter or digit, `.`, `_` or `-`,
/// starting with a letter or digit, every character one UTS #39 recommends for identifiers,
/// all from one script (or one of the combinations a single writing system uses, such as
/// Japanese kanji and kana with Latin: UTS #39's "highly restrictive" level), and not a
/// [reserved name](RESERVED_USERNAMES). No spaces, no punctuation that could pass for
/// something else in a log or a URL, no `.`/`..`, no name that mixes look-alike letters from
/// two alphabets. Names that look alike but are each of one script (Latin `scope`, Cyrillic
/// `ѕсоре`) pass here; their shared [`lookalike_key`] is what the store refuses twice.
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
    if !display.starts_with(char::is_alphanumeric) {
        return Err("must start with a letter or digit");
    }
    match display.as_str().detect_restriction_level() {
        level if level <= RestrictionLevel::HighlyRestrictive => {}
        RestrictionLevel::Unrestricted => {
            return Err("has characters that are not recommended in names (Unicode UTS #39)")
        }
        _ => return Err("must not mix letters from different scripts"),
    }
    let key = username_key(&display);
    if is_reserved(&display, &key) {
        return Err("is reserved");
    }
    Ok((display, key))
}

/// Whether a name reads as one of the [`RESERVED_USERNAMES`]: by look-alike key, or, because
/// the display form keeps its case, as the reserved name in capitals (`ADMlN` with a small L
/// reads as `ADMIN`, though its key `admln` is not `admin`'s).
fn is_reserved(display: &str, key: &str) -> bool {
    // Skeletons of mixed case need a second pass to settle: `ADMIN` gives `admln` (capital I
    // to small L), whose `m` then gives `rn`, as `Adm1n` gives at once.
    let settled = |name: &str| lookalike_key(&lookalike_key(name));
    let lookalike = lookalike_key(key);
    let as_displayed = settled(display);
    RESERVED_USERNAMES.iter().any(|reserved| {
        lookalike_key(reserved) == lookalike || settled(&reserved.to_uppercase()) == as_displayed
    })
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
    fn names_in_one_script_pass_whatever_the_script() {
        for good in [
            "alice",
            "ѕсоре",
            "Ζωή",
            "山田太郎",
            "やまだ_taro",
            "김민수",
            "renée.o-brien",
            "a.b",
            "x1",
            "1x",
        ] {
            assert!(registrable_username(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn dots_mixed_scripts_and_reserved_names_are_refused() {
        let cases: [(&str, &str); 14] = [
            (".", "must start with a letter or digit"),
            ("..", "must start with a letter or digit"),
            (".alice", "must start with a letter or digit"),
            ("_alice", "must start with a letter or digit"),
            ("-", "must start with a letter or digit"),
            // Cyrillic а, then Greek α, before Latin "lice".
            ("\u{430}lice", "must not mix letters from different scripts"),
            ("\u{3b1}lice", "must not mix letters from different scripts"),
            (
                "pay\u{440}al",
                "must not mix letters from different scripts",
            ),
            ("admin", "is reserved"),
            ("ADMINISTRATOR", "is reserved"),
            ("ａｄｍｉｎ", "is reserved"),
            // A small L among capitals reads as an I.
            ("ADMlN", "is reserved"),
            ("Adm1n", "is reserved"),
            (
                "r\u{43e}\u{43e}t",
                "must not mix letters from different scripts",
            ),
        ];
        for (name, why) in cases {
            assert_eq!(registrable_username(name), Err(why), "{name:?}");
        }
    }

    #[test]
    fn look_alikes_share_a_key_and_other_names_do_not() {
        let scope = lookalike_key(&username_key("scope"));
        for variant in [
            "Scope",
            "ＳＣＯＰＥ",
            "\u{455}\u{441}\u{43e}\u{440}\u{435}", // Cyrillic ѕсоре
            "\u{405}\u{421}\u{41e}\u{420}\u{415}", // Cyrillic ЅСОРЕ
            "sc0pe",
        ] {
            assert_eq!(lookalike_key(&username_key(variant)), scope, "{variant:?}");
        }
        assert_eq!(
            lookalike_key(&username_key("modern")),
            lookalike_key(&username_key("rnodern"))
        );
        assert_eq!(
            lookalike_key(&username_key("\u{3b1}\u{3bf}")),
            lookalike_key(&username_key("ao")),
            "Greek αο"
        );
        assert_ne!(scope, lookalike_key(&username_key("scape")));
        assert_ne!(scope, lookalike_key(&username_key("scopes")));
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
