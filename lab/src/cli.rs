//! The `lab` binary's flags (`cargo xtask lab ...` builds the binaries, then runs it with
//! the same arguments), mapped to the lab crate's plain settings.

use std::path::PathBuf;

use anyhow::{Context, Result};
use lab::vm::VmConfig;
use lab::{Env, LabConfig};

/// The namespace lab (and, with `--vm`, the QEMU lab): exchange and strategy, the paths
/// side by side. `cargo xtask lab` builds what it needs, then runs this with its arguments.
#[derive(clap::Parser, Clone)]
#[command(name = "lab")]
pub struct LabArgs {
    /// Network paths to compare, in order (kernel, uring, xdp, packet, xdp-tx; variants
    /// kernel+zc, +busypoll, +preferbp, +mmsg, +wire (the strategy's own wire to wire on its
    /// kernel's and NIC's clocks), uring+zc, +sqpoll, +defer, +coop, +napi, +provideops,
    /// +regring, +inline, +syssend, +zcfixed, kernel|uring+tos, +prio, xdp+huge,
    /// xdp|xdp-tx+busypoll (the AF_XDP sockets' NAPI busy polling, zero copy only),
    /// packet+v3 (a TPACKET_V3 block ring), combinable,
    /// and on every path +warm, +warmcode, +warmtx, +hb, +reflect (the path's floor);
    /// docs/paths.md says what each does);
    /// ratios are against the first. Default: the headline experiment, each path in its
    /// best set-up, cold and warmed (kernel, kernel+warm, uring+defer+regring+inline and
    /// +warm, xdp, xdp+warm, packet, packet+warm, xdp-tx); with --classic, --vm or
    /// --calibrate: kernel,uring,xdp,packet.
    #[arg(long, value_delimiter = ',')]
    pub paths: Option<Vec<lab::PathSpec>>,
    /// The earlier default run: kernel,uring,xdp,packet on the default file at its own gaps
    /// between orders (no --order-gap).
    #[arg(long)]
    pub classic: bool,
    /// A bursty market: a generated file whose timeline has 1 ms bursts at 20x every 50 ms
    /// over a 10 k/s feed (heavy-tailed gaps between), replayed as recorded, with 100
    /// triggers at a burst's start, its peak, right after it and in the quiet feed; the
    /// report gives tick-to-trade by trigger position. Paths as under --load.
    #[arg(long, conflicts_with_all = ["md_file", "order_gap", "load"])]
    pub microbursts: bool,
    /// Repetitions per path.
    #[arg(long, default_value_t = 1)]
    pub runs: u32,
    /// Market-data file (default: the generated one, cached in target/lab-data/).
    #[arg(long)]
    pub md_file: Option<PathBuf>,
    /// Replay pace (see `exchange serve --pace`). The default leaves 200 us between packets,
    /// far more than the strategy needs per packet, so the figures measure latency, not
    /// queueing.
    #[arg(long, default_value = "rate:5000")]
    pub pace: String,
    /// Results folder (default: `target/lab-results/<timestamp>`).
    #[arg(long)]
    pub results_dir: Option<PathBuf>,
    /// Do not build the binaries first (use target/release as it is; read by `cargo xtask
    /// lab`, which builds before it runs the lab).
    #[arg(long)]
    pub no_build: bool,
    /// Extra flags for every `strategy run` (e.g. "--busy-poll 50").
    #[arg(long, allow_hyphen_values = true, default_value = "")]
    pub strategy_flags: String,
    /// Seconds a single run may take before it is declared failed.
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
    /// Run the strategy in a QEMU guest behind an emulated NIC over a tap device.
    #[arg(long)]
    pub vm: bool,
    /// Calibrate the measurement chain: run the first path with injected delays of 0, 10 and
    /// 50 us (cycling order by order in one session) and check that the exchange sees the
    /// p50 shift by D, per clock, within 1 us + 5 % plus the medians' 95 % confidence.
    #[arg(long)]
    pub calibrate: bool,
    /// Capture every run on the exchange's veth (tcpdump, nanosecond timestamps) into the
    /// results folder; `cargo xtask lab analyze DIR` matches orders to packets on the wire.
    #[arg(long)]
    pub pcap: bool,
    /// Trace every order through both kernels (the waterfall): small BPF programs on the
    /// network tracepoints stamp each trigger's packet and each order's segment; the report
    /// gets each path's median per point and the check that the points add up to the
    /// kernel-stamp tick-to-trade; `<run>.trace.csv` has one row per order. Namespace lab
    /// only; needs `cargo xtask build-ebpf` and the kernel's BTF.
    #[arg(long)]
    pub trace: bool,
    /// Run every path at each of these gaps between orders (e.g. 1ms,10ms,100ms,1s): a file
    /// per gap with its orders exactly that far apart at the `--pace` rate, the ping-pong
    /// floor measured at the same gap, and tick-to-trade against the gap per path. Default
    /// 1ms,100ms; none with --md-file, --classic, --vm, --calibrate or --sweep (the file's
    /// own gaps).
    #[arg(long, value_delimiter = ',', value_parser = humantime::parse_duration)]
    pub order_gap: Option<Vec<std::time::Duration>>,
    /// Load as an axis: the feed's rate around the triggers, packets/s (e.g.
    /// 0,100k,300k,1M; 0 is the --pace feed). Per load and gap, a file with the triggers at
    /// the gap and non-triggering lines between them at that rate; each path's drops from
    /// its own counters, sent = handled + dropped checked; tick-to-trade against the rate
    /// (t2t_vs_load.svg). Default paths then: kernel, uring+defer+regring+inline, xdp,
    /// packet, xdp-tx.
    #[arg(long, value_delimiter = ',', value_parser = lab::load::parse_rate)]
    pub load: Vec<u32>,
    /// Each path's capacity: the highest feed rate with nothing lost and the oracle's
    /// orders, found by a search (doubling from 50k/s, then bisection; one lab run per
    /// probe, triggers 1 ms apart, --orders-per-gap of them). Paths as under --load. With
    /// --vm: in the guest, per NIC, one guest boot per probe (the tap's drops counted).
    #[arg(long, conflicts_with_all = ["md_file", "order_gap", "load", "microbursts", "sweep", "calibrate"])]
    pub capacity: bool,
    /// Orders per gap file (with --order-gap; cut to fit 2 M lines under --load).
    #[arg(long, default_value_t = 100)]
    pub orders_per_gap: u64,
    /// How long the ping-pong floor at each order gap may take per protocol (UDP, then
    /// TCP): about this long divided by the gap in round trips, at least 20 (4s: 4,000 at
    /// 1 ms, 40 at 100 ms). The test command measures 500ms.
    #[arg(long, default_value = "4s", value_parser = humantime::parse_duration)]
    pub floor_time: std::time::Duration,
    /// Interval of the warming variants (`+warm`, `+warmcode`, `+warmtx`, `+hb`).
    #[arg(long, default_value = "100us", value_parser = humantime::parse_duration)]
    pub warm_every: std::time::Duration,
    /// Keep the exchange's own receive path warm too (a loopback heartbeat every D inside the
    /// exchange, for every path of the run; e.g. 100us): separates the strategy's coldness
    /// from the exchange's.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub exchange_warm: Option<std::time::Duration>,
    /// Tuning variants of the strategy's veth, each run beside the untuned baseline and read
    /// back: nogro, coalesce0, napidefer, threaded (as `--vm --guest-tune`; busypoll is a
    /// global sysctl: use the path variant kernel+busypoll), or NAME=COMMANDS (`$IF` is the
    /// veth).
    #[arg(long = "veth-tune", value_delimiter = ',')]
    pub veth_tune: Vec<String>,
    /// The exchange's market-data sender: udp (a UDP socket) or packet (AF_PACKET frames
    /// with PACKET_QDISC_BYPASS: the higher rates). Default: packet under --load, udp
    /// otherwise.
    #[arg(long)]
    pub md_tx: Option<exchange::md_publisher::MdTx>,
    /// Extra flags for every `exchange serve` (e.g. "--spin").
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    pub exchange_flags: String,
    /// Sweep one knob: TARGET:FLAG=V1,V2,... with TARGET strategy or exchange (a flag; `-`
    /// leaves it out), veth (`veth:tune=none,nogro`), guest (with --vm:
    /// `guest:tune=none,coalesce0`), pace (`pace:rate=2000,5000`) or gap
    /// (`gap:order=1ms,100ms`). A whole run per value in `<results>/point-<value>/`, then one
    /// table and one plot (sweep.csv, sweep.svg) of p50/p99 against the value per path.
    #[arg(long, allow_hyphen_values = true)]
    pub sweep: Option<String>,
    /// Save this run's order rows and summary as baseline NAME (for --baseline later).
    #[arg(long)]
    pub save_baseline: Option<String>,
    /// After the run, compare it with baseline NAME (`lab compare`, kernel stamps).
    #[arg(long)]
    pub baseline: Option<String>,
    /// With --baseline: fail when a path is slower than the baseline by more than this (us),
    /// the whole confidence interval above it.
    #[arg(long)]
    pub fail_slower_than: Option<f64>,
    /// Settings of the VM lab.
    #[command(flatten)]
    pub vm_args: VmArgs,
    /// Settings of a run on two machines (`--remote`).
    #[command(flatten)]
    pub remote_args: RemoteArgs,
    #[command(subcommand)]
    pub action: Option<LabAction>,
}

