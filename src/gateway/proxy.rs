//! Forwarding to the upstream: the request's headers cleaned of hop-by-hop and identity
//! headers, the verified identity and `X-Forwarded-*` added, the response streamed back
//! (trailers too); a WebSocket upgrade relayed both ways once the upstream accepts it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt as _, Either, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use super::conn::ConnectionSlot;
use super::identity::{write_identity, ForwardedClaim};
use super::limits::{BodyState, TimedBody};
use super::pool::{origin_form, Pool};
use super::{GatewayBody, IDENTITY_PREFIX};
use crate::ClientAddr;

/// The upstream every request not served in-process goes to, and how to talk to it.
pub(super) struct Upstream {
    pub(super) authority: http::uri::Authority,
    pub(super) base_path: String,
    pub(super) host: HeaderValue,
    pub(super) pool: Pool,
    /// `X-Forwarded-Proto`: `https` when the gateway terminates TLS.
    pub(super) forwarded_proto: &'static str,
    pub(super) timeout: Duration,
    pub(super) body_read_timeout: Duration,
    pub(super) forwarded_claims: Vec<ForwardedClaim>,
    pub(super) preserve_host: bool,
    pub(super) trust_forwarded_headers: bool,
    /// Peers whose `X-Forwarded-*` headers are kept (canonical addresses).
    pub(super) trusted_proxies: Vec<std::net::IpAddr>,
}

