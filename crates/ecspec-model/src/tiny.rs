//! A tiny random-weight Llama GGUF model, written to disk, for fast tests and examples: the
//! real loading, tokenizer and forward code run on it in milliseconds.
//!
//! Vocabulary: the 256 byte-level symbols, one merge (`a b` → `ab`), and the control tokens
//! `<|endoftext|>` (EOS), `<|im_start|>`, `<|im_end|>`. Two models with the same
//! [`TinySpec::vocab`] share a tokenizer; the `seed` decides the weights.

use std::path::Path;

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{Device, Tensor};

use crate::error::{ModelError, Result};
use crate::init::uniform;

/// Shape and seed of a tiny model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TinySpec {
    /// Seed of the weights.
    pub seed: u64,
    /// Decoder layers.
    pub layers: usize,
    /// Hidden size (multiple of 32).
    pub hidden: usize,
    /// Query heads (KV heads = half of them).
    pub heads: usize,
    /// Context window, positions.
    pub context: usize,
}

impl Default for TinySpec {
    fn default() -> Self {
        Self {
            seed: 1,
            layers: 4,
            hidden: 64,
            heads: 4,
            context: 512,
        }
    }
}

/// A tiny model's weights for one tensor.
fn values(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    uniform(
        seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(1),
        n,
        scale,
    )
}

/// The byte-level symbols of GPT-2's `bytes_to_unicode`, in byte order.
fn byte_symbols() -> Vec<String> {
    let visible =
        |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let mut n = 0;
    (0..256u32)
        .map(|b| {
            if visible(b) {
                char::from_u32(b).map(String::from).unwrap_or_default()
            } else {
                n += 1;
                char::from_u32(255 + n)
                    .map(String::from)
                    .unwrap_or_default()
            }
        })
        .collect()
}

/// Writes a tiny model to `path`.
///
/// # Errors
/// I/O and tensor errors.
pub fn write_tiny_model(path: &Path, spec: TinySpec) -> Result<()> {
    use gguf_file::Value as V;
    let mut tokens = byte_symbols();
    let mut types = vec![1i32; 256];
    tokens.push("ab".into());
    types.push(1);
    for s in ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] {
        tokens.push(s.into());
        types.push(3);
    }
    let vocab = tokens.len();
    let (d, heads, kv_heads, ffn) = (spec.hidden, spec.heads, spec.heads / 2, spec.hidden * 2);
    let kv = kv_heads * (d / heads);
    let template = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}";
    let md: Vec<(&str, V)> = vec![
        ("general.architecture", V::String("llama".into())),
        (
            "general.name",
            V::String(format!("tiny-llama-seed{}", spec.seed)),
        ),
        ("llama.block_count", V::U32(spec.layers as u32)),
        ("llama.context_length", V::U32(spec.context as u32)),
        ("llama.embedding_length", V::U32(d as u32)),
        ("llama.feed_forward_length", V::U32(ffn as u32)),
        ("llama.attention.head_count", V::U32(heads as u32)),
        ("llama.attention.head_count_kv", V::U32(kv_heads as u32)),
        ("llama.rope.freq_base", V::F32(10_000.0)),
        ("llama.attention.layer_norm_rms_epsilon", V::F32(1e-5)),
        ("tokenizer.ggml.model", V::String("gpt2".into())),
        ("tokenizer.ggml.pre", V::String("smollm".into())),
        (
            "tokenizer.ggml.tokens",
            V::Array(tokens.into_iter().map(V::String).collect()),
        ),
        (
            "tokenizer.ggml.token_type",
            V::Array(types.into_iter().map(V::I32).collect()),
        ),
        (
            "tokenizer.ggml.merges",
            V::Array(vec![V::String("a b".into())]),
        ),
        ("tokenizer.ggml.eos_token_id", V::U32(257)),
        ("tokenizer.chat_template", V::String(template.into())),
    ];
    let q = |name: &str, rows: usize, cols: usize, salt: u64| -> Result<(String, QTensor)> {
        let scale = 1.0 / (cols as f32).sqrt() * 1.7;
        let t = Tensor::from_vec(
            values(spec.seed * 1000 + salt, rows * cols, scale),
            (rows, cols),
            &Device::Cpu,
        )?;
        Ok((name.to_string(), QTensor::quantize(&t, GgmlDType::Q8_0)?))
    };
    let norm = |name: &str, n: usize, salt: u64| -> Result<(String, QTensor)> {
        let v: Vec<f32> = values(spec.seed * 1000 + salt, n, 0.2)
            .into_iter()
            .map(|x| 1.0 + x)
            .collect();
        Ok((
            name.to_string(),
            QTensor::quantize(&Tensor::from_vec(v, n, &Device::Cpu)?, GgmlDType::F32)?,
        ))
    };
    let mut ts = vec![
        q("token_embd.weight", vocab, d, 1)?,
        norm("output_norm.weight", d, 2)?,
    ];
    for i in 0..spec.layers {
        let s = 10 + 10 * i as u64;
        ts.push(norm(&format!("blk.{i}.attn_norm.weight"), d, s)?);
        ts.push(q(&format!("blk.{i}.attn_q.weight"), d, d, s + 1)?);
        ts.push(q(&format!("blk.{i}.attn_k.weight"), kv, d, s + 2)?);
        ts.push(q(&format!("blk.{i}.attn_v.weight"), kv, d, s + 3)?);
        ts.push(q(&format!("blk.{i}.attn_output.weight"), d, d, s + 4)?);
        ts.push(norm(&format!("blk.{i}.ffn_norm.weight"), d, s + 5)?);
        ts.push(q(&format!("blk.{i}.ffn_gate.weight"), ffn, d, s + 6)?);
        ts.push(q(&format!("blk.{i}.ffn_up.weight"), ffn, d, s + 7)?);
        ts.push(q(&format!("blk.{i}.ffn_down.weight"), d, ffn, s + 8)?);
    }
    let md_refs: Vec<(&str, &V)> = md.iter().map(|(k, v)| (*k, v)).collect();
    let t_refs: Vec<(&str, &QTensor)> = ts.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let io = |e: std::io::Error| ModelError::Gguf {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).map_err(io)?);
    gguf_file::write(&mut f, &md_refs, &t_refs)?;
    std::io::Write::flush(&mut f).map_err(io)?;
    Ok(())
}
