//! The TPACKET_V3 receive ring over a real veth, without the strategy around it: every
//! datagram the exchange's side sends reaches the ring or is counted dropped by the kernel,
//! paced (blocks handed over at their timeout) and back to back (blocks handed over full),
//! each payload intact and in order, and every block goes back to the kernel. Needs root;
//! skipped with a printed reason otherwise.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

#[path = "common/procs.rs"]
mod procs;

use netlab::VethLab;
use strategy::net::af_packet::filter::Flows;
use strategy::net::af_packet::v3::{open_rx, BlockGeometry};
use strategy::net::ring::RxRing;

const GROUP: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(239, 255, 0, 1), 12345);

/// Receives on vs0 until `want` datagrams to the group arrived or nothing came for 1 s;
/// returns the sequence numbers read from the payloads and the kernel's drops.
fn receive(
    lab: &VethLab,
    want: usize,
    g: BlockGeometry,
) -> std::thread::JoinHandle<(Vec<u64>, u64)> {
    lab.strategy
        .spawn(move || {
            let ifindex = nix::net::if_::if_nametoindex("vs0").expect("vs0");
            let flows = Flows {
                group: *GROUP.ip(),
                md_port: GROUP.port(),
                exchange: Ipv4Addr::new(10, 77, 0, 1),
                exchange_port: 9012,
                local: Ipv4Addr::new(10, 77, 0, 3),
            };
            let mut rx = open_rx(ifindex, &flows, proto::md::group_mac(*GROUP.ip()), g)
                .expect("TPACKET_V3 ring");
            let mut seqs = Vec::with_capacity(want);
            let mut frames = [0u32; 64];
            let mut back = Vec::with_capacity(64);
            let mut last = Instant::now();
            while seqs.len() < want && last.elapsed() < Duration::from_secs(1) {
                let n = rx.recv(&mut frames);
                if n > 0 {
                    last = Instant::now();
                }
                for f in &frames[..n] {
                    let data = rx.data(f);
                    // Ethernet 14 + IPv4 20 + UDP 8, then the payload: "seq <n>".
                    let text =
                        std::str::from_utf8(data.get(42..).unwrap_or_default()).unwrap_or_default();
                    if let Some(n) = text.strip_prefix("seq ").and_then(|s| s.parse().ok()) {
                        seqs.push(n);
                    }
                    back.push(*f);
                }
                rx.give_back(&mut back);
            }
            assert!(rx.accounted(0), "every frame given back");
            assert_eq!(rx.double_give_backs, 0);
            assert_eq!(rx.bad_blocks, 0, "every block's chain inside it");
            (seqs, rx.kernel_drops().unwrap_or(0))
        })
        .expect("spawn")
}

fn send(lab: &VethLab, n: u64, gap: Duration) {
    lab.exchange
        .spawn(move || {
            let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)
                .expect("udp");
            s.set_multicast_if_v4(&Ipv4Addr::new(10, 77, 0, 1))
                .expect("mcast if");
            let dst: socket2::SockAddr = GROUP.into();
            for i in 0..n {
                let t = Instant::now();
                // A send the kernel refuses (ENOBUFS under a burst) is retried, for a
                // second at most: every sequence number goes out once.
                let payload = format!("seq {i}");
                while let Err(e) = s.send_to(payload.as_bytes(), &dst) {
                    assert!(t.elapsed() < Duration::from_secs(1), "seq {i}: {e}");
                }
                while t.elapsed() < gap {}
            }
        })
        .expect("spawn")
        .join()
        .expect("sender");
}

fn run(gap: Duration, n: u64, g: BlockGeometry, what: &str) {
    let lab = VethLab::new("pv3").expect("lab");
    let rx = receive(&lab, n as usize, g);
    std::thread::sleep(Duration::from_millis(200));
    send(&lab, n, gap);
    let (seqs, drops) = rx.join().expect("receiver thread");
    assert_eq!(
        seqs.len() as u64 + drops,
        n,
        "{what}: sent {n} = received {} + dropped {drops}",
        seqs.len()
    );
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "{what}: in order, each once"
    );
    if drops == 0 {
        assert_eq!(
            seqs,
            (0..n).collect::<Vec<_>>(),
            "{what}: every payload intact"
        );
    }
}

#[test]
fn every_datagram_reaches_the_v3_ring_or_is_counted_dropped() {
    if procs::skip() {
        return;
    }
    let _serial = procs::serial();
    let g = BlockGeometry {
        block_size: 4096,
        blocks: 64,
        timeout_ms: 1,
    };
    // 5 k/s: blocks leave at their timeout, a few frames each.
    run(Duration::from_micros(200), 2_000, g, "paced");
    // Back to back: blocks leave full; the ring (64 blocks) may overflow, counted.
    run(Duration::ZERO, 20_000, g, "back to back");
    // Two pages a block, a long timeout: full blocks only, but for the last.
    run(
        Duration::from_micros(20),
        5_000,
        BlockGeometry {
            block_size: 8192,
            blocks: 16,
            timeout_ms: 8,
        },
        "8 KiB blocks",
    );
}
