//! The validation presets over HTTP: the crate's own tokens keep today's strict defaults, the
//! third-party preset accepts what identity providers issue by default (no `jti`, `typ: JWT`
//! or none), and a token without `jti` can still be logged out, at every gate.

use crate::common;

use common::*;
use jsonwebtoken::{EncodingKey, Header};
use jwt_gate::revocation::{MemoryRevocations, TokenId};
use jwt_gate::service::AuthService;
use jwt_gate::store::MemoryUserStore;
use jwt_gate::{Algorithm, Claims, JwtAuthLayer, TokenVerifier, Validation};
use serde_json::json;

const ISSUER: &str = "https://sso.example/realms/acme";
const AUDIENCE: &str = "orders-api";

/// What a provider's default access token looks like: no `jti`, the given `typ`.
fn provider_token(typ: Option<&str>, sub: &str) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.typ = typ.map(str::to_owned);
    let claims = json!({
        "iss": ISSUER,
        "aud": [AUDIENCE, "account"],
        "sub": sub,
        "iat": now(),
        "exp": now() + 300,
        "scope": "openid orders:read",
    });
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(SECRET)).unwrap()
}

fn gate(validation: Validation, revocations: &MemoryRevocations) -> JwtAuthLayer {
    JwtAuthLayer::new(
        TokenVerifier::builder(keys())
            .validation(validation)
            .revocations(revocations.clone())
            .build(),
    )
}

fn assert_invalid_token(reply: &Answer, description: &str) {
    assert_eq!(reply.status, 401, "{reply:?}");
    assert_eq!(reply.json()["error"], "invalid_token", "{reply:?}");
    assert_eq!(reply.json()["error_description"], description, "{reply:?}");
}

#[tokio::test]
async fn a_token_without_jti_is_refused_by_default_and_served_by_the_third_party_preset() {
    let revocations = MemoryRevocations::new();
    let own = serve_gated(gate(
        Validation::own_tokens().issuer(ISSUER).audience(AUDIENCE),
        &revocations,
    ))
    .await;
    let third_party = serve_gated(gate(
        Validation::third_party(ISSUER, AUDIENCE),
        &revocations,
    ))
    .await;
    let token = provider_token(Some("at+jwt"), "alice");

    assert_invalid_token(
        &get_bearer(own, "/protected", &token).await,
        "the token lacks a required claim",
    );
    let served = get_bearer(third_party, "/protected", &token).await;
    assert_eq!(
        (served.status.as_u16(), served.text.as_str()),
        (200, "alice")
    );
}

#[tokio::test]
async fn the_third_party_preset_takes_typ_jwt_at_jwt_or_none_and_own_tokens_only_at_jwt() {
    let revocations = MemoryRevocations::new();
    let own = serve_gated(gate(
        Validation {
            require_jti: false, // only typ differs between the two gates
            ..Validation::own_tokens().issuer(ISSUER).audience(AUDIENCE)
        },
        &revocations,
    ))
    .await;
    let third_party = serve_gated(gate(
        Validation::third_party(ISSUER, AUDIENCE),
        &revocations,
    ))
    .await;

    for typ in [
        Some("JWT"),
        Some("at+jwt"),
        Some("application/at+jwt"),
        None,
    ] {
        let token = provider_token(typ, "alice");
        let served = get_bearer(third_party, "/protected", &token).await;
        assert_eq!(served.status, 200, "typ {typ:?}: {served:?}");
        let own_answer = get_bearer(own, "/protected", &token).await;
        if typ.is_some_and(|typ| typ.ends_with("at+jwt")) {
            assert_eq!(own_answer.status, 200, "typ {typ:?}: {own_answer:?}");
        } else {
            assert_invalid_token(&own_answer, "the token is not an access token");
        }
    }
    // An ID token or a logout token is not an access token for either.
    for typ in ["id+jwt", "logout+jwt"] {
        let token = provider_token(Some(typ), "alice");
        assert_invalid_token(
            &get_bearer(third_party, "/protected", &token).await,
            "the token is not an access token",
        );
    }
}

#[tokio::test]
async fn the_third_party_preset_requires_its_issuer_and_audience() {
    let layer = gate(
        Validation::third_party(ISSUER, AUDIENCE),
        &MemoryRevocations::new(),
    );
    let addr = serve_gated(layer).await;
    let sign = |claims: serde_json::Value| {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap()
    };
    let base = json!({ "sub": "alice", "iat": now(), "exp": now() + 300 });
    let with = |extra: serde_json::Value| {
        let mut claims = base.clone();
        claims
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        sign(claims)
    };
    for (token, description) in [
        (
            with(json!({ "aud": AUDIENCE })),
            "the token's issuer is not accepted",
        ),
        (
            with(json!({ "iss": "https://other.example", "aud": AUDIENCE })),
            "the token's issuer is not accepted",
        ),
        (
            with(json!({ "iss": ISSUER })),
            "the token's audience is not accepted",
        ),
        (
            with(json!({ "iss": ISSUER, "aud": "account" })),
            "the token's audience is not accepted",
        ),
    ] {
        assert_invalid_token(&get_bearer(addr, "/protected", &token).await, description);
    }
    let good = with(json!({ "iss": ISSUER, "aud": AUDIENCE }));
    assert_eq!(get_bearer(addr, "/protected", &good).await.status, 200);
}

