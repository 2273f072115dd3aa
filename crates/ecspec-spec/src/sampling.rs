//! Sampling: the distribution the target samples from, greedy argmax, inverse-CDF draws and
//! seeded random streams.
//!
//! A logits row is a `&[f32]` of vocabulary size `V` (one entry per token id, natural-log
//! units). A probability row is a `&[f32]` (or `&[f64]` internally) of the same size.
//!
//! **Invariant:** [`target_distribution`] is the one definition of "the target's distribution"
//! in ECSpec; every verification rule in [`crate::verify`] samples from (or compares against)
//! exactly this distribution, so speculative and plain decoding agree.

use std::cmp::Ordering;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};

/// Stream id of the edge's random generator (draft sampling) in [`rng_for`].
pub const EDGE_STREAM: u64 = 0;
/// Stream id of the cloud's random generator (verification) in [`rng_for`].
pub const CLOUD_STREAM: u64 = 1;
/// Stream id of the target's per-position draws ([`PositionDraws`]).
pub const POSITION_STREAM: u64 = 2;

/// How the target turns logits into a next-token distribution.
///
/// Applied in the order of Hugging Face `transformers`' logits warpers: temperature, then
/// top-k, then top-p (nucleus, Holtzman et al. 2020, arXiv 1904.09751, §3.1), then
/// renormalisation. See [`target_distribution`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SamplingParams {
    /// Softmax temperature T ≥ 0 (dimensionless). `0.0` means greedy: a one-hot distribution
    /// on the argmax (see [`argmax`] for the tie rule).
    pub temperature: f32,
    /// Nucleus mass in (0, 1]: keep the smallest set of most probable tokens whose mass is
    /// ≥ `top_p`. `1.0` disables the truncation.
    pub top_p: f32,
    /// Keep only the `top_k` most probable tokens; `0` (or ≥ V) disables the truncation.
    pub top_k: usize,
    /// Seed of the session's random generators; see [`rng_for`]. The functions of this crate
    /// never read it: they take the generator explicitly.
    pub seed: u64,
}

impl Default for SamplingParams {
    /// Plain sampling from the model's softmax: T = 1, no top-k, no top-p, seed 0.
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            seed: 0,
        }
    }
}

impl SamplingParams {
    /// Greedy decoding (temperature 0, no truncation) with the given seed.
    pub fn greedy(seed: u64) -> Self {
        Self {
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            seed,
        }
    }

    /// True when `temperature == 0`, i.e. the target distribution is one-hot on the argmax.
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }

    /// Checks the fields.
    ///
    /// # Errors
    /// [`SamplingError::InvalidTemperature`] if `temperature` is NaN, infinite or negative;
    /// [`SamplingError::InvalidTopP`] if `top_p` is NaN or not in (0, 1].
    pub fn validate(&self) -> Result<(), SamplingError> {
        let t = self.temperature;
        if !t.is_finite() || t < 0.0 {
            return Err(SamplingError::InvalidTemperature { value: t });
        }
        let p = self.top_p;
        // `!(p > 0.0)` also catches NaN.
        if !(p > 0.0 && p <= 1.0) {
            return Err(SamplingError::InvalidTopP { value: p });
        }
        Ok(())
    }
}

/// Errors of [`SamplingParams::validate`], [`target_distribution`] and [`sample`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SamplingError {
    /// `temperature` was NaN, infinite or negative.
    #[error("invalid temperature {value}: must be finite and >= 0")]
    InvalidTemperature {
        /// The rejected value.
        value: f32,
    },
    /// `top_p` was NaN or outside (0, 1].
    #[error("invalid top_p {value}: must be in (0, 1]")]
    InvalidTopP {
        /// The rejected value.
        value: f32,
    },
    /// The logits row had no entries (vocabulary size 0).
    #[error("empty logits row (vocabulary size 0)")]
    EmptyLogits,
    /// Every logit was NaN or −∞, so no token has positive probability.
    #[error("logits row of {vocab} entries has no usable value (all NaN or -inf)")]
    NoUsableLogit {
        /// Length of the row.
        vocab: usize,
    },
    /// A probability row had no positive finite entry.
    #[error("probability row of {len} entries has no positive finite mass")]
    NoMass {
        /// Length of the row.
        len: usize,
    },
}

