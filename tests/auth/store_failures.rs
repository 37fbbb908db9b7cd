//! A store that fails gives 503 and changes nothing: never a panic, never a false success.

use crate::common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::*;
use http::{Method, StatusCode};
use jwt_gate::revocation::{
    BoxFuture, MemoryRevocations, RevocationCheck, RevocationError, RevocationStore, TokenId,
};
use jwt_gate::service::AuthService;
use jwt_gate::store::{
    IssuedRefresh, LiveAccess, MemoryUserStore, Registration, Rotation, StoreResult, TokenHash,
    User, UserStore, UserStoreError,
};
use jwt_gate::TokenVerifier;

/// A switch shared by the failing stores and the test.
#[derive(Clone, Default)]
struct Outage(Arc<AtomicBool>);

impl Outage {
    fn set(&self, down: bool) {
        self.0.store(down, Ordering::SeqCst);
    }

    fn check(&self) -> Result<(), UserStoreError> {
        if self.0.load(Ordering::SeqCst) {
            Err(UserStoreError::new("disk on fire"))
        } else {
            Ok(())
        }
    }
}

/// The memory store, unless the outage is on.
#[derive(Clone)]
struct FlakyUsers {
    outage: Outage,
    inner: MemoryUserStore,
}

impl FlakyUsers {
    /// Runs `work` only when the store is up: the memory store writes as soon as it is
    /// called, so the outage must be checked first.
    fn unless_down<'a, T: Send + 'a>(
        &'a self,
        work: impl FnOnce() -> BoxFuture<'a, StoreResult<T>>,
    ) -> BoxFuture<'a, StoreResult<T>> {
        match self.outage.check() {
            Err(error) => Box::pin(async { Err(error) }),
            Ok(()) => work(),
        }
    }
}

impl UserStore for FlakyUsers {
    fn create_user(&self, user: User) -> BoxFuture<'_, StoreResult<Registration>> {
        self.unless_down(|| self.inner.create_user(user))
    }
    fn find_user<'a>(&'a self, key: &'a str) -> BoxFuture<'a, StoreResult<Option<User>>> {
        self.unless_down(|| self.inner.find_user(key))
    }
    fn update_password_hash<'a>(
        &'a self,
        key: &'a str,
        hash: String,
    ) -> BoxFuture<'a, StoreResult<()>> {
        self.unless_down(|| self.inner.update_password_hash(key, hash))
    }
    fn insert_refresh_token<'a>(
        &'a self,
        user: &'a str,
        family: &'a str,
        token: IssuedRefresh,
    ) -> BoxFuture<'a, StoreResult<()>> {
        self.unless_down(|| self.inner.insert_refresh_token(user, family, token))
    }
    fn rotate_refresh_token<'a>(
        &'a self,
        presented: &'a TokenHash,
        now: u64,
        next: IssuedRefresh,
    ) -> BoxFuture<'a, StoreResult<Rotation>> {
        self.unless_down(|| self.inner.rotate_refresh_token(presented, now, next))
    }
    fn revoke_session<'a>(&'a self, jti: &'a str) -> BoxFuture<'a, StoreResult<()>> {
        self.unless_down(|| self.inner.revoke_session(jti))
    }
    fn revoke_all_sessions<'a>(
        &'a self,
        user: &'a str,
        now: u64,
    ) -> BoxFuture<'a, StoreResult<Vec<LiveAccess>>> {
        self.unless_down(|| self.inner.revoke_all_sessions(user, now))
    }
}

/// Answers checks from memory but cannot record new revocations while the outage is on.
struct FlakyRevocations {
    outage: Outage,
    inner: MemoryRevocations,
}

impl RevocationStore for FlakyRevocations {
    fn check(&self, token: &TokenId<'_>) -> RevocationCheck {
        self.inner.check(token)
    }
    fn revoke(&self, jti: &str, expires_at: u64) -> BoxFuture<'_, Result<(), RevocationError>> {
        if self.outage.check().is_err() {
            return Box::pin(async { Err(RevocationError::new("redis gone")) });
        }
        self.inner.revoke(jti, expires_at)
    }
    fn revoke_subject(
        &self,
        sub: &str,
        before: u64,
        keep: u64,
    ) -> BoxFuture<'_, Result<(), RevocationError>> {
        if self.outage.check().is_err() {
            return Box::pin(async { Err(RevocationError::new("redis gone")) });
        }
        self.inner.revoke_subject(sub, before, keep)
    }
}

struct Flaky {
    addr: std::net::SocketAddr,
    users: MemoryUserStore,
    user_outage: Outage,
    revocation_outage: Outage,
}

async fn flaky() -> Flaky {
    let (user_outage, revocation_outage) = (Outage::default(), Outage::default());
    let verifier = TokenVerifier::builder(keys())
        .revocations(FlakyRevocations {
            outage: revocation_outage.clone(),
            inner: MemoryRevocations::new(),
        })
        .build();
    let users = MemoryUserStore::new();
    let auth = AuthService::new(
        verifier.clone(),
        FlakyUsers {
            outage: user_outage.clone(),
            inner: users.clone(),
        },
    );
    Flaky {
        addr: serve(app(verifier, auth)).await,
        users,
        user_outage,
        revocation_outage,
    }
}

#[tokio::test]
async fn register_and_login_answer_503_while_the_user_store_is_down() {
    let flaky = flaky().await;
    flaky.user_outage.set(true);
    let reply = register(flaky.addr, "alice", PASSWORD).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        !reply.text.contains("disk on fire"),
        "internals stay inside"
    );
    assert_eq!(flaky.users.user_count(), 0);
    assert_eq!(
        login(flaky.addr, "alice", PASSWORD).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );

    flaky.user_outage.set(false);
    let json = session(flaky.addr, "alice").await;
    flaky.user_outage.set(true);
    assert_eq!(
        login(flaky.addr, "alice", PASSWORD).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let refreshed = refresh(flaky.addr, json["refresh_token"].as_str().unwrap()).await;
    assert_eq!(refreshed.status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn logout_is_503_not_a_false_200_when_a_store_cannot_record_it() {
    let flaky = flaky().await;
    let json = session(flaky.addr, "bob").await;
    let access = json["access_token"].as_str().unwrap();
    for outage in [&flaky.revocation_outage, &flaky.user_outage] {
        outage.set(true);
        for path in ["/auth/logout", "/auth/logout-all"] {
            let reply = with_bearer(flaky.addr, Method::POST, path, access).await;
            assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
        }
        outage.set(false);
    }
    // Nothing was claimed; the client retries and it works.
    assert_eq!(me(flaky.addr, access).await.status, StatusCode::OK);
    let retry = with_bearer(flaky.addr, Method::POST, "/auth/logout", access).await;
    assert_eq!(retry.status, StatusCode::OK);
    assert_eq!(
        me(flaky.addr, access).await.status,
        StatusCode::UNAUTHORIZED
    );
}
