//! `lab --remote` against a real OpenSSH server: Debian's `sshd` in the strategy's network
//! namespace plays the second machine, reached over the veth from the exchange's namespace
//! with keys made for this run (removed with its temporary folder). Every path's orders
//! equal the oracle's, the kernel path's wire stamps (`kernel+wire`: the strategy's own
//! wire to wire, measured on the remote box) come back, and nothing is left behind: no strategy process, no remote folder,
//! no XDP program on the remote interface. Ignored by a plain `cargo test` (root, the
//! release binaries, sshd); `cargo xtask test` runs it.

mod common;

use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use common::test_lab;
use lab::remote::{Here, RemoteConfig};
use lab::{Env, LabConfig};
use netlab::VethLab;

const SSHD: &str = "/usr/sbin/sshd";

fn keygen(path: &Path) -> Result<()> {
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .status()?;
    ensure!(st.success(), "ssh-keygen failed");
    Ok(())
}

/// `sshd` in `ns`, listening on 10.77.0.2:22 with its own keys; killed on drop.
struct Sshd(std::process::Child);

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_sshd(lab: &VethLab, dir: &Path) -> Result<Sshd> {
    keygen(&dir.join("host_key"))?;
    keygen(&dir.join("id"))?;
    std::fs::copy(dir.join("id.pub"), dir.join("authorized_keys"))?;
    let config = dir.join("sshd_config");
    std::fs::write(
        &config,
        format!(
            "ListenAddress {}\nPort 22\nHostKey {d}/host_key\nAuthorizedKeysFile {d}/authorized_keys\n\
             PidFile {d}/sshd.pid\nStrictModes no\nPermitRootLogin prohibit-password\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n",
            VethLab::STRATEGY_ADDR,
            d = dir.display()
        ),
    )?;
    // sshd's privilege-separation directory.
    std::fs::create_dir_all("/run/sshd")?;
    let child = lab
        .strategy
        .command(SSHD)
        .args(["-D", "-e", "-f"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("sshd.log"))?)
        .spawn()
        .context("starting sshd")?;
    let sshd = Sshd(child);
    // Wait for it to listen (from the exchange's side, as the lab will connect).
    let t0 = Instant::now();
    loop {
        let up = lab
            .exchange
            .spawn(|| TcpStream::connect((VethLab::STRATEGY_ADDR, 22)).is_ok())?
            .join()
            .map_err(|_| anyhow::anyhow!("probe thread"))?;
        if up {
            return Ok(sshd);
        }
        ensure!(
            t0.elapsed() < Duration::from_secs(10),
            "sshd did not listen: {}",
            std::fs::read_to_string(dir.join("sshd.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
#[ignore = "needs root, the release binaries and sshd: cargo xtask test runs it"]
fn a_lab_run_over_ssh_equals_the_oracle_and_leaves_nothing() -> Result<()> {
    if let Some(why) = common::cannot_run() {
        eprintln!("skipped: {why}");
        return Ok(());
    }
    if !Path::new(SSHD).exists() {
        eprintln!("skipped: no {SSHD} (cargo xtask test installs openssh-server)");
        return Ok(());
    }
    let keys = tempfile::tempdir()?;
    let lab = VethLab::new("rmt")?;
    let _sshd = start_sshd(&lab, keys.path())?;
    let env = Env::workspace();
    let dir = env.results_root().join("remote-test");
    let _ = std::fs::remove_dir_all(&dir);
    let cfg = LabConfig {
        order_gaps: vec![Duration::from_millis(1)],
        orders_per_gap: 20,
        ..test_lab(
            &[
                "kernel+wire",
                "uring+defer+inline",
                "xdp",
                "packet",
                "xdp-tx",
            ],
            None,
            dir.clone(),
            "rate:5000",
        )
    };
    let remote = RemoteConfig {
        target: format!("root@{}", VethLab::STRATEGY_ADDR),
        ssh_options: vec![
            "-i".into(),
            keys.path().join("id").display().to_string(),
            "-o".into(),
            "UserKnownHostsFile=/dev/null".into(),
            "-o".into(),
            "StrictHostKeyChecking=no".into(),
            "-o".into(),
            "LogLevel=ERROR".into(),
        ],
        remote_iface: VethLab::STRATEGY_IF.into(),
        local_iface: VethLab::EXCHANGE_IF.into(),
        remote_addr: VethLab::STRATEGY_ADDR,
        packet_ip: Some(VethLab::STRATEGY_OWN_IP),
        remote_cpu: Some(1),
        local_cpu: Some(0),
    };
    let (out, runs) = lab::remote::run(&env, &cfg, &remote, Here(Some(&lab.exchange)))?;
    ensure!(runs.len() == 5, "every path ran: {}", runs.len());
    for r in &runs {
        ensure!(
            r.orders_match && r.orders_received == r.orders_expected && r.orders_expected > 0,
            "{}: the exchange got the oracle's orders",
            r.key
        );
        ensure!(
            r.accounting.is_some_and(|a| a.balanced),
            "{}: every packet accounted for",
            r.key
        );
        // The strategy's own wire to wire comes back from the remote box with its rows.
        let wire = r.stages.as_ref().and_then(|s| s.wire_kernel_us);
        ensure!(
            wire.is_some() == r.key.path.has(strategy::spec::Variant::Wire),
            "{}: the strategy's wire stamps {wire:?}",
            r.key
        );
    }
    ensure!(
        out.join("probe-remote.txt").exists(),
        "the remote probe kept"
    );
    ensure!(out.join("report.html").exists(), "the report written");
    // The remote host's machine, read there and typed, in the folder's manifest beside the
    // lab's (here the same box: a namespace).
    let m = lab::manifest::Manifest::read(&out)?.context("manifest.json")?;
    let theirs = m.strategy_machine.as_ref().context("the remote machine")?;
    ensure!(
        theirs.kernel.is_some() && theirs.kernel == m.machine.kernel,
        "the remote machine read over SSH: {theirs:?}"
    );
    nothing_left(&lab)?;
    // A run that fails there (no such interface) is an error here, and leaves nothing.
    let bad = RemoteConfig {
        remote_iface: "nosuch0".into(),
        ..remote
    };
    let failed = lab::remote::run(
        &env,
        &LabConfig {
            paths: vec!["kernel".parse()?],
            results_dir: Some(dir.join("failed")),
            ..cfg
        },
        &bad,
        Here(Some(&lab.exchange)),
    );
    ensure!(failed.is_err(), "a failing remote strategy fails the run");
    nothing_left(&lab)
}

/// No remote folder, no remote strategy, no XDP program on the remote interface.
fn nothing_left(lab: &VethLab) -> Result<()> {
    let left = std::fs::read_dir("/tmp")?
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("nic-lab-{}-", std::process::id()))
        })
        .count();
    ensure!(left == 0, "the remote folder removed");
    let procs = Command::new("pgrep")
        .args(["-af", &format!("[/]tmp/nic-lab-{}-", std::process::id())])
        .output()?;
    ensure!(
        procs.stdout.is_empty(),
        "no remote strategy left: {}",
        String::from_utf8_lossy(&procs.stdout)
    );
    let link = lab
        .strategy
        .exec(&["ip", "link", "show", "dev", VethLab::STRATEGY_IF])?;
    ensure!(!link.contains("xdp"), "no XDP program left: {link}");
    Ok(())
}
