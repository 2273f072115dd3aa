//! Link scenarios of `ecspec bench`: a name, a description and the `generate` link options that
//! build it, so every scenario runs through the same link models and the same validation as
//! `ecspec generate`. Built-in names cover the default set; a TOML file names its own:
//!
//! ```toml
//! name = "lte-walking"
//! description = "Verizon LTE walking trace, 60 ms RTT"
//! args = ["--link-trace-up", "{data}/channel/mahimahi/us_cellular_2013_2016/Verizon-LTE-short.up",
//!         "--link-trace-down", "{data}/channel/mahimahi/us_cellular_2013_2016/Verizon-LTE-short.down",
//!         "--rtt-ms", "60"]
//! ```
//!
//! `{data}` stands for the shared data directory (`$ECSPEC_DATA_DIR`, default `../shared/data`).

use std::path::Path;

use anyhow::{bail, Context, Result};
use clap::Parser;
use ecspec_link::LinkConfig;
use serde::Deserialize;

use ecspec_run::LinkArgs;

/// The default scenario set: a static 5G, a driving LTE and a driving UMTS trace, and a
/// constant 10 Mbit/s / 60 ms link.
pub const DEFAULT_SCENARIOS: &str = "5g-static,lte-driving,umts-driving,const-10mbit-60ms";

/// One link scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Name used in the results.
    pub name: String,
    /// What it is.
    pub description: String,
    /// The link options, `{data}` expanded.
    pub args: Vec<String>,
}

