//! The auth service's OpenAPI 3.1 document (feature `openapi`), made by utoipa from the
//! routes' annotations and the request and reply types; every failure a route can answer is
//! rendered from the failures table (`define_failures!` in `reply.rs`) by the code that
//! answers it, so the document cannot drift from what clients receive.
//!
//! A new route is one `#[utoipa::path]` function here, listed in [`AuthApi`]'s `paths`, and
//! one [`failures!`] line naming the rows of the table it can answer with.

use std::collections::BTreeMap;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{HeaderMap, StatusCode, Version};
use http_body_util::Full;
use serde::Deserialize;
use utoipa::openapi::example::ExampleBuilder;
use utoipa::openapi::header::Header;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{ContentBuilder, OpenApi as Document, RefOr};
use utoipa::{IntoResponses, Modify, OpenApi, ToSchema};

use super::public_keys::publishing_service;
use super::reply::{body_bytes, Failure};
#[allow(unused_imports)] // named by the annotations below
use super::routes::{LoggedOut, RegisterBody, Registered, TokenResponse};
use crate::extract::Sources;
use crate::AuthError;

/// The routes below the service's prefix; [`AuthService::openapi`](super::AuthService::openapi)
/// puts the prefix in front.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "jwt-gate auth service",
        description = "Register, log in, refresh and log out: the companion auth service of \
            jwt-gate. Every failure is small JSON, `{\"error\", \"error_description\"?}`, never cached."
    ),
    paths(register, token, logout, logout_all, revoke),
    modifiers(&BearerScheme),
    tags((name = "auth", description = "Accounts and tokens"), (name = "keys", description = "Public keys"))
)]
pub(super) struct AuthApi;

/// The public keys' document, wherever [`JwksService`](super::JwksService) is routed;
/// [`JwksService::openapi`](super::JwksService::openapi) puts the path in.
#[derive(OpenApi)]
#[openapi(paths(jwks))]
pub(super) struct JwksApi;

/// The name of the bearer security scheme in the document (the annotations spell it out).
const BEARER: &str = "bearer";
/// The schemes of the other token sources, named when the service is given them.
const COOKIE: &str = "cookie";
const HEADER: &str = "token_header";

/// The access tokens the service issues, sent as `Authorization: Bearer …` (RFC 6750).
struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, document: &mut Document) {
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .bearer_format("JWT")
            .description(Some("an access token from the token endpoint"))
            .build();
        document
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(BEARER, SecurityScheme::Http(scheme));
    }
}

/// Declares a type whose responses are the rows of the failures table that `pattern`
/// matches, for a route's `responses(...)`: the route states which failures it can give, the
/// table states what each one looks like.
macro_rules! failures {
    ($(#[$doc:meta])* $name:ident: $pattern:pat) => {
        $(#[$doc])*
        struct $name;

        impl IntoResponses for $name {
            fn responses() -> BTreeMap<String, RefOr<Response>> {
                failure_responses(|failure| matches!(failure, $pattern))
            }
        }
    };
}

failures!(
    /// Reading a JSON body, checking it, creating the account.
    RegisterFailures: Failure::PayloadTooLarge
        | Failure::UnsupportedMediaType
        | Failure::UnreadableBody
        | Failure::Invalid { .. }
        | Failure::UsernameTaken
        | Failure::Throttled { .. }
        | Failure::Busy
        | Failure::Unavailable
);

failures!(
    /// Reading a form, either grant, signing the tokens.
    TokenFailures: Failure::PayloadTooLarge
        | Failure::UnsupportedMediaType
        | Failure::UnreadableBody
        | Failure::Invalid { .. }
        | Failure::InvalidGrant
        | Failure::UnsupportedGrantType
        | Failure::InvalidScope
        | Failure::Throttled { .. }
        | Failure::RefreshThrottled { .. }
        | Failure::Busy
        | Failure::Unavailable
        | Failure::Unfinished
        | Failure::ServerError
);

failures!(
    /// A refused bearer token, or a store that could not record the logout.
    LogoutFailures: Failure::Token(_) | Failure::Unavailable | Failure::Unfinished
);

failures!(
    /// Reading a form, throttling guesses, recording the revocation. Never whether the token
    /// was known.
    RevokeFailures: Failure::PayloadTooLarge
        | Failure::UnsupportedMediaType
        | Failure::UnreadableBody
        | Failure::Invalid { .. }
        | Failure::Throttled { .. }
        | Failure::Unavailable
        | Failure::Unfinished
);

/// Register an account.
///
/// The username is unique after Unicode NFKC and case folding (`Alice` is `alice`) and
/// look-alike scripts; the password is hashed with argon2id. Registrations are throttled per
/// client address.
#[utoipa::path(
    post,
    path = "/register",
    tag = "auth",
    operation_id = "register",
    request_body(content = RegisterBody, content_type = "application/json"),
    responses(
        (status = 201, description = "The account was created.", body = Registered,
            links(("login" = (
                operation_id = "token",
                request_body = json!({
                    "grant_type": "password",
                    "username": "$request.body#/username",
                    "password": "$request.body#/password",
                }),
                description = "Log in as the account just registered."
            )))
        ),
        RegisterFailures
    )
)]
#[allow(dead_code)] // the annotation is what counts
fn register() {}

