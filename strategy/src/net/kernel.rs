//! The kernel-socket path: a non-blocking UDP socket for market data, a non-blocking TCP
//! socket (TCP_NODELAY) for orders, one busy-polling loop. One `recv` syscall per packet
//! (or, with `--md-recvmmsg`, one `recvmmsg` per batch of up to 32 waiting datagrams, each
//! in a 2 KiB slot) and one `send` per order; nothing else on the packet-to-order path.
//!
//! An order goes out whole or not at all ([`TcpOrderTx`]): when the kernel's send buffer
//! takes only part of it, or is full, the rest waits in a backlog of whole orders that is
//! flushed, in order, before anything new is sent; an order that does not fit the backlog
//! is held back (counted, never half-sent), so the exchange's 21-byte framing never breaks.

use std::io;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;

use hostsys::socket::{recv_nb, send_nb, setsockopt_int};
use hostsys::zerocopy::ZcSlots;
use proto::order::{OrderRepr, ORDER_LEN};

use super::stamps::{TxStamps, WireReport};
use super::{Hot, NetConfig, NetPath, PathReport, Sent, Status, WarmRequest};

/// A datagram's slot in the receive buffer with `--md-recvmmsg` (longer ones are cut, and
/// the engine counts the cut line as malformed).
const MMSG_SLOT: usize = 2048;

/// Idle turns between two hang-up checks of the order socket.
const HUP_CHECK_EVERY: u32 = 1024;
/// Bytes of orders the path holds while the kernel's send buffer is full.
pub const BACKLOG_BYTES: usize = 4096;

/// The path.
pub struct KernelPath {
    cfg: NetConfig,
    tx: Option<TcpOrderTx>,
    udp: Option<UdpSocket>,
    buf: Box<[u8; 65536]>,
    idle_turns: u32,
    /// `--wire-stamps`: the orders awaiting transmit stamps; the order socket's stamps are
    /// asked once it is connected (`tx_on`).
    wire: Option<TxStamps>,
    tx_on: bool,
}

/// MSG_ZEROCOPY counters of a session.
pub type KernelReport = hostsys::zerocopy::ZcStats;

const ZC_SLOTS: usize = 64;
type ZeroCopy = ZcSlots<ZC_SLOTS, ORDER_LEN>;

/// The order connection: a non-blocking TCP socket and the backlog that keeps every order
/// whole.
pub struct TcpOrderTx {
    sock: socket2::Socket,
    backlog: Box<[u8; BACKLOG_BYTES]>,
    backlog_len: usize,
    zc: Option<ZeroCopy>,
    /// Bytes accepted whole so far (sent or queued): the stream offset the next message
    /// starts at.
    stream: u64,
    /// `--wire-stamps`: orders (not heartbeats) ask a TX stamp as they are sent (`Some(hw)`:
    /// the NIC's too); `backlog_stamp`: an order waits in the backlog, so its flush asks one.
    stamp_orders: Option<bool>,
    backlog_stamp: bool,
    /// Bytes the exchange sent on the order connection (it sends none): read and dropped.
    pub unexpected_bytes: u64,
}

impl TcpOrderTx {
    /// Orders over `sock` (connected or connecting, non-blocking); `zerocopy` sends with
    /// MSG_ZEROCOPY (SO_ZEROCOPY is set here).
    pub fn new(sock: socket2::Socket, zerocopy: bool) -> io::Result<Self> {
        let zc = if zerocopy {
            setsockopt_int(sock.as_raw_fd(), libc::SOL_SOCKET, libc::SO_ZEROCOPY, 1)?;
            Some(ZeroCopy::new())
        } else {
            None
        };
        Ok(Self {
            sock,
            backlog: Box::new([0; BACKLOG_BYTES]),
            backlog_len: 0,
            zc,
            stream: 0,
            stamp_orders: None,
            backlog_stamp: false,
            unexpected_bytes: 0,
        })
    }

    /// The socket.
    pub fn socket(&self) -> &socket2::Socket {
        &self.sock
    }

    /// Bytes waiting in the backlog.
    pub fn backlog_len(&self) -> usize {
        self.backlog_len
    }

    /// The stream offset after the last message accepted whole (sent or queued).
    pub fn stream_bytes(&self) -> u64 {
        self.stream
    }

    /// Orders ask a TX timestamp as they are sent (`Some(hw)`; the socket must report them:
    /// [`hostsys::errqueue::enable_tx_timestamps_on_request`]); `None`: none.
    pub fn stamp_orders(&mut self, hw: Option<bool>) {
        self.stamp_orders = hw;
    }

