//! `RedisRevocations` against real Redis servers: the shared one on `REDIS_URL` (default
//! `redis://127.0.0.1:6379`) for sharing, expiry and strict mode, and private `redis-server`
//! processes, stopped and restarted mid-test, for the failure cases.
//!
//! Every test works under a random key prefix, so tests run in parallel and twice in a row.

use crate::common;
use crate::common::redis::redis_url;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::Empty;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use jwt_gate::clock::{Clock, SystemClock};
use jwt_gate::revocation::{
    RedisRevocations, RedisRevocationsBuilder, RevocationCheck, RevocationStore, TokenId,
};
use jwt_gate::service::AuthService;
use jwt_gate::store::MemoryUserStore;
use jwt_gate::{Claims, JwtAuthLayer, Keys, TokenVerifier};
use redis::aio::MultiplexedConnection;

const SECRET: &[u8] = b"a test secret of at least 32 bytes";
/// How long any wait for something that should happen promptly may last before the test
/// fails: generous, since machines are noisy; polling returns as soon as it happens.
const DEADLINE: Duration = Duration::from_secs(15);
/// The operation timeout on the shared server, where no test expects one to run out.
const PATIENT: Duration = Duration::from_secs(10);

fn now() -> u64 {
    SystemClock.now()
}

fn random_hex() -> String {
    let mut bytes = [0_u8; 8];
    getrandom::getrandom(&mut bytes).unwrap();
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// A random key prefix whose keys are deleted when the test ends, pass or fail.
struct Prefix {
    url: String,
    name: String,
}

impl Prefix {
    fn fresh_on(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            name: format!("jwt-gate-test:{}:", random_hex()),
        }
    }

    fn fresh() -> Self {
        Self::fresh_on(&redis_url())
    }

    /// Options for the shared server, which never goes away: a stall of the loaded machine
    /// (seconds, on two busy cores) must not look like an outage, so every limit is long.
    fn connect(&self) -> RedisRevocationsBuilder {
        RedisRevocations::connect(&self.url)
            .key_prefix(&self.name)
            .timeout(PATIENT)
    }

    /// Options for a private server the test stops: outages must be noticed well within
    /// [`DEADLINE`], yet a stall of a second or so must still not count as one.
    fn connect_expecting_outages(&self) -> RedisRevocationsBuilder {
        RedisRevocations::connect(&self.url)
            .key_prefix(&self.name)
            .timeout(Duration::from_secs(2))
            .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(300))
            .heartbeat(Duration::from_secs(1))
    }
}

impl Drop for Prefix {
    fn drop(&mut self) {
        let Ok(client) = redis::Client::open(self.url.as_str()) else {
            return;
        };
        let Ok(mut connection) = client.get_connection_with_timeout(Duration::from_millis(500))
        else {
            return; // a stopped private server took its keys with it
        };
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}*", self.name))
            .query(&mut connection)
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: Result<(), _> = redis::cmd("DEL").arg(keys).query(&mut connection);
        }
    }
}

async fn raw_connection(url: &str) -> MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

fn token<'a>(jti: &'a str, sub: &'a str, iat: u64) -> TokenId<'a> {
    TokenId {
        jti,
        sub,
        issuer: None,
        sid: None,
        iat,
        exp: iat + 900,
    }
}

/// The store's answer, waiting for it if it needs I/O.
async fn answer(store: &impl RevocationStore, token: &TokenId<'_>) -> &'static str {
    match store.check(token) {
        RevocationCheck::Pending(pending) => describe(pending.await),
        immediate => describe(immediate),
    }
}

fn describe(check: RevocationCheck) -> &'static str {
    match check {
        RevocationCheck::Valid => "valid",
        RevocationCheck::Revoked => "revoked",
        RevocationCheck::Unavailable => "unavailable",
        RevocationCheck::Pending(_) => "pending twice",
    }
}

