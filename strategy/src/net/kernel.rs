//! The kernel-socket path: a non-blocking UDP socket for market data, a non-blocking TCP
//! socket (TCP_NODELAY) for orders, one busy-polling loop. One `recv` syscall per packet
//! and one `send` per order; nothing else on the packet-to-order path.

use std::io;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;

use proto::order::ORDER_LEN;

use super::{Hot, NetConfig, NetPath, PathStats, Status};
use crate::sys::mono_ns;

/// Idle turns between two hang-up checks of the order socket.
const HUP_CHECK_EVERY: u32 = 1024;

/// The path.
pub struct KernelPath {
    cfg: NetConfig,
    tcp: Option<socket2::Socket>,
    udp: Option<UdpSocket>,
    buf: Box<[u8; 65536]>,
    /// Bytes of orders the kernel did not take yet.
    backlog: Box<[u8; 4096]>,
    backlog_len: usize,
    idle_turns: u32,
    stats: PathStats,
    zc: ZeroCopy,
}

/// MSG_ZEROCOPY state: the kernel reads an order's bytes after `send` returns, until its
/// completion arrives on the error queue, so each order sits in a slot of its own until then.
struct ZeroCopy {
    on: bool,
    slots: Box<[[u8; ORDER_LEN]; ZC_SLOTS]>,
    /// Send id (the kernel counts zerocopy sends from 0) of each busy slot.
    busy: [Option<u32>; ZC_SLOTS],
    next_id: u32,
    next_slot: usize,
    /// Completions the kernel reported as copied after all (always so on veth and loopback).
    copied: u64,
    /// Completions received.
    completed: u64,
    /// Orders sent with a plain send because every slot was busy.
    fallback: u64,
}

const ZC_SLOTS: usize = 64;

impl KernelPath {
    /// A path with these settings (no sockets yet).
    pub fn new(cfg: NetConfig) -> Self {
        let cfg_zc = cfg.msg_zerocopy;
        Self {
            cfg,
            tcp: None,
            udp: None,
            buf: Box::new([0; 65536]),
            backlog: Box::new([0; 4096]),
            backlog_len: 0,
            idle_turns: 0,
            stats: PathStats::default(),
            zc: ZeroCopy {
                on: cfg_zc,
                slots: Box::new([[0; ORDER_LEN]; ZC_SLOTS]),
                busy: [None; ZC_SLOTS],
                next_id: 0,
                next_slot: 0,
                copied: 0,
                completed: 0,
                fallback: 0,
            },
        }
    }

    /// `send(2)` of `bytes`; returns how many the kernel took.
    #[inline]
    fn send_raw(fd: i32, bytes: &[u8]) -> io::Result<usize> {
        // SAFETY: `bytes` is valid for reads of its length for the call's duration.
        let n = unsafe {
            libc::send(
                fd,
                bytes.as_ptr().cast(),
                bytes.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        sent_or_would_block(n)
    }

    fn flush_backlog(&mut self, fd: i32) -> io::Result<()> {
        if self.backlog_len == 0 {
            return Ok(());
        }
        let n = Self::send_raw(fd, &self.backlog[..self.backlog_len])?;
        self.backlog.copy_within(n..self.backlog_len, 0);
        self.backlog_len -= n;
        Ok(())
    }

    /// `send(2)` with MSG_ZEROCOPY from a slot that stays untouched until its completion;
    /// a plain send when every slot is busy.
    fn send_zerocopy(&mut self, fd: i32, msg: &[u8; ORDER_LEN]) -> io::Result<usize> {
        let slot = self.zc.next_slot;
        if self.zc.busy[slot].is_some() {
            self.reap_zerocopy(fd);
        }
        if self.zc.busy[slot].is_some() {
            self.zc.fallback += 1;
            return Self::send_raw(fd, msg);
        }
        self.zc.slots[slot] = *msg;
        let bytes = &self.zc.slots[slot];
        // SAFETY: the slot stays alive and unmodified until the kernel reports the send
        // complete on the error queue (reap_zerocopy frees it only then).
        let n = unsafe {
            libc::send(
                fd,
                bytes.as_ptr().cast(),
                bytes.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL | libc::MSG_ZEROCOPY,
            )
        };
        let n = sent_or_would_block(n)?;
        if n == 0 {
            return Ok(0);
        }
        self.zc.busy[slot] = Some(self.zc.next_id);
        self.zc.next_id = self.zc.next_id.wrapping_add(1);
        self.zc.next_slot = (slot + 1) % ZC_SLOTS;
        Ok(n)
    }

    /// Reads MSG_ZEROCOPY completions (ranges of send ids) and frees their slots.
    fn reap_zerocopy(&mut self, fd: i32) {
        while let Some((lo, hi, copied)) = crate::sys::read_zerocopy_completion(fd) {
            self.zc.completed += u64::from(hi.wrapping_sub(lo)) + 1;
            self.zc.copied += u64::from(copied) * (u64::from(hi.wrapping_sub(lo)) + 1);
            for b in self.zc.busy.iter_mut() {
                if let Some(id) = *b {
                    if id.wrapping_sub(lo) <= hi.wrapping_sub(lo) {
                        *b = None;
                    }
                }
            }
        }
    }

    fn hung_up(fd: i32) -> io::Result<bool> {
        let mut b = [0u8; 64];
        // SAFETY: `b` is valid for writes of its length.
        let n = unsafe { libc::recv(fd, b.as_mut_ptr().cast(), b.len(), libc::MSG_DONTWAIT) };
        if n == 0 {
            return Ok(true);
        }
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock => Ok(false),
                io::ErrorKind::ConnectionReset
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::ConnectionAborted => Ok(true),
                _ => Err(e),
            };
        }
        Ok(false) // the exchange sends nothing; ignore stray bytes
    }
}

