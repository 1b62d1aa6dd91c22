//! The lab end to end, as the test command runs it (root, release binaries, the XDP
//! program): the measurement chain calibrated by injected delays, `lab compare` on real
//! orders, captures matched to the results, the gap axis with warming, and the report
//! rendered by real renderers. Ignored by a plain `cargo test` (they need root and the
//! release binaries); `cargo xtask test` runs them with `--ignored`.

mod common;

use std::process::Command;

use anyhow::{Context, Result};
use common::{cmd, test_lab};
use lab::{Env, LabConfig};
use strategy::net::NetKind;

/// The lab runs of this file share the two pinned CPUs when the harness runs them at once;
/// two take them alone: the traced run (where the kernel stamps a segment depends on the
/// exchange getting its CPU, docs/measurement.md) and the capacity search (a path's limit
/// is its own only without another lab on its CPU). The rest check their own orders and
/// counts, which contention does not change.
static CPUS: std::sync::RwLock<()> = std::sync::RwLock::new(());

fn shared() -> std::sync::RwLockReadGuard<'static, ()> {
    CPUS.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn alone() -> std::sync::RwLockWriteGuard<'static, ()> {
    CPUS.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn ready() -> bool {
    match common::cannot_run() {
        Some(why) => {
            eprintln!("skipped: {why}");
            false
        }
        None => true,
    }
}

/// The measurement chain: injected delays must show up as p50 shifts (1 us + 5 %, widened
/// by the medians' 95 % confidence); then `lab compare` on the same orders.
#[test]
#[ignore = "needs root and the release binaries: cargo xtask test runs it"]
fn calibration_then_compare_on_real_orders() -> Result<()> {
    if !ready() {
        return Ok(());
    }
    let _shared = shared();
    let env = Env::workspace();
    lab::calibrate::run(
        &env,
        &test_lab(
            &["kernel"],
            None,
            env.results_root().join("calibrate-test"),
            "rate:5000",
        ),
    )?;
    compare_check(&env)
}

/// Captures: the analyzer must find on the wire exactly the orders the results list.
#[test]
#[ignore = "needs root and the release binaries: cargo xtask test runs it"]
fn captured_orders_equal_the_results() -> Result<()> {
    if !ready() {
        return Ok(());
    }
    let _shared = shared();
    let env = Env::workspace();
    let pcap_dir = env.results_root().join("pcap-test");
    let _ = std::fs::remove_dir_all(&pcap_dir);
    std::fs::create_dir_all(&pcap_dir)?;
    let small = pcap_dir.join("md-small.csv.gz");
    mdfile::mdgen::generate(
        &small,
        &mdfile::mdgen::GenConfig {
            target_bytes: 40_000,
            depth: 60,
            trigger_every: 80,
            ..Default::default()
        },
    )?;
    lab::netns::run(
        &env,
        &LabConfig {
            pcap: true,
            ..test_lab(
                &["kernel", "xdp"],
                Some(small),
                pcap_dir.clone(),
                "rate:5000",
            )
        },
    )?;
    lab::capture::run(&pcap_dir)
}

/// The gap as an axis, and warming: two gaps, a cold and a warmed path; fails unless every
/// run's orders equal the oracle (heartbeats included, which the exchange must count
/// apart); then the report, rendered.
#[test]
#[ignore = "needs root and the release binaries: cargo xtask test runs it"]
fn two_gaps_warm_and_cold_and_the_report_renders() -> Result<()> {
    if !ready() {
        return Ok(());
    }
    let _shared = shared();
    let env = Env::workspace();
    lab::netns::run(
        &env,
        &LabConfig {
            order_gaps: vec![
                std::time::Duration::from_millis(1),
                std::time::Duration::from_millis(20),
            ],
            orders_per_gap: 12,
            ..test_lab(
                &["kernel", "xdp+warm"],
                None,
                env.results_root().join("gap-test"),
                "rate:5000",
            )
        },
    )?;
    let dir = env.results_root().join("gap-test");
    // What made the figures, typed, in the folder and in its report: the machine the run
    // measured on and the code (a commit wherever the tests run from a git checkout).
    let m = lab::manifest::Manifest::read(&dir)?.context("the folder's manifest.json")?;
    anyhow::ensure!(
        m.machine.kernel.is_some()
            && m.machine.cpus_online.is_some_and(|n| n >= 2)
            && m.command.iter().any(|a| a.contains("lab_runs"))
            && (m.code.commit.is_some() || !env.root.join(".git").exists()),
        "the manifest: {m:?}"
    );
    let report = std::fs::read_to_string(dir.join("report.html"))?;
    anyhow::ensure!(
        report.contains("The machine and the code") && report.contains(&m.code.short()),
        "the report names the machine and the code"
    );
    // The logs of a results folder are plain text: no terminal colour codes.
    for e in std::fs::read_dir(&dir)?.filter_map(Result::ok) {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "log") {
            let text = std::fs::read_to_string(&p)?;
            anyhow::ensure!(
                !text.contains('\x1b'),
                "{} holds ANSI escape codes",
                p.display()
            );
        }
    }
    render_check(&dir)
}

