use std::path::Path;

use crate::*;

fn close(a: f64, b: f64) {
    assert!((a - b).abs() <= 1e-9 * b.abs().max(1.0), "{a} != {b}");
}

fn lte_model() -> EnergyModel {
    EnergyModel {
        compute_power_w: 8.35,
        idle_power_w: 0.4388,
        seconds_per_token: 0.02,
        radio: RadioProfile::lte_huang2012(),
    }
}

/// drafting 0.1 s; uplink 12 500 B at 1 Mbit/s = 0.1 s; waiting 0.05 s;
/// downlink 25 000 B at 10 Mbit/s = 0.02 s. Span 0.27 s.
fn base_round(since: Option<f64>) -> Round {
    Round {
        drafting_s: 0.1,
        uplink_bytes: 12_500,
        uplink_rate_bps: 1e6,
        waiting_s: 0.05,
        downlink_bytes: 25_000,
        downlink_rate_bps: 1e7,
        since_prev_transfer_s: since,
    }
}

#[test]
fn lte_round_exact_joules_inside_tail() {
    let e = lte_model().round(&base_round(Some(0.0))).unwrap();
    // compute: 8.35 W × 0.1 s = 0.835 J
    close(e.compute_j, 0.835);
    // uplink: (438.39·1 + 1288.04) mW = 1.72643 W × 0.1 s = 0.172643 J
    // downlink: (51.97·10 + 1288.04) mW = 1.80774 W × 0.02 s = 0.0361548 J
    close(e.radio_active_j, 0.172643 + 0.0361548);
    // tail: previous transfer ended at round start, uplink starts at 0.1 s:
    // 1.06 W × 0.1 s = 0.106 J; uplink end → downlink start 0.05 s: 0.053 J
    close(e.radio_tail_j, 0.106 + 0.053);
    // idle: 0.4388 W × 0.27 s = 0.118476 J
    close(e.idle_j, 0.118476);
    close(e.total_j(), 0.835 + 0.2087978 + 0.159 + 0.118476);
    assert_eq!(e.since_last_transfer_at_end_s, Some(0.0));
}

#[test]
fn first_transfer_pays_promotion() {
    let e = lte_model().round(&base_round(None)).unwrap();
    // promotion 1.2107 W × 0.2601 s = 0.31490307 J before the uplink; no earlier tail.
    close(e.radio_active_j, 0.31490307 + 0.2087978);
    // only the 0.05 s waiting gap: 1.06 × 0.05 = 0.053 J
    close(e.radio_tail_j, 0.053);
}

#[test]
fn round_outside_tail_pays_full_tail_and_promotion() {
    // last transfer 20 s before round start; gap to uplink 20.1 s > 11.576 s
    let e = lte_model().round(&base_round(Some(20.0))).unwrap();
    // full tail 1.06 × 11.576 = 12.27056 J, plus 0.053 J waiting gap
    close(e.radio_tail_j, 12.27056 + 0.053);
    close(e.radio_active_j, 0.31490307 + 0.2087978);
}

#[test]
fn gap_exactly_at_tail_end_has_no_promotion() {
    // since 11.476 + drafting 0.1 = 11.576 s = T_tail: tail fully charged, radio not yet idle
    let e = lte_model().round(&base_round(Some(11.476))).unwrap();
    close(e.radio_tail_j, 12.27056 + 0.053);
    close(e.radio_active_j, 0.2087978);
}

#[test]
fn long_wait_inside_round_expires_tail() {
    let mut r = base_round(Some(0.0));
    r.waiting_s = 12.0; // > 11.576 s: tail runs out, downlink needs a promotion
    let e = lte_model().round(&r).unwrap();
    close(e.radio_tail_j, 0.106 + 12.27056);
    close(e.radio_active_j, 0.2087978 + 0.31490307);
}

#[test]
fn back_to_back_rounds_do_not_double_count_tail() {
    let m = lte_model();
    let mut s = Session::new(m.clone());
    let e1 = s.record(&base_round(None), 3).unwrap();
    let since = s.next_since_prev(0.0);
    assert_eq!(since, Some(0.0));
    let e2 = s.record(&base_round(since), 4).unwrap();
    // Round 1 tail: 0.053 J; round 2: 0.106 + 0.053 J (the round-1 tail cut
    // short by round 2's uplink); finish: one full tail 12.27056 J.
    close(e1.radio_tail_j, 0.053);
    close(e2.radio_tail_j, 0.159);
    let per_token = (e1.total_j() + e2.total_j()) / 7.0;
    close(s.joules_per_token().unwrap(), per_token);
    let total = s.finish();
    close(total.radio_tail_j, 0.053 + 0.159 + 12.27056);
    // Had each round charged its full trailing tail, the sum would exceed this by ≥ 12 J.
    assert!(total.radio_tail_j < 2.0 * m.radio.full_tail_j());
}

