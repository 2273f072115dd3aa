//! The three exact verification rules of design.md §4.
//!
//! Inputs, for a round that drafted K ≥ 0 tokens `x_1..x_K`:
//! - `draft`: the K drafted token ids;
//! - `target_rows`: K+1 logits rows of width V from the target's single forward pass; row i
//!   (0-based) is the target's next-token logits after the committed context followed by
//!   `x_1..x_i`, so row 0 follows the committed context and row K yields the bonus token;
//! - rejection mode only: `draft_dists`, the K [`CompactDist`]s the drafted tokens were sampled
//!   from (entry i is the distribution `x_{i+1}` was drawn from).
//!
//! Output: a [`Verdict`]: the number of drafted tokens accepted (a prefix, `0..=K`) and the
//! target's own next token (the correction at the first rejection, or the bonus after all K were
//! accepted), so every round commits `accepted + 1` tokens.
//!
//! **Invariant:** for every rule, the committed tokens are distributed exactly as tokens sampled
//! one at a time from [`target_distribution`] with the same [`SamplingParams`] (greedy: equal to
//! the target's greedy tokens). The statistical tests in `tests/exactness.rs` check this.
//!
//! A K = 0 round ("no drafting", design.md §2) takes one row and returns the target's token.

use std::fmt;
use std::str::FromStr;

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::compact::CompactDist;
use crate::sampling::{
    checked_argmax, distribution_f64, sample_weights, PositionDraws, SamplingError, SamplingParams,
};

#[cfg(doc)]
use crate::sampling::target_distribution;

/// Outcome of verifying one round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// Drafted tokens accepted, a prefix of the draft: `0..=K`.
    pub accepted: usize,
    /// The target's token after the accepted prefix: at the first rejection, the target's
    /// replacement; after all K were accepted, the bonus token from row K.
    pub next_token: u32,
}

impl Verdict {
    /// Tokens this round commits: `accepted + 1` (tokens/round, design.md §1 N(K)).
    pub fn committed(&self) -> usize {
        self.accepted + 1
    }

    /// The committed tokens: `draft[..accepted]` followed by `next_token`.
    pub fn tokens(&self, draft: &[u32]) -> Vec<u32> {
        let mut out = draft[..self.accepted.min(draft.len())].to_vec();
        out.push(self.next_token);
        out
    }
}

/// Which verification rule a session uses (design.md §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum VerifyRule {
    /// [`verify_greedy`]: temperature 0 only; uplink carries token ids.
    Greedy,
    /// [`verify_match`]: any temperature; uplink carries token ids.
    Match,
    /// [`verify_rejection`]: any temperature; uplink carries a [`CompactDist`] per drafted token.
    Rejection,
}

impl VerifyRule {
    /// True if the cloud needs the draft distributions (rejection mode).
    pub fn needs_draft_dists(self) -> bool {
        self == VerifyRule::Rejection
    }

    /// The rule's name as [`FromStr`] accepts it: `greedy`, `match` or `rejection`.
    pub fn name(self) -> &'static str {
        match self {
            VerifyRule::Greedy => "greedy",
            VerifyRule::Match => "match",
            VerifyRule::Rejection => "rejection",
        }
    }
}

impl fmt::Display for VerifyRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A verification rule name that is not `greedy`, `match` or `rejection`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown verification rule {input:?} (expected greedy, match or rejection)")]
pub struct UnknownRule {
    /// The rejected input.
    pub input: String,
}

impl FromStr for VerifyRule {
    type Err = UnknownRule;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "greedy" => Ok(VerifyRule::Greedy),
            "match" => Ok(VerifyRule::Match),
            "rejection" => Ok(VerifyRule::Rejection),
            _ => Err(UnknownRule {
                input: s.to_owned(),
            }),
        }
    }
}

