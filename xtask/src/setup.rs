//! `cargo xtask setup`: installs what the project needs, idempotently.
//!
//! Each group checks first (dpkg status, rustup component list, binaries on PATH) and only
//! installs what is missing, printing what it installs and why. Needs root for apt.

use std::process::Command;

use anyhow::{bail, Context, Result};

/// Which groups to install.
#[derive(clap::Args, Default)]
pub struct SetupArgs {
    /// Also the eBPF toolchain (nightly rust-src, bpf-linker) for `build-ebpf`.
    #[arg(long)]
    pub ebpf: bool,
    /// Also what the QEMU lab needs (qemu-system-x86, a guest kernel, busybox-static, musl).
    #[arg(long)]
    pub vm: bool,
}

/// Packages every lab and test command needs.
const BASE: &[(&str, &str)] = &[
    (
        "iproute2",
        "ip netns / veth for the namespace lab and tests",
    ),
    ("ethtool", "NIC offload settings and statistics"),
    ("procps", "sysctl and ps for the lab"),
];

fn missing_packages(pkgs: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    pkgs.iter()
        .copied()
        .filter(|(p, _)| {
            let out = Command::new("dpkg-query").args(["-W", "-f=${Status}", p]).output();
            !matches!(out, Ok(o) if String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        })
        .collect()
}

/// Installs the Debian packages that are missing.
pub fn apt_install(pkgs: &[(&'static str, &'static str)]) -> Result<()> {
    let missing = missing_packages(pkgs);
    if missing.is_empty() {
        return Ok(());
    }
    for (p, why) in &missing {
        println!("setup: installing {p} ({why})");
    }
    if !netlab::is_root() {
        bail!(
            "these packages are missing and installing them needs root: {:?}",
            missing.iter().map(|m| m.0).collect::<Vec<_>>()
        );
    }
    let names: Vec<&str> = missing.iter().map(|m| m.0).collect();
    let env = [("DEBIAN_FRONTEND", "noninteractive")];
    let run = |args: &[&str]| -> Result<bool> {
        Ok(Command::new("apt-get")
            .args(args)
            .envs(env)
            .status()
            .context("running apt-get")?
            .success())
    };
    let mut args = vec!["install", "-y", "--no-install-recommends", "-q"];
    args.extend(&names);
    if !run(&args)? {
        println!("setup: apt-get install failed; refreshing the package lists and retrying");
        if !run(&["update", "-q"])? || !run(&args)? {
            bail!("apt-get install {} failed", names.join(" "));
        }
    }
    Ok(())
}

/// Runs the setup.
pub fn run(a: &SetupArgs) -> Result<()> {
    apt_install(BASE)?;
    if a.ebpf {
        bail!("--ebpf: the eBPF toolchain is not part of this build yet (see the AF_XDP issue)");
    }
    if a.vm {
        bail!("--vm: the QEMU lab is not part of this build yet");
    }
    println!("setup: base requirements present");
    Ok(())
}
