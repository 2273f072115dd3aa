//! Decode speed of one GGUF model: `cargo run --release -p ecspec-model --example
//! decode_speed -- MODEL.gguf [STEPS]`; one-token steps after a 128-token prompt.

use std::sync::Arc;
use std::time::Instant;

use ecspec_model::{LoadedModel, LogitsFor, Session};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let m = LoadedModel::load(std::path::Path::new(&args[0])).expect("model");
    let steps: u32 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(64);
    let t: Arc<_> = m.transformer.clone();
    let mut s = Session::new(t);
    let prompt: Vec<u32> = (0..128u32).map(|i| 200 + (i * 37) % 5000).collect();
    s.forward(&prompt, LogitsFor::Last).expect("prefill");
    let t0 = Instant::now();
    for i in 0..steps {
        s.forward(&[300 + i], LogitsFor::Last).expect("decode");
    }
    println!(
        "decode {:.1} tok/s",
        steps as f64 / t0.elapsed().as_secs_f64()
    );
}
