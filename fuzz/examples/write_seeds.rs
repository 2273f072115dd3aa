//! Writes the seed inputs of every fuzz target under `fuzz/seeds/<target>/`: well-formed
//! inputs made with the project's own writers (frames from `encode_frame`, a tiny model's GGUF
//! header, an adapter from `save_peft`, the shipped family manifest), which the fuzzer then
//! mutates. Run from the repository root:
//! `cargo run --manifest-path fuzz/Cargo.toml --example write_seeds`.

use std::path::Path;

use ecspec_proto::{
    encode_frame, Close, CompactDist, DraftBlock, ErrorCode, ErrorReply, Hello, HelloAck, Message,
    SetVersion, Verdict, VerifyMode, VersionAck,
};

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new("fuzz/seeds").join(target);
    std::fs::create_dir_all(&dir).expect("creates the seed directory");
    std::fs::write(dir.join(name), bytes).expect("writes a seed");
}

fn messages() -> Vec<(&'static str, Message)> {
    let dist = CompactDist::from_levels(vec![5, 17], &[200, 55], 8).expect("packs");
    vec![
        (
            "hello",
            Message::Hello(Hello {
                protocol_version: 1,
                model_family: "smollm2-135m".into(),
                base_hash: "b9fdf52e".into(),
                draft_kind: "shared-backbone".into(),
                temperature: 0.7,
                top_p: 0.9,
                top_k: 40,
                seed: 3,
                verify_mode: VerifyMode::Rejection as i32,
                max_new_tokens: 64,
                prompt: vec![1, 2, 3, 400, 49151],
                ..Hello::default()
            }),
        ),
        (
            "hello_ack",
            Message::HelloAck(HelloAck {
                accepted: true,
                session_id: 9,
                target_version: "rust".into(),
                vocab_size: 49152,
                eos_token_ids: vec![2, 0],
                first_token: 17,
                prefill_us: 1500,
                ..HelloAck::default()
            }),
        ),
        (
            "draft_block",
            Message::DraftBlock(DraftBlock {
                round: 3,
                tokens: vec![5, 17],
                dists: vec![dist.clone(), dist],
                stream: 0,
            }),
        ),
        (
            "verdict",
            Message::Verdict(Verdict {
                round: 3,
                accepted: 1,
                next_token: 99,
                compute_us: 4200,
                row_cost_us: 80,
                ..Verdict::default()
            }),
        ),
        (
            "error_reply",
            Message::ErrorReply(ErrorReply::busy("all session slots are taken", 250)),
        ),
        (
            "error_bad_request",
            Message::ErrorReply(ErrorReply::new(
                ErrorCode::BadRequest,
                "top_p 2 is not in (0, 1]",
            )),
        ),
        ("close", Message::Close(Close {})),
        (
            "set_version",
            Message::SetVersion(SetVersion {
                version: "rust".into(),
            }),
        ),
        (
            "version_ack",
            Message::VersionAck(VersionAck {
                active: "rust".into(),
                previous: "v0".into(),
                versions: vec!["v0".into(), "rust".into()],
            }),
        ),
    ]
}

fn proto_seeds() {
    let mut stream = Vec::new();
    for (i, (name, msg)) in messages().into_iter().enumerate() {
        // Request id 49152: also the vocabulary the targets check distributions against.
        let frame = encode_frame(&msg, 49152).expect("encodes");
        write("frame", &format!("{name}.bin"), &frame);
        let mut m = vec![msg.message_type().as_u8()];
        m.extend_from_slice(&49152u32.to_be_bytes());
        m.extend_from_slice(&frame[ecspec_proto::HEADER_LEN..]);
        write("message", &format!("{name}.bin"), &m);
        if i < 4 {
            stream.extend_from_slice(&frame);
        }
    }
    write("frame", "session.bin", &stream);
}

