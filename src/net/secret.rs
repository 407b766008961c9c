//! The cluster secret (`--cluster-secret FILE`, README, Security): the file's bytes
//! with surrounding whitespace trimmed, at least 16 of them. It only ever
//! keys HMACs; it is never sent, logged or shown.

use std::fmt;
use std::path::Path;

/// Shortest secret accepted: 16 bytes (128 bits if random).
pub const SECRET_BYTES_MIN: usize = 16;
/// A secret is a key, not a document.
const SECRET_BYTES_MAX: usize = 4096;

#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn load(path: &Path) -> Result<Secret, String> {
        let what = || format!("--cluster-secret {}", path.display());
        let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", what()))?;
        if meta.len() > SECRET_BYTES_MAX as u64 + 64 {
            return Err(format!("{}: {} bytes is not a secret (at most {SECRET_BYTES_MAX})", what(), meta.len()));
        }
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", what()))?;
        Secret::from_bytes(&bytes).map_err(|e| format!("{}: {e}", what()))
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Secret, String> {
        let trimmed = bytes.trim_ascii();
        if trimmed.len() < SECRET_BYTES_MIN {
            return Err(format!(
                "the secret is {} bytes; at least {SECRET_BYTES_MIN} are needed (e.g. `openssl rand -hex 32 > FILE`)",
                trimmed.len()
            ));
        }
        if trimmed.len() > SECRET_BYTES_MAX {
            return Err(format!("the secret is {} bytes; at most {SECRET_BYTES_MAX}", trimmed.len()));
        }
        Ok(Secret(trimmed.to_vec()))
    }

    pub fn key(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(<{} bytes>)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whitespace_is_trimmed_short_secrets_refused_and_debug_hides_it() {
        let s = Secret::from_bytes(b"  0123456789abcdef\n").unwrap();
        assert_eq!(s.key(), b"0123456789abcdef");
        assert_eq!(format!("{s:?}"), "Secret(<16 bytes>)");
        let err = Secret::from_bytes(b"short\n").unwrap_err();
        assert!(err.contains("at least 16"), "{err}");
    }
}