    /// Encodes `order` and sends it whole, queues it whole, or holds it back.
    #[inline]
    pub fn send(&mut self, order: &OrderRepr) -> io::Result<Sent> {
        let mut msg = [0u8; ORDER_LEN];
        order.emit(&mut proto::order::Packet::new_unchecked(&mut msg[..]));
        self.send_whole(&msg, self.stamp_orders)
    }

    /// Sends one 21-byte message (a heartbeat) whole, queues it whole, or holds it back.
    #[inline]
    pub fn send_msg(&mut self, msg: &[u8; ORDER_LEN]) -> io::Result<Sent> {
        self.send_whole(msg, None)
    }

    /// The send of one message, and its bytes counted in the stream when it is taken whole.
    #[inline]
    fn send_whole(&mut self, msg: &[u8; ORDER_LEN], stamp: Option<bool>) -> io::Result<Sent> {
        let sent = self.try_send(msg, stamp)?;
        if sent != Sent::HeldBack {
            self.stream += ORDER_LEN as u64;
        }
        Ok(sent)
    }

    #[inline]
    fn try_send(&mut self, msg: &[u8; ORDER_LEN], stamp: Option<bool>) -> io::Result<Sent> {
        if self.backlog_len > 0 {
            self.flush()?;
        }
        if self.backlog_len > 0 {
            // Earlier bytes still wait: this order goes behind them, whole, or not at all.
            let sent = self.queue(msg);
            self.backlog_stamp |= sent == Sent::Queued && stamp.is_some();
            return Ok(sent);
        }
        let fd = self.sock.as_raw_fd();
        let n = match (&mut self.zc, stamp) {
            (Some(zc), _) => zc.send(fd, msg)?,
            (None, Some(hw)) => hostsys::errqueue::send_with_tx_stamp(fd, msg, hw)?,
            (None, None) => send_nb(fd, msg, 0)?,
        };
        if n == ORDER_LEN {
            return Ok(Sent::Now);
        }
        // The kernel took a prefix (or nothing): the rest must follow before anything else.
        // The backlog was empty, so it has room.
        let sent = self.queue(&msg[n..]);
        debug_assert_eq!(sent, Sent::Queued);
        self.backlog_stamp |= stamp.is_some();
        Ok(Sent::Queued)
    }

    fn queue(&mut self, bytes: &[u8]) -> Sent {
        let end = self.backlog_len + bytes.len();
        if end > BACKLOG_BYTES {
            return Sent::HeldBack;
        }
        self.backlog[self.backlog_len..end].copy_from_slice(bytes);
        self.backlog_len = end;
        Sent::Queued
    }

    /// Hands the kernel as much of the backlog as it takes (asking a TX stamp for it when
    /// an order that wants one waits there).
    pub fn flush(&mut self) -> io::Result<()> {
        if self.backlog_len == 0 {
            return Ok(());
        }
        let (fd, bytes) = (self.sock.as_raw_fd(), &self.backlog[..self.backlog_len]);
        let n = match self.stamp_orders {
            Some(hw) if self.backlog_stamp => hostsys::errqueue::send_with_tx_stamp(fd, bytes, hw)?,
            _ => send_nb(fd, bytes, 0)?,
        };
        self.backlog.copy_within(n..self.backlog_len, 0);
        self.backlog_len -= n;
        self.backlog_stamp &= self.backlog_len > 0;
        Ok(())
    }

    /// The send path without sending: a zero-length `send(2)` on the order socket (the
    /// syscall entry, the socket lookup and lock, `tcp_sendmsg` up to "nothing to copy").
    pub fn warm_tx(&self) {
        let _ = send_nb(self.sock.as_raw_fd(), &[], 0);
    }

    /// Work for an idle turn: zero-copy completions, the backlog.
    pub fn idle(&mut self) -> io::Result<()> {
        let fd = self.sock.as_raw_fd();
        if let Some(zc) = &mut self.zc {
            if zc.any_busy() {
                zc.reap(fd);
            }
        }
        self.flush()
    }

    /// Has the exchange closed the connection? Stray bytes (the exchange sends none) are
    /// read, dropped, counted, and logged once per connection.
    pub fn hung_up(&mut self) -> io::Result<bool> {
        let mut b = [0u8; 64];
        match recv_nb(self.sock.as_raw_fd(), &mut b, 0) {
            Ok(Some(0)) => Ok(true),
            Ok(Some(n)) => {
                if self.unexpected_bytes == 0 {
                    tracing::warn!("the exchange sent bytes on the order connection (it sends none): dropped and counted");
                }
                self.unexpected_bytes += n as u64;
                Ok(false)
            }
            Ok(None) => Ok(false),
            Err(e) => match e.kind() {
                io::ErrorKind::ConnectionReset
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::ConnectionAborted => Ok(true),
                _ => Err(e),
            },
        }
    }
}

