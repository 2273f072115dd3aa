//! A differentiable f32 Llama/Qwen2 decoder on candle autograd, built from the same GGUF file
//! the runtime loads and computing the same function as `ecspec_model::Transformer`
//! (RMSNorm, RoPE on interleaved pairs for Llama / on halves for Qwen2, causal grouped-query
//! attention, SwiGLU, tied LM head).
//!
//! Weights are read through [`GgufFile::qtensor`] as stored, the very blocks the runtime
//! multiplies by, dequantized to f32. A weight is either
//! frozen (a plain tensor) or trainable (the tensor of a [`Var`]); frozen matrices go through
//! [`frozen_linear`], whose backward pass computes the gradient of the input only — candle's
//! own matmul would also compute (and throw away) the gradient of every frozen weight, which
//! for the 49k × 576 LM head costs as much as the input gradient itself.

use std::ops::Range;

use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Shape, Tensor, Var, D};
use ecspec_model::gguf::GgufFile;
use ecspec_model::{Architecture, ModelConfig};

use crate::error::Result;

/// `y = x · Wᵀ` for a frozen `W` (`out × in`): the backward pass returns `∂L/∂x = ∂L/∂y · W`
/// and nothing for `W`.
struct FrozenLinear {
    w: Tensor,
}

impl CustomOp1 for FrozenLinear {
    fn name(&self) -> &'static str {
        "frozen-linear"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let Some((start, end)) = l.contiguous_offsets() else {
            candle_core::bail!("frozen-linear: input must be contiguous");
        };
        let x = &s.as_slice::<f32>()?[start..end];
        let dims = l.dims();
        let k = *dims.last().unwrap_or(&1);
        let (out, inp) = self.w.dims2()?;
        if k != inp {
            candle_core::bail!("frozen-linear: input width {k}, weight {out}×{inp}");
        }
        let x = Tensor::from_slice(x, (x.len() / k, k), &Device::Cpu)?;
        let y = x.matmul(&self.w.t()?)?.flatten_all()?.to_vec1::<f32>()?;
        let mut shape = dims.to_vec();
        if let Some(last) = shape.last_mut() {
            *last = out;
        }
        Ok((CpuStorage::F32(y), Shape::from(shape)))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let (out, _) = self.w.dims2()?;
        let g = grad.reshape(((), out))?.matmul(&self.w)?;
        Ok(Some(g.reshape(arg.shape())?))
    }
}

/// `x · Wᵀ` over the last dimension of `x`, through [`FrozenLinear`] when `w` is not trainable.
pub fn frozen_linear(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    Ok(x.contiguous()?.apply_op1(FrozenLinear { w: w.clone() })?)
}

/// A low-rank update `ΔW = scale · B · A` (Hu et al. 2021, LoRA), `A`: `r × in`, `B`: `out × r`.
#[derive(Clone)]
pub struct LoraPair {
    /// `r × in`.
    pub a: Tensor,
    /// `out × r`.
    pub b: Tensor,
    /// `alpha / r`.
    pub scale: f64,
}

/// A projection `y = x · Wᵀ (+ bias) (+ scale · x · Aᵀ · Bᵀ)`.
#[derive(Clone)]
pub struct Linear {
    /// `out × in`: a plain tensor (frozen) or a [`Var`]'s tensor (trainable).
    pub weight: Tensor,
    /// Optional bias (`out`), Qwen2's Q/K/V.
    pub bias: Option<Tensor>,
    /// Optional LoRA update.
    pub lora: Option<LoraPair>,
}

impl Linear {
    fn frozen(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self {
            weight,
            bias,
            lora: None,
        }
    }

