//! The documentation page (feature `swagger-ui`): Swagger UI, whose files are compiled into
//! the crate, pointed at the OpenAPI document.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Response, StatusCode};
use http_body_util::Full;
use utoipa_swagger_ui::Config;

use super::public_keys::publishing_service;
use super::reply::AuthResponse;

/// A documentation page for an OpenAPI document: Swagger UI, where each operation can be read
/// and tried. `GET` and `HEAD` only (`405` otherwise).
///
/// Works offline: Swagger UI's files (`swagger-ui-vendored`) are compiled into the crate, so
/// nothing is downloaded when it is built, and the page loads only them and the document, so
/// nothing is fetched from elsewhere when it is viewed (Swagger UI's online validator badge is
/// turned off).
///
/// Give it the path it is served at (`/docs`) and the URL of the document
/// ([`OpenApiService`](super::OpenApiService)); route that path and everything below it to
/// it (axum: `nest_service`), open on the gate. The page is answered at `/docs` and `/docs/`
/// alike, and its files below (`/docs/swagger-ui.css`…). It takes whole paths as well as
/// paths with `/docs` already removed.
///
/// ```
/// use axum::Router;
/// use jwt_gate::service::{AuthService, OpenApiService, SwaggerUi};
/// use jwt_gate::store::MemoryUserStore;
/// use jwt_gate::{JwtAuthLayer, Keys, TokenVerifier};
///
/// let verifier = TokenVerifier::new(Keys::hs256(b"an example secret of 32 bytes!!!").unwrap());
/// let auth = AuthService::new(verifier.clone(), MemoryUserStore::new());
/// let docs = SwaggerUi::new("/docs", "/openapi.json");
/// let app: Router = Router::new()
///     .route_service("/openapi.json", OpenApiService::new(&auth.openapi()))
///     .nest_service("/docs", docs)
///     .nest_service("/auth", auth)
///     .layer(
///         JwtAuthLayer::new(verifier)
///             .open_prefix("/auth")
///             .open_path("/openapi.json")
///             .open_prefix("/docs"),
///     );
/// ```
#[derive(Clone)]
pub struct SwaggerUi {
    path: Arc<str>,
    config: Arc<Config<'static>>,
}

impl std::fmt::Debug for SwaggerUi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SwaggerUi")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SwaggerUi {
    /// The page at `path` (e.g. `/docs`), showing the document at `document_url` (e.g.
    /// `/openapi.json`, or a full URL).
    ///
    /// # Panics
    ///
    /// If `path` does not start with `/`: paths are configuration.
    pub fn new(path: &str, document_url: &str) -> Self {
        assert!(path.starts_with('/'), "a SwaggerUi path starts with '/'");
        // "none" turns off the badge that would send the document to swagger.io.
        let config = Config::new([document_url.to_owned()]).validator_url("none");
        Self {
            path: path.trim_end_matches('/').into(),
            config: Arc::new(config),
        }
    }

    fn respond(&self, path: &str) -> AuthResponse {
        // A whole path, or one already below `path` (as axum's `nest_service` passes it).
        let file = path
            .strip_prefix(&*self.path)
            .unwrap_or(path)
            .trim_start_matches('/');
        match utoipa_swagger_ui::serve(file, self.config.clone()) {
            Ok(Some(found)) => {
                let mut bytes = Bytes::from(found.bytes.into_owned());
                if found.content_type.starts_with("text/html") && file.is_empty() {
                    bytes = self.with_base(&bytes);
                }
                let mut response = Response::new(Full::new(bytes));
                if let Ok(content_type) = HeaderValue::from_str(&found.content_type) {
                    response.headers_mut().insert(CONTENT_TYPE, content_type);
                }
                response
            }
            Ok(None) => status(StatusCode::NOT_FOUND),
            Err(error) => {
                tracing::error!(%error, "a Swagger UI file could not be made");
                status(StatusCode::INTERNAL_SERVER_ERROR)
            }
        }
    }

    /// The page with `<base href="/docs/">`: its files are named relative to it, and the
    /// page is answered with and without the trailing slash.
    fn with_base(&self, page: &[u8]) -> Bytes {
        let page = String::from_utf8_lossy(page);
        let base = format!(
            "<head>\n    <base href=\"{}/\">",
            html_attribute(&self.path)
        );
        Bytes::from(page.replacen("<head>", &base, 1))
    }
}

/// `text` safe inside a double-quoted HTML attribute.
fn html_attribute(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
}

fn status(status: StatusCode) -> AuthResponse {
    let mut response = Response::new(Full::default());
    *response.status_mut() = status;
    response
}

publishing_service!(SwaggerUi, |docs, path| docs.respond(path));

#[cfg(test)]
mod tests {
    use std::future::Future as _;
    use std::task::{Context, Poll};

    use http::Request;
    use tower_service::Service as _;

    use super::*;
    use crate::service::reply::body_bytes;

    /// Status, content type and body of the answer to `GET path`.
    fn get(docs: &SwaggerUi, path: &str) -> (StatusCode, String, String) {
        let mut docs = docs.clone();
        let request = Request::get(path).body(()).unwrap();
        let waker = std::task::Waker::noop();
        let Poll::Ready(Ok(response)) =
            std::pin::pin!(docs.call(request)).poll(&mut Context::from_waker(waker))
        else {
            unreachable!("the answer is ready at once")
        };
        let status = response.status();
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .map(|value| value.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = String::from_utf8_lossy(&body_bytes(response.into_body())).into_owned();
        (status, content_type, body)
    }

    #[test]
    fn the_page_names_its_files_below_its_path_with_or_without_the_slash() {
        let docs = SwaggerUi::new("/docs", "/openapi.json");
        // Whole paths, and the path axum's `nest_service` passes on.
        for path in ["/docs", "/docs/", "/"] {
            let (status, content_type, page) = get(&docs, path);
            assert_eq!(status, StatusCode::OK, "{path}");
            assert!(content_type.starts_with("text/html"), "{path}");
            assert!(page.contains("<base href=\"/docs/\">"), "{path}: {page}");
        }
        let (status, content_type, _) = get(&docs, "/docs/swagger-ui.css");
        assert_eq!(
            (status, content_type.as_str()),
            (StatusCode::OK, "text/css")
        );
        let (_, _, initializer) = get(&docs, "/docs/swagger-initializer.js");
        assert!(
            initializer.contains(r#""url": "/openapi.json""#),
            "{initializer}"
        );
        // Swagger UI's validator badge would send the document's URL to swagger.io.
        assert!(
            initializer.contains(r#""validatorUrl": "none""#),
            "{initializer}"
        );
        assert_eq!(get(&docs, "/docs/nothing.js").0, StatusCode::NOT_FOUND);
    }
}
