//! `cargo xtask lab`: the network-namespace lab.
//!
//! For each requested path and repetition: two fresh namespaces joined by veth
//! ([`netlab::VethLab`], removed on exit, on error and on Ctrl-C), `exchange serve` in one
//! (pinned to CPU 0, spinning), `strategy run --net PATH` in the other (pinned to CPU 1),
//! one session over the whole file. Then the exchange's received orders are checked against
//! the offline replay (the oracle), and a table compares the paths: orders expected and
//! received, packets lost, exchange-side tick-to-trade per clock source, the strategy's own
//! latency. CSV, JSON and an SVG plot (tick-to-trade CDF per path) go to the results folder.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use exchange::results::{read_summaries, Summary};
use netlab::VethLab;
use serde::Serialize;
use strategy::engine::EngineConfig;

use crate::{cmd, ensure_md_file, root};

/// Flags.
#[derive(clap::Args, Clone)]
pub struct LabArgs {
    /// Network paths to compare, in order (kernel, uring, xdp, packet; variants kernel+zc,
    /// uring+zc, uring+sqpoll); ratios are against the first.
    #[arg(long, value_delimiter = ',', default_value = "kernel,uring,xdp,packet")]
    pub paths: Vec<String>,
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
    /// Results folder (default: target/lab-results/<timestamp>).
    #[arg(long)]
    pub results_dir: Option<PathBuf>,
    /// Do not build the binaries first (use target/release as it is).
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
    /// Settings of the VM lab.
    #[command(flatten)]
    pub vm_args: crate::vm::VmArgs,
    #[command(subcommand)]
    pub action: Option<LabAction>,
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
}

/// Checks the paths, builds what they need (unless `--no-build`), makes sure of the market
/// data file and the results folder (`target/lab-results/<prefix><unix time>` by default).
pub fn prepare(a: &LabArgs, known: &[&str], prefix: &str) -> Result<(PathBuf, PathBuf)> {
    for p in &a.paths {
        if !known.contains(&net_of(p))
            || !matches!(p.split_once('+').map(|v| v.1), None | Some("zc" | "sqpoll"))
        {
            bail!("unknown path `{p}` (available: {})", known.join(", "));
        }
    }
    if !a.no_build {
        if a.paths.iter().any(|p| p == "xdp") {
            crate::build_ebpf()?;
        }
        cmd(
            "cargo",
            &["build", "--release", "-p", "exchange", "-p", "strategy"],
        )?;
    }
    let md_file = match &a.md_file {
        Some(f) => f.clone(),
        None => ensure_md_file(&crate::default_md_file(), false)?,
    };
    let dir = a.results_dir.clone().unwrap_or_else(|| {
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        root().join(format!("target/lab-results/{prefix}{ts}"))
    });
    fs::create_dir_all(&dir)?;
    Ok((md_file, dir))
}

/// The network path of a lab path name: `kernel`, or `kernel+zc` (a variant).
pub fn net_of(path: &str) -> &str {
    path.split('+').next().unwrap_or(path)
}

/// Strategy flags of a variant: `+zc` is MSG_ZEROCOPY on the kernel path and SEND_ZC on
/// io_uring; `+sqpoll` is io_uring's SQPOLL (100 ms idle).
pub fn variant_flags(path: &str) -> &'static [&'static str] {
    match path {
        "kernel+zc" => &["--msg-zerocopy"],
        "uring+zc" => &["--send-zc"],
        "uring+sqpoll" => &["--sqpoll", "100"],
        _ => &[],
    }
}

/// Orders at the start of each run left out of the percentiles (warm-up).
pub const WARMUP_ORDERS: usize = 5;

/// One run's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    /// Path.
    pub path: String,
    /// Repetition.
    pub run: u32,
    /// Orders the oracle expects.
    pub orders_expected: usize,
    /// Orders the exchange accepted.
    pub orders_received: usize,
    /// Received orders equal to the oracle's, in order.
    pub orders_match: bool,
    /// Market-data packets the exchange sent.
    pub packets_sent: u64,
    /// Packets the strategy received.
    pub packets_received: u64,
    /// The exchange's session summary.
    pub exchange: Summary,
    /// The strategy's session report (JSON as written).
    pub strategy: serde_json::Value,
    /// Tick-to-trade samples (user clock), ns.
    #[serde(skip)]
    pub t2t_user: Vec<u64>,
    /// Tick-to-trade samples (kernel timestamps), ns.
    #[serde(skip)]
    pub t2t_kernel: Vec<u64>,
}

