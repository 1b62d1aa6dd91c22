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
    /// Also what the QEMU lab needs (qemu-system-x86, a guest kernel, busybox-static), and a
    /// newer Debian kernel for the guest, unpacked under target/ (AF_XDP zero copy on
    /// virtio-net; `lab --vm --guest-kernel fetched`).
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
    (
        "libcap2-bin",
        "setcap: the least-privilege test runs the strategy without root",
    ),
    (
        "util-linux",
        "setpriv: starts that test's strategy as nobody",
    ),
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
    (
        "xz-utils",
        "unpacking compressed kernel modules and the guest kernel (direct boot)",
    ),
    (
        "zstd",
        "unpacking compressed kernel modules and the guest kernel (direct boot)",
    ),
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

/// Where the backports suite is added and pinned.
const BACKPORTS_SOURCES: &str = "/etc/apt/sources.list.d/nic-lab-backports.sources";
const BACKPORTS_PIN: &str = "/etc/apt/preferences.d/nic-lab-backports";

/// The Debian mirror this machine already uses (the first `URIs:` of the deb822 sources, or
/// the first `deb` line of sources.list), so that backports come from the same archive.
fn debian_mirror() -> String {
    let deb822 =
        std::fs::read_to_string("/etc/apt/sources.list.d/debian.sources").unwrap_or_default();
    let from_deb822 = deb822
        .lines()
        .filter_map(|l| l.strip_prefix("URIs:"))
        .map(str::trim)
        .find(|u| u.contains("debian") && !u.contains("security"));
    let list = std::fs::read_to_string("/etc/apt/sources.list").unwrap_or_default();
    let from_list = list
        .lines()
        .filter(|l| l.starts_with("deb "))
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with("http")))
        .find(|u| !u.contains("security"));
    from_deb822
        .or(from_list)
        .unwrap_or("http://deb.debian.org/debian")
        .to_owned()
}

/// igb (the users' NIC) needs QEMU >= 8; Debian 12 has 7.2. On bookworm, adds Debian's own
/// `bookworm-backports` suite from the machine's mirror, pinned at priority 100 (nothing
/// comes from it unless asked for), and installs qemu-system-x86 (10.0) and what it needs
/// from it. Does nothing when this QEMU already has igb.
fn qemu_with_igb() -> Result<()> {
    if qemu_has_device("igb") {
        return Ok(());
    }
    let os = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    let codename = os
        .lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .unwrap_or("")
        .trim_matches('"')
        .to_owned();
    if codename != "bookworm" {
        println!(
            "setup: this QEMU has no igb device (QEMU >= 8 needed); on `{codename}` install a newer qemu-system-x86 by hand (`--nic igb` stays unavailable)"
        );
        return Ok(());
    }
    if !netlab::is_root() {
        bail!("installing QEMU from bookworm-backports (for igb) needs root");
    }
    let mirror = debian_mirror();
    println!(
        "setup: installing qemu-system-x86 from Debian's bookworm-backports ({mirror}; pinned: only QEMU and what it needs come from it) for the igb NIC (QEMU >= 8)"
    );
    std::fs::write(
        BACKPORTS_SOURCES,
        format!(
            "# Added by `cargo xtask setup --vm` (nic-lab): QEMU >= 8 for the igb NIC.\n\
             Types: deb\nURIs: {mirror}\nSuites: bookworm-backports\nComponents: main\n\
             Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
        ),
    )
    .with_context(|| format!("writing {BACKPORTS_SOURCES}"))?;
    std::fs::write(
        BACKPORTS_PIN,
        "# Added by `cargo xtask setup --vm` (nic-lab): nothing from backports unless asked.\n\
         Package: *\nPin: release n=bookworm-backports\nPin-Priority: 100\n",
    )
    .with_context(|| format!("writing {BACKPORTS_PIN}"))?;
    let env = [("DEBIAN_FRONTEND", "noninteractive")];
    let apt = |args: &[&str]| -> Result<()> {
        let ok = Command::new("apt-get")
            .args(args)
            .envs(env)
            .status()
            .context("running apt-get")?
            .success();
        if !ok {
            bail!("apt-get {} failed", args.join(" "));
        }
        Ok(())
    };
    apt(&["update", "-q"])?;
    apt(&[
        "install",
        "-y",
        "-q",
        "--no-install-recommends",
        "-t",
        "bookworm-backports",
        "qemu-system-x86",
    ])?;
    if !qemu_has_device("igb") {
        bail!("qemu-system-x86 from bookworm-backports installed, but it has no igb device");
    }
    println!(
        "setup: QEMU with igb installed ({})",
        output("qemu-system-x86_64", &["--version"])?
            .lines()
            .next()
            .unwrap_or("")
    );
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
        vm_packages()?;
        fetch_guest_kernel();
        println!("setup: QEMU lab requirements present");
    }
    println!("setup: base requirements present");
    Ok(())
}

/// The VM lab's packages: QEMU (from backports for igb), busybox, the tools the initramfs
/// copies.
pub fn vm_packages() -> Result<()> {
    apt_install(VM)?;
    qemu_with_igb()
}

/// The newer guest kernel for AF_XDP zero copy, fetched into `target/` once. Not fatal: the
/// VM lab runs on the installed kernel without it (only `--guest-kernel fetched` and the VM
/// test's zero-copy guests need it). Network-bound: the test command runs it beside the
/// builds.
pub fn fetch_guest_kernel() {
    if std::path::Path::new("/usr/share/keyrings/debian-archive-keyring.gpg").exists() {
        if let Err(e) = crate::guest_kernel::ensure(&crate::root(), &debian_mirror()) {
            println!("setup: no zero-copy guest kernel ({e:#}): `lab --vm --guest-kernel fetched` is unavailable");
        }
    } else {
        println!(
            "setup: not Debian (no debian-archive-keyring): no zero-copy guest kernel fetched"
        );
    }
}

/// Runs a command and returns its stdout, failing with its stderr.
pub(crate) fn output<S: AsRef<std::ffi::OsStr>>(program: &str, args: &[S]) -> Result<String> {
    let o = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    if !o.status.success() {
        let shown: Vec<_> = args
            .iter()
            .map(|a| a.as_ref().to_string_lossy().into_owned())
            .collect();
        bail!(
            "`{program} {}` failed: {}",
            shown.join(" "),
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&o.stdout).trim().to_owned())
}

/// Does this QEMU emulate `dev` (`-device help` lists it)?
fn qemu_has_device(dev: &str) -> bool {
    Command::new("qemu-system-x86_64")
        .args(["-device", "help"])
        .output()
        .map(|o| {
            let quoted = format!("\"{dev}\"");
            String::from_utf8_lossy(&o.stdout).contains(&quoted)
                || String::from_utf8_lossy(&o.stderr).contains(&quoted)
        })
        .unwrap_or(false)
}