impl Upstream {
    /// Sends `request` upstream and streams the answer back, or answers `502`/`504` itself.
    pub(super) async fn forward(&self, mut request: Request<Incoming>) -> Response<GatewayBody> {
        let upgrade = is_websocket_handshake(&request).then(|| Upgrade {
            client: hyper::upgrade::on(&mut request),
            slot: request.extensions_mut().remove::<ConnectionSlot>(),
        });
        let (mut parts, body) = request.into_parts();
        // A reverse proxy opens no tunnels: the upstream would be asked to connect to itself.
        if parts.method == http::Method::CONNECT {
            return error_response(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
        }
        // Two `Host` headers name two targets; which one an upstream reads is its own choice
        // (RFC 9112 §3.2 asks for `400`).
        if parts.headers.get_all(header::HOST).iter().nth(1).is_some() {
            return error_response(StatusCode::BAD_REQUEST, "invalid_request");
        }
        if parts.version == http::Version::HTTP_2 {
            join_cookies(&mut parts.headers);
        }
        let path_and_query = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        // Only the path is the client's: the scheme and authority are always the upstream's,
        // whatever form the request line took.
        let uri = if self.base_path.is_empty() && parts.uri.authority().is_none() {
            Ok(parts.uri.clone())
        } else if self.base_path.is_empty() {
            Ok(origin_form(&parts.uri))
        } else {
            Uri::try_from(format!("{}{path_and_query}", self.base_path))
        };
        let Ok(uri) = uri else {
            return error_response(StatusCode::BAD_REQUEST, "invalid_request");
        };
        // HTTP/2 requests name their host in the URI (`:authority`), not in `Host`.
        let original_host = parts.headers.get(header::HOST).cloned().or_else(|| {
            let authority = parts.uri.authority()?;
            HeaderValue::from_str(authority.as_str()).ok()
        });
        let trailers = accepts_trailers(&parts.headers);
        // Identity and (unless trusted) forwarding headers go in the same pass: only the
        // gate and this proxy may set them.
        let trust_forwarded = self.trust_forwarded_headers
            || parts
                .extensions
                .get::<ClientAddr>()
                .is_some_and(|ClientAddr(peer)| {
                    self.trusted_proxies.contains(&peer.ip().to_canonical())
                });
        remove_hop_by_hop(&mut parts.headers, |name| {
            is_client_only(name) || (!trust_forwarded && is_forwarding(name))
        });
        if trailers {
            // gRPC requires it; it says nothing about the connection, only about the response.
            parts
                .headers
                .insert(header::TE, HeaderValue::from_static("trailers"));
        }
        if upgrade.is_some() {
            parts.headers.insert(header::UPGRADE, WEBSOCKET);
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        }
        write_identity(
            &self.forwarded_claims,
            &parts.extensions,
            &mut parts.headers,
        );
        self.set_forwarded(
            &parts.extensions,
            original_host.as_ref(),
            &mut parts.headers,
        );
        if !self.preserve_host || original_host.is_none() {
            parts.headers.insert(header::HOST, self.host.clone());
        }
        parts.uri = uri;
        parts.version = http::Version::HTTP_11;
        parts.extensions = http::Extensions::new();

        let body_state = Arc::new(BodyState::default());
        let body = TimedBody::new(body, self.body_read_timeout, body_state.clone());
        let request = Request::from_parts(parts, body);
        let upstream = async {
            match upgrade {
                // Boxed for the same reason as a new connection: rare and large.
                Some(_) => Box::pin(self.pool.send_upgrade(request)).await,
                None => self.pool.send(request).await,
            }
        };
        match tokio::time::timeout(self.timeout, upstream).await {
            Ok(Ok(mut response)) => {
                let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
                // Only a WebSocket is relayed: a switch to anything else (h2c) would hand the
                // client a tunnel to the upstream whose requests the gate never sees.
                if switching && !is_websocket(response.headers().get(header::UPGRADE)) {
                    tracing::warn!(upstream = %self.authority, "the upstream switched to a protocol other than WebSocket");
                    return error_response(StatusCode::BAD_GATEWAY, "bad_gateway");
                }
                let switched = upgrade
                    .filter(|_| switching)
                    .map(|upgrade| (upgrade, hyper::upgrade::on(&mut response)));
                let (mut parts, body) = response.into_parts();
                remove_hop_by_hop(&mut parts.headers, |_| false);
                if let Some((upgrade, upstream)) = switched {
                    parts.headers.insert(header::UPGRADE, WEBSOCKET);
                    parts
                        .headers
                        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
                    tokio::spawn(relay(upgrade, upstream));
                }
                Response::from_parts(parts, Either::Left(body))
            }
            Ok(Err(_)) if body_state.timed_out() => {
                tracing::info!(timeout = ?self.body_read_timeout, "the client stopped sending its request body");
                error_response(StatusCode::REQUEST_TIMEOUT, "request_timeout")
            }
            Ok(Err(_)) if body_state.malformed() => {
                tracing::info!("the client's request body could not be read");
                error_response(StatusCode::BAD_REQUEST, "invalid_request")
            }
            Ok(Err(error)) => {
                tracing::warn!(upstream = %self.authority, %error, "upstream unreachable");
                error_response(StatusCode::BAD_GATEWAY, "bad_gateway")
            }
            // The upstream was still waiting for the client's body: the client is the slow one.
            Err(_) if body_state.client_is_awaited() => {
                tracing::info!(timeout = ?self.timeout, "the client stopped sending its request body");
                error_response(StatusCode::REQUEST_TIMEOUT, "request_timeout")
            }
            Err(_) => {
                tracing::warn!(upstream = %self.authority, timeout = ?self.timeout, "upstream timed out");
                error_response(StatusCode::GATEWAY_TIMEOUT, "gateway_timeout")
            }
        }
    }

    /// Adds `X-Forwarded-For`, `-Proto` and `-Host`; a client's own were removed already
    /// unless they are trusted.
    fn set_forwarded(
        &self,
        extensions: &http::Extensions,
        original_host: Option<&HeaderValue>,
        headers: &mut HeaderMap,
    ) {
        if let Some(ClientAddr(peer)) = extensions.get::<ClientAddr>() {
            let value = match headers.get(X_FORWARDED_FOR).map(HeaderValue::to_str) {
                Some(Ok(earlier)) => format!("{earlier}, {}", peer.ip()),
                _ => peer.ip().to_string(),
            };
            if let Ok(value) = HeaderValue::try_from(value) {
                headers.insert(X_FORWARDED_FOR, value);
            }
        }
        if !headers.contains_key(X_FORWARDED_PROTO) {
            headers.insert(
                X_FORWARDED_PROTO,
                HeaderValue::from_static(self.forwarded_proto),
            );
        }
        if let Some(host) = original_host {
            if !headers.contains_key(X_FORWARDED_HOST) {
                headers.insert(X_FORWARDED_HOST, host.clone());
            }
        }
    }
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// A WebSocket upgrade the proxy relays once the upstream switches protocols.
struct Upgrade {
    /// The client's connection, handed over once its `101` is sent.
    client: hyper::upgrade::OnUpgrade,
    /// The client connection's slot under the connection cap, held until the relay ends.
    slot: Option<ConnectionSlot>,
}

/// Whether `request` is an HTTP/1.1 WebSocket handshake (`GET`, `Connection: upgrade`,
/// `Upgrade` naming `websocket`). Any other request's upgrade headers are dropped as
/// hop-by-hop, and a handshake's is asked for again as [`WEBSOCKET`] alone, so the upstream is
/// never offered another protocol (h2c, TLS) to switch to.
fn is_websocket_handshake(request: &Request<Incoming>) -> bool {
    if request.method() != http::Method::GET || request.version() != http::Version::HTTP_11 {
        return false;
    }
    let headers = request.headers();
    let Some(upgrade) = headers.get(header::UPGRADE) else {
        return false;
    };
    let named = |value: &HeaderValue, token: &str| {
        value.to_str().is_ok_and(|value| {
            value
                .split(',')
                .any(|item| item.trim().eq_ignore_ascii_case(token))
        })
    };
    let connection = headers.get_all(header::CONNECTION).iter();
    let asked = connection.into_iter().any(|value| named(value, "upgrade"));
    asked && headers.get_all(header::UPGRADE).iter().count() == 1 && named(upgrade, "websocket")
}

/// The one protocol the proxy switches to.
const WEBSOCKET: HeaderValue = HeaderValue::from_static("websocket");

/// Whether an upstream's `101` names WebSocket, and nothing else, as the protocol switched to.
fn is_websocket(accepted: Option<&HeaderValue>) -> bool {
    accepted.is_some_and(|protocol| {
        protocol
            .as_bytes()
            .trim_ascii()
            .eq_ignore_ascii_case(b"websocket")
    })
}

/// Whether the client said it accepts trailers (`TE: trailers`), as gRPC clients must.
fn accepts_trailers(headers: &HeaderMap) -> bool {
    headers.get_all(header::TE).iter().any(|value| {
        value.to_str().is_ok_and(|value| {
            value
                .split(',')
                .any(|item| item.split(';').next().unwrap_or("").trim() == "trailers")
        })
    })
}

/// Relays bytes both ways between the client and the upstream once both have switched,
/// until either side closes. Frames are not parsed: their sizes and pings are the two ends'.
async fn relay(upgrade: Upgrade, upstream: hyper::upgrade::OnUpgrade) {
    let (client, upstream) = match tokio::try_join!(upgrade.client, upstream) {
        Ok(both) => both,
        Err(error) => {
            tracing::debug!(%error, "an upgraded connection failed before the relay");
            return;
        }
    };
    let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
    if let Err(error) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        tracing::debug!(%error, "an upgraded connection ended with an error");
    }
    drop(upgrade.slot);
}

/// HTTP/2 clients may split `Cookie` into one field per cookie; an HTTP/1.1 server expects
/// one line, joined with `; ` (RFC 9113 §8.2.3), and may read only the first of several.
fn join_cookies(headers: &mut HeaderMap) {
    if headers.get_all(header::COOKIE).iter().nth(1).is_none() {
        return;
    }
    let mut joined = Vec::new();
    for (index, cookie) in headers.get_all(header::COOKIE).iter().enumerate() {
        if index > 0 {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(cookie.as_bytes());
    }
    // Made of valid header values and `; `: valid.
    if let Ok(joined) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, joined);
    }
}

