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

/// A client asking for `websocket, h2c` gets a WebSocket or nothing: the upstream is offered
/// `websocket` alone, never the h2c settings, and its switch to h2c is refused, not relayed
/// as a tunnel whose requests (forged identity headers and all) the gate would never see.
#[tokio::test(flavor = "multi_thread")]
async fn only_a_websocket_is_switched_to_through_the_proxy() {
    use std::time::Duration;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    // An upstream that switches to h2c whatever it is offered, then reads its tunnel.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    let seen = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            socket.read_exact(&mut byte).await.unwrap();
            head.push(byte[0]);
        }
        socket
            .write_all(
                b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: h2c\r\n\r\n",
            )
            .await
            .unwrap();
        let mut tunneled = vec![0u8; 256];
        let read = tokio::time::timeout(Duration::from_secs(2), socket.read(&mut tunneled)).await;
        let read = match read {
            Ok(Ok(read)) => read,
            _ => 0,
        };
        (
            String::from_utf8_lossy(&head).to_ascii_lowercase(),
            String::from_utf8_lossy(&tunneled[..read]).into_owned(),
        )
    });
    let dir = TempDir::new("websocket-h2c");
    let config = dir.write(
        "gate.toml",
        &format!("upstream = \"http://{upstream}\"\nallow_dev_tokens = true\n"),
    );
    let gate = start(&config, "proxy");
    let token = mint(&config, "alice");
    let mut client = tokio::net::TcpStream::connect(gate.addr).await.unwrap();
    let request = format!(
        "GET /x HTTP/1.1\r\nhost: a\r\nauthorization: Bearer {token}\r\nconnection: upgrade\r\n\
         upgrade: websocket, h2c\r\nhttp2-settings: AAMAAABkAAQAAP__\r\n\r\n"
    );
    client.write_all(request.as_bytes()).await.unwrap();
    let mut response = vec![0u8; 1024];
    let read = client.read(&mut response).await.unwrap();
    let response = String::from_utf8_lossy(&response[..read]).into_owned();
    assert!(response.starts_with("HTTP/1.1 502"), "{response}");
    // Whatever the client sends next is a request of its own for the gate, not tunnel bytes.
    let _ = client
        .write_all(b"GET /admin HTTP/1.1\r\nhost: a\r\nx-auth-sub: root\r\n\r\n")
        .await;
    let (head, tunneled) = seen.await.unwrap();
    assert!(head.contains("upgrade: websocket\r\n"), "{head}");
    assert!(
        !head.contains("h2c") && !head.contains("http2-settings"),
        "{head}"
    );
    assert_eq!(
        tunneled, "",
        "bytes reached the upstream through a relayed switch"
    );
}