/// Issue tokens: log in with a password, or exchange a refresh token.
///
/// `grant_type=password` (or no `grant_type`) with `username` and `password` starts a
/// session; `grant_type=refresh_token` with `refresh_token` continues one, and the refresh
/// token presented is spent (presenting it again ends its session). An unknown user, a wrong
/// password and a bad refresh token are all the same `invalid_grant` (RFC 6749 §5.2). Other
/// form fields (`scope`, `client_id`…) are ignored; a repeated field is refused.
#[utoipa::path(
    post,
    path = "/token",
    tag = "auth",
    operation_id = "token",
    request_body(content = TokenRequest, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "A new access token and refresh token. Never cached.",
            body = TokenResponse,
            links(
                ("refresh" = (
                    operation_id = "token",
                    request_body = json!({
                        "grant_type": "refresh_token",
                        "refresh_token": "$response.body#/refresh_token",
                    }),
                    description = "Exchange the refresh token for new tokens."
                )),
                ("revoke" = (
                    operation_id = "revoke",
                    request_body = json!({ "token": "$response.body#/refresh_token" }),
                    description = "End the session the tokens belong to."
                ))
                // No link hands the access token to the logouts: a credential is the
                // security scheme's to carry, and tools that follow links take a header
                // set by one for made-up credentials.
            )
        ),
        TokenFailures
    )
)]
#[allow(dead_code)]
fn token() {}

/// Log out: revoke the presented token's session.
///
/// Every access token of the session is refused from now on (by every gate sharing the
/// revocation store) and its refresh tokens are spent. A forged, expired or revoked token is
/// refused as the gate refuses it and changes nothing.
#[utoipa::path(
    post,
    path = "/logout",
    tag = "auth",
    operation_id = "logout",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The session is revoked.", body = LoggedOut),
        LogoutFailures
    )
)]
#[allow(dead_code)]
fn logout() {}

/// Log out everywhere: revoke every session of the token's user.
///
/// Every token of the user issued until now is refused, and every session ended.
#[utoipa::path(
    post,
    path = "/logout-all",
    tag = "auth",
    operation_id = "logout_all",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Every session of the user is revoked.", body = LoggedOut),
        LogoutFailures
    )
)]
#[allow(dead_code)]
fn logout_all() {}

/// Revoke a token (RFC 7009).
///
/// A refresh token or an access token of this service ends its session, as a logout would. The
/// answer is the same `200` whether or not the token was known, valid or already revoked
/// (§2.2); requests are throttled per client address, so guessing is slow.
#[utoipa::path(
    post,
    path = "/revoke",
    tag = "auth",
    operation_id = "revoke",
    request_body(content = RevokeRequest, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Nothing of the token is valid any more, if it ever was.",
            body = RevocationReply),
        RevokeFailures
    )
)]
#[allow(dead_code)]
fn revoke() {}

