//! Byte-level BPE tokenizer built from GGUF metadata (`tokenizer.ggml.*`), matching llama.cpp's
//! tokenization of the same file: vocabulary and merges, the pre-tokenizer regexes named by
//! `tokenizer.ggml.pre` (as in llama.cpp's `llama-vocab.cpp`), and special tokens.

use std::collections::HashMap;

use sha2::{Digest, Sha256};
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

use crate::error::{ModelError, Result};
use crate::gguf::Metadata;

/// GPT-2's byte-level pattern as the Hugging Face `ByteLevel` pre-tokenizer writes it.
const GPT2_PATTERN: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
/// Qwen2's pattern (llama.cpp `LLAMA_VOCAB_PRE_TYPE_QWEN2`): single digits, newline runs.
const QWEN2_PATTERN: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Llama-3's pattern (llama.cpp `LLAMA_VOCAB_PRE_TYPE_LLAMA3`): digits in groups of up to three.
const LLAMA3_PATTERN: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Token texts llama.cpp treats as end-of-generation control tokens whatever their declared
/// type (`llama-vocab.cpp`, the EOT/EOG and FIM-pad/repo/file-separator name lists); Qwen2.5
/// declares `</s>` as a normal token, yet llama.cpp parses and stops on it.
const EOG_NAMES: [&str; 16] = [
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<EOT>",
    "_<EOT>",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
    "</s>",
    "<|eom_id|>",
    "<|fim_pad|>",
    "<fim-pad>",
    "<|repo_name|>",
    "<reponame>",
    "<|file_sep|>",
];

/// llama.cpp's token types (`tokenizer.ggml.token_type`).
const TOKEN_TYPE_CONTROL: i64 = 3;
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

/// The regexes applied in sequence before BPE, by `tokenizer.ggml.pre` name.
fn pre_patterns(pre: &str) -> Result<Vec<&'static str>> {
    Ok(match pre {
        // smollm and the other StarCoder-style vocabularies split every digit first.
        "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" | "minerva" => {
            vec![r"\p{N}", GPT2_PATTERN]
        }
        "qwen2" | "deepseek-r1-qwen" => vec![QWEN2_PATTERN],
        "llama3" | "llama-bpe" | "smaug-bpe" => vec![LLAMA3_PATTERN],
        "gpt2" | "default" | "gpt-2" => vec![GPT2_PATTERN],
        other => {
            return Err(ModelError::Tokenizer(format!(
                "unsupported pre-tokenizer `tokenizer.ggml.pre = {other}` (supported: smollm, starcoder, qwen2, llama3, gpt2)"
            )))
        }
    })
}

/// GPT-2's `bytes_to_unicode` inverse: the byte each visible character of a byte-level token
/// stands for.
fn unicode_to_byte() -> HashMap<char, u8> {
    let mut bs: Vec<u32> = (33..=126).chain(161..=172).chain(174..=255).collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..=255u32 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    bs.into_iter()
        .zip(cs)
        .filter_map(|(b, c)| char::from_u32(c).map(|c| (c, b as u8)))
        .collect()
}

/// A tokenizer for one GGUF vocabulary.
pub struct GgufTokenizer {
    with_special: Tokenizer,
    plain: Tokenizer,
    token_bytes: Vec<Vec<u8>>,
    control: Vec<bool>,
    tokens: Vec<String>,
    bos: Option<u32>,
    eos: u32,
    stop: Vec<u32>,
    pre: String,
    vocab_hash: String,
}

