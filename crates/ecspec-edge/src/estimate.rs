//! What the edge learns about its round from its own measurements: drafting time per token,
//! the cloud's verification time as a function of K, and the network's fixed and per-byte
//! time (RTT and uplink rate). Feeds the draft-length policy's [`RoundState`].

use ecspec_spec::policy::RoundState;

/// The prior on a line's slope.
#[derive(Debug, Clone, Copy)]
pub enum SlopePrior {
    /// b₀ in y-units per x-unit (e.g. seconds per uplink byte).
    Absolute(f64),
    /// b₀ as a fraction of the current mean of y (e.g. "each drafted token adds 15% of a
    /// verification"): scale-free, so no guess of the absolute cost is needed.
    RelativeToMean(f64),
}

/// Least-squares line y = a + b·x over exponentially decayed observations (weight λ_d per new
/// sample), with a ridge prior pulling the slope towards b₀ with strength `lambda` (in units
/// of weight × x²). Observations that all sit at nearly the same x say nothing about the
/// slope, so the prior keeps it sane instead of fitting noise; observations spread in x
/// outweigh it. Before any observation the line is (a₀, b₀).
#[derive(Debug, Clone)]
pub struct DecayingLineFit {
    decay: f64,
    a0: f64,
    slope: SlopePrior,
    lambda: f64,
    sw: f64,
    sx: f64,
    sy: f64,
    sxx: f64,
    sxy: f64,
}

impl DecayingLineFit {
    /// A fit with prior intercept `a0` (used until the first observation), slope prior,
    /// prior strength `lambda` ≥ 0 and `decay` ∈ (0, 1] per observation.
    pub fn new(a0: f64, slope: SlopePrior, lambda: f64, decay: f64) -> Self {
        Self {
            decay,
            a0,
            slope,
            lambda,
            sw: 0.0,
            sx: 0.0,
            sy: 0.0,
            sxx: 0.0,
            sxy: 0.0,
        }
    }

    /// Adds one observation, discounting the past by `decay`.
    pub fn observe(&mut self, x: f64, y: f64) {
        let d = self.decay;
        self.sw = self.sw * d + 1.0;
        self.sx = self.sx * d + x;
        self.sy = self.sy * d + y;
        self.sxx = self.sxx * d + x * x;
        self.sxy = self.sxy * d + x * y;
    }

    /// Current (intercept a, slope b), both clamped ≥ 0 (they are times).
    pub fn line(&self) -> (f64, f64) {
        if self.sw <= 0.0 {
            let b0 = match self.slope {
                SlopePrior::Absolute(b) => b,
                SlopePrior::RelativeToMean(r) => r * self.a0,
            };
            return (self.a0.max(0.0), b0.max(0.0));
        }
        let (mx, my) = (self.sx / self.sw, self.sy / self.sw);
        let var = (self.sxx / self.sw - mx * mx).max(0.0);
        let cov = self.sxy / self.sw - mx * my;
        let b0 = match self.slope {
            SlopePrior::Absolute(b) => b,
            SlopePrior::RelativeToMean(r) => r * my,
        };
        let b = ((self.sw * cov + self.lambda * b0) / (self.sw * var + self.lambda).max(1e-300))
            .max(0.0);
        ((my - b * mx).max(0.0), b)
    }
}

/// The edge's running estimate of every term of T_round(K) (design.md §2).
#[derive(Debug, Clone)]
pub struct RoundEstimator {
    /// EWMA of drafting time per token (s).
    t_draft: f64,
    /// Cloud compute time (s) vs block size K.
    verify: DecayingLineFit,
    /// Network time (wait − cloud compute, s) vs uplink bytes of the round.
    network: DecayingLineFit,
    /// Uplink bytes per drafted token (EWMA), ids only [0] and ids with compact distributions
    /// [1] (rejection rounds), and whether each has been measured yet; fixed bytes per round.
    up_per_token: [f64; 2],
    up_measured: [bool; 2],
    up_base: f64,
    /// Downlink bytes per round (EWMA).
    down: f64,
    ewma: f64,
}

