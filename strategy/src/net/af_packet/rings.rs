//! AF_PACKET with mmap'd TPACKET_V2 RX and TX rings as [`RxRing`] and [`TxRing`].
//!
//! The socket is bound to one interface with a classic BPF filter ([`super::filter`]). The
//! TX ring sends with PACKET_QDISC_BYPASS (straight to the driver). The group's multicast MAC
//! is accepted with PACKET_ADD_MEMBERSHIP, so the kernel's IP layer never joins the group
//! (no kernel socket receives the market data twice).
//!
//! Soundness: the mapping is owned by `Mapping` (shared by the two halves through an
//! `Arc`, unmapped on the last drop). Each half reaches its frames only through
//! `FrameRing`, whose methods take a frame index checked against the ring's size and
//! return references that borrow the ring (so they cannot outlive the mapping).
//!
//! Ring discipline: a frame belongs to user space while its `tp_status` says so; the
//! status word is read with Acquire (the kernel wrote the frame before publishing it) and
//! written with Release (our writes to a TX frame happen before the kernel sees
//! SEND_REQUEST, and we are done reading an RX frame before handing it back).
#![allow(
    unsafe_code,
    reason = "a ring module: memory shared with the kernel (see the module docs and each SAFETY comment)"
)]

use std::io;
use std::mem::{offset_of, size_of};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use hostsys::socket::setsockopt;

use super::filter::{attach_filter, filter, Flows};
use crate::net::ring::{RxRing, TxRing, TxStats};

pub(super) const TP_STATUS_KERNEL: u32 = 0;
pub(super) const TP_STATUS_USER: u32 = 1;
const TP_STATUS_AVAILABLE: u32 = 0;
const TP_STATUS_SEND_REQUEST: u32 = 1;
const TP_STATUS_WRONG_FORMAT: u32 = 4;
pub(super) const PACKET_OUTGOING: u8 = 4;
pub(super) const TPACKET_ALIGNMENT: usize = 16;
/// TPACKET_ALIGN(sizeof(struct tpacket2_hdr)): where a TX frame's data starts, and where an
/// RX frame's `sockaddr_ll` starts.
const HDR_ALIGNED: usize =
    size_of::<libc::tpacket2_hdr>().div_ceil(TPACKET_ALIGNMENT) * TPACKET_ALIGNMENT;
/// Data offset of a TX frame.
const TX_DATA_OFF: usize = HDR_ALIGNED;
/// Offset of an RX frame's `sll_pkttype` (the `sockaddr_ll` follows the aligned header).
const RX_PKTTYPE_OFF: usize = HDR_ALIGNED + offset_of!(libc::sockaddr_ll, sll_pkttype);
/// The smallest frame that holds a header, the address and some data.
const MIN_FRAME: usize = HDR_ALIGNED + size_of::<libc::sockaddr_ll>() + 64;
pub(super) const ETH_P_ALL: u16 = 0x0003;

/// The socket and its mapping, shared by the two halves; unmapped and closed on drop.
pub(super) struct Mapping {
    pub(super) fd: OwnedFd,
    pub(super) base: *mut u8,
    pub(super) len: usize,
}

// SAFETY: the mapping is plain shared memory; the halves touch disjoint regions (RX ring,
// TX ring) and synchronise with the kernel through the status words.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` are exactly the mapping mmap returned; every user holds an
        // Arc to this Mapping, so nothing uses it after the last drop.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

/// One ring (RX or TX) inside the mapping: `frames` frames of `frame_size` bytes from
/// `offset`. Its methods are the only way to its memory; every index is checked.
struct FrameRing {
    map: Arc<Mapping>,
    offset: usize,
    frame_size: usize,
    frames: usize,
}

