//! The gate in front of a tonic 0.14 gRPC server: the standard health service, which needs no
//! `protoc` (tonic-health ships its generated code).
//!
//! ```text
//! JWT_GATE_SECRET='a secret of at least 32 bytes....' cargo run --example tonic
//! TOKEN=$(JWT_GATE_SECRET='a secret of at least 32 bytes....' cargo run -q --example tonic -- token alice)
//! grpcurl -plaintext -H "authorization: Bearer $TOKEN" 127.0.0.1:50051 grpc.health.v1.Health/Check
//! ```
//!
//! `JWT_GATE_ADDR` sets the address (default `127.0.0.1:50051`), `JWT_GATE_SECRET` the HS256
//! key (its UTF-8 bytes, at least 32; a random one for the run when unset). The server accepts
//! HTTP/1.1 as well as HTTP/2 on the same port.
//!
//! A request without a valid token is answered `UNAUTHENTICATED` (`grpc-status: 16`) by the
//! gate; the health service never sees it. Behind the gate, [`WhoAmI`] reads the verified
//! claims from the request extensions, as any handler can, and names the caller in the
//! `x-authenticated-sub` response metadata.
//!
//! Not mounted yet: the auth service's HTTP routes (`/auth/...`). They go on the same port by
//! turning the tonic routes into an axum router (`Routes::into_axum_router`) and nesting the
//! auth service under `/auth`, with `/auth` opened on the gate; see `serve`.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::HeaderValue;
use jwt_gate::revocation::MemoryRevocations;
use jwt_gate::{Claims, JwtAuthLayer, Keys, TokenVerifier};
use tonic::server::NamedService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;
use tower::Service;

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

/// Serves the health service behind the gate on `listener`, HTTP/2 and HTTP/1.1. Tokens are
/// checked against `keys` and `revocations` (share the latter with whatever revokes).
pub async fn serve(
    listener: tokio::net::TcpListener,
    keys: Keys,
    revocations: MemoryRevocations,
) -> Result<(), tonic::transport::Error> {
    let verifier = TokenVerifier::builder(keys)
        .revocations(revocations)
        .build();
    // The overall status (service "") starts as SERVING; keep the reporter to change it.
    let (_reporter, health) = tonic_health::server::health_reporter();
    Server::builder()
        .accept_http1(true)
        .layer(JwtAuthLayer::new(verifier))
        .add_service(WhoAmI(health))
        .serve_with_incoming(TcpIncoming::from(listener))
        .await
}

fn keys_from_env() -> Result<Keys, String> {
    match std::env::var("JWT_GATE_SECRET") {
        Ok(secret) => Keys::hs256(secret.as_bytes()).map_err(|error| error.to_string()),
        Err(_) => {
            eprintln!("JWT_GATE_SECRET is not set: using a random key for this run");
            let mut secret = [0u8; 32];
            getrandom::getrandom(&mut secret).map_err(|error| error.to_string())?;
            Keys::hs256(secret).map_err(|error| error.to_string())
        }
    }
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
    let keys = keys_from_env()?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [command, sub] = args.as_slice() {
        if command == "token" {
            let now = jwt_gate::clock::Clock::now(&jwt_gate::clock::SystemClock);
            let token = keys
                .sign(&Claims::new(sub.as_str(), now, now + 15 * 60))
                .map_err(|error| error.to_string())?;
            println!("{token}");
            return Ok(());
        }
    }
    let addr = std::env::var("JWT_GATE_ADDR").unwrap_or_else(|_| "127.0.0.1:50051".to_owned());
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|error| format!("cannot listen on {addr}: {error}"))?;
    let local = listener.local_addr().map_err(|error| error.to_string())?;
    println!("jwt-gate tonic example listening on http://{local} (gRPC over HTTP/2 and HTTP/1.1)");
    serve(listener, keys, MemoryRevocations::new())
        .await
        .map_err(|error| error.to_string())
}
