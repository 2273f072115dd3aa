//! `proto/ecspec.proto` and the prost structs must describe the same schema: every field's
//! number and wire type, every field name, every enum value.

use std::collections::{BTreeMap, BTreeSet};

use ecspec_proto::{
    Close, CompactDist, DraftBlock, ErrorCode, ErrorReply, Hello, HelloAck, SetVersion, Verdict,
    VerifyMode, VersionAck,
};

const PROTO: &str = include_str!("../proto/ecspec.proto");

#[derive(Debug, Default)]
struct Schema {
    /// message name → field name → (number, wire type)
    messages: BTreeMap<String, BTreeMap<String, (u32, u8)>>,
    /// enum name → value name → number
    enums: BTreeMap<String, BTreeMap<String, i32>>,
}

/// A parser for the subset of proto3 the file uses: top-level `message`/`enum` blocks with
/// one field or value per line.
fn parse_proto(text: &str) -> Schema {
    let mut schema = Schema::default();
    let mut enum_names = BTreeSet::new();
    for line in text.lines() {
        if let Some(name) = line.trim().strip_prefix("enum ") {
            enum_names.insert(name.trim_end_matches(['{', ' ']).to_owned());
        }
    }
    let mut current: Option<(bool, String)> = None; // (is_enum, name)
    for line in text.lines() {
        let line = line.split("//").next().unwrap().trim();
        if line.is_empty() {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["message", name, rest @ ..] => {
                schema.messages.insert(name.to_string(), BTreeMap::new());
                current = (rest != ["{}"]).then(|| (false, name.to_string()));
            }
            ["enum", name, "{"] => {
                schema.enums.insert(name.to_string(), BTreeMap::new());
                current = Some((true, name.to_string()));
            }
            ["}"] => current = None,
            _ => {
                let Some((is_enum, block)) = &current else {
                    continue;
                };
                let (decl, number) = line.trim_end_matches(';').split_once('=').unwrap();
                let number: i32 = number.trim().parse().unwrap();
                let decl: Vec<&str> = decl.split_whitespace().collect();
                if *is_enum {
                    schema
                        .enums
                        .get_mut(block)
                        .unwrap()
                        .insert(decl[0].to_owned(), number);
                    continue;
                }
                let (repeated, ty, name) = match decl.as_slice() {
                    ["repeated", ty, name] => (true, *ty, *name),
                    [ty, name] => (false, *ty, *name),
                    other => panic!("unexpected field {other:?}"),
                };
                let wire_type = match ty {
                    _ if repeated => 2, // packed scalars and enums, strings, bytes, messages
                    "uint32" | "uint64" | "int32" | "int64" | "bool" => 0,
                    _ if enum_names.contains(ty) => 0,
                    "float" | "fixed32" => 5,
                    "double" | "fixed64" => 1,
                    _ => 2, // string, bytes, message
                };
                schema
                    .messages
                    .get_mut(block)
                    .unwrap()
                    .insert(name.to_owned(), (number as u32, wire_type));
            }
        }
    }
    schema
}

fn read_varint(bytes: &mut &[u8]) -> u64 {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = bytes.split_first().unwrap();
        *bytes = rest;
        value |= u64::from(b & 0x7F) << shift;
        if b < 0x80 {
            break;
        }
    }
    value
}

/// The (field number, wire type) pairs present in an encoded message.
fn wire_fields(mut bytes: &[u8]) -> BTreeSet<(u32, u8)> {
    let mut fields = BTreeSet::new();
    while !bytes.is_empty() {
        let key = read_varint(&mut bytes);
        let wire_type = (key & 7) as u8;
        fields.insert(((key >> 3) as u32, wire_type));
        let skip = match wire_type {
            0 => {
                read_varint(&mut bytes);
                0
            }
            1 => 8,
            2 => read_varint(&mut bytes) as usize,
            5 => 4,
            other => panic!("wire type {other}"),
        };
        bytes = &bytes[skip..];
    }
    fields
}

/// Checks one message: `value` must set every field to a non-default value (struct literals
/// below list every field, so adding a Rust field without updating them does not compile).
fn check<M: prost::Message + std::fmt::Debug>(schema: &Schema, name: &str, value: &M) {
    let proto = &schema.messages[name];
    let expected: BTreeSet<(u32, u8)> = proto.values().copied().collect();
    assert_eq!(
        wire_fields(&value.encode_to_vec()),
        expected,
        "{name}: field numbers or types differ"
    );
    let debug = format!("{value:?}");
    for field in proto.keys() {
        assert!(
            debug.contains(&format!("{field}: ")),
            "{name}.{field} missing from the Rust struct"
        );
    }
}

