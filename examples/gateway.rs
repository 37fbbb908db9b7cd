//! The library behind `jwt-gate proxy`: JWT authentication in front of an HTTP service that
//! has none, with the auth service mounted at `/auth`.
//!
//!     export JWT_GATE_SECRET='a secret of at least 32 bytes....'
//!     cargo run --example gateway -- http://127.0.0.1:8000   # listens on 127.0.0.1:8080
//!     TOKEN=$(cargo run -q --example gateway -- token alice)
//!     curl -H "Authorization: Bearer $TOKEN" 127.0.0.1:8080/anything   # x-auth-sub: alice

use jwt_gate::gateway::{self, ClaimMap, Gateway, GatewayBuilder};
use jwt_gate::service::AuthService;
use jwt_gate::store::MemoryUserStore;
use jwt_gate::{JwtAuthLayer, Keys, TokenVerifier};

#[path = "support/token.rs"]
mod token;

/// The gate, and the proxy to `upstream` that serves `/auth` itself; apart from `main` so
/// that a test can run it.
pub fn gateway(upstream: &str, keys: Keys) -> (JwtAuthLayer<ClaimMap>, GatewayBuilder) {
    // One revocation list for both: what `/auth/logout` revokes, the gate refuses.
    let auth = TokenVerifier::new(keys.clone());
    let verifier = TokenVerifier::builder(keys)
        .claims::<ClaimMap>()
        .revocations(auth.revocations().clone())
        .build();
    let layer = JwtAuthLayer::new(verifier)
        .open_path("/health")
        .open_prefix("/auth");
    let users = MemoryUserStore::new(); // forgotten on exit: `jwt-gate proxy` keeps them
    let proxy = Gateway::builder(upstream).forward_claim("roles").mount(
        "/auth",
        AuthService::builder(auth, users).prefix("/auth").build(),
    );
    (layer, proxy)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let keys = Keys::hs256(std::env::var("JWT_GATE_SECRET")?.as_bytes())?;
    if let Some(printed) = token::print_if_asked(&keys, &args) {
        return Ok(printed?);
    }
    let upstream = args
        .first()
        .ok_or("usage: gateway UPSTREAM_URL | token SUB")?;
    let (layer, proxy) = gateway(upstream, keys);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
    gateway::serve(listener, layer, proxy.build()?).await?;
    Ok(())
}