impl GgufTokenizer {
    /// Builds the tokenizer from GGUF metadata (`tokenizer.ggml.model` must be `gpt2`, i.e.
    /// byte-level BPE).
    ///
    /// # Errors
    /// [`ModelError::Metadata`] for missing keys, [`ModelError::Tokenizer`] for an unsupported
    /// tokenizer model or pre-tokenizer.
    pub fn from_metadata(md: &Metadata) -> Result<Self> {
        let model = md.string("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(ModelError::Tokenizer(format!(
                "unsupported `tokenizer.ggml.model = {model}` (only byte-level BPE, `gpt2`)"
            )));
        }
        let tokens = md.strings("tokenizer.ggml.tokens")?;
        let merges_raw = md.strings("tokenizer.ggml.merges")?;
        let mut types = if md.contains("tokenizer.ggml.token_type") {
            md.ints("tokenizer.ggml.token_type")?
        } else {
            vec![1; tokens.len()]
        };
        types.resize(tokens.len(), 1);
        for (i, t) in tokens.iter().enumerate() {
            if EOG_NAMES.contains(&t.as_str()) {
                types[i] = TOKEN_TYPE_CONTROL;
            }
        }
        let pre = md
            .string_opt("tokenizer.ggml.pre")?
            .unwrap_or_else(|| "default".into());
        let eos = md.uint("tokenizer.ggml.eos_token_id")? as u32;
        let bos = md
            .uint_opt("tokenizer.ggml.bos_token_id")?
            .map(|b| b as u32);

        let mut vocab = tokenizers::models::bpe::Vocab::default();
        for (i, t) in tokens.iter().enumerate() {
            vocab.insert(t.clone(), i as u32);
        }
        let mut merges = Vec::with_capacity(merges_raw.len());
        for (i, m) in merges_raw.iter().enumerate() {
            let (a, b) = m.split_once(' ').ok_or_else(|| ModelError::Metadata {
                key: "tokenizer.ggml.merges".into(),
                reason: format!("merge #{i} `{m}` is not two space-separated tokens"),
            })?;
            merges.push((a.to_string(), b.to_string()));
        }
        let build = |with_control: bool| -> Result<Tokenizer> {
            let bpe = BPE::builder()
                .vocab_and_merges(vocab.clone(), merges.clone())
                .build()
                .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
            let mut tk = Tokenizer::new(bpe);
            let mut pres: Vec<PreTokenizerWrapper> = Vec::new();
            for p in pre_patterns(&pre)? {
                let split = Split::new(
                    SplitPattern::Regex(p.into()),
                    SplitDelimiterBehavior::Isolated,
                    false,
                )
                .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
                pres.push(split.into());
            }
            pres.push(ByteLevel::new(false, false, false).into());
            tk.with_pre_tokenizer(Some(Sequence::new(pres)));
            tk.with_decoder(Some(tokenizers::decoders::byte_level::ByteLevel::default()));
            let mut added = Vec::new();
            for (i, t) in tokens.iter().enumerate() {
                let ty = types.get(i).copied().unwrap_or(1);
                if ty == TOKEN_TYPE_USER_DEFINED || (with_control && ty == TOKEN_TYPE_CONTROL) {
                    added.push(
                        AddedToken::from(t.clone(), ty == TOKEN_TYPE_CONTROL).normalized(false),
                    );
                }
            }
            tk.add_special_tokens(&added);
            Ok(tk)
        };
        let with_special = build(true)?;
        let plain = build(false)?;

        let map = unicode_to_byte();
        let control: Vec<bool> = (0..tokens.len())
            .map(|i| types.get(i) == Some(&TOKEN_TYPE_CONTROL))
            .collect();
        let token_bytes = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| {
                if types.get(i) == Some(&TOKEN_TYPE_USER_DEFINED) || control[i] {
                    t.as_bytes().to_vec()
                } else {
                    t.chars()
                        .map(|c| map.get(&c).copied().unwrap_or(b'?'))
                        .collect()
                }
            })
            .collect();
        // End-of-generation tokens: the declared EOS plus llama.cpp's end-of-generation names.
        let mut stop = vec![eos];
        for (i, t) in tokens.iter().enumerate() {
            if EOG_NAMES.contains(&t.as_str()) && !stop.contains(&(i as u32)) {
                stop.push(i as u32);
            }
        }
        let mut h = Sha256::new();
        for t in &tokens {
            h.update(t.as_bytes());
            h.update([0u8]);
        }
        for m in &merges_raw {
            h.update(m.as_bytes());
            h.update([0u8]);
        }
        Ok(Self {
            with_special,
            plain,
            token_bytes,
            control,
            tokens,
            bos,
            eos,
            stop,
            pre,
            vocab_hash: hex::encode(h.finalize()),
        })
    }

    /// Token ids of `text`. With `parse_special`, control tokens written in the text (such as
    /// `<|im_start|>`) become their ids, as llama.cpp's `parse_special = true`; otherwise they
    /// are tokenized as plain text. No BOS is added (neither SmolLM2 nor Qwen2.5 use one).
    pub fn encode(&self, text: &str, parse_special: bool) -> Result<Vec<u32>> {
        let tk = if parse_special {
            &self.with_special
        } else {
            &self.plain
        };
        let enc = tk
            .encode(text, false)
            .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// The raw bytes a token stands for (control tokens: their text).
    pub fn token_bytes(&self, id: u32) -> Option<&[u8]> {
        self.token_bytes.get(id as usize).map(|b| b.as_slice())
    }

    /// Whether `id` is a control token (EOS, chat markers…).
    pub fn is_control(&self, id: u32) -> bool {
        self.control.get(id as usize).copied().unwrap_or(false)
    }

    /// Text of `ids`, control tokens omitted (llama.cpp `detokenize` with `special = false`),
    /// invalid UTF-8 replaced by U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::new();
        for &id in ids {
            if !self.is_control(id) {
                if let Some(b) = self.token_bytes(id) {
                    bytes.extend_from_slice(b);
                }
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Vocabulary size.
    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }
    /// The token string of `id` as stored in the GGUF (byte-level form).
    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(|s| s.as_str())
    }
    /// Id of an exact token string.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.tokens.iter().position(|t| t == text).map(|i| i as u32)
    }
    /// BOS id, if declared.
    pub fn bos(&self) -> Option<u32> {
        self.bos
    }
    /// The declared EOS id.
    pub fn eos(&self) -> u32 {
        self.eos
    }
    /// Ids that end generation: EOS plus the tokens llama.cpp treats as end of generation
    /// (`<|im_end|>`, `<|endoftext|>`, `</s>`, …), in id order after EOS.
    pub fn stop_tokens(&self) -> &[u32] {
        &self.stop
    }
    /// The pre-tokenizer name (`tokenizer.ggml.pre`).
    pub fn pre_tokenizer(&self) -> &str {
        &self.pre
    }
    /// SHA-256 of the vocabulary and merges: two models can draft for each other only if these
    /// are equal.
    pub fn vocab_hash(&self) -> &str {
        &self.vocab_hash
    }
}

