//! [`ListenerSecret`]: the random last path segment that makes the notification URL
//! unguessable.
//!
//! Exchange posts notifications without credentials, so the URL itself is the credential. The
//! secret is random per installation (256 bits when generated here), kept in a file readable
//! by the owner only, compared in constant time, and never logged.

use std::io::Write;
use std::path::Path;

use base64::Engine as _;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tracing::info;

use super::error::ListenerError;
use crate::secret::Secret;

/// Random bytes in a generated secret: 256 bits.
const GENERATED_BYTES: usize = 32;
/// Shortest accepted secret of hex digits only: 128 bits.
const MIN_HEX_CHARS: usize = 32;
/// Shortest accepted secret otherwise: 22 base64url characters are 132 bits.
const MIN_CHARS: usize = 22;
/// Longest accepted secret.
const MAX_CHARS: usize = 256;

/// The secret path segment of the notification URL. `Debug` and `Display` print `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct ListenerSecret(Secret);

impl std::fmt::Debug for ListenerSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ListenerSecret(***)")
    }
}

impl std::fmt::Display for ListenerSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl ListenerSecret {
    /// A new random secret: 256 bits from the operating system's generator, base64url without
    /// padding (43 characters).
    pub fn generate() -> Self {
        ListenerSecret(Secret::new(
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes()),
        ))
    }

    /// A new random secret of 256 bits as 64 lowercase hex digits, for systems that dislike
    /// mixed case in URLs.
    pub fn generate_hex() -> Self {
        let hex: String = random_bytes().iter().map(|b| format!("{b:02x}")).collect();
        ListenerSecret(Secret::new(hex))
    }

    /// Wraps a secret given in the configuration, after checking it: URL-safe characters only
    /// (`A-Z a-z 0-9 - _`) and long enough for 128 bits (32 hex digits, otherwise 22
    /// characters).
    pub fn new(value: impl Into<String>) -> Result<Self, ListenerError> {
        let value = value.into();
        check(&value).map_err(|reason| ListenerError::InvalidSecret { path: None, reason })?;
        Ok(ListenerSecret(Secret::new(value)))
    }

    /// Reads the secret from `path`, or, if there is no such file, generates one and writes it
    /// there (creating the folder), readable and writable by the owner only (mode 0600 on
    /// Unix). A file that the group or others may read is refused.
    pub fn load_or_create(path: &Path) -> Result<Self, ListenerError> {
        let file_error = |source| ListenerError::SecretFile {
            path: path.to_path_buf(),
            source,
        };
        match std::fs::read_to_string(path) {
            Ok(text) => return Self::from_file_text(path, &text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(file_error(e)),
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(file_error)?;
        }
        let secret = Self::generate();
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = match options.open(path) {
            Ok(file) => file,
            // Another process created it meanwhile: use theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let text = std::fs::read_to_string(path).map_err(file_error)?;
                return Self::from_file_text(path, &text);
            }
            Err(e) => return Err(file_error(e)),
        };
        file.write_all(secret.expose().as_bytes())
            .and_then(|()| file.write_all(b"\n"))
            .and_then(|()| file.sync_all())
            .map_err(file_error)?;
        info!(path = %path.display(), "created a new listener secret file");
        Ok(secret)
    }

    fn from_file_text(path: &Path, text: &str) -> Result<Self, ListenerError> {
        refuse_if_readable_by_others(path)?;
        let value = text.trim();
        check(value).map_err(|reason| ListenerError::InvalidSecret {
            path: Some(path.to_path_buf()),
            reason,
        })?;
        Ok(ListenerSecret(Secret::new(value)))
    }

    /// The secret itself, to build the URL given to Exchange. Never log the result.
    pub fn expose(&self) -> &str {
        self.0.expose()
    }

    /// Whether `candidate` is this secret, in time that does not depend on where they differ.
    pub fn matches(&self, candidate: &str) -> bool {
        PathDigest::of(self.expose().as_bytes()).matches(candidate.as_bytes())
    }
}

fn random_bytes() -> [u8; GENERATED_BYTES] {
    let mut bytes = [0u8; GENERATED_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes
}

fn check(value: &str) -> Result<(), &'static str> {
    if value.is_empty() {
        return Err("it is empty");
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err("it may hold only A-Z, a-z, 0-9, '-' and '_'");
    }
    let min = if value.bytes().all(|b| b.is_ascii_hexdigit()) {
        MIN_HEX_CHARS
    } else {
        MIN_CHARS
    };
    if value.len() < min {
        return Err(
            "it is too short for 128 bits (at least 32 hex digits or 22 base64url characters)",
        );
    }
    if value.len() > MAX_CHARS {
        return Err("it is longer than 256 characters");
    }
    Ok(())
}

