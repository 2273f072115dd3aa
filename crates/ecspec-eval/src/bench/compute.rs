//! Compute times for the virtual clock: measured on this machine (`measured`) or read from a
//! device profile (`crates/ecspec-energy/profiles/*.toml`, or a file): `[draft."FAMILY/static"]`
//! and `[draft."FAMILY/conventional"]` for the edge, `[target."FAMILY"]` for the cloud.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use ecspec_cloud::TargetSession;
use ecspec_energy::DeviceProfile;
use ecspec_model::{LogitsFor, Session, Transformer};
use ecspec_spec::compute::{CloudCompute, EdgeCompute};
use ecspec_spec::sampling::SamplingParams;
use ecspec_spec::verify::VerifyRule;

/// Profile name meaning "measure this machine now".
pub const MEASURED: &str = "measured";

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// A deterministic 64-token prompt (ids well inside any vocabulary).
fn probe_prompt() -> Vec<u32> {
    (0..64u32).map(|i| 200 + (i * 37) % 5000).collect()
}

/// Measures a draft: prefill seconds per prompt token, and seconds per drafted token (single
/// steps), medians of `repeats`.
///
/// # Errors
/// Model errors.
pub fn measure_draft(t: &Arc<Transformer>, repeats: usize) -> Result<EdgeCompute> {
    let prompt = probe_prompt();
    let (mut prefill, mut step) = (Vec::new(), Vec::new());
    // One untimed round first: the weights are memory-mapped and page in on first use.
    for r in 0..=repeats.max(1) {
        let mut s = Session::new(t.clone());
        let t0 = Instant::now();
        s.forward(&prompt, LogitsFor::Last)?;
        if r == 0 {
            for i in 0..16u32 {
                s.forward(&[300 + i], LogitsFor::Last)?;
            }
            continue;
        }
        prefill.push(t0.elapsed().as_secs_f64() / prompt.len() as f64);
        let t0 = Instant::now();
        for i in 0..16u32 {
            s.forward(&[300 + i], LogitsFor::Last)?;
        }
        step.push(t0.elapsed().as_secs_f64() / 16.0);
    }
    Ok(EdgeCompute {
        draft_s_per_token: median(step),
        prefill_s_per_token: median(prefill),
    })
}

/// Measures a target through the cloud's own session code ([`TargetSession`], what the server
/// runs): prefill seconds per prompt token, and `t_v(K) = a + b·K` with `a` the mean of 16
/// cloud-only decode steps and `b` the least-squares slope of the extra time of rounds
/// verifying K = 1, 4, 8 drafted tokens (8 rounds each) over `a`; medians over `repeats`,
/// after one untimed round (the weights are memory-mapped and page in on first use).
///
/// # Errors
/// Model errors.
pub fn measure_target(t: &Arc<Transformer>, repeats: usize) -> Result<CloudCompute> {
    let prompt = probe_prompt();
    let ks = [1usize, 4, 8];
    let (mut prefill, mut steps) = (Vec::new(), Vec::new());
    let mut pass: Vec<Vec<f64>> = vec![Vec::new(); ks.len()];
    let err = |e: ecspec_cloud::target::RoundError| anyhow::anyhow!("measuring the target: {e}");
    for r in 0..=repeats.max(1) {
        let (mut ts, first) = TargetSession::start(
            t.clone(),
            &prompt,
            VerifyRule::Greedy,
            SamplingParams::greedy(0),
            Vec::new(),
            4096,
        )
        .map_err(err)?;
        let time = |ts: &mut TargetSession, draft: &[u32], n: usize| -> Result<f64> {
            let mut s = 0.0;
            for _ in 0..n {
                s += ts.round(draft, &[]).map_err(err)?.compute.as_secs_f64();
            }
            Ok(s / n as f64)
        };
        let a = time(&mut ts, &[], 16)?;
        let blocks: Vec<f64> = ks
            .iter()
            .map(|&k| {
                time(
                    &mut ts,
                    &(0..k as u32).map(|i| 400 + i).collect::<Vec<_>>(),
                    8,
                )
            })
            .collect::<Result<_>>()?;
        if r == 0 {
            continue;
        }
        prefill.push(first.compute.as_secs_f64() / prompt.len() as f64);
        steps.push(a);
        for (j, b) in blocks.into_iter().enumerate() {
            pass[j].push(b);
        }
    }
    let a = median(steps);
    let (num, den) = ks.iter().zip(pass).fold((0.0, 0.0), |(n, d), (&k, ys)| {
        (n + k as f64 * (median(ys) - a), d + (k * k) as f64)
    });
    Ok(CloudCompute {
        prefill_s_per_token: median(prefill),
        verify_base_s: a,
        verify_per_token_s: (num / den).max(0.0),
    })
}

/// The edge compute times of `draft` (`static` or `conventional`) of `family` in a profile.
///
/// # Errors
/// The profile has no such draft entry.
pub fn edge_from_profile(p: &DeviceProfile, family: &str, draft: &str) -> Result<EdgeCompute> {
    let key = format!("{family}/{draft}");
    let t = p.draft.get(&key).with_context(|| {
        format!(
            "device profile {} has no [draft.\"{key}\"] entry (it has: {})",
            p.name,
            p.draft.keys().cloned().collect::<Vec<_>>().join(", ")
        )
    })?;
    Ok(EdgeCompute {
        draft_s_per_token: t.seconds_per_token,
        prefill_s_per_token: t
            .prefill_seconds_per_token
            .unwrap_or(t.seconds_per_token / 8.0),
    })
}

/// The cloud compute times of `family`'s target in a profile.
///
/// # Errors
/// The profile has no such target entry.
pub fn cloud_from_profile(p: &DeviceProfile, family: &str) -> Result<CloudCompute> {
    let Some(t) = p.target.get(family) else {
        bail!(
            "device profile {} has no [target.\"{family}\"] entry (it has: {})",
            p.name,
            p.target.keys().cloned().collect::<Vec<_>>().join(", ")
        );
    };
    Ok(CloudCompute {
        prefill_s_per_token: t.prefill_seconds_per_token,
        verify_base_s: t.verify_base_s,
        verify_per_token_s: t.verify_per_token_s,
    })
}