/// Turns a stream of committed token ids into text, emitting only complete UTF-8 characters
/// (a multi-byte character may span tokens, e.g. emoji in byte-level BPE).
#[derive(Default)]
pub struct TextStream {
    pending: Vec<u8>,
}

impl TextStream {
    /// Adds one token; returns the text that became complete (possibly empty).
    pub fn push(&mut self, tok: &GgufTokenizer, id: u32) -> String {
        if tok.is_control(id) {
            return String::new();
        }
        if let Some(b) = tok.token_bytes(id) {
            self.pending.extend_from_slice(b);
        }
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let good = e.valid_up_to();
                    out.push_str(std::str::from_utf8(&self.pending[..good]).unwrap_or_default());
                    match e.error_len() {
                        // Invalid bytes: replace and go on.
                        Some(bad) => {
                            out.push('\u{FFFD}');
                            self.pending.drain(..good + bad);
                        }
                        // Incomplete character at the end: wait for the next token.
                        None => {
                            self.pending.drain(..good);
                            return out;
                        }
                    }
                }
            }
        }
    }

    /// Ends the stream. What is left is at most an incomplete character (every complete one
    /// was returned by [`Self::push`]); it is dropped, so a generation cut inside a multi-byte
    /// character never shows U+FFFD. Returns the number of bytes dropped.
    pub fn finish(&mut self) -> usize {
        let dropped = self.pending.len();
        self.pending.clear();
        dropped
    }
}
