//! A catalogue of hostile inputs: each test feeds one bad input to a parser of the project (or
//! to the `ecspec` binary) and asserts the exact error it gets, which must say what was wrong
//! and where. Frames and protocol messages, prompts, Mahimahi and CSV traces, family
//! manifests, PEFT adapter configs, GGUF headers and command-line values. No test needs a
//! model, the network or a clock; the coverage-guided fuzzing of the same parsers is in
//! `fuzz/` (BENCHMARKS.md, "RELIABILITY").

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::BytesMut;
use ecspec_family::FamilyManifest;
use ecspec_link::{CsvColumns, Direction, MahimahiTrace, RateUnit, ThroughputTrace, TraceEnd};
use ecspec_model::gguf::Metadata;
use ecspec_model::lora::{LoraAdapter, LoraTarget, PEFT_CONFIG_FILE, PEFT_WEIGHTS_FILE};
use ecspec_model::{Architecture, ModelConfig};
use ecspec_proto::{
    decode_eof, decode_frame, encode_frame, CompactDist, DraftBlock, FrameError, Hello, Message,
    VerifyMode,
};

// ---------------------------------------------------------------------------------------------
// Frames

/// A frame's bytes: header (length, version, type, request id) and payload.
fn frame(version: u8, message_type: u8, request_id: u32, payload: &[u8]) -> BytesMut {
    let mut b = BytesMut::new();
    b.extend_from_slice(&(6 + payload.len() as u32).to_be_bytes());
    b.extend_from_slice(&[version, message_type]);
    b.extend_from_slice(&request_id.to_be_bytes());
    b.extend_from_slice(payload);
    b
}

fn frame_error(mut buf: BytesMut) -> FrameError {
    decode_frame(&mut buf).expect_err("a bad frame")
}

#[test]
fn a_frame_length_beyond_the_maximum_is_refused_from_the_prefix_alone() {
    let e = frame_error(BytesMut::from(&[0xff, 0xff, 0xff, 0xff][..]));
    assert_eq!(
        e.to_string(),
        "frame of 4294967299 bytes exceeds the maximum of 16777216 bytes"
    );
    assert!(e.is_fatal());
}

#[test]
fn a_frame_length_shorter_than_the_header_is_refused() {
    let e = frame_error(BytesMut::from(&[0, 0, 0, 2, 1, 1][..]));
    assert_eq!(
        e.to_string(),
        "length prefix declares a frame of 6 bytes, shorter than the 10-byte header"
    );
}

#[test]
fn an_unknown_message_type_is_named_with_its_request_id_and_skipped() {
    let mut buf = frame(1, 99, 7, b"");
    buf.extend_from_slice(&encode_frame(&Message::Close(Default::default()), 8).unwrap());
    let e = decode_frame(&mut buf).unwrap_err();
    assert_eq!(
        e.to_string(),
        "unknown message type 99 in frame with request id 7"
    );
    assert!(!e.is_fatal());
    // The bad frame was consumed: the next one decodes.
    assert!(matches!(
        decode_frame(&mut buf),
        Ok(Some((8, Message::Close(_))))
    ));
}

#[test]
fn another_protocol_version_is_refused() {
    let e = frame_error(frame(9, 1, 1, b""));
    assert_eq!(
        e.to_string(),
        "unsupported protocol version 9; this peer speaks version 1"
    );
}

#[test]
fn a_stream_that_ends_inside_a_frame_is_truncated() {
    let hello = encode_frame(&Message::Hello(Hello::default()), 1).unwrap();
    let mut half = BytesMut::from(&hello[..hello.len() - 1]);
    assert_eq!(decode_frame(&mut half.clone()), Ok(None));
    let e = decode_eof(&mut half).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "stream ended inside a frame: {} bytes buffered of a frame of {} bytes",
            hello.len() - 1,
            hello.len()
        )
    );
}

#[test]
fn a_stream_that_ends_inside_the_length_prefix_is_truncated() {
    let e = decode_eof(&mut BytesMut::from(&[0, 0][..])).unwrap_err();
    assert_eq!(
        e.to_string(),
        "stream ended inside a frame: 2 bytes buffered of a frame of unknown length"
    );
}

