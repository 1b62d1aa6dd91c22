//! What the lab's run tests share: the settings of a test run, the workspace.
#![allow(dead_code)]

use std::path::PathBuf;

use lab::LabConfig;

/// Lab settings for the test command's own runs: one run, a fixed results folder,
/// nothing else switched on (the test command built everything first).
pub fn test_lab(paths: &[&str], md_file: Option<PathBuf>, dir: PathBuf, pace: &str) -> LabConfig {
    LabConfig {
        paths: paths
            .iter()
            .map(|p| p.parse())
            .collect::<Result<_, _>>()
            .expect("the test command's own path names"),
        md_file,
        pace: pace.into(),
        results_dir: Some(dir),
        timeout: 300,
        // The floor at each gap from 500 ms of ping-pong per protocol, not 4 s: the tests
        // check that it is measured and reported, not its precision (about 45 s of the
        // lab's tests).
        floor_time: std::time::Duration::from_millis(500),
        ..LabConfig::default()
    }
}

/// Runs a command, failing when it fails.
pub fn cmd(program: &str, args: &[&str]) -> anyhow::Result<()> {
    lab::process::cmd_in(&lab::Env::workspace().root, program, args)
}

/// Why a run test cannot run here (not root, or a binary not built), if so.
pub fn cannot_run() -> Option<String> {
    let env = lab::Env::workspace();
    if !netlab::is_root() {
        return Some("needs root (network namespaces)".into());
    }
    for b in ["exchange", "strategy"] {
        if !env.bin(b).exists() {
            return Some(format!(
                "{} not built (cargo xtask test builds it)",
                env.bin(b).display()
            ));
        }
    }
    None
}
