//! Failed logins slow down: per username, per client address, with growing delays.

use crate::common;

use std::sync::{Arc, Condvar, Mutex};

use common::*;
use http::{Method, StatusCode};
use jwt_gate::clock::ManualClock;
use jwt_gate::service::{
    Argon2Hasher, AuthService, AuthServiceBuilder, HashError, LoginThrottle, PasswordHasher,
    RegistrationThrottle, Verdict,
};
use jwt_gate::store::MemoryUserStore;
use jwt_gate::store::UserStore as _;
use jwt_gate::TokenVerifier;

/// Fails logins for `username` until throttled; returns how many attempts were answered
/// before the first 429, and that 429.
async fn fail_until_throttled(
    addr: std::net::SocketAddr,
    username: &str,
    limit: usize,
) -> (usize, Answer) {
    for attempt in 0..limit {
        let reply = login(addr, username, "wrong password").await;
        if reply.status == StatusCode::TOO_MANY_REQUESTS {
            return (attempt, reply);
        }
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    }
    panic!("never throttled after {limit} attempts");
}

#[tokio::test]
async fn repeated_failures_on_one_username_get_429_with_retry_after() {
    let stack = stack().await;
    register(stack.addr, "alice", PASSWORD).await;
    let (answered, throttled) = fail_until_throttled(stack.addr, "alice", 10).await;
    assert_eq!(
        answered, 6,
        "five free failures, the sixth sets the first delay"
    );
    let retry_after: u64 = throttled.header("retry-after").unwrap().parse().unwrap();
    assert!(retry_after >= 1);
    assert_eq!(throttled.json()["error"], "too_many_attempts");
    // The right password does not slip past the throttle, and the answer is the same.
    assert_eq!(
        login(stack.addr, "alice", PASSWORD).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    // Other names from the same address are not held up yet.
    register(stack.addr, "bob", PASSWORD).await;
    assert_eq!(
        login(stack.addr, "bob", PASSWORD).await.status,
        StatusCode::OK
    );
    // Unknown names are throttled the same way, so the 429 tells nothing either.
    let (answered, _) = fail_until_throttled(stack.addr, "nobody-here", 10).await;
    assert_eq!(answered, 6);
}

#[tokio::test]
async fn delays_grow_and_expire_with_time() {
    let clock = ManualClock::starting_now();
    let verifier = TokenVerifier::builder(keys()).clock(clock.clone()).build();
    let auth = AuthService::new(verifier.clone(), MemoryUserStore::new());
    let addr = serve(app(verifier, auth)).await;
    register(addr, "carol", PASSWORD).await;
    let (_, first) = fail_until_throttled(addr, "carol", 10).await;
    assert_eq!(first.header("retry-after"), Some("1"));
    clock.advance(1);
    let (answered, second) = fail_until_throttled(addr, "carol", 10).await;
    assert_eq!(answered, 1);
    assert_eq!(second.header("retry-after"), Some("2"));
    clock.advance(2);
    let (_, third) = fail_until_throttled(addr, "carol", 10).await;
    assert_eq!(third.header("retry-after"), Some("4"));
    // Fifteen quiet minutes later, the slate is clean, and a good login works.
    clock.advance(15 * 60);
    assert_eq!(login(addr, "carol", PASSWORD).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_successful_login_clears_the_usernames_count() {
    let stack = stack().await;
    register(stack.addr, "dave", PASSWORD).await;
    for _ in 0..2 {
        for _ in 0..4 {
            assert_eq!(
                login(stack.addr, "dave", "wrong password").await.status,
                StatusCode::BAD_REQUEST
            );
        }
        assert_eq!(
            login(stack.addr, "dave", PASSWORD).await.status,
            StatusCode::OK
        );
    }
}

#[tokio::test]
async fn spraying_many_usernames_from_one_address_is_throttled() {
    let stack = stack().await;
    let mut statuses = Vec::new();
    for i in 0..25 {
        // A spoofed X-Forwarded-For changes nothing: no proxy is trusted.
        let forwarded = format!("198.51.100.{i}");
        let body = format!("username=user{i}&password=Summer2024%21");
        let reply = call(
            stack.addr,
            Method::POST,
            "/auth/token",
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("x-forwarded-for", &forwarded),
            ],
            body,
        )
        .await;
        statuses.push(reply.status);
    }
    let first_throttled = statuses
        .iter()
        .position(|status| *status == StatusCode::TOO_MANY_REQUESTS)
        .expect("throttled");
    assert_eq!(
        first_throttled, 21,
        "twenty free failures per address, then a delay"
    );
}

#[tokio::test]
async fn forwarded_for_is_believed_only_from_a_trusted_proxy() {
    // The proxy as written, and as a dual-stack listener would show it (which an operator
    // may copy from a log): the same address.
    for proxy in ["127.0.0.1", "::ffff:127.0.0.1"] {
        let stack = stack_with(|auth| {
            auth.trusted_proxies([proxy.parse().unwrap()])
                .login_throttle(LoginThrottle {
                    free_failures_per_address: 3,
                    ..LoginThrottle::default()
                })
        })
        .await;
        let attempt = |i: usize, client: &'static str| {
            let addr = stack.addr;
            async move {
                login_from(addr, client, &format!("user{i}"), "wrong-password")
                    .await
                    .status
            }
        };
        // Behind the trusted proxy, each client has its own count.
        for i in 0..5 {
            let client = [
                "203.0.113.1",
                "203.0.113.2",
                "203.0.113.3",
                "203.0.113.4",
                "203.0.113.5",
            ][i];
            assert_eq!(attempt(i, client).await, StatusCode::BAD_REQUEST, "{proxy}");
        }
        // One client spraying names is caught.
        let mut throttled = false;
        for i in 10..16 {
            throttled |= attempt(i, "203.0.113.9").await == StatusCode::TOO_MANY_REQUESTS;
        }
        assert!(throttled, "{proxy}");
    }
}

/// A login sent through the (trusted) local proxy on behalf of `client`.
async fn login_from(
    addr: std::net::SocketAddr,
    client: &str,
    username: &str,
    password: &str,
) -> Answer {
    let body =
        serde_urlencoded::to_string([("username", username), ("password", password)]).unwrap();
    call(
        addr,
        Method::POST,
        "/auth/token",
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("x-forwarded-for", client),
        ],
        body,
    )
    .await
}