/// Two machines: the strategy on a remote host over OpenSSH, the exchange here
/// (docs/two-machines.md).
#[derive(clap::Args, Clone, Default)]
#[command(next_help_heading = "Two machines")]
pub struct RemoteArgs {
    /// Run the strategy on this host over ssh (USER@HOST; keys, no prompts), the exchange
    /// here: the same runs, checks and report as the namespace lab.
    #[arg(long, conflicts_with_all = ["vm", "capacity", "calibrate", "sweep"])]
    pub remote: Option<String>,
    /// The strategy's interface on the remote host.
    #[arg(long, requires = "remote")]
    pub remote_iface: Option<String>,
    /// The exchange's interface here (its IPv4 address is the exchange's).
    #[arg(long, requires = "remote")]
    pub local_iface: Option<String>,
    /// The remote's address as the exchange sees it (default: HOST of --remote when it is
    /// an address): the only peer given a session.
    #[arg(long, requires = "remote")]
    pub remote_addr: Option<std::net::Ipv4Addr>,
    /// AF_PACKET's own address on the remote's link (for the packet paths).
    #[arg(long, requires = "remote")]
    pub remote_packet_ip: Option<std::net::Ipv4Addr>,
    /// Pin the remote strategy to this CPU.
    #[arg(long, requires = "remote")]
    pub remote_cpu: Option<u32>,
    /// Pin the exchange here to this CPU.
    #[arg(long, requires = "remote")]
    pub local_cpu: Option<u32>,
    /// An option for ssh (repeat: --ssh-option=-i --ssh-option=KEY, or -p, -o ...).
    #[arg(long = "ssh-option", requires = "remote", allow_hyphen_values = true)]
    pub ssh_options: Vec<String>,
}

