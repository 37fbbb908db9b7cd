//! What the gate costs, measured side by side in one run (`cargo bench --bench gate`).
//!
//! Prints tables. Compare ratios, not absolute times: the machines are shared.
//! The crypto backend is chosen when the crate is built, so each backend is its own run:
//! `cargo bench --bench gate` (rust-crypto) and `cargo bench --bench gate --features aws-lc-rs`.
//! Sections can be picked by name: `cargo bench --bench gate -- reference authorize sources curves maps metrics`.

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use http::{Request, Response};
use jsonwebtoken::{DecodingKey, Validation as JwtValidation};
use jwt_gate::revocation::{MemoryRevocations, RevocationStore, TokenId};
use jwt_gate::{Algorithm, Claims, JwtAuth, JwtAuthLayer, Key, Keys, Require, TokenVerifier};
use tower::{Layer, Service};

const ROUNDS: usize = 7;

fn now() -> u64 {
    jwt_gate::clock::Clock::now(&jwt_gate::clock::SystemClock)
}

/// Median nanoseconds per item of `run` over `items` items, across rounds.
fn median_ns(items: usize, mut run: impl FnMut()) -> f64 {
    run(); // warm-up
    let mut samples: Vec<f64> = (0..ROUNDS)
        .map(|_| {
            let start = Instant::now();
            run();
            start.elapsed().as_nanos() as f64 / items as f64
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[ROUNDS / 2]
}

/// Times `a` and `b` in `pairs` back-to-back pairs, alternating which goes first, after one
/// pair of warm-up: the samples of each, pair by pair. Both of a pair see the same machine, so
/// ratios taken pair by pair hold while the machine's speed drifts (it is shared).
fn paired(pairs: usize, mut a: impl FnMut() -> f64, mut b: impl FnMut() -> f64) -> Vec<(f64, f64)> {
    (0..=pairs)
        .map(|pair| {
            if pair % 2 == 0 {
                let first = a();
                (first, b())
            } else {
                let second = b();
                (a(), second)
            }
        })
        .skip(1)
        .collect()
}

/// The median of `values` (of the pairs' `pick`).
fn median_of<T>(values: &[T], pick: impl Fn(&T) -> f64) -> f64 {
    let mut picked: Vec<f64> = values.iter().map(pick).collect();
    picked.sort_by(f64::total_cmp);
    picked[picked.len() / 2]
}

/// Polls a future that is ready at once (no I/O anywhere in these services).
fn ready<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("benchmarked services must not wait"),
    }
}

fn bare_service(
) -> impl Service<Request<()>, Response = Response<String>, Error = Infallible, Future: Send> + Clone
{
    tower::service_fn(|_request: Request<()>| {
        std::future::ready(Ok::<_, Infallible>(Response::new(String::new())))
    })
}

fn requests(tokens: &[String]) -> Vec<Request<()>> {
    tokens
        .iter()
        .map(|token| {
            Request::builder()
                .uri("/orders")
                .header("authorization", format!("Bearer {token}"))
                .body(())
                .unwrap()
        })
        .collect()
}

fn sign_many(keys: &Keys, count: usize) -> Vec<String> {
    (0..count)
        .map(|index| {
            keys.sign(&Claims::new(format!("user{index}"), now(), now() + 900))
                .unwrap()
        })
        .collect()
}

/// Median ns per request of sending every request once through a service `make` builds
/// afresh for each round.
fn per_request<S>(requests: &[Request<()>], mut make: impl FnMut() -> S) -> f64
where
    S: Service<Request<()>>,
    S::Error: std::fmt::Debug,
{
    let count = requests.len() as f64;
    let mut samples: Vec<f64> = (0..=ROUNDS)
        .map(|_| {
            let mut service = make();
            let batch: Vec<Request<()>> = requests.iter().map(clone_request).collect();
            let start = Instant::now();
            for request in batch {
                ready(std::future::poll_fn(|cx| service.poll_ready(cx))).unwrap();
                black_box(ready(service.call(request)).ok());
            }
            start.elapsed().as_nanos() as f64 / count
        })
        .skip(1) // warm-up
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[ROUNDS / 2]
}

fn clone_request(request: &Request<()>) -> Request<()> {
    let mut clone = Request::new(());
    *clone.uri_mut() = request.uri().clone();
    *clone.headers_mut() = request.headers().clone();
    clone
}

struct Row {
    what: String,
    ns: f64,
    note: String,
}

fn main() {
    let backend = if cfg!(feature = "aws-lc-rs") {
        "aws-lc-rs"
    } else {
        "rust-crypto"
    };
    println!("jwt-gate benchmark, crypto backend: {backend}\n");
    // `cargo bench` passes `--bench`; any other argument names a section to run.
    let wanted: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with("--"))
        .collect();
    let run = |section: &str| wanted.is_empty() || wanted.iter().any(|arg| arg == section);
    if run("reference") {
        reference();
    }
    if run("authorize") {
        authorize();
    }
    if run("sources") {
        sources();
    }
    if run("maps") {
        curves::maps();
    }
    if run("curves") {
        curves::curves();
    }
    if run("metrics") {
        metrics_cost();
    }
}

