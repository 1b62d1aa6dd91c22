//! The XDP program's cost per frame, measured by the kernel (BPF_PROG_TEST_RUN with
//! `repeat`: the mean run time of the program on one frame), with the aya-log diagnostics
//! switched off and on: an ordinary frame passed to the kernel (the common path: it never
//! reaches a log call), a market-data frame with no socket on its queue, and a frame too
//! short to classify (both log when switched on). Then the `xdp-tx` decision: a
//! market-data frame parsed and checked against an armed book without firing, and one that
//! fires (the mailbox record, frame rewritten into the order segment); each is one run per
//! generation (the program decides once per generation), re-armed between runs, median of
//! the kernel's per-run times; and the same decision with user space on another CPU than
//! the program (as in the lab: the armed state and the mailbox written and polled from
//! CPU 1, the program run on CPU 0). Needs root and the embedded program;
//! `cargo bench -p strategy --bench xdp_steer`.

use std::net::{Ipv4Addr, SocketAddrV4};

use strategy::net::af_xdp::loader::{has_object, take_xtx, test_run_repeat, Options, Steering};
use strategy::net::af_xdp::xtx_map::XtxMap;
use strategy_common::xtx::{Armed, Level, Shape, SideTop, Template, HEADER_LEN};

const LOCAL: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const EXCHANGE: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 1), 9012);
const GROUP: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(239, 255, 0, 1), 12345);
const REPEAT: u32 = 1_000_000;
const ROUNDS: usize = 7;

fn md_frame() -> Vec<u8> {
    let payload = b"deribit,BTC-PERPETUAL,1585699200245000,1585699200355000,false,ask,6593.5,20750";
    let mut f = vec![
        0x01, 0x00, 0x5e, 0x7f, 0x00, 0x01, 2, 0, 0, 0, 0, 1, 0x08, 0x00,
    ];
    let total = 20 + 8 + payload.len();
    f.extend_from_slice(&[
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0,
        0,
        0x40,
        0,
        64,
        17,
        0,
        0,
    ]);
    f.extend_from_slice(&EXCHANGE.ip().octets());
    f.extend_from_slice(&GROUP.ip().octets());
    let ulen = 8 + payload.len();
    f.extend_from_slice(&[0x30, 0x39, 0x30, 0x39, (ulen >> 8) as u8, ulen as u8, 0, 0]);
    f.extend_from_slice(payload);
    f
}

fn median_ns(diag: bool, frame: &[u8]) -> u32 {
    let ebpf = Steering::load(
        LOCAL,
        EXCHANGE,
        GROUP,
        Options {
            diag,
            xdp_tx: false,
            md_source: None,
        },
    )
    .expect("load");
    let mut out = vec![0u8; 2048];
    let mut runs: Vec<u32> = (0..ROUNDS)
        .map(|_| {
            test_run_repeat(&ebpf, frame, &mut out, REPEAT)
                .expect("BPF_PROG_TEST_RUN")
                .duration_ns
        })
        .collect();
    runs.sort_unstable();
    runs[ROUNDS / 2]
}

/// [`armed`] with what changes between two frames of a session changing here too (the
/// generation, the last sequence number, one side's top level, and the template's
/// sequence number, which moves after every fire), so that the program finds those lines
/// written by the other CPU, as in the lab.
fn armed_live(generation: u64, shape: Shape) -> Armed {
    let mut a = armed(generation, shape);
    a.last_seq = generation;
    a.bids.levels[0].qty = 1_000 + (generation % 7);
    let mut h = a.template.header;
    h[38..42].copy_from_slice(&(generation as u32).to_be_bytes());
    a.template = Template::new(h);
    a
}

