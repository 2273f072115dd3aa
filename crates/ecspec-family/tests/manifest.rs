//! Family manifests: a valid family opens with every version sharing the base; every way a
//! manifest or the files it names can be wrong is reported with the file, the key and what was
//! expected.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ecspec_family::{sha256_file, Family, FamilyError, FamilyManifest, VersionSpec};
use ecspec_model::tiny::{write_tiny_model, TinySpec};
use ecspec_model::{
    anchor, LoadedModel, LogitsFor, LoraAdapter, LoraError, LoraTarget, ModelConfig, Session,
};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ecspec-family-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A family directory: tiny base, a trained-looking anchor, two adapters.
struct Fixture {
    dir: PathBuf,
    sha: String,
    base_hash: String,
    config: ModelConfig,
}

fn adapter(cfg: &ModelConfig, seed: u64) -> LoraAdapter {
    let mut a = LoraAdapter::init(
        cfg,
        4,
        8.0,
        1..cfg.num_layers,
        &[LoraTarget::AttnQ, LoraTarget::AttnV, LoraTarget::FfnDown],
        seed,
        "tiny",
    )
    .unwrap();
    for layer in 1..cfg.num_layers {
        for t in [LoraTarget::AttnQ, LoraTarget::AttnV, LoraTarget::FfnDown] {
            for (i, b) in a.pair_mut(layer, t).unwrap().b_mut().iter_mut().enumerate() {
                *b = ((i as f32 + seed as f32) * 0.71).sin() * 0.1;
            }
        }
    }
    a
}

fn fixture(name: &str) -> Fixture {
    let dir = scratch(name);
    let gguf = dir.join("base.gguf");
    write_tiny_model(&gguf, TinySpec::default()).unwrap();
    let base = LoadedModel::load(&gguf).unwrap();
    let config = base.transformer.config().clone();
    adapter(&config, 1)
        .save_peft(&dir.join("versions/rust"), &config)
        .unwrap();
    adapter(&config, 2)
        .save_peft(&dir.join("versions/prose"), &config)
        .unwrap();
    let tensors: Vec<(&str, Vec<f32>)> = anchor::layer_tensors(&config)
        .into_iter()
        .map(|(n, s)| {
            let len: usize = s.iter().product();
            let v = (0..len)
                .map(|i| {
                    if s.len() == 1 {
                        1.0
                    } else {
                        ((i * 37 % 101) as f32 / 101.0 - 0.5) * 0.2
                    }
                })
                .collect();
            (n, v)
        })
        .collect();
    let refs: Vec<(&str, &[f32])> = tensors.iter().map(|(n, v)| (*n, v.as_slice())).collect();
    anchor::save_anchor(
        &dir.join("draft/anchor.safetensors"),
        &config,
        &refs,
        anchor::StoreDtype::F16,
    )
    .unwrap();
    std::fs::write(
        dir.join("draft/vocab.txt"),
        "# FR-Spec subset\n0\n1\n2\n72\n",
    )
    .unwrap();
    Fixture {
        sha: sha256_file(&gguf).unwrap(),
        base_hash: base.base_hash.clone(),
        config,
        dir,
    }
}

impl Fixture {
    fn manifest_text(&self) -> String {
        format!(
            r#"format = 1
name = "tiny"
active = "rust"

[base]
name = "tiny-llama"
file = "base.gguf"
sha256 = "{sha}"
hf_name = "example/tiny"

[frozen]
parts = ["embedding", "final_norm", "lm_head", "base_layers"]
base_hash = "{bh}"

[draft]
shared_layers = 2
anchor = "draft/anchor.safetensors"
vocab_subset = "draft/vocab.txt"

[[version]]
name = "v0"
created = "2026-05-01T12:00:00Z"
description = "the base itself"

[[version]]
name = "rust"
adapter = "versions/rust"
parent = "v0"
created = "2026-05-02T08:30:00+02:00"
description = "LoRA r=4 on Rust source"

[[version]]
name = "prose"
adapter = "versions/prose"
parent = "rust"
created = "2026-05-03T09:00:00.5Z"
description = "LoRA r=4 on English prose"
"#,
            sha = self.sha,
            bh = self.base_hash
        )
    }

    fn path(&self) -> PathBuf {
        self.dir.join("family.toml")
    }

    /// Writes the manifest with `edit` applied to its text and loads it.
    fn load_with(&self, edit: impl Fn(String) -> String) -> Result<FamilyManifest, FamilyError> {
        std::fs::write(self.path(), edit(self.manifest_text())).unwrap();
        FamilyManifest::load(&self.path())
    }

