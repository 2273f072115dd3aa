//! Open-loop arrivals: a Poisson process of requests, reproducible from a seed.

use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::LoadError;

/// Request arrival times (since the load level starts) of a Poisson process at `rate_per_s`
/// requests per second: the first at 0 (as vLLM's `benchmark_serving` sends its first request
/// at once), then independent exponential gaps of mean 1/`rate_per_s` s, each
/// −ln(1 − U)/rate for U uniform in [0, 1) from a ChaCha8 stream seeded with `seed` (the same
/// seed gives the same times on every machine). Arrivals stop at `max` of them or before the
/// first one later than `horizon`, whichever comes first.
///
/// # Errors
/// [`LoadError::BadSetting`] for a rate that is not a positive finite number, or when neither
/// bound is given (the process would never end).
pub fn poisson_arrivals(
    rate_per_s: f64,
    seed: u64,
    max: Option<usize>,
    horizon: Option<Duration>,
) -> Result<Vec<Duration>, LoadError> {
    if !(rate_per_s.is_finite() && rate_per_s > 0.0) {
        return Err(LoadError::BadSetting(format!(
            "the request rate must be a positive number of requests per second, got {rate_per_s}"
        )));
    }
    if max.is_none() && horizon.is_none() {
        return Err(LoadError::BadSetting(
            "Poisson arrivals need a request count or a duration".into(),
        ));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::new();
    let mut t = 0.0f64;
    loop {
        if max.is_some_and(|m| out.len() >= m) {
            break;
        }
        let at = Duration::try_from_secs_f64(t).unwrap_or(Duration::MAX);
        if horizon.is_some_and(|h| at > h) {
            break;
        }
        out.push(at);
        let u: f64 = rng.random();
        t += -(1.0 - u).ln() / rate_per_s;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_arrivals_repeat_and_have_the_rate() {
        let a = poisson_arrivals(4.0, 7, Some(20_000), None).unwrap();
        let b = poisson_arrivals(4.0, 7, Some(20_000), None).unwrap();
        assert_eq!(a, b, "the same seed gives the same arrivals");
        assert_eq!(a.len(), 20_000);
        assert_eq!(a[0], Duration::ZERO);
        assert!(a.windows(2).all(|w| w[0] <= w[1]), "times only grow");
        let c = poisson_arrivals(4.0, 8, Some(20_000), None).unwrap();
        assert_ne!(a, c, "another seed, other arrivals");
        // 19,999 gaps of mean 0.25 s: the sample mean is within 3 % (≈ 4 standard errors).
        let gaps: Vec<f64> = a.windows(2).map(|w| (w[1] - w[0]).as_secs_f64()).collect();
        let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
        assert!((mean - 0.25).abs() < 0.25 * 0.03, "mean gap {mean}");
        // Exponential gaps: the standard deviation equals the mean.
        let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64;
        assert!(
            (var.sqrt() / mean - 1.0).abs() < 0.05,
            "cv {}",
            var.sqrt() / mean
        );
        // A prefix of the stream does not depend on how many are asked for.
        let short = poisson_arrivals(4.0, 7, Some(5), None).unwrap();
        assert_eq!(short, a[..5]);
    }

    #[test]
    fn horizon_and_bad_settings() {
        let h = Duration::from_secs(10);
        let a = poisson_arrivals(2.0, 1, None, Some(h)).unwrap();
        assert!(a.iter().all(|t| *t <= h));
        // About 2 × 10 + 1 arrivals; far from 0 or 100.
        assert!((8..=40).contains(&a.len()), "{}", a.len());
        let both = poisson_arrivals(2.0, 1, Some(3), Some(h)).unwrap();
        assert_eq!(both, a[..3]);
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(poisson_arrivals(bad, 1, Some(3), None).is_err(), "{bad}");
        }
        assert!(poisson_arrivals(1.0, 1, None, None).is_err());
    }
}
