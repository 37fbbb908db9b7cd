//! The service's state and what each route does with it, from a request to its answer.

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::request::Parts;
use http::{Method, Request, StatusCode};
use http_body::Body;
use serde::{Deserialize, Serialize};

use super::identity::{
    acceptable_password_length, registrable_username, username_key, valid_email,
};
use super::password::Passwords;
use super::password::{PasswordFailure, Verdict, MAX_PASSWORD_CHARS};
use super::reply::{json, AuthResponse, Failure};
use super::request::{parse_form, parse_json, read_body, require_content_type, FORM, JSON};
use super::throttle::{client_address, Attempt, Refusal, Throttle};
use super::tokens::{hash_refresh_token, Granted, SigningError, TokenIssuer};
use crate::extract::Sources;
use crate::revocation::{RevocationCheck, RevocationError, TokenId};
use crate::store::{is_grant_name, Registration, Rotation, User, UserStore, UserStoreError};
use crate::{AuthError, BoxError};

/// Everything a request may need, shared by the clones of one [`AuthService`](super::AuthService).
pub(super) struct Inner {
    pub(super) prefix: String,
    pub(super) issuer: TokenIssuer,
    pub(super) users: Arc<dyn UserStore>,
    pub(super) passwords: Passwords,
    pub(super) throttle: Throttle,
    pub(super) trusted_proxies: Vec<IpAddr>,
    /// Where logout reads the access token: the gate's sources.
    pub(super) token_sources: Sources,
}

/// The routes, by their path below the prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Register,
    Token,
    Logout,
    LogoutAll,
    Revoke,
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
            "/revoke" => Some(Route::Revoke),
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
            Some(route) => {
                let (operation, outcome) = match route {
                    Route::Register => ("register", self.register(&parts, body).await),
                    Route::Token => self.token(&parts, body).await,
                    Route::Logout => ("logout", self.logout(&parts, false).await),
                    Route::LogoutAll => ("logout_all", self.logout(&parts, true).await),
                    Route::Revoke => ("revoke", self.revoke(&parts, body).await),
                };
                crate::metrics::auth_operation(operation, outcome_label(&outcome));
                outcome
            }
        };
        let realm = self.issuer.verifier.realm();
        outcome
            .unwrap_or_else(|failure| failure.into_response(realm, parts.version, &parts.headers))
    }
}

type Outcome = Result<AuthResponse, Failure>;

/// An outcome as a metric label: one of a few fixed words, never request data.
fn outcome_label(outcome: &Outcome) -> &'static str {
    match outcome {
        Ok(_) => "success",
        Err(Failure::InvalidGrant) => "invalid_grant",
        Err(Failure::InvalidScope) => "invalid_scope",
        Err(Failure::UsernameTaken) => "username_taken",
        // A logout whose revocation store cannot be asked is a store outage, not a bad token.
        Err(Failure::Token(AuthError::RevocationStoreUnavailable)) => "unavailable",
        // Another site's page sending the cookie: an attack on the user, not a bad token.
        Err(Failure::Token(AuthError::CrossSiteRequest)) => "cross_site_request",
        Err(Failure::Token(_)) => "invalid_token",
        Err(Failure::Throttled { .. } | Failure::RefreshThrottled { .. }) => "throttled",
        Err(Failure::Busy) => "busy",
        Err(Failure::Unavailable | Failure::Unfinished) => "unavailable",
        Err(Failure::ServerError) => "server_error",
        Err(
            Failure::NotFound
            | Failure::MethodNotAllowed
            | Failure::PayloadTooLarge
            | Failure::UnsupportedMediaType
            | Failure::UnreadableBody
            | Failure::Invalid { .. }
            | Failure::UnsupportedGrantType,
        ) => "invalid_request",
    }
}

/// A registration: `POST {prefix}/register`, `application/json`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub(super) struct RegisterBody {
    /// 1 to 64 characters after NFKC: letters, digits, `.`, `_` and `-`. Unique regardless
    /// of case, width and look-alike scripts.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, example = "alice"))]
    username: String,
    #[cfg_attr(feature = "openapi", schema(example = "alice@example.com"))]
    email: String,
    /// 8 to 1024 characters, never truncated.
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 8, max_length = 1024, example = "correct horse battery")
    )]
    password: String,
}