impl KernelPath {
    /// A path with these settings (no sockets yet).
    pub fn new(cfg: NetConfig) -> Self {
        Self {
            wire: cfg.wire_stamps.clone().map(TxStamps::new),
            cfg,
            tx: None,
            udp: None,
            buf: Box::new([0; 65536]),
            idle_turns: 0,
            tx_on: false,
        }
    }
}

impl NetPath for KernelPath {
    fn begin_connect(&mut self) -> io::Result<()> {
        // Member of the group before the connect completes: an exchange may publish the
        // moment it accepts, and the socket buffers what arrives until the session runs.
        let udp =
            super::sockets::join_group(self.cfg.group, self.cfg.iface_addr, self.cfg.md_join())?;
        if let Some(w) = &self.wire {
            hostsys::errqueue::enable_rx_timestamps(udp.as_raw_fd(), w.nic())?;
        }
        self.udp = Some(udp);
        let tcp = super::sockets::start_tcp_connect(self.cfg.exchange, self.cfg.marks)?;
        self.tx = Some(TcpOrderTx::new(tcp, self.cfg.msg_zerocopy)?);
        self.tx_on = false;
        Ok(())
    }

    fn poll_connect(&mut self) -> io::Result<bool> {
        let up = super::sockets::tcp_connected(self.tx.as_ref().map(TcpOrderTx::socket))?;
        if let (true, false, Some(w), Some(tx)) = (up, self.tx_on, &self.wire, &mut self.tx) {
            // Keys count from here: the stream's first byte is offset 0 (TCP takes the
            // counter's origin from the unacknowledged sequence when the option is set).
            // Orders ask their stamps as they go; heartbeats do not (their stamps would fill
            // the error queue between orders).
            hostsys::errqueue::enable_tx_timestamps_on_request(tx.socket().as_raw_fd(), w.nic())?;
            tx.stamp_orders(Some(w.nic()));
            self.tx_on = true;
        }
        Ok(up)
    }

    fn start_md(&mut self) -> io::Result<()> {
        // Joined in `begin_connect`; what arrived since waits in the socket buffer.
        Ok(())
    }

    #[inline]
    fn poll(&mut self, hot: &mut Hot<'_>) -> io::Result<Status> {
        let (Some(udp), Some(tx)) = (&self.udp, &mut self.tx) else {
            return Ok(Status::Disconnected);
        };
        let ufd = udp.as_raw_fd();
        let mut status = Status::Idle;
        if self.cfg.md_recvmmsg {
            let mut lens = [0usize; hostsys::mmsg::RX_BATCH];
            let n = hostsys::mmsg::recv_batch(ufd, &mut self.buf[..], MMSG_SLOT, &mut lens)?;
            for (i, &len) in lens[..n].iter().enumerate() {
                status = Status::Busy;
                let at = i * MMSG_SLOT;
                if let Some(p) = hot.on_packet(&self.buf[at..at + len]) {
                    hot.send(p, |o| tx.send(o))?;
                }
            }
        } else if let Some(w) = &mut self.wire {
            for _ in 0..64 {
                // The one recvmsg per packet, its stamps in a control message.
                let (n, rx) = match hostsys::errqueue::recv_timestamped(ufd, &mut self.buf[..]) {
                    Ok(r) => r,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                };
                status = Status::Busy;
                if let Some(p) = hot.on_packet_stamped(&self.buf[..n], rx) {
                    if hot.send(p, |o| tx.send(o))? != Sent::HeldBack {
                        w.count_rx(rx);
                        if let Some(i) = hot.log.last_pushed() {
                            w.await_order(tx.stream_bytes() - 1, i, hostsys::mono_ns());
                        }
                    }
                }
            }
        } else {
            for _ in 0..64 {
                let Some(n) = recv_nb(ufd, &mut self.buf[..], 0)? else {
                    break;
                };
                status = Status::Busy;
                if let Some(p) = hot.on_packet(&self.buf[..n]) {
                    hot.send(p, |o| tx.send(o))?;
                }
            }
        }
        if status == Status::Idle {
            self.idle_turns += 1;
            if let Some(w) = &mut self.wire {
                if w.pending() {
                    w.read(tx.socket().as_raw_fd(), hot.log, hostsys::mono_ns())?;
                }
            }
            tx.idle()?;
            if self.idle_turns >= HUP_CHECK_EVERY {
                self.idle_turns = 0;
                if tx.hung_up()? {
                    return Ok(Status::Disconnected);
                }
            }
        }
        Ok(status)
    }