/// The floor measured like the orders: each path with `+reflect` on the same file, pace and
/// gap, the exchange marking the oracle's triggers: every floor run answers exactly the
/// marked triggers (one reflect order per id, in order), through its own path, without
/// parsing a line (its engine counted no malformed or stale line), beside a normal run.
#[test]
#[ignore = "needs root and the release binaries: cargo xtask test runs it"]
fn floor_runs_answer_exactly_the_marked_triggers_on_every_path() -> Result<()> {
    if !ready() {
        return Ok(());
    }
    let _shared = shared();
    let (dir, runs) = one_ms_runs(
        "floor-test",
        &[
            "kernel",
            "kernel+reflect",
            "uring+defer+inline+reflect",
            "xdp+reflect",
            "packet+reflect",
        ],
        false,
    )?;
    anyhow::ensure!(runs.len() == 5);
    anyhow::ensure!(
        runs.iter().all(|r| r.trace.is_none())
            && !std::fs::read_dir(&dir)?
                .filter_map(|e| e.ok())
                .any(|e| e.file_name().to_string_lossy().ends_with(".trace.csv")),
        "a run without --trace traces nothing"
    );
    for r in &runs {
        anyhow::ensure!(
            r.orders_match && r.orders_expected >= 10,
            "{}: the expected orders ({} of {})",
            r.key,
            r.orders_received,
            r.orders_expected
        );
        let s = r.strategy.as_ref().context("a strategy report")?;
        if r.key.path.reflects() {
            anyhow::ensure!(
                s.engine.malformed == 0 && s.engine.stale == 0,
                "{}: nothing parsed",
                r.key
            );
        }
    }
    Ok(())
}

