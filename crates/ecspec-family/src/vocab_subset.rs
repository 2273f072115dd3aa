//! The FR-Spec vocabulary subset of a family's draft (`draft.vocab_subset`): the token ids the
//! draft's head scores, most frequent first (Zhao et al. 2025, arXiv 2502.14856).
//!
//! Format: UTF-8 text, one decimal token id per line, in rank order; empty lines and lines
//! starting with `#` are ignored (the first lines say how the list was made).

use std::path::Path;

use crate::error::{FamilyError, Result};

/// Reads a subset file.
///
/// # Errors
/// [`FamilyError::Io`] if it cannot be read; [`FamilyError::Parse`] naming the line of a value
/// that is not a token id, or of a repeated id; an empty list is an error too.
pub fn read(path: &Path) -> Result<Vec<u32>> {
    let text = std::fs::read_to_string(path).map_err(|e| FamilyError::Io {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let parse = |reason: String| FamilyError::Parse {
        path: path.to_path_buf(),
        reason,
    };
    let mut ids = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let id: u32 = l
            .parse()
            .map_err(|_| parse(format!("line {}: `{l}` is not a token id", i + 1)))?;
        if !seen.insert(id) {
            return Err(parse(format!("line {}: token {id} is listed twice", i + 1)));
        }
        ids.push(id);
    }
    if ids.is_empty() {
        return Err(parse("no token ids".into()));
    }
    Ok(ids)
}

/// Writes `ids` (rank order) with `header` as `#` comment lines.
///
/// # Errors
/// [`FamilyError::Io`].
pub fn write(path: &Path, ids: &[u32], header: &str) -> Result<()> {
    let mut out = String::new();
    for l in header.lines() {
        out.push_str("# ");
        out.push_str(l);
        out.push('\n');
    }
    for id in ids {
        out.push_str(&id.to_string());
        out.push('\n');
    }
    std::fs::write(path, out).map_err(|e| FamilyError::Io {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// The `n` most frequent ids of `tokens` (ties: the smaller id first), at most as many as
/// occur.
pub fn most_frequent(tokens: impl IntoIterator<Item = u32>, n: usize) -> Vec<u32> {
    let mut counts: std::collections::HashMap<u32, u64> = Default::default();
    for t in tokens {
        *counts.entry(t).or_default() += 1;
    }
    let mut v: Vec<(u32, u64)> = counts.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v.into_iter().take(n).map(|(t, _)| t).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_ranking_and_errors() {
        let dir = std::env::temp_dir().join(format!("ecspec-subset-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("subset.txt");
        let ids = most_frequent([5, 3, 5, 9, 3, 5, 1], 3);
        assert_eq!(ids, vec![5, 3, 1]);
        write(&f, &ids, "top 3\nof a toy stream").unwrap();
        assert_eq!(
            std::fs::read_to_string(&f).unwrap(),
            "# top 3\n# of a toy stream\n5\n3\n1\n"
        );
        assert_eq!(read(&f).unwrap(), ids);
        for (text, want) in [
            ("1\nx\n", "line 2: `x` is not a token id"),
            ("# c\n4\n\n4\n", "line 4: token 4 is listed twice"),
            ("# only a comment\n", "no token ids"),
        ] {
            std::fs::write(&f, text).unwrap();
            let e = read(&f).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
    }
}
