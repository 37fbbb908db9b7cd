//! Key rotation: `keys add`, `keys activate`, `keys retire`. Each rewrites the `[keys]`
//! table of the configuration in place (the rest of the file, comments included, is left as
//! it was) and keeps its keys in `keys/` beside it: `<kid>.pem` (the private key, mode 0600)
//! and `<kid>.pub.pem` (its public half, all a verifying instance needs). A key's `kid` is its
//! RFC 7638 thumbprint, so it stays the same wherever the key is listed.

use std::io::Write as _;
use std::ops::Range;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use jwt_gate::{Algorithm, Key, Keys};
use sha2::{Digest as _, Sha256};
use toml::Spanned;

use crate::config::{Config, Source};

/// The key's RFC 7638 JWK thumbprint (SHA-256, base64url): its `kid`.
pub(crate) fn thumbprint(key: &Key) -> Result<String, String> {
    let set = Keys::new(key.clone()).map_err(|error| error.to_string())?;
    let jwks = serde_json::to_value(set.jwks()).map_err(|error| error.to_string())?;
    let jwk = &jwks["keys"][0];
    let members: &[&str] = match jwk["kty"].as_str() {
        Some("RSA") => &["e", "kty", "n"],
        Some("EC") => &["crv", "kty", "x", "y"],
        Some("OKP") => &["crv", "kty", "x"],
        _ => return Err("a key without a public JWK has no thumbprint".into()),
    };
    // The required members only, in lexicographic order, without whitespace (§3).
    let canonical = members
        .iter()
        .map(|name| format!("\"{name}\":{}", jwk[*name]))
        .collect::<Vec<_>>()
        .join(",");
    Ok(URL_SAFE_NO_PAD.encode(Sha256::digest(format!("{{{canonical}}}"))))
}

/// The public half of an Ed25519 key as an SPKI PEM: a fixed 12-byte DER prefix and the
/// 32-byte public key (RFC 8410 §4).
fn ed25519_public_pem(key: &Key) -> Result<String, String> {
    const PREFIX: [u8; 12] = [
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    ];
    let set = Keys::new(key.clone()).map_err(|error| error.to_string())?;
    let jwks = serde_json::to_value(set.jwks()).map_err(|error| error.to_string())?;
    let x = jwks["keys"][0]["x"].as_str().ok_or("not an Ed25519 key")?;
    let public = URL_SAFE_NO_PAD
        .decode(x)
        .map_err(|error| error.to_string())?;
    let mut der = PREFIX.to_vec();
    der.extend_from_slice(&public);
    Ok(format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        STANDARD.encode(der)
    ))
}

/// The `[keys]` of a configuration being rotated: the files as written in it (relative to
/// it), and the directory they are relative to.
struct Ring<'a> {
    config: &'a Config,
    source: &'a Source,
    base: PathBuf,
    private: String,
    public: Vec<String>,
}

impl<'a> Ring<'a> {
    fn of(config: &'a Config, source: &'a Source) -> Result<Self, String> {
        let keys = &config.keys;
        if keys.algorithm != Some(Algorithm::EdDSA) {
            return Err(
                "key rotation works on Ed25519 PEM keys: [keys] algorithm = \"EdDSA\" and \
                 private_pem (see docs/binary.md#rotating-keys)"
                    .into(),
            );
        }
        let private = keys.private_pem.as_ref().ok_or(
            "key rotation needs the signing key: [keys] private_pem (`jwt-gate keys generate --ed25519`)",
        )?;
        let text = |path: &Spanned<PathBuf>| path.get_ref().to_string_lossy().into_owned();
        Ok(Self {
            config,
            source,
            base: source.path.parent().unwrap_or(Path::new(".")).to_path_buf(),
            private: text(private),
            public: keys.public_pems().iter().map(text).collect(),
        })
    }

