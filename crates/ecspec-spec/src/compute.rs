//! Modelled compute times for the virtual clock: the models still run (so tokens, acceptance
//! and bytes are real), but the time each step takes comes from a device profile instead of
//! this machine's wall clock, so a phone-class edge or a datacenter GPU can be simulated on
//! any CPU (design.md §8).
//!
//! - edge: drafting `t_d` s per drafted token, prefill `t_pd` s per prompt token;
//! - cloud: prefill `t_pf` s per prompt token (plus one step `a`), verification of K drafted
//!   tokens in one pass `t_v(K) = a + b·K` (design.md §2); a cloud-only step is `t_v(0) = a`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Compute times of the edge's draft model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EdgeCompute {
    /// t_d: seconds per drafted token (s/token).
    pub draft_s_per_token: f64,
    /// Seconds per prompt token of the draft's prefill (s/token).
    pub prefill_s_per_token: f64,
}

impl EdgeCompute {
    /// Time to draft `tokens` tokens.
    pub fn draft(&self, tokens: usize) -> Duration {
        secs(self.draft_s_per_token * tokens as f64)
    }

    /// Time to prefill `tokens` prompt tokens.
    pub fn prefill(&self, tokens: usize) -> Duration {
        secs(self.prefill_s_per_token * tokens as f64)
    }
}

/// Compute times of the cloud's target model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CloudCompute {
    /// Seconds per prompt token of the target's prefill (s/token).
    pub prefill_s_per_token: f64,
    /// a: one verification pass over the last committed token alone (s), i.e. one decode step.
    pub verify_base_s: f64,
    /// b: extra seconds per drafted token in the pass (s/token).
    pub verify_per_token_s: f64,
}

impl CloudCompute {
    /// Time to prefill `tokens` prompt tokens and produce the first token:
    /// `t_pf·tokens + a`.
    pub fn prefill(&self, tokens: usize) -> Duration {
        secs(self.prefill_s_per_token * tokens as f64 + self.verify_base_s)
    }

    /// `t_v(K) = a + b·K`: one pass verifying `k` drafted tokens (k = 0: a decode step).
    pub fn verify(&self, k: usize) -> Duration {
        secs(self.verify_base_s + self.verify_per_token_s * k as f64)
    }

    /// One batched pass of the cloud's scheduler over `decode_rows` rows of rounds and
    /// streaming steps (Σ (K_i + 1) over the sessions in it) and `prefill_rows` prompt rows:
    /// `a + b·(decode_rows − 1) + t_pf·prefill_rows`. The weights are read once per pass (a);
    /// every row adds its compute (b, t_pf). One session alone gets [`Self::verify`] or
    /// [`Self::prefill`].
    pub fn iteration(&self, decode_rows: usize, prefill_rows: usize) -> Duration {
        secs(
            self.verify_base_s
                + self.verify_per_token_s * decode_rows.saturating_sub(1) as f64
                + self.prefill_s_per_token * prefill_rows as f64,
        )
    }
}

/// A non-negative, finite number of seconds as a Duration (anything else is 0).
fn secs(s: f64) -> Duration {
    if s.is_finite() && s > 0.0 {
        // Beyond Duration's range (~5.8e11 years): the longest Duration, not a panic.
        Duration::try_from_secs_f64(s).unwrap_or(Duration::MAX)
    } else {
        Duration::ZERO
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modelled_times() {
        let e = EdgeCompute {
            draft_s_per_token: 0.02,
            prefill_s_per_token: 0.001,
        };
        assert_eq!(e.draft(4), Duration::from_millis(80));
        assert_eq!(e.prefill(100), Duration::from_millis(100));
        let c = CloudCompute {
            prefill_s_per_token: 0.0005,
            verify_base_s: 0.03,
            verify_per_token_s: 0.002,
        };
        assert_eq!(c.verify(0), Duration::from_millis(30));
        assert_eq!(c.verify(5), Duration::from_millis(40));
        assert_eq!(c.prefill(200), Duration::from_millis(130));
        // A batch of one equals one session alone; four rounds of K = 4 share a.
        assert_eq!(c.iteration(6, 0), c.verify(5));
        assert_eq!(c.iteration(0, 200), c.prefill(200));
        assert_eq!(
            c.iteration(20, 10),
            Duration::from_micros(30_000 + 38_000 + 5_000)
        );
        let bad = EdgeCompute {
            draft_s_per_token: f64::NAN,
            prefill_s_per_token: -1.0,
        };
        assert_eq!(
            (bad.draft(3), bad.prefill(3)),
            (Duration::ZERO, Duration::ZERO)
        );
    }
}
