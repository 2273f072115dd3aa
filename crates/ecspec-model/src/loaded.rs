//! A model file opened for use: weights, tokenizer, chat template and identity hashes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::chat::ChatTemplate;
use crate::error::Result;
use crate::gguf::GgufFile;
use crate::tokenizer::GgufTokenizer;
use crate::transformer::Transformer;

/// The frozen tensors that name a base model: embedding, final norm and LM head (design.md
/// §5: these never change across the versions of a family).
const BASE_TENSORS: [&str; 3] = ["token_embd.weight", "output_norm.weight", "output.weight"];

/// A GGUF model loaded with everything needed around it.
pub struct LoadedModel {
    /// Where it was loaded from.
    pub path: PathBuf,
    /// Shared weights.
    pub transformer: Arc<Transformer>,
    /// The tokenizer of its vocabulary.
    pub tokenizer: Arc<GgufTokenizer>,
    /// Its chat template, when the file has a recognised one.
    pub chat_template: Option<ChatTemplate>,
    /// SHA-256 over the frozen base tensors (embedding, final norm, LM head when untied).
    pub base_hash: String,
    /// `general.name` from the metadata.
    pub name: String,
}

impl LoadedModel {
    /// Loads `path`.
    ///
    /// # Errors
    /// Any [`crate::ModelError`] from parsing the file, its tokenizer or its tensors.
    pub fn load(path: &Path) -> Result<Self> {
        let mut f = GgufFile::open(path)?;
        let tokenizer = GgufTokenizer::from_metadata(&f.metadata)?;
        let chat_template = f
            .metadata
            .string_opt("tokenizer.chat_template")?
            .and_then(|t| ChatTemplate::from_jinja(&t).ok());
        let name = f
            .metadata
            .string_opt("general.name")?
            .unwrap_or_else(|| path.display().to_string());
        let names: Vec<String> = BASE_TENSORS
            .iter()
            .filter(|n| f.has_tensor(n))
            .map(|n| n.to_string())
            .collect();
        let base_hash = f.hash_tensors(&names)?;
        let transformer = Transformer::load(&mut f)?;
        // candle repacks quantized weights on their first product (seconds for a 1.5B model);
        // do it now, for one-row and multi-row products, rather than inside the first request.
        let mut cache = transformer.new_cache();
        transformer.forward(&mut cache, &[0, 0], crate::LogitsFor::All)?;
        transformer.forward(&mut cache, &[0], crate::LogitsFor::All)?;
        Ok(Self {
            path: path.to_path_buf(),
            transformer: Arc::new(transformer),
            tokenizer: Arc::new(tokenizer),
            chat_template,
            base_hash,
            name,
        })
    }
}
