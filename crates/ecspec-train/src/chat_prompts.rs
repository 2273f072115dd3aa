//! Chat prompts built from corpus text, for self-distillation (see [`crate::self_distill`]).
//!
//! Acceptance is measured on what the target says in answer to chat prompts, so the draft
//! should be trained on the base's answers to chat prompts too — but not to the benchmark's
//! own prompts (Spec-Bench and MT-Bench are evaluation data). These prompts are made from the
//! package-installed corpora instead (headings, paragraphs, sentences and code of the Python
//! docs, the Debian Reference and Rust/Python sources) put into instruction templates that
//! cover the kinds of request Spec-Bench's categories hold: writing, role-play, reasoning,
//! arithmetic, coding, extraction, STEM and humanities questions, translation,
//! summarisation and question answering over a context. Template i of the list is used for
//! prompt i modulo its length, so every kind is equally represented; the material is drawn by
//! a seeded generator, so the same corpus and seed give the same prompts everywhere.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::corpus::TextUnit;
use crate::error::{Result, TrainError};

/// Pieces of corpus text prompts are made from.
#[derive(Debug, Default, Clone)]
pub struct Material {
    /// Section titles (reStructuredText / Markdown / numbered headings), 8–70 characters.
    pub headings: Vec<String>,
    /// Prose paragraphs, 200–700 characters, mostly letters.
    pub paragraphs: Vec<String>,
    /// First sentences of paragraphs, 40–200 characters.
    pub sentences: Vec<String>,
    /// Code snippets starting at a `def`/`fn`, 4–14 lines.
    pub code: Vec<String>,
}

fn is_underline(l: &str) -> bool {
    let t = l.trim_end();
    t.len() >= 3
        && t.chars()
            .all(|c| matches!(c, '=' | '-' | '~' | '*' | '^' | '#'))
}

fn clean_heading(h: &str) -> Option<String> {
    let h = h.trim().trim_start_matches('#').trim();
    // "1.2.3. Title" (Debian Reference) → "Title".
    let h = h
        .trim_start_matches(|c: char| c.is_ascii_digit() || c == '.')
        .trim();
    let letters = h.chars().filter(|c| c.is_alphabetic()).count();
    ((8..=70).contains(&h.len())
        && letters * 10 >= h.len() * 6
        && !h.contains("::")
        && !h.starts_with(".."))
    .then(|| h.to_string())
}

fn is_prose(p: &str) -> bool {
    let letters = p.chars().filter(|c| c.is_alphabetic() || *c == ' ').count();
    (200..=700).contains(&p.len())
        && letters * 100 >= p.chars().count() * 85
        && !p.starts_with("..")
        && !p.starts_with(':')
        && !p.starts_with('*')
}

fn first_sentence(p: &str) -> Option<String> {
    let end = p.find(". ").map(|i| i + 1).unwrap_or(p.len());
    let s = p[..end].trim();
    (40..=200).contains(&s.len()).then(|| s.to_string())
}

/// Collects [`Material`] from the units (any split; pass the training split only when the
/// prompts must not touch held-out text).
pub fn material(units: &[TextUnit]) -> Material {
    let mut m = Material::default();
    for u in units {
        let code = u.source.extension().is_some_and(|e| e == "py" || e == "rs");
        let lines: Vec<&str> = u.text.lines().collect();
        if code {
            for (i, l) in lines.iter().enumerate() {
                let t = l.trim_start();
                if !(t.starts_with("def ") || t.starts_with("pub fn ") || t.starts_with("fn ")) {
                    continue;
                }
                let body: Vec<&str> = lines[i..]
                    .iter()
                    .take(14)
                    .take_while(|l| !l.trim().is_empty())
                    .copied()
                    .collect();
                if body.len() >= 4 {
                    m.code.push(body.join("\n"));
                }
            }
            continue;
        }
        for (i, l) in lines.iter().enumerate() {
            let heading = match lines.get(i + 1) {
                Some(next) if is_underline(next) && !is_underline(l) => clean_heading(l),
                _ if l.starts_with("# ") || l.starts_with("## ") => clean_heading(l),
                _ => None,
            };
            m.headings.extend(heading);
        }
        for p in u.text.split("\n\n") {
            let p = p.split_whitespace().collect::<Vec<_>>().join(" ");
            if is_prose(&p) {
                m.sentences.extend(first_sentence(&p));
                m.paragraphs.push(p);
            }
        }
    }
    for v in [
        &mut m.headings,
        &mut m.paragraphs,
        &mut m.sentences,
        &mut m.code,
    ] {
        v.sort();
        v.dedup();
    }
    m
}

const ROLES: [&str; 6] = [
    "a patient teacher",
    "a ship's captain",
    "a travel guide in Lisbon",
    "a detective in 1920s London",
    "a senior software engineer",
    "a museum curator",
];
const LANGUAGES: [&str; 4] = ["French", "German", "Spanish", "Italian"];
const STORY_TOPICS: [&str; 8] = [
    "a lighthouse keeper who finds a message in a bottle",
    "a robot learning to paint",
    "two friends lost in a forest",
    "a city where it never stops raining",
    "the first day at a new school",
    "a dragon who is afraid of heights",
    "an old bicycle",
    "a letter that arrives fifty years late",
];

