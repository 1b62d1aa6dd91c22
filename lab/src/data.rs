//! The lab's default market-data file: generated once with the default settings and cached.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::Env;

/// `target/lab-data/md-default.csv.gz`.
pub fn default_md_file(env: &Env) -> PathBuf {
    env.data_dir().join("md-default.csv.gz")
}

/// Generates the file at `out` with the default settings unless it is already there (with
/// its planted-triggers sidecar) and `force` is off.
pub fn ensure_md_file(out: &Path, force: bool) -> Result<PathBuf> {
    if out.exists() && mdfile::mdgen::planted_path(out).exists() && !force {
        println!("market data: {} (cached)", out.display());
        return Ok(out.to_owned());
    }
    let s = mdfile::mdgen::generate(out, &mdfile::mdgen::GenConfig::default())
        .with_context(|| format!("generating {}", out.display()))?;
    println!(
        "market data: wrote {} ({} bytes, {} lines, {} planted triggers)",
        out.display(),
        s.bytes,
        s.lines,
        s.planted.len()
    );
    Ok(out.to_owned())
}
