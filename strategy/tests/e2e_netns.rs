//! End to end over veth between two network namespaces: the real `exchange` and `strategy`
//! binaries, real multicast and TCP. The orders the exchange receives must equal the
//! offline replay (the oracle). Needs root; skipped with a printed reason otherwise.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

#[path = "common/procs.rs"]
mod procs;

use mdfile::mdgen::{self, GenConfig};
use netlab::{Netns, VethLab};
use procs::{bin, oracle, read_orders, skip, wait, wait_for_log, Proc};
use strategy::net::uring::UringFeatures;
use strategy::net::PathReport;

fn start_exchange(ns: &Netns, md: &Path, csv: &Path, log: &Path, pace: &str) -> Proc {
    start_exchange_with(ns, md, csv, log, pace, &[])
}

fn start_exchange_with(
    ns: &Netns,
    md: &Path,
    csv: &Path,
    log: &Path,
    pace: &str,
    extra: &[&str],
) -> Proc {
    let mut args = vec!["--sessions", "1", "--pace", pace, "--grace", "300ms"];
    args.extend_from_slice(extra);
    procs::exchange(ns, md, csv, log, &args)
}

/// The strategy on `net` ([`procs::strategy`]) writing its orders to `orders`.
fn start_strategy(ns: &Netns, net: &str, orders: &Path, log: &Path, extra: &[&str]) -> Proc {
    let mut args = vec!["--orders-out", orders.to_str().expect("utf8 path")];
    args.extend_from_slice(extra);
    procs::strategy(ns, net, log, &args)
}

/// `Tcp: OutRsts` of a namespace.
fn out_rsts(ns: &Netns) -> u64 {
    let snmp = ns.exec(&["cat", "/proc/net/snmp"]).expect("snmp");
    let tcp: Vec<&str> = snmp.lines().filter(|l| l.starts_with("Tcp:")).collect();
    let i = tcp[0]
        .split_whitespace()
        .position(|n| n == "OutRsts")
        .expect("OutRsts");
    tcp[1]
        .split_whitespace()
        .nth(i)
        .and_then(|v| v.parse().ok())
        .expect("value")
}

fn small_file(dir: &Path, size: u64) -> PathBuf {
    let p = dir.join("md.csv.gz");
    let cfg = GenConfig {
        target_bytes: size,
        depth: 100,
        trigger_every: 100,
        malformed: 2,
        ..GenConfig::default()
    };
    mdgen::generate(&p, &cfg).expect("generate");
    p
}

/// What a test here starts from: a temporary folder, a generated file of about `size`
/// bytes with its oracle, and the one-test-at-a-time guard ([`procs::serial`]), held as
/// long as the fixture lives.
struct Fixture {
    dir: tempfile::TempDir,
    md: PathBuf,
    want: Vec<procs::Order>,
    _serial: std::sync::MutexGuard<'static, ()>,
}

/// The [`Fixture`]; None (skipped, the reason printed) without root.
fn fixture(size: u64) -> Option<Fixture> {
    if skip() {
        return None;
    }
    let serial = procs::serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let md = small_file(dir.path(), size);
    let want = oracle(&md);
    Some(Fixture {
        dir,
        md,
        want,
        _serial: serial,
    })
}

/// The order CSVs of a [`session`]: the exchange's and the strategy's.
struct Session {
    csv: PathBuf,
    orders: PathBuf,
}

