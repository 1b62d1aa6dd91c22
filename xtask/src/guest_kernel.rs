//! `cargo xtask setup --vm`: a guest kernel with AF_XDP zero copy on virtio-net.
//!
//! Debian 12's kernel (6.1, and bookworm-backports' 6.12) binds AF_XDP on virtio-net and
//! igb in copy mode only: virtio-net advertises XSK zero copy from Linux 6.14 on. The VM lab
//! can boot a newer Debian kernel without installing it on the host: this fetches the
//! newest `linux-image-<version>+deb13-amd64` of Debian's `trixie-backports` suite, checks
//! it against the archive's signature (InRelease by `gpgv` with the machine's
//! debian-archive-keyring, then the SHA-256 of the package index and of the package),
//! unpacks it with `dpkg-deb -x` under `target/lab-data/guest-kernels/<version>/` and
//! writes its `modules.dep` (`depmod -b`). Nothing outside `target/` changes; a kernel
//! already unpacked there is kept (no network then). `lab --vm --guest-kernel fetched`
//! boots it (docs/vm.md).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::setup::output;

/// The suite the zero-copy kernel comes from.
const SUITE: &str = "trixie-backports";
/// The kernel the VM test was run on (AF_XDP zero copy on virtio-net and igb measured):
/// taken while the suite lists it.
const PINNED: &str = "7.3.4+deb13-amd64";
const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// Where fetched kernels are unpacked (the lab looks there for `--guest-kernel fetched`).
pub fn dir(root: &Path) -> PathBuf {
    root.join("target/lab-data/guest-kernels")
}

/// A kernel already unpacked under `dir`: its `boot/vmlinuz-*`, if its modules.dep is there.
fn present(dir: &Path) -> Option<PathBuf> {
    let mut found = Vec::new();
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let boot = e.path().join("boot");
        for k in std::fs::read_dir(&boot).into_iter().flatten().flatten() {
            let name = k.file_name().to_string_lossy().into_owned();
            if let Some(kver) = name.strip_prefix("vmlinuz-") {
                if e.path()
                    .join("lib/modules")
                    .join(kver)
                    .join("modules.dep")
                    .exists()
                {
                    found.push(k.path());
                }
            }
        }
    }
    found.sort();
    found.pop()
}