/// Bids 6593.0 .. 6589.0, asks 6593.5 .. 6597.5, sizes 1,000; threshold 50,000,000.
fn armed(generation: u64, shape: Shape) -> Armed {
    let side = |start: i64, step: i64| {
        let mut t = SideTop::default();
        for (i, l) in t.levels.iter_mut().take(5).enumerate() {
            *l = Level {
                price: (start + step * i as i64) * 10_000_000,
                qty: 1_000,
            };
        }
        t.count = 5;
        t
    };
    let mut h = [0u8; HEADER_LEN];
    h[12] = 0x08;
    h[14] = 0x45;
    h[23] = 6;
    Armed {
        ticket: 0,
        generation,
        levels: 5,
        amount_decimals: 0,
        threshold_kind: 0,
        qty_by_best: 0,
        threshold: 50_000_000,
        last_seq: 0,
        order_qty: [1, 1],
        allowed: [1, 1],
        bids: side(65930, -5),
        asks: side(65935, 5),
        template: Template::new(h),
        shape,
    }
}

/// The program loaded for `xdp-tx`, and its shared map.
fn load_xtx() -> (aya::Ebpf, XtxMap) {
    let mut ebpf = Steering::load(
        LOCAL,
        EXCHANGE,
        GROUP,
        Options {
            diag: false,
            xdp_tx: true,
            md_source: None,
        },
    )
    .expect("load");
    let map = take_xtx(&mut ebpf).expect("xtx maps");
    (ebpf, map)
}

/// Hands out every fire record waiting in the mailbox; how many were consistent.
fn drain_fires(map: &mut XtxMap) -> u64 {
    let mut fired = 0;
    while let Some(rec) = map.next_fire() {
        fired += u64::from(rec.is_ok());
    }
    fired
}

/// The `xdp-tx` decision on `frame`, one run per generation: median ns over `n` runs.
/// `shape`: the layout for the program's fast path (default: off, the byte-at-a-time parser).
fn xtx_ns(frame: &[u8], n: u64, shape: Shape) -> (u32, u64) {
    let (ebpf, mut map) = load_xtx();
    let mut out = vec![0u8; 2048];
    let mut fired = 0;
    let mut runs: Vec<u32> = (0..n)
        .map(|g| {
            // Whether or not the last run fired, no ticket is out between runs.
            map.fired();
            map.publish(&armed(g, shape), true).expect("no ticket out");
            let r = test_run_repeat(&ebpf, frame, &mut out, 1).expect("BPF_PROG_TEST_RUN");
            fired += drain_fires(&mut map);
            r.duration_ns
        })
        .collect();
    runs.sort_unstable();
    (runs[runs.len() / 2], fired)
}

/// [`xtx_ns`] with the two sides on two CPUs, as in the lab: this thread (pinned to CPU 1,
/// the strategy's) publishes each generation and polls the mailbox as the strategy does,
/// and a second thread (pinned to CPU 0, where a veth runs the program: the sender's)
/// runs the program once per generation. The armed state and the mailbox then reach the
/// program from the other CPU's cache, as they do in the lab.
fn xtx_cross_ns(frame: &[u8], n: u64, shape: Shape) -> (u32, u64) {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    let (ebpf, mut map) = load_xtx();
    // `go`: the generation to run (0: none yet; g + 1 for generation g); `done`: the last
    // generation run, plus one. u64::MAX in `go`: stop.
    let (go, done) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (go2, done2) = (Arc::clone(&go), Arc::clone(&done));
    let frame = frame.to_vec();
    let runner = std::thread::spawn(move || {
        hostsys::sched::pin_cpu(0).expect("pin to CPU 0");
        let mut out = vec![0u8; 2048];
        let mut times = Vec::with_capacity(n as usize);
        let mut next = 1;
        loop {
            let g = go2.load(Ordering::Acquire);
            if g == u64::MAX {
                return times;
            }
            if g != next {
                std::hint::spin_loop();
                continue;
            }
            let r = test_run_repeat(&ebpf, &frame, &mut out, 1).expect("BPF_PROG_TEST_RUN");
            times.push(r.duration_ns);
            done2.store(g, Ordering::Release);
            next += 1;
        }
    });
    hostsys::sched::pin_cpu(1).expect("pin to CPU 1");
    let mut fired = 0;
    for g in 0..n {
        map.fired();
        map.publish(&armed_live(g, shape), true)
            .expect("no ticket out");
        go.store(g + 1, Ordering::Release);
        // Polling the mailbox while the program runs, as the strategy's loop does.
        while done.load(Ordering::Acquire) != g + 1 {
            fired += drain_fires(&mut map);
        }
        fired += drain_fires(&mut map);
    }
    go.store(u64::MAX, Ordering::Release);
    let mut runs = runner.join().expect("runner");
    runs.sort_unstable();
    (runs[runs.len() / 2], fired)
}

