//! What the edge learns about its round from its own measurements: drafting time per token,
//! the cloud's verification time as a function of K, and the network's fixed and per-byte
//! time (RTT and uplink rate). Feeds the draft-length policy's [`RoundState`].

use ecspec_spec::policy::RoundState;

/// Least-squares line y = a + b·x with exponential forgetting (weight λ per new sample),
/// starting from a prior worth `prior_weight` samples at two points. Used for t_v(K) and for
/// network time vs uplink bytes.
#[derive(Debug, Clone)]
pub struct DecayingLineFit {
    decay: f64,
    sw: f64,
    sx: f64,
    sy: f64,
    sxx: f64,
    sxy: f64,
}

impl DecayingLineFit {
    /// A fit with prior line `a + b·x` asserted at x = `x0` and x = `x1`, each with weight
    /// `prior_weight / 2`; `decay` ∈ (0, 1] per sample.
    pub fn new(a: f64, b: f64, x0: f64, x1: f64, prior_weight: f64, decay: f64) -> Self {
        let mut f = Self { decay, sw: 0.0, sx: 0.0, sy: 0.0, sxx: 0.0, sxy: 0.0 };
        for x in [x0, x1] {
            f.add(x, a + b * x, prior_weight / 2.0);
        }
        f
    }

    fn add(&mut self, x: f64, y: f64, w: f64) {
        self.sw += w;
        self.sx += w * x;
        self.sy += w * y;
        self.sxx += w * x * x;
        self.sxy += w * x * y;
    }

    /// Adds one observation, discounting the past by `decay`.
    pub fn observe(&mut self, x: f64, y: f64) {
        let d = self.decay;
        self.sw *= d;
        self.sx *= d;
        self.sy *= d;
        self.sxx *= d;
        self.sxy *= d;
        self.add(x, y, 1.0);
    }

    /// Current (intercept a, slope b), slope clamped ≥ 0 and intercept ≥ 0 (times).
    pub fn line(&self) -> (f64, f64) {
        let var = self.sw * self.sxx - self.sx * self.sx;
        let b = if var.abs() < 1e-12 { 0.0 } else { (self.sw * self.sxy - self.sx * self.sy) / var };
        let b = b.max(0.0);
        let a = ((self.sy - b * self.sx) / self.sw).max(0.0);
        (a, b)
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
    /// Uplink bytes per drafted token (EWMA) and fixed bytes per round.
    up_per_token: f64,
    up_base: f64,
    /// Downlink bytes per round (EWMA).
    down: f64,
    ewma: f64,
}

impl RoundEstimator {
    /// Priors: drafting `t_draft` s/token, a 60 ms RTT and 10 Mbit/s uplink, a verification
    /// costing `t_verify` s plus 10% per drafted token, 2-byte ids in a 14-byte frame.
    pub fn new(t_draft: f64, t_verify: f64) -> Self {
        Self {
            t_draft,
            verify: DecayingLineFit::new(t_verify, 0.1 * t_verify, 0.0, 8.0, 2.0, 0.9),
            network: DecayingLineFit::new(0.060, 8.0 / 10e6, 20.0, 200.0, 2.0, 0.9),
            up_per_token: 2.0,
            up_base: 14.0,
            down: 19.0,
            ewma: 0.2,
        }
    }

    /// Records one round: K drafted, drafting time (s), uplink/downlink bytes of the round,
    /// waiting time from send to verdict (s) and the cloud's reported compute time (s).
    pub fn observe(&mut self, k: usize, draft_s: f64, up_bytes: f64, down_bytes: f64, wait_s: f64, compute_s: f64) {
        let e = self.ewma;
        if k > 0 {
            self.t_draft = (1.0 - e) * self.t_draft + e * draft_s / k as f64;
            let per_token = ((up_bytes - self.up_base) / k as f64).max(0.0);
            self.up_per_token = (1.0 - e) * self.up_per_token + e * per_token;
        }
        self.down = (1.0 - e) * self.down + e * down_bytes;
        self.verify.observe(k as f64, compute_s);
        self.network.observe(up_bytes, (wait_s - compute_s).max(0.0));
    }

    /// Measured drafting time per token (s).
    pub fn t_draft(&self) -> f64 {
        self.t_draft
    }

    /// The policy's view of the next round, given the current acceptance estimate α.
    pub fn state(&self, alpha: f64) -> RoundState {
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
            uplink_bytes_per_token: self.up_per_token,
            downlink_bytes: self.down,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_fit_recovers_exact_line() {
        let mut f = DecayingLineFit::new(0.0, 0.0, 0.0, 1.0, 1e-9, 1.0);
        for x in 0..10 {
            f.observe(x as f64, 0.05 + 0.002 * x as f64);
        }
        let (a, b) = f.line();
        assert!((a - 0.05).abs() < 1e-6 && (b - 0.002).abs() < 1e-7, "{a} {b}");
    }

    #[test]
    fn network_fit_learns_rtt_and_rate() {
        let mut e = RoundEstimator::new(0.01, 0.02);
        // 100 ms RTT, 1 Mbit/s uplink: 8 µs per byte.
        for i in 0..200 {
            let bytes = 20.0 + (i % 8) as f64 * 10.0;
            e.observe(1 + i % 8, 0.01, bytes, 19.0, 0.1 + bytes * 8e-6 + 0.02, 0.02);
        }
        let s = e.state(0.5);
        assert!((s.rtt_s - 0.1).abs() < 1e-3, "rtt {}", s.rtt_s);
        assert!((s.uplink_bps - 1e6).abs() / 1e6 < 0.01, "rate {}", s.uplink_bps);
    }
}