/// Removes the headers that describe one connection rather than the request (RFC 9110
/// §7.6.1: those `Connection` names, and the ones always hop-by-hop, `proxy-*` too) and
/// those `also` picks, in one pass over the names.
fn remove_hop_by_hop(headers: &mut HeaderMap, also: impl Fn(&HeaderName) -> bool) {
    let mut doomed = names_where(headers, |name| is_hop_by_hop(name) || also(name));
    // Each name `Connection` lists is read once (a long list read again for every header
    // would cost a request's headers times its length), and made a name only if present.
    let listed = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim);
    for token in listed {
        if headers.contains_key(token) {
            doomed.extend(HeaderName::try_from(token).ok());
        }
    }
    remove_all(headers, doomed);
}

/// Hop-by-hop whatever `Connection` says. `Upgrade` too: a switch the proxy relays is asked
/// for again by the proxy itself.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TE
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
        || name.as_str() == "keep-alive"
        // Only meaningful with an h2c upgrade, which is never relayed (RFC 7540 §3.2.1).
        || name.as_str() == "http2-settings"
        || name.as_str().starts_with("proxy-")
}

/// The headers that say who the client is and how it reached the proxy: a client's own are
/// not passed on unless the operator trusts the hop before. Every `x-forwarded-*`, not only
/// the three this proxy sets: frameworks behind one trusted hop also read `-Prefix`, `-Port`
/// and `-Ssl` (Spring, Werkzeug's `ProxyFix`, ASP.NET Core), and the client-address headers
/// other proxies set.
fn is_forwarding(name: &HeaderName) -> bool {
    const CLIENT_ADDRESS: [&str; 4] = ["forwarded", "x-real-ip", "true-client-ip", "x-client-ip"];
    starts_as(name, "x-forwarded-")
        || CLIENT_ADDRESS
            .iter()
            .any(|header| crate::paths::reads_as(name.as_str(), header))
}

