//! Edge energy of a finished generation (design.md §3) under a device profile: draft compute
//! at the measured drafting time, and the radio (LTE after Huang et al. 2012 with its tail, or
//! a 5G fit) for each round's bytes at the link's mean rates. Rounds run back to back, so the
//! radio never idles between them; the handshake (prompt up, first token down) is accounted
//! as one round before the first, and the tail after the last transfer is included.

use std::path::Path;

use anyhow::{Context, Result};
use ecspec_edge::Summary;
use ecspec_energy::{DeviceProfile, EnergyModel, Round, Session};

/// Loads `name_or_file`: a shipped profile name (`this-machine`, `phone-s25ultra`,
/// `jetson-orin-nano`) or a profile TOML file.
///
/// # Errors
/// Neither a shipped name nor a readable, valid profile file.
pub fn load_profile(name_or_file: &str) -> Result<DeviceProfile> {
    let shipped = DeviceProfile::shipped_dir().join(format!("{name_or_file}.toml"));
    let path = if Path::new(name_or_file).is_file() {
        Path::new(name_or_file).to_path_buf()
    } else if shipped.is_file() {
        shipped
    } else {
        let names: Vec<String> = std::fs::read_dir(DeviceProfile::shipped_dir())
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter_map(|e| {
                        e.file_name()
                            .to_str()
                            .and_then(|n| n.strip_suffix(".toml"))
                            .map(String::from)
                    })
                    .collect()
            })
            .unwrap_or_default();
        anyhow::bail!(
            "--energy-profile {name_or_file}: no such file, and not a shipped profile ({})",
            names.join(", ")
        );
    };
    DeviceProfile::load(&path)
        .with_context(|| format!("loading the device profile {}", path.display()))
}

/// Fills `summary`'s energy fields (total, per token, per round) for `profile`, with the
/// link's mean rates `up_bps`/`down_bps` (bit/s).
///
/// # Errors
/// A profile without any draft timing, or inputs the energy model refuses (negative times).
pub fn account(
    summary: &mut Summary,
    profile: &DeviceProfile,
    up_bps: f64,
    down_bps: f64,
) -> Result<()> {
    // The model's per-token draft time is not used: drafting time is measured.
    let any_draft = profile
        .draft
        .keys()
        .next()
        .with_context(|| format!("device profile {} has no [draft.*] entry", profile.name))?;
    let model = EnergyModel::from_profile(profile, any_draft)?;
    let mut session = Session::new(model);
    let transfer = |bytes: u64, bps: f64| bytes as f64 * 8.0 / bps;
    let (round_up, round_down): (u64, u64) =
        summary.round_records.iter().fold((0, 0), |(u, d), r| {
            (u + r.uplink_bytes, d + r.downlink_bytes)
        });
    // The handshake: Hello with the prompt up, the first token down, TTFT in between.
    let (hs_up, hs_down) = (
        summary.uplink_bytes.saturating_sub(round_up),
        summary.downlink_bytes.saturating_sub(round_down),
    );
    if hs_up + hs_down > 0 {
        let wait =
            (summary.ttft_s - transfer(hs_up, up_bps) - transfer(hs_down, down_bps)).max(0.0);
        session.record(
            &Round {
                drafting_s: 0.0,
                uplink_bytes: hs_up,
                uplink_rate_bps: up_bps,
                waiting_s: wait,
                downlink_bytes: hs_down,
                downlink_rate_bps: down_bps,
                since_prev_transfer_s: None,
            },
            1,
        )?;
    }
    let mut overlapped_j = 0.0;
    for r in &mut summary.round_records {
        let wait =
            (r.wait_s - transfer(r.uplink_bytes, up_bps) - transfer(r.downlink_bytes, down_bps))
                .max(0.0);
        let e = session.record(
            &Round {
                drafting_s: r.draft_s,
                uplink_bytes: r.uplink_bytes,
                uplink_rate_bps: up_bps,
                waiting_s: wait,
                downlink_bytes: r.downlink_bytes,
                downlink_rate_bps: down_bps,
                since_prev_transfer_s: session.next_since_prev(0.0),
            },
            r.accepted as u64 + 1,
        )?;
        // Pipelined drafting runs while the round waits: compute power on top, no extra span.
        let pre = profile.compute_power_w * r.pre_draft_s;
        overlapped_j += pre;
        r.energy_j = Some(e.total_j() + pre);
    }
    let total = session.finish().total_j() + overlapped_j;
    summary.edge_energy_j = Some(total);
    summary.energy_per_token_j = Some(total / summary.generated_tokens.max(1) as f64);
    summary.energy_profile = Some(profile.name.clone());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ecspec_edge::RoundRecord;

    #[test]
    fn energy_adds_compute_and_radio_and_is_zero_free() {
        let p = load_profile("this-machine").unwrap();
        let rec = RoundRecord {
            round: 1,
            t_s: 0.2,
            k: 4,
            verify: ecspec_edge::RoundVerify::Greedy,
            source: ecspec_edge::RoundSource::Model,
            reused: 0,
            pre_draft_s: 0.0,
            accepted: 2,
            draft_s: 0.1,
            wait_s: 0.08,
            cloud_compute_s: 0.02,
            uplink_bytes: 40,
            downlink_bytes: 20,
            alpha_estimate: 0.5,
            uplink_bps_estimate: 1e7,
            rtt_s_estimate: 0.06,
            energy_j: None,
        };
        let mut s = Summary {
            generated_tokens: 4,
            ttft_s: 0.1,
            uplink_bytes: 140,
            downlink_bytes: 40,
            round_records: vec![rec.clone(), RoundRecord { round: 2, ..rec }],
            ..Default::default()
        };
        account(&mut s, &p, 10e6, 20e6).unwrap();
        let total = s.edge_energy_j.unwrap();
        let rounds: f64 = s.round_records.iter().map(|r| r.energy_j.unwrap()).sum();
        // Draft compute alone: 7 W × 0.1 s per round.
        assert!(rounds > 2.0 * 0.7, "{rounds}");
        // The total adds the handshake round and the final radio tail.
        assert!(total > rounds, "{total} vs {rounds}");
        assert!((s.energy_per_token_j.unwrap() - total / 4.0).abs() < 1e-12);
        assert_eq!(s.energy_profile.as_deref(), Some("this-machine"));
        let e = load_profile("no-such-device").unwrap_err().to_string();
        assert!(
            e.contains("phone-s25ultra") && e.contains("this-machine"),
            "{e}"
        );
    }
}