    /// Applies the projection to `x` (`… × in`).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut y = if self.weight.is_variable() {
            let dims = x.dims().to_vec();
            let k = dims[dims.len() - 1];
            let y = x.reshape(((), k))?.matmul(&self.weight.t()?)?;
            let mut shape = dims;
            let last = shape.len() - 1;
            shape[last] = self.weight.dim(0)?;
            y.reshape(shape)?
        } else {
            frozen_linear(x, &self.weight)?
        };
        if let Some(b) = &self.bias {
            y = y.broadcast_add(b)?;
        }
        if let Some(l) = &self.lora {
            let dims = x.dims().to_vec();
            let k = dims[dims.len() - 1];
            let xa = x.reshape(((), k))?.matmul(&l.a.t()?)?;
            let d = xa.matmul(&l.b.t()?)?.affine(l.scale, 0.0)?;
            let d = d.reshape(y.shape())?;
            y = (y + d)?;
        }
        Ok(y)
    }
}

/// The names of one decoder layer's tensors, as GGUF suffixes after `blk.{i}.`, in a fixed
/// order; biases only for Qwen2.
pub fn layer_tensor_names(arch: Architecture) -> Vec<&'static str> {
    let mut v = vec![
        "attn_norm.weight",
        "attn_q.weight",
        "attn_k.weight",
        "attn_v.weight",
        "attn_output.weight",
        "ffn_norm.weight",
        "ffn_gate.weight",
        "ffn_up.weight",
        "ffn_down.weight",
    ];
    if arch == Architecture::Qwen2 {
        v.extend(["attn_q.bias", "attn_k.bias", "attn_v.bias"]);
    }
    v
}

/// The expected shape of a layer tensor (candle's rows × cols order, as in the GGUF reader).
pub fn layer_tensor_shape(c: &ModelConfig, suffix: &str) -> Vec<usize> {
    let (d, kv, ffn) = (c.hidden_size, c.num_kv_heads * c.head_dim, c.ffn_size);
    match suffix {
        "attn_q.weight" | "attn_output.weight" => vec![d, d],
        "attn_k.weight" | "attn_v.weight" => vec![kv, d],
        "ffn_gate.weight" | "ffn_up.weight" => vec![ffn, d],
        "ffn_down.weight" => vec![d, ffn],
        "attn_k.bias" | "attn_v.bias" => vec![kv],
        _ => vec![d], // norms, attn_q.bias
    }
}

/// One decoder layer.
#[derive(Clone)]
pub struct Layer {
    /// RMSNorm weight before attention.
    pub attn_norm: Tensor,
    /// Query projection.
    pub q: Linear,
    /// Key projection.
    pub k: Linear,
    /// Value projection.
    pub v: Linear,
    /// Output projection.
    pub o: Linear,
    /// RMSNorm weight before the MLP.
    pub ffn_norm: Tensor,
    /// SwiGLU gate.
    pub gate: Linear,
    /// SwiGLU up.
    pub up: Linear,
    /// SwiGLU down.
    pub down: Linear,
}

impl Layer {
    /// Loads layer `i` from a GGUF file as frozen f32 tensors.
    pub fn load(f: &mut GgufFile, c: &ModelConfig, i: usize) -> Result<Self> {
        let get = |f: &mut GgufFile, suffix: &str| -> Result<Tensor> {
            let name = format!("blk.{i}.{suffix}");
            let shape = layer_tensor_shape(c, suffix);
            if shape.len() == 1 {
                let v = f.vector(&name, shape[0])?;
                Ok(Tensor::from_vec(v, shape[0], &Device::Cpu)?)
            } else {
                Ok(f.qtensor(&name, &shape)?.dequantize(&Device::Cpu)?)
            }
        };
        let mut named = Vec::new();
        for s in layer_tensor_names(Architecture::Llama) {
            named.push((s.to_string(), get(f, s)?));
        }
        for s in ["attn_q.bias", "attn_k.bias", "attn_v.bias"] {
            let name = format!("blk.{i}.{s}");
            if c.arch == Architecture::Qwen2 || f.has_tensor(&name) {
                named.push((s.to_string(), get(f, s)?));
            }
        }
        Self::from_named(named)
    }

