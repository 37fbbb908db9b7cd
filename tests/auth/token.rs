//! POST /auth/token with the password grant: what a login returns and how failures look.

use crate::common;

use common::*;
use http::{Method, StatusCode};
use jwt_gate::service::AuthService;
use jwt_gate::store::MemoryUserStore;
use jwt_gate::{Keys, TokenVerifier, Validation};

#[tokio::test]
async fn login_returns_a_bearer_token_the_gate_accepts() {
    let stack = stack().await;
    register(stack.addr, "Alice", PASSWORD).await;
    let reply = login(stack.addr, "alice", PASSWORD).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let json = reply.json();
    assert_eq!(json["token_type"], "bearer");
    assert_eq!(json["expires_in"], 900);
    let access = json["access_token"].as_str().unwrap();
    let refresh = json["refresh_token"].as_str().unwrap();
    assert_eq!(refresh.len(), 43, "256 bits, base64url");
    assert_eq!(peek_header(access)["typ"], "at+jwt");
    let claims = peek_claims(access);
    assert_eq!(claims["sub"], "alice");
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        900
    );
    assert_eq!(
        claims["jti"].as_str().unwrap().len(),
        22,
        "128 bits, base64url"
    );

    let me = me(stack.addr, access).await;
    assert_eq!((me.status, me.text.as_str()), (StatusCode::OK, "alice"));
}

#[tokio::test]
async fn grant_type_password_is_optional_and_other_grants_are_refused() {
    let stack = stack().await;
    register(stack.addr, "bob", PASSWORD).await;
    let explicit = post_form(
        stack.addr,
        "/auth/token",
        &[
            ("grant_type", "password"),
            ("username", "bob"),
            ("password", PASSWORD),
            ("scope", ""),
        ],
    )
    .await;
    assert_eq!(explicit.status, StatusCode::OK);
    let other = post_form(
        stack.addr,
        "/auth/token",
        &[
            ("grant_type", "client_credentials"),
            ("username", "bob"),
            ("password", PASSWORD),
        ],
    )
    .await;
    assert_eq!(other.status, StatusCode::BAD_REQUEST);
    assert_eq!(other.json()["error"], "unsupported_grant_type");
}

