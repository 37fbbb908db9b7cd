//! The service's state and what each route does with it, from a request to its answer.

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::request::Parts;
use http::{Method, Request, StatusCode};
use http_body::Body;
use serde::Deserialize;

use super::identity::{
    acceptable_password_length, registrable_username, username_key, valid_email,
};
use super::password::Passwords;
use super::password::{PasswordFailure, Verdict, MAX_PASSWORD_CHARS};
use super::reply::{json, AuthResponse, Failure};
use super::request::{parse_form, parse_json, read_body, require_content_type, FORM, JSON};
use super::throttle::{client_address, Attempt, Refusal, Throttle};
use super::tokens::{hash_refresh_token, TokenIssuer};
use crate::revocation::RevocationCheck;
use crate::store::{LiveAccess, Registration, Rotation, User, UserStore, UserStoreError};
use crate::{AuthError, BoxError};

/// Everything a request may need, shared by the clones of one [`AuthService`](super::AuthService).
pub(super) struct Inner {
    pub(super) prefix: String,
    pub(super) issuer: TokenIssuer,
    pub(super) users: Arc<dyn UserStore>,
    pub(super) passwords: Passwords,
    pub(super) throttle: Throttle,
    pub(super) trusted_proxies: Vec<IpAddr>,
}

/// The routes, by their path below the prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Register,
    Token,
    Logout,
    LogoutAll,
}

impl Inner {
    fn route(&self, path: &str) -> Option<Route> {
        let relative = path
            .strip_prefix(self.prefix.as_str())
            .filter(|rest| !self.prefix.is_empty() && rest.starts_with('/'))
            .unwrap_or(path);
        match relative {
            "/register" => Some(Route::Register),
            "/token" => Some(Route::Token),
            "/logout" => Some(Route::Logout),
            "/logout-all" => Some(Route::LogoutAll),
            _ => None,
        }
    }

    /// Answers one request: routes it, runs its handler, renders a failure.
    pub(super) async fn answer<B>(&self, request: Request<B>) -> AuthResponse
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let (parts, body) = request.into_parts();
        let outcome = match self.route(parts.uri.path()) {
            None => Err(Failure::NotFound),
            Some(_) if parts.method != Method::POST => Err(Failure::MethodNotAllowed),
            Some(Route::Register) => self.register(&parts, body).await,
            Some(Route::Token) => self.token(&parts, body).await,
            Some(Route::Logout) => self.logout(&parts, false).await,
            Some(Route::LogoutAll) => self.logout(&parts, true).await,
        };
        let realm = self.issuer.verifier.realm();
        outcome.unwrap_or_else(|failure| failure.into_response(realm, &parts.headers))
    }
}

type Outcome = Result<AuthResponse, Failure>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterBody {
    username: String,
    email: String,
    password: String,
}

const REGISTER_FIELDS: &[&str] = &["username", "email", "password"];

/// The token endpoint's form. Fields are optional so that a missing one is reported by name
/// here rather than by serde.
#[derive(Deserialize)]
struct TokenForm {
    grant_type: Option<String>,
    username: Option<String>,
    password: Option<String>,
    refresh_token: Option<String>,
}

const TOKEN_FIELDS: &[&str] = &["grant_type", "username", "password", "refresh_token"];

/// The longest refresh token worth hashing: ours are 43 characters.
const MAX_REFRESH_TOKEN_LEN: usize = 256;

fn unavailable(error: UserStoreError) -> Failure {
    tracing::error!(%error, "user store failed; answering 503");
    Failure::Unavailable
}

fn password_failure(failure: PasswordFailure) -> Failure {
    match failure {
        PasswordFailure::Busy => Failure::Busy,
        PasswordFailure::Failed(error) => {
            tracing::error!(%error, "password hashing failed");
            Failure::Unavailable
        }
    }
}

fn throttled(refusal: Refusal) -> Failure {
    match refusal {
        Refusal::Wait(retry_after) => Failure::Throttled { retry_after },
        Refusal::Unavailable => Failure::Unavailable,
    }
}

fn invalid(field: &'static str, description: &'static str) -> Failure {
    Failure::Invalid {
        field: Some(field),
        description,
    }
}

impl Inner {
    pub(super) async fn register<B>(&self, parts: &Parts, body: B) -> Outcome
    where
        B: Body<Data = Bytes>,
        B::Error: Into<BoxError>,
    {
        require_content_type(&parts.headers, JSON)?;
        let body = read_body(&parts.headers, body).await?;
        let RegisterBody {
            username,
            email,
            password,
        } = parse_json(&body, REGISTER_FIELDS)?;
        let (username, key) =
            registrable_username(&username).map_err(|why| invalid("username", why))?;
        valid_email(&email).map_err(|why| invalid("email", why))?;
        if !acceptable_password_length(&password) {
            return Err(invalid("password", "must be 8 to 1024 characters"));
        }
        let address = client_address(parts, &self.trusted_proxies);
        let attempt = self
            .throttle
            .begin_registration(address, self.issuer.now())
            .await
            .map_err(throttled)?;
        let outcome = self.create_account(key, username, email, password).await;
        self.settle_unanswered(attempt, &outcome).await;
        outcome
    }

