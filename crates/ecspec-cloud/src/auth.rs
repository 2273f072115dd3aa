//! Who may open a session: the bearer tokens of `cloud serve --auth-token-file`.
//!
//! A token file holds one token per line; blank lines and lines starting with `#` are
//! skipped, surrounding whitespace is trimmed. A Hello's `auth_token` is accepted when it
//! equals one of them. The comparison is constant-time in the token's content and length:
//! both sides are hashed with SHA-256 and the 32-byte digests compared with `subtle`
//! (`ConstantTimeEq`), every stored token compared whatever the result of the others, so the
//! time a refusal takes says nothing about how close a guess was.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Shortest token accepted in a token file, in bytes: shorter ones are guessable.
pub const MIN_TOKEN_BYTES: usize = 16;

/// The tokens a cloud accepts (their SHA-256 digests only; the tokens are not kept).
#[derive(Clone)]
pub struct AuthTokens {
    digests: Vec<[u8; 32]>,
}

impl std::fmt::Debug for AuthTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AuthTokens({} tokens)", self.digests.len())
    }
}

/// Why a token file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The file could not be read.
    #[error("auth token file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file holds no token.
    #[error("auth token file {path} holds no token (one per line; blank lines and # comments are skipped)")]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// A token is too short, or not printable ASCII.
    #[error("auth token file {path}, line {line}: {why}")]
    BadToken {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it (the token itself is not echoed).
        why: String,
    },
}

impl AuthTokens {
    /// Reads a token file (see the module docs).
    ///
    /// # Errors
    /// [`AuthError`]: unreadable, empty, or a token under [`MIN_TOKEN_BYTES`] bytes or with a
    /// character outside printable ASCII.
    pub fn from_file(path: &Path) -> Result<Self, AuthError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut tokens = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let t = line.trim();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            let bad = |why: String| AuthError::BadToken {
                path: path.to_path_buf(),
                line: i + 1,
                why,
            };
            if t.len() < MIN_TOKEN_BYTES {
                return Err(bad(format!(
                    "a token of {} bytes is too short (at least {MIN_TOKEN_BYTES}; e.g. `openssl rand -hex 32`)",
                    t.len()
                )));
            }
            if !t.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(bad("a token must be printable ASCII without spaces".into()));
            }
            tokens.push(t.to_string());
        }
        if tokens.is_empty() {
            return Err(AuthError::Empty {
                path: path.to_path_buf(),
            });
        }
        Ok(Self::new(tokens.iter().map(String::as_str)))
    }

    /// The given tokens (no length or character checks: for tests and callers that checked).
    pub fn new<'a>(tokens: impl IntoIterator<Item = &'a str>) -> Self {
        Self {
            digests: tokens.into_iter().map(digest).collect(),
        }
    }

    /// Number of tokens accepted.
    pub fn len(&self) -> usize {
        self.digests.len()
    }

    /// Whether no token is accepted (then nothing is).
    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// Which token `token` is (its index in the file's order, as a client identity for
    /// per-client limits), or None. Constant-time: every stored digest is compared.
    pub fn check(&self, token: &str) -> Option<usize> {
        let d = digest(token);
        let mut found = None;
        for (i, stored) in self.digests.iter().enumerate() {
            if bool::from(stored.ct_eq(&d)) {
                found = Some(i);
            }
        }
        found
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> (tempfile_path::Guard, PathBuf) {
        tempfile_path::write(text)
    }

    /// A temporary file removed on drop (std only).
    mod tempfile_path {
        use std::path::PathBuf;
        pub struct Guard(pub PathBuf);
        impl Drop for Guard {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
        pub fn write(text: &str) -> (Guard, PathBuf) {
            use std::sync::atomic::{AtomicUsize, Ordering};
            static N: AtomicUsize = AtomicUsize::new(0);
            let p = std::env::temp_dir().join(format!(
                "ecspec-auth-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::write(&p, text).unwrap();
            (Guard(p.clone()), p)
        }
    }

    #[test]
    fn a_token_file_accepts_its_tokens_only() {
        let (_g, p) = file("# edges\n  alpha-0123456789abcdef  \n\nbeta-0123456789abcdef\n");
        let t = AuthTokens::from_file(&p).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t.check("alpha-0123456789abcdef"), Some(0));
        assert_eq!(t.check("beta-0123456789abcdef"), Some(1));
        assert_eq!(t.check("beta-0123456789abcdeF"), None);
        assert_eq!(t.check(""), None);
        assert_eq!(t.check("alpha-0123456789abcdef "), None);
    }

    #[test]
    fn bad_token_files_name_what_is_wrong() {
        let (_g, p) = file("# nothing\n\n");
        let e = AuthTokens::from_file(&p).unwrap_err().to_string();
        assert!(e.contains("holds no token"), "{e}");
        let (_g, p) = file("0123456789abcdef0\nshort\n");
        let e = AuthTokens::from_file(&p).unwrap_err().to_string();
        assert!(e.contains("line 2: a token of 5 bytes is too short"), "{e}");
        assert!(!e.contains("short\n"), "the token is not echoed: {e}");
        let (_g, p) = file("0123456789abcdef 0123\n");
        let e = AuthTokens::from_file(&p).unwrap_err().to_string();
        assert!(e.contains("line 1: a token must be printable ASCII"), "{e}");
        let e = AuthTokens::from_file(Path::new("/nonexistent/tokens"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("auth token file /nonexistent/tokens: "),
            "{e}"
        );
    }
}
