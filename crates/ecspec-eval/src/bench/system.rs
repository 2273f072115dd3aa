//! The systems `ecspec bench` compares:
//!
//! - `cloud-only`: the target decodes alone and streams every token to the edge;
//! - `edge-only`: the draft decodes alone on the edge (quality not verified);
//! - `sd-fixed:K`: conventional speculative decoding, a draft with its own embedding and head
//!   (the one distilled from the first target version, kept as is), fixed draft length K;
//! - `sd-fixed:K+resync`: the same, but the draft is re-synchronised: the draft distilled from
//!   each target version is downloaded when that version goes live;
//! - `ecspec`: ECSpec — the static shared-backbone draft and the `ecspec` policy, load-aware
//!   (each row asked of a shared cloud priced at the delay it adds to the cloud's other
//!   sessions);
//! - `ecspec-unaware`: the same, blind to the cloud's load;
//! - `static:POLICY`: the static draft with any `--draft-len` policy (e.g. `static:fixed:4`,
//!   `static:adaptive`, `static:ucb`);
//! - `NAME@B`, for any speculative system: the same with an edge energy budget of B J per
//!   committed token (`--energy-budget`), e.g. `ecspec@0.05`.
//!
//! In a family without a shared-backbone draft (the Qwen pair) the only draft is its own small
//! model: `ecspec` and `static:*` then run that draft with the policy, and `+resync` has
//! nothing to download.

use anyhow::{bail, Result};

use ecspec_spec::parse_policy;

/// Which draft a speculative system runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DraftKind {
    /// ECSpec's static shared-backbone draft.
    Static,
    /// The conventional draft of the first target version (stale afterwards).
    ConventionalStale,
    /// The conventional draft of the served version, downloaded when the version changes.
    ConventionalResync,
}

/// One system.
#[derive(Debug, Clone, PartialEq)]
pub enum System {
    /// Target alone, streamed.
    CloudOnly,
    /// Draft alone, on the edge.
    EdgeOnly,
    /// Speculative decoding.
    Speculative {
        /// Name in the results.
        name: String,
        /// The draft.
        draft: DraftKind,
        /// `--draft-len` policy.
        policy: String,
        /// Edge energy budget, J per committed token (`NAME@B`).
        budget: Option<f64>,
        /// Load-aware speculation (`EdgeConfig::load_aware`); off for `ecspec-unaware`.
        load_aware: bool,
    },
}

/// `NAME@B` → (`NAME`, B): a system name's energy budget in J per committed token.
pub fn split_budget(name: &str) -> Option<(&str, f64)> {
    let (base, b) = name.rsplit_once('@')?;
    b.parse::<f64>().ok().map(|b| (base, b))
}

impl System {
    /// Name in the results.
    pub fn name(&self) -> &str {
        match self {
            System::CloudOnly => "cloud-only",
            System::EdgeOnly => "edge-only",
            System::Speculative { name, .. } => name,
        }
    }

    /// The edge energy budget (J per committed token) a speculative system runs under.
    pub fn energy_budget(&self) -> Option<f64> {
        match self {
            System::Speculative { budget, .. } => *budget,
            _ => None,
        }
    }
}

/// Parses one system name.
///
/// # Errors
/// An unknown name or an invalid policy, naming what is accepted.
pub fn parse(s: &str) -> Result<System> {
    if let Some((base, b)) = s.rsplit_once('@') {
        let budget = b
            .parse::<f64>()
            .ok()
            .filter(|b| b.is_finite() && *b > 0.0)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "system {s:?}: the energy budget after @ must be a positive number of J per token"
                )
            })?;
        return match parse(base)? {
            System::Speculative {
                draft,
                policy,
                budget: None,
                load_aware,
                ..
            } => Ok(System::Speculative {
                name: s.to_string(),
                draft,
                policy,
                budget: Some(budget),
                load_aware,
            }),
            _ => bail!("system {s:?}: only a speculative system takes an energy budget"),
        };
    }
    let spec = |name: &str, draft, policy: &str| -> Result<System> {
        parse_policy(policy).map_err(|e| anyhow::anyhow!("system {name:?}: {e}"))?;
        Ok(System::Speculative {
            name: name.to_string(),
            draft,
            policy: policy.to_string(),
            budget: None,
            load_aware: true,
        })
    };
    match s {
        "cloud-only" => Ok(System::CloudOnly),
        "edge-only" => Ok(System::EdgeOnly),
        "ecspec" => spec(s, DraftKind::Static, "ecspec"),
        // ECSpec blind to the cloud's load: the comparison that shows what pricing rows buys.
        "ecspec-unaware" => match spec(s, DraftKind::Static, "ecspec")? {
            System::Speculative {
                name,
                draft,
                policy,
                budget,
                ..
            } => Ok(System::Speculative {
                name,
                draft,
                policy,
                budget,
                load_aware: false,
            }),
            other => Ok(other),
        },
        _ => {
            if let Some(p) = s.strip_prefix("static:") {
                return spec(s, DraftKind::Static, p);
            }
            if let Some(k) = s.strip_prefix("sd-fixed:") {
                let (k, draft) = match k.strip_suffix("+resync") {
                    Some(k) => (k, DraftKind::ConventionalResync),
                    None => (k, DraftKind::ConventionalStale),
                };
                if k.parse::<usize>().map_or(true, |k| k == 0) {
                    bail!("system {s:?}: K must be a whole number ≥ 1");
                }
                return spec(s, draft, &format!("fixed:{k}"));
            }
            bail!(
                "unknown system {s:?} (expected cloud-only, edge-only, sd-fixed:K, sd-fixed:K+resync, ecspec, ecspec-unaware or static:POLICY, optionally with @BUDGET)"
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse() {
        assert_eq!(parse("cloud-only").unwrap(), System::CloudOnly);
        assert_eq!(parse("edge-only").unwrap(), System::EdgeOnly);
        for (n, aware) in [
            ("ecspec", true),
            ("ecspec-unaware", false),
            ("ecspec-unaware@0.1", false),
        ] {
            match parse(n).unwrap() {
                System::Speculative {
                    name,
                    policy,
                    load_aware,
                    ..
                } => assert_eq!(
                    (name.as_str(), policy.as_str(), load_aware),
                    (n, "ecspec", aware)
                ),
                other => panic!("{other:?}"),
            }
        }
        match parse("sd-fixed:4+resync").unwrap() {
            System::Speculative { draft, policy, .. } => {
                assert_eq!(
                    (draft, policy.as_str()),
                    (DraftKind::ConventionalResync, "fixed:4")
                )
            }
            other => panic!("{other:?}"),
        }
        match parse("ecspec@0.05").unwrap() {
            System::Speculative {
                name,
                policy,
                budget,
                ..
            } => assert_eq!(
                (name.as_str(), policy.as_str(), budget),
                ("ecspec@0.05", "ecspec", Some(0.05))
            ),
            other => panic!("{other:?}"),
        }
        assert_eq!(split_budget("ecspec@0.05"), Some(("ecspec", 0.05)));
        assert_eq!(split_budget("ecspec"), None);
        match parse("static:adaptive:6").unwrap() {
            System::Speculative {
                name,
                draft,
                policy,
                ..
            } => {
                assert_eq!(
                    (name.as_str(), draft, policy.as_str()),
                    ("static:adaptive:6", DraftKind::Static, "adaptive:6")
                )
            }
            other => panic!("{other:?}"),
        }
        for bad in [
            "sd-fixed:0",
            "sd-fixed:x",
            "static:nope",
            "fast",
            "ecspec@",
            "ecspec@-1",
            "cloud-only@0.1",
            "ecspec@0.1@0.2",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
