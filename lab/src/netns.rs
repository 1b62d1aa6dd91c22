//! The network-namespace lab.
//!
//! For each requested path and repetition: two fresh namespaces joined by veth
//! ([`netlab::VethLab`], removed on exit, on error and on Ctrl-C), `exchange serve` in one
//! (pinned to CPU 0, spinning), `strategy run --net PATH` in the other (pinned to CPU 1),
//! one session over the whole file. Then the exchange's received orders are checked against
//! the offline replay (the oracle), and the paths are compared ([`crate::report`]).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use netlab::VethLab;
use proto::order::OrderRepr;
use strategy::engine::EngineConfig;

use crate::key::RunKey;
use crate::process::Proc;
use crate::stats::pct;
use crate::{capture, data};
use crate::{Env, LabConfig, PathSpec, RunResult};

mod counters;
use counters::{both_counters, write_counter_deltas};
pub use counters::{counters, delta, CounterDeltas, Counters};

/// One file of an experiment: its load and pace, its gap (None: the file's own) and its
/// oracle.
pub(crate) struct Step {
    pub(crate) load: Option<u32>,
    pub(crate) pace: String,
    pub(crate) gap: Option<Duration>,
    pub(crate) md_file: PathBuf,
    pub(crate) oracle: Vec<OrderRepr>,
}

/// The files of an experiment: one per `--order-gap`, or the one file.
pub(crate) fn steps(env: &Env, a: &LabConfig) -> Result<Vec<Step>> {
    type File = (Option<u32>, String, Option<Duration>, PathBuf);
    let files: Vec<File> = if !a.loads.is_empty() {
        let quiet = data::pace_rate(&a.pace).with_context(|| {
            format!(
                "--load: load 0 is the `rate:PPS` pace's feed (got `{}`)",
                a.pace
            )
        })?;
        if a.order_gaps.is_empty() {
            bail!("--load places its triggers at the --order-gap gaps: give at least one");
        }
        let mut files = Vec::new();
        for &load in &a.loads {
            let rate = if load == 0 { quiet } else { load };
            for &g in &a.order_gaps {
                let lines = mdfile::mdgen::lines_for_gap(g, rate);
                let orders = crate::load::orders_that_fit(a.orders_per_gap, lines);
                let md = data::gap_md_file(env, g, rate, orders)?;
                // The key holds the rate the feed ran at (load 0: the quiet feed's).
                files.push((Some(rate), format!("rate:{rate}"), Some(g), md));
            }
        }
        files
    } else if a.order_gaps.is_empty() {
        let md = match &a.md_file {
            Some(f) => f.clone(),
            None => data::ensure_md_file(&data::default_md_file(env), false)?,
        };
        vec![(None, a.pace.clone(), None, md)]
    } else {
        let rate = data::pace_rate(&a.pace).with_context(|| {
            format!(
                "--order-gap needs a `rate:PPS` pace to place the orders (got `{}`)",
                a.pace
            )
        })?;
        a.order_gaps
            .iter()
            .map(|&g| {
                Ok((
                    None,
                    a.pace.clone(),
                    Some(g),
                    data::gap_md_file(env, g, rate, a.orders_per_gap)?,
                ))
            })
            .collect::<Result<_>>()?
    };
    files
        .into_iter()
        .map(|(load, pace, gap, md_file)| {
            let oracle = strategy::replay::replay(&md_file, EngineConfig::default())
                .context("replaying the file (oracle)")?;
            println!(
                "oracle: {} orders from {} lines of {}",
                oracle.orders.len(),
                oracle.lines,
                md_file.display()
            );
            Ok(Step {
                load,
                pace,
                gap,
                md_file,
                oracle: oracle.orders,
            })
        })
        .collect()
}

