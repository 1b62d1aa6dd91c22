//! The VM lab (`cargo xtask lab --vm`): the strategy in a QEMU guest behind an emulated NIC, the exchange
//! on the host side of a tap device.
//!
//! Per NIC model and path: a network namespace of its own holding a tap device (the users'
//! addressing: host 192.168.100.1/24, guest 192.168.100.2/24, a route for the group), the
//! exchange bound to it, and QEMU (TCG, or KVM where it works) with the guest kernel and an
//! initramfs built here: busybox-static, the NIC's modules and their dependencies (from the
//! guest kernel's modules.dep through `modprobe --show-depends`), the strategy binary with
//! the shared libraries `ldd` lists, and `lab/vm/guest-init.sh` as /init. The guest configures
//! the interface from the kernel command line, runs one session, prints its orders and
//! report on the serial console and powers off. Everything is torn down at the end, on
//! error and on Ctrl-C (the namespace takes the tap with it).

pub mod initramfs;
mod interactive;
pub mod pvh;
pub mod qemu;
pub mod tune;
use interactive::interactive;

use std::cell::RefCell;
use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use netlab::Netns;
use proto::order::OrderRepr;
use strategy::engine::EngineConfig;

use crate::key::RunKey;
use crate::{Env, LabConfig, PathSpec, RunResult};
use strategy::net::NetKind;

/// The host's address on the tap (the users' setup).
pub const HOST_ADDR: &str = "192.168.100.1";
const GUEST_CIDR: &str = "192.168.100.2/24";
/// The guest's addresses (its own and AF_PACKET's `--packet-ip`): the only peers the
/// exchange gives a session.
const GUEST_PEERS: [std::net::Ipv4Addr; 2] = [
    std::net::Ipv4Addr::new(192, 168, 100, 2),
    std::net::Ipv4Addr::new(192, 168, 100, 3),
];

/// The VM lab's settings.
#[derive(Clone, Debug)]
pub struct VmConfig {
    /// Emulated NIC models: virtio, e1000e, igb (igb needs QEMU >= 8).
    pub nic: Vec<String>,
    /// Accelerator: auto (KVM only where the CPU has vmx/svm and a probe boot succeeds), kvm,
    /// tcg.
    pub accel: String,
    /// The kernel the guest boots.
    pub guest_kernel: KernelChoice,
    /// Guest memory, MiB.
    pub mem: u32,
    /// Guest vCPUs. With one vCPU virtio-net uses one queue pair, the one AF_XDP binds;
    /// `xdp-tx` gets a queue pair per vCPU (a socket on each).
    pub smp: u32,
    /// Leave the tap, the exchange and a guest shell running (serial console on this
    /// terminal); everything is removed when the guest powers off.
    pub interactive: bool,
    /// Guest tuning variants ([`tune`]), each run beside the untuned baseline.
    pub tunes: Vec<String>,
    /// Run the untuned baseline beside the tuning variants (the command line always does;
    /// a caller that already has the baseline's runs, as the VM test does, can leave it out).
    pub tune_baseline: bool,
    /// Run `strategy probe` in the first guest of each NIC (the guest kernel's and the
    /// NIC's features, in the report; 3-5 s under TCG). The command line always does; a
    /// caller that has them for this guest already, as the VM test does after its first
    /// experiment, can leave it out.
    pub probe: bool,
}

/// `--guest-kernel`: which kernel the guest boots ([`initramfs::guest_kernel`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum KernelChoice {
    /// The newest /boot/vmlinuz-*.
    #[default]
    Installed,
    /// The newest kernel `cargo xtask setup --vm` unpacked under `<data>/guest-kernels/`.
    Fetched,
    /// This `vmlinuz-<version>`.
    Path(PathBuf),
}

impl std::str::FromStr for KernelChoice {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(if s == "fetched" {
            Self::Fetched
        } else {
            Self::Path(s.into())
        })
    }
}

impl Default for VmConfig {
    fn default() -> Self {
        Self {
            nic: vec!["virtio".into(), "igb".into()],
            accel: "auto".into(),
            guest_kernel: KernelChoice::Installed,
            mem: 512,
            smp: 1,
            interactive: false,
            tunes: Vec::new(),
            tune_baseline: true,
            probe: true,
        }
    }
}