#[test]
fn session_gap_feeds_next_round() {
    let mut s = Session::new(lte_model());
    s.record(&base_round(None), 1).unwrap();
    s.record_gap(2.0).unwrap();
    // idle 0.4388 × 2 = 0.8776 J on top of round 1's 0.118476 J
    close(s.energy().idle_j, 0.118476 + 0.8776);
    assert_eq!(s.next_since_prev(0.0), Some(2.0));
}

#[test]
fn nr_profiles_and_screen_baseline() {
    let r = RadioProfile::nr_mmwave_narayanan2021();
    // 8.9 mW/Mbps × 100 Mbit/s + 5.66 W = 6.55 W
    close(r.uplink_power_w(100e6), 6.55);
    let r = RadioProfile::nr_lowband_narayanan2021()
        .without_screen_baseline(2.2)
        .unwrap();
    close(r.uplink_power_w(10e6), 0.322 + 1.0);
    assert!(RadioProfile::lte_narayanan2021()
        .without_screen_baseline(3.0)
        .is_err());
    for n in radio::BUILTIN_RADIOS {
        assert_eq!(RadioProfile::builtin(n).unwrap().name, n);
    }
}

#[test]
fn invalid_round_inputs_rejected() {
    let mut r = base_round(None);
    r.uplink_rate_bps = 0.0;
    assert!(matches!(
        lte_model().round(&r),
        Err(EnergyError::InvalidInput {
            field: "uplink_rate_bps",
            ..
        })
    ));
    let mut r = base_round(None);
    r.drafting_s = f64::NAN;
    assert!(lte_model().round(&r).is_err());
}

