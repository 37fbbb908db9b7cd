//! The `UserStore` contract, driven through the trait itself, held by every store: memory,
//! SQLite, and PostgreSQL (in a schema of its own per test, on `DATABASE_URL`).

use crate::common;

use common::postgres::TestSchema;
use common::temp_dir;
use jwt_gate::clock::{Clock, SystemClock};
use jwt_gate::revocation::BoxFuture;
use jwt_gate::store::{
    GrantChange, IssuedRefresh, MemoryUserStore, RefreshSession, Registration, Rotation,
    SqliteUserStore, User, UserStore, MAX_SESSIONS_PER_USER, ROTATION_WINDOW_SECS,
    SPENT_TOKENS_KEPT,
};

/// No rate limit worth the name: for steps that are not about it.
const UNLIMITED: u32 = u32::MAX;

/// How many refresh-token rows the store holds in all, read behind its back.
type RowCount = Box<dyn Fn() -> BoxFuture<'static, usize> + Send + Sync>;

fn now() -> u64 {
    SystemClock.now()
}

fn user(key: &str, username: &str) -> User {
    User {
        key: key.into(),
        username: username.into(),
        email: format!("{key}@example.com"),
        password_hash: format!("$argon2id$hash-of-{username}"),
        roles: Vec::new(),
        scopes: Vec::new(),
    }
}

fn token(n: u32) -> IssuedRefresh {
    let mut hash = [0u8; 32];
    hash[..4].copy_from_slice(&n.to_le_bytes());
    IssuedRefresh {
        hash,
        expires_at: now() + 3600,
    }
}

/// Presents refresh token `n` at `at`, offering token `next` as its successor.
async fn rotate_at(store: &dyn UserStore, n: u32, next: u32, at: u64, limit: u32) -> Rotation {
    store
        .rotate_refresh_token(&token(n).hash, at, token(next), limit)
        .await
        .unwrap()
}

async fn rotate(store: &dyn UserStore, n: u32, next: u32) -> Rotation {
    rotate_at(store, n, next, now(), UNLIMITED).await
}

async fn start(store: &dyn UserStore, user: &str, session: &str, n: u32) {
    store
        .insert_refresh_token(user, session, now() + 3600, &[], token(n))
        .await
        .unwrap();
}

fn rotated(user: &str, session: &str) -> Rotation {
    Rotation::Rotated {
        user_key: user.into(),
        session: session.into(),
        scopes: Vec::new(),
    }
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
        start(store, "carol", &format!("family-{n}"), n).await;
    }
    let newest = format!("family-{}", sessions - 1);
    // The oldest session was dropped to make room; the newest works.
    assert_eq!(rotate(store, 0, 1000).await, Rotation::Invalid);
    assert_eq!(
        rotate(store, sessions - 1, 1001).await,
        rotated("carol", &newest)
    );

    // Reuse of the spent token revokes its family; any later use of the family's tokens
    // names the session again, so its access tokens can be revoked (again).
    assert_eq!(
        rotate(store, sessions - 1, 1002).await,
        Rotation::Reused {
            session: newest.clone()
        }
    );
    assert_eq!(
        rotate(store, 1001, 1003).await,
        Rotation::Ended {
            session: newest.clone()
        }
    );

    // Unknown tokens are invalid; ending an unknown session is not an error.
    assert_eq!(rotate(store, 9999, 1004).await, Rotation::Invalid);
    store.end_sessions(&["unknown-session"]).await.unwrap();

    // Ending one session ends exactly that one.
    store.end_sessions(&["family-5"]).await.unwrap();
    assert_eq!(
        rotate(store, 5, 1004).await,
        Rotation::Ended {
            session: "family-5".into()
        }
    );
    assert_eq!(rotate(store, 6, 1005).await, rotated("carol", "family-6"));

    // The user's sessions are the ones kept, ended ones included; ending them all ends each.
    let mut listed = store.sessions_of("carol", now()).await.unwrap();
    listed.sort();
    let mut expected: Vec<String> = (1..sessions).map(|n| format!("family-{n}")).collect();
    expected.sort();
    assert_eq!(listed, expected);
    assert_eq!(
        store.sessions_of("nobody", now()).await.unwrap(),
        Vec::<String>::new()
    );
    let all: Vec<&str> = listed.iter().map(String::as_str).collect();
    store.end_sessions(&all).await.unwrap();
    assert!(matches!(
        rotate(store, 1005, 1006).await,
        Rotation::Ended { .. }
    ));
    assert!(matches!(
        rotate(store, 7, 1007).await,
        Rotation::Ended { .. }
    ));
}

