use axum::{routing::get, Router};
use jwt_gate::{Claims, JwtAuthLayer, Keys};

async fn me(claims: Claims) -> String {
    format!("hello {}", claims.sub)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // At least 32 bytes for HS256; shorter secrets are refused.
    let keys = Keys::hs256(std::env::var("JWT_SECRET")?)?;

    let app = Router::new()
        .route("/me", get(me))
        .route("/health", get(|| async { "ok" }))
        .layer(JwtAuthLayer::from_keys(keys).open_path("/health"));

    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    axum::serve(listener, app).await?;
    Ok(())
}