#[test]
fn proto_file_matches_rust_messages() {
    let schema = parse_proto(PROTO);
    assert_eq!(
        schema.messages.keys().collect::<Vec<_>>(),
        [
            "Close",
            "CompactDist",
            "DraftBlock",
            "ErrorReply",
            "Hello",
            "HelloAck",
            "SetVersion",
            "Verdict",
            "VersionAck"
        ]
    );
    let dist = CompactDist {
        ids: vec![1, 2],
        probs: vec![0x21],
        bits: 4,
    };
    check(&schema, "CompactDist", &dist);
    check(
        &schema,
        "Hello",
        &Hello {
            protocol_version: 1,
            model_family: "f".into(),
            base_hash: "h".into(),
            draft_kind: "k".into(),
            temperature: 0.5,
            top_p: 0.9,
            top_k: 3,
            seed: 4,
            verify_mode: 2,
            max_new_tokens: 5,
            prompt: vec![6],
            autoregressive: true,
            stream: 7,
            auth_token: "t".into(),
            max_block_tokens: 8,
            resumed_tokens: 10,
        },
    );
    check(
        &schema,
        "HelloAck",
        &HelloAck {
            accepted: true,
            reason: "r".into(),
            session_id: 1,
            target_version: "v".into(),
            vocab_size: 2,
            eos_token_ids: vec![3],
            first_token: 4,
            finished: true,
            prefill_us: 7,
            queue_us: 8,
            max_block_tokens: 9,
            granted_new_tokens: 10,
            context_bound: true,
        },
    );
    check(
        &schema,
        "DraftBlock",
        &DraftBlock {
            round: 1,
            tokens: vec![2],
            dists: vec![dist],
            stream: 5,
        },
    );
    check(
        &schema,
        "Verdict",
        &Verdict {
            round: 1,
            accepted: 2,
            next_token: 3,
            finished: true,
            compute_us: 9,
            row_cost_us: 10,
        },
    );
    check(
        &schema,
        "ErrorReply",
        &ErrorReply {
            code: 1,
            message: "m".into(),
            retry_after_ms: 2,
        },
    );
    check(&schema, "Close", &Close {});
    check(
        &schema,
        "SetVersion",
        &SetVersion {
            version: "v".into(),
        },
    );
    check(
        &schema,
        "VersionAck",
        &VersionAck {
            active: "a".into(),
            previous: "p".into(),
            versions: vec!["a".into(), "p".into()],
        },
    );
}

/// `VERIFY_MODE_BAD_FRAME`-style name, minus the enum's prefix, in Rust's CamelCase.
fn camel(value_name: &str, prefix: &str) -> String {
    value_name
        .strip_prefix(prefix)
        .unwrap()
        .split('_')
        .map(|w| w[..1].to_owned() + &w[1..].to_lowercase())
        .collect()
}

fn check_enum<E: TryFrom<i32> + std::fmt::Debug>(schema: &Schema, name: &str, prefix: &str) {
    let values = &schema.enums[name];
    for (value_name, &n) in values {
        let variant = E::try_from(n).unwrap_or_else(|_| panic!("{name} has no value {n}"));
        assert_eq!(
            format!("{variant:?}"),
            camel(value_name, prefix),
            "{name} = {n}"
        );
    }
    let max = values.values().copied().max().unwrap();
    assert_eq!(
        values.len() as i32,
        max + 1,
        "{name}: values should be 0 ..= {max}"
    );
    assert!(
        E::try_from(max + 1).is_err(),
        "{name}: Rust has a value the proto file lacks"
    );
}

#[test]
fn proto_file_matches_rust_enums() {
    let schema = parse_proto(PROTO);
    assert_eq!(
        schema.enums.keys().collect::<Vec<_>>(),
        ["ErrorCode", "VerifyMode"]
    );
    check_enum::<VerifyMode>(&schema, "VerifyMode", "VERIFY_MODE_");
    check_enum::<ErrorCode>(&schema, "ErrorCode", "ERROR_CODE_");
}
