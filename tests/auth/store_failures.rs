//! A store that fails gives 503 and changes nothing: never a panic, never a false success.

use crate::common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use common::*;
use http::{Method, StatusCode};
use jwt_gate::revocation::{
    BoxFuture, MemoryRevocations, RevocationCheck, RevocationError, RevocationStore, TokenId,
};
use jwt_gate::service::AuthService;
use jwt_gate::store::{
    GrantChange, IssuedRefresh, MemoryUserStore, RefreshSession, Registration, Rotation,
    StoreResult, TokenHash, User, UserStore, UserStoreError,
};
use jwt_gate::TokenVerifier;

/// A switch shared by the failing stores and the test: down until set up again, or for
/// the next few calls only.
#[derive(Clone, Default)]
struct Outage {
    down: Arc<AtomicBool>,
    failures_left: Arc<AtomicUsize>,
}

impl Outage {
    fn set(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    fn fail_next(&self, calls: usize) {
        self.failures_left.store(calls, Ordering::SeqCst);
    }

    fn check(&self) -> Result<(), UserStoreError> {
        let blip = self
            .failures_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                left.checked_sub(1)
            })
            .is_ok();
        if blip || self.down.load(Ordering::SeqCst) {
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
    /// Fails ending sessions only: a logout that gets half-way.
    end_outage: Outage,
    /// Fails finding users only: a refresh that has found its session but not its user.
    find_outage: Outage,
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
        if let Err(error) = self.find_outage.check() {
            return Box::pin(async { Err(error) });
        }
        self.unless_down(|| self.inner.find_user(key))
    }
    fn update_password_hash<'a>(
        &'a self,
        key: &'a str,
        hash: String,
    ) -> BoxFuture<'a, StoreResult<()>> {
        self.unless_down(|| self.inner.update_password_hash(key, hash))
    }
    fn change_grants<'a>(
        &'a self,
        key: &'a str,
        change: &'a GrantChange,
    ) -> BoxFuture<'a, StoreResult<bool>> {
        self.unless_down(|| self.inner.change_grants(key, change))
    }
    fn insert_refresh_token<'a>(
        &'a self,
        user: &'a str,
        session: &'a str,
        expires_at: u64,
        scopes: &'a [String],
        token: IssuedRefresh,
    ) -> BoxFuture<'a, StoreResult<()>> {
        self.unless_down(|| {
            self.inner
                .insert_refresh_token(user, session, expires_at, scopes, token)
        })
    }
    fn refresh_session<'a>(
        &'a self,
        presented: &'a TokenHash,
        now: u64,
    ) -> BoxFuture<'a, StoreResult<Option<RefreshSession>>> {
        self.unless_down(|| self.inner.refresh_session(presented, now))
    }
    fn rotate_refresh_token<'a>(
        &'a self,
        presented: &'a TokenHash,
        now: u64,
        next: IssuedRefresh,
        max_per_window: u32,
    ) -> BoxFuture<'a, StoreResult<Rotation>> {
        self.unless_down(|| {
            self.inner
                .rotate_refresh_token(presented, now, next, max_per_window)
        })
    }
    fn sessions_of<'a>(
        &'a self,
        user: &'a str,
        now: u64,
    ) -> BoxFuture<'a, StoreResult<Vec<String>>> {
        self.unless_down(|| self.inner.sessions_of(user, now))
    }
    fn end_sessions<'a>(&'a self, sessions: &'a [&'a str]) -> BoxFuture<'a, StoreResult<()>> {
        if let Err(error) = self.end_outage.check() {
            return Box::pin(async { Err(error) });
        }
        self.unless_down(|| self.inner.end_sessions(sessions))
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
    fn revoke_sessions(
        &self,
        sessions: &[&str],
        keep: u64,
    ) -> BoxFuture<'_, Result<(), RevocationError>> {
        if self.outage.check().is_err() {
            return Box::pin(async { Err(RevocationError::new("redis gone")) });
        }
        self.inner.revoke_sessions(sessions, keep)
    }
}

struct Flaky {
    addr: std::net::SocketAddr,
    users: MemoryUserStore,
    user_outage: Outage,
    end_outage: Outage,
    find_outage: Outage,
    revocation_outage: Outage,
}

