//! `cargo xtask fuzz` and the test command's bounded fuzzing: cargo-fuzz installed if
//! missing, every target built once (`cargo +nightly fuzz build`), then each run as its own
//! binary for a few seconds, two at a time. A crash fails with the target, the input kept
//! in `fuzz/artifacts/<target>/` and libFuzzer's last lines.

use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::background::Background;
use crate::root;

#[derive(clap::Args)]
pub struct FuzzArgs {
    /// Seconds per target.
    #[arg(long, default_value_t = 30)]
    pub seconds: u32,
}

/// The fuzz targets (fuzz/fuzz_targets).
const FUZZ_TARGETS: &[&str] = &[
    "md_line",
    "xtx_tap",
    "order_decode",
    "order_stream",
    "engine_packets",
    "xtx_line",
    "md_frame",
    "packet_filter",
    "stamp_ids",
    "machine_text",
];

pub fn fuzz(a: &FuzzArgs) -> Result<()> {
    for line in run_fuzz(a.seconds)?.lines {
        println!("{line}");
    }
    Ok(())
}

/// The host's target triple (where `cargo fuzz build` puts the targets), from `rustc -vV`.
fn host_triple() -> Result<String> {
    let o = Command::new("rustc")
        .arg("-vV")
        .output()
        .context("running rustc -vV")?;
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(str::to_owned)
        .context("rustc -vV printed no host")
}

/// What a bounded fuzzing pass did, as lines to print: the fuzzing may run beside another
/// test, whose output it must not cut into.
pub struct FuzzReport {
    pub lines: Vec<String>,
    pub inputs: u64,
}

/// Runs every fuzz target for `seconds` (installing cargo-fuzz first if needed): one build
/// of all targets, then the targets two at a time. A crash fails with the target, the
/// input kept in `fuzz/artifacts/<target>/` and libFuzzer's last lines.
fn run_fuzz(seconds: u32) -> Result<FuzzReport> {
    let lines = build_lines(start_build(false)?)?;
    run_fuzz_targets(seconds, lines)
}

/// The fuzz targets' build (cargo-fuzz installed first if missing) as a [`Background`]
/// job; `smoke`: the test command's build, under SCHED_IDLE and at opt-level 1.
///
/// The test command runs each target for 10 s as a smoke test beside its VM tests, and the
/// build competes for the CPU time the tests leave: at opt-level 1 it took 316 s of CPU
/// (user and system) instead of 362 s (one build each from nothing, the 2 vCPU AMD EPYC
/// machine) and the targets ran about 80 % as many inputs per second (md_line 246 k
/// against 302 k in 5 s).
/// `cargo xtask fuzz` keeps cargo-fuzz's own release profile, for long runs.
pub fn start_build(smoke: bool) -> Result<Background> {
    let opt = if smoke {
        "export CARGO_PROFILE_RELEASE_OPT_LEVEL=1\n"
    } else {
        ""
    };
    let script = format!(
        "set -e\n\
        if ! cargo fuzz --version >/dev/null 2>&1; then\n\
          echo 'fuzz: installing cargo-fuzz (cargo install --locked cargo-fuzz)'\n\
          cargo install --locked cargo-fuzz\n\
        fi\n\
        {opt}exec cargo +nightly fuzz build --fuzz-dir fuzz"
    );
    Background::start(
        if smoke {
            "cargo +nightly fuzz build --fuzz-dir fuzz (every target, opt-level 1)"
        } else {
            "cargo +nightly fuzz build --fuzz-dir fuzz (every target)"
        },
        &script,
        root().join("target/fuzz-build.log"),
        smoke,
    )
}

/// Waits for the build started by [`start_build`]: the lines to print.
pub fn build_lines(build: Background) -> Result<Vec<String>> {
    let done = build.wait()?;
    let mut lines: Vec<String> = done
        .log
        .lines()
        .filter(|l| l.starts_with("fuzz: installing"))
        .map(str::to_owned)
        .collect();
    lines.push(done.line);
    Ok(lines)
}

/// Runs every fuzz target (built by [`start_build`]) for `seconds`, two at a time; `lines`
/// are the build's.
pub fn run_fuzz_targets(seconds: u32, mut lines: Vec<String>) -> Result<FuzzReport> {
    let time = format!("-max_total_time={seconds}");
    let triple = host_triple()?;
    let mut inputs = 0;
    // Two targets at a time: each target is one single-threaded process, and the VM test
    // beside them keeps one CPU busy with little else (a TCG guest).
    for pair in FUZZ_TARGETS.chunks(2) {
        let mut running = Vec::new();
        for &t in pair {
            // New inputs go to fuzz/corpus/<target> (not committed); fuzz/seeds/<target>, when
            // present, adds hand-written starting points (e.g. real lines, so the parser's
            // fast path is reached at once).
            let corpus = format!("fuzz/corpus/{t}");
            let seeds = format!("fuzz/seeds/{t}");
            let artifacts = format!("fuzz/artifacts/{t}/");
            std::fs::create_dir_all(root().join(&corpus))?;
            std::fs::create_dir_all(root().join(&artifacts))?;
            let prefix = format!("-artifact_prefix={}", root().join(&artifacts).display());
            // The target built above, run directly: `cargo fuzz run` would check the build
            // again through cargo for every target (~3 s each here).
            let bin = format!("fuzz/target/{triple}/release/{t}");
            let mut args = vec![corpus.clone()];
            if root().join(&seeds).is_dir() {
                args.push(seeds);
            }
            args.extend([time.clone(), prefix]);
            lines.push(format!("+ {bin} {} ({seconds} s)", args.join(" ")));
            let child = Command::new(root().join(&bin))
                .args(&args)
                .current_dir(root())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .with_context(|| format!("running {bin}"))?;
            running.push((t, artifacts, child));
        }
        let mut running = running.into_iter();
        while let Some((t, artifacts, child)) = running.next() {
            let o = child
                .wait_with_output()
                .with_context(|| format!("waiting for fuzz target {t}"))?;
            let err = String::from_utf8_lossy(&o.stderr);
            if !o.status.success() {
                // The other target of the pair goes too: nothing is left running.
                for (_, _, mut other) in running.by_ref() {
                    let _ = other.kill();
                    let _ = other.wait();
                }
                let tail: Vec<&str> = err.lines().rev().take(25).collect();
                bail!(
                    "fuzz target {t} failed (crash input kept in {artifacts}):\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            // libFuzzer's last word: "Done N runs in S second(s)".
            let runs: u64 = err
                .lines()
                .rev()
                .find_map(|l| {
                    l.strip_prefix("Done ")
                        .and_then(|r| r.split_whitespace().next())
                })
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            lines.push(format!("fuzz: {t}: {runs} inputs in {seconds} s, no crash"));
            inputs += runs;
        }
    }
    lines.push(format!(
        "fuzz: {} targets, {inputs} inputs in total, no crash",
        FUZZ_TARGETS.len()
    ));
    Ok(FuzzReport { lines, inputs })
}
