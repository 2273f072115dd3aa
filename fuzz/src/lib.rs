//! What the fuzz targets share: the checks run on every protocol message a target decodes.
//! Each target (`fuzz_targets/*.rs`) feeds arbitrary bytes to one of ECSpec's public parsers;
//! a panic, an abort or a failed assertion here is a crash that libFuzzer reports.

use bytes::BytesMut;
use ecspec_proto::{decode_frame, encode_frame, frame_len, CompactDist, Hello, Message};

/// Checks one decoded message: its re-encoding has the length [`frame_len`] says and decodes
/// to a message that re-encodes to the same bytes, and every domain conversion of
/// `ecspec_proto::domain` either fails with an error that displays or gives a value that goes
/// back onto the wire unchanged. `vocab` is the vocabulary the draft distributions are checked
/// against (any size: the fuzzer picks it).
pub fn check_message(request_id: u32, msg: &Message, vocab: usize) {
    let frame = encode_frame(msg, request_id).expect("a decoded message re-encodes");
    assert_eq!(
        frame.len(),
        frame_len(msg),
        "frame_len is the encoded length"
    );
    let mut buf = BytesMut::from(&frame[..]);
    let (id, again) = decode_frame(&mut buf)
        .expect("an encoded frame decodes")
        .expect("an encoded frame is whole");
    assert!(buf.is_empty(), "one frame, nothing left over");
    assert_eq!(id, request_id);
    let frame_again = encode_frame(&again, id).expect("re-encodes");
    assert_eq!(frame, frame_again, "encoding is stable");

    match msg {
        Message::Hello(hello) => check_hello(hello),
        Message::DraftBlock(block) => {
            let _ = block.domain_dists(vocab).map_err(|e| e.to_string());
            for wire in &block.dists {
                check_dist(wire, vocab);
            }
        }
        Message::ErrorReply(reply) => {
            let _ = reply.code();
        }
        _ => {}
    }
}

fn check_hello(hello: &Hello) {
    let _ = hello.verify_mode();
    let rule = hello.verify_rule().map_err(|e| e.to_string());
    let params = hello.sampling_params().map_err(|e| e.to_string());
    if let (Ok(rule), Ok(params)) = (rule, params) {
        let back = Hello::for_session(
            rule,
            &params,
            hello.max_new_tokens as usize,
            hello.prompt.clone(),
        )
        .expect("a 32-bit budget fits");
        assert_eq!(back.verify_rule(), Ok(rule));
        assert_eq!(back.sampling_params(), Ok(params));
    }
}

fn check_dist(wire: &CompactDist, vocab: usize) {
    let _ = wire.levels().map_err(|e| e.to_string());
    match wire.to_domain(vocab) {
        Ok(dist) => assert_eq!(
            &CompactDist::from(&dist),
            wire,
            "a checked dist round-trips"
        ),
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

/// The base the PEFT target checks adapters against: a tiny llama (2 layers, hidden 32, 4
/// query and 2 KV heads), so B of q/k goes through the row permutation.
pub fn tiny_config() -> ecspec_model::ModelConfig {
    ecspec_model::ModelConfig {
        arch: ecspec_model::Architecture::Llama,
        vocab_size: 260,
        hidden_size: 32,
        num_layers: 2,
        num_heads: 4,
        num_kv_heads: 2,
        head_dim: 8,
        ffn_size: 64,
        rms_eps: 1e-5,
        rope_theta: 10_000.0,
        context_length: 256,
    }
}

/// A valid PEFT adapter for [`tiny_config`] as written by `LoraAdapter::save_peft`: rank 2 on
/// q, k, v and o of both layers. Returns the texts of `adapter_config.json` and the bytes of
/// `adapter_model.safetensors`.
pub fn tiny_adapter() -> (String, Vec<u8>) {
    use ecspec_model::lora::{LoraAdapter, LoraTarget, PEFT_CONFIG_FILE, PEFT_WEIGHTS_FILE};
    let config = tiny_config();
    let targets = [
        LoraTarget::AttnQ,
        LoraTarget::AttnK,
        LoraTarget::AttnV,
        LoraTarget::AttnOutput,
    ];
    let adapter =
        LoraAdapter::init(&config, 2, 4.0, 0..2, &targets, 7, "tiny").expect("a valid adapter");
    let dir = std::env::temp_dir().join(format!("ecspec-fuzz-peft-{}", std::process::id()));
    adapter
        .save_peft(&dir, &config)
        .expect("writes the adapter");
    let json = std::fs::read_to_string(dir.join(PEFT_CONFIG_FILE)).expect("reads it back");
    let weights = std::fs::read(dir.join(PEFT_WEIGHTS_FILE)).expect("reads it back");
    let _ = std::fs::remove_dir_all(&dir);
    (json, weights)
}
