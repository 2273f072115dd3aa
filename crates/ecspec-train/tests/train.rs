//! Training on the tiny model: the differentiable model computes the runtime's function, both
//! trainings lower their loss, a resumed run follows the uninterrupted one's trajectory, and
//! what the runs save loads back into the runtime.

use std::path::{Path, PathBuf};

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use ecspec_model::tiny::{write_tiny_model, TinySpec};
use ecspec_model::{LoadedModel, LogitsFor, LoraAdapter, Transformer};
use ecspec_train::model::{token_tensor, F32Model};
use ecspec_train::{
    corpus, eval_alpha, evolve, mean_cross_entropy, train_draft, DraftTrainConfig, EvolveConfig,
    NoReport, Schedule, Split,
};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ecspec-train-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn tiny(dir: &Path) -> LoadedModel {
    let path = dir.join("tiny.gguf");
    write_tiny_model(&path, TinySpec::default()).unwrap();
    LoadedModel::load(&path).unwrap()
}

/// Rewrites a GGUF with every tensor dequantized to F32 — so the runtime multiplies by the
/// same f32 values as the training model, without quantizing activations — optionally as a
/// Qwen2 model (metadata renamed, random Q/K/V biases added) to cover the other RoPE layout.
fn rewrite_f32(src: &Path, dst: &Path, as_qwen2: bool) {
    let mut r = std::io::BufReader::new(std::fs::File::open(src).unwrap());
    let content = gguf_file::Content::read(&mut r).unwrap();
    let mut md: Vec<(String, gguf_file::Value)> = content
        .metadata
        .iter()
        .map(|(k, v)| {
            if as_qwen2 && k == "general.architecture" {
                (k.clone(), gguf_file::Value::String("qwen2".into()))
            } else if as_qwen2 && k.starts_with("llama.") {
                (k.replacen("llama.", "qwen2.", 1), v.clone())
            } else {
                (k.clone(), v.clone())
            }
        })
        .collect();
    md.sort_by(|a, b| a.0.cmp(&b.0));
    let mut names: Vec<String> = content.tensor_infos.keys().cloned().collect();
    names.sort();
    let mut ts = Vec::new();
    for n in &names {
        let t = content
            .tensor(&mut r, n, &Device::Cpu)
            .unwrap()
            .dequantize(&Device::Cpu)
            .unwrap();
        ts.push((n.clone(), QTensor::quantize(&t, GgmlDType::F32).unwrap()));
    }
    if as_qwen2 {
        let layers = names
            .iter()
            .filter(|n| n.ends_with("attn_q.weight"))
            .count();
        for i in 0..layers {
            for (s, len) in [
                ("attn_q.bias", 64),
                ("attn_k.bias", 32),
                ("attn_v.bias", 32),
            ] {
                let v: Vec<f32> = (0..len)
                    .map(|j| ((i * 31 + j * 7 + s.len()) as f32 * 0.37).sin() * 0.3)
                    .collect();
                let t = Tensor::from_vec(v, len, &Device::Cpu).unwrap();
                ts.push((
                    format!("blk.{i}.{s}"),
                    QTensor::quantize(&t, GgmlDType::F32).unwrap(),
                ));
            }
        }
    }
    let md_refs: Vec<(&str, &gguf_file::Value)> = md.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let t_refs: Vec<(&str, &QTensor)> = ts.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut w = std::io::BufWriter::new(std::fs::File::create(dst).unwrap());
    gguf_file::write(&mut w, &md_refs, &t_refs).unwrap();
}

const PROSE: &str = "The quick brown fox jumps over the lazy dog. A bad cab can grab a crab. \
Abba and Babs had a banana bread; Ada baked a cake and a baguette. ";