/// The account just registered.
#[derive(Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub(super) struct Registered {
    /// As registered (after NFKC), not folded.
    username: String,
    email: String,
}

/// A token endpoint's success (RFC 6749 §5.1).
#[derive(Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub(super) struct TokenResponse {
    /// The JWT to send as `Authorization: Bearer …`.
    access_token: String,
    token_type: TokenType,
    /// Seconds the access token is valid for.
    expires_in: u64,
    /// Opaque; exchange it with `grant_type=refresh_token` for new tokens. Each is good once.
    refresh_token: String,
    /// The scopes granted, space-separated, when they are not exactly those asked for
    /// (RFC 6749 §5.1).
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub(super) enum TokenType {
    Bearer,
}

/// What a logout revoked.
#[derive(Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub(super) struct LoggedOut {
    revoked: Revoked,
}

/// `session`: the presented token's session; `all_sessions`: every session of its user.
#[derive(Serialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub(super) enum Revoked {
    Session,
    AllSessions,
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
    scope: Option<String>,
}

const TOKEN_FIELDS: &[&str] = &[
    "grant_type",
    "username",
    "password",
    "refresh_token",
    "scope",
];

/// The revocation endpoint's form (RFC 7009 §2.1).
#[derive(Deserialize)]
struct RevokeForm {
    token: Option<String>,
    /// Read only so that a repeated hint is refused like any repeated field: a token's shape
    /// tells which kind it is, so the hint changes nothing.
    #[serde(rename = "token_type_hint")]
    _token_type_hint: Option<String>,
}

const REVOKE_FIELDS: &[&str] = &["token", "token_type_hint"];

/// The scopes a client asked for with `scope` (RFC 6749 §3.3: space-separated names),
/// sorted, each once; `None` when it named none. A name that could never be granted is
/// `invalid_scope`.
fn requested_scopes(scope: Option<&str>) -> Result<Option<Vec<String>>, Failure> {
    let mut names = Vec::new();
    for name in scope.unwrap_or_default().split(' ') {
        if name.is_empty() {
            continue;
        }
        if !is_grant_name(name) {
            return Err(Failure::InvalidScope);
        }
        names.push(name.to_owned());
    }
    names.sort_unstable();
    names.dedup();
    Ok((!names.is_empty()).then_some(names))
}

/// The scopes of `held` the client asked for, or all of them when it asked for none: a scope
/// asked for but not held is left out, never an error (RFC 6749 §3.3 lets the server issue
/// fewer; the response then says which).
fn narrowed(requested: Option<&[String]>, held: &[String]) -> Vec<String> {
    held.iter()
        .filter(|scope| requested.is_none_or(|requested| requested.contains(scope)))
        .cloned()
        .collect()
}

/// The `scope` member of a token response: the granted scopes unless they are exactly what
/// was asked for (RFC 6749 §5.1); nothing when none were asked for and none are granted.
fn scope_reply(requested: Option<&[String]>, granted: &[String]) -> Option<String> {
    match requested {
        Some(requested) if requested == granted => None,
        None if granted.is_empty() => None,
        _ => Some(granted.join(" ")),
    }
}

/// The longest refresh token worth hashing: ours are 43 characters.
const MAX_REFRESH_TOKEN_LEN: usize = 256;

fn unavailable(error: UserStoreError) -> Failure {
    tracing::error!(%error, "user store failed; answering 503");
    Failure::Unavailable
}

fn revocation_failed(error: RevocationError) -> Failure {
    tracing::error!(%error, "revocation store failed; answering 503");
    Failure::Unavailable
}

/// A failure after part of the request was recorded: `503` saying so, since the client's
/// retry is what finishes it.
fn unfinished(error: impl std::fmt::Display) -> Failure {
    tracing::error!(%error, "a store failed half-way; answering 503, a retry finishes the work");
    Failure::Unfinished
}

