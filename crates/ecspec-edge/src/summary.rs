//! What a generation reports: one [`RoundRecord`] per verdict and the [`Summary`] at the end,
//! built by [`SummaryBuilder`] as rounds are committed; and the [`SessionMemory`] a request
//! leaves for the next one.

use std::fmt;
use std::time::Duration;

use ecspec_spec::verify::VerifyRule;
use serde::Serialize;
use tokio::time::Instant;

use crate::mode::Mode;
use crate::plan::RoundPlanner;

/// Implements `as_str`'s companions for a label enum: `Display` and `Debug` as the name (so a
/// failing assertion prints `"match"`, as the string field did), and `== "name"`.
macro_rules! label_traits {
    ($t:ty) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(self.as_str(), f)
            }
        }
        impl PartialEq<&str> for $t {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }
    };
}

/// A round's verification rule ([`RoundRecord::verify`]); serialized as its
/// [`RoundVerify::as_str`] name.
#[derive(Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RoundVerify {
    /// Nothing was drafted (a cloud-only or streamed step).
    None,
    /// [`VerifyRule::Greedy`].
    Greedy,
    /// [`VerifyRule::Match`].
    Match,
    /// [`VerifyRule::Rejection`].
    Rejection,
}

impl RoundVerify {
    /// The name in output: `none`, `greedy`, `match`, `rejection`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Greedy => "greedy",
            Self::Match => "match",
            Self::Rejection => "rejection",
        }
    }
}

impl From<VerifyRule> for RoundVerify {
    fn from(rule: VerifyRule) -> Self {
        match rule {
            VerifyRule::Greedy => Self::Greedy,
            VerifyRule::Match => Self::Match,
            VerifyRule::Rejection => Self::Rejection,
        }
    }
}

label_traits!(RoundVerify);

/// Where a round's drafted tokens came from ([`RoundRecord::source`]); serialized as its
/// [`RoundSource::as_str`] name.
#[derive(Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RoundSource {
    /// Nothing was drafted.
    None,
    /// The draft model.
    Model,
    /// Context lookup ([`crate::Lookup`]).
    Lookup,
}

impl RoundSource {
    /// The name in output: `none`, `model`, `lookup`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Model => "model",
            Self::Lookup => "lookup",
        }
    }
}

label_traits!(RoundSource);

/// How a generation was verified ([`Summary::verify`]); serialized as its
/// [`Verification::as_str`] name.
#[derive(Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verification {
    /// Nothing is verified (cloud-only, edge-only).
    #[default]
    None,
    /// Every round by [`VerifyRule::Greedy`].
    Greedy,
    /// Every round by [`VerifyRule::Match`].
    Match,
    /// Every round by [`VerifyRule::Rejection`].
    Rejection,
    /// Match or rejection per round, by the channel (channel-aware verification).
    Auto,
}

impl Verification {
    /// The name in output: `none`, `greedy`, `match`, `rejection`, `auto`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Greedy => "greedy",
            Self::Match => "match",
            Self::Rejection => "rejection",
            Self::Auto => "auto",
        }
    }
}

impl From<VerifyRule> for Verification {
    fn from(rule: VerifyRule) -> Self {
        match rule {
            VerifyRule::Greedy => Self::Greedy,
            VerifyRule::Match => Self::Match,
            VerifyRule::Rejection => Self::Rejection,
        }
    }
}

label_traits!(Verification);

/// What the edge carries from one request to the next on the same draft: the acceptance
/// evidence and the draft-length policy's state, tagged with the target version they were
/// measured against. [`Summary::memory`] returns the updated memory.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct SessionMemory {
    /// Target version the evidence was measured against; a request answered by another version
    /// drops the acceptance evidence (the policy's state is kept).
    pub target_version: String,
    /// Decayed accepted tokens S and rejections F ([`AcceptanceEstimator::evidence`]).
    pub alpha_evidence: (f64, f64),
    /// The policy's memory.
    pub policy: Option<ecspec_spec::policy::PolicyMemory>,
}