impl RemoteArgs {
    /// The remote run's settings (None: no --remote).
    pub fn config(&self) -> Result<Option<lab::remote::RemoteConfig>> {
        let Some(target) = &self.remote else {
            return Ok(None);
        };
        let host = target.rsplit('@').next().unwrap_or(target);
        let remote_addr = match (self.remote_addr, host.parse()) {
            (Some(a), _) | (None, Ok(a)) => a,
            (None, Err(_)) => {
                anyhow::bail!(
                    "--remote {target}: give the host's address on the link with --remote-addr"
                )
            }
        };
        Ok(Some(lab::remote::RemoteConfig {
            target: target.clone(),
            ssh_options: self.ssh_options.clone(),
            remote_iface: self
                .remote_iface
                .clone()
                .context("--remote needs --remote-iface (the strategy's interface there)")?,
            local_iface: self
                .local_iface
                .clone()
                .context("--remote needs --local-iface (the exchange's interface here)")?,
            remote_addr,
            packet_ip: self.remote_packet_ip,
            remote_cpu: self.remote_cpu,
            local_cpu: self.local_cpu,
        }))
    }
}

/// VM-specific flags (with `--vm`).
#[derive(clap::Args, Clone, Debug)]
pub struct VmArgs {
    /// Emulated NIC models: virtio, e1000e, igb (the users' Intel 82576; QEMU >= 8, which
    /// `cargo xtask setup --vm` installs from Debian's backports).
    #[arg(long, value_delimiter = ',', default_value = "virtio,igb")]
    pub nic: Vec<String>,
    /// Accelerator: auto (KVM only where the CPU has vmx/svm and a probe boot succeeds), kvm, tcg.
    #[arg(long, default_value = "auto")]
    pub accel: String,
    /// Guest kernel: a `vmlinuz-<version>` (its modules from the `lib/modules` beside its
    /// `boot/`, else from /), `fetched` (the newer Debian kernel `cargo xtask setup --vm`
    /// unpacks under target/lab-data/guest-kernels/: AF_XDP zero copy on virtio-net), or by
    /// default the newest /boot/vmlinuz-*.
    #[arg(long)]
    pub guest_kernel: Option<lab::vm::KernelChoice>,
    /// Guest memory, MiB.
    #[arg(long, default_value_t = 512)]
    pub mem: u32,
    /// Guest vCPUs. With one vCPU virtio-net uses one queue pair, the one AF_XDP binds;
    /// `xdp-tx` gets a queue pair per vCPU (a socket on each).
    #[arg(long, default_value_t = 1)]
    pub smp: u32,
    /// Leave the tap, the exchange and a guest shell running for your own experiments
    /// (serial console on this terminal); everything is removed when the guest powers off.
    #[arg(long)]
    pub interactive: bool,
    /// Guest tuning variants, each run beside the untuned baseline and read back in the
    /// guest: coalesce0 (ethtool -C rx-usecs 0 tx-usecs 0), nogro (GRO off), busypoll
    /// (net.core.busy_poll/busy_read 50), napidefer (napi_defer_hard_irqs 2,
    /// gro_flush_timeout 200 us), threaded (threaded NAPI), or NAME=COMMANDS (`$IF` is the
    /// NIC; separate commands with `;`).
    #[arg(long = "guest-tune", value_delimiter = ',')]
    pub guest_tune: Vec<String>,
}

