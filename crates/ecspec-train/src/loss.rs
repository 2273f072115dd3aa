//! Fused per-row losses over a vocabulary-sized last dimension, as candle custom ops with
//! closed-form gradients.
//!
//! With 49k-token vocabularies the logits dominate a training step's memory; composing
//! log-softmax and KL from candle's element-wise ops keeps half a dozen `rows × V`
//! intermediates alive for the backward pass. These ops keep none: the backward pass
//! recomputes the softmax from the logits.
//!
//! - [`distill_kl`]: `KL(p ‖ q) = Σ_i p_i (log p_i − log q_i)` with `q = softmax(z)`;
//!   `∂KL/∂z = q − p` (Hinton et al. 2015, temperature 1). The teacher `p` is dense (full
//!   log-probabilities) or sparse (its top-k, renormalised — then `Σ_S p = 1` and the gradient
//!   is still `q − p` with `p` zero outside the top-k).
//! - [`cross_entropy`]: `−log q_y = logsumexp(z) − z_y`; `∂/∂z = q − onehot(y)`.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, Device, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::error::{Result, TrainError};

/// A teacher's next-token distribution for each row.
#[derive(Debug, Clone)]
pub enum Teacher {
    /// Full log-probabilities, `rows × V`.
    Dense(Vec<f32>),
    /// The teacher's top-k per row: token ids and probabilities (renormalised to sum to 1),
    /// `rows × k` each.
    Sparse {
        /// k.
        k: usize,
        /// Token ids.
        ids: Vec<u32>,
        /// Probabilities.
        probs: Vec<f32>,
    },
}

/// Log-softmax of one row, in f64 accumulation: returns `logsumexp(z)`.
fn logsumexp(z: &[f32]) -> f32 {
    let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = z.iter().map(|&x| ((x - max) as f64).exp()).sum();
    max + sum.ln() as f32
}

/// Log-probabilities of each row of `logits` (`rows × V`, row-major).
pub fn log_softmax_rows(logits: &[f32], vocab: usize) -> Vec<f32> {
    let mut out = vec![0f32; logits.len()];
    out.par_chunks_mut(vocab)
        .zip(logits.par_chunks(vocab))
        .for_each(|(o, z)| {
            let lse = logsumexp(z);
            for (o, &x) in o.iter_mut().zip(z) {
                *o = x - lse;
            }
        });
    out
}

/// The top-k of each row of teacher logits as a sparse [`Teacher`] (probabilities renormalised
/// over the k kept tokens).
pub fn sparse_teacher(logits: &[f32], vocab: usize, k: usize) -> Teacher {
    let rows: Vec<(Vec<u32>, Vec<f32>)> = logits
        .par_chunks(vocab)
        .map(|z| {
            let mut idx: Vec<u32> = (0..vocab as u32).collect();
            let k = k.min(vocab);
            idx.select_nth_unstable_by(k - 1, |&a, &b| {
                z[b as usize].total_cmp(&z[a as usize]).then(a.cmp(&b))
            });
            idx.truncate(k);
            idx.sort_by(|&a, &b| z[b as usize].total_cmp(&z[a as usize]).then(a.cmp(&b)));
            let max = z[idx[0] as usize];
            let e: Vec<f64> = idx
                .iter()
                .map(|&i| ((z[i as usize] - max) as f64).exp())
                .collect();
            let s: f64 = e.iter().sum();
            (idx, e.into_iter().map(|x| (x / s) as f32).collect())
        })
        .collect();
    let k = rows.first().map_or(k, |r| r.0.len());
    let (mut ids, mut probs) = (Vec::new(), Vec::new());
    for (i, p) in rows {
        ids.extend(i);
        probs.extend(p);
    }
    Teacher::Sparse { k, ids, probs }
}

fn rows_of<'a>(
    s: &'a CpuStorage,
    l: &Layout,
    name: &str,
) -> candle_core::Result<(&'a [f32], usize, usize)> {
    let Some((a, b)) = l.contiguous_offsets() else {
        candle_core::bail!("{name}: logits must be contiguous");
    };
    let (rows, vocab) = l.shape().dims2()?;
    Ok((&s.as_slice::<f32>()?[a..b], rows, vocab))
}

struct DistillKl {
    teacher: Arc<Teacher>,
}

impl DistillKl {
    fn check(&self, rows: usize, vocab: usize) -> candle_core::Result<()> {
        let ok = match &*self.teacher {
            Teacher::Dense(lp) => lp.len() == rows * vocab,
            Teacher::Sparse { k, ids, probs } => ids.len() == rows * k && probs.len() == rows * k,
        };
        if !ok {
            candle_core::bail!("distill-kl: teacher does not match {rows}×{vocab} logits");
        }
        Ok(())
    }
}

