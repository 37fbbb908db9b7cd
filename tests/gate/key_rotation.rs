//! Keys rotate under running gates: old tokens verify until their key is removed.

use crate::common;

use common::*;
use jwt_gate::{JwtAuthLayer, Key, KeyError, Keys};

#[tokio::test]
async fn tokens_of_a_retired_key_verify_until_it_is_removed() {
    let keys = Keys::new(
        Key::hs256(b"the first secret, 32 bytes long.")
            .unwrap()
            .with_kid("2026-10"),
    )
    .unwrap();
    let addr = serve_gated(JwtAuthLayer::from_keys(keys.clone())).await;
    let old_token = token(&keys, "alice");
    assert_eq!(get_bearer(addr, "/protected", &old_token).await.status, 200);

    keys.add(
        Key::hs256(b"the second secret, 32 bytes long")
            .unwrap()
            .with_kid("2026-11"),
    )
    .unwrap();
    keys.activate("2026-11").unwrap();
    let new_token = token(&keys, "bob");
    let header = jsonwebtoken::decode_header(&new_token).unwrap();
    assert_eq!(header.kid.as_deref(), Some("2026-11"));

    // Both verify while both keys are in the set (the old one from the verified-token cache).
    assert_eq!(get_bearer(addr, "/protected", &old_token).await.status, 200);
    assert_eq!(get_bearer(addr, "/protected", &new_token).await.status, 200);

    keys.remove("2026-10").unwrap();
    // Removal reaches the running gate at once, cache included.
    assert_eq!(get_bearer(addr, "/protected", &old_token).await.status, 401);
    assert_eq!(get_bearer(addr, "/protected", &new_token).await.status, 200);
}

#[test]
fn the_rotation_api_refuses_ambiguous_or_dangerous_changes() {
    let keys = Keys::new(Key::hs256(SECRET).unwrap()).unwrap();
    // A second key while the first has no kid would leave kid-less tokens ambiguous.
    assert_eq!(
        keys.add(Key::hs256(SECRET).unwrap().with_kid("b")),
        Err(KeyError::MissingKid)
    );

    let keys = Keys::new(Key::hs256(SECRET).unwrap().with_kid("a")).unwrap();
    assert_eq!(
        keys.add(Key::hs256(SECRET).unwrap()),
        Err(KeyError::MissingKid)
    );
    assert_eq!(
        keys.add(Key::hs256(SECRET).unwrap().with_kid("a")),
        Err(KeyError::DuplicateKid("a".into()))
    );
    assert_eq!(keys.remove("a"), Err(KeyError::ActiveKey("a".into())));
    assert_eq!(keys.activate("zz"), Err(KeyError::UnknownKid("zz".into())));
    let public = Key::from_public_pem(jwt_gate::Algorithm::RS256, &pem("rsa.pub.pem")).unwrap();
    let verify_only = Keys::new(public).unwrap();
    assert_eq!(
        verify_only.sign(&jwt_gate::Claims::new("a", 1, 2)),
        Err(KeyError::NoSigningKey)
    );
}