/// Number of templates [`prompt`] cycles through.
pub const TEMPLATES: usize = 16;

/// Prompt number `index` made from `m` with `rng` (template `index % TEMPLATES`).
fn prompt(index: usize, m: &Material, rng: &mut ChaCha8Rng) -> String {
    fn pick<'a>(v: &'a [String], rng: &mut ChaCha8Rng) -> &'a str {
        &v[rng.random_range(0..v.len())]
    }
    let h = pick(&m.headings, rng).to_string();
    let p = pick(&m.paragraphs, rng).to_string();
    let s = pick(&m.sentences, rng).to_string();
    let c = pick(&m.code, rng).to_string();
    let (a, b, x) = (
        rng.random_range(2..99u32),
        rng.random_range(2..99u32),
        rng.random_range(2..20u32),
    );
    match index % TEMPLATES {
        0 => format!("Summarize the following text in two sentences.\n\n{p}"),
        1 => format!("Explain what this code does.\n\n```\n{c}\n```"),
        2 => format!("What is \"{h}\"? Explain it simply, for a beginner."),
        3 => format!("Write a short Python function related to \"{h}\", with a docstring and an example."),
        4 => format!(
            "Translate into {}: {s}",
            LANGUAGES[rng.random_range(0..LANGUAGES.len())]
        ),
        5 => format!(
            "Write a short story of about 100 words about {}.",
            STORY_TOPICS[rng.random_range(0..STORY_TOPICS.len())]
        ),
        6 => format!("Give three practical tips about \"{h}\"."),
        7 => format!("Read the context and answer the question.\n\nContext: {p}\n\nQuestion: What is the main point of this context?"),
        8 => format!(
            "A train travels {} km in {x} hours. What is its average speed? Show your reasoning step by step.",
            a * x
        ),
        9 => format!("Write a polite email to a colleague about \"{h}\"."),
        10 => format!("Rewrite this sentence in a more formal style: {s}"),
        11 => format!(
            "Pretend you are {}. In a few sentences, tell me about \"{h}\".",
            ROLES[rng.random_range(0..ROLES.len())]
        ),
        12 => format!("Extract the key terms from this text as a bulleted list.\n\n{p}"),
        13 => format!("Solve for x: {a}x + {b} = {}. Explain each step.", a * x + b),
        14 => format!("Find and explain one possible improvement to this code.\n\n```\n{c}\n```"),
        _ => format!("Why does \"{h}\" matter? Answer in one paragraph."),
    }
}

/// `n` chat prompts from `m`, seeded.
///
/// # Errors
/// [`TrainError::Corpus`] when `m` lacks a kind of material the templates need (headings,
/// paragraphs, sentences or code): give the corpus both prose and code.
pub fn prompts(m: &Material, n: usize, seed: u64) -> Result<Vec<String>> {
    for (what, v) in [
        ("headings", &m.headings),
        ("prose paragraphs", &m.paragraphs),
        ("sentences", &m.sentences),
        ("code snippets (def/fn in .py/.rs files)", &m.code),
    ] {
        if v.is_empty() {
            return Err(TrainError::Corpus(format!(
                "no {what} found for the chat-prompt templates; give both prose and code corpora"
            )));
        }
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    Ok((0..n).map(|i| prompt(i, m, &mut rng)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corpus::Split;

    fn unit(name: &str, text: &str) -> TextUnit {
        TextUnit {
            source: name.into(),
            part: 0,
            hash: String::new(),
            split: Split::Train,
            text: text.into(),
            tokens: None,
        }
    }

    fn sample() -> Vec<TextUnit> {
        let para = "The quick brown fox jumps over the lazy dog near the river bank. ".repeat(5);
        vec![
            unit(
                "doc.txt",
                &format!("Working with files\n==================\n\n{para}\n\n1.2. Package management\n-----------------------\n"),
            ),
            unit(
                "m.py",
                "def add(a, b):\n    \"\"\"Sum.\"\"\"\n    c = a + b\n    return c\n",
            ),
        ]
    }

    #[test]
    fn material_is_found_and_prompts_are_seeded_and_cover_every_template() {
        let m = material(&sample());
        assert_eq!(m.headings, vec!["Package management", "Working with files"]);
        assert_eq!(m.paragraphs.len(), 1);
        assert_eq!(
            m.sentences,
            vec!["The quick brown fox jumps over the lazy dog near the river bank."]
        );
        assert_eq!(m.code.len(), 1);
        let a = prompts(&m, 2 * TEMPLATES, 7).unwrap();
        assert_eq!(a, prompts(&m, 2 * TEMPLATES, 7).unwrap());
        assert_ne!(a, prompts(&m, 2 * TEMPLATES, 8).unwrap());
        assert!(a[0].starts_with("Summarize the following text"));
        assert!(a[1].contains("def add(a, b):"));
        assert!(a[TEMPLATES].starts_with("Summarize the following text"));
        let distinct: std::collections::HashSet<_> = a
            .iter()
            .map(|p| p.split_whitespace().next().unwrap())
            .collect();
        assert!(distinct.len() >= 12, "{distinct:?}");
    }

    #[test]
    fn missing_code_is_named() {
        let m = material(&sample()[..1]);
        let e = prompts(&m, 4, 0).unwrap_err().to_string();
        assert!(e.contains("code snippets"), "{e}");
    }
}
