//! Session bookkeeping both user stores must agree on: the per-user cap, logout by access
//! token, and reuse detection, driven through the `UserStore` trait itself.

mod common;

use jwt_gate::store::{
    IssuedRefresh, MemoryUserStore, Rotation, SqliteUserStore, UserStore, MAX_SESSIONS_PER_USER,
};

const NOW: u64 = 1_800_000_000;

fn token(n: u32) -> IssuedRefresh {
    let mut hash = [0u8; 32];
    hash[..4].copy_from_slice(&n.to_le_bytes());
    IssuedRefresh {
        hash,
        expires_at: NOW + 3600,
        access_jti: format!("jti-{n}"),
        access_exp: NOW + 900,
    }
}

/// Presents refresh token `n`, offering token `next` as its successor.
async fn rotate(store: &dyn UserStore, n: u32, next: u32) -> Rotation {
    store
        .rotate_refresh_token(&token(n).hash, NOW, token(next))
        .await
        .unwrap()
}

async fn exercise(store: &dyn UserStore) {
    let sessions = u32::try_from(MAX_SESSIONS_PER_USER).unwrap() + 1;
    for n in 0..sessions {
        store
            .insert_refresh_token("alice", &format!("family-{n}"), token(n))
            .await
            .unwrap();
    }
    // The oldest session was dropped to make room; the newest works.
    let oldest = rotate(store, 0, 1000).await;
    assert_eq!(oldest, Rotation::Invalid);
    let newest = rotate(store, sessions - 1, 1001).await;
    assert_eq!(
        newest,
        Rotation::Rotated {
            user_key: "alice".into()
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

    // Logout by access token ends exactly that session.
    store.revoke_session("jti-5").await.unwrap();
    assert_eq!(rotate(store, 5, 1004).await, Rotation::Invalid);
    assert!(matches!(
        rotate(store, 6, 1005).await,
        Rotation::Rotated { .. }
    ));

    // Logout everywhere names the live access tokens and ends the rest.
    let live = store.revoke_all_sessions("alice", NOW).await.unwrap();
    assert!(live.iter().any(|access| access.jti == "jti-1005"));
    assert_eq!(rotate(store, 1005, 1006).await, Rotation::Invalid);
}

#[tokio::test]
async fn the_memory_store_keeps_sessions_right() {
    exercise(&MemoryUserStore::new()).await;
}

#[tokio::test]
async fn the_sqlite_store_keeps_sessions_right() {
    let path = common::temp_dir("sessions").join("users.db");
    exercise(&SqliteUserStore::open(path).unwrap()).await;
}
