//! The socket error queue and its control messages, walked in one place: kernel software
//! and NIC hardware timestamps (SO_TIMESTAMPING, on receive and from the transmit error
//! queue: [`Stamps`]) and MSG_ZEROCOPY completions.

use std::io;
use std::mem::size_of;
use std::os::fd::RawFd;

use crate::clock::timespec_ns;

/// `SOF_TIMESTAMPING_*` flags (linux/net_tstamp.h).
mod flags {
    pub const TX_HARDWARE: u32 = 1 << 0;
    pub const TX_SOFTWARE: u32 = 1 << 1;
    pub const RX_HARDWARE: u32 = 1 << 2;
    pub const RX_SOFTWARE: u32 = 1 << 3;
    pub const SOFTWARE: u32 = 1 << 4;
    pub const RAW_HARDWARE: u32 = 1 << 6;
    pub const OPT_ID: u32 = 1 << 7;
    pub const OPT_TSONLY: u32 = 1 << 11;
}
const SO_EE_ORIGIN_TIMESTAMPING: u8 = 4;

fn set_timestamping(fd: RawFd, value: u32) -> io::Result<()> {
    // SAFETY: `value` outlives the call and its size is passed; the kernel only reads it.
    crate::syscall!(unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPING,
            (&raw const value).cast(),
            size_of::<u32>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// Kernel software RX timestamps on `fd`, and the NIC's raw hardware stamps too when `hw`
/// (the interface must have them switched on: [`crate::hwtstamp::switch_on`]); read with
/// [`recv_timestamped`].
pub fn enable_rx_timestamps(fd: RawFd, hw: bool) -> io::Result<()> {
    let hw_flags = if hw {
        flags::RX_HARDWARE | flags::RAW_HARDWARE
    } else {
        0
    };
    set_timestamping(fd, flags::RX_SOFTWARE | flags::SOFTWARE | hw_flags)
}

/// The record flags a message asks a TX stamp with (`SOF_TIMESTAMPING_TX_*`): software, and
/// the NIC's too when `hw`.
pub fn tx_record_flags(hw: bool) -> u32 {
    flags::TX_SOFTWARE | if hw { flags::TX_HARDWARE } else { 0 }
}

/// Kernel software TX timestamps on `fd` only for the messages that ask for one, each with
/// a key (read with [`read_tx_timestamps`]): on UDP the key the message gave (sent with
/// [`crate::mmsg::send_batch`]), on TCP the stream offset of the send's last byte, counted
/// from the unacknowledged byte when this is set (sent with [`send_with_tx_stamp`]). Fails on kernels before 6.13 (no `SCM_TS_OPT_ID`) only when a
/// message asks: callers probe with [`crate::mmsg::send_batch`] once.
pub fn enable_tx_timestamps_on_request(fd: RawFd, hw: bool) -> io::Result<()> {
    let hw_flags = if hw { flags::RAW_HARDWARE } else { 0 };
    set_timestamping(
        fd,
        flags::SOFTWARE | flags::OPT_ID | flags::OPT_TSONLY | hw_flags,
    )
}

/// A non-blocking `sendmsg` of `bytes` that asks a TX timestamp for them (an
/// `SO_TIMESTAMPING` control message with [`tx_record_flags`]`(hw)`); the socket reports
/// it as [`enable_tx_timestamps_on_request`] set up. On a TCP socket the stamp's key is the
/// stream offset of the last byte sent. Returns the bytes the kernel took (0: its buffer was
/// full), as [`crate::socket::send_nb`].
pub fn send_with_tx_stamp(fd: RawFd, bytes: &[u8], hw: bool) -> io::Result<usize> {
    #[repr(C, align(8))]
    struct Ctrl([u8; 24]);
    let mut ctrl = Ctrl([0; 24]);
    // SAFETY: CMSG_SPACE/CMSG_LEN are pure arithmetic.
    let (space, len) = unsafe {
        (
            libc::CMSG_SPACE(size_of::<u32>() as u32) as usize,
            libc::CMSG_LEN(size_of::<u32>() as u32) as usize,
        )
    };
    debug_assert!(space <= ctrl.0.len());
    let hdr = libc::cmsghdr {
        cmsg_len: len as _,
        cmsg_level: libc::SOL_SOCKET,
        cmsg_type: libc::SO_TIMESTAMPING,
    };
    // SAFETY: the header and the u32 after it end at `len <= space <= 24` bytes: inside
    // `ctrl`, which is 8-aligned; unaligned writes regardless.
    unsafe {
        let p = ctrl.0.as_mut_ptr();
        std::ptr::write_unaligned(p.cast::<libc::cmsghdr>(), hdr);
        std::ptr::write_unaligned(
            p.add(size_of::<libc::cmsghdr>()).cast::<u32>(),
            tx_record_flags(hw),
        );
    }
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    // SAFETY: all-zero is a valid msghdr.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = ctrl.0.as_mut_ptr().cast();
    msg.msg_controllen = space;
    // SAFETY: `msg` points at `iov` (over `bytes`, only read) and `ctrl`, both live for the
    // call.
    let n = unsafe { libc::sendmsg(fd, &raw const msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
    crate::socket::sent_or_would_block(n)
}

/// The stamps of one `scm_timestamping` control message: `ts[0]` the kernel's software stamp,
/// `ts[2]` the NIC's raw hardware stamp (its PHC clock), each absent when zero.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stamps {
    /// Software, CLOCK_REALTIME ns.
    pub sw: Option<u64>,
    /// Hardware, the NIC's clock, ns.
    pub hw: Option<u64>,
}

impl Stamps {
    /// From the data of an SO_TIMESTAMPING control message (three `timespec`s); a short
    /// one gives what it holds.
    pub fn parse(data: &[u8]) -> Self {
        let at = |i: usize| -> Option<u64> {
            let size = size_of::<libc::timespec>();
            let bytes = data.get(i * size..(i + 1) * size)?;
            // SAFETY: `bytes` holds exactly one timespec written by the kernel (or a test);
            // read_unaligned copes with the control buffer's alignment.
            let ts: libc::timespec = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
            let ns = timespec_ns(&ts);
            (ns != 0).then_some(ns)
        };
        Self {
            sw: at(0),
            hw: at(2),
        }
    }
}

#[repr(C, align(8))]
struct CmsgBuf([u8; 256]);

/// `recvmsg` into `buf`; returns the byte count (0 = EOF) and the receive stamps that came
/// with the data (software; hardware when switched on).
pub fn recv_timestamped(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, Stamps)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut control = CmsgBuf([0; 256]);
    // SAFETY: all-zero is a valid msghdr.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.0.as_mut_ptr().cast();
    msg.msg_controllen = control.0.len();
    // SAFETY: msg points at `iov` (over `buf`) and `control`, both live and writable for the
    // whole call.
    let n = crate::syscall!(unsafe { libc::recvmsg(fd, &raw mut msg, libc::MSG_DONTWAIT) })?;
    let mut ts = Stamps::default();
    for_each_cmsg(&msg, |level, ty, data| {
        if level == libc::SOL_SOCKET && ty == libc::SO_TIMESTAMPING {
            ts = Stamps::parse(data);
        }
    });
    Ok((usize::try_from(n).unwrap_or(0), ts))
}

/// Calls `f(level, type, data)` for every control message of a `msghdr` that a successful
/// `recvmsg` filled.
pub fn for_each_cmsg(msg: &libc::msghdr, mut f: impl FnMut(i32, i32, &[u8])) {
    // SAFETY: `msg` was filled by a successful recvmsg; CMSG_FIRSTHDR/NXTHDR stay within
    // msg_control/msg_controllen and return null at the end.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(msg) };
    while !cmsg.is_null() {
        // SAFETY: non-null cmsg returned by the CMSG macros points inside the control buffer.
        let hdr = unsafe { &*cmsg };
        // SAFETY: CMSG_LEN(0) is the header size; pure arithmetic.
        let header = unsafe { libc::CMSG_LEN(0) } as usize;
        let len = hdr.cmsg_len.saturating_sub(header);
        // SAFETY: CMSG_DATA points right after the header; the kernel guarantees cmsg_len
        // bytes of this message lie inside the control buffer.
        let data = unsafe { std::slice::from_raw_parts(libc::CMSG_DATA(cmsg), len) };
        f(hdr.cmsg_level, hdr.cmsg_type, data);
        // SAFETY: as above.
        cmsg = unsafe { libc::CMSG_NXTHDR(msg, cmsg) };
    }
}

const SO_EE_ORIGIN_ZEROCOPY: u8 = 5;
const SO_EE_CODE_ZEROCOPY_COPIED: u8 = 1;

/// `PACKET_TX_TIMESTAMP` (linux/if_packet.h): an AF_PACKET socket's error-queue message.
const PACKET_TX_TIMESTAMP: i32 = 16;

/// The `sock_extended_err` of an IP_RECVERR/IPV6_RECVERR (or, on an AF_PACKET socket,
/// PACKET_TX_TIMESTAMP) control message, if `data` is one.
fn extended_err(level: i32, ty: i32, data: &[u8]) -> Option<libc::sock_extended_err> {
    let is_err = (level == libc::SOL_IP && ty == libc::IP_RECVERR)
        || (level == libc::SOL_IPV6 && ty == libc::IPV6_RECVERR)
        || (level == libc::SOL_PACKET && ty == PACKET_TX_TIMESTAMP);
    if !is_err || data.len() < size_of::<libc::sock_extended_err>() {
        return None;
    }
    // SAFETY: the kernel wrote a sock_extended_err here (length checked); read_unaligned
    // copes with the cmsg data alignment.
    Some(unsafe { std::ptr::read_unaligned(data.as_ptr().cast()) })
}

/// One MSG_ZEROCOPY completion from the error queue: `(first id, last id, copied)`, or
/// `None` when the queue is empty.
pub fn read_zerocopy_completion(fd: RawFd) -> Option<(u32, u32, bool)> {
    let mut control = CmsgBuf([0; 256]);
    // SAFETY: all-zero is a valid msghdr.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_control = control.0.as_mut_ptr().cast();
    msg.msg_controllen = control.0.len();
    // SAFETY: msg points at `control`, live and writable for the call; no data is read.
    let rc = unsafe { libc::recvmsg(fd, &raw mut msg, libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT) };
    if rc < 0 {
        return None;
    }
    let mut found = None;
    for_each_cmsg(&msg, |level, ty, data| {
        if let Some(ee) = extended_err(level, ty, data) {
            if ee.ee_origin == SO_EE_ORIGIN_ZEROCOPY {
                found = Some((
                    ee.ee_info,
                    ee.ee_data,
                    ee.ee_code & SO_EE_CODE_ZEROCOPY_COPIED != 0,
                ));
            }
        }
    });
    found
}

/// Most TX timestamps [`read_tx_timestamps`] takes in one call.
pub const TS_BATCH: usize = 32;

/// Reads up to [`TS_BATCH`] queued TX timestamps in one `recvmmsg(MSG_ERRQUEUE)`, writing
/// `(key, stamps)` into `out` (a message without a key or without any stamp, which the
/// caller skips, is written as `(u32::MAX, Stamps::default())`); returns how many were read
/// (0: the queue is empty). With hardware stamps on, one packet's software and hardware
/// stamps come as two messages with the same key.
pub fn read_tx_timestamps(fd: RawFd, out: &mut [(u32, Stamps); TS_BATCH]) -> io::Result<usize> {
    let mut control = [const { CmsgBuf([0; 256]) }; TS_BATCH];
    // SAFETY: an all-zero mmsghdr is a valid "no buffers" header.
    let mut msgs: [libc::mmsghdr; TS_BATCH] = unsafe { std::mem::zeroed() };
    for (m, c) in msgs.iter_mut().zip(control.iter_mut()) {
        m.msg_hdr.msg_control = c.0.as_mut_ptr().cast();
        m.msg_hdr.msg_controllen = c.0.len();
    }
    // SAFETY: `msgs` holds TS_BATCH headers, each pointing at its own 256-byte control
    // buffer that outlives the call; no data buffers (iovlen 0).
    let n = unsafe { crate::mmsg::recvmmsg_nb(fd, &mut msgs, libc::MSG_ERRQUEUE) }?;
    for (m, slot) in msgs[..n].iter().zip(out.iter_mut()) {
        let (mut ts, mut key) = (Stamps::default(), None);
        for_each_cmsg(&m.msg_hdr, |level, ty, data| {
            if level == libc::SOL_SOCKET && ty == libc::SO_TIMESTAMPING {
                ts = Stamps::parse(data);
            } else if let Some(ee) = extended_err(level, ty, data) {
                if ee.ee_origin == SO_EE_ORIGIN_TIMESTAMPING {
                    key = Some(ee.ee_data);
                }
            }
        });
        *slot = match key {
            Some(k) if ts != Stamps::default() => (k, ts),
            _ => (u32::MAX, Stamps::default()),
        };
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A recorded `scm_timestamping`: three timespecs as the kernel writes them.
    fn scm(sw: (i64, i64), hw: (i64, i64)) -> Vec<u8> {
        let mut v = Vec::new();
        for (sec, nsec) in [sw, (0, 0), hw] {
            v.extend_from_slice(&sec.to_ne_bytes());
            v.extend_from_slice(&nsec.to_ne_bytes());
        }
        v
    }

    #[test]
    fn software_and_hardware_stamps_parse_from_recorded_control_messages() {
        let both = Stamps::parse(&scm((1_700_000_000, 5), (42, 7)));
        assert_eq!(both.sw, Some(1_700_000_000_000_000_005));
        assert_eq!(both.hw, Some(42_000_000_007));
        // A software-only interface (veth): ts[2] is zero.
        let sw_only = Stamps::parse(&scm((3, 0), (0, 0)));
        assert_eq!((sw_only.sw, sw_only.hw), (Some(3_000_000_000), None));
        // The NIC's stamp alone (a driver's completion message).
        let hw_only = Stamps::parse(&scm((0, 0), (9, 1)));
        assert_eq!((hw_only.sw, hw_only.hw), (None, Some(9_000_000_001)));
        // Short or empty data: what it holds, no panic.
        assert_eq!(Stamps::parse(&[]), Stamps::default());
        assert_eq!(Stamps::parse(&scm((1, 0), (2, 0))[..20]).hw, None);
    }
}
