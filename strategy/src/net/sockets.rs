//! The kernel sockets every path needs: the non-blocking order connection (kernel and
//! io_uring paths) and the market-data group join (kernel and io_uring receive on it; AF_XDP
//! holds it only so that the interface accepts the group's frames).

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};

/// Marks on the order connection's packets: IP_TOS (the users' notes name it: DSCP/ECN
/// bits a switch or the host's qdisc may act on) and SO_PRIORITY (the skb priority the
/// host's queueing disciplines and the NIC's traffic classes map to queues).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Marks {
    /// IP_TOS byte.
    pub tos: Option<u8>,
    /// SO_PRIORITY (0-6 without CAP_NET_ADMIN).
    pub priority: Option<u32>,
}

/// A non-blocking TCP socket connecting to `addr`, with TCP_NODELAY and `marks`.
pub fn start_tcp_connect(addr: SocketAddrV4, marks: Marks) -> io::Result<socket2::Socket> {
    use socket2::{Domain, Protocol, Socket, Type};
    use std::os::fd::AsRawFd;
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    s.set_nonblocking(true)?;
    s.set_nodelay(true)?;
    if let Some(tos) = marks.tos {
        s.set_tos(u32::from(tos))?;
    }
    if let Some(p) = marks.priority {
        let p = i32::try_from(p).map_err(|_| io::Error::other("SO_PRIORITY out of range"))?;
        hostsys::socket::setsockopt_int(s.as_raw_fd(), libc::SOL_SOCKET, libc::SO_PRIORITY, p)?;
    }
    match s.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(s)
}

/// Has the non-blocking connect of `s` completed? Error if it failed, or if no connect was
/// started (`None`).
pub fn tcp_connected(s: Option<&socket2::Socket>) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    let s =
        s.ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "no connect in progress"))?;
    if !hostsys::socket::writable_now(s.as_raw_fd())? {
        return Ok(false);
    }
    if let Some(e) = s.take_error()? {
        return Err(e);
    }
    s.peer_addr()?;
    Ok(true)
}

/// Busy polling on the market-data socket: SO_BUSY_POLL for this long, and optionally
/// SO_PREFER_BUSY_POLL (with SO_BUSY_POLL_BUDGET): the socket's polling is preferred over
/// the device's interrupts, which stay masked while it finds work (with the device's
/// `napi_defer_hard_irqs` and `gro_flush_timeout`; Linux >= 5.11).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BusyPoll {
    /// SO_BUSY_POLL, us (0 = off).
    pub us: u32,
    /// SO_PREFER_BUSY_POLL on, with this SO_BUSY_POLL_BUDGET (0 = off).
    pub prefer_budget: u32,
}

/// How the market-data socket joins and receives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MdJoin {
    /// Only this source's datagrams (IP_ADD_SOURCE_MEMBERSHIP: the kernel drops the
    /// others before the socket); `None`: any source (IP_ADD_MEMBERSHIP).
    pub source: Option<Ipv4Addr>,
    /// SO_RCVBUF in bytes; `None`: 8 MiB with SO_RCVBUFFORCE (root or CAP_NET_ADMIN),
    /// else as much as `net.core.rmem_max` allows.
    pub rcvbuf: Option<u32>,
    /// Busy polling.
    pub busy: BusyPoll,
}

/// A non-blocking UDP socket bound to the group's port and joined on `iface` as `how` says.
pub fn join_group(
    group: SocketAddrV4,
    iface: Option<Ipv4Addr>,
    how: MdJoin,
) -> io::Result<std::net::UdpSocket> {
    let busy = how.busy;
    let busy_poll_us = busy.us;
    use socket2::{Domain, Protocol, Socket, Type};
    use std::os::fd::AsRawFd;
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    match how.rcvbuf {
        Some(bytes) => s.set_recv_buffer_size(bytes as usize)?,
        None => {
            // A large receive buffer so a snapshot burst is not dropped; FORCE works as root.
            if hostsys::socket::setsockopt_int(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                8 << 20,
            )
            .is_err()
            {
                let _ = s.set_recv_buffer_size(8 << 20);
            }
        }
    }
    if busy_poll_us > 0 {
        hostsys::socket::setsockopt_int(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_BUSY_POLL,
            busy_poll_us as i32,
        )?;
    }
    if busy.prefer_budget > 0 {
        let fd = s.as_raw_fd();
        hostsys::socket::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PREFER_BUSY_POLL, 1)?;
        let budget = i32::try_from(busy.prefer_budget).unwrap_or(i32::MAX);
        hostsys::socket::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_BUSY_POLL_BUDGET, budget)?;
    }
    s.bind(&group.into())?;
    let ifaddr = iface.unwrap_or(Ipv4Addr::UNSPECIFIED);
    match how.source {
        Some(src) => s.join_ssm_v4(&src, group.ip(), &ifaddr)?,
        None => s.join_multicast_v4(group.ip(), &ifaddr)?,
    }
    Ok(s.into())
}

impl From<u32> for BusyPoll {
    fn from(us: u32) -> Self {
        Self {
            us,
            prefer_budget: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn marks_are_set_on_the_order_connection() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
        let std::net::SocketAddr::V4(addr) = l.local_addr().expect("addr") else {
            panic!("v4")
        };
        let s = start_tcp_connect(
            addr,
            Marks {
                tos: Some(0x10),
                priority: Some(5),
            },
        )
        .expect("connect");
        assert_eq!(s.tos().expect("IP_TOS"), 0x10);
        let p = hostsys::socket::getsockopt_int(s.as_raw_fd(), libc::SOL_SOCKET, libc::SO_PRIORITY);
        assert_eq!(p.expect("SO_PRIORITY"), 5);
    }

    #[test]
    fn prefer_busy_poll_is_set_on_the_market_data_socket() {
        let g = SocketAddrV4::new(Ipv4Addr::new(239, 255, 0, 77), 0);
        let s = join_group(
            g,
            Some(Ipv4Addr::LOCALHOST),
            MdJoin {
                busy: BusyPoll {
                    us: 50,
                    prefer_budget: 16,
                },
                ..MdJoin::default()
            },
        )
        .expect("join on loopback");
        let get = |name| hostsys::socket::getsockopt_int(s.as_raw_fd(), libc::SOL_SOCKET, name);
        assert_eq!(get(libc::SO_BUSY_POLL).expect("SO_BUSY_POLL"), 50);
        // (SO_BUSY_POLL_BUDGET can be set, not read back.)
        assert_eq!(
            get(libc::SO_PREFER_BUSY_POLL).expect("SO_PREFER_BUSY_POLL"),
            1
        );
    }
}
