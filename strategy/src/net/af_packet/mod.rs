//! The AF_PACKET path: the same smoltcp session and hot path as AF_XDP
//! ([`crate::net::ring`]) over mmap'd TPACKET_V2 rings ([`rings`]) behind a classic BPF
//! filter ([`filter`]).
//!
//! A packet socket sees frames *beside* the kernel, which also receives them. So that the
//! kernel never answers the order-entry flow with a reset, smoltcp uses an address of its
//! own (`--packet-ip`, e.g. 10.77.0.3 in the namespace lab) that is on the link but not
//! configured on the interface: the kernel drops segments for it without a word (it does
//! not forward), and smoltcp answers ARP for it (the filter passes ARP for that address).
//! The group's MAC is accepted with PACKET_ADD_MEMBERSHIP; no kernel socket joins the group.

use std::io;
use std::net::Ipv4Addr;

pub mod filter;
pub mod rings;

use self::filter::Flows;
use self::rings::{Geometry, PacketRx, PacketTx};
use super::ring::session::io_other;
use super::ring::session::PacketReport;
use super::ring::{BackendReport, Opened, RingDevice, RingPath, SessionGuard};
use super::NetConfig;

/// AF_PACKET settings.
#[derive(Debug, Clone)]
pub struct PacketConfig {
    /// Interface.
    pub iface: String,
    /// smoltcp's own address on the link (not configured on the interface).
    pub local: Ipv4Addr,
    /// Ring frame size.
    pub frame_size: u32,
    /// Frames per ring.
    pub frames: u32,
}

/// The AF_PACKET path.
pub type PacketPath = RingPath<PacketRx, PacketTx>;

struct Bound {
    ifname: String,
    local: Ipv4Addr,
}

impl SessionGuard for Bound {
    fn report(&self) -> BackendReport {
        BackendReport::Packet(PacketReport {
            af_packet: self.ifname.clone(),
            local: self.local,
            ring: crate::net::ring::session::RingVersion::TpacketV2,
            qdisc_bypass: true,
        })
    }
}

/// Opens the packet socket and its rings for a session.
pub fn open(p: &PacketConfig, cfg: &NetConfig) -> io::Result<Opened<PacketRx, PacketTx>> {
    let hostsys::iface::IfaceInfo {
        mac,
        mtu,
        ip: kernel_ip,
        prefix,
    } = hostsys::iface::iface_info(&p.iface)?;
    if p.local == kernel_ip {
        return Err(io_other(format!(
            "--packet-ip {} is the interface's own address: the kernel would answer the order flow with resets; \
             give smoltcp an unused address on the link",
            p.local
        )));
    }
    let ifindex = nix::net::if_::if_nametoindex(p.iface.as_str()).map_err(io::Error::from)?;
    let flows = Flows {
        group: *cfg.group.ip(),
        md_port: cfg.group.port(),
        exchange: *cfg.exchange.ip(),
        exchange_port: cfg.exchange.port(),
        local: p.local,
    };
    let (rx, tx) = rings::open(
        ifindex,
        &flows,
        rings::group_mac(*cfg.group.ip()),
        Geometry {
            frame_size: p.frame_size,
            frames: p.frames,
        },
    )?;
    let dev = RingDevice::new(rx, tx, p.frames as usize * 2, mtu);
    let guard = Box::new(Bound {
        ifname: p.iface.clone(),
        local: p.local,
    });
    Ok(Opened {
        dev,
        mac,
        local: p.local,
        prefix,
        guard,
        kernel_join: false,
        xtx: None,
    })
}

/// The AF_PACKET path for these settings.
pub fn path(cfg: NetConfig, p: PacketConfig) -> PacketPath {
    let c = cfg.clone();
    RingPath::new(cfg, Box::new(move || open(&p, &c)))
}