    async fn create_account(
        &self,
        key: String,
        username: String,
        email: String,
        password: String,
    ) -> Outcome {
        // Registration says whether a name is taken by design; checking first spares an
        // argon2 run for every attempt on a taken name. The insert below still decides.
        if self
            .users
            .find_user(&key)
            .await
            .map_err(unavailable)?
            .is_some()
        {
            return Err(Failure::UsernameTaken);
        }
        let password_hash = self
            .passwords
            .hash_for_registration(password)
            .await
            .map_err(password_failure)?;
        let user = User {
            key,
            username: username.clone(),
            email: email.clone(),
            password_hash,
        };
        match self.users.create_user(user).await.map_err(unavailable)? {
            Registration::Created => Ok(json(
                StatusCode::CREATED,
                &serde_json::json!({ "username": username, "email": email }),
            )),
            Registration::Taken => Err(Failure::UsernameTaken),
        }
    }

    pub(super) async fn token<B>(&self, parts: &Parts, body: B) -> Outcome
    where
        B: Body<Data = Bytes>,
        B::Error: Into<BoxError>,
    {
        require_content_type(&parts.headers, FORM)?;
        let body = read_body(&parts.headers, body).await?;
        let form: TokenForm = parse_form(&body, TOKEN_FIELDS)?;
        match form.grant_type.as_deref() {
            None | Some("password") => self.password_grant(parts, form).await,
            Some("refresh_token") => self.refresh_grant(form).await,
            Some(_) => Err(Failure::UnsupportedGrantType),
        }
    }

    async fn password_grant(&self, parts: &Parts, form: TokenForm) -> Outcome {
        let username = form.username.ok_or(invalid("username", "is required"))?;
        let password = form.password.ok_or(invalid("password", "is required"))?;
        // Whatever the name is, even one that could never be registered, it goes through the
        // same steps as a real one, so nothing in the answer tells them apart.
        let key = username_key(&username);
        let address = client_address(parts, &self.trusted_proxies);
        let attempt = self
            .throttle
            .begin_login(&key, address, self.issuer.now())
            .await
            .map_err(throttled)?;
        let checked = self.check_password(&key, &password).await;
        match &checked {
            Ok(_) => self.throttle.login_succeeded(attempt).await,
            Err(_) => self.settle_unanswered(attempt, &checked).await,
        }
        let (user, verdict) = checked?;
        if verdict == Verdict::MatchNeedsRehash {
            self.upgrade_hash(&user.key, password).await;
        }
        self.issue_session(&user.key).await
    }

    /// The user whose password `password` is, with how their hash verified.
    async fn check_password(&self, key: &str, password: &str) -> Result<(User, Verdict), Failure> {
        // No stored password is longer; hashing a longer one would only burn CPU.
        if password.chars().count() > MAX_PASSWORD_CHARS {
            return Err(Failure::InvalidGrant);
        }
        let user = self.users.find_user(key).await.map_err(unavailable)?;
        let stored_hash = user.as_ref().map(|user| user.password_hash.clone());
        let verdict = self
            .passwords
            .verify(password.to_owned(), stored_hash)
            .await
            .map_err(password_failure)?;
        match (verdict, user) {
            (Verdict::Match | Verdict::MatchNeedsRehash, Some(user)) => Ok((user, verdict)),
            _ => {
                tracing::info!("login refused: invalid grant");
                Err(Failure::InvalidGrant)
            }
        }
    }

    /// An attempt answered `503` was never judged on its merits: a saturated hasher or a
    /// store outage must not use up anyone's allowance.
    async fn settle_unanswered<T>(&self, attempt: Attempt, outcome: &Result<T, Failure>) {
        if matches!(outcome, Err(Failure::Busy | Failure::Unavailable)) {
            self.throttle.not_answered(attempt).await;
        }
    }

    /// Replaces a legacy or weak hash now that the password is known. The login succeeds
    /// either way; a failure here only means the upgrade is retried on the next login.
    async fn upgrade_hash(&self, key: &str, password: String) {
        let hash = match self.passwords.hash(password).await {
            Ok(hash) => hash,
            Err(_) => {
                tracing::warn!("password rehash skipped; will retry on next login");
                return;
            }
        };
        if let Err(error) = self.users.update_password_hash(key, hash).await {
            tracing::warn!(%error, "password rehash not stored; will retry on next login");
        }
    }