impl RoundEstimator {
    /// Priors: drafting `t_draft` s/token, a 60 ms RTT and 10 Mbit/s uplink, a verification
    /// costing `t_verify` s plus 15% per drafted token, 2-byte ids (36 bytes with a compact
    /// distribution) in a 14-byte frame; the first measured round of each kind replaces its
    /// per-token bytes. The
    /// intercepts are replaced by the first measurements; the slopes stay near their priors
    /// until rounds of different K spread the data.
    pub fn new(t_draft: f64, t_verify: f64) -> Self {
        Self {
            t_draft,
            // A drafted token adds ~15% of a verification pass until spread-out K say otherwise.
            verify: DecayingLineFit::new(t_verify, SlopePrior::RelativeToMean(0.15), 20.0, 0.9),
            // 10 Mbit/s until rounds of different sizes say otherwise.
            network: DecayingLineFit::new(0.060, SlopePrior::Absolute(8.0 / 10e6), 200.0, 0.9),
            up_per_token: [2.0, 36.0],
            up_measured: [false; 2],
            up_base: 14.0,
            down: 19.0,
            ewma: 0.2,
        }
    }

    /// Priors for a draft and a target in one process, with no link between them: as
    /// [`Self::new`], but no RTT, no bytes and an unlimited rate, so that the first rounds are
    /// weighed on compute alone (rounds observed with no bytes and no network time keep it so).
    pub fn in_process(t_draft: f64, t_verify: f64) -> Self {
        Self {
            network: DecayingLineFit::new(0.0, SlopePrior::Absolute(0.0), 200.0, 0.9),
            up_per_token: [0.0; 2],
            up_base: 0.0,
            down: 0.0,
            ..Self::new(t_draft, t_verify)
        }
    }

    /// Records one round: K drafted, drafting time (s), uplink/downlink bytes of the round,
    /// waiting time from send to verdict (s), the cloud's reported compute time (s), and
    /// whether the drafted tokens carried compact distributions (a rejection round).
    #[allow(clippy::too_many_arguments)]
    pub fn observe(
        &mut self,
        k: usize,
        draft_s: f64,
        up_bytes: f64,
        down_bytes: f64,
        wait_s: f64,
        compute_s: f64,
        dists: bool,
    ) {
        let e = self.ewma;
        if k > 0 {
            self.t_draft = (1.0 - e) * self.t_draft + e * draft_s / k as f64;
            let per_token = ((up_bytes - self.up_base) / k as f64).max(0.0);
            let i = usize::from(dists);
            self.up_per_token[i] = if self.up_measured[i] {
                (1.0 - e) * self.up_per_token[i] + e * per_token
            } else {
                per_token
            };
            self.up_measured[i] = true;
        }
        self.down = (1.0 - e) * self.down + e * down_bytes;
        self.verify.observe(k as f64, compute_s);
        self.network
            .observe(up_bytes, (wait_s - compute_s).max(0.0));
    }

    /// Measured drafting time per token (s).
    pub fn t_draft(&self) -> f64 {
        self.t_draft
    }