/// Fetches, checks and unpacks the kernel unless one is there; returns its image.
pub fn ensure(root: &Path, mirror: &str) -> Result<PathBuf> {
    let dir = dir(root);
    if let Some(k) = present(&dir) {
        return Ok(k);
    }
    for tool in ["curl", "gpgv", "dpkg-deb", "depmod", "xz", "sha256sum"] {
        if which(tool).is_none() {
            bail!("fetching the guest kernel needs `{tool}` (Debian: curl, gpgv, dpkg, kmod, xz-utils, coreutils)");
        }
    }
    std::fs::create_dir_all(&dir).with_context(|| dir.display().to_string())?;
    let work = dir.join(".download");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let base = format!("{}/dists/{SUITE}", mirror.trim_end_matches('/'));
    println!("setup: fetching a guest kernel with AF_XDP zero copy on virtio-net (Linux >= 6.14) from Debian's {SUITE} ({mirror}) into {}; the host's kernel is not touched", dir.display());
    let in_release = work.join("InRelease");
    curl(&format!("{base}/InRelease"), &in_release)?;
    let verified = work.join("Release");
    let ok = Command::new("gpgv")
        .arg("--keyring")
        .arg(KEYRING)
        .arg("--output")
        .arg(&verified)
        .arg(&in_release)
        .output()
        .context("running gpgv")?;
    if !ok.status.success() {
        bail!(
            "{SUITE}'s InRelease does not verify against {KEYRING}: {}",
            String::from_utf8_lossy(&ok.stderr).trim()
        );
    }
    let release = std::fs::read_to_string(&verified)?;
    let index_sha = release_sha256(&release, "main/binary-amd64/Packages.xz")
        .context("the signed Release lists no main/binary-amd64/Packages.xz")?;
    let index = work.join("Packages.xz");
    curl(&format!("{base}/main/binary-amd64/Packages.xz"), &index)?;
    check_sha256(&index, &index_sha)?;
    let packages = Command::new("xz")
        .arg("-dc")
        .arg(&index)
        .output()
        .context("xz -dc Packages.xz")?;
    if !packages.status.success() {
        bail!("could not decompress {SUITE}'s package index");
    }
    let text = String::from_utf8_lossy(&packages.stdout);
    let stanzas = kernel_stanzas(&text);
    let mut best: Option<&Stanza> = None;
    for s in stanzas
        .iter()
        .filter(|s| s.package.starts_with("linux-image-"))
    {
        let newer = match best {
            None => true,
            Some(b) => Command::new("dpkg")
                .args(["--compare-versions", &s.version, "gt", &b.version])
                .status()
                .is_ok_and(|st| st.success()),
        };
        if newer {
            best = Some(s);
        }
    }
    // The version this project was tested with, while the suite has it (reproducible runs);
    // else the newest.
    let pinned = stanzas
        .iter()
        .find(|s| s.package == format!("linux-image-{PINNED}"));
    let Some(image_pkg) = pinned.or(best) else {
        bail!("{SUITE} lists no linux-image-*-amd64 package");
    };
    let kver = image_pkg
        .package
        .strip_prefix("linux-image-")
        .context("package name")?
        .to_owned();
    // Newer Debian kernels split the image package into a meta package and
    // linux-binary-<kver> (the kernel), linux-modules-<kver> and linux-base-<kver>
    // (modules.builtin, the config): all of them unpacked into one root make the tree an
    // older single package held.
    let parts: Vec<&Stanza> = stanzas.iter().filter(|s| s.kver() == kver).collect();
    let unpacked = work.join("root");
    for pkg in &parts {
        println!(
            "setup: {} {} ({} MB)",
            pkg.package,
            pkg.version,
            pkg.size / 1_000_000
        );
        let deb = work.join(format!("{}.deb", pkg.package));
        curl(
            &format!("{}/{}", mirror.trim_end_matches('/'), pkg.filename),
            &deb,
        )?;
        check_sha256(&deb, &pkg.sha256)?;
        output("dpkg-deb", &[Path::new("-x"), &deb, &unpacked])?;
        std::fs::remove_file(&deb)?;
    }
    // Debian 13 ships the modules under usr/lib (merged /usr); the lab and depmod look
    // under lib/.
    if std::fs::symlink_metadata(unpacked.join("lib")).is_err()
        && unpacked.join("usr/lib/modules").exists()
    {
        std::os::unix::fs::symlink("usr/lib", unpacked.join("lib"))?;
    }
    // Newer packages keep the image as usr/lib/modules/<kver>/vmlinuz; the lab takes the
    // `boot/vmlinuz-<kver>` of a root.
    let image = unpacked.join("boot").join(format!("vmlinuz-{kver}"));
    let modules_image = unpacked.join("usr/lib/modules").join(&kver).join("vmlinuz");
    if !image.exists() && modules_image.exists() {
        std::fs::create_dir_all(unpacked.join("boot"))?;
        std::fs::copy(&modules_image, &image)?;
    }
    if !image.exists() {
        bail!(
            "{}: its packages hold no boot/vmlinuz-{kver}",
            image_pkg.package
        );
    }
    output(
        "depmod",
        &[Path::new("-b"), &unpacked, Path::new(kver.as_str())],
    )?;
    let dest = dir.join(&kver);
    let _ = std::fs::remove_dir_all(&dest);
    std::fs::rename(&unpacked, &dest)?;
    let _ = std::fs::remove_dir_all(&work);
    let image = dest.join("boot").join(format!("vmlinuz-{kver}"));
    println!("setup: guest kernel {kver} in {}", image.display());
    Ok(image)
}

/// One binary package of the index that is a generic amd64 kernel image.
#[derive(Debug, PartialEq, Eq)]
struct Stanza {
    package: String,
    version: String,
    filename: String,
    size: u64,
    sha256: String,
}

impl Stanza {
    /// The kernel version the package belongs to.
    fn kver(&self) -> &str {
        [
            "linux-image-",
            "linux-binary-",
            "linux-modules-",
            "linux-base-",
        ]
        .iter()
        .find_map(|p| self.package.strip_prefix(p))
        .unwrap_or("")
    }
}