fn trace_seeds() {
    write("mahimahi", "tiny.trace", b"0\n0\n1\n2\n");
    let lines: String = (1..=40).map(|ms| format!("{}\n", ms / 2 * 2)).collect();
    write("mahimahi", "12mbps.trace", lines.as_bytes());
    write("mahimahi", "crlf.trace", b" 3\r\n5 \r\n5\r\n9");

    let irish = "Timestamp,Longitude,Latitude,Speed,Operatorname,CellID,NetworkMode,RSRP,RSRQ,SNR,CQI,RSSI,DL_bitrate,UL_bitrate,State,PINGAVG,PINGMIN,PINGMAX,PINGSTDEV,PINGLOSS,CELLHEX,NODEHEX,LACHEX,RAWCELLID,NRxRSRP,NRxRSRQ\n\
2019.11.28_11.54.50,-8.5,51.9,0,A,2,5G,-88,-11,7.0,11,-81,29380,520,D,20.5,18,23,1.5,0,2,B,C,3,-,-\n\
2019.11.28_11.54.51,-8.5,51.9,0,A,2,5G,-89,-12,-,12,-81,0,311,D,-,18,23,1.5,0,2,B,C,3,-,-\n\
2019.11.28_11.54.52,-8.5,51.9,0,A,2,5G,-90,-10,5.5,,-81,18000,402,D,19,18,23,1.5,0,2,B,C,3,-,-\n";
    for pick in [0u8, 1] {
        let mut s = vec![pick];
        s.extend_from_slice(irish.as_bytes());
        write("csv_trace", &format!("irish_{pick}.csv"), &s);
    }
    let walking = "time,throughput_mbps\n0,120.5\n1,0\n2,\"98.25\"\n";
    write(
        "csv_trace",
        "walking.csv",
        &[&[2u8][..], walking.as_bytes()].concat(),
    );
    let driving = "time,Sprint_throughput_mbps,TMobile_throughput_mbps,Verizon_throughput_mbps\n0,10,20,30\n1,11,,31\n";
    write(
        "csv_trace",
        "driving.csv",
        &[&[3u8][..], driving.as_bytes()].concat(),
    );
    let all = "carrier,num_tcp_conn,server_location,run_num,throughput_mbps\nVERIZON,8,US-East,1,1500\nSPRINT,1,US-West,2,40\nVERIZON,8,US-East,1,1200.5\n";
    write(
        "csv_trace",
        "throughput.csv",
        &[&[4u8][..], all.as_bytes()].concat(),
    );
    let rate = "\u{feff}rate\n8\n0\n16\n";
    write(
        "csv_trace",
        "rate.csv",
        &[&[0x85u8][..], rate.as_bytes()].concat(),
    );
}

fn family_seeds() {
    let shipped = std::fs::read("families/smollm2-135m/family.toml").expect("the shipped manifest");
    write("manifest", "smollm2-135m.toml", &shipped);
    let minimal = "format = 1\nname = \"tiny\"\n[base]\nname = \"tiny\"\nfile = \"tiny.gguf\"\nsha256 = \"\
0000000000000000000000000000000000000000000000000000000000000000\"\n[frozen]\nparts = [\"embedding\", \"final_norm\", \"lm_head\", \"base_layers\"]\n\
[draft]\nshared_layers = 1\nacceptance = 0.5\n[[version]]\nname = \"v0\"\ncreated = \"2026-05-01T12:00:00+02:00\"\ndescription = \"base\"\n";
    write("manifest", "minimal.toml", minimal.as_bytes());

    let (json, weights) = ecspec_fuzz::tiny_adapter();
    write("peft_config", "tiny.json", json.as_bytes());
    let shipped = std::fs::read("families/smollm2-135m/versions/rust/adapter_config.json")
        .expect("a shipped adapter config");
    write("peft_config", "rust.json", &shipped);
    let with_weights = [json.as_bytes(), &[0u8], &weights].concat();
    write("peft_config", "tiny_with_weights.bin", &with_weights);
}

fn gguf_seeds() {
    use ecspec_model::gguf::Metadata;
    use ecspec_model::tiny::{write_tiny_model, TinySpec};
    let path = std::env::temp_dir().join(format!("ecspec-seed-{}.gguf", std::process::id()));
    let spec = TinySpec {
        seed: 1,
        layers: 1,
        hidden: 32,
        heads: 2,
        ..TinySpec::default()
    };
    write_tiny_model(&path, spec).expect("writes a tiny model");
    let bytes = std::fs::read(&path).expect("reads it back");
    let _ = std::fs::remove_file(&path);
    // Keep the header only: the shortest prefix the reader accepts (tensor data is not read).
    let reads = |n: usize| Metadata::read(&mut std::io::Cursor::new(&bytes[..n]), &path).is_ok();
    let (mut lo, mut hi) = (0, bytes.len());
    while lo < hi {
        let mid = (lo + hi) / 2;
        if reads(mid) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    write("gguf_header", "tiny_llama_header.bin", &bytes[..lo]);
}

fn main() {
    proto_seeds();
    trace_seeds();
    family_seeds();
    gguf_seeds();
}