/// The gate's hot path with its counters recording into a Prometheus recorder, against the
/// same gate whose counters were registered with no recorder installed (the facade's no-op
/// handles: what the `metrics` feature costs when nobody listens). The two are timed in
/// pairs, back to back and in alternating order, so that both see the same machine; the
/// ratio is the median of the pairs' ratios.
fn metrics_cost() {
    const PAIRS: usize = 41;
    println!("## metrics: the gate with counters recording vs no-op, HS256, {PAIRS} pairs\n");
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    println!("| tokens | path | no-op ns/request | recording ns/request | recording / no-op (median of pairs) | control: no-op / no-op |\n| --- | --- | ---: | ---: | ---: | ---: |");
    for count in [1_000usize, 10_000] {
        let keys = Keys::new(Key::hs256(b"a benchmark secret of 32 bytes!!").unwrap()).unwrap();
        let tokens = sign_many(&keys, count);
        let requests = requests(&tokens);
        let build = |recording: bool| {
            let build = || {
                TokenVerifier::builder(keys.clone())
                    .cache_capacity(count * 2)
                    .build()
            };
            let verifier = if recording {
                metrics::with_local_recorder(&recorder, build)
            } else {
                build()
            };
            JwtAuthLayer::new(verifier).layer(bare_service())
        };
        let time = |service: &mut dyn FnMut(Request<()>)| {
            let batch: Vec<Request<()>> = requests.iter().map(clone_request).collect();
            let start = Instant::now();
            for request in batch {
                service(request);
            }
            start.elapsed().as_nanos() as f64 / count as f64
        };
        let through = |mut gate: JwtAuth<_, ()>| {
            move |request: Request<()>| {
                ready(std::future::poll_fn(|cx| gate.poll_ready(cx))).unwrap();
                black_box(ready(gate.call(request)).ok());
            }
        };
        for path in ["cache hit", "first sight"] {
            let (quiet, loud) = (build(false), build(true));
            let measure = |recording: bool| match path {
                "cache hit" => time(&mut through(if recording {
                    loud.clone()
                } else {
                    quiet.clone()
                })),
                _ => time(&mut through(build(recording))),
            };
            let pairs = paired(PAIRS, || measure(false), || measure(true));
            // The method's own noise: the no-op gate paired with itself.
            let control = paired(PAIRS, || measure(false), || measure(false));
            println!(
                "| {count} | {path} | {:.0} | {:.0} | {:.3} | {:.3} |",
                median_of(&pairs, |(off, _)| *off),
                median_of(&pairs, |(_, on)| *on),
                median_of(&pairs, |(off, on)| on / off),
                median_of(&control, |(first, second)| second / first)
            );
        }
    }
    // The recording gates did record.
    assert!(handle
        .render()
        .contains("jwt_gate_requests_passed_total{cache=\"hit\"}"));
    // With the feature off nothing is compiled; the no-op column still makes a request's
    // increment, on a handle that does nothing. This is what it costs, so that the no-op
    // column can stand for "off".
    const INCREMENTS: usize = 1_000_000;
    let noop = metrics::Counter::noop();
    let increments = median_ns(INCREMENTS, || {
        for _ in 0..INCREMENTS {
            black_box(&noop).increment(1);
        }
    });
    println!(
        "\nThe no-op column against the feature compiled out: a request's increment on a \
         no-op handle costs {increments:.2} ns (median of {ROUNDS} rounds of {INCREMENTS})."
    );
    println!();
}

