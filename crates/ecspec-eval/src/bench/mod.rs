//! `ecspec bench`: a workload (Spec-Bench / MT-Bench prompts) × link scenarios × systems ×
//! target versions, on the live clock (real time over the emulated link) or the virtual clock
//! (the models really run, so tokens, acceptance and bytes are real, but compute time comes
//! from device profiles and link time from the link models, on a paused tokio clock). Both
//! clocks run the same edge, link and cloud code over the same protocol messages.
//!
//! Writes `requests.jsonl` (one line per request, with its per-round records),
//! `summary.csv`, `report.md` and SVG plots to `--out`.

//!
//! Modules: `args` (the command's flags), `setup` (models, clocks, what each system runs,
//! running on a clock), `family_run` (one family's benchmark), `scenario`, `system`,
//! `compute`, `report`, `plot`; `load` is `ecspec load`.

mod args;
mod compute;
mod family_run;
pub mod load;
mod plot;
mod report;
mod scenario;
mod setup;
mod system;

use anyhow::{bail, Context, Result};
use ecspec_family::FamilyName;

pub use args::{BenchArgs, ClockArg, DEFAULT_SYSTEMS};
pub use scenario::DEFAULT_SCENARIOS;
pub use setup::profile_toml;

/// Runs `ecspec bench` (blocking; call from a runtime thread through `block_in_place`): each
/// family in turn.
///
/// # Errors
/// Bad arguments (naming the option), missing models, prompts or traces, unwritable output.
pub fn run(a: BenchArgs) -> Result<()> {
    // Each family once, in the order given.
    let mut families: Vec<FamilyName> = Vec::new();
    for f in &a.family {
        if !families.contains(f) {
            families.push(*f);
        }
    }
    match families.as_slice() {
        [] => bail!("--family: name at least one family"),
        [one] => return family_run::run_family(&a, *one, &a.out),
        _ => {}
    }
    if a.manifest.is_some() || a.conventional_dir.is_some() || !a.versions.is_empty() {
        bail!("--manifest, --conventional-dir and --versions describe one family: give a single --family with them");
    }
    let started = std::time::Instant::now();
    let mut report = String::new();
    for f in families {
        let name = ecspec_family::info(f).wire_name;
        let out = a.out.join(name);
        family_run::run_family(&a, f, &out)?;
        let md = std::fs::read_to_string(out.join("report.md"))
            .with_context(|| format!("reading {}", out.join("report.md").display()))?;
        report.push_str(&md);
        report.push_str(&format!(
            "\nFiles of this family (per-request records, CSV, plots as SVG and PNG): `{name}/`.\n\n"
        ));
    }
    let path = a.out.join("report.md");
    std::fs::write(&path, &report).with_context(|| format!("writing {}", path.display()))?;
    eprintln!(
        "ecspec bench: wrote {} ({:.1} min in all)",
        path.display(),
        started.elapsed().as_secs_f64() / 60.0
    );
    Ok(())
}
