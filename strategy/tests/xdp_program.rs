//! The XDP program on crafted frames (BPF_PROG_TEST_RUN), and the UMEM device's frame
//! accounting under a random sequence of consumed and dropped tokens on a real AF_XDP
//! socket in a namespace. Need root and the embedded program; skipped with a reason
//! otherwise.

use std::net::{Ipv4Addr, SocketAddrV4};

use netlab::VethLab;
use smoltcp::phy::{Device, RxToken, TxToken};
use smoltcp::time::Instant;
use strategy::net::af_packet::filter::Flows;
use strategy::net::af_packet::rings::{self as pring, Geometry};
use strategy::net::af_xdp::loader::{counters_of, test_run, Options, Steering, XdpModeArg};
use strategy::net::af_xdp::{open, XdpConfig, XskBind};
use strategy::net::ring::{RingDevice, RxRing, TxRing};

const XDP_PASS: u32 = 2;
const LOCAL: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const EXCHANGE: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 1), 9012);
const GROUP: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(239, 255, 0, 1), 12345);

fn skip() -> bool {
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

fn eth(ethertype: u16) -> Vec<u8> {
    let mut f = vec![0x01, 0x00, 0x5e, 0x7f, 0x00, 0x01, 0x02, 0, 0, 0, 0, 1];
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

fn ipv4(proto: u8, src: Ipv4Addr, dst: Ipv4Addr, l4: &[u8]) -> Vec<u8> {
    let mut f = eth(0x0800);
    let total = (20 + l4.len()) as u16;
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
        proto,
        0,
        0,
    ]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(l4);
    f
}

fn udp(dport: u16, payload: &[u8]) -> Vec<u8> {
    let len = (8 + payload.len()) as u16;
    let mut u = vec![0x15, 0xb3];
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&len.to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    u
}

fn tcp(sport: u16, dport: u16) -> Vec<u8> {
    let mut t = sport.to_be_bytes().to_vec();
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&[0; 16]);
    t
}

fn arp(op: u16, target: Ipv4Addr) -> Vec<u8> {
    let mut f = eth(0x0806);
    f.extend_from_slice(&[0, 1, 0x08, 0, 6, 4]);
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(&[2, 0, 0, 0, 0, 1, 10, 77, 0, 1]);
    f.extend_from_slice(&[2, 0, 0, 0, 0, 2]);
    f.extend_from_slice(&target.octets());
    f
}

#[test]
fn program_classifies_crafted_frames() {
    if skip() {
        return;
    }
    let ebpf = Steering::load(LOCAL, EXCHANGE, GROUP, Options::default()).expect("load");
    let md = b"deribit,BTC-PERPETUAL,1,2,false,ask,6593.5,20750";
    let ex = *EXCHANGE.ip();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("market data", ipv4(17, ex, *GROUP.ip(), &udp(12345, md))),
        ("order entry", ipv4(6, ex, LOCAL, &tcp(9012, 50000))),
        ("arp reply for us", arp(2, LOCAL)),
        ("md wrong port", ipv4(17, ex, *GROUP.ip(), &udp(12346, md))),
        (
            "other group",
            ipv4(17, ex, Ipv4Addr::new(239, 1, 1, 1), &udp(12345, md)),
        ),
        ("tcp other port", ipv4(6, ex, LOCAL, &tcp(22, 50000))),
        (
            "tcp other host",
            ipv4(6, Ipv4Addr::new(10, 77, 0, 3), LOCAL, &tcp(9012, 50000)),
        ),
        ("arp request", arp(1, LOCAL)),
        ("arp reply for another", arp(2, Ipv4Addr::new(10, 77, 0, 9))),
        ("ipv6", {
            let mut f = eth(0x86dd);
            f.extend_from_slice(&[0x60; 40]);
            f
        }),
        ("truncated ipv4", {
            let mut f = eth(0x0800);
            f.extend_from_slice(&[0x45, 0, 0, 20]);
            f
        }),
    ];
    for (name, frame) in &cases {
        // With no socket in the XSKMAP a steered frame cannot be redirected: the program
        // counts it as aborted *for its class* and passes it, so the counters tell which
        // class each frame was put in.
        assert_eq!(
            test_run(&ebpf, frame).expect("test run"),
            XDP_PASS,
            "{name}"
        );
    }
    let c = counters_of(&ebpf);
    assert_eq!(c.market_data, [0, 0, 1], "market data steered");
    assert_eq!(c.order_entry, [0, 0, 1], "order entry steered");
    assert_eq!(c.arp, [0, 0, 1], "ARP reply steered");
    assert_eq!(c.other, [0, 8, 0], "everything else passed to the kernel");
    assert_eq!(
        c.foreign_md,
        [0, 0, 0],
        "no source configured: none foreign"
    );

    // With `--md-source`: the group's datagrams from another source are passed to the
    // kernel and counted apart, never steered (nor decided on by xdp-tx).
    let opts = Options {
        md_source: Some(ex),
        ..Options::default()
    };
    let ebpf = Steering::load(LOCAL, EXCHANGE, GROUP, opts).expect("load");
    let spoofed = Ipv4Addr::new(10, 77, 0, 9);
    for frame in [
        ipv4(17, ex, *GROUP.ip(), &udp(12345, md)),
        ipv4(17, spoofed, *GROUP.ip(), &udp(12345, md)),
        ipv4(17, spoofed, *GROUP.ip(), &udp(12345, md)),
    ] {
        assert_eq!(test_run(&ebpf, &frame).expect("test run"), XDP_PASS);
    }
    let c = counters_of(&ebpf);
    assert_eq!(
        c.market_data,
        [0, 0, 1],
        "the exchange's market data steered"
    );
    assert_eq!(c.foreign_md, [0, 2, 0], "another source's passed, counted");
}