/// A registration sent through the (trusted) local proxy on behalf of `client`.
async fn register_from(addr: std::net::SocketAddr, client: &str, username: &str) -> Answer {
    let body = serde_json::json!({
        "username": username,
        "email": format!("{username}@example.com"),
        "password": PASSWORD,
    });
    call(
        addr,
        Method::POST,
        "/auth/register",
        &[
            ("content-type", "application/json"),
            ("x-forwarded-for", client),
        ],
        body.to_string(),
    )
    .await
}

fn behind_local_proxy(auth: AuthServiceBuilder) -> AuthServiceBuilder {
    auth.trusted_proxies(["127.0.0.1".parse().unwrap()])
}

#[tokio::test]
async fn a_table_filled_with_random_names_still_lets_a_user_in() {
    let capacity = 16;
    let stack = stack_with(|auth| {
        behind_local_proxy(auth).login_throttle(LoginThrottle {
            capacity,
            ..LoginThrottle::default()
        })
    })
    .await;
    register(stack.addr, "alice", PASSWORD).await;
    // Four times the table's size in names nobody has, each from a client of its own, as a
    // botnet would send them: every table overflows.
    for i in 0..capacity * 4 {
        let client = format!("198.51.100.{i}");
        let name = format!("random-{i:x}-{}", i * 7919);
        let reply = login_from(stack.addr, &client, &name, "Summer2024!").await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "attempt {i}");
    }
    let reply = login_from(stack.addr, "203.0.113.5", "alice", PASSWORD).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
}

#[tokio::test]
async fn a_slow_guesser_elsewhere_cannot_lock_the_owner_out() {
    let clock = ManualClock::starting_now();
    let verifier = TokenVerifier::builder(keys()).clock(clock.clone()).build();
    let auth = behind_local_proxy(AuthService::builder(
        verifier.clone(),
        MemoryUserStore::new(),
    ))
    .build();
    let addr = serve(app(verifier, auth)).await;
    register(addr, "victim", PASSWORD).await;
    let attacker = "203.0.113.66";
    let owner = "198.51.100.7";
    for round in 0..6 {
        // The attacker guesses as fast as the throttle lets them: one guess each time their
        // block runs out.
        let throttled = loop {
            let reply = login_from(addr, attacker, "victim", "guess").await;
            if reply.status == StatusCode::TOO_MANY_REQUESTS {
                break reply;
            }
            assert_eq!(reply.status, StatusCode::BAD_REQUEST);
        };
        let reply = login_from(addr, owner, "victim", PASSWORD).await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "round {round}: {}",
            reply.text
        );
        let wait: u64 = throttled.header("retry-after").unwrap().parse().unwrap();
        clock.advance(wait);
    }
}

