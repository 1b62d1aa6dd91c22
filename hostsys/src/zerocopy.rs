//! MSG_ZEROCOPY sends from slots that live until the kernel is done with them.
//!
//! With MSG_ZEROCOPY the kernel reads a message's bytes after `send` returns, until it
//! reports the send complete on the socket's error queue. [`ZcSlots`] owns the bytes: each
//! message is copied into a slot that is not touched again until its completion has been
//! read, so the unsafe contract of [`crate::socket::send_zerocopy`] holds by construction.
//! Closing the socket does not end it: a closed TCP socket keeps sending and retransmitting
//! its queued data from the pinned pages. So slots dropped with a send still in flight are
//! never freed: they are kept for the process ([`kept_bytes`] counts them).

use std::sync::atomic::{AtomicU64, Ordering};

use std::io;
use std::os::fd::RawFd;

use crate::errqueue::read_zerocopy_completion;
use crate::socket::{send_nb, send_zerocopy};

/// MSG_ZEROCOPY counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ZcStats {
    /// Completions received.
    pub completed: u64,
    /// Completions the kernel reported as copied after all (always so on veth and loopback).
    pub copied_by_kernel: u64,
    /// Messages sent with a plain send because every slot was busy.
    pub plain_send_fallbacks: u64,
}

/// `N` slots of `L` bytes for MSG_ZEROCOPY sends on one socket (SO_ZEROCOPY must be set).
pub struct ZcSlots<const N: usize, const L: usize> {
    slots: Box<[[u8; L]; N]>,
    /// Send id (the kernel counts zerocopy sends from 0 per socket) of each busy slot.
    busy: [Option<u32>; N],
    next_id: u32,
    next_slot: usize,
    stats: ZcStats,
}

impl<const N: usize, const L: usize> Default for ZcSlots<N, L> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize, const L: usize> ZcSlots<N, L> {
    /// Free slots for a fresh socket.
    pub fn new() -> Self {
        Self {
            slots: Box::new([[0; L]; N]),
            busy: [None; N],
            next_id: 0,
            next_slot: 0,
            stats: ZcStats::default(),
        }
    }

    /// Sends `msg` on `fd` with MSG_ZEROCOPY from the next slot (a plain send when it is
    /// still busy after reading completions); returns the bytes the kernel took, 0 when its
    /// buffer is full.
    pub fn send(&mut self, fd: RawFd, msg: &[u8; L]) -> io::Result<usize> {
        let slot = self.next_slot;
        if self.busy[slot].is_some() {
            self.reap(fd);
        }
        if self.busy[slot].is_some() {
            self.stats.plain_send_fallbacks += 1;
            return send_nb(fd, msg, 0);
        }
        self.slots[slot] = *msg;
        // SAFETY: the slot is owned by self (boxed, so it does not move), is not written
        // while busy (checked above), and becomes free only in `reap`, once the kernel has
        // reported this send complete; dropped while a send is in flight, the slots are
        // kept for the process, never freed (`Drop`).
        let n = unsafe { send_zerocopy(fd, &self.slots[slot]) }?;
        if n == 0 {
            return Ok(0);
        }
        self.busy[slot] = Some(self.next_id);
        self.next_id = self.next_id.wrapping_add(1);
        self.next_slot = (slot + 1) % N;
        Ok(n)
    }

    /// Reads completions (ranges of send ids) from `fd`'s error queue and frees their slots.
    pub fn reap(&mut self, fd: RawFd) {
        while let Some((lo, hi, copied)) = read_zerocopy_completion(fd) {
            let count = u64::from(hi.wrapping_sub(lo)) + 1;
            self.stats.completed += count;
            self.stats.copied_by_kernel += u64::from(copied) * count;
            for b in self.busy.iter_mut() {
                if let Some(id) = *b {
                    if id.wrapping_sub(lo) <= hi.wrapping_sub(lo) {
                        *b = None;
                    }
                }
            }
        }
    }

    /// Is any slot waiting for its completion?
    pub fn any_busy(&self) -> bool {
        self.busy.iter().any(Option::is_some)
    }

    /// Counters.
    pub fn stats(&self) -> ZcStats {
        self.stats
    }
}

/// Bytes of slots kept for the process because they were dropped with a send in flight.
static KEPT: AtomicU64 = AtomicU64::new(0);

/// Bytes of MSG_ZEROCOPY slots this process keeps because they were dropped with a send in
/// flight (the kernel may still read them).
pub fn kept_bytes() -> u64 {
    KEPT.load(Ordering::Relaxed)
}

impl<const N: usize, const L: usize> Drop for ZcSlots<N, L> {
    fn drop(&mut self) {
        if self.any_busy() {
            let slots = std::mem::replace(&mut self.slots, Box::new([[0; L]; N]));
            KEPT.fetch_add(std::mem::size_of_val(&*slots) as u64, Ordering::Relaxed);
            // Kept, never freed: the kernel may still read these bytes.
            std::mem::forget(slots);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsRawFd;

    /// A send in flight when the slots are dropped (never reaped: its completion is not
    /// read): the slots are kept, not freed; slots with nothing in flight are freed.
    #[test]
    fn slots_dropped_with_a_send_in_flight_are_kept() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
        let c = std::net::TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
        let (mut peer, _) = l.accept().expect("accept");
        let one: libc::c_int = 1;
        // SAFETY: setsockopt with a c_int that lives across the call.
        let r = unsafe {
            libc::setsockopt(
                c.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ZEROCOPY,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(r, 0, "SO_ZEROCOPY");
        let before = kept_bytes();
        let idle = ZcSlots::<4, 21>::new();
        drop(idle);
        assert_eq!(kept_bytes(), before, "nothing in flight: freed");
        let mut z = ZcSlots::<4, 21>::new();
        assert_eq!(z.send(c.as_raw_fd(), &[7; 21]).expect("send"), 21);
        assert!(z.any_busy());
        drop(z);
        assert_eq!(kept_bytes(), before + 4 * 21, "in flight: kept");
        let mut got = [0u8; 21];
        peer.read_exact(&mut got).expect("read");
        assert_eq!(got, [7; 21]);
    }
}
