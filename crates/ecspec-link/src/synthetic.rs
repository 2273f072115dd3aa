//! Synthetic channel models, deterministic for a seed, turned into a piecewise-constant rate
//! process ([`ThroughputTrace::from_slot_rates`]) that the emulator and simulations share:
//!
//! - **Gilbert–Elliott** (Gilbert 1960, Elliott 1963): a two-state Markov chain over slots, a
//!   good state with rate `good` and a bad one with rate `bad` (0 = outage); per slot the chain
//!   leaves good with probability `p_gb` and leaves bad with `p_bg` (stationary share of bad
//!   slots `p_gb / (p_gb + p_bg)`, mean bad run `1 / p_bg` slots). Starts in the good state.
//! - **SNR fading → Shannon rate**: per slot an SNR, mapped to a rate `η · B · log2(1 + SNR)`
//!   with bandwidth B and efficiency η (the Shannon bound, scaled). The SNR follows either a
//!   **Gauss–Markov** process in dB, `s_{n+1} = ρ s_n + (1 − ρ) μ + σ √(1 − ρ²) ε_n`
//!   (stationary N(μ, σ²), lag-1 correlation ρ), or **Rayleigh** block fading, SNR =
//!   SNR̄ · |h|² with `h_{n+1} = ρ h_n + √(1 − ρ²) w_n`, h and w unit-power circular complex
//!   Gaussian (|h|² is exponential with mean 1; ρ as in Jakes' model, e.g. J₀(2π f_D T_slot)).
//!   Each slot's SNR is kept as the trace's signal metric.
//!
//! A model generates `duration / slot` slots (default 10 minutes), which then loop or stop like
//! any trace ([`TraceEnd`]). Specs are written `name:key=value,…` on the command line
//! ([`Synthetic::parse`]).

use std::fmt;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::csv_trace::{SignalMetrics, ThroughputTrace};
use crate::model::TraceEnd;

/// A synthetic model's settings.
#[derive(Debug, Clone, PartialEq)]
pub enum Synthetic {
    /// Two-state good/bad Markov chain.
    GilbertElliott {
        /// Rate in the good state, bit/s.
        good_bps: f64,
        /// Rate in the bad state, bit/s (0: outage).
        bad_bps: f64,
        /// P(good → bad) per slot.
        p_gb: f64,
        /// P(bad → good) per slot.
        p_bg: f64,
        /// Common settings.
        common: Common,
    },
    /// SNR process mapped to a Shannon rate.
    SnrFading {
        /// How the SNR evolves.
        process: SnrProcess,
        /// Bandwidth B, Hz.
        bandwidth_hz: f64,
        /// Fraction η of the Shannon capacity achieved (0, 1].
        efficiency: f64,
        /// Common settings.
        common: Common,
    },
}

/// The SNR processes of [`Synthetic::SnrFading`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SnrProcess {
    /// AR(1) in dB: stationary mean `mean_db`, standard deviation `std_db`, correlation `rho`.
    GaussMarkov {
        /// μ, dB.
        mean_db: f64,
        /// σ, dB.
        std_db: f64,
        /// ρ in [0, 1).
        rho: f64,
    },
    /// Rayleigh block fading around a mean SNR, AR(1) channel gain with correlation `rho`.
    Rayleigh {
        /// Mean SNR, dB.
        mean_db: f64,
        /// ρ in [0, 1).
        rho: f64,
    },
}

/// Settings every synthetic model has.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Common {
    /// Slot length (the rate is constant within a slot).
    pub slot: Duration,
    /// Length of the generated process before it loops or stops.
    pub duration: Duration,
    /// Seed of the random stream.
    pub seed: u64,
}

impl Default for Common {
    fn default() -> Self {
        Common {
            slot: Duration::from_millis(100),
            duration: Duration::from_secs(600),
            seed: 1,
        }
    }
}