#[tokio::test]
async fn guesses_spread_over_many_addresses_meet_the_usernames_ceiling() {
    let stack = stack_with(|auth| {
        behind_local_proxy(auth).login_throttle(LoginThrottle {
            free_failures_per_username: 12,
            ..LoginThrottle::default()
        })
    })
    .await;
    register(stack.addr, "erin", PASSWORD).await;
    let mut answered = 0;
    for i in 0..20 {
        let client = format!("198.51.100.{i}");
        let reply = login_from(stack.addr, &client, "erin", "guess").await;
        if reply.status == StatusCode::TOO_MANY_REQUESTS {
            break;
        }
        answered += 1;
    }
    assert_eq!(
        answered, 13,
        "twelve free failures from anywhere, the 13th sets a delay"
    );
}

#[tokio::test]
async fn a_parallel_burst_beyond_the_per_address_limit_gets_429_with_retry_after() {
    let stack = stack_with(|auth| {
        auth.login_throttle(LoginThrottle {
            free_failures_per_address: 5,
            ..LoginThrottle::default()
        })
    })
    .await;
    let burst: Vec<_> = (0..16)
        .map(|i| {
            let addr = stack.addr;
            tokio::spawn(async move { login(addr, &format!("burst{i}"), "wrong password").await })
        })
        .collect();
    let mut refused = 0;
    for reply in burst {
        let reply = reply.await.unwrap();
        if reply.status == StatusCode::TOO_MANY_REQUESTS {
            let retry_after: u64 = reply.header("retry-after").unwrap().parse().unwrap();
            assert!(retry_after >= 1);
            refused += 1;
        } else {
            assert_eq!(reply.status, StatusCode::BAD_REQUEST);
        }
    }
    // Five free, the sixth admitted and setting the delay, the other ten refused.
    assert_eq!(refused, 10);
}

#[tokio::test]
async fn delays_stop_growing_at_max_delay() {
    let clock = ManualClock::starting_now();
    let verifier = TokenVerifier::builder(keys()).clock(clock.clone()).build();
    let auth = AuthService::builder(verifier.clone(), MemoryUserStore::new())
        .login_throttle(LoginThrottle {
            max_delay: std::time::Duration::from_secs(4),
            ..LoginThrottle::default()
        })
        .build();
    let addr = serve(app(verifier, auth)).await;
    let mut waits = Vec::new();
    for _ in 0..6 {
        let (_, throttled) = fail_until_throttled(addr, "frank", 10).await;
        let wait: u64 = throttled.header("retry-after").unwrap().parse().unwrap();
        waits.push(wait);
        clock.advance(wait);
    }
    assert_eq!(waits, [1, 2, 4, 4, 4, 4]);
}

