//! A LoRA adapter in memory: [`LoraPair`] (one projection's A and B, and applying
//! `scale · B (A x)` row by row) and [`LoraAdapter`] (rank, alpha, a pair per layer and
//! target; PEFT's initialisation; checks against a base). B is held in the runtime's row order
//! (see the module docs of [`crate::lora`]).

use std::collections::BTreeMap;

use super::error::LoraError;
use super::target::LoraTarget;
use crate::config::ModelConfig;
use crate::init::uniform;

/// One projection's low-rank update ΔW = B·A: A is `rank × in`, B is `out × rank`, both
/// row-major `f32`; B in the runtime's row order (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct LoraPair {
    rank: usize,
    in_features: usize,
    out_features: usize,
    a: Vec<f32>,
    b: Vec<f32>,
}

impl LoraPair {
    /// A pair from row-major data.
    ///
    /// # Errors
    /// [`LoraError::DataLength`] when `a` is not `rank × in` or `b` not `out × rank` values.
    pub fn new(
        rank: usize,
        in_features: usize,
        out_features: usize,
        a: Vec<f32>,
        b: Vec<f32>,
    ) -> Result<Self, LoraError> {
        if a.len() != rank * in_features {
            return Err(LoraError::DataLength {
                which: 'A',
                rows: rank,
                cols: in_features,
                found: a.len(),
            });
        }
        if b.len() != out_features * rank {
            return Err(LoraError::DataLength {
                which: 'B',
                rows: out_features,
                cols: rank,
                found: b.len(),
            });
        }
        Ok(Self {
            rank,
            in_features,
            out_features,
            a,
            b,
        })
    }
    /// Rank r.
    pub fn rank(&self) -> usize {
        self.rank
    }
    /// Input features (columns of A).
    pub fn in_features(&self) -> usize {
        self.in_features
    }
    /// Output features (rows of B).
    pub fn out_features(&self) -> usize {
        self.out_features
    }
    /// A, `rank × in`, row-major.
    pub fn a(&self) -> &[f32] {
        &self.a
    }
    /// B, `out × rank`, row-major, runtime row order.
    pub fn b(&self) -> &[f32] {
        &self.b
    }
    /// A, mutable (training).
    pub fn a_mut(&mut self) -> &mut [f32] {
        &mut self.a
    }
    /// B, mutable (training).
    pub fn b_mut(&mut self) -> &mut [f32] {
        &mut self.b
    }

    /// `y += scale · B (A x)` for every row of `x` (`rows × in`) into `y` (`rows × out`).
    ///
    /// Each row is computed on its own with [`crate::ops::dot`]'s fixed accumulation order:
    /// t = A x; t ← scale · t; y_o += B_o · t. A block therefore gets exactly the numbers
    /// of its rows run one at a time (the runtime's block == token-by-token invariant).
    pub fn apply(&self, x: &[f32], y: &mut [f32], scale: f32) {
        let mut t = vec![0f32; self.rank];
        for (xr, yr) in x
            .chunks_exact(self.in_features)
            .zip(y.chunks_exact_mut(self.out_features))
        {
            for (ti, ar) in t.iter_mut().zip(self.a.chunks_exact(self.in_features)) {
                *ti = crate::ops::dot(ar, xr) * scale;
            }
            for (yo, br) in yr.iter_mut().zip(self.b.chunks_exact(self.rank)) {
                *yo += crate::ops::dot(br, &t);
            }
        }
    }
}

/// A LoRA adapter: rank r, alpha, and a [`LoraPair`] per `(layer, target)`.
/// The update of a targeted projection is `W x + (alpha / r) · B (A x)`.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraAdapter {
    rank: usize,
    alpha: f32,
    /// `base_model_name_or_path` of the PEFT config (informational; the family manifest checks
    /// the base by hash).
    pub base_model: String,
    pairs: BTreeMap<(usize, LoraTarget), LoraPair>,
}

impl LoraAdapter {
    /// An empty adapter.
    ///
    /// # Errors
    /// [`LoraError::Invalid`] for rank 0 or a non-finite alpha.
    pub fn new(rank: usize, alpha: f32, base_model: &str) -> Result<Self, LoraError> {
        if rank == 0 {
            return Err(LoraError::Invalid("rank r must be at least 1".into()));
        }
        if !alpha.is_finite() {
            return Err(LoraError::Invalid(format!(
                "lora_alpha must be finite, found {alpha}"
            )));
        }
        Ok(Self {
            rank,
            alpha,
            base_model: base_model.to_string(),
            pairs: BTreeMap::new(),
        })
    }

