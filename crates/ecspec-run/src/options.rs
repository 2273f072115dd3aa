//! The options a generation takes, shared by `generate`, `demo`, `bench`, `load` and `family
//! eval`: mode, verification rule, sampling, link, energy and which models. They derive
//! clap's `Args` so every command flattens the same flags with the same help.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use ecspec_family::FamilyName;
use ecspec_link::CsvFormat;

/// Generation modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// Edge drafts, cloud verifies.
    Speculative,
    /// The cloud decodes alone and streams tokens.
    CloudOnly,
    /// The draft decodes alone on the edge (unverified).
    EdgeOnly,
}

/// Verification rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum VerifyArg {
    /// greedy at temperature 0; with --seed, match (reproducible: the text is the cloud-only
    /// text of that seed); otherwise as `switch`.
    Auto,
    /// greedy at temperature 0; otherwise match or rejection, chosen each round by expected
    /// goodput at the current uplink rate (a sampled text then depends on the rounds).
    Switch,
    /// Accept while drafts equal the target's argmax (temperature 0).
    Greedy,
    /// Accept while drafts equal the target's own samples.
    Match,
    /// Rejection sampling with compact draft distributions.
    Rejection,
}

/// The cloud an edge talks to (`generate`, `edge serve`).
#[derive(Debug, Clone, Default, Args)]
pub struct CloudArgs {
    /// A running cloud server (host:port); without it the target runs in this process behind
    /// a loopback cloud server.
    #[arg(long, value_name = "ADDR")]
    pub cloud: Option<String>,
    /// Send the first token of FILE (one per line, `#` comments skipped) in the Hello, for a
    /// cloud started with --auth-token-file.
    #[arg(long, value_name = "FILE", requires = "cloud")]
    pub auth_token_file: Option<PathBuf>,
    /// Connect to the cloud over TLS, trusting the CA certificate(s) in this PEM file (the
    /// cloud's certificate must name the --cloud host).
    #[arg(long, value_name = "FILE", requires = "cloud")]
    pub tls_ca: Option<PathBuf>,
}

impl CloudArgs {
    /// The remote cloud, resolved, with its token and TLS ([`crate::run::Remote::resolve`]);
    /// None without `--cloud`.
    ///
    /// # Errors
    /// See [`crate::run::Remote::resolve`].
    pub async fn remote(&self) -> anyhow::Result<Option<crate::run::Remote>> {
        match &self.cloud {
            Some(c) => Ok(Some(
                crate::run::Remote::resolve(
                    c,
                    self.auth_token_file.as_deref(),
                    self.tls_ca.as_deref(),
                )
                .await?,
            )),
            None => Ok(None),
        }
    }
}

/// The edge device's energy.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Energy")]
pub struct EnergyArgs {
    /// Device profile for the edge energy in the summary: this-machine, phone-s25ultra,
    /// jetson-orin-nano, or a profile TOML file.
    #[arg(long, value_name = "NAME|FILE", default_value = "this-machine")]
    pub energy_profile: String,
    /// Edge energy budget, J per committed token, kept on average by the ecspec policy (a
    /// virtual queue prices energy against goodput each round).
    #[arg(long, value_name = "J")]
    pub energy_budget: Option<f64>,
}