impl CustomOp1 for DistillKl {
    fn name(&self) -> &'static str {
        "distill-kl"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (z, rows, vocab) = rows_of(s, l, self.name())?;
        self.check(rows, vocab)?;
        let kl: Vec<f32> = (0..rows)
            .into_par_iter()
            .map(|r| {
                let zr = &z[r * vocab..(r + 1) * vocab];
                let lse = logsumexp(zr);
                let mut acc = 0f64;
                match &*self.teacher {
                    Teacher::Dense(lp) => {
                        for (&lp, &zi) in lp[r * vocab..(r + 1) * vocab].iter().zip(zr) {
                            let p = (lp as f64).exp();
                            if p > 0.0 {
                                acc += p * (lp as f64 - (zi - lse) as f64);
                            }
                        }
                    }
                    Teacher::Sparse { k, ids, probs } => {
                        for j in r * k..(r + 1) * k {
                            let p = probs[j] as f64;
                            if p > 0.0 {
                                acc += p * (p.ln() - (zr[ids[j] as usize] - lse) as f64);
                            }
                        }
                    }
                }
                acc as f32
            })
            .collect();
        Ok((CpuStorage::F32(kl), Shape::from(rows)))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let (rows, vocab) = arg.dims2()?;
        let z = arg.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let g = grad.to_vec1::<f32>()?;
        let mut out = vec![0f32; rows * vocab];
        out.par_chunks_mut(vocab).enumerate().for_each(|(r, o)| {
            let zr = &z[r * vocab..(r + 1) * vocab];
            let lse = logsumexp(zr);
            let gr = g[r];
            match &*self.teacher {
                Teacher::Dense(lp) => {
                    let lp = &lp[r * vocab..(r + 1) * vocab];
                    for i in 0..vocab {
                        o[i] = gr * ((zr[i] - lse).exp() - lp[i].exp());
                    }
                }
                Teacher::Sparse { k, ids, probs } => {
                    for i in 0..vocab {
                        o[i] = gr * (zr[i] - lse).exp();
                    }
                    for j in r * k..(r + 1) * k {
                        o[ids[j] as usize] -= gr * probs[j];
                    }
                }
            }
        });
        Ok(Some(Tensor::from_vec(out, (rows, vocab), &Device::Cpu)?))
    }
}

/// Per-row `KL(teacher ‖ softmax(logits))` of `logits` (`rows × V`) → `rows`.
///
/// # Errors
/// A teacher of another shape.
pub fn distill_kl(logits: &Tensor, teacher: Arc<Teacher>) -> Result<Tensor> {
    Ok(logits.contiguous()?.apply_op1(DistillKl { teacher })?)
}

struct CrossEntropy {
    targets: Arc<Vec<u32>>,
}

impl CustomOp1 for CrossEntropy {
    fn name(&self) -> &'static str {
        "cross-entropy"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (z, rows, vocab) = rows_of(s, l, self.name())?;
        if self.targets.len() != rows || self.targets.iter().any(|&t| t as usize >= vocab) {
            candle_core::bail!("cross-entropy: targets do not match {rows}×{vocab} logits");
        }
        let ce: Vec<f32> = (0..rows)
            .into_par_iter()
            .map(|r| {
                let zr = &z[r * vocab..(r + 1) * vocab];
                logsumexp(zr) - zr[self.targets[r] as usize]
            })
            .collect();
        Ok((CpuStorage::F32(ce), Shape::from(rows)))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let (rows, vocab) = arg.dims2()?;
        let z = arg.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let g = grad.to_vec1::<f32>()?;
        let mut out = vec![0f32; rows * vocab];
        out.par_chunks_mut(vocab).enumerate().for_each(|(r, o)| {
            let zr = &z[r * vocab..(r + 1) * vocab];
            let lse = logsumexp(zr);
            for i in 0..vocab {
                o[i] = g[r] * (zr[i] - lse).exp();
            }
            o[self.targets[r] as usize] -= g[r];
        });
        Ok(Some(Tensor::from_vec(out, (rows, vocab), &Device::Cpu)?))
    }
}

