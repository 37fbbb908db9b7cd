//! The gate on a plain hyper 1.x server, through hyper-util: no framework.
//!
//! ```text
//! JWT_GATE_SECRET='a secret of at least 32 bytes....' cargo run --example hyper
//! TOKEN=$(JWT_GATE_SECRET='a secret of at least 32 bytes....' cargo run -q --example hyper -- token alice)
//! curl -H "Authorization: Bearer $TOKEN" http://127.0.0.1:3000/me   # hello alice
//! curl -i http://127.0.0.1:3000/me                                   # 401
//! curl http://127.0.0.1:3000/health                                  # ok
//! ```
//!
//! `JWT_GATE_ADDR` sets the address (default `127.0.0.1:3000`), `JWT_GATE_SECRET` the HS256
//! key: its UTF-8 bytes as they are, at least 32. Without it a random key is made for the run,
//! so only tokens minted by this process would verify.

use std::convert::Infallible;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use jwt_gate::{Claims, JwtAuthLayer, Keys};
use tower::{Layer as _, Service};

#[path = "support/token.rs"]
mod token;

/// The application: a protected `/me`, an open `/health`, 404 elsewhere, behind the gate.
pub fn app(
    keys: Keys,
) -> impl Service<
    Request<Incoming>,
    Response = Response<jwt_gate::ResponseBody<Full<Bytes>>>,
    Error = Infallible,
    Future: Send,
> + Clone
       + Send
       + 'static {
    let handler = tower::service_fn(|request: Request<Incoming>| async move {
        let response = match request.uri().path() {
            "/health" => Response::new(Full::from("ok")),
            "/me" => {
                // The gate put the verified claims here; it refused the request otherwise.
                let claims = request
                    .extensions()
                    .get::<Claims>()
                    .expect("the gate protects /me");
                Response::new(Full::from(format!("hello {}", claims.sub)))
            }
            _ => {
                let mut response = Response::new(Full::from("not found"));
                *response.status_mut() = StatusCode::NOT_FOUND;
                response
            }
        };
        Ok::<_, Infallible>(response)
    });
    JwtAuthLayer::from_keys(keys)
        .open_path("/health")
        .layer(handler)
}

/// Serves `app` over HTTP/1.1 on `listener`, one task per connection.
pub async fn serve(listener: tokio::net::TcpListener, keys: Keys) -> std::io::Result<()> {
    let app = app(keys);
    loop {
        let (stream, peer) = listener.accept().await?;
        let service = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            if let Err(error) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                eprintln!("connection from {peer}: {error}");
            }
        });
    }
}

fn keys_from_env() -> Result<Keys, String> {
    match std::env::var("JWT_GATE_SECRET") {
        Ok(secret) => Keys::hs256(secret.as_bytes()).map_err(|error| error.to_string()),
        Err(_) => {
            eprintln!("JWT_GATE_SECRET is not set: using a random key for this run");
            let mut secret = [0u8; 32];
            getrandom::getrandom(&mut secret).map_err(|error| error.to_string())?;
            Keys::hs256(secret).map_err(|error| error.to_string())
        }
    }
}

#[allow(dead_code)] // the tests use the functions above, not main
#[tokio::main]
async fn main() {
    if let Err(error) = run().await {
        eprintln!("hyper example: {error}");
        std::process::exit(2);
    }
}

#[allow(dead_code)]
async fn run() -> Result<(), String> {
    let keys = keys_from_env()?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(printed) = token::print_if_asked(&keys, &args) {
        return printed;
    }
    let addr = std::env::var("JWT_GATE_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".to_owned());
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|error| format!("cannot listen on {addr}: {error}"))?;
    let local = listener.local_addr().map_err(|error| error.to_string())?;
    println!("jwt-gate hyper example listening on http://{local}");
    serve(listener, keys)
        .await
        .map_err(|error| error.to_string())
}
