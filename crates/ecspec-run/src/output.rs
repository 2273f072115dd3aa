//! Committed tokens → the text a user sees: complete UTF-8 characters only (an incomplete one
//! at the end is dropped, never shown as U+FFFD), cut before the first stop string. `generate`
//! and the OpenAI-compatible server both print through it, so streamed and whole answers are
//! the same text.

use ecspec_model::{GgufTokenizer, TextStream};

/// Most stop strings per request (OpenAI's limit).
pub const MAX_STOP_STRINGS: usize = 4;

/// Stop strings that are not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StopError {
    /// More than [`MAX_STOP_STRINGS`].
    #[error("at most {MAX_STOP_STRINGS} stop strings are allowed, got {0}")]
    TooMany(usize),
    /// An empty stop string (it would stop before the first character).
    #[error("a stop string must not be empty")]
    Empty,
}

/// Cuts a text stream before the first occurrence of any of its stop strings. Text that could
/// be the start of a stop string is held back until the next piece decides, so a stop string
/// split across pieces (tokens, chunks) still stops, and the stop string itself is never
/// released.
#[derive(Debug, Clone, Default)]
pub struct StopStrings {
    stops: Vec<String>,
    held: String,
    stopped: bool,
}

impl StopStrings {
    /// A matcher for `stops` (none: text passes straight through).
    ///
    /// # Errors
    /// More than [`MAX_STOP_STRINGS`] strings, or an empty one.
    pub fn new(stops: Vec<String>) -> Result<Self, StopError> {
        if stops.len() > MAX_STOP_STRINGS {
            return Err(StopError::TooMany(stops.len()));
        }
        if stops.iter().any(String::is_empty) {
            return Err(StopError::Empty);
        }
        Ok(Self {
            stops,
            ..Self::default()
        })
    }

    /// Adds `text`; returns what can be released now (possibly empty). After a stop string
    /// appeared, returns the text before it once and then nothing.
    pub fn push(&mut self, text: &str) -> String {
        if self.stopped {
            return String::new();
        }
        if self.stops.is_empty() {
            return text.to_string();
        }
        self.held.push_str(text);
        let first = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min();
        if let Some(at) = first {
            self.stopped = true;
            let out = self.held[..at].to_string();
            self.held.clear();
            return out;
        }
        // Hold back the longest tail that begins some stop string.
        let keep = self
            .held
            .char_indices()
            .map(|(i, _)| i)
            .find(|&i| {
                let tail = &self.held[i..];
                self.stops.iter().any(|s| s.starts_with(tail))
            })
            .unwrap_or(self.held.len());
        let tail = self.held.split_off(keep);
        std::mem::replace(&mut self.held, tail)
    }

    /// Whether a stop string appeared.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// The end of the stream: releases what was held back (it began a stop string that never
    /// completed).
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

/// Token ids → released text: [`TextStream`] (UTF-8 completeness) then [`StopStrings`].
#[derive(Default)]
pub struct TextOutput {
    stream: TextStream,
    stops: StopStrings,
    text: String,
}

impl TextOutput {
    /// Output cut at `stops` (see [`StopStrings::new`] for its errors).
    ///
    /// # Errors
    /// Unacceptable stop strings.
    pub fn new(stops: Vec<String>) -> Result<Self, StopError> {
        Ok(Self {
            stops: StopStrings::new(stops)?,
            ..Self::default()
        })
    }

    /// Adds committed token `id`; returns the text released (possibly empty). Control tokens
    /// (end of turn…) add nothing.
    pub fn push(&mut self, tok: &GgufTokenizer, id: u32) -> String {
        let piece = self.stream.push(tok, id);
        self.release(&piece)
    }

    /// Adds decoded text directly (tests, callers with their own decoding).
    pub fn push_text(&mut self, piece: &str) -> String {
        self.release(piece)
    }