/// The revocation endpoint's form (RFC 7009 §2.1).
#[derive(Deserialize, ToSchema)]
#[allow(dead_code)]
struct RevokeRequest {
    /// A refresh token or an access token.
    token: String,
    /// Ignored: a token's shape tells which kind it is. Sent twice, it is refused like any
    /// repeated field.
    #[schema(nullable = false)]
    token_type_hint: Option<String>,
}

/// Always empty: the answer never tells whether the token was known.
#[derive(ToSchema)]
#[allow(dead_code)]
struct RevocationReply {}

/// Get the public keys tokens are signed with.
///
/// A JWKS document (RFC 7517) of the public halves of the signing keys, for other services to
/// verify tokens with. An HMAC secret is never published: with one, the set is empty.
#[utoipa::path(
    get,
    path = "/",
    tag = "keys",
    operation_id = "jwks",
    responses(
        (status = 200, description = "The key set; caches may keep it for a few minutes.",
            body = JwkSet, content_type = "application/json",
            headers(("cache-control" = String, description = "`public, max-age=…`")))
    )
)]
#[allow(dead_code)]
fn jwks() {}

/// A JWK Set (RFC 7517 §5).
#[derive(ToSchema)]
#[allow(dead_code)]
struct JwkSet {
    /// One JWK per public key, with its `kid`, `alg` and `use`.
    #[schema(value_type = Vec<Object>)]
    keys: Vec<serde_json::Value>,
}

/// The token endpoint's form, by grant. The service reads it as one form with optional
/// fields so that a missing one is named in the `422`; this states which fields go together.
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum TokenRequest {
    Password(PasswordGrant),
    RefreshToken(RefreshTokenGrant),
}