/// Refuses a secret file that the group or others may read: whoever can read it can post
/// notifications.
#[cfg(unix)]
fn refuse_if_readable_by_others(path: &Path) -> Result<(), ListenerError> {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        return Err(ListenerError::InvalidSecret {
            path: Some(path.to_path_buf()),
            reason: "the file is readable by others; run chmod 600 on it",
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn refuse_if_readable_by_others(_path: &Path) -> Result<(), ListenerError> {
    Ok(())
}

/// The SHA-256 digest of the expected path. Comparing digests with a constant-time equality
/// takes the same time wherever the candidate differs and whatever its length, and the server
/// keeps no plain copy of the path.
#[derive(Clone)]
pub(crate) struct PathDigest([u8; 32]);

impl PathDigest {
    pub(crate) fn of(expected: &[u8]) -> Self {
        PathDigest(Sha256::digest(expected).into())
    }

    pub(crate) fn matches(&self, candidate: &[u8]) -> bool {
        let digest: [u8; 32] = Sha256::digest(candidate).into();
        digest.ct_eq(&self.0).into()
    }
}

impl std::fmt::Debug for PathDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PathDigest(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_generated_is_long_random_and_url_safe() {
        let a = ListenerSecret::generate();
        let b = ListenerSecret::generate();
        assert_ne!(a, b);
        assert_eq!(a.expose().len(), 43);
        assert!(ListenerSecret::new(a.expose()).is_ok());
        let h = ListenerSecret::generate_hex();
        assert_eq!(h.expose().len(), 64);
        assert!(h.expose().bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(ListenerSecret::new(h.expose()).is_ok());
    }

    #[test]
    fn secret_short_or_odd_is_refused_without_showing_it() {
        for bad in [
            "",
            "0123456789abcdef0123456789abcde", // 31 hex digits: 124 bits
            "short-but-not-hex",
            "has/slash/0123456789abcdef01234",
            "has%20percent0123456789abcdef012",
        ] {
            let err = ListenerSecret::new(bad).expect_err(bad);
            if !bad.is_empty() {
                assert!(!err.to_string().contains(bad), "{err}");
            }
        }
        assert!(ListenerSecret::new("0123456789abcdef0123456789abcdef").is_ok());
        assert!(ListenerSecret::new("Zm9vYmFyLWJhei1xdXV4LTE").is_ok());
    }

    #[test]
    fn secret_debug_and_display_are_redacted() {
        let s = ListenerSecret::generate();
        assert!(!format!("{s:?} {s}").contains(s.expose()));
    }

    #[test]
    fn secret_matches_only_itself() {
        let s = ListenerSecret::generate();
        assert!(s.matches(s.expose()));
        assert!(!s.matches(&s.expose()[..42]));
        assert!(!s.matches(&format!("{}x", s.expose())));
        assert!(!s.matches(""));
    }

    #[test]
    fn secret_file_is_created_once_with_owner_only_permissions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/listener.secret");
        let first = ListenerSecret::load_or_create(&path).expect("create");
        let again = ListenerSecret::load_or_create(&path).expect("load");
        assert_eq!(first, again);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn secret_file_with_a_bad_value_names_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("listener.secret");
        std::fs::write(&path, "tooshort\n").expect("write");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        }
        let err = ListenerSecret::load_or_create(&path).expect_err("short");
        let text = err.to_string();
        assert!(text.contains("listener.secret"), "{text}");
        assert!(text.contains("shorter") || text.contains("short"), "{text}");
        assert!(!text.contains("tooshort"), "{text}");
    }

    #[cfg(unix)]
    #[test]
    fn secret_file_readable_by_others_is_refused_with_the_chmod_to_run() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("listener.secret");
        let value = ListenerSecret::generate();
        std::fs::write(&path, value.expose()).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = ListenerSecret::load_or_create(&path).expect_err("readable by others");
        assert!(err.to_string().contains("chmod 600"), "{err}");
        assert!(!err.to_string().contains(value.expose()), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert_eq!(
            ListenerSecret::load_or_create(&path).expect("private"),
            value
        );
    }
}
