//! `xdp-tx` end to end over veth, under the faults that used to open holes in it: warming
//! heartbeats while the program is armed, frames lost between the program and user space,
//! the session's end with fires in flight, and a feed that falls behind. Each checks what
//! the exchange received (the oracle, each trigger id once) against what the strategy
//! recorded and the path's own counters. Needs root and the embedded XDP program; skipped
//! with a printed reason otherwise. (The hostile-exchange and hostile-frame tests run on
//! `xdp-tx` too: `hostile_exchange.rs`.)

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[path = "common/procs.rs"]
mod procs;

use mdfile::mdgen::{self, GenConfig};
use netlab::VethLab;
use procs::{oracle, read_orders, wait, Order, XdpPass};
use strategy::net::af_xdp::xtx::XtxReport;
use strategy::net::PathReport;
use strategy::runtime::SessionReport;

fn skip() -> bool {
    if procs::skip() {
        return true;
    }
    if !strategy::net::af_xdp::loader::has_object() {
        eprintln!("skipped: built without the XDP program (run `cargo xtask build-ebpf`)");
        return true;
    }
    false
}

/// A generated file: `size` bytes, a trigger every `trigger_every` updates.
fn md_file(dir: &Path, size: u64, trigger_every: u64) -> PathBuf {
    let p = dir.join(format!("md-{size}-{trigger_every}.csv.gz"));
    let cfg = GenConfig {
        target_bytes: size,
        depth: 50,
        trigger_every,
        malformed: 1,
        ..GenConfig::default()
    };
    mdgen::generate(&p, &cfg).expect("generate");
    p
}

/// What one session left behind.
struct Outcome {
    /// Orders the exchange received, in order.
    exchange: Vec<Order>,
    /// Orders the strategy recorded, in order.
    strategy: Vec<Order>,
    /// The strategy's session report.
    report: SessionReport,
    /// The exchange's summary.
    summary: exchange::results::Summary,
}

impl Outcome {
    /// The `xdp-tx` counters.
    fn xtx(&self) -> XtxReport {
        match &self.report.path_extra {
            PathReport::Ring(r) => r.xtx.as_ref().expect("an xdp-tx report").xdp_tx,
            other => panic!("not a ring report: {other:?}"),
        }
    }

    /// Trigger ids the exchange received more than once.
    fn repeated_ids(&self) -> Vec<(u64, usize)> {
        let mut n = BTreeMap::new();
        for o in &self.exchange {
            *n.entry(o.0).or_insert(0usize) += 1;
        }
        n.into_iter().filter(|&(_, c)| c > 1).collect()
    }
}

/// One session of `xdp-tx` in a fresh lab: the exchange serves `md` at `pace` (with
/// `ex_extra`), the strategy runs with `st_extra`; both run to their end.
fn session(
    dir: &Path,
    tag: &str,
    md: &Path,
    pace: &str,
    ex_extra: &[&str],
    st_extra: &[&str],
) -> Outcome {
    let lab = VethLab::new("xtf").expect("lab");
    run_session(lab, dir, tag, md, (pace, ex_extra), st_extra)
}

/// [`session`] at `rate:5000` over a veth with two queues on each end: `setup` (a shell
/// command) runs in the exchange's namespace first, `later` (after a delay) while the
/// session runs.
fn session_with(
    dir: &Path,
    tag: &str,
    md: &Path,
    setup: &str,
    later: Option<(Duration, &str)>,
    st_extra: &[&str],
) -> Outcome {
    let lab = VethLab::with_queues("xtq", 2).expect("lab");
    lab.exchange.exec(&["sh", "-c", setup]).expect("setup");
    // The later command runs a fixed time after the market data started (the exchange's
    // log says when), not after this call: the sessions' start-up time varies between
    // machines (on a slow one a fixed delay ran out before the first frame was sent).
    let exlog = dir.join(format!("{tag}.ex.log"));
    let switch = later.map(|(after, cmd)| {
        let mut c = lab.exchange.command("sh");
        c.args([
            "-c",
            &format!(
                "until grep -qF '{}' '{}' 2>/dev/null; do sleep 0.02; done; sleep {}; {cmd}",
                procs::TRANSMITTING,
                exlog.display(),
                after.as_secs_f64()
            ),
        ]);
        procs::Proc(c.spawn().expect("the later command"))
    });
    let o = run_session(lab, dir, tag, md, ("rate:5000", &[]), st_extra);
    drop(switch);
    o
}

