//! Direct boot of the guest kernel (PVH): its uncompressed image, loaded by QEMU as it is.
//!
//! A distribution's `vmlinuz` is a bzImage: real-mode set-up code, then the kernel
//! compressed (Debian: xz). Under TCG the guest spends most of its boot decompressing it:
//! measured here (Debian's 6.1.0-48, xz), 5.8 s from SeaBIOS's "Booting from ROM" to the
//! kernel's first line, with an empty initramfs as with the lab's. A kernel built with
//! `CONFIG_PVH` carries an ELF note (`XEN_ELFNOTE_PHYS32_ENTRY`) that lets QEMU's `-kernel`
//! load the uncompressed ELF directly and enter it in 32-bit protected mode: the same boot
//! reached the kernel after 0.97 s. So the lab decompresses the payload once on the host
//! (cached in `target/lab-data/vmlinux-<version>-<size>-<mtime>.pvh`) and boots that when it
//! has the note, the bzImage otherwise (the reason printed).
//!
//! The bzImage's header is read with checked slices only (any bytes give an answer or an
//! error, tested on arbitrary input); the ELF notes are read with the `object` crate.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// `XEN_ELFNOTE_PHYS32_ENTRY`: the 32-bit PVH entry point QEMU looks for.
const PHYS32_ENTRY: u32 = 18;

/// How a bzImage's payload is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// xz (Debian's kernels).
    Xz,
    /// zstd (Ubuntu's and Fedora's).
    Zstd,
    /// gzip.
    Gzip,
}