/// A thousand rotations leave a family's rows bounded, and a replay of any spent token it
/// still remembers is caught.
async fn a_family_stays_bounded_however_often_it_rotates(store: &dyn UserStore, rows: &RowCount) {
    const ROTATIONS: u32 = 1_000;
    let before = rows().await;
    start(store, "erin", "erin-family", 20_000).await;
    for n in 0..ROTATIONS {
        let outcome = rotate(store, 20_000 + n, 20_001 + n).await;
        assert_eq!(outcome, rotated("erin", "erin-family"), "rotation {n}");
    }
    let kept = rows().await - before;
    assert_eq!(
        kept,
        SPENT_TOKENS_KEPT + 1,
        "the live token and the newest spent ones"
    );
    let oldest_remembered = 20_000 + ROTATIONS - u32::try_from(SPENT_TOKENS_KEPT).unwrap();
    assert_eq!(
        rotate(store, oldest_remembered, 30_000).await,
        Rotation::Reused {
            session: "erin-family".into()
        }
    );
}

/// However fresh its token, a family ends at its absolute end.
async fn a_family_ends_at_its_absolute_end(store: &dyn UserStore) {
    let start_at = now();
    store
        .insert_refresh_token("frank", "frank-family", start_at + 100, &[], token(40_000))
        .await
        .unwrap();
    assert_eq!(
        rotate_at(store, 40_000, 40_001, start_at + 50, UNLIMITED).await,
        rotated("frank", "frank-family")
    );
    // The rotated token would live an hour, but the family ends first.
    assert_eq!(
        rotate_at(store, 40_001, 40_002, start_at + 100, UNLIMITED).await,
        Rotation::Invalid
    );
    assert_eq!(
        store.sessions_of("frank", start_at + 100).await.unwrap(),
        Vec::<String>::new()
    );
}

/// Beyond the limit within one window a rotation changes nothing; the same token works once
/// the window is over, and a replay is caught even while throttled.
async fn rotations_are_rate_limited_per_family(store: &dyn UserStore) {
    let at = now();
    start(store, "gina", "gina-family", 50_000).await;
    start(store, "gina", "gina-other", 60_000).await;
    for n in 0..3 {
        assert_eq!(
            rotate_at(store, 50_000 + n, 50_001 + n, at, 3).await,
            rotated("gina", "gina-family")
        );
    }
    assert_eq!(
        rotate_at(store, 50_003, 50_004, at + 20, 3).await,
        Rotation::Throttled {
            retry_after: ROTATION_WINDOW_SECS - 20
        }
    );
    // Another session of the same user has its own count.
    assert_eq!(
        rotate_at(store, 60_000, 60_001, at + 20, 3).await,
        rotated("gina", "gina-other")
    );
    assert_eq!(
        rotate_at(store, 50_003, 50_004, at + ROTATION_WINDOW_SECS, 3).await,
        rotated("gina", "gina-family")
    );
    for n in 4..6 {
        rotate_at(store, 50_000 + n, 50_001 + n, at + ROTATION_WINDOW_SECS, 3).await;
    }
    assert!(matches!(
        rotate_at(store, 50_006, 50_007, at + ROTATION_WINDOW_SECS, 3).await,
        Rotation::Throttled { .. }
    ));
    assert_eq!(
        rotate_at(store, 50_001, 50_008, at + ROTATION_WINDOW_SECS, 3).await,
        Rotation::Reused {
            session: "gina-family".into()
        }
    );
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
    start(store, "dave", "dave-family", 5000).await;
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
    let reused = outcomes
        .iter()
        .filter(|outcome| matches!(outcome, Rotation::Reused { .. }))
        .count();
    // One use rotates; the first to come after it is the replay that revokes the family;
    // the rest find the family revoked.
    assert_eq!((rotated, reused), (1, 1), "{outcomes:?}");
    assert!(
        outcomes
            .iter()
            .all(|outcome| !matches!(outcome, Rotation::Invalid | Rotation::Throttled { .. })),
        "{outcomes:?}"
    );
}

