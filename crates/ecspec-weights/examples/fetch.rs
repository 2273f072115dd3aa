//! Fetches models into the cache, printing progress lines and timings.
//!
//! `cargo run -p ecspec-weights --example fetch -- [NAME_OR_PATH ...]` (default: every known
//! model). Uses `ECSPEC_CACHE_DIR` / `XDG_CACHE_HOME` / `~/.cache/ecspec`.

use std::process::ExitCode;
use std::time::Instant;

use ecspec_weights::{resolve, Cache, StderrReporter, MODELS};

fn main() -> ExitCode {
    let mut names: Vec<String> = std::env::args().skip(1).collect();
    if names.is_empty() {
        names = MODELS.iter().map(|m| m.name.to_owned()).collect();
    }
    let cache = match Cache::from_env() {
        Ok(cache) => cache,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut reporter = StderrReporter::stderr();
    let mut status = ExitCode::SUCCESS;
    for name in names {
        let started = Instant::now();
        match resolve(&name, &cache, &mut reporter) {
            Ok(path) => println!("{name}: {} ({:.1?})", path.display(), started.elapsed()),
            Err(e) => {
                eprintln!("error: {name}: {e}");
                status = ExitCode::FAILURE;
            }
        }
    }
    status
}