    /// The policy's view of the next round, given the acceptance estimate α and whether the
    /// round would send compact distributions (rejection) or ids only.
    pub fn state(&self, alpha: f64, dists: bool) -> RoundState {
        let (va, vb) = self.verify.line();
        let (na, nb) = self.network.line();
        // Network time = RTT + bytes·8/R_u (downlink time is folded into the intercept).
        let uplink_bps = if nb > 0.0 { 8.0 / nb } else { 1e12 };
        RoundState {
            alpha,
            t_draft_s: self.t_draft,
            t_verify_base_s: va,
            t_verify_per_token_s: vb,
            uplink_bps,
            downlink_bps: 1e12,
            rtt_s: na,
            uplink_base_bytes: self.up_base,
            uplink_bytes_per_token: self.up_per_token[usize::from(dists)],
            downlink_bytes: self.down,
            draft_power_w: 0.0,
            radio_power_w: 0.0,
            energy_price: 0.0,
            row_price_s: 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_fit_recovers_exact_line() {
        let mut f = DecayingLineFit::new(0.0, SlopePrior::Absolute(0.0), 1e-9, 1.0);
        for x in 0..10 {
            f.observe(x as f64, 0.05 + 0.002 * x as f64);
        }
        let (a, b) = f.line();
        assert!(
            (a - 0.05).abs() < 1e-6 && (b - 0.002).abs() < 1e-7,
            "{a} {b}"
        );
    }

    #[test]
    fn clustered_x_keeps_the_prior_slope() {
        // Every round at K = 1 with noisy times: the slope stays at the prior (15% of the
        // mean), the intercept follows the data.
        let mut f = DecayingLineFit::new(1.0, SlopePrior::RelativeToMean(0.15), 20.0, 0.9);
        for i in 0..50 {
            f.observe(1.0, 0.060 + if i % 2 == 0 { 0.004 } else { -0.004 });
        }
        let (a, b) = f.line();
        assert!((b - 0.15 * 0.060).abs() < 1e-3, "slope {b}");
        assert!((a + b - 0.060).abs() < 1e-3, "a + b = {}", a + b);
    }

    #[test]
    fn uplink_bytes_per_token_are_kept_per_round_kind() {
        let mut e = RoundEstimator::new(0.01, 0.02);
        // The first round of each kind replaces its prior; later ones are averaged in.
        e.observe(4, 0.04, 14.0 + 4.0 * 3.0, 19.0, 0.08, 0.02, false);
        e.observe(2, 0.02, 14.0 + 2.0 * 40.0, 19.0, 0.08, 0.02, true);
        assert_eq!(e.state(0.5, false).uplink_bytes_per_token, 3.0);
        assert_eq!(e.state(0.5, true).uplink_bytes_per_token, 40.0);
        e.observe(1, 0.01, 14.0 + 50.0, 19.0, 0.08, 0.02, true);
        assert!(
            (e.state(0.5, true).uplink_bytes_per_token - (0.8 * 40.0 + 0.2 * 50.0)).abs() < 1e-12
        );
        assert_eq!(e.state(0.5, false).uplink_bytes_per_token, 3.0);
    }

    #[test]
    fn an_in_process_estimate_has_no_link_and_keeps_none() {
        let mut e = RoundEstimator::in_process(0.002, 0.01);
        let fresh = e.state(0.5, false);
        assert_eq!((fresh.rtt_s, fresh.uplink_bps), (0.0, 1e12));
        assert_eq!(
            (
                fresh.uplink_base_bytes,
                fresh.uplink_bytes_per_token,
                fresh.downlink_bytes
            ),
            (0.0, 0.0, 0.0)
        );
        assert_eq!((fresh.t_draft_s, fresh.t_verify_base_s), (0.002, 0.01));
        // Rounds with no bytes, the wait all compute, leave the link out.
        for k in [0, 3, 1, 4] {
            e.observe(k, 0.002 * k as f64, 0.0, 0.0, 0.012, 0.012, false);
        }
        let s = e.state(0.5, true);
        assert_eq!((s.rtt_s, s.uplink_bps), (0.0, 1e12));
        assert_eq!((s.uplink_bytes_per_token, s.downlink_bytes), (0.0, 0.0));
    }

    #[test]
    fn network_fit_learns_rtt_and_rate() {
        let mut e = RoundEstimator::new(0.01, 0.02);
        // 100 ms RTT, 1 Mbit/s uplink: 8 µs per byte. Rounds of 20–90 bytes outweigh the
        // 10 Mbit/s prior; the ridge leaves a few percent of bias.
        for i in 0..200 {
            let bytes = 20.0 + (i % 8) as f64 * 10.0;
            e.observe(
                1 + i % 8,
                0.01,
                bytes,
                19.0,
                0.1 + bytes * 8e-6 + 0.02,
                0.02,
                false,
            );
        }
        let s = e.state(0.5, false);
        assert!((s.rtt_s - 0.1).abs() < 2e-3, "rtt {}", s.rtt_s);
        assert!(
            (s.uplink_bps - 1e6).abs() / 1e6 < 0.05,
            "rate {}",
            s.uplink_bps
        );
    }
}
