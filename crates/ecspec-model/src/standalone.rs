//! A conventional, tightly coupled draft as one file: its own embedding (tied to its LM head),
//! decoder layers and final norm, in the base family's vocabulary and layer shapes. This is
//! the baseline ECSpec's shared-backbone draft is compared with (design.md §5): it has to be
//! re-distilled and re-downloaded whole whenever the target changes.
//!
//! Format: safetensors with tensors `token_embd.weight` (`V × d`), `output_norm.weight` (`d`)
//! and `blk.{i}.{suffix}` for `i < L` (suffixes and shapes of [`crate::anchor::layer_tensors`]),
//! F32, F16 or BF16, and metadata `format = "ecspec-standalone-draft-1"`, `layers = "L"`.
//! Hyper-parameters other than the layer count are the base's.

use std::collections::HashMap;
use std::path::Path;

use safetensors::SafeTensors;

use crate::anchor::{layer_tensors, write_safetensors, StoreDtype};
use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use crate::transformer::{DecoderLayer, Transformer};

/// The `format` metadata value.
pub const FORMAT: &str = "ecspec-standalone-draft-1";

fn err(path: &Path, reason: String) -> ModelError {
    ModelError::File {
        path: path.to_path_buf(),
        reason,
    }
}

/// Every tensor of an `layers`-layer draft on a base with `config`: `(name, shape)`.
pub fn tensor_list(config: &ModelConfig, layers: usize) -> Vec<(String, Vec<usize>)> {
    let (v, d) = (config.vocab_size, config.hidden_size);
    let mut out = vec![
        ("token_embd.weight".to_string(), vec![v, d]),
        ("output_norm.weight".to_string(), vec![d]),
    ];
    for i in 0..layers {
        for (s, shape) in layer_tensors(config) {
            out.push((format!("blk.{i}.{s}"), shape));
        }
    }
    out
}

/// Writes a standalone draft of `layers` layers: `tensors` must be exactly
/// [`tensor_list`]`(config, layers)` (any order), values row-major.
///
/// # Errors
/// [`ModelError::Tensor`] for a missing, unexpected or wrongly sized tensor;
/// [`ModelError::File`] for I/O.
pub fn save(
    path: &Path,
    config: &ModelConfig,
    layers: usize,
    tensors: &[(String, Vec<f32>)],
    dtype: StoreDtype,
) -> Result<()> {
    let wanted = tensor_list(config, layers);
    let by_name: HashMap<&str, &Vec<f32>> = tensors.iter().map(|(n, v)| (n.as_str(), v)).collect();
    if let Some((extra, _)) = tensors
        .iter()
        .find(|(n, _)| !wanted.iter().any(|(w, _)| w == n))
    {
        return Err(ModelError::Tensor {
            name: extra.clone(),
            reason: format!("not a tensor of a {layers}-layer standalone draft"),
        });
    }
    let mut data = Vec::with_capacity(wanted.len());
    for (name, shape) in wanted {
        let v = by_name
            .get(name.as_str())
            .ok_or_else(|| ModelError::Tensor {
                name: name.clone(),
                reason: "missing".into(),
            })?;
        let n: usize = shape.iter().product();
        if v.len() != n {
            return Err(ModelError::Tensor {
                name,
                reason: format!("{} values given, shape {shape:?} needs {n}", v.len()),
            });
        }
        data.push((name, shape, dtype.encode(v)));
    }
    let meta = HashMap::from([
        ("format".to_string(), FORMAT.to_string()),
        ("layers".to_string(), layers.to_string()),
    ]);
    write_safetensors(path, dtype, &data, Some(meta))
}

/// Loads a standalone draft for a base with `base_config` (vocabulary and shapes must match).
///
/// # Errors
/// [`ModelError::File`] when the file is missing, not safetensors, of another format or
/// without a valid layer count; [`ModelError::Tensor`] naming a missing, unexpected or
/// misshapen tensor, or an unsupported dtype.
pub fn load(path: &Path, base_config: &ModelConfig) -> Result<Transformer> {
    let bytes = std::fs::read(path).map_err(|e| err(path, e.to_string()))?;
    let (_, header) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| err(path, format!("not a safetensors file: {e}")))?;
    let meta = header.metadata().clone().unwrap_or_default();
    if meta.get("format").map(String::as_str) != Some(FORMAT) {
        return Err(err(
            path,
            format!(
                "not a standalone draft: metadata format is {:?}, expected \"{FORMAT}\"",
                meta.get("format")
            ),
        ));
    }
    let layers: usize = meta
        .get("layers")
        .and_then(|l| l.parse().ok())
        .filter(|l| (1..=1024).contains(l))
        .ok_or_else(|| {
            err(
                path,
                format!(
                    "metadata `layers` = {} is not a number in 1..=1024",
                    meta.get("layers").map_or("(missing)", String::as_str)
                ),
            )
        })?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| err(path, format!("not a safetensors file: {e}")))?;
    let wanted = tensor_list(base_config, layers);
    let tensor_err = |name: &str, reason: String| ModelError::Tensor {
        name: format!("{}: {name}", path.display()),
        reason,
    };
    if let Some(extra) = st
        .names()
        .into_iter()
        .find(|n| !wanted.iter().any(|(w, _)| w == *n))
    {
        return Err(tensor_err(
            extra,
            format!("not a tensor of a {layers}-layer draft"),
        ));
    }
    let get = |name: &str, shape: &[usize]| -> Result<Vec<f32>> {
        let t = st
            .tensor(name)
            .map_err(|_| tensor_err(name, "missing".into()))?;
        if t.shape() != shape {
            return Err(tensor_err(
                name,
                format!("shape {:?}, the base needs {shape:?}", t.shape()),
            ));
        }
        let v = crate::lora::tensor_f32(&t).ok_or_else(|| {
            tensor_err(
                name,
                format!("dtype {:?} is not supported (F32, F16, BF16)", t.dtype()),
            )
        })?;
        match v.iter().position(|x| !x.is_finite()) {
            Some(i) => Err(tensor_err(
                name,
                format!("value {i} is {} (weights must be finite)", v[i]),
            )),
            None => Ok(v),
        }
    };
    let (v, d) = (base_config.vocab_size, base_config.hidden_size);
    let embedding = get("token_embd.weight", &[v, d])?;
    let final_norm = get("output_norm.weight", &[d])?;
    let mut ls = Vec::with_capacity(layers);
    for i in 0..layers {
        ls.push(DecoderLayer::from_f32(base_config, |s, shape| {
            get(&format!("blk.{i}.{s}"), shape)
        })?);
    }
    let mut config = base_config.clone();
    config.num_layers = layers;
    Transformer::from_f32_parts(config, embedding, ls, final_norm)
}
