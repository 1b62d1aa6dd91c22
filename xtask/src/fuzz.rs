//! `cargo xtask fuzz` and the test command's bounded fuzzing: cargo-fuzz installed if
//! missing, every target built once (`cargo +nightly fuzz build`), then each run as its own
//! binary for a few seconds, two at a time. A crash fails with the target, the input kept
//! in `fuzz/artifacts/<target>/` and libFuzzer's last lines.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};

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
    let lines = FuzzBuild::start(false)?.wait()?;
    run_fuzz_targets(seconds, lines)
}

/// The fuzz targets' build (cargo-fuzz installed first if missing), running in the
/// background. It stays in xtask's process group, so a Ctrl-C at the terminal stops it with
/// everything else; dropped before [`FuzzBuild::wait`] (a failed earlier step), it is
/// killed with every process under it (sh, cargo, cargo-fuzz, the inner cargo, the
/// compilers).
pub struct FuzzBuild {
    child: Option<std::process::Child>,
    idle: bool,
    log: PathBuf,
    t0: std::time::Instant,
}

impl FuzzBuild {
    /// Starts the build; with `idle` under SCHED_IDLE (util-linux's `chrt`, in every Debian:
    /// the build and its compilers run only on a CPU nothing else wants).
    pub fn start(idle: bool) -> Result<Self> {
        let log = root().join("target/fuzz-build.log");
        std::fs::create_dir_all(root().join("target"))?;
        let out =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let script = "set -e\n\
            if ! cargo fuzz --version >/dev/null 2>&1; then\n\
              echo 'fuzz: installing cargo-fuzz (cargo install --locked cargo-fuzz)'\n\
              cargo install --locked cargo-fuzz\n\
            fi\n\
            exec cargo +nightly fuzz build --fuzz-dir fuzz";
        let mut c = if idle {
            let mut c = Command::new("chrt");
            c.args(["--idle", "0", "sh", "-c", script]);
            c
        } else {
            let mut c = Command::new("sh");
            c.args(["-c", script]);
            c
        };
        let child = c
            .current_dir(root())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("starting the fuzz targets' build")?;
        Ok(Self {
            child: Some(child),
            idle,
            log,
            t0: std::time::Instant::now(),
        })
    }

    /// Waits for the build: the lines to print, or its log's tail.
    pub fn wait(mut self) -> Result<Vec<String>> {
        let Some(mut child) = self.child.take() else {
            bail!("the fuzz build was already waited for");
        };
        let st = child.wait().context("waiting for the fuzz build")?;
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        if !st.success() {
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            bail!(
                "`cargo +nightly fuzz build --fuzz-dir fuzz` failed ({st}; {}):\n{}",
                self.log.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        let mut lines: Vec<String> = log
            .lines()
            .filter(|l| l.starts_with("fuzz: installing"))
            .map(str::to_owned)
            .collect();
        let how = if self.idle {
            ", beside the other steps under SCHED_IDLE"
        } else {
            ""
        };
        lines.push(format!(
            "+ cargo +nightly fuzz build --fuzz-dir fuzz (every target, {:.0} s{how})",
            self.t0.elapsed().as_secs_f64()
        ));
        Ok(lines)
    }
}

impl Drop for FuzzBuild {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Parents first, so that none starts a new process after its children went.
            let mut tree = vec![child.id()];
            tree.extend(descendants(child.id()));
            let pids: Vec<String> = tree.iter().map(u32::to_string).collect();
            let _ = Command::new("kill")
                .arg("-TERM")
                .args(&pids)
                .stderr(std::process::Stdio::null())
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A process's state letter and parent, from `/proc/PID/stat` ("pid (comm) state ppid
/// ...": the comm may hold spaces and parentheses, so the fields are counted from the last
/// ')'); None once it is gone.
fn stat(pid: u32) -> Option<(char, u32)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = s[s.rfind(')')? + 1..].split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Every process under `pid`, from /proc (each `stat` names its parent), nearest first.
fn descendants(pid: u32) -> Vec<u32> {
    let mut parent_of = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            if let Some((_, pp)) = stat(p) {
                parent_of.push((p, pp));
            }
        }
    }
    let mut found = vec![pid];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            parent_of
                .iter()
                .filter(|&&(_, pp)| pp == parent)
                .map(|&(p, _)| p),
        );
        i += 1;
    }
    found.remove(0);
    found
}

/// Runs every fuzz target (built by [`FuzzBuild`]) for `seconds`, two at a time; `lines`
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `pid` is still a running process (a zombie, reaped later by init or its
    /// parent, does not count).
    fn alive(pid: u32) -> bool {
        stat(pid).is_some_and(|(state, _)| state != 'Z')
    }

    #[test]
    fn a_dropped_build_takes_every_process_under_it() {
        // A stand-in for the build: a shell with a child that has a child of its own.
        let child = Command::new("sh")
            .args(["-c", "sh -c 'sleep 60 & sleep 60; wait' & sleep 60; wait"])
            .spawn()
            .expect("sh");
        let pid = child.id();
        let mut tree = Vec::new();
        for _ in 0..200 {
            tree = descendants(pid);
            if tree.len() >= 4 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(tree.len() >= 4, "the stand-in's tree: {tree:?}");
        drop(FuzzBuild {
            child: Some(child),
            idle: false,
            log: PathBuf::new(),
            t0: std::time::Instant::now(),
        });
        // SIGTERM is delivered at once but acted on when each process next runs: wait for
        // them (up to 10 s on a loaded machine) rather than a fixed time.
        let t0 = std::time::Instant::now();
        let mut left: Vec<u32> = tree.clone();
        while !left.is_empty() && t0.elapsed() < std::time::Duration::from_secs(10) {
            std::thread::sleep(std::time::Duration::from_millis(20));
            left.retain(|&p| alive(p));
        }
        assert!(left.is_empty(), "left running: {left:?}");
        assert!(!alive(pid), "the shell itself");
    }
}