/// xorshift64: a seeded, dependency-free sequence for the random operations.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn device_accounts_for_every_frame_under_random_token_use() {
    if skip() {
        return;
    }
    let lab = VethLab::new("xdv").expect("lab");
    // Market data from the exchange side: real frames for the RX ring, once the socket is
    // bound (loading the program takes the verifier a while on a slow machine).
    let (bound, ready) = std::sync::mpsc::channel();
    let sender = send_market_data(&lab, ready);
    let worker = lab
        .strategy
        .spawn(move || {
            let xcfg = XdpConfig {
                iface: "vs0".into(),
                queues: vec![0],
                mode: XdpModeArg::Auto,
                bind: XskBind::Copy,
                frame_size: 2048,
                frame_count: 256,
                hugepages: false,
                diag: false,
                xdp_tx: false,
                busy_poll: Default::default(),
            };
            let mut o = open(&xcfg, EXCHANGE, GROUP, None).expect("open AF_XDP");
            let _join = strategy::net::sockets::join_group(GROUP, Some(LOCAL), Default::default())
                .expect("join");
            let _ = bound.send(());
            exercise(&mut o.dev)
        })
        .expect("spawn worker");
    let (received, consumed, dropped, sent) = worker.join().expect("worker");
    sender.join().expect("sender");
    assert!(received > 100, "frames arrived: {received}");
    assert!(
        consumed > 0 && dropped > 0 && sent > 0,
        "{consumed} {dropped} {sent}"
    );
}

/// Random consume/drop/transmit/refill/reap operations on a device fed by market data;
/// checks the frame accounting after every step. Returns (received, consumed, dropped, sent).
fn exercise<R: RxRing, T: TxRing>(dev: &mut RingDevice<R, T>) -> (u64, u64, u64, u64) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut received, mut dropped, mut consumed, mut sent) = (0u64, 0u64, 0u64, 0u64);
    let t0 = std::time::Instant::now();
    while t0.elapsed() < std::time::Duration::from_secs(3) {
        received += dev.rx_all_to_stack() as u64;
        match rng.next() % 6 {
            0 | 1 => {
                if let Some((rx, _tx)) = dev.receive(Instant::from_micros(0)) {
                    if rng.next().is_multiple_of(2) {
                        rx.consume(|b| assert!(!b.is_empty()));
                        consumed += 1;
                    } else {
                        drop(rx);
                        dropped += 1;
                    }
                }
            }
            2 => {
                if let Some(tx) = dev.transmit(Instant::from_micros(0)) {
                    if rng.next().is_multiple_of(2) {
                        // A minimal frame towards the exchange namespace.
                        tx.consume(60, |b| {
                            b.fill(0);
                            b[..6].fill(0xff);
                            b[12] = 0x88;
                            b[13] = 0xb5;
                        });
                        sent += 1;
                    }
                }
            }
            3 => dev.refill(),
            4 => dev.reap_completions(),
            _ => {}
        }
        assert!(dev.accounted(), "a frame went missing");
    }
    while let Some((rx, _)) = dev.receive(Instant::from_micros(0)) {
        drop(rx);
        dropped += 1;
    }
    dev.refill();
    let t1 = std::time::Instant::now();
    while dev.tx_in_flight() > 0 && t1.elapsed() < std::time::Duration::from_secs(2) {
        dev.reap_completions();
    }
    assert!(dev.accounted());
    assert_eq!(dev.tx_in_flight(), 0, "every sent frame completed");
    assert_eq!(dev.stack_pending(), 0);
    assert_eq!(dev.stats().rx_unconsumed, dropped, "dropped tokens counted");
    (received, consumed, dropped, sent)
}

