//! Anchor layer files: a copy of the base's last layer written and read back builds the same
//! draft as the untrained one; wrong files are refused naming the tensor.

use std::sync::Arc;

use candle_core::Device;
use ecspec_model::anchor::{layer_tensors, load_anchor, save_anchor, StoreDtype};
use ecspec_model::gguf::GgufFile;
use ecspec_model::tiny::{write_tiny_model, TinySpec};
use ecspec_model::{Draft, LoadedModel, LogitsFor, ModelError, Session};

#[test]
fn anchor_copied_from_the_last_layer_equals_the_untrained_draft() {
    let dir = std::env::temp_dir().join(format!("ecspec-anchor-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let gguf = dir.join("tiny.gguf");
    write_tiny_model(&gguf, TinySpec::default()).unwrap();
    let base = LoadedModel::load(&gguf).unwrap();
    let cfg = base.transformer.config().clone();
    let mut f = GgufFile::open(&gguf).unwrap();
    let last = cfg.num_layers - 1;
    let tensors: Vec<(&str, Vec<f32>)> = layer_tensors(&cfg)
        .into_iter()
        .map(|(n, shape)| {
            let name = format!("blk.{last}.{n}");
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
            (n, v)
        })
        .collect();
    let refs: Vec<(&str, &[f32])> = tensors.iter().map(|(n, v)| (*n, v.as_slice())).collect();
    let path = dir.join("anchor.safetensors");
    save_anchor(&path, &cfg, &refs, StoreDtype::F32).unwrap();
    let anchor = load_anchor(&path, &cfg).unwrap();

    let untrained = Draft::shared_backbone(&base, 2, None).unwrap();
    let copied = Draft::shared_backbone(&base, 2, Some(anchor)).unwrap();
    let run = |t: &Arc<ecspec_model::Transformer>| {
        Session::new(t.clone())
            .forward(&[72, 101, 108, 108, 111], LogitsFor::All)
            .unwrap()
    };
    assert_eq!(
        run(&copied.transformer),
        run(&untrained.transformer),
        "Q8_0 → f32 → Q8_0 is exact"
    );
    assert_eq!(copied.compat_hash, base.base_hash);

    // Missing and misshapen tensors name themselves.
    let e = save_anchor(
        &dir.join("x.safetensors"),
        &cfg,
        &refs[1..],
        StoreDtype::F32,
    )
    .unwrap_err();
    assert!(
        matches!(&e, ModelError::Tensor { name, reason } if name.ends_with("attn_norm.weight") && reason == "missing"),
        "{e}"
    );
    let mut wide = cfg.clone();
    wide.hidden_size = 96;
    let e = load_anchor(&path, &wide).err().unwrap();
    assert!(
        e.to_string().contains("attn_norm.weight") && e.to_string().contains("expected shape [96]"),
        "{e}"
    );
    let e = load_anchor(&dir.join("gone.safetensors"), &cfg)
        .err()
        .unwrap();
    assert!(
        matches!(&e, ModelError::File { path, .. } if path.ends_with("gone.safetensors")),
        "{e}"
    );
}