/// `lab` subcommands.
#[derive(clap::Subcommand, Clone)]
pub enum LabAction {
    /// Match each order to the market-data packet whose id it carries, on the wire, in the
    /// captures of a results folder (from `lab --pcap`).
    Analyze {
        /// The results folder the lab printed.
        dir: PathBuf,
    },
    /// Compare two results folders path by path (and gap by gap): percentiles of each, the
    /// difference of the medians (B - A) with a 95 % bootstrap confidence interval, and a
    /// verdict, after what differs between the machines and the code that made the two
    /// (their manifest.json); fails on a regression beyond --threshold.
    Compare {
        /// The reference folder.
        a: PathBuf,
        /// The folder compared with it.
        b: PathBuf,
        /// Which tick-to-trade: kernel (SO_TIMESTAMPING stamps) or user.
        #[arg(long, default_value = "kernel")]
        clock: String,
        /// Fail when B is slower by more than this (us), the whole interval above it.
        #[arg(long, default_value_t = 0.0)]
        threshold: f64,
        /// `P,Q`: compare path P in A with path Q in B, gap by gap, instead of each path
        /// with itself (A and B may be one folder: two paths of one run).
        #[arg(long, value_delimiter = ',')]
        paths: Option<Vec<String>>,
    },
    /// Redraw the tick-to-trade-against-gap plot of a results folder from its summary.csv.
    Replot {
        /// The results folder (or any folder with a lab summary.csv).
        dir: PathBuf,
    },
    /// Benchmark the exchange's publisher: max rate and pacing error
    /// (`cargo xtask bench-exchange`).
    Bench(BenchArgs),
    /// Write the default market-data file (cached in target/lab-data/; `cargo xtask gen-md`).
    GenMd {
        /// Output path (default: target/lab-data/md-default.csv.gz).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Regenerate even if the cached file exists.
        #[arg(long)]
        force: bool,
    },
}

/// The headline experiment's paths: each in its best set-up, cold and warmed where warming
/// applies (`xdp-tx` decides in the program; its warming is left out until a heartbeat no
/// longer disarms it).
pub const HEADLINE_PATHS: &str = "kernel,kernel+warm,uring+defer+regring+inline,uring+defer+regring+inline+warm,xdp,xdp+warm,packet,packet+warm,xdp-tx";

/// The paths of a `--load` run by default: each in its best set-up.
pub const LOAD_PATHS: &str = "kernel,uring+defer+regring+inline,xdp,packet,xdp-tx";

/// The headline experiment's gaps between orders.
pub const HEADLINE_GAPS: [std::time::Duration; 2] = [
    std::time::Duration::from_millis(1),
    std::time::Duration::from_millis(100),
];

impl LabArgs {
    /// Runs other than the headline experiment: the earlier four-path default.
    fn classic(&self) -> bool {
        self.classic || self.vm || self.calibrate || self.sweep.is_some()
    }