#[test]
fn shipped_profiles_load() {
    for f in [
        "this-machine.toml",
        "phone-s25ultra.toml",
        "jetson-orin-nano.toml",
    ] {
        let p = DeviceProfile::load(DeviceProfile::shipped_dir().join(f)).unwrap();
        assert!(!p.draft.is_empty());
    }
    // The virtual clock's entries: phone and Jetson time the SmolLM2 static draft, the
    // datacenter profile times both targets (a cloud profile: no drafts, no radio).
    for f in ["phone-s25ultra.toml", "jetson-orin-nano.toml"] {
        let p = DeviceProfile::load(DeviceProfile::shipped_dir().join(f)).unwrap();
        let t = &p.draft["smollm2-135m/static"];
        assert!(t.seconds_per_token > 0.0 && t.prefill_seconds_per_token.unwrap() > 0.0);
    }
    let a100 =
        DeviceProfile::load(DeviceProfile::shipped_dir().join("datacenter-a100.toml")).unwrap();
    assert!(a100.draft.is_empty() && a100.radio == "none");
    assert_eq!(a100.target["qwen2.5-coder"].verify_base_s, 0.0027);
    assert_eq!(a100.target["smollm2-135m"].verify_per_token_s, 0.00003);
    // The batched GPU profiles of `ecspec load`: a pass costs a, each row b more, a ≫ b.
    for (f, a, b) in [
        ("a100-7b-batched.toml", 0.010, 0.000072),
        ("a100-14b-batched.toml", 0.020, 0.000158),
    ] {
        let p = DeviceProfile::load(DeviceProfile::shipped_dir().join(f)).unwrap();
        for fam in ["smollm2-135m", "qwen2.5-coder"] {
            let t = &p.target[fam];
            assert_eq!((t.verify_base_s, t.verify_per_token_s), (a, b), "{f} {fam}");
        }
    }
    let bad = GOOD.replace("[draft.m]", "[target.t]\nprefill_seconds_per_token = 0.1\nverify_base_s = -1.0\nverify_per_token_s = 0.0\n[draft.m]");
    let e = DeviceProfile::parse(&bad, std::path::Path::new("x.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("target.t.verify_base_s") && e.contains("-1"),
        "{e}"
    );
    let p = DeviceProfile::load(DeviceProfile::shipped_dir().join("phone-s25ultra.toml")).unwrap();
    let m = EnergyModel::from_profile(&p, "qwen2-0.5b-q4_k_m").unwrap();
    // 8.35 W × 0.019822 s ≈ 0.1655 J/token of decode compute (the table's 0.44
    // J/token also includes load and prefill).
    close(m.compute_power_w * m.seconds_per_token, 8.35 * 0.019822);
    assert!(matches!(
        EnergyModel::from_profile(&p, "nope"),
        Err(EnergyError::UnknownDraftModel { .. })
    ));
}

const GOOD: &str = r#"
name = "t"
radio = "lte-huang2012"
compute_power_w = 5.0
idle_power_w = 0.5
estimate = true
source = "test"
[draft.m]
seconds_per_token = 0.01
"#;

#[test]
fn profile_errors_name_file_and_key() {
    let f = Path::new("bad.toml");
    DeviceProfile::parse(GOOD, f).unwrap();

    let missing = GOOD.replace("idle_power_w = 0.5\n", "");
    let e = DeviceProfile::parse(&missing, f).unwrap_err().to_string();
    assert!(e.contains("bad.toml") && e.contains("idle_power_w"), "{e}");

    let wrong_type = GOOD.replace("compute_power_w = 5.0", "compute_power_w = \"five\"");
    let e = DeviceProfile::parse(&wrong_type, f)
        .unwrap_err()
        .to_string();
    assert!(e.contains("compute_power_w"), "{e}");

    let negative = GOOD.replace("compute_power_w = 5.0", "compute_power_w = -1.0");
    let e = DeviceProfile::parse(&negative, f).unwrap_err();
    assert!(
        matches!(&e, ProfileError::InvalidValue { key, value, .. } if key == "compute_power_w" && value == "-1"),
        "{e}"
    );

    let zero_td = GOOD.replace("seconds_per_token = 0.01", "seconds_per_token = 0.0");
    let e = DeviceProfile::parse(&zero_td, f).unwrap_err().to_string();
    assert!(
        e.contains("bad.toml") && e.contains("draft.m.seconds_per_token") && e.contains("= 0"),
        "{e}"
    );

    let radio = GOOD.replace("lte-huang2012", "wifi7");
    let e = DeviceProfile::parse(&radio, f).unwrap_err().to_string();
    assert!(e.contains("radio") && e.contains("wifi7"), "{e}");

    let unknown = GOOD.replace("estimate = true", "estimate = true\npower = 3");
    let e = DeviceProfile::parse(&unknown, f).unwrap_err().to_string();
    assert!(e.contains("power"), "{e}");

    let e = DeviceProfile::load("/nonexistent/x.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("/nonexistent/x.toml"), "{e}");
}

#[test]
fn per_token_budget_virtual_queue() {
    let mut b = EnergyBudget::per_token(0.5, 1.0).unwrap();
    close(b.allowance_j(3.0), 1.5); // 0.5 × 3, empty queue
    b.record(2.0, 2).unwrap(); // Q = max(0 + 2.0 − 0.5·2, 0) = 1.0
    close(b.queue_j(), 1.0);
    close(b.allowance_j(3.0), 0.5); // 1.5 − 1.0
    close(b.allowance_j(1.0), 0.0); // 0.5 − 1.0 < 0 → 0
    close(b.drift_plus_penalty(10.0, 1.0, 2.0), 10.0); // 1·10 − 1·(1 − 1)
    close(b.drift_plus_penalty(10.0, 3.0, 2.0), 8.0); // 10 − 1·(3 − 1)
    close(b.multiplier(), 1.0);
    b.record(0.5, 3).unwrap(); // Q = max(1 + 0.5 − 1.5, 0) = 0
    close(b.queue_j(), 0.0);
    close(b.spent_j(), 2.5);
    assert_eq!(b.committed_tokens(), 5);
    // spent 2.5 J for 5 tokens = 0.5 J/token: exactly on budget.
    assert!(b.remaining_j().is_none());
}

#[test]
fn per_session_budget_caps_by_remaining() {
    let mut b = EnergyBudget::per_session(10.0, 20, 0.0).unwrap();
    close(b.joules_per_token(), 0.5); // 10 J / 20 tokens
    b.record(9.8, 19).unwrap(); // Q = max(9.8 − 9.5, 0) = 0.3
    close(b.queue_j(), 0.3);
    close(b.remaining_j().unwrap(), 0.2);
    // b·n̂ − Q = 0.5·4 − 0.3 = 1.7, capped to the 0.2 J left
    close(b.allowance_j(4.0), 0.2);
    assert!(b.multiplier().is_infinite()); // V = 0: budget is a hard constraint
    assert!(EnergyBudget::per_session(10.0, 0, 1.0).is_err());
    assert!(EnergyBudget::per_token(-1.0, 1.0).is_err());
}

#[test]
fn budget_queue_bounds_long_run_average() {
    // A controller that spends exactly its allowance for 1 token each round,
    // committing 1 token per round, stays within b on average.
    let mut b = EnergyBudget::per_token(0.4, 1.0).unwrap();
    b.record(1.0, 1).unwrap(); // overspend once: Q = 0.6
    for _ in 0..99 {
        let a = b.allowance_j(1.0);
        b.record(a, 1).unwrap();
    }
    assert!(b.spent_j() / b.committed_tokens() as f64 <= 0.4 + 1e-12);
}