/// Runs the namespace lab: per file (one per gap), the floor at that gap and every path
/// and repetition; then the report and the oracle check (an error when any run's orders
/// differ). Returns the results folder.
pub fn run(env: &Env, a: &LabConfig) -> Result<PathBuf> {
    if !netlab::is_root() {
        bail!("the lab creates network namespaces: run it as root");
    }
    let dir = crate::results_dir(env, a, "")?;
    let stop = crate::stop_flag()?;
    let steps = steps(env, a)?;
    // The UMEM of 4096 x 2 KiB frames is 8 MiB: 4 pages, 16 with room to spare.
    let _huge = if a.paths.iter().any(PathSpec::uses_hugepages) {
        Some(crate::hugepages::HugePages::reserve(16)?)
    } else {
        None
    };
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
    crate::probe::write(env, &dir)?;
    let xdp_pass = a.paths.iter().any(PathSpec::sends_with_xdp_tx);
    if xdp_pass {
        println!(
            "exchange side: a bare XDP_PASS program on {} for every path (a veth delivers its \
             peer's XDP_TX frames only to an XDP program; the same receive path for all)",
            VethLab::EXCHANGE_IF
        );
    }
    let tunes = crate::vm::tune::parse(&a.veth_tunes)?;
    if let Some(t) = tunes.iter().find(|t| t.name == "busypoll") {
        bail!(
            "--veth-tune {}: net.core.busy_poll is a global sysctl (not per namespace); use the path variant kernel+busypoll (SO_BUSY_POLL on the socket) instead",
            t.name
        );
    }
    let variants: Vec<Option<&crate::vm::tune::Tune>> = std::iter::once(None)
        .chain(tunes.iter().map(Some))
        .collect();
    let mut results = Vec::new();
    let mut floors = Vec::new();
    let mut measured: Vec<Duration> = Vec::new();
    for step in &steps {
        let floor_gap = step.gap.unwrap_or(Duration::ZERO);
        if let Some(l) = step.load {
            println!(
                "load {} packets/s ({}), triggers {} apart",
                crate::load::rate_label(l),
                step.pace,
                data::gap_label(floor_gap)
            );
        }
        // The link's floor once per gap (a bare ping-pong, with the first file's feed rate
        // running through the gaps).
        if !measured.contains(&floor_gap) {
            let feed = step
                .load
                .or_else(|| data::pace_rate(&step.pace))
                .unwrap_or(0);
            let floor = crate::floor::measure(pin, floor_gap, feed, a.floor_time)
                .context("the ping-pong floor")?;
            println!(
                "floor at gap {} with a {} feed through the gaps (bare ping-pong, same link and CPUs, {} round trips each): UDP p50 {:.1} p99 {:.1} us, TCP_NODELAY p50 {:.1} p99 {:.1} us",
                data::gap_label(floor_gap),
                crate::load::rate_label(feed) + "/s",
                floor.0.len(),
                pct(&floor.0, 0.5),
                pct(&floor.0, 0.99),
                pct(&floor.1, 0.5),
                pct(&floor.1, 0.99)
            );
            floors.push(crate::report::Floor::new(step.gap, &floor));
            measured.push(floor_gap);
        }
        let stamp_ids = data::write_oracle_ids(&dir, &step.md_file, &step.oracle)?;
        for run in 1..=a.runs {
            for (path, tune) in a
                .paths
                .iter()
                .flat_map(|p| variants.iter().map(move |t| (p, *t)))
            {
                let expected = crate::oracle::expected(path, &step.oracle);
                let ctx = RunCtx {
                    env,
                    a,
                    md_file: &step.md_file,
                    stamp_ids: Some(&stamp_ids),
                    dir: &dir,
                    pin,
                    oracle: &expected,
                    stop,
                    gap: step.gap,
                    load: step.load,
                    pace: &step.pace,
                    heartbeats: a.paths.iter().any(PathSpec::sends_heartbeats),
                    xdp_pass,
                };
                let r = one_run(&ctx, (path, tune), run)
                    .with_context(|| format!("path {path}, run {run}"))?;
                results.push(r);
            }
        }
    }
    crate::report::report(&dir, &results, &floors)?;
    crate::check(&dir, &results)?;
    Ok(dir)
}

/// The highest paced rate at which a run's session may end at its expected orders.
const QUIET_RATE: u32 = 50_000;

