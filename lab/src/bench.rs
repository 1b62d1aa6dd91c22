//! The publisher benchmark (`cargo xtask bench-exchange`): maximum rate and pacing error.
//!
//! Runs `exchange serve` in a namespace of a fresh veth pair with a sink client in the
//! other (joins the group, connects, reads until the session ends, and checks every
//! datagram against the file: each line once, in file order), with `--pace max` for both
//! market-data senders (`--md-tx udp` and `packet`) and with `--pace rate:PPS` for the
//! frame sender, and prints packets/s and the pacing error percentiles (actual minus
//! scheduled send time) from the exchange's own session summary. Right before and right
//! after each `--pace max` run, the machine's own ceiling for that kind of sender: a bare
//! loop of 75-byte payloads in `sendmmsg` batches of 64 (UDP datagrams, or AF_PACKET frames
//! with PACKET_QDISC_BYPASS) to the same group over the same veth, pinned to the same CPU,
//! with no pacing, formatting or stamps (the sink counts what arrives), so the publisher's
//! rate reads as a fraction of what this machine allowed its kind at that moment (the mean
//! of the two; one ceiling at the start of the run let the machine's drift over the next
//! seconds into the ratio). The sink runs on CPU 1 (the strategy's CPU in the lab), the
//! sender on CPU 0.

use std::net::{Ipv4Addr, SocketAddrV4, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use exchange::md_publisher::{FrameHeader, MdTx, HEADROOM};
use exchange::results::read_summaries;
use hostsys::mmsg::{self, Dest};
use netlab::VethLab;

use crate::data::{default_md_file, ensure_md_file};
use crate::Env;

const GROUP: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(239, 255, 0, 1), 12345);

/// The file a bench run replays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum File {
    /// The lab's default file (76,271 lines).
    Default,
    /// [`crate::data::bench_md_file`]: about 600,000 lines, for the `--pace max` runs.
    Long,
    /// [`crate::data::burst500k_md_file`]: bursts at 500 k/s, replayed as recorded.
    Bursts,
}

/// What the sink saw: datagrams, and how many of them were the file's next line.
#[derive(Debug, Default)]
struct Sink {
    got: u64,
    in_order: u64,
    /// Index (0-based) of the first datagram that was not the next line.
    first_mismatch: Option<u64>,
}

