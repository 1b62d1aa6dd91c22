//! `lab --remote USER@HOST`: the strategy on a second machine, driven over OpenSSH; the
//! exchange here.
//!
//! The lab copies its strategy binary (the XDP program is inside it) into a fresh
//! directory on the remote host (`/tmp/nic-lab-<pid>-<ns>`), keeps `strategy probe` from
//! there, and for each path and run starts the exchange here (on `--local-iface`, giving a
//! session only to the remote's addresses) and the strategy there through `ssh`, pinned as
//! asked; then it copies back the strategy's report, order rows and log, and checks and
//! reports the run as the namespace lab does (the oracle, every packet accounted for).
//! Nothing is installed on the remote host; `ssh` runs with `BatchMode` (keys, no
//! prompts). On exit, error or Ctrl-C ([`RemoteHost`]'s drop) the remote strategy gets
//! SIGINT (it detaches its XDP program and writes its results), then SIGKILL if it is still
//! there, and the directory is removed; after every run the remote interface is checked
//! for a program left attached.

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use netlab::Netns;

use crate::key::RunKey;
use crate::process::Proc;
use crate::{data, Env, LabConfig, RunResult};

/// Where the strategy runs and how to reach it.
#[derive(Debug, Clone)]
pub struct RemoteConfig {
    /// `USER@HOST`, as `ssh` takes it.
    pub target: String,
    /// Extra `ssh` options (`-i KEY`, `-p PORT`, `-o ...`).
    pub ssh_options: Vec<String>,
    /// The strategy's interface there.
    pub remote_iface: String,
    /// The exchange's interface here (its IPv4 address is the exchange's).
    pub local_iface: String,
    /// The remote's address as the exchange sees it: the peer it gives a session.
    pub remote_addr: Ipv4Addr,
    /// AF_PACKET's own address on the remote's link (`strategy run --packet-ip`; also
    /// allowed as a peer), needed by the `packet` paths.
    pub packet_ip: Option<Ipv4Addr>,
    /// The CPU the strategy is pinned to there.
    pub remote_cpu: Option<u32>,
    /// The CPU the exchange is pinned to here.
    pub local_cpu: Option<u32>,
}

/// Where "here" is: this process's network namespace, or one the tests made.
#[derive(Clone, Copy)]
pub struct Here<'a>(pub Option<&'a Netns>);

impl Here<'_> {
    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        match self.0 {
            Some(ns) => ns.command(program),
            None => Command::new(program),
        }
    }

    /// The first IPv4 address of `iface` here.
    fn ipv4(&self, iface: &str) -> Result<Ipv4Addr> {
        let out = self
            .command("ip")
            .args(["-4", "-o", "addr", "show", "dev", iface])
            .output()
            .context("running ip")?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.split_whitespace()
            .skip_while(|w| *w != "inet")
            .nth(1)
            .and_then(|a| a.split('/').next()?.parse().ok())
            .with_context(|| format!("--local-iface {iface}: no IPv4 address here"))
    }
}

/// `s` as one word for the remote shell.
fn quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=,+@".contains(&b))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The lab's directory on the remote host, removed (and its strategy stopped) on drop.
pub struct RemoteHost<'a> {
    cfg: &'a RemoteConfig,
    here: Here<'a>,
    dir: String,
}

