//! The service's answers: small JSON bodies, never carrying request data, hashes or tokens
//! other than the ones being issued.

use bytes::Bytes;
use http::header::{
    HeaderName, HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE, PRAGMA, RETRY_AFTER,
};
use http::{HeaderMap, Response, StatusCode};
use http_body_util::Full;

use crate::error::is_grpc;
use crate::AuthError;

/// The response type of [`AuthService`](super::AuthService).
pub type AuthResponse = Response<Full<Bytes>>;

/// Declares [`Failure`] as a table, in the manner of axum-core's `define_rejection!`: each
/// failure is stated once, as its variant and its answer side by side, so a reader (or a
/// reviewer of a new failure) sees every status, `error` code, `error_description` and extra
/// header in one place. Each row is
///
/// ```text
/// Variant { bindings } => STATUS, "error_code", description [, field = expr] [, [HEADER: value, …]];
/// ```
///
/// where `description` is a `&'static str` or `None` (no `error_description`), `field` adds a
/// `"field"` member to the body, and header values are `&'static str` or `u64`. Every answer is
/// JSON and never cached (see [`json`]). The first row, a refused bearer token, is not the
/// service's to word: it is answered as the gate would, through [`AuthError::render`].
///
/// Failures are logged where they happen, not here: only the call site knows the cause (which
/// store failed, and how), and the answer must not carry it.
macro_rules! define_failures {
    (
        $(#[$gate_doc:meta])*
        $gate:ident(AuthError) => as the gate answers;
        $(
            $(#[$doc:meta])*
            $variant:ident $({ $($binding:ident: $type:ty),* $(,)? })?
                => $status:ident, $code:literal, $description:expr
                $(, field = $field:expr)?
                $(, [$($header:ident: $value:expr),* $(,)?])?;
        )*
    ) => {
        /// Why a request did not succeed, each with one fixed answer.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub(crate) enum Failure {
            $(
                $(#[$doc])*
                $variant $({ $($binding: $type),* })?,
            )*
            $(#[$gate_doc])*
            $gate(AuthError),
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
                    $(
                        Self::$variant $({ $($binding),* })? => answer(
                            StatusCode::$status,
                            $code,
                            $description.into(),
                            optional!($(serde_json::Value::from($field))?),
                            &[$($(($header, RowValue::header_value($value))),*)?],
                        ),
                    )*
                    Self::$gate(error) => {
                        let (status, headers, body) =
                            error.render(realm, is_grpc(version, request_headers), None);
                        let mut response = Response::new(Full::new(body));
                        *response.status_mut() = status;
                        *response.headers_mut() = headers;
                        response
                    }
                }
            }

            /// Every row once, its bindings at their defaults, and the gate's row once per
            /// refusal that authenticating an `Authorization` header can give (the service
            /// never asks for scopes or looks a subject up; the refusals of the other token
            /// sources are added by the document of a service given them): what the OpenAPI
            /// document renders its responses from, so that it states each answer exactly as
            /// the client receives it.
            #[cfg(feature = "openapi")]
            pub(crate) fn rows() -> Vec<Self> {
                let mut rows = vec![
                    $(Self::$variant $({ $($binding: Default::default()),* })?,)*
                ];
                rows.extend(
                    AuthError::ALL
                        .into_iter()
                        .filter(|error| {
                            !matches!(
                                error,
                                AuthError::InsufficientScope
                                    | AuthError::UnknownSubject
                                    | AuthError::ConflictingTokens
                                    | AuthError::DuplicateCookie
                                    | AuthError::MalformedCookie
                                    | AuthError::DuplicateTokenHeader
                                    | AuthError::CrossSiteRequest
                            )
                        })
                        .map(Self::$gate),
                );
                rows
            }
        }
    };
}

/// A header value a row may state: a fixed text, or a number (of seconds).
trait RowValue {
    fn header_value(self) -> HeaderValue;
}

impl RowValue for &'static str {
    fn header_value(self) -> HeaderValue {
        HeaderValue::from_static(self)
    }
}

impl RowValue for u64 {
    fn header_value(self) -> HeaderValue {
        HeaderValue::from(self)
    }
}

/// `Some(expr)` for a row that states it, `None` for one that does not.
macro_rules! optional {
    () => {
        None
    };
    ($value:expr) => {
        Some($value)
    };
}

