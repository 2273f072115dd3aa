//! Hugging Face PEFT's adapter directory: [`LoraAdapter::load_peft`] and
//! [`LoraAdapter::save_peft`] (`adapter_config.json` + `adapter_model.safetensors`), the tensor
//! names and config keys they check, and the row permutation of B of q/k on the way in and out
//! for a llama base.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};
use serde::{Deserialize, Serialize};

use super::adapter::{LoraAdapter, LoraPair};
use super::error::LoraError;
use super::permute::{gguf_to_hf_rows, hf_to_gguf_rows};
use super::target::{LoraTarget, PEFT_CONFIG_FILE, PEFT_PREFIX, PEFT_WEIGHTS_FILE};
use crate::config::ModelConfig;

impl LoraAdapter {
    /// Reads a PEFT adapter directory for a base with `config`, validating it against that base
    /// and permuting B of q/k into the runtime's row order for a llama base.
    ///
    /// # Errors
    /// Every [`LoraError`] variant that concerns files, names and shapes.
    pub fn load_peft(dir: &Path, config: &ModelConfig) -> Result<Self, LoraError> {
        let cfg_path = dir.join(PEFT_CONFIG_FILE);
        let st_path = dir.join(PEFT_WEIGHTS_FILE);
        for p in [&cfg_path, &st_path] {
            if !p.is_file() {
                return Err(LoraError::MissingFile { path: p.clone() });
            }
        }
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| io(&cfg_path, e))?;
        let bytes = std::fs::read(&st_path).map_err(|e| io(&st_path, e))?;
        Self::from_peft_bytes(dir, &text, &bytes, config)
    }

    /// [`Self::load_peft`] on the two files' contents already in memory: `config_json` (the
    /// text of `adapter_config.json`) and `weights` (the bytes of `adapter_model.safetensors`),
    /// named in errors as if read from `dir`.
    ///
    /// # Errors
    /// As [`Self::load_peft`], but for a missing or unreadable file.
    pub fn from_peft_bytes(
        dir: &Path,
        config_json: &str,
        weights: &[u8],
        config: &ModelConfig,
    ) -> Result<Self, LoraError> {
        let cfg_path = dir.join(PEFT_CONFIG_FILE);
        let st_path = dir.join(PEFT_WEIGHTS_FILE);
        let pc = PeftConfig::parse(&cfg_path, config_json)?;
        let st =
            safetensors::SafeTensors::deserialize(weights).map_err(|e| LoraError::Safetensors {
                path: st_path.clone(),
                reason: e.to_string(),
            })?;

        let mut halves: BTreeMap<(usize, LoraTarget), [Option<NamedView<'_>>; 2]> = BTreeMap::new();
        let mut names: Vec<&str> = st.names().into_iter().collect();
        names.sort_unstable();
        for name in names {
            let (layer, target, half) = parse_tensor_name(name)?;
            if let Some(declared) = &pc.target_modules {
                if !declared.iter().any(|m| m == target.peft_module()) {
                    return Err(LoraError::UndeclaredModule {
                        tensor: name.to_string(),
                        module: target.peft_module().to_string(),
                        declared: declared.clone(),
                    });
                }
            }
            if layer >= config.num_layers {
                return Err(LoraError::LayerOutOfRange {
                    layer,
                    target,
                    layers: config.num_layers,
                });
            }
            let view = st.tensor(name).map_err(|e| LoraError::Safetensors {
                path: st_path.clone(),
                reason: e.to_string(),
            })?;
            halves.entry((layer, target)).or_default()[half] = Some((name.to_string(), view));
        }

        let mut adapter =
            Self::new(pc.r, pc.lora_alpha, &pc.base_model_name_or_path).map_err(|e| {
                LoraError::Config {
                    path: cfg_path.clone(),
                    key: "r".into(),
                    reason: e.to_string(),
                }
            })?;
        for ((layer, target), [a, b]) in halves {
            let (out, inp) = target.shape(config);
            let ((a_name, a), (b_name, b)) = match (a, b) {
                (Some(a), Some(b)) => (a, b),
                (None, _) => {
                    return Err(LoraError::MissingHalf {
                        layer,
                        target,
                        missing: 'A',
                    })
                }
                (_, None) => {
                    return Err(LoraError::MissingHalf {
                        layer,
                        target,
                        missing: 'B',
                    })
                }
            };
            check_matrix(layer, target, 'A', a.shape(), [pc.r, inp])?;
            check_matrix(layer, target, 'B', b.shape(), [out, pc.r])?;
            let a_data = to_f32(&a_name, &a)?;
            let mut b_data = to_f32(&b_name, &b)?;
            if let Some(heads) = target.permuted_heads(config) {
                b_data = hf_to_gguf_rows(&b_data, pc.r, heads);
            }
            adapter.insert(
                layer,
                target,
                LoraPair::new(pc.r, inp, out, a_data, b_data)?,
            )?;
        }
        Ok(adapter)
    }

    /// Writes this adapter as a PEFT directory (`adapter_config.json`,
    /// `adapter_model.safetensors` in F32) for a base with `config`, un-permuting B of q/k for
    /// a llama base so that PEFT / transformers load it as trained. Creates `dir` if needed.
    ///
    /// # Errors
    /// Validation errors as [`Self::validate`]; [`LoraError::Io`].
    pub fn save_peft(&self, dir: &Path, config: &ModelConfig) -> Result<(), LoraError> {
        self.validate(config)?;
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let targets: Vec<String> = self
            .targets()
            .iter()
            .map(|t| t.peft_module().to_string())
            .collect();
        let pc = PeftConfigOut {
            peft_type: "LORA",
            task_type: "CAUSAL_LM",
            r: self.rank(),
            lora_alpha: self.alpha(),
            target_modules: targets,
            base_model_name_or_path: &self.base_model,
            bias: "none",
            fan_in_fan_out: false,
            lora_dropout: 0.0,
            inference_mode: true,
            init_lora_weights: true,
            use_rslora: false,
            use_dora: false,
            modules_to_save: None,
            layers_to_transform: None,
            rank_pattern: BTreeMap::new(),
            alpha_pattern: BTreeMap::new(),
        };
        let cfg_path = dir.join(PEFT_CONFIG_FILE);
        let json = serde_json::to_string_pretty(&pc).map_err(|e| LoraError::Io {
            path: cfg_path.clone(),
            reason: e.to_string(),
        })?;
        write_atomic(&cfg_path, json.as_bytes())?;

        let mut tensors: Vec<(String, Vec<u8>, Vec<usize>)> = Vec::with_capacity(2 * self.len());
        for (&(layer, target), p) in self.iter() {
            let stem = format!("{PEFT_PREFIX}{layer}.{}", target.peft_path());
            let b = match target.permuted_heads(config) {
                Some(heads) => gguf_to_hf_rows(p.b(), p.rank(), heads),
                None => p.b().to_vec(),
            };
            tensors.push((
                format!("{stem}.lora_A.weight"),
                f32_bytes(p.a()),
                vec![p.rank(), p.in_features()],
            ));
            tensors.push((
                format!("{stem}.lora_B.weight"),
                f32_bytes(&b),
                vec![p.out_features(), p.rank()],
            ));
        }
        let st_path = dir.join(PEFT_WEIGHTS_FILE);
        let mut views = Vec::with_capacity(tensors.len());
        for (name, data, shape) in &tensors {
            let v = TensorView::new(Dtype::F32, shape.clone(), data).map_err(|e| {
                LoraError::Safetensors {
                    path: st_path.clone(),
                    reason: e.to_string(),
                }
            })?;
            views.push((name.as_str(), v));
        }
        let meta: HashMap<String, String> = [("format".to_string(), "pt".to_string())].into();
        let bytes =
            safetensors::serialize(views, Some(meta)).map_err(|e| LoraError::Safetensors {
                path: st_path.clone(),
                reason: e.to_string(),
            })?;
        write_atomic(&st_path, &bytes)
    }
}

