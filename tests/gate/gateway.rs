//! The gateway example's wiring (the gate, the proxy, the auth service at `/auth`), with what
//! each test adds, in front of a real upstream on 127.0.0.1.

use crate::common;
#[allow(dead_code)]
#[path = "../../examples/gateway.rs"]
mod example;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Frame, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use jwt_gate::clock::{Clock, SystemClock};
use jwt_gate::{Claims, Keys};
use tokio::sync::mpsc;

const SECRET: &[u8] = b"the gateway test secret, 32 b...";

type Echo = http_body_util::combinators::BoxBody<Bytes, hyper::Error>;

/// The upstream: reports what it received, streams, or stalls, and counts its requests.
async fn upstream(hits: Arc<AtomicUsize>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let hits = hits.clone();
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                hits.fetch_add(1, Ordering::SeqCst);
                async move { Ok::<_, std::convert::Infallible>(answer(request).await) }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    addr
}

async fn answer(request: Request<Incoming>) -> Response<Echo> {
    match request.uri().path() {
        // Sends each request chunk back as it arrives: a full-duplex stream.
        "/echo" => Response::new(request.into_body().boxed()),
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Response::new(Full::default().map_err(|never| match never {}).boxed())
        }
        _ => {
            let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for (name, value) in request.headers() {
                headers
                    .entry(name.to_string())
                    .or_default()
                    .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
            }
            let report = serde_json::json!({
                "path": request.uri().to_string(),
                "headers": headers,
            });
            let mut response = Response::new(
                Full::new(Bytes::from(report.to_string()))
                    .map_err(|never| match never {})
                    .boxed(),
            );
            response
                .headers_mut()
                .insert("proxy-authenticate", "Basic".parse().unwrap());
            response
                .headers_mut()
                .insert("x-upstream", "yes".parse().unwrap());
            // End to end (RFC 9110 §6.6.2): HTTP/1.1 sends only the trailers it announces.
            response
                .headers_mut()
                .insert("trailer", "x-checksum".parse().unwrap());
            // Hop-by-hop headers of the upstream's own connection, which must not go on.
            for (name, value) in [
                ("connection", "x-upstream-hop"),
                ("x-upstream-hop", "1"),
                ("keep-alive", "timeout=5"),
                ("upgrade", "h2c"),
            ] {
                response.headers_mut().insert(name, value.parse().unwrap());
            }
            response
        }
    }
}

struct Setup {
    gateway: SocketAddr,
    upstream: SocketAddr,
    hits: Arc<AtomicUsize>,
    keys: Keys,
}

/// What a test adds to the example's wiring.
#[derive(Default)]
struct Extra {
    timeout: Option<Duration>,
    /// Paths opened besides the example's; `/x/*` opens a prefix.
    open: &'static [&'static str],
    forward_claims: &'static [&'static str],
}

async fn setup_with(extra: Extra) -> Setup {
    let hits = Arc::new(AtomicUsize::new(0));
    let upstream = upstream(hits.clone()).await;
    let gateway = start(&format!("http://{upstream}"), extra).await;
    Setup {
        gateway,
        upstream,
        hits,
        keys: Keys::hs256(SECRET).unwrap(),
    }
}

/// The example's gate and proxy in front of `upstream`, with `extra`, on a port of its own.
async fn start(upstream: &str, extra: Extra) -> SocketAddr {
    let (mut layer, mut proxy) = example::gateway(upstream, Keys::hs256(SECRET).unwrap());
    for path in extra.open {
        layer = match path.strip_suffix("/*") {
            Some(prefix) => layer.open_prefix(prefix),
            None => layer.open_path(path),
        };
    }
    if let Some(timeout) = extra.timeout {
        proxy = proxy.timeout(timeout);
    }
    for claim in extra.forward_claims {
        proxy = proxy.forward_claim(claim);
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(jwt_gate::gateway::serve(
        listener,
        layer,
        proxy.build().unwrap(),
    ));
    addr
}

async fn setup() -> Setup {
    setup_with(Extra {
        forward_claims: &["iss"],
        ..Extra::default()
    })
    .await
}

fn token_with_roles(keys: &Keys) -> String {
    let now = SystemClock.now();
    let claims = Claims::new("alice", now, now + 600)
        .with_issuer("https://issuer.test")
        .with_extra(serde_json::json!({ "roles": ["admin", "ops"] }));
    keys.sign(&claims).unwrap()
}

fn report(body: &Bytes) -> serde_json::Value {
    serde_json::from_slice(body).unwrap()
}

fn header<'a>(report: &'a serde_json::Value, name: &str) -> Option<&'a str> {
    report["headers"][name][0].as_str()
}

