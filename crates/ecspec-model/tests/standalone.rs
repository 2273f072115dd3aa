//! Standalone (conventional) draft files: the base's own tensors written as a standalone draft
//! compute exactly the base's logits; F16 storage stays close; bad files name what is wrong.

use std::path::PathBuf;

use candle_core::Device;
use ecspec_model::anchor::StoreDtype;
use ecspec_model::gguf::GgufFile;
use ecspec_model::standalone::{load, save, tensor_list};
use ecspec_model::tiny::{write_tiny_model, TinySpec};
use ecspec_model::{Draft, DraftKind, LoadedModel, LogitsFor, ModelError, Session};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ecspec-standalone-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Every tensor of `base` as a standalone draft of all its layers.
fn base_tensors(base: &LoadedModel) -> Vec<(String, Vec<f32>)> {
    let cfg = base.transformer.config();
    let mut f = GgufFile::open(&base.path).unwrap();
    tensor_list(cfg, cfg.num_layers)
        .into_iter()
        .map(|(name, shape)| {
            let v = if shape.len() == 1 {
                f.vector(&name, shape[0]).unwrap()
            } else {
                f.qtensor(&name, &shape)
                    .unwrap()
                    .dequantize(&Device::Cpu)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap()
            };
            (name, v)
        })
        .collect()
}

fn logits(t: &std::sync::Arc<ecspec_model::Transformer>) -> Vec<f32> {
    Session::new(t.clone())
        .forward(&[72, 101, 108, 108, 111, 33], LogitsFor::All)
        .unwrap()
        .row_slices()
        .concat()
}

#[test]
fn the_bases_tensors_as_a_standalone_draft_compute_the_bases_logits() {
    let dir = scratch("copy");
    let gguf = dir.join("tiny.gguf");
    write_tiny_model(&gguf, TinySpec::default()).unwrap();
    let base = LoadedModel::load(&gguf).unwrap();
    let cfg = base.transformer.config().clone();
    let tensors = base_tensors(&base);

    let f32_path = dir.join("draft-f32.safetensors");
    save(&f32_path, &cfg, cfg.num_layers, &tensors, StoreDtype::F32).unwrap();
    let draft = Draft::standalone(&base, &f32_path).unwrap();
    assert_eq!(draft.kind, DraftKind::Independent);
    assert_eq!(draft.compat_hash, base.tokenizer.vocab_hash());
    assert_eq!(draft.transformer.num_layers(), cfg.num_layers);
    // Q8_0 → f32 → Q8_0 is exact, and the head is the embedding: the same function.
    assert_eq!(logits(&draft.transformer), logits(&base.transformer));

    // F16 storage: half the bytes of the values, logits within a small tolerance.
    let f16_path = dir.join("draft-f16.safetensors");
    save(&f16_path, &cfg, cfg.num_layers, &tensors, StoreDtype::F16).unwrap();
    let values: usize = tensor_list(&cfg, cfg.num_layers)
        .iter()
        .map(|(_, s)| s.iter().product::<usize>())
        .sum();
    let (b16, b32) = (
        std::fs::metadata(&f16_path).unwrap().len() as usize,
        std::fs::metadata(&f32_path).unwrap().len() as usize,
    );
    // The header differs only in dtype names and offsets.
    assert!(
        (b32 - b16).abs_diff(2 * values) < 1024,
        "{b32} vs {b16} bytes for {values} values"
    );
    let t16 = load(&f16_path, &cfg).unwrap();
    let (a, b) = (logits(&std::sync::Arc::new(t16)), logits(&base.transformer));
    let d = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    // F16 rounding (2⁻¹¹ relative) can move a weight across a Q8_0 rounding boundary (one
    // step is 1/127 of its block's largest value); through the tiny model's random layers
    // that stays within a few per cent of the logits' range (measured: 2.6 %).
    let range = b.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    assert!(
        d < 0.05 * range,
        "F16 draft logits differ by {d} (largest |logit| {range})"
    );

    // Fewer layers: a 1-layer draft of the first layer loads with its own layer count.
    let one: Vec<(String, Vec<f32>)> = tensors
        .iter()
        .filter(|(n, _)| !n.starts_with("blk.") || n.starts_with("blk.0."))
        .cloned()
        .collect();
    let p1 = dir.join("one.safetensors");
    save(&p1, &cfg, 1, &one, StoreDtype::F16).unwrap();
    assert_eq!(load(&p1, &cfg).unwrap().num_layers(), 1);
}

#[test]
fn bad_standalone_files_name_what_is_wrong() {
    let dir = scratch("bad");
    let gguf = dir.join("tiny.gguf");
    write_tiny_model(&gguf, TinySpec::default()).unwrap();
    let base = LoadedModel::load(&gguf).unwrap();
    let cfg = base.transformer.config().clone();
    let tensors = base_tensors(&base);

    // Writing: a missing tensor is refused by name.
    let e = save(
        &dir.join("x.safetensors"),
        &cfg,
        cfg.num_layers,
        &tensors[1..],
        StoreDtype::F16,
    )
    .unwrap_err();
    assert!(
        matches!(&e, ModelError::Tensor { name, reason } if name == "token_embd.weight" && reason == "missing"),
        "{e}"
    );

    // Reading: not a file, not a standalone draft (an anchor file), a wrong shape.
    let missing = dir.join("nope.safetensors");
    assert!(matches!(load(&missing, &cfg), Err(ModelError::File { path, .. }) if path == missing));
    let anchor_path = dir.join("anchor.safetensors");
    let layer: Vec<(&'static str, &[f32])> = ecspec_model::anchor::layer_tensors(&cfg)
        .into_iter()
        .map(|(n, _)| {
            let full = format!("blk.0.{n}");
            let v = &tensors.iter().find(|(m, _)| *m == full).unwrap().1;
            (n, v.as_slice())
        })
        .collect();
    ecspec_model::anchor::save_anchor(&anchor_path, &cfg, &layer, StoreDtype::F16).unwrap();
    let e = load(&anchor_path, &cfg).err().unwrap().to_string();
    assert!(e.contains("not a standalone draft"), "{e}");

    // Non-finite weights are refused, naming the tensor.
    let mut poisoned = tensors.clone();
    poisoned[1].1[0] = f32::NAN;
    let p = dir.join("nan.safetensors");
    save(&p, &cfg, cfg.num_layers, &poisoned, StoreDtype::F32).unwrap();
    let e = load(&p, &cfg).err().unwrap().to_string();
    assert!(
        e.contains("output_norm.weight") && e.contains("value 0 is NaN"),
        "{e}"
    );

    let mut other = cfg.clone();
    other.hidden_size *= 2;
    let p = dir.join("ok.safetensors");
    save(&p, &cfg, cfg.num_layers, &tensors, StoreDtype::F16).unwrap();
    let e = load(&p, &other).err().unwrap();
    assert!(
        matches!(&e, ModelError::Tensor { name, reason } if name.ends_with("token_embd.weight") && reason.contains("the base needs")),
        "{e}"
    );
}
