//! AF_PACKET with mmap'd TPACKET_V2 RX and TX rings as [`RxRing`] and [`TxRing`].
//!
//! The socket is bound to one interface with a classic BPF filter, so only the market-data
//! datagrams, the order-entry segments from the exchange to our address, and ARP for our
//! address reach the RX ring. The TX ring sends with PACKET_QDISC_BYPASS (straight to the
//! driver). The group's multicast MAC is accepted with PACKET_ADD_MEMBERSHIP, so the kernel's
//! IP layer never joins the group (no kernel socket receives the market data twice).
//!
//! Ring discipline: a frame belongs to user space while its `tp_status` says so; the
//! status word is read with Acquire (the kernel wrote the frame before publishing it) and
//! written with Release (our writes to a TX frame happen before the kernel sees
//! SEND_REQUEST, and we are done reading an RX frame before handing it back).

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use super::{RxRing, TxRing, TxStats};

const TP_STATUS_KERNEL: u32 = 0;
const TP_STATUS_USER: u32 = 1;
const TP_STATUS_AVAILABLE: u32 = 0;
const TP_STATUS_SEND_REQUEST: u32 = 1;
const TP_STATUS_WRONG_FORMAT: u32 = 4;
const PACKET_OUTGOING: u8 = 4;
/// Data offset of a TX frame: TPACKET_ALIGN(sizeof(tpacket2_hdr)).
const TX_DATA_OFF: usize = 32;
const ETH_P_ALL: u16 = 0x0003;

macro_rules! syscall {
    ($e:expr) => {{
        let rc = $e;
        if rc == -1 {
            Err(io::Error::last_os_error())
        } else {
            Ok(rc)
        }
    }};
}

/// One classic BPF instruction (struct sock_filter).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SockFilter {
    code: u16,
    jt: u8,
    jf: u8,
    k: u32,
}

const fn op(code: u16, jt: u8, jf: u8, k: u32) -> SockFilter {
    SockFilter { code, jt, jf, k }
}

const LD_H_ABS: u16 = 0x28;
const LD_W_ABS: u16 = 0x20;
const LD_B_ABS: u16 = 0x30;
const LD_H_IND: u16 = 0x48;
const LDX_B_MSH: u16 = 0xb1;
const JEQ_K: u16 = 0x15;
const RET_K: u16 = 0x06;

/// The flows the filter accepts.
#[derive(Debug, Clone, Copy)]
pub struct Flows {
    /// Market-data group.
    pub group: Ipv4Addr,
    /// Market-data port.
    pub md_port: u16,
    /// Exchange address.
    pub exchange: Ipv4Addr,
    /// Exchange order-entry port.
    pub exchange_port: u16,
    /// Our (smoltcp's) address.
    pub local: Ipv4Addr,
}

/// The classic BPF program: UDP to the group and port, TCP from the exchange's address and
/// port to our address, ARP whose target is our address; everything else dropped.
pub fn filter(f: &Flows) -> [SockFilter; 22] {
    let (group, exch, local) = (
        u32::from(f.group),
        u32::from(f.exchange),
        u32::from(f.local),
    );
    [
        op(LD_H_ABS, 0, 0, 12),                      // 0: ethertype
        op(JEQ_K, 16, 0, 0x0806),                    // 1: ARP -> 18
        op(JEQ_K, 0, 18, 0x0800),                    // 2: not IPv4 -> drop
        op(LD_B_ABS, 0, 0, 23),                      // 3: IP protocol
        op(JEQ_K, 1, 0, 17),                         // 4: UDP -> 6
        op(JEQ_K, 5, 15, 6),                         // 5: TCP -> 11, else drop
        op(LD_W_ABS, 0, 0, 30),                      // 6: UDP: destination address
        op(JEQ_K, 0, 13, group),                     // 7: not the group -> drop
        op(LDX_B_MSH, 0, 0, 14),                     // 8: X = IP header length
        op(LD_H_IND, 0, 0, 16),                      // 9: UDP destination port
        op(JEQ_K, 9, 10, u32::from(f.md_port)),      // 10: -> accept / drop
        op(LD_W_ABS, 0, 0, 26),                      // 11: TCP: source address
        op(JEQ_K, 0, 8, exch),                       // 12: not the exchange -> drop
        op(LD_W_ABS, 0, 0, 30),                      // 13: destination address
        op(JEQ_K, 0, 6, local),                      // 14: not us -> drop
        op(LDX_B_MSH, 0, 0, 14),                     // 15: X = IP header length
        op(LD_H_IND, 0, 0, 14),                      // 16: TCP source port
        op(JEQ_K, 2, 3, u32::from(f.exchange_port)), // 17: -> accept / drop
        op(LD_W_ABS, 0, 0, 38),                      // 18: ARP target protocol address
        op(JEQ_K, 0, 1, local),                      // 19: -> accept / drop
        op(RET_K, 0, 0, 0xffff),                     // 20: accept
        op(RET_K, 0, 0, 0),                          // 21: drop
    ]
}

