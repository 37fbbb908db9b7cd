//! The gate from outside: its HTTP and gRPC contract, keys and JWKS, revocation, the
//! gateway, and the example programs, each over real HTTP on 127.0.0.1.

// A test binary exports nothing: `pub` marks what its sibling modules use.
#![allow(unreachable_pub)]
// The example programs are included word for word, each with the support modules it
// declares itself, so one support file is compiled once per example that uses it.
#![allow(clippy::duplicate_mod)]

#[path = "../common/mod.rs"]
mod common;

mod algorithm_confusion;
mod authorize;
mod axum_extractor;
mod discovery;
mod gate_contract;
mod gateway;
mod gateway_limits;
mod hyper_example;
mod issuers;
mod jwks;
mod jwks_remote;
mod jwks_tls;
mod key_rotation;
mod limits;
mod open_paths;
mod presets;
mod readme;
mod revocation;
mod revocation_order;
mod sources;
mod tonic_example;