/// Log in (RFC 6749 §4.3).
#[derive(Deserialize, ToSchema)]
#[allow(dead_code)]
struct PasswordGrant {
    /// Optional: a form without `grant_type` is a password grant.
    #[schema(nullable = false)]
    grant_type: Option<PasswordGrantType>,
    #[schema(example = "alice")]
    username: String,
    #[schema(example = "correct horse battery")]
    password: String,
    /// Optional: space-separated scopes to narrow the token to; only those the user holds
    /// are granted.
    #[schema(nullable = false)]
    scope: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
enum PasswordGrantType {
    Password,
}

/// Exchange a refresh token (RFC 6749 §6).
#[derive(Deserialize, ToSchema)]
#[allow(dead_code)]
struct RefreshTokenGrant {
    grant_type: RefreshTokenGrantType,
    refresh_token: String,
    /// Optional: space-separated scopes to narrow the token to; a refresh never widens
    /// its session's.
    #[schema(nullable = false)]
    scope: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
enum RefreshTokenGrantType {
    RefreshToken,
}

/// One response per status, made from the table's rows that `answers` picks: each row is
/// answered as a client would see it, and becomes one named example; the body's schema
/// allows exactly the `error` codes of those rows, and the headers are the ones they send.
fn failure_responses(answers: impl Fn(&Failure) -> bool) -> BTreeMap<String, RefOr<Response>> {
    render(
        Failure::rows()
            .into_iter()
            .filter(|failure| answers(failure)),
    )
}

/// The responses of `failures`, grouped by status.
fn render(failures: impl IntoIterator<Item = Failure>) -> BTreeMap<String, RefOr<Response>> {
    let mut by_status: BTreeMap<StatusCode, Vec<Answer>> = BTreeMap::new();
    for failure in failures {
        // The one row whose words are the call site's: shown with a case every route has.
        let failure = match failure {
            Failure::Invalid { .. } => Failure::Invalid {
                field: Some("password"),
                description: "a required field is missing",
            },
            other => other,
        };
        let name = row_name(&failure);
        let response = failure.into_response("jwt-gate", Version::HTTP_11, &HeaderMap::new());
        let body = serde_json::from_slice(&body_bytes(response.body().clone()))
            .unwrap_or(serde_json::Value::Null);
        by_status
            .entry(response.status())
            .or_default()
            .push(Answer {
                name,
                headers: response.headers().clone(),
                body,
            });
    }
    by_status
        .into_iter()
        .map(|(status, answers)| (status.as_u16().to_string(), document(&answers).into()))
        .collect()
}

/// A row's answer, rendered.
struct Answer {
    name: String,
    headers: HeaderMap,
    body: serde_json::Value,
}

/// The row's variant, and the gate's reason for its own row: `Throttled`,
/// `Token(Expired)`.
fn row_name(failure: &Failure) -> String {
    let debug = format!("{failure:?}");
    match failure {
        Failure::Token(_) => debug,
        _ => debug
            .split([' ', '{', '('])
            .next()
            .unwrap_or_default()
            .to_owned(),
    }
}

/// The response of one status: its `error` codes, its body's schema, its headers.
fn document(answers: &[Answer]) -> ResponseBuilder {
    let mut codes: Vec<&str> = answers
        .iter()
        .filter_map(|answer| answer.body["error"].as_str())
        .collect();
    codes.sort_unstable();
    codes.dedup();
    let mut body = ObjectBuilder::new()
        .schema_type(Type::Object)
        .property(
            "error",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(codes.clone())),
        )
        .required("error")
        .property(
            "error_description",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .description(Some("fixed text; never request data")),
        );
    // A row naming a field of the request names one of the route's own, or none.
    if answers
        .iter()
        .any(|answer| answer.body.get("field").is_some())
    {
        body = body.property(
            "field",
            ObjectBuilder::new()
                .schema_type(SchemaType::Array(vec![Type::String, Type::Null]))
                .description(Some("the request field at fault, when there is one")),
        );
    }
    let examples = answers.iter().map(|answer| {
        (
            answer.name.clone(),
            ExampleBuilder::new().value(Some(answer.body.clone())),
        )
    });
    let mut response = ResponseBuilder::new()
        .description(format!("Refused: {}.", codes.join(", ")))
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(body))
                .examples_from_iter(examples)
                .build(),
        );
    let mut names: Vec<&http::HeaderName> = answers
        .iter()
        .flat_map(|answer| answer.headers.keys())
        .filter(|name| *name != CONTENT_TYPE)
        .collect();
    names.sort_unstable_by_key(|name| name.as_str());
    names.dedup();
    for name in names {
        // A header whose every value is a number is documented as one (`Retry-After`).
        let numeric = answers
            .iter()
            .filter_map(|answer| answer.headers.get(name))
            .all(|value| value.to_str().is_ok_and(|text| text.parse::<u64>().is_ok()));
        let schema =
            ObjectBuilder::new().schema_type(if numeric { Type::Integer } else { Type::String });
        response = response.header(name.as_str(), Header::new(schema));
    }
    response
}

