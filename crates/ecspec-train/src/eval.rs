//! Offline measures on held-out windows, with the runtime's own kernels.
//!
//! - [`eval_alpha`]: teacher-forced greedy agreement α — the fraction of positions where the
//!   draft's argmax equals the target's when both read the same (true) prefix. It is the
//!   per-token acceptance probability of greedy verification if drafts were independent of
//!   earlier rejections (the family eval reports both).
//! - [`mean_cross_entropy`]: next-token cross-entropy (nats/token) of a model on text.

use ecspec_model::{LogitsFor, Transformer};

use crate::error::Result;

/// Agreement counts of [`eval_alpha`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct AlphaReport {
    /// Positions compared.
    pub positions: usize,
    /// Positions where the argmaxes agree.
    pub agree: usize,
}

impl AlphaReport {
    /// α = agree / positions (0 when nothing was compared).
    pub fn alpha(&self) -> f64 {
        if self.positions == 0 {
            0.0
        } else {
            self.agree as f64 / self.positions as f64
        }
    }
}

fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in row.iter().enumerate() {
        if x > row[best] {
            best = i;
        }
    }
    best
}

/// Teacher-forced greedy agreement of `draft` with `target` over every position of every
/// window (each window a fresh context).
///
/// # Errors
/// Model errors (token out of range, context overflow).
pub fn eval_alpha(
    target: &Transformer,
    draft: &Transformer,
    windows: &[Vec<u32>],
) -> Result<AlphaReport> {
    let mut r = AlphaReport {
        positions: 0,
        agree: 0,
    };
    for w in windows.iter().filter(|w| !w.is_empty()) {
        let lt = target.forward(&mut target.new_cache(), w, LogitsFor::All)?;
        let ld = draft.forward(&mut draft.new_cache(), w, LogitsFor::All)?;
        for i in 0..lt.rows() {
            r.positions += 1;
            r.agree += usize::from(argmax(lt.row(i)) == argmax(ld.row(i)));
        }
    }
    Ok(r)
}

/// Mean next-token cross-entropy (nats per predicted token) of `model` over `windows`.
///
/// # Errors
/// Model errors.
pub fn mean_cross_entropy(model: &Transformer, windows: &[Vec<u32>]) -> Result<f64> {
    let (mut sum, mut n) = (0f64, 0usize);
    for w in windows.iter().filter(|w| w.len() >= 2) {
        let l = model.forward(&mut model.new_cache(), &w[..w.len() - 1], LogitsFor::All)?;
        for i in 0..l.rows() {
            let row = l.row(i);
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let lse = max as f64
                + row
                    .iter()
                    .map(|&x| ((x - max) as f64).exp())
                    .sum::<f64>()
                    .ln();
            sum += lse - row[w[i + 1] as usize] as f64;
            n += 1;
        }
    }
    Ok(if n == 0 { 0.0 } else { sum / n as f64 })
}
