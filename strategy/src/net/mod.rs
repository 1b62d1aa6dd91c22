//! Network paths: each one module behind [`NetPath`], the engine shared.
//!
//! A path owns its sockets or rings. The runtime drives it: [`NetPath::begin_connect`] and
//! [`NetPath::poll_connect`] (never blocking), then [`NetPath::start_md`] (join the group),
//! then [`NetPath::poll`] in a busy loop. `poll` is the hot path: receive a packet, stamp
//! it, run the engine, and if an order comes out, encode it straight into the path's send
//! buffer and hand it to the kernel, then stamp again.

pub mod kernel;
#[cfg(feature = "xdp")]
pub mod packet;
#[cfg(feature = "xdp")]
pub mod raw;
#[cfg(feature = "xdp")]
pub mod smol;
pub mod uring;
#[cfg(feature = "xdp")]
pub mod xdp;

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};

use proto::order::OrderRepr;

use crate::engine::Engine;
use crate::latency::Latency;

/// Which path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NetKind {
    /// Non-blocking kernel sockets in a busy loop.
    Kernel,
    /// io_uring: multishot receive with provided buffers, registered files.
    Uring,
    /// AF_XDP: XDP steering, UMEM busy loop, smoltcp TCP.
    Xdp,
    /// AF_PACKET: mmap'd TPACKET_V2 rings, classic BPF filter, qdisc bypass, smoltcp TCP.
    Packet,
}

impl NetKind {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kernel => "kernel",
            Self::Uring => "uring",
            Self::Xdp => "xdp",
            Self::Packet => "packet",
        }
    }
}

/// Settings common to every path.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// Exchange order-entry address.
    pub exchange: SocketAddrV4,
    /// Market-data group.
    pub group: SocketAddrV4,
    /// Local interface address for the join (None: INADDR_ANY).
    pub iface_addr: Option<Ipv4Addr>,
    /// SO_BUSY_POLL microseconds (0 = off).
    pub busy_poll_us: u32,
    /// io_uring: SQPOLL with this idle time in ms.
    pub sqpoll_idle_ms: Option<u32>,
    /// io_uring: send orders with SEND_ZC.
    pub send_zc: bool,
    /// Kernel path: send orders with MSG_ZEROCOPY.
    pub msg_zerocopy: bool,
}

/// What one `poll` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Nothing to do.
    Idle,
    /// Handled packets.
    Busy,
    /// The order connection is gone.
    Disconnected,
}

/// Per-session counters of a path.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct PathStats {
    /// Market-data packets received.
    pub packets: u64,
    /// Orders handed to the kernel.
    pub orders: u64,
    /// Sends that did not take the whole order at once.
    pub partial_sends: u64,
}

/// Where the orders of a session are recorded with the calibration delay each one got
/// (preallocated; the hot path only pushes).
#[derive(Debug)]
pub struct OrderLog {
    orders: Vec<(OrderRepr, u64)>,
    total: u64,
    /// Orders that did not fit the preallocated log (still sent).
    pub overflow: u64,
}

impl OrderLog {
    /// A log holding up to `capacity` orders without allocating.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            orders: Vec::with_capacity(capacity),
            total: 0,
            overflow: 0,
        }
    }

    /// Records an order and the delay injected before its send.
    #[inline]
    pub fn push(&mut self, o: OrderRepr, delay_ns: u64) {
        self.total += 1;
        if self.orders.len() < self.orders.capacity() {
            self.orders.push((o, delay_ns));
        } else {
            self.overflow += 1;
        }
    }

    /// Orders sent this session.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The orders and their injected delays.
    pub fn orders(&self) -> &[(OrderRepr, u64)] {
        &self.orders
    }

    /// Empties the log (keeps the capacity).
    pub fn clear(&mut self) {
        self.orders.clear();
        self.total = 0;
        self.overflow = 0;
    }
}

/// The hot-path context a path's `poll` works with.
pub struct Hot<'a> {
    /// Book and trigger.
    pub engine: &'a mut Engine,
    /// Packet-to-order latency.
    pub latency: &'a mut Latency,
    /// Orders sent.
    pub log: &'a mut OrderLog,
    /// Calibration: order k busy-waits `delays[k % len]` ns between trigger and send
    /// (empty = no delay).
    pub delays: &'a [u64],
}

impl Hot<'_> {
    /// The delay the next order gets.
    #[inline]
    pub fn next_delay(&self) -> u64 {
        if self.delays.is_empty() {
            0
        } else {
            self.delays[(self.log.total() % self.delays.len() as u64) as usize]
        }
    }
}

/// A network path.
pub trait NetPath {
    /// Starts a non-blocking connect to the exchange.
    fn begin_connect(&mut self) -> io::Result<()>;
    /// `Ok(true)` once connected; an error when the connect failed.
    fn poll_connect(&mut self) -> io::Result<bool>;
    /// Joins the group and starts receiving market data.
    fn start_md(&mut self) -> io::Result<()>;
    /// One turn of the busy loop.
    fn poll(&mut self, hot: &mut Hot<'_>) -> io::Result<Status>;
    /// Closes everything (back to Init).
    fn close(&mut self);
    /// Counters of the current session.
    fn stats(&self) -> PathStats;
    /// Path-specific report fields (program counters, ring accounting...).
    fn report_extra(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
}

/// Spins for `ns` (calibration delay).
#[inline]
pub fn spin_for(ns: u64) {
    if ns == 0 {
        return;
    }
    let end = crate::sys::mono_ns() + ns;
    while crate::sys::mono_ns() < end {
        std::hint::spin_loop();
    }
}

/// A non-blocking TCP socket connecting to `addr`, with TCP_NODELAY.
pub fn start_tcp_connect(addr: SocketAddrV4) -> io::Result<socket2::Socket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    s.set_nonblocking(true)?;
    s.set_nodelay(true)?;
    match s.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(s)
}

/// Has the non-blocking connect of `s` completed? Error if it failed, or if no connect was
/// started (`None`).
pub fn tcp_connected(s: Option<&socket2::Socket>) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    let s =
        s.ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "no connect in progress"))?;
    if !crate::sys::writable_now(s.as_raw_fd())? {
        return Ok(false);
    }
    if let Some(e) = s.take_error()? {
        return Err(e);
    }
    s.peer_addr()?;
    Ok(true)
}

/// A non-blocking UDP socket bound to the group's port and joined on `iface`.
pub fn join_group(
    group: SocketAddrV4,
    iface: Option<Ipv4Addr>,
    busy_poll_us: u32,
) -> io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    use std::os::fd::AsRawFd;
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    // A large receive buffer so a snapshot burst is not dropped; FORCE works as root.
    if crate::sys::setsockopt_int(
        s.as_raw_fd(),
        libc::SOL_SOCKET,
        libc::SO_RCVBUFFORCE,
        8 << 20,
    )
    .is_err()
    {
        let _ = s.set_recv_buffer_size(8 << 20);
    }
    if busy_poll_us > 0 {
        crate::sys::setsockopt_int(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_BUSY_POLL,
            busy_poll_us as i32,
        )?;
    }
    s.bind(&group.into())?;
    s.join_multicast_v4(group.ip(), &iface.unwrap_or(Ipv4Addr::UNSPECIFIED))?;
    Ok(s.into())
}
