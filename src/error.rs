//! Why a request was refused, and how that is said: RFC 6750 over HTTP, a status over gRPC.

use std::fmt;

use bytes::Bytes;
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, TE, WWW_AUTHENTICATE};
use http::{HeaderMap, StatusCode, Version};

use crate::authorize::Forbidden;

/// The realm named in `WWW-Authenticate` challenges unless
/// [`TokenVerifierBuilder::realm`](crate::TokenVerifierBuilder::realm) sets another.
pub const DEFAULT_REALM: &str = "jwt-gate";

/// The realm of the gate that let a request through without claims (an open or optional
/// path), so that an extractor refusing it later names the same realm. Only the axum
/// extractor reads it, so without that feature nothing is recorded.
#[cfg(feature = "axum")]
#[derive(Debug, Clone)]
pub(crate) struct GateRealm(pub(crate) std::sync::Arc<str>);

/// Why the gate refused a request.
///
/// Each reason maps to one RFC 6750 error code, one HTTP status and one short, fixed
/// description: nothing from the request (least of all the token) is ever echoed back.
///
/// ```
/// use http::StatusCode;
/// use jwt_gate::AuthError;
///
/// assert_eq!(AuthError::Expired.status(), StatusCode::UNAUTHORIZED);
/// assert_eq!(AuthError::Expired.error_code(), Some("invalid_token"));
/// assert_eq!(AuthError::MissingCredentials.error_code(), None);
/// assert_eq!(AuthError::TokenTooLong.status(), StatusCode::BAD_REQUEST);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AuthError {
    /// No `Authorization` header, or one with another scheme.
    MissingCredentials,
    /// More than one `Authorization` header.
    MultipleAuthorizationHeaders,
    /// `Bearer` followed by nothing.
    EmptyToken,
    /// `Bearer` followed by more than one token.
    MultipleTokens,
    /// A token longer than the configured cap.
    TokenTooLong,
    /// Characters outside RFC 6750's `b64token` syntax.
    InvalidCharacters,
    /// Not three base64url parts with a JSON header and payload.
    Malformed,
    /// The `alg` header is not the algorithm of the selected key.
    WrongAlgorithm,
    /// No key matches the token's `kid`.
    UnknownKey,
    /// The signature does not verify.
    BadSignature,
    /// A `crit` header: no extension is understood, so every one is refused (RFC 7515 §4.1.11).
    CriticalHeader,
    /// The `typ` header is not the required one.
    WrongType,
    /// A required claim is missing or of the wrong type (an empty or over-long `jti` too).
    MissingClaim,
    /// `exp` is past (beyond the leeway).
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    NotYetValid,
    /// `iat` is in the future (beyond the leeway).
    IssuedInTheFuture,
    /// `exp - iat` exceeds the configured maximum lifetime.
    LifetimeTooLong,
    /// `iss` is missing or not an accepted issuer.
    WrongIssuer,
    /// `aud` is missing or names no accepted audience.
    WrongAudience,
    /// The token was revoked.
    Revoked,
    /// The token is genuine but its `sub` names no user the application knows (the account
    /// was deleted, or the token was minted for another user base). The gate never returns
    /// this itself; a handler that looks the subject up does.
    UnknownSubject,
    /// The revocation store could not be asked, and the gate fails closed.
    RevocationStoreUnavailable,
    /// The token is valid but lacks a scope, role or predicate the resource requires
    /// ([`Require`](crate::Require)): `403`, `error="insufficient_scope"` (RFC 6750 §3.1),
    /// `grpc-status: 7` (PERMISSION_DENIED).
    InsufficientScope,
    /// Two token sources of the gate (the `Authorization` header, its token cookie, its token
    /// header) carry different tokens: which one was meant cannot be told.
    ConflictingTokens,
    /// The gate's token cookie is sent more than once (also under a name that differs only
    /// in case or surrounding whitespace): never first-wins, since a sibling site can add a
    /// cookie of the same name.
    DuplicateCookie,
    /// The gate's token cookie is not in RFC 6265 form: a name that differs from the
    /// configured one in case or whitespace, or a value with characters outside
    /// `cookie-octet` (quotes included).
    MalformedCookie,
    /// The gate's token header is sent more than once.
    DuplicateTokenHeader,
    /// An unsafe request (not `GET`, `HEAD` or `OPTIONS`) authenticated only by the token
    /// cookie came from another site: `403`, never passed on (see
    /// [`TokenSources`](crate::TokenSources)). Not an RFC 6750 error: the token is not at fault.
    CrossSiteRequest,
}

impl AuthError {
    /// Every reason, in declaration order: `ALL[error as usize] == error`.
    #[cfg(any(feature = "metrics", feature = "openapi"))]
    pub(crate) const ALL: [Self; 28] = [
        Self::MissingCredentials,
        Self::MultipleAuthorizationHeaders,
        Self::EmptyToken,
        Self::MultipleTokens,
        Self::TokenTooLong,
        Self::InvalidCharacters,
        Self::Malformed,
        Self::WrongAlgorithm,
        Self::UnknownKey,
        Self::BadSignature,
        Self::CriticalHeader,
        Self::WrongType,
        Self::MissingClaim,
        Self::Expired,
        Self::NotYetValid,
        Self::IssuedInTheFuture,
        Self::LifetimeTooLong,
        Self::WrongIssuer,
        Self::WrongAudience,
        Self::Revoked,
        Self::UnknownSubject,
        Self::RevocationStoreUnavailable,
        Self::InsufficientScope,
        Self::ConflictingTokens,
        Self::DuplicateCookie,
        Self::MalformedCookie,
        Self::DuplicateTokenHeader,
        Self::CrossSiteRequest,
    ];

