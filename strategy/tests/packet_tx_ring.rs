//! The AF_PACKET TX ring after a frame the kernel refuses (shorter than an Ethernet
//! header): the frames behind it still go out and every slot comes back. Without
//! PACKET_LOSS the kernel leaves the refused slot WRONG_FORMAT with its ring head on it,
//! and nothing posted after it is ever sent. On the loopback of a namespace the test
//! creates (root; skipped with a printed reason otherwise).

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use netlab::Netns;
use strategy::net::af_packet::filter::Flows;
use strategy::net::af_packet::rings::{group_mac, open, Geometry};
use strategy::net::ring::TxRing;

#[test]
fn a_refused_tx_frame_does_not_wedge_the_ring() {
    if !netlab::is_root() {
        eprintln!("skipped: needs root for a network namespace");
        return;
    }
    let ns = Netns::new("ptx").expect("namespace");
    let outcome = ns
        .spawn(|| {
            let lo = nix::net::if_::if_nametoindex("lo").expect("lo");
            let group = Ipv4Addr::new(239, 255, 0, 1);
            let flows = Flows {
                group,
                md_port: 12345,
                exchange: Ipv4Addr::LOCALHOST,
                exchange_port: 9012,
                local: Ipv4Addr::LOCALHOST,
            };
            let (_rx, mut tx) = open(
                lo,
                &flows,
                group_mac(group),
                Geometry {
                    frame_size: 2048,
                    frames: 8,
                },
            )
            .expect("packet socket");
            // Refused: 4 bytes, below the 14-byte Ethernet header.
            tx.send(4, |b| b.fill(0)).expect("a free slot");
            // Then three good frames (to ourselves, a local experimental ethertype).
            for k in 0..3u8 {
                tx.send(60, |b| {
                    b.fill(k);
                    b[..12].fill(0);
                    b[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
                })
                .expect("a free slot");
            }
            // Each send kicked the kernel; then one more good frame after a reap (the next
            // order's kick). Nothing else: what is in flight must come back.
            let drain = |tx: &mut strategy::net::af_packet::rings::PacketTx| {
                let t = Instant::now();
                while tx.in_flight() > 0 && t.elapsed() < Duration::from_secs(1) {
                    tx.reap();
                    std::thread::sleep(Duration::from_millis(5));
                }
            };
            drain(&mut tx);
            tx.send(60, |b| {
                b.fill(9);
                b[..12].fill(0);
                b[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
            })
            .expect("a free slot");
            drain(&mut tx);
            (tx.in_flight(), tx.stats())
        })
        .expect("spawn")
        .join()
        .expect("the namespace thread");
    let (in_flight, stats) = outcome;
    assert_eq!(
        in_flight, 0,
        "every slot came back after the refused frame: {stats:?}"
    );
}
