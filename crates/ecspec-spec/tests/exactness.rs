//! Statistical proof that the verification rules are exact (design.md §4; house style rule 8).
//!
//! For hand-made target rows p and draft distributions q over a 6-token vocabulary — q with
//! zeros where p > 0, p with zeros where q > 0 (masked logits and top-k/top-p truncation),
//! disjoint supports, q ≈ p — drafting is simulated exactly as the edge does it (each draft
//! token sampled from the compact, quantised q it sends), the round is verified, and the
//! committed tokens' empirical distribution is compared with the target's own distribution:
//! - every token with target probability 0 must never be committed;
//! - Pearson's chi-square over the tokens with positive probability must stay below the
//!   critical value at significance 1e-4;
//! - the total-variation distance must stay below a stated bound.
//!
//! Seeds are fixed, so the tests are deterministic; the significance level says how unlucky a
//! seed would have to be for an exact rule to fail. `naive_rules_fail_the_same_check` shows the
//! check has power: two plausible but wrong rules fail it by a wide margin.

use ecspec_spec::{
    rng_for, sample, target_distribution, verify_match, verify_rejection, CompactDist,
    SamplingParams, Verdict, CLOUD_STREAM, EDGE_STREAM,
};
use rand::Rng;
use rand_chacha::ChaCha20Rng;

const V: usize = 6;
const TRIALS: usize = 200_000;
const NEG: f32 = f32::NEG_INFINITY;

/// Upper 1e-4 quantiles of the chi-square distribution for df = 1..=40, i.e. x with
/// P(χ²_df > x) = 1e-4. Computed with mpmath 1.3 (40 digits) by bisecting
/// `gammainc(df/2, x/2, inf, regularized=True) = 1e-4`; they agree with
/// `scipy.stats.chi2.isf(1e-4, df)` (e.g. df = 1: 15.137, df = 5: 25.745).
const CHI2_CRIT_1E4: [f64; 40] = [
    15.13670523,
    18.42068074,
    21.10751347,
    23.51274244,
    25.74483196,
    27.85634124,
    29.87750391,
    31.82762800,
    33.71994844,
    35.56401394,
    37.36698644,
    39.13440388,
    40.87065501,
    42.57928895,
    44.26322494,
    45.92489905,
    47.56636956,
    49.18939447,
    50.79548967,
    52.38597327,
    53.96200012,
    55.52458878,
    57.07464314,
    58.61296975,
    60.14029191,
    61.65726128,
    63.16446742,
    64.66244583,
    66.15168463,
    67.63263026,
    69.10569229,
    70.57124758,
    72.02964379,
    73.48120252,
    74.92622189,
    76.36497897,
    77.79773171,
    79.22472082,
    80.64617129,
    82.06229384,
];

/// Verification mode under test.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Match,
    Rejection,
}

/// The target's distribution of a row, in f64, renormalised.
fn p_of(logits: &[f32], params: &SamplingParams) -> Vec<f64> {
    let p: Vec<f64> = target_distribution(logits, params)
        .unwrap()
        .iter()
        .map(|&x| f64::from(x))
        .collect();
    let s: f64 = p.iter().sum();
    p.into_iter().map(|x| x / s).collect()
}

struct Fit {
    chi2: f64,
    df: usize,
    crit: f64,
    tv: f64,
}

/// Pearson's chi-square and total variation of `counts` against `expected` (probabilities).
/// Panics if a cell with expected probability 0 was observed.
fn fit(counts: &[u64], expected: &[f64]) -> Fit {
    let n: u64 = counts.iter().sum();
    let n = n as f64;
    let mut chi2 = 0.0;
    let mut cells = 0;
    let mut tv = 0.0;
    for (i, (&c, &e)) in counts.iter().zip(expected).enumerate() {
        let c = c as f64;
        if e == 0.0 {
            assert_eq!(
                c, 0.0,
                "cell {i} has target probability 0 but was observed {c} times"
            );
            continue;
        }
        cells += 1;
        chi2 += (c - n * e).powi(2) / (n * e);
        tv += (c / n - e).abs();
    }
    let df = cells - 1;
    Fit {
        chi2,
        df,
        crit: CHI2_CRIT_1E4[df - 1],
        tv: tv / 2.0,
    }
}

