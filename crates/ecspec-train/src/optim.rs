//! AdamW (Loshchilov & Hutter 2019) whose state can be saved and restored.
//!
//! The update is candle-nn's `AdamW` operation for operation (a test checks them equal bit
//! for bit), but candle-nn keeps its moment estimates private, so a run restarted from a
//! checkpoint could not continue the same trajectory with it. Here the moments and the step
//! count are part of [`AdamWState`] and go into the checkpoint.

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
pub use candle_nn::ParamsAdamW;

use crate::error::{Result, TrainError};

/// A trainable tensor with a stable name (used in checkpoints and saved weights).
#[derive(Clone)]
pub struct NamedVar {
    /// Name.
    pub name: String,
    /// The variable.
    pub var: Var,
}

/// The optimiser's state: step count and the first and second moment of every variable, in
/// the optimiser's variable order.
pub struct AdamWState {
    /// Updates done so far.
    pub step: usize,
    /// `(name, m, v)` per variable.
    pub moments: Vec<(String, Tensor, Tensor)>,
}

/// AdamW over named variables.
pub struct AdamW {
    vars: Vec<NamedVar>,
    m: Vec<Var>,
    v: Vec<Var>,
    step: usize,
    /// Hyper-parameters; `lr` may be changed between steps (schedules).
    pub params: ParamsAdamW,
}

impl AdamW {
    /// A fresh optimiser (zero moments) over `vars`, in that order.
    pub fn new(vars: Vec<NamedVar>, params: ParamsAdamW) -> Result<Self> {
        let mut m = Vec::with_capacity(vars.len());
        let mut v = Vec::with_capacity(vars.len());
        for nv in &vars {
            m.push(Var::zeros(nv.var.shape(), nv.var.dtype(), nv.var.device())?);
            v.push(Var::zeros(nv.var.shape(), nv.var.dtype(), nv.var.device())?);
        }
        Ok(Self {
            vars,
            m,
            v,
            step: 0,
            params,
        })
    }

    /// The variables.
    pub fn vars(&self) -> &[NamedVar] {
        &self.vars
    }

    /// Updates done so far.
    pub fn step_count(&self) -> usize {
        self.step
    }

    /// One update from `grads` (variables without a gradient are left as they are).
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.step += 1;
        let p = &self.params;
        let lr_lambda = p.lr * p.weight_decay;
        let scale_m = 1f64 / (1f64 - p.beta1.powi(self.step as i32));
        let scale_v = 1f64 / (1f64 - p.beta2.powi(self.step as i32));
        for ((nv, m), v) in self.vars.iter().zip(&self.m).zip(&self.v) {
            let theta = &nv.var;
            if let Some(g) = grads.get(theta) {
                let next_m = ((m.as_tensor() * p.beta1)? + (g * (1.0 - p.beta1))?)?;
                let next_v = ((v.as_tensor() * p.beta2)? + (g.sqr()? * (1.0 - p.beta2))?)?;
                let m_hat = (&next_m * scale_m)?;
                let v_hat = (&next_v * scale_v)?;
                let next_theta = (theta.as_tensor() * (1f64 - lr_lambda))?;
                let adjusted = (m_hat / (v_hat.sqrt()? + p.eps)?)?;
                let next_theta = (next_theta - (adjusted * p.lr)?)?;
                m.set(&next_m)?;
                v.set(&next_v)?;
                theta.set(&next_theta)?;
            }
        }
        Ok(())
    }

    /// A copy of the state.
    pub fn state(&self) -> Result<AdamWState> {
        let mut moments = Vec::with_capacity(self.vars.len());
        for ((nv, m), v) in self.vars.iter().zip(&self.m).zip(&self.v) {
            moments.push((
                nv.name.clone(),
                m.as_tensor().copy()?,
                v.as_tensor().copy()?,
            ));
        }
        Ok(AdamWState {
            step: self.step,
            moments,
        })
    }

    /// Restores a saved state (same variables, same order, same shapes).
    ///
    /// # Errors
    /// [`TrainError::Checkpoint`] naming the first variable that does not match.
    pub fn load_state(&mut self, s: &AdamWState) -> Result<()> {
        if s.moments.len() != self.vars.len() {
            return Err(TrainError::Checkpoint(format!(
                "optimizer state has {} variables, the model {}",
                s.moments.len(),
                self.vars.len()
            )));
        }
        for (i, (name, m, v)) in s.moments.iter().enumerate() {
            let nv = &self.vars[i];
            if *name != nv.name || m.shape() != nv.var.shape() || v.shape() != nv.var.shape() {
                return Err(TrainError::Checkpoint(format!(
                    "optimizer state #{i} is `{name}` {:?}, the model has `{}` {:?}",
                    m.dims(),
                    nv.name,
                    nv.var.dims()
                )));
            }
            self.m[i].set(m)?;
            self.v[i].set(v)?;
        }
        self.step = s.step;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use candle_nn::Optimizer;

    fn quad_loss(w: &Var) -> Tensor {
        let target = Tensor::new(&[1.0f32, -2.0, 0.5], &Device::Cpu).unwrap();
        (w.as_tensor() - target)
            .unwrap()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
    }

    #[test]
    fn matches_candle_nn_adamw_bit_for_bit() {
        let params = ParamsAdamW {
            lr: 0.05,
            weight_decay: 0.1,
            ..Default::default()
        };
        let a = Var::new(&[0.3f32, 0.1, -0.4], &Device::Cpu).unwrap();
        let b = Var::new(&[0.3f32, 0.1, -0.4], &Device::Cpu).unwrap();
        let mut ours = AdamW::new(
            vec![NamedVar {
                name: "w".into(),
                var: a.clone(),
            }],
            params.clone(),
        )
        .unwrap();
        let mut theirs = candle_nn::AdamW::new(vec![b.clone()], params).unwrap();
        for _ in 0..10 {
            ours.step(&quad_loss(&a).backward().unwrap()).unwrap();
            theirs.step(&quad_loss(&b).backward().unwrap()).unwrap();
        }
        assert_eq!(
            a.as_tensor().to_vec1::<f32>().unwrap(),
            b.as_tensor().to_vec1::<f32>().unwrap()
        );
    }

    #[test]
    fn restored_state_continues_identically() {
        let params = ParamsAdamW {
            lr: 0.05,
            ..Default::default()
        };
        let a = Var::new(&[0.3f32, 0.1, -0.4], &Device::Cpu).unwrap();
        let mut opt = AdamW::new(
            vec![NamedVar {
                name: "w".into(),
                var: a.clone(),
            }],
            params.clone(),
        )
        .unwrap();
        for _ in 0..3 {
            opt.step(&quad_loss(&a).backward().unwrap()).unwrap();
        }
        let saved_w = a.as_tensor().copy().unwrap();
        let state = opt.state().unwrap();
        for _ in 0..3 {
            opt.step(&quad_loss(&a).backward().unwrap()).unwrap();
        }
        let b = Var::from_tensor(&saved_w).unwrap();
        let mut opt2 = AdamW::new(
            vec![NamedVar {
                name: "w".into(),
                var: b.clone(),
            }],
            params,
        )
        .unwrap();
        opt2.load_state(&state).unwrap();
        for _ in 0..3 {
            opt2.step(&quad_loss(&b).backward().unwrap()).unwrap();
        }
        assert_eq!(
            a.as_tensor().to_vec1::<f32>().unwrap(),
            b.as_tensor().to_vec1::<f32>().unwrap()
        );
    }
}