/// `kernel+wire`: the strategy's own wire-to-wire time on the kernel's clock, each order's
/// from its trigger packet's receive stamp to its own transmit stamp (matched by stream
/// offset): present for (nearly) every order, positive and inside the exchange's
/// kernel-stamp tick-to-trade of the same order (both clocks are this host's
/// CLOCK_REALTIME: the exchange's transmit stamp comes before the strategy's receive, the
/// strategy's transmit before the exchange's receive; a stamp matched to the wrong order
/// breaks that). The NIC's clock is absent, with veth's reason; a run without `+wire` has
/// no stamps.
#[test]
#[ignore = "needs root and the release binaries: cargo xtask test runs it"]
fn wire_stamps_place_the_strategy_inside_the_tick_to_trade() -> Result<()> {
    if !ready() {
        return Ok(());
    }
    let _shared = shared();
    let (dir, runs) = one_ms_runs("wire-test", &["kernel", "kernel+wire"], false)?;
    anyhow::ensure!(runs.len() == 2);
    for r in &runs {
        anyhow::ensure!(r.orders_match, "{}: orders equal the oracle", r.key);
        let tag = r.key.tag();
        let (_, st) = mdfile::orders::read_rows(&dir.join(format!("{tag}.strategy-orders.csv")))?;
        let (_, ex) = mdfile::orders::read_rows(&dir.join(format!("{tag}.exchange.csv")))?;
        let report = r.strategy.as_ref().context("a strategy report")?;
        let wire: Vec<(u64, Option<u64>)> = st
            .iter()
            .map(|o| (o.order.trigger_id, o.stages.and_then(|s| s.wire_kernel_ns)))
            .collect();
        if !r.key.path.has(strategy::spec::Variant::Wire) {
            anyhow::ensure!(
                wire.iter().all(|w| w.1.is_none()) && report.wire.is_none(),
                "{}: stamps without +wire",
                r.key
            );
            continue;
        }
        let w = report.wire.as_ref().context("a wire report")?;
        anyhow::ensure!(
            w.nic_phc.is_none() && w.nic_off.as_deref().is_some_and(|m| m.contains("software")),
            "{}: veth has no NIC clock, and the report says why: {w:?}",
            r.key
        );
        // The same orders in the same order on both sides (the oracle check above).
        anyhow::ensure!(ex.len() == wire.len(), "{}: rows on both sides", r.key);
        let mut inside = 0;
        for ((id, k), e) in wire.iter().zip(&ex) {
            anyhow::ensure!(
                e.order.trigger_id == *id,
                "{}: rows in the same order",
                r.key
            );
            let Some(k) = k else { continue };
            let t2t = e
                .timing
                .and_then(|t| t.kernel_t2t_ns())
                .context("the exchange's kernel-stamp tick-to-trade")?;
            anyhow::ensure!(
                *k > 0 && *k <= t2t,
                "{}: order {id}: the strategy's {k} ns on the kernel clock, the whole tick-to-trade {t2t} ns",
                r.key
            );
            inside += 1;
        }
        anyhow::ensure!(
            inside * 10 >= wire.len() * 9 && w.tx_kernel as usize == inside,
            "{}: {inside} of {} orders with both stamps ({w:?})",
            r.key,
            wire.len()
        );
        let medians = r.stages.as_ref().context("stage medians")?;
        anyhow::ensure!(
            medians.wire_kernel_us.is_some() && medians.wire_nic_us.is_none(),
            "{}: {medians:?}",
            r.key
        );
    }
    Ok(())
}

/// The waterfall: every order of every path passes the points its path has and none it
/// has not, the kernel's own stamps land inside the traced bounds, and nothing stays
/// loaded after the run.
#[test]
#[ignore = "needs root and the release binaries: cargo xtask test runs it"]
fn traced_orders_pass_their_paths_points_and_add_up() -> Result<()> {
    if !ready() {
        return Ok(());
    }
    let _alone = alone();
    if !lab::trace::has_object() {
        anyhow::bail!("the lab was built without the tracing programs (cargo xtask build-ebpf)");
    }
    let (dir, runs) = one_ms_runs("trace-test", &["kernel", "packet", "xdp", "xdp-tx"], true)?;
    anyhow::ensure!(runs.len() == 4);
    let (mut compared, mut inside) = (0, 0);
    for r in &runs {
        let w = r.trace.as_ref().context("a traced run has its waterfall")?;
        anyhow::ensure!(r.orders_match && w.orders == r.orders_received, "{}", r.key);
        let text = std::fs::read_to_string(dir.join(format!("{}.trace.csv", r.key.tag())))?;
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().context("a header")?.split(',').collect();
        let col = |name: &str| header.iter().position(|h| *h == name).context("a column");
        let kind = r.key.path.kind();
        let kernel_tcp = matches!(kind, NetKind::Kernel | NetKind::Uring);
        let xdp = r.key.path.needs_ebpf();
        let mut rows = 0;
        for line in lines {
            let f: Vec<&str> = line.split(',').collect();
            let has = |name: &str| -> Result<bool> { Ok(!f[col(name)?].is_empty()) };
            for p in [
                "md_veth_xmit_ns",
                "md_kernel_tx_stamp_ns",
                "strategy_read_ns",
                "order_veth_rx_ns",
                "order_netif_recv_ns",
                "order_kernel_rx_stamp_ns",
                "exchange_tcp_rx_ns",
                "exchange_read_ns",
            ] {
                anyhow::ensure!(has(p)?, "{}: {p} missing in `{line}`", r.key);
            }
            anyhow::ensure!(
                has("order_veth_xmit_ns")? == kernel_tcp,
                "{}: only the kernel's TCP passes the strategy's veth transmit: `{line}`",
                r.key
            );
            anyhow::ensure!(
                has("md_veth_rx_ns")? != xdp,
                "{}: an XDP program takes the packet before the stack: `{line}`",
                r.key
            );
            rows += 1;
        }
        anyhow::ensure!(rows == r.orders_received, "{}: one row per order", r.key);
        let a = w.add_up.as_ref().context("the add-up check")?;
        compared += a.compared;
        inside += a.within;
    }
    // Where the kernel stamps, not how fast (the run has the CPUs to itself: `alone`); the
    // stamps are placed through a clock conversion, so a few may fall outside by noise;
    // most must be inside.
    anyhow::ensure!(
        inside * 10 >= compared * 8,
        "{inside} of {compared} orders inside the traced bounds"
    );
    let left: Vec<String> = aya::programs::loaded_programs()
        .filter_map(|p| p.ok())
        .filter_map(|p| p.name_as_str().map(str::to_owned))
        .filter(|n| n.starts_with("trace_"))
        .collect();
    anyhow::ensure!(left.is_empty(), "tracing programs still loaded: {left:?}");
    Ok(())
}