fn windows(base: &LoadedModel, dir: &Path, seq_len: usize, max_tokens: usize) -> Vec<Vec<u32>> {
    let text_dir = dir.join("text");
    std::fs::create_dir_all(&text_dir).unwrap();
    for i in 0..24 {
        let body: String = (0..6).map(|j| format!("{i} {j}: {PROSE}\n")).collect();
        std::fs::write(text_dir.join(format!("doc{i:02}.txt")), body).unwrap();
    }
    let units =
        corpus::read_units(&corpus::CorpusSpec::new(vec![text_dir], vec!["txt".into()])).unwrap();
    corpus::token_windows(&base.tokenizer, &units, Split::Train, seq_len, max_tokens).unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn f32_vs_runtime(as_qwen2: bool) -> f32 {
    let dir = scratch(if as_qwen2 {
        "match-qwen2"
    } else {
        "match-llama"
    });
    write_tiny_model(&dir.join("q8.gguf"), TinySpec::default()).unwrap();
    let path = dir.join("f32.gguf");
    rewrite_f32(&dir.join("q8.gguf"), &path, as_qwen2);
    let rt = LoadedModel::load(&path).unwrap();
    let tokens: Vec<u32> = rt
        .tokenizer
        .encode("Hello world, a bad cab!", false)
        .unwrap();
    let want = rt
        .transformer
        .forward(&mut rt.transformer.new_cache(), &tokens, LogitsFor::All)
        .unwrap();
    let mut f = ecspec_model::gguf::GgufFile::open(&path).unwrap();
    let n = rt.transformer.num_layers();
    let m = F32Model::load(&mut f, 0..n).unwrap();
    let got = m
        .forward(&token_tensor(&[&tokens]).unwrap())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    max_abs_diff(&got, &want.row_slices().concat())
}

#[test]
fn f32_model_matches_runtime_llama() {
    let d = f32_vs_runtime(false);
    assert!(d < 1e-3, "max |Δlogit| = {d}");
}

#[test]
fn f32_model_matches_runtime_qwen2() {
    let d = f32_vs_runtime(true);
    assert!(d < 1e-3, "max |Δlogit| = {d}");
}

#[test]
fn f32_model_is_close_to_the_quantized_runtime() {
    // The runtime with Q8_0 weights also quantizes activations to Q8_0; the f32 model does
    // not, so they agree only roughly.
    let dir = scratch("match-q8");
    let rt = tiny(&dir);
    let tokens: Vec<u32> = rt
        .tokenizer
        .encode("Hello world, a bad cab!", false)
        .unwrap();
    let want = rt
        .transformer
        .forward(&mut rt.transformer.new_cache(), &tokens, LogitsFor::All)
        .unwrap();
    let mut f = ecspec_model::gguf::GgufFile::open(&rt.path).unwrap();
    let m = F32Model::load(&mut f, 0..rt.transformer.num_layers()).unwrap();
    let got = m
        .forward(&token_tensor(&[&tokens]).unwrap())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let d = max_abs_diff(&got, &want.row_slices().concat());
    assert!(d < 0.1, "max |Δlogit| = {d}");
}

fn draft_cfg(steps: usize, checkpoint_every: usize) -> DraftTrainConfig {
    DraftTrainConfig {
        shared_layers: 2,
        seq_len: 32,
        mse_weight: 1.0,
        kl_weight: 1.0,
        kl_top_k: None,
        schedule: Schedule {
            steps,
            batch_windows: 4,
            lr: 3e-3,
            warmup_steps: 2,
            weight_decay: 0.0,
            seed: 7,
            checkpoint_every,
        },
        lower_lora: None,
    }
}

fn mean(v: &[f32]) -> f32 {
    v.iter().sum::<f32>() / v.len() as f32
}

#[test]
fn train_draft_lowers_the_loss_and_its_anchor_loads_into_the_runtime() {
    let dir = scratch("draft");
    let base = tiny(&dir);
    let w = windows(&base, &dir, 32, 1024);
    let out = dir.join("out");
    let r = train_draft(&base, &w, &draft_cfg(24, 0), &out, false, &mut NoReport).unwrap();
    let losses: Vec<f32> = r.history.iter().map(|s| s.loss).collect();
    assert_eq!(losses.len(), 24);
    assert!(
        mean(&losses[20..]) < 0.8 * mean(&losses[..4]),
        "loss did not fall: {losses:?}"
    );
    assert!(r.tokens_per_sec > 0.0);

    let cfg = base.transformer.config().clone();
    let anchor = ecspec_model::anchor::load_anchor(&r.anchor_path, &cfg).unwrap();
    let trained = Transformer::shared_backbone_draft(&base.transformer, 2, Some(anchor)).unwrap();
    let untrained = Transformer::shared_backbone_draft(&base.transformer, 2, None).unwrap();
    let a_trained = eval_alpha(&base.transformer, &trained, &w).unwrap();
    let a_untrained = eval_alpha(&base.transformer, &untrained, &w).unwrap();
    assert_eq!(a_trained.positions, w.len() * 32);
    assert!(
        a_trained.alpha() >= a_untrained.alpha(),
        "trained α {} < untrained α {}",
        a_trained.alpha(),
        a_untrained.alpha()
    );
}

#[test]
fn train_draft_with_lower_lora_trains_both_and_the_runtime_draft_applies_the_adapter() {
    let dir = scratch("draft-lower");
    let base = tiny(&dir);
    let w = windows(&base, &dir, 32, 1024);
    let mut cfg = draft_cfg(24, 0);
    cfg.lower_lora = Some(ecspec_train::draft::LowerLora {
        rank: 4,
        alpha: 8.0,
        modules: vec!["q_proj".into(), "down_proj".into()],
    });
    let r = train_draft(&base, &w, &cfg, &dir.join("out"), false, &mut NoReport).unwrap();
    let losses: Vec<f32> = r.history.iter().map(|s| s.loss).collect();
    assert!(
        mean(&losses[20..]) < 0.8 * mean(&losses[..4]),
        "loss did not fall: {losses:?}"
    );
    let lower_dir = r.lower_adapter.expect("a lower adapter");
    let config = base.transformer.config().clone();
    let lower = LoraAdapter::load_peft(&lower_dir, &config).unwrap();
    // Layers 0..k only, both modules, and trained (B starts at zero).
    let keys: Vec<(usize, String)> = lower
        .iter()
        .map(|((l, t), _)| (*l, t.peft_module().to_string()))
        .collect();
    assert_eq!(keys.len(), 4, "{keys:?}");
    assert!(keys.iter().all(|(l, _)| *l < 2), "{keys:?}");
    assert!(lower.iter().any(|(_, p)| p.b().iter().any(|x| *x != 0.0)));
    let anchor = ecspec_model::anchor::load_anchor(&r.anchor_path, &config).unwrap();
    let with = ecspec_model::Draft::shared_backbone_with_lower(
        &base,
        2,
        Some(anchor.clone()),
        Some(&lower),
    )
    .unwrap();
    let without = ecspec_model::Draft::shared_backbone(&base, 2, Some(anchor)).unwrap();
    let a = with
        .transformer
        .forward(&mut with.transformer.new_cache(), &w[0], LogitsFor::All)
        .unwrap();
    let b = without
        .transformer
        .forward(&mut without.transformer.new_cache(), &w[0], LogitsFor::All)
        .unwrap();
    assert!(max_abs_diff(&a.row_slices().concat(), &b.row_slices().concat()) > 1e-3);
    let a_lower = eval_alpha(&base.transformer, &with.transformer, &w).unwrap();
    let untrained = Transformer::shared_backbone_draft(&base.transformer, 2, None).unwrap();
    let a_untrained = eval_alpha(&base.transformer, &untrained, &w).unwrap();
    assert!(
        a_lower.alpha() >= a_untrained.alpha(),
        "{} < {}",
        a_lower.alpha(),
        a_untrained.alpha()
    );
    // An adapter touching a layer at or above k is refused.
    let e = ecspec_model::Draft::shared_backbone_with_lower(&base, 1, None, Some(&lower))
        .err()
        .expect("refused")
        .to_string();
    assert!(e.contains("layer 1"), "{e}");
}

#[test]
fn an_untrained_anchor_saved_and_loaded_is_the_last_layer_copy() {
    let dir = scratch("anchor-copy");
    let base = tiny(&dir);
    let w = windows(&base, &dir, 32, 256);
    // Zero steps: the anchor written is the initial copy of the base's last layer.
    let mut cfg = draft_cfg(0, 0);
    cfg.schedule.steps = 0;
    let r = train_draft(&base, &w, &cfg, &dir.join("out"), false, &mut NoReport).unwrap();
    assert!(r.history.is_empty());
    let anchor =
        ecspec_model::anchor::load_anchor(&r.anchor_path, base.transformer.config()).unwrap();
    let loaded = Transformer::shared_backbone_draft(&base.transformer, 2, Some(anchor)).unwrap();
    let builtin = Transformer::shared_backbone_draft(&base.transformer, 2, None).unwrap();
    let a = loaded
        .forward(&mut loaded.new_cache(), &w[0], LogitsFor::All)
        .unwrap();
    let b = builtin
        .forward(&mut builtin.new_cache(), &w[0], LogitsFor::All)
        .unwrap();
    let (a, b) = (a.row_slices().concat(), b.row_slices().concat());
    let d = max_abs_diff(&a, &b);
    // The anchor file is F16: rounding can move a weight across a Q8_0 rounding boundary when
    // the runtime re-quantizes it (one step = 1/127 of its block's largest value), a few per
    // cent of the logits' range through the tiny model at most.
    let range = b.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    assert!(
        d < 0.05 * range,
        "F16 copy differs by {d} (largest |logit| {range})"
    );
}

#[test]
fn resumed_draft_run_follows_the_uninterrupted_trajectory() {
    resumed_draft_run(false);
}

#[test]
fn resumed_draft_run_with_lower_lora_follows_the_uninterrupted_trajectory() {
    resumed_draft_run(true);
}

/// Tolerance: 1e-5 relative per step (same kernels, same batches; only summation order of
/// multi-threaded reductions may differ).
fn resumed_draft_run(lower: bool) {
    let dir = scratch(if lower {
        "draft-resume-lower"
    } else {
        "draft-resume"
    });
    let base = tiny(&dir);
    let w = windows(&base, &dir, 32, 1024);
    let mut cfg = draft_cfg(8, 4);
    cfg.kl_top_k = Some(16);
    if lower {
        cfg.lower_lora = Some(ecspec_train::draft::LowerLora {
            rank: 4,
            alpha: 8.0,
            modules: vec!["v_proj".into(), "up_proj".into()],
        });
    }
    let straight = train_draft(&base, &w, &cfg, &dir.join("a"), false, &mut NoReport).unwrap();
    let mut first = cfg.clone();
    first.schedule.steps = 4;
    train_draft(&base, &w, &first, &dir.join("b"), false, &mut NoReport).unwrap();
    let resumed = train_draft(&base, &w, &cfg, &dir.join("b"), true, &mut NoReport).unwrap();
    assert_eq!(resumed.history.len(), 8);
    for (a, b) in straight.history.iter().zip(&resumed.history) {
        assert!(
            (a.loss - b.loss).abs() <= 1e-5 * a.loss.abs().max(1.0),
            "step {}: {} vs {}",
            a.step,
            a.loss,
            b.loss
        );
    }
    let fa = std::fs::read(&straight.anchor_path).unwrap();
    let fb = std::fs::read(&resumed.anchor_path).unwrap();
    assert_eq!(fa, fb, "final anchors differ");
    if lower {
        let la = std::fs::read(
            straight
                .lower_adapter
                .unwrap()
                .join("adapter_model.safetensors"),
        )
        .unwrap();
        let lb = std::fs::read(
            resumed
                .lower_adapter
                .unwrap()
                .join("adapter_model.safetensors"),
        )
        .unwrap();
        assert_eq!(la, lb, "final lower adapters differ");
    }
    // Other settings: refused, naming the difference.
    let mut other = cfg.clone();
    other.kl_weight = 0.5;
    other.schedule.steps = 10;
    let e = train_draft(&base, &w, &other, &dir.join("b"), true, &mut NoReport)
        .unwrap_err()
        .to_string();
    assert!(e.contains("other settings"), "{e}");
}

fn evolve_cfg(steps: usize, checkpoint_every: usize) -> EvolveConfig {
    EvolveConfig {
        version: "tiny-prose".into(),
        rank: 4,
        alpha: 8.0,
        modules: ["q_proj", "k_proj", "v_proj", "o_proj"]
            .map(String::from)
            .to_vec(),
        layers: Some(2..4),
        seq_len: 33,
        schedule: Schedule {
            steps,
            batch_windows: 4,
            lr: 1e-2,
            warmup_steps: 2,
            weight_decay: 0.0,
            seed: 3,
            checkpoint_every,
        },
        base_model: Some("HuggingFaceTB/SmolLM2-135M-Instruct".into()),
    }
}

#[test]
fn evolve_lowers_the_loss_and_saves_a_peft_adapter_the_runtime_applies() {
    let dir = scratch("evolve");
    let base = tiny(&dir);
    let w = windows(&base, &dir, 33, 2048);
    let out = dir.join("v1");
    let r = evolve(&base, &w, &evolve_cfg(20, 0), &out, false, &mut NoReport).unwrap();
    let losses: Vec<f32> = r.history.iter().map(|s| s.loss).collect();
    assert!(
        mean(&losses[16..]) < 0.9 * mean(&losses[..4]),
        "loss did not fall: {losses:?}"
    );
    assert!(
        out.join("adapter_config.json").is_file()
            && out.join("adapter_model.safetensors").is_file()
    );
    let cfg = base.transformer.config().clone();
    let adapter = LoraAdapter::load_peft(&out, &cfg).unwrap();
    assert_eq!(adapter, r.adapter, "PEFT round trip");
    let pc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("adapter_config.json")).unwrap())
            .unwrap();
    assert_eq!(
        pc["base_model_name_or_path"],
        "HuggingFaceTB/SmolLM2-135M-Instruct"
    );
    let target = Transformer::with_adapter(&base.transformer, &adapter).unwrap();
    let before = mean_cross_entropy(&base.transformer, &w).unwrap();
    let after = mean_cross_entropy(&target, &w).unwrap();
    assert!(
        after < before - 0.1,
        "runtime cross-entropy {before} → {after}"
    );
}