/// A path an application may route by instead of the request line's (`X-Original-URL`,
/// `X-Rewrite-URL`: older Symfony, Zend and Drupal, behind IIS rewrites): the gate judged the
/// request line, so no client may name another path. Nobody honest sends them to a proxy.
pub(super) fn is_path_override(name: &HeaderName) -> bool {
    ["x-original-url", "x-rewrite-url"]
        .iter()
        .any(|header| crate::paths::reads_as(name.as_str(), header))
}

/// `x-auth-*`, and `x_auth_*` too.
fn is_identity(name: &HeaderName) -> bool {
    starts_as(name, IDENTITY_PREFIX)
}

fn starts_as(name: &HeaderName, prefix: &str) -> bool {
    crate::paths::starts_as(name.as_str(), prefix)
}

/// Removes every `x-auth-*` header: only the gate may set them.
pub(super) fn remove_identity(headers: &mut HeaderMap) {
    let doomed = names_where(headers, is_identity);
    remove_all(headers, doomed);
}

/// What no client may send on, in headers or in a request body's trailers: identity
/// headers, and paths other than the one judged.
fn is_client_only(name: &HeaderName) -> bool {
    is_identity(name) || is_path_override(name)
}

/// Removes every [`is_client_only`] header.
pub(super) fn remove_client_only(headers: &mut HeaderMap) {
    let doomed = names_where(headers, is_client_only);
    remove_all(headers, doomed);
}

/// The names of `headers` that `doomed` picks, in one pass (none, as is usual, allocates
/// nothing).
fn names_where(headers: &HeaderMap, doomed: impl Fn(&HeaderName) -> bool) -> Vec<HeaderName> {
    headers
        .keys()
        .filter(|name| doomed(name))
        .cloned()
        .collect()
}

/// Removes every value of each of `names`.
fn remove_all(headers: &mut HeaderMap, names: Vec<HeaderName>) {
    for name in names {
        headers.remove(name);
    }
}

pub(super) fn error_response(status: StatusCode, code: &'static str) -> Response<GatewayBody> {
    let body = format!("{{\"error\":\"{code}\"}}");
    let body = Full::new(Bytes::from(body)).map_err(|never| match never {});
    let mut response = Response::new(Either::Right(body.boxed_unsync()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