/// The gate against `jsonwebtoken::decode` alone, per algorithm; revocation lookups.
fn reference() {
    println!("## reference: medians of {ROUNDS} rounds\n");
    let mut rows = Vec::new();

    for (algorithm, private, label, count) in [
        (Algorithm::HS256, None, "HS256, 1,000 tokens", 1_000),
        (Algorithm::HS256, None, "HS256, 10,000 tokens", 10_000),
        (Algorithm::RS256, Some("rsa.pem"), "RS256, 200 tokens", 200),
        (Algorithm::ES256, Some("p256.pem"), "ES256, 200 tokens", 200),
    ] {
        let key = match private {
            None => Key::hs256(b"a benchmark secret of 32 bytes!!").unwrap(),
            Some(file) => {
                let pem =
                    std::fs::read(format!("{}/tests/keys/{file}", env!("CARGO_MANIFEST_DIR")))
                        .unwrap();
                Key::from_private_pem(algorithm, &pem).unwrap()
            }
        };
        let keys = Keys::new(key.clone()).unwrap();
        let tokens = sign_many(&keys, count);

        // jsonwebtoken::decode alone, with a comparable policy.
        let decoding = match private {
            None => DecodingKey::from_secret(b"a benchmark secret of 32 bytes!!"),
            Some(_) => {
                let jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(
                    &match algorithm {
                        Algorithm::RS256 => jsonwebtoken::EncodingKey::from_rsa_pem(
                            &std::fs::read(format!(
                                "{}/tests/keys/rsa.pem",
                                env!("CARGO_MANIFEST_DIR")
                            ))
                            .unwrap(),
                        )
                        .unwrap(),
                        _ => jsonwebtoken::EncodingKey::from_ec_pem(
                            &std::fs::read(format!(
                                "{}/tests/keys/p256.pem",
                                env!("CARGO_MANIFEST_DIR")
                            ))
                            .unwrap(),
                        )
                        .unwrap(),
                    },
                    algorithm,
                )
                .unwrap();
                DecodingKey::from_jwk(&jwk).unwrap()
            }
        };
        let validation = JwtValidation::new(algorithm);
        let decode_ns = median_ns(tokens.len(), || {
            for token in &tokens {
                black_box(jsonwebtoken::decode::<Claims>(token, &decoding, &validation).unwrap());
            }
        });

        let requests = requests(&tokens);
        let bare = per_request(&requests, bare_service);
        // A fresh gate every round: every token is one it has never seen.
        let first_ns = per_request(&requests, || {
            let verifier = TokenVerifier::builder(keys.clone())
                .cache_capacity(count * 2)
                .build();
            JwtAuthLayer::new(verifier).layer(bare_service())
        }) - bare;
        // One gate for all rounds: after the warm-up round every token is a cache hit.
        let verifier = TokenVerifier::builder(keys.clone())
            .cache_capacity(count * 2)
            .build();
        let gate = JwtAuthLayer::new(verifier).layer(bare_service());
        let hit_ns = per_request(&requests, || gate.clone()) - bare;

        rows.push(Row {
            what: format!("jsonwebtoken::decode {label}"),
            ns: decode_ns,
            note: "reference".into(),
        });
        rows.push(Row {
            what: format!("gate added cost {label}, first sight"),
            ns: first_ns,
            note: format!("{:.2} x decode", first_ns / decode_ns),
        });
        rows.push(Row {
            what: format!("gate added cost {label}, verified-token cache hit"),
            ns: hit_ns,
            note: format!("{:.3} x decode", hit_ns / decode_ns),
        });
    }

    // Every request reads the clock once, a cache hit included: the coarse clock
    // `SystemClock` reads against the precise one it replaced, side by side.
    const READS: usize = 100_000;
    let precise_ns = median_ns(READS, || {
        for _ in 0..READS {
            black_box(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |elapsed| elapsed.as_secs()),
            );
        }
    });
    let coarse_ns = median_ns(READS, || {
        for _ in 0..READS {
            black_box(jwt_gate::clock::Clock::now(black_box(
                &jwt_gate::clock::SystemClock,
            )));
        }
    });
    rows.push(Row {
        what: "clock read, SystemTime::now (precise)".into(),
        ns: precise_ns,
        note: "reference".into(),
    });
    rows.push(Row {
        what: "clock read, SystemClock (coarse where the OS has one)".into(),
        ns: coarse_ns,
        note: format!("{:.2} x precise", coarse_ns / precise_ns),
    });

    // Revocation lookups: an empty list (no `jti` is hashed until one is revoked), small and
    // large lists, and memory per entry.
    for size in [0, 1_000usize, 1_000_000] {
        let rss_before = resident_bytes();
        let store = MemoryRevocations::new();
        let exp = now() + 3_600;
        for index in 0..size {
            store.revoke_now(&format!("revoked-jti-{index:016}"), exp);
        }
        let rss_after = resident_bytes();
        let probes: Vec<String> = (0..10_000)
            .map(|index| format!("live-jti-{index:016}"))
            .collect();
        let lookup_ns = median_ns(probes.len(), || {
            for jti in &probes {
                black_box(store.check(&TokenId {
                    jti,
                    sub: "alice",
                    issuer: None,
                    sid: None,
                    iat: 0,
                    exp,
                }));
            }
        });
        let per_entry = (rss_after.saturating_sub(rss_before)) as f64 / size as f64;
        rows.push(Row {
            what: format!("revocation check, {size} revoked"),
            ns: lookup_ns,
            note: if size >= 100_000 {
                format!("~{per_entry:.0} bytes/entry (RSS)")
            } else {
                String::new()
            },
        });
    }

    println!("| measurement | ns | note |\n| --- | ---: | --- |");
    for row in &rows {
        println!("| {} | {:.0} | {} |", row.what, row.ns, row.note);
    }
    let small = rows
        .iter()
        .find(|row| row.what.ends_with(", 1000 revoked"))
        .unwrap()
        .ns;
    let large = rows
        .iter()
        .find(|row| row.what.ends_with(", 1000000 revoked"))
        .unwrap()
        .ns;
    println!(
        "\nrevocation lookup, 1,000,000 vs 1,000 revoked: {:.2} x\n",
        large / small
    );
}

