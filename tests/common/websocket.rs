//! A real WebSocket server (tokio-tungstenite) to put behind the gateway.

use std::net::SocketAddr;

use futures_util::{SinkExt as _, StreamExt as _};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::Message;

/// A WebSocket server: says `hello <x-auth-sub>` (or `hello nobody`), then echoes.
// The handshake callback's error type is tungstenite's, an HTTP response.
#[allow(clippy::result_large_err)]
pub async fn echo_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut sub = String::from("nobody");
                let handshake = tokio_tungstenite::accept_hdr_async(
                    stream,
                    |request: &Request, response: Response| {
                        if let Some(value) = request.headers().get("x-auth-sub") {
                            sub = value.to_str().unwrap().to_owned();
                        }
                        Ok(response)
                    },
                )
                .await;
                let Ok(mut socket) = handshake else {
                    return;
                };
                let hello = Message::text(format!("hello {sub}"));
                if socket.send(hello).await.is_err() {
                    return;
                }
                while let Some(Ok(message)) = socket.next().await {
                    if (message.is_text() || message.is_binary())
                        && socket.send(message).await.is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    addr
}