define_failures! {
    /// The bearer token on a logout was refused, answered as the gate would.
    Token(AuthError) => as the gate answers;
    NotFound => NOT_FOUND, "not_found", "no such route";
    MethodNotAllowed => METHOD_NOT_ALLOWED, "method_not_allowed", "this route only accepts POST",
        [ALLOW: "POST"];
    PayloadTooLarge => PAYLOAD_TOO_LARGE, "payload_too_large", "the body is larger than 16 KiB";
    UnsupportedMediaType => UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type",
        "wrong Content-Type for this route";
    /// The body could not be read at all (the connection broke mid-body).
    UnreadableBody => BAD_REQUEST, "invalid_request", "the body could not be read";
    /// A field is missing or invalid; `field` is one of the route's own field names, never
    /// a name taken from the request.
    Invalid { field: Option<&'static str>, description: &'static str }
        => UNPROCESSABLE_ENTITY, "invalid_request", description, field = field;
    UsernameTaken => CONFLICT, "username_taken", "this username is already registered";
    /// The same answer for an unknown user, a wrong password and a bad refresh token, with
    /// no description to tell them apart (RFC 6749 §5.2).
    InvalidGrant => BAD_REQUEST, "invalid_grant", None;
    UnsupportedGrantType => BAD_REQUEST, "unsupported_grant_type",
        "grant_type must be password or refresh_token";
    /// A requested scope is not a scope name at all (RFC 6749 §3.3). A well-formed scope the
    /// user does not hold is no error: the token grants fewer, and says so.
    InvalidScope => BAD_REQUEST, "invalid_scope",
        "scope must be space-separated names of printable ASCII";
    /// `Retry-After` is at least a second: `0` would invite an immediate retry.
    Throttled { retry_after: u64 } => TOO_MANY_REQUESTS, "too_many_attempts",
        "too many attempts; wait before trying again", [RETRY_AFTER: retry_after.max(1)];
    /// A session was refreshed more often than its rotation limit allows.
    RefreshThrottled { retry_after: u64 } => TOO_MANY_REQUESTS, "too_many_requests",
        "this session was refreshed too often; wait before trying again",
        [RETRY_AFTER: retry_after.max(1)];
    /// Password hashing is saturated: try again shortly.
    Busy => SERVICE_UNAVAILABLE, "temporarily_unavailable",
        "too many logins at once; try again shortly", [RETRY_AFTER: "1"];
    /// A store did not answer or did not acknowledge a write.
    Unavailable => SERVICE_UNAVAILABLE, "temporarily_unavailable",
        "a store is unavailable; nothing was changed";
    /// A store failed after another had recorded part of the request (a logout's revocations,
    /// a replayed refresh token's ended session): sending the same request again finishes it.
    Unfinished => SERVICE_UNAVAILABLE, "temporarily_unavailable",
        "a store is unavailable; part of this was done: send the same request again to finish it",
        [RETRY_AFTER: "1"];
    /// The token signing key is unusable: a configuration error.
    ServerError => INTERNAL_SERVER_ERROR, "server_error", "the service is misconfigured";
}

pub(crate) fn json(status: StatusCode, body: &impl serde::Serialize) -> AuthResponse {
    // Our own bodies are plain structs of strings and numbers: they always serialize.
    let body = serde_json::to_vec(body).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    // Every answer here is about credentials: no cache may keep one (RFC 6749 §5.1).
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

/// One row's answer: `{"error", "error_description"?, "field"?}` and its extra headers.
fn answer(
    status: StatusCode,
    code: &str,
    description: Option<&str>,
    field: Option<serde_json::Value>,
    headers: &[(HeaderName, HeaderValue)],
) -> AuthResponse {
    let mut body = serde_json::Map::new();
    body.insert("error".to_owned(), code.into());
    if let Some(description) = description {
        body.insert("error_description".to_owned(), description.into());
    }
    if let Some(field) = field {
        body.insert("field".to_owned(), field);
    }
    let mut response = json(status, &serde_json::Value::Object(body));
    for (name, value) in headers {
        response.headers_mut().insert(name, value.clone());
    }
    response
}

/// The bytes of a `Full` body, which is one frame, ready at once.
#[cfg(any(test, feature = "openapi"))]
pub(crate) fn body_bytes(body: Full<Bytes>) -> Bytes {
    use http_body::Body as _;
    let mut body = std::pin::pin!(body);
    let mut context = std::task::Context::from_waker(std::task::Waker::noop());
    match body.as_mut().poll_frame(&mut context) {
        std::task::Poll::Ready(Some(Ok(frame))) => frame.into_data().unwrap_or_default(),
        _ => Bytes::new(),
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
        let body = String::from_utf8(body_bytes(response.body().clone()).to_vec()).unwrap();
        format!(
            "{} | {} | {body}",
            response.status().as_u16(),
            headers.join("; ")
        )
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
            (Failure::InvalidScope, format!(r#"400 | {JSON} | {{"error":"invalid_scope","error_description":"scope must be space-separated names of printable ASCII"}}"#)),
            (Failure::Throttled { retry_after: 7 }, format!(r#"429 | {JSON}; retry-after: 7 | {{"error":"too_many_attempts","error_description":"too many attempts; wait before trying again"}}"#)),
            (Failure::Throttled { retry_after: 0 }, format!(r#"429 | {JSON}; retry-after: 1 | {{"error":"too_many_attempts","error_description":"too many attempts; wait before trying again"}}"#)),
            (Failure::RefreshThrottled { retry_after: 0 }, format!(r#"429 | {JSON}; retry-after: 1 | {{"error":"too_many_requests","error_description":"this session was refreshed too often; wait before trying again"}}"#)),
            (Failure::Busy, format!(r#"503 | {JSON}; retry-after: 1 | {{"error":"temporarily_unavailable","error_description":"too many logins at once; try again shortly"}}"#)),
            (Failure::Unavailable, format!(r#"503 | {JSON} | {{"error":"temporarily_unavailable","error_description":"a store is unavailable; nothing was changed"}}"#)),
            (Failure::Unfinished, format!(r#"503 | {JSON}; retry-after: 1 | {{"error":"temporarily_unavailable","error_description":"a store is unavailable; part of this was done: send the same request again to finish it"}}"#)),
            (Failure::ServerError, format!(r#"500 | {JSON} | {{"error":"server_error","error_description":"the service is misconfigured"}}"#)),
            (Failure::Token(AuthError::MissingCredentials), r#"401 | www-authenticate: Bearer realm="shop"; content-type: application/json; cache-control: no-store | {"error":"unauthorized","error_description":"a bearer token is required"}"#.to_owned()),
        ];
        for (failure, expected) in cases {
            assert_eq!(answer(failure.clone()), expected, "{failure:?}");
        }
    }
}