/// The CPU the strategy is pinned to (the exchange's is 0) on a machine with two or more.
const STRATEGY_CPU: usize = 1;

/// What every run of one experiment shares.
pub struct RunCtx<'a> {
    /// Binaries and folders.
    pub env: &'a Env,
    /// The experiment.
    pub a: &'a LabConfig,
    /// The market-data file.
    pub md_file: &'a Path,
    /// The trigger ids whose first packet the exchange stamps (the oracle's; None: every
    /// id's).
    pub stamp_ids: Option<&'a Path>,
    /// The results folder.
    pub dir: &'a Path,
    /// Pin the exchange to CPU 0 and the strategy to CPU 1.
    pub pin: bool,
    /// The oracle's orders.
    pub oracle: &'a [OrderRepr],
    /// Ctrl-C.
    pub stop: &'a AtomicBool,
    /// The gap the file was made for.
    pub gap: Option<Duration>,
    /// The feed's rate around the triggers (`--load`).
    pub load: Option<u32>,
    /// The exchange's pace for this file.
    pub pace: &'a str,
    /// The exchange accepts heartbeats (some path of the experiment sends them; the same
    /// exchange settings for every path, so that they compare like with like).
    pub heartbeats: bool,
    /// Attach a bare XDP_PASS program to the exchange's veth (some path is `xdp-tx`; then
    /// for every path, for the same reason).
    pub xdp_pass: bool,
}

impl RunCtx<'_> {
    fn file(&self, tag: &str, suffix: &str) -> PathBuf {
        // A tag is `RunKey::tag`.
        self.dir.join(format!("{tag}.{suffix}"))
    }

    /// `env [taskset -c CPU]`: the command a process of the run starts with.
    fn pinned(&self, ns: &netlab::Netns, cpu: &str) -> Command {
        let mut c = ns.command("env");
        if self.pin {
            c.args(["taskset", "-c", cpu]);
        }
        c
    }
}

