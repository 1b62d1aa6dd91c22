//! The guest's boot files: the kernel (the newest /boot/vmlinuz-* or `--guest-kernel`) and an
//! initramfs written here as a newc cpio: busybox-static, the NIC's modules and their
//! dependencies (`modprobe --show-depends` on the guest kernel's modules.dep), the strategy
//! with the shared libraries `ldd` lists, and `lab/vm/guest-init.sh` as /init.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::VmConfig;
use crate::Env;

/// The guest's /init (a shell script run by busybox).
const GUEST_INIT: &[u8] = include_bytes!("../../vm/guest-init.sh");

/// The newest /boot/vmlinuz-* and its version.
pub fn guest_kernel(v: &VmConfig) -> Result<(PathBuf, String)> {
    let path = match &v.guest_kernel {
        Some(p) => p.clone(),
        None => {
            let mut ks: Vec<PathBuf> = fs::read_dir("/boot")
                .context("/boot")?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
                })
                .collect();
            ks.sort();
            ks.pop().context("no /boot/vmlinuz-*: install linux-image-amd64 (cargo xtask setup --vm) or pass --guest-kernel")?
        }
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let kver = name.trim_start_matches("vmlinuz-").to_owned();
    Ok((path, kver))
}

/// newc cpio writer.
struct Cpio {
    out: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        self.ino += 1;
        let namesize = name.len() + 1;
        let header =
            format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            self.ino, mode, 0, 0, 1, 0, data.len(), 0, 0, rdev.0, rdev.1, namesize, 0
        );
        self.out.extend_from_slice(header.as_bytes());
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
        self.out.extend_from_slice(data);
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }
    fn dir(&mut self, name: &str) {
        self.entry(name, 0o040755, (0, 0), &[]);
    }
    fn file(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.entry(name, 0o100000 | mode, (0, 0), data);
    }
    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        self.out
    }
}

/// Kernel module names each NIC model needs.
fn nic_modules(nic: &str) -> &'static [&'static str] {
    match nic {
        "virtio" => &["virtio_pci", "virtio_net"],
        "e1000e" => &["e1000e"],
        _ => &["igb"],
    }
}

/// The module files, in load order, decompressed.
fn modules(kver: &str, nics: &[String]) -> Result<Vec<(String, Vec<u8>)>> {
    let mut seen = Vec::new();
    let mut out = Vec::new();
    for nic in nics {
        for m in nic_modules(nic) {
            let deps = crate::process::output("modprobe", &["-S", kver, "--show-depends", m])
                .with_context(|| format!("module {m} for {kver}"))?;
            for line in deps.lines() {
                let Some(path) = line
                    .strip_prefix("insmod ")
                    .map(|l| l.split_whitespace().next().unwrap_or(""))
                else {
                    continue;
                };
                if path.is_empty() || seen.contains(&path.to_owned()) {
                    continue;
                }
                seen.push(path.to_owned());
                let data = if path.ends_with(".xz") {
                    Command::new("xz").args(["-dc", path]).output()?.stdout
                } else if path.ends_with(".zst") {
                    Command::new("zstd").args(["-dcq", path]).output()?.stdout
                } else {
                    fs::read(path)?
                };
                if data.is_empty() {
                    bail!("could not read module {path}");
                }
                let base = Path::new(path)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let base = base
                    .trim_end_matches(".xz")
                    .trim_end_matches(".zst")
                    .to_owned();
                out.push((format!("{:02}-{base}", out.len()), data));
            }
        }
    }
    Ok(out)
}

/// Shared libraries of a binary (ldd), as (path in the guest, host path).
fn shared_libs(bin: &Path) -> Result<Vec<String>> {
    let text = crate::process::output("ldd", &[&bin.to_string_lossy()])?;
    let mut libs = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next().unwrap_or(""),
            None => line.split_whitespace().next().unwrap_or(""),
        };
        if path.starts_with('/') {
            libs.push(path.to_owned());
        }
    }
    Ok(libs)
}

/// The strategy as the guest gets it: without its debug sections (`strip --strip-debug`:
/// the symbols stay, so a backtrace still names functions), about a sixth of the release
/// binary's size (38.3 -> 6.4 MB measured), which every boot copies and the guest kernel
/// unpacks under emulation. The full binary if `strip` (binutils, with the C compiler)
/// fails, saying so.
fn guest_binary(bin: &Path, initrd: &Path) -> Result<Vec<u8>> {
    let stripped = initrd.with_extension("strategy");
    let st = Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(&stripped)
        .arg(bin)
        .status();
    let data = match st {
        Ok(s) if s.success() => fs::read(&stripped)?,
        other => {
            eprintln!(
                "guest: `strip --strip-debug` failed ({other:?}): the strategy goes in with its debug info"
            );
            fs::read(bin).with_context(|| format!("{} (build it first)", bin.display()))?
        }
    };
    let _ = fs::remove_file(&stripped);
    Ok(data)
}

/// Builds the initramfs: busybox, /init, the strategy and its libraries, the NIC modules.
pub fn initramfs(
    env: &Env,
    out: &Path,
    kver: &str,
    nics: &[String],
    tunes: &[super::tune::Tune],
) -> Result<()> {
    let mut c = Cpio {
        out: Vec::new(),
        ino: 0,
    };
    for d in [
        "bin",
        "dev",
        "proc",
        "sys",
        "tmp",
        "modules",
        "lib",
        "lib64",
        "usr",
        "usr/lib",
        "lib/x86_64-linux-gnu",
        "usr/lib/x86_64-linux-gnu",
        "sbin",
        "tune",
    ] {
        c.dir(d);
    }
    c.entry("dev/console", 0o020600, (5, 1), &[]);
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .context("busybox-static missing (cargo xtask setup --vm)")?;
    c.file("bin/busybox", 0o755, &fs::read(busybox)?);
    c.file("init", 0o755, GUEST_INIT);
    let strategy = env.bin("strategy");
    c.file("strategy", 0o755, &guest_binary(&strategy, out)?);
    let mut libs = shared_libs(&strategy)?;
    // ethtool for the tuning variants (coalescing, offloads) and their read-back.
    let ethtool = Path::new("/usr/sbin/ethtool");
    if ethtool.exists() {
        c.file("sbin/ethtool", 0o755, &fs::read(ethtool)?);
        libs.extend(shared_libs(ethtool)?);
    }
    libs.sort();
    libs.dedup();
    for lib in libs {
        let data = fs::read(&lib).with_context(|| lib.clone())?;
        c.file(lib.trim_start_matches('/'), 0o755, &data);
    }
    for t in tunes {
        c.file(&format!("tune/{}.sh", t.name), 0o644, t.script().as_bytes());
    }
    for (name, data) in modules(kver, nics)? {
        c.file(&format!("modules/{name}"), 0o644, &data);
    }
    fs::write(out, c.finish())?;
    Ok(())
}
