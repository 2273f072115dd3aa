//! On every cached real model: a block forward pass gives bit-identical logits to one-token
//! passes at the same positions — the property that makes speculative greedy decoding return
//! exactly the target's own greedy output. (Catches a kernel whose rounding depends on the
//! number of rows, as candle's Q6_K kernels did before the runtime had its own.)
//! Skips (and passes) for models that are not in the cache.

use ecspec_model::{LoadedModel, LogitsFor, Session};

#[test]
fn block_forward_equals_token_by_token_on_real_models() {
    let cache = ecspec_weights::Cache::from_env().expect("cache dir");
    let mut checked = 0;
    for name in [
        "smollm2-135m-instruct",
        "qwen2.5-coder-0.5b-instruct",
        "qwen2.5-coder-1.5b-instruct",
    ] {
        let spec = ecspec_weights::find_model(name).unwrap();
        let Some(path) = ecspec_weights::cached_path(spec, &cache) else {
            eprintln!("skipped: {name} is not in the cache (run `ecspec models fetch {name}`)");
            continue;
        };
        let m = LoadedModel::load(&path).unwrap();
        let ids = m
            .tokenizer
            .encode(
                "fn main() {\n    println!(\"speculative decoding on the edge\");\n}\n",
                false,
            )
            .unwrap();
        let (prefix, block) = ids.split_at(ids.len() - 9);
        let mut a = Session::new(m.transformer.clone());
        a.forward(prefix, LogitsFor::Last).unwrap();
        let all = a.forward(block, LogitsFor::All).unwrap();
        let mut b = Session::new(m.transformer.clone());
        b.forward(prefix, LogitsFor::Last).unwrap();
        for (i, &t) in block.iter().enumerate() {
            let one = b.forward(&[t], LogitsFor::Last).unwrap();
            assert!(
                one.row(0) == all.row(i),
                "{name}: position {i} of the block differs from its one-token pass"
            );
        }
        checked += 1;
    }
    eprintln!("checked {checked} models");
}
