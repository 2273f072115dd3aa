//! ECSpec's evaluation and family tasks as library calls; the `ecspec` binary parses their
//! options and calls them.
//!
//! - [`bench`]: the benchmark harness (`ecspec bench`): prompts × link scenarios × systems ×
//!   target versions on the virtual or the live clock, JSONL/CSV/Markdown reports and plots;
//!   [`bench::load`] the load generator's command (`ecspec load`, on `ecspec-load`).
//! - [`profile`]: this machine's model speeds (`ecspec profile`).
//! - [`family_eval`]: every version against the static, untrained and conventional drafts
//!   (`ecspec family eval`); [`speedup`]: in-process greedy speculative decoding against the
//!   target alone (`ecspec family speedup`).
//! - [`family_tasks`]: training the static draft, evolving versions, distilling the
//!   conventional draft, self-distillation data, FR-Spec vocabulary subsets (`ecspec family …`).
//! - [`demo`]: the default demonstration's comparison and report (`ecspec demo`).
//! - [`doctor`]: this machine's and this setup's checks (`ecspec doctor`): CPU and kernels,
//!   cached models, shipped drafts, shared data, configuration, whether the cloud answers.
//! - [`prompts`]: Spec-Bench / MT-Bench prompt files and the shared data directory.
//! - [`soak`]: many edges against one cloud for a bounded time with random outages
//!   (`ecspec soak`): lost or repeated tokens, round latency, memory and descriptors.

pub mod bench;
pub mod demo;
pub mod doctor;
pub mod family_eval;
pub mod family_tasks;
pub mod profile;
pub mod prompts;
pub mod resync;
pub mod soak;
pub mod speedup;