#[test]
fn a_message_too_large_for_a_frame_is_refused_when_encoding() {
    let hello = Hello {
        prompt: vec![u32::MAX; 4 << 20],
        ..Hello::default()
    };
    let e = encode_frame(&Message::Hello(hello), 1).unwrap_err();
    let FrameError::TooLarge { len, max } = e else {
        panic!("{e:?}")
    };
    assert_eq!(
        e.to_string(),
        format!("frame of {len} bytes exceeds the maximum of {max} bytes")
    );
    assert!(len > max);
}

// ---------------------------------------------------------------------------------------------
// Messages

#[test]
fn an_undecodable_payload_names_the_message_type_and_request_id() {
    // DraftBlock (3) whose payload is one byte: field 0, which protobuf forbids.
    let e = frame_error(frame(1, 3, 42, &[0x00]));
    assert_eq!(
        e.to_string(),
        "DraftBlock payload of 1 bytes in frame with request id 42 does not decode"
    );
    let source = std::error::Error::source(&e)
        .expect("prost's reason")
        .to_string();
    assert!(source.contains("invalid tag value: 0"), "{source}");
    assert!(!e.is_fatal());
}

#[test]
fn a_field_of_the_wrong_wire_type_does_not_decode() {
    // Hello field 1 (protocol_version, a varint) sent as a length-delimited field.
    let e = frame_error(frame(1, 1, 5, &[0x0a, 0x01, 0x01]));
    assert_eq!(
        e.to_string(),
        "Hello payload of 3 bytes in frame with request id 5 does not decode"
    );
    let source = std::error::Error::source(&e).unwrap().to_string();
    assert!(
        source.contains("invalid wire type: LengthDelimited (expected Varint)"),
        "{source}"
    );
}

#[test]
fn an_unknown_verification_mode_is_named() {
    // Hello { verify_mode: 17 } on the wire: field 9, varint.
    let mut buf = frame(1, 1, 1, &[0x48, 17]);
    let Ok(Some((_, Message::Hello(hello)))) = decode_frame(&mut buf) else {
        panic!("decodes")
    };
    assert_eq!(
        hello.verify_rule().unwrap_err().to_string(),
        "unknown verification mode 17"
    );
}

#[test]
fn a_negative_temperature_is_named() {
    let hello = Hello {
        temperature: -0.5,
        verify_mode: VerifyMode::Match as i32,
        ..Hello::default()
    };
    assert_eq!(
        hello.sampling_params().unwrap_err().to_string(),
        "sampling settings: invalid temperature -0.5: must be finite and >= 0"
    );
}

#[test]
fn a_top_p_above_one_is_named() {
    let hello = Hello {
        temperature: 1.0,
        top_p: 2.0,
        ..Hello::default()
    };
    assert_eq!(
        hello.sampling_params().unwrap_err().to_string(),
        "sampling settings: invalid top_p 2: must be in (0, 1]"
    );
}

#[test]
fn a_draft_token_outside_the_vocabulary_is_named() {
    let dist = CompactDist::from_levels(vec![3, 70_000], &[200, 55], 8).unwrap();
    let block = DraftBlock {
        round: 1,
        tokens: vec![3],
        dists: vec![dist],
        stream: 0,
    };
    assert_eq!(
        block.domain_dists(49_152).unwrap_err().to_string(),
        "token id 70000 out of range for vocabulary size 49152"
    );
}

#[test]
fn draft_levels_that_do_not_sum_to_the_total_are_named() {
    let dist = CompactDist::from_levels(vec![3, 4], &[100, 55], 8).unwrap();
    assert_eq!(
        dist.to_domain(10).unwrap_err().to_string(),
        "levels sum to 155, expected 255"
    );
}

#[test]
fn a_level_width_beyond_a_byte_is_named() {
    let dist = CompactDist {
        ids: vec![1],
        probs: vec![0xff],
        bits: 300,
    };
    assert_eq!(
        dist.to_domain(10).unwrap_err().to_string(),
        "300 bits per probability"
    );
}