/// An invalid synthetic model spec.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("link model `{spec}`: {reason}")]
pub struct SyntheticError {
    /// The spec as given.
    pub spec: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Most slots one model generates (10⁷: e.g. 11.5 days of 100 ms slots).
const MAX_SLOTS: u128 = 10_000_000;

impl Synthetic {
    /// Parses `gilbert-elliott:good_mbps=20,bad_mbps=0,p_gb=0.05,p_bg=0.3`,
    /// `gauss-markov:mean_db=15,std_db=6,rho=0.9,bandwidth_mhz=10` or
    /// `rayleigh:mean_db=15,rho=0.9,bandwidth_mhz=10`, each also taking `efficiency` (SNR
    /// models, default 1), `slot_ms` (default 100), `duration_s` (default 600) and `seed`
    /// (default 1). Required keys have no default.
    ///
    /// # Errors
    /// [`SyntheticError`] naming an unknown model or key, a missing key, a value that is not
    /// a number or out of its range.
    pub fn parse(spec: &str) -> Result<Self, SyntheticError> {
        let err = |reason: String| SyntheticError {
            spec: spec.to_string(),
            reason,
        };
        let (name, rest) = spec.split_once(':').unwrap_or((spec, ""));
        let keys = Keys::parse(rest).map_err(err)?;
        let allowed: &[&str] = match name {
            "gilbert-elliott" | "ge" => &["good_mbps", "bad_mbps", "p_gb", "p_bg"],
            "gauss-markov" => &["mean_db", "std_db", "rho", "bandwidth_mhz", "efficiency"],
            "rayleigh" => &["mean_db", "rho", "bandwidth_mhz", "efficiency"],
            other => {
                return Err(err(format!(
                    "unknown model `{other}` (gilbert-elliott, gauss-markov, rayleigh)"
                )))
            }
        };
        keys.check_known(allowed).map_err(err)?;
        let common = keys.common().map_err(err)?;
        match name {
            "gauss-markov" => keys.gauss_markov(common),
            "rayleigh" => keys.rayleigh(common),
            _ => keys.gilbert_elliott(common),
        }
        .map_err(err)
    }

    /// The common settings.
    pub fn common(&self) -> &Common {
        match self {
            Synthetic::GilbertElliott { common, .. } | Synthetic::SnrFading { common, .. } => {
                common
            }
        }
    }

    /// The per-slot rates (bit/s, rounded down) and signal metrics (the SNR of SNR models).
    pub fn generate(&self) -> (Vec<u64>, Vec<SignalMetrics>) {
        let c = self.common();
        let n = (c.duration.as_nanos() / c.slot.as_nanos()).max(1) as usize;
        let mut rng = ChaCha8Rng::seed_from_u64(c.seed);
        let mut rates = Vec::with_capacity(n);
        let mut metrics = Vec::new();
        match *self {
            Synthetic::GilbertElliott {
                good_bps,
                bad_bps,
                p_gb,
                p_bg,
                ..
            } => {
                let mut good = true;
                for _ in 0..n {
                    rates.push(if good { good_bps } else { bad_bps } as u64);
                    let u: f64 = rng.random();
                    good = if good { u >= p_gb } else { u < p_bg };
                }
            }
            Synthetic::SnrFading {
                process,
                bandwidth_hz,
                efficiency,
                ..
            } => {
                let normal = |rng: &mut ChaCha8Rng| -> f64 { StandardNormal.sample(rng) };
                let snr_db: Vec<f64> = match process {
                    SnrProcess::GaussMarkov {
                        mean_db,
                        std_db,
                        rho,
                    } => {
                        // Start in the stationary distribution.
                        let mut s = mean_db + std_db * normal(&mut rng);
                        let innov = std_db * (1.0 - rho * rho).sqrt();
                        (0..n)
                            .map(|_| {
                                let out = s;
                                s = rho * s + (1.0 - rho) * mean_db + innov * normal(&mut rng);
                                out
                            })
                            .collect()
                    }
                    SnrProcess::Rayleigh { mean_db, rho } => {
                        let h2 = std::f64::consts::FRAC_1_SQRT_2;
                        let (mut re, mut im) = (h2 * normal(&mut rng), h2 * normal(&mut rng));
                        let innov = (1.0 - rho * rho).sqrt() * h2;
                        (0..n)
                            .map(|_| {
                                let gain = re * re + im * im;
                                re = rho * re + innov * normal(&mut rng);
                                im = rho * im + innov * normal(&mut rng);
                                mean_db + 10.0 * gain.max(1e-12).log10()
                            })
                            .collect()
                    }
                };
                for s in snr_db {
                    let lin = 10f64.powf(s / 10.0);
                    rates.push((efficiency * bandwidth_hz * (1.0 + lin).log2()) as u64);
                    metrics.push(SignalMetrics {
                        snr_db: Some(s),
                        ..Default::default()
                    });
                }
            }
        }
        (rates, metrics)
    }

