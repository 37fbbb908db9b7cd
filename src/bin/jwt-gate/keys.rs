//! The configured keys, and new ones for `jwt-gate keys generate`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jwt_gate::{Key, Keys};

use crate::config::{Config, ConfigError, Source, DEFAULT_SECRET_ENV};

/// The keys the configuration names, read from the environment or files. Errors name where
/// the key was to come from, never its bytes.
pub(crate) fn load(
    config: &Config,
    source: &Source,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Keys, ConfigError> {
    let keys = &config.keys;
    let base = source.path.parent().unwrap_or(std::path::Path::new("."));
    let read = |path: &toml::Spanned<std::path::PathBuf>| {
        let full = base.join(path.get_ref());
        std::fs::read(&full).map_err(|error| {
            source.error_at(
                Some(path.span()),
                &format!("cannot read {}: {error}", full.display()),
            )
        })
    };
    if let Some(algorithm) = keys.algorithm {
        let mut all = Vec::new();
        // Each key named by its thumbprint: the same `kid` whether it signs or only
        // verifies, so moving it between the two never strands the tokens it signed.
        let named = |key: Key, path: &toml::Spanned<std::path::PathBuf>| {
            let kid = crate::rotate::thumbprint(&key)
                .map_err(|why| source.error_at(Some(path.span()), &why))?;
            Ok::<_, ConfigError>(key.with_kid(kid))
        };
        if let Some(path) = &keys.private_pem {
            let key = Key::from_private_pem(algorithm, &read(path)?)
                .map_err(|error| source.error_at(Some(path.span()), &error.to_string()))?;
            all.push(named(key, path)?);
        }
        for path in keys.public_pems() {
            let key = Key::from_public_pem(algorithm, &read(path)?)
                .map_err(|error| source.error_at(Some(path.span()), &error.to_string()))?;
            all.push(named(key, path)?);
        }
        let mut all = all.into_iter();
        let first = all
            .next()
            .ok_or_else(|| ConfigError("keys: no PEM key configured".into()))?;
        let set = Keys::new(first).map_err(|error| ConfigError(format!("keys: {error}")))?;
        for key in all {
            set.add(key)
                .map_err(|error| ConfigError(format!("keys: {error}")))?;
        }
        return Ok(set);
    }
    if let Some(path) = &keys.secret_file {
        let mut bytes = read(path)?;
        if bytes.last() == Some(&b'\n') {
            bytes.pop();
        }
        // A short secret is a mistake in the file the key names: say where that key is.
        return Keys::hs256(&bytes).map_err(|error| {
            source.error_at(
                Some(path.span()),
                &format!("{}: {error}", path.get_ref().display()),
            )
        });
    }
    let name = keys
        .secret_env
        .as_ref()
        .map_or(DEFAULT_SECRET_ENV, |name| name.get_ref().as_str());
    let value = env(name).ok_or_else(|| {
        ConfigError(format!(
            "{name} is not set: it holds the HS256 secret (at least 32 bytes; \
             `jwt-gate keys generate` makes one)"
        ))
    })?;
    Keys::hs256(value.as_bytes()).map_err(|error| ConfigError(format!("{name}: {error}")))
}

/// A new HS256 secret: 48 random bytes as base64url text (64 characters), whose UTF-8 bytes
/// are the secret, as `JWT_GATE_SECRET` reads it.
pub(crate) fn generate_secret() -> Result<String, String> {
    let mut bytes = [0u8; 48];
    getrandom::getrandom(&mut bytes).map_err(|error| error.to_string())?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// A new Ed25519 private key as PKCS#8 PEM. An Ed25519 PKCS#8 key is a fixed 16-byte DER
/// prefix and the 32-byte seed (RFC 8410 §7), so no ASN.1 library is needed to write one.
pub(crate) fn generate_ed25519_pem() -> Result<String, String> {
    const PREFIX: [u8; 16] = [
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    let mut der = PREFIX.to_vec();
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).map_err(|error| error.to_string())?;
    der.extend_from_slice(&seed);
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    Ok(format!(
        "-----BEGIN PRIVATE KEY-----\n{body}\n-----END PRIVATE KEY-----\n"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_sign_and_verify() {
        let pem = generate_ed25519_pem().unwrap();
        let key = Key::from_private_pem(jwt_gate::Algorithm::EdDSA, pem.as_bytes()).unwrap();
        let keys = Keys::new(key.with_kid("k1")).unwrap();
        assert_eq!(keys.jwks().keys.len(), 1);
        assert_eq!(generate_secret().unwrap().len(), 64);
        assert_ne!(generate_secret().unwrap(), generate_secret().unwrap());
    }
}
