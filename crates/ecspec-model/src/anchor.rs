//! The shared-backbone draft's anchor layer (design.md §5) as a file: one decoder layer's
//! tensors in safetensors format, so a trained anchor ships apart from the base GGUF.
//!
//! Tensor names are the GGUF suffixes after `blk.{i}.` ([`layer_tensors`]): `attn_norm.weight`,
//! `attn_q.weight`, `attn_k.weight`, `attn_v.weight`, `attn_output.weight`, `ffn_norm.weight`,
//! `ffn_gate.weight`, `ffn_up.weight`, `ffn_down.weight`, and for Qwen2 `attn_q.bias`,
//! `attn_k.bias`, `attn_v.bias`. Shapes are the GGUF reader's `rows × cols` (`out × in`), rows
//! of Q and K in the runtime's (GGUF) order; values F32, F16 (what training writes) or BF16.
//! No other tensor may be present.

use std::path::Path;
use std::sync::Arc;

use safetensors::tensor::{Dtype, TensorView};

use crate::config::{Architecture, ModelConfig};
use crate::error::{ModelError, Result};
use crate::transformer::DecoderLayer;

/// The tensors of one decoder layer of a model with `config`: `(name, shape)`.
pub fn layer_tensors(config: &ModelConfig) -> Vec<(&'static str, Vec<usize>)> {
    let (d, kv, ffn) = (
        config.hidden_size,
        config.num_kv_heads * config.head_dim,
        config.ffn_size,
    );
    let mut v = vec![
        ("attn_norm.weight", vec![d]),
        ("attn_q.weight", vec![d, d]),
        ("attn_k.weight", vec![kv, d]),
        ("attn_v.weight", vec![kv, d]),
        ("attn_output.weight", vec![d, d]),
        ("ffn_norm.weight", vec![d]),
        ("ffn_gate.weight", vec![ffn, d]),
        ("ffn_up.weight", vec![ffn, d]),
        ("ffn_down.weight", vec![d, ffn]),
    ];
    if config.arch == Architecture::Qwen2 {
        v.extend([
            ("attn_q.bias", vec![d]),
            ("attn_k.bias", vec![kv]),
            ("attn_v.bias", vec![kv]),
        ]);
    }
    v
}

fn tensor_err(path: &Path, name: &str, reason: String) -> ModelError {
    ModelError::Tensor {
        name: format!("{}: {name}", path.display()),
        reason,
    }
}

/// Checks an anchor file against a base with `config` and returns its tensors as f32, in
/// [`layer_tensors`] order.
///
/// # Errors
/// [`ModelError::File`] when the file is missing or unreadable; [`ModelError::Tensor`] naming
/// the file and the tensor when one is missing, unexpected, of the wrong shape or dtype.
pub fn read_anchor_tensors(
    path: &Path,
    config: &ModelConfig,
) -> Result<Vec<(&'static str, Vec<f32>)>> {
    let bytes = std::fs::read(path).map_err(|e| ModelError::File {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| ModelError::File {
        path: path.to_path_buf(),
        reason: format!("not a safetensors file: {e}"),
    })?;
    let wanted = layer_tensors(config);
    let mut names = st.names();
    names.sort_unstable();
    if let Some(extra) = names.iter().find(|n| !wanted.iter().any(|(w, _)| w == *n)) {
        let known: Vec<&str> = wanted.iter().map(|(n, _)| *n).collect();
        return Err(tensor_err(
            path,
            extra,
            format!("not a tensor of an anchor layer (expected exactly {known:?})"),
        ));
    }
    let mut out = Vec::with_capacity(wanted.len());
    for (name, shape) in wanted {
        let t = st
            .tensor(name)
            .map_err(|_| tensor_err(path, name, "missing".into()))?;
        if t.shape() != shape.as_slice() {
            return Err(tensor_err(
                path,
                name,
                format!("expected shape {shape:?}, file has {:?}", t.shape()),
            ));
        }
        out.push((name, view_f32(path, name, &t)?));
    }
    Ok(out)
}

/// Loads an anchor layer for a base with `config` (see the module docs for the format).
///
/// # Errors
/// As [`read_anchor_tensors`].
pub fn load_anchor(path: &Path, config: &ModelConfig) -> Result<Arc<DecoderLayer>> {
    let tensors = read_anchor_tensors(path, config)?;
    let layer = DecoderLayer::from_f32(config, |name, _| {
        tensors
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| tensor_err(path, name, "missing".into()))
    })?;
    Ok(Arc::new(layer))
}