/// One round as the edge saw it.
#[derive(Debug, Clone, Serialize)]
pub struct RoundRecord {
    /// Round number (1-based).
    pub round: u32,
    /// When the round's verdict arrived, seconds since the request started.
    pub t_s: f64,
    /// Draft length K chosen.
    pub k: usize,
    /// The round's verification rule: `greedy`, `match`, `rejection`, or `none` for a round
    /// that drafted nothing (a cloud-only or streamed step).
    pub verify: RoundVerify,
    /// Drafted tokens accepted.
    pub accepted: usize,
    /// Where the drafted tokens came from: `model`, `lookup`, or `none` (nothing drafted).
    pub source: RoundSource,
    /// Drafting time (s) before the block was sent.
    pub draft_s: f64,
    /// Leading drafted tokens taken from the previous round's pipelined pre-draft.
    pub reused: usize,
    /// Time spent pre-drafting while this round was in flight (s; 0 without pipelining).
    pub pre_draft_s: f64,
    /// Send-to-verdict time (s).
    pub wait_s: f64,
    /// Cloud compute time reported by the cloud (s).
    pub cloud_compute_s: f64,
    /// Uplink / downlink bytes of the round (framing included).
    pub uplink_bytes: u64,
    /// Downlink bytes of the round.
    pub downlink_bytes: u64,
    /// The acceptance rate α the policy was given when it chose K (a lookup round: the
    /// lookups' own α it was weighed at).
    pub alpha_estimate: f64,
    /// The edge's uplink rate estimate when it chose K (bit/s; 10¹² until measured).
    pub uplink_bps_estimate: f64,
    /// The edge's RTT estimate when it chose K (s).
    pub rtt_s_estimate: f64,
    /// Edge energy of the round under a device profile (J), when one was applied.
    pub energy_j: Option<f64>,
}

/// The end-of-run summary (`--json` prints it; fields documented in the README).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// Generated text.
    pub text: String,
    /// Generated token ids.
    pub tokens: Vec<u32>,
    /// Tokens generated (after the prompt).
    pub generated_tokens: usize,
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Verification rounds (one target forward pass each; the prefill is not counted).
    pub rounds: u64,
    /// Target forward passes: prefill + rounds (cloud cost).
    pub target_forward_passes: u64,
    /// Tokens drafted in all rounds.
    pub drafted_tokens: u64,
    /// Drafted tokens accepted.
    pub accepted_tokens: u64,
    /// Tokens committed per verification round (accepted + the target's own token).
    pub mean_accepted_tokens: f64,
    /// accepted_tokens / drafted_tokens (0 when nothing was drafted).
    pub acceptance_rate: f64,
    /// Rounds whose drafts came from context lookup (counted in `rounds` too).
    pub lookup_rounds: u64,
    /// Tokens drafted by context lookup (counted in `drafted_tokens` too).
    pub lookup_drafted_tokens: u64,
    /// Lookup-drafted tokens accepted (counted in `accepted_tokens` too).
    pub lookup_accepted_tokens: u64,
    /// generated_tokens / total_s (tokens/s).
    pub goodput_tok_s: f64,
    /// Time to first token (s), from the request to the first committed token.
    pub ttft_s: f64,
    /// The cloud's compute time of the prefill (s), as its HelloAck reported it.
    pub cloud_prefill_s: f64,
    /// Time per output token after the first (s).
    pub tpot_s: f64,
    /// Wall-clock time of the whole generation (s).
    pub total_s: f64,
    /// Time spent drafting (s).
    pub draft_s: f64,
    /// Bytes the edge sent (application frames, framing included).
    pub uplink_bytes: u64,
    /// Bytes the edge received.
    pub downlink_bytes: u64,
    /// uplink_bytes / generated_tokens.
    pub uplink_bytes_per_token: f64,
    /// downlink_bytes / generated_tokens.
    pub downlink_bytes_per_token: f64,
    /// Mode (its name in JSON).
    pub mode: Mode,
    /// Verification rule (`none` when nothing is verified: cloud-only, edge-only; `auto` when
    /// chosen per round).
    pub verify: Verification,
    /// Draft-length policy name.
    pub draft_len: String,
    /// Model family.
    pub model_family: String,
    /// Target version that verified (from the handshake).
    pub target_version: String,
    /// Per-round records.
    pub round_records: Vec<RoundRecord>,
    /// Edge energy of the whole generation (J) under [`Self::energy_profile`], when applied.
    pub edge_energy_j: Option<f64>,
    /// `edge_energy_j` per generated token (J/token).
    pub energy_per_token_j: Option<f64>,
    /// The device profile the energy was computed with.
    pub energy_profile: Option<String>,
    /// With an energy budget: the budget (J/token) and what the policy's own energy model
    /// charged per committed token (J/token), the quantity the budget constrains.
    pub energy_budget_j_per_token: Option<f64>,
    /// See [`Self::energy_budget_j_per_token`].
    pub budget_spent_j_per_token: Option<f64>,
    /// Times the connection to the cloud was lost and the session re-opened (the committed
    /// tokens re-sent as the prompt and prefilled again).
    pub reconnects: u64,
    /// Seconds from each loss to its re-opened session, summed: the time lost to reconnects.
    pub reconnect_s: f64,
    /// Why the generation ended (`stop`, `length`, `context`).
    pub finish_reason: FinishReason,
    /// The generation's token budget the cloud granted, when it granted fewer new tokens than
    /// asked (its per-request budget, or the target's context window; `finish_reason` says
    /// which ended the generation). None when the whole ask was granted.
    pub max_tokens_granted: Option<usize>,
    /// What this request leaves for the next one (speculative mode).
    #[serde(skip)]
    pub memory: Option<SessionMemory>,
}

