//! The AF_PACKET path: the same smoltcp session and hot path as AF_XDP
//! ([`crate::net::ring`]) over mmap'd TPACKET_V2 rings ([`rings`]) behind a classic BPF
//! filter ([`filter`]); with `--packet-ring v3` the receive ring is a TPACKET_V3 block
//! ring ([`v3`]) of its own socket.
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
pub mod v3;

use self::filter::Flows;
use self::rings::{FrameRx, Geometry, PacketTx};
use self::v3::{BlockGeometry, BlockRx};
use super::ring::session::io_other;
use super::ring::session::{PacketReport, RingVersion};
use super::ring::RxRing;
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
    /// The receive ring: TPACKET_V2 frames, or TPACKET_V3 blocks of this geometry.
    pub blocks: Option<BlockGeometry>,
}

/// The receive half: TPACKET_V2 (a frame per slot, handed over as written) or TPACKET_V3
/// (blocks handed over full or at their timeout).
pub enum PacketRx {
    /// TPACKET_V2.
    Frames(FrameRx),
    /// TPACKET_V3.
    Blocks(BlockRx),
}

impl RxRing for PacketRx {
    type Frame = u32;

    #[inline]
    fn recv(&mut self, out: &mut [u32]) -> usize {
        match self {
            Self::Frames(r) => r.recv(out),
            Self::Blocks(r) => r.recv(out),
        }
    }

    #[inline]
    fn data(&self, frame: &u32) -> &[u8] {
        match self {
            Self::Frames(r) => r.data(frame),
            Self::Blocks(r) => r.data(frame),
        }
    }

    #[inline]
    fn give_back(&mut self, frames: &mut Vec<u32>) {
        match self {
            Self::Frames(r) => r.give_back(frames),
            Self::Blocks(r) => r.give_back(frames),
        }
    }

    fn accounted(&self, held: usize) -> bool {
        match self {
            Self::Frames(r) => r.accounted(held),
            Self::Blocks(r) => r.accounted(held),
        }
    }

    fn kernel_drops(&self) -> Option<u64> {
        match self {
            Self::Frames(r) => r.kernel_drops(),
            Self::Blocks(r) => r.kernel_drops(),
        }
    }

    fn double_give_backs(&self) -> u64 {
        match self {
            Self::Frames(r) => r.double_give_backs(),
            Self::Blocks(r) => r.double_give_backs(),
        }
    }
}

/// The AF_PACKET path.
pub type PacketPath = RingPath<PacketRx, PacketTx>;

struct Bound {
    ifname: String,
    local: Ipv4Addr,
    ring: RingVersion,
}

impl SessionGuard for Bound {
    fn report(&self) -> BackendReport {
        BackendReport::Packet(PacketReport {
            af_packet: self.ifname.clone(),
            local: self.local,
            ring: self.ring,
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
    let g = Geometry {
        frame_size: p.frame_size,
        frames: p.frames,
    };
    let mac_group = rings::group_mac(*cfg.group.ip());
    let (rx, tx, ring) = match p.blocks {
        None => {
            let (rx, tx) = rings::open(ifindex, &flows, mac_group, g)?;
            (PacketRx::Frames(rx), tx, RingVersion::TpacketV2)
        }
        Some(b) => {
            let rx = v3::open_rx(ifindex, &flows, mac_group, b)?;
            let tx = rings::open_tx(ifindex, g)?;
            let ring = RingVersion::TpacketV3 {
                block_size: b.block_size,
                blocks: b.blocks,
                timeout_ms: b.timeout_ms,
            };
            (PacketRx::Blocks(rx), tx, ring)
        }
    };
    // What the device may hold: both V2 rings, or every frame a V3 ring can hand over (a
    // V3 frame takes at least 64 bytes of its block: header, address, Ethernet header).
    let capacity = match p.blocks {
        None => p.frames as usize * 2,
        Some(b) => p.frames as usize + b.block_size as usize / 64 * b.blocks as usize,
    };
    let dev = RingDevice::new(rx, tx, capacity, mtu);
    let guard = Box::new(Bound {
        ifname: p.iface.clone(),
        local: p.local,
        ring,
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