impl FrameRing {
    /// A ring at `offset` of `map`; fails unless it lies inside the mapping and every frame
    /// is 16-byte aligned and large enough for its header.
    fn new(map: Arc<Mapping>, offset: usize, frame_size: usize, frames: usize) -> io::Result<Self> {
        let end = frames
            .checked_mul(frame_size)
            .and_then(|n| n.checked_add(offset));
        if end.is_none_or(|e| e > map.len)
            || frame_size < MIN_FRAME
            || !frame_size.is_multiple_of(TPACKET_ALIGNMENT)
            || !offset.is_multiple_of(TPACKET_ALIGNMENT)
            || frames == 0
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "AF_PACKET ring geometry does not fit the mapping",
            ));
        }
        Ok(Self {
            map,
            offset,
            frame_size,
            frames,
        })
    }

    /// The start of frame `i`.
    ///
    /// # Panics
    /// If `i >= frames` (a bug in the caller's index arithmetic, never data-dependent).
    #[inline]
    fn frame_ptr(&self, i: usize) -> *mut u8 {
        assert!(i < self.frames, "frame index {i} out of ring");
        // SAFETY: offset + i * frame_size + frame_size <= map.len (checked in `new`), so the
        // result stays inside the mapping.
        unsafe { self.map.base.add(self.offset + i * self.frame_size) }
    }

    /// The status word of frame `i`, shared with the kernel.
    #[inline]
    fn status(&self, i: usize) -> &AtomicU32 {
        // SAFETY: every frame starts with a tpacket2_hdr whose first field, tp_status, is a
        // u32 at a 16-byte aligned address inside the mapping; the kernel accesses it
        // atomically too; the reference borrows `self`, which keeps the mapping alive.
        unsafe { &*self.frame_ptr(i).cast::<AtomicU32>() }
    }

    /// A byte of a frame's header area at `off` (< frame size).
    #[inline]
    fn header_byte(&self, i: usize, off: usize) -> u8 {
        assert!(off < self.frame_size);
        // SAFETY: inside frame `i` (checked above and by frame_ptr); a plain byte read of
        // memory the kernel published before setting the status we Acquire-loaded.
        unsafe { self.frame_ptr(i).add(off).read() }
    }

    /// The packet bytes of a user-owned RX frame, located by its header and clamped to the
    /// frame.
    #[inline]
    fn rx_data(&self, i: usize) -> &[u8] {
        let f = self.frame_ptr(i);
        // SAFETY: the frame is user-owned (status USER, Acquire-loaded) until given back, so
        // the kernel does not write it; the header is a tpacket2_hdr at an aligned address.
        let hdr = unsafe { &*f.cast::<libc::tpacket2_hdr>() };
        let off = usize::from(hdr.tp_mac).min(self.frame_size);
        let len = (hdr.tp_snaplen as usize).min(self.frame_size - off);
        // SAFETY: [off, off + len) lies inside frame `i`; it borrows `self`.
        unsafe { std::slice::from_raw_parts(f.add(off), len) }
    }

    /// The data area of TX frame `i`, `len` bytes, to fill, and its header's `tp_len`.
    ///
    /// # Safety
    /// Frame `i` must be available (not posted to the kernel), and no other reference to
    /// it may exist while the returned ones live.
    #[inline]
    unsafe fn tx_slot(&mut self, i: usize, len: usize) -> (&mut [u8], &mut u32) {
        assert!(len <= self.frame_size - TX_DATA_OFF);
        let f = self.frame_ptr(i);
        // SAFETY: data and tp_len are disjoint parts of frame `i`, inside the mapping; the
        // caller guarantees exclusive access to the frame; both borrow `self` mutably.
        unsafe {
            let hdr = f.cast::<libc::tpacket2_hdr>();
            (
                std::slice::from_raw_parts_mut(f.add(TX_DATA_OFF), len),
                &mut (*hdr).tp_len,
            )
        }
    }
}

/// Ring geometry.
#[derive(Debug, Clone, Copy)]
pub struct Geometry {
    /// Bytes per frame (a power of two, >= 2048 for a 1500-byte MTU).
    pub frame_size: u32,
    /// Frames per ring.
    pub frames: u32,
}

