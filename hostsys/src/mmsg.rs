//! Batched sends (`sendmmsg`) with a kernel TX timestamp asked for per message.
//!
//! A socket set up with [`crate::errqueue::enable_tx_timestamps_on_request`] stamps nothing
//! by itself; a message sent with a stamp key carries two control messages, SO_TIMESTAMPING
//! with `SOF_TIMESTAMPING_TX_SOFTWARE` (stamp this one) and `SCM_TS_OPT_ID` (the key the
//! stamp comes back with, Linux 6.13 and later), so a publisher pays for the stamps it reads
//! and nothing else, and a stamp can never be tied to the wrong packet. Two destinations:
//! an IPv4 address for a UDP socket, or an interface for an AF_PACKET socket sending whole
//! Ethernet frames ([`Dest::Link`], with PACKET_QDISC_BYPASS: [`open_packet_tx`]).

use std::io;
use std::mem::size_of;
use std::net::SocketAddrV4;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// Most messages [`send_batch`] sends in one call.
pub const BATCH: usize = 64;
/// `SCM_TS_OPT_ID` (asm-generic/socket.h): the stamp's key for this message.
const SCM_TS_OPT_ID: i32 = 81;
/// Two `u32` control messages.
const CTRL_LEN: usize = 48;

/// Where a batch goes.
#[derive(Debug, Clone, Copy)]
pub enum Dest {
    /// A UDP socket's datagrams to this address.
    Ip(SocketAddrV4),
    /// An AF_PACKET socket's frames (Ethernet header included) out of this interface.
    Link {
        /// The interface.
        ifindex: i32,
    },
}

#[repr(C, align(8))]
#[derive(Clone, Copy)]
struct Ctrl([u8; CTRL_LEN]);

/// Writes the two control messages asking for a stamp (`record`: the
/// `SOF_TIMESTAMPING_TX_*` flags) with `key`; returns their length.
fn stamp_ctrl(buf: &mut Ctrl, key: u32, record: u32) -> usize {
    // SAFETY: CMSG_SPACE/CMSG_LEN are pure arithmetic.
    let (space, len) = unsafe {
        (
            libc::CMSG_SPACE(size_of::<u32>() as u32) as usize,
            libc::CMSG_LEN(size_of::<u32>() as u32) as usize,
        )
    };
    debug_assert!(2 * space <= CTRL_LEN);
    for (i, (level, ty, value)) in [
        (libc::SOL_SOCKET, libc::SO_TIMESTAMPING, record),
        (libc::SOL_SOCKET, SCM_TS_OPT_ID, key),
    ]
    .into_iter()
    .enumerate()
    {
        let hdr = libc::cmsghdr {
            cmsg_len: len as _,
            cmsg_level: level,
            cmsg_type: ty,
        };
        let at = i * space;
        // SAFETY: `at + len <= 2 * space <= CTRL_LEN`: both writes stay inside `buf`, which
        // is 8-aligned, as is `at` (a multiple of CMSG_SPACE); unaligned writes regardless.
        unsafe {
            let p = buf.0.as_mut_ptr().add(at);
            std::ptr::write_unaligned(p.cast::<libc::cmsghdr>(), hdr);
            std::ptr::write_unaligned(p.add(size_of::<libc::cmsghdr>()).cast::<u32>(), value);
        }
    }
    2 * space
}