#[tokio::test]
async fn unknown_user_and_wrong_password_get_the_same_answer() {
    let stack = stack().await;
    register(stack.addr, "carol", PASSWORD).await;
    let wrong_password = login(stack.addr, "carol", "not the password").await;
    let unknown_user = login(stack.addr, "mallory", "not the password").await;
    let unregistrable = login(stack.addr, "no such user!", "not the password").await;
    for reply in [&wrong_password, &unknown_user, &unregistrable] {
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
        assert_eq!(reply.text, r#"{"error":"invalid_grant"}"#);
        assert_eq!(reply.header("cache-control"), Some("no-store"));
        assert_eq!(reply.headers.len(), wrong_password.headers.len());
    }
}

#[tokio::test]
async fn missing_or_duplicate_form_fields_are_422_and_json_is_415() {
    let stack = stack().await;
    let missing = post_form(stack.addr, "/auth/token", &[("username", "dave")]).await;
    assert_eq!(missing.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(missing.json()["field"], "password");
    let duplicate = post_form(
        stack.addr,
        "/auth/token",
        &[
            ("username", "dave"),
            ("password", "one"),
            ("password", "two"),
        ],
    )
    .await;
    assert_eq!(duplicate.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(duplicate.json()["field"], "password");
    let missing_refresh = post_form(
        stack.addr,
        "/auth/token",
        &[("grant_type", "refresh_token")],
    )
    .await;
    assert_eq!(missing_refresh.json()["field"], "refresh_token");
    let json = post_json(
        stack.addr,
        "/auth/token",
        r#"{"username":"dave","password":"x"}"#,
    )
    .await;
    assert_eq!(json.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

#[tokio::test]
async fn two_logins_in_one_second_are_two_sessions() {
    let stack = stack().await;
    let first = session(stack.addr, "erin").await;
    let second = session(stack.addr, "erin").await;
    let (first_access, second_access) = (
        first["access_token"].as_str().unwrap(),
        second["access_token"].as_str().unwrap(),
    );
    assert_ne!(first_access, second_access);
    assert_ne!(first["refresh_token"], second["refresh_token"]);
    assert_ne!(
        peek_claims(first_access)["jti"],
        peek_claims(second_access)["jti"]
    );

    let logout = with_bearer(stack.addr, Method::POST, "/auth/logout", first_access).await;
    assert_eq!(logout.status, StatusCode::OK);
    assert_eq!(
        me(stack.addr, first_access).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(me(stack.addr, second_access).await.status, StatusCode::OK);
}

#[tokio::test]
async fn issuer_and_audience_follow_the_verifiers_validation() {
    let validation = Validation::default()
        .issuer("https://auth.example")
        .audience("orders");
    let verifier = TokenVerifier::builder(Keys::hs256(SECRET).unwrap())
        .validation(validation)
        .build();
    let auth = AuthService::builder(verifier.clone(), MemoryUserStore::new())
        .access_token_ttl(std::time::Duration::from_secs(60))
        .build();
    let addr = serve(app(verifier, auth)).await;
    let json = session(addr, "frank").await;
    assert_eq!(json["expires_in"], 60);
    let access = json["access_token"].as_str().unwrap();
    let claims = peek_claims(access);
    assert_eq!(claims["iss"], "https://auth.example");
    assert_eq!(claims["aud"], "orders");
    assert_eq!(me(addr, access).await.status, StatusCode::OK);
}

#[tokio::test]
async fn the_key_id_is_carried_when_the_key_has_one() {
    let keys = Keys::new(jwt_gate::Key::hs256(SECRET).unwrap().with_kid("k1")).unwrap();
    let verifier = TokenVerifier::new(keys);
    let addr = serve(app(
        verifier.clone(),
        AuthService::new(verifier, MemoryUserStore::new()),
    ))
    .await;
    let json = session(addr, "grace").await;
    assert_eq!(
        peek_header(json["access_token"].as_str().unwrap())["kid"],
        "k1"
    );
}

#[tokio::test]
async fn plain_hyper_with_full_paths_and_a_custom_prefix() {
    let (verifier, _) = verifier();
    let auth = AuthService::builder(verifier, MemoryUserStore::new())
        .prefix("/api/v1/auth/")
        .build();
    let addr = serve_auth_over_hyper(auth).await;
    let body = r#"{"username":"heidi","email":"h@example.com","password":"long enough"}"#;
    assert_eq!(
        post_json(addr, "/api/v1/auth/register", body).await.status,
        StatusCode::CREATED
    );
    let reply = post_form(
        addr,
        "/api/v1/auth/token",
        &[("username", "heidi"), ("password", "long enough")],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        post_json(addr, "/auth/register", body).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn no_response_carries_a_password_a_hash_or_another_token() {
    let stack = stack().await;
    let first = session(stack.addr, "ivan").await;
    let first_access = first["access_token"].as_str().unwrap().to_owned();
    let first_refresh = first["refresh_token"].as_str().unwrap().to_owned();
    let stored_hash = {
        use jwt_gate::store::UserStore;
        stack
            .users
            .find_user("ivan")
            .await
            .unwrap()
            .unwrap()
            .password_hash
    };
    let replies = vec![
        register(stack.addr, "ivan", PASSWORD).await,
        login(stack.addr, "ivan", "wrong password").await,
        login(stack.addr, "ivan", PASSWORD).await,
        refresh(stack.addr, &first_refresh).await,
        refresh(stack.addr, &first_refresh).await,
        with_bearer(stack.addr, Method::POST, "/auth/logout", &first_access).await,
        with_bearer(stack.addr, Method::POST, "/auth/logout", &first_access).await,
        with_bearer(stack.addr, Method::POST, "/auth/logout-all", &first_access).await,
        me(stack.addr, &first_access).await,
    ];
    let salt = stored_hash.split('$').nth(4).unwrap();
    for reply in &replies {
        let everything = format!("{:?} {}", reply.headers, reply.text);
        assert!(!everything.contains(PASSWORD), "{everything}");
        assert!(!everything.contains("wrong password"), "{everything}");
        assert!(
            !everything.contains(&stored_hash) && !everything.contains(salt),
            "{everything}"
        );
        assert!(!everything.contains("argon2"), "{everything}");
        assert!(!everything.contains(&first_access), "{everything}");
        assert!(!everything.contains(&first_refresh), "{everything}");
    }
}
