//! Look-alike usernames (UTS #39): one name spelled fifty ways, to race at a service.

use std::net::SocketAddr;

use http::StatusCode;

use super::{register, PASSWORD};

/// Each letter of `scope` with its Cyrillic look-alike (and `o` with the digit zero).
const LETTERS: [&[char]; 5] = [
    &['s', '\u{455}'],
    &['c', '\u{441}'],
    &['o', '\u{43e}', '0'],
    &['p', '\u{440}'],
    &['e', '\u{435}'],
];

/// Fifty spellings of `scope` a reader cannot tell apart: every mix of Latin and Cyrillic
/// letters (48), upper case and full width. Whether each is of one script, or mixes two.
pub fn spellings_of_scope() -> Vec<(String, bool)> {
    let mut names = vec![(String::new(), (false, false))];
    for choices in LETTERS {
        names = names
            .into_iter()
            .flat_map(|(name, (latin, cyrillic))| {
                choices.iter().map(move |&c| {
                    let name = format!("{name}{c}");
                    (
                        name,
                        (latin || c.is_ascii_lowercase(), cyrillic || !c.is_ascii()),
                    )
                })
            })
            .collect();
    }
    let mut spellings: Vec<(String, bool)> = names
        .into_iter()
        .map(|(name, (latin, cyrillic))| (name, !(latin && cyrillic)))
        .collect();
    spellings.push(("SCOPE".to_owned(), true));
    spellings.push(("ｓｃｏｐｅ".to_owned(), true));
    spellings
}

/// Registers the fifty spellings at once: exactly one account, every mixed-script spelling
/// `422` naming the field, every other `409`.
pub async fn fifty_lookalikes_make_one_account(addr: SocketAddr) {
    let attempts: Vec<_> = spellings_of_scope()
        .into_iter()
        .map(|(name, single_script)| {
            tokio::spawn(async move {
                let reply = register(addr, &name, PASSWORD).await;
                (name, single_script, reply)
            })
        })
        .collect();
    assert_eq!(attempts.len(), 50);
    let mut created = Vec::new();
    let mut conflicts = 0;
    for attempt in attempts {
        let (name, single_script, reply) = attempt.await.unwrap();
        match reply.status {
            StatusCode::CREATED if single_script => created.push(name),
            StatusCode::CONFLICT if single_script => conflicts += 1,
            StatusCode::UNPROCESSABLE_ENTITY if !single_script => {
                assert_eq!(reply.json()["field"], "username", "{name}: {}", reply.text);
            }
            other => panic!(
                "{name:?} (single script: {single_script}): {other} {}",
                reply.text
            ),
        }
    }
    assert_eq!(created.len(), 1, "{created:?}");
    // scope, sc0pe, ѕсоре, ѕс0ре, SCOPE, ｓｃｏｐｅ: five of them lost to the sixth.
    assert_eq!(conflicts, 5);
}

/// `scope` in Cyrillic letters: of one script, so registrable, but the same name to a reader.
pub const CYRILLIC_SCOPE: &str = "\u{455}\u{441}\u{43e}\u{440}\u{435}";

/// The accounts an earlier version let through, oldest first: `scope`, then its Cyrillic
/// look-alike, then an unrelated `bob`; as (key, username, email, argon2 hash of PASSWORD).
pub fn accounts_from_before() -> Vec<[String; 4]> {
    use jwt_gate::service::{Argon2Hasher, PasswordHasher as _};
    ["scope", CYRILLIC_SCOPE, "bob"]
        .into_iter()
        .map(|name| {
            [
                name.to_owned(),
                name.to_owned(),
                "someone@example.com".to_owned(),
                Argon2Hasher::default().hash(PASSWORD).unwrap(),
            ]
        })
        .collect()
}

/// After the upgrade, both look-alike accounts from before still log in, and nobody can take
/// their name a third time; other names register as before.
pub async fn accounts_from_before_keep_working_and_block_look_alikes(addr: SocketAddr) {
    use super::login;
    for name in ["scope", CYRILLIC_SCOPE, "bob"] {
        assert_eq!(
            login(addr, name, PASSWORD).await.status,
            StatusCode::OK,
            "{name}"
        );
    }
    for name in ["sc0pe", "SCOPE", "\u{405}\u{421}\u{41e}\u{420}\u{415}"] {
        assert_eq!(
            register(addr, name, PASSWORD).await.status,
            StatusCode::CONFLICT,
            "{name}"
        );
    }
    assert_eq!(
        register(addr, "carol", PASSWORD).await.status,
        StatusCode::CREATED
    );
}