/// One session in a fresh pair of namespaces: the exchange (with `ex_extra`; with `want`,
/// ending the session once the whole file is out and that many orders are in, not after
/// its grace: not for a test that looks for an order too many on the wire)
/// and the strategy on `net` (with `--sessions 1`, AF_PACKET's own address, and
/// `st_extra`), started once the exchange listens, both run to their end. Returns the
/// exchange's order CSV and the strategy's.
fn session(
    dir: &Path,
    tag: &str,
    (md, want): (&Path, Option<usize>),
    pace: &str,
    ex_extra: &[&str],
    net: &str,
    st_extra: &[&str],
) -> Session {
    let lab = VethLab::new("e2s").expect("lab");
    let file = |suffix: &str| dir.join(format!("{tag}.{suffix}"));
    let (csv, orders, exlog, stlog) = (
        file("ex.csv"),
        file("st.csv"),
        file("ex.log"),
        file("st.log"),
    );
    let want = want.map(|n| n.to_string());
    let mut ex_args = Vec::new();
    if let Some(n) = &want {
        ex_args.extend(["--expect-orders", n.as_str()]);
    }
    ex_args.extend_from_slice(ex_extra);
    let mut ex = start_exchange_with(&lab.exchange, md, &csv, &exlog, pace, &ex_args);
    procs::wait_listening(&exlog);
    let mut extra = vec!["--sessions", "1"];
    extra.extend_from_slice(st_extra);
    let mut st = start_strategy(&lab.strategy, net, &orders, &stlog, &extra);
    wait(&mut ex, Duration::from_secs(60), "exchange", &exlog);
    wait(&mut st, Duration::from_secs(10), "strategy", &stlog);
    Session { csv, orders }
}

#[test]
fn orders_equal_the_oracle_on_every_path() {
    let Some(f) = fixture(60_000) else {
        return;
    };
    assert!(f.want.len() > 20);
    for net in [
        "kernel",
        "kernel+mmsg",
        "uring",
        "xdp",
        "packet",
        "packet+v3",
    ] {
        let lab = VethLab::new("e2e").expect("lab");
        let (csv, orders) = (
            f.dir.path().join(format!("{net}.ex.csv")),
            f.dir.path().join(format!("{net}.st.csv")),
        );
        let (exlog, stlog) = (
            f.dir.path().join(format!("{net}.ex.log")),
            f.dir.path().join(format!("{net}.st.log")),
        );
        let want = f.want.len().to_string();
        let mut ex = start_exchange_with(
            &lab.exchange,
            &f.md,
            &csv,
            &exlog,
            "rate:5000",
            &["--expect-orders", &want],
        );
        procs::wait_listening(&exlog);
        let rsts_before = out_rsts(&lab.strategy);
        let results = f.dir.path().join(format!("{net}.st.jsonl"));
        let results_arg = results.to_str().expect("utf8 path");
        let extra = ["--sessions", "1", "--results", results_arg];
        let mut st = start_strategy(&lab.strategy, net, &orders, &stlog, &extra);
        wait(&mut ex, Duration::from_secs(60), "exchange", &exlog);
        wait(&mut st, Duration::from_secs(10), "strategy", &stlog);
        // On a mismatch the session's own counters say where the lines went.
        let report = procs::reports(&results).pop();
        assert_eq!(
            read_orders(&csv, None),
            f.want,
            "{net}: exchange received = oracle; the strategy's report: {report:?}"
        );
        assert_eq!(
            read_orders(&orders, None),
            f.want,
            "{net}: strategy sent = oracle; its report: {report:?}"
        );
        let summary =
            std::fs::read_to_string(format!("{}.summary.jsonl", csv.display())).expect("summary");
        let s: exchange::results::Summary =
            serde_json::from_str(summary.trim()).expect("summary parses");
        assert_eq!(s.counters.orders_accepted as usize, f.want.len());
        assert_eq!(s.counters.malformed_lines, 2);
        assert_eq!(s.t2t_kernel_ns.count as usize, f.want.len());
        assert_eq!(
            out_rsts(&lab.strategy),
            rsts_before,
            "{net}: the strategy's kernel sent no TCP reset"
        );
        let left = procs::xdp_left(&lab.strategy);
        assert!(
            left.is_none(),
            "{net}: no XDP program left on the interface: {left:?}"
        );
    }
}

