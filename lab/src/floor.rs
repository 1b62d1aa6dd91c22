//! The physical floor: a bare ping-pong on the same veth link and the same CPUs as the lab
//! (exchange side on CPU 0, strategy side on CPU 1), one 21-byte message at a time, both
//! sides spinning on non-blocking sockets: UDP, and TCP with TCP_NODELAY. Every path's
//! tick-to-trade is then reported as a ratio over this floor. With a gap, the client spins
//! for that long between round trips, so the floor is measured as cold as the orders it is
//! compared with (the gap changes the floor several times over on these machines); and
//! through that gap it sends a feed at the run's rate (75-byte datagrams to the strategy
//! side, which drains them while it waits), so the request direction is as warm as the
//! market data that carries a trigger, and the reply direction as cold as an order.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use netlab::VethLab;

/// Round trips per protocol (after warm-up) with no gap.
const ROUND_TRIPS: usize = 20_000;
const WARMUP: usize = 1_000;
/// With a gap: at least this many round trips, whatever the time allowed.
const MIN_GAP_TRIPS: usize = 20;

/// Round trips measured at `gap`, when a gap's floor may take about `budget` per protocol
/// (`lab --floor-time`).
pub fn round_trips(gap: Duration, budget: Duration) -> usize {
    if gap.is_zero() {
        return ROUND_TRIPS;
    }
    let n = (budget.as_secs_f64() / gap.as_secs_f64()) as usize;
    n.clamp(MIN_GAP_TRIPS, ROUND_TRIPS)
}

/// A feed through the gaps: a datagram to `to` every `period` (none: no feed).
struct Feed {
    sock: UdpSocket,
    to: SocketAddr,
    period: Option<Duration>,
    next: Instant,
}

impl Feed {
    /// Busy-waits `gap` (both sides of the lab spin through their idle time too), sending
    /// the feed's datagrams as they fall due.
    fn spin_gap(&mut self, gap: Duration) -> std::io::Result<()> {
        if gap.is_zero() {
            return Ok(());
        }
        let end = Instant::now() + gap;
        loop {
            let now = Instant::now();
            if now >= end {
                return Ok(());
            }
            if let Some(p) = self.period {
                if now >= self.next {
                    // A full buffer drops the datagram, as a feed's would be.
                    let _ = self.sock.send_to(&[b'f'; 75], self.to);
                    self.next = (self.next + p).max(now);
                }
            }
            std::hint::spin_loop();
        }
    }
}

fn pin(cpu: usize) {
    // Best effort: the floor is still measured unpinned.
    let _ = hostsys::sched::pin_cpu(cpu);
}

fn spin_recv(
    mut f: impl FnMut() -> std::io::Result<usize>,
    deadline: Instant,
) -> std::io::Result<usize> {
    loop {
        match f() {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if Instant::now() > deadline {
                    return Err(std::io::Error::new(
                        ErrorKind::TimedOut,
                        "ping-pong peer silent",
                    ));
                }
                std::hint::spin_loop();
            }
            Err(e) => return Err(e),
        }
    }
}

/// Sorted round-trip times in ns, `(udp, tcp)`, with `gap` between round trips and a feed
/// of `feed_pps` datagrams per second running through the gaps (0: none), for about
/// `budget` per protocol ([`round_trips`]).
pub fn measure(
    pin_cpus: bool,
    gap: Duration,
    feed_pps: u32,
    budget: Duration,
) -> Result<(Vec<u64>, Vec<u64>)> {
    let trips = round_trips(gap, budget);
    let warmup = if gap.is_zero() { WARMUP } else { 2 };
    let lab = VethLab::new("flr").context("namespaces for the floor")?;
    let server = lab.strategy.spawn(move || -> std::io::Result<()> {
        if pin_cpus {
            pin(1);
        }
        let udp = UdpSocket::bind("10.77.0.2:7001")?;
        udp.set_nonblocking(true)?;
        let listener = TcpListener::bind("10.77.0.2:7002")?;
        let feed = UdpSocket::bind("10.77.0.2:7003")?;
        feed.set_nonblocking(true)?;
        let mut fbuf = [0u8; 128];
        // The feed is read while waiting, as the strategy reads market data.
        let mut drain = move || while feed.recv(&mut fbuf).is_ok() {};
        let mut buf = [0u8; 64];
        let deadline = || Instant::now() + Duration::from_secs(10) + gap;
        for _ in 0..warmup + trips {
            let (n, from) = {
                let d = deadline();
                loop {
                    match udp.recv_from(&mut buf) {
                        Ok(x) => break x,
                        Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < d => {
                            drain()
                        }
                        Err(e) => return Err(e),
                    }
                }
            };
            udp.send_to(&buf[..n], from)?;
        }
        let (mut tcp, _) = listener.accept()?;
        tcp.set_nodelay(true)?;
        tcp.set_nonblocking(true)?;
        for _ in 0..warmup + trips {
            let n = spin_recv(
                || {
                    let r = tcp.read(&mut buf[..21]);
                    if r.is_err() {
                        drain();
                    }
                    r
                },
                deadline(),
            )?;
            tcp.write_all(&buf[..n])?;
        }
        Ok(())
    })?;
    let client = lab
        .exchange
        .spawn(move || -> std::io::Result<(Vec<u64>, Vec<u64>)> {
            if pin_cpus {
                pin(0);
            }
            std::thread::sleep(Duration::from_millis(100));
            let udp = UdpSocket::bind("10.77.0.1:0")?;
            udp.set_nonblocking(true)?;
            let peer: SocketAddr = "10.77.0.2:7001".parse().map_err(std::io::Error::other)?;
            let feed_sock = UdpSocket::bind("10.77.0.1:0")?;
            feed_sock.set_nonblocking(true)?;
            let mut feed = Feed {
                sock: feed_sock,
                to: "10.77.0.2:7003".parse().map_err(std::io::Error::other)?,
                period: (feed_pps > 0).then(|| Duration::from_secs_f64(1.0 / f64::from(feed_pps))),
                next: Instant::now(),
            };
            let msg = [7u8; 21];
            let mut buf = [0u8; 64];
            let mut udp_rtt = Vec::with_capacity(trips);
            for i in 0..warmup + trips {
                feed.spin_gap(gap)?;
                let t = Instant::now();
                udp.send_to(&msg, peer)?;
                spin_recv(|| udp.recv(&mut buf), t + Duration::from_secs(10))?;
                if i >= warmup {
                    udp_rtt.push(t.elapsed().as_nanos() as u64);
                }
            }
            let mut tcp = TcpStream::connect("10.77.0.2:7002")?;
            tcp.set_nodelay(true)?;
            tcp.set_nonblocking(true)?;
            let mut tcp_rtt = Vec::with_capacity(trips);
            for i in 0..warmup + trips {
                feed.spin_gap(gap)?;
                let t = Instant::now();
                tcp.write_all(&msg)?;
                let mut got = 0;
                while got < msg.len() {
                    got += spin_recv(|| tcp.read(&mut buf[got..21]), t + Duration::from_secs(10))?;
                }
                if i >= warmup {
                    tcp_rtt.push(t.elapsed().as_nanos() as u64);
                }
            }
            Ok((udp_rtt, tcp_rtt))
        })?;
    let (mut udp, mut tcp) = client
        .join()
        .map_err(|_| anyhow::anyhow!("ping-pong client panicked"))??;
    server
        .join()
        .map_err(|_| anyhow::anyhow!("ping-pong server panicked"))??;
    udp.sort_unstable();
    tcp.sort_unstable();
    Ok((udp, tcp))
}