/// How tensors are stored in files ECSpec writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreDtype {
    /// 4 bytes per value, exact.
    F32,
    /// IEEE half precision, 2 bytes per value (relative error ≤ 2⁻¹¹ in range): what shipped
    /// drafts use, since the runtime quantizes every f32/f16 matrix to Q8_0 (error ≈ 2⁻⁸) anyway.
    F16,
}

impl StoreDtype {
    fn dtype(self) -> Dtype {
        match self {
            StoreDtype::F32 => Dtype::F32,
            StoreDtype::F16 => Dtype::F16,
        }
    }
    /// Little-endian bytes of `v` in this dtype.
    pub fn encode(self, v: &[f32]) -> Vec<u8> {
        match self {
            StoreDtype::F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            StoreDtype::F16 => v
                .iter()
                .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
                .collect(),
        }
    }
}

/// Serialises `(name, shape, bytes)` tensors of one dtype with optional metadata and writes
/// them through a temporary file and a rename (a crash never leaves half a file at `path`).
///
/// # Errors
/// [`ModelError::Tensor`] when a shape does not match its bytes; [`ModelError::File`] for I/O.
pub fn write_safetensors(
    path: &Path,
    dtype: StoreDtype,
    tensors: &[(String, Vec<usize>, Vec<u8>)],
    metadata: Option<std::collections::HashMap<String, String>>,
) -> Result<()> {
    let mut views = Vec::with_capacity(tensors.len());
    for (name, shape, bytes) in tensors {
        let v = TensorView::new(dtype.dtype(), shape.clone(), bytes)
            .map_err(|e| tensor_err(path, name, e.to_string()))?;
        views.push((name.as_str(), v));
    }
    let bytes = safetensors::serialize(views, metadata).map_err(|e| ModelError::File {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let file = |e: std::io::Error| ModelError::File {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(file)?;
    }
    let tmp = path.with_extension("safetensors.tmp");
    std::fs::write(&tmp, bytes).map_err(file)?;
    std::fs::rename(&tmp, path).map_err(file)
}

/// Writes an anchor file: `tensors` (`(name, row-major values)`) must be exactly
/// [`layer_tensors`] of `config`, with the lengths their shapes give, stored as `dtype`.
///
/// # Errors
/// [`ModelError::Tensor`] for a missing, unexpected or wrongly sized tensor;
/// [`ModelError::File`] for I/O.
pub fn save_anchor(
    path: &Path,
    config: &ModelConfig,
    tensors: &[(&str, &[f32])],
    dtype: StoreDtype,
) -> Result<()> {
    let wanted = layer_tensors(config);
    if let Some((extra, _)) = tensors
        .iter()
        .find(|(n, _)| !wanted.iter().any(|(w, _)| w == n))
    {
        return Err(tensor_err(
            path,
            extra,
            "not a tensor of an anchor layer".into(),
        ));
    }
    let mut data = Vec::with_capacity(wanted.len());
    for (name, shape) in &wanted {
        let (_, v) = tensors
            .iter()
            .find(|(n, _)| n == name)
            .ok_or_else(|| tensor_err(path, name, "missing".into()))?;
        let n: usize = shape.iter().product();
        if v.len() != n {
            return Err(tensor_err(
                path,
                name,
                format!("{} values given, shape {shape:?} needs {n}", v.len()),
            ));
        }
        data.push((name.to_string(), shape.clone(), dtype.encode(v)));
    }
    write_safetensors(path, dtype, &data, None)
}

fn view_f32(path: &Path, name: &str, t: &TensorView<'_>) -> Result<Vec<f32>> {
    let v = crate::lora::tensor_f32(t).ok_or_else(|| {
        tensor_err(
            path,
            name,
            format!("dtype {:?} is not supported (F32, F16, BF16)", t.dtype()),
        )
    })?;
    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
        return Err(tensor_err(
            path,
            name,
            format!("value {i} is {} (weights must be finite)", v[i]),
        ));
    }
    Ok(v)
}
