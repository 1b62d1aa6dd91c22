//! `manifest.json` in every results folder: what made its figures. The command line, the
//! code (its git commit and whether the checkout had uncommitted changes), when, and the
//! machine the lab ran on ([`hostsys::machine::Machine`]: CPU, hypervisor, kernel, clock
//! source, isolated CPUs, huge pages, governor, boot command line, load average). In the
//! namespace lab that is the strategy's machine too; in the VM and two-machine labs the
//! strategy's own machine (the guest, the remote host) is recorded beside it.
//!
//! `lab compare A B` reads both manifests and prints where the two differ: these machines
//! differ by 2x from each other and drift within an hour, so a comparison across machines,
//! kernels or commits is said to be one, not left for the reader to guess. A folder written
//! before manifests existed compares as before, with a line saying what is unknown.

use anyhow::{Context, Result};
use hostsys::machine::Machine;
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::Path;
use std::process::Command;

/// The file's name in a results folder.
pub const FILE: &str = "manifest.json";

/// What made a results folder's figures (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// The format's version: 1.
    pub format: u32,
    /// When the folder was made: seconds since the Unix epoch.
    pub started_unix: u64,
    /// The same as RFC 3339 (UTC).
    pub started: String,
    /// The command line of the process that made it.
    pub command: Vec<String>,
    /// The code.
    pub code: Code,
    /// The machine the lab ran on.
    pub machine: Machine,
    /// The strategy's machine where it is not the lab's (`strategy probe --machine` there):
    /// the two-machine lab's remote host (over SSH), the VM lab's guest (its emulated CPU
    /// and its kernel, from the first guest's console). Absent: the lab's own (the
    /// namespace lab).
    #[serde(default)]
    pub strategy_machine: Option<Machine>,
}

/// The code that made a results folder.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Code {
    /// The workspace's version.
    pub version: String,
    /// The checkout's commit (absent outside a git checkout, or without git).
    pub commit: Option<String>,
    /// Whether tracked files had uncommitted changes.
    pub dirty: Option<bool>,
}

impl Code {
    /// `4fe2a1c` or `4fe2a1c+changes`; `?` outside a checkout.
    pub fn short(&self) -> String {
        // Characters, not bytes: a manifest read back may hold anything.
        let mut s = self
            .commit
            .as_deref()
            .map_or_else(|| "?".to_owned(), |c| c.chars().take(7).collect());
        if self.dirty == Some(true) {
            s.push_str("+changes");
        }
        s
    }

    /// The checkout at `root`, read with git (nothing when either is missing).
    fn read(root: &Path) -> Self {
        let git = |args: &[&str]| {
            Command::new("git")
                .arg("-C")
                .arg(root)
                .args(args)
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        };
        let commit = git(&["rev-parse", "HEAD"]).filter(|c| !c.is_empty());
        let dirty = commit
            .as_ref()
            .and_then(|_| git(&["status", "--porcelain", "--untracked-files=no"]))
            .map(|s| !s.is_empty());
        Self {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            commit,
            dirty,
        }
    }
}

impl Manifest {
    /// This process, this machine and the checkout at `root`, now.
    pub fn now(root: &Path) -> Self {
        let now = std::time::SystemTime::now();
        Self {
            format: 1,
            started_unix: now
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            started: humantime::format_rfc3339_seconds(now).to_string(),
            command: std::env::args().collect(),
            code: Code::read(root),
            machine: Machine::read(),
            strategy_machine: None,
        }
    }

    /// Writes it into `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let path = dir.join(FILE);
        fs::write(&path, serde_json::to_string_pretty(self)? + "\n")
            .with_context(|| path.display().to_string())
    }

    /// The manifest of results folder `dir`: `None` if it has none (written before
    /// manifests existed); an error if it is there and not one.
    pub fn read(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join(FILE);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| path.display().to_string()),
        };
        serde_json::from_str(&text)
            .map(Some)
            .with_context(|| format!("{}: not a results manifest", path.display()))
    }

    /// One line: the machine and the code.
    pub fn summary(&self) -> String {
        format!(
            "{}; code {} ({})",
            self.machine.summary(),
            self.code.short(),
            self.started
        )
    }
}

/// Writes this process's manifest (the checkout at `root`) into `dir` and says it in a line.
pub fn record(root: &Path, dir: &Path) -> Result<Manifest> {
    let m = Manifest::now(root);
    m.write(dir)?;
    println!("machine: {}", m.summary());
    Ok(m)
}

/// The machine in a line `<prefix><JSON>` of `text` (a guest's console, where `/init` prints
/// `strategy probe --machine`): `None` when the line is missing or does not read whole (a
/// console may cut a long line; what a guest prints is outside input).
pub fn machine_from_line(text: &str, prefix: &str) -> Option<Machine> {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(prefix))
        .and_then(|j| serde_json::from_str(j.trim().trim_end_matches('\r')).ok())
}

