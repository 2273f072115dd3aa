//! The edge's memory across requests (`--edge-memory FILE`): per draft and draft-length policy,
//! the acceptance evidence and the policy's state the last request left
//! ([`ecspec_edge::SessionMemory`]), so the next request neither re-learns α nor repeats the
//! policy's warm-up. A JSON object keyed by `family|draft hash|policy`.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use ecspec_edge::SessionMemory;
use ecspec_spec::acceptance::AcceptanceEstimator;

/// All remembered sessions of a memory file.
pub type MemoryFile = BTreeMap<String, SessionMemory>;

/// The key of one draft and policy.
pub fn key(family: &str, compat_hash: &str, policy: &str) -> String {
    format!("{family}|{compat_hash}|{policy}")
}

/// Reads a memory file; a missing file is an empty memory.
///
/// # Errors
/// An unreadable file, invalid JSON, or acceptance evidence that is not finite and ≥ 0, each
/// naming the file.
pub fn load(path: &Path) -> Result<MemoryFile> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(MemoryFile::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let file: MemoryFile = serde_json::from_str(&text)
        .with_context(|| format!("{} is not an ECSpec edge memory file", path.display()))?;
    for (k, m) in &file {
        let (s, f) = m.alpha_evidence;
        AcceptanceEstimator::default()
            .with_evidence(s, f)
            .with_context(|| format!("{}: entry {k:?}", path.display()))?;
    }
    Ok(file)
}

/// Writes a memory file (through a temporary file, so a crash never leaves half a file).
///
/// # Errors
/// The file cannot be written.
pub fn save(path: &Path, file: &MemoryFile) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let text = serde_json::to_string_pretty(file).context("encoding the edge memory")?;
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

/// Checks, before a generation runs, that [`save`] will be able to write `path`: its temporary
/// file can be created (and is removed again). A memory the edge cannot keep is reported up
/// front, not after the whole generation ran.
///
/// # Errors
/// The temporary file cannot be created, naming it and `--edge-memory`.
pub fn check_writable(path: &Path) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, b"").with_context(|| {
        format!(
            "--edge-memory {}: cannot write {} (the memory is saved through it)",
            path.display(),
            tmp.display()
        )
    })?;
    std::fs::remove_file(&tmp).with_context(|| format!("removing {}", tmp.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ecspec_spec::policy::PolicyMemory;

    #[test]
    fn round_trip_missing_file_and_bad_files() {
        let dir = std::env::temp_dir().join(format!("ecspec-memory-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("memory.json");
        assert!(load(&path).unwrap().is_empty());
        let mut f = MemoryFile::new();
        let m = SessionMemory {
            target_version: "rust".into(),
            alpha_evidence: (3.5, 12.25),
            policy: Some(PolicyMemory {
                drafted_tokens: 40,
                streaming: true,
                stream_len: 64,
            }),
        };
        f.insert(key("smollm2-135m", "abc", "ecspec:8"), m.clone());
        save(&path, &f).unwrap();
        assert_eq!(
            load(&path).unwrap()[&key("smollm2-135m", "abc", "ecspec:8")],
            m
        );

        std::fs::write(&path, "{not json").unwrap();
        let e = format!("{:#}", load(&path).unwrap_err());
        assert!(
            e.contains("memory.json") && e.contains("not an ECSpec edge memory file"),
            "{e}"
        );
        std::fs::write(
            &path,
            r#"{"k": {"target_version": "v0", "alpha_evidence": [-1.0, 2.0], "policy": null}}"#,
        )
        .unwrap();
        let e = format!("{:#}", load(&path).unwrap_err());
        assert!(
            e.contains("entry \"k\"") && e.contains("finite and >= 0"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_unwritable_memory_file_is_reported_before_anything_runs() {
        let dir = std::env::temp_dir().join(format!("ecspec-mem-check-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ok = dir.join("memory.json");
        check_writable(&ok).unwrap();
        assert!(!ok.exists() && !ok.with_extension("tmp").exists(), "nothing left behind");
        let bad = dir.join("no-such-dir").join("memory.json");
        let e = format!("{:#}", check_writable(&bad).unwrap_err());
        assert!(
            e.starts_with(&format!(
                "--edge-memory {}: cannot write {}",
                bad.display(),
                bad.with_extension("tmp").display()
            )),
            "{e}"
        );
    }
}
