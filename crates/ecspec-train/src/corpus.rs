//! Training and held-out text from files on disk (installed from package registries; see the
//! crate docs for which package gives which domain).
//!
//! Files are found by walking the given paths (directories recursively, in sorted order;
//! hidden directories and `site-packages`, `__pycache__`, `target`, `node_modules` skipped)
//! and keeping names that end in one of the given extensions (`rs`, `py`, `txt`, `txt.gz`, …;
//! `.gz` files are decompressed). A `.jsonl` file holds self-distillation samples
//! ([`crate::self_distill`]): each line is one unit of token ids, used as they are. Any other
//! file is one **unit**; a file longer than
//! [`CorpusSpec::max_unit_bytes`] (a whole manual in one file) is cut at line boundaries into
//! units of about that size.
//!
//! **Invariant:** a unit's split is a function of its content alone — the first 8 bytes of the
//! SHA-256 of its text, as a fraction of 2⁶⁴, below [`CorpusSpec::held_out_fraction`] means
//! held-out — so the same text is held out in every run, on every machine, whatever else the
//! corpus holds, and held-out text is never trained on (identical copies, such as one file in
//! two versions of a crate, land on the same side).

use std::io::Read;
use std::path::{Path, PathBuf};

use ecspec_model::GgufTokenizer;
use sha2::{Digest, Sha256};

use crate::error::{Result, TrainError};

/// Which side of the split a unit is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Split {
    /// Used for training.
    Train,
    /// Kept for evaluation only.
    HeldOut,
}

/// Where to read text from and how to split it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CorpusSpec {
    /// Files or directories.
    pub paths: Vec<PathBuf>,
    /// File-name endings to keep, without the leading dot (`rs`, `py`, `txt.gz`); empty: keep
    /// every file given explicitly and, in directories, `rs`, `py`, `txt`, `md`, `rst`.
    pub extensions: Vec<String>,
    /// Fraction of units held out, in [0, 1).
    pub held_out_fraction: f64,
    /// Files longer than this are cut into units of about this many bytes.
    pub max_unit_bytes: usize,
    /// Files (after decompression) longer than this are skipped (generated tables, data).
    pub max_file_bytes: usize,
}

impl CorpusSpec {
    /// Defaults: 10% held out, 64 KiB units, files up to 4 MiB.
    pub fn new(paths: Vec<PathBuf>, extensions: Vec<String>) -> Self {
        Self {
            paths,
            extensions,
            held_out_fraction: 0.1,
            max_unit_bytes: 64 * 1024,
            max_file_bytes: 4 << 20,
        }
    }
}

/// A piece of text with its origin and split.
#[derive(Debug, Clone)]
pub struct TextUnit {
    /// The file it comes from.
    pub source: PathBuf,
    /// Its index among the units of that file.
    pub part: usize,
    /// SHA-256 of the text, hex.
    pub hash: String,
    /// Train or held-out.
    pub split: Split,
    /// The text.
    pub text: String,
    /// Token ids, for units that are already tokenized (self-distillation samples, read
    /// from `.jsonl` files): used as they are instead of encoding `text`.
    pub tokens: Option<Vec<u32>>,
}

const DEFAULT_EXTENSIONS: [&str; 5] = ["rs", "py", "txt", "md", "rst"];
const SKIP_DIRS: [&str; 4] = ["site-packages", "__pycache__", "target", "node_modules"];

/// The split of a text with this SHA-256 digest.
pub fn split_of(digest: &[u8], held_out_fraction: f64) -> Split {
    let mut b = [0u8; 8];
    b.copy_from_slice(&digest[..8]);
    let x = u64::from_be_bytes(b) as f64 / 18_446_744_073_709_551_616.0;
    if x < held_out_fraction {
        Split::HeldOut
    } else {
        Split::Train
    }
}

fn wanted(name: &str, exts: &[String]) -> bool {
    if exts.is_empty() {
        DEFAULT_EXTENSIONS
            .iter()
            .any(|e| name.ends_with(&format!(".{e}")))
    } else {
        exts.iter()
            .any(|e| name.ends_with(&format!(".{}", e.trim_start_matches('.'))))
    }
}

fn walk(dir: &Path, exts: &[String], out: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| TrainError::io(dir, e))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .collect();
    entries.sort();
    for p in entries {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        // symlink_metadata: do not follow links (no cycles, no escaping the tree).
        let Ok(md) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if md.is_dir() {
            if !name.starts_with('.') && !SKIP_DIRS.contains(&name) {
                walk(&p, exts, out)?;
            }
        } else if md.is_file() && wanted(name, exts) {
            out.push(p);
        }
    }
    Ok(())
}