/// What every guest of an experiment boots: its kernel, the initramfs, the accelerator.
struct Guest {
    kernel: PathBuf,
    initrd: PathBuf,
    accel: &'static str,
    /// The tuning variants built into the initramfs.
    tunes: Vec<tune::Tune>,
}

/// Checks the NICs and paths asked for; builds the initramfs in `dir`, picks the accelerator.
fn prepare_guest(env: &Env, a: &LabConfig, v: &VmConfig, dir: &Path) -> Result<Guest> {
    if !netlab::is_root() {
        bail!("the VM lab creates a network namespace and a tap device: run it as root");
    }
    for n in &v.nic {
        match n.as_str() {
            "virtio" | "e1000e" => {}
            "igb" if qemu::qemu_has_device("igb") => {}
            "igb" => bail!("--nic igb: this QEMU has no igb device (igb needs QEMU 8 or newer; Debian 12 has 7.2: `cargo xtask setup --vm` installs 10.0 from Debian's bookworm-backports, or pass --nic virtio)"),
            other => bail!("--nic {other}: expected virtio, e1000e or igb"),
        }
    }
    if let Some(p) = a.paths.iter().find(|p| p.reflects() || p.uses_hugepages()) {
        bail!("path `{p}`: the VM lab runs every variant but the floor (+reflect: the namespace lab's `--floor`) and huge pages (the guest reserves none)");
    }
    let guest_kernel = initramfs::guest_kernel(v, &env.data_dir())?;
    let kver = &guest_kernel.kver;
    let kernel = pvh::boot_image(&guest_kernel.image, kver, &env.data_dir());
    let initrd = dir.join("initramfs.cpio");
    let tunes = tune::parse(&v.tunes)?;
    tune::check_paths(&tunes, &a.paths)?;
    initramfs::initramfs(env, &initrd, &guest_kernel, &v.nic, &tunes)?;
    println!(
        "guest: kernel {} ({kver}), initramfs {}",
        kernel.display(),
        initrd.display()
    );
    let accel = qemu::choose_accel(v, &kernel, &initrd)?;
    Ok(Guest {
        kernel,
        initrd,
        accel,
        tunes,
    })
}

/// Runs the VM lab.
pub fn run(env: &Env, a: &LabConfig, v: &VmConfig) -> Result<(PathBuf, Vec<RunResult>)> {
    let (md_file, dir) = crate::prepare(env, a, "vm-")?;
    let Guest {
        kernel,
        initrd,
        accel,
        tunes,
    } = prepare_guest(env, a, v, &dir)?;
    let stop = crate::stop_flag()?;
    if v.interactive {
        interactive(env, a, v, &md_file, &dir, (accel, &kernel, &initrd))?;
        return Ok((dir, Vec::new()));
    }
    let oracle = strategy::replay::replay(&md_file, EngineConfig::default()).context("oracle")?;
    let mut results = Vec::new();
    let probed = RefCell::new(HashSet::new());
    let variants: Vec<Option<&tune::Tune>> = std::iter::once(None)
        .filter(|_| v.tune_baseline || tunes.is_empty())
        .chain(tunes.iter().map(Some))
        .collect();
    for run in 1..=a.runs {
        for nic in &v.nic {
            for (path, tune) in a
                .paths
                .iter()
                .flat_map(|p| variants.iter().map(move |t| (p, *t)))
            {
                let ctx = VmRunCtx {
                    env,
                    a,
                    v,
                    md_file: &md_file,
                    pace: &a.pace,
                    stamp_ids: None,
                    load: None,
                    dir: &dir,
                    accel,
                    kernel: &kernel,
                    initrd: &initrd,
                    oracle: &oracle.orders,
                    stop,
                    probed: &probed,
                };
                let r = one_vm_run(&ctx, (nic, path, tune), run)
                    .with_context(|| format!("{nic}/{path} run {run}"))?;
                results.push(r);
            }
        }
    }
    Ok((dir, results))
}