/// Per-row next-token cross-entropy `−log softmax(logits)[target]` → `rows`.
///
/// # Errors
/// Targets of another length or outside the vocabulary.
pub fn cross_entropy(logits: &Tensor, targets: Vec<u32>) -> Result<Tensor> {
    let (rows, vocab) = logits.dims2()?;
    if targets.len() != rows || targets.iter().any(|&t| t as usize >= vocab) {
        return Err(TrainError::Shape(format!(
            "{} targets for {rows}×{vocab} logits",
            targets.len()
        )));
    }
    Ok(logits.contiguous()?.apply_op1(CrossEntropy {
        targets: Arc::new(targets),
    })?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;

    fn logits() -> Vec<f32> {
        (0..3 * 7)
            .map(|i| ((i * 37 % 11) as f32 - 5.0) * 0.4)
            .collect()
    }

    /// The same loss composed from candle's differentiable ops, for reference gradients.
    fn reference_kl(z: &Tensor, teacher_lp: &Tensor) -> Tensor {
        let lq = candle_nn::ops::log_softmax(z, 1).unwrap();
        let p = teacher_lp.exp().unwrap();
        (p * (teacher_lp - lq).unwrap()).unwrap().sum(1).unwrap()
    }

    #[test]
    fn kl_value_and_gradient_match_composed_ops() {
        let t = logits()
            .iter()
            .map(|x| x * -0.7 + 0.3)
            .collect::<Vec<f32>>();
        let lp = log_softmax_rows(&t, 7);
        let z = Var::from_vec(logits(), (3, 7), &Device::Cpu).unwrap();
        let ours = distill_kl(z.as_tensor(), Arc::new(Teacher::Dense(lp.clone()))).unwrap();
        let lpt = Tensor::from_vec(lp, (3, 7), &Device::Cpu).unwrap();
        let refr = reference_kl(z.as_tensor(), &lpt);
        let (a, b) = (
            ours.to_vec1::<f32>().unwrap(),
            refr.to_vec1::<f32>().unwrap(),
        );
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-5, "{a:?} vs {b:?}");
        }
        let ga = ours.mean_all().unwrap().backward().unwrap();
        let gb = refr.mean_all().unwrap().backward().unwrap();
        let ga = ga
            .get(z.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let gb = gb
            .get(z.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        for (x, y) in ga.iter().zip(&gb) {
            assert!((x - y).abs() < 1e-5, "{ga:?} vs {gb:?}");
        }
    }

    #[test]
    fn sparse_teacher_with_full_k_equals_dense() {
        let t: Vec<f32> = logits().iter().map(|x| x * 0.9 - 0.1).collect();
        let z = Var::from_vec(
            logits().iter().map(|x| x * 0.5).collect::<Vec<f32>>(),
            (3, 7),
            &Device::Cpu,
        )
        .unwrap();
        let dense = distill_kl(
            z.as_tensor(),
            Arc::new(Teacher::Dense(log_softmax_rows(&t, 7))),
        )
        .unwrap();
        let sparse = distill_kl(z.as_tensor(), Arc::new(sparse_teacher(&t, 7, 7))).unwrap();
        let (a, b) = (
            dense.to_vec1::<f32>().unwrap(),
            sparse.to_vec1::<f32>().unwrap(),
        );
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-5);
        }
        let ga = dense
            .sum_all()
            .unwrap()
            .backward()
            .unwrap()
            .get(z.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let gb = sparse
            .sum_all()
            .unwrap()
            .backward()
            .unwrap()
            .get(z.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        for (x, y) in ga.iter().zip(&gb) {
            assert!((x - y).abs() < 1e-5);
        }
    }

    #[test]
    fn kl_of_identical_distributions_is_zero() {
        let z = logits();
        let kl = distill_kl(
            &Tensor::from_vec(z.clone(), (3, 7), &Device::Cpu).unwrap(),
            Arc::new(Teacher::Dense(log_softmax_rows(&z, 7))),
        )
        .unwrap();
        assert!(kl.to_vec1::<f32>().unwrap().iter().all(|v| v.abs() < 1e-6));
    }

    #[test]
    fn cross_entropy_matches_composed_ops() {
        let z = Var::from_vec(logits(), (3, 7), &Device::Cpu).unwrap();
        let targets = vec![0u32, 6, 3];
        let ours = cross_entropy(z.as_tensor(), targets.clone()).unwrap();
        let tt = Tensor::new(targets.as_slice(), &Device::Cpu).unwrap();
        let refr = candle_nn::loss::cross_entropy(z.as_tensor(), &tt).unwrap();
        let a = ours.mean_all().unwrap();
        assert!((a.to_scalar::<f32>().unwrap() - refr.to_scalar::<f32>().unwrap()).abs() < 1e-5);
        let ga = a
            .backward()
            .unwrap()
            .get(z.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let gb = refr
            .backward()
            .unwrap()
            .get(z.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        for (x, y) in ga.iter().zip(&gb) {
            assert!((x - y).abs() < 1e-5);
        }
    }
}
