//! The publisher benchmark (`cargo xtask bench-exchange`): maximum rate and pacing error.
//!
//! Runs `exchange serve` in a namespace of a fresh veth pair with a sink client in the
//! other (joins the group, connects, reads until the session ends), once with `--pace max`
//! and once with `--pace rate:PPS`, and prints packets/s and the pacing error percentiles
//! (actual minus scheduled send time) from the exchange's own session summary. First, in
//! the same run, the machine's own ceiling for the publisher's kind of sender: a bare
//! `sendmmsg` loop of 75-byte datagrams in batches of 32 to the same group over the same
//! veth, pinned to the same CPU, with no pacing, formatting or stamps (the sink counts what
//! arrives), so the publisher's rate reads as a fraction of what this machine allows.

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream, UdpSocket};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use exchange::results::read_summaries;
use netlab::VethLab;

use crate::data::{default_md_file, ensure_md_file};
use crate::Env;

/// Runs it at `rate` packets/s (and at `--pace max`).
pub fn run(env: &Env, rate: u32) -> Result<()> {
    if !netlab::is_root() {
        bail!("the benchmark creates network namespaces: run it as root");
    }
    let md = ensure_md_file(&default_md_file(env), false)?;
    let dir = env.results_root().join("bench-exchange");
    std::fs::create_dir_all(&dir)?;
    println!(
        "{:<14}{:>10}{:>12}{:>10}{:>10}{:>10}{:>10}{:>8}{:>9}",
        "pace", "packets", "pkts/s", "err p50", "err p90", "err p99", "err max", "late", "retries"
    );
    let ceiling = bare_ceiling()?;
    println!(
        "{:<14}{:>10}{:>12.0}   (bare sendmmsg x32 of 75-byte datagrams, CPU 0, no stamps; the sink got {})",
        "ceiling", ceiling.0, ceiling.1, ceiling.2
    );
    for pace in ["max".to_owned(), format!("rate:{rate}")] {
        let lab = VethLab::new("bex").context("namespaces")?;
        let summary = dir.join(format!("{}.jsonl", pace.replace(':', "-")));
        let _ = std::fs::remove_file(&summary);
        let mut child = lab
            .exchange
            .command("taskset")
            .args(["-c", "0"])
            .arg(env.bin("exchange"))
            .args(
                exchange::serve_cmd::ServeCmd::new(&md, "10.77.0.1:9012")
                    .md_iface("vx0")
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
        let sink = lab.strategy.spawn(|| -> std::io::Result<u64> {
            let group = Ipv4Addr::new(239, 255, 0, 1);
            let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
            s.set_reuse_address(true)?;
            s.bind(&SocketAddrV4::new(group, 12345).into())?;
            s.join_multicast_v4(&group, &Ipv4Addr::new(10, 77, 0, 2))?;
            let u: UdpSocket = s.into();
            u.set_nonblocking(true)?;
            let mut tcp = None;
            for _ in 0..200 {
                if let Ok(t) = TcpStream::connect("10.77.0.1:9012") {
                    tcp = Some(t);
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let mut tcp = tcp.ok_or_else(|| std::io::Error::other("exchange not reachable"))?;
            tcp.set_nonblocking(true)?;
            let (mut buf, mut one, mut n) = ([0u8; 2048], [0u8; 1], 0u64);
            loop {
                while u.recv(&mut buf).is_ok() {
                    n += 1;
                }
                match tcp.read(&mut one) {
                    Ok(0) => return Ok(n),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_micros(200))
                    }
                    Err(e) => return Err(e),
                    Ok(_) => {}
                }
            }
        })?;
        let received = sink
            .join()
            .map_err(|_| anyhow::anyhow!("sink panicked"))??;
        let status = child.wait()?;
        if !status.success() {
            bail!("exchange failed: {status}");
        }
        drop(lab);
        let s = read_summaries(&summary)?
            .into_iter()
            .next()
            .context("no summary")?;
        let us = |v: u64| v as f64 / 1e3;
        println!(
            "{:<14}{:>10}{:>12.0}{:>10.1}{:>10.1}{:>10.1}{:>10.1}{:>8}{:>9}",
            pace,
            s.counters.packets_sent,
            s.counters.packets_sent as f64 / s.publish_s.max(1e-9),
            us(s.pacing_error_ns.p50),
            us(s.pacing_error_ns.p90),
            us(s.pacing_error_ns.p99),
            us(s.pacing_error_ns.max),
            s.counters.late,
            s.counters.send_retries
        );
        println!(
            "{:<14}(sink in the other namespace received {received} packets){}",
            "",
            if pace == "max" {
                format!(
                    "; x{:.2} of the ceiling",
                    s.counters.packets_sent as f64 / s.publish_s.max(1e-9) / ceiling.1
                )
            } else {
                String::new()
            }
        );
    }
    println!(
        "pacing error in microseconds (actual - scheduled send time); results in {}",
        dir.display()
    );
    Ok(())
}

/// The bare sender's `(packets, packets/s, received by the sink)`: 500,000 datagrams of 75
/// bytes in `sendmmsg` batches of 32 from CPU 0, on a fresh veth pair like the exchange's.
fn bare_ceiling() -> Result<(u64, f64, u64)> {
    const PACKETS: u64 = 500_000;
    let lab = VethLab::new("bcl").context("namespaces")?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_sink = stop.clone();
    let sink = lab.strategy.spawn(move || -> std::io::Result<u64> {
        let group = Ipv4Addr::new(239, 255, 0, 1);
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
        s.set_reuse_address(true)?;
        let _ = s.set_recv_buffer_size(8 << 20);
        s.bind(&SocketAddrV4::new(group, 12345).into())?;
        s.join_multicast_v4(&group, &Ipv4Addr::new(10, 77, 0, 2))?;
        let u: UdpSocket = s.into();
        u.set_nonblocking(true)?;
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
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
        s.set_multicast_if_v4(&Ipv4Addr::new(10, 77, 0, 1))?;
        s.set_nonblocking(true)?;
        let fd = std::os::fd::AsRawFd::as_raw_fd(&s);
        let pkt = [b'x'; 75];
        let batch: [&[u8]; 32] = [&pkt; 32];
        let dest = SocketAddrV4::new(Ipv4Addr::new(239, 255, 0, 1), 12345);
        let t0 = std::time::Instant::now();
        let mut sent = 0u64;
        while sent < PACKETS {
            let want = usize::try_from((PACKETS - sent).min(32)).unwrap_or(32);
            sent += hostsys::socket::send_to_batch(fd, &batch[..want], dest)? as u64;
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
