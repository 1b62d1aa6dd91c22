//! What the exchange's end-to-end tests share: the exchange as a child process in the
//! lab's exchange namespace, a small generated file, the client's order connection and
//! group membership, one market-data line read and parsed. Include with `mod common;`.
#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use exchange::results::{read_summaries, Summary};
use mdfile::mdgen::{self, GenConfig};
use netlab::VethLab;
use proto::order::Side;
use socket2::{Domain, Protocol, Socket, Type};

pub const GROUP: Ipv4Addr = Ipv4Addr::new(239, 255, 0, 1);

pub fn skip() -> bool {
    if !netlab::is_root() {
        eprintln!("skipped: needs root for network namespaces");
        return true;
    }
    false
}

pub fn small_file(dir: &Path) -> PathBuf {
    let p = dir.join("md.csv.gz");
    let cfg = GenConfig {
        target_bytes: 25_000,
        depth: 40,
        trigger_every: 60,
        ..GenConfig::default()
    };
    mdgen::generate(&p, &cfg).expect("generate");
    p
}

pub struct Exchange {
    /// The process.
    pub child: Child,
    /// Its summary file.
    pub summary: PathBuf,
    /// Its log (stderr).
    pub log: PathBuf,
}

impl Exchange {
    pub fn start(lab: &VethLab, md_file: &Path, dir: &Path, extra: &[&str]) -> Self {
        let results = dir.join("orders.csv");
        let summary = dir.join("summary.jsonl");
        let log = std::fs::File::create(dir.join("exchange.log")).expect("log file");
        let serve = exchange::serve_cmd::ServeCmd::new(md_file, "10.77.0.1:9012")
            .md_iface("vx0")
            .quiet_orders(true)
            .results(&results)
            .summary(&summary)
            .extra(extra);
        let child = lab
            .exchange
            .command(env!("CARGO_BIN_EXE_exchange"))
            .args(serve.args())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn exchange");
        Self {
            child,
            summary,
            log: dir.join("exchange.log"),
        }
    }

    /// Waits for the exchange to exit (it was given `--sessions`).
    pub fn wait(mut self, limit: Duration) -> (Vec<Summary>, String) {
        let t0 = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                let err = std::fs::read_to_string(&self.log).unwrap_or_default();
                assert!(status.success(), "exchange failed: {status}\n{err}");
                return (read_summaries(&self.summary).expect("summary file"), err);
            }
            assert!(t0.elapsed() < limit, "exchange did not finish in {limit:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn connect() -> TcpStream {
    let addr: SocketAddr = "10.77.0.1:9012".parse().expect("addr");
    let t0 = Instant::now();
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(s) => {
                s.set_nodelay(true).expect("nodelay");
                return s;
            }
            Err(e) if t0.elapsed() < Duration::from_secs(10) => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("cannot connect to the exchange: {e}"),
        }
    }
}

pub fn join_group() -> UdpSocket {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).expect("socket");
    s.set_reuse_address(true).expect("reuse");
    let _ = s.set_recv_buffer_size(4 << 20);
    s.bind(&SocketAddrV4::new(GROUP, 12345).into())
        .expect("bind");
    s.join_multicast_v4(&GROUP, &Ipv4Addr::new(10, 77, 0, 2))
        .expect("join");
    let u: UdpSocket = s.into();
    u.set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    u
}

/// Receives one packet and parses it.
pub fn recv_line(md: &UdpSocket, buf: &mut [u8]) -> Option<(bool, u64, Side, i64)> {
    let n = md.recv(buf).ok()?;
    let l = proto::md::parse_line(&buf[..n], 0).expect("exchange sends valid lines");
    let side = if l.side == proto::md::BookSide::Bid {
        Side::Buy
    } else {
        Side::Sell
    };
    Some((l.is_snapshot, l.local_timestamp, side, l.price))
}