fn run_session(
    lab: VethLab,
    dir: &Path,
    tag: &str,
    md: &Path,
    (pace, ex_extra): (&str, &[&str]),
    st_extra: &[&str],
) -> Outcome {
    let _pass = XdpPass::attach(&lab.exchange);
    let file = |suffix: &str| dir.join(format!("{tag}.{suffix}"));
    let (csv, orders, results) = (file("ex.csv"), file("st.csv"), file("st.jsonl"));
    let (exlog, stlog) = (file("ex.log"), file("st.log"));
    let mut args = vec!["--sessions", "1", "--pace", pace, "--grace", "300ms"];
    args.extend_from_slice(ex_extra);
    let mut ex = procs::exchange(&lab.exchange, md, &csv, &exlog, &args);
    std::thread::sleep(Duration::from_millis(100));
    let mut extra = vec![
        "--sessions",
        "1",
        "--orders-out",
        orders.to_str().expect("utf8"),
        "--results",
        results.to_str().expect("utf8"),
    ];
    extra.extend_from_slice(st_extra);
    let mut st = procs::strategy(&lab.strategy, "xdp-tx", &stlog, &extra);
    wait(&mut ex, Duration::from_secs(90), "exchange", &exlog);
    wait(&mut st, Duration::from_secs(15), "strategy", &stlog);
    let report: SessionReport = serde_json::from_str(
        std::fs::read_to_string(&results)
            .expect("results")
            .lines()
            .next()
            .expect("a session"),
    )
    .expect("the session report reads back typed");
    let summary =
        std::fs::read_to_string(format!("{}.summary.jsonl", csv.display())).expect("summary");
    let left = procs::xdp_left(&lab.strategy);
    assert!(left.is_none(), "no XDP program left: {left:?}");
    Outcome {
        exchange: read_orders(&csv, None),
        strategy: read_orders(&orders, None),
        report,
        summary: serde_json::from_str(summary.trim()).expect("summary parses"),
    }
}

/// `xdp-tx`: the program decides and sends orders with XDP_TX; the exchange receives
/// exactly the oracle's orders, once each; user space completes every fire (smoltcp's copy
/// never reaches the wire) and agrees with every order the program sent.
#[test]
fn xdp_tx_equals_the_oracle_and_the_program_sends() {
    if skip() {
        return;
    }
    let _serial = procs::serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let md = md_file(dir.path(), 60_000, 100);
    let want = oracle(&md);
    let o = session(dir.path(), "plain", &md, "rate:5000", &[], &[]);
    assert_eq!(o.exchange, want, "exchange received = oracle");
    assert_eq!(o.strategy, want, "strategy recorded = oracle");
    let x = o.xtx();
    eprintln!("xdp-tx report: {x:?}");
    // How many the program sends depends on user space keeping up (on a loaded machine it
    // falls behind and decides itself, correctly): at least one, and everything it sent
    // completed, suppressed and agreed with. The lab reports the share.
    assert!(x.prog.fired >= 1, "the program sent orders: {x:?}");
    assert_eq!(x.completed, x.prog.fired, "every fire completed: {x:?}");
    assert_eq!(
        x.suppressed, x.prog.fired,
        "smoltcp's copy never left: {x:?}"
    );
    assert_eq!(
        (x.mismatched, x.out_of_order, x.bad_records),
        (0, 0, 0),
        "{x:?}"
    );
    assert_eq!(
        (x.skipped_frames, x.prog.untagged),
        (0, 0),
        "nothing lost: {x:?}"
    );
}

/// Warming with heartbeats every 500 us while the program is armed: a heartbeat never
/// takes the armed sequence number (the ticket is taken back first), so the program keeps
/// sending for the whole session, the exchange receives each trigger id once and exactly
/// the oracle's orders, and counts the heartbeats apart. (Before the ticket, the first
/// heartbeat that took the armed sequence number left the program disarmed for the rest of
/// the session: it sent 46 of 100 with warming on, and an order could arrive twice.)
/// At least 80 % from the program: what the fix guarantees, with room for this machine's
/// slow phases (a trigger on a frame that arrives before user space applied the one before
/// goes through user space, correctly: one CI run gave 170 of 179, 94.97 %). The 95 % of
/// the issue is a benchmark figure, measured by the lab (docs/xdp-tx.md).
#[test]
fn xdp_tx_with_heartbeats_sends_from_the_program_and_never_twice() {
    if skip() {
        return;
    }
    let _serial = procs::serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let md = md_file(dir.path(), 200_000, 100);
    let want = oracle(&md);
    assert!(want.len() >= 10, "triggers: {}", want.len());
    let o = session(
        dir.path(),
        "warm",
        &md,
        "rate:5000",
        &["--heartbeats"],
        &["--warm-every", "500us", "--warm", "all"],
    );
    let x = o.xtx();
    eprintln!("xdp-tx report: {x:?}, warm: {:?}", o.report.warm);
    assert_eq!(
        o.repeated_ids(),
        vec![],
        "no trigger id twice at the exchange"
    );
    assert_eq!(o.exchange, want, "exchange received = oracle");
    assert_eq!(o.strategy, want, "strategy recorded = oracle");
    assert!(
        o.summary.counters.heartbeats > 100,
        "heartbeats went out: {}",
        o.summary.counters.heartbeats
    );
    assert_eq!(o.summary.counters.invalid, 0);
    assert!(
        x.prog.fired * 100 >= want.len() as u64 * 80,
        "the program sent {} of {} orders (at least 80 %): {x:?}",
        x.prog.fired,
        want.len()
    );
    assert_eq!(x.completed, x.prog.fired, "{x:?}");
    assert_eq!(x.suppressed, x.prog.fired, "{x:?}");
    assert_eq!(x.mismatched, 0, "{x:?}");
}