    /// The reason as a metric label: fixed, short, snake case.
    #[cfg(feature = "metrics")]
    pub(crate) fn kind(self) -> &'static str {
        match self {
            Self::MissingCredentials => "missing_credentials",
            Self::MultipleAuthorizationHeaders => "multiple_authorization_headers",
            Self::EmptyToken => "empty_token",
            Self::MultipleTokens => "multiple_tokens",
            Self::TokenTooLong => "token_too_long",
            Self::InvalidCharacters => "invalid_characters",
            Self::Malformed => "malformed",
            Self::WrongAlgorithm => "wrong_algorithm",
            Self::UnknownKey => "unknown_key",
            Self::BadSignature => "bad_signature",
            Self::CriticalHeader => "critical_header",
            Self::WrongType => "wrong_type",
            Self::MissingClaim => "missing_claim",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::IssuedInTheFuture => "issued_in_the_future",
            Self::LifetimeTooLong => "lifetime_too_long",
            Self::WrongIssuer => "wrong_issuer",
            Self::WrongAudience => "wrong_audience",
            Self::Revoked => "revoked",
            Self::UnknownSubject => "unknown_subject",
            Self::RevocationStoreUnavailable => "revocation_store_unavailable",
            Self::InsufficientScope => "insufficient_scope",
            Self::ConflictingTokens => "conflicting_tokens",
            Self::DuplicateCookie => "duplicate_cookie",
            Self::MalformedCookie => "malformed_cookie",
            Self::DuplicateTokenHeader => "duplicate_token_header",
            Self::CrossSiteRequest => "cross_site_request",
        }
    }

    /// The HTTP status: `401`, `400` for malformed requests (RFC 6750 §3.1), `403` for a
    /// valid token lacking what the resource requires and for a cross-site request carrying
    /// only the token cookie, `503` when the revocation store is down.
    pub fn status(self) -> StatusCode {
        match self.error_code() {
            Some("invalid_request") => StatusCode::BAD_REQUEST,
            Some("insufficient_scope") => StatusCode::FORBIDDEN,
            _ if self == Self::RevocationStoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ if self == Self::CrossSiteRequest => StatusCode::FORBIDDEN,
            _ => StatusCode::UNAUTHORIZED,
        }
    }

    /// The RFC 6750 `error` code; `None` when the refusal is not about a token: the request
    /// carried none, the revocation store is down, or a cross-site request used the cookie.
    pub fn error_code(self) -> Option<&'static str> {
        match self {
            Self::MissingCredentials
            | Self::RevocationStoreUnavailable
            | Self::CrossSiteRequest => None,
            Self::MultipleAuthorizationHeaders
            | Self::EmptyToken
            | Self::MultipleTokens
            | Self::TokenTooLong
            | Self::InvalidCharacters
            | Self::ConflictingTokens
            | Self::DuplicateCookie
            | Self::MalformedCookie
            | Self::DuplicateTokenHeader => Some("invalid_request"),
            Self::InsufficientScope => Some("insufficient_scope"),
            _ => Some("invalid_token"),
        }
    }

    /// A short description that is safe to send: fixed text, never request data.
    pub fn description(self) -> &'static str {
        match self {
            Self::MissingCredentials => "a bearer token is required",
            Self::MultipleAuthorizationHeaders => "more than one Authorization header",
            Self::EmptyToken => "the bearer token is empty",
            Self::MultipleTokens => "more than one bearer token",
            Self::TokenTooLong => "the bearer token is too long",
            Self::InvalidCharacters => "the bearer token has invalid characters",
            Self::Malformed => "the token is malformed",
            Self::WrongAlgorithm => "the token's algorithm is not accepted",
            Self::UnknownKey => "the token's key is unknown",
            Self::BadSignature => "the token's signature is invalid",
            Self::CriticalHeader => "the token has a critical header that is not understood",
            Self::WrongType => "the token is not an access token",
            Self::MissingClaim => "the token lacks a required claim",
            Self::Expired => "the token has expired",
            Self::NotYetValid => "the token is not valid yet",
            Self::IssuedInTheFuture => "the token is issued in the future",
            Self::LifetimeTooLong => "the token's lifetime is too long",
            Self::WrongIssuer => "the token's issuer is not accepted",
            Self::WrongAudience => "the token's audience is not accepted",
            Self::Revoked => "the token has been revoked",
            Self::UnknownSubject => "the token's subject is not a known user",
            Self::RevocationStoreUnavailable => "the revocation list is unavailable",
            Self::InsufficientScope => "the token lacks a scope or role this resource requires",
            Self::ConflictingTokens => "the request carries different tokens in different places",
            Self::DuplicateCookie => "the token cookie is sent more than once",
            Self::MalformedCookie => "the token cookie is malformed",
            Self::DuplicateTokenHeader => "the token header is sent more than once",
            Self::CrossSiteRequest => {
                "a cross-site request cannot be authenticated by the token cookie"
            }
        }
    }

    /// The gRPC status code: `16` (UNAUTHENTICATED), `7` (PERMISSION_DENIED) for a token
    /// lacking what the method requires or a cross-site cookie request, or `14`
    /// (UNAVAILABLE) when the revocation store is down.
    pub fn grpc_code(self) -> u16 {
        match self {
            Self::RevocationStoreUnavailable => 14,
            Self::InsufficientScope | Self::CrossSiteRequest => 7,
            _ => 16,
        }
    }

    /// The headers and body of the HTTP rejection, for a given `realm`.
    ///
    /// `headers` gets `WWW-Authenticate` (RFC 6750 §3), `Content-Type` and `Cache-Control`;
    /// the returned body is `{"error": …, "error_description": …}`, and for a `403` also
    /// `"missing"`: what the token lacked. The challenge of a `403` names the required scopes
    /// in `scope` (RFC 6750 §3).
    fn http_parts(
        self,
        realm: &str,
        forbidden: Option<&Forbidden>,
        headers: &mut HeaderMap,
    ) -> Bytes {
        let mut challenge = match self.error_code() {
            Some(code) => format!(
                "Bearer realm=\"{realm}\", error=\"{code}\", error_description=\"{}\"",
                self.description()
            ),
            None => format!("Bearer realm=\"{realm}\""),
        };
        // Scope names were checked to be quoted-string safe when the requirement was made.
        if let Some(scope) = forbidden.and_then(|forbidden| forbidden.scope_attribute.as_deref()) {
            challenge.push_str(&format!(", scope=\"{scope}\""));
        }
        // The realm was checked to be a valid quoted-string when it was configured, and the
        // rest is our own fixed text. A cross-site refusal gets no challenge: its token may
        // be fine, and no other credentials would be accepted from that site either.
        if let (Ok(value), false) = (
            HeaderValue::from_str(&challenge),
            self == Self::CrossSiteRequest,
        ) {
            headers.insert(WWW_AUTHENTICATE, value);
        }
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        let mut body = serde_json::json!({
            "error": self.error_code().unwrap_or(match self {
                Self::RevocationStoreUnavailable => "temporarily_unavailable",
                Self::CrossSiteRequest => "cross_site_request",
                _ => "unauthorized",
            }),
            "error_description": self.description(),
        });
        if let Some(forbidden) = forbidden {
            body["missing"] = forbidden.missing_json();
        }
        Bytes::from(body.to_string())
    }

    /// The headers of a trailers-only gRPC rejection: HTTP 200, `grpc-status`, `grpc-message`,
    /// and `Cache-Control: no-store`, since a `200` is what HTTP caches keep.
    fn grpc_parts(self, headers: &mut HeaderMap) {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert("grpc-status", HeaderValue::from(self.grpc_code()));
        // The descriptions are plain ASCII without '%', so they are already percent-encoded.
        headers.insert("grpc-message", HeaderValue::from_static(self.description()));
    }

    /// Renders the whole rejection: every refusal the crate answers (the gate's, the axum
    /// extractor's, the requirement layer's, the auth service's logout) goes through here.
    /// gRPC when the request was gRPC (see [`is_grpc`]), RFC 6750 with `realm` otherwise.
    /// `forbidden` says what a `403`'s token lacked.
    pub(crate) fn render(
        self,
        realm: &str,
        grpc: bool,
        forbidden: Option<&Forbidden>,
    ) -> (StatusCode, HeaderMap, Bytes) {
        let mut headers = HeaderMap::new();
        if grpc {
            self.grpc_parts(&mut headers);
            (StatusCode::OK, headers, Bytes::new())
        } else {
            let body = self.http_parts(realm, forbidden, &mut headers);
            (self.status(), headers, body)
        }
    }
}

/// Whether a request can be a gRPC call: HTTP/2, `content-type: application/grpc` (alone or
/// followed by `+` or `;`), and `te: trailers`, all of which gRPC requires.
///
/// The content type alone is the client's choice: on a REST route it would turn a `401` into
/// a `200` that caches and naive clients take for success.
pub(crate) fn is_grpc(version: Version, headers: &HeaderMap) -> bool {
    let grpc_content = headers.get(CONTENT_TYPE).is_some_and(|value| {
        value
            .as_bytes()
            .strip_prefix(b"application/grpc")
            .is_some_and(|rest| matches!(rest.first(), None | Some(b'+' | b';')))
    });
    let trailers = headers.get_all(TE).iter().any(|value| {
        value
            .as_bytes()
            .split(|&byte| byte == b',')
            .any(|coding| coding.trim_ascii().eq_ignore_ascii_case(b"trailers"))
    });
    version == Version::HTTP_2 && grpc_content && trailers
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.description())
    }
}

impl std::error::Error for AuthError {}
