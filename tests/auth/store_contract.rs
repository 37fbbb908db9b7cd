//! The `UserStore` contract, driven through the trait itself, held by every store: memory,
//! SQLite, and PostgreSQL (in a schema of its own per test, on `DATABASE_URL`).

use crate::common;

use common::postgres::TestSchema;
use common::temp_dir;
use jwt_gate::clock::{Clock, SystemClock};
use jwt_gate::store::{
    IssuedRefresh, MemoryUserStore, Registration, Rotation, SqliteUserStore, User, UserStore,
    MAX_SESSIONS_PER_USER,
};

fn now() -> u64 {
    SystemClock.now()
}

fn user(key: &str, username: &str) -> User {
    User {
        key: key.into(),
        username: username.into(),
        email: format!("{key}@example.com"),
        password_hash: format!("$argon2id$hash-of-{username}"),
    }
}

fn token(n: u32) -> IssuedRefresh {
    let mut hash = [0u8; 32];
    hash[..4].copy_from_slice(&n.to_le_bytes());
    IssuedRefresh {
        hash,
        expires_at: now() + 3600,
        access_jti: format!("jti-{n}"),
        access_exp: now() + 900,
    }
}

/// Presents refresh token `n`, offering token `next` as its successor.
async fn rotate(store: &dyn UserStore, n: u32, next: u32) -> Rotation {
    store
        .rotate_refresh_token(&token(n).hash, now(), token(next))
        .await
        .unwrap()
}

async fn users_are_unique_and_updatable(store: &dyn UserStore) {
    assert_eq!(store.find_user("alice").await.unwrap(), None);
    let alice = user("alice", "Alice");
    assert_eq!(
        store.create_user(alice.clone()).await.unwrap(),
        Registration::Created
    );
    // The same key under another spelling is taken, and changes nothing.
    assert_eq!(
        store.create_user(user("alice", "ALICE")).await.unwrap(),
        Registration::Taken
    );
    assert_eq!(store.find_user("alice").await.unwrap(), Some(alice.clone()));
    assert_eq!(
        store.create_user(user("bob", "Bob")).await.unwrap(),
        Registration::Created
    );

    store
        .update_password_hash("alice", "$argon2id$new".into())
        .await
        .unwrap();
    let updated = store.find_user("alice").await.unwrap().unwrap();
    assert_eq!(updated.password_hash, "$argon2id$new");
    assert_eq!(updated.username, "Alice");
    assert_eq!(
        store.find_user("bob").await.unwrap(),
        Some(user("bob", "Bob"))
    );
    // Nobody to update is not an error, and creates nobody.
    store
        .update_password_hash("nobody", "$argon2id$x".into())
        .await
        .unwrap();
    assert_eq!(store.find_user("nobody").await.unwrap(), None);
}

async fn sessions_are_capped_rotated_and_revoked(store: &dyn UserStore) {
    let sessions = u32::try_from(MAX_SESSIONS_PER_USER).unwrap() + 1;
    for n in 0..sessions {
        store
            .insert_refresh_token("carol", &format!("family-{n}"), token(n))
            .await
            .unwrap();
    }
    // The oldest session was dropped to make room; the newest works.
    assert_eq!(rotate(store, 0, 1000).await, Rotation::Invalid);
    assert_eq!(
        rotate(store, sessions - 1, 1001).await,
        Rotation::Rotated {
            user_key: "carol".into()
        }
    );

    // Reuse of the spent token revokes its family, naming both access tokens issued in it.
    let reused = rotate(store, sessions - 1, 1002).await;
    let Rotation::Reused { mut live_access } = reused else {
        panic!("{reused:?}");
    };
    live_access.sort_by(|a, b| a.jti.cmp(&b.jti));
    let jtis: Vec<_> = live_access
        .iter()
        .map(|access| access.jti.as_str())
        .collect();
    assert_eq!(jtis, ["jti-1001", format!("jti-{}", sessions - 1).as_str()]);
    assert_eq!(rotate(store, 1001, 1003).await, Rotation::Invalid);

    // Unknown tokens are invalid; logging out an unknown access token is not an error.
    assert_eq!(rotate(store, 9999, 1004).await, Rotation::Invalid);
    store.revoke_session("jti-unknown").await.unwrap();

    // Logout by access token ends exactly that session.
    store.revoke_session("jti-5").await.unwrap();
    assert_eq!(rotate(store, 5, 1004).await, Rotation::Invalid);
    assert!(matches!(
        rotate(store, 6, 1005).await,
        Rotation::Rotated { .. }
    ));

    // Logout everywhere names the live access tokens and ends the rest.
    let live = store.revoke_all_sessions("carol", now()).await.unwrap();
    assert!(live.iter().any(|access| access.jti == "jti-1005"));
    assert_eq!(rotate(store, 1005, 1006).await, Rotation::Invalid);
    assert_eq!(rotate(store, 7, 1007).await, Rotation::Invalid);
}

async fn concurrent_registrations_make_one_account<S: UserStore + Clone>(store: &S) {
    let attempts: Vec<_> = (0..32)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .create_user(user("racer", &format!("Racer{n}")))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut created = 0;
    for attempt in attempts {
        if attempt.await.unwrap() == Registration::Created {
            created += 1;
        }
    }
    assert_eq!(created, 1);
}

async fn concurrent_uses_of_one_token_rotate_once<S: UserStore + Clone>(store: &S) {
    store
        .insert_refresh_token("dave", "dave-family", token(5000))
        .await
        .unwrap();
    let uses: Vec<_> = (0..16)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move { rotate(&store, 5000, 5001 + n).await })
        })
        .collect();
    let mut outcomes = Vec::new();
    for used in uses {
        outcomes.push(used.await.unwrap());
    }
    let rotated = outcomes
        .iter()
        .filter(|outcome| matches!(outcome, Rotation::Rotated { .. }))
        .count();
    let reused: Vec<_> = outcomes
        .iter()
        .filter_map(|outcome| match outcome {
            Rotation::Reused { live_access } => Some(live_access),
            _ => None,
        })
        .collect();
    // One use rotates; the first to come after it is the replay that revokes the family;
    // the rest find the family revoked.
    assert_eq!((rotated, reused.len()), (1, 1), "{outcomes:?}");
    assert_eq!(reused[0].len(), 2, "both access tokens of the family");
}

async fn keeps_the_contract<S: UserStore + Clone>(store: S) {
    users_are_unique_and_updatable(&store).await;
    sessions_are_capped_rotated_and_revoked(&store).await;
    concurrent_registrations_make_one_account(&store).await;
    concurrent_uses_of_one_token_rotate_once(&store).await;
}

#[tokio::test]
async fn the_memory_store_keeps_the_contract() {
    keeps_the_contract(MemoryUserStore::new()).await;
}

#[tokio::test]
async fn the_sqlite_store_keeps_the_contract() {
    let path = temp_dir("contract").join("users.db");
    keeps_the_contract(SqliteUserStore::open(path).unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_postgres_store_keeps_the_contract() {
    let schema = TestSchema::fresh();
    keeps_the_contract(schema.open().await).await;
}
