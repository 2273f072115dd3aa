//! Errors of the load generator.

use std::path::PathBuf;

/// What can stop a load run (a single request's failure does not: it is recorded in its
/// [`crate::RequestRecord::error`] and counted as failed).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A setting out of range, saying which and why.
    #[error("{0}")]
    BadSetting(String),
    /// The in-process cloud could not start.
    #[error("starting the in-process cloud: {0}")]
    Cloud(#[source] std::io::Error),
    /// A task of the load generator itself panicked or was cancelled.
    #[error("a load task failed: {0}")]
    Task(String),
    /// A report file could not be written.
    #[error("writing {}: {message}", path.display())]
    Output {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}