/// One run of each of `paths` on a file with 12 orders 1 ms apart, into results folder
/// `name` (`trace`: `--trace`); the folder and the runs as `runs.json` has them.
fn one_ms_runs(
    name: &str,
    paths: &[&str],
    trace: bool,
) -> Result<(std::path::PathBuf, Vec<lab::RunResult>)> {
    let env = Env::workspace();
    let dir = env.results_root().join(name);
    let _ = std::fs::remove_dir_all(&dir);
    lab::netns::run(
        &env,
        &LabConfig {
            order_gaps: vec![std::time::Duration::from_millis(1)],
            orders_per_gap: 12,
            trace,
            ..test_lab(paths, None, dir.clone(), "rate:5000")
        },
    )?;
    let runs = serde_json::from_str(&std::fs::read_to_string(dir.join("runs.json"))?)?;
    Ok((dir, runs))
}

/// Load as an axis: every path at the quiet feed and at 100 k packets/s, triggers 1 ms
/// apart. Every run's market data adds up (sent = handled + dropped by the path's own
/// count; `lab::check` fails otherwise), the quiet feed's orders equal the oracle, and the
/// loaded runs' orders equal it or differ only after counted drops.
#[test]
#[ignore = "needs root and the release binaries: cargo xtask test runs it"]
fn load_axis_accounts_for_every_packet() -> Result<()> {
    if !ready() {
        return Ok(());
    }
    let _shared = shared();
    let env = Env::workspace();
    let dir = env.results_root().join("load-test");
    let _ = std::fs::remove_dir_all(&dir);
    let cfg = LabConfig {
        loads: vec![0, 100_000],
        order_gaps: vec![std::time::Duration::from_millis(1)],
        orders_per_gap: 20,
        ..test_lab(
            &["kernel", "uring+defer+inline", "xdp", "packet", "xdp-tx"],
            None,
            dir.clone(),
            "rate:5000",
        )
    };
    lab::netns::run(&env, &cfg)?;
    let runs: Vec<lab::RunResult> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("runs.json"))?)?;
    anyhow::ensure!(runs.len() == 10, "5 paths x 2 loads: {}", runs.len());
    let two_cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2;
    for r in &runs {
        // The strategy's CPU is pinned on a machine of two: what it lost is measured.
        anyhow::ensure!(
            !two_cpus || r.strategy_cpu.is_some_and(|c| c.cpu == 1),
            "{}: the strategy CPU's steal and interrupts: {:?}",
            r.key,
            r.strategy_cpu
        );
        let a = r.accounting.context("every run has its packets counted")?;
        anyhow::ensure!(
            a.balanced && a.sent > 0,
            "{}: sent {} handled {} dropped {:?}",
            r.key,
            a.sent,
            a.handled,
            a.dropped
        );
        match (r.key.load, r.explained) {
            (Some(5000), e) => anyhow::ensure!(
                e == lab::load::Explained::Equal && a.lost() == 0,
                "{}: the quiet feed loses nothing and equals the oracle: {e:?}",
                r.key
            ),
            (Some(100_000), e) => {
                anyhow::ensure!(e != lab::load::Explained::No, "{}: {e:?}", r.key)
            }
            (l, _) => anyhow::bail!("{}: unexpected load {l:?}", r.key),
        }
    }
    anyhow::ensure!(dir.join("t2t_vs_load.svg").exists(), "the load plot");
    Ok(())
}

