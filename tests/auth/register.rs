//! POST /auth/register: who may register, and how bad requests are answered.

use crate::common;

use common::*;
use http::{Method, StatusCode};

#[tokio::test]
async fn registration_answers_201_with_username_and_email_only() {
    let stack = stack().await;
    let reply = register(stack.addr, "Alice", PASSWORD).await;
    assert_eq!(reply.status, StatusCode::CREATED);
    assert_eq!(
        reply.json(),
        serde_json::json!({"username": "Alice", "email": "alice@example.com"})
    );
    assert!(!reply.text.contains(PASSWORD) && !reply.text.contains("argon2"));
    assert_eq!(reply.header("cache-control"), Some("no-store"));
}

#[tokio::test]
async fn usernames_equal_after_nfkc_and_case_folding_are_taken() {
    let stack = stack().await;
    assert_eq!(
        register(stack.addr, "alice", PASSWORD).await.status,
        StatusCode::CREATED
    );
    for variant in ["Alice", "ALICE", "ａｌｉｃｅ"] {
        let reply = register(stack.addr, variant, PASSWORD).await;
        assert_eq!(reply.status, StatusCode::CONFLICT, "{variant}");
        assert_eq!(reply.json()["error"], "username_taken");
    }
    // And any of them logs in to the one account.
    assert_eq!(
        login(stack.addr, "ＡＬＩＣＥ", PASSWORD).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn fifty_concurrent_registrations_of_one_name_give_one_201() {
    let stack = stack_with(unthrottled_registrations).await;
    let attempts = (0..50).map(|i| {
        let addr = stack.addr;
        // Different spellings of one name, racing.
        let name = if i % 2 == 0 { "Racer" } else { "racer" };
        tokio::spawn(async move { register(addr, name, PASSWORD).await.status })
    });
    let mut created = 0;
    let mut conflicts = 0;
    for attempt in attempts {
        match attempt.await.unwrap() {
            StatusCode::CREATED => created += 1,
            StatusCode::CONFLICT => conflicts += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!((created, conflicts), (1, 49));
    assert_eq!(stack.users.user_count(), 1);
}

async fn invalid_field(body: &str) -> serde_json::Value {
    let stack = stack().await;
    let reply = post_json(stack.addr, "/auth/register", body).await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{body}: {}",
        reply.text
    );
    assert_eq!(stack.users.user_count(), 0, "nothing is stored");
    reply.json()
}

#[tokio::test]
async fn invalid_fields_are_422_naming_the_field() {
    let cases = [
        (
            r#"{"username":"a b","email":"a@example.com","password":"long enough"}"#,
            "username",
        ),
        (
            r#"{"username":"","email":"a@example.com","password":"long enough"}"#,
            "username",
        ),
        (
            r#"{"username":"ann","email":"not-an-email","password":"long enough"}"#,
            "email",
        ),
        (
            r#"{"username":"ann","email":"a@example.com","password":"short"}"#,
            "password",
        ),
        (r#"{"username":"ann","email":"a@example.com"}"#, "password"),
        (
            r#"{"username":"ann","email":42,"password":"long enough"}"#,
            "email",
        ),
    ];
    for (body, field) in cases {
        assert_eq!(invalid_field(body).await["field"], field, "{body}");
    }
}

#[tokio::test]
async fn passwords_are_counted_in_characters_and_capped_at_1024() {
    let stack = stack().await;
    // Eight characters, sixteen bytes: long enough.
    assert_eq!(
        register(stack.addr, "eight", "éééééééé").await.status,
        StatusCode::CREATED
    );
    assert_eq!(
        login(stack.addr, "eight", "éééééééé").await.status,
        StatusCode::OK
    );
    let seven = register(stack.addr, "seven", "ééééééé").await;
    assert_eq!(seven.json()["field"], "password");
    let longest = "x".repeat(1024);
    assert_eq!(
        register(stack.addr, "longest", &longest).await.status,
        StatusCode::CREATED
    );
    // Not truncated: one character less is a different password.
    assert_eq!(
        login(stack.addr, "longest", &longest[..1023]).await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        login(stack.addr, "longest", &longest).await.status,
        StatusCode::OK
    );
    let too_long = register(stack.addr, "toolong", &"x".repeat(1025)).await;
    assert_eq!(too_long.json()["field"], "password");
}

#[tokio::test]
async fn unknown_fields_are_refused_without_echoing_them() {
    let json = invalid_field(
        r#"{"username":"ann","email":"a@example.com","password":"long enough","is_admin<script>":true}"#,
    )
    .await;
    assert_eq!(json["field"], serde_json::Value::Null);
    assert!(!json.to_string().contains("is_admin"));
}

#[tokio::test]
async fn duplicate_fields_are_refused() {
    // Which password would we have stored? Neither: a body that says two things is refused.
    let json = invalid_field(
        r#"{"username":"ann","email":"a@example.com","password":"long enough","password":"other one!"}"#,
    )
    .await;
    assert_eq!(json["field"], "password");
}

#[tokio::test]
async fn malformed_json_is_422() {
    let json = invalid_field(r#"{"username":"ann","#).await;
    assert_eq!(json["error"], "invalid_request");
}

#[tokio::test]
async fn wrong_content_type_is_415() {
    let stack = stack().await;
    let body = r#"{"username":"ann","email":"a@example.com","password":"long enough"}"#;
    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/jsonx",
    ] {
        let reply = call(
            stack.addr,
            Method::POST,
            "/auth/register",
            &[("content-type", content_type)],
            body,
        )
        .await;
        assert_eq!(
            reply.status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{content_type}"
        );
    }
    let missing = call(stack.addr, Method::POST, "/auth/register", &[], body).await;
    assert_eq!(missing.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let with_charset = call(
        stack.addr,
        Method::POST,
        "/auth/register",
        &[("content-type", "application/json; charset=utf-8")],
        body,
    )
    .await;
    assert_eq!(with_charset.status, StatusCode::CREATED);
}

#[tokio::test]
async fn bodies_over_16_kib_are_413_whatever_content_length_says() {
    let stack = stack().await;
    let padding = "x".repeat(17 * 1024);
    let big = format!(
        r#"{{"username":"ann","email":"a@example.com","password":"long enough","pad":"{padding}"}}"#
    );
    assert_eq!(
        post_json(stack.addr, "/auth/register", &big).await.status,
        StatusCode::PAYLOAD_TOO_LARGE
    );

    // Declared too large: refused before reading.
    let declared = b"POST /auth/register HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1000000\r\n\r\n{}";
    assert_eq!(raw_status(stack.addr, declared).await, 413);

    // No Content-Length at all (chunked): counted while reading.
    let mut chunked = b"POST /auth/register HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..20 {
        chunked.extend_from_slice(format!("{:x}\r\n", 1024).as_bytes());
        chunked.extend_from_slice(&[b' '; 1024]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    assert_eq!(raw_status(stack.addr, &chunked).await, 413);
    assert_eq!(stack.users.user_count(), 0);
}

#[tokio::test]
async fn wrong_methods_are_405_with_allow_and_unknown_paths_404() {
    let stack = stack().await;
    for path in [
        "/auth/register",
        "/auth/token",
        "/auth/logout",
        "/auth/logout-all",
    ] {
        for method in [Method::GET, Method::PUT, Method::DELETE] {
            let reply = call(stack.addr, method.clone(), path, &[], "").await;
            assert_eq!(
                reply.status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path}"
            );
            assert_eq!(reply.header("allow"), Some("POST"));
        }
    }
    for path in ["/auth/nope", "/auth/token/", "/auth/Register", "/auth"] {
        let reply = call(stack.addr, Method::POST, path, &[], "").await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(reply.json()["error"], "not_found");
    }
}

#[tokio::test]
async fn fifty_look_alike_spellings_of_one_name_give_one_account() {
    let stack = stack().await;
    common::lookalike::fifty_lookalikes_make_one_account(stack.addr).await;
    assert_eq!(stack.users.user_count(), 1);
}

#[tokio::test]
async fn look_alike_dot_and_reserved_names_are_refused() {
    let stack = stack().await;
    assert_eq!(
        register(stack.addr, "alice", PASSWORD).await.status,
        StatusCode::CREATED
    );
    for (name, why) in [
        // Cyrillic а, then Greek α, with Latin "lice": one name to a reader.
        ("\u{430}lice", "must not mix letters from different scripts"),
        ("\u{3b1}lice", "must not mix letters from different scripts"),
        (".", "must start with a letter or digit"),
        ("..", "must start with a letter or digit"),
        (".alice", "must start with a letter or digit"),
        ("admin", "is reserved"),
        ("Root", "is reserved"),
        ("ＳＹＳＴＥＭ", "is reserved"),
        // A small L among capitals reads as ADMIN.
        ("ADMlN", "is reserved"),
    ] {
        let reply = register(stack.addr, name, PASSWORD).await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{name:?}: {}",
            reply.text
        );
        assert_eq!(reply.json()["field"], "username", "{name:?}");
        assert!(reply.text.contains(why), "{name:?}: {}", reply.text);
    }
    // Each of one script, but the same name to a reader: the second is taken.
    assert_eq!(
        register(stack.addr, "scope", PASSWORD).await.status,
        StatusCode::CREATED
    );
    for name in ["\u{455}\u{441}\u{43e}\u{440}\u{435}", "sc0pe", "SC0PE"] {
        let reply = register(stack.addr, name, PASSWORD).await;
        assert_eq!(
            reply.status,
            StatusCode::CONFLICT,
            "{name:?}: {}",
            reply.text
        );
    }
    assert_eq!(stack.users.user_count(), 2);
    // A name that merely resembles is not refused.
    assert_eq!(
        register(stack.addr, "scape", PASSWORD).await.status,
        StatusCode::CREATED
    );
}
