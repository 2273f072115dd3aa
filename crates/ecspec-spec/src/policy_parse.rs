//! Policy names: [`parse_policy`], the inverse of [`DraftLengthPolicy::name`], which builds
//! any policy of [`crate::policy`] and [`crate::policies`] from its name. Kept apart from both
//! so that neither imports the other back.

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

/// Parses a policy name, the inverse of [`DraftLengthPolicy::name`] (surrounding whitespace
/// ignored, names case-sensitive):
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
    let input = s.trim();
    let unknown = || PolicyParseError::Unknown {
        input: input.to_owned(),
    };
    if let Some((cap, stop)) = input.split_once('+') {
        let stop = match parse_policy(stop)?.stop_rule() {
            Some(rule) => rule,
            None => return Err(unknown()),
        };
        if cap.trim().is_empty() || cap.contains('+') {
            return Err(unknown());
        }
        let cap = parse_policy(cap)?;
        if cap.stop_rule().is_some() {
            return Err(unknown());
        }
        return Ok(Box::new(Capped { cap, stop }));
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
        ("adaptive", []) => Ok(Box::new(GoodputAdaptive {
            k_max: DEFAULT_K_MAX,
        })),
        ("adaptive", [k]) => Ok(Box::new(GoodputAdaptive {
            k_max: number(k, 1)?,
        })),
        ("fixed", [k]) => Ok(Box::new(Fixed(number(k, 0)?))),
        ("flexspec-linear", [] | [_]) => Ok(Box::new(FlexSpecLinear {
            k_max: k_max(args.first())?,
        })),
        ("p-min", [p, rest @ ..]) if rest.len() <= 1 => Ok(Box::new(ConfidenceStop {
            rule: StopRule::PMin(real(p, |v| (0.0..=1.0).contains(&v), "[0, 1]")? as f32),
            k_max: k_max(rest.first())?,
        })),
        ("entropy", [h, rest @ ..]) if rest.len() <= 1 => Ok(Box::new(ConfidenceStop {
            rule: StopRule::MaxEntropy(real(h, |v| v >= 0.0, "[0, ∞) nats")? as f32),
            k_max: k_max(rest.first())?,
        })),
        ("ecspec", [] | [_]) => Ok(Box::new(Ecspec::new(k_max(args.first())?, DEFAULT_STREAM))),
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
            Ok(Box::new(Ecspec::new(number(k, 1)?, n)))
        }
        ("ucb", [] | [_]) => Ok(Box::new(Ucb::new(k_max(args.first())?, 1.0))),
        ("ucb", [k, c]) => Ok(Box::new(Ucb::new(
            number(k, 1)?,
            real(c, |v| v >= 0.0, "[0, ∞)")?,
        ))),
        _ => Err(unknown()),
    }
}
