//! Policy names: [`PolicySpec`], a policy's name checked once (a command line's
//! `--draft-len`), which builds a fresh policy of [`crate::policy`] or [`crate::policies`] for
//! each request; [`parse_policy`], the inverse of [`DraftLengthPolicy::name`], does both at
//! once. Kept apart from both modules so that neither imports the other back.

use std::fmt;
use std::str::FromStr;

use crate::policies::{Capped, ConfidenceStop, Ecspec, FlexSpecLinear, Ucb, DEFAULT_STREAM};
use crate::policy::{DraftLengthPolicy, Fixed, GoodputAdaptive, StopRule, DEFAULT_K_MAX, MAX_K};

/// Errors of [`parse_policy`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyParseError {
    /// Not one of the accepted forms.
    #[error("unknown draft-length policy {input:?} (expected ecspec[:KMAX[:N]], adaptive[:KMAX], fixed:K, flexspec-linear[:KMAX], p-min:P[:KMAX], entropy:H[:KMAX], ucb[:KMAX[:C]], or CAP+p-min:P / CAP+entropy:H)")]
    Unknown {
        /// The input.
        input: String,
    },
    /// A threshold or weight that is not a number in its range.
    #[error("draft-length policy {input:?}: {value:?} is not a number in {range}")]
    BadValue {
        /// The input.
        input: String,
        /// The text.
        value: String,
        /// Allowed range, e.g. "[0, 1]".
        range: &'static str,
    },
    /// The number after the colon did not parse.
    #[error("draft-length policy {input:?}: {value:?} is not a non-negative integer")]
    BadNumber {
        /// The input.
        input: String,
        /// The text after the colon.
        value: String,
    },
    /// The number was outside the allowed range.
    #[error("draft-length policy {input:?}: {value} is outside [{min}, {max}]")]
    OutOfRange {
        /// The input.
        input: String,
        /// The number.
        value: usize,
        /// Smallest allowed.
        min: usize,
        /// Largest allowed ([`MAX_K`]).
        max: usize,
    },
}

/// A draft-length policy's name, parsed once ([`PolicySpec::parse`], the `--draft-len` value
/// parser): [`PolicySpec::build`] makes a fresh policy for each request without parsing again,
/// and it displays as the text it was parsed from.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicySpec {
    /// The text as given.
    text: String,
    kind: PolicyKind,
}

/// What a policy name says: the policy and its settings.
#[derive(Debug, Clone, PartialEq)]
enum PolicyKind {
    Adaptive {
        k_max: usize,
    },
    Fixed(usize),
    FlexSpecLinear {
        k_max: usize,
    },
    ConfidenceStop {
        rule: StopRule,
        k_max: usize,
    },
    Ecspec {
        k_max: usize,
        stream: u32,
    },
    Ucb {
        k_max: usize,
        c: f64,
    },
    Capped {
        cap: Box<PolicyKind>,
        stop: StopRule,
    },
}

impl PolicyKind {
    /// The policy's per-token stop rule ([`DraftLengthPolicy::stop_rule`] of what it builds).
    fn stop_rule(&self) -> Option<StopRule> {
        match self {
            Self::ConfidenceStop { rule, .. } => Some(*rule),
            Self::Capped { stop, .. } => Some(*stop),
            _ => None,
        }
    }

    fn build(&self) -> Box<dyn DraftLengthPolicy> {
        match self {
            Self::Adaptive { k_max } => Box::new(GoodputAdaptive { k_max: *k_max }),
            Self::Fixed(k) => Box::new(Fixed(*k)),
            Self::FlexSpecLinear { k_max } => Box::new(FlexSpecLinear { k_max: *k_max }),
            Self::ConfidenceStop { rule, k_max } => Box::new(ConfidenceStop {
                rule: *rule,
                k_max: *k_max,
            }),
            Self::Ecspec { k_max, stream } => Box::new(Ecspec::new(*k_max, *stream)),
            Self::Ucb { k_max, c } => Box::new(Ucb::new(*k_max, *c)),
            Self::Capped { cap, stop } => Box::new(Capped {
                cap: cap.build(),
                stop: *stop,
            }),
        }
    }
}