#[test]
fn packed_levels_of_the_wrong_length_are_named() {
    let dist = CompactDist {
        ids: vec![1, 2],
        probs: vec![1, 2, 3],
        bits: 8,
    };
    assert_eq!(
        dist.levels().unwrap_err().to_string(),
        "2 ids at 8 bits need 2 bytes of packed levels, got 3"
    );
}

// ---------------------------------------------------------------------------------------------
// Mahimahi traces

fn mahimahi(text: &str) -> String {
    MahimahiTrace::parse("up.trace", text, Duration::ZERO, TraceEnd::Loop)
        .unwrap_err()
        .to_string()
}

#[test]
fn a_mahimahi_line_that_is_not_a_number_is_named_with_its_line() {
    assert_eq!(
        mahimahi("1\n2\n3ms\n"),
        "up.trace:3: not a non-negative integer millisecond timestamp: \"3ms\""
    );
}

#[test]
fn a_negative_mahimahi_timestamp_is_not_a_timestamp() {
    assert_eq!(
        mahimahi("-4\n"),
        "up.trace:1: not a non-negative integer millisecond timestamp: \"-4\""
    );
}

#[test]
fn decreasing_mahimahi_timestamps_are_named() {
    assert_eq!(
        mahimahi("1\n9\n4\n"),
        "up.trace:3: timestamp 4 ms is less than the previous one (9 ms); timestamps must be non-decreasing"
    );
}

#[test]
fn an_empty_mahimahi_trace_is_refused() {
    assert_eq!(mahimahi(""), "up.trace: no timestamps (empty trace)");
}

#[test]
fn a_blank_line_inside_a_mahimahi_trace_is_named() {
    assert_eq!(
        mahimahi("1\n\n2\n"),
        "up.trace:2: empty line (expected a millisecond timestamp)"
    );
}

#[test]
fn a_mahimahi_trace_lasting_no_time_is_refused() {
    assert_eq!(
        mahimahi("0\n0\n"),
        "up.trace: the last timestamp is 0 ms; a trace must last a nonzero time"
    );
}

#[test]
fn a_mahimahi_timestamp_beyond_a_day_is_refused() {
    assert_eq!(
        mahimahi("1\n86400001\n"),
        "up.trace:2: timestamp 86400001 ms is beyond one day (86400000 ms); is this a Mahimahi trace?"
    );
}

// ---------------------------------------------------------------------------------------------
// CSV throughput traces

fn csv(text: &str, columns: &CsvColumns) -> String {
    ThroughputTrace::parse("down.csv", text, columns, Duration::ZERO, TraceEnd::Loop)
        .unwrap_err()
        .to_string()
}

fn walking() -> CsvColumns {
    CsvColumns::gophers_walking()
}

#[test]
fn a_csv_rate_that_is_not_a_number_is_named_with_line_and_column() {
    assert_eq!(
        csv("time,throughput_mbps\n0,12.5\n1,fast\n", &walking()),
        "down.csv:3: column \"throughput_mbps\": not a number: \"fast\""
    );
}

#[test]
fn a_csv_trace_without_rows_is_refused() {
    assert_eq!(
        csv("time,throughput_mbps\n\n", &walking()),
        "down.csv: no data rows"
    );
}

#[test]
fn an_empty_csv_file_has_no_header() {
    assert_eq!(csv("  \n\n", &walking()), "down.csv: no header line");
}

#[test]
fn a_csv_trace_without_the_rate_column_names_the_column() {
    assert_eq!(
        csv(
            "time,RSRP,UL_bitrate\n0,-90,300\n",
            &CsvColumns::irish_5g(Direction::Downlink)
        ),
        "down.csv:1: no column \"DL_bitrate\" in the header"
    );
}

#[test]
fn a_csv_row_with_a_missing_field_is_named() {
    assert_eq!(
        csv("time,throughput_mbps\n0,12\n1\n", &walking()),
        "down.csv:3: 1 fields, the header has 2"
    );
}

#[test]
fn a_negative_csv_rate_is_named() {
    assert_eq!(
        csv(
            "rate\n5\n-3\n",
            &CsvColumns::rate_only("rate", RateUnit::Kbps)
        ),
        "down.csv:3: column \"rate\": negative rate -3"
    );
}