/// Errors of the `verify_*` functions. All are caller or peer errors (malformed round); none
/// depends on the random draws.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum VerifyError {
    /// `target_rows.len() != K + 1`.
    #[error(
        "expected {expected} target logits rows (K + 1 for K = {k} drafted tokens), got {rows}"
    )]
    RowCount {
        /// Rows given.
        rows: usize,
        /// K + 1.
        expected: usize,
        /// K.
        k: usize,
    },
    /// `draft_dists.len() != K` (rejection mode).
    #[error("expected {k} draft distributions (one per drafted token), got {dists}")]
    DistCount {
        /// Distributions given.
        dists: usize,
        /// K.
        k: usize,
    },
    /// Row 0 was empty (vocabulary size 0).
    #[error("target logits rows are empty (vocabulary size 0)")]
    EmptyVocab,
    /// A row's width differed from row 0's.
    #[error("target logits row {row} has {width} entries, row 0 has {vocab}")]
    RowWidth {
        /// Row index.
        row: usize,
        /// Its width.
        width: usize,
        /// Width of row 0 (the vocabulary size V).
        vocab: usize,
    },
    /// A drafted token id was ≥ V.
    #[error(
        "drafted token {token} at position {position} out of range for vocabulary size {vocab}"
    )]
    DraftOutOfRange {
        /// 0-based draft position.
        position: usize,
        /// The id.
        token: u32,
        /// V.
        vocab: usize,
    },
    /// A draft distribution named an id ≥ V.
    #[error("draft distribution {position} names token {token}, out of range for vocabulary size {vocab}")]
    DistOutOfRange {
        /// 0-based draft position.
        position: usize,
        /// The id.
        token: u32,
        /// V.
        vocab: usize,
    },
    /// A drafted token has probability 0 under the distribution it was supposedly drawn from.
    #[error(
        "drafted token {token} at position {position} has probability 0 in its draft distribution"
    )]
    DraftNotInDist {
        /// 0-based draft position.
        position: usize,
        /// The id.
        token: u32,
    },
    /// The sampling parameters were invalid.
    #[error("invalid sampling parameters")]
    Params {
        /// What was wrong.
        #[source]
        source: SamplingError,
    },
    /// A target row admits no token (every logit NaN or −∞).
    #[error("target logits row {row} is unusable")]
    Row {
        /// Row index.
        row: usize,
        /// What was wrong.
        #[source]
        source: SamplingError,
    },
}

/// Checks the round's shapes and returns V.
fn check_round<R: AsRef<[f32]>>(draft: &[u32], rows: &[R]) -> Result<usize, VerifyError> {
    let k = draft.len();
    if rows.len() != k + 1 {
        return Err(VerifyError::RowCount {
            rows: rows.len(),
            expected: k + 1,
            k,
        });
    }
    let vocab = rows[0].as_ref().len();
    if vocab == 0 {
        return Err(VerifyError::EmptyVocab);
    }
    for (row, r) in rows.iter().enumerate() {
        let width = r.as_ref().len();
        if width != vocab {
            return Err(VerifyError::RowWidth { row, width, vocab });
        }
    }
    for (position, &token) in draft.iter().enumerate() {
        if token as usize >= vocab {
            return Err(VerifyError::DraftOutOfRange {
                position,
                token,
                vocab,
            });
        }
    }
    Ok(vocab)
}

fn row_err(row: usize) -> impl Fn(SamplingError) -> VerifyError {
    move |source| VerifyError::Row { row, source }
}

/// Greedy verification (design.md §4, temperature 0): accept `x_i` while it equals the argmax
/// of row i−1; the next token is the argmax of the row where acceptance stopped (row K if all
/// were accepted). Ties: lowest id (see [`crate::sampling::argmax`]). Uses no randomness.
///
/// Shapes: `draft` K ids; `target_rows` K+1 rows of width V.
///
/// # Errors
/// [`VerifyError::RowCount`], [`VerifyError::EmptyVocab`], [`VerifyError::RowWidth`],
/// [`VerifyError::DraftOutOfRange`], [`VerifyError::Row`] (a row of only NaN/−∞).
pub fn verify_greedy<R: AsRef<[f32]>>(
    draft: &[u32],
    target_rows: &[R],
) -> Result<Verdict, VerifyError> {
    check_round(draft, target_rows)?;
    greedy_unchecked(draft, target_rows)
}