/// Index of the largest logit.
///
/// Tie rule: the lowest token id wins. NaN-safe: NaN ranks below every number (−∞ included),
/// so it is chosen only when the whole row is NaN, in which case the result is 0. +∞ ranks
/// above every finite value.
///
/// Shape: `logits` has V ≥ 1 entries; returns an id in `0..V`.
///
/// # Panics
/// If `logits` is empty (a vocabulary has at least one token; the `verify_*` functions check
/// this before calling).
pub fn argmax(logits: &[f32]) -> u32 {
    assert!(!logits.is_empty(), "argmax of an empty logits row");
    let mut best = 0usize;
    for (i, &v) in logits.iter().enumerate().skip(1) {
        let b = logits[best];
        // Strictly greater keeps the lowest id on ties; a NaN `best` loses to any number.
        if v > b || (b.is_nan() && !v.is_nan()) {
            best = i;
        }
    }
    best as u32
}

/// [`argmax`] that refuses rows where no token can have positive probability.
///
/// # Errors
/// [`SamplingError::EmptyLogits`] for an empty row; [`SamplingError::NoUsableLogit`] when every
/// entry is NaN or −∞.
pub(crate) fn checked_argmax(logits: &[f32]) -> Result<u32, SamplingError> {
    if logits.is_empty() {
        return Err(SamplingError::EmptyLogits);
    }
    let id = argmax(logits);
    let v = logits[id as usize];
    if v.is_nan() || v == f32::NEG_INFINITY {
        return Err(SamplingError::NoUsableLogit {
            vocab: logits.len(),
        });
    }
    Ok(id)
}

/// The distribution the target samples its next token from.
///
/// Steps (the order of Hugging Face `transformers`' `TemperatureLogitsWarper`,
/// `TopKLogitsWarper`, `TopPLogitsWarper`):
/// 1. softmax at temperature T: `w_i = exp((l_i − max_j l_j) / T)`, NaN and −∞ logits get 0;
///    if some logits are +∞, the limit of the softmax is taken (uniform over those entries);
/// 2. top-k: keep the `top_k` largest (ties at the boundary: lowest id kept);
/// 3. top-p (Holtzman et al. 2020, arXiv 1904.09751, §3.1): on the renormalised top-k
///    distribution, keep the smallest prefix of tokens sorted by probability (descending,
///    ties by lowest id) whose mass is ≥ `top_p` (the token crossing the threshold is kept);
/// 4. renormalise the kept entries to sum to 1 (computed in f64, returned as f32).
///
/// T = 0 is greedy: one-hot on [`argmax`] (ties: lowest id).
///
/// Shape: `logits` has V entries; the result has V entries, non-negative, summing to 1 up to
/// f32 rounding, and at least one entry is positive.
///
/// # Errors
/// Invalid `params` (see [`SamplingParams::validate`]); [`SamplingError::EmptyLogits`];
/// [`SamplingError::NoUsableLogit`] when every logit is NaN or −∞.
pub fn target_distribution(
    logits: &[f32],
    params: &SamplingParams,
) -> Result<Vec<f32>, SamplingError> {
    Ok(distribution_f64(logits, params)?
        .into_iter()
        .map(|p| p as f32)
        .collect())
}