/// SIGKILL of the exchange mid-session, on every path: the strategy sees the connection
/// go, returns to Init, reconnects to the next exchange and trades the whole file again.
#[test]
fn strategy_reconnects_after_the_exchange_dies() {
    let Some(f) = fixture(60_000) else {
        return;
    };
    for net in ["kernel", "uring", "xdp", "packet"] {
        let lab = VethLab::new("e2r").expect("lab");
        let file = |s: &str| f.dir.path().join(format!("{net}.{s}"));
        let (orders, stlog, results) = (file("st.csv"), file("st.log"), file("st.jsonl"));
        let (csv1, csv2) = (file("ex1.csv"), file("ex2.csv"));
        let (log1, log2) = (file("ex1.log"), file("ex2.log"));
        let ex1 = start_exchange(&lab.exchange, &f.md, &csv1, &log1, "rate:2000");
        procs::wait_listening(&log1);
        let results_arg = results.to_str().expect("utf8 path");
        let extra = ["--reconnect", "--sessions", "2", "--results", results_arg];
        let mut st = start_strategy(&lab.strategy, net, &orders, &stlog, &extra);
        // Mid-session: 0.8 s into the market data (about a third of the file at 2,000
        // packets/s), timed from its start, not from the strategy's.
        wait_for_log(&log1, procs::TRANSMITTING, Duration::from_secs(20));
        std::thread::sleep(Duration::from_millis(800));
        drop(ex1); // SIGKILL mid-session
        std::thread::sleep(Duration::from_millis(300));
        let mut ex2 = start_exchange(&lab.exchange, &f.md, &csv2, &log2, "rate:5000");
        wait(&mut ex2, Duration::from_secs(60), "second exchange", &log2);
        wait(&mut st, Duration::from_secs(10), "strategy", &stlog);
        let first = read_orders(&orders, Some("1"));
        assert!(
            !first.is_empty() && first.len() < f.want.len(),
            "{net}: session 1 was cut: {} of {}",
            first.len(),
            f.want.len()
        );
        assert_eq!(
            first[..],
            f.want[..first.len()],
            "{net}: session 1 orders are a prefix of the oracle"
        );
        // On a mismatch the session's own counters say where the lines went (a ring that
        // overflowed counts its drops there).
        let second = procs::reports(&results).pop();
        assert_eq!(
            read_orders(&orders, Some("2")),
            f.want,
            "{net}: session 2 sent = oracle; its report: {second:?}"
        );
        assert_eq!(
            read_orders(&csv2, None),
            f.want,
            "{net}: second exchange received = oracle"
        );
        let log = std::fs::read_to_string(&stlog).expect("log");
        assert!(log.contains("Running -> Init"), "{net}: {log}");
    }
}

/// The gap columns on a file whose gaps are known in advance: triggers every 20 lines
/// replayed at 2,000 packets/s are 10 ms apart, packets 0.5 ms apart. Both programs' rows
/// must say so (medians within 20 %: the pacing is the exchange's, checked elsewhere to a
/// few microseconds), the first order of the session has no order gap, and the stage
/// columns add up (decision + send <= total).
#[test]
fn gap_and_stage_columns_match_a_file_with_known_gaps() {
    if skip() {
        return;
    }
    let _serial = procs::serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let md = dir.path().join("gap.csv.gz");
    mdgen::generate(
        &md,
        &GenConfig {
            depth: 40,
            trigger_every_lines: Some(mdgen::lines_for_gap(Duration::from_millis(10), 2000)),
            orders: Some(40),
            resnapshot: false,
            ..GenConfig::default()
        },
    )
    .expect("generate");
    let want = oracle(&md);
    assert_eq!(want.len(), 40);
    let Session { csv, orders } = session(
        dir.path(),
        "gap",
        (&md, Some(want.len())),
        "rate:2000",
        &[],
        "kernel",
        &[],
    );
    let median = |mut v: Vec<u64>| {
        v.sort_unstable();
        v[v.len() / 2] as f64
    };
    let near = |got: f64, want: f64, what: &str| {
        assert!(
            (got - want).abs() <= 0.2 * want,
            "{what}: median {got} ns, expected about {want} ns"
        );
    };
    for (path, side) in [(&csv, "exchange"), (&orders, "strategy")] {
        let (_, rows) = mdfile::orders::read_rows(path).expect("rows");
        assert_eq!(rows.len(), want.len(), "{side}");
        assert_eq!(rows[0].gap.order_ns, None, "{side}: first order has no gap");
        let order_gaps: Vec<u64> = rows.iter().filter_map(|r| r.gap.order_ns).collect();
        let md_gaps: Vec<u64> = rows.iter().filter_map(|r| r.gap.md_ns).collect();
        assert_eq!(order_gaps.len(), want.len() - 1, "{side}");
        assert_eq!(md_gaps.len(), want.len(), "{side}");
        near(median(order_gaps), 10e6, &format!("{side} gap_order_ns"));
        if side == "exchange" {
            near(median(md_gaps), 0.5e6, &format!("{side} gap_md_ns"));
        } else {
            // The strategy's gap is between its reads: a loop that fell behind reads a
            // burst back to back, so only bounds hold there: above 0, below the order gap.
            let m = median(md_gaps.clone());
            assert!(m > 0.0 && m < 10e6, "strategy gap_md_ns median {m}");
        }
        if side == "strategy" {
            for r in &rows {
                let s = r.stages.expect("stage columns");
                assert!(s.decide_ns + s.send_ns <= s.total_ns, "{s:?}");
                assert!(s.send_ns > 0 && s.total_ns > 0, "{s:?}");
            }
        }
    }
}

