//! Running one ECSpec generation, the way `ecspec generate` does, as a library call.
//!
//! - [`options`]: the settings a generation takes (mode, verification rule, sampling, link,
//!   energy, models), clap-derived so every command shares the same flags.
//! - [`models`]: [`load_family`] loads the draft (and the target when the cloud runs here),
//!   fetching registry models into the cache ([`model_path`]).
//! - [`run`]: [`run_one`] wires one generation: the cloud ([`LocalCloud`] on loopback, or a
//!   remote address), the emulated link around the TCP stream, the edge session, the virtual
//!   clock's compute times, the energy account and the edge's memory; [`RunSpec`] is what it
//!   runs. [`edge_setup`] builds the edge's configuration alone (the load generator's edges).
//! - [`config_file`]: settings from a TOML configuration file and `ECSPEC_*` environment
//!   variables, layered under the command line ([`config_file::layer`]).
//! - [`energy`]: device profiles and the per-round energy account of a summary.
//! - [`edge_memory`]: the acceptance evidence and policy state kept across requests in a file.
//! - [`output`]: committed tokens → the text a user sees (complete characters, cut at stop
//!   strings), shared by `generate` and the OpenAI-compatible server.
//! - [`progress`]: the download progress bar.

pub mod config_file;
pub mod connect;
pub mod edge_memory;
pub mod energy;
pub mod models;
pub mod options;
pub mod output;
pub mod progress;
pub mod run;

pub use ecspec_edge::{FinishReason, Summary};
pub use ecspec_spec::PolicySpec;
pub use models::{
    family_cloud_model, load_family, model_path, open_family, target_versions, Loaded,
};
pub use options::{
    CloudArgs, EnergyArgs, LinkArgs, LookupArgs, ModeArg, ModelArgs, SamplingArgs, VerifyArg,
};
pub use run::{
    edge_setup, prompt_ids, prompt_tokens, run_one, CloudEndpoint, LocalCloud, Prompt, PromptError,
    RunError, RunSpec,
};
