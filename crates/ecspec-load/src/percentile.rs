//! Percentiles by the nearest-rank method.
//!
//! The p-th percentile of n values, sorted ascending as x₁ ≤ … ≤ xₙ, is x_r with
//! r = ⌈p · n / 100⌉ (and r = 1 for p = 0): the smallest value such that at least p % of the
//! values are at most it (NIST/SEMATECH e-Handbook and Hyndman & Fan 1996, definition 1
//! for the inverse of the empirical distribution function). It is always one of the measured
//! values, never an interpolation between two, so a p99 of few requests is the slowest one
//! rather than a value nobody saw.

use serde::Serialize;

/// The `p`-th percentile of `values` (any order) by the nearest-rank method: the value of
/// rank ⌈p · n / 100⌉ (rank 1 for p = 0) among the n values sorted ascending.
///
/// Returns `None` when `values` is empty, when `p` is not in [0, 100], or when a value is
/// NaN (a NaN has no rank).
///
/// ```
/// use ecspec_load::percentile;
/// let v = [15.0, 20.0, 35.0, 40.0, 50.0];
/// assert_eq!(percentile(&v, 30.0), Some(20.0)); // ⌈1.5⌉ = rank 2
/// assert_eq!(percentile(&v, 40.0), Some(20.0)); // rank 2 exactly
/// assert_eq!(percentile(&v, 50.0), Some(35.0));
/// assert_eq!(percentile(&v, 100.0), Some(50.0));
/// ```
pub fn percentile(values: &[f64], p: f64) -> Option<f64> {
    if values.is_empty() || !(0.0..=100.0).contains(&p) || values.iter().any(|v| v.is_nan()) {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    // p · n first, then / 100: exact for whole p (p · n is then a whole number, and a multiple
    // of 100 divided by 100 is exact), so p = 95 of 20 values is rank 19, not 20.
    let rank = (p * n as f64 / 100.0).ceil() as usize;
    Some(sorted[rank.clamp(1, n) - 1])
}

/// The 50th, 95th and 99th percentiles of a sample (nearest rank), in the sample's unit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
}

impl Percentiles {
    /// The percentiles of `values`; `None` for an empty sample or one holding a NaN.
    pub fn of(values: &[f64]) -> Option<Self> {
        Some(Self {
            p50: percentile(values, 50.0)?,
            p95: percentile(values, 95.0)?,
            p99: percentile(values, 99.0)?,
        })
    }

    /// Each percentile times `k` (a unit change, e.g. s → ms).
    pub fn scaled(self, k: f64) -> Self {
        Self {
            p50: self.p50 * k,
            p95: self.p95 * k,
            p99: self.p99 * k,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_picks_measured_values() {
        // The textbook example: 15, 20, 35, 40, 50.
        let v = [50.0, 15.0, 40.0, 20.0, 35.0];
        let p = |q| percentile(&v, q).unwrap();
        assert_eq!(p(0.0), 15.0);
        assert_eq!(p(5.0), 15.0);
        assert_eq!(p(30.0), 20.0);
        assert_eq!(p(40.0), 20.0);
        assert_eq!(p(50.0), 35.0);
        assert_eq!(p(100.0), 50.0);
        // 20 values 1..=20: p95 is rank 19 (no rounding up through 0.95 · 20 = 19.000…04).
        let w: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&w, 95.0), Some(19.0));
        assert_eq!(percentile(&w, 99.0), Some(20.0));
        assert_eq!(percentile(&w, 50.0), Some(10.0));
        // 1..=100: the p-th percentile is p itself, for every whole p.
        let h: Vec<f64> = (1..=100).map(f64::from).collect();
        for q in 1..=100 {
            assert_eq!(percentile(&h, f64::from(q)), Some(f64::from(q)), "p{q}");
        }
        // One value is every percentile.
        assert_eq!(
            Percentiles::of(&[7.0]).unwrap(),
            Percentiles {
                p50: 7.0,
                p95: 7.0,
                p99: 7.0
            }
        );
    }

    #[test]
    fn empty_out_of_range_and_nan_have_no_percentile() {
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[1.0], -1.0), None);
        assert_eq!(percentile(&[1.0], 100.5), None);
        assert_eq!(percentile(&[1.0], f64::NAN), None);
        assert_eq!(percentile(&[1.0, f64::NAN], 50.0), None);
        assert_eq!(Percentiles::of(&[]), None);
        let s = Percentiles::of(&[0.001, 0.002]).unwrap().scaled(1e3);
        assert_eq!((s.p50, s.p99), (1.0, 2.0));
    }
}