/// `lab --vm --capacity`: each path's capacity in the guest, per NIC: the search of
/// [`crate::capacity`], one guest boot per probe. On a veth the receiving side's kernel work
/// runs on the sender's CPU and the exchange's publisher is the limit of every path; in a
/// guest the receive runs on the guest's own CPU (under TCG an emulated one), so the paths'
/// costs show. A probe accounts for every packet with the path's own counters and the
/// tap's (what the guest's NIC did not take in time, the host's tap dropped).
pub fn capacity(
    env: &Env,
    a: &LabConfig,
    v: &VmConfig,
) -> Result<(PathBuf, Vec<(String, crate::capacity::Capacity)>)> {
    if !v.tunes.is_empty() || v.interactive {
        bail!(
            "--capacity with --vm runs the untuned guest only (no --guest-tune, no --interactive)"
        );
    }
    let dir = crate::results_dir(env, a, "vm-capacity-")?;
    let Guest {
        kernel,
        initrd,
        accel,
        ..
    } = prepare_guest(env, a, v, &dir)?;
    let stop = crate::stop_flag()?;
    let mut files = crate::capacity::ProbeFiles::default();
    let probed = RefCell::new(HashSet::new());
    let mut table = Vec::new();
    for nic in &v.nic {
        for path in &a.paths {
            println!("capacity of {nic}/{path} (one guest per probe):");
            let mut run_no = 0;
            let cap = crate::capacity::search(|rate| {
                if stop.load(Ordering::Relaxed) {
                    bail!("interrupted");
                }
                let (md, oracle) = files.get(env, a.orders_per_gap, rate)?;
                let stamp_ids = crate::data::write_oracle_ids(&dir, md, oracle)?;
                run_no += 1;
                let pace = format!("rate:{rate}");
                let ctx = VmRunCtx {
                    env,
                    a,
                    v,
                    md_file: md,
                    pace: &pace,
                    stamp_ids: Some(&stamp_ids),
                    load: Some(rate),
                    dir: &dir,
                    accel,
                    kernel: &kernel,
                    initrd: &initrd,
                    oracle,
                    stop,
                    probed: &probed,
                };
                let r = one_vm_run(&ctx, (nic, path, None), run_no)
                    .with_context(|| format!("{nic}/{path} at {rate}/s"))?;
                Ok(crate::capacity::Probe::of(&r, rate))
            })?;
            table.push((format!("{nic}/{path}"), cap));
        }
    }
    crate::capacity::finish(&dir, &table, a.orders_per_gap)?;
    Ok((dir, table))
}

/// What every guest run of one experiment shares.
struct VmRunCtx<'a> {
    env: &'a Env,
    a: &'a LabConfig,
    v: &'a VmConfig,
    md_file: &'a Path,
    /// The exchange's `--pace`.
    pace: &'a str,
    /// The exchange's `--stamp-ids` (the oracle's ids: only they are stamped).
    stamp_ids: Option<&'a Path>,
    /// The background rate of the file (a capacity probe), for the run's key.
    load: Option<u32>,
    dir: &'a Path,
    accel: &'a str,
    kernel: &'a Path,
    initrd: &'a Path,
    oracle: &'a [OrderRepr],
    stop: &'a AtomicBool,
    /// The NICs whose guest already ran `strategy probe` in this experiment: the guests of
    /// one NIC are the same machine, so only the first probes (3-5 s under TCG).
    probed: &'a RefCell<HashSet<String>>,
}

