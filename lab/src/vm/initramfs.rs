//! The guest's boot files: the kernel (the newest /boot/vmlinuz-* or `--guest-kernel`) and an
//! initramfs written here as a newc cpio: busybox-static, the NIC's modules and their
//! dependencies (`modprobe --show-depends` on the guest kernel's modules.dep), the strategy
//! with the shared libraries `ldd` lists, and `lab/vm/guest-init.sh` as /init.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::{KernelChoice, VmConfig};
use crate::Env;

/// The guest's /init (a shell script run by busybox).
const GUEST_INIT: &[u8] = include_bytes!("../../vm/guest-init.sh");

/// The guest's kernel: its image, its version and the root its modules live under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestKernel {
    /// The bzImage (`.../boot/vmlinuz-<kver>`).
    pub image: PathBuf,
    /// The version, from the image's name.
    pub kver: String,
    /// The root of `lib/modules/<kver>` (`/` for an installed kernel; the unpacked
    /// package's root for one under `target/lab-data/guest-kernels/`): `modprobe -d`.
    pub modules_root: PathBuf,
}

impl GuestKernel {
    /// The kernel at `image`: its version from the name `vmlinuz-<kver>`, its modules under
    /// the directory above its `boot/` (so an unpacked `linux-image` package works as it
    /// is), else under `/`.
    pub fn at(image: &Path) -> Result<Self> {
        let name = image
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let Some(kver) = name.strip_prefix("vmlinuz-").filter(|k| !k.is_empty()) else {
            bail!(
                "{}: a guest kernel is named vmlinuz-<version> (the version finds its modules)",
                image.display()
            );
        };
        let root = image
            .parent()
            .filter(|d| d.file_name().is_some_and(|n| n == "boot"))
            .and_then(Path::parent)
            .filter(|r| !r.as_os_str().is_empty())
            .unwrap_or(Path::new("/"));
        let dep = |r: &Path| r.join("lib/modules").join(kver).join("modules.dep");
        let modules_root = if dep(root).exists() {
            root.to_path_buf()
        } else {
            PathBuf::from("/")
        };
        if !dep(&modules_root).exists() {
            let beside = if root == Path::new("/") {
                String::new()
            } else {
                format!("{} or ", root.display())
            };
            bail!(
                "{}: no lib/modules/{kver}/modules.dep under {beside}/ (an unpacked package needs `depmod -b ROOT {kver}`; `cargo xtask setup --vm` fetches one ready)",
                image.display()
            );
        }
        Ok(Self {
            image: image.to_path_buf(),
            kver: kver.to_owned(),
            modules_root,
        })
    }
}

/// The newest `vmlinuz-*` in `dir`.
fn newest_image(dir: &Path) -> Option<PathBuf> {
    let mut ks: Vec<PathBuf> = fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .collect();
    ks.sort();
    ks.pop()
}

/// The leading `a.b.c` of a `vmlinuz-a.b.c...` as numbers (7.10 after 7.3).
fn version_key(image: &Path) -> Vec<u64> {
    let name = image
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    name.trim_start_matches("vmlinuz-")
        .split(|c: char| !c.is_ascii_digit())
        .take(3)
        .map(|n| n.parse().unwrap_or(0))
        .collect()
}