/// Runs it at `rate` packets/s (and at `--pace max`).
pub fn run(env: &Env, rate: u32) -> Result<()> {
    if !netlab::is_root() {
        bail!("the benchmark creates network namespaces: run it as root");
    }
    let md = ensure_md_file(&default_md_file(env), false)?;
    let lines = std::sync::Arc::new(file_lines(&md)?);
    let dir = env.results_root().join("bench-exchange");
    std::fs::create_dir_all(&dir)?;
    // The ceilings and rates are this machine's: its manifest beside the summaries.
    crate::manifest::record(&env.root, &dir)?;
    println!(
        "{:<36}{:>9}{:>11}{:>12}{:>12}{:>12}{:>12}{:>8}{:>8}{:>9}",
        "pace / sender / stamps",
        "packets",
        "pkts/s",
        "err p50",
        "err p90",
        "err p99",
        "err max",
        "late",
        "retries",
        "stamped"
    );
    // Stamps on every trigger id's first packet, or only on the planted triggers' (the
    // ids the strategy fires on in this file: `--stamp-ids`, as the lab passes the oracle's).
    let planted = mdfile::mdgen::planted_path(&md);
    // A file whose own timeline bursts at 500 k/s, replayed as recorded.
    let bursty = crate::data::burst500k_md_file(env)?;
    let bursty_planted = mdfile::mdgen::planted_path(&bursty);
    let bursty_lines = std::sync::Arc::new(file_lines(&bursty)?);
    // The `--pace max` runs on a longer file (about 2 s each here), the paced ones on the
    // default file as before.
    let long = crate::data::bench_md_file(env)?;
    let long_planted = mdfile::mdgen::planted_path(&long);
    let long_lines = std::sync::Arc::new(file_lines(&long)?);
    // (pace, sender, stamps on the planted triggers' ids only, file)
    let runs = [
        ("max".to_owned(), MdTx::Udp, false, File::Long),
        ("max".to_owned(), MdTx::Packet, false, File::Long),
        ("max".to_owned(), MdTx::Packet, true, File::Long),
        (format!("rate:{rate}"), MdTx::Packet, true, File::Default),
        ("recorded:8".to_owned(), MdTx::Packet, true, File::Default),
        ("recorded".to_owned(), MdTx::Packet, true, File::Bursts),
    ];
    for (pace, tx, planted_only, file) in runs {
        let (md, lines, planted) = match file {
            File::Default => (md.as_path(), &lines, planted.as_path()),
            File::Long => (long.as_path(), &long_lines, long_planted.as_path()),
            File::Bursts => (bursty.as_path(), &bursty_lines, bursty_planted.as_path()),
        };
        let stamp_ids = planted_only.then_some(planted);
        let name = format!(
            "{pace} {tx}{}{}",
            if stamp_ids.is_some() { " planted" } else { "" },
            match file {
                File::Default => "",
                File::Long => " long",
                File::Bursts => " 500k-bursts",
            }
        );
        // The machine's ceiling for this sender, measured right before (and, below, right
        // after) each `--pace max` run: this machine's speed drifts by tens of percent
        // within seconds, so the ratio is taken against the two around it.
        let before = if pace == "max" {
            let (pps, row) = ceiling_row(tx, "before")?;
            println!("{row}");
            Some(pps)
        } else {
            None
        };
        let lab = VethLab::new("bex").context("namespaces")?;
        let summary = dir.join(format!("{}.jsonl", name.replace([':', ' '], "-")));
        let _ = std::fs::remove_file(&summary);
        let mut child = lab
            .exchange
            .command("taskset")
            .args(["-c", "0"])
            .arg(env.bin("exchange"))
            .args(
                exchange::serve_cmd::ServeCmd::new(md, "10.77.0.1:9012")
                    .md_iface("vx0")
                    .md_tx(tx)
                    .stamp_ids(stamp_ids)
                    .preload(true)
                    .sessions(1)
                    .spin(true)
                    .quiet_orders(true)
                    .pace(&pace)
                    .grace(Duration::from_millis(100))
                    .handshake_delay(Duration::from_millis(50))
                    .summary(&summary)
                    .args(),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the exchange")?;
        let expect = lines.clone();
        let sink = lab
            .strategy
            .spawn(move || checking_sink(&expect))?
            .join()
            .map_err(|_| anyhow::anyhow!("sink panicked"))??;
        let status = child.wait()?;
        if !status.success() {
            bail!("exchange failed: {status}");
        }
        drop(lab);
        // Measured right after the run, printed after its rows.
        let after = match before {
            Some(_) => Some(ceiling_row(tx, "after")?),
            None => None,
        };
        let s = read_summaries(&summary)?
            .into_iter()
            .next()
            .context("no summary")?;
        let us = |v: u64| v as f64 / 1e3;
        let pps = s.counters.packets_sent as f64 / s.publish_s.max(1e-9);
        println!(
            "{:<36}{:>9}{:>11.0}{:>12.1}{:>12.1}{:>12.1}{:>12.1}{:>8}{:>8}{:>9}",
            name,
            s.counters.packets_sent,
            pps,
            us(s.pacing_error_ns.p50),
            us(s.pacing_error_ns.p90),
            us(s.pacing_error_ns.p99),
            us(s.pacing_error_ns.max),
            s.counters.late,
            s.counters.send_retries,
            s.counters.tx_stamped
        );
        let of_ceiling = match (before, &after) {
            (Some(b), Some((after, _))) => {
                format!(
                    "; x{:.2} of the {tx} ceiling around it ({:.0} k/s before, {:.0} k/s after)",
                    pps / ((b + after) / 2.0),
                    b / 1e3,
                    after / 1e3
                )
            }
            _ => String::new(),
        };
        println!(
            "{:<36}(the sink got {} of {} lines, {} the file's next line{}){of_ceiling}",
            "",
            sink.got,
            lines.len(),
            sink.in_order,
            sink.first_mismatch
                .map(|i| format!("; first out of order: datagram {i}"))
                .unwrap_or_default()
        );
        if let Some((_, row)) = after {
            println!("{row}");
        }
    }
    println!(
        "pacing error in microseconds (actual - scheduled send time); stamped: packets sent \
         with a kernel TX stamp (the first of each trigger id; planted: of the planted \
         triggers' ids only); results in {}",
        dir.display()
    );
    Ok(())
}

/// Every well-formed line of the file, in order (what the sink must see).
fn file_lines(md: &Path) -> Result<Vec<Vec<u8>>> {
    let mut r = mdfile::MdReader::open(md)?;
    let mut out = Vec::new();
    while r.next_raw()? {
        if proto::md::parse_line(r.line(), r.amount_decimals()).is_ok() {
            out.push(r.line().to_vec());
        }
    }
    Ok(out)
}

/// Joins the group, connects to the exchange and reads until the session ends, comparing
/// each datagram with the file's next line.
fn checking_sink(lines: &[Vec<u8>]) -> std::io::Result<Sink> {
    pin_sink()?;
    let u = join_group()?;
    let mut tcp = None;
    for _ in 0..200 {
        if let Ok(t) = TcpStream::connect("10.77.0.1:9012") {
            tcp = Some(t);
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let tcp = tcp.ok_or_else(|| std::io::Error::other("exchange not reachable"))?;
    tcp.set_nonblocking(true)?;
    let (mut buf, mut one) = ([0u8; 2048], [0u8; 1]);
    let mut s = Sink::default();
    let mut next = 0usize;
    loop {
        while let Ok(n) = u.recv(&mut buf) {
            if lines.get(next).is_some_and(|l| l[..] == buf[..n]) {
                s.in_order += 1;
                next += 1;
            } else {
                s.first_mismatch.get_or_insert(s.got);
                // Resynchronise on the line this one was, to count the rest fairly.
                if let Some(p) = lines[next..].iter().position(|l| l[..] == buf[..n]) {
                    next += p + 1;
                }
            }
            s.got += 1;
        }
        match std::io::Read::read(&mut &tcp, &mut one) {
            Ok(0) => return Ok(s),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_micros(200))
            }
            Err(e) => return Err(e),
            Ok(_) => {}
        }
    }
}

/// The sink on CPU 1, off the sender's CPU 0 (as the lab pins the strategy), when there is
/// a CPU 1.
fn pin_sink() -> std::io::Result<()> {
    if std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2 {
        hostsys::sched::pin_cpu(1)?;
    }
    Ok(())
}

fn join_group() -> std::io::Result<UdpSocket> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
    s.set_reuse_address(true)?;
    let _ = s.set_recv_buffer_size(8 << 20);
    s.bind(&GROUP.into())?;
    s.join_multicast_v4(GROUP.ip(), &Ipv4Addr::new(10, 77, 0, 2))?;
    let u: UdpSocket = s.into();
    u.set_nonblocking(true)?;
    Ok(u)
}

