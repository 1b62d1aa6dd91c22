//! Interfaces of the caller's network namespace: IPv4 address and prefix, MAC, MTU, carrier.
//! getifaddrs (through nix's safe iterator) and one ioctl; both see the caller's namespace,
//! unlike sysfs, which shows the namespace it was mounted in.

use std::io;
use std::net::Ipv4Addr;

/// What the raw-ring paths need to know of their interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IfaceInfo {
    /// Hardware address.
    pub mac: [u8; 6],
    /// MTU (bytes of IP packet).
    pub mtu: usize,
    /// First IPv4 address.
    pub ip: Ipv4Addr,
    /// Its prefix length.
    pub prefix: u8,
}

fn not_found(name: &str, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("interface `{name}`: {what} (does it exist in this network namespace?)"),
    )
}

/// The first IPv4 address of `name` and its prefix length.
pub fn iface_ipv4_prefix(name: &str) -> io::Result<(Ipv4Addr, u8)> {
    for ifa in nix::ifaddrs::getifaddrs().map_err(io::Error::from)? {
        if ifa.interface_name != name {
            continue;
        }
        if let Some(sin) = ifa.address.as_ref().and_then(|a| a.as_sockaddr_in()) {
            let prefix = ifa
                .netmask
                .as_ref()
                .and_then(|m| m.as_sockaddr_in())
                .map_or(32, |m| u32::from(m.ip()).count_ones() as u8);
            return Ok((sin.ip(), prefix));
        }
    }
    Err(not_found(name, "no IPv4 address"))
}

/// The first IPv4 address of `name`.
pub fn iface_ipv4(name: &str) -> io::Result<Ipv4Addr> {
    iface_ipv4_prefix(name).map(|(ip, _)| ip)
}

/// The hardware address of `name`.
pub fn iface_mac(name: &str) -> io::Result<[u8; 6]> {
    for ifa in nix::ifaddrs::getifaddrs().map_err(io::Error::from)? {
        if ifa.interface_name != name {
            continue;
        }
        if let Some(mac) = ifa
            .address
            .as_ref()
            .and_then(|a| a.as_link_addr())
            .and_then(|l| l.addr())
        {
            return Ok(mac);
        }
    }
    Err(not_found(name, "no hardware address"))
}

/// Does `name` have its carrier (`IFF_RUNNING`: the link is up and the driver ready)?
pub fn iface_running(name: &str) -> io::Result<bool> {
    for ifa in nix::ifaddrs::getifaddrs().map_err(io::Error::from)? {
        if ifa.interface_name == name {
            return Ok(ifa
                .flags
                .contains(nix::net::if_::InterfaceFlags::IFF_RUNNING));
        }
    }
    Err(not_found(name, "not listed"))
}

/// Waits up to `limit` for `name`'s carrier ([`iface_running`]), polling every 10 ms;
/// returns how long it waited, or None when the carrier did not come. Some drivers reset
/// their link when an XDP program is attached (igb: `igb_close`/`igb_open`), and a frame
/// sent before the link is back is lost.
pub fn wait_running(
    name: &str,
    limit: std::time::Duration,
) -> io::Result<Option<std::time::Duration>> {
    let t0 = std::time::Instant::now();
    loop {
        if iface_running(name)? {
            return Ok(Some(t0.elapsed()));
        }
        if t0.elapsed() >= limit {
            return Ok(None);
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// MAC, MTU, IPv4 address and prefix of `name`.
pub fn iface_info(name: &str) -> io::Result<IfaceInfo> {
    let (ip, prefix) = iface_ipv4_prefix(name)?;
    Ok(IfaceInfo {
        mac: iface_mac(name)?,
        mtu: iface_mtu(name)?,
        ip,
        prefix,
    })
}

/// The MTU of interface `name` (SIOCGIFMTU).
pub fn iface_mtu(name: &str) -> io::Result<usize> {
    let sock = std::net::UdpSocket::bind("0.0.0.0:0")?;
    // SAFETY: all-zero is a valid ifreq.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    let bytes = name.as_bytes();
    if bytes.len() >= req.ifr_name.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "interface name too long",
        ));
    }
    for (d, s) in req.ifr_name.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    // SAFETY: SIOCGIFMTU reads ifr_name and writes ifr_mtu of the valid ifreq we pass.
    crate::syscall!(unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(&sock),
            libc::SIOCGIFMTU,
            &mut req,
        )
    })?;
    // SAFETY: the kernel filled the ifr_mtu member of the union.
    let mtu = unsafe { req.ifr_ifru.ifru_mtu };
    Ok(usize::try_from(mtu).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_found_and_unknown_names_are_clear_errors() {
        let (ip, prefix) = iface_ipv4_prefix("lo").expect("lo");
        assert_eq!(ip, Ipv4Addr::LOCALHOST);
        assert_eq!(prefix, 8);
        assert!(iface_mtu("lo").expect("mtu") >= 1500);
        let e = iface_ipv4("no-such-if0").expect_err("missing");
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(e.to_string().contains("no-such-if0"));
        assert!(iface_mtu("x".repeat(40).as_str()).is_err());
    }

    #[test]
    fn loopback_has_its_carrier_and_unknown_names_are_clear_errors() {
        assert!(iface_running("lo").expect("lo"));
        let waited = wait_running("lo", std::time::Duration::ZERO).expect("lo");
        assert!(waited.is_some(), "a running link is not waited for");
        let e = iface_running("no-such-if0").expect_err("missing");
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(wait_running("no-such-if0", std::time::Duration::ZERO).is_err());
    }
}
