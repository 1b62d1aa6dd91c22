//! The processes the lab starts: commands that must succeed, commands whose output it
//! reads, and children that are killed and reaped when their guard drops (end of a run,
//! error, Ctrl-C).

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Runs a command in `dir`, echoing it, failing when it fails.
pub fn cmd_in(dir: &Path, program: &str, args: &[&str]) -> Result<()> {
    println!("+ {program} {}", args.join(" "));
    let st = Command::new(program)
        .args(args)
        .current_dir(dir)
        .status()
        .with_context(|| format!("running {program}"))?;
    if !st.success() {
        bail!("`{program} {}` failed ({st})", args.join(" "));
    }
    Ok(())
}

/// Runs a command and returns its stdout, failing with its stderr.
pub fn output(program: &str, args: &[&str]) -> Result<String> {
    let o = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    if !o.status.success() {
        bail!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&o.stdout).trim().to_owned())
}

/// A child process killed (if still running) and reaped on drop.
pub struct Proc {
    /// Name for messages.
    pub name: &'static str,
    /// The child.
    pub child: Child,
}

impl Proc {
    /// Starts `c` under `name`.
    pub fn spawn(name: &'static str, c: &mut Command) -> Result<Self> {
        Ok(Self {
            name,
            child: c.spawn().with_context(|| format!("starting {name}"))?,
        })
    }

    /// Waits until the log file `log` (the child's stderr) has a line containing `needle`,
    /// polling every 2 ms: the moment a server is ready, instead of a fixed sleep. Fails
    /// when the child exits first or `limit` passes.
    pub fn wait_for_log(&mut self, log: &Path, needle: &str, limit: Duration) -> Result<()> {
        let t0 = Instant::now();
        loop {
            if std::fs::read_to_string(log).is_ok_and(|t| t.contains(needle)) {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{} exited ({status}) before saying `{needle}`; see {}",
                    self.name,
                    log.display()
                );
            }
            if t0.elapsed() > limit {
                bail!(
                    "{} did not say `{needle}` within {limit:?}; see {}",
                    self.name,
                    log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Sends SIGINT (lets a capture flush) and waits for the child.
    pub fn interrupt(mut self) {
        // The child is not reaped yet, so its pid is still ours.
        let _ = hostsys::signal::interrupt(self.child.id());
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}