#[test]
fn resumed_evolve_run_follows_the_uninterrupted_trajectory() {
    let dir = scratch("evolve-resume");
    let base = tiny(&dir);
    let w = windows(&base, &dir, 33, 1024);
    let straight = evolve(
        &base,
        &w,
        &evolve_cfg(6, 3),
        &dir.join("a"),
        false,
        &mut NoReport,
    )
    .unwrap();
    evolve(
        &base,
        &w,
        &evolve_cfg(3, 3),
        &dir.join("b"),
        false,
        &mut NoReport,
    )
    .unwrap();
    let resumed = evolve(
        &base,
        &w,
        &evolve_cfg(6, 3),
        &dir.join("b"),
        true,
        &mut NoReport,
    )
    .unwrap();
    for (a, b) in straight.history.iter().zip(&resumed.history) {
        assert!(
            (a.loss - b.loss).abs() <= 1e-5 * a.loss.abs().max(1.0),
            "step {}: {} vs {}",
            a.step,
            a.loss,
            b.loss
        );
    }
    assert_eq!(straight.adapter, resumed.adapter);
}

#[test]
fn resume_without_a_checkpoint_says_so() {
    let dir = scratch("no-ckpt");
    let base = tiny(&dir);
    let w = windows(&base, &dir, 33, 512);
    let e = evolve(
        &base,
        &w,
        &evolve_cfg(2, 0),
        &dir.join("none"),
        true,
        &mut NoReport,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("no checkpoint"), "{e}");
}