    /// Builds a layer from `(suffix, tensor)` pairs (suffixes as in [`layer_tensor_names`]).
    pub fn from_named(named: Vec<(String, Tensor)>) -> Result<Self> {
        let map: std::collections::HashMap<String, Tensor> = named.into_iter().collect();
        let get = |s: &str| {
            map.get(s)
                .cloned()
                .ok_or_else(|| crate::TrainError::Checkpoint(format!("layer tensor `{s}` missing")))
        };
        let opt = |s: &str| map.get(s).cloned();
        Ok(Self {
            attn_norm: get("attn_norm.weight")?,
            q: Linear::frozen(get("attn_q.weight")?, opt("attn_q.bias")),
            k: Linear::frozen(get("attn_k.weight")?, opt("attn_k.bias")),
            v: Linear::frozen(get("attn_v.weight")?, opt("attn_v.bias")),
            o: Linear::frozen(get("attn_output.weight")?, None),
            ffn_norm: get("ffn_norm.weight")?,
            gate: Linear::frozen(get("ffn_gate.weight")?, None),
            up: Linear::frozen(get("ffn_up.weight")?, None),
            down: Linear::frozen(get("ffn_down.weight")?, None),
        })
    }

    /// Every tensor of the layer with its GGUF suffix, in [`layer_tensor_names`] order
    /// (biases last, when present).
    pub fn named_tensors(&self) -> Vec<(&'static str, &Tensor)> {
        let mut v = vec![
            ("attn_norm.weight", &self.attn_norm),
            ("attn_q.weight", &self.q.weight),
            ("attn_k.weight", &self.k.weight),
            ("attn_v.weight", &self.v.weight),
            ("attn_output.weight", &self.o.weight),
            ("ffn_norm.weight", &self.ffn_norm),
            ("ffn_gate.weight", &self.gate.weight),
            ("ffn_up.weight", &self.up.weight),
            ("ffn_down.weight", &self.down.weight),
        ];
        for (s, b) in [
            ("attn_q.bias", &self.q.bias),
            ("attn_k.bias", &self.k.bias),
            ("attn_v.bias", &self.v.bias),
        ] {
            if let Some(b) = b {
                v.push((s, b));
            }
        }
        v
    }

    /// A trainable copy: every tensor becomes a fresh [`Var`] (copied, so the frozen original is
    /// untouched). Returns the layer and its variables named by GGUF suffix.
    pub fn trainable_copy(&self) -> Result<(Self, Vec<(String, Var)>)> {
        let mut vars = Vec::new();
        let mut named = Vec::new();
        for (s, t) in self.named_tensors() {
            let var = Var::from_tensor(&t.copy()?)?;
            named.push((s.to_string(), var.as_tensor().clone()));
            vars.push((s.to_string(), var));
        }
        Ok((Self::from_named(named)?, vars))
    }

    /// Mutable access to a projection by its PEFT module name (`q_proj`, `k_proj`, `v_proj`,
    /// `o_proj`, `gate_proj`, `up_proj`, `down_proj`).
    pub fn module_mut(&mut self, peft_name: &str) -> Option<&mut Linear> {
        Some(match peft_name {
            "q_proj" => &mut self.q,
            "k_proj" => &mut self.k,
            "v_proj" => &mut self.v,
            "o_proj" => &mut self.o,
            "gate_proj" => &mut self.gate,
            "up_proj" => &mut self.up,
            "down_proj" => &mut self.down,
            _ => return None,
        })
    }
}

/// RMSNorm over the last dimension: `x / sqrt(mean(x²) + eps) ⊙ w`.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f32) -> Result<Tensor> {
    let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
    let inv = (ms + eps as f64)?.sqrt()?.recip()?;
    Ok(x.broadcast_mul(&inv)?.broadcast_mul(w)?)
}

/// RoPE cosine/sine tables for positions `0..len` (`len × head_dim/2`), computed with the same
/// f32 operations as `ecspec_model::ops::RopeTables`, plus the causal mask.
pub struct Positions {
    cos: Tensor,
    sin: Tensor,
    mask: Tensor,
    len: usize,
}