/// A tensor of the safetensors file with its name.
type NamedView<'a> = (String, TensorView<'a>);

/// Splits `base_model.model.model.layers.{i}.<module path>.lora_{A|B}.weight`.
fn parse_tensor_name(name: &str) -> Result<(usize, LoraTarget, usize), LoraError> {
    let unexpected = || LoraError::UnexpectedTensor {
        tensor: name.to_string(),
    };
    let rest = name.strip_prefix(PEFT_PREFIX).ok_or_else(unexpected)?;
    let (layer, rest) = rest.split_once('.').ok_or_else(unexpected)?;
    let layer: usize = layer.parse().map_err(|_| unexpected())?;
    let (module, half) = if let Some(m) = rest.strip_suffix(".lora_A.weight") {
        (m, 0)
    } else if let Some(m) = rest.strip_suffix(".lora_B.weight") {
        (m, 1)
    } else {
        return Err(unexpected());
    };
    let target = LoraTarget::from_peft_path(module).ok_or_else(|| LoraError::UnknownModule {
        tensor: name.to_string(),
        module: module.to_string(),
    })?;
    Ok((layer, target, half))
}

fn check_matrix(
    layer: usize,
    target: LoraTarget,
    which: char,
    found: &[usize],
    expected: [usize; 2],
) -> Result<(), LoraError> {
    if found == expected {
        return Ok(());
    }
    // The rank axis is A's rows and B's columns: a disagreement there is a rank mismatch.
    let (rank_axis, rank) = if which == 'A' {
        (0, expected[0])
    } else {
        (1, expected[1])
    };
    if found.len() == 2
        && found[rank_axis] != rank
        && found[1 - rank_axis] == expected[1 - rank_axis]
    {
        return Err(LoraError::RankMismatch {
            layer,
            target,
            which,
            expected: rank,
            found: found[rank_axis],
        });
    }
    Err(LoraError::Shape {
        layer,
        target,
        which,
        expected: expected.to_vec(),
        found: found.to_vec(),
    })
}

