//! Errors of reading, checking and loading a family.

use std::path::PathBuf;

use ecspec_model::{LoraError, ModelError};

/// Everything that can be wrong with a family manifest or the files it names. Every variant
/// names the file and, for manifest values, the key (`version[2].parent`, TOML path syntax).
#[derive(Debug, thiserror::Error)]
pub enum FamilyError {
    /// A file could not be read or written.
    #[error("{path}: {reason}")]
    Io { path: PathBuf, reason: String },
    /// The manifest is not valid TOML, has a value of the wrong type, misses a required key or
    /// has an unknown one. `reason` is the TOML parser's message, with line and column.
    #[error("{path}: {reason}")]
    Parse { path: PathBuf, reason: String },
    /// A key has a value of the right type that is not acceptable.
    #[error("{path}: key `{key}`: {reason}")]
    Invalid {
        path: PathBuf,
        key: String,
        reason: String,
    },
    /// A file or directory the manifest names does not exist.
    #[error("{path}: key `{key}` names {file}, which does not exist")]
    MissingFile {
        path: PathBuf,
        key: String,
        file: PathBuf,
    },
    /// The base GGUF's SHA-256 is not the manifest's.
    #[error("base model {file}: sha256 is {found}, the manifest (base.sha256) expects {expected}")]
    BaseSha256 {
        file: PathBuf,
        expected: String,
        found: String,
    },
    /// The anchor file's SHA-256 is not the manifest's.
    #[error(
        "anchor {file}: sha256 is {found}, the manifest (draft.anchor_sha256) expects {expected}"
    )]
    AnchorSha256 {
        file: PathBuf,
        expected: String,
        found: String,
    },
    /// The hash of the frozen base tensors is not the manifest's.
    #[error("base model {file}: frozen-tensor hash is {found}, the manifest (frozen.base_hash) expects {expected}")]
    BaseHash {
        file: PathBuf,
        expected: String,
        found: String,
    },
    /// The base GGUF could not be loaded.
    #[error("base model {file}: {source}")]
    Base { file: PathBuf, source: ModelError },
    /// The draft layout does not fit the base.
    #[error("{path}: key `{key}`: {reason}")]
    Draft {
        path: PathBuf,
        key: String,
        reason: String,
    },
    /// The anchor layer file does not fit the base.
    #[error("anchor (draft.anchor) {file}: {source}")]
    Anchor { file: PathBuf, source: ModelError },
    /// A version's adapter is malformed or does not fit the base.
    #[error("version `{version}` (adapter {dir}): {source}")]
    Adapter {
        version: String,
        dir: PathBuf,
        source: Box<LoraError>,
    },
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, FamilyError>;