struct Proc {
    name: &'static str,
    child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Runs the lab.
pub fn run(a: &LabArgs) -> Result<()> {
    if let Some(LabAction::Analyze { dir }) = &a.action {
        return crate::analyze::run(dir);
    }
    if a.calibrate {
        return calibrate(a);
    }
    if a.vm {
        let (dir, results) = crate::vm::run(a, &a.vm_args)?;
        report(&dir, &results)?;
        return check(&dir, &results);
    }
    if !netlab::is_root() {
        bail!("the lab creates network namespaces: run it as root");
    }
    crate::setup::run(&crate::setup::SetupArgs::default())?;
    let (md_file, dir) = prepare(a, &["kernel", "uring", "xdp", "packet"], "")?;
    let stop = crate::stop_flag()?;
    let oracle = strategy::replay::replay(&md_file, EngineConfig::default())
        .context("replaying the file (oracle)")?;
    println!(
        "oracle: {} orders from {} lines of {}",
        oracle.orders.len(),
        oracle.lines,
        md_file.display()
    );
    let cpus = std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(1);
    let pin = cpus >= 2;
    println!(
        "cpus: {cpus}; {}",
        if pin {
            "exchange pinned to CPU 0, strategy to CPU 1"
        } else {
            "one CPU: no pinning (figures will be poor)"
        }
    );
    let floor = crate::floor::measure(pin).context("the ping-pong floor")?;
    println!(
        "floor (bare ping-pong, same link and CPUs, {} round trips each): UDP p50 {:.1} p99 {:.1} us, TCP_NODELAY p50 {:.1} p99 {:.1} us",
        floor.0.len(),
        pct(&floor.0, 0.5),
        pct(&floor.0, 0.99),
        pct(&floor.1, 0.5),
        pct(&floor.1, 0.99)
    );
    let mut results = Vec::new();
    for run in 1..=a.runs {
        for path in &a.paths {
            let r = one_run(a, &md_file, &dir, path, run, pin, &oracle.orders, stop)
                .with_context(|| format!("path {path}, run {run}"))?;
            results.push(r);
        }
    }
    report(&dir, &results)?;
    println!("over the floor (user-clock tick-to-trade / UDP ping-pong round trip, same run):");
    for path in &a.paths {
        let mut user: Vec<u64> = results
            .iter()
            .filter(|r| &r.path == path)
            .flat_map(|r| r.t2t_user.iter().copied())
            .collect();
        user.sort_unstable();
        println!(
            "  {path}: p50 x{:.2}, p99 x{:.2}",
            pct(&user, 0.5) / pct(&floor.0, 0.5),
            pct(&user, 0.99) / pct(&floor.0, 0.99)
        );
    }
    fs::write(
        dir.join("floor.json"),
        serde_json::to_string_pretty(&serde_json::json!({
            "udp_rtt_us": {"p50": pct(&floor.0, 0.5), "p90": pct(&floor.0, 0.9), "p99": pct(&floor.0, 0.99)},
            "tcp_rtt_us": {"p50": pct(&floor.1, 0.5), "p90": pct(&floor.1, 0.9), "p99": pct(&floor.1, 0.99)},
        }))?,
    )?;
    check(&dir, &results)
}

/// Fails when any run's received orders differ from the oracle.
fn check(dir: &Path, results: &[RunResult]) -> Result<()> {
    let bad: Vec<String> = results
        .iter()
        .filter(|r| !r.orders_match)
        .map(|r| format!("{} run {}", r.path, r.run))
        .collect();
    if !bad.is_empty() {
        bail!(
            "orders received differ from the oracle in: {} (see {})",
            bad.join(", "),
            dir.display()
        );
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn one_run(
    a: &LabArgs,
    md_file: &Path,
    dir: &Path,
    path: &str,
    run: u32,
    pin: bool,
    oracle: &[proto::order::OrderRepr],
    stop: &AtomicBool,
) -> Result<RunResult> {
    let tag = format!("{path}-{run}");
    let bin = root().join("target/release");
    let lab = VethLab::new("lab")
        .context("creating namespaces (is iproute2 installed? are you root?)")?;
    let ex_csv = dir.join(format!("{tag}.exchange.csv"));
    let ex_sum = dir.join(format!("{tag}.exchange.jsonl"));
    let st_sum = dir.join(format!("{tag}.strategy.jsonl"));
    for f in [&ex_csv, &ex_sum, &st_sum] {
        let _ = fs::remove_file(f);
    }
    let _ = fs::remove_file(dir.join(format!("{tag}.strategy-orders.csv")));
    let taskset = |cpu: &str, c: &mut Command| {
        if pin {
            c.args(["taskset", "-c", cpu]);
        }
    };
    let before = (
        counters(&lab.exchange, netlab::VethLab::EXCHANGE_IF),
        counters(&lab.strategy, netlab::VethLab::STRATEGY_IF),
    );
    let capture = if a.pcap {
        let c = lab
            .exchange
            .command("tcpdump")
            // -U: write each packet as it comes, so nothing waits in tcpdump's buffer.
            .args([
                "-i",
                netlab::VethLab::EXCHANGE_IF,
                "-n",
                "-U",
                "-s",
                "256",
                "--time-stamp-precision",
                "nano",
                "-w",
            ])
            .arg(dir.join(format!("{tag}.pcap")))
            .args(["udp", "port", "12345", "or", "tcp", "port", "9012"])
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.join(format!("{tag}.tcpdump.log")))?)
            .spawn()
            .context("starting tcpdump (cargo xtask setup installs it)")?;
        // tcpdump says "listening on" once the capture is open.
        let t0 = Instant::now();
        while !fs::read_to_string(dir.join(format!("{tag}.tcpdump.log")))
            .unwrap_or_default()
            .contains("listening on")
        {
            if t0.elapsed() > Duration::from_secs(10) {
                bail!("tcpdump did not start capturing; see {tag}.tcpdump.log");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(Proc {
            name: "tcpdump",
            child: c,
        })
    } else {
        None
    };
    let mut ex = lab.exchange.command("env");
    taskset("0", &mut ex);
    ex.arg(bin.join("exchange"))
        .args([
            "serve",
            "--oe-listen",
            "10.77.0.1:9012",
            "--md-iface",
            netlab::VethLab::EXCHANGE_IF,
            "--sessions",
            "1",
        ])
        .args(["--spin", "--quiet-orders", "--pace", &a.pace])
        .arg("--md-file")
        .arg(md_file)
        .arg("--results")
        .arg(&ex_csv)
        .arg("--summary")
        .arg(&ex_sum)
        .stdout(Stdio::null())
        .stderr(fs::File::create(dir.join(format!("{tag}.exchange.log")))?);
    let mut ex = Proc {
        name: "exchange",
        child: ex.spawn().context("starting the exchange")?,
    };
    std::thread::sleep(Duration::from_millis(200));
    let mut st = lab.strategy.command("env");
    taskset("1", &mut st);
    st.arg(bin.join("strategy"))
        .args([
            "run",
            "--exchange",
            "10.77.0.1:9012",
            "--iface",
            netlab::VethLab::STRATEGY_IF,
            "--net",
            net_of(path),
            "--sessions",
            "1",
        ])
        .args(variant_flags(path))
        .arg("--results")
        .arg(&st_sum)
        .arg("--orders-out")
        .arg(dir.join(format!("{tag}.strategy-orders.csv")))
        // AF_PACKET: smoltcp's own address on the link (the kernel must not own it).
        .args(if path == "packet" {
            &["--packet-ip", "10.77.0.3"][..]
        } else {
            &[][..]
        })
        .args(a.strategy_flags.split_whitespace())
        .stdout(fs::File::create(dir.join(format!("{tag}.strategy.out")))?)
        .stderr(fs::File::create(dir.join(format!("{tag}.strategy.log")))?);
    let mut st = Proc {
        name: "strategy",
        child: st.spawn().context("starting the strategy")?,
    };
    let t0 = Instant::now();
    let limit = Duration::from_secs(a.timeout);
    let mut done = [false, false];
    let mut ticks = 0u32;
    while !(done[0] && done[1]) {
        if stop.load(Ordering::SeqCst) {
            bail!("interrupted (namespaces and processes removed)");
        }
        for (i, p) in [&mut ex, &mut st].into_iter().enumerate() {
            if !done[i] {
                if let Some(status) = p.child.try_wait()? {
                    if !status.success() {
                        bail!("{} exited with {status}; logs in {}", p.name, dir.display());
                    }
                    done[i] = true;
                }
            }
        }
        if t0.elapsed() > limit {
            bail!("run took longer than {limit:?}; logs in {}", dir.display());
        }
        ticks += 1;
        if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
            print!("\r  {tag}: running {:>5.1} s", t0.elapsed().as_secs_f64());
            let _ = std::io::stdout().flush();
        } else if ticks.is_multiple_of(50) {
            println!("  {tag}: running {:>5.1} s", t0.elapsed().as_secs_f64());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    println!(
        "\r  {tag}: done in {:.1} s        ",
        t0.elapsed().as_secs_f64()
    );
    let after = (
        counters(&lab.exchange, netlab::VethLab::EXCHANGE_IF),
        counters(&lab.strategy, netlab::VethLab::STRATEGY_IF),
    );
    if let Some(mut c) = capture {
        // tcpdump runs behind while both sides spin on the CPUs: let it drain the socket
        // (the file stops growing) before stopping it, or the tail of the run is lost.
        let pcap = dir.join(format!("{tag}.pcap"));
        let (mut last, mut stable_since, t0) = (0u64, Instant::now(), Instant::now());
        while stable_since.elapsed() < Duration::from_millis(300)
            && t0.elapsed() < Duration::from_secs(10)
        {
            let len = fs::metadata(&pcap).map(|m| m.len()).unwrap_or(0);
            if len != last {
                last = len;
                stable_since = Instant::now();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // SIGINT lets tcpdump flush the file.
        // SAFETY: kill(2) on our child's pid.
        unsafe { libc::kill(c.child.id() as i32, libc::SIGINT) };
        let _ = c.child.wait();
    }
    drop((ex, st, lab));
    let deltas = serde_json::json!({
        "exchange": delta(&before.0, &after.0),
        "strategy": delta(&before.1, &after.1),
    });
    fs::write(
        dir.join(format!("{tag}.counters.json")),
        serde_json::to_string_pretty(&deltas)?,
    )?;
    let suspicious = [
        ("strategy", "Udp.InErrors"),
        ("strategy", "Udp.RcvbufErrors"),
        ("strategy", "link.rx_dropped"),
        ("exchange", "link.rx_dropped"),
        ("exchange", "Udp.SndbufErrors"),
        ("exchange", "Tcp.RetransSegs"),
        ("strategy", "Tcp.RetransSegs"),
        ("exchange", "Tcp.InErrs"),
        ("strategy", "Tcp.OutRsts"),
        ("exchange", "Tcp.OutRsts"),
    ];
    for (side, key) in suspicious {
        if let Some(v) = deltas[side][key].as_i64().filter(|v| *v > 0) {
            println!("  {tag}: WARNING {side} {key} +{v} during the run (not explained by the lab; see {tag}.counters.json)");
        }
    }

    let summary = read_summaries(&ex_sum)?
        .into_iter()
        .next()
        .context("no exchange summary")?;
    let strat: serde_json::Value =
        serde_json::from_str(fs::read_to_string(&st_sum)?.lines().next().unwrap_or("{}"))?;
    let rx = received_vs_oracle(&ex_csv, oracle)?;
    Ok(RunResult {
        path: path.to_owned(),
        run,
        orders_expected: rx.expected,
        orders_received: rx.got,
        orders_match: rx.matches,
        packets_sent: summary.counters.packets_sent,
        packets_received: strat["path"]["packets"].as_u64().unwrap_or(0),
        exchange: summary,
        strategy: strat,
        t2t_user: rx.t2t_user,
        t2t_kernel: rx.t2t_kernel,
    })
}

/// What the exchange received in one run, against the oracle.
pub struct Received {
    /// Orders the oracle expects.
    pub expected: usize,
    /// Orders the exchange accepted.
    pub got: usize,
    /// Equal, in order.
    pub matches: bool,
    /// Tick-to-trade samples, user clock, warm-up left out.
    pub t2t_user: Vec<u64>,
    /// Same, kernel stamps.
    pub t2t_kernel: Vec<u64>,
}

/// Reads the exchange's order CSV and compares it with the oracle; leaves the warm-up
/// orders out of the latency samples.
pub fn received_vs_oracle(ex_csv: &Path, oracle: &[proto::order::OrderRepr]) -> Result<Received> {
    let (received, mut t2t_user, mut t2t_kernel) = read_exchange_orders(ex_csv)?;
    // Warm-up: the first orders of a session pay for cold caches, page faults and the
    // first ARP; they stay in the CSV but not in the percentiles.
    t2t_user.drain(..WARMUP_ORDERS.min(t2t_user.len()));
    t2t_kernel.drain(..WARMUP_ORDERS.min(t2t_kernel.len()));
    let expected: Vec<(u64, &str, i64, u32)> = oracle
        .iter()
        .map(|o| (o.trigger_id, o.side.as_str(), o.price, o.qty))
        .collect();
    let got: Vec<(u64, &str, i64, u32)> = received
        .iter()
        .map(|(id, s, p, q)| (*id, s.as_str(), *p, *q))
        .collect();
    Ok(Received {
        expected: expected.len(),
        got: got.len(),
        matches: got == expected,
        t2t_user,
        t2t_kernel,
    })
}

type Orders = Vec<(u64, String, i64, u32)>;

/// Reads the exchange's per-order CSV: the orders and the latency samples.
pub fn read_exchange_orders(csv: &Path) -> Result<(Orders, Vec<u64>, Vec<u64>)> {
    let text = fs::read_to_string(csv).unwrap_or_default();
    let (mut orders, mut user, mut kernel) = (Vec::new(), Vec::new(), Vec::new());
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        if f.len() < 13 {
            bail!("short row in {}: {line}", csv.display());
        }
        let price = proto::decimal::parse_fixed(f[3].as_bytes(), proto::PRICE_DECIMALS)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        orders.push((f[1].parse()?, f[2].to_owned(), price, f[4].parse()?));
        user.push(f[8].parse()?);
        if let Ok(k) = f[12].parse() {
            kernel.push(k);
        }
    }
    Ok((orders, user, kernel))
}

/// The `q` quantile of sorted nanosecond samples, in microseconds (NaN when empty).
pub fn pct(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64 / 1e3
}

fn report(dir: &Path, results: &[RunResult]) -> Result<()> {
    let mut by_path: BTreeMap<&str, Vec<&RunResult>> = BTreeMap::new();
    let mut order: Vec<&str> = Vec::new();
    for r in results {
        if !order.contains(&r.path.as_str()) {
            order.push(&r.path);
        }
        by_path.entry(&r.path).or_default().push(r);
    }
    let mut csv = fs::File::create(dir.join("summary.csv"))?;
    writeln!(csv, "path,runs,orders_expected,orders_received,match,packets_lost,clock,min_us,p50_us,p90_us,p99_us,p999_us,max_us,strategy_p50_us,strategy_p99_us")?;
    println!();
    println!("tick-to-trade at the exchange (us): user = CLOCK_MONOTONIC in the exchange, kernel = SO_TIMESTAMPING software stamps;");
    println!("strat = the strategy's own packet-read -> order-handed-to-kernel time (us)");
    println!("warm-up: the first {WARMUP_ORDERS} orders of every run are left out of the exchange-side percentiles (kept in the CSVs)");
    println!(
        "{:<14}{:>5}{:>8}{:>8}{:>7}{:>6}  {:<7}{:>8}{:>8}{:>8}{:>8}{:>8}{:>9}  {:>10}{:>10}",
        "path",
        "runs",
        "orders",
        "recv",
        "match",
        "lost",
        "clock",
        "min",
        "p50",
        "p90",
        "p99",
        "p99.9",
        "max",
        "strat p50",
        "strat p99"
    );
    let mut curves = Vec::new();
    let mut baseline: Option<(f64, f64, f64, f64)> = None;
    let mut ratios = Vec::new();
    for path in &order {
        let rs = &by_path[path];
        let mut user: Vec<u64> = rs.iter().flat_map(|r| r.t2t_user.iter().copied()).collect();
        let mut kernel: Vec<u64> = rs
            .iter()
            .flat_map(|r| r.t2t_kernel.iter().copied())
            .collect();
        user.sort_unstable();
        kernel.sort_unstable();
        let exp: usize = rs.iter().map(|r| r.orders_expected).sum();
        let got: usize = rs.iter().map(|r| r.orders_received).sum();
        let ok = rs.iter().all(|r| r.orders_match);
        let lost: u64 = rs
            .iter()
            .map(|r| r.packets_sent.saturating_sub(r.packets_received))
            .sum();
        let sp50 = rs
            .iter()
            .filter_map(|r| r.strategy["latency_ns"]["p50"].as_f64())
            .sum::<f64>()
            / rs.len() as f64
            / 1e3;
        let sp99 = rs
            .iter()
            .filter_map(|r| r.strategy["latency_ns"]["p99"].as_f64())
            .sum::<f64>()
            / rs.len() as f64
            / 1e3;
        for (clock, s) in [("user", &user), ("kernel", &kernel)] {
            let v = [
                pct(s, 0.0),
                pct(s, 0.5),
                pct(s, 0.9),
                pct(s, 0.99),
                pct(s, 0.999),
                pct(s, 1.0),
            ];
            println!(
                "{:<14}{:>5}{:>8}{:>8}{:>7}{:>6}  {:<7}{:>8.1}{:>8.1}{:>8.1}{:>8.1}{:>8.1}{:>9.1}  {:>10.1}{:>10.1}",
                path, rs.len(), exp, got, if ok { "yes" } else { "NO" }, lost, clock, v[0], v[1], v[2], v[3], v[4], v[5], sp50, sp99
            );
            writeln!(
                csv,
                "{path},{},{exp},{got},{ok},{lost},{clock},{:.2},{:.2},{:.2},{:.2},{:.2},{:.2},{sp50:.2},{sp99:.2}",
                rs.len(),
                v[0],
                v[1],
                v[2],
                v[3],
                v[4],
                v[5]
            )?;
        }
        if rs.len() > 1 {
            let p50s: Vec<String> = rs
                .iter()
                .map(|r| format!("{:.1}", r.exchange.t2t_user_ns.p50 as f64 / 1e3))
                .collect();
            let p99s: Vec<String> = rs
                .iter()
                .map(|r| format!("{:.1}", r.exchange.t2t_user_ns.p99 as f64 / 1e3))
                .collect();
            println!(
                "         spread across runs: p50 [{}] us, p99 [{}] us",
                p50s.join(", "),
                p99s.join(", ")
            );
        }
        let cur = (
            pct(&user, 0.5),
            pct(&user, 0.99),
            pct(&kernel, 0.5),
            pct(&kernel, 0.99),
        );
        match baseline {
            None => baseline = Some(cur),
            Some(b) => ratios.push(format!(
                "{path}/{}: user p50 x{:.2}, p99 x{:.2}; kernel p50 x{:.2}, p99 x{:.2}",
                order[0],
                cur.0 / b.0,
                cur.1 / b.1,
                cur.2 / b.2,
                cur.3 / b.3
            )),
        }
        curves.push((path.to_string(), user));
    }
    if !ratios.is_empty() {
        println!("ratios against {} (same run):", order[0]);
        for r in &ratios {
            println!("  {r}");
        }
    }
    fs::write(
        dir.join("runs.json"),
        serde_json::to_string_pretty(results)?,
    )?;
    plot(&dir.join("t2t_cdf.svg"), &curves)?;
    println!("results: {}", dir.display());
    Ok(())
}

fn plot(out: &Path, curves: &[(String, Vec<u64>)]) -> Result<()> {
    use plotters::prelude::*;
    let all: Vec<f64> = curves
        .iter()
        .flat_map(|(_, v)| v.iter().map(|&x| x as f64 / 1e3))
        .collect();
    if all.is_empty() {
        return Ok(());
    }
    let lo = all.iter().copied().fold(f64::INFINITY, f64::min).max(0.1) * 0.8;
    let hi = all.iter().copied().fold(0.0, f64::max) * 1.2;
    let root = SVGBackend::new(out, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "exchange-side tick-to-trade CDF (user clock)",
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d((lo..hi).log_scale(), 0.0..1.0)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("tick-to-trade (us, log)")
        .y_desc("fraction of orders")
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let colors = [RED, BLUE, GREEN, MAGENTA, CYAN, BLACK];
    for (i, (name, v)) in curves.iter().enumerate() {
        let n = v.len() as f64;
        let color = colors[i % colors.len()];
        chart
            .draw_series(LineSeries::new(
                v.iter()
                    .enumerate()
                    .map(|(k, &x)| (x as f64 / 1e3, (k + 1) as f64 / n)),
                color.stroke_width(2),
            ))
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

/// Delays injected by `--calibrate`, ns.
const CAL_DELAYS: [u64; 3] = [0, 10_000, 50_000];

/// `lab --calibrate`.
fn calibrate(a: &LabArgs) -> Result<()> {
    let path = a.paths.first().cloned().unwrap_or_else(|| "kernel".into());
    let md = root().join("target/lab-data/md-calibrate.csv.gz");
    if !md.exists() {
        let cfg = exchange::mdgen::GenConfig {
            target_bytes: 300_000,
            trigger_every: 20,
            ..exchange::mdgen::GenConfig::default()
        };
        exchange::mdgen::generate(&md, &cfg)?;
    }
    let dir = a
        .results_dir
        .clone()
        .unwrap_or_else(|| root().join("target/lab-results/calibrate"));
    let flags = format!("{} --inject-delay 0,10us,50us", a.strategy_flags);
    let args = LabArgs {
        paths: vec![path.clone()],
        runs: 1,
        md_file: Some(md),
        results_dir: Some(dir.clone()),
        strategy_flags: flags,
        calibrate: false,
        vm: false,
        ..a.clone()
    };
    run(&args)?;
    let tag = format!("{path}-1");
    let ex = fs::read_to_string(dir.join(format!("{tag}.exchange.csv")))?;
    let st = fs::read_to_string(dir.join(format!("{tag}.strategy-orders.csv")))?;
    let ex_rows: Vec<Vec<&str>> = ex.lines().skip(1).map(|l| l.split(',').collect()).collect();
    let st_rows: Vec<Vec<&str>> = st.lines().skip(1).map(|l| l.split(',').collect()).collect();
    if ex_rows.len() != st_rows.len() {
        bail!(
            "calibration: {} orders at the exchange, {} at the strategy",
            ex_rows.len(),
            st_rows.len()
        );
    }
    // [clock][delay] -> samples
    let mut samples: [[Vec<u64>; 3]; 2] = Default::default();
    for (e, s) in ex_rows.iter().zip(&st_rows) {
        if e.get(1) != s.get(1) {
            bail!(
                "calibration: trigger ids out of step ({:?} vs {:?})",
                e.get(1),
                s.get(1)
            );
        }
        let delay: u64 = s
            .get(5)
            .and_then(|d| d.parse().ok())
            .context("delay_ns column")?;
        let Some(k) = CAL_DELAYS.iter().position(|&d| d == delay) else {
            continue;
        };
        if let Some(v) = e.get(8).and_then(|v| v.parse().ok()) {
            samples[0][k].push(v);
        }
        if let Some(v) = e.get(12).and_then(|v| v.parse().ok()) {
            samples[1][k].push(v);
        }
    }
    println!();
    println!("calibration on the {path} path: exchange-side tick-to-trade p50 shift against the injected delay D");
    println!(
        "{:<8}{:>8}{:>7}{:>10}{:>10}{:>10}{:>11}  verdict",
        "clock", "D (us)", "n", "p50 (us)", "shift", "error", "tolerance"
    );
    let mut bad = Vec::new();
    for (ci, clock) in ["user", "kernel"].iter().enumerate() {
        let (mut base, mut base_ci) = (f64::NAN, f64::NAN);
        for (k, &d) in CAL_DELAYS.iter().enumerate() {
            let v = &mut samples[ci][k];
            v.sort_unstable();
            let p50 = pct(v, 0.5);
            let ci_half = median_ci_half_width(v);
            if k == 0 {
                (base, base_ci) = (p50, ci_half);
            }
            let shift = p50 - base;
            let d_us = d as f64 / 1e3;
            let err = shift - d_us;
            // 1 us + 5 % of D, widened by the sampling uncertainty of the two medians (their
            // 95 % confidence half-widths combined): a noisy clock is not a broken chain,
            // while a delay that does not show up still fails by far.
            let tol = 1.0 + 0.05 * d_us + (base_ci.powi(2) + ci_half.powi(2)).sqrt();
            let ok = k == 0 || (err.abs() <= tol && v.len() >= 20);
            if !ok {
                bad.push(format!("{clock} D={d_us} us: shift {shift:.1} us"));
            }
            println!(
                "{:<8}{:>8.0}{:>7}{:>10.1}{:>10.1}{:>10.1}{:>11.1}  {}",
                clock,
                d_us,
                v.len(),
                p50,
                shift,
                err,
                tol,
                if k == 0 {
                    "reference"
                } else if ok {
                    "ok"
                } else {
                    "OFF"
                }
            );
        }
    }
    if !bad.is_empty() {
        bail!(
            "the measurement chain is off by more than 1 us + 5 % + the medians' uncertainty: {} (see {})",
            bad.join("; "),
            dir.display()
        );
    }
    println!("calibration: every shift within 1 us + 5 % (+ the medians' uncertainty) of the injected delay");
    Ok(())
}

/// Half the width (in us) of the distribution-free 95 % confidence interval of the median
/// of `sorted` (ns): the order statistics n/2 -+ 1.96 sqrt(n)/2.
fn median_ci_half_width(sorted: &[u64]) -> f64 {
    let n = sorted.len();
    if n < 2 {
        return f64::INFINITY;
    }
    let h = 0.98 * (n as f64).sqrt();
    let lo = (n as f64 / 2.0 - h).floor().max(0.0) as usize;
    let hi = ((n as f64 / 2.0 + h).ceil() as usize).min(n - 1);
    sorted[hi].saturating_sub(sorted[lo]) as f64 / 2.0 / 1e3
}

/// Kernel counters of one namespace: /proc/net/snmp (Ip, Udp, Tcp), /proc/net/netstat
/// (TcpExt), the driver's `ethtool -S` statistics and the interface's link statistics.
fn counters(ns: &netlab::Netns, ifname: &str) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for file in ["/proc/net/snmp", "/proc/net/netstat"] {
        let Ok(text) = ns.exec(&["cat", file]) else {
            continue;
        };
        let lines: Vec<&str> = text.lines().collect();
        for pair in lines.chunks(2) {
            let [names, values] = pair else { continue };
            let mut n = names.split_whitespace();
            let mut v = values.split_whitespace();
            let Some(proto) = n.next().map(|p| p.trim_end_matches(':').to_owned()) else {
                continue;
            };
            v.next();
            if !["Ip", "Udp", "Tcp", "TcpExt"].contains(&proto.as_str()) {
                continue;
            }
            for (name, value) in n.zip(v) {
                if let Ok(x) = value.parse::<i64>() {
                    out.insert(format!("{proto}.{name}"), x);
                }
            }
        }
    }
    if let Ok(text) = ns.exec(&["ethtool", "-S", ifname]) {
        for line in text.lines().skip(1) {
            if let Some((k, v)) = line.trim().split_once(':') {
                if let Ok(x) = v.trim().parse::<i64>() {
                    out.insert(format!("ethtool.{}", k.trim()), x);
                }
            }
        }
    }
    if let Ok(j) = ns.exec(&["ip", "-s", "-j", "link", "show", "dev", ifname]) {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&j) {
            let st = &v[0]["stats64"];
            for (dir, key) in [
                ("rx", "dropped"),
                ("rx", "errors"),
                ("tx", "dropped"),
                ("tx", "errors"),
                ("rx", "packets"),
                ("tx", "packets"),
            ] {
                if let Some(x) = st[dir][key].as_i64() {
                    out.insert(format!("link.{dir}_{key}"), x);
                }
            }
        }
    }
    out
}

/// Non-zero differences.
fn delta(before: &BTreeMap<String, i64>, after: &BTreeMap<String, i64>) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    for (k, v) in after {
        let d = v - before.get(k).copied().unwrap_or(0);
        if d != 0 && !k.ends_with("CurrEstab") {
            m.insert(k.clone(), serde_json::json!(d));
        }
    }
    serde_json::Value::Object(m)
}
