//! LoRA adapters on the tiny model: the identity adapter changes nothing, a real one keeps the
//! block == token-by-token invariant, PEFT files round-trip exactly, and every way an adapter
//! can be wrong is reported precisely.

use std::path::{Path, PathBuf};

use ecspec_model::lora::{gguf_to_hf_rows, PEFT_CONFIG_FILE, PEFT_WEIGHTS_FILE};
use ecspec_model::tiny::{write_tiny_model, TinySpec};
use ecspec_model::{
    LoadedModel, LogitsFor, LoraAdapter, LoraError, LoraTarget, ModelConfig, ModelError, Session,
    Transformer,
};
use safetensors::tensor::{Dtype, TensorView};

const TOKENS: [u32; 10] = [72, 101, 108, 108, 111, 32, 119, 111, 114, 108];

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ecspec-lora-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn tiny(name: &str) -> LoadedModel {
    let path = scratch(name).join("tiny.gguf");
    write_tiny_model(&path, TinySpec::default()).unwrap();
    LoadedModel::load(&path).unwrap()
}

/// Every target on every layer, A and B both random (B non-zero, so the update is real).
fn random_adapter(cfg: &ModelConfig, seed: u64) -> LoraAdapter {
    let mut a = LoraAdapter::init(
        cfg,
        4,
        8.0,
        0..cfg.num_layers,
        &LoraTarget::ALL,
        seed,
        "tiny",
    )
    .unwrap();
    let mut k = seed as f32;
    for layer in 0..cfg.num_layers {
        for t in LoraTarget::ALL {
            for (i, b) in a.pair_mut(layer, t).unwrap().b_mut().iter_mut().enumerate() {
                k += 1.0;
                *b = ((i as f32 * 0.37 + k * 0.11).sin()) * 0.05;
            }
        }
    }
    a
}

fn greedy(t: &std::sync::Arc<Transformer>) -> Vec<f32> {
    let mut s = Session::new(t.clone());
    s.forward(&TOKENS, LogitsFor::All)
        .unwrap()
        .row_slices()
        .concat()
}

#[test]
fn zero_b_adapter_leaves_logits_bit_identical() {
    let m = tiny("zero");
    let cfg = m.transformer.config().clone();
    let adapter = LoraAdapter::init(
        &cfg,
        8,
        16.0,
        0..cfg.num_layers,
        &LoraTarget::ALL,
        3,
        "tiny",
    )
    .unwrap();
    assert_eq!(adapter.len(), cfg.num_layers * 7);
    let adapted = std::sync::Arc::new(Transformer::with_adapter(&m.transformer, &adapter).unwrap());
    assert!(adapted.is_adapted());
    assert_eq!(greedy(&adapted), greedy(&m.transformer));
}

#[test]
fn random_adapter_changes_logits_and_block_still_equals_token_by_token() {
    let m = tiny("random");
    let cfg = m.transformer.config().clone();
    let adapted = std::sync::Arc::new(
        Transformer::with_adapter(&m.transformer, &random_adapter(&cfg, 5)).unwrap(),
    );
    let block = greedy(&adapted);
    assert_ne!(
        block,
        greedy(&m.transformer),
        "a non-zero B changes the logits"
    );
    let mut step = Session::new(adapted.clone());
    let v = cfg.vocab_size;
    for (i, &t) in TOKENS.iter().enumerate() {
        let one = step.forward(&[t], LogitsFor::All).unwrap();
        assert_eq!(one.row(0), &block[i * v..(i + 1) * v], "position {i}");
    }
    // The base is untouched by the adapted model that shares its weights.
    assert!(!m.transformer.is_adapted());
}