/// Warming never changes the orders: on every path, with everything warmed (decision,
/// transmit side, heartbeats through the order path) every 200 us, the exchange receives
/// exactly the oracle's orders, counts the heartbeats apart, and sees nothing invalid.
#[test]
fn warming_variants_equal_the_oracle() {
    let Some(f) = fixture(40_000) else {
        return;
    };
    assert!(f.want.len() > 10);
    for net in ["kernel", "uring", "xdp", "packet"] {
        let Session { csv, orders } = session(
            f.dir.path(),
            &format!("warm-{net}"),
            // The whole grace: an order too many would arrive after the last expected one.
            (&f.md, None),
            "rate:5000",
            &["--heartbeats"],
            net,
            &["--warm-every", "200us", "--warm", "all"],
        );
        assert_eq!(
            read_orders(&csv, None),
            f.want,
            "{net}+warm: exchange received = oracle"
        );
        assert_eq!(
            read_orders(&orders, None),
            f.want,
            "{net}+warm: strategy sent = oracle"
        );
        let summary =
            std::fs::read_to_string(format!("{}.summary.jsonl", csv.display())).expect("summary");
        let s: exchange::results::Summary =
            serde_json::from_str(summary.trim()).expect("summary parses");
        assert!(
            s.counters.heartbeats > 100,
            "{net}: heartbeats {}",
            s.counters.heartbeats
        );
        assert_eq!(s.counters.invalid, 0, "{net}");
        assert_eq!(
            s.counters.rejected_bytes, 0,
            "{net}: no heartbeat before TRANSMIT"
        );
    }
}

