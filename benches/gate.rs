//! What the gate costs, measured side by side in one run (`cargo bench --bench gate`).
//!
//! Prints a table of medians. Compare ratios, not absolute times: the machines are shared.
//! Run with `--features aws-lc-rs` to measure the aws-lc-rs backend.

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use http::{Request, Response};
use jsonwebtoken::{DecodingKey, Validation as JwtValidation};
use jwt_gate::revocation::{MemoryRevocations, RevocationStore, TokenId};
use jwt_gate::{Algorithm, Claims, JwtAuthLayer, Key, Keys, TokenVerifier};
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
    println!("jwt-gate benchmark, crypto backend: {backend}, medians of {ROUNDS} rounds\n");
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

    // Revocation lookups, small and large lists, and memory per entry.
    for size in [1_000usize, 1_000_000] {
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
        "\nrevocation lookup, 1,000,000 vs 1,000 revoked: {:.2} x",
        large / small
    );
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
