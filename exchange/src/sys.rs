//! The few raw syscalls the exchange needs that std and socket2 do not wrap: software
//! timestamping (SO_TIMESTAMPING) on receive and from the transmit error queue.
//!
//! All `unsafe` of the crate lives here.

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

/// One place that turns `-1/errno` into `io::Result` (mio's `syscall!`).
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

fn set_timestamping(fd: RawFd, value: u32) -> io::Result<()> {
    // SAFETY: `value` outlives the call and its size is passed; the kernel only reads it.
    syscall!(unsafe {
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
/// at 0 and counts datagrams sent (read with [`read_tx_timestamp`]).
pub fn enable_tx_timestamps(fd: RawFd) -> io::Result<()> {
    set_timestamping(
        fd,
        flags::TX_SOFTWARE | flags::SOFTWARE | flags::OPT_ID | flags::OPT_TSONLY,
    )
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
    let n = syscall!(unsafe { libc::recvmsg(fd, &raw mut msg, libc::MSG_DONTWAIT) })?;
    let mut ts = None;
    for_each_cmsg(&msg, |level, ty, data| {
        if level == libc::SOL_SOCKET && ty == libc::SO_TIMESTAMPING {
            ts = first_timespec(data);
        }
    });
    Ok((usize::try_from(n).unwrap_or(0), ts))
}

/// Reads one TX timestamp from the error queue: `(counter, CLOCK_REALTIME ns)`, or `None`
/// when the queue is empty.
pub fn read_tx_timestamp(fd: RawFd) -> io::Result<Option<(u32, u64)>> {
    let mut control = CmsgBuf([0; 256]);
    // SAFETY: all-zero is a valid msghdr.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_control = control.0.as_mut_ptr().cast();
    msg.msg_controllen = control.0.len();
    // SAFETY: msg points at `control`, live and writable for the call; no iovec (OPT_TSONLY).
    let rc = unsafe { libc::recvmsg(fd, &raw mut msg, libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT) };
    if rc == -1 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::WouldBlock {
            Ok(None)
        } else {
            Err(e)
        };
    }
    let (mut ts, mut key) = (None, None);
    for_each_cmsg(&msg, |level, ty, data| {
        if level == libc::SOL_SOCKET && ty == libc::SO_TIMESTAMPING {
            ts = first_timespec(data);
        } else if ((level == libc::SOL_IP && ty == libc::IP_RECVERR)
            || (level == libc::SOL_IPV6 && ty == libc::IPV6_RECVERR))
            && data.len() >= size_of::<libc::sock_extended_err>()
        {
            // SAFETY: the kernel wrote a sock_extended_err here (length checked);
            // read_unaligned copes with the cmsg data alignment.
            let ee: libc::sock_extended_err =
                unsafe { std::ptr::read_unaligned(data.as_ptr().cast()) };
            if ee.ee_origin == SO_EE_ORIGIN_TIMESTAMPING {
                key = Some(ee.ee_data);
            }
        }
    });
    Ok(match (key, ts) {
        (Some(k), Some(t)) => Some((k, t)),
        // Something else on the error queue (an ICMP error): consumed, nothing to report.
        _ => Some((u32::MAX, 0)),
    })
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

fn for_each_cmsg(msg: &libc::msghdr, mut f: impl FnMut(i32, i32, &[u8])) {
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

/// Count of open file descriptors of this process (for soak tests and reports).
pub fn open_fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Resident set size of this process in KiB.
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// The first IPv4 address of interface `name`, from getifaddrs(3).
pub fn iface_ipv4(name: &str) -> io::Result<Option<std::net::Ipv4Addr>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head we free below with freeifaddrs.
    syscall!(unsafe { libc::getifaddrs(&raw mut head) })?;
    let mut found = None;
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, valid until freeifaddrs.
        let ifa = unsafe { &*cur };
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let ifname = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) };
        if ifname.to_bytes() == name.as_bytes() && !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_addr is non-null and points at a sockaddr owned by the list.
            let family = unsafe { (*ifa.ifa_addr).sa_family };
            if i32::from(family) == libc::AF_INET {
                // SAFETY: family AF_INET means the sockaddr is a sockaddr_in.
                let sin = unsafe { &*ifa.ifa_addr.cast::<libc::sockaddr_in>() };
                found = Some(std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)));
                break;
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(found)
}