/// The io_uring set-up variants: each equals the oracle, and the session report says which
/// features ran and, for one the kernel refused, why it fell back.
#[test]
fn uring_variants_equal_the_oracle_and_report_their_features() {
    let Some(f) = fixture(40_000) else {
        return;
    };
    type Ran = Option<fn(&UringFeatures) -> bool>;
    let cases: [(&str, &[&str], Ran); 11] = [
        ("defer", &["--uring-defer"], Some(|f| f.defer_taskrun)),
        ("coop", &["--uring-coop"], Some(|f| f.coop_taskrun)),
        (
            "napi",
            &["--uring-napi", "50"],
            Some(|f| f.napi_busy_poll_us.is_some()),
        ),
        ("bufring", &[], Some(|f| f.buf_ring)),
        (
            "zcfixed",
            &["--send-zc", "--uring-fixed-bufs"],
            Some(|f| f.fixed_bufs),
        ),
        ("provideops", &["--uring-provide-ops"], None),
        ("regring", &["--uring-reg-ring"], Some(|f| f.reg_ring)),
        ("zc", &["--send-zc"], Some(|f| f.send_zc)),
        // SQPOLL's thread shares this machine's CPUs: slow here, but it must be right.
        ("sqpoll", &["--sqpoll", "100"], Some(|f| f.sqpoll)),
        (
            "inline",
            &["--uring-defer", "--uring-inline-recv"],
            Some(|f| f.inline_recv),
        ),
        (
            "syssend",
            &[
                "--uring-defer",
                "--uring-inline-recv",
                "--uring-send-syscall",
            ],
            Some(|f| f.send_syscall),
        ),
    ];
    for (name, flags, ran) in cases {
        let report = f.dir.path().join(format!("{name}.st.jsonl"));
        let mut extra = vec!["--results", report.to_str().expect("utf8")];
        extra.extend_from_slice(flags);
        let Session { csv, .. } = session(
            f.dir.path(),
            &format!("uring-{name}"),
            (&f.md, Some(f.want.len())),
            "rate:5000",
            &[],
            "uring",
            &extra,
        );
        assert_eq!(
            read_orders(&csv, None),
            f.want,
            "uring+{name}: exchange received = oracle"
        );
        let r = &procs::reports(&report)[0];
        let PathReport::Uring(uring) = &r.path_extra else {
            panic!("uring+{name}: an io_uring report: {r:?}");
        };
        assert_eq!(
            uring.buffers_in_kernel, uring.buffers,
            "uring+{name}: every buffer returned: {uring:?}"
        );
        let Some(ran) = ran else {
            // PROVIDE_BUFFERS asked for: no buffer ring, nothing fell back.
            assert!(!uring.features.buf_ring, "{uring:?}");
            continue;
        };
        let fell_back = uring.fallbacks.iter().any(|s| s.contains("refused"));
        assert!(
            ran(&uring.features) ^ fell_back,
            "uring+{name}: the feature either ran or fell back with its reason: {uring:?}"
        );
    }
}

/// AF_XDP busy polling asked for on a veth (`xdp+busypoll`): a veth binds copy mode, where
/// the kernel gives the socket no NAPI instance, so the loop must not poll (a `recv` per
/// empty turn that polls nothing) and the report says so: the settings, NAPI id 0, no
/// polls; the orders are the oracle's. (Zero copy, where it polls, runs in the VM test.)
#[test]
fn xdp_busy_polling_without_a_napi_instance_is_off_and_said() {
    let Some(f) = fixture(40_000) else {
        return;
    };
    let report = f.dir.path().join("xdp-busypoll.st.jsonl");
    let Session { csv, .. } = session(
        f.dir.path(),
        "xdp-busypoll",
        (&f.md, Some(f.want.len())),
        "rate:5000",
        &[],
        "xdp",
        &[
            "--results",
            report.to_str().expect("utf8"),
            "--busy-poll",
            "50",
        ],
    );
    assert_eq!(read_orders(&csv, None), f.want, "xdp+busypoll: = oracle");
    let r = &procs::reports(&report)[0];
    let PathReport::Ring(ring) = &r.path_extra else {
        panic!("a ring report: {r:?}");
    };
    let bp = ring.xsk_busy_poll.expect("busy polling reported");
    assert_eq!(bp.us, 50, "{bp:?}");
    assert_eq!(bp.napi_id, 0, "a copy-mode socket has no NAPI: {bp:?}");
    assert_eq!(bp.polls, 0, "no poll without a NAPI instance: {bp:?}");
}

/// An exchange that publishes the moment it accepts (`--handshake-delay 0ms`, as the
/// users' spec has no pause): no path may miss the first snapshot lines. Every path is a
/// member of the group with its receive armed before its connect completes, and buffers
/// what arrives; the orders then equal the oracle (a missed snapshot line changes the book,
/// and with it the orders' prices).
#[test]
fn no_path_misses_the_start_of_a_session() {
    let Some(f) = fixture(40_000) else {
        return;
    };
    for net in ["kernel", "uring", "xdp", "packet"] {
        for round in 0..2 {
            let Session { csv, .. } = session(
                f.dir.path(),
                &format!("hs-{net}-{round}"),
                (&f.md, Some(f.want.len())),
                "rate:5000",
                &["--handshake-delay", "0ms"],
                net,
                &[],
            );
            assert_eq!(
                read_orders(&csv, None),
                f.want,
                "{net} (round {round}): with no handshake delay the exchange still received the oracle's orders"
            );
        }
    }
}