    /// The model as a link direction with `one_way_delay`, looping or stopping at its end.
    ///
    /// # Errors
    /// [`SyntheticError`] when every slot has zero capacity (e.g. a Gilbert–Elliott chain that
    /// never left an all-outage state cannot happen — it starts good — but a seed may draw
    /// nothing but rates under 1 bit/s).
    pub fn link(
        &self,
        one_way_delay: Duration,
        end: TraceEnd,
    ) -> Result<ThroughputTrace, SyntheticError> {
        let (rates, metrics) = self.generate();
        ThroughputTrace::from_slot_rates(
            self.to_string(),
            rates,
            self.common().slot,
            metrics,
            one_way_delay,
            end,
        )
        .map_err(|e| SyntheticError {
            spec: self.to_string(),
            reason: e.to_string(),
        })
    }
}

impl fmt::Display for Synthetic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = self.common();
        let tail = format!(
            "slot_ms={},duration_s={},seed={}",
            c.slot.as_secs_f64() * 1e3,
            c.duration.as_secs_f64(),
            c.seed
        );
        match self {
            Synthetic::GilbertElliott {
                good_bps,
                bad_bps,
                p_gb,
                p_bg,
                ..
            } => write!(
                f,
                "gilbert-elliott:good_mbps={},bad_mbps={},p_gb={p_gb},p_bg={p_bg},{tail}",
                good_bps / 1e6,
                bad_bps / 1e6
            ),
            Synthetic::SnrFading {
                process,
                bandwidth_hz,
                efficiency,
                ..
            } => {
                let b = bandwidth_hz / 1e6;
                match process {
                    SnrProcess::GaussMarkov {
                        mean_db,
                        std_db,
                        rho,
                    } => write!(
                        f,
                        "gauss-markov:mean_db={mean_db},std_db={std_db},rho={rho},bandwidth_mhz={b},efficiency={efficiency},{tail}"
                    ),
                    SnrProcess::Rayleigh { mean_db, rho } => write!(
                        f,
                        "rayleigh:mean_db={mean_db},rho={rho},bandwidth_mhz={b},efficiency={efficiency},{tail}"
                    ),
                }
            }
        }
    }
}

/// Keys every model takes besides its own.
const COMMON_KEYS: [&str; 3] = ["slot_ms", "duration_s", "seed"];

/// The `key=value` pairs of a spec, in the order given; [`Synthetic::parse`] reads each
/// model's settings from them. Errors are the reasons [`SyntheticError`] carries.
struct Keys(Vec<(String, f64)>);