/// Sends `pkts` (at most [`BATCH`]) to `dest` in one non-blocking `sendmmsg`, in order;
/// `keys[i]`, when given, asks a TX timestamp for `pkts[i]` coming back with that key (the
/// software one, and the NIC's when `hw`).
/// Returns how many the kernel took (the rest are the caller's to retry, in order); `Ok(0)`
/// when it took none because its buffer was full (EAGAIN, ENOBUFS).
pub fn send_batch(
    fd: RawFd,
    dest: Dest,
    pkts: &[&[u8]],
    keys: &[Option<u32>],
    hw: bool,
) -> io::Result<usize> {
    let record = crate::errqueue::tx_record_flags(hw);
    let n = pkts.len().min(BATCH);
    let ip;
    let link;
    let (name, name_len): (*const libc::c_void, usize) = match dest {
        Dest::Ip(a) => {
            ip = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*a.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            ((&raw const ip).cast(), size_of::<libc::sockaddr_in>())
        }
        Dest::Link { ifindex } => {
            // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
            let mut a: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            a.sll_family = libc::AF_PACKET as u16;
            a.sll_ifindex = ifindex;
            link = a;
            ((&raw const link).cast(), size_of::<libc::sockaddr_ll>())
        }
    };
    let mut iov = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; BATCH];
    let mut ctrl = [Ctrl([0; CTRL_LEN]); BATCH];
    // SAFETY: an all-zero mmsghdr is a valid empty header.
    let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    for (i, p) in pkts[..n].iter().enumerate() {
        // The kernel only reads through iov_base for a send.
        iov[i].iov_base = p.as_ptr().cast_mut().cast();
        iov[i].iov_len = p.len();
        let m = &mut msgs[i].msg_hdr;
        m.msg_iov = &raw mut iov[i];
        m.msg_iovlen = 1;
        m.msg_name = name.cast_mut();
        m.msg_namelen = name_len as libc::socklen_t;
        if let Some(&Some(key)) = keys.get(i) {
            m.msg_controllen = stamp_ctrl(&mut ctrl[i], key, record);
            m.msg_control = ctrl[i].0.as_mut_ptr().cast();
        }
    }
    // SAFETY: the first `n` headers each point at one iovec over a live packet slice, at the
    // address (`ip` or `link`, alive until the end of this function) and at most at their
    // own control buffer; all outlive the call, which reads them only.
    let rc =
        unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), n as libc::c_uint, libc::MSG_DONTWAIT) };
    if rc == -1 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::WouldBlock || e.raw_os_error() == Some(libc::ENOBUFS) {
            Ok(0)
        } else {
            Err(e)
        };
    }
    Ok(usize::try_from(rc).unwrap_or(0))
}

/// Most datagrams [`recv_batch`] reads in one call.
pub const RX_BATCH: usize = 32;

/// Reads up to [`RX_BATCH`] datagrams in one non-blocking `recvmmsg`, the `i`th into
/// `buf[i * slot..(i + 1) * slot]` (as many as fit `buf`), its length into `lens[i]`;
/// returns how many came (0: none waiting). A datagram longer than `slot` is cut to it
/// (its tail lost, as `recv` into a short buffer would).
pub fn recv_batch(
    fd: RawFd,
    buf: &mut [u8],
    slot: usize,
    lens: &mut [usize; RX_BATCH],
) -> io::Result<usize> {
    let slot = slot.max(1);
    let n = (buf.len() / slot).min(RX_BATCH);
    let mut iov = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; RX_BATCH];
    // SAFETY: an all-zero mmsghdr is a valid empty header.
    let mut msgs: [libc::mmsghdr; RX_BATCH] = unsafe { std::mem::zeroed() };
    for (i, chunk) in buf.chunks_exact_mut(slot).take(n).enumerate() {
        iov[i].iov_base = chunk.as_mut_ptr().cast();
        iov[i].iov_len = slot;
        msgs[i].msg_hdr.msg_iov = &raw mut iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: the first `n` headers each point at one iovec over a disjoint `slot`-byte
    // chunk of `buf`, all live and writable for the call; no names, no control.
    let got = unsafe { recvmmsg_nb(fd, &mut msgs[..n], 0) }?;
    for (l, m) in lens.iter_mut().zip(&msgs[..got]) {
        *l = (m.msg_len as usize).min(slot);
    }
    Ok(got)
}

