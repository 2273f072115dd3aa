//! Replaying rounds over a link model in virtual time, to measure how well the edge's
//! [`RoundEstimator`] predicts the network part of a round (`RTT + S_u·8/R_u`, design.md §2)
//! on a trace: the estimator sees exactly what it sees live — bytes sent, waiting time, the
//! cloud's compute time — and its prediction for each round is compared with what the link
//! model then delivers.
//!
//! Rounds are synthetic but shaped like real ones: K uniform in [1, k_max] (seeded), uplink
//! `14 + 2·K` bytes (token ids), downlink 19 bytes, drafting `K·t_d`, verification
//! `t_v0 + t_v1·K`.

use std::time::Duration;

use ecspec_link::LinkConfig;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::estimate::RoundEstimator;

/// Round shape of a replay.
#[derive(Debug, Clone, Copy)]
pub struct ReplaySettings {
    /// Rounds to replay.
    pub rounds: usize,
    /// Largest K drawn.
    pub k_max: usize,
    /// Drafting time per token (s).
    pub t_draft_s: f64,
    /// Verification time: fixed part (s).
    pub t_verify_s: f64,
    /// Verification time per drafted token (s).
    pub t_verify_per_token_s: f64,
    /// Seed of the K draws.
    pub seed: u64,
}

impl Default for ReplaySettings {
    fn default() -> Self {
        Self {
            rounds: 2000,
            k_max: 8,
            t_draft_s: 0.015,
            t_verify_s: 0.012,
            t_verify_per_token_s: 0.002,
            seed: 1,
        }
    }
}

/// One replayed round.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReplayedRound {
    /// Link time the round's draft block was sent (s).
    pub t_s: f64,
    /// The estimator's predicted network time before the round (s): RTT + S_u·8/R_u.
    pub predicted_s: f64,
    /// The network time the link delivered (wait − cloud compute, s).
    pub actual_s: f64,
    /// The estimator's RTT estimate before the round (s).
    pub rtt_estimate_s: f64,
    /// The estimator's uplink rate estimate before the round (bit/s).
    pub uplink_estimate_bps: f64,
}

/// Replays `s.rounds` rounds over `link` (both directions), feeding a fresh estimator.
///
/// # Errors
/// A stopping trace that ends (`TraceEnded`), as text.
pub fn replay(link: &mut LinkConfig, s: &ReplaySettings) -> Result<Vec<ReplayedRound>, String> {
    let mut rng = ChaCha8Rng::seed_from_u64(s.seed);
    let mut est = RoundEstimator::new(s.t_draft_s, s.t_verify_s);
    let mut t = 0.0f64;
    let mut out = Vec::with_capacity(s.rounds);
    for _ in 0..s.rounds {
        let k = rng.random_range(1..=s.k_max.max(1));
        t += k as f64 * s.t_draft_s;
        let (up, down) = (14 + 2 * k, 19usize);
        let st = est.state(0.5, false);
        let predicted = st.rtt_s + up as f64 * 8.0 / st.uplink_bps;
        let compute = s.t_verify_s + s.t_verify_per_token_s * k as f64;
        let at_cloud = link
            .uplink
            .transmit(Duration::from_secs_f64(t), up)
            .map_err(|e| e.to_string())?;
        let back = link
            .downlink
            .transmit(at_cloud + Duration::from_secs_f64(compute), down)
            .map_err(|e| e.to_string())?;
        let wait = back.as_secs_f64() - t;
        out.push(ReplayedRound {
            t_s: t,
            predicted_s: predicted,
            actual_s: wait - compute,
            rtt_estimate_s: st.rtt_s,
            uplink_estimate_bps: st.uplink_bps,
        });
        est.observe(
            k,
            k as f64 * s.t_draft_s,
            up as f64,
            down as f64,
            wait,
            compute,
            false,
        );
        t = back.as_secs_f64();
    }
    Ok(out)
}

/// Summary statistics of a replay: absolute prediction error of the network time (mean,
/// median, 95th percentile, s) and the mean actual network time (s), after `skip` warm-up
/// rounds.
pub fn error_stats(rounds: &[ReplayedRound], skip: usize) -> (f64, f64, f64, f64) {
    let r = &rounds[skip.min(rounds.len())..];
    if r.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN, f64::NAN);
    }
    let mut e: Vec<f64> = r
        .iter()
        .map(|x| (x.predicted_s - x.actual_s).abs())
        .collect();
    e.sort_by(f64::total_cmp);
    let mean = e.iter().sum::<f64>() / e.len() as f64;
    let pct = |p: f64| e[((e.len() - 1) as f64 * p).round() as usize];
    let actual = r.iter().map(|x| x.actual_s).sum::<f64>() / r.len() as f64;
    (mean, pct(0.5), pct(0.95), actual)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ecspec_link::{DelayProcess, LinkModel, VariableDelay};

    #[test]
    fn on_a_constant_link_the_prediction_converges_to_the_truth() {
        let mut link = LinkConfig::constant(10.0, 20.0, 60.0).unwrap();
        let r = replay(&mut link, &ReplaySettings::default()).unwrap();
        let (mean, _, p95, actual) = error_stats(&r, 50);
        // Network time = 60 ms + tiny serialization; the fit learns it to within 0.1 ms.
        assert!((actual - 0.0601).abs() < 0.001, "{actual}");
        assert!(mean < 1e-4 && p95 < 2e-4, "mean {mean} p95 {p95}");
    }

    #[test]
    fn after_an_rtt_step_the_estimate_catches_up_as_its_decay_predicts() {
        // RTT 60 ms for the first 20 s, then 200 ms (one-way 30 → 100 ms), both directions.
        let series: Vec<Option<f64>> = (0..40)
            .map(|s| Some(if s < 20 { 60.0 } else { 200.0 }))
            .collect();
        let step = |m: Box<dyn LinkModel>| -> Box<dyn LinkModel> {
            Box::new(VariableDelay::new(
                m,
                DelayProcess::RttTrace {
                    rtt_ms: series.clone().into(),
                    slot: Duration::from_secs(1),
                },
            ))
        };
        let base = LinkConfig::constant(10.0, 20.0, 60.0).unwrap();
        let mut link = LinkConfig::new(step(base.uplink), step(base.downlink));
        let r = replay(
            &mut link,
            &ReplaySettings {
                rounds: 400,
                ..Default::default()
            },
        )
        .unwrap();
        let first_after = r.iter().position(|x| x.t_s >= 20.0).unwrap();
        // Rounds after the step until the prediction is within 10% of the new network time.
        let lag = r[first_after..]
            .iter()
            .position(|x| (x.predicted_s - x.actual_s).abs() < 0.1 * x.actual_s)
            .unwrap();
        // The network fit decays old rounds by 0.9 per round, so its intercept moves from the
        // old to the new level as 1 − 0.9ⁿ: the error (140 ms · 0.9ⁿ) drops under 10% of the
        // new 200 ms once 0.9ⁿ < 0.143, at n = 19 rounds (≈ 6 s of rounds here).
        assert_eq!(lag, 19, "caught up after {lag} rounds");
    }
}