impl<'a> RemoteHost<'a> {
    /// Checks the connection and makes the directory.
    pub fn open(cfg: &'a RemoteConfig, here: Here<'a>) -> Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let host = Self {
            cfg,
            here,
            dir: format!("/tmp/nic-lab-{}-{nanos}", std::process::id()),
        };
        host.run(&format!("mkdir -p {}", host.dir))
            .with_context(|| format!("ssh {}: cannot reach the remote host", cfg.target))?;
        Ok(host)
    }

    /// The remote directory.
    pub fn dir(&self) -> &str {
        &self.dir
    }

    /// `ssh` running `script` there.
    fn ssh(&self, script: &str) -> Command {
        let mut c = self.here.command("ssh");
        c.args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=10"])
            .args(&self.cfg.ssh_options)
            .arg(&self.cfg.target)
            .arg("--")
            .arg(script);
        c
    }

    /// Runs `script` there and returns its output; fails with its error output.
    pub fn run(&self, script: &str) -> Result<String> {
        let o = self
            .ssh(script)
            .stdin(Stdio::null())
            .output()
            .context("running ssh")?;
        if !o.status.success() {
            bail!(
                "ssh {} `{script}`: {}",
                self.cfg.target,
                String::from_utf8_lossy(&o.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    }

    /// Copies `local` to `name` in the remote directory, executable.
    pub fn put(&self, local: &Path, name: &str) -> Result<()> {
        let f = fs::File::open(local).with_context(|| local.display().to_string())?;
        let st = self
            .ssh(&format!(
                "cat > {0}/{name} && chmod 755 {0}/{name}",
                self.dir
            ))
            .stdin(f)
            .status()
            .context("running ssh")?;
        if !st.success() {
            bail!("copying {} to {}: {st}", local.display(), self.cfg.target);
        }
        Ok(())
    }

    /// Copies `name` from the remote directory to `local`.
    pub fn get(&self, name: &str, local: &Path) -> Result<()> {
        let out = fs::File::create(local).with_context(|| local.display().to_string())?;
        let st = self
            .ssh(&format!("cat {}/{name}", self.dir))
            .stdin(Stdio::null())
            .stdout(out)
            .status()
            .context("running ssh")?;
        if !st.success() {
            bail!("copying {name} back from {}: {st}", self.cfg.target);
        }
        Ok(())
    }

    /// SIGINT to the remote strategy (it detaches and writes its results), SIGKILL after a
    /// second if it is still there.
    fn stop_strategy(&self) {
        // `[/]tmp/...`: a pattern that does not match the shell running it.
        let pat = format!("[/]{}/strategy", self.dir.trim_start_matches('/'));
        let _ = self.run(&format!(
            "pkill -INT -f '{pat}'; for i in 1 2 3 4 5 6 7 8 9 10; do pgrep -f '{pat}' >/dev/null || exit 0; sleep 0.1; done; pkill -KILL -f '{pat}'; true"
        ));
    }
}

impl Drop for RemoteHost<'_> {
    fn drop(&mut self) {
        self.stop_strategy();
        let _ = self.run(&format!("rm -rf {}", self.dir));
    }
}

/// Runs every path of `a` with the strategy on the remote host; returns the results folder
/// and the runs (already reported and checked against the oracle).
pub fn run(
    env: &Env,
    a: &LabConfig,
    r: &RemoteConfig,
    here: Here<'_>,
) -> Result<(PathBuf, Vec<RunResult>)> {
    let dir = crate::results_dir(env, a, "remote-")?;
    let stop = crate::stop_flag()?;
    let ex_addr = here.ipv4(&r.local_iface)?;
    if a.paths.iter().any(|p| p.needs_own_ip()) && r.packet_ip.is_none() {
        bail!("the packet paths need their own address on the remote link: --remote-packet-ip");
    }
    let host = RemoteHost::open(r, here)?;
    println!(
        "remote: {} ({}), strategy on {} there{}; exchange here on {} ({ex_addr}){}",
        r.target,
        r.remote_addr,
        r.remote_iface,
        r.remote_cpu
            .map_or(String::new(), |c| format!(", pinned to CPU {c}")),
        r.local_iface,
        r.local_cpu
            .map_or(String::new(), |c| format!(", pinned to CPU {c}"))
    );
    host.put(&env.bin("strategy"), "strategy")?;
    match host.run(&format!(
        "{}/strategy probe --iface {}",
        host.dir(),
        quote(&r.remote_iface)
    )) {
        Ok(p) => fs::write(dir.join("probe-remote.txt"), p)?,
        Err(e) => println!("remote probe failed: {e:#}"),
    }
    // The strategy's machine, typed, in the folder's manifest beside the lab's own.
    match host
        .run(&format!("{}/strategy probe --machine", host.dir()))
        .and_then(|json| {
            serde_json::from_str::<hostsys::machine::Machine>(json.trim())
                .context("`strategy probe --machine` on the remote host")
        }) {
        Ok(m) => {
            println!("remote machine: {}", m.summary());
            crate::manifest::record_strategy_machine(&dir, m, false)?;
        }
        Err(e) => println!("the remote machine is not in manifest.json: {e:#}"),
    }
    // On a veth (the tests' two namespaces) the exchange's side needs an XDP program to
    // receive `xdp-tx`'s XDP_TX frames; a real NIC does not.
    let pass = if a.paths.iter().any(crate::PathSpec::sends_with_xdp_tx) && is_veth(here, r) {
        Some(xdp_pass(env, here, &r.local_iface, &dir)?)
    } else {
        None
    };
    let mut peers = vec![r.remote_addr];
    peers.extend(r.packet_ip);
    let heartbeats = a.paths.iter().any(crate::PathSpec::sends_heartbeats);
    let mut results = Vec::new();
    for step in crate::netns::steps(env, a)? {
        let stamp_ids = data::write_oracle_ids(&dir, &step.md_file, &step.oracle)?;
        for run in 1..=a.runs {
            for path in &a.paths {
                let key = RunKey {
                    gap: step.gap,
                    load: step.load,
                    ..RunKey::new(path.clone(), run)
                };
                let tag = key.tag();
                let file = |suffix: &str| dir.join(format!("{tag}.{suffix}"));
                let serve =
                    exchange::serve_cmd::ServeCmd::new(&step.md_file, &format!("{ex_addr}:9012"))
                        .md_iface(&r.local_iface)
                        .md_tx(a.md_tx)
                        .preload(true)
                        .stamp_ids(Some(&stamp_ids))
                        .mark_ids(path.reflects().then_some(stamp_ids.as_path()))
                        .allow_peers(&peers)
                        .sessions(1)
                        .spin(true)
                        .quiet_orders(true)
                        .pace(&step.pace)
                        .heartbeats(heartbeats)
                        .results(&file("exchange.csv"))
                        .summary(&file("exchange.jsonl"))
                        .extra(a.exchange_flags.split_whitespace());
                let mut ex = here.command("env");
                if let Some(c) = r.local_cpu {
                    ex.args(["taskset", "-c", &c.to_string()]);
                }
                ex.arg(env.bin("exchange"))
                    .args(serve.args())
                    .stdout(Stdio::null())
                    .stderr(fs::File::create(file("exchange.log"))?);
                let mut ex = Proc::spawn("exchange", &mut ex)?;
                ex.wait_for_log(
                    &file("exchange.log"),
                    exchange::serve_cmd::LISTENING,
                    Duration::from_secs(10),
                )?;
                let script = strategy_script(a, r, path, &host, ex_addr, &tag);
                let st = Proc::spawn(
                    "strategy (remote)",
                    host.ssh(&script)
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(fs::File::create(file("ssh.log"))?),
                )?;
                let waited = crate::netns::wait_pair(
                    stop,
                    Duration::from_secs(a.timeout),
                    &dir,
                    (ex, st),
                    &tag,
                );
                let _ = host.get(&format!("{tag}.log"), &file("strategy.log"));
                waited.with_context(|| format!("path {path}, run {run}"))?;
                host.get(&format!("{tag}.jsonl"), &file("strategy.jsonl"))?;
                host.get(&format!("{tag}.orders.csv"), &file("strategy-orders.csv"))?;
                let link = host.run(&format!("ip link show dev {}", quote(&r.remote_iface)))?;
                if link.contains(" xdp") || link.contains("prog/xdp") {
                    bail!(
                        "{tag}: an XDP program was left on the remote {}",
                        r.remote_iface
                    );
                }
                let files = crate::oracle::RunFiles {
                    exchange_csv: file("exchange.csv"),
                    exchange_summary: file("exchange.jsonl"),
                    strategy_report: file("strategy.jsonl"),
                    strategy_orders: file("strategy-orders.csv"),
                };
                results.push(crate::oracle::collect(
                    key,
                    step.gap,
                    &step.md_file,
                    &crate::oracle::expected(path, &step.oracle),
                    &files,
                )?);
            }
        }
    }
    drop(host);
    if let Some(p) = pass {
        p.interrupt();
    }
    crate::report::report(&dir, &results, &[])?;
    crate::check(&dir, &results)?;
    Ok((dir, results))
}

/// The remote command line of one run's strategy (its output into the remote directory).
fn strategy_script(
    a: &LabConfig,
    r: &RemoteConfig,
    path: &crate::PathSpec,
    host: &RemoteHost<'_>,
    ex_addr: Ipv4Addr,
    tag: &str,
) -> String {
    let d = host.dir();
    let mut args: Vec<String> = vec![
        "run".into(),
        "--exchange".into(),
        format!("{ex_addr}:9012"),
        "--iface".into(),
        r.remote_iface.clone(),
        "--sessions".into(),
        "1".into(),
    ];
    args.extend(path.strategy_args(a.warm_every));
    args.extend([
        "--results".into(),
        format!("{d}/{tag}.jsonl"),
        "--orders-out".into(),
        format!("{d}/{tag}.orders.csv"),
    ]);
    if let (true, Some(ip)) = (path.needs_own_ip(), r.packet_ip) {
        args.extend(["--packet-ip".into(), ip.to_string()]);
    }
    args.extend(a.strategy_flags.split_whitespace().map(str::to_owned));
    let pin = r
        .remote_cpu
        .map_or(String::new(), |c| format!("taskset -c {c} "));
    let words: Vec<String> = args.iter().map(|w| quote(w)).collect();
    format!(
        "exec {pin}{d}/strategy {} > {d}/{tag}.out 2> {d}/{tag}.log",
        words.join(" ")
    )
}

fn is_veth(here: Here<'_>, r: &RemoteConfig) -> bool {
    here.command("ethtool")
        .args(["-i", &r.local_iface])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("driver: veth"))
}

/// `strategy xdp-pass` on the exchange's interface, once it says it is attached.
fn xdp_pass(env: &Env, here: Here<'_>, iface: &str, dir: &Path) -> Result<Proc> {
    use std::io::BufRead;
    let mut c = here.command(env.bin("strategy"));
    c.args(["xdp-pass", "--iface", iface])
        .stdout(Stdio::piped())
        .stderr(fs::File::create(dir.join("xdp-pass.log"))?);
    let mut p = Proc::spawn("xdp-pass", &mut c)?;
    let mut line = String::new();
    if let Some(out) = p.child.stdout.take() {
        std::io::BufReader::new(out).read_line(&mut line)?;
    }
    if !line.contains("attached") {
        bail!("strategy xdp-pass did not attach (see xdp-pass.log)");
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_reach_the_remote_shell_as_one_word_each() {
        assert_eq!(quote("vs0"), "vs0");
        assert_eq!(quote("10.77.0.1:9012"), "10.77.0.1:9012");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("$(rm -rf /)"), "'$(rm -rf /)'");
    }
}