/// The auth routes' document with every path below `prefix`.
pub(super) fn auth_document(prefix: &str, sources: &Sources) -> Document {
    let mut document = below(AuthApi::openapi(), prefix);
    let sources_read = usize::from(sources.reads_authorization())
        + usize::from(sources.cookie_name().is_some())
        + usize::from(sources.header_name().is_some());
    if sources_read == 1 && sources.reads_authorization() {
        // The default, which the annotations describe.
        return document;
    }
    // Logout reads the token where the gate does: the document says where, and what those
    // sources can add to its failures.
    let mut requirements = Vec::new();
    let components = document.components.get_or_insert_with(Default::default);
    if sources.reads_authorization() {
        requirements.push(SecurityRequirement::new(BEARER, Vec::<String>::new()));
    } else {
        components.security_schemes.remove(BEARER);
    }
    let mut extra = Vec::new();
    if sources_read > 1 {
        extra.push(AuthError::ConflictingTokens);
    }
    if let Some(name) = sources.cookie_name() {
        let scheme = ApiKey::Cookie(ApiKeyValue::with_description(
            name,
            "the access token as a cookie; an unsafe request carrying only the cookie must \
             come from the site's own origin or a trusted one",
        ));
        components.add_security_scheme(COOKIE, SecurityScheme::ApiKey(scheme));
        requirements.push(SecurityRequirement::new(COOKIE, Vec::<String>::new()));
        extra.extend([
            AuthError::DuplicateCookie,
            AuthError::MalformedCookie,
            AuthError::CrossSiteRequest,
        ]);
    }
    if let Some(name) = sources.header_name() {
        let scheme = ApiKey::Header(ApiKeyValue::with_description(
            name,
            "the bare access token, without `Bearer `",
        ));
        components.add_security_scheme(HEADER, SecurityScheme::ApiKey(scheme));
        requirements.push(SecurityRequirement::new(HEADER, Vec::<String>::new()));
        extra.push(AuthError::DuplicateTokenHeader);
    }
    // What only `Authorization` (or a header, which may hold spaces) can give.
    let header_read = sources.reads_authorization() || sources.header_name().is_some();
    let possible = |error: &AuthError| match error {
        AuthError::MultipleAuthorizationHeaders => sources.reads_authorization(),
        AuthError::EmptyToken | AuthError::MultipleTokens => header_read,
        _ => true,
    };
    let failures: Vec<Failure> = Failure::rows()
        .into_iter()
        .filter(|failure| match failure {
            Failure::Token(error) => possible(error),
            Failure::Unavailable | Failure::Unfinished => true,
            _ => false,
        })
        .chain(extra.into_iter().map(Failure::Token))
        .collect();
    for operation in ["/logout", "/logout-all"] {
        let path = format!("{prefix}{operation}");
        let Some(operation) = document
            .paths
            .paths
            .get_mut(&path)
            .and_then(|item| item.post.as_mut())
        else {
            continue;
        };
        operation.security = Some(requirements.clone());
        let mut responses = render(failures.clone());
        if let Some(success) = operation.responses.responses.remove("200") {
            responses.insert("200".to_owned(), success);
        }
        operation.responses.responses = responses;
    }
    document
}

/// The public keys' document with its one path at `path`.
pub(super) fn jwks_document(path: &str) -> Document {
    below(JwksApi::openapi(), path)
}

fn below(mut document: Document, prefix: &str) -> Document {
    document.paths.paths = std::mem::take(&mut document.paths.paths)
        .into_iter()
        .map(|(path, item)| match path.as_str() {
            "/" if !prefix.is_empty() => (prefix.to_owned(), item),
            _ => (format!("{prefix}{path}"), item),
        })
        .collect();
    document
}

/// Serves an OpenAPI document (from [`AuthService::openapi`](super::AuthService::openapi),
/// merged with your own if you like) as JSON: `GET` and `HEAD` answer `200`
/// `application/json`; any other method `405` with `Allow: GET, HEAD`. It answers whatever
/// path it is given: route the path you choose to it, open on the gate.
///
/// ```
/// use axum::Router;
/// use jwt_gate::service::{AuthService, OpenApiService};
/// use jwt_gate::store::MemoryUserStore;
/// use jwt_gate::{JwtAuthLayer, Keys, TokenVerifier};
///
/// let verifier = TokenVerifier::new(Keys::hs256(b"an example secret of 32 bytes!!!").unwrap());
/// let auth = AuthService::new(verifier.clone(), MemoryUserStore::new());
/// let app: Router = Router::new()
///     .route_service("/openapi.json", OpenApiService::new(&auth.openapi()))
///     .nest_service("/auth", auth)
///     .layer(JwtAuthLayer::new(verifier).open_prefix("/auth").open_path("/openapi.json"));
/// ```
#[derive(Debug, Clone)]
pub struct OpenApiService {
    document: Bytes,
}

impl OpenApiService {
    /// Serves `document`, written out once, now.
    pub fn new(document: &Document) -> Self {
        // A document is maps with string keys and plain values: JSON can always hold it.
        let document = serde_json::to_vec(document).unwrap_or_default();
        Self {
            document: Bytes::from(document),
        }
    }
}