/// A revocation that failed: half-way (`changed`: something was recorded before it, which the
/// `503` must say), or before anything was.
fn failed_after(changed: bool, error: RevocationError) -> Failure {
    if changed {
        unfinished(error)
    } else {
        revocation_failed(error)
    }
}

/// How often a revocation the service must not lose (a replayed refresh token's session) is
/// tried before the client is told `503`, and the pause before each retry.
const REVOCATION_RETRIES: [std::time::Duration; 2] = [
    std::time::Duration::from_millis(50),
    std::time::Duration::from_millis(250),
];

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
            roles: Vec::new(),
            scopes: Vec::new(),
        };
        match self.users.create_user(user).await.map_err(unavailable)? {
            Registration::Created => Ok(json(StatusCode::CREATED, &Registered { username, email })),
            Registration::Taken => Err(Failure::UsernameTaken),
        }
    }

    /// The token endpoint, and which operation the request was: `login`, `refresh`, or
    /// `token` when its grant could not be read.
    pub(super) async fn token<B>(&self, parts: &Parts, body: B) -> (&'static str, Outcome)
    where
        B: Body<Data = Bytes>,
        B::Error: Into<BoxError>,
    {
        let form = async {
            require_content_type(&parts.headers, FORM)?;
            let body = read_body(&parts.headers, body).await?;
            parse_form::<TokenForm>(&body, TOKEN_FIELDS)
        };
        let form = match form.await {
            Ok(form) => form,
            Err(failure) => return ("token", Err(failure)),
        };
        match form.grant_type.as_deref() {
            None | Some("password") => ("login", self.password_grant(parts, form).await),
            Some("refresh_token") => ("refresh", self.refresh_grant(form).await),
            Some(_) => ("token", Err(Failure::UnsupportedGrantType)),
        }
    }

    async fn password_grant(&self, parts: &Parts, form: TokenForm) -> Outcome {
        let username = form.username.ok_or(invalid("username", "is required"))?;
        let password = form.password.ok_or(invalid("password", "is required"))?;
        let requested = requested_scopes(form.scope.as_deref())?;
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
        self.issue_session(&user, requested.as_deref()).await
    }

    /// The user whose password `password` is, with how their hash verified.
    async fn check_password(&self, key: &str, password: &str) -> Result<(User, Verdict), Failure> {
        // No stored password is longer; hashing a longer one would only burn CPU.
        if password.chars().count() > MAX_PASSWORD_CHARS {
            return Err(Failure::InvalidGrant);
        }
        // A name with a control character was never registered, and PostgreSQL refuses a NUL
        // in text: not asked, such a name is an unknown user (the dummy hash still runs), not
        // a store outage that a flood could raise unthrottled.
        let user = if key.chars().any(char::is_control) {
            None
        } else {
            self.users.find_user(key).await.map_err(unavailable)?
        };
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
        if matches!(
            outcome,
            Err(Failure::Busy | Failure::Unavailable | Failure::Unfinished)
        ) {
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

    /// A new session granted the scopes of `user` that were asked for: an access token and
    /// the first refresh token of a new family.
    async fn issue_session(&self, user: &User, requested: Option<&[String]>) -> Outcome {
        let issuer = &self.issuer;
        let now = issuer.now();
        let grant = issuer.grant(now);
        let session = TokenIssuer::new_family();
        let scopes = narrowed(requested, &user.scopes);
        let granted = Granted {
            scopes: &scopes,
            user,
        };
        let access_token = issuer
            .sign(&session, &grant, &granted)
            .map_err(signing_failed)?;
        let (refresh_token, issued) = issuer.refresh_token(now);
        self.users
            .insert_refresh_token(
                &user.key,
                &session,
                issuer.session_end(now),
                &scopes,
                issued,
            )
            .await
            .map_err(unavailable)?;
        let scope = scope_reply(requested, &scopes);
        Ok(token_response(issuer, access_token, refresh_token, scope))
    }

    /// Rotates a refresh token. Its user is read before anything is spent, so that a store
    /// failing to answer leaves the presented token working; the access token then carries
    /// the user's current roles and the session's scopes that the user still holds, narrowed
    /// to those asked for: a refresh never widens a session's scopes.
    async fn refresh_grant(&self, form: TokenForm) -> Outcome {
        let presented = form
            .refresh_token
            .ok_or(invalid("refresh_token", "is required"))?;
        let requested = requested_scopes(form.scope.as_deref())?;
        if presented.len() > MAX_REFRESH_TOKEN_LEN {
            return Err(Failure::InvalidGrant);
        }
        let presented = hash_refresh_token(&presented);
        let issuer = &self.issuer;
        let now = issuer.now();
        let found = self
            .users
            .refresh_session(&presented, now)
            .await
            .map_err(unavailable)?
            .ok_or(Failure::InvalidGrant)?;
        let user = self
            .users
            .find_user(&found.user_key)
            .await
            .map_err(unavailable)?
            .ok_or(Failure::InvalidGrant)?;
        let grant = issuer.grant(now);
        let (refresh_token, issued) = issuer.refresh_token(now);
        let rotation = self
            .users
            .rotate_refresh_token(&presented, now, issued, issuer.max_rotations_per_minute)
            .await
            .map_err(unavailable)?;
        match rotation {
            Rotation::Rotated {
                user_key,
                session,
                scopes,
            } => {
                if self.session_revoked(&user_key, &session, &grant).await {
                    // A logout revoked the session but did not get to end it in the store:
                    // finish its work. Whether that succeeds or not, the session is over.
                    if let Err(error) = self.users.end_sessions(&[session.as_str()]).await {
                        tracing::warn!(%error, "could not end a revoked session; it stays revoked");
                    }
                    return Err(Failure::InvalidGrant);
                }
                let held: Vec<String> = narrowed(Some(&user.scopes), &scopes);
                let scopes = narrowed(requested.as_deref(), &held);
                let granted = Granted {
                    scopes: &scopes,
                    user: &user,
                };
                let access_token = issuer
                    .sign(&session, &grant, &granted)
                    .map_err(signing_failed)?;
                let scope = scope_reply(requested.as_deref(), &scopes);
                Ok(token_response(issuer, access_token, refresh_token, scope))
            }
            Rotation::Reused { session } => {
                tracing::warn!("a spent refresh token was presented again; its family is revoked");
                // The store has ended the family already: a failure here is half-way, and
                // presenting the token again (now `Ended`) finishes it.
                self.revoke_sessions_retrying(&[session.as_str()], now)
                    .await
                    .map_err(unfinished)?;
                Err(Failure::InvalidGrant)
            }
            // Revoking again is harmless, and completes a revocation that failed before.
            Rotation::Ended { session } => {
                self.revoke_sessions_retrying(&[session.as_str()], now)
                    .await
                    .map_err(revocation_failed)?;
                Err(Failure::InvalidGrant)
            }
            Rotation::Throttled { retry_after } => Err(Failure::RefreshThrottled { retry_after }),
            Rotation::Invalid => Err(Failure::InvalidGrant),
        }
    }

    /// Whether the revocation store already refuses the tokens of `session`. When it cannot
    /// tell, the answer is no: the gate will ask again about the token itself.
    async fn session_revoked(
        &self,
        user_key: &str,
        session: &str,
        grant: &super::tokens::AccessGrant,
    ) -> bool {
        let token = TokenId {
            jti: &grant.jti,
            sub: user_key,
            issuer: None,
            sid: Some(session),
            iat: grant.iat,
            exp: grant.exp,
        };
        let check = match self.issuer.verifier.revocations().check(&token) {
            RevocationCheck::Pending(pending) => pending.await,
            answered => answered,
        };
        matches!(check, RevocationCheck::Revoked)
    }

    /// Revokes every access token of `sessions`, trying again after a failure: a replayed
    /// refresh token has already ended its family in the store, and no later request may
    /// get to repeat this. Fails only when every attempt did, with the last error; the caller
    /// says whether that leaves the request half-way.
    async fn revoke_sessions_retrying(
        &self,
        sessions: &[&str],
        now: u64,
    ) -> Result<(), RevocationError> {
        let revocations = self.issuer.verifier.revocations();
        let keep_until = self.issuer.cutoff_keep_until(now);
        let mut pauses = REVOCATION_RETRIES.iter();
        loop {
            match revocations.revoke_sessions(sessions, keep_until).await {
                Ok(()) => return Ok(()),
                Err(error) => match pauses.next() {
                    Some(pause) => {
                        tracing::warn!(%error, "revoking a session failed; retrying");
                        tokio::time::sleep(*pause).await;
                    }
                    None => return Err(error),
                },
            }
        }
    }

    /// Ends `sessions` as a logout does: every access token of them is refused first (in the
    /// revocation store), then their refresh tokens stop working (in the user store). A `503`
    /// from the first step changed nothing; one from the second left every access token
    /// refused, and repeating the request completes it.
    async fn end_sessions(&self, sessions: &[&str], now: u64) -> Result<(), Failure> {
        self.issuer
            .verifier
            .revocations()
            .revoke_sessions(sessions, self.issuer.cutoff_keep_until(now))
            .await
            .map_err(revocation_failed)?;
        self.users.end_sessions(sessions).await.map_err(unfinished)
    }

    /// RFC 7009 revocation: the presented token, refresh or access, ends its session as a
    /// logout would. An unknown, expired, forged or already revoked token is answered `200`
    /// as well (§2.2) and changes nothing; each such request counts against the client
    /// address, with the login throttle's per-address allowance, so guessing is throttled.
    pub(super) async fn revoke<B>(&self, parts: &Parts, body: B) -> Outcome
    where
        B: Body<Data = Bytes>,
        B::Error: Into<BoxError>,
    {
        require_content_type(&parts.headers, FORM)?;
        let body = read_body(&parts.headers, body).await?;
        let form: RevokeForm = parse_form(&body, REVOKE_FIELDS)?;
        let token = form.token.ok_or(invalid("token", "is required"))?;
        let address = client_address(parts, &self.trusted_proxies);
        let attempt = self
            .throttle
            .begin_revocation(address, self.issuer.now())
            .await
            .map_err(throttled)?;
        // Our access tokens are JWTs, our refresh tokens plain base64url: the shape decides.
        let revoked = if token.contains('.') {
            self.revoke_access_token(&token).await
        } else {
            self.revoke_refresh_token(&token).await
        };
        match revoked {
            Ok(true) => self.throttle.revocation_found(attempt).await,
            Ok(false) => tracing::info!("revocation of an unknown or invalid token"),
            Err(_) => self.settle_unanswered(attempt, &revoked).await,
        }
        revoked?;
        Ok(json(StatusCode::OK, &serde_json::json!({})))
    }

    /// Ends the session of a refresh token, live or already rotated away (presenting one of
    /// those at the token endpoint would end it too). `false` for a token not known.
    async fn revoke_refresh_token(&self, token: &str) -> Result<bool, Failure> {
        if token.len() > MAX_REFRESH_TOKEN_LEN {
            return Ok(false);
        }
        let now = self.issuer.now();
        let found = self
            .users
            .refresh_session(&hash_refresh_token(token), now)
            .await
            .map_err(unavailable)?;
        let Some(found) = found else {
            return Ok(false);
        };
        self.end_sessions(&[found.session.as_str()], now).await?;
        Ok(true)
    }

    /// Ends the session of a genuine access token, or revokes the token itself when it has
    /// none. `false` for a token that does not verify: nothing is recorded for it.
    async fn revoke_access_token(&self, token: &str) -> Result<bool, Failure> {
        let verifier = &self.issuer.verifier;
        let Ok(claims) = verifier.verify(token) else {
            return Ok(false);
        };
        // Another issuer's `sid` names none of this service's sessions.
        if verifier.is_from_another_issuer(&claims) {
            return Ok(false);
        }
        match &claims.sid {
            Some(sid) => {
                self.end_sessions(&[sid.as_str()], self.issuer.now())
                    .await?
            }
            None => verifier
                .revocations()
                .revoke(&claims.jti, claims.exp)
                .await
                .map_err(revocation_failed)?,
        }
        Ok(true)
    }

    /// Logs out the presented token's session, or (`everywhere`) all of its user's.
    ///
    /// The token is verified in full first: a forged, expired or revoked token is refused as
    /// the gate would refuse it, and adds nothing to any list. The one exception is a token
    /// whose own session was revoked: it may log out again, so that a logout which failed
    /// half-way can be repeated with the same token.
    ///
    /// Revocations come first, the store after: a `503` at the first step means nothing
    /// changed; a `503` later means the tokens are already refused, and a retry completes the
    /// rest. Logging out everywhere cuts the subject off last, since that refuses the
    /// presented token itself (unless issued this very second).
    pub(super) async fn logout(&self, parts: &Parts, everywhere: bool) -> Outcome {
        let verifier = &self.issuer.verifier;
        // The gate's own answer is set aside for one that ignores the token's session: a
        // token refused only because its session was logged out may repeat the logout.
        let token = self
            .token_sources
            .request_token(
                &parts.method,
                &parts.uri,
                &parts.headers,
                verifier.validation().max_token_len,
            )
            .map_err(Failure::Token)?;
        let (claims, _, _, _) = verifier
            .authenticate(token)
            .map_err(Failure::Token)?
            .ok_or(Failure::Token(AuthError::MissingCredentials))?;
        // Another issuer's user is not this service's user of the same `sub`: its token may
        // pass the gate, but cannot end a local user's sessions.
        if verifier.is_from_another_issuer(&claims) {
            return Err(Failure::Token(AuthError::WrongIssuer));
        }
        let without_session = TokenId {
            sid: None,
            ..TokenId::of(&claims)
        };
        let check = match verifier.revocations().check(&without_session) {
            RevocationCheck::Pending(pending) => pending.await,
            answered => answered,
        };
        check.verdict().map_err(Failure::Token)?;
        let now = self.issuer.now();
        let keep_until = self.issuer.cutoff_keep_until(now);
        let revocations = verifier.revocations();
        let mut sessions: Vec<String> = if everywhere {
            self.users
                .sessions_of(&claims.sub, now)
                .await
                .map_err(unavailable)?
        } else {
            Vec::new()
        };
        if let Some(sid) = &claims.sid {
            if !sessions.contains(sid) {
                sessions.push(sid.clone());
            }
        }
        let sessions: Vec<&str> = sessions.iter().map(String::as_str).collect();
        let mut changed = false;
        if !sessions.is_empty() {
            self.end_sessions(&sessions, now).await?;
            changed = true;
        }
        if everywhere {
            revocations
                .revoke_subject(&claims.sub, now, keep_until)
                .await
                .map_err(|error| failed_after(changed, error))?;
            changed = true;
        }
        // A token without a session is named itself, unless the cut-off already covers it.
        if claims.sid.is_none() && !(everywhere && claims.iat < now) {
            revocations
                .revoke(&claims.jti, claims.exp)
                .await
                .map_err(|error| failed_after(changed, error))?;
        }
        let revoked = if everywhere {
            Revoked::AllSessions
        } else {
            Revoked::Session
        };
        Ok(json(StatusCode::OK, &LoggedOut { revoked }))
    }
}

fn signing_failed(error: SigningError) -> Failure {
    tracing::error!(%error, "cannot sign access tokens");
    Failure::ServerError
}

fn token_response(
    issuer: &TokenIssuer,
    access_token: String,
    refresh_token: String,
    scope: Option<String>,
) -> AuthResponse {
    json(
        StatusCode::OK,
        &TokenResponse {
            access_token,
            token_type: TokenType::Bearer,
            expires_in: issuer.access_ttl.as_secs(),
            refresh_token,
            scope,
        },
    )
}
