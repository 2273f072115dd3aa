//! Energy budgets and the per-round allowance that keeps the long-run
//! average within them.
//!
//! A budget is a rate `b` in J per committed token: given directly
//! ([`EnergyBudget::per_token`]) or as a session budget `E` spread over the
//! tokens the session plans to commit, `b = E / N` ([`EnergyBudget::per_session`],
//! which additionally never allows more than what is left of `E`).
//!
//! Long-run constraint: `lim (Σ e_t) / (Σ n_t) ≤ b`, with `e_t` the energy and
//! `n_t` the committed tokens of round t. Following Neely's drift-plus-penalty
//! method (M. J. Neely, *Stochastic Network Optimization with Application to
//! Communication and Queueing Systems*, Morgan & Claypool 2010, ch. 3–4), a
//! virtual queue holds the excess:
//!
//! `Q(t+1) = max(Q(t) + e_t − b·n_t, 0)`   (J)
//!
//! If Q stays bounded the constraint holds (Σe − b·Σn ≤ Q(T), so the excess
//! per token goes to 0). Each round the controller picks the action that
//! maximises `V·reward − Q·(e − b·n̂)` ([`EnergyBudget::drift_plus_penalty`]),
//! where `n̂` is the expected committed tokens and V ≥ 0 trades reward (e.g.
//! goodput) against budget slack; `Q/V` acts as the Lagrange multiplier on
//! energy. For a hard per-round cap instead, [`EnergyBudget::allowance_j`]
//! returns `b·n̂ − Q` (never below 0), so a round that overspent is paid back
//! by the next ones.

use crate::EnergyError;

/// Budget kind.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BudgetKind {
    /// At most this many J per committed token, on average.
    PerToken {
        /// J/token.
        joules_per_token: f64,
    },
    /// At most `joules` for the session, expected to commit `planned_tokens`.
    PerSession {
        /// J for the whole session.
        joules: f64,
        /// Tokens the session is planned to commit (sets the rate b = J/N).
        planned_tokens: u64,
    },
}

/// An energy budget with its virtual queue (see the module doc).
#[derive(Debug, Clone, PartialEq)]
pub struct EnergyBudget {
    kind: BudgetKind,
    /// Drift-plus-penalty weight V (reward units per J).
    v: f64,
    queue_j: f64,
    spent_j: f64,
    committed_tokens: u64,
}

impl EnergyBudget {
    /// `joules_per_token` J per committed token on average; `v` is the
    /// drift-plus-penalty weight V (≥ 0).
    pub fn per_token(joules_per_token: f64, v: f64) -> Result<Self, EnergyError> {
        if !(joules_per_token.is_finite() && joules_per_token > 0.0) {
            return Err(EnergyError::InvalidInput {
                field: "joules_per_token",
                value: joules_per_token,
                reason: "must be > 0",
            });
        }
        Self::new(BudgetKind::PerToken { joules_per_token }, v)
    }

    /// `joules` for a session planned to commit `planned_tokens` tokens.
    pub fn per_session(joules: f64, planned_tokens: u64, v: f64) -> Result<Self, EnergyError> {
        if !(joules.is_finite() && joules > 0.0) {
            return Err(EnergyError::InvalidInput {
                field: "joules",
                value: joules,
                reason: "must be > 0",
            });
        }
        if planned_tokens == 0 {
            return Err(EnergyError::InvalidInput {
                field: "planned_tokens",
                value: 0.0,
                reason: "must be > 0",
            });
        }
        Self::new(
            BudgetKind::PerSession {
                joules,
                planned_tokens,
            },
            v,
        )
    }

    fn new(kind: BudgetKind, v: f64) -> Result<Self, EnergyError> {
        if !(v.is_finite() && v >= 0.0) {
            return Err(EnergyError::InvalidInput {
                field: "v",
                value: v,
                reason: "must be a finite number ≥ 0",
            });
        }
        Ok(Self {
            kind,
            v,
            queue_j: 0.0,
            spent_j: 0.0,
            committed_tokens: 0,
        })
    }

    /// The budget's kind.
    pub fn kind(&self) -> BudgetKind {
        self.kind
    }

    /// The rate b, J per committed token.
    pub fn joules_per_token(&self) -> f64 {
        match self.kind {
            BudgetKind::PerToken { joules_per_token } => joules_per_token,
            BudgetKind::PerSession {
                joules,
                planned_tokens,
            } => joules / planned_tokens as f64,
        }
    }

    /// Virtual queue Q: energy spent above budget not yet paid back, J.
    pub fn queue_j(&self) -> f64 {
        self.queue_j
    }

    /// Lagrange multiplier on energy, Q/V (reward units per J); infinite when
    /// V = 0 and Q > 0.
    pub fn multiplier(&self) -> f64 {
        if self.queue_j == 0.0 {
            0.0
        } else {
            self.queue_j / self.v
        }
    }

    /// Energy spent so far, J.
    pub fn spent_j(&self) -> f64 {
        self.spent_j
    }

    /// Tokens committed so far.
    pub fn committed_tokens(&self) -> u64 {
        self.committed_tokens
    }

    /// What is left of a session budget, J (`None` for a per-token budget).
    pub fn remaining_j(&self) -> Option<f64> {
        match self.kind {
            BudgetKind::PerToken { .. } => None,
            BudgetKind::PerSession { joules, .. } => Some((joules - self.spent_j).max(0.0)),
        }
    }

    /// Record a finished round: `energy_j` spent, `committed_tokens`
    /// committed. Updates Q(t+1) = max(Q + e − b·n, 0).
    pub fn record(&mut self, energy_j: f64, committed_tokens: u64) -> Result<(), EnergyError> {
        if !(energy_j.is_finite() && energy_j >= 0.0) {
            return Err(EnergyError::InvalidInput {
                field: "energy_j",
                value: energy_j,
                reason: "must be a finite number ≥ 0",
            });
        }
        let b = self.joules_per_token();
        self.queue_j = (self.queue_j + energy_j - b * committed_tokens as f64).max(0.0);
        self.spent_j += energy_j;
        self.committed_tokens += committed_tokens;
        Ok(())
    }

    /// Most energy the next round may spend if it is expected to commit
    /// `expected_tokens`, J: `max(0, b·n̂ − Q)`, and for a session budget
    /// also at most what is left of it.
    pub fn allowance_j(&self, expected_tokens: f64) -> f64 {
        let a = (self.joules_per_token() * expected_tokens.max(0.0) - self.queue_j).max(0.0);
        match self.remaining_j() {
            Some(left) => a.min(left),
            None => a,
        }
    }

    /// Drift-plus-penalty score of a candidate action (higher is better):
    /// `V·reward − Q·(energy_j − b·expected_tokens)`.
    pub fn drift_plus_penalty(&self, reward: f64, energy_j: f64, expected_tokens: f64) -> f64 {
        self.v * reward - self.queue_j * (energy_j - self.joules_per_token() * expected_tokens)
    }
}
