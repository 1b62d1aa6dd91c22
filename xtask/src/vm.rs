//! `cargo xtask lab --vm`: the strategy in a QEMU guest behind an emulated NIC, the exchange
//! on the host side of a tap device.
//!
//! Per NIC model and path: a network namespace of its own holding a tap device (the users'
//! addressing: host 192.168.100.1/24, guest 192.168.100.2/24, a route for the group), the
//! exchange bound to it, and QEMU (TCG, or KVM where it works) with the guest kernel and an
//! initramfs built here: busybox-static, the NIC's modules and their dependencies (from the
//! guest kernel's modules.dep through `modprobe --show-depends`), the strategy binary with
//! the shared libraries `ldd` lists, and `lab/guest-init.sh` as /init. The guest configures
//! the interface from the kernel command line, runs one session, prints its orders and
//! report on the serial console and powers off. Everything is torn down at the end, on
//! error and on Ctrl-C (the namespace takes the tap with it).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use netlab::Netns;
use strategy::engine::EngineConfig;

use crate::lab::{LabArgs, RunResult};
use crate::root;

const HOST_ADDR: &str = "192.168.100.1";
const GUEST_CIDR: &str = "192.168.100.2/24";

/// VM-specific flags (with `--vm`).
#[derive(clap::Args, Clone, Debug)]
pub struct VmArgs {
    /// Emulated NIC models: virtio, e1000e, igb (igb needs QEMU >= 8).
    #[arg(long, value_delimiter = ',', default_value = "virtio")]
    pub nic: Vec<String>,
    /// Accelerator: auto (KVM only where the CPU has vmx/svm and a probe boot succeeds), kvm, tcg.
    #[arg(long, default_value = "auto")]
    pub accel: String,
    /// Guest kernel (default: the newest /boot/vmlinuz-*).
    #[arg(long)]
    pub guest_kernel: Option<PathBuf>,
    /// Guest memory, MiB.
    #[arg(long, default_value_t = 512)]
    pub mem: u32,
    /// Guest vCPUs. With one vCPU virtio-net uses one queue pair, the one AF_XDP binds.
    #[arg(long, default_value_t = 1)]
    pub smp: u32,
    /// Leave the tap, the exchange and a guest shell running for your own experiments
    /// (serial console on this terminal); everything is removed when the guest powers off.
    #[arg(long)]
    pub interactive: bool,
}

/// The newest /boot/vmlinuz-* and its version.
fn guest_kernel(v: &VmArgs) -> Result<(PathBuf, String)> {
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
            let deps = crate::setup::output("modprobe", &["-S", kver, "--show-depends", m])
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
    let text = crate::setup::output("ldd", &[&bin.to_string_lossy()])?;
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

/// Builds the initramfs: busybox, /init, the strategy and its libraries, the NIC modules.
fn initramfs(out: &Path, kver: &str, nics: &[String]) -> Result<()> {
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
    ] {
        c.dir(d);
    }
    c.entry("dev/console", 0o020600, (5, 1), &[]);
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .context("busybox-static missing (cargo xtask setup --vm)")?;
    c.file("bin/busybox", 0o755, &fs::read(busybox)?);
    c.file("init", 0o755, &fs::read(root().join("lab/guest-init.sh"))?);
    let strategy = root().join("target/release/strategy");
    c.file(
        "strategy",
        0o755,
        &fs::read(&strategy).context("target/release/strategy (build it first)")?,
    );
    for lib in shared_libs(&strategy)? {
        let data = fs::read(&lib).with_context(|| lib.clone())?;
        c.file(lib.trim_start_matches('/'), 0o755, &data);
    }
    for (name, data) in modules(kver, nics)? {
        c.file(&format!("modules/{name}"), 0o644, &data);
    }
    fs::write(out, c.finish())?;
    Ok(())
}