/// A safetensors tensor's values as f32 (F32, F16 or BF16 storage); `None` for other dtypes.
/// Shared by the adapter and anchor readers.
pub(crate) fn tensor_f32(v: &TensorView<'_>) -> Option<Vec<f32>> {
    let d = v.data();
    let le2 = |c: &[u8]| u16::from_le_bytes([c[0], c[1]]);
    Some(match v.dtype() {
        Dtype::F32 => d
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => d
            .chunks_exact(2)
            .map(|c| half::f16::from_bits(le2(c)).to_f32())
            .collect(),
        Dtype::BF16 => d
            .chunks_exact(2)
            .map(|c| half::bf16::from_bits(le2(c)).to_f32())
            .collect(),
        _ => return None,
    })
}

fn to_f32(name: &str, v: &TensorView<'_>) -> Result<Vec<f32>, LoraError> {
    tensor_f32(v).ok_or_else(|| LoraError::Dtype {
        tensor: name.to_string(),
        dtype: format!("{:?}", v.dtype()),
    })
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn io(path: &Path, e: std::io::Error) -> LoraError {
    LoraError::Io {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// Writes through a temporary file and a rename, so a reader never sees half a file.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), LoraError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(|e| io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io(path, e))
}

/// The part of PEFT's `LoraConfig` this runtime reads.
struct PeftConfig {
    r: usize,
    lora_alpha: f32,
    /// `None` when `target_modules` is a regular expression string (then tensors decide).
    target_modules: Option<Vec<String>>,
    base_model_name_or_path: String,
}

impl PeftConfig {
    fn parse(path: &Path, text: &str) -> Result<Self, LoraError> {
        let bad = |key: &str, reason: String| LoraError::Config {
            path: path.to_path_buf(),
            key: key.into(),
            reason,
        };
        let unsupported =
            |key: &str, value: &serde_json::Value, reason: &str| LoraError::Unsupported {
                path: path.to_path_buf(),
                key: key.into(),
                value: value.to_string(),
                reason: reason.into(),
            };
        let v: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| bad("(file)", format!("not valid JSON: {e}")))?;
        let obj = v
            .as_object()
            .ok_or_else(|| bad("(file)", "not a JSON object".into()))?;
        let get = |k: &str| obj.get(k).filter(|x| !x.is_null());

        match get("peft_type").and_then(|x| x.as_str()) {
            Some("LORA") => {}
            Some(other) => {
                return Err(unsupported(
                    "peft_type",
                    &other.into(),
                    "only LORA adapters",
                ))
            }
            None => return Err(bad("peft_type", "missing (expected \"LORA\")".into())),
        }
        let r = get("r").ok_or_else(|| bad("r", "missing".into()))?;
        let r = r
            .as_u64()
            .filter(|&n| n > 0)
            .ok_or_else(|| bad("r", format!("expected a positive integer, found {r}")))?
            as usize;
        let lora_alpha = match get("lora_alpha") {
            None => 8.0, // PEFT's default
            Some(a) => a
                .as_f64()
                .filter(|x| x.is_finite())
                .ok_or_else(|| bad("lora_alpha", format!("expected a number, found {a}")))?
                as f32,
        };
        if let Some(b) = get("bias") {
            if b.as_str() != Some("none") {
                return Err(unsupported(
                    "bias",
                    b,
                    "LoRA bias terms are not implemented; only \"none\"",
                ));
            }
        }
        if let Some(f) = get("fan_in_fan_out") {
            if f.as_bool() != Some(false) {
                return Err(unsupported(
                    "fan_in_fan_out",
                    f,
                    "only nn.Linear layouts (false)",
                ));
            }
        }
        for key in ["use_dora", "use_rslora"] {
            if let Some(f) = get(key) {
                if f.as_bool() != Some(false) {
                    return Err(unsupported(key, f, "scale is alpha / r with plain LoRA"));
                }
            }
        }
        if let Some(m) = get("modules_to_save") {
            if m.as_array().is_none_or(|a| !a.is_empty()) {
                return Err(unsupported(
                    "modules_to_save",
                    m,
                    "the embedding, norms and head stay frozen across a family",
                ));
            }
        }
        for key in ["rank_pattern", "alpha_pattern"] {
            if let Some(m) = get(key) {
                if m.as_object().is_none_or(|o| !o.is_empty()) {
                    return Err(unsupported(key, m, "one rank and one alpha per adapter"));
                }
            }
        }
        if let Some(t) = get("task_type") {
            if t.as_str() != Some("CAUSAL_LM") {
                return Err(unsupported("task_type", t, "only CAUSAL_LM"));
            }
        }
        let target_modules = match get("target_modules") {
            None => return Err(bad("target_modules", "missing".into())),
            Some(serde_json::Value::String(_)) => None,
            Some(serde_json::Value::Array(a)) => {
                let mut mods = Vec::with_capacity(a.len());
                for m in a {
                    let m = m.as_str().ok_or_else(|| {
                        bad(
                            "target_modules",
                            format!("expected module names, found {m}"),
                        )
                    })?;
                    // PEFT matches by suffix: "self_attn.q_proj" also names q_proj.
                    let short = m.rsplit('.').next().unwrap_or(m);
                    if LoraTarget::from_peft_module(short).is_none() {
                        return Err(LoraError::UnknownTargetModule {
                            path: path.to_path_buf(),
                            module: m.to_string(),
                        });
                    }
                    mods.push(short.to_string());
                }
                Some(mods)
            }
            Some(other) => {
                return Err(bad(
                    "target_modules",
                    format!("expected a list or a string, found {other}"),
                ))
            }
        };
        let base_model_name_or_path = get("base_model_name_or_path")
            .and_then(|x| x.as_str())
            .unwrap_or("")
            .to_string();
        Ok(Self {
            r,
            lora_alpha,
            target_modules,
            base_model_name_or_path,
        })
    }
}

/// `adapter_config.json` as written (the keys PEFT's `LoraConfig` reads; absent ones default).
#[derive(Serialize, Deserialize)]
struct PeftConfigOut<'a> {
    peft_type: &'a str,
    task_type: &'a str,
    r: usize,
    lora_alpha: f32,
    target_modules: Vec<String>,
    base_model_name_or_path: &'a str,
    bias: &'a str,
    fan_in_fan_out: bool,
    lora_dropout: f32,
    inference_mode: bool,
    init_lora_weights: bool,
    use_rslora: bool,
    use_dora: bool,
    modules_to_save: Option<Vec<String>>,
    layers_to_transform: Option<Vec<usize>>,
    rank_pattern: BTreeMap<String, usize>,
    alpha_pattern: BTreeMap<String, f32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensor_names_parse_and_reject_precisely() {
        let n = "base_model.model.model.layers.12.mlp.down_proj.lora_B.weight";
        assert_eq!(parse_tensor_name(n).unwrap(), (12, LoraTarget::FfnDown, 1));
        let n = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight";
        assert_eq!(parse_tensor_name(n).unwrap(), (0, LoraTarget::AttnQ, 0));
        let bad = "base_model.model.model.layers.0.self_attn.rotary.lora_A.weight";
        assert!(
            matches!(parse_tensor_name(bad), Err(LoraError::UnknownModule { module, .. }) if module == "self_attn.rotary")
        );
        for bad in [
            "model.layers.0.self_attn.q_proj.lora_A.weight",
            "base_model.model.model.layers.x.mlp.up_proj.lora_A.weight",
        ] {
            assert!(
                matches!(
                    parse_tensor_name(bad),
                    Err(LoraError::UnexpectedTensor { .. })
                ),
                "{bad}"
            );
        }
    }
}