fn names(names: &[&str]) -> Vec<String> {
    names.iter().map(|&name| name.to_owned()).collect()
}

/// Roles and scopes are kept with the user, sorted and each once, changed only by
/// `change_grants`, and a password change leaves them alone.
async fn grants_are_kept_and_changed(store: &dyn UserStore) {
    let mut hana = user("hana", "Hana");
    hana.roles = names(&["editor"]);
    hana.scopes = names(&["a:read"]);
    store.create_user(hana).await.unwrap();
    let found = store.find_user("hana").await.unwrap().unwrap();
    assert_eq!(
        (found.roles, found.scopes),
        (names(&["editor"]), names(&["a:read"]))
    );

    let change = GrantChange::new()
        .grant_role("admin")
        .unwrap()
        .grant_scope("orders:write")
        .unwrap()
        .grant_scope("orders:read")
        .unwrap()
        .grant_scope("a:read")
        .unwrap()
        .revoke_role("editor")
        .unwrap();
    assert!(store.change_grants("hana", &change).await.unwrap());
    let found = store.find_user("hana").await.unwrap().unwrap();
    assert_eq!(found.roles, names(&["admin"]));
    assert_eq!(
        found.scopes,
        names(&["a:read", "orders:read", "orders:write"])
    );

    // Revoking what is not held is fine; the last word on a name wins.
    let change = GrantChange::new()
        .revoke_scope("orders:write")
        .unwrap()
        .revoke_role("never-held")
        .unwrap()
        .grant_role("auditor")
        .unwrap()
        .revoke_role("auditor")
        .unwrap();
    assert!(store.change_grants("hana", &change).await.unwrap());
    store
        .update_password_hash("hana", "$argon2id$other".into())
        .await
        .unwrap();
    let found = store.find_user("hana").await.unwrap().unwrap();
    assert_eq!(found.roles, names(&["admin"]));
    assert_eq!(found.scopes, names(&["a:read", "orders:read"]));
    assert_eq!(found.password_hash, "$argon2id$other");

    // Nobody by that name: false, and nobody is created.
    assert!(!store.change_grants("nobody", &change).await.unwrap());
    assert_eq!(store.find_user("nobody").await.unwrap(), None);
    // Another user is untouched, and a new user holds nothing.
    let bob = store.find_user("bob").await.unwrap().unwrap();
    assert!(bob.roles.is_empty() && bob.scopes.is_empty());
}

/// Concurrent changes to one user's grants are each applied: none is lost.
async fn concurrent_grants_are_all_kept<S: UserStore + Clone>(store: &S) {
    store.create_user(user("ivan", "Ivan")).await.unwrap();
    let grants: Vec<_> = (0..16)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move {
                let change = GrantChange::new()
                    .grant_scope(&format!("s{n:02}"))
                    .unwrap()
                    .grant_role(&format!("r{n:02}"))
                    .unwrap();
                assert!(store.change_grants("ivan", &change).await.unwrap());
            })
        })
        .collect();
    for grant in grants {
        grant.await.unwrap();
    }
    let ivan = store.find_user("ivan").await.unwrap().unwrap();
    let expected =
        |prefix: &str| -> Vec<String> { (0..16).map(|n| format!("{prefix}{n:02}")).collect() };
    assert_eq!(ivan.scopes, expected("s"));
    assert_eq!(ivan.roles, expected("r"));
}

