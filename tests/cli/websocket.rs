//! WebSocket upgrades through `jwt-gate proxy`: a real client (tokio-tungstenite) against a
//! real WebSocket upstream that greets with the identity it was given and echoes messages.

use futures_util::{SinkExt as _, StreamExt as _};
use http::StatusCode;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::{Error, Message};

use crate::common::websocket::echo_upstream;
use crate::{mint, start, TempDir};

#[tokio::test(flavor = "multi_thread")]
async fn websocket_through_the_proxy_needs_a_token_then_echoes_both_ways() {
    let upstream = echo_upstream().await;
    let dir = TempDir::new("websocket");
    let config = dir.write(
        "gate.toml",
        &format!("upstream = \"http://{upstream}\"\nallow_dev_tokens = true\n"),
    );
    let gate = start(&config, "proxy");
    let url = format!("ws://{}/chat", gate.addr);

    // Without a token the handshake is the gate's 401, never a 101.
    match tokio_tungstenite::connect_async(url.as_str()).await {
        Err(Error::Http(response)) => {
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
            assert!(response.headers().contains_key("www-authenticate"));
        }
        other => panic!("an upgrade without a token was not refused: {other:?}"),
    }

    let token = mint(&config, "alice");
    let mut request = url.as_str().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    // A client's own identity header never reaches the upstream, upgrade or not.
    request
        .headers_mut()
        .insert("x-auth-sub", "admin".parse().unwrap());
    let (mut socket, response) = tokio_tungstenite::connect_async(request)
        .await
        .expect("the upgrade with a valid token is relayed");
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);

    let hello = socket.next().await.unwrap().unwrap();
    assert_eq!(hello, Message::text("hello alice"));
    for text in ["ping", "a second message", &"x".repeat(100_000)] {
        socket.send(Message::text(text)).await.unwrap();
        assert_eq!(socket.next().await.unwrap().unwrap(), Message::text(text));
    }
    socket
        .send(Message::binary(vec![0, 1, 2, 255]))
        .await
        .unwrap();
    assert_eq!(
        socket.next().await.unwrap().unwrap(),
        Message::binary(vec![0, 1, 2, 255])
    );
    socket.close(None).await.unwrap();
}
