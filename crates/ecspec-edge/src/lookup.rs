//! Context-lookup drafting: proposes the tokens that followed the most recent earlier
//! occurrence of the context's last n-gram, at no model cost.
//!
//! Copying from the context is the reference-text drafter of LLMA (Yang et al. 2023,
//! arXiv 2304.04487) and prompt lookup decoding (Saxena 2023; `prompt_lookup_num_tokens` in
//! Hugging Face transformers); REST (He et al. 2023, arXiv 2311.08252) retrieves from a
//! datastore the same way. It needs no weights, so it is as static as the shared-backbone
//! draft: it works unchanged for every target version and costs no re-sync bytes.
//!
//! Small models' greedy output repeats itself and answers quote their prompt (summaries,
//! retrieval, code edits), so the longest recent match predicts the target well exactly where
//! the learned draft is weakest, and drafting it costs nothing on the edge.

use std::fmt;
use std::str::FromStr;

use ecspec_spec::policies::Ecspec;
use ecspec_spec::policy::RoundState;

/// Per-token acceptance a lookup round is assumed to have before any lookup round was
/// verified: below what SmolLM2-135M's lookups reach on Spec-Bench (0.65–0.76, BENCHMARKS.md),
/// so live rounds raise it rather than having to pull it down (declined lookups are probed
/// every [`LOOKUP_PROBE_EVERY`] matches, so a low prior cannot lock them out).
pub const LOOKUP_PRIOR_ALPHA: f64 = 0.5;

/// Where a speculative round's drafted tokens come from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum DraftSource {
    /// The draft model, every round.
    Model,
    /// Context lookup only: a round without a (paying) match drafts nothing: the cloud
    /// decodes alone.
    Lookup,
    /// Context lookup when it matches and pays, else the draft model (the default).
    #[default]
    Hybrid,
}

impl DraftSource {
    /// True if rounds try context lookup first.
    pub fn uses_lookup(self) -> bool {
        self != DraftSource::Model
    }

    /// True if rounds without a lookup match run the draft model.
    pub fn uses_model(self) -> bool {
        self != DraftSource::Lookup
    }

    /// The name [`FromStr`] accepts: `model`, `lookup` or `hybrid`.
    pub fn name(self) -> &'static str {
        match self {
            DraftSource::Model => "model",
            DraftSource::Lookup => "lookup",
            DraftSource::Hybrid => "hybrid",
        }
    }
}

impl fmt::Display for DraftSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DraftSource {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "model" => Ok(DraftSource::Model),
            "lookup" => Ok(DraftSource::Lookup),
            "hybrid" => Ok(DraftSource::Hybrid),
            _ => Err(format!(
                "unknown drafter {s:?} (expected model, lookup or hybrid)"
            )),
        }
    }
}

/// Longest and shortest n-gram matched, and how many tokens a match proposes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lookup {
    /// Longest suffix n-gram tried first (≥ `min_ngram`).
    pub max_ngram: usize,
    /// Shortest suffix n-gram accepted as a match (≥ 1).
    pub min_ngram: usize,
    /// Tokens proposed per match in an edge session (the draft length K of a lookup round).
    pub draft_len: usize,
}

impl Default for Lookup {
    /// n from 4 down to 2 (a 1-gram match is mostly noise: common tokens recur everywhere),
    /// 2 tokens per match: the best of K = 1–3 and n-gram floors 1–3 on SmolLM2-135M
    /// (BENCHMARKS.md, "Context lookup").
    fn default() -> Self {
        Self {
            max_ngram: 4,
            min_ngram: 2,
            draft_len: 2,
        }
    }
}