/// Attaches a classic BPF program to a socket.
pub fn attach_filter(fd: i32, prog: &[SockFilter]) -> io::Result<()> {
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `fprog` points at `prog`, alive for the call; the kernel copies the program.
    syscall!(unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&raw const fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    })
    .map(drop)
}

fn setsockopt<T>(fd: i32, level: i32, name: i32, v: &T) -> io::Result<()> {
    // SAFETY: `v` is a live value of the type the option expects; its size is passed.
    syscall!(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (v as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// The socket and its mapping, shared by the two halves; unmapped and closed on drop.
struct Mapping {
    fd: OwnedFd,
    base: *mut u8,
    len: usize,
}

// SAFETY: the mapping is plain shared memory; the halves touch disjoint regions (RX ring,
// TX ring) and synchronise with the kernel through the status words.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` are exactly the mapping mmap returned; nothing uses it after.
        unsafe { libc::munmap(self.base.cast(), self.len) };
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

/// Opens the socket on `ifindex`, sets up both rings and the filter, and splits it.
pub fn open(
    ifindex: u32,
    flows: &Flows,
    group_mac: [u8; 6],
    g: Geometry,
) -> io::Result<(PacketRx, PacketTx)> {
    // SAFETY: plain socket(2); protocol 0 receives nothing until the bind below.
    let raw = syscall!(unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) })?;
    // SAFETY: `raw` is a new fd we own.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let s = fd.as_raw_fd();
    setsockopt(
        s,
        libc::SOL_PACKET,
        libc::PACKET_VERSION,
        &(libc::tpacket_versions::TPACKET_V2 as i32),
    )?;
    attach_filter(s, &filter(flows))?;
    let block = 1u32 << 16;
    let per_block = block / g.frame_size;
    let blocks = g.frames.div_ceil(per_block);
    let req = libc::tpacket_req {
        tp_block_size: block,
        tp_block_nr: blocks,
        tp_frame_size: g.frame_size,
        tp_frame_nr: blocks * per_block,
    };
    setsockopt(s, libc::SOL_PACKET, libc::PACKET_RX_RING, &req)?;
    setsockopt(s, libc::SOL_PACKET, libc::PACKET_TX_RING, &req)?;
    setsockopt(s, libc::SOL_PACKET, libc::PACKET_QDISC_BYPASS, &1i32)?;
    let ring_len = (block as usize) * (blocks as usize);
    let len = 2 * ring_len;
    // SAFETY: mapping the rings the kernel just allocated for this socket (RX then TX).
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            s,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let map = Arc::new(Mapping {
        fd,
        base: base.cast(),
        len,
    });
    // SAFETY: all-zero is a valid sockaddr_ll; then the fields bind needs.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = ETH_P_ALL.to_be();
    sll.sll_ifindex = ifindex as i32;
    // SAFETY: `sll` is a valid sockaddr_ll of the size passed.
    syscall!(unsafe {
        libc::bind(
            s,
            (&raw const sll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    })?;
    // SAFETY: all-zero is a valid packet_mreq.
    let mut mreq: libc::packet_mreq = unsafe { std::mem::zeroed() };
    mreq.mr_ifindex = ifindex as i32;
    mreq.mr_type = libc::PACKET_MR_MULTICAST as u16;
    mreq.mr_alen = 6;
    mreq.mr_address[..6].copy_from_slice(&group_mac);
    setsockopt(s, libc::SOL_PACKET, libc::PACKET_ADD_MEMBERSHIP, &mreq)?;
    let frames = (blocks * per_block) as usize;
    let fs = g.frame_size as usize;
    let rx = PacketRx {
        map: Arc::clone(&map),
        base: map.base,
        frame_size: fs,
        frames,
        next: 0,
        held: 0,
        skipped: 0,
    };
    // SAFETY: the TX ring starts right after the RX ring inside the mapping.
    let tx_base = unsafe { map.base.add(ring_len) };
    let tx = PacketTx {
        map,
        base: tx_base,
        frame_size: fs,
        frames,
        next: 0,
        oldest: 0,
        in_flight: 0,
        stats: TxStats::default(),
    };
    Ok((rx, tx))
}

/// The multicast MAC of an IPv4 group (01:00:5e + the low 23 bits).
pub fn group_mac(group: Ipv4Addr) -> [u8; 6] {
    let o = group.octets();
    [0x01, 0x00, 0x5e, o[1] & 0x7f, o[2], o[3]]
}

fn status(frame: *mut u8) -> &'static AtomicU32 {
    // SAFETY: every frame starts with a tpacket2_hdr whose first field, tp_status, is a
    // 4-byte aligned u32 shared with the kernel; the mapping outlives the rings' users.
    unsafe { &*frame.cast::<AtomicU32>() }
}

/// The receive half.
pub struct PacketRx {
    map: Arc<Mapping>,
    base: *mut u8,
    frame_size: usize,
    frames: usize,
    next: usize,
    held: usize,
    /// Our own outgoing frames seen on the ring and given straight back.
    pub skipped: u64,
}

// SAFETY: see Mapping; the half is used by one thread at a time.
unsafe impl Send for PacketRx {}

impl PacketRx {
    fn frame(&self, i: usize) -> *mut u8 {
        // SAFETY: i < frames, so the frame lies inside the RX ring.
        unsafe { self.base.add(i * self.frame_size) }
    }

    /// The socket (for statistics).
    pub fn fd(&self) -> i32 {
        self.map.fd.as_raw_fd()
    }
}

impl RxRing for PacketRx {
    type Frame = u32;

    #[inline]
    fn recv(&mut self, out: &mut [u32]) -> usize {
        let mut n = 0;
        while n < out.len() {
            let f = self.frame(self.next);
            if status(f).load(Ordering::Acquire) & TP_STATUS_USER == 0 {
                break;
            }
            let i = self.next;
            self.next = (self.next + 1) % self.frames;
            // sockaddr_ll follows the aligned header: skip frames we sent ourselves.
            // SAFETY: the kernel wrote a sockaddr_ll at offset 32 of this user-owned frame.
            let pkttype = unsafe { *f.add(TX_DATA_OFF + 10) };
            if pkttype == PACKET_OUTGOING {
                self.skipped += 1;
                status(f).store(TP_STATUS_KERNEL, Ordering::Release);
                continue;
            }
            out[n] = i as u32;
            n += 1;
            self.held += 1;
        }
        n
    }

    #[inline]
    fn data(&self, frame: &u32) -> &[u8] {
        let f = self.frame(*frame as usize % self.frames);
        // SAFETY: the frame is user-owned (status USER) until given back; the header's
        // tp_mac/tp_snaplen locate the packet inside it, bounded by the frame size.
        unsafe {
            let hdr = &*f.cast::<libc::tpacket2_hdr>();
            let off = usize::from(hdr.tp_mac).min(self.frame_size);
            let len = (hdr.tp_snaplen as usize).min(self.frame_size - off);
            std::slice::from_raw_parts(f.add(off), len)
        }
    }

    #[inline]
    fn give_back(&mut self, frames: &mut Vec<u32>) {
        for &i in frames.iter() {
            status(self.frame(i as usize % self.frames)).store(TP_STATUS_KERNEL, Ordering::Release);
        }
        self.held -= frames.len().min(self.held);
        frames.clear();
    }

    fn accounted(&self, held: usize) -> bool {
        self.held == held
    }
}

/// The transmit half.
pub struct PacketTx {
    map: Arc<Mapping>,
    base: *mut u8,
    frame_size: usize,
    frames: usize,
    next: usize,
    oldest: usize,
    in_flight: usize,
    stats: TxStats,
}

// SAFETY: see Mapping; the half is used by one thread at a time.
unsafe impl Send for PacketTx {}

impl PacketTx {
    fn frame(&self, i: usize) -> *mut u8 {
        // SAFETY: i < frames, so the frame lies inside the TX ring.
        unsafe { self.base.add(i * self.frame_size) }
    }
}

impl TxRing for PacketTx {
    #[inline]
    fn send<R>(&mut self, len: usize, f: impl FnOnce(&mut [u8]) -> R) -> Option<R> {
        if self.in_flight == self.frames || len > self.frame_size - TX_DATA_OFF {
            self.stats.tx_no_frame += 1;
            return None;
        }
        let fr = self.frame(self.next);
        // SAFETY: the slot is not in flight (in_flight < frames and slots are used in
        // order), so the kernel does not touch it; the data area lies inside the frame.
        let buf = unsafe { std::slice::from_raw_parts_mut(fr.add(TX_DATA_OFF), len) };
        let r = f(buf);
        // SAFETY: as above; tp_len is a plain field of our slot's header.
        unsafe { (*fr.cast::<libc::tpacket2_hdr>()).tp_len = len as u32 };
        status(fr).store(TP_STATUS_SEND_REQUEST, Ordering::Release);
        self.next = (self.next + 1) % self.frames;
        self.in_flight += 1;
        self.stats.tx_frames += 1;
        self.stats.tx_kicks += 1;
        // The TX ring has no need_wakeup: one send(2) per frame hands it to the driver.
        // SAFETY: a zero-length send on our socket; no buffer is read.
        unsafe {
            libc::send(
                self.map.fd.as_raw_fd(),
                std::ptr::null(),
                0,
                libc::MSG_DONTWAIT,
            )
        };
        Some(r)
    }

    #[inline]
    fn reap(&mut self) {
        while self.in_flight > 0 {
            let s = status(self.frame(self.oldest));
            match s.load(Ordering::Acquire) {
                TP_STATUS_AVAILABLE => {}
                TP_STATUS_WRONG_FORMAT => s.store(TP_STATUS_AVAILABLE, Ordering::Release),
                _ => break,
            }
            self.oldest = (self.oldest + 1) % self.frames;
            self.in_flight -= 1;
        }
    }

    fn in_flight(&self) -> usize {
        self.in_flight
    }

    fn accounted(&self) -> bool {
        self.in_flight <= self.frames
    }

    fn stats(&self) -> TxStats {
        self.stats
    }
}