/// `--guest-kernel`: a path, `fetched` (the kernel `cargo xtask setup --vm` unpacked under
/// `<data>/guest-kernels/`), or by default the newest /boot/vmlinuz-*.
pub fn guest_kernel(v: &VmConfig, data_dir: &Path) -> Result<GuestKernel> {
    let path = match &v.guest_kernel {
        KernelChoice::Fetched => {
            let dir = data_dir.join("guest-kernels");
            let mut ks: Vec<PathBuf> = fs::read_dir(&dir)
                .into_iter()
                .flatten()
                .filter_map(|e| newest_image(&e.ok()?.path().join("boot")))
                .collect();
            ks.sort_by_key(|k| version_key(k));
            ks.pop().with_context(|| format!("--guest-kernel fetched: no kernel under {} (cargo xtask setup --vm fetches one)", dir.display()))?
        }
        KernelChoice::Path(p) => p.clone(),
        KernelChoice::Installed => newest_image(Path::new("/boot")).context("no /boot/vmlinuz-*: install linux-image-amd64 (cargo xtask setup --vm) or pass --guest-kernel")?,
    };
    GuestKernel::at(&path)
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
fn modules(k: &GuestKernel, nics: &[String]) -> Result<Vec<(String, Vec<u8>)>> {
    let (kver, root) = (k.kver.as_str(), k.modules_root.to_string_lossy());
    let mut seen = Vec::new();
    let mut out = Vec::new();
    for nic in nics {
        for m in nic_modules(nic) {
            let deps =
                crate::process::output("modprobe", &["-d", &root, "-S", kver, "--show-depends", m])
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
    kernel: &GuestKernel,
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
    for (name, data) in modules(kernel, nics)? {
        c.file(&format!("modules/{name}"), 0o644, &data);
    }
    fs::write(out, c.finish())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unpacked(kver: &str, with_dep: bool) -> tempfile::TempDir {
        let t = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(t.path().join("boot")).expect("boot");
        fs::write(t.path().join(format!("boot/vmlinuz-{kver}")), b"image").expect("image");
        if with_dep {
            let m = t.path().join("lib/modules").join(kver);
            fs::create_dir_all(&m).expect("modules");
            fs::write(m.join("modules.dep"), b"").expect("modules.dep");
        }
        t
    }

    #[test]
    fn an_unpacked_kernel_takes_its_modules_from_beside_its_boot() {
        let t = unpacked("9.9.9-lab", true);
        let k = GuestKernel::at(&t.path().join("boot/vmlinuz-9.9.9-lab")).expect("kernel");
        assert_eq!(k.kver, "9.9.9-lab");
        assert_eq!(k.modules_root, t.path());
        assert_eq!(k.image, t.path().join("boot/vmlinuz-9.9.9-lab"));
    }

    #[test]
    fn a_kernel_without_modules_anywhere_is_refused_with_the_remedy() {
        let t = unpacked("9.9.9-nomodules", false);
        let e = GuestKernel::at(&t.path().join("boot/vmlinuz-9.9.9-nomodules"))
            .expect_err("no modules.dep under the root or /");
        assert!(format!("{e:#}").contains("depmod"), "{e:#}");
        let e = GuestKernel::at(&t.path().join("boot/bzImage")).expect_err("not vmlinuz-*");
        assert!(format!("{e:#}").contains("vmlinuz-<version>"), "{e:#}");
    }

    #[test]
    fn fetched_takes_the_newest_unpacked_kernel() {
        let data = tempfile::tempdir().expect("tempdir");
        for kver in ["7.3.4-a", "7.10.1-b"] {
            let root = data.path().join("guest-kernels").join(kver);
            fs::create_dir_all(root.join("boot")).expect("boot");
            fs::write(root.join(format!("boot/vmlinuz-{kver}")), b"image").expect("image");
            let m = root.join("lib/modules").join(kver);
            fs::create_dir_all(&m).expect("modules");
            fs::write(m.join("modules.dep"), b"").expect("modules.dep");
        }
        let v = VmConfig {
            guest_kernel: KernelChoice::Fetched,
            ..VmConfig::default()
        };
        let k = guest_kernel(&v, data.path()).expect("fetched");
        // By version, not as text (where "7.3.4" sorts after "7.10.1").
        assert_eq!(k.kver, "7.10.1-b");
        assert_eq!(
            k.modules_root,
            data.path().join("guest-kernels").join(&k.kver)
        );
        let empty = tempfile::tempdir().expect("tempdir");
        let e = guest_kernel(&v, empty.path()).expect_err("nothing fetched");
        assert!(format!("{e:#}").contains("setup --vm"), "{e:#}");
    }
}
