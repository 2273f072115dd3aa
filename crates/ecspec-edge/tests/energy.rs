//! Energy-aware drafting: a binding energy budget prices the edge's drafting.
//! End to end against the real server on tiny random-weight models (fixtures in `common`).

mod common;

use common::*;
use ecspec_edge::Summary;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binding_energy_budget_makes_ecspec_draft_less_and_stays_lossless() {
    let cloud = Cloud::default().await;
    let max_new = 40;
    let ks = |s: &Summary| -> Vec<usize> {
        s.round_records
            .iter()
            .map(|r| r.k)
            .filter(|&k| k > 0)
            .collect()
    };
    for prompt in prompts() {
        let expected = expected_output(&reference(&prompt, max_new), max_new);
        // The Same draft is always accepted, so without a price longer drafts pay; drafting is
        // made absurdly expensive (1 kW) against a budget of 10⁻⁴ J per token, so once the
        // first round has overspent, the cheapest draft per committed token (K = 1) wins.
        let base = Run::greedy(&prompt, DraftChoice::Same, "ecspec:4", max_new);
        let o = run_edge(cloud.addr, &base).await;
        assert_eq!(o.summary().tokens, expected);
        let free = ks(o.summary());
        assert!(free.iter().any(|&k| k > 1), "without a budget: {free:?}");
        let run = Run {
            energy: Some(ecspec_edge::EnergyControl {
                draft_power_w: 1000.0,
                radio_power_w: 0.001,
                budget: Some(ecspec_energy::EnergyBudget::per_token(1e-4, 5e-6).unwrap()),
            }),
            ..base
        };
        let o = run_edge(cloud.addr, &run).await;
        let s = o.summary();
        assert_eq!(s.tokens, expected, "a budget never changes the output");
        assert_eq!(s.energy_budget_j_per_token, Some(1e-4));
        assert!(s.budget_spent_j_per_token.unwrap() > 0.0);
        let priced = ks(s);
        assert!(
            priced[1..].iter().all(|&k| k == 1),
            "with the budget: {priced:?}"
        );
    }
}