fn greedy_unchecked<R: AsRef<[f32]>>(draft: &[u32], rows: &[R]) -> Result<Verdict, VerifyError> {
    for (i, row) in rows.iter().enumerate() {
        let y = checked_argmax(row.as_ref()).map_err(row_err(i))?;
        if draft.get(i) != Some(&y) {
            return Ok(Verdict {
                accepted: i,
                next_token: y,
            });
        }
    }
    // rows.len() == K + 1 and draft.get(K) is None, so the loop always returns at row K.
    Err(VerifyError::RowCount {
        rows: rows.len(),
        expected: draft.len() + 1,
        k: draft.len(),
    })
}

/// Match verification (design.md §4, any temperature): at each position the target samples its
/// own token `y_i ~ p_i` with `p_i = target_distribution(row i, params)`; `x_{i+1}` is accepted
/// while it equals `y_i`, and the next token is `y` at the row where acceptance stopped.
///
/// Exact: each committed token is the target's own sample given the committed prefix, so the
/// output is distributed as the target's. Per-token acceptance is Σ_v p(v)·q(v), below
/// rejection's Σ_v min(p(v), q(v)).
///
/// Temperature 0 is [`verify_greedy`] (one-hot p; no random draws). Otherwise draws one `f64`
/// per examined row from `rng`; rows after the stopping row are not examined.
///
/// # Errors
/// As [`verify_greedy`], plus [`VerifyError::Params`].
pub fn verify_match<R: AsRef<[f32]>>(
    draft: &[u32],
    target_rows: &[R],
    params: &SamplingParams,
    rng: &mut impl Rng,
) -> Result<Verdict, VerifyError> {
    match_rows(draft, target_rows, params, |_, p| sample_weights(p, rng))
}

/// [`verify_match`] with the target's draws keyed by position ([`PositionDraws`]): row `i` of
/// the round samples committed position `first_position + i` (0-based, prompt included; the
/// round's first row predicts the position right after the committed sequence).
///
/// The committed token at every position is then the target's own sample for that position
/// and seed, so a match-verified generation commits exactly the cloud-only sampled text of
/// the same seed, whatever draft lengths its rounds had (issue: seeded sampling that
/// reproduces). Exactness is [`verify_match`]'s: draws at distinct positions are independent.
///
/// # Errors
/// As [`verify_match`].
pub fn verify_match_at<R: AsRef<[f32]>>(
    draft: &[u32],
    target_rows: &[R],
    params: &SamplingParams,
    draws: &PositionDraws,
    first_position: usize,
) -> Result<Verdict, VerifyError> {
    match_rows(draft, target_rows, params, |i, p| {
        sample_weights(p, &mut draws.at(first_position + i))
    })
}

/// Match verification's loop; `draw(i, p)` samples row `i`'s distribution `p`.
fn match_rows<R: AsRef<[f32]>>(
    draft: &[u32],
    target_rows: &[R],
    params: &SamplingParams,
    mut draw: impl FnMut(usize, &[f64]) -> Option<u32>,
) -> Result<Verdict, VerifyError> {
    params
        .validate()
        .map_err(|source| VerifyError::Params { source })?;
    check_round(draft, target_rows)?;
    if params.is_greedy() {
        return greedy_unchecked(draft, target_rows);
    }
    for (i, row) in target_rows.iter().enumerate() {
        let p = distribution_f64(row.as_ref(), params).map_err(row_err(i))?;
        let y = draw(i, &p).ok_or(VerifyError::Row {
            row: i,
            source: SamplingError::NoMass { len: p.len() },
        })?;
        if draft.get(i) != Some(&y) {
            return Ok(Verdict {
                accepted: i,
                next_token: y,
            });
        }
    }
    Err(VerifyError::RowCount {
        rows: target_rows.len(),
        expected: draft.len() + 1,
        k: draft.len(),
    })
}