impl NetPath for KernelPath {
    fn begin_connect(&mut self) -> io::Result<()> {
        let tcp = super::start_tcp_connect(self.cfg.exchange)?;
        if self.zc.on {
            crate::sys::setsockopt_int(tcp.as_raw_fd(), libc::SOL_SOCKET, libc::SO_ZEROCOPY, 1)?;
        }
        self.tcp = Some(tcp);
        Ok(())
    }

    fn poll_connect(&mut self) -> io::Result<bool> {
        super::tcp_connected(self.tcp.as_ref())
    }

    fn start_md(&mut self) -> io::Result<()> {
        self.udp = Some(super::join_group(
            self.cfg.group,
            self.cfg.iface_addr,
            self.cfg.busy_poll_us,
        )?);
        self.stats = PathStats::default();
        Ok(())
    }

    #[inline]
    fn poll(&mut self, hot: &mut Hot<'_>) -> io::Result<Status> {
        let (Some(udp), Some(tcp)) = (&self.udp, &self.tcp) else {
            return Ok(Status::Disconnected);
        };
        let (ufd, tfd) = (udp.as_raw_fd(), tcp.as_raw_fd());
        let mut status = Status::Idle;
        for _ in 0..64 {
            // SAFETY: `buf` is valid for writes of its length.
            let n = unsafe {
                libc::recv(
                    ufd,
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::WouldBlock {
                    break;
                }
                return Err(e);
            }
            let t_rx = mono_ns();
            status = Status::Busy;
            self.stats.packets += 1;
            let Some(order) = hot.engine.on_packet(&self.buf[..n as usize], t_rx) else {
                continue;
            };
            let mut msg = [0u8; ORDER_LEN];
            order.emit(&mut proto::order::Packet::new_unchecked(&mut msg[..]));
            let delay = hot.next_delay();
            super::spin_for(delay);
            if self.backlog_len > 0 {
                self.flush_backlog(tfd)?;
            }
            let sent = if self.backlog_len > 0 {
                0
            } else if self.zc.on {
                self.send_zerocopy(tfd, &msg)?
            } else {
                Self::send_raw(tfd, &msg)?
            };
            let t_tx = mono_ns();
            if sent < ORDER_LEN {
                self.stats.partial_sends += 1;
                let rest = &msg[sent..];
                let end = (self.backlog_len + rest.len()).min(self.backlog.len());
                let take = end - self.backlog_len;
                self.backlog[self.backlog_len..end].copy_from_slice(&rest[..take]);
                self.backlog_len = end;
            }
            self.stats.orders += 1;
            hot.latency.record(t_tx - t_rx);
            hot.log.push(order, delay);
        }
        if status == Status::Idle {
            self.idle_turns += 1;
            if self.zc.on && self.zc.busy.iter().any(Option::is_some) {
                self.reap_zerocopy(tfd);
            }
            if self.backlog_len > 0 {
                self.flush_backlog(tfd)?;
            }
            if self.idle_turns >= HUP_CHECK_EVERY {
                self.idle_turns = 0;
                if Self::hung_up(tfd)? {
                    return Ok(Status::Disconnected);
                }
            }
        }
        Ok(status)
    }

    fn report_extra(&self) -> serde_json::Value {
        if !self.zc.on {
            return serde_json::Value::Null;
        }
        serde_json::json!({
            "msg_zerocopy": {
                "completed": self.zc.completed,
                "copied_by_kernel": self.zc.copied,
                "plain_send_fallbacks": self.zc.fallback,
            }
        })
    }

    fn close(&mut self) {
        self.zc.busy = [None; ZC_SLOTS];
        self.tcp = None;
        self.udp = None;
        self.backlog_len = 0;
    }

    fn stats(&self) -> PathStats {
        self.stats
    }
}

/// The result of a non-blocking `send(2)`: the bytes taken, 0 when the socket buffer is
/// full (EAGAIN), or the error.
#[inline]
fn sent_or_would_block(n: isize) -> io::Result<usize> {
    if n >= 0 {
        return Ok(n as usize);
    }
    let e = io::Error::last_os_error();
    if e.kind() == io::ErrorKind::WouldBlock {
        Ok(0)
    } else {
        Err(e)
    }
}