/// Sends 3,000 market-data packets from the exchange's side once `ready` says the
/// receiver is bound (or its sender is gone).
fn send_market_data(
    lab: &VethLab,
    ready: std::sync::mpsc::Receiver<()>,
) -> std::thread::JoinHandle<()> {
    lab.exchange
        .spawn(move || {
            let _ = ready.recv();
            // The receiver's first poll follows at once; a moment for it anyway.
            std::thread::sleep(std::time::Duration::from_millis(50));
            let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)
                .expect("socket");
            s.set_multicast_if_v4(&Ipv4Addr::new(10, 77, 0, 1))
                .expect("mcast if");
            let dst: socket2::SockAddr = GROUP.into();
            for i in 0..3000u32 {
                let _ = s.send_to(format!("packet {i}").as_bytes(), &dst);
                if i % 50 == 0 {
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
            }
        })
        .expect("spawn sender")
}

const PACKET_LOCAL: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 3);

fn flows() -> Flows {
    Flows {
        group: *GROUP.ip(),
        md_port: GROUP.port(),
        exchange: *EXCHANGE.ip(),
        exchange_port: EXCHANGE.port(),
        local: PACKET_LOCAL,
    }
}

#[test]
fn packet_ring_accounts_for_every_frame_under_random_token_use() {
    if !netlab::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let lab = VethLab::new("pkd").expect("lab");
    let (bound, ready) = std::sync::mpsc::channel();
    let worker = lab
        .strategy
        .spawn(move || {
            let ifindex = nix::net::if_::if_nametoindex("vs0").expect("vs0");
            let (rx, tx) = pring::open(
                ifindex,
                &flows(),
                pring::group_mac(*GROUP.ip()),
                Geometry {
                    frame_size: 2048,
                    frames: 128,
                },
            )
            .expect("AF_PACKET rings");
            let mut dev = RingDevice::new(rx, tx, 256, 1500);
            let _ = bound.send(());
            exercise(&mut dev)
        })
        .expect("spawn");
    let sender = send_market_data(&lab, ready);
    let (received, consumed, dropped, sent) = worker.join().expect("worker");
    sender.join().expect("sender");
    assert!(received > 100, "frames arrived: {received}");
    assert!(
        consumed > 0 && dropped > 0 && sent > 0,
        "{consumed} {dropped} {sent}"
    );
}