impl Lookup {
    /// Up to `k` tokens after `context`, copied from what followed the most recent earlier
    /// occurrence of its last n tokens, n from `max_ngram` down to `min_ngram` (longest match
    /// wins; among equals, the most recent). The copy may run on into the tokens it is
    /// producing (as an LZ77 match does), so a loop of period p yields k tokens, not p.
    ///
    /// Returns an empty vector when nothing matches, `k` is 0 or the context is shorter than
    /// `min_ngram + 1`.
    pub fn propose(&self, context: &[u32], k: usize) -> Vec<u32> {
        let len = context.len();
        let lo = self.min_ngram.max(1);
        if k == 0 || len <= lo {
            return Vec::new();
        }
        for n in (lo..=self.max_ngram.min(len - 1)).rev() {
            let pattern = &context[len - n..];
            // Latest start i < len − n whose n tokens equal the suffix.
            if let Some(i) = (0..len - n).rev().find(|&i| &context[i..i + n] == pattern) {
                let mut out = Vec::with_capacity(k);
                for j in 0..k {
                    let at = i + n + j;
                    // Positions ≥ len are tokens this proposal already produced.
                    let t = if at < len { context[at] } else { out[at - len] };
                    out.push(t);
                }
                return out;
            }
        }
        Vec::new()
    }
}

/// Strength of [`LOOKUP_PRIOR_ALPHA`] in tokens: weak, so that the first lookup rounds (a probe
/// among them) decide; the estimate then decays per round as the model's does
/// ([`ecspec_spec::DEFAULT_DECAY`]).
pub const LOOKUP_PRIOR_WEIGHT: f64 = 4.0;

/// Of matches that would be declined, every this-many-th in a row is taken anyway: the lookups'
/// α only moves on lookup rounds, so a prior that loses would otherwise never be corrected (as
/// the verification selector retries an unused rule, design.md §4). A probe costs at most one
/// round's worth of goodput, so it comes often.
pub const LOOKUP_PROBE_EVERY: u32 = 4;

