//! `probe.txt` in a results folder: what the machine offered the paths.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use netlab::VethLab;

use crate::Env;

/// `strategy probe` in a namespace like the runs' (XDP attach tried on its veth), kept as
/// `probe.txt` with the results: what the machine offered the paths.
pub fn write(env: &Env, dir: &Path) -> Result<()> {
    let lab = VethLab::new("prb").context("namespaces for the probe")?;
    let out = lab
        .strategy
        .command(env.bin("strategy"))
        .args(["probe", "--iface", VethLab::STRATEGY_IF])
        .output()
        .context("running strategy probe")?;
    fs::write(dir.join("probe.txt"), &out.stdout)?;
    if !out.status.success() {
        println!(
            "probe: strategy probe failed ({}); see probe.txt",
            out.status
        );
    }
    Ok(())
}