/// One run of one path: fresh namespaces, the exchange and the strategy for one session,
/// the kernel counters of both sides, the oracle check.
pub(crate) fn one_run(
    ctx: &RunCtx<'_>,
    (path, tune): (&PathSpec, Option<&crate::vm::tune::Tune>),
    run: u32,
) -> Result<RunResult> {
    let key = RunKey {
        gap: ctx.gap,
        load: ctx.load,
        tune: tune.map(|t| t.name.clone()),
        ..RunKey::new(path.clone(), run)
    };
    let tag = key.tag();
    let lab = VethLab::new("lab")
        .context("creating namespaces (is iproute2 installed? are you root?)")?;
    let tuned = match tune {
        Some(t) => {
            let out = lab.strategy.exec(&[
                "sh",
                "-c",
                &format!("IF={}\n{}", VethLab::STRATEGY_IF, t.script()),
            ])?;
            let back = crate::vm::tune::readback(&out)
                .unwrap_or_else(|| "(no read-back: the commands failed?)".into());
            println!(
                "  {tag}: {} read back on {}: {}",
                t.name,
                VethLab::STRATEGY_IF,
                back.replace('\n', "; ")
            );
            fs::write(ctx.file(&tag, "tune.txt"), &back)?;
            Some(back)
        }
        None => None,
    };
    let (ex_csv, ex_sum, st_sum) = (
        ctx.file(&tag, "exchange.csv"),
        ctx.file(&tag, "exchange.jsonl"),
        ctx.file(&tag, "strategy.jsonl"),
    );
    for f in [
        &ex_csv,
        &ex_sum,
        &st_sum,
        &ctx.file(&tag, "strategy-orders.csv"),
    ] {
        let _ = fs::remove_file(f);
    }
    let pass = if ctx.xdp_pass {
        Some(spawn_xdp_pass(ctx, &lab, &tag)?)
    } else {
        None
    };
    let before = both_counters(&lab);
    // The strategy's CPU, when pinned: what the machine took from it during the run.
    let cpu_before = ctx
        .pin
        .then(|| crate::cpustat::CpuTicks::read(STRATEGY_CPU))
        .flatten();
    let capture = if ctx.a.pcap {
        Some(capture::start(&lab.exchange, ctx.dir, &tag)?)
    } else {
        None
    };
    let tracer = if ctx.a.trace {
        Some(crate::trace::start_for(&lab, ctx.oracle)?)
    } else {
        None
    };
    let mut ex = spawn_exchange(ctx, &lab, path, &tag)?;
    // The strategy once the exchange listens (a few ms; a fixed 200 ms before).
    ex.wait_for_log(
        &ctx.file(&tag, "exchange.log"),
        exchange::serve_cmd::LISTENING,
        Duration::from_secs(10),
    )?;
    let st = spawn_strategy(ctx, &lab, path, &tag)?;
    wait_both(ctx, ex, st, &tag)?;
    let stamps = tracer.map(crate::trace::Tracer::finish).transpose()?;
    let after = both_counters(&lab);
    let strategy_cpu = cpu_before
        .zip(crate::cpustat::CpuTicks::read(STRATEGY_CPU))
        .map(|(b, a)| b.away_until(a, STRATEGY_CPU));
    if let Some(c) = capture {
        capture::stop(c, &ctx.file(&tag, "pcap"));
    }
    if let Some(p) = pass {
        p.interrupt();
    }
    drop(lab);
    write_counter_deltas(ctx, &tag, (&before, &after), path.sends_heartbeats())?;
    let files = crate::oracle::RunFiles {
        exchange_csv: ex_csv,
        exchange_summary: ex_sum,
        strategy_report: st_sum,
        strategy_orders: ctx.file(&tag, "strategy-orders.csv"),
    };
    let mut r = crate::oracle::collect(key, ctx.gap, ctx.md_file, ctx.oracle, &files)?;
    r.tune_readback = tuned;
    r.strategy_cpu = strategy_cpu;
    if let Some(s) = stamps {
        r.trace = Some(crate::trace::waterfall::run_files(
            &files,
            &s,
            path.sends_with_xdp_tx(),
            &ctx.file(&tag, "trace.csv"),
        )?);
    }
    Ok(r)
}

fn spawn_exchange(ctx: &RunCtx<'_>, lab: &VethLab, path: &PathSpec, tag: &str) -> Result<Proc> {
    let serve = exchange::serve_cmd::ServeCmd::new(ctx.md_file, "10.77.0.1:9012")
        .md_iface(VethLab::EXCHANGE_IF)
        .md_tx(ctx.a.md_tx)
        // The file inflated once, at the exchange's start: no decompression in its
        // publishing loop (docs/results/load.md, the publisher).
        .preload(true)
        // Only the strategy's addresses get a session.
        .allow_peers(&[VethLab::STRATEGY_ADDR, VethLab::STRATEGY_OWN_IP])
        .stamp_ids(ctx.stamp_ids)
        // A floor run: the same ids marked for the reflecting strategy.
        .mark_ids(ctx.stamp_ids.filter(|_| path.reflects()))
        .sessions(1)
        .spin(true)
        .quiet_orders(true)
        .pace(ctx.pace)
        .heartbeats(ctx.heartbeats)
        .warm_rx_every(ctx.a.exchange_warm)
        .results(&ctx.file(tag, "exchange.csv"))
        .summary(&ctx.file(tag, "exchange.jsonl"))
        .extra(ctx.a.exchange_flags.split_whitespace());
    // In a quiet feed the session ends once the oracle's orders are in (the grace, 500 ms,
    // is the ceiling for a run with fewer; the strategy's own count catches any order
    // more). Not under load: a strategy behind the feed, or one that lost packets, can
    // bring as many orders as the oracle's (different ones) with market data still
    // queued, which must reach it for every packet to be accounted for. One veth queue:
    // the order connection's end cannot overtake the market data (docs/decisions.md).
    // (No expected orders: the whole grace, so the feed's tail reaches the strategy.)
    let quiet = ctx.load.unwrap_or(0) == 0
        && !ctx.oracle.is_empty()
        && crate::data::pace_rate(ctx.pace).is_some_and(|r| r <= QUIET_RATE);
    let serve = if quiet {
        serve.expect_orders(ctx.oracle.len() as u64)
    } else {
        serve
    };
    let mut ex = ctx.pinned(&lab.exchange, "0");
    ex.arg(ctx.env.bin("exchange"))
        .args(serve.args())
        .stdout(Stdio::null())
        .stderr(fs::File::create(ctx.file(tag, "exchange.log"))?);
    Proc::spawn("exchange", &mut ex)
}