/// [`target_distribution`] in f64, normalised in f64 (sums to 1 within f64 rounding). The
/// verifiers use this form so that p and the quantised draft q are compared at the same
/// precision.
pub(crate) fn distribution_f64(
    logits: &[f32],
    params: &SamplingParams,
) -> Result<Vec<f64>, SamplingError> {
    params.validate()?;
    let v = logits.len();
    if v == 0 {
        return Err(SamplingError::EmptyLogits);
    }
    let mut w = vec![0.0f64; v];
    if params.is_greedy() {
        w[checked_argmax(logits)? as usize] = 1.0;
        return Ok(w);
    }

    // 1. Softmax at temperature (unnormalised weights; max-subtracted so exp never overflows).
    let mut max = f32::NEG_INFINITY;
    for &l in logits {
        if l > max {
            max = l;
        }
    }
    if max == f32::NEG_INFINITY {
        // Every entry is NaN or −∞ (NaN never compares greater).
        return Err(SamplingError::NoUsableLogit { vocab: v });
    }
    if max == f32::INFINITY {
        for (wi, &l) in w.iter_mut().zip(logits) {
            if l == f32::INFINITY {
                *wi = 1.0;
            }
        }
    } else {
        let max = f64::from(max);
        let t = f64::from(params.temperature);
        for (wi, &l) in w.iter_mut().zip(logits) {
            if l.is_finite() {
                *wi = ((f64::from(l) - max) / t).exp();
            }
        }
    }

    let k = params.top_k;
    if (k == 0 || k >= v) && params.top_p >= 1.0 {
        // No truncation: normalise in place.
        let mass: f64 = w.iter().sum();
        w.iter_mut().for_each(|x| *x /= mass);
        return Ok(w);
    }

    // Candidates in rank order (probability descending, then id ascending).
    let by_rank =
        |a: &usize, b: &usize, w: &[f64]| -> Ordering { w[*b].total_cmp(&w[*a]).then(a.cmp(b)) };
    let mut cand: Vec<usize> = (0..v).filter(|&i| w[i] > 0.0).collect();
    let mut sorted = false;

    // 2. Top-k.
    if k > 0 && k < cand.len() {
        cand.select_nth_unstable_by(k - 1, |a, b| by_rank(a, b, &w));
        cand.truncate(k);
        cand.sort_unstable_by(|a, b| by_rank(a, b, &w));
        sorted = true;
    }

    // 3. Top-p on the renormalised top-k distribution.
    if params.top_p < 1.0 {
        let mass: f64 = cand.iter().map(|&i| w[i]).sum();
        let target = f64::from(params.top_p) * mass;
        if !sorted {
            // Sorting all of a 150k vocabulary per row is costly; the nucleus only ever needs
            // tokens above a small threshold, as long as those hold enough mass on their own
            // (every token above the threshold precedes every token below it in rank order).
            let wmax = cand.iter().map(|&i| w[i]).fold(0.0, f64::max);
            let threshold = wmax * 1e-6;
            let above: Vec<usize> = cand
                .iter()
                .copied()
                .filter(|&i| w[i] >= threshold)
                .collect();
            if above.iter().map(|&i| w[i]).sum::<f64>() >= target {
                cand = above;
            }
            cand.sort_unstable_by(|a, b| by_rank(a, b, &w));
        }
        let mut cum = 0.0;
        let mut keep = cand.len();
        for (n, &i) in cand.iter().enumerate() {
            cum += w[i];
            if cum >= target {
                keep = n + 1;
                break;
            }
        }
        cand.truncate(keep.max(1));
    }

    // 4. Renormalise the kept entries.
    let mass: f64 = cand.iter().map(|&i| w[i]).sum();
    let mut out = vec![0.0f64; v];
    for &i in &cand {
        out[i] = w[i] / mass;
    }
    Ok(out)
}

/// Draws a token id from a probability row by inverse CDF.
///
/// `probs` has V entries; they need not sum to 1 (the row is normalised by its sum, so f32
/// rounding does not bias the draw). Entries that are NaN, infinite, zero or negative are
/// treated as zero. Uses one `f64` uniform from `rng`. Robust to rounding: the result is always
/// an id whose entry is positive, even when the uniform lands past the accumulated sum.
///
/// # Errors
/// [`SamplingError::NoMass`] if no entry is positive and finite (including an empty row).
pub fn sample(probs: &[f32], rng: &mut impl Rng) -> Result<u32, SamplingError> {
    sample_weights(probs, rng).ok_or(SamplingError::NoMass { len: probs.len() })
}

/// Inverse-CDF draw from non-negative weights (f32 or f64); `None` if no weight is positive and
/// finite. See [`sample`].
pub(crate) fn sample_weights<T: Copy + Into<f64>>(
    weights: &[T],
    rng: &mut impl Rng,
) -> Option<u32> {
    let usable = |x: f64| x.is_finite() && x > 0.0;
    let total: f64 = weights
        .iter()
        .map(|&x| x.into())
        .filter(|&x| usable(x))
        .sum();
    if !(total > 0.0 && total.is_finite()) {
        return None;
    }
    let u = rng.random::<f64>() * total;
    let mut cum = 0.0;
    let mut last = None;
    for (i, &x) in weights.iter().enumerate() {
        let x: f64 = x.into();
        if !usable(x) {
            continue;
        }
        cum += x;
        last = Some(i as u32);
        if u < cum {
            return last;
        }
    }
    // Rounding left `u` at or past the accumulated sum: the last positive entry owns the tail.
    last
}

