//! Hands axum's connection info to jwt-gate: axum reports each connection's peer as
//! `ConnectInfo<SocketAddr>` (when served with `into_make_service_with_connect_info`), and
//! the auth service throttles logins by the crate's own `ClientAddr`. Included with
//! `#[path]`; not an example of its own.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request};
use axum::middleware::Next;
use axum::response::Response;
use jwt_gate::ClientAddr;

/// `axum::middleware::from_fn(client_addr::insert)`: copies the peer address, when axum
/// reports one, into `ClientAddr`.
pub(crate) async fn insert(mut request: Request, next: Next) -> Response {
    if let Some(ConnectInfo(peer)) = request.extensions().get::<ConnectInfo<SocketAddr>>() {
        let peer = ClientAddr(*peer);
        request.extensions_mut().insert(peer);
    }
    next.run(request).await
}
