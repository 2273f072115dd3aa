//! `ecspec family eval` on the shipped SmolLM2 family: the manifest, its anchor and its
//! adapters open against the real base (digests checked), every version is measured with
//! every draft, and every greedy speculative run reproduces the target's own output.
//! Skips (and passes) when SmolLM2 is not in the cache.

use std::path::Path;
use std::process::Command;

fn cached(name: &str) -> bool {
    let cache = ecspec_weights::Cache::from_env().expect("cache dir");
    let spec = ecspec_weights::find_model(name).expect("known model");
    ecspec_weights::cached_path(spec, &cache).is_some()
}

#[test]
fn shipped_family_eval_is_lossless_for_every_version_and_draft() {
    if !cached("smollm2-135m-instruct") {
        eprintln!("skipped: smollm2-135m-instruct is not in the cache (run `ecspec models fetch smollm2`)");
        return;
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("families/smollm2-135m/family.toml");
    let dir = std::env::temp_dir().join(format!("ecspec-family-eval-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // Two questions of their own, so the test does not need the shared data.
    let prompts = dir.join("q.jsonl");
    std::fs::write(
        &prompts,
        concat!(
            r#"{"question_id": 1, "category": "coding", "turns": ["Write a Python function that returns the square of a number."]}"#,
            "\n",
            r#"{"question_id": 2, "category": "writing", "turns": ["Describe a sunrise in one sentence."]}"#,
            "\n"
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ecspec"))
        .args(["family", "eval", "--manifest"])
        .arg(&manifest)
        .arg("--prompts")
        .arg(&prompts)
        .args(["--max-tokens", "12", "--temperatures", "0", "--out"])
        .arg(dir.join("out"))
        .output()
        .expect("run ecspec");
    assert!(
        out.status.success(),
        "ecspec family eval failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let csv = std::fs::read_to_string(dir.join("out/family-eval.csv")).unwrap();
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let rows: Vec<Vec<&str>> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .filter(|r: &Vec<&str>| r[col("category")] == "all")
        .collect();
    let versions = ["v0", "rust", "python-docs", "prose"];
    let drafts = ["cloud-only", "ecspec-static", "shared-untrained"];
    assert_eq!(rows.len(), versions.len() * drafts.len(), "{csv}");
    for v in versions {
        let target_tokens = rows
            .iter()
            .find(|r| r[col("version")] == v && r[col("draft")] == "cloud-only")
            .map(|r| r[col("generated_tokens")].parse::<usize>().unwrap())
            .unwrap();
        assert!((1..=24).contains(&target_tokens));
        for d in drafts {
            let r = rows
                .iter()
                .find(|r| r[col("version")] == v && r[col("draft")] == d)
                .unwrap_or_else(|| panic!("no row for {v} / {d}:\n{csv}"));
            assert_eq!(r[col("prompts")], "2");
            assert_eq!(
                r[col("generated_tokens")].parse::<usize>().unwrap(),
                target_tokens,
                "{v} / {d}"
            );
            if d != "cloud-only" {
                assert_eq!(
                    r[col("lossless")],
                    "true",
                    "{v} / {d}: greedy output differs"
                );
                assert_eq!(
                    r[col("resync_bytes")],
                    "0",
                    "a shared-backbone draft never re-syncs"
                );
            }
        }
    }
    let md = std::fs::read_to_string(dir.join("out/family-eval.md")).unwrap();
    assert!(md.contains("| prose | ecspec-static | 0 |"), "{md}");
}
