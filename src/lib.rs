#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "axum")]
pub mod axum;
mod cache;
mod claims;
pub mod clock;
mod extract;
mod fingerprint;
#[cfg(feature = "gateway")]
pub mod gateway;
mod jwks;
mod keys;
mod layer;
mod paths;
mod reject;
#[cfg(feature = "jwks")]
mod remote_jwks;
pub mod revocation;
#[cfg(feature = "auth")]
#[cfg_attr(docsrs, doc(cfg(feature = "auth")))]
pub mod service;
#[cfg(feature = "auth")]
#[cfg_attr(docsrs, doc(cfg(feature = "auth")))]
pub mod store;
mod validate;

pub use claims::Claims;
pub use jsonwebtoken::{Algorithm, AlgorithmFamily};
pub use keys::{Key, KeyError, Keys, ACCESS_TOKEN_TYPE};
pub use layer::{JwtAuth, JwtAuthLayer, ResponseBody, ResponseFuture, DEFAULT_REALM};
pub use reject::AuthError;
#[cfg(feature = "jwks")]
pub use remote_jwks::{JwksError, RemoteJwks, RemoteJwksBuilder};
pub use validate::{TokenVerifier, TokenVerifierBuilder, Validation, DEFAULT_CACHE_CAPACITY};