#[test]
fn packet_filter_passes_only_the_flows() {
    if !netlab::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let lab = VethLab::new("pkf").expect("lab");
    let ex = *EXCHANGE.ip();
    let md = b"deribit,BTC-PERPETUAL,1,2,false,ask,6593.5,20750";
    let wanted: Vec<(&str, Vec<u8>)> = vec![
        ("market data", ipv4(17, ex, *GROUP.ip(), &udp(12345, md))),
        ("order entry", ipv4(6, ex, PACKET_LOCAL, &tcp(9012, 50000))),
        ("arp reply for us", arp(2, PACKET_LOCAL)),
        ("arp request for us", arp(1, PACKET_LOCAL)),
    ];
    let unwanted: Vec<(&str, Vec<u8>)> = vec![
        ("md wrong port", ipv4(17, ex, *GROUP.ip(), &udp(12346, md))),
        (
            "other group",
            ipv4(17, ex, Ipv4Addr::new(239, 1, 1, 1), &udp(12345, md)),
        ),
        ("tcp other port", ipv4(6, ex, PACKET_LOCAL, &tcp(22, 50000))),
        (
            "tcp other host",
            ipv4(
                6,
                Ipv4Addr::new(10, 77, 0, 9),
                PACKET_LOCAL,
                &tcp(9012, 50000),
            ),
        ),
        (
            "tcp to the kernel's address",
            ipv4(6, ex, LOCAL, &tcp(9012, 50000)),
        ),
        ("arp for another", arp(2, Ipv4Addr::new(10, 77, 0, 9))),
        ("ipv6", {
            let mut f = eth(0x86dd);
            f.extend_from_slice(&[0x60; 40]);
            f
        }),
        ("truncated ipv4", {
            let mut f = eth(0x0800);
            f.extend_from_slice(&[0x45, 0, 0, 20]);
            f
        }),
    ];
    let expect: Vec<Vec<u8>> = wanted.iter().map(|(_, f)| f.clone()).collect();
    let receiver = lab
        .strategy
        .spawn(move || {
            let ifindex = nix::net::if_::if_nametoindex("vs0").expect("vs0");
            let (mut rx, _tx) = pring::open(
                ifindex,
                &flows(),
                pring::group_mac(*GROUP.ip()),
                Geometry {
                    frame_size: 2048,
                    frames: 64,
                },
            )
            .expect("rings");
            let mut got = Vec::new();
            let mut batch = [0u32; 16];
            let t0 = std::time::Instant::now();
            while t0.elapsed() < std::time::Duration::from_millis(1500) {
                let n = rx.recv(&mut batch);
                let mut back = Vec::new();
                for f in &batch[..n] {
                    got.push(rx.data(f).to_vec());
                    back.push(*f);
                }
                rx.give_back(&mut back);
            }
            got
        })
        .expect("spawn");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let frames: Vec<Vec<u8>> = unwanted
        .iter()
        .chain(wanted.iter())
        .map(|(_, f)| f.clone())
        .collect();
    lab.exchange
        .spawn(move || {
            // A raw packet socket on the exchange side sends the crafted frames as they are.
            // SAFETY: plain socket(2) for AF_PACKET/SOCK_RAW.
            let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
            assert!(fd >= 0, "packet socket");
            let ifindex = nix::net::if_::if_nametoindex("vx0").expect("vx0");
            // SAFETY: all-zero is a valid sockaddr_ll.
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_ifindex = ifindex as i32;
            sll.sll_halen = 6;
            for f in &frames {
                // SAFETY: `f` and `sll` are valid for the call.
                let n = unsafe {
                    libc::sendto(
                        fd,
                        f.as_ptr().cast(),
                        f.len(),
                        0,
                        (&raw const sll).cast(),
                        std::mem::size_of::<libc::sockaddr_ll>() as u32,
                    )
                };
                assert_eq!(n as usize, f.len(), "sent");
            }
            // SAFETY: closing our own fd.
            unsafe { libc::close(fd) };
        })
        .expect("spawn sender")
        .join()
        .expect("sender");
    let got = receiver.join().expect("receiver");
    // Frames shorter than 60 bytes are padded on the wire: compare the prefix.
    let matched: Vec<bool> = expect
        .iter()
        .map(|e| {
            got.iter()
                .any(|g| g.len() >= e.len() && &g[..e.len()] == e.as_slice())
        })
        .collect();
    assert!(
        matched.iter().all(|m| *m),
        "every wanted frame arrived: {matched:?}"
    );
    assert_eq!(
        got.len(),
        expect.len(),
        "and nothing else ({} frames)",
        got.len()
    );
}

/// A `log::Log` that keeps the messages it is given (the program's aya-log records).
struct Capture(std::sync::Mutex<Vec<String>>);

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        if let Ok(mut v) = self.0.lock() {
            v.push(record.args().to_string());
        }
    }
    fn flush(&self) {}
}

/// The load-time switch: with `diag` the odd frames are logged through aya-log (and the
/// frames the program exists for are not); without it nothing is ever logged.
#[test]
fn diagnostics_log_odd_frames_only_when_switched_on() {
    if skip() {
        return;
    }
    let md = b"deribit,BTC-PERPETUAL,1,2,false,ask,6593.5,20750";
    let ex = *EXCHANGE.ip();
    let short = eth(0x0800); // no IPv4 header at all
    let steered = ipv4(17, ex, *GROUP.ip(), &udp(12345, md)); // no socket: aborted
    let passed = arp(1, LOCAL); // an ordinary frame for the kernel
    for diag in [false, true] {
        let mut ebpf = Steering::load(
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
        let capture: &'static Capture = Box::leak(Box::new(Capture(Default::default())));
        let mut logger =
            aya_log::EbpfLogger::init_with_logger(&mut ebpf, capture).expect("log ring");
        for frame in [&short, &steered, &passed] {
            test_run(&ebpf, frame).expect("test run");
        }
        logger.flush();
        let got = capture.0.lock().expect("lock").clone();
        if diag {
            assert_eq!(got.len(), 2, "{got:?}");
            assert!(
                got[0].contains("too short to classify: 14 bytes"),
                "{got:?}"
            );
            assert!(
                got[1].contains("no AF_XDP socket on queue 0 (class 0)"),
                "{got:?}"
            );
        } else {
            assert!(got.is_empty(), "logged with the switch off: {got:?}");
        }
    }
}
