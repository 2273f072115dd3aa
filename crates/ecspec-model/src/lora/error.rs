//! [`LoraError`]: everything that can be wrong with a LoRA adapter, each variant naming the
//! file, tensor or key and what was expected.

use std::path::PathBuf;

use super::target::{LoraTarget, PEFT_CONFIG_FILE, PEFT_PREFIX, PEFT_WEIGHTS_FILE};

/// Everything that can be wrong with a LoRA adapter.
#[derive(Debug, thiserror::Error)]
pub enum LoraError {
    /// A file of the PEFT directory does not exist.
    #[error("LoRA adapter file {path} is missing (a PEFT adapter directory holds {PEFT_CONFIG_FILE} and {PEFT_WEIGHTS_FILE})")]
    MissingFile { path: PathBuf },
    /// Reading or writing a file failed.
    #[error("LoRA adapter file {path}: {reason}")]
    Io { path: PathBuf, reason: String },
    /// `adapter_config.json` is not valid JSON of the expected form, or a key has a bad value.
    #[error("{path}: key `{key}`: {reason}")]
    Config {
        path: PathBuf,
        key: String,
        reason: String,
    },
    /// A PEFT feature this runtime does not implement.
    #[error("{path}: key `{key}` = {value}: not supported ({reason})")]
    Unsupported {
        path: PathBuf,
        key: String,
        value: String,
        reason: String,
    },
    /// `adapter_model.safetensors` cannot be parsed.
    #[error("{path}: not a valid safetensors file: {reason}")]
    Safetensors { path: PathBuf, reason: String },
    /// A tensor name that is not `base_model.model.model.layers.{i}.<module>.lora_{A,B}.weight`.
    #[error("tensor `{tensor}`: not a PEFT LoRA tensor name (expected `{PEFT_PREFIX}{{i}}.<module>.lora_A.weight` or `.lora_B.weight`)")]
    UnexpectedTensor { tensor: String },
    /// A module this runtime cannot adapt.
    #[error(
        "tensor `{tensor}`: unknown module `{module}` (known: self_attn.{{q,k,v,o}}_proj, mlp.{{gate,up,down}}_proj)"
    )]
    UnknownModule { tensor: String, module: String },
    /// A `target_modules` entry that names no known projection.
    #[error("{path}: target_modules entry `{module}` is unknown (known: q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj)")]
    UnknownTargetModule { path: PathBuf, module: String },
    /// Tensors for a module that `target_modules` does not list.
    #[error("tensor `{tensor}`: module `{module}` is not in target_modules {declared:?}")]
    UndeclaredModule {
        tensor: String,
        module: String,
        declared: Vec<String>,
    },
    /// A layer index at or beyond the base's layer count.
    #[error("LoRA on layer {layer} ({target}): the base has {layers} layers (0..{layers})")]
    LayerOutOfRange {
        layer: usize,
        target: LoraTarget,
        layers: usize,
    },
    /// Only one of A and B is present.
    #[error("layer {layer} {target}: lora_{missing} is missing (lora_A and lora_B come in pairs)")]
    MissingHalf {
        layer: usize,
        target: LoraTarget,
        missing: char,
    },
    /// A or B disagrees with the adapter's rank.
    #[error("layer {layer} {target}: rank mismatch: {which} has rank {found}, the adapter has r = {expected}")]
    RankMismatch {
        layer: usize,
        target: LoraTarget,
        which: char,
        expected: usize,
        found: usize,
    },
    /// A or B has the wrong shape for the base.
    #[error(
        "layer {layer} {target}: lora_{which} has shape {found:?}, the base needs {expected:?}"
    )]
    Shape {
        layer: usize,
        target: LoraTarget,
        which: char,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    /// A tensor of an element type other than F32, F16 or BF16.
    #[error("tensor `{tensor}`: dtype {dtype} is not supported (F32, F16, BF16)")]
    Dtype { tensor: String, dtype: String },
    /// Data of the wrong length handed to [`crate::lora::LoraPair::new`].
    #[error("LoRA pair data: {which} holds {found} values, {rows} × {cols} = {} needed", rows * cols)]
    DataLength {
        which: char,
        rows: usize,
        cols: usize,
        found: usize,
    },
    /// Rank 0 or a non-finite alpha.
    #[error("invalid LoRA hyper-parameters: {0}")]
    Invalid(String),
}