/// The `linux-{image,binary,modules,base}-<version>-amd64` stanzas (not `-cloud-`, `-rt-`,
/// `-unsigned`, `-dbg`, nor the `linux-image-amd64` meta package), each with the fields the
/// download needs.
fn kernel_stanzas(index: &str) -> Vec<Stanza> {
    index
        .split("\n\n")
        .filter_map(|block| {
            let field = |name: &str| {
                block
                    .lines()
                    .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
                    .map(str::to_owned)
            };
            let package = field("Package")?;
            let kver = [
                "linux-image-",
                "linux-binary-",
                "linux-modules-",
                "linux-base-",
            ]
            .iter()
            .find_map(|p| package.strip_prefix(p))?;
            let flavour = kver.strip_suffix("-amd64")?;
            if !flavour.starts_with(|c: char| c.is_ascii_digit())
                || flavour.ends_with("-cloud")
                || flavour.ends_with("-rt")
            {
                return None;
            }
            Some(Stanza {
                version: field("Version")?,
                filename: field("Filename")?,
                size: field("Size")?.parse().ok()?,
                sha256: field("SHA256")?,
                package,
            })
        })
        .collect()
}

/// The SHA-256 a signed Release file lists for `path`.
fn release_sha256(release: &str, path: &str) -> Option<String> {
    let section = release.split("\nSHA256:").nth(1)?;
    section
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with(' '))
        .find_map(|l| {
            let mut w = l.split_whitespace();
            let (sha, _size, name) = (w.next()?, w.next()?, w.next()?);
            (name == path).then(|| sha.to_owned())
        })
}

fn check_sha256(file: &Path, want: &str) -> Result<()> {
    let out = Command::new("sha256sum")
        .arg(file)
        .output()
        .context("sha256sum")?;
    let got = String::from_utf8_lossy(&out.stdout);
    let got = got.split_whitespace().next().unwrap_or("");
    if got != want {
        bail!(
            "{}: SHA-256 {got}, the signed index says {want}",
            file.display()
        );
    }
    Ok(())
}

fn curl(url: &str, out: &Path) -> Result<()> {
    let ok = Command::new("curl")
        .args(["-fsS", "--retry", "3", "-o"])
        .arg(out)
        .arg(url)
        .status()
        .context("running curl")?
        .success();
    if !ok {
        bail!("downloading {url} failed");
    }
    Ok(())
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(tool))
            .find(|p| p.exists())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_generic_amd64_images_are_candidates() {
        let index = "Package: linux-image-6.16.12+deb13-amd64\nVersion: 6.16.12-1~bpo13+1\nFilename: pool/a.deb\nSize: 100\nSHA256: aa\n\n\
Package: linux-image-6.16.12+deb13-cloud-amd64\nVersion: 6.16.12-1~bpo13+1\nFilename: pool/b.deb\nSize: 1\nSHA256: bb\n\n\
Package: linux-image-6.16.12+deb13-rt-amd64\nVersion: 1\nFilename: pool/c.deb\nSize: 1\nSHA256: cc\n\n\
Package: linux-image-amd64\nVersion: 1\nFilename: pool/d.deb\nSize: 1\nSHA256: dd\n\n\
Package: linux-image-6.16.12+deb13-amd64-unsigned\nVersion: 1\nFilename: pool/e.deb\nSize: 1\nSHA256: ee\n\n\
Package: linux-modules-7.3.4+deb13-amd64\nVersion: 7.3.4-1\nFilename: pool/f.deb\nSize: 2\nSHA256: ff\n\n\
Package: linux-image-7.3.4+deb13-amd64-dbg\nVersion: 7.3.4-1\nFilename: pool/g.deb\nSize: 2\nSHA256: gg\n";
        let s = kernel_stanzas(index);
        assert_eq!(s.len(), 2, "{s:?}");
        assert_eq!(s[1].package, "linux-modules-7.3.4+deb13-amd64");
        assert_eq!(s[1].kver(), "7.3.4+deb13-amd64");
        assert_eq!(s[0].kver(), "6.16.12+deb13-amd64");
        assert_eq!(s[0].package, "linux-image-6.16.12+deb13-amd64");
        assert_eq!(s[0].filename, "pool/a.deb");
        assert_eq!(s[0].size, 100);
        assert_eq!(s[0].sha256, "aa");
    }

    #[test]
    fn the_index_hash_comes_from_the_sha256_section() {
        let release = "Origin: Debian\nMD5Sum:\n 11 5 main/binary-amd64/Packages.xz\nSHA256:\n 22 5 main/binary-amd64/Packages\n 33 5 main/binary-amd64/Packages.xz\n";
        assert_eq!(
            release_sha256(release, "main/binary-amd64/Packages.xz").as_deref(),
            Some("33")
        );
        assert_eq!(release_sha256(release, "main/x"), None);
        assert_eq!(release_sha256("no sections", "main/x"), None);
    }
}