async fn flaky() -> Flaky {
    let (user_outage, revocation_outage) = (Outage::default(), Outage::default());
    let (end_outage, find_outage) = (Outage::default(), Outage::default());
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
            end_outage: end_outage.clone(),
            find_outage: find_outage.clone(),
            inner: users.clone(),
        },
    );
    Flaky {
        addr: serve(app(verifier, auth)).await,
        users,
        user_outage,
        end_outage,
        find_outage,
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

/// What a `503` says when the request changed nothing, and when it got half-way.
const NOTHING_CHANGED: &str = "a store is unavailable; nothing was changed";
const PARTLY_DONE: &str =
    "a store is unavailable; part of this was done: send the same request again to finish it";

fn field(json: &serde_json::Value, name: &str) -> String {
    json[name].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn logout_is_503_and_changes_nothing_when_revocations_cannot_be_recorded() {
    let flaky = flaky().await;
    let json = session(flaky.addr, "bob").await;
    let access = field(&json, "access_token");
    flaky.revocation_outage.set(true);
    for path in ["/auth/logout", "/auth/logout-all"] {
        let reply = with_bearer(flaky.addr, Method::POST, path, &access).await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert_eq!(
            field(&reply.json(), "error_description"),
            NOTHING_CHANGED,
            "{path}"
        );
    }
    flaky.revocation_outage.set(false);
    // Nothing was claimed and nothing changed: the access token and the refresh token work.
    assert_eq!(me(flaky.addr, &access).await.status, StatusCode::OK);
    let refreshed = refresh(flaky.addr, &field(&json, "refresh_token")).await;
    assert_eq!(refreshed.status, StatusCode::OK);
    let refreshed = refreshed.json();
    // The client retries, and it works: every token of the session is refused.
    let retry = with_bearer(flaky.addr, Method::POST, "/auth/logout", &access).await;
    assert_eq!(retry.status, StatusCode::OK);
    for token in [&access, &field(&refreshed, "access_token")] {
        assert_eq!(me(flaky.addr, token).await.status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        refresh(flaky.addr, &field(&refreshed, "refresh_token"))
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn a_logout_that_failed_half_way_is_completed_by_a_retry_or_the_next_refresh() {
    let flaky = flaky().await;
    for path in ["/auth/logout", "/auth/logout-all"] {
        let json = session(flaky.addr, "carl").await;
        let access = field(&json, "access_token");
        // The revocations are recorded; ending the session in the user store is not.
        flaky.end_outage.set(true);
        let reply = with_bearer(flaky.addr, Method::POST, path, &access).await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
        // Not "nothing was changed": the tokens are already refused, and the answer says a
        // retry finishes the work.
        assert_eq!(
            field(&reply.json(), "error_description"),
            PARTLY_DONE,
            "{path}"
        );
        flaky.end_outage.set(false);
        if path == "/auth/logout" {
            // The token is already refused, but may repeat its own logout.
            assert_eq!(
                me(flaky.addr, &access).await.status,
                StatusCode::UNAUTHORIZED
            );
            let retry = with_bearer(flaky.addr, Method::POST, path, &access).await;
            assert_eq!(retry.status, StatusCode::OK, "{path}: {}", retry.text);
        }
        // Either way, the refresh token mints nothing more.
        let refreshed = refresh(flaky.addr, &field(&json, "refresh_token")).await;
        assert_eq!(refreshed.status, StatusCode::BAD_REQUEST, "{path}");
    }
}

#[tokio::test]
async fn a_replay_is_revoked_even_when_the_revocation_store_fails_at_that_moment() {
    let flaky = flaky().await;
    let json = session(flaky.addr, "dina").await;
    let stolen = field(&json, "refresh_token");
    let rotated = refresh(flaky.addr, &stolen).await.json();
    let live_access = field(&rotated, "access_token");

    // One failed write is retried at once: the replay is refused and the session revoked.
    flaky.revocation_outage.fail_next(1);
    let replay = refresh(flaky.addr, &stolen).await;
    assert_eq!(replay.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        me(flaky.addr, &live_access).await.status,
        StatusCode::UNAUTHORIZED
    );

    // A longer outage is a 503, never a silent 400; the next use of any of the family's
    // tokens revokes the session then.
    let json = session(flaky.addr, "dina").await;
    let stolen = field(&json, "refresh_token");
    let rotated = refresh(flaky.addr, &stolen).await.json();
    let live_access = field(&rotated, "access_token");
    flaky.revocation_outage.set(true);
    let replay = refresh(flaky.addr, &stolen).await;
    assert_eq!(replay.status, StatusCode::SERVICE_UNAVAILABLE);
    // The family is over in the user store already: the answer cannot say nothing changed.
    assert_eq!(field(&replay.json(), "error_description"), PARTLY_DONE);
    flaky.revocation_outage.set(false);
    assert_eq!(me(flaky.addr, &live_access).await.status, StatusCode::OK);
    let again = refresh(flaky.addr, &field(&rotated, "refresh_token")).await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        me(flaky.addr, &live_access).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_revocation_that_fails_is_503_and_the_same_request_again_completes_it() {
    let flaky = flaky().await;
    let json = session(flaky.addr, "fay").await;
    let (access, refresh_token) = (field(&json, "access_token"), field(&json, "refresh_token"));
    let form = [("token", refresh_token.as_str())];
    let revoke = || post_form(flaky.addr, "/auth/revoke", &form);

    // Neither store can answer: 503, never the 200 an unknown token gets, and nothing changed.
    for outage in [&flaky.user_outage, &flaky.revocation_outage] {
        outage.set(true);
        assert_eq!(revoke().await.status, StatusCode::SERVICE_UNAVAILABLE);
        outage.set(false);
        assert_eq!(me(flaky.addr, &access).await.status, StatusCode::OK);
    }

    // Half-way: the access tokens are refused, but the session could not be ended.
    flaky.end_outage.set(true);
    assert_eq!(revoke().await.status, StatusCode::SERVICE_UNAVAILABLE);
    flaky.end_outage.set(false);
    assert_eq!(
        me(flaky.addr, &access).await.status,
        StatusCode::UNAUTHORIZED
    );
    // The client repeats its request, which completes it.
    assert_eq!(revoke().await.status, StatusCode::OK);
    assert_eq!(
        refresh(flaky.addr, &refresh_token).await.status,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn a_refresh_spends_nothing_when_the_store_cannot_read_the_user() {
    let flaky = flaky().await;
    let json = session(flaky.addr, "gus").await;
    let refresh_token = field(&json, "refresh_token");
    // The session is found, its user is not: the refresh token is left as it was.
    flaky.find_outage.fail_next(1);
    assert_eq!(
        refresh(flaky.addr, &refresh_token).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let retried = refresh(flaky.addr, &refresh_token).await;
    assert_eq!(retried.status, StatusCode::OK, "{}", retried.text);
}