    fn open_with(&self, edit: impl Fn(String) -> String) -> Result<Family, FamilyError> {
        Family::open(self.load_with(edit)?, None)
    }
}

fn logits(t: &Arc<ecspec_model::Transformer>) -> Vec<f32> {
    Session::new(t.clone())
        .forward(&[72, 105, 33, 10], LogitsFor::All)
        .unwrap()
        .row_slices()
        .concat()
}

#[test]
fn valid_family_opens_with_versions_sharing_the_base() {
    let fx = fixture("valid");
    let m = fx.load_with(|t| t).unwrap();
    assert_eq!(m.active_version(), "rust");
    assert_eq!(m.resolve("versions/rust"), fx.dir.join("versions/rust"));
    let family = Family::open(m.clone(), None).unwrap();
    let names: Vec<&str> = family
        .versions()
        .iter()
        .map(|v| v.spec.name.as_str())
        .collect();
    assert_eq!(names, ["v0", "rust", "prose"]);
    let v0 = family.version("v0").unwrap();
    assert!(
        v0.adapter.is_none() && Arc::ptr_eq(&v0.transformer, &family.base.transformer),
        "v0 is the base itself"
    );
    let (rust, prose) = (
        family.version("rust").unwrap(),
        family.version("prose").unwrap(),
    );
    assert_eq!(
        rust.adapter.as_ref().unwrap(),
        &adapter(&fx.config, 1),
        "the adapter loaded as saved"
    );
    let (l0, l1, l2) = (
        logits(&v0.transformer),
        logits(&rust.transformer),
        logits(&prose.transformer),
    );
    assert!(
        l0 != l1 && l1 != l2 && l0 != l2,
        "each version computes its own function"
    );
    let draft = family.draft().unwrap();
    assert_eq!(
        draft.transformer.num_layers(),
        3,
        "k = 2 shared layers + the anchor"
    );
    assert_eq!(draft.compat_hash, family.base.base_hash);
    assert!(family.anchor.is_some());
    // The manifest's FR-Spec subset: the draft's head scores those four tokens only.
    assert_eq!(
        draft.transformer.vocab_subset(),
        Some(&[0u32, 1, 2, 72][..])
    );

    // The manifest round-trips through its own writer.
    let saved = fx.dir.join("saved.toml");
    m.save(&saved).unwrap();
    let mut back = FamilyManifest::load(&saved).unwrap();
    back.path = m.path.clone();
    assert_eq!(back, m);

    // A base path given by the caller overrides base.file.
    let without_file = fx
        .load_with(|t| t.replace("file = \"base.gguf\"\n", ""))
        .unwrap();
    assert!(
        matches!(Family::open(without_file.clone(), None), Err(FamilyError::Invalid { key, .. }) if key == "base.file")
    );
    assert!(Family::open(without_file, Some(&fx.dir.join("base.gguf"))).is_ok());
}

#[test]
fn add_version_checks_like_load() {
    let fx = fixture("add");
    let mut m = fx.load_with(|t| t).unwrap();
    let v = |name: &str, parent: &str, created: &str| VersionSpec {
        name: name.into(),
        adapter: Some("versions/rust".into()),
        parent: Some(parent.into()),
        created: created.into(),
        description: "test".into(),
    };
    m.add_version(v("python", "prose", "2026-05-04T00:00:00Z"))
        .unwrap();
    assert_eq!(m.versions.len(), 4);
    let e = m
        .add_version(v("python", "v0", "2026-05-04T00:00:00Z"))
        .unwrap_err();
    assert!(
        matches!(&e, FamilyError::Invalid { key, .. } if key == "version[4].name"),
        "{e}"
    );
    let e = m
        .add_version(v("docs", "nope", "2026-05-04T00:00:00Z"))
        .unwrap_err();
    assert!(
        matches!(&e, FamilyError::Invalid { key, reason, .. } if key == "version[4].parent" && reason.contains("`nope`")),
        "{e}"
    );
    assert_eq!(m.versions.len(), 4, "a refused version is not kept");
}

/// `(case, edit of the manifest text, expected key, a phrase the message must contain)`.
type Case = (
    &'static str,
    Box<dyn Fn(String) -> String>,
    &'static str,
    &'static str,
);

fn replace(from: &'static str, to: &'static str) -> Box<dyn Fn(String) -> String> {
    Box::new(move |t: String| {
        assert!(t.contains(from), "fixture lacks {from:?}");
        t.replacen(from, to, 1)
    })
}

