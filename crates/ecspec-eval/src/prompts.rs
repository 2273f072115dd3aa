//! Evaluation prompts in the Spec-Bench / MT-Bench JSONL format: one object per line with
//! `question_id`, `category` and `turns` (the user's messages, in order).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// The workload options `family eval` and `bench` share.
#[derive(Debug, Clone, clap::Args)]
pub struct WorkloadArgs {
    /// Prompts (Spec-Bench / MT-Bench JSONL) [default: $ECSPEC_DATA_DIR or ../shared/data,
    /// prompts/spec_bench_question.jsonl].
    #[arg(long, value_name = "FILE")]
    pub prompts: Option<PathBuf>,
    /// Questions per category (the first ones of the file).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub per_category: u32,
    /// Only these categories (default: all).
    #[arg(long, value_delimiter = ',')]
    pub categories: Vec<String>,
}

impl WorkloadArgs {
    /// The prompts file used and the questions selected from it.
    ///
    /// # Errors
    /// An unreadable or invalid file (saying where the default one lives), or a selection
    /// that leaves nothing.
    pub fn questions(&self) -> Result<(PathBuf, Vec<Question>)> {
        let path = self.prompts.clone().unwrap_or_else(default_spec_bench);
        let all = load(&path).with_context(|| {
            if self.prompts.is_none() {
                "the default prompts live in the shared data directory: give --prompts FILE or set ECSPEC_DATA_DIR".to_string()
            } else {
                "--prompts".to_string()
            }
        })?;
        let q = select(&all, self.per_category as usize, &self.categories)?;
        Ok((path, q))
    }
}

/// One benchmark question.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct Question {
    /// `question_id` (numeric in Spec-Bench and MT-Bench).
    pub question_id: serde_json::Value,
    /// `category`, e.g. `writing`, `translation`, `math_reasoning`.
    pub category: String,
    /// The user's turns; at least one.
    pub turns: Vec<String>,
}

/// The shared data directory: `$ECSPEC_DATA_DIR`, else `../shared/data` (beside a checkout).
pub fn data_dir() -> PathBuf {
    std::env::var_os("ECSPEC_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("../shared/data"))
}

/// The Spec-Bench questions in the shared data directory.
pub fn default_spec_bench() -> PathBuf {
    data_dir().join("prompts/spec_bench_question.jsonl")
}

/// Reads a JSONL prompts file; blank lines are skipped.
///
/// # Errors
/// The file cannot be read; a line is not a question object, or has no turns or an empty
/// first turn (reported as `FILE:LINE: …`); the file holds no question.
pub fn load(path: &Path) -> Result<Vec<Question>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the prompts file {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let q: Question = serde_json::from_str(line).with_context(|| {
            format!(
                "{}:{}: not a question object (question_id, category, turns)",
                path.display(),
                i + 1
            )
        })?;
        if q.turns.first().is_none_or(|t| t.trim().is_empty()) {
            bail!(
                "{}:{}: the question has no first turn",
                path.display(),
                i + 1
            );
        }
        out.push(q);
    }
    if out.is_empty() {
        bail!("{}: no questions", path.display());
    }
    Ok(out)
}

/// The first `per_category` questions (file order) of every category, or of `categories`
/// when not empty; grouped by category name, in name order.
///
/// # Errors
/// A category asked for that the questions do not have (the known ones are listed).
pub fn select(
    questions: &[Question],
    per_category: usize,
    categories: &[String],
) -> Result<Vec<Question>> {
    let mut by_cat: BTreeMap<&str, Vec<&Question>> = BTreeMap::new();
    for q in questions {
        by_cat.entry(q.category.as_str()).or_default().push(q);
    }
    if let Some(missing) = categories.iter().find(|c| !by_cat.contains_key(c.as_str())) {
        let known: Vec<&str> = by_cat.keys().copied().collect();
        bail!(
            "category `{missing}` is not in the prompts (categories: {})",
            known.join(", ")
        );
    }
    Ok(by_cat
        .into_iter()
        .filter(|(c, _)| categories.is_empty() || categories.iter().any(|x| x == c))
        .flat_map(|(_, qs)| qs.into_iter().take(per_category).cloned())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, text: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("ecspec-prompts-{}-{name}", std::process::id()));
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn selects_the_first_of_each_category_in_name_order() {
        let p = write(
            "ok.jsonl",
            concat!(
                r#"{"question_id": 1, "category": "writing", "turns": ["a", "b"]}"#,
                "\n\n",
                r#"{"question_id": 2, "category": "math", "turns": ["c"]}"#,
                "\n",
                r#"{"question_id": 3, "category": "writing", "turns": ["d"]}"#,
                "\n"
            ),
        );
        let qs = load(&p).unwrap();
        assert_eq!(qs.len(), 3);
        let one = select(&qs, 1, &[]).unwrap();
        let firsts: Vec<&str> = one.iter().map(|q| q.turns[0].as_str()).collect();
        assert_eq!(firsts, ["c", "a"]);
        let w = select(&qs, 5, &["writing".to_string()]).unwrap();
        assert_eq!(w.len(), 2);
        let e = select(&qs, 1, &["poetry".to_string()]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "category `poetry` is not in the prompts (categories: math, writing)"
        );
    }

    #[test]
    fn bad_lines_are_named_by_file_and_line() {
        let p = write(
            "bad.jsonl",
            "{\"question_id\": 1, \"category\": \"x\", \"turns\": [\"a\"]}\n{\"category\": 3}\n",
        );
        let e = format!("{:#}", load(&p).unwrap_err());
        assert!(
            e.starts_with(&format!("{}:2: not a question object", p.display())),
            "{e}"
        );
        let p = write(
            "empty-turn.jsonl",
            "{\"question_id\": 1, \"category\": \"x\", \"turns\": []}\n",
        );
        let e = load(&p).unwrap_err().to_string();
        assert_eq!(
            e,
            format!("{}:1: the question has no first turn", p.display())
        );
    }
}