/// Polls `probe` until it returns `expected` or the deadline passes; returns the last answer.
async fn eventually<T, F, Fut>(expected: T, mut probe: F) -> T
where
    T: PartialEq + std::fmt::Debug,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        let seen = probe().await;
        if seen == expected || Instant::now() >= deadline {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A gate in front of a one-route app, on an ephemeral port.
async fn serve_gate(revocations: RedisRevocations) -> SocketAddr {
    let verifier = TokenVerifier::builder(Keys::hs256(SECRET).unwrap())
        .revocations(revocations)
        .build();
    let app = Router::new()
        .route("/me", get(|| async { "ok" }))
        .layer(JwtAuthLayer::new(verifier));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    address
}

fn http_client() -> Client<HttpConnector, Empty<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

async fn status_at(
    client: &Client<HttpConnector, Empty<Bytes>>,
    gate: SocketAddr,
    token: &str,
) -> StatusCode {
    let request = Request::get(format!("http://{gate}/me"))
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Empty::new())
        .unwrap();
    client.request(request).await.unwrap().status()
}

fn signed(claims: &Claims) -> String {
    Keys::hs256(SECRET).unwrap().sign(claims).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_is_seen_by_another_instance_and_by_one_started_later() {
    let prefix = Prefix::fresh();
    let first = prefix.connect().await.unwrap();
    let second = prefix.connect().await.unwrap();
    let iat = now();
    let (revoked, kept) = (
        token("revoked-jti", "alice", iat),
        token("kept-jti", "alice", iat),
    );

    assert_eq!(answer(&second, &revoked).await, "valid");
    first.revoke(revoked.jti, revoked.exp).await.unwrap();

    assert_eq!(
        answer(&first, &revoked).await,
        "revoked",
        "at once where revoked"
    );
    assert_eq!(
        eventually("revoked", || answer(&second, &revoked)).await,
        "revoked"
    );
    assert!(
        matches!(second.check(&kept), RevocationCheck::Valid),
        "mirror mode answers at once, without I/O"
    );

    let later = prefix.connect().await.unwrap();
    assert_eq!(
        answer(&later, &revoked).await,
        "revoked",
        "loaded at start, without waiting for any announcement"
    );
    assert_eq!(answer(&later, &kept).await, "valid");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_subscription_ends_with_the_last_clone() {
    let prefix = Prefix::fresh();
    let store = prefix.connect().await.unwrap();
    let clone = store.clone();
    let raw = raw_connection(&redis_url()).await;
    let channel = format!("{}revocations", prefix.name);
    let subscribers = || {
        let (mut raw, channel) = (raw.clone(), channel.clone());
        async move {
            let (_, count): (String, u32) = redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg(&channel)
                .query_async(&mut raw)
                .await
                .unwrap();
            count
        }
    };
    assert_eq!(subscribers().await, 1);
    drop(store);
    assert_eq!(subscribers().await, 1, "a clone still uses it");
    drop(clone);
    assert_eq!(eventually(0, subscribers).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_through_gate_a_is_refused_by_gate_b() {
    let prefix = Prefix::fresh();
    let store_a = prefix.connect().await.unwrap();
    let gate_a = serve_gate(store_a.clone()).await;
    let gate_b = serve_gate(prefix.connect().await.unwrap()).await;
    let client = http_client();
    let claims = Claims::new("alice", now(), now() + 600);
    let bearer = signed(&claims);
    assert_eq!(status_at(&client, gate_a, &bearer).await, StatusCode::OK);
    assert_eq!(status_at(&client, gate_b, &bearer).await, StatusCode::OK);

    let started = Instant::now();
    store_a.revoke(&claims.jti, claims.exp).await.unwrap();
    let acknowledged = started.elapsed();
    assert_eq!(
        status_at(&client, gate_a, &bearer).await,
        StatusCode::UNAUTHORIZED
    );
    let refused = eventually(StatusCode::UNAUTHORIZED, || {
        status_at(&client, gate_b, &bearer)
    })
    .await;
    let propagated = started.elapsed();
    assert_eq!(refused, StatusCode::UNAUTHORIZED);
    println!(
        "revocation acknowledged by Redis after {acknowledged:?}; \
         gate B refused the token {propagated:?} after the logout began (measured over HTTP, polling every 10 ms)"
    );
}

/// The auth service behind a gate, revoking through `revocations`; several of them on one
/// prefix are a fleet, each gate with a mirror of its own.
async fn serve_auth(revocations: RedisRevocations) -> SocketAddr {
    let verifier = TokenVerifier::builder(common::keys())
        .revocations(revocations)
        .build();
    let auth = AuthService::new(verifier.clone(), MemoryUserStore::new());
    common::serve(common::app(verifier, auth)).await
}

fn json_field(json: &serde_json::Value, name: &str) -> String {
    json[name].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_refuses_every_token_of_the_session_at_another_gate() {
    let prefix = Prefix::fresh();
    let stack = serve_auth(prefix.connect().await.unwrap()).await;
    let gate_b = serve_auth(prefix.connect().await.unwrap()).await;
    let login = common::session(stack, "alice").await;
    let sibling = common::refresh(stack, &json_field(&login, "refresh_token"))
        .await
        .json();
    let sibling_access = json_field(&sibling, "access_token");
    let other = common::session(stack, "alice").await;
    assert_eq!(
        common::me(gate_b, &sibling_access).await.status,
        StatusCode::OK
    );

    let logout = common::with_bearer(
        stack,
        http::Method::POST,
        "/auth/logout",
        &json_field(&login, "access_token"),
    )
    .await;
    assert_eq!(logout.status, StatusCode::OK);
    let refused = eventually(StatusCode::UNAUTHORIZED, || async {
        common::me(gate_b, &sibling_access).await.status
    })
    .await;
    assert_eq!(refused, StatusCode::UNAUTHORIZED);
    assert_eq!(
        common::me(gate_b, &json_field(&other, "access_token"))
            .await
            .status,
        StatusCode::OK
    );
    // A gate started afterwards loads the session's revocation from Redis.
    let gate_c = serve_auth(prefix.connect().await.unwrap()).await;
    assert_eq!(
        common::me(gate_c, &sibling_access).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_all_refuses_earlier_sessionless_tokens_at_another_gate() {
    let prefix = Prefix::fresh();
    let stack = serve_auth(prefix.connect().await.unwrap()).await;
    let gate_b = serve_auth(prefix.connect().await.unwrap()).await;
    let login = common::session(stack, "bob").await;
    let issued = now();
    let sessionless = common::keys()
        .sign(&Claims::new("bob", issued - 10, issued + 600))
        .unwrap();
    assert_eq!(
        common::me(gate_b, &sessionless).await.status,
        StatusCode::OK
    );

    let logout = common::with_bearer(
        stack,
        http::Method::POST,
        "/auth/logout-all",
        &json_field(&login, "access_token"),
    )
    .await;
    assert_eq!(logout.status, StatusCode::OK);
    let refused = eventually(StatusCode::UNAUTHORIZED, || async {
        common::me(gate_b, &sessionless).await.status
    })
    .await;
    assert_eq!(refused, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subject_cutoff_revokes_only_that_subjects_older_tokens() {
    let prefix = Prefix::fresh();
    let first = prefix.connect().await.unwrap();
    let second = prefix.connect().await.unwrap();
    let cutoff = now();
    first
        .revoke_subject("alice", cutoff, cutoff + 900)
        .await
        .unwrap();

    let older = token("older", "alice", cutoff - 1);
    assert_eq!(
        eventually("revoked", || answer(&second, &older)).await,
        "revoked"
    );
    assert_eq!(
        answer(&second, &token("newer", "alice", cutoff)).await,
        "valid"
    );
    assert_eq!(
        answer(&second, &token("other", "bob", cutoff - 1)).await,
        "valid"
    );
    let later = prefix.connect().await.unwrap();
    assert_eq!(answer(&later, &older).await, "revoked", "loaded at start");
}

/// Another issuer's subject is cut off under a name of its own: announced, loaded at start
/// and asked in strict mode alike, and never the verifier's own user of the same `sub`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_issuer_subject_cutoff_reaches_every_gate_and_only_that_issuers_subject() {
    let prefix = Prefix::fresh();
    let first = prefix.connect().await.unwrap();
    let second = prefix.connect().await.unwrap();
    let cutoff = now();
    let issuer = "https://idp.example/realms/a b";
    first
        .revoke_issuer_subject(issuer, "alice", cutoff, cutoff + 900)
        .await
        .unwrap();

    let theirs = TokenId {
        issuer: Some(issuer),
        ..token("theirs", "alice", cutoff - 1)
    };
    assert_eq!(
        eventually("revoked", || answer(&second, &theirs)).await,
        "revoked"
    );
    let own = token("own", "alice", cutoff - 1);
    assert_eq!(answer(&second, &own).await, "valid");
    let later = prefix.connect().await.unwrap();
    assert_eq!(answer(&later, &theirs).await, "revoked", "loaded at start");
    assert_eq!(answer(&later, &own).await, "valid");
    let strict = prefix.connect().strict().await.unwrap();
    assert_eq!(
        answer(&strict, &theirs).await,
        "revoked",
        "asked in strict mode"
    );
    assert_eq!(answer(&strict, &own).await, "valid");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subject_cutoff_is_never_lowered_by_an_earlier_one() {
    let prefix = Prefix::fresh();
    let store = prefix.connect().await.unwrap();
    let cutoff = now();
    store
        .revoke_subject("alice", cutoff, cutoff + 900)
        .await
        .unwrap();
    // Another gate whose clock runs behind logs alice out "again", earlier.
    store
        .revoke_subject("alice", cutoff - 100, cutoff + 800)
        .await
        .unwrap();

    let mut raw = raw_connection(&redis_url()).await;
    let key = format!("{}sub:alice", prefix.name);
    let (stored, expires_at): (u64, i64) = redis::pipe()
        .cmd("GET")
        .arg(&key)
        .cmd("EXPIRETIME")
        .arg(&key)
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(stored, cutoff);
    assert_eq!(
        expires_at,
        i64::try_from(cutoff + 900 + 300 + 1).unwrap(),
        "keep_until plus the grace, to its end"
    );
    let strict = prefix.connect().strict().await.unwrap();
    assert_eq!(
        answer(&strict, &token("x", "alice", cutoff - 50)).await,
        "revoked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_or_session_revoked_again_keeps_the_later_expiry() {
    // Two auth servers whose clocks disagree, or a logout then a refresh reuse, may revoke one
    // session twice with different expiries: the shorter must not let the session's tokens
    // back in before the longer one ends (every gate's memory keeps the later; Redis, which a
    // gate started later and every strict check read, must too).
    let prefix = Prefix::fresh();
    let store = prefix.connect().await.unwrap();
    let keep_until = now() + 900;
    store.revoke("jti-1", keep_until).await.unwrap();
    store.revoke("jti-1", keep_until - 100).await.unwrap();
    store
        .revoke_sessions(&["session-1", "session-2"], keep_until)
        .await
        .unwrap();
    store
        .revoke_sessions(&["session-1"], keep_until - 100)
        .await
        .unwrap();
    // Raising still works.
    store
        .revoke_sessions(&["session-2"], keep_until + 100)
        .await
        .unwrap();

    let raw = raw_connection(&redis_url()).await;
    let expiry = |key: String| {
        let mut raw = raw.clone();
        async move {
            redis::cmd("EXPIRETIME")
                .arg(&key)
                .query_async::<i64>(&mut raw)
                .await
                .unwrap()
        }
    };
    let grace_and_end = 300 + 1;
    let p = &prefix.name;
    assert_eq!(
        expiry(format!("{p}jti:jti-1")).await,
        i64::try_from(keep_until + grace_and_end).unwrap()
    );
    assert_eq!(
        expiry(format!("{p}sid:session-1")).await,
        i64::try_from(keep_until + grace_and_end).unwrap()
    );
    assert_eq!(
        expiry(format!("{p}sid:session-2")).await,
        i64::try_from(keep_until + 100 + grace_and_end).unwrap()
    );
    // The announcements still reach another gate, and a gate started now loads all three.
    let later = prefix.connect().await.unwrap();
    let mut session_token = token("other", "alice", now());
    session_token.sid = Some("session-1");
    assert_eq!(answer(&later, &session_token).await, "revoked");
    assert_eq!(
        answer(&later, &token("jti-1", "alice", now())).await,
        "revoked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_leave_redis_with_their_token() {
    let prefix = Prefix::fresh();
    // Short enough to watch the keys go, long enough that a stall of the loaded machine
    // between writing and reading them back cannot let them lapse first.
    let grace = 3;
    let store = prefix
        .connect()
        .grace(Duration::from_secs(grace))
        .await
        .unwrap();
    let expires_at = now() + 3;
    store.revoke("short-lived", expires_at).await.unwrap();
    store
        .revoke_subject("alice", expires_at - 1, expires_at)
        .await
        .unwrap();

    let mut raw = raw_connection(&redis_url()).await;
    let token_key = format!("{}jti:short-lived", prefix.name);
    let subject_key = format!("{}sub:alice", prefix.name);
    // EXPIRETIME answers -2 for a key that is gone and -1 for one that never expires:
    // read signed, so either is a failed assertion rather than a parse panic.
    let expiries: (i64, i64) = redis::pipe()
        .cmd("EXPIRETIME")
        .arg(&token_key)
        .cmd("EXPIRETIME")
        .arg(&subject_key)
        .query_async(&mut raw)
        .await
        .unwrap();
    // Through the second `exp + grace`, during which a gate whose leeway equals the grace
    // still accepts the token: Redis deletes a key when its second begins.
    let expected = i64::try_from(expires_at + grace + 1).unwrap();
    assert_eq!(expiries, (expected, expected), "exp plus grace, to its end");

    let remaining = eventually(0_u32, || {
        let mut raw = raw.clone();
        let (token_key, subject_key) = (token_key.clone(), subject_key.clone());
        async move {
            redis::cmd("EXISTS")
                .arg(&token_key)
                .arg(&subject_key)
                .query_async(&mut raw)
                .await
                .unwrap()
        }
    })
    .await;
    assert_eq!(remaining, 0, "both keys expired");
    let fresh = prefix.connect().strict().await.unwrap();
    assert_eq!(
        answer(&fresh, &token("short-lived", "alice", 0)).await,
        "valid"
    );
}

/// A mirror whose following task is gone (its runtime shut down) is frozen: it must not go on
/// answering "valid" as if it were current.
#[test]
fn a_mirror_whose_runtime_ended_fails_closed() {
    let prefix = Prefix::fresh();
    // One thread: the following task is spawned as `connect` ends, and may never have run
    // when the runtime goes, which must end it as surely as if it had.
    let setup = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = setup
        .block_on(std::future::IntoFuture::into_future(prefix.connect()))
        .unwrap();
    let alive = token("alive", "carol", now());
    assert_eq!(describe(store.check(&alive)), "valid");
    drop(setup);
    assert_eq!(describe(store.check(&alive)), "unavailable");
    assert!(!store.mirror_is_current());
}

/// A subject cut-off this version cannot read (another version's format, or one written by
/// hand) is not skipped at a reload: every token of that subject is refused until it expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_subject_cutoff_refuses_the_subject() {
    let prefix = Prefix::fresh();
    let mut raw = raw_connection(&redis_url()).await;
    let _: () = redis::cmd("SET")
        .arg(format!("{}sub:bob", prefix.name))
        .arg("1700000000.0")
        .arg("EX")
        .arg(600)
        .query_async(&mut raw)
        .await
        .unwrap();
    let store = prefix.connect().await.unwrap();
    assert_eq!(answer(&store, &token("t1", "bob", now())).await, "revoked");
    assert_eq!(answer(&store, &token("t2", "carol", now())).await, "valid");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_mode_asks_redis_on_every_check() {
    let prefix = Prefix::fresh();
    let strict = prefix.connect().strict().await.unwrap();
    let writer = prefix.connect().await.unwrap();
    let iat = now();
    let revoked = token("strict-revoked", "alice", iat);

    assert!(matches!(
        strict.check(&revoked),
        RevocationCheck::Pending(_)
    ));
    assert_eq!(answer(&strict, &revoked).await, "valid");
    writer.revoke(revoked.jti, revoked.exp).await.unwrap();
    assert_eq!(
        answer(&strict, &revoked).await,
        "revoked",
        "no propagation delay"
    );

    writer.revoke_subject("bob", iat, iat + 900).await.unwrap();
    assert_eq!(
        answer(&strict, &token("b1", "bob", iat - 1)).await,
        "revoked"
    );
    assert_eq!(answer(&strict, &token("b2", "bob", iat)).await, "valid");
    assert!(!strict.mirror_is_current(), "strict mode keeps no mirror");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_to_nothing_fails_and_a_bad_url_is_refused() {
    let port = free_port();
    assert!(
        RedisRevocations::connect(&format!("redis://127.0.0.1:{port}"))
            .timeout(Duration::from_millis(500))
            .await
            .is_err()
    );
    assert!(RedisRevocations::connect("not a url").await.is_err());
}

// ---- Failure cases, on private servers ----

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `redis-server` of this test's own, without persistence: stopped, it loses everything,
/// like a replaced server. Killed when dropped.
struct PrivateRedis {
    port: u16,
    password: String,
    process: Option<Child>,
}

impl PrivateRedis {
    fn start() -> Self {
        let mut server = Self {
            port: free_port(),
            password: random_hex(),
            process: None,
        };
        server.restart();
        server
    }

    fn url(&self) -> String {
        format!("redis://:{}@127.0.0.1:{}", self.password, self.port)
    }

    /// Starts the server on its port and waits until it answers.
    fn restart(&mut self) {
        assert!(self.process.is_none(), "already running");
        let process = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--requirepass", &self.password])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        self.process = Some(process);
        let deadline = Instant::now() + DEADLINE;
        let client = redis::Client::open(self.url()).unwrap();
        loop {
            let ready = client
                .get_connection_with_timeout(Duration::from_millis(200))
                .and_then(|mut connection| redis::cmd("PING").query::<String>(&mut connection));
            if ready.is_ok() {
                return;
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Freezes (`SIGSTOP`) or thaws (`SIGCONT`) the server: its connections stay open but
    /// nothing answers, as when a network path goes dark.
    fn signal(&self, signal: &str) {
        let process = self.process.as_ref().expect("running");
        let status = Command::new("kill")
            .args([signal, &process.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Kills the server, as a crash would.
    fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            let _ = process.kill();
            let _ = process.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A server that may evict keys with an expiry when its memory is full (managed services'
/// `volatile-lru`) could drop an acknowledged revocation: refused at start, naming the
/// setting. Without a memory limit, or with `noeviction`, nothing is evicted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_may_evict_revocations_is_refused_at_start() {
    let server = PrivateRedis::start();
    let mut raw = raw_connection(&server.url()).await;
    let set = |name: &'static str, value: &'static str| {
        redis::cmd("CONFIG").arg("SET").arg(name).arg(value).clone()
    };
    set("maxmemory-policy", "volatile-lru")
        .query_async::<()>(&mut raw)
        .await
        .unwrap();
    assert!(
        RedisRevocations::connect(&server.url()).await.is_ok(),
        "no memory limit: nothing is evicted"
    );
    set("maxmemory", "100mb")
        .query_async::<()>(&mut raw)
        .await
        .unwrap();
    for strict in [false, true] {
        let mut builder = RedisRevocations::connect(&server.url());
        if strict {
            builder = builder.strict();
        }
        let error = builder.await.map(|_| ()).unwrap_err().to_string();
        assert!(
            error.contains("maxmemory-policy is \"volatile-lru\"") && error.contains("noeviction"),
            "{error}"
        );
        assert!(!error.contains(&server.password), "{error}");
    }
    set("maxmemory-policy", "noeviction")
        .query_async::<()>(&mut raw)
        .await
        .unwrap();
    assert!(RedisRevocations::connect(&server.url()).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_redis_is_down_logouts_fail_and_checks_fail_closed_until_it_is_back() {
    let mut server = PrivateRedis::start();
    let prefix = Prefix::fresh_on(&server.url());
    let store = prefix.connect_expecting_outages().await.unwrap();
    let gate = serve_gate(store.clone()).await;
    let client = http_client();
    let iat = now();
    let before = token("revoked-before", "alice", iat);
    store.revoke(before.jti, before.exp).await.unwrap();
    let claims = Claims::new("alice", iat, iat + 600);
    let bearer = signed(&claims);
    assert_eq!(status_at(&client, gate, &bearer).await, StatusCode::OK);
    let valid = token("never-revoked", "alice", iat);

    server.stop();
    let during = token("revoked-during", "alice", iat);
    assert!(
        store.revoke(during.jti, during.exp).await.is_err(),
        "a logout is never acknowledged unless stored"
    );
    assert!(store.revoke_subject("alice", iat, iat + 900).await.is_err());
    assert_eq!(
        eventually("unavailable", || answer(&store, &valid)).await,
        "unavailable"
    );
    assert!(!store.mirror_is_current());
    assert_eq!(
        status_at(&client, gate, &bearer).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        answer(&store, &token("revoked-during", "alice", iat)).await,
        "unavailable",
        "the failed revocation was not recorded as if it had worked, nor anything else"
    );

    server.restart();
    // Made while this gate was cut off: stored, never announced to it.
    let missed = token("revoked-while-disconnected", "alice", iat);
    let mut raw = raw_connection(&server.url()).await;
    let _: () = redis::cmd("SET")
        .arg(format!("{}jti:{}", prefix.name, missed.jti))
        .arg(1)
        .arg("EX")
        .arg(900)
        .query_async(&mut raw)
        .await
        .unwrap();
    // The gate may have subscribed again before that write (its backoff is short): end its
    // subscription, so that it subscribes and re-reads after the write, as it would after
    // any outage, and what is tested stays the re-read, not the race.
    let _: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut raw)
        .await
        .unwrap();

    assert_eq!(
        eventually("revoked", || answer(&store, &missed)).await,
        "revoked",
        "re-read after reconnecting"
    );
    // From here on every answer is awaited with `eventually`: a stall of the loaded machine
    // may briefly mark the mirror stale again ("unavailable"), while a mirror that lost an
    // entry would answer wrongly until the deadline.
    assert!(eventually(true, || std::future::ready(store.mirror_is_current())).await);
    assert_eq!(
        eventually("revoked", || answer(&store, &before)).await,
        "revoked",
        "the mirror kept it"
    );
    assert_eq!(
        eventually(StatusCode::OK, || status_at(&client, gate, &bearer)).await,
        StatusCode::OK
    );
    store.revoke(during.jti, during.exp).await.unwrap();
    assert_eq!(
        eventually("revoked", || answer(&store, &during)).await,
        "revoked"
    );
    store.revoke(&claims.jti, claims.exp).await.unwrap();
    assert_eq!(
        eventually(StatusCode::UNAUTHORIZED, || status_at(
            &client, gate, &bearer
        ))
        .await,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusting_the_mirror_keeps_answering_while_redis_is_down() {
    let mut server = PrivateRedis::start();
    let prefix = Prefix::fresh_on(&server.url());
    let store = prefix
        .connect_expecting_outages()
        .trust_mirror_while_disconnected()
        .await
        .unwrap();
    let iat = now();
    let revoked = token("revoked", "alice", iat);
    store.revoke(revoked.jti, revoked.exp).await.unwrap();

    server.stop();
    assert!(
        !eventually(false, || std::future::ready(store.mirror_is_current())).await,
        "the outage was noticed"
    );
    assert_eq!(answer(&store, &revoked).await, "revoked");
    assert_eq!(answer(&store, &token("other", "alice", iat)).await, "valid");
    assert!(store.revoke("another", iat + 900).await.is_err());

    server.restart();
    assert!(eventually(true, || std::future::ready(store.mirror_is_current())).await);
    store.revoke("another", iat + 900).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_checks_fail_closed_while_redis_is_down_and_recover() {
    let mut server = PrivateRedis::start();
    let prefix = Prefix::fresh_on(&server.url());
    let store = prefix.connect_expecting_outages().strict().await.unwrap();
    let probe = token("j", "alice", now());
    assert_eq!(answer(&store, &probe).await, "valid");

    server.stop();
    assert_eq!(answer(&store, &probe).await, "unavailable");
    assert!(store.revoke(probe.jti, probe.exp).await.is_err());

    server.restart();
    assert_eq!(
        eventually("valid", || answer(&store, &probe)).await,
        "valid"
    );
    store.revoke(probe.jti, probe.exp).await.unwrap();
    assert_eq!(
        eventually("revoked", || answer(&store, &probe)).await,
        "revoked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_output_never_shows_the_password() {
    let server = PrivateRedis::start();
    let prefix = Prefix::fresh_on(&server.url());
    let builder = prefix.connect_expecting_outages();
    let described = format!("{builder:?}");
    assert!(!described.contains(&server.password), "{described}");
    assert!(described.contains(&format!("127.0.0.1:{}", server.port)));

    for store in [
        builder.await.unwrap(),
        prefix.connect_expecting_outages().strict().await.unwrap(),
    ] {
        let described = format!("{store:?}");
        assert!(!described.contains(&server.password), "{described}");
        assert!(described.contains(&format!("127.0.0.1:{}", server.port)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_stops_answering_without_closing_is_noticed_and_recovered_from() {
    let server = PrivateRedis::start();
    let prefix = Prefix::fresh_on(&server.url());
    let store = prefix.connect_expecting_outages().await.unwrap();
    let probe = token("j", "alice", now());
    assert_eq!(answer(&store, &probe).await, "valid");

    server.signal("-STOP");
    assert_eq!(
        eventually("unavailable", || answer(&store, &probe)).await,
        "unavailable",
        "the heartbeat noticed the silence"
    );
    // Whether Redis applies this write once thawed is not knowable from here (the request
    // may sit in its socket buffer): the caller was told it failed, and may retry.
    assert!(
        store.revoke("frozen-write", probe.exp).await.is_err(),
        "a write times out rather than hanging"
    );

    server.signal("-CONT");
    assert_eq!(
        eventually("valid", || answer(&store, &probe)).await,
        "valid"
    );
    store.revoke(probe.jti, probe.exp).await.unwrap();
    assert_eq!(
        eventually("revoked", || answer(&store, &probe)).await,
        "revoked"
    );
}

/// With feature `metrics`: the mirror says it is current and when it last re-read Redis, and
/// the entries it holds are counted. The test's runtime has one thread, on which its own
/// recorder stands in for the process's: the subscription task runs there too.
#[tokio::test]
async fn the_mirror_reports_its_state_and_its_entries() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let exposition = recorder.handle();
    let _recording = metrics::set_default_local_recorder(&recorder);
    let prefix = Prefix::fresh();
    let store = prefix.connect().await.unwrap();
    store.revoke("a-revoked-jti", now() + 600).await.unwrap();
    store.revoke("a-revoked-jti", now() + 600).await.unwrap();

    let text = exposition.render();
    for series in [
        "jwt_gate_revocation_mirror_current 1",
        "jwt_gate_revocation_entries{kind=\"token\"} 1",
    ] {
        assert!(text.contains(series), "no {series} in\n{text}");
    }
    let resynced: f64 = text
        .lines()
        .find_map(|line| {
            line.strip_prefix("jwt_gate_revocation_mirror_last_resync_timestamp_seconds ")
        })
        .unwrap_or_else(|| panic!("no resync time in\n{text}"))
        .parse()
        .unwrap();
    assert!((resynced - now() as f64).abs() < 600.0, "{resynced}");
}
