//! QEMU: which devices this QEMU has, the accelerator (KVM only where a probe boot works),
//! the host's tap device, and the command line every run shares.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use netlab::Netns;

use super::{VmConfig, HOST_ADDR};

/// Does this QEMU have the device?
pub fn qemu_has_device(dev: &str) -> bool {
    Command::new("qemu-system-x86_64")
        .args(["-device", "help"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout).contains(&format!("\"{dev}\""))
                || String::from_utf8_lossy(&o.stderr).contains(&format!("\"{dev}\""))
        })
        .unwrap_or(false)
}

/// Chooses the accelerator: KVM only if the CPU exposes vmx/svm, /dev/kvm exists and a
/// probe boot prints its marker within 20 s; TCG otherwise, with a note.
pub fn choose_accel(v: &VmConfig, kernel: &Path, initrd: &Path) -> Result<&'static str> {
    match v.accel.as_str() {
        "tcg" => return Ok("tcg"),
        "kvm" => return Ok("kvm"),
        "auto" => {}
        other => bail!("--accel {other}: expected auto, kvm or tcg"),
    }
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let virt = cpuinfo
        .lines()
        .any(|l| l.starts_with("flags") && (l.contains(" vmx") || l.contains(" svm")));
    if !virt || !Path::new("/dev/kvm").exists() {
        println!("accel: TCG (the CPU exposes no vmx/svm or /dev/kvm is missing)");
        return Ok("tcg");
    }
    let mut child = Command::new("qemu-system-x86_64")
        .args([
            "-accel",
            "kvm",
            "-m",
            "256",
            "-nographic",
            "-no-reboot",
            "-kernel",
        ])
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .args([
            "-append",
            &format!("{GUEST_ARGS} labprobe=1"),
            "-nic",
            "none",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let t0 = Instant::now();
    let mut ok = false;
    let mut out = child.stdout.take();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(o) = out.as_mut() {
            let _ = std::io::Read::read_to_string(o, &mut s);
        }
        let _ = tx.send(s);
    });
    while t0.elapsed() < Duration::from_secs(20) {
        if child.try_wait()?.is_some() {
            ok = rx
                .recv_timeout(Duration::from_secs(1))
                .unwrap_or_default()
                .contains("lab-probe-ok");
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    if ok {
        println!(
            "accel: KVM (probe boot succeeded in {:.1} s)",
            t0.elapsed().as_secs_f64()
        );
        Ok("kvm")
    } else {
        println!("accel: TCG (/dev/kvm is there but a probe boot did not complete: KVM does not work on this machine)");
        Ok("tcg")
    }
}

/// `tap0` in `ns` with the host address and the route for the group (multi-queue if asked).
pub fn host_tap(ns: &Netns, multi_queue: bool) -> Result<()> {
    let mut tap = vec!["ip", "tuntap", "add", "dev", "tap0", "mode", "tap"];
    if multi_queue {
        tap.push("multi_queue");
    }
    ns.exec(&tap)?;
    ns.exec(&[
        "ip",
        "addr",
        "add",
        &format!("{HOST_ADDR}/24"),
        "dev",
        "tap0",
    ])?;
    ns.exec(&["ip", "link", "set", "tap0", "up"])?;
    ns.exec(&["ip", "route", "add", "224.0.0.0/4", "dev", "tap0"])?;
    Ok(())
}

/// The start of every guest's kernel command line: the serial console, no reboot after a
/// panic, and what shortens a boot under TCG without touching the data path: no crypto
/// self-tests, no timer check, the CPU's RNG trusted for the first seed, one 8250 UART
/// probed (four interleaved pairs of boots to the lab's first marker on virtio-net: 3.3,
/// 3.2, 3.9, 5.0 s against 5.4, 3.6, 4.6, 5.0 s without; docs/vm.md).
pub const GUEST_ARGS: &str =
    "console=ttyS0 panic=-1 quiet cryptomgr.notests no_timer_check random.trust_cpu=on 8250.nr_uarts=1";

/// The QEMU command line common to every run: accelerator, size, serial console, no
/// reboot (a panicking guest ends the run), the guest kernel and the initramfs.
pub fn qemu(ns: &Netns, accel: &str, v: &VmConfig, kernel: &Path, initrd: &Path) -> Command {
    let mut c = ns.command("qemu-system-x86_64");
    c.args([
        "-accel",
        accel,
        "-m",
        &v.mem.to_string(),
        "-smp",
        &v.smp.to_string(),
        "-nographic",
        "-no-reboot",
    ])
    .arg("-kernel")
    .arg(kernel)
    .arg("-initrd")
    .arg(initrd);
    c
}