/// Rejection-sampling verification (speculative sampling): Leviathan et al. 2023,
/// arXiv 2211.17192, Algorithm 1; Chen et al. 2023, arXiv 2302.01318, Algorithm 2.
///
/// For i = 1..K, with `p = target_distribution(row i−1, params)` and `q` the quantised
/// [`CompactDist`] `x_i` was sampled from: accept `x_i` with probability
/// `min(1, p(x_i) / q(x_i))`; on the first rejection return a token drawn from the residual
/// `norm(max(0, p − q))`. If all K are accepted, the bonus is drawn from row K's `p`.
///
/// Exact (Leviathan et al., Appendix A.1): the committed token is distributed as p, provided the
/// drafted token really was drawn from `q` — which is why the edge samples from the quantised
/// [`CompactDist`] it sends (design.md §4, Zhang et al., arXiv 2507.00605), not from its full
/// distribution. The target's top-k/top-p truncation is part of p, so p(x) = 0 for a truncated
/// token (always rejected) and tokens with q = 0 are reached through the residual.
///
/// Degenerate residual: `Σ_v max(0, p(v) − q(v)) = Σ_v max(0, q(v) − p(v))`, which is exactly the
/// probability of a rejection. So the residual is all zero only when rejection has probability 0
/// (p = q); a rejection can then only come from floating-point rounding of p, and the
/// replacement is drawn from p itself. Either way the branch carries (numerically) zero
/// probability, so the output distribution stays p.
///
/// Temperature 0: p is one-hot on the argmax, so `min(1, p(x)/q(x))` is 1 if x is the argmax and
/// 0 otherwise, and the residual is one-hot on the argmax: the rule is exactly greedy
/// verification, and this function calls [`verify_greedy`]'s logic (no random draws) after
/// checking the distributions.
///
/// Random draws (T > 0): one `f64` per drafted token whose `p(x) < q(x)`, plus one `f64` for the
/// replacement or bonus token.
///
/// Shapes: `draft` K ids; `draft_dists` K distributions over ids < V; `target_rows` K+1 rows of
/// width V.
///
/// # Errors
/// As [`verify_match`], plus [`VerifyError::DistCount`], [`VerifyError::DistOutOfRange`] and
/// [`VerifyError::DraftNotInDist`] (a drafted token the edge cannot have sampled).
pub fn verify_rejection<R: AsRef<[f32]>>(
    draft: &[u32],
    draft_dists: &[CompactDist],
    target_rows: &[R],
    params: &SamplingParams,
    rng: &mut impl Rng,
) -> Result<Verdict, VerifyError> {
    params
        .validate()
        .map_err(|source| VerifyError::Params { source })?;
    let vocab = check_round(draft, target_rows)?;
    let k = draft.len();
    if draft_dists.len() != k {
        return Err(VerifyError::DistCount {
            dists: draft_dists.len(),
            k,
        });
    }
    for (position, (dist, &token)) in draft_dists.iter().zip(draft).enumerate() {
        if let Some(&bad) = dist.ids().iter().find(|&&id| id as usize >= vocab) {
            return Err(VerifyError::DistOutOfRange {
                position,
                token: bad,
                vocab,
            });
        }
        if dist.prob_of(token) <= 0.0 {
            return Err(VerifyError::DraftNotInDist { position, token });
        }
    }
    if params.is_greedy() {
        return greedy_unchecked(draft, target_rows);
    }

    for (i, (&x, dist)) in draft.iter().zip(draft_dists).enumerate() {
        let p = distribution_f64(target_rows[i].as_ref(), params).map_err(row_err(i))?;
        let px = p[x as usize];
        let qx = dist.prob_of(x);
        // Accept with probability min(1, px/qx); u·qx < px avoids dividing.
        if px >= qx || rng.random::<f64>() * qx < px {
            continue;
        }
        let y = resample_after_rejection(&p, dist, rng).ok_or(VerifyError::Row {
            row: i,
            source: SamplingError::NoMass { len: p.len() },
        })?;
        return Ok(Verdict {
            accepted: i,
            next_token: y,
        });
    }
    let p = distribution_f64(target_rows[k].as_ref(), params).map_err(row_err(k))?;
    let y = sample_weights(&p, rng).ok_or(VerifyError::Row {
        row: k,
        source: SamplingError::NoMass { len: p.len() },
    })?;
    Ok(Verdict {
        accepted: k,
        next_token: y,
    })
}