    fn read(&self, file: &str, private: bool) -> Result<Key, String> {
        let full = self.base.join(file);
        let pem = std::fs::read(&full)
            .map_err(|error| format!("cannot read {}: {error}", full.display()))?;
        let key = if private {
            Key::from_private_pem(Algorithm::EdDSA, &pem)
        } else {
            Key::from_public_pem(Algorithm::EdDSA, &pem)
        };
        key.map_err(|error| format!("{}: {error}", full.display()))
    }

    /// The listed public file whose key is `kid`.
    fn public_index(&self, kid: &str) -> Result<usize, String> {
        for (index, file) in self.public.iter().enumerate() {
            if thumbprint(&self.read(file, false)?)? == kid {
                return Ok(index);
            }
        }
        Err(format!("no key {kid:?} in [keys] public_pems"))
    }

    /// Writes `text` to `keys/<name>` beside the configuration (private files mode 0600),
    /// refusing to overwrite; returns the path as the configuration lists it.
    fn write_key(&self, name: &str, text: &str, private: bool) -> Result<String, String> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let dir = self.base.join("keys");
        std::fs::create_dir_all(&dir)
            .map_err(|error| format!("cannot make {}: {error}", dir.display()))?;
        let full = dir.join(name);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(if private { 0o600 } else { 0o644 })
            .open(&full)
            .map_err(|error| format!("cannot write {}: {error}", full.display()))?;
        file.write_all(text.as_bytes())
            .map_err(|error| format!("cannot write {}: {error}", full.display()))?;
        Ok(format!("keys/{name}"))
    }

    /// The public file of the key in private file `file`, written beside it if missing.
    fn public_file_of(&self, key: &Key, kid: &str) -> Result<String, String> {
        let listed = format!("keys/{kid}.pub.pem");
        if self.base.join(&listed).exists() {
            return Ok(listed);
        }
        self.write_key(&format!("{kid}.pub.pem"), &ed25519_public_pem(key)?, false)
    }

    /// Rewrites `private_pem` and `public_pems` in the file, and nothing else.
    fn save(&self) -> Result<(), String> {
        let keys = &self.config.keys;
        let quoted = |text: &str| toml::Value::String(text.to_owned()).to_string();
        let list = format!(
            "[{}]",
            self.public
                .iter()
                .map(|file| quoted(file))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let private_span = keys.private_pem.as_ref().expect("checked").span();
        let mut edits: Vec<(Range<usize>, String)> =
            vec![(private_span.clone(), quoted(&self.private))];
        match &keys.public_pems {
            Some(public) => edits.push((public.span(), list)),
            None => {
                let text = &self.source.text;
                let line_end = text[private_span.end..]
                    .find('\n')
                    .map_or(text.len(), |at| private_span.end + at);
                edits.push((line_end..line_end, format!("\npublic_pems = {list}")));
            }
        }
        edits.sort_by_key(|(span, _)| std::cmp::Reverse(span.start));
        let mut text = self.source.text.clone();
        for (span, replacement) in edits {
            text.replace_range(span, &replacement);
        }
        // Written whole, then renamed over the old file: a reader never sees half of it. The
        // file may hold passwords (a Redis or PostgreSQL URL): the new one is made with the
        // old one's permissions and owner before any byte is written, and reaches the disk
        // before it replaces the old. A symbolic link is followed, not replaced.
        let path = std::fs::canonicalize(&self.source.path)
            .map_err(|error| format!("cannot rewrite {}: {error}", self.source.path.display()))?;
        let temporary = path.with_extension("toml.new");
        rewrite(&path, &temporary, text.as_bytes())
            .map_err(|error| format!("cannot rewrite {}: {error}", path.display()))
    }
}