impl PolicySpec {
    /// Parses a policy name as [`parse_policy`] does.
    ///
    /// # Errors
    /// As [`parse_policy`].
    pub fn parse(s: &str) -> Result<Self, PolicyParseError> {
        Ok(Self {
            text: s.to_owned(),
            kind: parse_kind(s)?,
        })
    }

    /// A fresh policy (no state learnt yet).
    pub fn build(&self) -> Box<dyn DraftLengthPolicy> {
        self.kind.build()
    }

    /// The text it was parsed from.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl FromStr for PolicySpec {
    type Err = PolicyParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for PolicySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Parses a policy name, the inverse of [`DraftLengthPolicy::name`] (surrounding whitespace
/// ignored, names case-sensitive), into a policy ([`PolicySpec::parse`] then
/// [`PolicySpec::build`]):
///
/// - `adaptive[:KMAX]` ([`GoodputAdaptive`], K_max default [`DEFAULT_K_MAX`]), `fixed:K`
///   (0 ≤ K; 0 = cloud-only);
/// - `flexspec-linear[:KMAX]` ([`crate::policies::FlexSpecLinear`]);
/// - `p-min:P[:KMAX]` (0 ≤ P ≤ 1) and `entropy:H[:KMAX]` (H ≥ 0 nats)
///   ([`crate::policies::ConfidenceStop`]);
/// - `ucb[:KMAX[:C]]` ([`crate::policies::Ucb`], C ≥ 0, default 1);
/// - `ecspec[:KMAX[:N]]` ([`crate::policies::Ecspec`]: K ∈ [0, K_max], K = 0 streaming N
///   tokens from the cloud, default 16);
/// - `CAP+p-min:P` or `CAP+entropy:H`: CAP's K as a cap with that per-token stop
///   ([`crate::policies::Capped`]).
///
/// Every K and K_max lies in [1, [`MAX_K`]] (fixed: [0, MAX_K]).
///
/// # Errors
/// [`PolicyParseError::Unknown`], [`PolicyParseError::BadNumber`],
/// [`PolicyParseError::OutOfRange`], [`PolicyParseError::BadValue`].
pub fn parse_policy(s: &str) -> Result<Box<dyn DraftLengthPolicy>, PolicyParseError> {
    parse_kind(s).map(|kind| kind.build())
}

/// The grammar of [`parse_policy`].
fn parse_kind(s: &str) -> Result<PolicyKind, PolicyParseError> {
    let input = s.trim();
    let unknown = || PolicyParseError::Unknown {
        input: input.to_owned(),
    };
    if let Some((cap, stop)) = input.split_once('+') {
        let stop = match parse_kind(stop)?.stop_rule() {
            Some(rule) => rule,
            None => return Err(unknown()),
        };
        if cap.trim().is_empty() || cap.contains('+') {
            return Err(unknown());
        }
        let cap = parse_kind(cap)?;
        if cap.stop_rule().is_some() {
            return Err(unknown());
        }
        return Ok(PolicyKind::Capped {
            cap: Box::new(cap),
            stop,
        });
    }
    let mut parts = input.split(':');
    let kind = parts.next().unwrap_or("");
    let args: Vec<&str> = parts.collect();
    let number = |arg: &str, min: usize| -> Result<usize, PolicyParseError> {
        let value: usize = arg.parse().map_err(|_| PolicyParseError::BadNumber {
            input: input.to_owned(),
            value: arg.to_owned(),
        })?;
        if value < min || value > MAX_K {
            return Err(PolicyParseError::OutOfRange {
                input: input.to_owned(),
                value,
                min,
                max: MAX_K,
            });
        }
        Ok(value)
    };
    let real = |arg: &str, ok: fn(f64) -> bool, range: &'static str| {
        arg.parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && ok(*v))
            .ok_or_else(|| PolicyParseError::BadValue {
                input: input.to_owned(),
                value: arg.to_owned(),
                range,
            })
    };
    let k_max = |arg: Option<&&str>| arg.map_or(Ok(DEFAULT_K_MAX), |a| number(a, 1));
    match (kind, args.as_slice()) {
        ("adaptive", []) => Ok(PolicyKind::Adaptive {
            k_max: DEFAULT_K_MAX,
        }),
        ("adaptive", [k]) => Ok(PolicyKind::Adaptive {
            k_max: number(k, 1)?,
        }),
        ("fixed", [k]) => Ok(PolicyKind::Fixed(number(k, 0)?)),
        ("flexspec-linear", [] | [_]) => Ok(PolicyKind::FlexSpecLinear {
            k_max: k_max(args.first())?,
        }),
        ("p-min", [p, rest @ ..]) if rest.len() <= 1 => Ok(PolicyKind::ConfidenceStop {
            rule: StopRule::PMin(real(p, |v| (0.0..=1.0).contains(&v), "[0, 1]")? as f32),
            k_max: k_max(rest.first())?,
        }),
        ("entropy", [h, rest @ ..]) if rest.len() <= 1 => Ok(PolicyKind::ConfidenceStop {
            rule: StopRule::MaxEntropy(real(h, |v| v >= 0.0, "[0, ∞) nats")? as f32),
            k_max: k_max(rest.first())?,
        }),
        ("ecspec", [] | [_]) => Ok(PolicyKind::Ecspec {
            k_max: k_max(args.first())?,
            stream: DEFAULT_STREAM,
        }),
        ("ecspec", [k, n]) => {
            let n = n
                .parse::<u32>()
                .ok()
                .filter(|n| (2..=4096).contains(n))
                .ok_or_else(|| PolicyParseError::BadValue {
                    input: input.to_owned(),
                    value: (*n).to_owned(),
                    range: "[2, 4096] tokens per stream",
                })?;
            Ok(PolicyKind::Ecspec {
                k_max: number(k, 1)?,
                stream: n,
            })
        }
        ("ucb", [] | [_]) => Ok(PolicyKind::Ucb {
            k_max: k_max(args.first())?,
            c: 1.0,
        }),
        ("ucb", [k, c]) => Ok(PolicyKind::Ucb {
            k_max: number(k, 1)?,
            c: real(c, |v| v >= 0.0, "[0, ∞)")?,
        }),
        _ => Err(unknown()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A spec builds what parse_policy builds, each time afresh, and shows the text given.
    #[test]
    fn a_spec_builds_what_its_name_says_and_displays_as_given() {
        for s in [
            "ecspec",
            "ecspec:8:32",
            "adaptive",
            "adaptive:8",
            "fixed:0",
            " fixed:3 ",
            "flexspec-linear:8",
            "p-min:0.3:8",
            "entropy:1.5",
            "ucb:8:0.5",
            "adaptive:8+p-min:0.3",
            "fixed:4+entropy:2",
        ] {
            let spec: PolicySpec = s.parse().unwrap();
            assert_eq!(spec.to_string(), s);
            assert_eq!(spec.as_str(), s);
            let (a, b) = (spec.build(), parse_policy(s).unwrap());
            assert_eq!(a.name(), b.name());
            assert_eq!(a.stop_rule(), b.stop_rule());
            assert_eq!(a.stream_len(), b.stream_len());
            assert_eq!(spec.build().name(), a.name());
        }
        for bad in [
            "fixed:x",
            "nope",
            "fixed:4+fixed:3",
            "p-min:0.3+entropy:1",
            "+p-min:0.3",
        ] {
            assert_eq!(
                PolicySpec::parse(bad).unwrap_err(),
                parse_policy(bad).map(|_| ()).unwrap_err()
            );
        }
    }
}