/// A reproducible random generator for one party of a session.
///
/// ChaCha20 keyed by `seed` (expanded with `SeedableRng::seed_from_u64`) on the 64-bit stream
/// `stream` ([`EDGE_STREAM`], [`CLOUD_STREAM`], or any other id): different streams of one key
/// are independent sequences, so the edge's draft draws and the cloud's verification draws are
/// independent (which the exactness of rejection sampling requires) yet both follow from one
/// seed.
pub fn rng_for(seed: u64, stream: u64) -> ChaCha20Rng {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

/// The target's own draws, keyed by position: the uniform that picks the token at committed
/// position `i` (0-based, prompt included) is a pure function of `(seed, i)`.
///
/// Counter-based (Salmon et al. 2011, "Parallel random numbers: as easy as 1, 2, 3"): ChaCha20
/// keyed by `seed` on [`POSITION_STREAM`], position `i` reading the 64-byte block `i` of that
/// stream (one `f64` uses two of its 16 words). Because the draw for a position does not depend
/// on how many draws came before it, the token the target samples at position `i` is the same
/// whether position `i` was reached by a cloud-only step, as a bonus token, or as the row that
/// checked a drafted token, and whatever draft lengths the rounds had: match verification
/// ([`crate::verify::verify_match_at`]) then commits exactly the cloud-only sampled text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PositionDraws {
    seed: u64,
}

