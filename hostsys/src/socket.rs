//! Socket calls std and socket2 do not offer in the form the hot paths need: non-blocking
//! `send`/`recv` that report "would block" as a value, any-typed `setsockopt`, and a
//! zero-timeout writability check for a non-blocking connect.

use std::io;
use std::os::fd::RawFd;

/// Sets a socket option of any plain type.
pub fn setsockopt<T: Copy>(fd: RawFd, level: i32, name: i32, value: &T) -> io::Result<()> {
    // SAFETY: `value` is a live value of the type the option expects (the caller names the
    // option); its size is passed and the kernel only reads it.
    crate::syscall!(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// Sets an integer socket option.
pub fn setsockopt_int(fd: RawFd, level: i32, name: i32, value: i32) -> io::Result<()> {
    setsockopt(fd, level, name, &value)
}

/// Reads an integer socket option.
pub fn getsockopt_int(fd: RawFd, level: i32, name: i32) -> io::Result<i32> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `v` and `len` are live locals; the kernel writes at most `len` bytes to `v`
    // and the actual length to `len`.
    crate::syscall!(unsafe {
        libc::getsockopt(
            fd,
            level,
            name,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    })?;
    Ok(v)
}

/// PACKET_STATISTICS of an AF_PACKET socket: `(packets, drops)` since the last read (the
/// kernel resets them on each read).
pub fn packet_statistics(fd: RawFd) -> io::Result<(u32, u32)> {
    let mut st = libc::tpacket_stats {
        tp_packets: 0,
        tp_drops: 0,
    };
    let mut len = std::mem::size_of::<libc::tpacket_stats>() as libc::socklen_t;
    // SAFETY: `st` and `len` are live locals; the kernel writes at most `len` bytes of
    // plain integers to `st` and the actual length to `len`.
    crate::syscall!(unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_PACKET,
            libc::PACKET_STATISTICS,
            (&mut st as *mut libc::tpacket_stats).cast(),
            &mut len,
        )
    })?;
    Ok((st.tp_packets, st.tp_drops))
}