/// The files a spec names, in a deterministic order.
///
/// # Errors
/// [`TrainError::Corpus`] for a path that does not exist.
pub fn list_files(spec: &CorpusSpec) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in &spec.paths {
        if p.is_dir() {
            walk(p, &spec.extensions, &mut out)?;
        } else if p.is_file() {
            out.push(p.clone());
        } else {
            return Err(TrainError::Corpus(format!(
                "{} does not exist",
                p.display()
            )));
        }
    }
    Ok(out)
}

fn read_text(path: &Path, max: usize) -> Result<Option<String>> {
    let f = std::fs::File::open(path).map_err(|e| TrainError::io(path, e))?;
    let mut bytes = Vec::new();
    let limit = max as u64 + 1;
    if path.extension().is_some_and(|e| e == "gz") {
        flate2::read::GzDecoder::new(f)
            .take(limit)
            .read_to_end(&mut bytes)
    } else {
        f.take(limit).read_to_end(&mut bytes)
    }
    .map_err(|e| TrainError::io(path, e))?;
    if bytes.len() > max {
        return Ok(None);
    }
    Ok(String::from_utf8(bytes).ok())
}

/// Cuts `text` at line boundaries into pieces of at least `max` bytes (the last may be shorter).
fn cut(text: &str, max: usize) -> Vec<&str> {
    if text.len() <= max {
        return vec![text];
    }
    let mut parts = Vec::new();
    let mut start = 0;
    while start < text.len() {
        let mut end = (start + max).min(text.len());
        while !text.is_char_boundary(end) {
            end += 1;
        }
        end = text[end..].find('\n').map_or(text.len(), |i| end + i + 1);
        parts.push(&text[start..end]);
        start = end;
    }
    parts
}

/// Reads every file of the spec into units with their split. Files that are empty, not UTF-8
/// or longer than [`CorpusSpec::max_file_bytes`] are skipped.
///
/// # Errors
/// [`TrainError::Corpus`] for a missing path or a corpus without any text; I/O errors.
pub fn read_units(spec: &CorpusSpec) -> Result<Vec<TextUnit>> {
    if !(0.0..1.0).contains(&spec.held_out_fraction) {
        return Err(TrainError::Config(format!(
            "held-out fraction {} is not in [0, 1)",
            spec.held_out_fraction
        )));
    }
    let mut units = Vec::new();
    for path in list_files(spec)? {
        if path.extension().is_some_and(|e| e == "jsonl") {
            for (part, sample) in crate::self_distill::read_samples(&path)?
                .into_iter()
                .enumerate()
            {
                let mut h = Sha256::new();
                for t in &sample.ids {
                    h.update(t.to_le_bytes());
                }
                let digest = h.finalize();
                units.push(TextUnit {
                    source: path.clone(),
                    part,
                    hash: hex::encode(digest),
                    split: split_of(&digest, spec.held_out_fraction),
                    text: sample.text,
                    tokens: Some(sample.ids),
                });
            }
            continue;
        }
        let Some(text) = read_text(&path, spec.max_file_bytes)? else {
            continue;
        };
        if text.trim().is_empty() {
            continue;
        }
        for (part, piece) in cut(&text, spec.max_unit_bytes.max(1))
            .into_iter()
            .enumerate()
        {
            let digest = Sha256::digest(piece.as_bytes());
            units.push(TextUnit {
                source: path.clone(),
                part,
                hash: hex::encode(digest),
                split: split_of(&digest, spec.held_out_fraction),
                text: piece.to_string(),
                tokens: None,
            });
        }
    }
    if units.is_empty() {
        let paths: Vec<String> = spec.paths.iter().map(|p| p.display().to_string()).collect();
        return Err(TrainError::Corpus(format!(
            "no text files ending in {:?} under {}",
            spec.extensions,
            paths.join(", ")
        )));
    }
    Ok(units)
}