/// The emulated wireless link between edge and cloud.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Link")]
pub struct LinkArgs {
    /// Uplink rate, Mbit/s [default: 10].
    #[arg(long, value_name = "MBPS", allow_negative_numbers = true)]
    pub link_up_mbps: Option<f64>,
    /// Downlink rate, Mbit/s [default: 20].
    #[arg(long, value_name = "MBPS", allow_negative_numbers = true)]
    pub link_down_mbps: Option<f64>,
    /// Round-trip propagation delay, ms [default: 60].
    #[arg(long, value_name = "MS", allow_negative_numbers = true)]
    pub rtt_ms: Option<f64>,
    /// Mahimahi trace shaping the uplink.
    #[arg(long, value_name = "FILE")]
    pub link_trace_up: Option<PathBuf>,
    /// Mahimahi trace shaping the downlink.
    #[arg(long, value_name = "FILE")]
    pub link_trace_down: Option<PathBuf>,
    /// Per-second throughput CSV trace (see --link-csv-format): the Irish 5G format shapes
    /// both directions, the 5Gophers ones the downlink.
    #[arg(long, value_name = "FILE")]
    pub link_csv: Option<PathBuf>,
    /// Columns of --link-csv: `irish-5g` (DL_bitrate/UL_bitrate kbit/s), `gophers-walking`
    /// (throughput_mbps), `gophers-driving:CARRIER` (CARRIER_throughput_mbps: Sprint,
    /// TMobile, Verizon).
    #[arg(long, value_name = "FORMAT", default_value = "irish-5g")]
    pub link_csv_format: CsvFormat,
    /// Synthetic uplink model, e.g. `gilbert-elliott:good_mbps=10,bad_mbps=0,p_gb=0.02,p_bg=0.2`,
    /// `gauss-markov:mean_db=15,std_db=6,rho=0.9,bandwidth_mhz=5`,
    /// `rayleigh:mean_db=15,rho=0.9,bandwidth_mhz=5` (+ slot_ms, duration_s, seed, efficiency).
    #[arg(long, value_name = "SPEC")]
    pub link_model_up: Option<String>,
    /// Synthetic downlink model (as --link-model-up).
    #[arg(long, value_name = "SPEC")]
    pub link_model_down: Option<String>,
    /// Standard deviation of each chunk's one-way delay, ms (Gaussian around RTT / 2, seeded,
    /// delivery kept in order).
    #[arg(long, value_name = "MS")]
    pub delay_jitter_ms: Option<f64>,
    /// Seed of --delay-jitter-ms.
    #[arg(long, default_value_t = 1)]
    pub jitter_seed: u64,
    /// Take the RTT from the --link-csv trace's RTT column (Irish 5G: PINGAVG), per second.
    #[arg(long)]
    pub rtt_from_trace: bool,
    /// Start the link this many seconds into its traces or models (another phase of a trace).
    #[arg(long, value_name = "S")]
    pub link_start_s: Option<f64>,
    /// No emulated link: talk to the cloud directly (zero added delay).
    #[arg(long)]
    pub no_link: bool,
    /// A link outage: from AT seconds (link time) the link is down both ways for FOR seconds
    /// and the connection is reset; the edge reconnects and resumes (repeatable).
    #[arg(long, value_name = "AT:FOR", allow_hyphen_values = true)]
    pub outage: Vec<ecspec_link::Outage>,
}

/// Which models to run.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Models")]
pub struct ModelArgs {
    /// Model family.
    #[arg(long, value_enum, default_value = "smollm2")]
    pub family: FamilyName,
    /// Target model GGUF (default: the family's, fetched into the cache).
    #[arg(long, value_name = "PATH")]
    pub model: Option<PathBuf>,
    /// Draft model GGUF (default: the family's; for a shared-backbone draft, its base).
    #[arg(long, value_name = "PATH")]
    pub draft_model: Option<PathBuf>,
    /// Base layers a shared-backbone draft reuses before its anchor layer.
    #[arg(long, default_value_t = 4)]
    pub shared_layers: usize,
    /// The shared-backbone draft's anchor layer (safetensors, as written by `ecspec family
    /// train-draft`) [default: the family's shipped trained anchor,
    /// families/<family>/draft/anchor.safetensors]; `none`: the untrained copy of the base's
    /// last layer.
    #[arg(long, value_name = "FILE|none")]
    pub anchor: Option<PathBuf>,
    /// A conventional draft with its own embedding and head (safetensors, as written by
    /// `ecspec family distill-draft`) instead of the shared-backbone draft.
    #[arg(long, value_name = "FILE", conflicts_with = "anchor")]
    pub draft_file: Option<PathBuf>,
}

