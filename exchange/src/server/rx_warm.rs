//! Keeping the exchange's own order-receive path warm (`--warm-rx-every D`).
//!
//! A real exchange is always busy; this one receives a handful of orders per second in the
//! lab, so its receive path (`recvmsg` with timestamps, the TCP receive code, the framing)
//! goes cold between orders just as the strategy's send path does. With this option the
//! exchange keeps a loopback TCP connection to itself and, every D, writes a heartbeat on
//! one end and reads it from the other through the very function the order connection uses.
//! The experiment then separates the strategy's coldness from the exchange's. Nothing of it
//! reaches the order rows or the counters of a session.

use std::io::{self, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;

use hostsys::clock::mono_ns;

/// The loopback pair and its schedule.
pub struct RxWarmer {
    every_ns: u64,
    next_ns: u64,
    tx: TcpStream,
    rx: TcpStream,
    buf: [u8; 64],
    /// Warming turns done.
    pub turns: u64,
}

impl RxWarmer {
    /// Connects the pair on 127.0.0.1 (an ephemeral port) and sets up the receive side as
    /// the order connection is (non-blocking, software RX timestamps).
    pub fn new(every_ns: u64) -> io::Result<Self> {
        let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
        let tx = TcpStream::connect(listener.local_addr()?)?;
        let (rx, _) = listener.accept()?;
        tx.set_nodelay(true)?;
        rx.set_nonblocking(true)?;
        hostsys::errqueue::enable_rx_timestamps(rx.as_raw_fd(), false)?;
        Ok(Self {
            every_ns: every_ns.max(1),
            next_ns: 0,
            tx,
            rx,
            buf: [0; 64],
            turns: 0,
        })
    }

    /// When due: one heartbeat over the loopback pair, read back as an order would be.
    pub fn turn(&mut self) {
        let now = mono_ns();
        if now < self.next_ns {
            return;
        }
        self.next_ns = now + self.every_ns;
        if self.tx.write_all(&proto::order::HEARTBEAT).is_err() {
            return;
        }
        // Loopback delivers within the write; read what is there (a late byte waits for the
        // next turn).
        let mut got = 0;
        while got < proto::order::ORDER_LEN {
            match hostsys::errqueue::recv_timestamped(self.rx.as_raw_fd(), &mut self.buf) {
                Ok((0, _)) | Err(_) => break,
                Ok((n, _)) => got += n,
            }
        }
        self.turns += 1;
    }
}