impl PositionDraws {
    /// The draws of a session seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self { seed }
    }

    /// The generator for committed position `position` (0-based, prompt included).
    pub fn at(&self, position: usize) -> ChaCha20Rng {
        let mut rng = rng_for(self.seed, POSITION_STREAM);
        // 16 32-bit words per ChaCha block: each position starts a block of its own.
        rng.set_word_pos(position as u128 * 16);
        rng
    }

    /// The target's token at `position` from its logits `row`: [`target_distribution`] under
    /// `params` (in f64, exactly as match verification computes it, so a cloud-only step and a
    /// verifying row pick the same token), then an inverse-CDF draw from [`Self::at`].
    /// Greedy `params` give the argmax and use no draw.
    ///
    /// # Errors
    /// Invalid `params`, an empty row, a row with no usable logit.
    pub fn sample_row(
        &self,
        row: &[f32],
        params: &SamplingParams,
        position: usize,
    ) -> Result<u32, SamplingError> {
        let p = distribution_f64(row, params)?;
        sample_weights(&p, &mut self.at(position)).ok_or(SamplingError::NoMass { len: p.len() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f32, top_k: usize, top_p: f32) -> SamplingParams {
        SamplingParams {
            temperature,
            top_p,
            top_k,
            seed: 0,
        }
    }

    fn close(a: &[f32], b: &[f32]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-6)
    }

    #[test]
    fn validate_names_the_bad_field() {
        let ok = SamplingParams::default();
        assert_eq!(ok.validate(), Ok(()));
        assert_eq!(
            params(-0.1, 0, 1.0).validate(),
            Err(SamplingError::InvalidTemperature { value: -0.1 })
        );
        assert!(matches!(
            params(f32::NAN, 0, 1.0).validate(),
            Err(SamplingError::InvalidTemperature { .. })
        ));
        assert!(matches!(
            params(f32::INFINITY, 0, 1.0).validate(),
            Err(SamplingError::InvalidTemperature { .. })
        ));
        assert_eq!(
            params(1.0, 0, 0.0).validate(),
            Err(SamplingError::InvalidTopP { value: 0.0 })
        );
        assert_eq!(
            params(1.0, 0, 1.5).validate(),
            Err(SamplingError::InvalidTopP { value: 1.5 })
        );
        assert!(matches!(
            params(1.0, 0, f32::NAN).validate(),
            Err(SamplingError::InvalidTopP { .. })
        ));
        let err = params(1.0, 0, 1.5).validate().unwrap_err().to_string();
        assert!(err.contains("top_p"), "{err}");
    }

    #[test]
    fn argmax_ties_and_nan() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
        assert_eq!(argmax(&[f32::NAN, 0.5, f32::NAN, 0.7]), 3);
        assert_eq!(argmax(&[f32::NAN, f32::NEG_INFINITY]), 1);
        assert_eq!(argmax(&[f32::NAN, f32::NAN]), 0);
        assert_eq!(argmax(&[1e30, f32::INFINITY, f32::INFINITY]), 1);
        assert_eq!(argmax(&[-5.0]), 0);
        assert_eq!(
            checked_argmax(&[f32::NAN, f32::NEG_INFINITY]),
            Err(SamplingError::NoUsableLogit { vocab: 2 })
        );
        assert_eq!(checked_argmax(&[]), Err(SamplingError::EmptyLogits));
    }

    #[test]
    fn softmax_at_temperature() {
        let l = [0.0f32, 2f32.ln(), f32::NEG_INFINITY, f32::NAN];
        let p = target_distribution(&l, &params(1.0, 0, 1.0)).unwrap();
        assert!(close(&p, &[1.0 / 3.0, 2.0 / 3.0, 0.0, 0.0]), "{p:?}");
        // T = 0.5 squares the ratios: 1 : 4.
        let p = target_distribution(&l, &params(0.5, 0, 1.0)).unwrap();
        assert!(close(&p, &[0.2, 0.8, 0.0, 0.0]), "{p:?}");
        // Greedy: one-hot, lowest id on ties.
        let p = target_distribution(&[1.0, 3.0, 3.0], &params(0.0, 0, 1.0)).unwrap();
        assert_eq!(p, vec![0.0, 1.0, 0.0]);
        // Huge logits do not overflow.
        let p = target_distribution(&[1e30, 1e30 - 1e24, -1e30], &params(1.0, 0, 1.0)).unwrap();
        assert_eq!(p, vec![1.0, 0.0, 0.0]);
        // +inf: uniform over the infinite entries.
        let p = target_distribution(&[f32::INFINITY, 0.0, f32::INFINITY], &params(1.0, 0, 1.0))
            .unwrap();
        assert_eq!(p, vec![0.5, 0.0, 0.5]);
    }

    #[test]
    fn top_k_then_top_p() {
        // probs ∝ 8, 4, 2, 1, 1 (sum 16).
        let l: Vec<f32> = [8.0f32, 4.0, 2.0, 1.0, 1.0]
            .iter()
            .map(|x| x.ln())
            .collect();
        let p = target_distribution(&l, &params(1.0, 3, 1.0)).unwrap();
        assert!(
            close(&p, &[8.0 / 14.0, 4.0 / 14.0, 2.0 / 14.0, 0.0, 0.0]),
            "{p:?}"
        );
        // Tie at the top-k boundary: ids 3 and 4 tie; the lower id is kept.
        let p = target_distribution(&l, &params(1.0, 4, 1.0)).unwrap();
        assert!(
            close(&p, &[8.0 / 15.0, 4.0 / 15.0, 2.0 / 15.0, 1.0 / 15.0, 0.0]),
            "{p:?}"
        );
        // Top-p 0.7 on the full distribution: 0.5 < 0.7 ≤ 0.75 keeps two tokens.
        let p = target_distribution(&l, &params(1.0, 0, 0.7)).unwrap();
        assert!(close(&p, &[8.0 / 12.0, 4.0 / 12.0, 0.0, 0.0, 0.0]), "{p:?}");
        // Exactly on the threshold: cumulative 0.5 ≥ 0.5 keeps one token.
        let p = target_distribution(&l, &params(1.0, 0, 0.5)).unwrap();
        assert_eq!(p, vec![1.0, 0.0, 0.0, 0.0, 0.0]);
        // Top-p applies to the renormalised top-k distribution: top-3 gives 8/14, 4/14, 2/14;
        // 8/14 = 0.571 < 0.8 ≤ 12/14 = 0.857 keeps two.
        let p = target_distribution(&l, &params(1.0, 3, 0.8)).unwrap();
        assert!(close(&p, &[8.0 / 12.0, 4.0 / 12.0, 0.0, 0.0, 0.0]), "{p:?}");
        // top_k ≥ V is off.
        let p = target_distribution(&l, &params(1.0, 99, 1.0)).unwrap();
        assert!(close(&p, &[0.5, 0.25, 0.125, 0.0625, 0.0625]), "{p:?}");
    }

    #[test]
    fn top_p_threshold_shortcut_matches_full_sort() {
        // A long tail of tiny tokens below the 1e-6 threshold plus a head: results must equal
        // the definition (head tokens only, in rank order).
        let mut l = vec![-40.0f32; 1000];
        l[10] = 0.0;
        l[500] = -0.1;
        l[999] = -3.0;
        let p = target_distribution(&l, &params(1.0, 0, 0.9)).unwrap();
        let kept: Vec<usize> = (0..l.len()).filter(|&i| p[i] > 0.0).collect();
        assert_eq!(kept, vec![10, 500]);
        // top_p so high that the tail is needed: falls back to the full sort.
        let p = target_distribution(&l, &params(1.0, 0, 0.999_999_99)).unwrap();
        assert!(p.iter().filter(|&&x| x > 0.0).count() > 3);
    }

    #[test]
    fn distribution_errors() {
        let ok = SamplingParams::default();
        assert_eq!(
            target_distribution(&[], &ok),
            Err(SamplingError::EmptyLogits)
        );
        assert_eq!(
            target_distribution(&[f32::NAN, f32::NEG_INFINITY], &ok),
            Err(SamplingError::NoUsableLogit { vocab: 2 })
        );
        assert_eq!(
            target_distribution(&[f32::NAN], &SamplingParams::greedy(0)),
            Err(SamplingError::NoUsableLogit { vocab: 1 })
        );
        assert!(matches!(
            target_distribution(&[0.0], &params(-1.0, 0, 1.0)),
            Err(SamplingError::InvalidTemperature { .. })
        ));
    }

    #[test]
    fn sample_never_returns_zero_probability() {
        let mut rng = rng_for(7, EDGE_STREAM);
        let probs = [0.0f32, 0.25, 0.0, 0.75, 0.0];
        let mut counts = [0u32; 5];
        for _ in 0..40_000 {
            counts[sample(&probs, &mut rng).unwrap() as usize] += 1;
        }
        assert_eq!((counts[0], counts[2], counts[4]), (0, 0, 0));
        // 10_000 expected, sd ≈ 87.
        assert!((counts[1] as i32 - 10_000).abs() < 500, "{counts:?}");
        // A uniform at the very top of [0, 1) still lands on a positive entry.
        struct Top;
        impl rand::RngCore for Top {
            fn next_u32(&mut self) -> u32 {
                u32::MAX
            }
            fn next_u64(&mut self) -> u64 {
                u64::MAX
            }
            fn fill_bytes(&mut self, dst: &mut [u8]) {
                dst.fill(0xff)
            }
        }
        assert_eq!(sample(&[0.3f32, 0.3, 0.3, 0.0], &mut Top).unwrap(), 2);
        assert_eq!(sample_weights(&[1e-300f64, 0.0], &mut Top), Some(0));
        assert_eq!(
            sample(&[0.0f32, f32::NAN, -1.0], &mut rng),
            Err(SamplingError::NoMass { len: 3 })
        );
        assert_eq!(sample(&[], &mut rng), Err(SamplingError::NoMass { len: 0 }));
    }

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let a: Vec<u64> = (0..4).map(|_| rng_for(42, EDGE_STREAM).random()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        let mut e = rng_for(42, EDGE_STREAM);
        let mut c = rng_for(42, CLOUD_STREAM);
        let e: Vec<u64> = (0..4).map(|_| e.random()).collect();
        let c: Vec<u64> = (0..4).map(|_| c.random()).collect();
        assert_ne!(e, c);
        assert_ne!(rng_for(43, EDGE_STREAM).random::<u64>(), e[0]);
    }

    #[test]
    fn position_draws_depend_on_seed_and_position_only() {
        let d = PositionDraws::new(42);
        // Reading position 5 first or after others gives the same draw.
        let direct: f64 = d.at(5).random();
        let _ = (0..5).map(|i| d.at(i).random::<f64>()).collect::<Vec<_>>();
        assert_eq!(d.at(5).random::<f64>(), direct);
        assert_ne!(d.at(6).random::<f64>(), direct);
        assert_ne!(PositionDraws::new(43).at(5).random::<f64>(), direct);
        // Not the cloud's sequential stream either.
        assert_ne!(
            rng_for(42, CLOUD_STREAM).random::<f64>(),
            d.at(0).random::<f64>()
        );
    }

    #[test]
    fn position_draws_sample_the_distribution() {
        // 8000 positions of one seed, p = softmax(ln 0.5, ln 0.3, ln 0.2): each count within 5
        // standard deviations of its mean (a seed failing this has probability < 1e-5).
        let probs = [0.5f32, 0.3, 0.2];
        let row: Vec<f32> = probs.iter().map(|p| p.ln()).collect();
        let d = PositionDraws::new(9);
        let n = 8000;
        let mut counts = [0usize; 3];
        for i in 0..n {
            counts[d.sample_row(&row, &params(1.0, 0, 1.0), i).unwrap() as usize] += 1;
        }
        for (c, &p) in counts.iter().zip(&probs) {
            let (mean, sd) = (
                n as f64 * p as f64,
                (n as f64 * p as f64 * (1.0 - p as f64)).sqrt(),
            );
            assert!((*c as f64 - mean).abs() < 5.0 * sd, "{counts:?}");
        }
    }
}