/// Whether a lookup round of `k` copied tokens promises at least the score of the best
/// alternative this round: the draft model's best K ∈ [1, `k_max`] (`model`, the round state at
/// the model's α; None in lookup-only mode) or a K = 0 round streaming `stream` target tokens
/// (scored on `model`'s timings, or `lookup`'s). A score is expected goodput minus the energy
/// price times expected energy per token (design.md §3; [`Ecspec::score`],
/// [`Ecspec::stream_goodput`]).
///
/// `lookup` is the round state at the lookup rounds' α with no drafting time and ids-only
/// uplink bytes. On a zero-delay link a lookup round beats a plain target step once α·K pays
/// for the extra verified tokens; at a 60 ms RTT a cloud stream usually wins, as it does for
/// the model.
pub fn lookup_pays(
    lookup: &RoundState,
    k: usize,
    model: Option<(&RoundState, usize)>,
    stream: u32,
) -> bool {
    let mine = Ecspec::score(lookup, k);
    let timing = model.map_or(lookup, |(m, _)| m);
    let streamed = Ecspec::stream_goodput(timing, stream)
        - timing.energy_price * Ecspec::stream_energy_per_token(timing, stream);
    let drafted = model.map_or(f64::NEG_INFINITY, |(m, k_max)| {
        Ecspec::score(m, Ecspec::best_scored_k(m, k_max))
    });
    mine >= streamed.max(drafted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_what_followed_the_latest_longest_match() {
        let l = Lookup {
            max_ngram: 3,
            ..Lookup::default()
        };
        // "5 6" occurs at 1 (followed by 7 8) and at 6 (followed by 9 4): the latest wins.
        let ctx = [4, 5, 6, 7, 8, 1, 5, 6, 9, 4, 2, 5, 6];
        assert_eq!(l.propose(&ctx, 2), vec![9, 4]);
        // A 3-gram match beats a more recent 2-gram one: "1 5 6" only at 5.
        let ctx = [1, 5, 6, 7, 3, 5, 6, 8, 1, 5, 6];
        assert_eq!(l.propose(&ctx, 3), vec![7, 3, 5]);
        // The copy runs on into its own output: period-2 loop, 5 tokens asked.
        let ctx = [9, 1, 2, 1, 2, 1, 2];
        assert_eq!(l.propose(&ctx, 5), vec![1, 2, 1, 2, 1]);
    }

    #[test]
    fn no_match_no_proposal() {
        let l = Lookup::default();
        assert!(l.propose(&[1, 2, 3, 4, 5], 4).is_empty());
        assert!(l.propose(&[1, 2, 1, 2], 0).is_empty());
        assert!(
            l.propose(&[7, 7], 3).is_empty(),
            "too short for a 2-gram match"
        );
        assert!(l.propose(&[], 3).is_empty());
        // A 1-gram floor finds the single repeated token.
        let one = Lookup {
            min_ngram: 1,
            ..Lookup::default()
        };
        assert_eq!(one.propose(&[3, 8, 4, 3], 2), vec![8, 4]);
    }

    fn state(alpha: f64, t_draft_s: f64, rtt_s: f64) -> RoundState {
        RoundState {
            alpha,
            t_draft_s,
            t_verify_base_s: 0.0111,
            t_verify_per_token_s: 0.0021,
            uplink_bps: 10e6,
            downlink_bps: 10e6,
            rtt_s,
            uplink_base_bytes: 14.0,
            uplink_bytes_per_token: 2.0,
            downlink_bytes: 19.0,
            draft_power_w: 0.0,
            radio_power_w: 0.0,
            energy_price: 0.0,
            row_price_s: 0.0,
        }
    }

    #[test]
    fn lookup_pays_on_a_fast_link_and_not_behind_a_long_rtt() {
        // This machine's SmolLM2 timings (t_v = 11.1 + 2.1·K ms): at α = 0.65 two copied
        // tokens commit 2.07 tokens in 15.3 ms against one in 11.1 ms.
        let fast = state(0.65, 0.0, 0.0);
        assert!(lookup_pays(&fast, 2, None, 1));
        // At α = 0.2 they commit 1.24 tokens: a plain step is better.
        assert!(!lookup_pays(&state(0.2, 0.0, 0.0), 2, None, 1));
        // Against the model at α = 0.27 costing 2.5 ms a token, the lookup wins.
        let model = state(0.27, 0.0025, 0.0);
        assert!(lookup_pays(&fast, 2, Some((&model, 8)), 1));
        // Behind 60 ms of RTT a 16-token cloud stream (67 tok/s) beats a lookup round
        // (2.07 tokens per 75 ms: 28 tok/s).
        let far = state(0.65, 0.0, 0.060);
        assert!(!lookup_pays(&far, 2, None, 16));
        // …unless the copied tokens are near-certain and many: 14.5 tokens per 105 ms against
        // a 4-token stream's 38 tok/s.
        let sure = state(0.98, 0.0, 0.060);
        assert!(lookup_pays(&sure, 16, None, 4));
        // A model accepted at α = 0.95 for 1 ms a token beats a shaky lookup (α = 0.3): its
        // best K commits many tokens per verification.
        let strong = state(0.95, 0.001, 0.0);
        assert!(!lookup_pays(
            &state(0.3, 0.0, 0.0),
            2,
            Some((&strong, 8)),
            1
        ));
        assert!(lookup_pays(&state(0.3, 0.0, 0.0), 2, None, 1));
    }

    #[test]
    fn draft_source_names_round_trip() {
        for s in [DraftSource::Model, DraftSource::Lookup, DraftSource::Hybrid] {
            assert_eq!(s.name().parse::<DraftSource>(), Ok(s));
        }
        let e = "ngram".parse::<DraftSource>().unwrap_err();
        assert!(e.contains("\"ngram\"") && e.contains("hybrid"), "{e}");
        assert!(!DraftSource::Model.uses_lookup() && DraftSource::Model.uses_model());
        assert!(DraftSource::Lookup.uses_lookup() && !DraftSource::Lookup.uses_model());
        assert!(DraftSource::Hybrid.uses_lookup() && DraftSource::Hybrid.uses_model());
    }
}
