//! Soak: 1,000 sessions of the strategy with `--reconnect` against one exchange, on each of
//! kernel, uring, xdp and packet (each in its own pair of namespaces, two at a time).
//! Every session's orders equal the oracle; the strategy's descriptors (by kind: sockets,
//! BPF objects, io_uring instances) and resident memory in its last 50 sessions are no
//! higher than in its first 50 (memory within 1 MiB: a leak of 1 KiB per session would
//! show as ~1 MiB); the exchange's likewise; every raw-ring session accounts for every
//! frame and every io_uring session got every buffer back; no XDP program stays attached
//! or loaded. Needs root; skipped with a printed reason otherwise.
//!
//! `NIC_LAB_SOAK_SESSIONS` overrides the number of sessions (a quicker local run).

#[path = "common/procs.rs"]
mod procs;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use netlab::VethLab;
use procs::{Order, Proc};
use strategy::net::PathReport;
use strategy::runtime::SessionReport;

const WINDOW: usize = 50;
const RSS_SLACK_KIB: u64 = 1024;

fn session_count() -> usize {
    std::env::var("NIC_LAB_SOAK_SESSIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
        .max(2 * WINDOW)
}

/// Descriptors and memory of another process, from /proc.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    fds: u64,
    rss_kib: u64,
}

fn sample(pid: u32) -> Option<Sample> {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(Sample { fds, rss_kib })
}

fn lines_in(p: &Path) -> usize {
    std::fs::read_to_string(p).map_or(0, |s| s.lines().count())
}