#[tokio::test]
async fn no_token_is_refused_before_the_upstream() {
    let setup = setup().await;
    let answer = common::get(setup.gateway, "/orders", None).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert!(answer.headers["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Bearer"));
    assert_eq!(setup.hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn the_verified_identity_is_forwarded() {
    let setup = setup().await;
    let token = token_with_roles(&setup.keys);
    let answer = common::get(setup.gateway, "/orders?page=2", Some(&token)).await;
    assert_eq!(answer.status, StatusCode::OK);
    let report = report(&answer.body);
    assert_eq!(report["path"], "/orders?page=2");
    assert_eq!(header(&report, "x-auth-sub"), Some("alice"));
    assert_eq!(
        header(&report, "x-auth-roles"),
        Some(r#"["admin"%2C"ops"]"#)
    );
    assert_eq!(header(&report, "x-auth-iss"), Some("https://issuer.test"));
    assert_eq!(header(&report, "host"), Some(&*setup.upstream.to_string()));
    assert_eq!(header(&report, "x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(header(&report, "x-forwarded-proto"), Some("http"));
    assert_eq!(
        header(&report, "x-forwarded-host"),
        Some(&*setup.gateway.to_string())
    );
    // The token itself goes on, for upstreams that want to check it again.
    assert!(header(&report, "authorization").is_some());
}

#[tokio::test]
async fn a_client_cannot_impersonate_anyone() {
    let setup = setup().await;
    let token = token_with_roles(&setup.keys);
    for (path, token) in [("/orders", Some(token.as_str())), ("/health", None)] {
        let mut request = Request::get(format!("http://{}{path}", setup.gateway))
            .header("x-auth-sub", "admin")
            .header("X-Auth-Roles", "superuser")
            .header("x-auth-anything", "1")
            .header("x_auth_sub", "admin")
            // lighttpd's CGI reads every byte that is not a letter or digit as `_`.
            .header("x.auth.sub", "admin")
            .header("x-forwarded-for", "10.0.0.1")
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-host", "bank.example")
            .header("forwarded", "for=10.0.0.1;proto=https")
            // Read by frameworks behind one trusted hop, though this proxy sets none of them.
            .header("x-forwarded-prefix", "/evil")
            .header("x-forwarded-port", "443")
            .header("x-forwarded-ssl", "on")
            .header("x_forwarded_for", "10.0.0.2")
            .header("x-real-ip", "10.0.0.3")
            .header("true-client-ip", "10.0.0.4")
            .header("x-client-ip", "10.0.0.5")
            // A path other than the one judged, which older Symfony, Zend and Drupal (and IIS
            // rewrites) route by.
            .header("x-original-url", "/admin")
            .header("x-rewrite-url", "/admin")
            .header("x_original_url", "/admin");
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let answer = common::send(request.body(Full::default()).unwrap()).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}");
        let report = report(&answer.body);
        let forwarded: Vec<_> = report["headers"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(name, _)| name.replace(['_', '.'], "-").starts_with("x-auth-"))
            .map(|(name, values)| (name.clone(), values.clone()))
            .collect();
        match token {
            Some(_) => assert_eq!(
                forwarded,
                [
                    (
                        "x-auth-iss".to_owned(),
                        serde_json::json!(["https://issuer.test"])
                    ),
                    (
                        "x-auth-roles".to_owned(),
                        serde_json::json!([r#"["admin"%2C"ops"]"#])
                    ),
                    ("x-auth-sub".to_owned(), serde_json::json!(["alice"])),
                ]
            ),
            None => assert!(forwarded.is_empty(), "open path leaked {forwarded:?}"),
        }
        assert_eq!(header(&report, "x-forwarded-for"), Some("127.0.0.1"));
        assert_eq!(header(&report, "x-forwarded-proto"), Some("http"));
        assert_eq!(
            header(&report, "x-forwarded-host"),
            Some(&*setup.gateway.to_string())
        );
        assert_eq!(header(&report, "forwarded"), None);
        for spoofed in [
            "x-forwarded-prefix",
            "x-forwarded-port",
            "x-forwarded-ssl",
            "x_forwarded_for",
            "x-real-ip",
            "true-client-ip",
            "x-client-ip",
            "x-original-url",
            "x-rewrite-url",
            "x_original_url",
        ] {
            assert_eq!(header(&report, spoofed), None, "{spoofed} on {path}");
        }
    }
}

#[tokio::test]
async fn hop_by_hop_headers_stay_on_their_hop() {
    let setup = setup().await;
    let token = token_with_roles(&setup.keys);
    let request = Request::get(format!("http://{}/orders", setup.gateway))
        .header("authorization", format!("Bearer {token}"))
        .header("connection", "keep-alive, x-private-hop")
        // Named in any case, on a second line, among spaces and tabs; `te` too, whose
        // `trailers` the upstream still gets.
        .header("connection", "X-Other-Hop\t,  te")
        .header("x-private-hop", "1")
        .header("x-other-hop", "1")
        .header("keep-alive", "timeout=5")
        .header("te", "trailers, deflate;q=0.5")
        .header("trailer", "x-checksum")
        .header("upgrade", "websocket")
        .header("proxy-authorization", "Basic c2VjcmV0")
        .header("x-end-to-end", "kept")
        .body(Full::default())
        .unwrap();
    let answer = common::send(request).await;
    assert_eq!(answer.status, StatusCode::OK);
    let report = report(&answer.body);
    for name in [
        "connection",
        "x-private-hop",
        "x-other-hop",
        "keep-alive",
        // Without `Connection: upgrade` this is no WebSocket handshake: nothing to relay.
        "upgrade",
        "proxy-authorization",
    ] {
        assert_eq!(header(&report, name), None, "{name} was forwarded");
    }
    // Only what gRPC needs of `TE`: that trailers are welcome; codings are per hop.
    assert_eq!(header(&report, "te"), Some("trailers"));
    assert_eq!(header(&report, "x-end-to-end"), Some("kept"));
    assert_eq!(header(&report, "trailer"), Some("x-checksum"));
    // And on the way back.
    for name in [
        "proxy-authenticate",
        "x-upstream-hop",
        "keep-alive",
        "upgrade",
    ] {
        assert!(answer.headers.get(name).is_none(), "{name} came back");
    }
    assert_eq!(answer.headers["x-upstream"], "yes");
    assert_eq!(answer.headers["trailer"], "x-checksum");
}

#[tokio::test]
async fn bodies_stream_both_ways() {
    let setup = setup().await;
    let token = token_with_roles(&setup.keys);
    let (chunks, body) = mpsc::channel::<Bytes>(1);
    let body = ChannelBody(body);
    let request = Request::post(format!("http://{}/echo", setup.gateway))
        .header("authorization", format!("Bearer {token}"))
        .body(body)
        .unwrap();
    let client = Client::builder(TokioExecutor::new()).build_http();
    chunks.send(Bytes::from("ping 1")).await.unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), client.request(request))
        .await
        .expect("the response head never came while the request body was open")
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    // Each chunk comes back before the next one is sent: nothing waits for a whole body.
    for round in 1..=3 {
        if round > 1 {
            chunks
                .send(Bytes::from(format!("ping {round}")))
                .await
                .unwrap();
        }
        let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
            .await
            .expect("a chunk was held back")
            .unwrap()
            .unwrap();
        assert_eq!(frame.into_data().unwrap(), format!("ping {round}"));
    }
    drop(chunks);
    assert!(body.frame().await.is_none());
}

/// A request body whose chunks the test sends one at a time.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|chunk| Ok(Frame::data(chunk))))
    }
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_502() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = listener.local_addr().unwrap();
    drop(listener);
    let gateway = start(&format!("http://{closed}"), Extra::default()).await;
    let token = common::token(&Keys::hs256(SECRET).unwrap(), "alice");
    let answer = common::get(gateway, "/orders", Some(&token)).await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert_eq!(answer.body, r#"{"error":"bad_gateway"}"#);
}

#[tokio::test]
async fn a_slow_upstream_is_a_504() {
    let setup = setup_with(Extra {
        timeout: Some(Duration::from_millis(200)),
        ..Extra::default()
    })
    .await;
    let token = common::token(&setup.keys, "alice");
    let answer = common::get(setup.gateway, "/slow", Some(&token)).await;
    assert_eq!(answer.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(setup.hits.load(Ordering::SeqCst), 1);
}

/// `gateway` behind the default gate for `keys`, on a port of its own.
async fn serve_gateway(gateway: jwt_gate::gateway::GatewayBuilder, keys: &Keys) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(jwt_gate::gateway::serve(
        listener,
        jwt_gate::JwtAuthLayer::from_keys(keys.clone()),
        gateway.build().unwrap(),
    ));
    addr
}

/// `GET /orders` at `addr` with a token of `alice`'s from `keys`.
fn alice_asks_for_orders(addr: SocketAddr, keys: &Keys) -> http::request::Builder {
    Request::get(format!("http://{addr}/orders")).header(
        "authorization",
        format!("Bearer {}", common::token(keys, "alice")),
    )
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_chain_is_kept() {
    let hits = Arc::new(AtomicUsize::new(0));
    let upstream = upstream(hits).await;
    let keys = Keys::hs256(SECRET).unwrap();
    let gateway = jwt_gate::gateway::Gateway::builder(format!("http://{upstream}"))
        .preserve_host(true)
        .trust_forwarded_headers(true);
    let addr = serve_gateway(gateway, &keys).await;
    let request = alice_asks_for_orders(addr, &keys)
        .header("host", "shop.example")
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-forwarded-proto", "https")
        .body(Full::default())
        .unwrap();
    let answer = common::send(request).await;
    assert_eq!(answer.status, StatusCode::OK);
    let report = report(&answer.body);
    assert_eq!(header(&report, "host"), Some("shop.example"));
    assert_eq!(
        header(&report, "x-forwarded-for"),
        Some("203.0.113.9, 127.0.0.1")
    );
    assert_eq!(header(&report, "x-forwarded-proto"), Some("https"));
    assert_eq!(header(&report, "x-forwarded-host"), Some("shop.example"));
    // Plain `Claims` (no ClaimMap) still forward the subject.
    assert_eq!(header(&report, "x-auth-sub"), Some("alice"));
}

/// Trust by the connection's address: the balancer's forwarded chain is kept and appended
/// to; anyone else's is removed, as without trust.
#[tokio::test]
async fn forwarded_headers_are_kept_from_trusted_proxies_only() {
    let hits = Arc::new(AtomicUsize::new(0));
    let upstream = upstream(hits).await;
    let keys = Keys::hs256(SECRET).unwrap();
    for (proxy, expected) in [
        ("127.0.0.1", "203.0.113.9, 127.0.0.1"),
        ("10.9.9.9", "127.0.0.1"),
    ] {
        let gateway = jwt_gate::gateway::Gateway::builder(format!("http://{upstream}"))
            .trusted_proxies([proxy.parse().unwrap()]);
        let addr = serve_gateway(gateway, &keys).await;
        let request = alice_asks_for_orders(addr, &keys)
            .header("x-forwarded-for", "203.0.113.9")
            .header("x-forwarded-prefix", "/shop")
            .body(Full::default())
            .unwrap();
        let answer = common::send(request).await;
        assert_eq!(answer.status, StatusCode::OK);
        let report = report(&answer.body);
        assert_eq!(
            header(&report, "x-forwarded-for"),
            Some(expected),
            "trusted: {proxy}"
        );
        let prefix = (proxy == "127.0.0.1").then_some("/shop");
        assert_eq!(
            header(&report, "x-forwarded-prefix"),
            prefix,
            "trusted: {proxy}"
        );
    }
}

#[tokio::test]
async fn clients_log_in_at_auth_and_the_upstream_sees_who_they_are() {
    let setup = setup().await;
    let session = common::session(setup.gateway, "Alice").await;
    let token = session["access_token"].as_str().unwrap();
    assert_eq!(
        setup.hits.load(Ordering::SeqCst),
        0,
        "/auth is served by the gateway itself"
    );

    let answer = common::get(setup.gateway, "/orders", Some(token)).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(header(&report(&answer.body), "x-auth-sub"), Some("alice"));
    assert_eq!(setup.hits.load(Ordering::SeqCst), 1);

    let logout = common::with_bearer(setup.gateway, Method::POST, "/auth/logout", token).await;
    assert_eq!(logout.status, StatusCode::OK, "{}", logout.text);
    let answer = common::get(setup.gateway, "/orders", Some(token)).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert!(answer.headers["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("invalid_token"));
    assert_eq!(setup.hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn nothing_under_auth_reaches_the_upstream() {
    let setup = setup().await;
    let token = common::token(&setup.keys, "alice");
    for path in [
        "/auth",
        "/auth/",
        "/auth/unknown",
        "/auth/token?x=1",
        "/auth/a/b",
    ] {
        for token in [None, Some(token.as_str())] {
            let answer = common::get(setup.gateway, path, token).await;
            assert!(
                answer.status == StatusCode::NOT_FOUND
                    || answer.status == StatusCode::METHOD_NOT_ALLOWED,
                "{path}: {} {}",
                answer.status,
                answer.text
            );
        }
    }
    assert_eq!(setup.hits.load(Ordering::SeqCst), 0);
    // A sibling path is not the auth service's, and needs a token like any other.
    let answer = common::get(setup.gateway, "/authz", None).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    let answer = common::get(setup.gateway, "/authz", Some(&token)).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(setup.hits.load(Ordering::SeqCst), 1);
}

/// A gateway whose `/local` is a service of this process that reports what it was given.
async fn with_local_service() -> Setup {
    let hits = Arc::new(AtomicUsize::new(0));
    let upstream = upstream(hits.clone()).await;
    let keys = Keys::hs256(SECRET).unwrap();
    let local = tower::service_fn(|request: Request<Incoming>| async move {
        let identity_headers: Vec<String> = request
            .headers()
            .keys()
            .map(|name| name.as_str().replace('_', "-"))
            .filter(|name| name.starts_with("x-auth-"))
            .collect();
        let report = serde_json::json!({
            "path": request.uri().to_string(),
            "identity_headers": identity_headers,
            "sub": request.extensions().get::<Claims>().map(|claims| claims.sub.clone()),
            "peer": request.extensions().get::<jwt_gate::ClientAddr>().is_some(),
        });
        Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(report.to_string()))))
    });
    let gateway = jwt_gate::gateway::Gateway::builder(format!("http://{upstream}"))
        .mount("/local/", local)
        .build()
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(jwt_gate::gateway::serve(
        listener,
        jwt_gate::JwtAuthLayer::from_keys(keys.clone()).open_path("/local/open"),
        gateway,
    ));
    Setup {
        gateway: addr,
        upstream,
        hits,
        keys,
    }
}

#[tokio::test]
async fn a_mounted_service_answers_in_process_with_the_verified_claims() {
    let setup = with_local_service().await;
    let token = common::token(&setup.keys, "alice");
    for (path, token, sub) in [
        (
            "/local/me?x=1",
            Some(token.as_str()),
            serde_json::json!("alice"),
        ),
        ("/local/open", None, serde_json::Value::Null),
    ] {
        let mut request = Request::get(format!("http://{}{path}", setup.gateway))
            .header("x-auth-sub", "admin")
            .header("x_auth_roles", "superuser");
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let answer = common::send(request.body(Full::default()).unwrap()).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}");
        let report = report(&answer.body);
        assert_eq!(report["path"], path, "the whole path, unchanged");
        assert_eq!(report["identity_headers"], serde_json::json!([]), "{path}");
        assert_eq!(report["sub"], sub, "{path}");
        assert_eq!(report["peer"], true);
    }
    // The gate still guards a mounted prefix unless told otherwise.
    let answer = common::get(setup.gateway, "/local/me", None).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(setup.hits.load(Ordering::SeqCst), 0);
    // Mounts match whole segments.
    let answer = common::get(setup.gateway, "/locale", Some(&token)).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(report(&answer.body)["path"], "/locale");
    assert_eq!(setup.hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn the_mounted_auth_service_throttles_by_the_clients_address() {
    let setup = setup().await;
    let mut statuses = Vec::new();
    for i in 0..25 {
        let username = format!("user{i}");
        let form = [("username", username.as_str()), ("password", "Summer2024!")];
        statuses.push(
            common::post_form(setup.gateway, "/auth/token", &form)
                .await
                .status,
        );
    }
    // Every name is new, so only the per-address count (the gateway's ClientAddr) can bite.
    assert!(statuses[..20]
        .iter()
        .all(|status| *status == StatusCode::BAD_REQUEST));
    assert!(
        statuses.contains(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    assert_eq!(setup.hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn an_open_prefix_cannot_be_stretched_to_reach_the_upstream() {
    use crate::open_paths::{raw_get, BYPASSES};
    let setup = setup_with(Extra {
        open: &["/static/*"],
        ..Extra::default()
    })
    .await;
    for path in BYPASSES {
        let status = common::raw_status(setup.gateway, &raw_get(path, None)).await;
        assert_eq!(status, 401, "{path} was not judged protected");
    }
    assert_eq!(setup.hits.load(Ordering::SeqCst), 0);

    // A canonical path stays open and reaches the upstream exactly as it was judged.
    let answer = common::get(setup.gateway, "/static/a%20b", None).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(report(&answer.body)["path"], "/static/a%20b");
}

#[tokio::test]
async fn identities_an_upstream_could_trim_or_split_arrive_encoded() {
    let setup = setup_with(Extra {
        forward_claims: &["role", "aud"],
        ..Extra::default()
    })
    .await;
    let now = SystemClock.now();
    for (sub, role, forwarded_sub, forwarded_role) in [
        ("alice", "user", "alice", "user"),
        (" alice ", "user, admin", "%20alice%20", "user%2C%20admin"),
        ("alice,admin", "a%2Cb", "alice%2Cadmin", "a%252Cb"),
        (
            "alice\r\nx-auth-sub: admin",
            "\t",
            "alice%0D%0Ax-auth-sub:%20admin",
            "%09",
        ),
        ("jos\u{e9}", "\u{7f}", "jos%C3%A9", "%7F"),
    ] {
        let mut claims = Claims::new(sub, now, now + 600)
            .with_audience("orders")
            .with_extra(serde_json::json!({ "role": role }));
        claims.aud.push("a, b".to_owned());
        let token = setup.keys.sign(&claims).unwrap();
        let answer = common::get(setup.gateway, "/orders", Some(&token)).await;
        assert_eq!(answer.status, StatusCode::OK, "{sub:?}");
        let report = report(&answer.body);
        assert_eq!(
            report["headers"]["x-auth-sub"],
            serde_json::json!([forwarded_sub]),
            "{sub:?}"
        );
        assert_eq!(
            report["headers"]["x-auth-role"],
            serde_json::json!([forwarded_role]),
            "{role:?}"
        );
        assert_eq!(header(&report, "x-auth-aud"), Some("orders,a%2C%20b"));
    }
}

/// Sends `request` over HTTP/2 (h2c by prior knowledge, as gRPC clients do) to `addr`.
async fn h2c_send<B>(addr: SocketAddr, request: Request<B>) -> (StatusCode, Bytes)
where
    B: hyper::body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    send_on_one_connection(addr, request, true).await
}

/// Sends `request` to `addr` on a connection of its own, HTTP/2 (h2c by prior knowledge) or
/// HTTP/1.1, its target as it is (absolute-form if absolute, as to a forward proxy).
async fn send_on_one_connection<B>(
    addr: SocketAddr,
    request: Request<B>,
    http2: bool,
) -> (StatusCode, Bytes)
where
    B: hyper::body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let io = TokioIo::new(tokio::net::TcpStream::connect(addr).await.unwrap());
    let response = if http2 {
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .unwrap();
        tokio::spawn(connection);
        sender.send_request(request).await.unwrap()
    } else {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(connection);
        sender.send_request(request).await.unwrap()
    };
    let status = response.status();
    (
        status,
        response.into_body().collect().await.unwrap().to_bytes(),
    )
}

#[tokio::test]
async fn an_absolute_target_reaches_the_upstream_as_its_path_only() {
    let setup = setup().await;
    let token = token_with_roles(&setup.keys);
    for (target, path) in [
        ("http://elsewhere.example/orders?page=2", "/orders?page=2"),
        // An absolute target with no path asks for `/` (RFC 9112 §3.2.2).
        ("http://elsewhere.example", "/"),
    ] {
        let request = Request::get(target)
            .header("host", "elsewhere.example")
            .header("authorization", format!("Bearer {token}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let (status, body) = send_on_one_connection(setup.gateway, request, false).await;
        assert_eq!(status, StatusCode::OK, "{target}");
        let report = report(&body);
        assert_eq!(report["path"], path, "{target}");
        assert_eq!(
            header(&report, "host"),
            Some(&*setup.upstream.to_string()),
            "{target}"
        );
    }
}

#[tokio::test]
async fn http2_cookies_reach_an_http1_upstream_as_one_line() {
    let setup = setup().await;
    let token = token_with_roles(&setup.keys);
    let request = Request::get(format!("http://{}/cookies", setup.gateway))
        .header("authorization", format!("Bearer {token}"))
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (status, body) = h2c_send(setup.gateway, request).await;
    assert_eq!(status, StatusCode::OK);
    let report = report(&body);
    assert_eq!(
        report["headers"]["cookie"],
        serde_json::json!(["a=1; b=2"]),
        "{report}"
    );
}

/// An HTTP/2 upstream that reports the trailers of each request body it receives.
async fn trailer_upstream() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let service = hyper::service::service_fn(|request: Request<Incoming>| async move {
                let collected = request.into_body().collect().await?;
                let trailers: Vec<String> = collected
                    .trailers()
                    .map(|trailers| trailers.keys().map(|name| name.to_string()).collect())
                    .unwrap_or_default();
                let report = serde_json::json!({ "trailers": trailers });
                Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from(report.to_string()))))
            });
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    addr
}

#[tokio::test]
async fn identity_headers_sent_as_request_trailers_never_reach_the_upstream() {
    let upstream = trailer_upstream().await;
    let keys = Keys::hs256(SECRET).unwrap();
    let (layer, proxy) = example::gateway(&format!("http://{upstream}"), keys.clone());
    let gateway = proxy.upstream_http2(true).build().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(jwt_gate::gateway::serve(listener, layer, gateway));

    let mut trailers = http::HeaderMap::new();
    trailers.insert("x-auth-sub", "admin".parse().unwrap());
    trailers.insert("x_auth_sub", "admin".parse().unwrap());
    trailers.insert("x-original-url", "/admin".parse().unwrap());
    trailers.insert("x-checksum", "abc".parse().unwrap());
    let body =
        Full::new(Bytes::from_static(b"payload")).with_trailers(std::future::ready(Some(Ok::<
            _,
            std::convert::Infallible,
        >(
            trailers,
        ))));
    let request = Request::post(format!("http://{addr}/upload"))
        .header(
            "authorization",
            format!("Bearer {}", token_with_roles(&keys)),
        )
        .header("te", "trailers")
        .body(body)
        .unwrap();
    let (status, body) = h2c_send(addr, request).await;
    assert_eq!(status, StatusCode::OK, "{body:?}");
    let report = report(&body);
    // Other trailers pass; the client's identity headers and other paths do not.
    assert_eq!(
        report["trailers"],
        serde_json::json!(["x-checksum"]),
        "{report}"
    );
}

/// A front server that talks h2c to forward-auth and copies the client's headers would take
/// gRPC's refusal (`200` with `grpc-status`) for a pass: a check is a plain status, always.
#[tokio::test]
async fn forward_auth_over_h2c_refuses_a_grpc_shaped_check_with_a_401() {
    use jwt_gate::gateway::{ClaimMap, ForwardAuth};
    use jwt_gate::{JwtAuthLayer, TokenVerifier};

    let keys = Keys::hs256(SECRET).unwrap();
    let layer = JwtAuthLayer::new(TokenVerifier::builder(keys).claims::<ClaimMap>().build());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(ForwardAuth::builder(layer).build().serve(listener));
    for grpc in [false, true] {
        let mut request = Request::get(format!("http://{addr}/check"))
            .header("x-forwarded-method", "POST")
            .header("x-forwarded-uri", "/orders.v1.Orders/Cancel");
        if grpc {
            request = request
                .header("content-type", "application/grpc")
                .header("te", "trailers");
        }
        let (status, _) = h2c_send(addr, request.body(Full::new(Bytes::new())).unwrap()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "gRPC-shaped: {grpc}");
    }
}
