//! The market-data multicast sender.
//!
//! A non-blocking UDP socket (socket2) with IP_MULTICAST_IF / TTL / LOOP set from the
//! flags, and kernel software TX timestamps: each datagram's send is stamped by the kernel
//! and the stamp read back from the socket's error queue, keyed by a per-socket counter
//! that [`MdPublisher`] maps back to the packet's `local_timestamp`.

use std::collections::VecDeque;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;

use socket2::{Domain, Protocol, Socket, Type};

use hostsys::errqueue as sys;

/// Socket settings.
#[derive(Debug, Clone)]
pub struct PublisherConfig {
    /// Group and port.
    pub group: SocketAddrV4,
    /// Outgoing interface address (IP_MULTICAST_IF), if set.
    pub iface_addr: Option<Ipv4Addr>,
    /// Multicast TTL.
    pub ttl: u32,
    /// Deliver to local listeners too (IP_MULTICAST_LOOP).
    pub mcast_loop: bool,
    /// Ask for kernel TX timestamps.
    pub tx_timestamps: bool,
}

/// The publisher.
#[derive(Debug)]
pub struct MdPublisher {
    sock: UdpSocket,
    dest: SocketAddrV4,
    tx_timestamps: bool,
    counter: u32,
    pending: VecDeque<(u32, u64)>,
    /// TX timestamps that never came back (dropped from the queue).
    pub ts_missing: u64,
}

impl MdPublisher {
    /// Creates and configures the socket.
    pub fn new(cfg: &PublisherConfig) -> io::Result<Self> {
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        s.set_nonblocking(true)?;
        s.set_multicast_ttl_v4(cfg.ttl)?;
        s.set_multicast_loop_v4(cfg.mcast_loop)?;
        if let Some(a) = cfg.iface_addr {
            s.set_multicast_if_v4(&a)?;
            s.bind(&SocketAddrV4::new(a, 0).into())?;
        }
        let sock: UdpSocket = s.into();
        if cfg.tx_timestamps {
            sys::enable_tx_timestamps(sock.as_raw_fd())?;
        }
        Ok(Self {
            sock,
            dest: cfg.group,
            tx_timestamps: cfg.tx_timestamps,
            counter: 0,
            pending: VecDeque::new(),
            ts_missing: 0,
        })
    }

    /// The socket (to register with the event loop).
    pub fn socket(&self) -> &UdpSocket {
        &self.sock
    }

    /// Sends due packets in one `sendmmsg`, in order, each tagged with its
    /// `local_timestamp` (`ids`, one per packet); returns how many the kernel took (the
    /// rest, in order, are the caller's to retry; 0 when its buffer was full).
    pub fn send_batch(&mut self, pkts: &[&[u8]], ids: &[u64]) -> io::Result<usize> {
        let n = hostsys::socket::send_to_batch(self.sock.as_raw_fd(), pkts, self.dest)?;
        if self.tx_timestamps {
            for &id in &ids[..n.min(ids.len())] {
                self.pending.push_back((self.counter, id));
                self.counter = self.counter.wrapping_add(1);
                if self.pending.len() > 1 << 16 {
                    self.pending.pop_front();
                    self.ts_missing += 1;
                }
            }
        }
        Ok(n)
    }

    /// Reads every queued TX timestamp, calling `f(id, realtime_ns)` for each (up to 32
    /// per `recvmmsg`).
    pub fn drain_tx_timestamps(&mut self, mut f: impl FnMut(u64, u64)) -> io::Result<()> {
        if !self.tx_timestamps {
            return Ok(());
        }
        let mut got = [(0u32, 0u64); sys::TS_BATCH];
        loop {
            let n = sys::read_tx_timestamps(self.sock.as_raw_fd(), &mut got)?;
            for &(key, ns) in &got[..n] {
                self.match_stamp(key, ns, &mut f);
            }
            if n < sys::TS_BATCH {
                return Ok(());
            }
        }
    }

    /// Ties one stamp to the packet it was taken for (by the socket's send counter).
    fn match_stamp(&mut self, key: u32, ns: u64, f: &mut impl FnMut(u64, u64)) {
        if key == u32::MAX && ns == 0 {
            return;
        }
        while let Some(&(k, id)) = self.pending.front() {
            // Wrapping comparison: entries older than `key` never got a stamp.
            let behind = key.wrapping_sub(k);
            if behind == 0 {
                self.pending.pop_front();
                f(id, ns);
                break;
            } else if behind < u32::MAX / 2 {
                self.pending.pop_front();
                self.ts_missing += 1;
            } else {
                break;
            }
        }
    }

    /// Forgets timestamps still expected (end of session), counting them as missing.
    pub fn reset_pending(&mut self) {
        self.ts_missing += self.pending.len() as u64;
        self.pending.clear();
    }
}

/// Resolves `--md-iface`: an IPv4 address, or an interface name whose first IPv4 address is
/// used.
pub fn resolve_iface(spec: &str) -> io::Result<Ipv4Addr> {
    if let Ok(a) = spec.parse() {
        return Ok(a);
    }
    hostsys::iface::iface_ipv4(spec)
}