    /// The lab crate's settings.
    pub fn config(&self) -> Result<LabConfig> {
        let classic = self.classic();
        let paths = match &self.paths {
            Some(p) => p.clone(),
            None if classic => LabConfig::default().paths,
            None if !self.load.is_empty() || self.microbursts || self.capacity => {
                lab::parse_paths(LOAD_PATHS)?
            }
            None => lab::parse_paths(HEADLINE_PATHS)?,
        };
        let order_gaps = match &self.order_gap {
            Some(g) => g.clone(),
            None if classic || self.md_file.is_some() || self.microbursts => Vec::new(),
            None => HEADLINE_GAPS.to_vec(),
        };
        let (md_file, pace) = if self.microbursts {
            (
                Some(lab::data::microburst_md_file(&Env::workspace())?),
                "recorded".to_owned(),
            )
        } else {
            (self.md_file.clone(), self.pace.clone())
        };
        Ok(LabConfig {
            paths,
            runs: self.runs,
            md_file,
            pace,
            results_dir: self.results_dir.clone(),
            strategy_flags: self.strategy_flags.clone(),
            exchange_flags: self.exchange_flags.clone(),
            timeout: self.timeout,
            pcap: self.pcap,
            trace: self.trace,
            order_gaps,
            orders_per_gap: self.orders_per_gap.max(2),
            warm_every: self.warm_every,
            exchange_warm: self.exchange_warm,
            veth_tunes: self.veth_tune.clone(),
            loads: self.load.clone(),
            md_tx: self
                .md_tx
                .unwrap_or(if self.load.is_empty() && !self.capacity {
                    exchange::md_publisher::MdTx::Udp
                } else {
                    exchange::md_publisher::MdTx::Packet
                }),
            floor_time: self.floor_time,
        })
    }
}

impl VmArgs {
    /// The VM lab's settings.
    pub fn config(&self) -> VmConfig {
        VmConfig {
            nic: self.nic.clone(),
            accel: self.accel.clone(),
            guest_kernel: self.guest_kernel.clone().unwrap_or_default(),
            mem: self.mem,
            smp: self.smp,
            interactive: self.interactive,
            tunes: self.guest_tune.clone(),
            tune_baseline: true,
            probe: true,
        }
    }
}

/// `lab ...`.
pub fn run(a: &LabArgs) -> Result<()> {
    let env = Env::workspace();
    match &a.action {
        Some(LabAction::Bench(b)) => return lab::bench::run(&env, b.rate),
        Some(LabAction::GenMd { out, force }) => {
            let out = out
                .clone()
                .unwrap_or_else(|| lab::data::default_md_file(&env));
            return lab::data::ensure_md_file(&out, *force).map(|_| ());
        }
        Some(LabAction::Analyze { dir }) => return lab::capture::run(dir),
        Some(LabAction::Replot { dir }) => return lab::report::replot_gap(dir),
        Some(LabAction::Compare {
            a,
            b,
            clock,
            threshold,
            paths,
        }) => {
            let clock = match clock.as_str() {
                "kernel" => lab::compare::Clock::Kernel,
                "user" => lab::compare::Clock::User,
                other => anyhow::bail!("--clock {other}: kernel or user"),
            };
            let paths = match paths.as_deref() {
                None => None,
                Some([p, q]) => Some((p.as_str(), q.as_str())),
                Some(_) => anyhow::bail!("--paths P,Q: two path names"),
            };
            return lab::compare::run(a, b, clock, *threshold, paths);
        }
        None => {}
    }
    if !netlab::is_root() {
        anyhow::bail!(
            "the lab creates network namespaces (and, with --vm, a tap device): run it as root"
        );
    }
    let swept = lab::leftovers::sweep();
    if !swept.is_empty() {
        println!(
            "lab: removed what a killed earlier run left (its processes, veths, taps and QEMU with them): {}",
            swept.join(", ")
        );
    }
    let cfg = a.config()?;
    if a.trace && (a.vm || a.calibrate || a.capacity || a.remote_args.config()?.is_some()) {
        anyhow::bail!(
            "--trace runs in the namespace lab only (with --vm or --remote the strategy's kernel is another machine's; --calibrate and --capacity have their own runs)"
        );
    }
    if a.trace && !lab::trace::has_object() {
        anyhow::bail!(
            "--trace: this lab was built without the tracing programs; run `cargo xtask build-ebpf` first (`cargo xtask lab` does)"
        );
    }
    if a.calibrate {
        return lab::calibrate::run(&env, &cfg);
    }
    if a.vm && a.capacity {
        return lab::vm::capacity(&env, &cfg, &a.vm_args.config()).map(drop);
    }
    if a.vm {
        let (dir, results) = lab::vm::run(&env, &cfg, &a.vm_args.config())?;
        lab::report::report(&dir, &results, &[])?;
        return lab::check(&dir, &results);
    }
    if a.capacity {
        return lab::capacity::run(&env, &cfg).map(drop);
    }
    if let Some(r) = a.remote_args.config()? {
        return lab::remote::run(&env, &cfg, &r, lab::remote::Here(None)).map(drop);
    }
    if let Some(spec) = &a.sweep {
        let sweep = lab::sweep::Sweep::parse(spec)?;
        let dir = lab::results_dir(&env, &cfg, "sweep-")?;
        let mut points = Vec::new();
        for v in &sweep.values {
            let safe: String = v
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '.' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            let pdir = dir.join(format!("point-{safe}"));
            println!("sweep: {} = {v}", sweep.name());
            let point = sweep.point(&cfg, v, pdir.clone());
            if a.vm {
                let mut vm = a.vm_args.config();
                vm.tunes.extend(sweep.guest_tunes(v));
                let (d, results) = lab::vm::run(&env, &point, &vm)?;
                lab::report::report(&d, &results, &[])?;
                lab::check(&d, &results)?;
            } else {
                anyhow::ensure!(
                    !matches!(sweep.target, lab::sweep::Target::GuestTune),
                    "--sweep guest:... needs --vm"
                );
                lab::netns::run(&env, &point)?;
            }
            points.push((v.clone(), pdir));
        }
        return lab::sweep::summarize(&sweep, &dir, &points);
    }
    let dir = lab::netns::run(&env, &cfg)?;
    if let Some(name) = &a.baseline {
        let base = lab::compare::baseline_dir(&env, name)?;
        if !base.exists() {
            anyhow::bail!("no baseline `{name}` (save one with --save-baseline {name})");
        }
        println!();
        let threshold = a.fail_slower_than.unwrap_or(f64::INFINITY);
        lab::compare::run(&base, &dir, lab::compare::Clock::Kernel, threshold, None)?;
    }
    if let Some(name) = &a.save_baseline {
        lab::compare::save_baseline(&env, &dir, name)?;
    }
    Ok(())
}