/// Payloads the bare sender sends per measurement (about 1-2 s here).
const CEILING_PACKETS: u64 = 400_000;

/// Measures the bare ceiling for `tx`, prints its row (`when`: before or after the run it
/// brackets) and returns its packets/s.
/// The bare sender's rate for `tx` now, and its table row (`when`: before or after a run).
fn ceiling_row(tx: MdTx, when: &str) -> Result<(f64, String)> {
    let (sent, pps, got) = bare_ceiling(tx)?;
    let row = format!(
        "{:<36}{:>9}{:>11.0}   (bare sendmmsg x64 of 75-byte payloads, CPU 0, no stamps; the sink got {got})",
        format!("ceiling {tx} ({when})"),
        sent,
        pps,
    );
    Ok((pps, row))
}

/// The bare sender's `(packets, packets/s, received by the sink)`: [`CEILING_PACKETS`]
/// payloads of 75 bytes in `sendmmsg` batches of 64 from CPU 0, on a fresh veth pair like
/// the exchange's, as UDP datagrams or as AF_PACKET frames (QDISC_BYPASS).
fn bare_ceiling(tx: MdTx) -> Result<(u64, f64, u64)> {
    const PACKETS: u64 = CEILING_PACKETS;
    let lab = VethLab::new("bcl").context("namespaces")?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_sink = stop.clone();
    let sink = lab.strategy.spawn(move || -> std::io::Result<u64> {
        pin_sink()?;
        let u = join_group()?;
        let (mut buf, mut n) = ([0u8; 2048], 0u64);
        while !stop_sink.load(std::sync::atomic::Ordering::Relaxed) {
            while u.recv(&mut buf).is_ok() {
                n += 1;
            }
        }
        while u.recv(&mut buf).is_ok() {
            n += 1;
        }
        Ok(n)
    })?;
    std::thread::sleep(Duration::from_millis(100));
    let sender = lab.exchange.spawn(move || -> std::io::Result<(u64, f64)> {
        hostsys::sched::pin_cpu(0)?;
        let src = Ipv4Addr::new(10, 77, 0, 1);
        let mut frame = [b'x'; HEADROOM + 75];
        let (fd, dest, bytes): (std::os::fd::OwnedFd, Dest, &[u8]) = match tx {
            MdTx::Udp => {
                let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
                s.set_multicast_if_v4(&src)?;
                s.set_nonblocking(true)?;
                (s.into(), Dest::Ip(GROUP), &frame[HEADROOM..])
            }
            MdTx::Packet => {
                let ifindex = mmsg::ifindex("vx0")?;
                let mac = hostsys::iface::iface_mac("vx0")?;
                let mut h = FrameHeader::new(mac, SocketAddrV4::new(src, 12345), GROUP, 1);
                if let Some(hdr) = frame.first_chunk_mut::<HEADROOM>() {
                    h.write(hdr, 75);
                }
                (
                    mmsg::open_packet_tx(ifindex)?,
                    Dest::Link { ifindex },
                    &frame,
                )
            }
        };
        let batch: [&[u8]; mmsg::BATCH] = [bytes; mmsg::BATCH];
        let t0 = std::time::Instant::now();
        let mut sent = 0u64;
        while sent < PACKETS {
            let want = usize::try_from((PACKETS - sent).min(64)).unwrap_or(64);
            sent += mmsg::send_batch(fd.as_raw_fd(), dest, &batch[..want], &[], false)? as u64;
        }
        Ok((sent, sent as f64 / t0.elapsed().as_secs_f64()))
    })?;
    let (sent, pps) = sender
        .join()
        .map_err(|_| anyhow::anyhow!("bare sender panicked"))??;
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let got = sink
        .join()
        .map_err(|_| anyhow::anyhow!("sink panicked"))??;
    Ok((sent, pps, got))
}
