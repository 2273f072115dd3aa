//! Errors of training.

use std::path::PathBuf;

/// Everything that can go wrong preparing data for, running, checkpointing or saving a
/// training run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// Loading or running the base model failed.
    #[error(transparent)]
    Model(#[from] ecspec_model::ModelError),
    /// A candle kernel or autograd failed.
    #[error("tensor backend: {0}")]
    Candle(#[from] candle_core::Error),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The corpus gave no usable text, or a path does not exist.
    #[error("corpus: {0}")]
    Corpus(String),
    /// A checkpoint is missing, malformed, or was written by another configuration.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// Tensor shapes that do not fit together.
    #[error("shape: {0}")]
    Shape(String),
    /// An invalid training setting.
    #[error("invalid setting: {0}")]
    Config(String),
    /// The loss became NaN or infinite.
    #[error("loss diverged at step {step}: {loss}")]
    Diverged {
        /// Step number.
        step: usize,
        /// The value.
        loss: f32,
    },
}

impl TrainError {
    /// An I/O error naming its path.
    pub fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, TrainError>;
