//! The flags of `ecspec bench`.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use ecspec_family::FamilyName;

use super::scenario::DEFAULT_SCENARIOS;
use crate::prompts;

/// The default systems.
pub const DEFAULT_SYSTEMS: &str = "cloud-only,edge-only,sd-fixed:4,sd-fixed:4+resync,ecspec";

/// Which clock times the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ClockArg {
    /// Discrete-event: compute times from device profiles, link times from the link models.
    Virtual,
    /// Real time: this machine's compute, the emulated link in real time.
    Live,
}

/// `ecspec bench`
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Model families, each benchmarked in turn (with several, each writes to OUT/<family> and
    /// OUT/report.md gathers their reports).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "smollm2,qwen2.5-coder"
    )]
    pub family: Vec<FamilyName>,
    /// Family manifest with the target versions and the static draft [default: the shipped
    /// families/<family>/family.toml; a family without one serves its target as `v0`].
    #[arg(long, value_name = "FILE")]
    pub manifest: Option<PathBuf>,
    /// Conventional drafts, one per version: DIR/VERSION/draft.safetensors (`ecspec family
    /// distill-draft`) [default: ~/.cache/ecspec/train/<family>/conventional when present].
    /// Without them the `sd-fixed` systems of a shared-backbone family are skipped.
    #[arg(long, value_name = "DIR")]
    pub conventional_dir: Option<PathBuf>,
    #[command(flatten)]
    pub workload: prompts::WorkloadArgs,
    /// Link scenarios: built-in names (5g-static, 5g-driving, lte-driving, umts-driving,
    /// const-10mbit-60ms, loopback) or scenario TOML files.
    #[arg(long, value_delimiter = ',', default_value = DEFAULT_SCENARIOS)]
    pub scenarios: Vec<String>,
    /// Systems: cloud-only, edge-only, sd-fixed:K, sd-fixed:K+resync, ecspec, static:POLICY;
    /// a speculative system with `@B` runs under an edge energy budget of B J per token.
    #[arg(long, value_delimiter = ',', default_value = DEFAULT_SYSTEMS)]
    pub systems: Vec<String>,
    /// Target versions (default: all of the manifest's).
    #[arg(long, value_delimiter = ',')]
    pub versions: Vec<String>,
    /// Clock.
    #[arg(long, value_enum, default_value = "virtual")]
    pub clock: ClockArg,
    /// Edge compute times (virtual clock): `measured` (this machine, now), a shipped device
    /// profile (this-machine, phone-s25ultra, jetson-orin-nano) or a profile file.
    #[arg(long, default_value = "measured", value_name = "NAME|FILE")]
    pub edge_profile: String,
    /// Cloud compute times (virtual clock): `measured`, datacenter-a100, this-machine or a
    /// profile file.
    #[arg(long, default_value = "measured", value_name = "NAME|FILE")]
    pub cloud_profile: String,
    /// Device profile of the edge energy (radio and compute power).
    #[arg(long, default_value = "this-machine", value_name = "NAME|FILE")]
    pub energy_profile: String,
    /// Tokens generated per request.
    #[arg(long, default_value_t = 48, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub max_tokens: u32,
    /// Temperature (0: greedy, and outputs are checked against the cloud-only ones).
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Sampling seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Request i starts the link i × this many seconds into its traces (each request meets
    /// another phase of a trace; every system meets the same ones).
    #[arg(long, default_value_t = 30.0)]
    pub phase_s: f64,
    /// Output directory.
    #[arg(long, value_name = "DIR", default_value = "bench-out")]
    pub out: PathBuf,
    /// Scenarios run side by side on the virtual clock (wall time only; the results do not
    /// depend on it). The live clock runs one at a time.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub jobs: u32,
}
