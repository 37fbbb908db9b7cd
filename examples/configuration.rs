//! The gate's settings are plain data: keys, policy, revocation list, claims type, paths.
//! `cargo run --example configuration` prints the layer it builds.

use std::time::Duration;

use jwt_gate::revocation::MemoryRevocations;
use jwt_gate::{JwtAuthLayer, Key, Keys, TokenVerifier, Validation};

#[derive(Clone, serde::Deserialize)]
struct Roles {
    #[allow(dead_code)] // read by handlers, through Claims<Roles>
    roles: Vec<String>,
}

fn main() -> Result<(), jwt_gate::KeyError> {
    let keys = Keys::new(Key::hs256(b"an example secret of 32 bytes!!!")?.with_kid("2026-11"))?;
    let revocations = MemoryRevocations::new(); // share it with whatever revokes tokens

    let validation = Validation {
        leeway: Duration::from_secs(10),
        max_lifetime: Some(Duration::from_secs(60 * 60)),
        ..Validation::default()
    }
    .issuer("https://auth.example")
    .audience("orders-api");

    let verifier = TokenVerifier::builder(keys)
        .validation(validation)
        .revocations(revocations.clone())
        .claims::<Roles>() // your own claims, flattened beside sub/exp/iat/jti
        .realm("orders") // named in every 401's WWW-Authenticate
        .build();

    let layer = JwtAuthLayer::new(verifier)
        .open_path("/health")
        .open_prefix("/auth")
        .optional_prefix("/catalog");
    println!("{layer:?}");
    Ok(())
}