#[test]
fn a_csv_trace_of_zero_rates_is_refused() {
    assert_eq!(
        csv("time,throughput_mbps\n0,0\n1,0.0\n", &walking()),
        "down.csv: every second has rate 0"
    );
}

#[test]
fn an_unterminated_csv_quote_is_named() {
    assert_eq!(
        csv("time,throughput_mbps\n0,\"12\n", &walking()),
        "down.csv:2: unterminated quoted field"
    );
}

// ---------------------------------------------------------------------------------------------
// Family manifests

const MANIFEST: &str = r#"format = 1
name = "tiny"

[base]
name = "tiny"
sha256 = "0000000000000000000000000000000000000000000000000000000000000000"

[frozen]
parts = ["embedding", "final_norm", "lm_head", "base_layers"]

[draft]
shared_layers = 1

[[version]]
name = "v0"
created = "2026-05-01T12:00:00Z"
description = "the base"
"#;

fn manifest(text: &str) -> String {
    FamilyManifest::parse(text, Path::new("fam/family.toml"))
        .unwrap_err()
        .to_string()
}

#[test]
fn the_manifest_used_by_these_tests_is_valid() {
    FamilyManifest::parse(MANIFEST, Path::new("fam/family.toml")).unwrap();
}

#[test]
fn a_misspelt_manifest_key_is_an_error_naming_it() {
    let e = manifest(&MANIFEST.replace("shared_layers", "shared_layer"));
    assert!(e.starts_with("fam/family.toml: "), "{e}");
    assert!(e.contains("unknown field `shared_layer`"), "{e}");
    assert!(e.contains("line 12"), "{e}");
}

#[test]
fn a_manifest_that_is_not_toml_names_the_line() {
    let e = manifest("format = 1\nname = \"tiny\n");
    assert!(e.starts_with("fam/family.toml: "), "{e}");
    assert!(e.contains("line 2"), "{e}");
}

#[test]
fn a_future_manifest_format_is_refused() {
    assert_eq!(
        manifest(&MANIFEST.replace("format = 1", "format = 2")),
        "fam/family.toml: key `format`: format 2 is not supported (this build reads 1)"
    );
}

#[test]
fn a_base_sha256_that_is_not_a_digest_is_named() {
    assert_eq!(
        manifest(&MANIFEST.replace(&"0".repeat(64), "abc")),
        "fam/family.toml: key `base.sha256`: `abc` is not a SHA-256 digest (64 lowercase hex digits)"
    );
}

#[test]
fn an_acceptance_rate_outside_zero_to_one_is_named() {
    assert_eq!(
        manifest(&MANIFEST.replace("shared_layers = 1", "shared_layers = 1\nacceptance = 1.5")),
        "fam/family.toml: key `draft.acceptance`: 1.5 is not an acceptance rate in [0, 1]"
    );
}

#[test]
fn a_version_created_at_no_valid_time_is_named() {
    assert_eq!(
        manifest(&MANIFEST.replace("2026-05-01T12:00:00Z", "2026-02-30T12:00:00Z")),
        "fam/family.toml: key `version[0].created`: `2026-02-30T12:00:00Z` is not an RFC 3339 time: day 30 of month 2"
    );
}

#[test]
fn a_parent_version_not_listed_before_is_named() {
    let text = format!(
        "{MANIFEST}\n[[version]]\nname = \"rust\"\nparent = \"python\"\ncreated = \"2026-05-02T00:00:00Z\"\ndescription = \"d\"\n"
    );
    assert_eq!(
        manifest(&text),
        "fam/family.toml: key `version[1].parent`: `python` is not a version listed before `rust` (earlier versions: [\"v0\"])"
    );
}

#[test]
fn a_frozen_part_left_out_is_named() {
    assert_eq!(
        manifest(&MANIFEST.replace(", \"lm_head\"", "")),
        "fam/family.toml: key `frozen.parts`: `lm_head` is missing: a shared-backbone family keeps the embedding, final norm, LM head and base layers frozen (parts = [\"embedding\", \"final_norm\", \"lm_head\", \"base_layers\"])"
    );
}

// ---------------------------------------------------------------------------------------------
// PEFT adapter configs