impl Positions {
    /// Tables for `len` positions.
    pub fn new(c: &ModelConfig, len: usize) -> Result<Self> {
        let half = c.head_dim / 2;
        let mut cos = Vec::with_capacity(len * half);
        let mut sin = Vec::with_capacity(len * half);
        for p in 0..len {
            for i in 0..half {
                let freq = 1.0 / c.rope_theta.powf(2.0 * i as f32 / c.head_dim as f32);
                let a = p as f32 * freq;
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
        let mask: Vec<f32> = (0..len * len)
            .map(|i| {
                if i % len > i / len {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
            .collect();
        Ok(Self {
            cos: Tensor::from_vec(cos, (len, half), &Device::Cpu)?,
            sin: Tensor::from_vec(sin, (len, half), &Device::Cpu)?,
            mask: Tensor::from_vec(mask, (len, len), &Device::Cpu)?,
            len,
        })
    }

    /// Rotates `x` (`B × H × T × hd`).
    fn rope(&self, x: &Tensor, arch: Architecture) -> Result<Tensor> {
        let (b, h, t, hd) = x.dims4()?;
        let half = hd / 2;
        let (cos, sin) = (self.cos.narrow(0, 0, t)?, self.sin.narrow(0, 0, t)?);
        Ok(match arch {
            Architecture::Llama => {
                let x = x.reshape((b, h, t, half, 2))?;
                let (x0, x1) = (x.narrow(4, 0, 1)?, x.narrow(4, 1, 1)?);
                let (c, s) = (cos.reshape((t, half, 1))?, sin.reshape((t, half, 1))?);
                let y0 = (x0.broadcast_mul(&c)? - x1.broadcast_mul(&s)?)?;
                let y1 = (x0.broadcast_mul(&s)? + x1.broadcast_mul(&c)?)?;
                Tensor::cat(&[y0, y1], 4)?.reshape((b, h, t, hd))?
            }
            Architecture::Qwen2 => {
                let (x0, x1) = (x.narrow(3, 0, half)?, x.narrow(3, half, half)?);
                let y0 = (x0.broadcast_mul(&cos)? - x1.broadcast_mul(&sin)?)?;
                let y1 = (x0.broadcast_mul(&sin)? + x1.broadcast_mul(&cos)?)?;
                Tensor::cat(&[y0, y1], 3)?
            }
        })
    }
}

/// One decoder layer over `x` (`B × T × d`, positions `0..T`).
pub fn layer_forward(
    layer: &Layer,
    c: &ModelConfig,
    pos: &Positions,
    x: &Tensor,
) -> Result<Tensor> {
    let (b, t, d) = x.dims3()?;
    if t > pos.len {
        return Err(crate::TrainError::Shape(format!(
            "{t} positions, tables for {}",
            pos.len
        )));
    }
    let (hq, hkv, hd) = (c.num_heads, c.num_kv_heads, c.head_dim);
    let h = rms_norm(x, &layer.attn_norm, c.rms_eps)?;
    let heads = |y: Tensor, n: usize| -> Result<Tensor> {
        Ok(y.reshape((b, t, n, hd))?.transpose(1, 2)?.contiguous()?)
    };
    let q = pos.rope(&heads(layer.q.forward(&h)?, hq)?, c.arch)?;
    let k = pos.rope(&heads(layer.k.forward(&h)?, hkv)?, c.arch)?;
    let v = heads(layer.v.forward(&h)?, hkv)?;
    // Grouped-query attention: query head j reads key/value head j / (hq / hkv).
    let group = hq / hkv;
    let repeat = |y: Tensor| -> Result<Tensor> {
        if group == 1 {
            return Ok(y);
        }
        Ok(y.unsqueeze(2)?
            .broadcast_as((b, hkv, group, t, hd))?
            .contiguous()?
            .reshape((b, hq, t, hd))?)
    };
    let (k, v) = (repeat(k)?, repeat(v)?);
    let scale = 1.0 / (hd as f64).sqrt();
    let scores =
        (q.matmul(&k.t()?)? * scale)?.broadcast_add(&pos.mask.narrow(0, 0, t)?.narrow(1, 0, t)?)?;
    let att = candle_nn::ops::softmax(&scores, D::Minus1)?.matmul(&v)?;
    let att = att.transpose(1, 2)?.contiguous()?.reshape((b, t, d))?;
    let x = (x + layer.o.forward(&att)?)?;
    let h = rms_norm(&x, &layer.ffn_norm, c.rms_eps)?;
    let g = (layer.gate.forward(&h)?.silu()? * layer.up.forward(&h)?)?;
    Ok((&x + layer.down.forward(&g)?)?)
}

/// The frozen parts of a base model in f32, with any subset of its layers.
pub struct F32Model {
    /// Hyper-parameters.
    pub config: ModelConfig,
    /// `V × d` token embedding.
    pub embedding: Tensor,
    /// Layers `layer_range` of the base, in order.
    pub layers: Vec<Layer>,
    /// Which base layers `layers` holds.
    pub layer_range: Range<usize>,
    /// Final RMSNorm weight.
    pub final_norm: Tensor,
    /// `V × d` LM head (the embedding when tied).
    pub head: Tensor,
}

impl F32Model {
    /// Loads the embedding, final norm, head and layers `layers` from `f`.
    pub fn load(f: &mut GgufFile, layers: Range<usize>) -> Result<Self> {
        let config = ModelConfig::from_metadata(&f.metadata)?;
        let (v, d) = (config.vocab_size, config.hidden_size);
        if layers.end > config.num_layers {
            return Err(crate::TrainError::Shape(format!(
                "layers {layers:?} asked of a model with {} layers",
                config.num_layers
            )));
        }
        let embedding = f
            .qtensor("token_embd.weight", &[v, d])?
            .dequantize(&Device::Cpu)?;
        let head = if f.has_tensor("output.weight") {
            f.qtensor("output.weight", &[v, d])?
                .dequantize(&Device::Cpu)?
        } else {
            embedding.clone()
        };
        let final_norm = Tensor::from_vec(f.vector("output_norm.weight", d)?, d, &Device::Cpu)?;
        let mut ls = Vec::with_capacity(layers.len());
        for i in layers.clone() {
            ls.push(Layer::load(f, &config, i)?);
        }
        Ok(Self {
            config,
            embedding,
            layers: ls,
            layer_range: layers,
            final_norm,
            head,
        })
    }

    /// Embeds `tokens` (`B × T` u32) → `B × T × d`.
    pub fn embed(&self, tokens: &Tensor) -> Result<Tensor> {
        let (b, t) = tokens.dims2()?;
        let flat = tokens.flatten_all()?;
        Ok(self
            .embedding
            .index_select(&flat, 0)?
            .reshape((b, t, self.config.hidden_size))?)
    }

    /// Runs `layers` over `x` in order.
    pub fn run(&self, layers: &[Layer], pos: &Positions, x: &Tensor) -> Result<Tensor> {
        let mut x = x.clone();
        for l in layers {
            x = layer_forward(l, &self.config, pos, &x)?;
        }
        Ok(x)
    }

    /// Final norm and head: `… × d` → `… × V`.
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        let h = rms_norm(hidden, &self.final_norm, self.config.rms_eps)?;
        frozen_linear(&h, &self.head)
    }

    /// Logits of every position of `tokens` (`B × T`) through all loaded layers.
    pub fn forward(&self, tokens: &Tensor) -> Result<Tensor> {
        let pos = Positions::new(&self.config, tokens.dim(1)?)?;
        let x = self.embed(tokens)?;
        let h = self.run(&self.layers, &pos, &x)?;
        self.logits(&h)
    }
}

/// A `B × T` token tensor.
pub fn token_tensor(windows: &[&[u32]]) -> Result<Tensor> {
    let t = windows.first().map_or(0, |w| w.len());
    let flat: Vec<u32> = windows.iter().flat_map(|w| w.iter().copied()).collect();
    Ok(Tensor::from_vec(flat, (windows.len(), t), &Device::Cpu)?.to_dtype(DType::U32)?)
}