/// `strategy xdp-pass` on the exchange's veth, once it says it is attached.
fn spawn_xdp_pass(ctx: &RunCtx<'_>, lab: &VethLab, tag: &str) -> Result<Proc> {
    use std::io::BufRead;
    let mut c = lab.exchange.command(ctx.env.bin("strategy"));
    c.args(["xdp-pass", "--iface", VethLab::EXCHANGE_IF])
        .stdout(Stdio::piped())
        .stderr(fs::File::create(ctx.file(tag, "xdp-pass.log"))?);
    let mut p = Proc::spawn("xdp-pass", &mut c)?;
    let mut line = String::new();
    if let Some(out) = p.child.stdout.take() {
        std::io::BufReader::new(out).read_line(&mut line)?;
    }
    if !line.contains("attached") {
        bail!(
            "strategy xdp-pass did not attach (see {}.xdp-pass.log)",
            tag
        );
    }
    Ok(p)
}

fn spawn_strategy(ctx: &RunCtx<'_>, lab: &VethLab, path: &PathSpec, tag: &str) -> Result<Proc> {
    let mut st = ctx.pinned(&lab.strategy, &STRATEGY_CPU.to_string());
    st.arg(ctx.env.bin("strategy"))
        .args([
            "run",
            "--exchange",
            "10.77.0.1:9012",
            "--iface",
            VethLab::STRATEGY_IF,
            "--sessions",
            "1",
        ])
        .args(path.strategy_args(ctx.a.warm_every))
        .arg("--results")
        .arg(ctx.file(tag, "strategy.jsonl"))
        .arg("--orders-out")
        .arg(ctx.file(tag, "strategy-orders.csv"))
        // AF_PACKET: smoltcp's own address on the link (the kernel must not own it).
        .args(
            path.needs_own_ip()
                .then(|| {
                    [
                        "--packet-ip".to_owned(),
                        VethLab::STRATEGY_OWN_IP.to_string(),
                    ]
                })
                .into_iter()
                .flatten(),
        )
        .args(ctx.a.strategy_flags.split_whitespace())
        .stdout(fs::File::create(ctx.file(tag, "strategy.out"))?)
        .stderr(fs::File::create(ctx.file(tag, "strategy.log"))?);
    Proc::spawn("strategy", &mut st)
}

/// Waits for both processes to exit successfully, within the run's time limit; Ctrl-C or a
/// failure ends the run (the guards kill what is left).
fn wait_both(ctx: &RunCtx<'_>, ex: Proc, st: Proc, tag: &str) -> Result<()> {
    wait_pair(
        ctx.stop,
        Duration::from_secs(ctx.a.timeout),
        ctx.dir,
        (ex, st),
        tag,
    )
}

/// [`wait_both`] with its limits given: `stop` (Ctrl-C), `limit`, the logs' folder.
pub(crate) fn wait_pair(
    stop: &AtomicBool,
    limit: Duration,
    dir: &Path,
    (mut ex, mut st): (Proc, Proc),
    tag: &str,
) -> Result<()> {
    let t0 = Instant::now();
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
        } else if ticks.is_multiple_of(250) {
            println!("  {tag}: running {:>5.1} s", t0.elapsed().as_secs_f64());
        }
        // 20 ms: the session's end is seen within a few ms of the last process's exit.
        std::thread::sleep(Duration::from_millis(20));
    }
    println!(
        "\r  {tag}: done in {:.1} s        ",
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
