//! The gate in front of a tonic 0.14 gRPC server, with the auth service's HTTP routes on the
//! same port: a client logs in over HTTP, then calls gRPC with the token in its `authorization`
//! metadata. The gRPC service is the standard health service, which needs no `protoc`
//! (tonic-health ships its generated code).
//!
//! ```text
//! cargo run --example tonic
//! curl -s 127.0.0.1:50051/auth/register -H 'content-type: application/json' \
//!   -d '{"username":"alice","email":"alice@example.com","password":"correct horse battery staple"}'
//! TOKEN=$(curl -s 127.0.0.1:50051/auth/token -d username=alice \
//!   -d 'password=correct horse battery staple' | jq -r .access_token)
//! grpcurl -plaintext -H "authorization: Bearer $TOKEN" 127.0.0.1:50051 grpc.health.v1.Health/Check
//! curl -s -X POST 127.0.0.1:50051/auth/logout -H "authorization: Bearer $TOKEN"
//! ```
//!
//! | variable | default | meaning |
//! | --- | --- | --- |
//! | `JWT_GATE_ADDR` | `127.0.0.1:50051` | where to listen (HTTP/2 and HTTP/1.1) |
//! | `JWT_GATE_DB` | `./jwt-gate.db` | the SQLite file users live in |
//! | `JWT_GATE_SECRET` | generated | the HS256 key: the variable's UTF-8 bytes as they are, at least 32 |
//!
//! As with the demo server, without `JWT_GATE_SECRET` a random secret is generated on first
//! start and kept beside the database in `<db>.secret` (mode 0600). `cargo run --example
//! tonic -- token alice` prints a token signed with that secret, for trying gRPC alone.
//!
//! The auth routes (`POST /auth/register`, `/auth/token`, `/auth/logout`, `/auth/logout-all`)
//! are open to the gate and check their own credentials; every other request needs a valid
//! token. A gRPC request without one is answered `UNAUTHENTICATED` (`grpc-status: 16`) by the
//! gate, and the health service never sees it; a token revoked by `/auth/logout` is refused
//! the same way. Behind the gate, [`WhoAmI`] reads the verified claims from the request
//! extensions, as any handler can, and names the caller in the `x-authenticated-sub` response
//! metadata.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use std::path::PathBuf;

use http::HeaderValue;
use jwt_gate::service::AuthService;
use jwt_gate::store::{SqliteUserStore, UserStore};
use jwt_gate::ClientAddr;
use jwt_gate::{Claims, JwtAuthLayer, Keys, TokenVerifier};
use tonic::server::NamedService;
use tonic::service::Routes;
use tonic::transport::server::{TcpConnectInfo, TcpIncoming};
use tonic::transport::Server;
use tower::Service;

#[path = "support/secret.rs"]
mod secret;
#[path = "support/token.rs"]
mod token;

/// Where the auth service's routes live.
const AUTH_PREFIX: &str = "/auth";

/// Wraps a gRPC service and names the verified caller in the response metadata.
#[derive(Debug, Clone)]
pub struct WhoAmI<S>(pub S);

impl<S: NamedService> NamedService for WhoAmI<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for WhoAmI<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = http::Response<ResBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        // The gate refused every request without valid claims, so they are always here.
        let caller = request
            .extensions()
            .get::<Claims>()
            .and_then(|claims| HeaderValue::from_str(&claims.sub).ok());
        let response = self.0.call(request);
        Box::pin(async move {
            let mut response = response.await?;
            if let Some(caller) = caller {
                response.headers_mut().insert("x-authenticated-sub", caller);
            }
            Ok(response)
        })
    }
}

/// Serves, on `listener`, over HTTP/2 and HTTP/1.1: the health service behind the gate, and
/// the auth service for `users` at `/auth`. Both use `verifier`, so the tokens the auth
/// service issues and revokes are the ones the gate accepts and refuses.
pub async fn serve(
    listener: tokio::net::TcpListener,
    verifier: TokenVerifier,
    users: impl UserStore,
) -> Result<(), tonic::transport::Error> {
    // The overall status (service "") starts as SERVING; keep the reporter to change it.
    let (_reporter, health) = tonic_health::server::health_reporter();
    // The auth service throttles failed logins by client address, which tonic reports as
    // `TcpConnectInfo`.
    let auth = tower::ServiceBuilder::new()
        .map_request(|mut request: http::Request<axum::body::Body>| {
            let peer = request
                .extensions()
                .get::<TcpConnectInfo>()
                .and_then(TcpConnectInfo::remote_addr);
            if let Some(peer) = peer {
                request.extensions_mut().insert(ClientAddr(peer));
            }
            request
        })
        .service(
            AuthService::builder(verifier.clone(), users)
                .prefix(AUTH_PREFIX)
                .build(),
        );
    let routes = Routes::new(WhoAmI(health))
        .into_axum_router()
        .nest_service(AUTH_PREFIX, auth);
    Server::builder()
        .accept_http1(true)
        .layer(JwtAuthLayer::new(verifier).open_prefix(AUTH_PREFIX))
        .add_routes(Routes::from(routes))
        .serve_with_incoming(TcpIncoming::from(listener))
        .await
}

#[allow(dead_code)] // the tests use the functions above, not main
#[tokio::main]
async fn main() {
    if let Err(error) = run().await {
        eprintln!("tonic example: {error}");
        std::process::exit(2);
    }
}

#[allow(dead_code)]
async fn run() -> Result<(), String> {
    let db =
        PathBuf::from(std::env::var_os("JWT_GATE_DB").unwrap_or_else(|| "./jwt-gate.db".into()));
    let keys = Keys::hs256(secret::secret(&db)?).map_err(|error| error.to_string())?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(printed) = token::print_if_asked(&keys, &args) {
        return printed;
    }
    let addr = std::env::var("JWT_GATE_ADDR").unwrap_or_else(|_| "127.0.0.1:50051".to_owned());
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|error| format!("cannot listen on {addr}: {error}"))?;
    let local = listener.local_addr().map_err(|error| error.to_string())?;
    let users = SqliteUserStore::open(&db)
        .map_err(|error| format!("cannot open {}: {error}", db.display()))?;
    println!(
        "jwt-gate tonic example listening on http://{local} (gRPC over HTTP/2 and HTTP/1.1, auth routes at {AUTH_PREFIX})"
    );
    serve(listener, TokenVerifier::new(keys), users)
        .await
        .map_err(|error| error.to_string())
}
