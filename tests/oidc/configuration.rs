//! Bad configuration is an error where the gate is built, saying what to change, never a
//! panic at the first request.

use std::time::Duration;

use jwt_gate::revocation::MemoryRevocations;
use jwt_gate::{BuildError, ClaimPath, JwksError, RemoteJwks, TokenVerifier, Validation};

use crate::common;
use crate::provider::Provider;

#[tokio::test]
async fn a_discovery_document_naming_another_issuer_is_refused_at_start() {
    let provider = Provider::start("ES256", &["k1"]);
    // The same server under another name: its document says `http://127.0.0.1:…`, so its
    // keys must not be trusted for tokens claiming `http://localhost:…`.
    let port = provider.addr.port();
    for asked in [
        format!("http://localhost:{port}"),
        format!("{}/", provider.issuer),
    ] {
        let error = RemoteJwks::discover(&asked).start().await.unwrap_err();
        assert_eq!(
            error,
            JwksError::IssuerMismatch {
                expected: asked.clone(),
                found: provider.issuer.clone(),
            }
        );
        let message = error.to_string();
        assert!(
            message.contains(&asked) && message.contains(&provider.issuer),
            "{message}"
        );
    }
}

#[tokio::test]
async fn a_plain_http_issuer_off_this_machine_is_refused_at_start() {
    // Nothing listens there: the refusal comes before any request is sent.
    let issuer = "http://sso.corp.invalid/realms/acme";
    let error = RemoteJwks::discover(issuer).start().await.unwrap_err();
    assert_eq!(error, JwksError::PlainHttp(issuer.into()));
    assert!(error.to_string().contains("allow_plain_http"), "{error}");
}

#[tokio::test]
async fn contradicting_jwks_settings_are_refused_at_start_naming_the_setting() {
    let provider = Provider::start("ES256", &["k1"]);
    let error = RemoteJwks::discover(&provider.issuer)
        .max_age_bounds(Duration::from_secs(600), Duration::from_secs(60))
        .start()
        .await
        .unwrap_err();
    assert!(matches!(error, JwksError::Config(_)), "{error:?}");
    assert_eq!(
        error.to_string(),
        "RemoteJwksBuilder::max_age_bounds: min 600s is over max 60s"
    );
}

#[test]
fn a_role_path_that_cannot_match_is_refused_where_it_is_written() {
    for path in ["realm_access..roles", "scope", "aud.roles", ""] {
        let error = ClaimPath::new(path).unwrap_err();
        assert!(error.to_string().contains(&format!("{path:?}")), "{error}");
    }
}

#[test]
fn inconsistent_verifier_settings_are_errors_from_try_build_naming_the_setting() {
    let own = || common::keys();
    let cases = [
        (
            TokenVerifier::builder(own()).issuer_keys("https://login.test", own()),
            BuildError::NoOwnIssuer,
            "Validation::issuer",
        ),
        (
            TokenVerifier::builder(own())
                .validation(Validation::default().issuer("https://api.test"))
                .issuer_keys("", own()),
            BuildError::EmptyIssuer,
            "issuer_keys",
        ),
        (
            TokenVerifier::builder(own())
                .validation(Validation::default().issuer("https://api.test"))
                .issuer_keys("https://login.test", own())
                .issuer_keys("https://login.test", own()),
            BuildError::DuplicateIssuer("https://login.test".into()),
            "\"https://login.test\" was added twice",
        ),
        (
            TokenVerifier::builder(own())
                .validation(Validation::default().issuer("https://api.test"))
                .issuer_keys("https://login.test", own()),
            BuildError::NoAudience("https://login.test".into()),
            "Validation::audience",
        ),
        (
            TokenVerifier::builder(own())
                .validation(Validation {
                    leeway: Duration::from_secs(61),
                    ..Validation::default()
                })
                .revocations(MemoryRevocations::new().with_grace(Duration::from_secs(60))),
            BuildError::LeewayOverGrace {
                leeway: Duration::from_secs(61),
                grace: Duration::from_secs(60),
            },
            "Validation::leeway",
        ),
    ];
    for (builder, expected, named) in cases {
        let error = builder.try_build().unwrap_err();
        assert_eq!(error, expected);
        assert!(error.to_string().contains(named), "{error}");
    }
    // And a consistent one builds.
    assert!(TokenVerifier::builder(own())
        .validation(
            Validation::default()
                .issuer("https://api.test")
                .audience("orders"),
        )
        .issuer_keys("https://login.test", own())
        .try_build()
        .is_ok());
}