/// Replaces `path` by `text` through `temporary`, keeping `path`'s mode and owner.
fn rewrite(path: &Path, temporary: &Path, text: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};

    let old = std::fs::metadata(path)?;
    let _ = std::fs::remove_file(temporary);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(temporary)?;
    let written = (|| {
        // Owner first: a group-readable mode on a file still owned by another group would
        // show the passwords to that group for a moment.
        std::os::unix::fs::fchown(&file, Some(old.uid()), Some(old.gid())).or_else(|error| {
            // Only root may give a file away; a file of one's own keeps its owner anyway.
            if error.kind() == std::io::ErrorKind::PermissionDenied {
                Ok(())
            } else {
                Err(error)
            }
        })?;
        file.set_permissions(old.permissions())?;
        file.write_all(text)?;
        file.sync_all()
    })();
    if let Err(error) = written {
        let _ = std::fs::remove_file(temporary);
        return Err(error);
    }
    std::fs::rename(temporary, path)?;
    if let Some(directory) = path.parent() {
        // The rename itself reaches the disk with its directory.
        std::fs::File::open(directory)?.sync_all()?;
    }
    Ok(())
}

/// `keys add`: a new Ed25519 key, listed in `public_pems` (every instance verifies its
/// tokens), or made the signing key at once with `activate` (the old one then verifies).
/// Returns the new key's `kid`.
pub(crate) fn add(config: &Config, source: &Source, activate: bool) -> Result<String, String> {
    let mut ring = Ring::of(config, source)?;
    let pem = crate::keys::generate_ed25519_pem()?;
    let key = Key::from_private_pem(Algorithm::EdDSA, pem.as_bytes())
        .map_err(|error| error.to_string())?;
    let kid = thumbprint(&key)?;
    let private = ring.write_key(&format!("{kid}.pem"), &pem, true)?;
    let public = ring.public_file_of(&key, &kid)?;
    if activate {
        let old = ring.read(&ring.private, true)?;
        let old_public = ring.public_file_of(&old, &thumbprint(&old)?)?;
        ring.public.insert(0, old_public);
        ring.private = private;
    } else {
        ring.public.push(public);
    }
    ring.save()?;
    Ok(kid)
}

/// `keys activate KID`: the staged key `kid` (listed in `public_pems`, its private file in
/// `keys/`) signs from now on; the signing key so far moves to `public_pems`, so its tokens
/// keep verifying until it is retired.
pub(crate) fn activate(config: &Config, source: &Source, kid: &str) -> Result<(), String> {
    let mut ring = Ring::of(config, source)?;
    let old = ring.read(&ring.private, true)?;
    let old_kid = thumbprint(&old)?;
    if old_kid == kid {
        return Err(format!("{kid} already signs"));
    }
    let index = ring.public_index(kid)?;
    let private = format!("keys/{kid}.pem");
    let key = ring.read(&private, true)?;
    if thumbprint(&key)? != kid {
        return Err(format!("{private} does not hold the key {kid}"));
    }
    ring.public.remove(index);
    ring.public.insert(0, ring.public_file_of(&old, &old_kid)?);
    ring.private = private;
    ring.save()
}

/// `keys retire KID`: the key `kid` leaves `public_pems`: its tokens stop verifying once
/// every instance runs with the new file. Its files stay in `keys/` until you delete them.
pub(crate) fn retire(config: &Config, source: &Source, kid: &str) -> Result<(), String> {
    let mut ring = Ring::of(config, source)?;
    if thumbprint(&ring.read(&ring.private, true)?)? == kid {
        return Err(format!(
            "{kid} is the signing key: activate another first (`jwt-gate keys add --activate`)"
        ));
    }
    let index = ring.public_index(kid)?;
    ring.public.remove(index);
    ring.save()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_thumbprint_is_rfc_7638s() {
        // RFC 8037 §A.3: the thumbprint of the Ed25519 key of §A.2.
        let pem = "-----BEGIN PRIVATE KEY-----\n\
                   MC4CAQAwBQYDK2VwBCIEIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g\n\
                   -----END PRIVATE KEY-----\n";
        let key = Key::from_private_pem(Algorithm::EdDSA, pem.as_bytes()).unwrap();
        assert_eq!(
            thumbprint(&key).unwrap(),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
        let public = ed25519_public_pem(&key).unwrap();
        let again = Key::from_public_pem(Algorithm::EdDSA, public.as_bytes()).unwrap();
        assert_eq!(thumbprint(&again).unwrap(), thumbprint(&key).unwrap());
    }
}