/// A session keeps the scopes granted at its login through its rotations, and its refresh
/// tokens, live or spent, name it without changing anything until it ends.
async fn sessions_keep_their_scopes_and_are_found_by_token(store: &dyn UserStore) {
    let scopes = names(&["orders:read", "profile"]);
    store
        .insert_refresh_token("jack", "jack-family", now() + 3600, &scopes, token(70_000))
        .await
        .unwrap();
    let found = Some(RefreshSession {
        user_key: "jack".into(),
        session: "jack-family".into(),
    });
    let session_of =
        |n: u32, at: u64| async move { store.refresh_session(&token(n).hash, at).await.unwrap() };
    assert_eq!(session_of(70_000, now()).await, found);
    // The lookup spent nothing: the token rotates, and the session keeps its scopes.
    let expected = Rotation::Rotated {
        user_key: "jack".into(),
        session: "jack-family".into(),
        scopes: scopes.clone(),
    };
    assert_eq!(rotate(store, 70_000, 70_001).await, expected);
    assert_eq!(rotate(store, 70_001, 70_002).await, expected);
    // A spent token still names its session, as the live one does.
    assert_eq!(session_of(70_000, now()).await, found);
    assert_eq!(session_of(70_002, now()).await, found);
    // Unknown, or past the session's end: nothing.
    assert_eq!(session_of(79_999, now()).await, None);
    assert_eq!(session_of(70_002, now() + 3600).await, None);
    // A revoked session is still named, so that revoking it again completes what a failed
    // revocation left undone.
    store.end_sessions(&["jack-family"]).await.unwrap();
    assert_eq!(session_of(70_002, now()).await, found);
}

async fn keeps_the_contract<S: UserStore + Clone>(store: S, rows: RowCount) {
    users_are_unique_and_updatable(&store).await;
    grants_are_kept_and_changed(&store).await;
    concurrent_grants_are_all_kept(&store).await;
    sessions_keep_their_scopes_and_are_found_by_token(&store).await;
    sessions_are_capped_rotated_and_revoked(&store).await;
    a_family_stays_bounded_however_often_it_rotates(&store, &rows).await;
    a_family_ends_at_its_absolute_end(&store).await;
    rotations_are_rate_limited_per_family(&store).await;
    concurrent_registrations_make_one_account(&store).await;
    concurrent_uses_of_one_token_rotate_once(&store).await;
}

#[tokio::test]
async fn the_memory_store_keeps_the_contract() {
    let store = MemoryUserStore::new();
    let counted = store.clone();
    let rows: RowCount = Box::new(move || {
        let count = counted.refresh_token_count();
        Box::pin(async move { count })
    });
    keeps_the_contract(store, rows).await;
}

#[tokio::test]
async fn the_sqlite_store_keeps_the_contract() {
    let path = temp_dir("contract").join("users.db");
    let store = SqliteUserStore::open(&path).unwrap();
    let rows: RowCount = Box::new(move || {
        let connection = rusqlite::Connection::open(&path).unwrap();
        let count: i64 = connection
            .query_row("SELECT count(*) FROM refresh_tokens", [], |row| row.get(0))
            .unwrap();
        Box::pin(async move { usize::try_from(count).unwrap() })
    });
    keeps_the_contract(store, rows).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_postgres_store_keeps_the_contract() {
    let schema = TestSchema::fresh();
    let client = std::sync::Arc::new(schema.client().await);
    let sql = format!(
        "SELECT count(*) FROM \"{}\".jwt_gate_refresh_tokens",
        schema.name
    );
    let rows: RowCount = Box::new(move || {
        let (client, sql) = (client.clone(), sql.clone());
        Box::pin(async move {
            let count: i64 = client.query_one(&sql, &[]).await.unwrap().get(0);
            usize::try_from(count).unwrap()
        })
    });
    keeps_the_contract(schema.open().await, rows).await;
}