/// One guest run: a namespace with the tap and the exchange, QEMU with the strategy for one
/// session, the guest's report from its serial console, the oracle check.
fn one_vm_run(
    ctx: &VmRunCtx<'_>,
    (nic, path, tune): (&str, &PathSpec, Option<&tune::Tune>),
    run: u32,
) -> Result<RunResult> {
    let VmRunCtx {
        a,
        v,
        md_file,
        pace,
        stamp_ids,
        load,
        dir,
        accel,
        kernel,
        initrd,
        oracle,
        stop,
        ..
    } = *ctx;
    let key = RunKey {
        nic: Some(nic.to_owned()),
        tune: tune.map(|t| t.name.clone()),
        load,
        ..RunKey::new(path.clone(), run)
    };
    let tag = key.tag();
    let ns = Netns::new("vmlab").context("namespace")?;
    // virtio-net native XDP wants queues >= 2 x vCPUs and vectors = 2 * queues + 2 on a
    // multi-queue tap for full-speed XDP_TX; the kernel and io_uring paths get that. The
    // AF_XDP paths get one queue pair, unless a tuning variant sets the queue count
    // (`ethtool -L`): with XDP attached and fewer active pairs than the device has, virtio-net
    // activates another pair for XDP's transmit queues, the tap delivers to its RX queue too,
    // and no AF_XDP socket can bind it (sysfs does not list it: the program counts those
    // frames as aborted; measured). With `ethtool -L $IF combined 2` both queues are real and
    // `--xsk-queues all` binds a socket to each. `xdp-tx` gets one queue pair per vCPU and
    // a socket on each: its program decides while the market data keeps to one queue (the
    // tap hashes one flow to one queue), its XDP_TX goes through the shared, locked TX
    // queue of its CPU. Never more pairs than vCPUs: with XDP attached in that shared mode
    // and more active pairs than CPUs, the guest (Linux 6.1) panicked on the first XDP_TX
    // (measured; as we read virtio-net, it picks an XDP TX queue past the last one); a
    // tuning variant that sets the queue count is refused for `xdp-tx` (docs/vm.md).
    let sets_queues = tune.is_some_and(tune::Tune::sets_queues);
    let smp = v.smp.max(1);
    let (mq, queues) = match path.kind() {
        NetKind::XdpTx => (nic == "virtio" && smp > 1, smp),
        NetKind::Xdp => (nic == "virtio" && sets_queues, 2 * smp),
        _ => (nic == "virtio", 2 * smp),
    };
    qemu::host_tap(&ns, mq)?;
    let ex_csv = dir.join(format!("{tag}.exchange.csv"));
    let ex_sum = dir.join(format!("{tag}.exchange.jsonl"));
    for f in [&ex_csv, &ex_sum] {
        let _ = fs::remove_file(f);
    }
    let serve = exchange::serve_cmd::ServeCmd::new(md_file, &format!("{HOST_ADDR}:9012"))
        .md_iface("tap0")
        .allow_peers(&GUEST_PEERS)
        .sessions(1)
        .preload(true)
        .quiet_orders(true)
        .pace(pace)
        .stamp_ids(stamp_ids)
        // The exchange's own 200 ms between accept and the first packet: every path arms
        // its receive before its connect (docs/decisions.md).
        .handshake_delay(Duration::from_millis(200))
        // A grace, never `--expect-orders`: the guest's NIC has several queues, so the
        // order connection's end can overtake market data still on its way to the strategy
        // (docs/decisions.md). Half a second in a quiet feed (a guest under TCG keeps up
        // with 40-100 k/s: nothing is queued for it), two seconds otherwise.
        .grace(guest_grace(pace))
        .heartbeats(path.sends_heartbeats())
        .results(&ex_csv)
        .summary(&ex_sum);
    let mut ex = ns
        .command(ctx.env.bin("exchange"))
        .args(serve.args())
        .stdout(Stdio::null())
        .stderr(fs::File::create(dir.join(format!("{tag}.exchange.log")))?)
        .spawn()
        .context("starting the exchange")?;
    let (device, netdev, mut append) = guest_nic(nic, path, mq, queues);
    if !ctx.v.probe || !ctx.probed.borrow_mut().insert(nic.to_owned()) {
        append.push_str(" labnoprobe=1");
    }
    if let Some(t) = tune {
        append.push_str(&format!(" labtune={}", t.name));
    }
    // The path's variant flags (`kernel+wire`: --wire-stamps) and `--strategy-flags` (e.g.
    // "--busy-poll 50 --prefer-busy-poll 8") reach the guest's strategy as a quoted kernel
    // parameter, split into words by /init (`labnet` is the path's kind).
    let part_flags = path.part_args(a.warm_every);
    let flags = part_flags
        .iter()
        .map(String::as_str)
        .chain(a.strategy_flags.split_whitespace())
        .collect::<Vec<_>>()
        .join(" ");
    if !flags.is_empty() {
        if flags.contains('"') {
            bail!("--strategy-flags with --vm: no double quotes (they go on the guest's kernel command line)");
        }
        append.push_str(&format!(" labflags=\"{flags}\""));
    }
    let serial = dir.join(format!("{tag}.serial.log"));
    let mut guest = qemu::qemu(&ns, accel, v, kernel, initrd)
        .args(["-append", &append, "-netdev", &netdev, "-device", &device])
        .stdin(Stdio::null())
        .stdout(fs::File::create(&serial)?)
        .stderr(fs::File::create(dir.join(format!("{tag}.qemu.log")))?)
        .spawn()
        .context("starting qemu-system-x86_64")?;
    let t0 = Instant::now();
    let limit = Duration::from_secs(a.timeout);
    // The tap's drops before the guest's strategy starts (frames of the host's own stack
    // sent before QEMU read the tap) are not market data: the count is taken from there.
    let mut tap_base = None;
    let result = loop {
        if tap_base.is_none()
            && fs::read_to_string(&serial).is_ok_and(|l| l.contains("lab-probe-end"))
        {
            tap_base = tap_tx_dropped(&ns);
        }
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
    // What the guest's NIC did not take in time the tap dropped on the host: the link's
    // count, read before the namespace (and the tap with it) goes.
    let tap_dropped = tap_tx_dropped(&ns)
        .zip(tap_base)
        .map(|(end, base)| end.saturating_sub(base));
    drop(ns);
    result?;
    println!("  {tag}: guest done in {:.1} s", t0.elapsed().as_secs_f64());
    let strat = guest_report(&serial)?;
    let log = fs::read_to_string(&serial).unwrap_or_default();
    if let Some(m) = crate::manifest::machine_from_line(&log, "lab-machine: ") {
        crate::manifest::record_strategy_machine(dir, m, true)?;
    }
    if let Some(probe) = between(&log, "lab-probe-begin", "lab-probe-end").filter(|p| !p.is_empty())
    {
        fs::write(dir.join(format!("{tag}.probe.txt")), probe)?;
    }
    // The strategy's order rows, printed by the guest (stages, wire stamps): the same
    // medians as the namespace lab's; rows the console cut leave the stages unmeasured.
    let stages = match between(&log, "lab-orders-begin", "lab-orders-end") {
        Some(rows) => {
            let csv = dir.join(format!("{tag}.strategy-orders.csv"));
            fs::write(&csv, rows)?;
            crate::oracle::stage_medians(&csv)
                .map_err(|e| eprintln!("  {tag}: the guest's order rows: {e:#}"))
                .ok()
        }
        None => None,
    };
    let tune_readback = tune
        .map(|t| {
            let back =
                tune::readback(&log).unwrap_or_else(|| "(no read-back: the script failed?)".into());
            println!(
                "  {tag}: tuning {} read back in the guest: {}",
                t.name,
                back.replace('\n', "; ")
            );
            fs::write(dir.join(format!("{tag}.tune.txt")), &back)?;
            Ok::<_, anyhow::Error>(back)
        })
        .transpose()?;
    let summary = exchange::results::read_summaries(&ex_sum)?
        .into_iter()
        .next()
        .context("no exchange summary")?;
    let rx = crate::oracle::received_vs_oracle(&ex_csv, oracle)?;
    let accounting = strat.as_ref().map(|s| {
        let a = crate::load::Accounting::of(summary.counters.packets_sent, s, rx.got);
        match tap_dropped {
            Some(n) => a.with_link_drops(n, s, rx.got),
            None => a,
        }
    });
    let explained = crate::load::explain(&rx.orders, oracle, accounting.map_or(0, |a| a.lost()));
    if let Some(s) = &strat {
        let mut f = fs::File::create(dir.join(format!("{tag}.strategy.jsonl")))?;
        writeln!(f, "{}", serde_json::to_string(s)?)?;
    }
    Ok(RunResult {
        path: key.label(),
        gap_ms: None,
        measured_gap_ms: rx.median_gap_ns as f64 / 1e6,
        stages,
        key,
        orders_expected: rx.expected,
        orders_received: rx.got,
        orders_match: rx.matches
            && crate::oracle::sent_equals_received(
                &tag,
                strat.as_ref().map(|s| s.path.orders),
                rx.got,
            ),
        explained,
        accounting,
        packets_sent: summary.counters.packets_sent,
        packets_received: strat.as_ref().map_or(0, |s| s.path.packets),
        exchange: summary,
        strategy: strat,
        tune_readback,
        trace: None,
        strategy_cpu: None,
        t2t_user: rx.t2t_user,
        t2t_kernel: rx.t2t_kernel,
        by_position: crate::oracle::by_position(&ex_csv, md_file)?,
    })
}

/// The rate up to which a guest's feed is quiet: a tenth of what a one-vCPU guest takes
/// under TCG (40-100 k packets/s, docs/results/load.md).
const GUEST_QUIET_RATE: u32 = 5_000;

/// The exchange's grace after the file for a guest's session at `pace`: long enough for
/// the feed's tail to reach the strategy through the guest's queues.
fn guest_grace(pace: &str) -> Duration {
    if crate::data::pace_rate(pace).is_some_and(|r| r <= GUEST_QUIET_RATE) {
        Duration::from_millis(500)
    } else {
        Duration::from_secs(2)
    }
}

/// The tap's `tx_dropped` (frames the host could not hand to QEMU: the guest's NIC had no
/// room), read inside the lab's namespace; None when it cannot be read.
fn tap_tx_dropped(ns: &Netns) -> Option<u64> {
    let out = ns
        .command("cat")
        .arg("/sys/class/net/tap0/statistics/tx_dropped")
        .stderr(Stdio::null())
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// The text between two marker lines of a serial log.
fn between(log: &str, begin: &str, end: &str) -> Option<String> {
    let s = log.find(begin)? + begin.len();
    let e = log[s..].find(end)?;
    Some(log[s..s + e].trim().replace('\r', ""))
}

/// The guest's NIC: QEMU's `-device` and `-netdev` arguments and the kernel command line
/// the guest's /init reads (its address, the exchange, the path).
/// virtio-net as a modern device behind the platform's DMA API (VIRTIO_F_ACCESS_PLATFORM),
/// as a real NIC is: virtio-net's AF_XDP zero copy (Linux 6.14+) maps the UMEM for its
/// queues' DMA device and refuses to bind without one (EINVAL, measured); without the
/// feature the guest hands QEMU guest-physical addresses directly (docs/vm.md).
const VIRTIO_DMA: &str = "disable-legacy=on,iommu_platform=on";

fn guest_nic(nic: &str, path: &PathSpec, mq: bool, queues: u32) -> (String, String, String) {
    let device: String = match nic {
        "virtio" if mq => format!(
            "virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56,mq=on,vectors={},{VIRTIO_DMA}",
            2 * queues + 2
        ),
        "virtio" => format!("virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56,{VIRTIO_DMA}"),
        "e1000e" => "e1000e,netdev=n0,mac=52:54:00:12:34:56".to_owned(),
        _ => "igb,netdev=n0,mac=52:54:00:12:34:56".to_owned(),
    };
    let netdev = if mq {
        format!("tap,id=n0,ifname=tap0,script=no,downscript=no,vhost=off,queues={queues}")
    } else {
        "tap,id=n0,ifname=tap0,script=no,downscript=no,vhost=off".to_owned()
    };
    let append = format!(
        "{} labip={GUEST_CIDR} labex={HOST_ADDR}:9012 labnet={} labpktip=192.168.100.3",
        qemu::GUEST_ARGS,
        path.kind().as_str()
    );
    (device, netdev, append)
}

/// The strategy's report from the guest's serial console; an error with the console's tail
/// when the guest's strategy did not exit cleanly.
fn guest_report(serial: &Path) -> Result<Option<strategy::runtime::SessionReport>> {
    let log = fs::read_to_string(serial).unwrap_or_default();
    let exit_ok = log.lines().any(|l| l.trim() == "lab-exit: 0");
    if !exit_ok {
        let tail: Vec<&str> = log.lines().rev().take(15).collect();
        bail!(
            "the strategy in the guest failed; serial log tail:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    // The guest's console may cut a long line; a report that is there must read whole.
    log.lines()
        .find_map(|l| l.trim().strip_prefix("lab-results: "))
        .map(|j| {
            serde_json::from_str(j.trim().trim_end_matches('\r'))
                .with_context(|| format!("the guest's session report in {}", serial.display()))
        })
        .transpose()
}