    /// A new session: an access token and the first refresh token of a new family.
    async fn issue_session(&self, user_key: &str) -> Outcome {
        let issuer = &self.issuer;
        let now = issuer.now();
        let grant = issuer.grant(now);
        let access_token = issuer.sign(user_key, &grant).map_err(signing_failed)?;
        let (refresh_token, issued) = issuer.refresh_token(&grant, now);
        let family = TokenIssuer::new_family();
        self.users
            .insert_refresh_token(user_key, &family, issued)
            .await
            .map_err(unavailable)?;
        Ok(token_response(issuer, access_token, refresh_token))
    }

    async fn refresh_grant(&self, form: TokenForm) -> Outcome {
        let presented = form
            .refresh_token
            .ok_or(invalid("refresh_token", "is required"))?;
        if presented.len() > MAX_REFRESH_TOKEN_LEN {
            return Err(Failure::InvalidGrant);
        }
        let issuer = &self.issuer;
        let now = issuer.now();
        let grant = issuer.grant(now);
        let (refresh_token, issued) = issuer.refresh_token(&grant, now);
        let rotation = self
            .users
            .rotate_refresh_token(&hash_refresh_token(&presented), now, issued)
            .await
            .map_err(unavailable)?;
        match rotation {
            Rotation::Rotated { user_key } => {
                let access_token = issuer.sign(&user_key, &grant).map_err(signing_failed)?;
                Ok(token_response(issuer, access_token, refresh_token))
            }
            Rotation::Reused { live_access } => {
                tracing::warn!("a spent refresh token was presented again; its family is revoked");
                self.revoke_access(&live_access).await?;
                Err(Failure::InvalidGrant)
            }
            Rotation::Invalid => Err(Failure::InvalidGrant),
        }
    }

    async fn revoke_access(&self, tokens: &[LiveAccess]) -> Result<(), Failure> {
        let revocations = self.issuer.verifier.revocations();
        for token in tokens {
            revocations
                .revoke(&token.jti, token.exp)
                .await
                .map_err(|error| {
                    tracing::error!(%error, "revocation store failed; answering 503");
                    Failure::Unavailable
                })?;
        }
        Ok(())
    }

    /// Logs out the presented token's session, or (`everywhere`) all of its user's.
    ///
    /// The token is verified in full first: a forged, expired or already revoked token is
    /// refused as the gate would refuse it, and adds nothing to any list.
    pub(super) async fn logout(&self, parts: &Parts, everywhere: bool) -> Outcome {
        let verifier = &self.issuer.verifier;
        let (claims, check) = verifier
            .authenticate(&parts.headers)
            .map_err(Failure::Token)?
            .ok_or(Failure::Token(AuthError::MissingCredentials))?;
        let check = match check {
            RevocationCheck::Pending(pending) => pending.await,
            answered => answered,
        };
        check.verdict().map_err(Failure::Token)?;
        let presented = LiveAccess {
            jti: claims.jti.clone(),
            exp: claims.exp,
        };
        // Sessions end before the access token is revoked: if a step fails, the client gets
        // 503 and can retry with the same, still valid, token.
        if everywhere {
            let now = self.issuer.now();
            let mut live = self
                .users
                .revoke_all_sessions(&claims.sub, now)
                .await
                .map_err(unavailable)?;
            verifier
                .revocations()
                .revoke_subject(&claims.sub, now, self.issuer.cutoff_keep_until(now))
                .await
                .map_err(|error| {
                    tracing::error!(%error, "revocation store failed; answering 503");
                    Failure::Unavailable
                })?;
            // Tokens issued within this very second are not before the cut-off: name them.
            live.retain(|token| token.jti != presented.jti);
            live.push(presented);
            self.revoke_access(&live).await?;
        } else {
            self.users
                .revoke_session(&claims.jti)
                .await
                .map_err(unavailable)?;
            self.revoke_access(std::slice::from_ref(&presented)).await?;
        }
        Ok(json(
            StatusCode::OK,
            &serde_json::json!({ "revoked": if everywhere { "all_sessions" } else { "session" } }),
        ))
    }
}

fn signing_failed(error: crate::KeyError) -> Failure {
    tracing::error!(%error, "cannot sign access tokens");
    Failure::ServerError
}

fn token_response(
    issuer: &TokenIssuer,
    access_token: String,
    refresh_token: String,
) -> AuthResponse {
    json(
        StatusCode::OK,
        &serde_json::json!({
            "access_token": access_token,
            "token_type": "bearer",
            "expires_in": issuer.access_ttl.as_secs(),
            "refresh_token": refresh_token,
        }),
    )
}
