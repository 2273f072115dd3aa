//! `ecspec edge serve`'s flags: where to listen, the cloud, the request limits, and the same
//! model, policy, sampling, link and energy flags as `generate` (their values are the
//! defaults a request's own fields override).

use clap::Args;
use ecspec_run::{CloudArgs, EnergyArgs, LinkArgs, ModeArg, ModelArgs, PolicySpec, SamplingArgs};

/// `ecspec edge serve`
#[derive(Debug, Clone, Args)]
pub struct EdgeServeArgs {
    /// Address the HTTP server listens on (port 0: any free port, printed at start).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8000")]
    pub listen: String,
    /// The cloud (as `generate`'s).
    #[command(flatten)]
    pub cloud: CloudArgs,
    /// Requests generated at once; more are answered 429 with Retry-After.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub max_concurrent: u32,
    /// Token budget of a request that gives neither max_tokens nor max_completion_tokens.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub default_max_tokens: u32,
    /// Generation mode of every request.
    #[arg(long, value_enum, default_value = "speculative")]
    pub mode: ModeArg,
    /// Draft-length policy (as `generate --draft-len`).
    #[arg(long, default_value = "ecspec", value_parser = PolicySpec::parse)]
    pub draft_len: PolicySpec,
    /// Models.
    #[command(flatten)]
    pub models: ModelArgs,
    /// Sampling defaults (a request's temperature, top_p and seed override them).
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// The emulated link between this edge and the cloud (`--no-link` for a real network).
    #[command(flatten)]
    pub link: LinkArgs,
    /// Edge energy reported per request.
    #[command(flatten)]
    pub energy: EnergyArgs,
}