    fn release(&mut self, piece: &str) -> String {
        if piece.is_empty() {
            return String::new();
        }
        let out = self.stops.push(piece);
        self.text.push_str(&out);
        out
    }

    /// Whether a stop string ended the text (the caller should end the generation).
    pub fn stopped(&self) -> bool {
        self.stops.stopped()
    }

    /// Ends the output: returns held-back text; an incomplete character is dropped.
    pub fn finish(&mut self) -> String {
        self.stream.finish();
        let out = self.stops.finish();
        self.text.push_str(&out);
        out
    }

    /// Everything released so far.
    pub fn text(&self) -> &str {
        &self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (Vec<String>, String, bool) {
        let mut s = StopStrings::new(stops.iter().map(|s| s.to_string()).collect()).unwrap();
        let mut out: Vec<String> = pieces.iter().map(|p| s.push(p)).collect();
        out.push(s.finish());
        let all = out.concat();
        (out, all, s.stopped())
    }

    #[test]
    fn no_stop_strings_pass_everything_at_once() {
        let (out, all, stopped) = run(&[], &["ab", "c"]);
        assert_eq!(out, ["ab", "c", ""]);
        assert_eq!(all, "abc");
        assert!(!stopped);
    }

    #[test]
    fn a_stop_string_split_across_pieces_stops_and_is_not_emitted() {
        let (out, all, stopped) = run(&["\n\n"], &["Hello", "\n", "\nWorld"]);
        // The first newline is held back: it may begin the stop string.
        assert_eq!(out, ["Hello", "", "", ""]);
        assert_eq!(all, "Hello");
        assert!(stopped);
    }

    #[test]
    fn a_held_prefix_that_does_not_complete_is_released() {
        let (out, all, stopped) = run(&["END"], &["a E", "Nx", " EN"]);
        assert_eq!(out, ["a ", "ENx", " ", "EN"]);
        assert_eq!(all, "a ENx EN");
        assert!(!stopped);
    }

    #[test]
    fn the_earliest_of_several_stop_strings_wins_and_nothing_follows() {
        let (out, all, stopped) = run(&["world", "lo w"], &["hello world", " more"]);
        assert_eq!(out, ["hel", "", ""]);
        assert_eq!(all, "hel");
        assert!(stopped);
    }

    #[test]
    fn multi_byte_text_is_held_on_character_boundaries() {
        let (out, all, _) = run(&["🐵!"], &["a🐵", "🐵b"]);
        assert_eq!(out, ["a", "🐵🐵b", ""]);
        assert_eq!(all, "a🐵🐵b");
    }

    #[test]
    fn chunking_does_not_change_the_text() {
        // Whole or piece by piece (every split of the text into two), the same text results.
        let text = "one two\n\nthree";
        let (_, whole, _) = run(&["\n\n", "xyz"], &[text]);
        assert_eq!(whole, "one two");
        for i in 0..=text.len() {
            let (_, split, stopped) = run(&["\n\n", "xyz"], &[&text[..i], &text[i..]]);
            assert_eq!(split, whole, "split at {i}");
            assert!(stopped);
        }
    }

    #[test]
    fn bad_stop_lists_are_refused() {
        let five = vec!["a".to_string(); 5];
        assert_eq!(StopStrings::new(five).unwrap_err(), StopError::TooMany(5));
        assert_eq!(
            StopStrings::new(vec![String::new()]).unwrap_err(),
            StopError::Empty
        );
        assert_eq!(
            StopError::TooMany(5).to_string(),
            "at most 4 stop strings are allowed, got 5"
        );
    }

    #[test]
    fn text_output_records_what_it_released() {
        let mut o = TextOutput::new(vec!["STOP".into()]).unwrap();
        assert_eq!(o.push_text("go ST"), "go ");
        assert_eq!(o.push_text("OP now"), "");
        assert!(o.stopped());
        assert_eq!(o.finish(), "");
        assert_eq!(o.text(), "go ");
    }
}