fn assert_fits(name: &str, counts: &[u64], expected: &[f64], tv_bound: f64) {
    let f = fit(counts, expected);
    eprintln!(
        "{name}: chi2 = {:.2} (df {}, crit {:.2}), TV = {:.5}",
        f.chi2, f.df, f.crit, f.tv
    );
    assert!(
        f.chi2 < f.crit,
        "{name}: chi2 {} ≥ {} (df {}); counts {counts:?}, expected {expected:?}",
        f.chi2,
        f.crit,
        f.df
    );
    assert!(f.tv < tv_bound, "{name}: TV {} ≥ {tv_bound}", f.tv);
}

/// One round as the edge and cloud run it: draft K = rows.len() − 1 tokens from the compact
/// distributions (edge stream), verify (cloud stream).
fn round(
    mode: Mode,
    rows: &[Vec<f32>],
    dists: &[CompactDist],
    params: &SamplingParams,
    edge: &mut ChaCha20Rng,
    cloud: &mut ChaCha20Rng,
) -> (Vec<u32>, Verdict) {
    let draft: Vec<u32> = dists.iter().map(|d| d.sample(edge)).collect();
    let v = match mode {
        Mode::Match => verify_match(&draft, rows, params, cloud).unwrap(),
        Mode::Rejection => verify_rejection(&draft, dists, rows, params, cloud).unwrap(),
    };
    (draft, v)
}

struct Case {
    name: &'static str,
    params: SamplingParams,
    /// Target logits for the first position.
    target: [f32; V],
    /// The edge's full draft distribution for the first position.
    q: [f32; V],
    top_k: usize,
    bits: u8,
}

fn cases() -> Vec<Case> {
    let t1 = SamplingParams::default();
    vec![
        Case {
            // p(5) = 0 (masked) while q(5) > 0; q(0) = 0 while p(0) > 0.
            name: "T=1, masked target token, q zero on p's mode",
            params: t1,
            target: [1.0, 0.5, 0.0, -0.5, 2.0, NEG],
            q: [0.0, 0.3, 0.1, 0.1, 0.2, 0.3],
            top_k: 6,
            bits: 8,
        },
        Case {
            // Target truncated by top-k = 4 then top-p = 0.9; q truncated to its top-3 at 4 bits.
            name: "T=0.7, top-k 4, top-p 0.9; q top-3 at 4 bits",
            params: SamplingParams {
                temperature: 0.7,
                top_p: 0.9,
                top_k: 4,
                seed: 0,
            },
            target: [0.3, 1.2, -0.4, 0.9, 0.0, 0.6],
            q: [0.25, 0.05, 0.2, 0.3, 0.12, 0.08],
            top_k: 3,
            bits: 4,
        },
        Case {
            // q close to p: acceptance near 1; 16-bit levels.
            name: "q ≈ p, 16 bits",
            params: SamplingParams {
                temperature: 1.3,
                top_p: 1.0,
                top_k: 0,
                seed: 0,
            },
            target: [0.5, 0.4, 0.1, 0.0, -0.2, 0.3],
            q: [0.19, 0.18, 0.15, 0.14, 0.12, 0.22],
            top_k: 6,
            bits: 16,
        },
        Case {
            // An FR-Spec draft head (arXiv 2502.14856) scores only the subset {1, 3, 4}: q is
            // zero on the rest, including p's mode (0) and a token p barely allows (5).
            name: "pruned draft head: q zero outside {1, 3, 4}",
            params: t1,
            target: [1.5, 0.5, 0.2, 0.8, 0.1, -1.0],
            q: [0.0, 0.45, 0.0, 0.35, 0.2, 0.0],
            top_k: 6,
            bits: 8,
        },
        Case {
            // Disjoint supports: every draft is rejected; the residual is p itself.
            name: "disjoint supports",
            params: t1,
            target: [0.0, 1.0, 0.5, NEG, NEG, NEG],
            q: [0.0, 0.0, 0.0, 0.5, 0.3, 0.2],
            top_k: 6,
            bits: 8,
        },
        Case {
            // Nucleus only, hot temperature.
            name: "T=1.5, top-p 0.8; q top-2 at 4 bits",
            params: SamplingParams {
                temperature: 1.5,
                top_p: 0.8,
                top_k: 0,
                seed: 0,
            },
            target: [2.0, 1.5, 1.0, 0.5, 0.0, -3.0],
            // q's top-2 are tokens 1 (kept by the nucleus) and 4 (cut by it).
            q: [0.1, 0.3, 0.05, 0.1, 0.3, 0.15],
            top_k: 2,
            bits: 4,
        },
    ]
}

