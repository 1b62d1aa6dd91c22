//! What the tests of the `xdp-tx` program on crafted frames share (BPF_PROG_TEST_RUN): the
//! frames, an armed state, the loaded program with its mapped state, and the checks of a
//! frame left to user space and of the segment the program builds. Include with
//! `#[path = "common/xtx_prog.rs"] mod xtx_prog;`.
#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddrV4};

use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use strategy::net::af_xdp::loader::{test_run_repeat, Options, Steering};
use strategy::net::af_xdp::xtx_map::XtxMap;
use strategy_common::xtx::{
    Armed, Level, Shape, SideTop, Template, FRAME_LEN, HEADER_LEN, TAG_LEN,
};

pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const LOCAL: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
pub const EXCHANGE: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 1), 9012);
pub const GROUP: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(239, 255, 0, 1), 12345);
pub const SEQ: u32 = 0x1234_5678;
pub const ACK: u32 = 0x0bad_cafe;

pub fn skip() -> bool {
    if !netlab::is_root() {
        eprintln!("skipped: needs root");
        return true;
    }
    if !strategy::net::af_xdp::loader::has_object() {
        eprintln!("skipped: built without the XDP program (run `cargo xtask build-ebpf`)");
        return true;
    }
    false
}

/// A market-data frame carrying `line`.
pub fn md_frame(line: &[u8]) -> Vec<u8> {
    let mut f = vec![
        0x01, 0x00, 0x5e, 0x7f, 0x00, 0x01, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00,
    ];
    let total = (20 + 8 + line.len()) as u16;
    f.extend_from_slice(&[0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0]);
    f[16..18].copy_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&EXCHANGE.ip().octets());
    f.extend_from_slice(&GROUP.ip().octets());
    f.extend_from_slice(&40000u16.to_be_bytes());
    f.extend_from_slice(&GROUP.port().to_be_bytes());
    f.extend_from_slice(&((8 + line.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(line);
    f
}

/// Headers of the segment smoltcp would send next (ours -> the exchange).
pub fn template() -> Template {
    let mut h = [0u8; HEADER_LEN];
    h[..6].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
    h[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
    h[12..14].copy_from_slice(&[0x08, 0x00]);
    h[14] = 0x45;
    h[20] = 0x40; // DF
    h[22] = 64;
    h[23] = 6;
    h[26..30].copy_from_slice(&LOCAL.octets());
    h[30..34].copy_from_slice(&EXCHANGE.ip().octets());
    h[34..36].copy_from_slice(&50000u16.to_be_bytes());
    h[36..38].copy_from_slice(&EXCHANGE.port().to_be_bytes());
    h[38..42].copy_from_slice(&SEQ.to_be_bytes());
    h[42..46].copy_from_slice(&ACK.to_be_bytes());
    h[48..50].copy_from_slice(&2048u16.to_be_bytes());
    Template::new(h)
}

pub fn side(levels: &[(i64, u64)], complete: bool) -> SideTop {
    let mut s = SideTop::default();
    for (slot, &(price, qty)) in s.levels.iter_mut().zip(levels) {
        *slot = Level { price, qty };
        s.count += 1;
    }
    s.complete = u32::from(complete);
    s
}

pub const P: i64 = 100_000_000;

/// Bids 100, 99, 98 (size 10 each); asks 101, 102 (size 20); threshold 1,000.
pub fn armed(generation: u64) -> Armed {
    Armed {
        ticket: 0,
        generation,
        levels: 5,
        amount_decimals: 0,
        threshold_kind: 0,
        qty_by_best: 0,
        threshold: 1_000,
        last_seq: 50,
        order_qty: [3, 4],
        allowed: [1, 1],
        bids: side(&[(100 * P, 10), (99 * P, 10), (98 * P, 10)], true),
        asks: side(&[(101 * P, 20), (102 * P, 20)], true),
        template: template(),
        shape: Shape::default(),
    }
}

pub fn line(seq: u64, snapshot: bool, side: &str, price: &str, amount: u64) -> Vec<u8> {
    format!("deribit,BTC-PERPETUAL,1,{seq},{snapshot},{side},{price},{amount}\n").into_bytes()
}

pub struct Prog {
    pub ebpf: aya::Ebpf,
    pub map: XtxMap,
}

impl Prog {
    pub fn load() -> Self {
        let t0 = std::time::Instant::now();
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
        .expect("load (the verifier accepts the xdp-tx program)");
        let map = strategy::net::af_xdp::loader::take_xtx(&mut ebpf).expect("xtx maps");
        // What the verifier had to walk (older kernels prune less: the guest's 6.1 must
        // stay under its million too). Measured on 6.18: see docs/xdp-tx.md.
        let prog: &aya::programs::Xdp = ebpf
            .program("steer")
            .expect("steer")
            .try_into()
            .expect("an XDP program");
        let verified = prog
            .info()
            .expect("program info")
            .verified_instruction_count();
        eprintln!(
            "xdp-tx program: {verified:?} instructions verified, loaded in {:?}",
            t0.elapsed()
        );
        if let Some(n) = verified {
            assert!(n < 250_000, "the verifier walked {n} instructions");
        }
        Self { ebpf, map }
    }

    /// Arms with `a` and a fresh ticket (no ticket out before: the last one was claimed or
    /// is taken back).
    pub fn arm(&mut self, a: &Armed) {
        let _ = self.map.disarm();
        self.map.fired();
        self.map.publish(a, true).expect("no ticket out");
    }

    pub fn run(&self, frame: &[u8]) -> (u32, Vec<u8>) {
        let mut out = vec![0u8; 2048];
        let r = test_run_repeat(&self.ebpf, frame, &mut out, 1).expect("test run");
        out.truncate(r.len_out);
        (r.retval, out)
    }
}

/// A frame left to user space: the program's tag with the frame's index (what user space
/// resynchronises its count from), then the original bytes.
pub fn assert_tagged(out: &[u8], frame: &[u8], index: u64) {
    assert_eq!(out.len(), frame.len() + TAG_LEN, "the tag was added");
    let (tag, rest) = strategy_common::xtx::split_tag(out);
    assert_eq!(rest, frame, "the frame itself is untouched");
    assert_eq!(tag, Some(index as u32), "the tag holds the index");
}

/// The segment as an independent parser reads it.
pub fn check_segment(frame: &[u8], qty: &[u8; 4], price: i64, side: u8, trigger: u64) {
    let pkt = SlicedPacket::from_ethernet(frame).expect("etherparse reads the frame");
    let Some(NetSlice::Ipv4(ip)) = pkt.net else {
        panic!("not IPv4")
    };
    let h = ip.header();
    assert_eq!(h.source_addr(), LOCAL);
    assert_eq!(h.destination_addr(), *EXCHANGE.ip());
    assert_eq!(usize::from(h.total_len()), FRAME_LEN - 14);
    let ip_hdr = h.to_header();
    assert_eq!(
        ip_hdr.header_checksum,
        ip_hdr.calc_header_checksum(),
        "IPv4 checksum"
    );
    let Some(TransportSlice::Tcp(tcp)) = pkt.transport else {
        panic!("not TCP")
    };
    assert_eq!(tcp.destination_port(), EXCHANGE.port());
    assert_eq!(tcp.sequence_number(), SEQ);
    assert_eq!(tcp.acknowledgment_number(), ACK);
    assert!(tcp.psh() && tcp.ack() && !tcp.syn() && !tcp.fin() && !tcp.rst());
    assert_eq!(tcp.window_size(), 2048);
    let payload = tcp.payload();
    let mut want = Vec::new();
    want.extend_from_slice(qty);
    want.extend_from_slice(&price.to_le_bytes());
    want.push(side);
    want.extend_from_slice(&trigger.to_le_bytes());
    assert_eq!(payload, &want[..], "the 21-byte order");
    let sum = tcp
        .to_header()
        .calc_checksum_ipv4(&ip_hdr, payload)
        .expect("checksum");
    assert_eq!(tcp.checksum(), sum, "TCP checksum");
}