/// Logout names a token by `jti`; a token without one is named by its digest, which every
/// gate derives alike, so the logout at one is seen by another with its own verifier and cache.
#[tokio::test]
async fn a_token_without_jti_is_logged_out_at_every_gate_and_only_its_digest_is_stored() {
    let revocations = MemoryRevocations::new();
    let validation = Validation::third_party(ISSUER, AUDIENCE);
    let verifier = TokenVerifier::builder(keys())
        .validation(validation.clone())
        .revocations(revocations.clone())
        .build();
    let auth = AuthService::builder(verifier.clone(), MemoryUserStore::new()).build();
    let first = serve(app(verifier, auth)).await;
    let second = serve_gated(gate(validation, &revocations)).await;

    let token = provider_token(Some("JWT"), "alice");
    let other = provider_token(Some("JWT"), "bob");
    assert_eq!(me(first, &token).await.status, 200);
    assert_eq!(get_bearer(second, "/protected", &token).await.status, 200);

    let logout = with_bearer(first, http::Method::POST, "/auth/logout", &token).await;
    assert_eq!(logout.status, 200, "{logout:?}");

    for reply in [
        me(first, &token).await,
        get_bearer(second, "/protected", &token).await,
    ] {
        assert_invalid_token(&reply, "the token has been revoked");
    }
    assert_eq!(me(first, &other).await.status, 200, "only that token");
    // What the store holds is the digest, never the token.
    let named = |jti| TokenId {
        jti,
        sub: "someone else",
        issuer: None,
        sid: None,
        iat: now(),
        exp: now() + 300,
    };
    let derived = Claims::derive_jti(&token);
    assert_eq!(revocations.len(), 1);
    assert!(revocations.is_revoked(&named(&derived)), "{derived}");
    assert!(!revocations.is_revoked(&named(&token)));
}

/// ECDSA signatures are malleable: anyone holding a token can turn `s` into `n - s` and get
/// another valid signature. A revoked token without `jti` stays revoked under its twin.
#[tokio::test]
async fn a_revoked_token_without_jti_stays_revoked_when_its_ecdsa_signature_is_remade() {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use jwt_gate::{Key, Keys};

    // Made first: making a key picks jsonwebtoken's crypto backend, which `encode` needs.
    let keys =
        Keys::new(Key::from_public_pem(Algorithm::ES256, &pem("p256.pub.pem")).unwrap()).unwrap();
    let mut header = Header::new(Algorithm::ES256);
    header.typ = Some("JWT".to_owned());
    let claims = json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "iat": now(), "exp": now() + 300,
    });
    let signer = EncodingKey::from_ec_pem(&pem("p256.pem")).unwrap();
    let token = jsonwebtoken::encode(&header, &claims, &signer).unwrap();
    // The twin: the same header and payload, `s` replaced by `n - s` (P-256's group order).
    let (signed, signature) = token.rsplit_once('.').unwrap();
    let mut signature = URL_SAFE_NO_PAD.decode(signature).unwrap();
    const ORDER: [u8; 32] = [
        0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63,
        0x25, 0x51,
    ];
    let mut borrow = 0i16;
    for at in (0..32).rev() {
        let difference = i16::from(ORDER[at]) - i16::from(signature[32 + at]) - borrow;
        borrow = i16::from(difference < 0);
        signature[32 + at] = (difference + 256 * borrow) as u8;
    }
    let twin = format!("{signed}.{}", URL_SAFE_NO_PAD.encode(&signature));
    assert_ne!(twin, token);

    let revocations = MemoryRevocations::new();
    let gate = JwtAuthLayer::new(
        TokenVerifier::builder(keys)
            .validation(Validation::third_party(ISSUER, AUDIENCE))
            .revocations(revocations.clone())
            .build(),
    );
    let addr = serve_gated(gate).await;
    for token in [&token, &twin] {
        assert_eq!(
            get_bearer(addr, "/protected", token).await.status,
            200,
            "a valid signature"
        );
    }
    revocations.revoke_now(&Claims::derive_jti(&token), now() + 300);
    for token in [&token, &twin] {
        assert_invalid_token(
            &get_bearer(addr, "/protected", token).await,
            "the token has been revoked",
        );
    }
    // The revocation above named the token by this id: the twin has the same.
    assert_eq!(Claims::derive_jti(&twin), Claims::derive_jti(&token));
}

/// Keycloak types its ID and refresh tokens in the payload (`typ: ID`, `Refresh`), with the
/// same `typ: JWT` header as its access tokens (`typ: Bearer`), and an ID token's `aud` is
/// the client's id, which an API sharing the client accepts: only access tokens pass.
#[tokio::test]
async fn a_keycloak_id_or_refresh_token_is_not_an_access_token() {
    let revocations = MemoryRevocations::new();
    let addr = serve_gated(gate(
        Validation::third_party(ISSUER, AUDIENCE),
        &revocations,
    ))
    .await;
    let token = |kind: &str| {
        let mut header = Header::new(Algorithm::HS256);
        header.typ = Some("JWT".to_owned());
        let claims = json!({
            "iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "iat": now(), "exp": now() + 300,
            "typ": kind, "azp": AUDIENCE,
        });
        jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(SECRET)).unwrap()
    };
    assert_eq!(
        get_bearer(addr, "/protected", &token("Bearer"))
            .await
            .status,
        200
    );
    for kind in ["ID", "Refresh", "Offline", "Logout", "id"] {
        let reply = get_bearer(addr, "/protected", &token(kind)).await;
        assert_eq!(reply.status, 401, "{kind}: {reply:?}");
        assert_eq!(reply.json()["error"], "invalid_token", "{kind}");
    }
}