/// Capacity as a search, on every path slowed to a known pace (`--md-work 20us`: under
/// 50 k packets/s; a 64 KiB socket buffer on kernel sockets and io_uring; probes of 100
/// orders, about 100 ms, so that the AF_XDP rings' 2,048 frames absorb at most about
/// 20 k/s above that): well below what the publisher offers on a slow machine too (at
/// 10 us and 30 orders a probe, `xdp-tx`'s clean probe at 130 k/s found the publisher
/// short, the program's work on its CPU). The search
/// brackets a capacity on each; at the clean probe below it the orders equal the oracle's
/// and nothing is lost; at the lossy probe above it packets are lost and every one is
/// counted by the path (sent = handled + dropped; `capacity::run` fails otherwise), the
/// orders differing only by what the drops explain.
#[test]
#[ignore = "needs root and the release binaries: cargo xtask test runs it"]
fn capacity_search_brackets_every_path_with_every_packet_accounted() -> Result<()> {
    if !ready() {
        return Ok(());
    }
    // A path's capacity is its own only with the CPUs to itself.
    let _alone = alone();
    let env = Env::workspace();
    let dir = env.results_root().join("capacity-test");
    let _ = std::fs::remove_dir_all(&dir);
    let cfg = LabConfig {
        orders_per_gap: 100,
        md_tx: exchange::md_publisher::MdTx::Packet,
        strategy_flags: "--md-work 20us --md-rcvbuf 65536".into(),
        ..test_lab(
            &["kernel", "uring+defer+inline", "xdp", "packet", "xdp-tx"],
            None,
            dir.clone(),
            "rate:5000",
        )
    };
    let (_, table) = lab::capacity::run(&env, &cfg)?;
    anyhow::ensure!(table.len() == 5, "every path searched");
    for (path, c) in &table {
        let clean = c.clean.with_context(|| format!("{path}: a clean probe"))?;
        let lossy = c.lossy.with_context(|| format!("{path}: a lossy probe"))?;
        anyhow::ensure!(
            clean.equal && clean.lost == 0 && clean.accounted,
            "{path}: below capacity, the oracle and no loss: {clean:?}"
        );
        anyhow::ensure!(
            lossy.lost > 0 && lossy.accounted && lossy.offered > clean.offered,
            "{path}: above capacity, losses counted: {lossy:?}"
        );
        anyhow::ensure!(!c.publisher_bound, "{path}: the path, not the publisher");
    }
    anyhow::ensure!(dir.join("capacity.csv").exists() && dir.join("capacity.txt").exists());
    Ok(())
}

/// The report a person reads, rendered by real renderers: every SVG plot of a results folder
/// through librsvg (`rsvg-convert`, a PNG each), and `report.html` in headless Chromium (its
/// DOM after load must hold the tables and the inline plots; a screenshot is kept).
fn render_check(dir: &std::path::Path) -> Result<()> {
    // `cargo xtask test` installs librsvg2-bin and chromium before it runs this.
    let mut svgs = 0;
    for e in std::fs::read_dir(dir)?.filter_map(Result::ok) {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "svg") {
            let png = p.with_extension("png");
            cmd(
                "rsvg-convert",
                &["-o", &png.to_string_lossy(), &p.to_string_lossy()],
            )?;
            let size = std::fs::metadata(&png).map(|m| m.len()).unwrap_or(0);
            anyhow::ensure!(
                size > 5_000,
                "{} rendered to a near-empty PNG ({size} bytes)",
                p.display()
            );
            svgs += 1;
        }
    }
    anyhow::ensure!(
        svgs >= 2,
        "expected the CDF and the gap plot in {}",
        dir.display()
    );
    let html = dir.join("report.html");
    let url = format!("file://{}", html.display());
    let shot = dir.join("report.png");
    let chrome = |extra: &[&str]| -> Result<std::process::Output> {
        let mut c = Command::new("chromium");
        c.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--window-size=1300,2600",
        ])
        .args(extra)
        .arg(&url);
        c.output().context("running chromium")
    };
    let dom = chrome(&["--dump-dom"])?;
    let dom = String::from_utf8_lossy(&dom.stdout);
    anyhow::ensure!(
        dom.contains("Paths side by side") && dom.contains("<svg") && dom.contains("<table"),
        "chromium's DOM of {} lacks the tables or plots",
        html.display()
    );
    chrome(&[&format!("--screenshot={}", shot.display())])?;
    let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
    anyhow::ensure!(
        size > 20_000,
        "the report's screenshot is near-empty ({size} bytes)"
    );
    println!(
        "render check: {svgs} SVG plots rendered by librsvg; {} rendered by Chromium (screenshot {})",
        html.display(),
        shot.display()
    );
    Ok(())
}