/// A tiny llama base (2 layers, hidden 32, 4 query and 2 KV heads).
fn tiny_config() -> ModelConfig {
    ModelConfig {
        arch: Architecture::Llama,
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

/// A valid rank-2 adapter on q and v of both layers, as `save_peft` writes it: the texts of
/// `adapter_config.json` and the bytes of `adapter_model.safetensors`.
fn tiny_adapter(tag: &str) -> (String, Vec<u8>) {
    let config = tiny_config();
    let adapter = LoraAdapter::init(
        &config,
        2,
        4.0,
        0..2,
        &[LoraTarget::AttnQ, LoraTarget::AttnV],
        7,
        "tiny",
    )
    .unwrap();
    let dir = std::env::temp_dir().join(format!("ecspec-bad-peft-{tag}-{}", std::process::id()));
    adapter.save_peft(&dir, &config).unwrap();
    let json = std::fs::read_to_string(dir.join(PEFT_CONFIG_FILE)).unwrap();
    let weights = std::fs::read(dir.join(PEFT_WEIGHTS_FILE)).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    (json, weights)
}

fn peft(json: &str, weights: &[u8]) -> String {
    LoraAdapter::from_peft_bytes(Path::new("ad"), json, weights, &tiny_config())
        .unwrap_err()
        .to_string()
}

/// The tiny adapter's config with `key` set to `value` (JSON).
fn peft_with(tag: &str, key: &str, value: &str) -> String {
    let (json, weights) = tiny_adapter(tag);
    let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
    v[key] = serde_json::from_str(value).unwrap();
    peft(&v.to_string(), &weights)
}

#[test]
fn the_adapter_used_by_these_tests_is_valid() {
    let (json, weights) = tiny_adapter("valid");
    LoraAdapter::from_peft_bytes(Path::new("ad"), &json, &weights, &tiny_config()).unwrap();
}

#[test]
fn an_adapter_config_that_is_not_json_is_named() {
    let e = peft("{\"r\": 8,", &[]);
    assert!(
        e.starts_with("ad/adapter_config.json: key `(file)`: not valid JSON: EOF while parsing"),
        "{e}"
    );
}

#[test]
fn a_peft_type_other_than_lora_is_unsupported() {
    assert_eq!(
        peft_with("type", "peft_type", "\"PREFIX_TUNING\""),
        "ad/adapter_config.json: key `peft_type` = \"PREFIX_TUNING\": not supported (only LORA adapters)"
    );
}

#[test]
fn a_zero_rank_is_named() {
    assert_eq!(
        peft_with("rank", "r", "0"),
        "ad/adapter_config.json: key `r`: expected a positive integer, found 0"
    );
}

#[test]
fn an_unknown_target_module_is_named() {
    assert_eq!(
        peft_with("module", "target_modules", "[\"q_proj\", \"qkv_proj\"]"),
        "ad/adapter_config.json: target_modules entry `qkv_proj` is unknown (known: q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj)"
    );
}

#[test]
fn dora_is_unsupported() {
    assert_eq!(
        peft_with("dora", "use_dora", "true"),
        "ad/adapter_config.json: key `use_dora` = true: not supported (scale is alpha / r with plain LoRA)"
    );
}

#[test]
fn a_config_rank_that_the_tensors_do_not_have_is_a_rank_mismatch() {
    assert_eq!(
        peft_with("mismatch", "r", "4"),
        "layer 0 q_proj: rank mismatch: A has rank 2, the adapter has r = 4"
    );
}

#[test]
fn adapter_weights_that_are_not_safetensors_are_named() {
    let (json, _) = tiny_adapter("garbage");
    let e = peft(&json, b"not a safetensors file");
    assert!(
        e.starts_with("ad/adapter_model.safetensors: not a valid safetensors file: "),
        "{e}"
    );
}

// ---------------------------------------------------------------------------------------------
// GGUF headers

/// GGUF v3 header bytes: magic, version, tensor count, then `kvs` (already encoded).
fn gguf(magic: &[u8; 4], tensors: u64, kv_count: u64, kvs: &[u8]) -> Vec<u8> {
    let mut b = magic.to_vec();
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&tensors.to_le_bytes());
    b.extend_from_slice(&kv_count.to_le_bytes());
    b.extend_from_slice(kvs);
    b
}

/// One metadata entry holding a u32.
fn kv_u32(key: &str, value: u32) -> Vec<u8> {
    let mut b = (key.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(key.as_bytes());
    b.extend_from_slice(&4u32.to_le_bytes()); // GGUF value type 4: u32
    b.extend_from_slice(&value.to_le_bytes());
    b
}

/// One metadata entry holding a string.
fn kv_str(key: &str, value: &str) -> Vec<u8> {
    let mut b = (key.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(key.as_bytes());
    b.extend_from_slice(&8u32.to_le_bytes()); // GGUF value type 8: string
    b.extend_from_slice(&(value.len() as u64).to_le_bytes());
    b.extend_from_slice(value.as_bytes());
    b
}

fn gguf_error(bytes: &[u8]) -> String {
    match Metadata::read(&mut Cursor::new(bytes), Path::new("m.gguf")) {
        Ok(_) => panic!("a bad header was read"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_gguf_with_another_magic_is_named() {
    assert_eq!(
        gguf_error(&gguf(b"GGML", 0, 0, &[])),
        "cannot read GGUF file m.gguf: not a GGUF file: it starts with [47, 47, 4d, 4c], not the magic \"GGUF\""
    );
}

#[test]
fn a_gguf_shorter_than_its_magic_is_named() {
    assert_eq!(
        gguf_error(b"GG"),
        "cannot read GGUF file m.gguf: not a GGUF file: it starts with [47, 47], not the magic \"GGUF\""
    );
}

#[test]
fn a_gguf_header_cut_inside_a_count_is_truncated() {
    let bytes = gguf(b"GGUF", 0, 0, &[]);
    assert_eq!(
        gguf_error(&bytes[..12]),
        "cannot read GGUF file m.gguf: the file ends inside the GGUF header (truncated?): failed to fill whole buffer"
    );
}

#[test]
fn a_truncated_gguf_header_is_named() {
    let mut bytes = gguf(b"GGUF", 0, 1, &kv_str("general.architecture", "llama"));
    bytes.truncate(bytes.len() - 3);
    assert_eq!(
        gguf_error(&bytes),
        "cannot read GGUF file m.gguf: gguf: string length 5 exceeds remaining file bytes 2"
    );
}

#[test]
fn an_absurd_gguf_tensor_count_is_refused_before_allocating() {
    assert_eq!(
        gguf_error(&gguf(b"GGUF", u64::MAX, 0, &[])),
        "cannot read GGUF file m.gguf: gguf: tensor_count 18446744073709551615 exceeds max 1073741824"
    );
}

#[test]
fn a_gguf_alignment_of_zero_is_named_not_a_panic() {
    assert_eq!(
        gguf_error(&gguf(b"GGUF", 0, 1, &kv_u32("general.alignment", 0))),
        "cannot read GGUF file m.gguf: general.alignment is 0; tensor data must be aligned to at least 1 byte"
    );
}

#[test]
fn a_gguf_without_the_block_count_names_the_key() {
    let mut kvs = kv_str("general.architecture", "llama");
    kvs.extend(kv_u32("llama.embedding_length", 64));
    kvs.extend(kv_u32("llama.attention.head_count", 4));
    let md = Metadata::read(
        &mut Cursor::new(gguf(b"GGUF", 0, 3, &kvs)),
        Path::new("m.gguf"),
    )
    .unwrap();
    assert_eq!(
        ModelConfig::from_metadata(&md).unwrap_err().to_string(),
        "GGUF metadata key `llama.block_count` is missing or invalid: missing"
    );
}

#[test]
fn a_gguf_of_an_unsupported_architecture_is_named() {
    let kvs = kv_str("general.architecture", "mamba");
    let md = Metadata::read(
        &mut Cursor::new(gguf(b"GGUF", 0, 1, &kvs)),
        Path::new("m.gguf"),
    )
    .unwrap();
    assert_eq!(
        ModelConfig::from_metadata(&md).unwrap_err().to_string(),
        "unsupported architecture `mamba` (supported: llama, qwen2)"
    );
}

// ---------------------------------------------------------------------------------------------
// Prompts and command-line values (the binary; all refused before any model loads)

/// Runs `ecspec ARGS` with `stdin` as its input and returns its stderr; it must fail.
fn ecspec_fails(args: &[&str], stdin: &[u8]) -> String {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_ecspec"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running ecspec");
    let mut input = child.stdin.take().unwrap();
    // The binary may fail before reading its input: a broken pipe here is fine.
    let _ = input.write_all(stdin);
    drop(input);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

/// A file in the temp directory holding `bytes`, unique to this process and `name`.
fn temp_file(name: &str, bytes: &[u8]) -> PathBuf {
    let p = std::env::temp_dir().join(format!("ecspec-bad-{}-{name}", std::process::id()));
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn a_prompt_file_that_is_not_utf8_names_the_byte() {
    let p = temp_file("prompt-latin1", b"caf\xe9 au lait");
    let e = ecspec_fails(&["generate", "--prompt-file", p.to_str().unwrap()], b"");
    std::fs::remove_file(&p).unwrap();
    assert!(
        e.contains(&format!(
            "the prompt in {} is not UTF-8 text (byte 3)",
            p.display()
        )),
        "{e}"
    );
}

#[test]
fn a_prompt_on_stdin_that_is_not_utf8_names_the_byte() {
    let e = ecspec_fails(&["generate", "--prompt-file", "-"], b"\xff\xfe");
    assert!(
        e.contains("the prompt in stdin is not UTF-8 text (byte 0)"),
        "{e}"
    );
}

#[test]
fn a_missing_prompt_file_is_named() {
    let e = ecspec_fails(
        &["generate", "--prompt-file", "/nonexistent/prompt.txt"],
        b"",
    );
    assert!(
        e.contains("opening the prompt file /nonexistent/prompt.txt"),
        "{e}"
    );
}

#[test]
fn a_top_p_above_one_on_the_command_line_is_named() {
    let e = ecspec_fails(&["generate", "--prompt", "hi", "--top-p", "2"], b"");
    assert!(
        e.contains("invalid sampling settings: invalid top_p 2: must be in (0, 1]"),
        "{e}"
    );
}

#[test]
fn greedy_verification_with_a_temperature_is_named() {
    let e = ecspec_fails(
        &[
            "generate",
            "--prompt",
            "hi",
            "--verify",
            "greedy",
            "--temperature",
            "0.7",
        ],
        b"",
    );
    assert!(
        e.contains("--verify greedy needs --temperature 0 (use match or rejection to sample)"),
        "{e}"
    );
}

#[test]
fn a_distribution_width_out_of_range_is_named() {
    let e = ecspec_fails(&["generate", "--prompt", "hi", "--dist-bits", "17"], b"");
    assert!(
        e.contains("--dist-bits must be between 1 and 16, got 17"),
        "{e}"
    );
}

#[test]
fn a_malformed_mahimahi_file_on_the_command_line_names_file_and_line() {
    let p = temp_file("up.trace", b"1\n5\n3\n");
    let e = ecspec_fails(
        &[
            "generate",
            "--prompt",
            "hi",
            "--link-trace-up",
            p.to_str().unwrap(),
            "--link-trace-down",
            p.to_str().unwrap(),
        ],
        b"",
    );
    std::fs::remove_file(&p).unwrap();
    assert!(
        e.contains(&format!(
            "{}:3: timestamp 3 ms is less than the previous one (5 ms)",
            p.display()
        )),
        "{e}"
    );
}

#[test]
fn a_malformed_csv_file_on_the_command_line_names_file_line_and_column() {
    let p = temp_file("walk.csv", b"time,throughput_mbps\n0,1.5\n1,n/a\n");
    let e = ecspec_fails(
        &[
            "generate",
            "--prompt",
            "hi",
            "--link-csv",
            p.to_str().unwrap(),
            "--link-csv-format",
            "gophers-walking",
        ],
        b"",
    );
    std::fs::remove_file(&p).unwrap();
    assert!(
        e.contains(&format!(
            "{}:3: column \"throughput_mbps\": not a number: \"n/a\"",
            p.display()
        )),
        "{e}"
    );
}