publishing_service!(OpenApiService, |service, _path| {
    let mut response = http::Response::new(Full::new(service.document.clone()));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
});

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn document() -> serde_json::Value {
        serde_json::to_value(auth_document("/auth", &Sources::default())).unwrap()
    }

    #[test]
    fn each_failure_a_route_names_is_documented_as_it_is_answered() {
        let document = document();
        assert_eq!(document["openapi"], "3.1.0");
        let register = &document["paths"]["/auth/register"]["post"]["responses"];
        let taken = &register["409"]["content"]["application/json"];
        assert_eq!(
            taken["schema"]["properties"]["error"]["enum"],
            json!(["username_taken"])
        );
        assert_eq!(
            taken["examples"]["UsernameTaken"]["value"],
            json!({"error": "username_taken", "error_description": "this username is already registered"})
        );
        let token = &document["paths"]["/auth/token"]["post"]["responses"];
        assert_eq!(
            token["400"]["content"]["application/json"]["schema"]["properties"]["error"]["enum"],
            json!([
                "invalid_grant",
                "invalid_request",
                "invalid_scope",
                "unsupported_grant_type"
            ])
        );
        assert_eq!(
            token["429"]["headers"]["retry-after"]["schema"]["type"],
            "integer"
        );
        assert!(
            token["200"]["content"]["application/json"]["schema"]["$ref"]
                .as_str()
                .unwrap()
                .ends_with("/TokenResponse")
        );
    }

    #[test]
    fn logouts_need_the_bearer_scheme_and_answer_as_the_gate() {
        let document = document();
        assert_eq!(
            document["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
        for path in ["/auth/logout", "/auth/logout-all"] {
            let logout = &document["paths"][path]["post"];
            assert_eq!(logout["security"], json!([{"bearer": []}]), "{path}");
            let responses = logout["responses"].as_object().unwrap();
            let statuses: Vec<&str> = responses.keys().map(String::as_str).collect();
            // Authentication alone never asks for a scope: no 403.
            assert_eq!(statuses, ["200", "400", "401", "503"], "{path}");
            assert!(responses["401"]["headers"]["www-authenticate"].is_object());
        }
        // Registration and login need no token.
        assert!(document["paths"]["/auth/token"]["post"]["security"].is_null());
    }

    #[test]
    fn logouts_state_the_token_sources_they_are_given() {
        let sources = Sources::compile(&crate::TokenSources {
            authorization: false,
            cookie: Some("__Host-access".to_owned()),
            ..crate::TokenSources::default()
        })
        .unwrap();
        let document = serde_json::to_value(auth_document("/auth", &sources)).unwrap();
        let schemes = &document["components"]["securitySchemes"];
        assert_eq!(
            schemes["cookie"],
            json!({
                "type": "apiKey",
                "in": "cookie",
                "name": "__Host-access",
                "description": schemes["cookie"]["description"],
            })
        );
        // `authorization = false`: the bearer scheme is not read, so not stated.
        assert!(schemes["bearer"].is_null());
        for path in ["/auth/logout", "/auth/logout-all"] {
            let logout = &document["paths"][path]["post"];
            assert_eq!(logout["security"], json!([{"cookie": []}]), "{path}");
            let responses = logout["responses"].as_object().unwrap();
            let statuses: Vec<&str> = responses.keys().map(String::as_str).collect();
            assert_eq!(statuses, ["200", "400", "401", "403", "503"], "{path}");
            let forbidden = responses["403"].to_string();
            assert!(forbidden.contains("cross_site_request"), "{forbidden}");
            assert!(responses["400"].to_string().contains("MalformedCookie"));
            // One source, a cookie: two tokens cannot disagree, and what only a header can
            // hold is not said.
            for header_only in [
                "ConflictingTokens",
                "MultipleAuthorizationHeaders",
                "EmptyToken",
            ] {
                assert!(
                    !responses["400"].to_string().contains(header_only),
                    "{header_only}"
                );
            }
        }
        // Nothing else changes.
        assert_eq!(
            document["paths"]["/auth/token"],
            self::document()["paths"]["/auth/token"]
        );
    }
}
