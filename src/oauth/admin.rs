//! The admin token: a 256-bit secret written (0600) to the data directory on
//! first start, presented as `Authorization: Bearer` by operators and the
//! `slcs` admin verbs. Kept in memory only as a SHA-256 hash and compared in
//! constant time.

use std::path::Path;

/// The verifier of the admin token.
#[derive(Clone)]
pub struct AdminToken {
    hash: [u8; 32],
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

/// Why the admin token could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("admin token {path}: {message}")]
pub struct AdminTokenError {
    path: String,
    message: String,
}

impl AdminToken {
    /// Loads the token file (which must not be readable by group or others).
    pub fn load(path: &Path) -> Result<Self, AdminTokenError> {
        let error = |message: String| AdminTokenError {
            path: path.display().to_string(),
            message,
        };
        crate::pki::ca::check_private_mode(path).map_err(|e| error(e.to_string()))?;
        let text = zeroize::Zeroizing::new(
            std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?,
        );
        let token = text.trim();
        if token.len() < 32 {
            return Err(error("shorter than 32 characters".into()));
        }
        Ok(Self {
            hash: digest(token),
        })
    }

    /// Whether `presented` is the admin token (constant time).
    pub fn verify(&self, presented: &str) -> bool {
        aws_lc_rs::constant_time::verify_slices_are_equal(&digest(presented), &self.hash).is_ok()
    }
}

fn digest(token: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    // Invariant: a SHA-256 digest is 32 bytes, so the lengths always match.
    out.copy_from_slice(digest.as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_only_the_exact_token() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin-token");
        let token = "x".repeat(43);
        std::fs::write(&path, format!("{token}\n")).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let admin = AdminToken::load(&path).unwrap();
        assert!(admin.verify(&token));
        assert!(!admin.verify(&format!("{token}y")));
        assert!(!admin.verify(&"x".repeat(42)));
        assert!(!admin.verify(""));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(AdminToken::load(&path).is_err());
    }
}