impl Compression {
    /// The command that decompresses it from stdin to stdout, stopping at the end of the
    /// first stream (the kernel appends the uncompressed size after it).
    fn command(self) -> (&'static str, &'static [&'static str]) {
        match self {
            Self::Xz => ("xz", &["-dc", "--single-stream"]),
            Self::Zstd => ("zstd", &["-dcq"]),
            Self::Gzip => ("gzip", &["-dcq"]),
        }
    }
}

/// The compressed payload of a bzImage (boot protocol 2.08 or later) and its compression.
pub fn payload(image: &[u8]) -> Result<(&[u8], Compression)> {
    let u16_at = |o: usize| {
        image
            .get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |o: usize| {
        image
            .get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    if image.get(0x202..0x206) != Some(b"HdrS") {
        bail!("not a bzImage (no \"HdrS\" at 0x202)");
    }
    let version = u16_at(0x206).context("truncated header")?;
    if version < 0x208 {
        bail!("boot protocol {version:#x}: the payload's place is given from 2.08 on");
    }
    let setup_sects = match image.get(0x1f1).copied().context("truncated header")? {
        0 => 4,
        n => usize::from(n),
    };
    let offset = u32_at(0x248).context("truncated header")? as usize;
    let len = u32_at(0x24c).context("truncated header")? as usize;
    let start = (setup_sects + 1)
        .checked_mul(512)
        .and_then(|pm| pm.checked_add(offset))
        .context("payload offset overflows")?;
    let data = start
        .checked_add(len)
        .and_then(|end| image.get(start..end))
        .with_context(|| {
            format!(
                "payload {start}+{len} past the image's {} bytes",
                image.len()
            )
        })?;
    let kind = if data.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Compression::Xz
    } else if data.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else if data.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else {
        let head: Vec<String> = data.iter().take(6).map(|b| format!("{b:02x}")).collect();
        bail!(
            "payload compressed with something else (starts {})",
            head.join(" ")
        );
    };
    Ok((data, kind))
}

/// Whether an ELF image carries the PVH entry note; an error when it is not a whole ELF
/// image (a segment past its end: decompressed only in part).
pub fn has_pvh_note(elf: &[u8]) -> Result<bool> {
    use object::read::elf::{ElfFile64, FileHeader, ProgramHeader};
    let file = ElfFile64::<object::Endianness>::parse(elf).context("not an ELF64 image")?;
    let endian = file.endian();
    let headers = file
        .elf_header()
        .program_headers(endian, elf)
        .context("program headers")?;
    for ph in headers {
        if ph.data(endian, elf).is_err() {
            bail!("a segment runs past the image's end (decompressed only in part)");
        }
    }
    for ph in headers {
        let Some(mut notes) = ph.notes(endian, elf).context("notes")? else {
            continue;
        };
        while let Some(note) = notes.next().context("a note")? {
            if note.name() == b"Xen" && note.n_type(endian) == PHYS32_ENTRY {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// The image QEMU should boot for `bz_image`: its uncompressed ELF when it has the PVH
/// note (decompressed once into `cache_dir`, under a name holding the bzImage's version,
/// size and modification time, so that a kernel package updated under the same version
/// is decompressed again), else the bzImage itself, saying why.
pub fn boot_image(bz_image: &Path, kver: &str, cache_dir: &Path) -> PathBuf {
    match direct_image(bz_image, kver, cache_dir) {
        Ok(p) => p,
        Err(e) => {
            println!("guest: booting the compressed kernel (no direct PVH boot: {e:#})");
            bz_image.to_owned()
        }
    }
}

fn direct_image(bz_image: &Path, kver: &str, cache_dir: &Path) -> Result<PathBuf> {
    let meta = fs::metadata(bz_image).with_context(|| bz_image.display().to_string())?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    let out = cache_dir.join(format!("vmlinux-{kver}-{}-{mtime}.pvh", meta.len()));
    if out.exists() {
        return Ok(out);
    }
    let image = fs::read(bz_image).with_context(|| bz_image.display().to_string())?;
    let (data, kind) = payload(&image)?;
    let elf = decompress(data, kind)?;
    if !has_pvh_note(&elf)? {
        bail!("the kernel has no PVH entry note (built without CONFIG_PVH)");
    }
    fs::create_dir_all(cache_dir)?;
    // Written under a name of this process's, then renamed: a concurrent lab run never
    // boots a half-written image.
    let tmp = out.with_extension(format!("tmp{}", std::process::id()));
    fs::write(&tmp, &elf)?;
    fs::rename(&tmp, &out)?;
    Ok(out)
}

fn decompress(data: &[u8], kind: Compression) -> Result<Vec<u8>> {
    let (program, args) = kind.command();
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("running {program}"))?;
    let mut stdin = child.stdin.take().context("stdin")?;
    // The writer on a thread of its own (scoped: it borrows the payload, no copy): the
    // decompressor's output fills its pipe long before its input is read.
    let out = std::thread::scope(|s| {
        s.spawn(move || {
            // A decompressor that stops early (trailing bytes after its stream) closes the
            // pipe: not an error here, its output says what happened. Dropping `stdin` at
            // the end closes it.
            let _ = stdin.write_all(data);
        });
        child.wait_with_output()
    })
    .context("decompressing")?;
    // The exit status is not the test: gzip warns about the size the kernel appends after
    // the stream ("trailing garbage ignored", exit 2), zstd may refuse those bytes after a
    // whole frame. The ELF check that follows tells a whole image from a cut one (every
    // segment inside it).
    if out.stdout.is_empty() {
        bail!("{program} gave nothing ({})", out.status);
    }
    Ok(out.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A minimal bzImage: `setup_sects` 1, protocol 2.15, the payload right after.
    fn bz(payload: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; 1024];
        b[0x1f1] = 1;
        b[0x202..0x206].copy_from_slice(b"HdrS");
        b[0x206..0x208].copy_from_slice(&0x20fu16.to_le_bytes());
        b[0x24c..0x250].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        b.extend_from_slice(payload);
        b
    }

    #[test]
    fn the_payload_and_its_compression_are_found() {
        let xz = [0xfd, b'7', b'z', b'X', b'Z', 0, 1, 2];
        let image = bz(&xz);
        let (data, kind) = payload(&image).expect("payload");
        assert_eq!((data, kind), (&xz[..], Compression::Xz));
        let zstd = bz(&[0x28, 0xb5, 0x2f, 0xfd, 9]);
        assert_eq!(payload(&zstd).expect("zstd").1, Compression::Zstd);
        let lz4 = bz(&[0x02, 0x21, 0x4c, 0x18]);
        assert!(payload(&lz4).is_err());
        let mut short = bz(&xz);
        short.truncate(1030);
        let err = payload(&short)
            .map(|_| ())
            .expect_err("a truncated payload");
        assert!(err.to_string().contains("past the image"), "{err}");
        assert!(payload(b"not a kernel").is_err());
    }

    #[test]
    fn a_gzip_payload_is_decompressed_whole_with_the_size_after_it() {
        use flate2::{write::GzEncoder, Compression as Level};
        let mut enc = GzEncoder::new(Vec::new(), Level::fast());
        enc.write_all(b"an uncompressed kernel").expect("gzip");
        let mut data = enc.finish().expect("gzip");
        data.extend_from_slice(&22u32.to_le_bytes());
        let image = bz(&data);
        let (p, kind) = payload(&image).expect("payload");
        assert_eq!(kind, Compression::Gzip);
        assert_eq!(
            decompress(p, kind).expect("gzip -d"),
            b"an uncompressed kernel"
        );
        assert!(has_pvh_note(b"an uncompressed kernel").is_err());
    }

    /// The guest kernel the VM lab boots (Debian's, where `cargo xtask setup --vm` ran):
    /// its payload decompresses to an ELF with the PVH note.
    #[test]
    fn the_installed_kernel_boots_directly_when_present() {
        let Some(k) = fs::read_dir("/boot").ok().and_then(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.to_string_lossy().contains("vmlinuz-"))
                .max()
        }) else {
            eprintln!("skipped: no /boot/vmlinuz-*");
            return;
        };
        let image = fs::read(&k).expect("read the kernel");
        let (data, kind) = payload(&image).expect("a bzImage");
        let elf = match decompress(data, kind) {
            Ok(elf) => elf,
            Err(e)
                if e.root_cause()
                    .downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound) =>
            {
                // The decompressor is not installed (`cargo xtask setup --vm` installs it).
                eprintln!("skipped: {e:#}");
                return;
            }
            Err(e) => panic!("decompressing {}: {e:#}", k.display()),
        };
        assert!(
            has_pvh_note(&elf).expect("ELF"),
            "{}: no PVH note",
            k.display()
        );
        let cut = has_pvh_note(&elf[..elf.len() / 2]);
        assert!(
            cut.is_err(),
            "half an image is not taken for a kernel: {cut:?}"
        );
    }

    proptest! {
        #[test]
        fn any_bytes_give_an_answer_not_a_panic(
            mut b in proptest::collection::vec(any::<u8>(), 0..2048),
            hdr in any::<bool>(),
        ) {
            if hdr && b.len() >= 0x250 {
                b[0x202..0x206].copy_from_slice(b"HdrS");
            }
            let _ = payload(&b);
            let _ = has_pvh_note(&b);
        }
    }
}
