//! The GGUF header reader (`gguf::Metadata::read`, what `GgufFile::open` runs on a file) on
//! arbitrary bytes, then what the runtime reads from a header: `ModelConfig::from_metadata`
//! and `GgufTokenizer::from_metadata`; a tokenizer that builds encodes and decodes a little
//! text.
#![no_main]

use std::io::Cursor;
use std::path::Path;

use ecspec_model::gguf::Metadata;
use ecspec_model::{GgufTokenizer, ModelConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let md = match Metadata::read(&mut Cursor::new(data), Path::new("fuzz.gguf")) {
        Ok(md) => md,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    if let Err(e) = ModelConfig::from_metadata(&md) {
        let _ = e.to_string();
    }
    match GgufTokenizer::from_metadata(&md) {
        Ok(tok) => {
            if let Ok(ids) = tok.encode("ab <|im_start|>é\n", true) {
                let _ = tok.decode(&ids);
            }
            let _ = (tok.eos(), tok.bos(), tok.vocab_size());
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