/// Puts `m` into `dir`'s manifest as the strategy's machine; with `first_only`, only if
/// none is there yet (the guests of one VM experiment are one emulated machine).
pub fn record_strategy_machine(dir: &Path, m: Machine, first_only: bool) -> Result<()> {
    let mut manifest = Manifest::read(dir)?.context("the results folder's manifest.json")?;
    if first_only && manifest.strategy_machine.is_some() {
        return Ok(());
    }
    manifest.strategy_machine = Some(m);
    manifest.write(dir)
}

/// Whether two results folders came from one machine and one code, and what to say of it
/// ([`comparison_notes`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provenance {
    /// The first line says whether they are a controlled comparison; the rest, one per
    /// difference.
    pub notes: Vec<String>,
    /// Whether the machines (the lab's and the strategy's) are the same; `None`: a
    /// manifest is missing or unreadable.
    pub same_machine: Option<bool>,
}

/// What to say about comparing folder A's figures with B's, from their manifests (either
/// may be missing or unreadable: the reason in place of the manifest).
pub fn comparison_notes(
    a: &std::result::Result<Option<Manifest>, String>,
    b: &std::result::Result<Option<Manifest>, String>,
) -> Provenance {
    let side = |m: &std::result::Result<Option<Manifest>, String>, name: &str| match m {
        Ok(Some(m)) => Ok(m.clone()),
        Ok(None) => Err(format!(
            "{name} has no {FILE} (written before manifests): its machine and code are unknown"
        )),
        Err(e) => Err(format!("{name}'s {FILE} is unreadable: {e}")),
    };
    let (a, b) = match (side(a, "A"), side(b, "B")) {
        (Ok(a), Ok(b)) => (a, b),
        (a, b) => {
            return Provenance {
                notes: [a.err(), b.err()].into_iter().flatten().collect(),
                same_machine: None,
            };
        }
    };
    let mut diffs: Vec<String> = a
        .machine
        .differences(&b.machine)
        .into_iter()
        .map(|(what, x, y)| format!("  {what}: {x} (A) / {y} (B)"))
        .collect();
    match (&a.strategy_machine, &b.strategy_machine) {
        (Some(x), Some(y)) => diffs.extend(
            x.differences(y)
                .into_iter()
                .map(|(what, x, y)| format!("  the strategy's {what}: {x} (A) / {y} (B)")),
        ),
        (None, None) => {}
        (x, y) => {
            let on = |m: &Option<Machine>| {
                m.as_ref()
                    .map_or("the lab's own".to_owned(), Machine::summary)
            };
            diffs.push(format!(
                "  the strategy's machine: {} (A) / {} (B)",
                on(x),
                on(y)
            ));
        }
    }
    let machine_differs = !diffs.is_empty();
    if (&a.code.commit, a.code.dirty) != (&b.code.commit, b.code.dirty) {
        diffs.push(format!(
            "  code: {} (A) / {} (B)",
            a.code.short(),
            b.code.short()
        ));
    }
    let mut notes = vec![match (machine_differs, diffs.is_empty()) {
        (false, true) => format!(
            "A and B: the same machine and code ({})",
            a.machine.summary()
        ),
        (false, false) => format!(
            "A and B: the same machine ({}), different code:",
            a.machine.summary()
        ),
        (true, _) => "A and B ran on different machines or set-ups: the difference below mixes \
             the change with the machine's (these machines differ by up to 2x); compare \
             paths within one run where you can:"
            .to_owned(),
    }];
    notes.extend(diffs);
    Provenance {
        notes,
        same_machine: Some(!machine_differs),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Env;

    fn at(kernel: &str, commit: &str, dirty: bool) -> Manifest {
        Manifest {
            format: 1,
            started_unix: 1,
            started: "1970-01-01T00:00:01Z".into(),
            command: vec!["lab".into()],
            code: Code {
                version: "0.1.0".into(),
                commit: Some(commit.into()),
                dirty: Some(dirty),
            },
            machine: Machine {
                kernel: Some(kernel.into()),
                cpus_online: Some(2),
                hypervisor: Some("KVM".into()),
                ..Machine::default()
            },
            strategy_machine: None,
        }
    }

    #[test]
    fn a_comparison_says_what_differs_between_the_folders() {
        let p = comparison_notes(
            &Ok(Some(at("6.18", "aaaaaaaaaa", false))),
            &Ok(Some(at("6.18", "aaaaaaaaaa", false))),
        );
        assert_eq!(p.same_machine, Some(true));
        let same = p.notes;
        assert_eq!(same.len(), 1);
        assert!(
            same[0].starts_with("A and B: the same machine and code"),
            "{same:?}"
        );
        let p = comparison_notes(
            &Ok(Some(at("6.18", "aaaaaaaaaa", false))),
            &Ok(Some(at("6.18", "aaaaaaaaaa", true))),
        );
        assert_eq!(p.same_machine, Some(true));
        let code = p.notes;
        assert!(code[0].contains("different code"), "{code:?}");
        assert_eq!(code[1], "  code: aaaaaaa (A) / aaaaaaa+changes (B)");
        let p = comparison_notes(
            &Ok(Some(at("6.18", "aaaaaaaaaa", false))),
            &Ok(Some(at("6.1", "bbbbbbbbbb", false))),
        );
        assert_eq!(p.same_machine, Some(false));
        let machine = p.notes;
        assert!(machine[0].contains("different machines"), "{machine:?}");
        assert!(machine.contains(&"  kernel: 6.18 (A) / 6.1 (B)".to_owned()));
        assert!(machine.contains(&"  code: aaaaaaa (A) / bbbbbbb (B)".to_owned()));
        let mut remote = at("6.18", "aaaaaaaaaa", false);
        remote.strategy_machine = Some(Machine {
            kernel: Some("6.12".into()),
            ..Machine::default()
        });
        let mut other = remote.clone();
        if let Some(m) = other.strategy_machine.as_mut() {
            m.kernel = Some("6.8".into());
        }
        let two = comparison_notes(&Ok(Some(remote.clone())), &Ok(Some(other))).notes;
        assert!(two[0].contains("different machines"), "{two:?}");
        assert_eq!(two[1], "  the strategy's kernel: 6.12 (A) / 6.8 (B)");
        let p = comparison_notes(
            &Ok(Some(remote)),
            &Ok(Some(at("6.18", "aaaaaaaaaa", false))),
        );
        assert_eq!(p.same_machine, Some(false), "another strategy box");
        let local = p.notes;
        assert!(
            local[1].starts_with("  the strategy's machine: ")
                && local[1].ends_with("/ the lab's own (B)"),
            "{local:?}"
        );
        let p = comparison_notes(&Ok(None), &Err("bad json".into()));
        assert_eq!(p.same_machine, None);
        let unknown = p.notes;
        assert_eq!(unknown.len(), 2);
        assert!(unknown[0].contains("A has no manifest.json") && unknown[1].contains("bad json"));
    }

    #[test]
    fn a_guests_machine_line_reads_whole_or_not_at_all() {
        let m = Machine {
            kernel: Some("6.1.0-48-amd64".into()),
            hypervisor: Some("QEMU TCG".into()),
            ..Machine::default()
        };
        let json = serde_json::to_string(&m).expect("json");
        let console = format!("lab-exit: 0\r\n  lab-machine: {json}\r\nlab-orders-begin\n");
        assert_eq!(machine_from_line(&console, "lab-machine: "), Some(m));
        let cut = format!("lab-machine: {}\n", &json[..json.len() / 2]);
        assert_eq!(machine_from_line(&cut, "lab-machine: "), None);
        assert_eq!(machine_from_line("lab-machine: \n", "lab-machine: "), None);
        assert_eq!(machine_from_line("", "lab-machine: "), None);
    }

    #[test]
    fn a_manifest_round_trips_and_a_bad_one_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(Manifest::read(dir.path()).expect("none yet"), None);
        let m = Manifest::now(&Env::workspace().root);
        m.write(dir.path()).expect("write");
        assert_eq!(Manifest::read(dir.path()).expect("read"), Some(m.clone()));
        assert!(m.machine.kernel.is_some() && !m.command.is_empty());
        assert!(m.summary().contains("code "));
        fs::write(dir.path().join(FILE), "{\"format\": 1").expect("write");
        m.write(dir.path()).expect("write");
        let guest = Machine {
            kernel: Some("guest".into()),
            ..Machine::default()
        };
        record_strategy_machine(dir.path(), guest.clone(), true).expect("first");
        let other = Machine {
            kernel: Some("second".into()),
            ..Machine::default()
        };
        record_strategy_machine(dir.path(), other.clone(), true).expect("not replaced");
        let back = Manifest::read(dir.path()).expect("read").expect("there");
        assert_eq!(back.strategy_machine, Some(guest));
        record_strategy_machine(dir.path(), other.clone(), false).expect("replaced");
        let back = Manifest::read(dir.path()).expect("read").expect("there");
        assert_eq!(back.strategy_machine, Some(other));
        fs::write(dir.path().join(FILE), "{\"format\": 1").expect("write");
        let e = Manifest::read(dir.path()).expect_err("a torn manifest");
        assert!(format!("{e:#}").contains("not a results manifest"), "{e:#}");
    }
}
