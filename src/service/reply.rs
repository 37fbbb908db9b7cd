//! The service's answers: small JSON bodies, never carrying request data, hashes or tokens
//! other than the ones being issued.

use bytes::Bytes;
use http::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE, PRAGMA, RETRY_AFTER};
use http::{HeaderMap, Response, StatusCode};
use http_body_util::Full;

use crate::error::is_grpc;
use crate::AuthError;

/// The response type of [`AuthService`](super::AuthService).
pub type AuthResponse = Response<Full<Bytes>>;

/// Why a request did not succeed, each with one fixed answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    NotFound,
    MethodNotAllowed,
    PayloadTooLarge,
    UnsupportedMediaType,
    /// The body could not be read at all (the connection broke mid-body).
    UnreadableBody,
    /// A field is missing or invalid; `field` is one of the route's own field names, never
    /// a name taken from the request.
    Invalid {
        field: Option<&'static str>,
        description: &'static str,
    },
    UsernameTaken,
    InvalidGrant,
    UnsupportedGrantType,
    Throttled {
        retry_after: u64,
    },
    /// A session was refreshed more often than its rotation limit allows.
    RefreshThrottled {
        retry_after: u64,
    },
    /// Password hashing is saturated: try again shortly.
    Busy,
    /// A store did not answer or did not acknowledge a write.
    Unavailable,
    /// The token signing key is unusable: a configuration error.
    ServerError,
    /// The bearer token on a logout was refused, answered as the gate would.
    Token(AuthError),
}

pub(crate) fn json(status: StatusCode, body: &serde_json::Value) -> AuthResponse {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    // Every answer here is about credentials: no cache may keep one (RFC 6749 §5.1).
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

/// `429` with `Retry-After` (at least a second: `0` would invite an immediate retry).
fn too_many(code: &str, description: &str, retry_after: u64) -> AuthResponse {
    let mut response = error(StatusCode::TOO_MANY_REQUESTS, code, description);
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(retry_after.max(1)));
    response
}

fn error(status: StatusCode, code: &str, description: &str) -> AuthResponse {
    json(
        status,
        &serde_json::json!({ "error": code, "error_description": description }),
    )
}

impl Failure {
    /// The answer; a refused bearer token is answered as the gate would, in `realm`.
    pub(crate) fn into_response(
        self,
        realm: &str,
        version: http::Version,
        request_headers: &HeaderMap,
    ) -> AuthResponse {
        match self {
            Self::NotFound => error(StatusCode::NOT_FOUND, "not_found", "no such route"),
            Self::MethodNotAllowed => {
                let mut response = error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    "this route only accepts POST",
                );
                response
                    .headers_mut()
                    .insert(ALLOW, HeaderValue::from_static("POST"));
                response
            }
            Self::PayloadTooLarge => error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "the body is larger than 16 KiB",
            ),
            Self::UnsupportedMediaType => error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "wrong Content-Type for this route",
            ),
            Self::UnreadableBody => error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "the body could not be read",
            ),
            Self::Invalid { field, description } => json(
                StatusCode::UNPROCESSABLE_ENTITY,
                &serde_json::json!({
                    "error": "invalid_request",
                    "field": field,
                    "error_description": description,
                }),
            ),
            Self::UsernameTaken => error(
                StatusCode::CONFLICT,
                "username_taken",
                "this username is already registered",
            ),
            Self::InvalidGrant => json(
                StatusCode::BAD_REQUEST,
                &serde_json::json!({ "error": "invalid_grant" }),
            ),
            Self::UnsupportedGrantType => error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "grant_type must be password or refresh_token",
            ),
            Self::Throttled { retry_after } => too_many(
                "too_many_attempts",
                "too many attempts; wait before trying again",
                retry_after,
            ),
            Self::RefreshThrottled { retry_after } => too_many(
                "too_many_requests",
                "this session was refreshed too often; wait before trying again",
                retry_after,
            ),
            Self::Busy => {
                let mut response = error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "temporarily_unavailable",
                    "too many logins at once; try again shortly",
                );
                response
                    .headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from_static("1"));
                response
            }
            Self::Unavailable => error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "a store is unavailable; nothing was changed",
            ),
            Self::ServerError => error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "the service is misconfigured",
            ),
            Self::Token(error) => {
                let (status, headers, body) =
                    error.render(realm, is_grpc(version, request_headers));
                let mut response = Response::new(Full::new(body));
                *response.status_mut() = status;
                *response.headers_mut() = headers;
                response
            }
        }
    }
}