/// Flags of `lab bench` (`cargo xtask bench-exchange`).
#[derive(clap::Args, Clone)]
pub struct BenchArgs {
    /// Rate for the pacing-error measurement (packets/s).
    #[arg(long, default_value_t = 20_000)]
    pub rate: u32,
    /// Do not build first (read by `cargo xtask bench-exchange`).
    #[arg(long)]
    pub no_build: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn config(args: &[&str]) -> LabConfig {
        LabArgs::try_parse_from(std::iter::once("lab").chain(args.iter().copied()))
            .expect("flags")
            .config()
            .expect("config")
    }

    #[test]
    fn the_default_is_the_headline_experiment() {
        let c = config(&[]);
        assert_eq!(c.paths, lab::parse_paths(HEADLINE_PATHS).expect("paths"));
        assert!(c.paths.iter().any(lab::PathSpec::sends_with_xdp_tx));
        assert_eq!(c.order_gaps, HEADLINE_GAPS);
        let classic = config(&["--classic"]);
        assert_eq!(classic.paths, LabConfig::default().paths);
        assert!(classic.order_gaps.is_empty());
        assert!(config(&["--md-file", "x.csv.gz"]).order_gaps.is_empty());
        assert_eq!(config(&["--vm"]).paths, LabConfig::default().paths);
        let one = config(&["--paths", "xdp-tx", "--order-gap", "10ms"]);
        assert_eq!(one.paths.len(), 1);
        assert_eq!(one.order_gaps, [std::time::Duration::from_millis(10)]);
        assert!(LabArgs::try_parse_from(["lab", "--warm-every", "5"]).is_err());
        let load = config(&["--load", "0,100k,1M"]);
        assert_eq!(load.loads, [0, 100_000, 1_000_000]);
        assert_eq!(load.paths, lab::parse_paths(LOAD_PATHS).expect("paths"));
        assert_eq!(load.order_gaps, HEADLINE_GAPS);
        assert!(LabArgs::try_parse_from(["lab", "--paths", "xdp+zc"]).is_err());
    }

    #[test]
    fn the_paths_help_names_every_variant() {
        use clap::CommandFactory;
        let cmd = LabArgs::command();
        let help = cmd
            .get_arguments()
            .find(|a| a.get_id() == "paths")
            .and_then(|a| a.get_long_help().or(a.get_help()))
            .map(|h| h.to_string())
            .expect("--paths has help");
        for v in strategy::spec::Variant::ALL {
            assert!(
                help.contains(&format!("+{}", v.name())),
                "--paths help does not name +{}",
                v.name()
            );
        }
    }
}
