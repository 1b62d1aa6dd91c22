//! NIC hardware timestamps: what an interface offers (`ETHTOOL_GET_TS_INFO`, what
//! `ethtool -T` prints) and switching them on (`SIOCSHWTSTAMP`: every transmitted packet
//! that asks, every received one).
//!
//! [`switch_on`] is the one call a program makes: it answers with the PHC (the NIC's
//! clock) the stamps will come from, or with why there are none (a veth has software stamps
//! only; a driver without a PHC; no CAP_NET_ADMIN), in words for the report.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const SIOCETHTOOL: libc::c_ulong = 0x8946;
const SIOCSHWTSTAMP: libc::c_ulong = 0x89b0;
const ETHTOOL_GET_TS_INFO: u32 = 0x41;
const HWTSTAMP_TX_ON: i32 = 1;
const HWTSTAMP_FILTER_ALL: i32 = 1;
/// SOF_TIMESTAMPING_TX_HARDWARE | RX_HARDWARE | RAW_HARDWARE.
const HW_CAPS: u32 = (1 << 0) | (1 << 2) | (1 << 6);

/// `struct ethtool_ts_info`.
#[repr(C)]
#[derive(Default)]
struct EthtoolTsInfo {
    cmd: u32,
    so_timestamping: u32,
    phc_index: i32,
    tx_types: u32,
    tx_reserved: [u32; 3],
    rx_filters: u32,
    rx_reserved: [u32; 3],
}

/// `struct hwtstamp_config`.
#[repr(C)]
struct HwtstampConfig {
    flags: i32,
    tx_type: i32,
    rx_filter: i32,
}

/// `struct ifreq` with its union as the `ifr_data` pointer.
#[repr(C)]
struct Ifreq {
    name: [u8; libc::IFNAMSIZ],
    data: *mut libc::c_void,
    _pad: [u8; 16],
}

/// What an interface offers (`ethtool -T`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TsInfo {
    /// `SOF_TIMESTAMPING_*` capabilities.
    pub so_timestamping: u32,
    /// Its PHC (`/dev/ptpN`), -1 for none.
    pub phc_index: i32,
    /// Bit per `HWTSTAMP_TX_*` mode.
    pub tx_types: u32,
    /// Bit per `HWTSTAMP_FILTER_*` mode.
    pub rx_filters: u32,
}

impl TsInfo {
    /// Whether hardware stamps can stamp this lab's packets both ways; why not, in words.
    pub fn hardware(&self) -> Result<i32, String> {
        if self.so_timestamping & HW_CAPS != HW_CAPS {
            return Err("the driver offers software timestamps only".into());
        }
        if self.phc_index < 0 {
            return Err("the NIC has no PTP hardware clock".into());
        }
        if self.tx_types & (1 << HWTSTAMP_TX_ON) == 0 {
            return Err("the NIC cannot stamp transmitted packets".into());
        }
        if self.rx_filters & (1 << HWTSTAMP_FILTER_ALL) == 0 {
            return Err("the NIC cannot stamp every received packet".into());
        }
        Ok(self.phc_index)
    }
}

fn ifreq(iface: &str, data: *mut libc::c_void) -> io::Result<Ifreq> {
    let mut name = [0u8; libc::IFNAMSIZ];
    let b = iface.as_bytes();
    if b.is_empty() || b.len() >= name.len() || b.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("`{iface}`: not an interface name"),
        ));
    }
    name[..b.len()].copy_from_slice(b);
    Ok(Ifreq {
        name,
        data,
        _pad: [0; 16],
    })
}

fn ioctl_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2).
    let fd = crate::syscall!(unsafe {
        libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0)
    })?;
    // SAFETY: `fd` was just returned by socket(2) and is owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// What `iface` offers.
pub fn ts_info(iface: &str) -> io::Result<TsInfo> {
    let mut info = EthtoolTsInfo {
        cmd: ETHTOOL_GET_TS_INFO,
        ..EthtoolTsInfo::default()
    };
    let mut req = ifreq(iface, (&raw mut info).cast())?;
    let sock = ioctl_socket()?;
    // SAFETY: `req` names the interface and points at `info`, both live and writable for the
    // call; the kernel writes at most size_of::<EthtoolTsInfo>() bytes there.
    crate::syscall!(unsafe { libc::ioctl(sock.as_raw_fd(), SIOCETHTOOL, &raw mut req) })?;
    Ok(TsInfo {
        so_timestamping: info.so_timestamping,
        phc_index: info.phc_index,
        tx_types: info.tx_types,
        rx_filters: info.rx_filters,
    })
}

/// Stamps on `iface` for every transmitted packet that asks and every received one
/// (needs CAP_NET_ADMIN).
fn enable(iface: &str) -> io::Result<()> {
    let mut cfg = HwtstampConfig {
        flags: 0,
        tx_type: HWTSTAMP_TX_ON,
        rx_filter: HWTSTAMP_FILTER_ALL,
    };
    let mut req = ifreq(iface, (&raw mut cfg).cast())?;
    let sock = ioctl_socket()?;
    // SAFETY: `req` names the interface and points at `cfg`, both live and writable for the
    // call (the kernel writes back the mode it set).
    crate::syscall!(unsafe { libc::ioctl(sock.as_raw_fd(), SIOCSHWTSTAMP, &raw mut req) })?;
    Ok(())
}

/// Switches hardware stamps on for `iface` when it has them: `Ok(PHC index)`, or why not.
pub fn switch_on(iface: &str) -> Result<i32, String> {
    let info = ts_info(iface).map_err(|e| format!("{iface}: ETHTOOL_GET_TS_INFO: {e}"))?;
    let phc = info.hardware().map_err(|why| format!("{iface}: {why}"))?;
    enable(iface).map_err(|e| format!("{iface}: SIOCSHWTSTAMP: {e}"))?;
    Ok(phc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_an_interface_offers_reads_as_a_reason() {
        let nic = TsInfo {
            so_timestamping: HW_CAPS | (1 << 1) | (1 << 3) | (1 << 4),
            phc_index: 0,
            tx_types: (1 << 0) | (1 << HWTSTAMP_TX_ON),
            rx_filters: (1 << 0) | (1 << HWTSTAMP_FILTER_ALL),
        };
        assert_eq!(nic.hardware(), Ok(0));
        // What a veth reports: software stamps, no PHC.
        let veth = TsInfo {
            so_timestamping: (1 << 1) | (1 << 3) | (1 << 4),
            phc_index: -1,
            tx_types: 0,
            rx_filters: 0,
        };
        assert!(veth.hardware().expect_err("none").contains("software"));
        let no_phc = TsInfo {
            phc_index: -1,
            ..nic
        };
        assert!(no_phc.hardware().expect_err("none").contains("clock"));
        let ptp_only = TsInfo {
            rx_filters: 1 << 12,
            ..nic
        };
        assert!(ptp_only.hardware().expect_err("none").contains("every"));
        assert!(ifreq("", std::ptr::null_mut()).is_err());
        assert!(ifreq("a-name-far-too-long-for-linux", std::ptr::null_mut()).is_err());
    }

    #[test]
    fn loopback_has_no_hardware_stamps_and_says_so() {
        let why = switch_on("lo").expect_err("lo has no PHC");
        assert!(why.starts_with("lo: "), "{why}");
    }
}
