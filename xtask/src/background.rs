//! A job of the test command that runs beside its tests (the fuzz targets' build): a shell
//! script in the background, optionally under SCHED_IDLE (util-linux's `chrt`, in every
//! Debian: it then runs only on CPU time nothing else wants), its output in a log file.
//! It stays in xtask's process group, so a Ctrl-C at the terminal stops it with everything
//! else; dropped before [`Background::wait`] (a failed earlier step), it is killed with
//! every process under it (sh, cargo, the compilers).

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::root;

/// A script running in the background (see the module's docs).
pub struct Background {
    what: &'static str,
    child: Option<std::process::Child>,
    idle: bool,
    log: PathBuf,
    t0: Instant,
}

/// A background job that succeeded: its log and the line that says what ran, how long.
pub struct Done {
    pub log: String,
    pub line: String,
}

impl Background {
    /// Starts `script` (`sh -c`) in the workspace's root, its output in `log`; `what` names
    /// it in messages.
    pub fn start(what: &'static str, script: &str, log: PathBuf, idle: bool) -> Result<Self> {
        if let Some(dir) = log.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let out =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
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
            .with_context(|| format!("starting {what}"))?;
        Ok(Self {
            what,
            child: Some(child),
            idle,
            log,
            t0: Instant::now(),
        })
    }

    /// Waits for the job: its log, or an error with the log's tail.
    pub fn wait(mut self) -> Result<Done> {
        let Some(mut child) = self.child.take() else {
            bail!("{} was already waited for", self.what);
        };
        let st = child
            .wait()
            .with_context(|| format!("waiting for {}", self.what))?;
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        if !st.success() {
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            bail!(
                "{} failed ({st}; {}):\n{}",
                self.what,
                self.log.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        let how = if self.idle {
            ", beside the other steps under SCHED_IDLE"
        } else {
            ""
        };
        let line = format!(
            "+ {} ({:.0} s{how}; {})",
            self.what,
            self.t0.elapsed().as_secs_f64(),
            self.log.display()
        );
        Ok(Done { log, line })
    }
}

impl Drop for Background {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `pid` is still a running process (a zombie, reaped later by init or its
    /// parent, does not count).
    fn alive(pid: u32) -> bool {
        stat(pid).is_some_and(|(state, _)| state != 'Z')
    }

    #[test]
    fn a_dropped_job_takes_every_process_under_it() {
        // A stand-in for a build: a shell with a child that has a child of its own.
        let log = std::env::temp_dir().join(format!("xtask-bg-{}.log", std::process::id()));
        let job = Background::start(
            "the stand-in",
            "sh -c 'sleep 60 & sleep 60; wait' & sleep 60; wait",
            log.clone(),
            false,
        )
        .expect("sh");
        let pid = job.child.as_ref().expect("running").id();
        let mut tree = Vec::new();
        for _ in 0..200 {
            tree = descendants(pid);
            if tree.len() >= 4 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(tree.len() >= 4, "the stand-in's tree: {tree:?}");
        drop(job);
        // SIGTERM is delivered at once but acted on when each process next runs: wait for
        // them (up to 10 s on a loaded machine) rather than a fixed time.
        let t0 = Instant::now();
        let mut left: Vec<u32> = tree.clone();
        while !left.is_empty() && t0.elapsed() < std::time::Duration::from_secs(10) {
            std::thread::sleep(std::time::Duration::from_millis(20));
            left.retain(|&p| alive(p));
        }
        let _ = std::fs::remove_file(&log);
        assert!(left.is_empty(), "left running: {left:?}");
        assert!(!alive(pid), "the shell itself");
    }

    #[test]
    fn a_failed_job_says_what_failed_with_its_output() {
        let log = std::env::temp_dir().join(format!("xtask-bg-fail-{}.log", std::process::id()));
        let job = Background::start(
            "the failing one",
            "echo lint said no; exit 3",
            log.clone(),
            false,
        )
        .expect("sh");
        let err = job.wait().err().expect("a failure");
        let _ = std::fs::remove_file(&log);
        let msg = format!("{err:#}");
        assert!(
            msg.contains("the failing one failed") && msg.contains("lint said no"),
            "{msg}"
        );
    }
}
