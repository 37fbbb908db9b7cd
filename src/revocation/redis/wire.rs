//! What `RedisRevocations` writes to Redis: key names, the channel, and the messages on it.
//!
//! Everything lives under one key prefix so several deployments (or test runs) can share a
//! server without seeing each other's revocations.

use crate::revocation::MemoryRevocations;

/// The last instant `EXAT` accepts comfortably (the end of year 9999): later expiries are
/// clamped to it rather than refused, since "for ever" is what the caller meant.
const LATEST_EXPIRY: u64 = 253_402_300_799;

/// Key and channel names under one prefix.
#[derive(Debug, Clone)]
pub(super) struct KeySpace {
    prefix: String,
}

/// A key of ours, read back from a `SCAN`.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum StoredKey<'k> {
    Token { jti: &'k str },
    Subject { sub: &'k str },
    Session { sid: &'k str },
}

impl KeySpace {
    pub(super) fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    pub(super) fn prefix(&self) -> &str {
        &self.prefix
    }

    pub(super) fn token(&self, jti: &str) -> String {
        format!("{}jti:{jti}", self.prefix)
    }

    pub(super) fn subject(&self, sub: &str) -> String {
        format!("{}sub:{sub}", self.prefix)
    }

    pub(super) fn session(&self, sid: &str) -> String {
        format!("{}sid:{sid}", self.prefix)
    }

    pub(super) fn channel(&self) -> String {
        format!("{}revocations", self.prefix)
    }

    /// A `SCAN MATCH` pattern for every key under the prefix, with the prefix's own glob
    /// characters escaped so a prefix like `app[1]:` matches only itself.
    pub(super) fn scan_pattern(&self) -> String {
        let mut pattern = String::with_capacity(self.prefix.len() + 2);
        for character in self.prefix.chars() {
            if matches!(character, '*' | '?' | '[' | ']' | '\\') {
                pattern.push('\\');
            }
            pattern.push(character);
        }
        pattern.push('*');
        pattern
    }

    pub(super) fn classify<'k>(&self, key: &'k str) -> Option<StoredKey<'k>> {
        let rest = key.strip_prefix(self.prefix.as_str())?;
        if let Some(jti) = rest.strip_prefix("jti:") {
            Some(StoredKey::Token { jti })
        } else if let Some(sid) = rest.strip_prefix("sid:") {
            Some(StoredKey::Session { sid })
        } else {
            rest.strip_prefix("sub:")
                .map(|sub| StoredKey::Subject { sub })
        }
    }
}

/// `instant + grace + 1`, as an `EXAT` argument: the first second the key is no longer needed.
pub(super) fn expiry_with_grace(instant: u64, grace: u64) -> u64 {
    // Redis deletes a key when its second begins, while the gate still accepts a token
    // during the second `exp + leeway` (and the leeway may equal the grace): the key lives
    // through that second.
    instant
        .saturating_add(grace)
        .saturating_add(1)
        .min(LATEST_EXPIRY)
}

/// One revocation, as published to the other gates after Redis stored it.
///
/// Text, with the free-form name last so it may hold any character:
/// `t <expires_at> <jti>`, `s <issued_before> <keep_until> <sub>` or `e <keep_until> <sid>`.
/// Gates of an older version ignore (and log) the kinds they do not know.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Revocation<'a> {
    Token {
        jti: &'a str,
        expires_at: u64,
    },
    Subject {
        sub: &'a str,
        issued_before: u64,
        keep_until: u64,
    },
    Session {
        sid: &'a str,
        keep_until: u64,
    },
}

impl<'a> Revocation<'a> {
    pub(super) fn encode(&self) -> String {
        match self {
            Self::Token { jti, expires_at } => format!("t {expires_at} {jti}"),
            Self::Subject {
                sub,
                issued_before,
                keep_until,
            } => format!("s {issued_before} {keep_until} {sub}"),
            Self::Session { sid, keep_until } => format!("e {keep_until} {sid}"),
        }
    }

    pub(super) fn decode(message: &'a str) -> Option<Self> {
        let (kind, rest) = message.split_once(' ')?;
        match kind {
            "t" => {
                let (expires_at, jti) = rest.split_once(' ')?;
                Some(Self::Token {
                    jti,
                    expires_at: expires_at.parse().ok()?,
                })
            }
            "s" => {
                let (issued_before, rest) = rest.split_once(' ')?;
                let (keep_until, sub) = rest.split_once(' ')?;
                Some(Self::Subject {
                    sub,
                    issued_before: issued_before.parse().ok()?,
                    keep_until: keep_until.parse().ok()?,
                })
            }
            "e" => {
                let (keep_until, sid) = rest.split_once(' ')?;
                Some(Self::Session {
                    sid,
                    keep_until: keep_until.parse().ok()?,
                })
            }
            _ => None,
        }
    }

    pub(super) fn apply_to(&self, mirror: &MemoryRevocations) {
        match *self {
            Self::Token { jti, expires_at } => mirror.revoke_now(jti, expires_at),
            Self::Subject {
                sub,
                issued_before,
                keep_until,
            } => mirror.revoke_subject_now(sub, issued_before, keep_until),
            Self::Session { sid, keep_until } => mirror.revoke_session_now(sid, keep_until),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_even_with_spaces_in_names() {
        for revocation in [
            Revocation::Token {
                jti: "a b c",
                expires_at: 42,
            },
            Revocation::Subject {
                sub: "alice smith",
                issued_before: 7,
                keep_until: 9,
            },
            Revocation::Session {
                sid: "a session",
                keep_until: 11,
            },
        ] {
            assert_eq!(Revocation::decode(&revocation.encode()), Some(revocation));
        }
    }

    #[test]
    fn malformed_messages_are_ignored() {
        for message in [
            "", "t", "t x jti", "s 1 sub", "x 1 2", "t -1 j", "e", "e x s",
        ] {
            assert_eq!(Revocation::decode(message), None, "{message:?}");
        }
    }

    #[test]
    fn keys_are_recognised_only_under_the_prefix() {
        let keys = KeySpace::new("app:");
        assert_eq!(
            keys.classify(&keys.token("j:1")),
            Some(StoredKey::Token { jti: "j:1" })
        );
        assert_eq!(
            keys.classify(&keys.subject("alice")),
            Some(StoredKey::Subject { sub: "alice" })
        );
        assert_eq!(
            keys.classify(&keys.session("s:1")),
            Some(StoredKey::Session { sid: "s:1" })
        );
        assert_eq!(keys.classify("other:jti:j"), None);
        assert_eq!(keys.classify("app:unknown"), None);
    }

    #[test]
    fn scan_pattern_escapes_glob_characters_in_the_prefix() {
        assert_eq!(
            KeySpace::new(r"a*b?[c]\:").scan_pattern(),
            r"a\*b\?\[c\]\\:*"
        );
    }

    #[test]
    fn far_expiries_are_clamped_not_overflowed() {
        assert_eq!(expiry_with_grace(u64::MAX, 300), LATEST_EXPIRY);
        assert_eq!(expiry_with_grace(1_000, 300), 1_301);
    }
}