/// Sampling and verification.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Sampling")]
pub struct SamplingArgs {
    /// Softmax temperature (0 = greedy).
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Nucleus (top-p) mass in (0, 1].
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// Keep only the top-k tokens (0 = off).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Seed of the samplers [default: 0]. Given, a sampled generation is reproducible: the
    /// target's draw at each position is keyed by (seed, position), `--verify auto` verifies
    /// by match, and the text equals `--mode cloud-only` with the same seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Verification rule.
    #[arg(long, value_enum, default_value = "auto")]
    pub verify: VerifyArg,
    /// Tokens kept per compact draft distribution (rejection mode).
    #[arg(long, default_value_t = 8)]
    pub dist_top_k: usize,
    /// Bits per quantized draft probability (rejection mode, 1–16).
    #[arg(long, default_value_t = 8)]
    pub dist_bits: u8,
    /// Pipelined drafting: while a round is in flight, draft the continuation that assumes
    /// it is accepted in full, and use it when it is (pays off at high RTT and acceptance).
    #[arg(long)]
    pub pipeline_draft: bool,
    /// The edge's memory across requests: read the acceptance evidence and the draft-length
    /// policy's state that earlier requests with this draft and policy left in FILE (JSON,
    /// created if missing), start from them, and write them back after the request.
    #[arg(long, value_name = "FILE")]
    pub edge_memory: Option<PathBuf>,
    #[command(flatten)]
    pub lookup: LookupArgs,
}

impl SamplingArgs {
    /// The settings the evaluation commands run with: `temperature` (greedy at 0, else match
    /// or rejection chosen per round: `switch`), `seed`, drafts from `drafter`, and every other flag at
    /// its default (no top-p/top-k cut, 8 × 8-bit compact distributions, no pipelining, no
    /// memory across requests).
    pub fn evaluation(temperature: f32, seed: u64, drafter: ecspec_edge::DraftSource) -> Self {
        Self {
            temperature,
            top_p: 1.0,
            top_k: 0,
            seed: Some(seed),
            // They compare the channel-aware choice, not reproduce one text.
            verify: VerifyArg::Switch,
            dist_top_k: 8,
            dist_bits: 8,
            pipeline_draft: false,
            edge_memory: None,
            lookup: LookupArgs {
                drafter,
                ..LookupArgs::default()
            },
        }
    }
}

/// Where drafted tokens come from, and context lookup's settings.
#[derive(Debug, Clone, Args)]
pub struct LookupArgs {
    /// Drafter: `model` (the static draft model), `lookup` (tokens copied from what followed
    /// the latest earlier occurrence of the last n-gram of prompt + output: no model compute;
    /// LLMA, arXiv 2304.04487), or `hybrid` (lookup when it matches and its expected goodput
    /// beats the model's and a cloud stream's at the current channel state, else the model).
    #[arg(long, default_value = "hybrid", value_name = "SOURCE")]
    pub drafter: ecspec_edge::DraftSource,
    /// Context lookup: tokens proposed per match.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=32))]
    pub lookup_len: u32,
    /// Context lookup: longest suffix n-gram matched (tried first).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub lookup_max_ngram: u32,
    /// Context lookup: shortest suffix n-gram matched (≤ --lookup-max-ngram).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub lookup_min_ngram: u32,
}

impl Default for LookupArgs {
    /// The command line's defaults.
    fn default() -> Self {
        let l = ecspec_edge::Lookup::default();
        Self {
            drafter: ecspec_edge::DraftSource::default(),
            lookup_len: l.draft_len as u32,
            lookup_max_ngram: l.max_ngram as u32,
            lookup_min_ngram: l.min_ngram as u32,
        }
    }
}

impl LookupArgs {
    /// The lookup settings.
    ///
    /// # Errors
    /// `--lookup-min-ngram` above `--lookup-max-ngram`.
    pub fn lookup(&self) -> anyhow::Result<ecspec_edge::Lookup> {
        if self.lookup_min_ngram > self.lookup_max_ngram {
            anyhow::bail!(
                "--lookup-min-ngram {} is above --lookup-max-ngram {}",
                self.lookup_min_ngram,
                self.lookup_max_ngram
            );
        }
        Ok(ecspec_edge::Lookup {
            max_ngram: self.lookup_max_ngram as usize,
            min_ngram: self.lookup_min_ngram as usize,
            draft_len: self.lookup_len as usize,
        })
    }
}