/// Tokenizes the units of one split into windows of `seq_len` tokens.
///
/// Units are taken in the order of their hash (a fixed pseudo-random sample of the whole
/// corpus, not its first directory) until `max_tokens` tokens are collected; each unit's
/// tokens are followed by the end-of-text token, and the stream is cut into non-overlapping
/// windows (the remainder is dropped). Train and held-out streams are built separately, so no
/// window mixes the two.
///
/// # Errors
/// Tokenizer errors; [`TrainError::Corpus`] when the split yields no whole window.
pub fn token_windows(
    tok: &GgufTokenizer,
    units: &[TextUnit],
    split: Split,
    seq_len: usize,
    max_tokens: usize,
) -> Result<Vec<Vec<u32>>> {
    if seq_len == 0 {
        return Err(TrainError::Config("window length 0".into()));
    }
    let mut chosen: Vec<&TextUnit> = units.iter().filter(|u| u.split == split).collect();
    chosen.sort_by(|a, b| a.hash.cmp(&b.hash));
    let mut stream = Vec::new();
    for u in chosen {
        if stream.len() >= max_tokens {
            break;
        }
        match &u.tokens {
            Some(ids) => {
                if let Some(bad) = ids.iter().find(|&&t| t as usize >= tok.vocab_size()) {
                    return Err(TrainError::Corpus(format!(
                        "{} sample {}: token {bad} is outside the vocabulary of {}",
                        u.source.display(),
                        u.part,
                        tok.vocab_size()
                    )));
                }
                stream.extend(ids);
                if ids.last() != Some(&tok.eos()) {
                    stream.push(tok.eos());
                }
            }
            None => {
                stream.extend(tok.encode(&u.text, false)?);
                stream.push(tok.eos());
            }
        }
    }
    stream.truncate(max_tokens);
    let windows: Vec<Vec<u32>> = stream.chunks_exact(seq_len).map(|c| c.to_vec()).collect();
    if windows.is_empty() {
        return Err(TrainError::Corpus(format!(
            "the {split:?} split has {} tokens, less than one window of {seq_len}",
            stream.len()
        )));
    }
    Ok(windows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    fn corpus() -> (PathBuf, CorpusSpec) {
        let dir = std::env::temp_dir().join(format!("ecspec-corpus-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for i in 0..60 {
            write(
                &dir,
                &format!("src/m{i:02}.rs"),
                &format!("fn f{i}() -> u32 {{ {i} * 7 }}\n"),
            );
        }
        write(&dir, "src/notes.md", "not rust\n");
        write(&dir, "target/gen.rs", "fn skipped() {}\n");
        write(&dir, ".git/x.rs", "fn skipped() {}\n");
        let mut spec = CorpusSpec::new(vec![dir.clone()], vec!["rs".into()]);
        spec.held_out_fraction = 0.25;
        (dir, spec)
    }

    #[test]
    fn split_is_deterministic_disjoint_and_by_content() {
        let (dir, spec) = corpus();
        let a = read_units(&spec).unwrap();
        let b = read_units(&spec).unwrap();
        assert_eq!(a.len(), 60, "only .rs files outside skipped directories");
        for (x, y) in a.iter().zip(&b) {
            assert_eq!((x.hash.as_str(), x.split), (y.hash.as_str(), y.split));
        }
        let held = a.iter().filter(|u| u.split == Split::HeldOut).count();
        assert!(
            held > 3 && held < 30,
            "about a quarter held out, got {held}"
        );
        // Same text elsewhere → same split, whatever the path.
        let copy = dir.join("copy");
        std::fs::create_dir_all(&copy).unwrap();
        for u in &a {
            std::fs::write(copy.join(format!("x{}.rs", &u.hash[..8])), &u.text).unwrap();
        }
        let c = read_units(&CorpusSpec {
            paths: vec![copy],
            ..spec.clone()
        })
        .unwrap();
        for u in &c {
            let orig = a.iter().find(|o| o.hash == u.hash).unwrap();
            assert_eq!(orig.split, u.split);
        }
        // No held-out text in train and vice versa.
        let train: std::collections::HashSet<_> = a
            .iter()
            .filter(|u| u.split == Split::Train)
            .map(|u| u.text.clone())
            .collect();
        assert!(a
            .iter()
            .filter(|u| u.split == Split::HeldOut)
            .all(|u| !train.contains(&u.text)));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn long_files_are_cut_at_line_boundaries() {
        let text: String = (0..100).map(|i| format!("line {i}\n")).collect();
        let parts = cut(&text, 50);
        assert!(parts.len() > 5);
        assert_eq!(parts.concat(), text);
        assert!(parts.iter().all(|p| p.ends_with('\n')));
    }

    #[test]
    fn missing_path_is_named() {
        let spec = CorpusSpec::new(vec!["/nonexistent/ecspec".into()], vec![]);
        let e = read_units(&spec).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/ecspec"), "{e}");
    }
}
