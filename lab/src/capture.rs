//! Packet captures of lab runs: taking them (`lab --pcap`: tcpdump on the exchange's veth,
//! [`start`] / [`stop`]) and reading them (`cargo xtask lab analyze RESULTS`, [`run`]):
//! wire-to-wire latency from the captures.
//!
//! Each capture (`<path>-<run>.pcap`, nanosecond timestamps, taken on the exchange's side
//! of the veth by `lab --pcap`) is read with pcap-file and etherparse: the first market-data
//! datagram carrying each `local_timestamp`, and the order stream from the strategy
//! (reassembled by sequence number, retransmissions dropped, framed into 21-byte
//! messages). Each order is matched to the datagram whose id it carries; the difference of
//! the two capture timestamps is the wire-to-wire tick-to-trade, printed next to the
//! exchange's own figures. The capture opens in Wireshark.

use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use pcap_file::pcap::PcapReader;
use proto::order::{OrderRepr, ORDER_LEN};

use crate::oracle::read_exchange_orders;
use crate::process::Proc;
use crate::stats::pct;

/// One order found on the wire.
#[derive(Debug, Clone, Copy)]
pub struct WireOrder {
    /// The order.
    pub order: OrderRepr,
    /// Capture time of the segment that completed it, ns.
    pub order_ns: u64,
    /// Capture time of the first market-data packet with its id, if captured.
    pub md_ns: Option<u64>,
}

/// Reads a capture: the orders in stream order, each with its market-data match.
pub fn read_capture(path: &Path, md_port: u16, oe_port: u16) -> Result<Vec<WireOrder>> {
    let file = fs::File::open(path).with_context(|| path.display().to_string())?;
    let mut reader =
        PcapReader::new(file).with_context(|| format!("{} is not a pcap file", path.display()))?;
    let mut first_md: HashMap<u64, u64> = HashMap::new();
    let mut next_seq: Option<u32> = None;
    let mut stream: Vec<u8> = Vec::new();
    let mut orders = Vec::new();
    while let Some(pkt) = reader.next_packet() {
        let pkt = pkt.context("reading the capture")?;
        let ts = pkt.timestamp.as_nanos() as u64;
        let Ok(sliced) = SlicedPacket::from_ethernet(&pkt.data) else {
            continue;
        };
        let Some(NetSlice::Ipv4(_)) = sliced.net else {
            continue;
        };
        match sliced.transport {
            Some(TransportSlice::Udp(u)) if u.destination_port() == md_port => {
                if let Ok(line) = proto::md::parse_line(u.payload(), 0) {
                    first_md.entry(line.local_timestamp).or_insert(ts);
                }
            }
            Some(TransportSlice::Tcp(t))
                if t.destination_port() == oe_port && !t.payload().is_empty() =>
            {
                let (seq, payload) = (t.sequence_number(), t.payload());
                let expected = *next_seq.get_or_insert(seq);
                // Bytes before `expected` were seen already (a retransmission): skip them.
                let skip = expected.wrapping_sub(seq) as usize;
                if skip >= payload.len() && skip < (1 << 30) {
                    continue;
                }
                let fresh = if skip < (1 << 30) {
                    &payload[skip..]
                } else {
                    payload
                };
                next_seq = Some(seq.wrapping_add(payload.len() as u32));
                stream.extend_from_slice(fresh);
                while stream.len() >= ORDER_LEN {
                    let msg: Vec<u8> = stream.drain(..ORDER_LEN).collect();
                    if let Ok(order) = OrderRepr::decode(&msg) {
                        orders.push(WireOrder {
                            order,
                            order_ns: ts,
                            md_ns: None,
                        });
                    }
                }
            }
            _ => {}
        }
    }
    for o in &mut orders {
        o.md_ns = first_md.get(&o.order.trigger_id).copied();
    }
    Ok(orders)
}

