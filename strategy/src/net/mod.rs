//! Network paths, one room per backend, the hot path written once.
//!
//! * [`hot`]: the one sequence around every order (stamp, engine, delay, send, stamp,
//!   record, log, counters); a path supplies only its I/O.
//! * [`kernel`]: non-blocking kernel sockets. [`uring`]: io_uring.
//! * [`ring`]: a smoltcp device and TCP session over any raw RX/TX ring pair, used by
//!   [`af_xdp`] (aya XDP steering into a UMEM) and [`af_packet`] (TPACKET_V2 rings and a
//!   classic BPF filter).
//! * [`sockets`]: the kernel sockets every path needs (the order connection, the group join).
//! * [`warm`]: keeping the order path warm while no order goes out (the cold/warm
//!   experiments).
//! * [`wire`]: the raw paths' parsers of outside frames, pure (fuzzed).
//!
//! The runtime drives a path through [`NetPath`]: [`NetPath::begin_connect`] and
//! [`NetPath::poll_connect`] (never blocking), then [`NetPath::start_md`] (join the group),
//! then [`NetPath::poll`] in a busy loop. Configuration comes in as plain types
//! ([`NetConfig`]); reports go out as typed values ([`PathReport`]).

#[cfg(feature = "xdp")]
pub mod af_packet;
#[cfg(feature = "xdp")]
pub mod af_xdp;
pub mod hot;
pub mod kernel;
#[cfg(feature = "xdp")]
pub mod ring;
pub mod sockets;
pub mod stamps;
pub mod uring;
pub mod warm;
#[cfg(feature = "wire")]
pub mod wire;

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};

pub use hot::{Hot, OrderLog, PathStats, Pending, Sent};
pub use warm::{WarmRequest, Warmer};

/// Which path.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum NetKind {
    /// Non-blocking kernel sockets in a busy loop.
    Kernel,
    /// io_uring: multishot receive with provided buffers, registered files.
    Uring,
    /// AF_XDP: XDP steering, UMEM busy loop, smoltcp TCP.
    Xdp,
    /// AF_XDP with the decision in the XDP program and the order sent with XDP_TX.
    XdpTx,
    /// AF_PACKET: mmap'd TPACKET_V2 rings, classic BPF filter, qdisc bypass, smoltcp TCP.
    Packet,
}

impl NetKind {
    /// Every path, in the lab's default order.
    pub const ALL: [Self; 5] = [
        Self::Kernel,
        Self::Uring,
        Self::Xdp,
        Self::Packet,
        Self::XdpTx,
    ];

    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kernel => "kernel",
            Self::Uring => "uring",
            Self::Xdp => "xdp",
            Self::XdpTx => "xdp-tx",
            Self::Packet => "packet",
        }
    }
}

impl std::fmt::Display for NetKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for NetKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                format!("unknown network path `{s}` (kernel, uring, xdp, packet, xdp-tx)")
            })
    }
}

/// Settings common to every path.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// Exchange order-entry address.
    pub exchange: SocketAddrV4,
    /// Market-data group.
    pub group: SocketAddrV4,
    /// Local interface address for the join (None: INADDR_ANY).
    pub iface_addr: Option<Ipv4Addr>,
    /// SO_BUSY_POLL microseconds (0 = off).
    pub busy_poll_us: u32,
    /// SO_PREFER_BUSY_POLL with this SO_BUSY_POLL_BUDGET (0 = off).
    pub busy_poll_budget: u32,
    /// io_uring: SQPOLL with this idle time in ms.
    pub sqpoll_idle_ms: Option<u32>,
    /// io_uring: send orders with SEND_ZC.
    pub send_zc: bool,
    /// Kernel path: send orders with MSG_ZEROCOPY.
    pub msg_zerocopy: bool,
    /// io_uring: ring set-up and polling features.
    pub uring: uring::UringOptions,
    /// IP_TOS / SO_PRIORITY on the order connection (kernel and io_uring paths).
    pub marks: sockets::Marks,
    /// Market data only from this source address (`None`: any): the kernel paths join
    /// source-specific, the raw paths and the XDP program drop and count the others.
    pub md_source: Option<Ipv4Addr>,
    /// SO_RCVBUF of the market-data socket (kernel and io_uring paths; `None`: 8 MiB).
    pub md_rcvbuf: Option<u32>,
    /// Kernel path: read market data with `recvmmsg`, up to 32 datagrams per call.
    pub md_recvmmsg: bool,
    /// Kernel path: the trigger packets' receive stamps and the orders' transmit stamps
    /// (`--wire-stamps`, [`stamps`]): `None` off, else the NIC's clock (its PHC index) when
    /// its stamps are on, or why they are not (the kernel's clock then only).
    pub wire_stamps: Option<Result<i32, String>>,
}