/// Frames lost between the program and user space (a small RX ring overflowing in 1 ms
/// bursts while user space does 20 us of work per packet; with 5 us, one run of six on a
/// slow machine lost nothing: the publisher, which a veth makes run the program too, was
/// no faster than user space): each loss costs the decisions on the lost frames, not the
/// session. User space learns the program's count from the next frame's tag and re-arms,
/// and the program fires again after the losses; what it sent, user space recorded and
/// agreed with; no order twice. (Before the tag, the first lost frame left the program
/// disarmed for the rest of the session.)
#[test]
fn xdp_tx_fires_again_after_lost_frames() {
    if skip() {
        return;
    }
    let _serial = procs::serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let md = md_file(dir.path(), 200_000, 20);
    let o = session(
        dir.path(),
        "lossy",
        &md,
        "bursts:2000/1000000/1ms/25ms",
        &[],
        &["--md-work", "20us", "--frame-count", "128"],
    );
    let x = o.xtx();
    eprintln!("xdp-tx report: {x:?}");
    assert!(
        x.skipped_frames > 0 && x.resyncs > 0,
        "frames were lost: {x:?}"
    );
    assert!(
        x.fired_after_resync > 0,
        "the program fired again after a loss: {x:?}"
    );
    // (A book that missed packets can fire twice on one timestamp: equal to the strategy's
    // own log, order by order, is the check here.)
    assert_eq!(
        o.exchange, o.strategy,
        "the exchange received what the strategy recorded"
    );
    assert_eq!((x.mismatched, x.out_of_order), (0, 0), "{x:?}");
    assert_eq!(x.completed, x.prog.fired, "{x:?}");
}

/// The strategy stops (`--max-runtime`) in the middle of a dense-trigger feed: every order
/// the program sent, even between the last poll and the end, is in the strategy's log, so
/// the exchange received exactly what the strategy recorded.
#[test]
fn xdp_tx_records_every_fire_at_the_session_end() {
    if skip() {
        return;
    }
    let _serial = procs::serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let md = md_file(dir.path(), 400_000, 5);
    for round in 0..3 {
        let o = session(
            dir.path(),
            &format!("end{round}"),
            &md,
            "rate:5000",
            &[],
            &["--max-runtime", "0.4"],
        );
        let x = o.xtx();
        eprintln!(
            "round {round}: {} orders, xdp-tx report: {x:?}",
            o.exchange.len()
        );
        assert!(!o.exchange.is_empty(), "orders before the end");
        assert_eq!(
            o.exchange, o.strategy,
            "round {round}: the exchange received what the strategy recorded"
        );
        assert_eq!(x.completed, x.prog.fired, "round {round}: {x:?}");
    }
}

/// A strategy that falls far behind a dense-trigger feed at `--pace max` (busy work after
/// each packet, mostly more than the program's footprints cover): the program must not
/// decide on a book that misses packets it cannot account for. It leaves those frames to
/// user space (counted `not_current`), and the orders still equal the oracle.
#[test]
fn xdp_tx_never_fires_on_a_stale_book() {
    if skip() {
        return;
    }
    let _serial = procs::serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let md = dir.path().join("dense.csv.gz");
    let cfg = GenConfig {
        target_bytes: 30_000,
        depth: 50,
        trigger_every: 5,
        ..GenConfig::default()
    };
    mdgen::generate(&md, &cfg).expect("generate");
    let want = oracle(&md);
    assert!(want.len() > 20, "a dense-trigger file: {}", want.len());
    // Room in the RX ring for the whole file (2,232 packets): a ring that overflows drops
    // market data and the orders rightly differ (seen on a loaded machine).
    let o = session(
        dir.path(),
        "behind",
        &md,
        "max",
        &[],
        &["--md-work", "20us", "--frame-count", "16384"],
    );
    let x = o.xtx();
    eprintln!("xdp-tx report: {x:?}");
    assert_eq!(o.exchange, want, "exchange received = oracle");
    assert!(x.prog.not_current > 0, "user space fell behind: {x:?}");
    assert_eq!(x.mismatched, 0, "never a stale decision: {x:?}");
    assert_eq!(x.completed, x.prog.fired, "{x:?}");
}

