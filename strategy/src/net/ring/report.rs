//! What a raw-ring session reports: the backend's counters (AF_XDP's attach and bind
//! modes and program counters, AF_PACKET's ring), the device's frame accounting, the drops
//! by cause and, on `xdp-tx`, the delegated-send counters. Serialised into the strategy's
//! session report and read back typed by the lab.

use std::net::Ipv4Addr;

use super::DeviceStats;
use crate::net::af_xdp::xtx::XtxReport;

/// Counters of the backend that opened the ring.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum BackendReport {
    /// No backend report.
    #[default]
    None,
    /// AF_XDP: attach and bind modes, the program's per-class counters.
    Xdp(XdpReport),
    /// AF_PACKET: interface, smoltcp's address, ring version.
    Packet(PacketReport),
}

/// The AF_XDP backend's report.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct XdpReport {
    /// Attach mode that worked (drv, skb).
    pub xdp_mode: crate::net::af_xdp::loader::AttachMode,
    /// Bind mode that worked (zero-copy, copy).
    pub xsk_bind: crate::net::af_xdp::BindMode,
    /// The program's per-class counters.
    pub steering: crate::net::af_xdp::loader::SteerCounters,
}

/// A delegated-send (`xdp-tx`) session's counters, beside the backend's.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct XtxSessionReport {
    /// The path's counters.
    pub xdp_tx: XtxReport,
}

/// An AF_PACKET ring version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum RingVersion {
    /// TPACKET_V2: one frame per slot.
    #[serde(rename = "TPACKET_V2")]
    TpacketV2,
    /// TPACKET_V3: frames packed into blocks, a block handed over full or at its timeout.
    #[serde(rename = "TPACKET_V3")]
    TpacketV3 {
        /// Bytes per block.
        block_size: u32,
        /// Blocks.
        blocks: u32,
        /// The retire timer, ms.
        timeout_ms: u32,
    },
}

/// The AF_PACKET backend's report.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PacketReport {
    /// Interface.
    pub af_packet: String,
    /// smoltcp's address.
    pub local: Ipv4Addr,
    /// Ring version.
    pub ring: RingVersion,
    /// PACKET_QDISC_BYPASS on.
    pub qdisc_bypass: bool,
}

/// Busy polling of the AF_XDP sockets (`xdp+busypoll`: `--busy-poll`): on an empty RX ring the loop makes one non-blocking `recv` on the
/// socket, in which the kernel runs the queue's NAPI poll (the driver's receive and the XDP
/// program) on the strategy's CPU. The kernel gives an AF_XDP socket a NAPI instance to
/// poll only when it is bound in zero-copy mode; without one the loop does not poll (the
/// `recv` would do nothing) and says so.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct XskBusyPoll {
    /// SO_BUSY_POLL, us.
    pub us: u32,
    /// The NAPI instance the first socket polls (SO_INCOMING_NAPI_ID); 0: none (copy mode).
    pub napi_id: u32,
    /// `recv` calls made on an empty RX ring, each a NAPI poll in the kernel.
    pub polls: u64,
}

/// The report of a raw-ring session.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct RingReport {
    /// Backend counters.
    pub backend: BackendReport,
    /// Device counters.
    pub device: DeviceStats,
    /// Every frame was in exactly one place when the report was taken.
    pub frames_accounted: bool,
    /// Bytes the exchange sent on the order connection (it sends none): drained, dropped.
    pub unexpected_bytes: u64,
    /// Frames a session found in the ring from before it began (the data plane is kept
    /// across sessions), dropped; counted since the plane opened.
    pub stale_frames: u64,
    /// Market-data datagrams from another source than `--md-source`: dropped.
    pub foreign_md: u64,
    /// Frames that claimed to be market data but did not hold together: dropped.
    pub malformed_frames: u64,
    /// Frames the kernel dropped for the ring (AF_XDP: no fill-ring frame or RX ring full;
    /// AF_PACKET: ring full), when it can say.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_drops: Option<u64>,
    /// Frames handed back to the kernel twice, refused and counted (AF_PACKET; 0 elsewhere).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub double_give_backs: u64,
    /// Frames received per RX queue `[queue, frames]` (AF_XDP: one socket per queue).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rx_queues: Vec<(u32, u64)>,
    /// AF_XDP busy polling, when asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xsk_busy_poll: Option<XskBusyPoll>,
    /// The `xdp-tx` counters (that path only).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub xtx: Option<Box<XtxSessionReport>>,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}