/// Analyzes every capture of a results folder; fails when a capture's orders differ from
/// the results file's.
pub fn run(dir: &Path) -> Result<()> {
    let mut caps: Vec<_> = fs::read_dir(dir)
        .with_context(|| dir.display().to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "pcap"))
        .collect();
    caps.sort();
    if caps.is_empty() {
        bail!("no .pcap in {} (run the lab with --pcap)", dir.display());
    }
    println!(
        "{:<12}{:>8}{:>9}{:>8}  {:>10}{:>10}  {:>10}{:>10}  {:>10}{:>10}",
        "run",
        "orders",
        "results",
        "match",
        "wire p50",
        "wire p99",
        "user p50",
        "user p99",
        "kern p50",
        "kern p99"
    );
    let mut bad = Vec::new();
    for cap in caps {
        let tag = cap
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let wire = read_capture(&cap, proto::DEFAULT_MD_PORT, proto::DEFAULT_OE_PORT)?;
        let (rows, mut user, mut kernel) =
            read_exchange_orders(&dir.join(format!("{tag}.exchange.csv")))?;
        let from_wire: Vec<OrderRepr> = wire.iter().map(|w| w.order).collect();
        let from_results: Vec<OrderRepr> = rows.iter().map(|r| r.order).collect();
        let matched = from_wire == from_results && wire.iter().all(|w| w.md_ns.is_some());
        if !matched {
            let first = from_wire
                .iter()
                .zip(&from_results)
                .position(|(w, r)| w != r)
                .unwrap_or(from_wire.len().min(from_results.len()));
            println!(
                "{tag}: first difference at order {first}: wire {:?}, results {:?}; orders without a market-data packet: {}",
                from_wire.get(first),
                from_results.get(first),
                wire.iter().filter(|w| w.md_ns.is_none()).count()
            );
            bad.push(tag.clone());
        }
        let mut w2w: Vec<u64> = wire
            .iter()
            .filter_map(|w| w.md_ns.map(|m| w.order_ns.saturating_sub(m)))
            .collect();
        w2w.sort_unstable();
        user.sort_unstable();
        kernel.sort_unstable();
        println!(
            "{:<12}{:>8}{:>9}{:>8}  {:>10.1}{:>10.1}  {:>10.1}{:>10.1}  {:>10.1}{:>10.1}",
            tag,
            wire.len(),
            rows.len(),
            if matched { "yes" } else { "NO" },
            pct(&w2w, 0.5),
            pct(&w2w, 0.99),
            pct(&user, 0.5),
            pct(&user, 0.99),
            pct(&kernel, 0.5),
            pct(&kernel, 0.99)
        );
    }
    println!("(us; wire = capture timestamps on the exchange's veth, user/kern = the exchange's own clocks)");
    if !bad.is_empty() {
        bail!(
            "orders on the wire differ from the results file in: {}",
            bad.join(", ")
        );
    }
    Ok(())
}

/// Starts tcpdump on the exchange side of the veth, writing `<tag>.pcap` (nanosecond
/// timestamps, every packet written as it comes), and waits until it captures.
pub fn start(ns: &netlab::Netns, dir: &Path, tag: &str) -> Result<Proc> {
    let log = dir.join(format!("{tag}.tcpdump.log"));
    let mut c = ns.command("tcpdump");
    // -U: write each packet as it comes, so nothing waits in tcpdump's buffer;
    // --immediate-mode: read each packet as it comes, so nothing waits in a half-filled
    // block of the capture ring (up to its 1 s timeout: the last orders of a session that
    // ends as its last order arrives were missing from the file when it was stopped).
    c.args([
        "-i",
        netlab::VethLab::EXCHANGE_IF,
        "-n",
        "-U",
        "--immediate-mode",
        "-s",
        "256",
        "--time-stamp-precision",
        "nano",
        "-w",
    ])
    .arg(dir.join(format!("{tag}.pcap")))
    .args(["udp", "port", "12345", "or", "tcp", "port", "9012"])
    .stdout(Stdio::null())
    .stderr(fs::File::create(&log)?);
    let mut p = Proc::spawn("tcpdump", &mut c)
        .context("starting tcpdump (cargo xtask setup installs it)")?;
    // tcpdump says "listening on" once the capture is open.
    p.wait_for_log(&log, "listening on", Duration::from_secs(10))
        .context("tcpdump did not start capturing")?;
    Ok(p)
}

/// Stops a capture once it has caught up: tcpdump runs behind while both sides spin on
/// the CPUs, so it is stopped (SIGINT, which flushes the file) only when `pcap` has stopped
/// growing, or the tail of the run would be lost.
pub fn stop(c: Proc, pcap: &Path) {
    let (mut last, mut stable_since, t0) = (0u64, Instant::now(), Instant::now());
    while stable_since.elapsed() < Duration::from_millis(300)
        && t0.elapsed() < Duration::from_secs(10)
    {
        let len = fs::metadata(pcap).map(|m| m.len()).unwrap_or(0);
        if len != last {
            last = len;
            stable_since = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    c.interrupt();
}
