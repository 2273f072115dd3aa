//! `LoraAdapter::from_peft_bytes` (what `load_peft` runs on `adapter_config.json` and
//! `adapter_model.safetensors`) against a tiny llama base. The input up to its first NUL byte
//! is the config's text; the bytes after it are the safetensors file. Without a NUL the
//! weights are a valid adapter's (`ecspec_fuzz::tiny_adapter`), so the fuzzer's time goes to
//! the config's keys. An adapter that loads must validate against the base.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use ecspec_model::LoraAdapter;
use libfuzzer_sys::fuzz_target;

static BASE: OnceLock<(ecspec_model::ModelConfig, Vec<u8>)> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let (config, valid_weights) =
        BASE.get_or_init(|| (ecspec_fuzz::tiny_config(), ecspec_fuzz::tiny_adapter().1));
    let (json, weights) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, valid_weights.as_slice()),
    };
    let json = String::from_utf8_lossy(json);
    match LoraAdapter::from_peft_bytes(Path::new("/fuzz/adapter"), &json, weights, config) {
        Ok(adapter) => {
            adapter
                .validate(config)
                .expect("a loaded adapter fits its base");
            assert!(adapter.rank() > 0 && adapter.alpha().is_finite());
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