#[test]
fn peft_save_then_load_is_exact_and_unpermutes_q_k_on_disk() {
    let m = tiny("roundtrip");
    let cfg = m.transformer.config().clone();
    let adapter = random_adapter(&cfg, 9);
    let dir = scratch("roundtrip-peft");
    adapter.save_peft(&dir, &cfg).unwrap();
    let back = LoraAdapter::load_peft(&dir, &cfg).unwrap();
    assert_eq!(back, adapter);

    // adapter_config.json is what PEFT writes.
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(PEFT_CONFIG_FILE)).unwrap())
            .unwrap();
    assert_eq!(json["peft_type"], "LORA");
    assert_eq!(json["task_type"], "CAUSAL_LM");
    assert_eq!(json["r"], 4);
    assert_eq!(json["lora_alpha"], 8.0);
    assert_eq!(json["bias"], "none");
    assert_eq!(json["fan_in_fan_out"], false);
    assert_eq!(
        json["target_modules"],
        serde_json::json!([
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj"
        ])
    );

    // On disk B of q/k is in Hugging Face's row order; v is stored as is.
    let bytes = std::fs::read(dir.join(PEFT_WEIGHTS_FILE)).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.len(), 2 * cfg.num_layers * 7);
    let read = |name: &str| -> (Vec<usize>, Vec<f32>) {
        let t = st.tensor(name).unwrap();
        assert_eq!(t.dtype(), Dtype::F32);
        (
            t.shape().to_vec(),
            t.data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        )
    };
    let (shape, q_b) = read("base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight");
    assert_eq!(shape, vec![cfg.num_heads * cfg.head_dim, 4]);
    assert_eq!(
        q_b,
        gguf_to_hf_rows(
            adapter.pair(1, LoraTarget::AttnQ).unwrap().b(),
            4,
            cfg.num_heads
        )
    );
    assert_ne!(q_b, adapter.pair(1, LoraTarget::AttnQ).unwrap().b());
    let (_, k_b) = read("base_model.model.model.layers.2.self_attn.k_proj.lora_B.weight");
    assert_eq!(
        k_b,
        gguf_to_hf_rows(
            adapter.pair(2, LoraTarget::AttnK).unwrap().b(),
            4,
            cfg.num_kv_heads
        )
    );
    let (_, v_b) = read("base_model.model.model.layers.2.self_attn.v_proj.lora_B.weight");
    assert_eq!(v_b, adapter.pair(2, LoraTarget::AttnV).unwrap().b());
    let (shape, q_a) = read("base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight");
    assert_eq!(shape, vec![4, cfg.hidden_size]);
    assert_eq!(
        q_a,
        adapter.pair(1, LoraTarget::AttnQ).unwrap().a(),
        "A is never permuted"
    );

    // The loaded adapter runs to the same logits.
    let a1 = std::sync::Arc::new(Transformer::with_adapter(&m.transformer, &adapter).unwrap());
    let a2 = std::sync::Arc::new(Transformer::with_adapter(&m.transformer, &back).unwrap());
    assert_eq!(greedy(&a1), greedy(&a2));
}

/// Writes a PEFT directory by hand: `config` as JSON, `tensors` as F32 safetensors.
fn write_peft(dir: &Path, config: serde_json::Value, tensors: &[(&str, Vec<usize>)]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(PEFT_CONFIG_FILE), config.to_string()).unwrap();
    let data: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, s)| vec![0u8; 4 * s.iter().product::<usize>()])
        .collect();
    let views: Vec<(&str, TensorView<'_>)> = tensors
        .iter()
        .zip(&data)
        .map(|((n, s), d)| (*n, TensorView::new(Dtype::F32, s.clone(), d).unwrap()))
        .collect();
    std::fs::write(
        dir.join(PEFT_WEIGHTS_FILE),
        safetensors::serialize(views, None).unwrap(),
    )
    .unwrap();
}

fn config(r: usize, modules: &[&str]) -> serde_json::Value {
    serde_json::json!({"peft_type": "LORA", "r": r, "lora_alpha": 16, "target_modules": modules,
        "bias": "none", "task_type": "CAUSAL_LM", "fan_in_fan_out": false,
        "base_model_name_or_path": "HuggingFaceTB/SmolLM2-135M-Instruct"})
}

const QA: &str = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight";
const QB: &str = "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight";