/// How a finished generation is labelled in its [`Summary`].
#[derive(Debug, Clone)]
pub struct SummaryLabels {
    /// Edge drafts and the cloud verifies (else cloud-only): the verification rule, policy and
    /// memory are reported.
    pub speculative: bool,
    /// Mode.
    pub mode: Mode,
    /// The session's verification rule.
    pub rule: VerifyRule,
    /// Model family.
    pub model_family: String,
    /// Why the generation ended.
    pub finish_reason: FinishReason,
    /// The generation's token budget the cloud granted, when below the edge's ask.
    pub token_cap: Option<usize>,
}

/// Why a generation ended, by OpenAI's names (`finish_reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FinishReason {
    /// An end-of-sequence token, or the caller's stop (a stop string).
    Stop,
    /// The token budget (`--max-tokens`, or a smaller one the cloud granted).
    #[default]
    Length,
    /// The target's context window is full.
    Context,
    /// The generation failed (the caller's label: a failed generation has no summary).
    Error,
}

impl FinishReason {
    /// The name (`stop`, `length`, `context`, `error`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
            Self::Context => "context",
            Self::Error => "error",
        }
    }
}

impl std::fmt::Display for FinishReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Collects a generation's rounds as they are committed and builds its [`Summary`].
#[derive(Debug)]
pub struct SummaryBuilder {
    t_start: Instant,
    ttft: Duration,
    prompt_tokens: usize,
    cloud_prefill_s: f64,
    target_version: String,
    records: Vec<RoundRecord>,
    /// Lookup rounds, their drafted and their accepted tokens.
    lookups: (u64, u64, u64),
    draft_total: Duration,
    /// Re-opened sessions and the time they took.
    reconnects: (u64, Duration),
}

impl SummaryBuilder {
    /// A generation that started at `t_start` and committed its first token at `ttft`, for a
    /// prompt of `prompt_tokens`; `prefill_us` and `target_version` as the HelloAck said.
    pub fn new(
        t_start: Instant,
        ttft: Duration,
        prompt_tokens: usize,
        prefill_us: u32,
        target_version: String,
    ) -> Self {
        Self {
            t_start,
            ttft,
            prompt_tokens,
            cloud_prefill_s: f64::from(prefill_us) * 1e-6,
            target_version,
            records: Vec::new(),
            lookups: (0, 0, 0),
            draft_total: Duration::ZERO,
            reconnects: (0, Duration::ZERO),
        }
    }

    /// Prompt tokens of the request.
    pub fn prompt_tokens(&self) -> usize {
        self.prompt_tokens
    }

    /// Records a re-opened session that took `lost` from the loss (its HelloAck's token is
    /// committed like a round's, without a round).
    pub fn reconnected(&mut self, lost: Duration) {
        self.reconnects.0 += 1;
        self.reconnects.1 += lost;
    }

    /// Time since the request started.
    pub fn elapsed(&self) -> Duration {
        self.t_start.elapsed()
    }

    /// Seconds since the request started (a record's `t_s`).
    pub fn elapsed_s(&self) -> f64 {
        self.elapsed().as_secs_f64()
    }

    /// The target version that verified.
    pub fn target_version(&self) -> &str {
        &self.target_version
    }

    /// Adds drafting time spent before a block was sent.
    pub fn drafted(&mut self, elapsed: Duration) {
        self.draft_total += elapsed;
    }

    /// Adds a committed round; `looked_up`: its drafts were copied from the context.
    pub fn push(&mut self, rec: RoundRecord, looked_up: bool) {
        if looked_up {
            self.lookups.0 += 1;
            self.lookups.1 += rec.k as u64;
            self.lookups.2 += rec.accepted as u64;
        }
        self.records.push(rec);
    }

