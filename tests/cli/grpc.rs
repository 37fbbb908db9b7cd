//! gRPC through `jwt-gate proxy`: a real tonic client, over h2c by prior knowledge, to a
//! tonic upstream that speaks HTTP/2 only (`[upstream_options] http2 = true`).

use std::net::SocketAddr;

use tonic::transport::server::TcpIncoming;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::{mint, start, TempDir};

/// The standard health service over HTTP/2 alone, naming the `x-auth-sub` it received in
/// the `x-seen-sub` response metadata.
async fn grpc_upstream() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_reporter, health) = tonic_health::server::health_reporter();
    let routes = tonic::service::Routes::new(health)
        .into_axum_router()
        .layer(axum::middleware::from_fn(
            |request: axum::extract::Request, next: axum::middleware::Next| async move {
                let sub = request.headers().get("x-auth-sub").cloned();
                let mut response = next.run(request).await;
                if let Some(sub) = sub {
                    response.headers_mut().insert("x-seen-sub", sub);
                }
                response
            },
        ));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_routes(tonic::service::Routes::from(routes))
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    addr
}

use crate::common::health_check as check;

#[tokio::test(flavor = "multi_thread")]
async fn grpc_through_the_proxy_is_unauthenticated_without_a_token_and_served_with_one() {
    let upstream = grpc_upstream().await;
    let dir = TempDir::new("grpc");
    let config = dir.write(
        "gate.toml",
        &format!(
            "upstream = \"http://{upstream}\"\nallow_dev_tokens = true\n\n[upstream_options]\nhttp2 = true\n"
        ),
    );
    let gate = start(&config, "proxy");
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", gate.addr))
        .unwrap()
        .connect()
        .await
        .expect("an HTTP/2 (h2c) connection to the proxy");
    let mut client = HealthClient::new(channel);

    let refused = client.check(check(None)).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");

    let token = mint(&config, "alice");
    // The OK status travels in the upstream's trailers: without them tonic reports an error.
    let response = client
        .check(check(Some(&token)))
        .await
        .expect("an authenticated call is served");
    assert_eq!(response.metadata().get("x-seen-sub").unwrap(), "alice");
    assert_eq!(response.into_inner().status(), ServingStatus::Serving);

    // Many calls multiplexed on the one connection, each verified.
    let calls = (0..20).map(|_| {
        let mut client = client.clone();
        let token = token.clone();
        tokio::spawn(async move { client.check(check(Some(&token))).await })
    });
    for call in calls.collect::<Vec<_>>() {
        assert!(call.await.unwrap().is_ok());
    }
}