#[test]
fn parse_errors_name_the_line_and_the_key() {
    let fx = fixture("parse");
    type ParseCase = (
        &'static str,
        Box<dyn Fn(String) -> String>,
        &'static [&'static str],
    );
    let cases: Vec<ParseCase> = vec![
        (
            "syntax",
            replace("name = \"tiny\"", "name = tiny"),
            &["line 2"],
        ),
        (
            "unknown key (typo)",
            replace("shared_layers = 2", "shared_layer = 2"),
            &["shared_layer", "line 16", "expected one of `shared_layers`"],
        ),
        ("missing key", replace("sha256 = ", "sha = "), &["sha"]),
        (
            "wrong type",
            replace("shared_layers = 2", "shared_layers = \"two\""),
            &["shared_layers", "line 16"],
        ),
        (
            "unknown frozen part",
            replace("\"lm_head\"", "\"head\""),
            &["`head`", "lm_head", "line 12"],
        ),
    ];
    for (case, edit, phrases) in cases {
        let e = fx.load_with(edit).unwrap_err();
        assert!(
            matches!(&e, FamilyError::Parse { path, .. } if path == &fx.path()),
            "{case}: {e:?}"
        );
        let msg = e.to_string();
        for p in phrases {
            assert!(msg.contains(p), "{case}: `{p}` not in: {msg}");
        }
    }
}

#[test]
fn value_errors_name_the_key_and_the_value() {
    let fx = fixture("values");
    let bad_sha = "0123";
    let cases: Vec<Case> = vec![
        (
            "format",
            replace("format = 1", "format = 2"),
            "format",
            "format 2 is not supported",
        ),
        (
            "family name",
            replace("name = \"tiny\"", "name = \"tiny family\""),
            "name",
            "`tiny family`",
        ),
        (
            "base sha256",
            Box::new(move |t: String| {
                let line = t
                    .lines()
                    .find(|l| l.starts_with("sha256"))
                    .unwrap()
                    .to_string();
                t.replace(&line, &format!("sha256 = \"{bad_sha}\""))
            }),
            "base.sha256",
            "not a SHA-256 digest",
        ),
        (
            "frozen part missing",
            replace("\"lm_head\", ", ""),
            "frozen.parts",
            "`lm_head` is missing",
        ),
        (
            "base hash",
            Box::new(|t: String| {
                let line = t
                    .lines()
                    .find(|l| l.starts_with("base_hash"))
                    .unwrap()
                    .to_string();
                t.replace(&line, "base_hash = \"XYZ\"")
            }),
            "frozen.base_hash",
            "`XYZ`",
        ),
        (
            "k = 0",
            replace("shared_layers = 2", "shared_layers = 0"),
            "draft.shared_layers",
            "at least 1",
        ),
        (
            "acceptance above 1",
            replace("shared_layers = 2", "shared_layers = 2\nacceptance = 1.5"),
            "draft.acceptance",
            "1.5 is not an acceptance rate in [0, 1]",
        ),
        (
            "anchor digest alone",
            replace(
                "anchor = \"draft/anchor.safetensors\"",
                "anchor_sha256 = \"00\"",
            ),
            "draft.anchor_sha256",
            "without draft.anchor",
        ),
        (
            "duplicate version",
            replace("name = \"prose\"", "name = \"rust\""),
            "version[2].name",
            "already the name of version[1]",
        ),
        (
            "unknown parent",
            replace("parent = \"rust\"", "parent = \"python\""),
            "version[2].parent",
            "`python` is not a version listed before `prose`",
        ),
        (
            "parent listed later",
            replace("parent = \"v0\"", "parent = \"prose\""),
            "version[1].parent",
            "`prose` is not a version listed before `rust`",
        ),
        (
            "own parent",
            replace("parent = \"rust\"", "parent = \"prose\""),
            "version[2].parent",
            "its own parent",
        ),
        (
            "created",
            replace("2026-05-02T08:30:00+02:00", "2026-02-30T08:30:00+02:00"),
            "version[1].created",
            "day 30 of month 2",
        ),
        (
            "created without zone",
            replace("2026-05-01T12:00:00Z", "2026-05-01 12:00"),
            "version[0].created",
            "RFC 3339",
        ),
        (
            "version name",
            replace("name = \"v0\"", "name = \"v 0\""),
            "version[0].name",
            "`v 0`",
        ),
        (
            "active",
            replace("active = \"rust\"", "active = \"go\""),
            "active",
            "`go` is not a listed version",
        ),
        (
            "no versions",
            Box::new(|t: String| t[..t.find("[[version]]").unwrap()].to_string()),
            "version",
            "at least one",
        ),
    ];
    for (case, edit, key, phrase) in cases {
        let e = fx.load_with(edit).unwrap_err();
        match &e {
            FamilyError::Invalid {
                path,
                key: k,
                reason,
            } => {
                assert_eq!(path, &fx.path(), "{case}");
                assert_eq!(k, key, "{case}: {e}");
                assert!(reason.contains(phrase), "{case}: `{phrase}` not in: {e}");
            }
            other => panic!("{case}: expected Invalid, got {other:?}"),
        }
    }
}

