//! The examples' signing secret, shared by the demo server and the tonic example (included
//! with `#[path]`; not an example of its own): `JWT_GATE_SECRET` as given, or one generated
//! on first start and kept beside the SQLite database.

use std::path::{Path, PathBuf};

const MIN_SECRET_BYTES: usize = 32;

/// The signing secret: `JWT_GATE_SECRET` as given, or the one kept beside the database.
pub(crate) fn secret(db: &Path) -> Result<Vec<u8>, String> {
    match std::env::var("JWT_GATE_SECRET") {
        Ok(secret) if secret.len() >= MIN_SECRET_BYTES => Ok(secret.into_bytes()),
        Ok(secret) => Err(format!(
            "JWT_GATE_SECRET is {} bytes long; an HS256 secret needs at least {MIN_SECRET_BYTES}",
            secret.len()
        )),
        Err(std::env::VarError::NotUnicode(_)) => {
            Err("JWT_GATE_SECRET is not valid UTF-8".to_owned())
        }
        Err(std::env::VarError::NotPresent) => kept_secret(&secret_path(db)),
    }
}

fn secret_path(db: &Path) -> PathBuf {
    let mut name = db.file_name().unwrap_or_default().to_os_string();
    name.push(".secret");
    db.with_file_name(name)
}

/// Reads the kept secret, or makes one: 32 random bytes, hex-encoded, in a new file only the
/// owner can read. `create_new` refuses to follow a planted file or symlink.
fn kept_secret(path: &Path) -> Result<Vec<u8>, String> {
    match std::fs::read(path) {
        Ok(secret) => {
            check_private(path)?;
            if secret.len() < MIN_SECRET_BYTES {
                return Err(format!(
                    "{} holds fewer than {MIN_SECRET_BYTES} bytes",
                    path.display()
                ));
            }
            Ok(secret)
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let mut random = [0u8; 32];
            getrandom::getrandom(&mut random).map_err(|error| error.to_string())?;
            let secret: String = random.iter().map(|byte| format!("{byte:02x}")).collect();
            write_private(path, secret.as_bytes())
                .map_err(|error| format!("cannot create {}: {error}", path.display()))?;
            Ok(secret.into_bytes())
        }
        Err(error) => Err(format!("cannot read {}: {error}", path.display())),
    }
}

#[cfg(unix)]
fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

#[cfg(unix)]
fn check_private(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path)
        .map_err(|error| error.to_string())?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(format!(
            "{} is readable by others (mode {:o}); run: chmod 600 {}",
            path.display(),
            mode & 0o777,
            path.display()
        ));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_path: &Path) -> Result<(), String> {
    Ok(())
}
