//! TLS on both sides of the proxy (feature `rustls`): the certificate it serves, and the
//! connector that reaches `https://` upstreams.

#[cfg(feature = "rustls")]
use std::sync::Arc;

use hyper_util::client::legacy::connect::HttpConnector;

use super::InvalidUpstream;

/// The HTTP versions offered to the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Versions {
    /// HTTP/1.1 only: what protocol upgrades (WebSocket) need.
    Http1,
    /// HTTP/2 only: h2c by prior knowledge over `http://`, ALPN `h2` over `https://`.
    Http2,
    /// Over `https://`, whichever the upstream picks by ALPN; HTTP/1.1 over `http://`.
    Negotiated,
}

/// Connects to the upstream: plain TCP, or TLS too for `https://` (feature `rustls`).
#[cfg(feature = "rustls")]
pub(super) type Connector = hyper_rustls::HttpsConnector<HttpConnector>;
/// Connects to the upstream over plain TCP (without the `rustls` feature).
#[cfg(not(feature = "rustls"))]
pub(super) type Connector = HttpConnector;

fn tcp() -> HttpConnector {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    // The TLS connector wraps this one and brings its own scheme check.
    connector.enforce_http(false);
    connector
}

/// A connector offering `versions`, trusting the CAs of `roots_pem` (or the webpki roots)
/// for `https://`.
#[cfg(feature = "rustls")]
pub(super) fn connector(
    roots_pem: Option<&[u8]>,
    versions: Versions,
) -> Result<Connector, InvalidUpstream> {
    use rustls_pki_types::pem::PemObject as _;
    use rustls_pki_types::CertificateDer;

    let mut roots = rustls::RootCertStore::empty();
    match roots_pem {
        Some(pem) => {
            for certificate in CertificateDer::pem_slice_iter(pem) {
                let certificate = certificate
                    .map_err(|error| InvalidUpstream(format!("the upstream CA: {error}")))?;
                roots
                    .add(certificate)
                    .map_err(|error| InvalidUpstream(format!("the upstream CA: {error}")))?;
            }
            if roots.is_empty() {
                return Err(InvalidUpstream(
                    "the upstream CA: no certificate in the PEM given".into(),
                ));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    // This provider explicitly, so an application that installed another (or none) as the
    // process default does not change what the proxy trusts.
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|error| InvalidUpstream(error.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_or_http();
    Ok(match versions {
        Versions::Http1 => builder.enable_http1().wrap_connector(tcp()),
        Versions::Http2 => builder.enable_http2().wrap_connector(tcp()),
        Versions::Negotiated => builder.enable_all_versions().wrap_connector(tcp()),
    })
}

/// A plain TCP connector (without the `rustls` feature, where `https://` is refused earlier).
#[cfg(not(feature = "rustls"))]
pub(super) fn connector(
    _roots_pem: Option<&[u8]>,
    _versions: Versions,
) -> Result<Connector, InvalidUpstream> {
    let mut connector = tcp();
    connector.enforce_http(true);
    Ok(connector)
}

/// A certificate chain and its private key, to serve HTTPS with (feature `rustls`): see
/// [`GatewayBuilder::tls`](super::GatewayBuilder::tls). ALPN offers `h2` and `http/1.1`.
///
/// ```
/// use jwt_gate::gateway::ServerTls;
///
/// let refused = ServerTls::from_pem(b"not a certificate", b"not a key").unwrap_err();
/// assert!(refused.to_string().contains("certificate"), "{refused}");
/// ```
#[cfg(feature = "rustls")]
#[cfg_attr(docsrs, doc(cfg(feature = "rustls")))]
#[derive(Clone)]
pub struct ServerTls {
    pub(super) config: Arc<rustls::ServerConfig>,
}

#[cfg(feature = "rustls")]
impl ServerTls {
    /// From PEM text: `certificate_chain` (the server's certificate first, then any
    /// intermediates) and `private_key` (PKCS#8, PKCS#1 or SEC1). Fails, saying which, when
    /// either holds nothing usable or the key does not match the certificate.
    pub fn from_pem(certificate_chain: &[u8], private_key: &[u8]) -> Result<Self, InvalidTls> {
        use rustls_pki_types::pem::PemObject as _;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};

        let chain = CertificateDer::pem_slice_iter(certificate_chain)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| InvalidTls(format!("the certificate: {error}")))?;
        if chain.is_empty() {
            return Err(InvalidTls(
                "the certificate: no certificate in the PEM".into(),
            ));
        }
        // Never the key's bytes in the message: only what kind of failure it was.
        let key = PrivateKeyDer::from_pem_slice(private_key)
            .map_err(|error| InvalidTls(format!("the private key: {error}")))?;
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|error| InvalidTls(error.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|error| InvalidTls(format!("the certificate and key: {error}")))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            config: Arc::new(config),
        })
    }
}

#[cfg(feature = "rustls")]
impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key stays out of every log.
        f.debug_struct("ServerTls")
            .field("alpn", &["h2", "http/1.1"])
            .finish_non_exhaustive()
    }
}

/// A certificate or key that cannot serve TLS; the message says which and why.
#[cfg(feature = "rustls")]
#[cfg_attr(docsrs, doc(cfg(feature = "rustls")))]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidTls(String);

#[cfg(feature = "rustls")]
impl std::fmt::Display for InvalidTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot serve TLS: {}", self.0)
    }
}

#[cfg(feature = "rustls")]
impl std::error::Error for InvalidTls {}