/// The soak of one path: `Err` with what went wrong.
fn soak(net: &'static str, tag: &str, dir: &Path, md: &Path, want: &[Order]) -> Result<(), String> {
    let n = session_count();
    let lab = VethLab::new(tag).map_err(|e| format!("{net}: lab: {e}"))?;
    let f = |s: &str| dir.join(format!("{net}.{s}"));
    let (csv, results, exlog, stlog) = (f("ex.csv"), f("st.jsonl"), f("ex.log"), f("st.log"));
    let summary = PathBuf::from(format!("{}.summary.jsonl", csv.display()));
    let sessions = n.to_string();
    let expect = want.len().to_string();
    let mut ex = procs::exchange(
        &lab.exchange,
        md,
        &csv,
        &exlog,
        &[
            "--sessions",
            &sessions,
            "--handshake-delay",
            "0ms",
            // A session ends once the oracle's orders are in; the grace is only the ceiling
            // for one that got fewer, long enough for a strategy that lost the CPU for a
            // while (four busy loops on two CPUs): a fixed 20 ms grace once ended one kernel
            // session in 1,000 before its orders arrived (docs/reliability.md). An order
            // beyond the oracle's would still show in the strategy's own count below.
            "--expect-orders",
            &expect,
            "--grace",
            "1s",
            "--pace",
            "rate:50000",
        ],
    );
    std::thread::sleep(Duration::from_millis(100));
    let mut st = procs::strategy(
        &lab.strategy,
        net,
        &stlog,
        &[
            "--reconnect",
            "--sessions",
            &sessions,
            "--max-runtime",
            "600",
            "--results",
            results.to_str().ok_or("utf8")?,
        ],
    );
    // The exchange is sampled from outside in its first and last WINDOW sessions.
    let (mut first, mut last) = (Sample::default(), Sample::default());
    let t0 = Instant::now();
    let limit = Duration::from_secs(600);
    while st.0.try_wait().map_err(|e| e.to_string())?.is_none() {
        if t0.elapsed() > limit {
            return Err(format!(
                "{net}: not done in {limit:?}\n{}",
                procs::tail(&stlog)
            ));
        }
        let done = lines_in(&summary);
        if let Some(s) = sample(ex.0.id()) {
            let w = if done < WINDOW {
                &mut first
            } else if done >= n - WINDOW {
                &mut last
            } else {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            w.fds = w.fds.max(s.fds);
            w.rss_kib = w.rss_kib.max(s.rss_kib);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let status = st.0.wait().map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!("{net}: strategy {status}\n{}", procs::tail(&stlog)));
    }
    wait_exit(&mut ex, net, &exlog)?;
    // Every session's orders equal the oracle.
    let by_session = procs::orders_by_session(&csv);
    if by_session.len() != n {
        // Which sessions, and what the strategy says it sent in them: a strategy that sent
        // its orders into a session the exchange had already ended is not one that sent none.
        let reports = procs::reports(&results);
        let missing: Vec<String> = (1..=n as u64)
            .filter(|s| !by_session.contains_key(s))
            .map(|s| {
                let sent =
                    reports
                        .iter()
                        .find(|r| r.session == s)
                        .map_or("no report".to_owned(), |r| {
                            format!(
                                "strategy: {} packets, {} orders",
                                r.path.packets, r.path.orders
                            )
                        });
                format!("session {s} ({sent})")
            })
            .collect();
        return Err(format!(
            "{net}: {} sessions with orders, want {n}; without: {missing:?}\n{}",
            by_session.len(),
            procs::tail(&exlog)
        ));
    }
    if let Some((s, got)) = by_session.iter().find(|(_, o)| o.as_slice() != want) {
        return Err(format!("{net}: session {s}: {got:?} != oracle {want:?}"));
    }
    check_reports(net, &procs::reports(&results), n, want.len())?;
    if first.fds == 0 || last.fds > first.fds || last.rss_kib > first.rss_kib + RSS_SLACK_KIB {
        return Err(format!(
            "{net}: the exchange grew: first {first:?}, last {last:?}"
        ));
    }
    if let Some(link) = procs::xdp_left(&lab.strategy) {
        return Err(format!("{net}: an XDP program stayed attached: {link}"));
    }
    eprintln!(
        "{net}: {n} sessions in {:.1} s, exchange first {first:?} last {last:?}",
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

fn wait_exit(p: &mut Proc, net: &str, log: &Path) -> Result<(), String> {
    let t0 = Instant::now();
    loop {
        if let Some(s) = p.0.try_wait().map_err(|e| e.to_string())? {
            return if s.success() {
                Ok(())
            } else {
                Err(format!("{net}: exchange {s}\n{}", procs::tail(log)))
            };
        }
        if t0.elapsed() > Duration::from_secs(10) {
            return Err(format!(
                "{net}: the exchange did not end\n{}",
                procs::tail(log)
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The strategy's own reports: one per session, each with the oracle's order count, its
/// buffers and frames accounted, and its descriptors and memory flat.
fn check_reports(
    net: &str,
    reports: &[SessionReport],
    n: usize,
    orders: usize,
) -> Result<(), String> {
    if reports.len() != n {
        return Err(format!(
            "{net}: {} session reports, want {n}",
            reports.len()
        ));
    }
    for r in reports {
        let bad = |what: &str| format!("{net}: session {}: {what}: {r:?}", r.session);
        if r.path.orders != orders as u64 {
            return Err(bad("order count"));
        }
        match &r.path_extra {
            PathReport::Ring(ring) if !ring.frames_accounted => {
                return Err(bad("frames not accounted"))
            }
            PathReport::Uring(u) if u.buffers_in_kernel != u.buffers => {
                return Err(bad("buffers not returned"))
            }
            _ => {}
        }
    }
    let field = |r: &SessionReport, k: &str| -> u64 {
        let p = &r.process;
        match k {
            "fds" => u64::from(p.fds),
            "sockets" => u64::from(p.sockets),
            "bpf" => u64::from(p.bpf),
            "io_uring" => u64::from(p.io_uring),
            _ => p.rss_kib,
        }
    };
    let max = |w: &[SessionReport], k: &str| w.iter().map(|r| field(r, k)).max().unwrap_or(0);
    let (head, tail) = (&reports[..WINDOW], &reports[n - WINDOW..]);
    for k in ["fds", "sockets", "bpf", "io_uring"] {
        if max(tail, k) > max(head, k) {
            return Err(format!(
                "{net}: {k} grew: first {WINDOW} sessions max {}, last {WINDOW} max {}",
                max(head, k),
                max(tail, k)
            ));
        }
    }
    let (rss0, rss1) = (max(head, "rss_kib"), max(tail, "rss_kib"));
    if rss1 > rss0 + RSS_SLACK_KIB {
        return Err(format!("{net}: RSS grew from {rss0} to {rss1} KiB"));
    }
    eprintln!(
        "{net}: strategy fds {} (bpf {}), RSS first {rss0} KiB last {rss1} KiB",
        max(tail, "fds"),
        max(tail, "bpf")
    );
    Ok(())
}

/// XDP programs loaded in the kernel now.
fn loaded_xdp_programs() -> usize {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        // BPF_PROG_TYPE_XDP
        .filter(|p| p.program_type() as u32 == 6)
        .count()
}

#[test]
fn a_thousand_sessions_per_path_leave_nothing_behind() {
    if procs::skip() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let md = procs::md_file(dir.path(), "soak.csv.gz", 3000, 20, 20);
    let want = procs::oracle(&md);
    assert!(want.len() >= 5, "the soak file triggers: {want:?}");
    let xdp_before = loaded_xdp_programs();
    // Two at a time (two busy loops on this 2-CPU machine), two paths per lane: each path's
    // 1,000 sessions take about as long as another's (25-30 ms a session here).
    let lanes: [&[(&'static str, &str)]; 2] = [
        &[("xdp", "skx"), ("kernel", "skk")],
        &[("packet", "skp"), ("uring", "sku")],
    ];
    let results: Vec<Result<(), String>> = std::thread::scope(|s| {
        let handles: Vec<_> = lanes
            .into_iter()
            .map(|lane| {
                let (dir, md, want) = (dir.path(), &md, &want);
                s.spawn(move || {
                    lane.iter()
                        .map(|&(net, tag)| soak(net, tag, dir, md, want))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|_| vec![Err("panicked".into())]))
            .collect()
    });
    let failed: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(failed.is_empty(), "soak failures:\n{failed:#?}");
    assert_eq!(
        loaded_xdp_programs(),
        xdp_before,
        "every XDP program loaded by the soak was unloaded"
    );
}