    /// The summary of a generation that committed `committed` (prompt included) in `total`,
    /// with `bytes` = (uplink, downlink) on the wire. Round, drafted and accepted counts are
    /// the model estimate's (every round that was not a lookup) plus the lookups'.
    pub fn finish(
        self,
        committed: &[u32],
        total: Duration,
        bytes: (u64, u64),
        planner: &RoundPlanner,
        labels: SummaryLabels,
    ) -> Summary {
        let (up, down) = bytes;
        let generated = committed.len() - self.prompt_tokens;
        let tokens = committed[self.prompt_tokens..].to_vec();
        let est = planner.model_alpha();
        let lookups = self.lookups;
        let rounds = est.rounds() + lookups.0;
        let (drafted, accepted) = (est.drafted() + lookups.1, est.accepted() + lookups.2);
        let speculative = labels.speculative;
        let memory = speculative.then(|| SessionMemory {
            target_version: self.target_version.clone(),
            alpha_evidence: est.evidence(),
            policy: planner.policy().remember(),
        });
        let budget = planner.energy().and_then(|e| e.budget.as_ref());
        let ttft = self.ttft;
        Summary {
            memory,
            text: String::new(),
            tokens,
            generated_tokens: generated,
            prompt_tokens: self.prompt_tokens,
            rounds,
            // Each re-opened session prefilled once more.
            target_forward_passes: rounds + 1 + self.reconnects.0,
            drafted_tokens: drafted,
            accepted_tokens: accepted,
            // The first token and each re-open's come without a round.
            mean_accepted_tokens: if rounds > 0 {
                (generated as f64 - 1.0 - self.reconnects.0 as f64) / rounds as f64
            } else {
                0.0
            },
            acceptance_rate: if drafted > 0 {
                accepted as f64 / drafted as f64
            } else {
                0.0
            },
            lookup_rounds: lookups.0,
            lookup_drafted_tokens: lookups.1,
            lookup_accepted_tokens: lookups.2,
            goodput_tok_s: generated as f64 / total.as_secs_f64(),
            ttft_s: ttft.as_secs_f64(),
            cloud_prefill_s: self.cloud_prefill_s,
            tpot_s: if generated > 1 {
                (total - ttft).as_secs_f64() / (generated - 1) as f64
            } else {
                0.0
            },
            total_s: total.as_secs_f64(),
            draft_s: self.draft_total.as_secs_f64(),
            uplink_bytes: up,
            downlink_bytes: down,
            uplink_bytes_per_token: up as f64 / generated.max(1) as f64,
            downlink_bytes_per_token: down as f64 / generated.max(1) as f64,
            mode: labels.mode,
            verify: if speculative && planner.switches_rule() {
                Verification::Auto
            } else if speculative {
                labels.rule.into()
            } else {
                Verification::None
            },
            draft_len: if speculative {
                planner.policy().name()
            } else {
                "none".into()
            },
            model_family: labels.model_family,
            target_version: self.target_version,
            round_records: self.records,
            edge_energy_j: None,
            energy_per_token_j: None,
            energy_profile: None,
            energy_budget_j_per_token: budget.map(|b| b.joules_per_token()),
            budget_spent_j_per_token: budget
                .filter(|b| b.committed_tokens() > 0)
                .map(|b| b.spent_j() / b.committed_tokens() as f64),
            reconnects: self.reconnects.0,
            reconnect_s: self.reconnects.1.as_secs_f64(),
            finish_reason: labels.finish_reason,
            max_tokens_granted: labels.token_cap,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_print_and_compare_as_their_names() {
        for (v, name) in [
            (RoundVerify::None, "none"),
            (RoundVerify::Greedy, "greedy"),
            (RoundVerify::Match, "match"),
            (RoundVerify::Rejection, "rejection"),
        ] {
            assert_eq!(v.as_str(), name);
            assert_eq!(v, name);
            assert_eq!(v.to_string(), name);
            assert_eq!(format!("{v:?}"), format!("{name:?}"));
        }
        for (s, name) in [
            (RoundSource::None, "none"),
            (RoundSource::Model, "model"),
            (RoundSource::Lookup, "lookup"),
        ] {
            assert_eq!(s, name);
            assert_eq!(s.to_string(), name);
        }
        for rule in [VerifyRule::Greedy, VerifyRule::Match, VerifyRule::Rejection] {
            assert_eq!(RoundVerify::from(rule), rule.name());
            assert_eq!(Verification::from(rule), rule.name());
        }
        assert_eq!(Verification::Auto, "auto");
        assert_eq!(Verification::default(), "none");
    }
}