    /// A fresh adapter as PEFT initialises one (`init_lora_weights = True`): A uniform in
    /// ±1/√in (Kaiming-uniform with a = √5), B = 0 — so it starts as the identity update —
    /// on `targets` of every layer in `layers`, from a fixed `seed`.
    ///
    /// # Errors
    /// As [`Self::new`]; [`LoraError::LayerOutOfRange`] for a layer the base lacks.
    pub fn init(
        config: &ModelConfig,
        rank: usize,
        alpha: f32,
        layers: std::ops::Range<usize>,
        targets: &[LoraTarget],
        seed: u64,
        base_model: &str,
    ) -> Result<Self, LoraError> {
        let mut adapter = Self::new(rank, alpha, base_model)?;
        for layer in layers {
            for &target in targets {
                if layer >= config.num_layers {
                    return Err(LoraError::LayerOutOfRange {
                        layer,
                        target,
                        layers: config.num_layers,
                    });
                }
                let (out, inp) = target.shape(config);
                let salt = seed
                    ^ ((layer as u64) << 8 | target as u64).wrapping_mul(0xA24B_AED4_963E_E407);
                let a = uniform(salt, rank * inp, 1.0 / (inp as f32).sqrt());
                adapter.pairs.insert(
                    (layer, target),
                    LoraPair::new(rank, inp, out, a, vec![0.0; out * rank])?,
                );
            }
        }
        Ok(adapter)
    }

    /// Rank r.
    pub fn rank(&self) -> usize {
        self.rank
    }
    /// `lora_alpha`.
    pub fn alpha(&self) -> f32 {
        self.alpha
    }
    /// The update's scale, alpha / r.
    pub fn scale(&self) -> f32 {
        self.alpha / self.rank as f32
    }
    /// Adds or replaces the pair of `(layer, target)`.
    ///
    /// # Errors
    /// [`LoraError::RankMismatch`] when the pair's rank is not the adapter's.
    pub fn insert(
        &mut self,
        layer: usize,
        target: LoraTarget,
        pair: LoraPair,
    ) -> Result<(), LoraError> {
        if pair.rank != self.rank {
            return Err(LoraError::RankMismatch {
                layer,
                target,
                which: 'A',
                expected: self.rank,
                found: pair.rank,
            });
        }
        self.pairs.insert((layer, target), pair);
        Ok(())
    }
    /// The pair of `(layer, target)`, if adapted.
    pub fn pair(&self, layer: usize, target: LoraTarget) -> Option<&LoraPair> {
        self.pairs.get(&(layer, target))
    }
    /// The pair of `(layer, target)`, mutable (training).
    pub fn pair_mut(&mut self, layer: usize, target: LoraTarget) -> Option<&mut LoraPair> {
        self.pairs.get_mut(&(layer, target))
    }
    /// Every `((layer, target), pair)`, ordered by layer then target.
    pub fn iter(&self) -> impl Iterator<Item = (&(usize, LoraTarget), &LoraPair)> {
        self.pairs.iter()
    }
    /// Number of adapted projections.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }
    /// Whether no projection is adapted.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }
    /// The targets adapted in at least one layer, in [`LoraTarget::ALL`] order.
    pub fn targets(&self) -> Vec<LoraTarget> {
        LoraTarget::ALL
            .into_iter()
            .filter(|t| self.pairs.keys().any(|(_, u)| u == t))
            .collect()
    }
    /// Trainable parameters: Σ r · (in + out).
    pub fn num_parameters(&self) -> usize {
        self.pairs.values().map(|p| p.a.len() + p.b.len()).sum()
    }

    /// Checks every pair against a base with `config`: layer in range, A `r × in`, B `out × r`.
    ///
    /// # Errors
    /// [`LoraError::LayerOutOfRange`], [`LoraError::RankMismatch`], [`LoraError::Shape`].
    pub fn validate(&self, config: &ModelConfig) -> Result<(), LoraError> {
        for (&(layer, target), p) in &self.pairs {
            if layer >= config.num_layers {
                return Err(LoraError::LayerOutOfRange {
                    layer,
                    target,
                    layers: config.num_layers,
                });
            }
            if p.rank != self.rank {
                return Err(LoraError::RankMismatch {
                    layer,
                    target,
                    which: 'A',
                    expected: self.rank,
                    found: p.rank,
                });
            }
            let (out, inp) = target.shape(config);
            if p.in_features != inp {
                let (expected, found) = (vec![self.rank, inp], vec![p.rank, p.in_features]);
                return Err(LoraError::Shape {
                    layer,
                    target,
                    which: 'A',
                    expected,
                    found,
                });
            }
            if p.out_features != out {
                let (expected, found) = (vec![out, self.rank], vec![p.out_features, p.rank]);
                return Err(LoraError::Shape {
                    layer,
                    target,
                    which: 'B',
                    expected,
                    found,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_is_row_wise() {
        let p = LoraPair::new(
            2,
            3,
            2,
            vec![1.0, 0.0, 2.0, 0.0, 1.0, 0.0],
            vec![1.0, 1.0, 0.5, -1.0],
        )
        .unwrap();
        // x = [1, 2, 3]: A x = [7, 2]; scale 2 → [14, 4]; B t = [18, 3].
        let x = [1.0, 2.0, 3.0, 1.0, 2.0, 3.0];
        let mut y = vec![1.0, 1.0, 0.0, 0.0];
        p.apply(&x, &mut y, 2.0);
        assert_eq!(y, vec![19.0, 4.0, 18.0, 3.0]);
        assert!(matches!(
            LoraPair::new(2, 3, 2, vec![0.0; 5], vec![0.0; 4]),
            Err(LoraError::DataLength { which: 'A', .. })
        ));
    }
}
