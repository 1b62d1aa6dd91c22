//! A burst the strategy cannot keep up with: the exchange at `--pace max`, the strategy
//! slowed to 20 us a packet (`--md-work`) with a small receive side (a 16 KiB socket buffer
//! on kernel and io_uring, 256 UMEM frames on AF_XDP and `xdp-tx`, a 256-frame AF_PACKET
//! ring). Every path
//! loses packets here, and every lost packet is counted: the packets the strategy handled
//! plus the drops it reports (UDP RcvbufErrors; the AF_XDP socket's XDP_STATISTICS; the
//! AF_PACKET ring's PACKET_STATISTICS; the raw rings' counts also hold the order
//! connection's segments they dropped, a few) equal the packets the exchange sent. The orders then
//! differ from the oracle's, by what those drops took. Needs root; skipped otherwise.

#[path = "common/procs.rs"]
mod procs;

use std::time::Duration;

use netlab::VethLab;
use strategy::net::{NetKind, PathReport};

fn exchange_packets_sent(summary: &std::path::Path) -> u64 {
    let s = exchange::results::read_summaries(summary).expect("exchange summary");
    s.first().expect("a session").counters.packets_sent
}

#[test]
fn every_packet_a_burst_drops_is_counted() {
    if procs::skip() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let md = procs::md_file(dir.path(), "burst.csv.gz", 40_000, 20, 20);
    let want = procs::oracle(&md);
    let mut nets = vec!["kernel", "uring", "packet"];
    if strategy::net::af_xdp::loader::has_object() {
        nets.push("xdp");
        nets.push("xdp-tx");
    }
    for net in nets {
        let lab = VethLab::new("bst").expect("lab");
        let _pass = procs::XdpPass::for_path(&lab.exchange, net);
        let f = |s: &str| dir.path().join(format!("{net}.{s}"));
        let (csv, results, exlog, stlog) = (f("ex.csv"), f("st.jsonl"), f("ex.log"), f("st.log"));
        let mut ex = procs::exchange(
            &lab.exchange,
            &md,
            &csv,
            &exlog,
            &["--sessions", "1", "--pace", "max", "--grace", "500ms"],
        );
        std::thread::sleep(Duration::from_millis(100));
        let mut extra = vec![
            "--sessions",
            "1",
            "--md-work",
            "20us",
            "--results",
            results.to_str().expect("utf8"),
        ];
        match procs::kind(net) {
            NetKind::Kernel | NetKind::Uring => extra.extend(["--md-rcvbuf", "16384"]),
            NetKind::Xdp | NetKind::XdpTx => extra.extend(["--frame-count", "256"]),
            NetKind::Packet => extra.extend(["--packet-frames", "256"]),
        }
        let mut st = procs::strategy(&lab.strategy, net, &stlog, &extra);
        procs::wait(&mut ex, Duration::from_secs(60), "exchange", &exlog);
        procs::wait(&mut st, Duration::from_secs(20), "strategy", &stlog);
        let sent = exchange_packets_sent(&std::path::PathBuf::from(format!(
            "{}.summary.jsonl",
            csv.display()
        )));
        let r = &procs::reports(&results)[0];
        let handled = r.path.packets;
        let drops = match (r.net, &r.path_extra) {
            (NetKind::Kernel | NetKind::Uring, _) => Some(r.udp_drops.rcvbuf_errors),
            (_, PathReport::Ring(ring)) => ring.kernel_drops,
            _ => None,
        }
        .expect("a drop counter");
        let orders = procs::read_orders(&csv, None);
        eprintln!(
            "{net}: sent {sent}, handled {handled}, dropped {drops}; orders {} (oracle {})",
            orders.len(),
            want.len()
        );
        assert!(
            drops > 0,
            "{net}: the burst overran the receive side: {r:?}"
        );
        if matches!(
            procs::kind(net),
            NetKind::Packet | NetKind::Xdp | NetKind::XdpTx
        ) {
            // A raw ring's drop count also holds the exchange's TCP segments it dropped (an
            // ACK per order, the handshake, the FIN): at most a few more than the orders.
            let extra = (handled + drops).checked_sub(sent);
            assert!(
                extra.is_some_and(|e| e <= orders.len() as u64 + 10),
                "{net}: every packet handled or counted dropped (+ TCP segments): {r:?}"
            );
        } else {
            assert_eq!(
                handled + drops,
                sent,
                "{net}: every packet handled or counted dropped: {r:?}"
            );
        }
    }
}
