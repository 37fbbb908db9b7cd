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

#[cfg(test)]
mod tests {
    use super::*;

    /// Status, headers (in order) and body of a failure's answer to a plain HTTP/1.1 request.
    fn answer(failure: Failure) -> String {
        let response = failure.into_response("shop", http::Version::HTTP_11, &HeaderMap::new());
        let headers: Vec<String> = response
            .headers()
            .iter()
            .map(|(name, value)| format!("{name}: {}", value.to_str().unwrap()))
            .collect();
        let body = body_text(response.body().clone());
        format!(
            "{} | {} | {body}",
            response.status().as_u16(),
            headers.join("; ")
        )
    }

    /// A `Full` body is one frame, ready at once.
    fn body_text(body: Full<Bytes>) -> String {
        use http_body::Body as _;
        let mut body = std::pin::pin!(body);
        let waker = std::task::Waker::noop();
        let mut context = std::task::Context::from_waker(waker);
        match body.as_mut().poll_frame(&mut context) {
            std::task::Poll::Ready(Some(Ok(frame))) => {
                String::from_utf8(frame.into_data().unwrap().to_vec()).unwrap()
            }
            _ => String::new(),
        }
    }

    /// Every failure's answer, pinned: the table in this module must say exactly this.
    #[test]
    fn every_failure_answers_as_documented() {
        const JSON: &str =
            "content-type: application/json; cache-control: no-store; pragma: no-cache";
        let cases = [
            (Failure::NotFound, format!(r#"404 | {JSON} | {{"error":"not_found","error_description":"no such route"}}"#)),
            (Failure::MethodNotAllowed, format!(r#"405 | {JSON}; allow: POST | {{"error":"method_not_allowed","error_description":"this route only accepts POST"}}"#)),
            (Failure::PayloadTooLarge, format!(r#"413 | {JSON} | {{"error":"payload_too_large","error_description":"the body is larger than 16 KiB"}}"#)),
            (Failure::UnsupportedMediaType, format!(r#"415 | {JSON} | {{"error":"unsupported_media_type","error_description":"wrong Content-Type for this route"}}"#)),
            (Failure::UnreadableBody, format!(r#"400 | {JSON} | {{"error":"invalid_request","error_description":"the body could not be read"}}"#)),
            (Failure::Invalid { field: Some("email"), description: "not an email address" }, format!(r#"422 | {JSON} | {{"error":"invalid_request","error_description":"not an email address","field":"email"}}"#)),
            (Failure::Invalid { field: None, description: "not JSON" }, format!(r#"422 | {JSON} | {{"error":"invalid_request","error_description":"not JSON","field":null}}"#)),
            (Failure::UsernameTaken, format!(r#"409 | {JSON} | {{"error":"username_taken","error_description":"this username is already registered"}}"#)),
            (Failure::InvalidGrant, format!(r#"400 | {JSON} | {{"error":"invalid_grant"}}"#)),
            (Failure::UnsupportedGrantType, format!(r#"400 | {JSON} | {{"error":"unsupported_grant_type","error_description":"grant_type must be password or refresh_token"}}"#)),
            (Failure::Throttled { retry_after: 7 }, format!(r#"429 | {JSON}; retry-after: 7 | {{"error":"too_many_attempts","error_description":"too many attempts; wait before trying again"}}"#)),
            (Failure::Throttled { retry_after: 0 }, format!(r#"429 | {JSON}; retry-after: 1 | {{"error":"too_many_attempts","error_description":"too many attempts; wait before trying again"}}"#)),
            (Failure::RefreshThrottled { retry_after: 0 }, format!(r#"429 | {JSON}; retry-after: 1 | {{"error":"too_many_requests","error_description":"this session was refreshed too often; wait before trying again"}}"#)),
            (Failure::Busy, format!(r#"503 | {JSON}; retry-after: 1 | {{"error":"temporarily_unavailable","error_description":"too many logins at once; try again shortly"}}"#)),
            (Failure::Unavailable, format!(r#"503 | {JSON} | {{"error":"temporarily_unavailable","error_description":"a store is unavailable; nothing was changed"}}"#)),
            (Failure::ServerError, format!(r#"500 | {JSON} | {{"error":"server_error","error_description":"the service is misconfigured"}}"#)),
            (Failure::Token(AuthError::MissingCredentials), r#"401 | www-authenticate: Bearer realm="shop"; content-type: application/json; cache-control: no-store | {"error":"unauthorized","error_description":"a bearer token is required"}"#.to_owned()),
        ];
        for (failure, expected) in cases {
            assert_eq!(answer(failure.clone()), expected, "{failure:?}");
        }
    }
}