/// `lab compare` on real orders: a run against itself shows no difference, and orders sent
/// with a 10 us injected delay against orders sent without are slower by 10 +/- 1 us
/// (kernel stamps). Both sets come from the calibration session, which cycles the delays
/// order by order: two separate runs differ by several us here from the machine alone
/// (measured: +5.1 us for a 10 us delay in one pair of runs, +9.7 in another), which would
/// mask what is being checked.
fn compare_check(env: &Env) -> Result<()> {
    use lab::compare::{compare, load, Clock, Verdict};
    let cal = env.results_root().join("calibrate-test");
    let base = env.results_root().join("compare-test");
    let _ = std::fs::remove_dir_all(&base);
    // trigger id -> the delay its order was sent with.
    let orders = std::fs::read_to_string(cal.join("kernel-1.strategy-orders.csv"))
        .context("the calibration run's strategy orders")?;
    let mut delay = std::collections::HashMap::new();
    for l in orders.lines().skip(1) {
        let f: Vec<&str> = l.split(',').collect();
        if let (Some(id), Some(d)) = (f.get(1), f.get(5)) {
            delay.insert((*id).to_owned(), (*d).to_owned());
        }
    }
    let ex = std::fs::read_to_string(cal.join("kernel-1.exchange.csv"))
        .context("the calibration run's exchange rows")?;
    let mut lines = ex.lines();
    let header = lines.next().unwrap_or_default();
    for (name, want) in [("plain", "0"), ("delay10", "10000")] {
        let dir = base.join(name);
        std::fs::create_dir_all(&dir)?;
        let mut out = format!("{header}\n");
        for l in ex.lines().skip(1) {
            let id = l.split(',').nth(1).unwrap_or_default();
            if delay.get(id).map(String::as_str) == Some(want) {
                out.push_str(l);
                out.push('\n');
            }
        }
        std::fs::write(dir.join("kernel-1.exchange.csv"), out)?;
    }
    let (sa, sb) = (
        load(&base.join("plain"), Clock::Kernel)?,
        load(&base.join("delay10"), Clock::Kernel)?,
    );
    let same = compare(&sa, &sa);
    anyhow::ensure!(
        !same.is_empty() && same.iter().all(|r| r.verdict == Verdict::NoDifference),
        "a run against itself must show no difference"
    );
    let rows = compare(&sa, &sb);
    let r = rows.first().context("no path compared")?;
    let half = (r.ci_us.1 - r.ci_us.0) / 2.0;
    println!(
        "compare check: 10 us injected (same session, interleaved): B - A = {:+.2} us [{:+.2}, {:+.2}], {:?}",
        r.diff_us, r.ci_us.0, r.ci_us.1, r.verdict
    );
    anyhow::ensure!(
        r.verdict == Verdict::Slower && (r.diff_us - 10.0).abs() <= 1.0 + half,
        "an injected 10 us delay must compare as slower by 10 +/- 1 us: {:+.2} [{:+.2}, {:+.2}]",
        r.diff_us,
        r.ci_us.0,
        r.ci_us.1
    );
    Ok(())
}