impl Keys {
    /// Splits `key=value,…` (blank parts skipped); every value a finite number, no key twice.
    fn parse(rest: &str) -> Result<Self, String> {
        let mut kv: Vec<(String, f64)> = Vec::new();
        for part in rest.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("`{part}` is not key=value"))?;
            let x: f64 = v
                .trim()
                .parse()
                .map_err(|_| format!("{k}: `{v}` is not a number"))?;
            if !x.is_finite() {
                return Err(format!("{k}: `{v}` is not finite"));
            }
            let k = k.trim().to_string();
            if kv.iter().any(|(n, _)| *n == k) {
                return Err(format!("duplicate key `{k}`"));
            }
            kv.push((k, x));
        }
        Ok(Self(kv))
    }

    /// Refuses the first key that is neither in `allowed` (the model's own) nor common.
    fn check_known(&self, allowed: &[&str]) -> Result<(), String> {
        let known = |k: &str| allowed.contains(&k) || COMMON_KEYS.contains(&k);
        match self.0.iter().find(|(k, _)| !known(k)) {
            Some((k, _)) => {
                let mut all: Vec<&str> = allowed.to_vec();
                all.extend(COMMON_KEYS);
                Err(format!("unknown key `{k}` (keys: {})", all.join(", ")))
            }
            None => Ok(()),
        }
    }

    fn get(&self, k: &str) -> Option<f64> {
        self.0.iter().rev().find(|(n, _)| n == k).map(|(_, v)| *v)
    }

    fn need(&self, k: &str) -> Result<f64, String> {
        self.get(k).ok_or_else(|| format!("missing key `{k}`"))
    }

    /// `k`'s required value when `ok(value)`, else an error naming `range`.
    fn need_in(&self, k: &str, ok: impl Fn(f64) -> bool, range: &str) -> Result<f64, String> {
        in_range(k, self.need(k)?, ok, range)
    }

    /// `slot_ms`, `duration_s` and `seed`, with their defaults and checks.
    fn common(&self) -> Result<Common, String> {
        let slot_ms = self.get("slot_ms").unwrap_or(100.0);
        let duration_s = self.get("duration_s").unwrap_or(600.0);
        in_range(
            "slot_ms",
            slot_ms,
            |v| (0.001..=60_000.0).contains(&v),
            "[0.001, 60000]",
        )?;
        in_range(
            "duration_s",
            duration_s,
            |v| v > 0.0 && v <= 1e7,
            "(0, 1e7]",
        )?;
        let seed = self.get("seed").unwrap_or(1.0);
        in_range(
            "seed",
            seed,
            |v| v >= 0.0 && v.fract() == 0.0 && v < 2f64.powi(53),
            "whole numbers ≥ 0",
        )?;
        let common = Common {
            slot: Duration::from_secs_f64(slot_ms / 1000.0),
            duration: Duration::from_secs_f64(duration_s),
            seed: seed as u64,
        };
        if common.duration.as_nanos() / common.slot.as_nanos() > MAX_SLOTS {
            return Err(format!(
                "duration_s / slot_ms gives more than {MAX_SLOTS} slots"
            ));
        }
        if common.duration < common.slot {
            return Err("duration_s is shorter than one slot".into());
        }
        Ok(common)
    }

    fn rho(&self) -> Result<f64, String> {
        self.need_in("rho", |v| (0.0..1.0).contains(&v), "[0, 1)")
    }

    fn prob(&self, k: &str) -> Result<f64, String> {
        self.need_in(k, |v| (0.0..=1.0).contains(&v), "[0, 1]")
    }

    fn mean_db(&self) -> Result<f64, String> {
        self.need_in("mean_db", |v| (-50.0..=80.0).contains(&v), "[-50, 80] dB")
    }

    /// `gilbert-elliott`: `good_mbps`, `bad_mbps` ≤ good, `p_gb`, `p_bg`.
    fn gilbert_elliott(&self, common: Common) -> Result<Synthetic, String> {
        let good = self.need_in("good_mbps", |v| v > 0.0 && v <= 1e6, "(0, 1e6]")?;
        let bad = self.need_in("bad_mbps", |v| (0.0..=good).contains(&v), "[0, good_mbps]")?;
        let (p_gb, p_bg) = (self.prob("p_gb")?, self.prob("p_bg")?);
        if p_bg == 0.0 && p_gb > 0.0 {
            return Err("p_bg = 0: the first bad slot would last for ever".into());
        }
        Ok(Synthetic::GilbertElliott {
            good_bps: good * 1e6,
            bad_bps: bad * 1e6,
            p_gb,
            p_bg,
            common,
        })
    }

    /// `gauss-markov`: `std_db`, `mean_db`, `rho`, then the Shannon mapping's keys.
    fn gauss_markov(&self, common: Common) -> Result<Synthetic, String> {
        let std_db = self.need_in("std_db", |v| (0.0..=40.0).contains(&v), "[0, 40] dB")?;
        let process = SnrProcess::GaussMarkov {
            mean_db: self.mean_db()?,
            std_db,
            rho: self.rho()?,
        };
        self.shannon(process, common)
    }

    /// `rayleigh`: `mean_db`, `rho`, then the Shannon mapping's keys.
    fn rayleigh(&self, common: Common) -> Result<Synthetic, String> {
        let process = SnrProcess::Rayleigh {
            mean_db: self.mean_db()?,
            rho: self.rho()?,
        };
        self.shannon(process, common)
    }

    /// An SNR model with `bandwidth_mhz` and `efficiency` (default 1).
    fn shannon(&self, process: SnrProcess, common: Common) -> Result<Synthetic, String> {
        let b = self.need_in("bandwidth_mhz", |v| v > 0.0 && v <= 1e5, "(0, 100000]")?;
        let eta = self.get("efficiency").unwrap_or(1.0);
        in_range("efficiency", eta, |v| v > 0.0 && v <= 1.0, "(0, 1]")?;
        Ok(Synthetic::SnrFading {
            process,
            bandwidth_hz: b * 1e6,
            efficiency: eta,
            common,
        })
    }
}