/// Draws from `norm(max(0, p − q))`, or from `p` when that residual is all zero (see
/// [`verify_rejection`]). `p` is a full row (V entries, sums to 1); q is sparse, so the residual
/// equals p outside q's ids. `None` only if p itself has no mass.
fn resample_after_rejection(p: &[f64], q: &CompactDist, rng: &mut impl Rng) -> Option<u32> {
    let mut residual = p.to_vec();
    for (id, qv) in q.probs() {
        let r = &mut residual[id as usize];
        *r = (*r - qv).max(0.0);
    }
    sample_weights(&residual, rng).or_else(|| sample_weights(p, rng))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampling::{rng_for, CLOUD_STREAM, EDGE_STREAM};

    /// A toy target over 6 tokens whose logits depend on the last token and the position.
    fn toy_row(last: u32, position: usize) -> Vec<f32> {
        (0..6u32)
            .map(|v| ((v * 7 + last * 3 + position as u32 * 5) % 11) as f32 * 0.4)
            .collect()
    }

    #[test]
    fn position_keyed_match_commits_the_cloud_only_text_whatever_the_rounds() {
        let params = SamplingParams {
            temperature: 1.0,
            top_p: 0.95,
            top_k: 0,
            seed: 42,
        };
        let draws = PositionDraws::new(42);
        let prompt = [3u32, 1, 4];
        // Cloud-only: one target step per position.
        let mut cloud_only = prompt.to_vec();
        while cloud_only.len() < 60 {
            let pos = cloud_only.len();
            let t = draws
                .sample_row(&toy_row(*cloud_only.last().unwrap(), pos), &params, pos)
                .unwrap();
            cloud_only.push(t);
        }
        // Speculative: random draft lengths 0..=5, drafts right 70% of the time.
        for trial in 0..5u64 {
            let mut rng = rng_for(trial, EDGE_STREAM);
            let mut seq = prompt.to_vec();
            let mut rounds = 0;
            while seq.len() < 60 {
                let k = rng.random_range(0..=5usize);
                let draft: Vec<u32> = (0..k)
                    .map(|j| match cloud_only.get(seq.len() + j) {
                        Some(&t) if rng.random_bool(0.7) => t,
                        _ => rng.random_range(0..6),
                    })
                    .collect();
                let rows: Vec<Vec<f32>> = (0..=k)
                    .map(|i| {
                        let last = if i == 0 {
                            *seq.last().unwrap()
                        } else {
                            draft[i - 1]
                        };
                        toy_row(last, seq.len() + i)
                    })
                    .collect();
                let v = verify_match_at(&draft, &rows, &params, &draws, seq.len()).unwrap();
                seq.extend(v.tokens(&draft));
                rounds += 1;
            }
            seq.truncate(60);
            assert_eq!(seq, cloud_only, "trial {trial} ({rounds} rounds)");
        }
    }

    fn one_hot(v: usize, hot: usize) -> Vec<f32> {
        let mut r = vec![0.0f32; v];
        r[hot] = 5.0;
        r
    }

    #[test]
    fn greedy_cases() {
        let rows = vec![one_hot(5, 1), one_hot(5, 2), one_hot(5, 3), one_hot(5, 4)];
        assert_eq!(
            verify_greedy(&[1, 2, 3], &rows),
            Ok(Verdict {
                accepted: 3,
                next_token: 4
            })
        );
        assert_eq!(
            verify_greedy(&[1, 0, 3], &rows),
            Ok(Verdict {
                accepted: 1,
                next_token: 2
            })
        );
        assert_eq!(
            verify_greedy(&[0, 2, 3], &rows),
            Ok(Verdict {
                accepted: 0,
                next_token: 1
            })
        );
        assert_eq!(
            verify_greedy(&[1, 2, 0], &rows),
            Ok(Verdict {
                accepted: 2,
                next_token: 3
            })
        );
        // K = 0: the cloud's own token.
        assert_eq!(
            verify_greedy(&[], &rows[..1]),
            Ok(Verdict {
                accepted: 0,
                next_token: 1
            })
        );
        // Ties: lowest id; NaN never wins.
        let rows = [vec![2.0f32, 7.0, 7.0], vec![f32::NAN, 1.0, 1.0]];
        assert_eq!(
            verify_greedy(&[1], &rows),
            Ok(Verdict {
                accepted: 1,
                next_token: 1
            })
        );
        assert_eq!(
            verify_greedy(&[2], &rows),
            Ok(Verdict {
                accepted: 0,
                next_token: 1
            })
        );
        let v = Verdict {
            accepted: 2,
            next_token: 9,
        };
        assert_eq!(v.tokens(&[4, 5, 6]), vec![4, 5, 9]);
        assert_eq!(v.committed(), 3);
    }

    #[test]
    fn shape_errors() {
        let rows = vec![one_hot(5, 1), one_hot(5, 2)];
        assert_eq!(
            verify_greedy(&[1, 2], &rows),
            Err(VerifyError::RowCount {
                rows: 2,
                expected: 3,
                k: 2
            })
        );
        assert_eq!(
            verify_greedy(&[7], &rows),
            Err(VerifyError::DraftOutOfRange {
                position: 0,
                token: 7,
                vocab: 5
            })
        );
        let ragged = vec![one_hot(5, 1), one_hot(4, 2)];
        assert_eq!(
            verify_greedy(&[1], &ragged),
            Err(VerifyError::RowWidth {
                row: 1,
                width: 4,
                vocab: 5
            })
        );
        let empty: Vec<Vec<f32>> = vec![vec![]];
        assert_eq!(verify_greedy(&[], &empty), Err(VerifyError::EmptyVocab));
        let nan = vec![one_hot(5, 1), vec![f32::NAN; 5]];
        assert!(matches!(
            verify_greedy(&[1], &nan),
            Err(VerifyError::Row { row: 1, .. })
        ));
        let mut rng = rng_for(0, CLOUD_STREAM);
        let bad = SamplingParams {
            temperature: -1.0,
            ..SamplingParams::default()
        };
        assert!(matches!(
            verify_match(&[1], &rows, &bad, &mut rng),
            Err(VerifyError::Params { .. })
        ));

        let q = CompactDist::from_parts(vec![1, 2], vec![200, 55], 8, 5).unwrap();
        let t1 = SamplingParams::default();
        assert_eq!(
            verify_rejection(&[1], &[], &rows, &t1, &mut rng),
            Err(VerifyError::DistCount { dists: 0, k: 1 })
        );
        assert_eq!(
            verify_rejection(&[3], std::slice::from_ref(&q), &rows, &t1, &mut rng),
            Err(VerifyError::DraftNotInDist {
                position: 0,
                token: 3
            })
        );
        let wide = CompactDist::from_parts(vec![1, 9], vec![200, 55], 8, 10).unwrap();
        assert_eq!(
            verify_rejection(&[1], &[wide], &rows, &t1, &mut rng),
            Err(VerifyError::DistOutOfRange {
                position: 0,
                token: 9,
                vocab: 5
            })
        );
        // The same checks apply at temperature 0.
        assert_eq!(
            verify_rejection(&[3], &[q], &rows, &SamplingParams::greedy(0), &mut rng),
            Err(VerifyError::DraftNotInDist {
                position: 0,
                token: 3
            })
        );
    }

    #[test]
    fn temperature_zero_is_greedy_in_every_mode() {
        let rows = vec![
            vec![0.0f32, 3.0, 1.0],
            vec![2.0, 0.5, 2.5],
            vec![9.0, 0.0, 0.0],
        ];
        let greedy = SamplingParams::greedy(1);
        let dists: Vec<CompactDist> = (0..2)
            .map(|_| CompactDist::from_parts(vec![0, 1, 2], vec![5, 5, 5], 4, 3).unwrap())
            .collect();
        let mut rng = rng_for(1, CLOUD_STREAM);
        for draft in [[1u32, 2], [1, 0], [0, 2], [2, 2]] {
            let g = verify_greedy(&draft, &rows).unwrap();
            assert_eq!(verify_match(&draft, &rows, &greedy, &mut rng).unwrap(), g);
            assert_eq!(
                verify_rejection(&draft, &dists, &rows, &greedy, &mut rng).unwrap(),
                g
            );
        }
        assert_eq!(
            verify_greedy(&[1, 2], &rows).unwrap(),
            Verdict {
                accepted: 2,
                next_token: 0
            }
        );
    }

    #[test]
    fn rejection_deterministic_edges() {
        let mut rng = rng_for(5, CLOUD_STREAM);
        let t1 = SamplingParams::default();
        // p(x) = 0 (token 2 masked with −∞): always rejected, replacement from p's support.
        let rows = vec![vec![0.0f32, 0.0, f32::NEG_INFINITY], vec![0.0; 3]];
        let q = CompactDist::from_parts(vec![2], vec![255], 8, 3).unwrap();
        for _ in 0..200 {
            let v = verify_rejection(&[2], std::slice::from_ref(&q), &rows, &t1, &mut rng).unwrap();
            assert_eq!(v.accepted, 0);
            assert!(v.next_token < 2);
        }
        // q one-hot on the target's only token: always accepted, bonus from row 1.
        let rows = vec![
            vec![f32::NEG_INFINITY, 0.0, f32::NEG_INFINITY],
            one_hot(3, 2),
        ];
        let q = CompactDist::from_parts(vec![1], vec![15], 4, 3).unwrap();
        let t_low = SamplingParams {
            temperature: 0.01,
            ..t1
        };
        for _ in 0..200 {
            let v =
                verify_rejection(&[1], std::slice::from_ref(&q), &rows, &t_low, &mut rng).unwrap();
            assert_eq!(
                v,
                Verdict {
                    accepted: 1,
                    next_token: 2
                }
            );
        }
    }

    #[test]
    fn degenerate_residual_falls_back_to_p() {
        // p == q exactly: the residual max(0, p − q) is all zero.
        let q = CompactDist::from_parts(vec![1, 3], vec![85, 170], 8, 4).unwrap();
        let p = vec![0.0, 85.0 / 255.0, 0.0, 170.0 / 255.0];
        let mut rng = rng_for(9, CLOUD_STREAM);
        let mut counts = [0u32; 4];
        for _ in 0..30_000 {
            counts[resample_after_rejection(&p, &q, &mut rng).unwrap() as usize] += 1;
        }
        assert_eq!((counts[0], counts[2]), (0, 0));
        // Expected 10_000 of token 1, sd ≈ 82.
        assert!((counts[1] as i32 - 10_000).abs() < 400, "{counts:?}");
        // Non-degenerate: p = (0.5, 0.5), q = one-hot on 0 → residual one-hot on 1.
        let q = CompactDist::from_parts(vec![0], vec![255], 8, 2).unwrap();
        for _ in 0..100 {
            assert_eq!(resample_after_rejection(&[0.5, 0.5], &q, &mut rng), Some(1));
        }
    }

    #[test]
    fn rule_names_round_trip() {
        for r in [VerifyRule::Greedy, VerifyRule::Match, VerifyRule::Rejection] {
            assert_eq!(r.to_string().parse::<VerifyRule>(), Ok(r));
        }
        assert!(VerifyRule::Rejection.needs_draft_dists());
        assert!(!VerifyRule::Match.needs_draft_dists());
        assert_eq!(
            "Greedy".parse::<VerifyRule>(),
            Err(UnknownRule {
                input: "Greedy".into()
            })
        );
    }
}
