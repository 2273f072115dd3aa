//! Speculative-decoding logic for ECSpec: sampling, the exact verification rules, the compact
//! draft distribution of rejection mode, acceptance estimation and draft-length policies.
//!
//! Pure: no I/O, no async runtime, no models. Logits and probabilities are plain `&[f32]` rows
//! of vocabulary size V; every random draw comes from a generator the caller passes in
//! (reproducible sessions use [`rng_for`]).
//!
//! - [`sampling`]: [`SamplingParams`], [`target_distribution`] (temperature → top-k → top-p),
//!   [`argmax`], [`sample`], [`rng_for`], [`PositionDraws`] (the target's draws keyed by
//!   (seed, position), which make seeded match output equal cloud-only output).
//! - [`compact`]: [`CompactDist`], the top-k, b-bit quantised draft distribution the edge
//!   samples from and sends in rejection mode.
//! - [`verify`]: [`verify_greedy`], [`verify_match`] / [`verify_match_at`],
//!   [`verify_rejection`] → [`Verdict`].
//! - [`verify_mode`]: [`verify_mode::VerifySelector`], the per-round channel-aware choice
//!   between match and rejection verification.
//! - [`compute`]: [`compute::EdgeCompute`], [`compute::CloudCompute`], modelled compute times
//!   of the virtual clock.
//! - [`acceptance`]: [`AcceptanceEstimator`] (α̂ and session totals).
//! - [`policy`]: [`DraftLengthPolicy`] with [`Fixed`] and [`GoodputAdaptive`];
//!   [`expected_tokens`], [`round_time`], [`expected_goodput`], [`parse_policy`],
//!   [`PolicySpec`] (a policy's name parsed once, built per request).
//!
//! **Invariant:** verification never changes the target's output distribution: whatever the
//! draft proposes, committed tokens are distributed as the target's own samples under the
//! session's [`SamplingParams`] (`tests/exactness.rs` checks this statistically).
//!
//! # Example: one rejection-mode round
//! ```
//! use ecspec_spec::{
//!     rng_for, target_distribution, verify_rejection, CompactDist, SamplingParams,
//!     CLOUD_STREAM, EDGE_STREAM,
//! };
//!
//! let params = SamplingParams { temperature: 0.8, top_p: 0.95, top_k: 0, seed: 7 };
//! let (mut edge, mut cloud) = (rng_for(params.seed, EDGE_STREAM), rng_for(params.seed, CLOUD_STREAM));
//!
//! // Edge: draft K = 2 tokens over a 4-token vocabulary, sampling each from the compact
//! // (top-3, 8-bit) distribution it sends, not from its full distribution.
//! let draft_logits = [[2.0f32, 1.0, 0.0, -1.0], [0.0, 2.0, 1.0, 0.0]];
//! let mut draft = Vec::new();
//! let mut dists = Vec::new();
//! for logits in &draft_logits {
//!     let q = target_distribution(logits, &params)?;
//!     let compact = CompactDist::quantize(&q, 3, 8)?;
//!     draft.push(compact.sample(&mut edge));
//!     dists.push(CompactDist::from_bytes(&compact.to_bytes(), 4)?); // what the cloud receives
//! }
//!
//! // Cloud: one forward pass gives K + 1 rows.
//! let target_rows = vec![vec![2.1f32, 0.9, 0.1, -1.0], vec![0.2, 1.8, 1.1, 0.0], vec![0.0; 4]];
//! let verdict = verify_rejection(&draft, &dists, &target_rows, &params, &mut cloud)?;
//! assert!(verdict.accepted <= 2);
//! let committed = verdict.tokens(&draft);
//! assert_eq!(committed.len(), verdict.accepted + 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

pub mod acceptance;
pub mod compact;
pub mod compute;
pub mod policies;
pub mod policy;
pub mod policy_parse;
pub mod sampling;
pub mod verify;
pub mod verify_mode;

pub use acceptance::{AcceptanceError, AcceptanceEstimator, DEFAULT_DECAY};
pub use compact::{CompactDist, CompactError, MAX_BITS, MAX_ENTRIES, MIN_BITS};
pub use policy::{
    best_k, expected_goodput, expected_tokens, round_time, DraftLengthPolicy, Fixed,
    GoodputAdaptive, InvalidRoundState, RoundOutcome, RoundState, StopRule, DEFAULT_K_MAX, MAX_K,
};
pub use policy_parse::{parse_policy, PolicyParseError, PolicySpec};
pub use sampling::{
    argmax, rng_for, sample, target_distribution, PositionDraws, SamplingError, SamplingParams,
    CLOUD_STREAM, EDGE_STREAM, POSITION_STREAM,
};
pub use verify::{
    verify_greedy, verify_match, verify_match_at, verify_rejection, UnknownRule, Verdict,
    VerifyError, VerifyRule,
};