/// `v` when `ok(v)`, else "`k` = `v` is outside `range`".
fn in_range(k: &str, v: f64, ok: impl Fn(f64) -> bool, range: &str) -> Result<f64, String> {
    if ok(v) {
        Ok(v)
    } else {
        Err(format!("{k} = {v} is outside {range}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::LinkModel;

    fn mean(v: &[f64]) -> f64 {
        v.iter().sum::<f64>() / v.len() as f64
    }

    #[test]
    fn gilbert_elliott_matches_its_stationary_bad_share_and_run_length() {
        // π_bad = 0.05 / (0.05 + 0.2) = 0.2; mean bad run 1 / 0.2 = 5 slots.
        let m = Synthetic::parse(
            "gilbert-elliott:good_mbps=20,bad_mbps=0,p_gb=0.05,p_bg=0.2,slot_ms=10,duration_s=2000,seed=3",
        )
        .unwrap();
        let (rates, metrics) = m.generate();
        assert_eq!(rates.len(), 200_000);
        assert!(metrics.is_empty());
        assert_eq!(rates[0], 20_000_000, "starts good");
        assert!(rates.iter().all(|&r| r == 0 || r == 20_000_000));
        let bad = rates.iter().filter(|&&r| r == 0).count() as f64 / rates.len() as f64;
        // Runs are correlated: the effective sample is ~200k / 25; 0.2 ± 0.015 is > 4 sd.
        assert!((bad - 0.2).abs() < 0.015, "bad share {bad}");
        let runs = rates.windows(2).filter(|w| w[0] != 0 && w[1] == 0).count() as f64;
        let mean_run = bad * rates.len() as f64 / runs;
        assert!((mean_run - 5.0).abs() < 0.3, "mean bad run {mean_run}");
        // Deterministic per seed, different across seeds.
        assert_eq!(m.generate().0, rates);
        let other = Synthetic::parse(
            "ge:good_mbps=20,bad_mbps=0,p_gb=0.05,p_bg=0.2,slot_ms=10,duration_s=2000,seed=4",
        )
        .unwrap();
        assert_ne!(other.generate().0, rates);
    }

    #[test]
    fn gauss_markov_snr_has_its_mean_spread_and_correlation() {
        let m = Synthetic::parse(
            "gauss-markov:mean_db=15,std_db=6,rho=0.9,bandwidth_mhz=10,slot_ms=10,duration_s=2000",
        )
        .unwrap();
        let (rates, metrics) = m.generate();
        let s: Vec<f64> = metrics.iter().map(|x| x.snr_db.unwrap()).collect();
        let mu = mean(&s);
        let var = mean(&s.iter().map(|x| (x - mu).powi(2)).collect::<Vec<_>>());
        let lag1 = mean(
            &s.windows(2)
                .map(|w| (w[0] - mu) * (w[1] - mu))
                .collect::<Vec<_>>(),
        ) / var;
        // 200k AR(1) samples with ρ = 0.9: sd of the mean ≈ 6·√(19/200k) ≈ 0.06 dB.
        assert!((mu - 15.0).abs() < 0.3, "mean {mu}");
        assert!((var.sqrt() - 6.0).abs() < 0.2, "sd {}", var.sqrt());
        assert!((lag1 - 0.9).abs() < 0.01, "lag-1 correlation {lag1}");
        // Rate = B·log2(1 + SNR), per slot.
        for (r, x) in rates.iter().zip(&s).take(100) {
            let want = 10e6 * (1.0 + 10f64.powf(x / 10.0)).log2();
            assert!((*r as f64 - want).abs() <= 1.0, "{r} vs {want}");
        }
    }

    #[test]
    fn rayleigh_gain_is_exponential_with_unit_mean() {
        let m = Synthetic::parse(
            "rayleigh:mean_db=10,rho=0.5,bandwidth_mhz=5,efficiency=0.6,slot_ms=10,duration_s=2000,seed=9",
        )
        .unwrap();
        let (rates, metrics) = m.generate();
        let g: Vec<f64> = metrics
            .iter()
            .map(|x| 10f64.powf((x.snr_db.unwrap() - 10.0) / 10.0))
            .collect();
        // |h|² ~ Exp(1): mean 1, P(|h|² < 0.1) = 1 − e^(−0.1) = 0.0952.
        assert!((mean(&g) - 1.0).abs() < 0.02, "mean gain {}", mean(&g));
        let deep = g.iter().filter(|&&x| x < 0.1).count() as f64 / g.len() as f64;
        assert!((deep - 0.0952).abs() < 0.005, "deep fades {deep}");
        let first = 0.6 * 5e6 * (1.0 + 10f64.powf(metrics[0].snr_db.unwrap() / 10.0)).log2();
        assert!((rates[0] as f64 - first).abs() <= 1.0);
    }

    #[test]
    fn a_generated_process_is_a_link_with_slot_exact_delivery_times() {
        // 2 slots of 100 ms: 8 Mbit/s then outage (p_gb = 1, p_bg = 1 alternates), looping.
        let m = Synthetic::parse(
            "gilbert-elliott:good_mbps=8,bad_mbps=0,p_gb=1,p_bg=1,slot_ms=100,duration_s=0.2",
        )
        .unwrap();
        let mut link = m.link(Duration::from_millis(5), TraceEnd::Loop).unwrap();
        assert_eq!(link.rates_bps(), &[8_000_000, 0]);
        assert_eq!(link.slot(), Duration::from_millis(100));
        // 150 kB = 1.2 Mbit: 0.8 Mbit in slot 0, outage, 0.4 Mbit in 50 ms of slot 2.
        assert_eq!(
            link.transmit(Duration::ZERO, 150_000).unwrap(),
            Duration::from_millis(255)
        );
        assert_eq!(link.mean_rate_bps(), 4e6);
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        let e = |s: &str| Synthetic::parse(s).unwrap_err().to_string();
        assert_eq!(
            e("markov:x=1"),
            "link model `markov:x=1`: unknown model `markov` (gilbert-elliott, gauss-markov, rayleigh)"
        );
        assert!(e("rayleigh:mean_db=10,rho=0.5").ends_with("missing key `bandwidth_mhz`"));
        assert!(
            e("rayleigh:mean_db=10,rho=1,bandwidth_mhz=5").ends_with("rho = 1 is outside [0, 1)")
        );
        assert!(e("rayleigh:mean_db=ten").ends_with("mean_db: `ten` is not a number"));
        assert!(e("ge:good_mbps=1,bad_mbps=0,p_gb=0.1,p_bg=0,colour=3")
            .contains("unknown key `colour`"));
        assert!(e("ge:good_mbps=1,bad_mbps=0,p_gb=0.1,p_bg=0")
            .ends_with("the first bad slot would last for ever"));
        assert!(e("ge:good_mbps=1,bad_mbps=2,p_gb=0.1,p_bg=0.5")
            .contains("bad_mbps = 2 is outside [0, good_mbps]"));
        assert!(
            e("gauss-markov:mean_db=1,std_db=1,rho=0,bandwidth_mhz=1,slot_ms=0.0001")
                .contains("slot_ms = 0.0001 is outside")
        );
    }

    #[test]
    fn each_check_gives_its_exact_reason_in_order() {
        let reason = |s: &str| Synthetic::parse(s).unwrap_err().reason;
        let gm = "gauss-markov:mean_db=1,std_db=1,rho=0,bandwidth_mhz=1";
        let cases = [
            ("ge:good_mbps", "`good_mbps` is not key=value"),
            ("ge:p_gb=inf", "p_gb: `inf` is not finite"),
            ("ge:p_gb=1,p_gb=1", "duplicate key `p_gb`"),
            // Key syntax is checked before the model's name.
            ("x:a", "`a` is not key=value"),
            (
                "rayleigh:std_db=1",
                "unknown key `std_db` (keys: mean_db, rho, bandwidth_mhz, efficiency, slot_ms, \
                 duration_s, seed)",
            ),
            ("ge:duration_s=0", "duration_s = 0 is outside (0, 1e7]"),
            ("ge:seed=1.5", "seed = 1.5 is outside whole numbers ≥ 0"),
            (
                "ge:slot_ms=1,duration_s=100000",
                "duration_s / slot_ms gives more than 10000000 slots",
            ),
            (
                "ge:slot_ms=2000,duration_s=1",
                "duration_s is shorter than one slot",
            ),
            ("ge:bad_mbps=0", "missing key `good_mbps`"),
            ("ge:good_mbps=0", "good_mbps = 0 is outside (0, 1e6]"),
            (
                "ge:good_mbps=1,bad_mbps=0,p_gb=2",
                "p_gb = 2 is outside [0, 1]",
            ),
            // std_db before mean_db, rho before bandwidth.
            (
                "gauss-markov:std_db=41,mean_db=99",
                "std_db = 41 is outside [0, 40] dB",
            ),
            (
                "gauss-markov:std_db=1,mean_db=99",
                "mean_db = 99 is outside [-50, 80] dB",
            ),
            ("rayleigh:mean_db=1,bandwidth_mhz=0", "missing key `rho`"),
            (
                "rayleigh:mean_db=1,rho=0,bandwidth_mhz=0",
                "bandwidth_mhz = 0 is outside (0, 100000]",
            ),
        ];
        for (spec, want) in cases {
            assert_eq!(reason(spec), want, "{spec}");
        }
        assert_eq!(
            reason(&format!("{gm},efficiency=0")),
            "efficiency = 0 is outside (0, 1]"
        );
        assert!(Synthetic::parse(gm).is_ok());
    }

    #[test]
    fn display_round_trips_through_parse() {
        for s in [
            "gilbert-elliott:good_mbps=20,bad_mbps=0.5,p_gb=0.05,p_bg=0.3,slot_ms=100,duration_s=600,seed=1",
            "gauss-markov:mean_db=15,std_db=6,rho=0.9,bandwidth_mhz=10,efficiency=0.75,slot_ms=50,duration_s=60,seed=2",
            "rayleigh:mean_db=12,rho=0.95,bandwidth_mhz=20,efficiency=1,slot_ms=10,duration_s=30,seed=0",
        ] {
            let m = Synthetic::parse(s).unwrap();
            assert_eq!(m.to_string(), s);
            assert_eq!(Synthetic::parse(&m.to_string()).unwrap(), m);
        }
    }
}