#[derive(Parser)]
#[command(no_binary_name = true)]
struct ScenarioArgs {
    #[command(flatten)]
    link: LinkArgs,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioFile {
    name: String,
    #[serde(default)]
    description: String,
    args: Vec<String>,
}

fn builtin(name: &str) -> Option<(&'static str, Vec<&'static str>)> {
    Some(match name {
        "5g-static" => (
            "Irish 5G, static (B_2020.01.16_10.43.34), per-second DL/UL rate and ping RTT",
            vec![
                "--link-csv",
                "{data}/channel/irish_5g_raca2020/static/B_2020.01.16_10.43.34.csv",
                "--rtt-from-trace",
            ],
        ),
        "5g-driving" => (
            "Irish 5G, driving (B_2019.12.16_14.23.32), per-second DL/UL rate and ping RTT",
            vec![
                "--link-csv",
                "{data}/channel/irish_5g_raca2020/driving/B_2019.12.16_14.23.32.csv",
                "--rtt-from-trace",
            ],
        ),
        "lte-driving" => (
            "AT&T LTE driving (Mahimahi), 60 ms RTT",
            vec![
                "--link-trace-up",
                "{data}/channel/mahimahi/us_cellular_2013_2016/ATT-LTE-driving.up",
                "--link-trace-down",
                "{data}/channel/mahimahi/us_cellular_2013_2016/ATT-LTE-driving.down",
                "--rtt-ms",
                "60",
            ],
        ),
        "umts-driving" => (
            "T-Mobile UMTS driving (Mahimahi), 100 ms RTT",
            vec![
                "--link-trace-up",
                "{data}/channel/mahimahi/us_cellular_2013_2016/TMobile-UMTS-driving.up",
                "--link-trace-down",
                "{data}/channel/mahimahi/us_cellular_2013_2016/TMobile-UMTS-driving.down",
                "--rtt-ms",
                "100",
            ],
        ),
        "const-10mbit-60ms" => (
            "constant 10 Mbit/s both ways, 60 ms RTT",
            vec![
                "--link-up-mbps",
                "10",
                "--link-down-mbps",
                "10",
                "--rtt-ms",
                "60",
            ],
        ),
        "near-edge-14ms" => (
            "constant 50 Mbit/s both ways, 14 ms RTT (a near-edge link, SpecEdge's setting)",
            vec![
                "--link-up-mbps",
                "50",
                "--link-down-mbps",
                "50",
                "--rtt-ms",
                "14",
            ],
        ),
        "loopback" => ("no link delay (zero-delay loopback)", vec!["--no-link"]),
        _ => return None,
    })
}

/// Names of the built-in scenarios.
pub const BUILTIN: [&str; 7] = [
    "5g-static",
    "5g-driving",
    "lte-driving",
    "umts-driving",
    "const-10mbit-60ms",
    "near-edge-14ms",
    "loopback",
];

/// A built-in scenario by name, or a scenario TOML file; `{data}` becomes `data_dir`.
///
/// # Errors
/// An unknown name that is not a readable scenario file, or a file that is not valid.
pub fn resolve(name_or_file: &str, data_dir: &Path) -> Result<Scenario> {
    let data = data_dir.to_string_lossy();
    let expand = |a: &str| a.replace("{data}", &data);
    if let Some((description, args)) = builtin(name_or_file) {
        return Ok(Scenario {
            name: name_or_file.to_string(),
            description: description.to_string(),
            args: args.into_iter().map(expand).collect(),
        });
    }
    let path = Path::new(name_or_file);
    if !path.exists() {
        bail!(
            "unknown scenario {name_or_file:?}: not a built-in ({}) and no such file",
            BUILTIN.join(", ")
        );
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let f: ScenarioFile = toml::from_str(&text)
        .with_context(|| format!("{}: not a scenario file", path.display()))?;
    Ok(Scenario {
        name: f.name,
        description: f.description,
        args: f.args.iter().map(|a| expand(a)).collect(),
    })
}

impl Scenario {
    /// Whether the link is shaped (rate, delay, radio model); `--no-link` (the loopback
    /// scenario) passes bytes unshaped, so it has no rate to plot and no radio energy.
    pub fn shaped(&self) -> bool {
        !self.args.iter().any(|a| a == "--no-link")
    }

    /// The link this scenario builds, parsed once (`None`: no emulated link); see
    /// [`shifted`] for a request's own phase of it.
    ///
    /// # Errors
    /// Invalid options or unreadable traces, naming the scenario.
    pub fn link_base(&self) -> Result<Option<LinkConfig>> {
        self.link(0.0)
    }

    /// The link this scenario builds, starting `start_s` seconds into its traces (`None`: no
    /// emulated link).
    ///
    /// # Errors
    /// Invalid options or unreadable traces, naming the scenario.
    pub fn link(&self, start_s: f64) -> Result<Option<LinkConfig>> {
        let mut args = self.args.clone();
        if start_s > 0.0 && self.shaped() {
            args.extend(["--link-start-s".to_string(), start_s.to_string()]);
        }
        let parsed = ScenarioArgs::try_parse_from(&args)
            .map_err(|e| anyhow::anyhow!("scenario {}: {}", self.name, e.to_string().trim()))?;
        ecspec_run::run::link_config(&parsed.link)
            .with_context(|| format!("scenario {}", self.name))
    }

    /// Whether the scenario reads files from `data_dir` that are missing (a fresh clone without
    /// the shared data): the file named, for a clear skip.
    pub fn missing_file(&self) -> Option<String> {
        self.args
            .iter()
            .filter(|a| a.ends_with(".csv") || a.ends_with(".up") || a.ends_with(".down"))
            .find(|a| !Path::new(a).exists())
            .cloned()
    }
}

/// A fresh copy of `base` seen `start_s` seconds into its time line (the same as building the
/// scenario with `--link-start-s start_s`, without parsing its traces again).
pub fn shifted(base: &Option<LinkConfig>, start_s: f64) -> Option<LinkConfig> {
    let base = base.as_ref()?;
    if start_s <= 0.0 {
        return Some(base.clone());
    }
    // The caller bounds start_s; saturate rather than panic if it did not.
    let off = std::time::Duration::try_from_secs_f64(start_s).unwrap_or(std::time::Duration::MAX);
    Some(base.shifted(off))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_expand_and_build() {
        let s = resolve("const-10mbit-60ms", Path::new("/nowhere")).unwrap();
        let link = s.link(0.0).unwrap().expect("a shaped link");
        assert!((link.uplink.mean_rate_bps() - 10e6).abs() < 1.0);
        // Loopback: bytes still pass (and are counted), unshaped and without delay.
        let lo = resolve("loopback", Path::new("/x"))
            .unwrap()
            .link(3.0)
            .unwrap()
            .unwrap();
        assert_eq!(lo.rtt(), std::time::Duration::ZERO);
        assert!(lo.uplink.mean_rate_bps() >= 1e12);
        let t = resolve("lte-driving", Path::new("/data")).unwrap();
        assert!(
            t.args
                .iter()
                .any(|a| a.starts_with("/data/channel/mahimahi/")),
            "{:?}",
            t.args
        );
        assert!(t.missing_file().is_some());
    }

    #[test]
    fn shifting_a_parsed_link_equals_building_it_shifted() {
        let dir = std::env::temp_dir().join(format!("ecspec-shift-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // 1 packet in ms 1, 2 in ms 2, ... : a rate that grows with time.
        let trace: String = (1..=50)
            .flat_map(|ms| std::iter::repeat_n(format!("{ms}\n"), ms))
            .collect();
        std::fs::write(dir.join("t.up"), &trace).unwrap();
        std::fs::write(dir.join("t.down"), &trace).unwrap();
        let f = dir.join("s.toml");
        std::fs::write(
            &f,
            format!(
                "name = \"t\"\nargs = [\"--link-trace-up\", \"{0}/t.up\", \"--link-trace-down\", \"{0}/t.down\", \"--rtt-ms\", \"10\"]\n",
                dir.display()
            ),
        )
        .unwrap();
        let s = resolve(f.to_str().unwrap(), Path::new("/x")).unwrap();
        let base = s.link_base().unwrap();
        let mut a = shifted(&base, 0.02).unwrap();
        let mut b = s.link(0.02).unwrap().unwrap();
        for (t, n) in [(0u64, 1500usize), (3, 9000), (11, 40_000)] {
            let t = std::time::Duration::from_millis(t);
            assert_eq!(
                a.uplink.transmit(t, n).unwrap(),
                b.uplink.transmit(t, n).unwrap()
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unknown_names_and_bad_files_are_named() {
        let e = format!(
            "{:#}",
            resolve("no-such-scenario", Path::new("/x")).unwrap_err()
        );
        assert!(
            e.contains("no-such-scenario") && e.contains("5g-static"),
            "{e}"
        );
        let dir = std::env::temp_dir().join(format!("ecspec-scenario-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("s.toml");
        std::fs::write(&f, "name = \"x\"\nargs = [\"--rtt-ms\", \"-5\"]\n").unwrap();
        let s = resolve(f.to_str().unwrap(), Path::new("/x")).unwrap();
        let e = format!("{:#}", s.link(0.0).unwrap_err());
        assert!(e.contains("scenario x"), "{e}");
        std::fs::write(&f, "nme = \"x\"\n").unwrap();
        let e = format!(
            "{:#}",
            resolve(f.to_str().unwrap(), Path::new("/x")).unwrap_err()
        );
        assert!(e.contains("not a scenario file"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