/// `xdp-tx` over a veth with two queues, both bound, all the exchange's traffic sent by its
/// second TX queue (XPS), so it arrives on the strategy's queue 1 (one flow on one queue, as
/// RSS does): the program decides as on one queue, the orders equal the oracle. Then the
/// market data moved from queue 0 to queue 1 in the middle of the session: frames may then
/// reach user space out of the program's order, so the program stops deciding for the
/// session (`md_spread`); the exchange still receives exactly what the strategy recorded.
#[test]
fn xdp_tx_on_two_queues_decides_only_while_market_data_keeps_to_one() {
    if skip() {
        return;
    }
    let _serial = procs::serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let md = md_file(dir.path(), 60_000, 100);
    let want = oracle(&md);
    let xps = |q0: &str, q1: &str| {
        format!(
            "echo {q0} > /sys/class/net/vx0/queues/tx-0/xps_cpus && echo {q1} > /sys/class/net/vx0/queues/tx-1/xps_cpus"
        )
    };
    // Every CPU of the machine (XPS refuses CPUs that do not exist).
    let cpus = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(63);
    let all = format!("{:x}", (1u64 << cpus) - 1);
    let all = all.as_str();
    let (to_1, to_0) = (xps("0", all), xps(all, "0"));
    for (tag, setup, later) in [
        ("one", to_1.clone(), None),
        (
            "moved",
            to_0,
            Some((Duration::from_millis(300), to_1.as_str())),
        ),
    ] {
        let o = session_with(
            dir.path(),
            tag,
            &md,
            &setup,
            later,
            &["--xsk-queues", "all"],
        );
        let x = o.xtx();
        let queues = match &o.report.path_extra {
            PathReport::Ring(r) => r.rx_queues.clone(),
            _ => Vec::new(),
        };
        eprintln!("{tag}: queues {queues:?}, xdp-tx report: {x:?}");
        assert_eq!(
            o.exchange, o.strategy,
            "{tag}: the exchange received what the strategy recorded"
        );
        assert_eq!(x.mismatched, 0, "{tag}: {x:?}");
        if later.is_some() {
            assert_eq!(x.prog.md_spread, 1, "market data on a second queue: {x:?}");
            assert!(
                x.prog.fired < o.exchange.len() as u64,
                "user space decided after the move: {x:?}"
            );
        } else {
            assert_eq!(x.prog.md_spread, 0, "{x:?}");
            assert_eq!(o.exchange, want, "one queue's market data: the oracle");
            assert!(x.prog.fired >= 1, "the program decided: {x:?}");
            assert!(
                queues.iter().any(|&(q, n)| q == 1 && n > 100),
                "the market data came on queue 1: {queues:?}"
            );
        }
    }
}

/// Bursts of about ten packets at 1 M/s every millisecond, and a strategy that spends 20 us
/// on each packet: inside a burst user space is up to nine frames behind the program. The
/// program sends a fire there when the frames in between cannot change it
/// (`xtx::pending_kinds`), and user space completes it only after those frames (`held`):
/// the exchange receives exactly the oracle's orders, once each, and the engine agrees with
/// every order the program sent, behind or not.
#[test]
fn xdp_tx_fires_behind_user_space_in_bursts_and_equals_the_oracle() {
    if skip() {
        return;
    }
    let _serial = procs::serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let md = dir.path().join("bursty.csv.gz");
    let cfg = GenConfig {
        target_bytes: 100_000,
        depth: 50,
        trigger_every: 20,
        ..GenConfig::default()
    };
    mdgen::generate(&md, &cfg).expect("generate");
    let want = oracle(&md);
    let o = session(
        dir.path(),
        "bursts",
        &md,
        "bursts:0/1000000/10us/1ms",
        &[],
        &["--md-work", "20us", "--frame-count", "16384"],
    );
    let x = o.xtx();
    eprintln!("xdp-tx report: {x:?}");
    assert_eq!(o.exchange, want, "exchange received = oracle");
    assert_eq!(o.strategy, o.exchange, "the strategy recorded what it sent");
    assert!(o.repeated_ids().is_empty(), "{:?}", o.repeated_ids());
    assert!(
        x.prog.fired_behind > 0,
        "the program sent fires while behind: {x:?}"
    );
    assert!(
        x.held > 0,
        "and user space held some until it caught up: {x:?}"
    );
    assert_eq!(x.mismatched, 0, "the engine agreed with every fire: {x:?}");
    assert_eq!((x.held_incomplete, x.held_conflicts), (0, 0), "{x:?}");
    assert_eq!(x.completed, x.prog.fired, "{x:?}");
}