fn main() {
    // BPF_PROG_TEST_RUN needs CAP_BPF/CAP_SYS_ADMIN: the effective uid from /proc.
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false);
    if !root || !has_object() {
        eprintln!("xdp_steer: skipped (needs root and the XDP program: cargo xtask build-ebpf)");
        return;
    }
    let md = md_frame();
    let short = md[..14].to_vec();
    let mut passed = md.clone();
    passed[30..34].copy_from_slice(&[239, 1, 1, 1]); // another group: not ours
    println!("XDP program, kernel-measured mean ns per run (median of {ROUNDS} x {REPEAT} runs):");
    println!("{:<34}{:>10}{:>10}", "frame", "diag off", "diag on");
    for (name, frame) in [
        ("other group (passed; common path)", &passed),
        ("market data, no socket (aborted)", &md),
        ("too short to classify", &short),
    ] {
        println!(
            "{:<34}{:>10}{:>10}",
            name,
            median_ns(false, frame),
            median_ns(true, frame)
        );
    }
    println!("(with diag on and no logger reading, records are dropped when the ring is full)");
    println!();
    println!(
        "xdp-tx decision, kernel-measured ns per run (median of 20,000 runs, one per generation):"
    );
    let n = 20_000;
    let payload = &md[42..];
    let shape = Shape::learn(payload).expect("the common layout");
    let big = md_frame_with(
        b"deribit,BTC-PERPETUAL,1585699200245000,1585699200355000,false,ask,6593.5,90000000",
    );
    // The measurement's own floor under the same conditions (armed state just written, one
    // run per syscall): a frame of another group, passed at its classification.
    let (floor, _) = xtx_ns(&passed, n, shape);
    println!(
        "{:<58}{:>8} ns",
        "floor: another group's frame, passed at once", floor
    );
    if std::thread::available_parallelism().map_or(1, usize::from) >= 2 {
        println!(
            "{:<58}{:>8} ns",
            "two CPUs: floor (another group's frame)",
            xtx_cross_ns(&passed, n, shape).0
        );
        let (quiet, _) = xtx_cross_ns(&md, n, shape);
        let (fire, f1) = xtx_cross_ns(&big, n, shape);
        println!(
            "{:<58}{:>8} ns",
            "two CPUs: fast path, parsed and checked, no fire", quiet
        );
        println!(
            "{:<58}{:>8} ns  (fired {f1})",
            "two CPUs: fast path, fires", fire
        );
    }
    for (parser, shape) in [("byte at a time", Shape::default()), ("fast path", shape)] {
        let (quiet, f0) = xtx_ns(&md, n, shape);
        let (fire, f1) = xtx_ns(&big, n, shape);
        println!(
            "{:<58}{:>8} ns  (fired {f0})",
            format!("{parser}: parsed and checked, no fire (ask 20,750)"),
            quiet
        );
        println!(
            "{:<58}{:>8} ns  (fired {f1})",
            format!("{parser}: fires (ask +90,000,000): record, XDP_TX"),
            fire
        );
    }
}

/// [`md_frame`] with another payload (IPv4 and UDP lengths set).
fn md_frame_with(payload: &[u8]) -> Vec<u8> {
    let mut f = md_frame();
    f.truncate(42);
    f.extend_from_slice(payload);
    let total = 20 + 8 + payload.len();
    f[16..18].copy_from_slice(&(total as u16).to_be_bytes());
    f[38..40].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    f
}