/// One non-blocking `recvmmsg` into `msgs` (with `flags` beside MSG_DONTWAIT); returns
/// how many messages came, 0 when none was waiting.
///
/// # Safety
///
/// Every header of `msgs` must point only at buffers (iovecs, name, control) that are live
/// and writable for the call.
pub(crate) unsafe fn recvmmsg_nb(
    fd: RawFd,
    msgs: &mut [libc::mmsghdr],
    flags: i32,
) -> io::Result<usize> {
    // SAFETY: the caller's promise; `msgs.len()` headers, a null timeout.
    let rc = unsafe {
        libc::recvmmsg(
            fd,
            msgs.as_mut_ptr(),
            msgs.len() as libc::c_uint,
            flags | libc::MSG_DONTWAIT,
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
    Ok(usize::try_from(rc).unwrap_or(0).min(msgs.len()))
}

/// An AF_PACKET socket that sends whole frames out of `ifindex` and receives nothing
/// (protocol 0), with PACKET_QDISC_BYPASS (frames go straight to the driver, as a
/// kernel-bypass sender's do); non-blocking.
pub fn open_packet_tx(ifindex: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); protocol 0: this socket receives nothing.
    let fd = crate::syscall!(unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    })?;
    // SAFETY: `fd` was just returned by socket(2) and is owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
    crate::socket::setsockopt(raw, libc::SOL_PACKET, libc::PACKET_QDISC_BYPASS, &1i32)?;
    // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
    let mut a: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    a.sll_family = libc::AF_PACKET as u16;
    a.sll_ifindex = ifindex;
    // SAFETY: `a` is a valid sockaddr_ll for the length given, alive for the call.
    crate::syscall!(unsafe {
        libc::bind(
            raw,
            (&raw const a).cast(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    })?;
    Ok(fd)
}

/// The index of interface `name`.
pub fn ifindex(name: &str) -> io::Result<i32> {
    let c = std::ffi::CString::new(name).map_err(io::Error::other)?;
    // SAFETY: `c` is a valid NUL-terminated string for the call.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        return Err(io::Error::last_os_error());
    }
    i32::try_from(i).map_err(io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOF_TIMESTAMPING_TX_SOFTWARE: u32 = 1 << 1;

    #[test]
    fn recv_batch_reads_every_waiting_datagram_in_order_and_cuts_long_ones() {
        use std::os::fd::AsRawFd;
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let to = rx.local_addr().expect("addr");
        for i in 0..40u8 {
            let len = if i == 3 { 100 } else { 1 + usize::from(i % 5) };
            tx.send_to(&vec![i; len], to).expect("send");
        }
        let mut buf = [0u8; 64 * RX_BATCH];
        let mut lens = [0usize; RX_BATCH];
        let first = recv_batch(rx.as_raw_fd(), &mut buf, 64, &mut lens).expect("recv");
        assert_eq!(first, RX_BATCH, "a full batch waits");
        for i in 0..first {
            let want = if i == 3 { 64 } else { 1 + i % 5 };
            assert_eq!(lens[i], want, "datagram {i}: cut to its slot");
            assert!(buf[i * 64..i * 64 + lens[i]].iter().all(|&b| b == i as u8));
        }
        let rest = recv_batch(rx.as_raw_fd(), &mut buf, 64, &mut lens).expect("recv");
        assert_eq!(rest, 8);
        assert_eq!(buf[0], 32, "in order across calls");
        assert_eq!(
            recv_batch(rx.as_raw_fd(), &mut buf, 64, &mut lens).expect("recv"),
            0
        );
    }

    #[test]
    fn stamp_control_messages_walk_back() {
        let mut c = Ctrl([0; CTRL_LEN]);
        let len = stamp_ctrl(&mut c, 0xdead_beef, SOF_TIMESTAMPING_TX_SOFTWARE);
        // SAFETY: all-zero is a valid msghdr.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_control = c.0.as_mut_ptr().cast();
        msg.msg_controllen = len;
        let mut seen = Vec::new();
        crate::errqueue::for_each_cmsg(&msg, |level, ty, data| {
            let v = u32::from_ne_bytes(data[..4].try_into().expect("4 bytes"));
            seen.push((level, ty, v));
        });
        assert_eq!(
            seen,
            [
                (
                    libc::SOL_SOCKET,
                    libc::SO_TIMESTAMPING,
                    SOF_TIMESTAMPING_TX_SOFTWARE
                ),
                (libc::SOL_SOCKET, SCM_TS_OPT_ID, 0xdead_beef)
            ]
        );
    }
}