#[test]
fn peft_errors_name_what_is_wrong() {
    let m = tiny("errors");
    let cfg = m.transformer.config().clone();
    let (d, r) = (cfg.hidden_size, 4);
    let root = scratch("errors-peft");
    let case = |name: &str, conf: serde_json::Value, tensors: &[(&str, Vec<usize>)]| -> LoraError {
        let dir = root.join(name);
        write_peft(&dir, conf, tensors);
        LoraAdapter::load_peft(&dir, &cfg).expect_err(name)
    };

    // A loadable adapter, to make sure the failures below are the single thing changed.
    let good = case(
        "good-but-undeclared",
        config(r, &["v_proj"]),
        &[(QA, vec![r, d]), (QB, vec![d, r])],
    );
    assert!(
        matches!(&good, LoraError::UndeclaredModule { module, .. } if module == "q_proj"),
        "{good}"
    );
    let dir = root.join("good");
    write_peft(
        &dir,
        config(r, &["q_proj"]),
        &[(QA, vec![r, d]), (QB, vec![d, r])],
    );
    let ok = LoraAdapter::load_peft(&dir, &cfg).unwrap();
    assert_eq!(
        (ok.rank(), ok.alpha(), ok.scale(), ok.len()),
        (4, 16.0, 4.0, 1)
    );

    // Missing files.
    let empty = root.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let e = LoraAdapter::load_peft(&empty, &cfg).unwrap_err();
    assert!(
        matches!(&e, LoraError::MissingFile { path } if path.ends_with(PEFT_CONFIG_FILE)),
        "{e}"
    );
    std::fs::write(
        empty.join(PEFT_CONFIG_FILE),
        config(r, &["q_proj"]).to_string(),
    )
    .unwrap();
    let e = LoraAdapter::load_peft(&empty, &cfg).unwrap_err();
    assert!(
        matches!(&e, LoraError::MissingFile { path } if path.ends_with(PEFT_WEIGHTS_FILE)),
        "{e}"
    );
    assert!(e.to_string().contains("adapter_model.safetensors"), "{e}");

    // Wrong shape for the base: B with the wrong number of output rows.
    let e = case(
        "shape",
        config(r, &["q_proj"]),
        &[(QA, vec![r, d]), (QB, vec![d + 2, r])],
    );
    assert!(
        matches!(&e, LoraError::Shape { layer: 0, target: LoraTarget::AttnQ, which: 'B', expected, found }
            if *expected == vec![d, r] && *found == vec![d + 2, r]),
        "{e}"
    );
    assert!(
        e.to_string().contains("[66, 4]") && e.to_string().contains("[64, 4]"),
        "{e}"
    );

    // Rank mismatch: A has r + 1 rows while the config says r.
    let e = case(
        "rank",
        config(r, &["q_proj"]),
        &[(QA, vec![r + 1, d]), (QB, vec![d, r])],
    );
    assert!(
        matches!(
            &e,
            LoraError::RankMismatch {
                which: 'A',
                expected: 4,
                found: 5,
                ..
            }
        ),
        "{e}"
    );
    let e = case(
        "rank-b",
        config(r, &["q_proj"]),
        &[(QA, vec![r, d]), (QB, vec![d, r - 1])],
    );
    assert!(
        matches!(
            &e,
            LoraError::RankMismatch {
                which: 'B',
                expected: 4,
                found: 3,
                ..
            }
        ),
        "{e}"
    );

    // Unknown module (tensor) and unknown target_modules entry.
    let bad = "base_model.model.model.layers.0.self_attn.rotary_emb.lora_A.weight";
    let e = case("module", config(r, &["q_proj"]), &[(bad, vec![r, d])]);
    assert!(
        matches!(&e, LoraError::UnknownModule { module, .. } if module == "self_attn.rotary_emb"),
        "{e}"
    );
    let e = case(
        "target-module",
        config(r, &["q_proj", "lm_head"]),
        &[(QA, vec![r, d]), (QB, vec![d, r])],
    );
    assert!(
        matches!(&e, LoraError::UnknownTargetModule { module, .. } if module == "lm_head"),
        "{e}"
    );

    // Layer index out of range: the tiny model has 4 layers.
    let (a4, b4) = (
        "base_model.model.model.layers.4.mlp.up_proj.lora_A.weight",
        "base_model.model.model.layers.4.mlp.up_proj.lora_B.weight",
    );
    let e = case(
        "layer",
        config(r, &["up_proj"]),
        &[(a4, vec![r, d]), (b4, vec![2 * d, r])],
    );
    assert!(
        matches!(
            &e,
            LoraError::LayerOutOfRange {
                layer: 4,
                target: LoraTarget::FfnUp,
                layers: 4
            }
        ),
        "{e}"
    );

    // Half a pair.
    let e = case("half", config(r, &["q_proj"]), &[(QA, vec![r, d])]);
    assert!(
        matches!(
            &e,
            LoraError::MissingHalf {
                layer: 0,
                target: LoraTarget::AttnQ,
                missing: 'B'
            }
        ),
        "{e}"
    );

    // Config keys.
    let mut c = config(r, &["q_proj"]);
    c["peft_type"] = "IA3".into();
    let e = case("ia3", c, &[(QA, vec![r, d]), (QB, vec![d, r])]);
    assert!(
        matches!(&e, LoraError::Unsupported { key, .. } if key == "peft_type"),
        "{e}"
    );
    let mut c = config(r, &["q_proj"]);
    c["fan_in_fan_out"] = true.into();
    let e = case("fifo", c, &[(QA, vec![r, d]), (QB, vec![d, r])]);
    assert!(
        matches!(&e, LoraError::Unsupported { key, .. } if key == "fan_in_fan_out"),
        "{e}"
    );
    let mut c = config(r, &["q_proj"]);
    c["r"] = 0.into();
    let e = case("r0", c, &[(QA, vec![r, d]), (QB, vec![d, r])]);
    assert!(
        matches!(&e, LoraError::Config { key, .. } if key == "r"),
        "{e}"
    );

    // A tensor that is not a LoRA tensor.
    let e = case(
        "name",
        config(r, &["q_proj"]),
        &[("model.embed_tokens.weight", vec![2, d])],
    );
    assert!(
        matches!(&e, LoraError::UnexpectedTensor { tensor } if tensor == "model.embed_tokens.weight"),
        "{e}"
    );
}

#[test]
fn with_adapter_refuses_an_adapter_for_another_base() {
    let m = tiny("other-base");
    let mut bigger = m.transformer.config().clone();
    bigger.hidden_size *= 2;
    bigger.head_dim *= 2;
    bigger.ffn_size *= 2;
    let adapter =
        LoraAdapter::init(&bigger, 2, 4.0, 0..1, &[LoraTarget::FfnDown], 1, "big").unwrap();
    let e = Transformer::with_adapter(&m.transformer, &adapter)
        .err()
        .unwrap();
    assert!(
        matches!(&e, ModelError::Lora(l) if matches!(**l, LoraError::Shape { target: LoraTarget::FfnDown, which: 'A', .. })),
        "{e}"
    );
    let e = LoraAdapter::init(
        m.transformer.config(),
        2,
        4.0,
        3..5,
        &[LoraTarget::AttnV],
        1,
        "tiny",
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            LoraError::LayerOutOfRange {
                layer: 4,
                target: LoraTarget::AttnV,
                layers: 4
            }
        ),
        "{e}"
    );
}