#[test]
fn distill_draft_lowers_the_loss_and_writes_a_standalone_draft() {
    let dir = scratch("distill");
    let base = tiny(&dir);
    let w = windows(&base, &dir, 32, 1024);
    let cfg = ecspec_train::DistillConfig {
        layers: 1,
        seq_len: 32,
        mse_weight: 1.0,
        kl_weight: 1.0,
        kl_top_k: Some(16),
        schedule: Schedule {
            steps: 24,
            batch_windows: 4,
            lr: 3e-3,
            warmup_steps: 2,
            weight_decay: 0.0,
            seed: 7,
            checkpoint_every: 0,
        },
    };
    let out = dir.join("out");
    let r = ecspec_train::distill_draft(
        &base,
        &base.transformer,
        &base.base_hash,
        &w,
        &cfg,
        &out,
        false,
        &mut NoReport,
    )
    .unwrap();
    let losses: Vec<f32> = r.history.iter().map(|s| s.loss).collect();
    assert_eq!(losses.len(), 24);
    assert!(
        mean(&losses[20..]) < 0.8 * mean(&losses[..4]),
        "loss did not fall: {losses:?}"
    );
    assert_eq!(
        r.file_bytes,
        std::fs::metadata(&r.draft_path).unwrap().len()
    );
    let draft = ecspec_model::Draft::standalone(&base, &r.draft_path).unwrap();
    assert_eq!(draft.transformer.num_layers(), 1);
    assert_eq!(draft.kind, ecspec_model::DraftKind::Independent);
    // Its own parameters: the embedding was trained, so it differs from the base's.
    let ids = [72u32, 101, 108];
    assert_ne!(
        draft.transformer.embed(&ids).unwrap(),
        base.transformer.embed(&ids).unwrap()
    );

    // A teacher distribution is required, and L must leave the base deeper than the draft.
    let mut bad = cfg.clone();
    bad.kl_top_k = None;
    let e = ecspec_train::distill_draft(
        &base,
        &base.transformer,
        "x",
        &w,
        &bad,
        &out,
        false,
        &mut NoReport,
    )
    .unwrap_err();
    assert!(e.to_string().contains("kl_top_k"), "{e}");
    let mut bad = cfg;
    bad.layers = base.transformer.num_layers();
    let e = ecspec_train::distill_draft(
        &base,
        &base.transformer,
        "x",
        &w,
        &bad,
        &out,
        false,
        &mut NoReport,
    )
    .unwrap_err();
    assert!(e.to_string().contains("1 ≤ L <"), "{e}");
}