/// Requirements (scopes, roles, a route rule) on a verified-token cache hit, beside the same
/// gate without them, same tokens, timed in pairs: the target is under 10% added. And
/// a first sight of the same tokens (with the grants read from them) beside
/// `jsonwebtoken::decode` of them, also in pairs: the target is at most 1.0 ×.
fn authorize() {
    const PAIRS: usize = 21;
    println!("## authorize: requirements on a cache hit, HS256, medians of {PAIRS} pairs\n");
    let keys = Keys::new(Key::hs256(b"a benchmark secret of 32 bytes!!").unwrap()).unwrap();
    #[derive(serde::Serialize)]
    struct Granted {
        scope: &'static str,
        roles: [&'static str; 2],
    }
    // What a service using jsonwebtoken alone decodes to check the same scopes and roles.
    #[derive(serde::Deserialize)]
    struct Decoded {
        #[allow(dead_code)]
        scope: String,
        #[allow(dead_code)]
        roles: Vec<String>,
    }
    let decoding = DecodingKey::from_secret(b"a benchmark secret of 32 bytes!!");
    let validation = JwtValidation::new(Algorithm::HS256);
    println!("| tokens | cache hit, no requirements (ns) | cache hit, with requirements (ns) | added (median of pairs) | control: no requirements twice | `decode` (ns) | first sight with requirements (ns) | first sight ÷ decode (median of pairs) |");
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for count in [1_000usize, 10_000] {
        let tokens: Vec<String> = (0..count)
            .map(|index| {
                let claims =
                    Claims::new(format!("user{index}"), now(), now() + 900).with_extra(Granted {
                        scope: "openid profile orders:read orders:write",
                        roles: ["user", "auditor"],
                    });
                keys.sign(&claims).unwrap()
            })
            .collect();
        let requests = requests(&tokens);
        let bare = per_request(&requests, bare_service);
        let fresh = || {
            TokenVerifier::builder(keys.clone())
                .cache_capacity(count * 2)
                .build()
        };
        let layer = |verifier: TokenVerifier, with: bool| {
            let layer = JwtAuthLayer::new(verifier);
            let layer = if with {
                layer
                    .require(Require::scope("orders:read").and_role("user"))
                    .require_route(None, "/orders", Require::scope("orders:write"))
            } else {
                layer
            };
            layer.layer(bare_service())
        };
        // One pass of every request through `gate`: ns per request, the bare service's taken off.
        let pass = |mut gate: JwtAuth<_, ()>| {
            let batch: Vec<Request<()>> = requests.iter().map(clone_request).collect();
            let start = Instant::now();
            for request in batch {
                ready(std::future::poll_fn(|cx| gate.poll_ready(cx))).unwrap();
                black_box(ready(gate.call(request)).ok());
            }
            start.elapsed().as_nanos() as f64 / count as f64 - bare
        };
        // One verifier under both gates: the same cache, the same entries, the same memory,
        // so that the pairs differ only by the requirements.
        let shared = fresh();
        let (plain, required) = (layer(shared.clone(), false), layer(shared.clone(), true));
        let hits = paired(PAIRS, || pass(plain.clone()), || pass(required.clone()));
        // The control: two gates without requirements, paired the same way. What it shows is
        // the method's own noise on this machine, the floor under the "added" column.
        let twin = layer(shared, false);
        let control = paired(PAIRS, || pass(plain.clone()), || pass(twin.clone()));
        let decode = || {
            let start = Instant::now();
            for token in &tokens {
                black_box(
                    jsonwebtoken::decode::<Claims<Decoded>>(token, &decoding, &validation).unwrap(),
                );
            }
            start.elapsed().as_nanos() as f64 / count as f64
        };
        let first = paired(PAIRS, decode, || pass(layer(fresh(), true)));
        println!(
            "| {count} | {:.0} | {:.0} | {:+.1}% | {:+.1}% | {:.0} | {:.0} | {:.2} |",
            median_of(&hits, |(plain, _)| *plain),
            median_of(&hits, |(_, required)| *required),
            (median_of(&hits, |(plain, required)| required / plain) - 1.0) * 100.0,
            (median_of(&control, |(plain, twin)| twin / plain) - 1.0) * 100.0,
            median_of(&first, |(decode, _)| *decode),
            median_of(&first, |(_, first)| *first),
            median_of(&first, |(decode, first)| first / decode),
        );
    }
    println!();
}

/// Token sources on a cache hit: the default gate (the `Authorization` header only) against a
/// gate that also reads a cookie and a header, with the token in each place a browser puts it.
fn sources() {
    println!(
        "## sources: token sources on a cache hit, 1,000 tokens, medians of {ROUNDS} rounds\n"
    );
    let keys = Keys::new(Key::hs256(b"a benchmark secret of 32 bytes!!").unwrap()).unwrap();
    let tokens = sign_many(&keys, 1_000);
    let bearer = requests(&tokens);
    let with_cookie = |method: http::Method, extra: &[(&'static str, &'static str)]| {
        tokens
            .iter()
            .map(|token| {
                let mut request = Request::builder().method(method.clone()).uri("/orders");
                for &(name, value) in extra {
                    request = request.header(name, value);
                }
                request
                    .header(
                        "cookie",
                        format!("theme=dark; __Host-token={token}; lang=en"),
                    )
                    .body(())
                    .unwrap()
            })
            .collect::<Vec<_>>()
    };
    let cookie_get = with_cookie(http::Method::GET, &[]);
    let cookie_post = with_cookie(http::Method::POST, &[("sec-fetch-site", "same-origin")]);
    let layer = |browser: bool| {
        let layer = JwtAuthLayer::new(TokenVerifier::builder(keys.clone()).build());
        if browser {
            layer
                .token_cookie("__Host-token")
                .token_header("x-access-token")
                .pass_cors_preflight(true)
        } else {
            layer
        }
    };
    let plain = layer(false).layer(bare_service());
    let browser = layer(true).layer(bare_service());
    let cases: [(&str, &_, &[Request<()>]); 4] = [
        ("default gate, `Authorization`", &plain, &bearer),
        (
            "cookie and header sources too, `Authorization`",
            &browser,
            &bearer,
        ),
        (
            "cookie and header sources too, cookie, `GET`",
            &browser,
            &cookie_get,
        ),
        (
            "cookie and header sources too, cookie, `POST` same-origin",
            &browser,
            &cookie_post,
        ),
    ];
    // Interleaved, so drift in the machine's speed falls on every case alike.
    let mut samples = vec![Vec::new(); cases.len()];
    for _ in 0..3 {
        for ((_, gate, requests), samples) in cases.iter().zip(&mut samples) {
            let bare = per_request(requests, bare_service);
            samples.push(per_request(requests, || (*gate).clone()) - bare);
        }
    }
    println!("| requests | added cost (ns) | ratio |");
    println!("| --- | ---: | ---: |");
    let mut reference = None;
    for ((what, _, _), mut samples) in cases.iter().zip(samples) {
        samples.sort_by(f64::total_cmp);
        let ns = samples[1];
        let reference = *reference.get_or_insert(ns);
        println!("| {what} | {ns:.0} | {:.2} × |", ns / reference);
    }
    println!();
}

/// Resident set size from /proc (Linux); 0 elsewhere.
fn resident_bytes() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|statm| {
            statm
                .split_whitespace()
                .nth(1)
                .and_then(|pages| pages.parse::<usize>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}

/// The verified-token cache as the work grows: curves over 1k to 1M distinct live tokens.
mod curves {
    use std::convert::Infallible;
    use std::hash::{BuildHasher, Hasher};
    use std::hint::black_box;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::Instant;

    use http::header::AUTHORIZATION;
    use http::{HeaderValue, Request, Response};
    use jwt_gate::{Algorithm, Claims, JwtAuthLayer, Key, Keys, TokenVerifier};
    use serde::{Deserialize, Deserializer};
    use tower::{Layer, Service};

    use super::{bare_service, now, ready, resident_bytes};

    const SIZES: [usize; 4] = [1_000, 10_000, 100_000, 1_000_000];
    /// Signing RS256 is 1-3 ms a token: a million would take the whole budget, so RS256 gets
    /// the sizes a few seconds of signing buy (see `docs/performance.md`).
    const RS256_SIZES: [usize; 2] = [1_000, 10_000];
    /// Sizes around the default capacity (131,072), for the curve with the cache full.
    const FULL_SIZES: [usize; 4] = [10_000, 100_000, 200_000, 1_000_000];
    /// Requests timed per row, one by one.
    const REQUESTS: usize = 300_000;
    /// Requests of the pattern before a row at the default bounds is timed: right after a
    /// pass over every token the cache holds that pass's tail, not what the pattern uses.
    const SETTLE: usize = 1_000_000;
    /// Zipf exponent of the skewed pattern: rank r is presented in proportion to 1/r.
    /// Zipf's exponent: 1, the classic law, where the k-th most popular token is presented
    /// 1/k as often as the first.
    const ZIPF_S: i32 = 1;

    static SIGNATURE_CHECKS: AtomicU64 = AtomicU64::new(0);

    /// Application claims of size zero whose deserialization counts: the verifier reads the
    /// claims only after a signature verifies, so each count is one cache miss.
    #[derive(Clone)]
    struct Counted;

    impl<'de> Deserialize<'de> for Counted {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            <()>::deserialize(deserializer)?;
            SIGNATURE_CHECKS.fetch_add(1, Ordering::Relaxed);
            Ok(Counted)
        }
    }

    /// xorshift64*: reproducible, and far cheaper than the work it drives.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, bound: usize) -> usize {
            ((u128::from(self.next()) * bound as u128) >> 64) as usize
        }

        fn unit(&mut self) -> f64 {
            (self.next() >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    #[derive(Clone, Copy)]
    enum Pattern {
        Zipf,
        Uniform,
    }

    impl Pattern {
        fn name(self) -> &'static str {
            match self {
                Pattern::Zipf => "Zipf",
                Pattern::Uniform => "uniform",
            }
        }

        /// `count` token indices below `tokens`.
        fn order(self, tokens: usize, count: usize) -> Vec<u32> {
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ tokens as u64);
            match self {
                Pattern::Uniform => (0..count).map(|_| rng.below(tokens) as u32).collect(),
                Pattern::Zipf => {
                    let mut total = 0.0;
                    let cdf: Vec<f64> = (1..=tokens)
                        .map(|rank| {
                            total += 1.0 / (rank as f64).powi(ZIPF_S);
                            total
                        })
                        .collect();
                    (0..count)
                        .map(|_| {
                            let target = rng.unit() * total;
                            let rank = cdf.partition_point(|&c| c < target);
                            // Spread the popular ranks over the tokens, so popularity has
                            // nothing to do with the order tokens were first seen in.
                            ((rank as u64 * 1_000_003) % tokens as u64) as u32
                        })
                        .collect()
                }
            }
        }
    }

    /// `Bearer` header values of `count` distinct tokens, signed on every core.
    fn bearer_headers(keys: &Keys, count: usize) -> Vec<HeaderValue> {
        let (iat, exp) = (now(), now() + 3_600);
        let threads = std::thread::available_parallelism().map_or(1, usize::from);
        let chunk = count.div_ceil(threads);
        std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|thread| {
                    scope.spawn(move || {
                        (thread * chunk..((thread + 1) * chunk).min(count))
                            .map(|index| {
                                let token = keys
                                    .sign(&Claims::new(format!("user{index}"), iat, exp))
                                    .unwrap();
                                HeaderValue::try_from(format!("Bearer {token}")).unwrap()
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|worker| worker.join().unwrap())
                .collect()
        })
    }

    /// A request carrying a fresh copy of `authorization`: a server's token was just read off
    /// the socket, so it is in the CPU cache, not wherever a million stored tokens are.
    fn request(authorization: &HeaderValue) -> Request<()> {
        let mut request = Request::new(());
        *request.uri_mut() = http::Uri::from_static("/orders");
        let fresh = HeaderValue::from_bytes(authorization.as_bytes()).unwrap();
        request.headers_mut().insert(AUTHORIZATION, fresh);
        request
    }

    /// Nanoseconds of each request in `order`, timed one by one (the request is built
    /// outside the timing; the timer's own cost is in every sample, bare ones included).
    fn time_each<S, B>(service: &mut S, headers: &[HeaderValue], order: &[u32]) -> Vec<u32>
    where
        S: Service<Request<()>, Response = Response<B>>,
        S::Error: std::fmt::Debug,
    {
        let mut times = Vec::with_capacity(order.len());
        for &index in order {
            let request = request(&headers[index as usize]);
            let start = Instant::now();
            ready(std::future::poll_fn(|cx| service.poll_ready(cx))).unwrap();
            let response = ready(service.call(request)).unwrap();
            times.push(start.elapsed().as_nanos() as u32);
            assert!(response.status().is_success(), "every token is valid");
        }
        times
    }

    fn percentile(sorted: &[u32], fraction: f64) -> f64 {
        f64::from(sorted[((sorted.len() - 1) as f64 * fraction).round() as usize])
    }

    fn sorted(mut times: Vec<u32>) -> Vec<u32> {
        times.sort_unstable();
        times
    }

    fn gate(
        keys: &Keys,
        capacity: usize,
        bytes: usize,
    ) -> impl Service<Request<()>, Response = Response<impl Sized>, Error = Infallible> {
        let verifier = TokenVerifier::builder(keys.clone())
            .claims::<Counted>()
            .cache_capacity(capacity)
            .cache_bytes(bytes)
            .build();
        JwtAuthLayer::new(verifier).layer(bare_service())
    }

    struct Measured {
        p50: f64,
        p99: f64,
        hit_rate: f64,
    }

    /// Added cost (gate minus the bare service's median, same requests, same run) and hit rate.
    fn measure<S, B>(service: &mut S, headers: &[HeaderValue], order: &[u32]) -> Measured
    where
        S: Service<Request<()>, Response = Response<B>>,
        S::Error: std::fmt::Debug,
    {
        let bare = percentile(&sorted(time_each(&mut bare_service(), headers, order)), 0.5);
        let checks = SIGNATURE_CHECKS.load(Ordering::Relaxed);
        let times = sorted(time_each(service, headers, order));
        let misses = SIGNATURE_CHECKS.load(Ordering::Relaxed) - checks;
        Measured {
            p50: percentile(&times, 0.5) - bare,
            p99: percentile(&times, 0.99) - bare,
            hit_rate: 1.0 - misses as f64 / order.len() as f64,
        }
    }

    fn key(algorithm: Algorithm) -> Keys {
        Keys::new(match algorithm {
            Algorithm::HS256 => Key::hs256(b"a benchmark secret of 32 bytes!!").unwrap(),
            _ => {
                let pem = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys/rsa.pem"))
                    .unwrap();
                Key::from_private_pem(algorithm, &pem).unwrap()
            }
        })
        .unwrap()
    }

    pub(super) fn curves() {
        println!("## verified-token cache, cache sized to the tokens\n");
        println!(
            "{REQUESTS} requests a row, timed one by one; added cost = gate minus bare median.\n"
        );
        println!("| alg | tokens | pattern | first sight p50 ns | hit p50 ns | p99 ns | p99/p50 | hit rate | bytes/token |");
        println!("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |");
        // The 1k HS256 hit, which the memory floor is set against.
        let mut hs256_hit = None;
        for (algorithm, sizes) in [
            (Algorithm::HS256, &SIZES[..]),
            (Algorithm::RS256, &RS256_SIZES[..]),
        ] {
            let keys = key(algorithm);
            let start = Instant::now();
            let all = bearer_headers(&keys, *sizes.last().unwrap());
            println!(
                "<!-- signed {} {algorithm:?} tokens in {:.1} s -->",
                all.len(),
                start.elapsed().as_secs_f64()
            );
            let mut small_p50 = None;
            for &count in sizes {
                let headers = &all[..count];
                let orders = [Pattern::Zipf, Pattern::Uniform]
                    .map(|pattern| (pattern, pattern.order(count, REQUESTS)));
                let before = resident_bytes();
                let mut gate = gate(&keys, count + count / 4, count * 1024);
                let first_sight: Vec<u32> = (0..count as u32).collect();
                let first = percentile(&sorted(time_each(&mut gate, headers, &first_sight)), 0.5);
                // Below 100k tokens, page granularity and reused free memory swamp the figure.
                let per_token = if count >= 100_000 {
                    let bytes = resident_bytes().saturating_sub(before) as f64 / count as f64;
                    format!("{bytes:.0}")
                } else {
                    "-".to_owned()
                };
                for (pattern, order) in &orders {
                    let measured = measure(&mut gate, headers, order);
                    let ratio = match small_p50 {
                        None => {
                            small_p50 = Some(measured.p50);
                            if matches!(algorithm, Algorithm::HS256) {
                                hs256_hit = Some(measured.p50);
                            }
                            String::new()
                        }
                        Some(small) => format!(" ({:.2} x 1k)", measured.p50 / small),
                    };
                    println!(
                        "| {algorithm:?} | {count} | {} | {first:.0} | {:.0}{ratio} | {:.0} | {:.1} | {:.1} % | {per_token} |",
                        pattern.name(),
                        measured.p50,
                        measured.p99,
                        measured.p99 / measured.p50,
                        measured.hit_rate * 100.0,
                    );
                }
            }
        }

        memory_floor(hs256_hit.expect("the 1k HS256 row ran"));

        println!(
            "\n## verified-token cache at its default bounds ({} tokens, {} MiB), HS256\n",
            jwt_gate::DEFAULT_CACHE_CAPACITY,
            jwt_gate::DEFAULT_CACHE_BYTES >> 20
        );
        println!(
            "After one pass over every token and {SETTLE} requests of the pattern (the cache \
             settles), {REQUESTS} requests; mean includes the misses.\n"
        );
        println!("| tokens | pattern | p50 ns | p99 ns | mean ns | hit rate |");
        println!("| ---: | --- | ---: | ---: | ---: | ---: |");
        let keys = key(Algorithm::HS256);
        let all = bearer_headers(&keys, *FULL_SIZES.last().unwrap());
        for count in FULL_SIZES {
            let headers = &all[..count];
            for pattern in [Pattern::Zipf, Pattern::Uniform] {
                let mut order = pattern.order(count, SETTLE + REQUESTS);
                let settle = order.drain(..SETTLE).collect::<Vec<_>>();
                let mut gate = gate(
                    &keys,
                    jwt_gate::DEFAULT_CACHE_CAPACITY,
                    jwt_gate::DEFAULT_CACHE_BYTES,
                );
                let first_sight: Vec<u32> = (0..count as u32).collect();
                time_each(&mut gate, headers, &first_sight);
                time_each(&mut gate, headers, &settle);
                let bare = percentile(
                    &sorted(time_each(&mut bare_service(), headers, &order)),
                    0.5,
                );
                let checks = SIGNATURE_CHECKS.load(Ordering::Relaxed);
                let times = time_each(&mut gate, headers, &order);
                let misses = SIGNATURE_CHECKS.load(Ordering::Relaxed) - checks;
                let mean = times.iter().map(|&t| f64::from(t)).sum::<f64>() / times.len() as f64;
                let times = sorted(times);
                println!(
                    "| {count} | {} | {:.0} | {:.0} | {:.0} | {:.1} % |",
                    pattern.name(),
                    percentile(&times, 0.5) - bare,
                    percentile(&times, 0.99) - bare,
                    mean - bare,
                    100.0 - misses as f64 * 100.0 / REQUESTS as f64,
                );
            }
        }
        println!();
    }

    /// What this machine's memory alone puts under the curve: a hit must read at least its
    /// own entry, so at a million tokens at least one read lands at a random place among
    /// ~180 MB of entries. A pointer chase over slots of an entry's size times such reads,
    /// each waiting for the one before as a hit's reads wait for its fingerprint: the least
    /// any table can add over the 1k hit at each size, whatever its layout.
    fn memory_floor(hit_1k: f64) {
        /// About one cached token's share of the table (`bytes/token` above).
        const SLOT_WORDS: usize = 23;
        const STEPS: usize = 2_000_000;
        println!("\n### the floor: one dependent random read among the entries\n");
        println!(
            "Pointer chase over {}-byte slots, one slot a token, {STEPS} steps, same run.\n",
            SLOT_WORDS * 8
        );
        println!(
            "| tokens | one random read ns | minus the 1k read ns | least hit ÷ 1k hit ({hit_1k:.0} ns) |"
        );
        println!("| ---: | ---: | ---: | ---: |");
        let mut small = None;
        for count in SIZES {
            let mut slots = vec![0u64; count * SLOT_WORDS];
            // Sattolo's shuffle: one cycle through every slot, so no step is predictable.
            let mut next: Vec<u32> = (0..count as u32).collect();
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ count as u64);
            for i in (1..count).rev() {
                next.swap(i, rng.below(i));
            }
            for (slot, &to) in next.iter().enumerate() {
                slots[slot * SLOT_WORDS] = u64::from(to) * SLOT_WORDS as u64;
            }
            let mut at = 0u64;
            let start = Instant::now();
            for _ in 0..STEPS {
                at = slots[at as usize];
            }
            let read = start.elapsed().as_nanos() as f64 / STEPS as f64;
            black_box(at);
            let base = *small.get_or_insert(read);
            let added = read - base;
            println!(
                "| {count} | {read:.1} | {added:.1} | {:.2} x |",
                (hit_1k + added) / hit_1k
            );
        }
    }

    /// The map alone: the verified-token cache's first two maps, DashMap and quick_cache, same
    /// keys, same values, same hasher, uniform lookups of present keys (median of rounds of 1M
    /// lookups). Their cost at a million entries is what led to the cache's own table, which
    /// `curves` measures through the gate.
    pub(super) fn maps() {
        #[derive(Clone, Copy, Default)]
        struct FoldHasher(u64);
        impl Hasher for FoldHasher {
            fn finish(&self) -> u64 {
                self.0
            }
            fn write(&mut self, _: &[u8]) {
                unreachable!("keys are two u64s")
            }
            fn write_u64(&mut self, value: u64) {
                self.0 = self.0.rotate_left(29) ^ value;
            }
        }
        #[derive(Clone, Copy, Default)]
        struct Fold;
        impl BuildHasher for Fold {
            type Hasher = FoldHasher;
            fn build_hasher(&self) -> FoldHasher {
                FoldHasher(0)
            }
        }
        /// About the size of a packed cached token.
        type Value = Arc<[u64; 11]>;

        println!(
            "## the map alone: hit cost, ns per lookup (median of {} rounds)\n",
            super::ROUNDS
        );
        println!("| entries | DashMap (first cache) | quick_cache (second) | second / first |");
        println!("| ---: | ---: | ---: | ---: |");
        const LOOKUPS: usize = 1_000_000;
        for count in SIZES {
            let mut rng = Rng(0x2545_f491_4f6c_dd1d ^ count as u64);
            let keys: Vec<(u64, u64)> = (0..count).map(|_| (rng.next(), rng.next())).collect();
            let probes: Vec<(u64, u64)> = (0..LOOKUPS).map(|_| keys[rng.below(count)]).collect();
            let value: Value = Arc::new([7; 11]);
            let dash = dashmap::DashMap::with_hasher(Fold);
            let quick = quick_cache::sync::Cache::with(
                count,
                count as u64 * 2,
                quick_cache::UnitWeighter,
                Fold,
                quick_cache::sync::DefaultLifecycle::default(),
            );
            for key in &keys {
                dash.insert(*key, value.clone());
                quick.insert(*key, value.clone());
            }
            let old = super::median_ns(LOOKUPS, || {
                for key in &probes {
                    black_box(dash.get(key).map(|entry| entry.value().clone()));
                }
            });
            let new = super::median_ns(LOOKUPS, || {
                for key in &probes {
                    black_box(quick.get(key));
                }
            });
            println!("| {count} | {old:.1} | {new:.1} | {:.2} |", new / old);
        }
        println!();
    }
}