/// Non-blocking `send(2)` of `bytes` with `flags | MSG_DONTWAIT | MSG_NOSIGNAL`: the bytes
/// the kernel took, 0 when its buffer is full (EAGAIN), or the error.
///
/// With `MSG_ZEROCOPY` in `flags` the kernel may read `bytes` after the call returns; see
/// [`send_zerocopy`].
#[inline]
pub fn send_nb(fd: RawFd, bytes: &[u8], flags: i32) -> io::Result<usize> {
    // SAFETY: `bytes` is valid for reads of its length for the call's duration.
    let n = unsafe {
        libc::send(
            fd,
            bytes.as_ptr().cast(),
            bytes.len(),
            (flags & !libc::MSG_ZEROCOPY) | libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    sent_or_would_block(n)
}

/// Non-blocking `send(2)` with `MSG_ZEROCOPY`: like [`send_nb`], but the kernel reads
/// `bytes` until it reports the send complete on the error queue
/// ([`crate::errqueue::read_zerocopy_completion`]).
///
/// # Safety
/// `bytes` must stay alive and unmodified until that completion has been read.
#[inline]
pub unsafe fn send_zerocopy(fd: RawFd, bytes: &[u8]) -> io::Result<usize> {
    // SAFETY: `bytes` is valid now; the caller keeps it valid until the completion.
    let n = unsafe {
        libc::send(
            fd,
            bytes.as_ptr().cast(),
            bytes.len(),
            libc::MSG_ZEROCOPY | libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    sent_or_would_block(n)
}

/// Bytes in a stream socket's receive queue, not read yet (SIOCINQ).
pub fn inq(fd: RawFd) -> io::Result<u32> {
    let mut n: libc::c_int = 0;
    // SAFETY: ioctl(SIOCINQ) writes one c_int into `n`, which lives across the call.
    crate::syscall!(unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) })?;
    Ok(u32::try_from(n).unwrap_or(0))
}

/// Non-blocking `recv(2)` into `buf`: `Some(n)` (0 = orderly shutdown of a stream), `None`
/// when nothing is queued (EAGAIN), or the error.
#[inline]
pub fn recv_nb(fd: RawFd, buf: &mut [u8], flags: i32) -> io::Result<Option<usize>> {
    // SAFETY: `buf` is valid for writes of its length for the call's duration.
    let n = unsafe {
        libc::recv(
            fd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            flags | libc::MSG_DONTWAIT,
        )
    };
    match sent_or_would_block(n) {
        Ok(0) if n < 0 => Ok(None),
        Ok(n) => Ok(Some(n)),
        Err(e) => Err(e),
    }
}

/// A zero-length, non-blocking `send(2)`: the kick that makes a packet socket's TX ring
/// go to the driver.
#[inline]
pub fn kick(fd: RawFd) -> io::Result<()> {
    // SAFETY: a zero-length send reads no buffer.
    let n = unsafe { libc::send(fd, std::ptr::null(), 0, libc::MSG_DONTWAIT) };
    sent_or_would_block(n).map(drop)
}

/// The result of a non-blocking `send`/`recv`: the byte count, 0 on EAGAIN, or the error.
#[inline]
pub(crate) fn sent_or_would_block(n: isize) -> io::Result<usize> {
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

/// Is `fd` writable now (a non-blocking connect finished)? Zero-timeout poll(2).
pub fn writable_now(fd: RawFd) -> io::Result<bool> {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout.
    let rc = crate::syscall!(unsafe { libc::poll(&mut p, 1, 0) })?;
    Ok(rc == 1 && p.revents & (libc::POLLOUT | libc::POLLERR | libc::POLLHUP) != 0)
}

/// A raw AF_PACKET socket that sends whole Ethernet frames out of one interface (tests
/// inject hostile frames with it; needs CAP_NET_RAW).
#[derive(Debug)]
pub struct FrameSender {
    fd: std::os::fd::OwnedFd,
    ifindex: i32,
}

impl FrameSender {
    /// Opens one on `iface`.
    pub fn open(iface: &str) -> io::Result<Self> {
        use std::os::fd::FromRawFd;
        let ifindex = crate::mmsg::ifindex(iface)?;
        // SAFETY: plain socket(2); protocol 0: this socket receives nothing.
        let fd = crate::syscall!(unsafe {
            libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0)
        })?;
        // SAFETY: `fd` was just returned by socket(2) and is owned by nothing else.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
        Ok(Self { fd, ifindex })
    }

    /// Sends `frame` (Ethernet header included) as it is; returns the bytes sent.
    pub fn send(&self, frame: &[u8]) -> io::Result<usize> {
        use std::os::fd::AsRawFd;
        // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = self.ifindex;
        addr.sll_halen = 6;
        if let Some(dst) = frame.get(..6) {
            addr.sll_addr[..6].copy_from_slice(dst);
        }
        // SAFETY: `frame` and `addr` are valid for the lengths given, for the call.
        let n = crate::syscall!(unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        })?;
        Ok(n as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn nonblocking_send_and_recv_report_would_block_as_values() {
        let a = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let b = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        a.connect(b.local_addr().expect("addr")).expect("connect");
        let mut buf = [0u8; 16];
        assert_eq!(recv_nb(b.as_raw_fd(), &mut buf, 0).expect("recv"), None);
        assert_eq!(send_nb(a.as_raw_fd(), b"hello", 0).expect("send"), 5);
        let mut got = None;
        for _ in 0..1000 {
            got = recv_nb(b.as_raw_fd(), &mut buf, 0).expect("recv");
            if got.is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(got, Some(5));
        assert_eq!(&buf[..5], b"hello");
        assert!(send_nb(-1, b"x", 0).is_err());
        assert!(writable_now(a.as_raw_fd()).expect("poll"));
    }
}