#[tokio::test]
async fn ipv6_clients_are_counted_per_64() {
    let stack = stack_with(|auth| {
        behind_local_proxy(auth).login_throttle(LoginThrottle {
            free_failures_per_address: 3,
            ..LoginThrottle::default()
        })
    })
    .await;
    // One subscriber's /64, a new address for every guess.
    let mut statuses = Vec::new();
    for i in 1..=5 {
        let client = format!("2001:db8:1:2::{i:x}");
        let reply = login_from(stack.addr, &client, &format!("user{i}"), "guess").await;
        statuses.push(reply.status);
    }
    assert_eq!(
        statuses[3],
        StatusCode::BAD_REQUEST,
        "the fourth sets the delay"
    );
    assert_eq!(statuses[4], StatusCode::TOO_MANY_REQUESTS);
    // The next /64 is someone else.
    let reply = login_from(stack.addr, "2001:db8:1:3::1", "user9", "guess").await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn registrations_from_one_address_are_throttled() {
    let stack = stack_with(|auth| {
        behind_local_proxy(auth).registration_throttle(RegistrationThrottle {
            free_per_address: 3,
            ..RegistrationThrottle::default()
        })
    })
    .await;
    let client = "203.0.113.20";
    let mut statuses = Vec::new();
    for i in 0..5 {
        statuses.push(register_from(stack.addr, client, &format!("signup{i}")).await);
    }
    for reply in &statuses[..4] {
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    }
    let throttled = &statuses[4];
    assert_eq!(throttled.status, StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = throttled.header("retry-after").unwrap().parse().unwrap();
    assert!(retry_after >= 1);
    assert!(stack.users.find_user("signup4").await.unwrap().is_none());
    // Another address registers as usual.
    let reply = register_from(stack.addr, "203.0.113.21", "signup5").await;
    assert_eq!(reply.status, StatusCode::CREATED);
}

/// argon2id behind a gate the test opens and closes: while closed, every `hash` (and, when
/// asked, every `verify`) waits on its hashing thread, so the queue fills deterministically.
#[derive(Clone)]
struct GatedHasher {
    gate: Arc<(Mutex<bool>, Condvar)>,
    gate_verify: bool,
    inner: Argon2Hasher,
}

impl GatedHasher {
    fn new(gate_verify: bool) -> Self {
        Self {
            gate: Arc::new((Mutex::new(true), Condvar::new())),
            gate_verify,
            inner: Argon2Hasher::default(),
        }
    }

    fn set_open(&self, open: bool) {
        *self.gate.0.lock().unwrap() = open;
        self.gate.1.notify_all();
    }

    fn pass(&self) {
        let (open, changed) = &*self.gate;
        let _open = changed
            .wait_while(open.lock().unwrap(), |open| !*open)
            .unwrap();
    }
}

impl PasswordHasher for GatedHasher {
    fn hash(&self, password: &str) -> Result<String, HashError> {
        self.pass();
        self.inner.hash(password)
    }

    fn verify(&self, password: &str, hash: &str) -> Verdict {
        if self.gate_verify {
            self.pass();
        }
        self.inner.verify(password, hash)
    }
}

/// The answer of a service whose hashing queue is full.
fn assert_busy(reply: &Answer) {
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.text
    );
    assert_eq!(reply.header("retry-after"), Some("1"));
}

/// Starts `count` requests at once and waits for the first answer: with the hashing gate
/// closed, only a refusal can come, once the queue is full. Returns the ones still waiting.
async fn flood_until_busy<F>(
    count: usize,
    request: impl Fn(usize) -> F,
) -> tokio::task::JoinSet<Answer>
where
    F: std::future::Future<Output = Answer> + Send + 'static,
{
    let mut pending = tokio::task::JoinSet::new();
    for i in 0..count {
        pending.spawn(request(i));
    }
    assert_busy(&pending.join_next().await.unwrap().unwrap());
    pending
}

#[tokio::test]
async fn a_full_hashing_queue_answers_503_with_retry_after_and_counts_nothing() {
    let hasher = GatedHasher::new(true);
    let stack = stack_with(|auth| {
        auth.password_hasher(hasher.clone())
            .hashing_concurrency(1)
            .login_throttle(LoginThrottle {
                free_failures_per_address: 10_000,
                ..LoginThrottle::default()
            })
    })
    .await;
    register(stack.addr, "grace", PASSWORD).await;
    hasher.set_open(false);
    // More logins than one hashing thread and its queue hold.
    let addr = stack.addr;
    let pending = flood_until_busy(120, |i| async move {
        login(addr, &format!("flood{i}"), "wrong password").await
    })
    .await;
    // The queue stays full while the gate is closed: the owner is turned away, more times
    // than the free allowance, and none of it counts against her.
    for _ in 0..8 {
        assert_busy(&login(addr, "grace", PASSWORD).await);
    }
    hasher.set_open(true);
    pending.join_all().await;
    let reply = login(addr, "grace", PASSWORD).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
}

#[tokio::test]
async fn a_flood_of_registrations_leaves_hashing_capacity_for_logins() {
    // Registrations hang in `hash`; logins only verify, so one that reaches a thread answers.
    let hasher = GatedHasher::new(false);
    let stack = stack_with(|auth| {
        unthrottled_registrations(auth)
            .password_hasher(hasher.clone())
            .hashing_concurrency(2)
    })
    .await;
    register(stack.addr, "heidi", PASSWORD).await;
    hasher.set_open(false);
    let addr = stack.addr;
    let pending = flood_until_busy(150, |i| async move {
        register(addr, &format!("signup{i}"), PASSWORD).await
    })
    .await;
    // Every registration the service took is still hashing or queued, and the owner logs in.
    // The registrations never finish on their own, so without a thread kept for logins this
    // login would wait forever: the deadline turns that into a failure (generous for a loaded
    // machine; a login that reaches a thread answers at once).
    let reply = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        login(addr, "heidi", PASSWORD),
    )
    .await
    .expect("the login waited behind registrations: no hashing capacity was kept for logins");
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    hasher.set_open(true);
    pending.join_all().await;
}