/// SIGKILL of the strategy at three moments — while connecting (no exchange yet), just
/// after the start (around the connect and the snapshot), and mid-orders — on the raw
/// paths: nothing stays attached to the interface, and the next start trades at once, its
/// orders equal to the oracle.
#[test]
fn sigkill_anywhere_leaves_nothing_and_the_next_start_trades() {
    let Some(f) = fixture(40_000) else {
        return;
    };
    let mut nets = vec!["packet"];
    if strategy::net::af_xdp::loader::has_object() {
        nets.insert(0, "xdp");
    }
    for net in nets {
        for (moment, kill_after_ms) in [("connecting", 150u64), ("starting", 30), ("orders", 400)] {
            let what = format!("{net}, killed {moment}");
            let lab = VethLab::new("e2k").expect("lab");
            let file = |s: &str| f.dir.path().join(format!("{net}-{moment}.{s}"));
            let start_ex = || {
                let child = lab
                    .exchange
                    .command(bin("exchange"))
                    .args(
                        exchange::serve_cmd::ServeCmd::new(&f.md, "10.77.0.1:9012")
                            .md_iface("vx0")
                            .quiet_orders(true)
                            .pace("rate:2000")
                            .grace(Duration::from_millis(300))
                            .handshake_delay(Duration::ZERO)
                            .results(&file("ex.csv"))
                            .args(),
                    )
                    .stdout(Stdio::null())
                    .stderr(std::fs::File::create(file("ex.log")).expect("log"))
                    .spawn()
                    .expect("exchange");
                Proc(child)
            };
            // While connecting there is no exchange yet; otherwise it is up, serving as many
            // sessions as come (the killed one may or may not have connected).
            let mut ex = (moment != "connecting").then(start_ex);
            std::thread::sleep(Duration::from_millis(100));
            let killed = start_strategy(
                &lab.strategy,
                net,
                &file("st1.csv"),
                &file("st1.log"),
                &["--sessions", "1", "--reconnect"],
            );
            std::thread::sleep(Duration::from_millis(kill_after_ms));
            drop(killed); // SIGKILL, reaped
            let left = procs::xdp_left(&lab.strategy);
            assert!(left.is_none(), "{what}: an XDP program stayed: {left:?}");
            if ex.is_none() {
                ex = Some(start_ex());
            } else {
                // The exchange notices nothing of a dead raw-path client: it finishes the
                // file and its grace first. A connect before that is accepted and closed at
                // once (one client at a time), which would end the next strategy's one
                // session: start it once every session the exchange opened has closed.
                let t0 = Instant::now();
                loop {
                    let log = std::fs::read_to_string(file("ex.log")).unwrap_or_default();
                    let opened = log.matches("INIT -> HANDSHAKE").count();
                    let closed = log.matches("state -> INIT").count();
                    if opened == closed {
                        break;
                    }
                    assert!(
                        t0.elapsed() < Duration::from_secs(20),
                        "{what}: the exchange never closed the dead client's session:\n{log}"
                    );
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            let mut next = start_strategy(
                &lab.strategy,
                net,
                &file("st2.csv"),
                &file("st2.log"),
                &["--sessions", "1", "--reconnect"],
            );
            wait(&mut next, Duration::from_secs(60), &what, &file("st2.log"));
            drop(ex);
            // The next start's session is the exchange's last.
            let text = std::fs::read_to_string(file("ex.csv")).unwrap_or_default();
            let last = text
                .lines()
                .skip(1)
                .filter_map(|l| l.split(',').next())
                .filter_map(|s| s.parse::<u64>().ok())
                .max()
                .map(|n| n.to_string())
                .unwrap_or_default();
            assert_eq!(
                read_orders(&file("ex.csv"), Some(&last)),
                f.want,
                "{what}: the next start's orders equal the oracle (session {last})"
            );
            let left = procs::xdp_left(&lab.strategy);
            assert!(left.is_none(), "{what}: an XDP program stayed: {left:?}");
        }
    }
}