    fn warm(&mut self, req: WarmRequest) -> io::Result<Option<Sent>> {
        let Some(tx) = &mut self.tx else {
            return Ok(None);
        };
        if req.tx {
            tx.warm_tx();
        }
        if req.heartbeat {
            return tx.send_msg(&proto::order::HEARTBEAT).map(Some);
        }
        Ok(None)
    }

    fn settle(&mut self, hot: &mut Hot<'_>) -> io::Result<()> {
        // The last orders' stamps, when they came before the session ended.
        if let (Some(w), Some(tx)) = (&mut self.wire, &self.tx) {
            if w.pending() {
                w.read(tx.socket().as_raw_fd(), hot.log, hostsys::mono_ns())?;
            }
        }
        Ok(())
    }

    fn report(&self) -> PathReport {
        match self.tx.as_ref().and_then(|t| t.zc.as_ref()) {
            Some(zc) => PathReport::Kernel(zc.stats()),
            None => PathReport::None,
        }
    }

    fn wire(&mut self) -> Option<WireReport> {
        self.wire.as_mut().map(TxStamps::finish)
    }

    fn close(&mut self) {
        self.tx = None;
        self.udp = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::order::{OrderRepr, Side};
    use std::io::Read;
    use std::net::TcpListener;
    use std::time::{Duration, Instant};

    fn order(i: u64) -> OrderRepr {
        OrderRepr {
            qty: 1 + (i % 7) as u32,
            price: 659_350_000_000 + i as i64,
            side: if i.is_multiple_of(2) {
                Side::Buy
            } else {
                Side::Sell
            },
            trigger_id: 1_585_699_200_000_000 + i,
        }
    }

    /// A receiver that stops reading: the sender's buffer and then the backlog fill up.
    /// Every order counted as sent must arrive whole and in order, every other one must be
    /// counted as held back, and the stream must parse as whole 21-byte messages.
    #[test]
    fn a_stalled_receiver_gets_whole_orders_and_the_rest_are_held_back() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = match listener.local_addr().expect("addr") {
            std::net::SocketAddr::V4(a) => a,
            std::net::SocketAddr::V6(_) => unreachable!("bound to IPv4"),
        };
        // Small buffers on both sides so the stall comes quickly.
        let sock =
            super::super::sockets::start_tcp_connect(addr, Default::default()).expect("connect");
        sock.set_send_buffer_size(4096).expect("sndbuf");
        let (mut peer, _) = listener.accept().expect("accept");
        socket2::SockRef::from(&peer)
            .set_recv_buffer_size(4096)
            .expect("rcvbuf");
        let t0 = Instant::now();
        while !super::super::sockets::tcp_connected(Some(&sock)).expect("connected") {
            assert!(t0.elapsed() < Duration::from_secs(5));
        }
        let mut tx = TcpOrderTx::new(sock, false).expect("tx");
        let (mut sent, mut queued, mut held) = (Vec::new(), 0u64, 0u64);
        for i in 0..20_000u64 {
            match tx.send(&order(i)).expect("send") {
                Sent::Now => sent.push(i),
                Sent::Queued => {
                    sent.push(i);
                    queued += 1;
                }
                Sent::HeldBack => held += 1,
            }
        }
        assert!(queued > 0, "the backlog was used");
        assert!(held > 0, "a stalled receiver must make orders be held back");
        // The receiver reads again; the backlog drains.
        peer.set_nonblocking(true).expect("nonblocking");
        let mut got = Vec::new();
        let mut buf = [0u8; 65536];
        let t0 = Instant::now();
        while got.len() < sent.len() * ORDER_LEN {
            tx.idle().expect("flush");
            match peer.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("read: {e}"),
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "backlog never drained"
            );
        }
        assert_eq!(tx.backlog_len(), 0);
        assert_eq!(
            got.len(),
            sent.len() * ORDER_LEN,
            "only whole orders on the wire"
        );
        for (chunk, &i) in got.chunks_exact(ORDER_LEN).zip(&sent) {
            let p = proto::order::Packet::new_checked(chunk).expect("21 bytes");
            assert_eq!(OrderRepr::parse(&p).expect("valid order"), order(i));
        }
    }
}
