//! A batched forward pass over several sessions ([`Transformer::forward_batch`]) gives every
//! session exactly the logits — bit for bit — and the KV cache it gets alone, whatever shares
//! its batch: other prompts, other block sizes, other target versions (LoRA on the same base),
//! prefill chunks without logits. Exact equality holds on every CPU: both sides run the same
//! row-wise operations on the same machine.

use std::sync::Arc;

use ecspec_model::tiny::{write_tiny_model, TinySpec};
use ecspec_model::{
    BatchItem, KvCache, LoadedModel, Logits, LogitsFor, LoraAdapter, LoraTarget, ModelError,
    Transformer,
};

fn fixture() -> (Arc<Transformer>, Arc<Transformer>, Arc<Transformer>) {
    // One directory per call: tests run in parallel in this process.
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("ecspec-batch-test-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("base.gguf");
    write_tiny_model(
        &path,
        TinySpec {
            seed: 5,
            ..Default::default()
        },
    )
    .unwrap();
    let base = LoadedModel::load(&path).unwrap();
    let other_path = dir.join("other.gguf");
    write_tiny_model(
        &other_path,
        TinySpec {
            seed: 6,
            ..Default::default()
        },
    )
    .unwrap();
    let other = LoadedModel::load(&other_path).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let cfg = base.transformer.config().clone();
    let mut adapter =
        LoraAdapter::init(&cfg, 4, 8.0, 0..cfg.num_layers, &LoraTarget::ALL, 3, "tiny").unwrap();
    for layer in 0..cfg.num_layers {
        for t in LoraTarget::ALL {
            for (i, b) in adapter
                .pair_mut(layer, t)
                .unwrap()
                .b_mut()
                .iter_mut()
                .enumerate()
            {
                *b = ((i * 5 + layer * 11 + t as usize) as f32 * 0.37).sin() * 0.2;
            }
        }
    }
    let v1 = Arc::new(Transformer::with_adapter(&base.transformer, &adapter).unwrap());
    (base.transformer.clone(), v1, other.transformer.clone())
}

/// One session: its model, its cache, and the blocks it runs, one per iteration.
struct Case {
    model: Arc<Transformer>,
    blocks: Vec<(Vec<u32>, Option<LogitsFor>)>,
}

fn ids(s: &str) -> Vec<u32> {
    s.bytes().map(u32::from).collect()
}

/// Runs each case alone, block by block, with [`Transformer::forward`]; returns its logits per
/// block (None where no logits were asked) and its final cache length.
fn alone(c: &Case) -> (Vec<Option<Logits>>, KvCache) {
    let mut cache = c.model.new_cache();
    let mut out = Vec::new();
    for (tokens, want) in &c.blocks {
        let l = c
            .model
            .forward(&mut cache, tokens, want.unwrap_or(LogitsFor::Last))
            .unwrap();
        out.push(want.map(|_| l));
    }
    (out, cache)
}

#[test]
fn each_session_in_a_batch_gets_the_logits_it_gets_alone() {
    let (v0, v1, _) = fixture();
    let cases = [
        // A prompt prefilled in chunks (no logits but the last), then rounds of K = 4, 0, 2.
        Case {
            model: v0.clone(),
            blocks: vec![
                (ids("The quick brown"), None),
                (ids(" fox jumps"), Some(LogitsFor::Last)),
                (ids("abcde"), Some(LogitsFor::All)),
                (ids("x"), Some(LogitsFor::All)),
                (ids("yz!"), Some(LogitsFor::All)),
            ],
        },
        // Another version of the same base, other block sizes.
        Case {
            model: v1.clone(),
            blocks: vec![
                (ids("Hello"), Some(LogitsFor::Last)),
                (ids("q"), Some(LogitsFor::All)),
                (ids("rstuvwxy"), Some(LogitsFor::All)),
                (ids("12"), Some(LogitsFor::All)),
                (ids("3"), Some(LogitsFor::All)),
            ],
        },
        // A long prompt in one chunk beside the rounds, then single-token steps.
        Case {
            model: v0.clone(),
            blocks: vec![
                (
                    ids(&"lorem ipsum dolor sit amet ".repeat(4)),
                    Some(LogitsFor::All),
                ),
                (ids("a"), Some(LogitsFor::All)),
                (ids("b"), Some(LogitsFor::Last)),
                (ids("c"), Some(LogitsFor::All)),
                (ids("d"), Some(LogitsFor::All)),
            ],
        },
        Case {
            model: v1.clone(),
            blocks: vec![
                (vec![256, 258, 259], None),
                (ids("?"), Some(LogitsFor::Last)),
                (ids("!!"), Some(LogitsFor::All)),
                (ids("..."), Some(LogitsFor::All)),
                (ids("...."), Some(LogitsFor::All)),
            ],
        },
    ];
    let expected: Vec<_> = cases.iter().map(alone).collect();
    let mut caches: Vec<KvCache> = cases.iter().map(|c| c.model.new_cache()).collect();
    for step in 0..5 {
        let mut items: Vec<BatchItem<'_>> = cases
            .iter()
            .zip(caches.iter_mut())
            .map(|(c, cache)| BatchItem {
                model: &c.model,
                cache,
                tokens: &c.blocks[step].0,
                want: c.blocks[step].1,
            })
            .collect();
        let out = Transformer::forward_batch(&mut items).unwrap();
        for (i, r) in out.into_iter().enumerate() {
            let got = r.unwrap();
            assert_eq!(
                got, expected[i].0[step],
                "session {i}, step {step}: batched logits differ from alone"
            );
        }
    }
    for (i, cache) in caches.iter().enumerate() {
        assert_eq!(
            cache.len(),
            expected[i].1.len(),
            "session {i}: cache length"
        );
    }
    // The batched caches hold the same keys: one more token gives the same logits.
    for (i, (c, cache)) in cases.iter().zip(caches.iter_mut()).enumerate() {
        let mut alone_cache = expected[i].1.clone();
        let a = c
            .model
            .forward(&mut alone_cache, &[7], LogitsFor::All)
            .unwrap();
        let b = c.model.forward(cache, &[7], LogitsFor::All).unwrap();
        assert_eq!(a, b, "session {i}: caches differ");
    }
}

#[test]
fn a_bad_item_fails_alone_and_leaves_its_cache_untouched() {
    let (v0, v1, other) = fixture();
    let mut caches: Vec<KvCache> = (0..4).map(|_| v0.new_cache()).collect();
    let (good, bad_id, foreign, empty) = (ids("good"), vec![9999u32], ids("x"), Vec::new());
    let models = [&v0, &v1, &other, &v0];
    let blocks = [&good, &bad_id, &foreign, &empty];
    let mut items: Vec<BatchItem<'_>> = caches
        .iter_mut()
        .zip(models.iter().zip(blocks))
        .map(|(cache, (m, b))| BatchItem {
            model: m,
            cache,
            tokens: b,
            want: Some(LogitsFor::Last),
        })
        .collect();
    let out = Transformer::forward_batch(&mut items).unwrap();
    assert!(out[0].as_ref().is_ok_and(|l| l.is_some()));
    assert!(matches!(
        out[1],
        Err(ModelError::TokenOutOfRange { id: 9999, .. })
    ));
    assert!(
        matches!(&out[2], Err(ModelError::Incompatible(m)) if m.contains("other base")),
        "{:?}",
        out[2]
    );
    assert!(matches!(out[3], Err(ModelError::EmptyBlock)));
    drop(items);
    let lens: Vec<usize> = caches.iter().map(KvCache::len).collect();
    assert_eq!(lens, [4, 0, 0, 0]);
    let mut alone = v0.new_cache();
    let want = v0.forward(&mut alone, &good, LogitsFor::Last).unwrap();
    assert_eq!(out[0].as_ref().unwrap().as_ref().unwrap(), &want);
}
