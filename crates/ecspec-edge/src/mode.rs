//! [`Mode`]: how the edge generates — speculative, cloud-only or edge-only.

use std::fmt;

use serde::Serialize;

/// How the edge generates. Serialized (a [`crate::Summary`]'s `mode`) as its [`Mode::as_str`]
/// name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Edge drafts, cloud verifies (speculative decoding).
    #[default]
    Speculative,
    /// The cloud decodes alone and streams every token (the autoregressive baseline).
    CloudOnly,
    /// The draft decodes alone on the edge; nothing is verified.
    EdgeOnly,
}

impl Mode {
    /// The name used in output.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Speculative => "speculative",
            Mode::CloudOnly => "cloud-only",
            Mode::EdgeOnly => "edge-only",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for Mode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_and_compares_as_its_name() {
        for m in [Mode::Speculative, Mode::CloudOnly, Mode::EdgeOnly] {
            assert_eq!(m.to_string(), m.as_str());
            assert_eq!(m, m.as_str());
        }
    }
}