/// A packet socket of this TPACKET version (it receives nothing until bound).
pub(super) fn socket(version: libc::tpacket_versions) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); protocol 0 receives nothing until the bind below.
    let raw = hostsys::syscall!(unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) })?;
    // SAFETY: `raw` is a new fd we own.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    setsockopt(
        fd.as_raw_fd(),
        libc::SOL_PACKET,
        libc::PACKET_VERSION,
        &(version as i32),
    )?;
    Ok(fd)
}

/// Maps `len` bytes of the rings the kernel allocated for `fd` (RX first, then TX).
pub(super) fn map(fd: OwnedFd, len: usize) -> io::Result<Arc<Mapping>> {
    // SAFETY: mapping the rings the kernel just allocated for this socket.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(Arc::new(Mapping {
        fd,
        base: base.cast(),
        len,
    }))
}

/// Binds `s` to `ifindex` for `protocol` (0: transmit only, it receives nothing).
pub(super) fn bind(s: i32, ifindex: u32, protocol: u16) -> io::Result<()> {
    // SAFETY: all-zero is a valid sockaddr_ll; then the fields bind needs.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = protocol.to_be();
    sll.sll_ifindex = ifindex as i32;
    // SAFETY: `sll` is a valid sockaddr_ll of the size passed.
    hostsys::syscall!(unsafe {
        libc::bind(
            s,
            (&raw const sll).cast(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

/// Accepts the group's MAC on `ifindex` (PACKET_ADD_MEMBERSHIP).
pub(super) fn join(s: i32, ifindex: u32, group_mac: [u8; 6]) -> io::Result<()> {
    // SAFETY: all-zero is a valid packet_mreq.
    let mut mreq: libc::packet_mreq = unsafe { std::mem::zeroed() };
    mreq.mr_ifindex = ifindex as i32;
    mreq.mr_type = libc::PACKET_MR_MULTICAST as u16;
    mreq.mr_alen = 6;
    mreq.mr_address[..6].copy_from_slice(&group_mac);
    setsockopt(s, libc::SOL_PACKET, libc::PACKET_ADD_MEMBERSHIP, &mreq)
}

/// The frame ring request for `g` (64 KiB blocks).
fn frame_req(g: Geometry) -> io::Result<libc::tpacket_req> {
    let block = 1u32 << 16;
    let per_block = block / g.frame_size.max(1);
    if per_block == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "AF_PACKET frame size above 64 KiB",
        ));
    }
    let blocks = g.frames.div_ceil(per_block);
    Ok(libc::tpacket_req {
        tp_block_size: block,
        tp_block_nr: blocks,
        tp_frame_size: g.frame_size,
        tp_frame_nr: blocks * per_block,
    })
}

/// PACKET_LOSS on `s`: a TX frame the kernel finds malformed is skipped (made AVAILABLE)
/// instead of left WRONG_FORMAT with the ring's head on it: without it every later frame
/// would wait behind it for good. Set before any ring: the kernel refuses it after (EBUSY).
fn tx_loss(s: i32) -> io::Result<()> {
    setsockopt(s, libc::SOL_PACKET, libc::PACKET_LOSS, &1i32)
}

/// Sets up the TX ring on `s` (after [`tx_loss`]), then QDISC_BYPASS.
fn tx_ring(s: i32, req: &libc::tpacket_req) -> io::Result<()> {
    setsockopt(s, libc::SOL_PACKET, libc::PACKET_TX_RING, req)?;
    setsockopt(s, libc::SOL_PACKET, libc::PACKET_QDISC_BYPASS, &1i32)
}

/// A transmit-only TPACKET_V2 socket on `ifindex` (bound for protocol 0: it receives
/// nothing), beside a receive socket of another version.
pub(super) fn open_tx(ifindex: u32, g: Geometry) -> io::Result<PacketTx> {
    let fd = socket(libc::tpacket_versions::TPACKET_V2)?;
    let req = frame_req(g)?;
    tx_loss(fd.as_raw_fd())?;
    tx_ring(fd.as_raw_fd(), &req)?;
    let len = (req.tp_block_size as usize) * (req.tp_block_nr as usize);
    let map = map(fd, len)?;
    bind(map.fd.as_raw_fd(), ifindex, 0)?;
    Ok(PacketTx {
        ring: FrameRing::new(map, 0, g.frame_size as usize, req.tp_frame_nr as usize)?,
        next: 0,
        oldest: 0,
        in_flight: 0,
        stats: TxStats::default(),
    })
}

/// Opens the socket on `ifindex`, sets up both rings and the filter, and splits it.
pub fn open(
    ifindex: u32,
    flows: &Flows,
    group_mac: [u8; 6],
    g: Geometry,
) -> io::Result<(FrameRx, PacketTx)> {
    let fd = socket(libc::tpacket_versions::TPACKET_V2)?;
    let s = fd.as_raw_fd();
    attach_filter(s, &filter(flows))?;
    let req = frame_req(g)?;
    tx_loss(s)?;
    setsockopt(s, libc::SOL_PACKET, libc::PACKET_RX_RING, &req)?;
    tx_ring(s, &req)?;
    let ring_len = (req.tp_block_size as usize) * (req.tp_block_nr as usize);
    let map = map(fd, 2 * ring_len)?;
    bind(s, ifindex, ETH_P_ALL)?;
    join(s, ifindex, group_mac)?;
    let frames = req.tp_frame_nr as usize;
    let fs = g.frame_size as usize;
    let rx = FrameRx {
        ring: FrameRing::new(Arc::clone(&map), 0, fs, frames)?,
        next: 0,
        held: 0,
        out: vec![false; frames],
        double_give_backs: 0,
        drops: std::cell::Cell::new(0),
        skipped: 0,
    };
    let tx = PacketTx {
        ring: FrameRing::new(map, ring_len, fs, frames)?,
        next: 0,
        oldest: 0,
        in_flight: 0,
        stats: TxStats::default(),
    };
    Ok((rx, tx))
}

pub use proto::md::group_mac;

/// The receive half (TPACKET_V2: one frame per slot).
pub struct FrameRx {
    ring: FrameRing,
    next: usize,
    held: usize,
    /// Frames handed out and not given back, by slot: a slot still held when the ring comes
    /// round to it again is not handed out twice (the kernel cannot have refilled it).
    out: Vec<bool>,
    /// Frames given back that were not out (a double hand-back, refused and counted).
    pub double_give_backs: u64,
    /// Drops read so far (PACKET_STATISTICS resets on each read).
    drops: std::cell::Cell<u64>,
    /// Our own outgoing frames seen on the ring and given straight back.
    pub skipped: u64,
}

impl FrameRx {
    /// The socket (for statistics).
    pub fn fd(&self) -> i32 {
        self.ring.map.fd.as_raw_fd()
    }
}

impl RxRing for FrameRx {
    type Frame = u32;

    fn kernel_drops(&self) -> Option<u64> {
        let (_, drops) = hostsys::socket::packet_statistics(self.fd()).ok()?;
        self.drops.set(self.drops.get() + u64::from(drops));
        Some(self.drops.get())
    }

    #[inline]
    fn recv(&mut self, out: &mut [u32]) -> usize {
        let mut n = 0;
        while n < out.len() {
            let i = self.next;
            // Still ours from the last revolution (held for the session, or for smoltcp):
            // the kernel stopped there too; nothing new beyond it.
            if self.out[i] || self.ring.status(i).load(Ordering::Acquire) & TP_STATUS_USER == 0 {
                break;
            }
            self.next = (i + 1) % self.ring.frames;
            // The sockaddr_ll after the aligned header says where the frame came from: skip
            // frames we sent ourselves.
            if self.ring.header_byte(i, RX_PKTTYPE_OFF) == PACKET_OUTGOING {
                self.skipped += 1;
                self.ring
                    .status(i)
                    .store(TP_STATUS_KERNEL, Ordering::Release);
                continue;
            }
            out[n] = i as u32;
            self.out[i] = true;
            n += 1;
            self.held += 1;
        }
        n
    }

    #[inline]
    fn data(&self, frame: &u32) -> &[u8] {
        self.ring.rx_data(*frame as usize % self.ring.frames)
    }

    #[inline]
    fn give_back(&mut self, frames: &mut Vec<u32>) {
        for &i in frames.iter() {
            let i = i as usize % self.ring.frames;
            if !std::mem::take(&mut self.out[i]) {
                // Not ours to give: the kernel may be writing it already.
                self.double_give_backs += 1;
                continue;
            }
            self.ring
                .status(i)
                .store(TP_STATUS_KERNEL, Ordering::Release);
            self.held -= 1.min(self.held);
        }
        frames.clear();
    }

    fn accounted(&self, held: usize) -> bool {
        self.held == held
    }

    fn double_give_backs(&self) -> u64 {
        self.double_give_backs
    }
}

/// The transmit half.
pub struct PacketTx {
    ring: FrameRing,
    next: usize,
    oldest: usize,
    in_flight: usize,
    stats: TxStats,
}

impl TxRing for PacketTx {
    #[inline]
    fn send<R>(&mut self, len: usize, f: impl FnOnce(&mut [u8]) -> R) -> Option<R> {
        if self.in_flight == self.ring.frames || len > self.ring.frame_size - TX_DATA_OFF {
            self.stats.tx_no_frame += 1;
            return None;
        }
        let i = self.next;
        // SAFETY: slots are posted in order and reaped in order; with fewer than `frames`
        // in flight, slot `next` is not posted, so the kernel does not touch it, and no other
        // reference to it exists (this half is the only user of the TX ring).
        let (buf, tp_len) = unsafe { self.ring.tx_slot(i, len) };
        let r = f(buf);
        *tp_len = len as u32;
        self.ring
            .status(i)
            .store(TP_STATUS_SEND_REQUEST, Ordering::Release);
        self.next = (i + 1) % self.ring.frames;
        self.in_flight += 1;
        self.stats.tx_frames += 1;
        self.stats.tx_kicks += 1;
        // The TX ring has no need_wakeup: one send(2) per frame hands it to the driver. A
        // failed kick leaves the frame posted; the next kick sends it.
        let _ = hostsys::socket::kick(self.ring.map.fd.as_raw_fd());
        Some(r)
    }

    fn touch(&mut self, len: usize, f: impl FnOnce(&mut [u8])) -> bool {
        if self.in_flight == self.ring.frames || len > self.ring.frame_size - TX_DATA_OFF {
            return false;
        }
        // SAFETY: as in `send`: slot `next` is not posted, so the kernel does not touch it,
        // and this half is its only user; its status stays AVAILABLE (nothing is sent).
        let (buf, _) = unsafe { self.ring.tx_slot(self.next, len) };
        f(buf);
        true
    }

    #[inline]
    fn reap(&mut self) {
        while self.in_flight > 0 {
            let s = self.ring.status(self.oldest);
            match s.load(Ordering::Acquire) {
                TP_STATUS_AVAILABLE => {}
                TP_STATUS_WRONG_FORMAT => s.store(TP_STATUS_AVAILABLE, Ordering::Release),
                _ => break,
            }
            self.oldest = (self.oldest + 1) % self.ring.frames;
            self.in_flight -= 1;
        }
    }

    fn in_flight(&self) -> usize {
        self.in_flight
    }

    fn accounted(&self) -> bool {
        self.in_flight <= self.ring.frames
    }

    fn stats(&self) -> TxStats {
        self.stats
    }
}

/// An anonymous mapping of `len` bytes standing in for the kernel's rings, for the tests
/// of both ring versions (its fd is /dev/null's, only so that the Mapping has one to close).
#[cfg(test)]
pub(super) fn anon_mapping(len: usize) -> Arc<Mapping> {
    // SAFETY: an anonymous private mapping, owned by the Mapping below.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(base, libc::MAP_FAILED);
    let fd = std::fs::File::open("/dev/null").expect("fd").into();
    Arc::new(Mapping {
        fd,
        base: base.cast(),
        len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_constants_match_the_kernel_abi() {
        // tpacket2_hdr is 32 bytes; TPACKET2_HDRLEN = 32 + sizeof(sockaddr_ll) = 52.
        assert_eq!(size_of::<libc::tpacket2_hdr>(), 32);
        assert_eq!(TX_DATA_OFF, 32);
        assert_eq!(RX_PKTTYPE_OFF, 32 + 10);
    }

    #[test]
    fn ring_geometry_outside_the_mapping_is_refused() {
        let map = anon_mapping(8 * 2048);
        assert!(FrameRing::new(Arc::clone(&map), 0, 2048, 8).is_ok());
        assert!(FrameRing::new(Arc::clone(&map), 2048, 2048, 8).is_err());
        assert!(FrameRing::new(Arc::clone(&map), 0, 2048, 9).is_err());
        assert!(FrameRing::new(Arc::clone(&map), 0, 40, 8).is_err());
        assert!(FrameRing::new(map, 0, usize::MAX / 2, 3).is_err());
    }

    #[test]
    #[should_panic(expected = "out of ring")]
    fn a_frame_index_past_the_ring_panics_instead_of_reading_past_it() {
        let ring = FrameRing::new(anon_mapping(4 * 2048), 0, 2048, 4).expect("ring");
        let _ = ring.status(4);
    }

    /// The kernel's side of an RX slot, for the tests: a frame written into slot `i`.
    fn deliver(ring: &FrameRing, i: usize) {
        ring.status(i).store(TP_STATUS_USER, Ordering::Release);
    }

    #[test]
    fn a_frame_held_over_a_revolution_is_not_handed_out_or_back_twice() {
        let mut rx = FrameRx {
            ring: FrameRing::new(anon_mapping(4 * 2048), 0, 2048, 4).expect("ring"),
            next: 0,
            held: 0,
            out: vec![false; 4],
            double_give_backs: 0,
            drops: std::cell::Cell::new(0),
            skipped: 0,
        };
        let mut got = [0u32; 8];
        deliver(&rx.ring, 0);
        assert_eq!(rx.recv(&mut got), 1);
        // Frame 0 is held (for the session); the others go round and back.
        for i in 1..4 {
            deliver(&rx.ring, i);
        }
        assert_eq!(rx.recv(&mut got), 3);
        assert_eq!(&got[..3], &[1, 2, 3]);
        rx.give_back(&mut vec![1, 2, 3]);
        // The ring is back at slot 0, still ours and still USER: not a new frame.
        assert_eq!(
            rx.recv(&mut got),
            0,
            "slot 0 is not handed out a second time"
        );
        rx.give_back(&mut vec![0]);
        rx.give_back(&mut vec![0]);
        assert_eq!(rx.double_give_backs, 1, "the second hand-back is refused");
        assert!(rx.accounted(0));
    }

    #[test]
    fn rx_data_is_clamped_to_its_frame() {
        let ring = FrameRing::new(anon_mapping(2 * 2048), 0, 2048, 2).expect("ring");
        // SAFETY: test-only: we own the anonymous mapping and write a header into frame 1.
        unsafe {
            let hdr = ring.frame_ptr(1).cast::<libc::tpacket2_hdr>();
            (*hdr).tp_mac = 100;
            (*hdr).tp_snaplen = 60_000;
        }
        assert_eq!(ring.rx_data(1).len(), 2048 - 100);
    }
}