impl NetConfig {
    /// How the market-data socket of the kernel and io_uring paths joins.
    pub fn md_join(&self) -> sockets::MdJoin {
        sockets::MdJoin {
            source: self.md_source,
            rcvbuf: self.md_rcvbuf,
            busy: sockets::BusyPoll {
                us: self.busy_poll_us,
                prefer_budget: self.busy_poll_budget,
            },
        }
    }
}

/// What one `poll` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Nothing to do.
    Idle,
    /// Handled packets.
    Busy,
    /// The order connection is gone.
    Disconnected,
}

/// Path-specific fields of a session report, tagged with the kind of report (`"kind":
/// "ring"`) so that a reader gets back the variant that was written.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum PathReport {
    /// Nothing beyond [`PathStats`].
    #[default]
    None,
    /// Kernel path with MSG_ZEROCOPY.
    Kernel(kernel::KernelReport),
    /// io_uring.
    Uring(uring::UringReport),
    /// A raw-ring path (AF_XDP, AF_PACKET).
    #[cfg(feature = "xdp")]
    Ring(Box<ring::RingReport>),
}

/// A network path.
pub trait NetPath {
    /// Opens what every session will use and needs privileges to open (the raw paths'
    /// data plane: ring, UMEM, XDP program), before `--user` drops them; nothing by default.
    fn prepare(&mut self) -> io::Result<()> {
        Ok(())
    }
    /// Starts a non-blocking connect to the exchange.
    fn begin_connect(&mut self) -> io::Result<()>;
    /// `Ok(true)` once connected; an error when the connect failed.
    fn poll_connect(&mut self) -> io::Result<bool>;
    /// Joins the group and starts receiving market data.
    fn start_md(&mut self) -> io::Result<()>;
    /// One turn of the busy loop.
    fn poll(&mut self, hot: &mut Hot<'_>) -> io::Result<Status>;
    /// At the session's end, before its report: finishes what the path owes the order log
    /// (the `xdp-tx` program's last fires); nothing by default.
    fn settle(&mut self, hot: &mut Hot<'_>) -> io::Result<()> {
        let _ = hot;
        Ok(())
    }
    /// Closes everything (back to Init).
    fn close(&mut self);
    /// Warms the transmit side as asked (see [`warm`]); returns what happened to a
    /// heartbeat (`None` when none was asked for or the path is not connected).
    fn warm(&mut self, req: WarmRequest) -> io::Result<Option<Sent>>;
    /// Path-specific report fields (program counters, ring accounting...).
    fn report(&self) -> PathReport {
        PathReport::None
    }
    /// The session's `--wire-stamps` counts (`None`: off, or a path without them); the next
    /// session's count from zero.
    fn wire(&mut self) -> Option<stamps::WireReport> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Written, read back and written again, a report is the same JSON: what the lab reads
    /// typed is what the strategy wrote (a field the writer may leave out must have a
    /// default on the reader's side).
    fn round_trips(r: &PathReport) {
        let once = serde_json::to_string(r).expect("ser");
        let back: PathReport =
            serde_json::from_str(&once).unwrap_or_else(|e| panic!("reading back {once}: {e}"));
        assert_eq!(serde_json::to_string(&back).expect("ser"), once);
    }

    #[test]
    fn every_path_report_reads_back_as_written() {
        round_trips(&PathReport::None);
        round_trips(&PathReport::Kernel(kernel::KernelReport::default()));
        round_trips(&PathReport::Uring(uring::UringReport::default()));
        #[cfg(feature = "xdp")]
        {
            use ring::session::{PacketReport, RingVersion, XdpReport, XtxSessionReport};
            let mut r = ring::RingReport::default();
            round_trips(&PathReport::Ring(Box::new(r.clone())));
            r.backend = ring::BackendReport::Packet(PacketReport {
                af_packet: "vs0".into(),
                local: Ipv4Addr::new(10, 77, 0, 3),
                ring: RingVersion::TpacketV2,
                qdisc_bypass: true,
            });
            r.kernel_drops = Some(3);
            round_trips(&PathReport::Ring(Box::new(r.clone())));
            r.backend = ring::BackendReport::Xdp(XdpReport {
                xdp_mode: af_xdp::loader::AttachMode::Skb,
                xsk_bind: af_xdp::BindMode::Copy,
                steering: af_xdp::loader::SteerCounters::default(),
            });
            r.rx_queues = vec![(0, 10), (1, 12)];
            r.xtx = Some(Box::new(XtxSessionReport {
                xdp_tx: af_xdp::xtx::XtxReport {
                    never_armed: Some(af_xdp::xtx::NeverArmed::TooManyLevels),
                    ..Default::default()
                },
            }));
            round_trips(&PathReport::Ring(Box::new(r)));
        }
    }
}