/// Rows after the first position (K = 3 → rows 1..=3): arbitrary but valid.
fn later_rows() -> Vec<Vec<f32>> {
    vec![
        vec![0.1, 0.7, -0.2, 0.4, 0.0, 0.3],
        vec![1.0, 0.0, 0.0, 0.5, -1.0, 0.2],
        vec![0.0; V],
    ]
}

/// First committed token of a K = 3 round, per case and mode, against p of row 0.
#[test]
fn first_committed_token_is_distributed_as_the_target() {
    for (ci, case) in cases().iter().enumerate() {
        let mut rows = vec![case.target.to_vec()];
        rows.extend(later_rows());
        let q0 = CompactDist::quantize(&case.q, case.top_k, case.bits).unwrap();
        let later: Vec<CompactDist> = (0..2)
            .map(|_| CompactDist::quantize(&[0.2, 0.1, 0.3, 0.1, 0.2, 0.1], 6, 8).unwrap())
            .collect();
        let dists: Vec<CompactDist> = std::iter::once(q0.clone()).chain(later).collect();
        let p = p_of(&case.target, &case.params);

        // Theoretical first-token acceptance: rejection Σ min(p, q̃), match Σ p·q̃.
        let q_dense: Vec<f64> = (0..V as u32).map(|id| q0.prob_of(id)).collect();
        let alpha_rej: f64 = p.iter().zip(&q_dense).map(|(a, b)| a.min(*b)).sum();
        let alpha_match: f64 = p.iter().zip(&q_dense).map(|(a, b)| a * b).sum();

        let mut accept_rate = [0.0f64; 2];
        for (mi, mode) in [Mode::Match, Mode::Rejection].into_iter().enumerate() {
            let seed = 1000 + ci as u64 * 10 + mi as u64;
            let (mut edge, mut cloud) = (rng_for(seed, EDGE_STREAM), rng_for(seed, CLOUD_STREAM));
            let mut counts = [0u64; V];
            let mut first_accepted = 0u64;
            for _ in 0..TRIALS {
                let (draft, v) = round(mode, &rows, &dists, &case.params, &mut edge, &mut cloud);
                let first = if v.accepted >= 1 {
                    draft[0]
                } else {
                    v.next_token
                };
                counts[first as usize] += 1;
                first_accepted += u64::from(v.accepted >= 1);
            }
            // TV of 200k samples over ≤ 6 cells is ≈ 0.002 for an exact rule.
            assert_fits(&format!("{} [{mode:?}]", case.name), &counts, &p, 0.01);
            accept_rate[mi] = first_accepted as f64 / TRIALS as f64;
            // sd of an acceptance share ≤ sqrt(0.25 / 200k) = 0.0011: 0.006 is > 5 sd.
            let theory = if mode == Mode::Rejection {
                alpha_rej
            } else {
                alpha_match
            };
            assert!(
                (accept_rate[mi] - theory).abs() < 0.006,
                "{} [{mode:?}]: acceptance {} vs theory {theory}",
                case.name,
                accept_rate[mi]
            );
        }
        eprintln!(
            "{}: acceptance match {:.4} (Σpq {:.4}), rejection {:.4} (Σmin {:.4})",
            case.name, accept_rate[0], alpha_match, accept_rate[1], alpha_rej
        );
        assert!(
            accept_rate[1] >= accept_rate[0],
            "{}: rejection accepts less than match",
            case.name
        );
    }
}

