//! The socket error queue and its control messages, walked in one place: kernel software
//! timestamps (SO_TIMESTAMPING, on receive and from the transmit error queue) and
//! MSG_ZEROCOPY completions.

use std::io;
use std::mem::size_of;
use std::os::fd::RawFd;

use crate::clock::timespec_ns;

/// `SOF_TIMESTAMPING_*` flags (linux/net_tstamp.h).
mod flags {
    pub const TX_SOFTWARE: u32 = 1 << 1;
    pub const RX_SOFTWARE: u32 = 1 << 3;
    pub const SOFTWARE: u32 = 1 << 4;
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

/// Kernel software RX timestamps on `fd` (read with [`recv_timestamped`]).
pub fn enable_rx_timestamps(fd: RawFd) -> io::Result<()> {
    set_timestamping(fd, flags::RX_SOFTWARE | flags::SOFTWARE)
}

/// Kernel software TX timestamps on `fd`, each tagged with a per-socket counter that starts
/// at 0 and counts datagrams sent (read with [`read_tx_timestamps`]).
pub fn enable_tx_timestamps(fd: RawFd) -> io::Result<()> {
    set_timestamping(
        fd,
        flags::TX_SOFTWARE | flags::SOFTWARE | flags::OPT_ID | flags::OPT_TSONLY,
    )
}

/// Kernel software TX timestamps on `fd` only for the messages that ask for one, each with
/// the key the message gave (sent with [`crate::mmsg::send_batch`]; read with
/// [`read_tx_timestamps`]). Fails on kernels before 6.13 (no `SCM_TS_OPT_ID`) only when a
/// message asks: callers probe with [`crate::mmsg::send_batch`] once.
pub fn enable_tx_timestamps_on_request(fd: RawFd) -> io::Result<()> {
    set_timestamping(fd, flags::SOFTWARE | flags::OPT_ID | flags::OPT_TSONLY)
}

#[repr(C, align(8))]
struct CmsgBuf([u8; 256]);

/// `recvmsg` into `buf`; returns the byte count (0 = EOF) and the kernel's software receive
/// timestamp (CLOCK_REALTIME ns) when one came with the data.
pub fn recv_timestamped(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, Option<u64>)> {
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
    let mut ts = None;
    for_each_cmsg(&msg, |level, ty, data| {
        if level == libc::SOL_SOCKET && ty == libc::SO_TIMESTAMPING {
            ts = first_timespec(data);
        }
    });
    Ok((usize::try_from(n).unwrap_or(0), ts))
}

/// `struct scm_timestamping { struct timespec ts[3]; }`: ts[0] is the software stamp.
fn first_timespec(data: &[u8]) -> Option<u64> {
    if data.len() < size_of::<libc::timespec>() {
        return None;
    }
    // SAFETY: length checked; the kernel wrote a timespec array here; unaligned read.
    let ts: libc::timespec = unsafe { std::ptr::read_unaligned(data.as_ptr().cast()) };
    let ns = timespec_ns(&ts);
    (ns != 0).then_some(ns)
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
/// `(counter, CLOCK_REALTIME ns)` into `out` (a message without both, which the caller
/// skips, is written as `(u32::MAX, 0)`); returns how many were read (0: the queue is
/// empty).
pub fn read_tx_timestamps(fd: RawFd, out: &mut [(u32, u64); TS_BATCH]) -> io::Result<usize> {
    let mut control = [const { CmsgBuf([0; 256]) }; TS_BATCH];
    // SAFETY: an all-zero mmsghdr is a valid "no buffers" header.
    let mut msgs: [libc::mmsghdr; TS_BATCH] = unsafe { std::mem::zeroed() };
    for (m, c) in msgs.iter_mut().zip(control.iter_mut()) {
        m.msg_hdr.msg_control = c.0.as_mut_ptr().cast();
        m.msg_hdr.msg_controllen = c.0.len();
    }
    // SAFETY: `msgs` holds TS_BATCH headers, each pointing at its own 256-byte control
    // buffer that outlives the call; no data buffers (iovlen 0); a null timeout.
    let rc = unsafe {
        libc::recvmmsg(
            fd,
            msgs.as_mut_ptr(),
            TS_BATCH as libc::c_uint,
            libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    if rc == -1 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::WouldBlock {
            Ok(0)
        } else {
            Err(e)
        };
    }
    let n = usize::try_from(rc).unwrap_or(0).min(TS_BATCH);
    for (m, slot) in msgs[..n].iter().zip(out.iter_mut()) {
        let (mut ts, mut key) = (None, None);
        for_each_cmsg(&m.msg_hdr, |level, ty, data| {
            if level == libc::SOL_SOCKET && ty == libc::SO_TIMESTAMPING {
                ts = first_timespec(data);
            } else if let Some(ee) = extended_err(level, ty, data) {
                if ee.ee_origin == SO_EE_ORIGIN_TIMESTAMPING {
                    key = Some(ee.ee_data);
                }
            }
        });
        *slot = match (key, ts) {
            (Some(k), Some(t)) => (k, t),
            _ => (u32::MAX, 0),
        };
    }
    Ok(n)
}