/// Does this QEMU have the device?
fn qemu_has_device(dev: &str) -> bool {
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
fn choose_accel(v: &VmArgs, kernel: &Path, initrd: &Path) -> Result<&'static str> {
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
            "console=ttyS0 panic=-1 quiet labprobe=1",
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
fn host_tap(ns: &Netns, multi_queue: bool) -> Result<()> {
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

/// The QEMU command line common to every run: accelerator, size, serial console, no
/// reboot (a panicking guest ends the run), the guest kernel and the initramfs.
fn qemu(ns: &Netns, accel: &str, v: &VmArgs, kernel: &Path, initrd: &Path) -> Command {
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

/// Runs the VM lab.
pub fn run(a: &LabArgs, v: &VmArgs) -> Result<(PathBuf, Vec<RunResult>)> {
    if !netlab::is_root() {
        bail!("the VM lab creates a network namespace and a tap device: run it as root");
    }
    crate::setup::run(&crate::setup::SetupArgs {
        ebpf: false,
        vm: true,
    })?;
    for n in &v.nic {
        match n.as_str() {
            "virtio" | "e1000e" => {}
            "igb" if qemu_has_device("igb") => {}
            "igb" => bail!("--nic igb: this QEMU has no igb device (igb needs QEMU 8 or newer; Debian 12 has 7.2, bookworm-backports has 10.0)"),
            other => bail!("--nic {other}: expected virtio, e1000e or igb"),
        }
    }
    if let Some(p) = a.paths.iter().find(|p| p.contains('+')) {
        bail!("path variant `{p}`: the VM lab runs the plain paths (kernel, uring, xdp, packet)");
    }
    let (md_file, dir) = crate::lab::prepare(a, &["kernel", "uring", "xdp", "packet"], "vm-")?;
    let (kernel, kver) = guest_kernel(v)?;
    let initrd = dir.join("initramfs.cpio");
    initramfs(&initrd, &kver, &v.nic)?;
    println!(
        "guest: kernel {} ({kver}), initramfs {}",
        kernel.display(),
        initrd.display()
    );
    let accel = choose_accel(v, &kernel, &initrd)?;
    let stop = crate::stop_flag()?;
    if v.interactive {
        interactive(a, v, &md_file, &dir, accel, &kernel, &initrd)?;
        return Ok((dir, Vec::new()));
    }
    let oracle = strategy::replay::replay(&md_file, EngineConfig::default()).context("oracle")?;
    let mut results = Vec::new();
    for run in 1..=a.runs {
        for nic in &v.nic {
            for path in &a.paths {
                let r = one_vm_run(
                    a,
                    v,
                    &md_file,
                    &dir,
                    nic,
                    path,
                    run,
                    accel,
                    &kernel,
                    &initrd,
                    &oracle.orders,
                    stop,
                )
                .with_context(|| format!("{nic}/{path} run {run}"))?;
                results.push(r);
            }
        }
    }
    Ok((dir, results))
}

#[allow(clippy::too_many_arguments)]
fn one_vm_run(
    a: &LabArgs,
    v: &VmArgs,
    md_file: &Path,
    dir: &Path,
    nic: &str,
    path: &str,
    run: u32,
    accel: &str,
    kernel: &Path,
    initrd: &Path,
    oracle: &[proto::order::OrderRepr],
    stop: &AtomicBool,
) -> Result<RunResult> {
    let tag = format!("{nic}-{path}-{run}");
    let ns = Netns::new("vmlab").context("namespace")?;
    // virtio-net native XDP wants queues >= 2 x vCPUs and vectors = 2 * queues + 2 on a
    // multi-queue tap for full-speed XDP_TX. The kernel path gets that. The AF_XDP path binds
    // one socket to queue 0, and with several queues the tap spreads flows over them (the
    // market data then lands on a queue with no socket: the program counts it as aborted),
    // so it gets a single queue: XDP_TX is not used (the program only redirects to the XSK),
    // so the kernel's "locked tx mode" warning does not matter here (docs/decisions.md).
    let queues = 2 * v.smp.max(1);
    let mq = nic == "virtio" && path != "xdp";
    host_tap(&ns, mq)?;
    let bin = root().join("target/release");
    let ex_csv = dir.join(format!("{tag}.exchange.csv"));
    let ex_sum = dir.join(format!("{tag}.exchange.jsonl"));
    for f in [&ex_csv, &ex_sum] {
        let _ = fs::remove_file(f);
    }
    let mut ex = ns
        .command(bin.join("exchange"))
        .args([
            "serve",
            "--oe-listen",
            &format!("{HOST_ADDR}:9012"),
            "--md-iface",
            "tap0",
            "--sessions",
            "1",
            "--quiet-orders",
        ])
        .args([
            "--pace",
            &a.pace,
            "--handshake-delay",
            "1s",
            "--grace",
            "2s",
        ])
        .arg("--md-file")
        .arg(md_file)
        .arg("--results")
        .arg(&ex_csv)
        .arg("--summary")
        .arg(&ex_sum)
        .stdout(Stdio::null())
        .stderr(fs::File::create(dir.join(format!("{tag}.exchange.log")))?)
        .spawn()
        .context("starting the exchange")?;
    let device = match nic {
        "virtio" if mq => format!(
            "virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56,mq=on,vectors={}",
            2 * queues + 2
        ),
        "virtio" => "virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56".to_owned(),
        "e1000e" => "e1000e,netdev=n0,mac=52:54:00:12:34:56".to_owned(),
        _ => "igb,netdev=n0,mac=52:54:00:12:34:56".to_owned(),
    };
    let netdev = if mq {
        format!("tap,id=n0,ifname=tap0,script=no,downscript=no,vhost=off,queues={queues}")
    } else {
        "tap,id=n0,ifname=tap0,script=no,downscript=no,vhost=off".to_owned()
    };
    let append = format!(
        "console=ttyS0 panic=-1 quiet labip={GUEST_CIDR} labex={HOST_ADDR}:9012 labnet={path} labpktip=192.168.100.3"
    );
    let serial = dir.join(format!("{tag}.serial.log"));
    let mut guest = qemu(&ns, accel, v, kernel, initrd)
        .args(["-append", &append, "-netdev", &netdev, "-device", &device])
        .stdin(Stdio::null())
        .stdout(fs::File::create(&serial)?)
        .stderr(fs::File::create(dir.join(format!("{tag}.qemu.log")))?)
        .spawn()
        .context("starting qemu-system-x86_64")?;
    let t0 = Instant::now();
    let limit = Duration::from_secs(a.timeout);
    let result = loop {
        if stop.load(Ordering::SeqCst) {
            break Err(anyhow::anyhow!(
                "interrupted (guest, exchange and namespace removed)"
            ));
        }
        if t0.elapsed() > limit {
            break Err(anyhow::anyhow!(
                "the guest did not finish in {limit:?}; serial log: {}",
                serial.display()
            ));
        }
        if guest.try_wait()?.is_some() {
            break Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = guest.kill();
    let _ = guest.wait();
    // The exchange ends its session when the guest's connection goes; give it the grace.
    let t1 = Instant::now();
    while ex.try_wait()?.is_none() && t1.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = ex.kill();
    let _ = ex.wait();
    drop(ns);
    result?;
    println!("  {tag}: guest done in {:.1} s", t0.elapsed().as_secs_f64());
    let log = fs::read_to_string(&serial).unwrap_or_default();
    let exit_ok = log.lines().any(|l| l.trim() == "lab-exit: 0");
    if !exit_ok {
        let tail: Vec<&str> = log.lines().rev().take(15).collect();
        bail!(
            "the strategy in the guest failed; serial log tail:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    let strat_json = log
        .lines()
        .find_map(|l| l.trim().strip_prefix("lab-results: "))
        .and_then(|j| serde_json::from_str::<serde_json::Value>(j.trim()).ok())
        .unwrap_or(serde_json::Value::Null);
    let summary = exchange::results::read_summaries(&ex_sum)?
        .into_iter()
        .next()
        .context("no exchange summary")?;
    let rx = crate::lab::received_vs_oracle(&ex_csv, oracle)?;
    let mut f = fs::File::create(dir.join(format!("{tag}.strategy.jsonl")))?;
    writeln!(f, "{strat_json}")?;
    Ok(RunResult {
        path: format!("{nic}/{path}"),
        run,
        orders_expected: rx.expected,
        orders_received: rx.got,
        orders_match: rx.matches,
        packets_sent: summary.counters.packets_sent,
        packets_received: strat_json["path"]["packets"].as_u64().unwrap_or(0),
        exchange: summary,
        strategy: strat_json,
        t2t_user: rx.t2t_user,
        t2t_kernel: rx.t2t_kernel,
    })
}

/// `lab --vm --interactive`: the namespace, tap and exchange stay up while a guest shell runs
/// on this terminal; all of it goes when the guest powers off.
fn interactive(
    a: &LabArgs,
    v: &VmArgs,
    md_file: &Path,
    dir: &Path,
    accel: &str,
    kernel: &Path,
    initrd: &Path,
) -> Result<()> {
    let nic = v.nic.first().map_or("virtio", String::as_str);
    let path = a.paths.first().map_or("kernel", String::as_str);
    let ns = Netns::new("vmlab").context("namespace")?;
    host_tap(&ns, false)?;
    let log = dir.join("interactive.exchange.log");
    let mut ex = ns
        .command(root().join("target/release/exchange"))
        .args([
            "serve",
            "--oe-listen",
            &format!("{HOST_ADDR}:9012"),
            "--md-iface",
            "tap0",
            "--pace",
            &a.pace,
        ])
        .args(["--handshake-delay", "1s", "--quiet-orders"])
        .arg("--md-file")
        .arg(md_file)
        .arg("--results")
        .arg(dir.join("interactive.orders.csv"))
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log)?)
        .spawn()
        .context("starting the exchange")?;
    println!(
        "lab: namespace {} with tap0 {HOST_ADDR}/24; exchange on {HOST_ADDR}:9012 (log {})",
        ns.name(),
        log.display()
    );
    println!(
        "lab: results in {}; enter the host side with `ip netns exec {} bash`",
        dir.display(),
        ns.name()
    );
    let device = match nic {
        "e1000e" => "e1000e,netdev=n0,mac=52:54:00:12:34:56",
        "igb" => "igb,netdev=n0,mac=52:54:00:12:34:56",
        _ => "virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56",
    };
    let append = format!("console=ttyS0 panic=-1 quiet labip={GUEST_CIDR} labex={HOST_ADDR}:9012 labnet={path} labshell=1");
    let st = qemu(&ns, accel, v, kernel, initrd)
        .args([
            "-append",
            &append,
            "-netdev",
            "tap,id=n0,ifname=tap0,script=no,downscript=no,vhost=off",
            "-device",
            device,
        ])
        .status()
        .context("starting qemu-system-x86_64")?;
    let _ = ex.kill();
    let _ = ex.wait();
    drop(ns);
    println!("lab: guest exited ({st}); tap, exchange and namespace removed");
    Ok(())
}
