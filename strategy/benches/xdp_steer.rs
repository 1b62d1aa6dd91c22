//! The XDP program's cost per frame, measured by the kernel (BPF_PROG_TEST_RUN with
//! `repeat`: the mean run time of the program on one frame), with the aya-log diagnostics
//! switched off and on: an ordinary frame passed to the kernel (the common path: it never
//! reaches a log call), a market-data frame with no socket on its queue, and a frame too
//! short to classify (both log when switched on). Needs root and the embedded program;
//! `cargo bench -p strategy --bench xdp_steer`.

use std::net::{Ipv4Addr, SocketAddrV4};

use strategy::net::af_xdp::loader::{has_object, test_run_repeat, Options, Steering};

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
}