/// Joint law of the first two committed tokens over whole rounds, against p₀ × p₁.
///
/// The simulated target is position-dependent but context-independent: the row for position j
/// is `targets[j]` whatever came before, and the draft's distribution for position j is
/// `drafts[j]`. Generation runs rounds of K drafted tokens until two tokens are committed, so
/// the second token comes from an accepted draft, a bonus token (K = 1), or the next round.
#[test]
fn first_two_committed_tokens_are_distributed_as_the_target() {
    let params = SamplingParams {
        temperature: 0.9,
        top_p: 0.95,
        top_k: 5,
        seed: 0,
    };
    let targets: Vec<Vec<f32>> = vec![
        vec![0.8, 0.2, NEG, 0.5, -0.3, 0.0],
        vec![-0.5, 0.6, 0.1, 0.9, 0.3, 0.0],
        vec![0.0, 0.0, 0.5, 0.5, 1.0, -1.0],
        vec![0.3, 0.2, 0.1, 0.0, -0.1, -0.2],
    ];
    let drafts: Vec<CompactDist> = [
        [0.3f32, 0.3, 0.2, 0.1, 0.1, 0.0],
        [0.05, 0.2, 0.05, 0.6, 0.1, 0.0],
        [0.2, 0.2, 0.2, 0.2, 0.1, 0.1],
    ]
    .iter()
    .map(|q| CompactDist::quantize(q, 4, 8).unwrap())
    .collect();
    let p0 = p_of(&targets[0], &params);
    let p1 = p_of(&targets[1], &params);
    let joint: Vec<f64> = (0..V * V).map(|c| p0[c / V] * p1[c % V]).collect();

    for k in [1usize, 2] {
        for (mi, mode) in [Mode::Match, Mode::Rejection].into_iter().enumerate() {
            let seed = 77 + 10 * k as u64 + mi as u64;
            let (mut edge, mut cloud) = (rng_for(seed, EDGE_STREAM), rng_for(seed, CLOUD_STREAM));
            let mut counts = vec![0u64; V * V];
            for _ in 0..TRIALS {
                let mut out: Vec<u32> = Vec::with_capacity(4);
                while out.len() < 2 {
                    let pos = out.len();
                    let rows = &targets[pos..pos + k + 1];
                    let dists = &drafts[pos..pos + k];
                    let (draft, v) = round(mode, rows, dists, &params, &mut edge, &mut cloud);
                    out.extend(v.tokens(&draft));
                }
                counts[out[0] as usize * V + out[1] as usize] += 1;
            }
            // ≤ 36 cells: an exact rule gives TV ≈ 0.005 at 200k samples.
            assert_fits(&format!("joint K={k} [{mode:?}]"), &counts, &joint, 0.015);
        }
    }
}

/// The same check rejects two wrong rules: committing the draft as is (output = q̃), and the
/// classic mistake of resampling from p instead of the residual max(0, p − q̃) after a rejection.
#[test]
fn naive_rules_fail_the_same_check() {
    let case = &cases()[0];
    let p = p_of(&case.target, &case.params);
    let q = CompactDist::quantize(&case.q, case.top_k, case.bits).unwrap();
    let (mut edge, mut cloud) = (rng_for(5, EDGE_STREAM), rng_for(5, CLOUD_STREAM));
    let p32: Vec<f32> = p.iter().map(|&x| x as f32).collect();

    let mut as_is = [0u64; V];
    let mut resample_p = [0u64; V];
    for _ in 0..TRIALS {
        let x = q.sample(&mut edge);
        as_is[x as usize] += 1;
        let accept = cloud.random::<f64>() * q.prob_of(x) < p[x as usize];
        let y = if accept {
            x
        } else {
            sample(&p32, &mut cloud).unwrap()
        };
        resample_p[y as usize] += 1;
    }
    // Output = q̃ puts mass on token 5 where p = 0: `fit` panics on it, so compare on the cells
    // both share, scaled: a chi-square on q̃'s counts restricted to p's support.
    let support: Vec<usize> = (0..V).filter(|&i| p[i] > 0.0).collect();
    let restricted: Vec<u64> = support.iter().map(|&i| as_is[i]).collect();
    let expected: Vec<f64> = support.iter().map(|&i| p[i]).collect();
    let f = fit(&restricted, &expected);
    assert!(
        f.chi2 > 100.0 * f.crit,
        "output = q̃ was not detected: chi2 {}",
        f.chi2
    );

    let f = fit(&resample_p, &p);
    eprintln!(
        "resample-from-p: chi2 = {:.1} (crit {:.2}), TV = {:.4}",
        f.chi2, f.crit, f.tv
    );
    assert!(
        f.chi2 > 10.0 * f.crit,
        "resampling from p was not detected: chi2 {}",
        f.chi2
    );
    assert!(f.tv > 0.01);
}
