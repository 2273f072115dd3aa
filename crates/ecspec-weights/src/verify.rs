//! Streaming sha256 and size checks.

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::FetchError;
use crate::report::{FetchReporter, NoReporter};

/// Read and hash in chunks of this size: large enough that a 1.1 GB file takes ~1000 reads,
/// small enough not to matter for memory.
pub(crate) const CHUNK: usize = 1 << 20;

/// The sha256 of `bytes`, lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The sha256 of the file at `path`, lower-case hex, read in 1 MiB chunks; progress goes to
/// `reporter` (bytes hashed of the file's size).
pub fn sha256_file(path: &Path, reporter: &mut dyn FetchReporter) -> Result<String, FetchError> {
    let mut file = File::open(path).map_err(|e| FetchError::io("open", path, e))?;
    let total = file
        .metadata()
        .map_err(|e| FetchError::io("stat", path, e))?
        .len();
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut done = 0u64;
    reporter.progress(0, total);
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(FetchError::io("read", path, e)),
        };
        hasher.update(&buf[..n]);
        done += n as u64;
        reporter.progress(done, total);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Checks that the file at `path` is exactly `expected_size` bytes long (checked first, without
/// reading it) and has the sha256 `expected_sha256` (hex, either case), reading it as a stream.
pub fn verify_file(
    path: &Path,
    expected_sha256: &str,
    expected_size: u64,
) -> Result<(), FetchError> {
    verify_file_with(path, expected_sha256, expected_size, &mut NoReporter)
}

/// [`verify_file`], reporting progress while hashing.
pub fn verify_file_with(
    path: &Path,
    expected_sha256: &str,
    expected_size: u64,
    reporter: &mut dyn FetchReporter,
) -> Result<(), FetchError> {
    let size = std::fs::metadata(path)
        .map_err(|e| FetchError::io("stat", path, e))?
        .len();
    if size != expected_size {
        return Err(FetchError::Size {
            file: path.display().to_string(),
            expected: expected_size,
            actual: size,
        });
    }
    let actual = sha256_file(path, reporter)?;
    if !actual.eq_ignore_ascii_case(expected_sha256) {
        return Err(FetchError::Checksum {
            file: path.display().to_string(),
            expected: expected_sha256.to_ascii_lowercase(),
            actual,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_sha256_vectors() {
        // FIPS 180-2 examples.
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