#[test]
fn missing_files_are_named_with_their_key() {
    let fx = fixture("missing");
    let cases: Vec<Case> = vec![
        (
            "base",
            replace("file = \"base.gguf\"", "file = \"gone.gguf\""),
            "base.file",
            "gone.gguf",
        ),
        (
            "anchor",
            replace("draft/anchor.safetensors", "draft/gone.safetensors"),
            "draft.anchor",
            "gone.safetensors",
        ),
        (
            "vocab subset",
            replace("draft/vocab.txt", "draft/gone.txt"),
            "draft.vocab_subset",
            "gone.txt",
        ),
        (
            "adapter dir",
            replace("versions/prose", "versions/python"),
            "version[2].adapter",
            "versions/python",
        ),
    ];
    for (case, edit, key, file) in cases {
        let e = fx.load_with(edit).unwrap_err();
        assert!(
            matches!(&e, FamilyError::MissingFile { key: k, file: f, .. } if k == key && f.to_string_lossy().ends_with(file)),
            "{case}: {e:?}"
        );
    }
    // An adapter directory without its weights file.
    std::fs::remove_file(fx.dir.join("versions/rust/adapter_model.safetensors")).unwrap();
    let e = fx.load_with(|t| t).unwrap_err();
    assert!(
        matches!(&e, FamilyError::MissingFile { key, file, .. } if key == "version[1].adapter" && file.ends_with("adapter_model.safetensors")),
        "{e:?}"
    );
    assert!(e.to_string().contains("version[1].adapter"), "{e}");
}

#[test]
fn checks_against_the_base_name_what_differs() {
    let fx = fixture("base");
    let zeros = "0".repeat(64);

    // The base file is not the one the manifest was written for.
    let sha = fx.sha.clone();
    let z = zeros.clone();
    let e = fx.open_with(move |t| t.replace(&sha, &z)).err().unwrap();
    assert!(
        matches!(&e, FamilyError::BaseSha256 { expected, found, .. } if *expected == zeros && *found == fx.sha),
        "{e:?}"
    );

    // Same file, but the frozen-tensor hash differs.
    let bh = fx.base_hash.clone();
    let z = zeros.clone();
    let e = fx.open_with(move |t| t.replace(&bh, &z)).err().unwrap();
    assert!(
        matches!(&e, FamilyError::BaseHash { found, .. } if *found == fx.base_hash),
        "{e:?}"
    );

    // k must leave room for the anchor (the tiny base has 4 layers).
    let e = fx
        .open_with(|t| t.replace("shared_layers = 2", "shared_layers = 4"))
        .err()
        .unwrap();
    assert!(
        matches!(&e, FamilyError::Draft { key, reason, .. } if key == "draft.shared_layers" && reason.contains("4 layers")),
        "{e:?}"
    );

    // An anchor layer of the wrong shape.
    let mut bigger = fx.config.clone();
    bigger.ffn_size += 32;
    let tensors: Vec<(&str, Vec<f32>)> = anchor::layer_tensors(&bigger)
        .into_iter()
        .map(|(n, s)| (n, vec![0.5; s.iter().product()]))
        .collect();
    let refs: Vec<(&str, &[f32])> = tensors.iter().map(|(n, v)| (*n, v.as_slice())).collect();
    anchor::save_anchor(
        &fx.dir.join("draft/wide.safetensors"),
        &bigger,
        &refs,
        anchor::StoreDtype::F32,
    )
    .unwrap();
    let e = fx
        .open_with(|t| t.replace("draft/anchor.safetensors", "draft/wide.safetensors"))
        .err()
        .unwrap();
    let msg = e.to_string();
    assert!(
        matches!(&e, FamilyError::Anchor { .. })
            && msg.contains("ffn_gate.weight")
            && msg.contains("[160, 64]"),
        "{msg}"
    );

    // The anchor's digest.
    let e = fx
        .open_with(move |t| {
            t.replace(
                "vocab_subset",
                &format!("anchor_sha256 = \"{}\"\nvocab_subset", "1".repeat(64)),
            )
        })
        .err()
        .unwrap();
    assert!(matches!(&e, FamilyError::AnchorSha256 { .. }), "{e:?}");

    // An adapter trained for another base: wrong shapes, named with the version.
    let mut other = fx.config.clone();
    other.ffn_size *= 2;
    let wide = LoraAdapter::init(&other, 4, 8.0, 0..1, &[LoraTarget::FfnUp], 1, "other").unwrap();
    wide.save_peft(&fx.dir.join("versions/wide"), &other)
        .unwrap();
    let e = fx
        .open_with(|t| t.replace("versions/prose", "versions/wide"))
        .err()
        .unwrap();
    assert!(
        matches!(&e, FamilyError::Adapter { version, source, .. }
            if version == "prose" && matches!(**source, LoraError::Shape { target: LoraTarget::FfnUp, which: 'B', .. })),
        "{e:?}"
    );
    assert!(
        e.to_string().starts_with("version `prose` (adapter "),
        "{e}"
    );
}

