//! What `proxy` speaks beyond plain HTTP/1.1: HTTP/2 to the upstream, its private CA, and
//! TLS termination, each from files named relative to the configuration.

use std::path::{Path, PathBuf};

use jwt_gate::gateway::{GatewayBuilder, ServerTls};
use toml::Spanned;

use crate::config::{Config, Source};

/// `gateway` with the configuration's `[upstream_options]` and `[tls]`; a file that cannot
/// be read or used is refused, naming its place in the configuration.
pub(crate) fn apply(
    mut gateway: GatewayBuilder,
    config: &Config,
    source: &Source,
) -> Result<GatewayBuilder, String> {
    let options = &config.upstream_options;
    gateway = gateway.upstream_http2(options.http2);
    if let Some(ca) = &options.ca_file {
        gateway = gateway.upstream_ca_pem(read(ca, source)?);
    }
    if let Some(tls) = &config.tls {
        let certificate = read(&tls.cert_file, source)?;
        let key = read(&tls.key_file, source)?;
        let tls = ServerTls::from_pem(&certificate, &key)
            .map_err(|error| source.error_at(Some(tls.cert_file.span()), &error.to_string()))
            .map_err(|error| error.to_string())?;
        gateway = gateway.tls(tls);
    }
    Ok(gateway)
}

/// `[tls]` is the proxy's: the other servers refuse it rather than serve plain HTTP while
/// the file asks for HTTPS.
pub(crate) fn refuse_tls(config: &Config, source: &Source, command: &str) -> Result<(), String> {
    match &config.tls {
        Some(tls) => Err(source
            .error_at(
                Some(tls.cert_file.span()),
                &format!("[tls] is served by `proxy` only, not by `{command}`"),
            )
            .to_string()),
        None => Ok(()),
    }
}

fn read(file: &Spanned<PathBuf>, source: &Source) -> Result<Vec<u8>, String> {
    let path = source
        .path
        .parent()
        .unwrap_or(Path::new("."))
        .join(file.get_ref());
    std::fs::read(&path).map_err(|error| {
        source
            .error_at(
                Some(file.span()),
                &format!("cannot read {}: {error}", path.display()),
            )
            .to_string()
    })
}
