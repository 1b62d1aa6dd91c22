//! `cargo xtask setup`: installs what the project needs, idempotently.
//!
//! Each group checks first (dpkg status, rustup component list, binaries on PATH) and only
//! installs what is missing, printing what it installs and why. Needs root for apt.

use std::process::Command;

use anyhow::{bail, Context, Result};
use lab::process::output;

/// Which groups to install.
#[derive(clap::Args, Default)]
pub struct SetupArgs {
    /// Also the eBPF toolchain (nightly rust-src, bpf-linker) for `build-ebpf`.
    #[arg(long)]
    pub ebpf: bool,
    /// Also what the QEMU lab needs (qemu-system-x86, a guest kernel, busybox-static).
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
    ("tcpdump", "lab --pcap captures"),
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

/// What the AF_XDP path needs: xsk-rs builds bundled libbpf/libxdp with these.
const EBPF: &[(&str, &str)] = &[
    ("clang", "compiles the bundled libbpf/libxdp of xsk-rs"),
    ("libelf-dev", "libbpf needs libelf"),
    ("zlib1g-dev", "libbpf needs zlib"),
    ("m4", "libxdp's build"),
    ("pkg-config", "finding libelf"),
];

/// What the QEMU lab needs.
const VM: &[(&str, &str)] = &[
    (
        "qemu-system-x86",
        "the emulated guest (e1000e, virtio-net; igb needs QEMU >= 8)",
    ),
    ("linux-image-amd64", "the guest kernel and its NIC modules"),
    ("busybox-static", "the guest's userland in the initramfs"),
    ("kmod", "modprobe --show-depends for the NIC modules"),
    ("xz-utils", "unpacking compressed kernel modules"),
    ("zstd", "unpacking compressed kernel modules"),
];

/// Where bpf-linker and the LLVM library link it finds live.
pub fn bpf_linker_dir() -> std::path::PathBuf {
    let home = std::env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| std::path::PathBuf::from("/root/.cargo"));
    home.join("bpf-linker-llvm")
}

/// The eBPF toolchain: nightly rust-src and bpf-linker linked against nightly's libLLVM.
fn ebpf_toolchain() -> Result<()> {
    apt_install(EBPF)?;
    let components = output(
        "rustup",
        &["component", "list", "--installed", "--toolchain", "nightly"],
    )
    .context(
        "the nightly toolchain is needed for the eBPF program (rustup toolchain install nightly)",
    )?;
    if !components.lines().any(|l| l.starts_with("rust-src")) {
        println!("setup: installing rust-src for nightly (build-std for bpfel-unknown-none)");
        crate::cmd(
            "rustup",
            &["component", "add", "rust-src", "--toolchain", "nightly"],
        )?;
    }
    let dir = bpf_linker_dir();
    let linker = dir.join("bin/bpf-linker");
    if linker.exists() {
        return Ok(());
    }
    // bpf-linker's default feature wants a system LLVM of the same major as rustc's; Debian's
    // is older. Link it against the nightly toolchain's own libLLVM instead.
    let sysroot = output("rustc", &["+nightly", "--print", "sysroot"])?;
    let libdir = std::path::Path::new(&sysroot).join("lib");
    let lib = std::fs::read_dir(&libdir)?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .find(|n| n.starts_with("libLLVM") && n.contains(".so"))
        .context("no libLLVM*.so in the nightly sysroot")?;
    let major: String = lib
        .trim_start_matches("libLLVM.so.")
        .trim_start_matches("libLLVM-")
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    if major.is_empty() {
        bail!("cannot read the LLVM version from {lib}");
    }
    println!("setup: installing bpf-linker (links the XDP program) against nightly's LLVM {major} into {}", dir.display());
    std::fs::create_dir_all(dir.join("lib"))?;
    for name in ["libLLVM.so", lib.as_str()] {
        let link = dir.join("lib").join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(libdir.join(&lib), &link)?;
    }
    let feature = format!("llvm-{major}");
    let st = Command::new("cargo")
        .args([
            "install",
            "--locked",
            "bpf-linker",
            "--no-default-features",
            "--features",
            &feature,
            "--root",
        ])
        .arg(&dir)
        .env("LLVM_PREFIX", &dir)
        .status()?;
    if !st.success() {
        bail!("installing bpf-linker failed");
    }
    Ok(())
}

/// Runs the setup.
pub fn run(a: &SetupArgs) -> Result<()> {
    apt_install(BASE)?;
    if a.ebpf {
        ebpf_toolchain()?;
        println!(
            "setup: eBPF toolchain present (bpf-linker in {})",
            bpf_linker_dir().join("bin").display()
        );
    }
    if a.vm {
        apt_install(VM)?;
        println!("setup: QEMU lab requirements present");
    }
    println!("setup: base requirements present");
    Ok(())
}