#[test]
fn documented_example_parses() {
    // docs/family-manifest.md's example, with its paths left unresolved.
    let doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/family-manifest.md"),
    )
    .unwrap();
    let start = doc.find("```toml\n").expect("an example") + "```toml\n".len();
    let text = &doc[start..start + doc[start..].find("```").unwrap()];
    let m = FamilyManifest::parse(text, Path::new("families/smollm2-135m/family.toml")).unwrap();
    assert!(m.versions.len() >= 2);
    assert_eq!(
        m.active_version(),
        m.active
            .clone()
            .unwrap_or_else(|| m.versions.last().unwrap().name.clone())
    );
}

#[test]
fn a_lower_layer_adapter_changes_the_draft_only_and_is_checked() {
    let fx = fixture("lower");
    let mut lower =
        LoraAdapter::init(&fx.config, 4, 8.0, 0..2, &[LoraTarget::AttnQ], 5, "tiny").unwrap();
    for layer in 0..2 {
        for (i, b) in lower
            .pair_mut(layer, LoraTarget::AttnQ)
            .unwrap()
            .b_mut()
            .iter_mut()
            .enumerate()
        {
            *b = (i as f32 * 0.37).cos() * 0.1;
        }
    }
    lower
        .save_peft(&fx.dir.join("draft/lower"), &fx.config)
        .unwrap();
    let sha = sha256_file(&fx.dir.join("draft/lower/adapter_model.safetensors")).unwrap();
    let with_lower = |sha: String| {
        move |t: String| {
            t.replace(
                "vocab_subset = \"draft/vocab.txt\"",
                &format!("lower_adapter = \"draft/lower\"\nlower_adapter_sha256 = \"{sha}\""),
            )
        }
    };
    let plain = fx
        .open_with(replace("vocab_subset = \"draft/vocab.txt\"\n", ""))
        .unwrap();
    let fam = fx.open_with(with_lower(sha.clone())).unwrap();
    assert!(fam.lower_adapter.is_some());
    let ids: Vec<u32> = (0..12).map(|i| (i * 7 % 90) as u32).collect();
    let run = |t: &Arc<ecspec_model::Transformer>| {
        Session::new(t.clone())
            .forward(&ids, LogitsFor::All)
            .unwrap()
            .row_slices()
            .concat()
    };
    // The draft changes; the versions (the cloud's targets) do not.
    let (a, b) = (
        run(&fam.draft().unwrap().transformer),
        run(&plain.draft().unwrap().transformer),
    );
    assert!(a.iter().zip(&b).any(|(x, y)| (x - y).abs() > 1e-4));
    assert_eq!(
        run(&fam.versions()[1].transformer),
        run(&plain.versions()[1].transformer)
    );
    assert_eq!(
        fam.draft().unwrap().compat_hash,
        plain.draft().unwrap().compat_hash
    );
    // A wrong digest, a digest alone, a missing directory, a layer at or above k.
    let e = fx
        .open_with(with_lower("0".repeat(64)))
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("draft.lower_adapter") && e.contains("expects 0000"),
        "{e}"
    );
    let e = fx
        .load_with(replace(
            "vocab_subset = \"draft/vocab.txt\"",
            "lower_adapter_sha256 = \"00\"",
        ))
        .unwrap_err()
        .to_string();
    assert!(e.contains("draft.lower_adapter_sha256"), "{e}");
    let e = fx
        .load_with(replace(
            "vocab_subset = \"draft/vocab.txt\"",
            "lower_adapter = \"draft/nope\"",
        ))
        .unwrap_err();
    assert!(
        matches!(&e, FamilyError::MissingFile { key, .. } if key == "draft.lower_adapter"),
        "{e:?}"
    );
    let e = fx
        .open_with(|t| with_lower(sha.clone())(t).replace("shared_layers = 2", "shared_layers = 1"))
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("adapts layer 1, outside the draft's shared layers 0..1"),
        "{e}"
    );
}
