//! The AF_XDP path: an aya XDP program steers only the market-data and order-entry flows
//! (and ARP replies for us) into an AF_XDP socket; one busy-polling loop owns the UMEM;
//! smoltcp runs the TCP session over the UMEM ([`crate::net::ring`]), so an order is a frame
//! built by smoltcp straight into a UMEM TX frame, with no kernel socket on the order path.
//!
//! AF_XDP does no IGMP: the group is joined through the kernel by a UDP socket held open
//! for the session (IP_ADD_MEMBERSHIP), so the interface accepts the group's frames; the
//! program then steers them away from that socket.

pub mod loader;
pub mod rings;
pub mod xtx;
pub mod xtx_map;

use std::io;
use std::net::SocketAddrV4;
use std::num::NonZeroU32;

use xsk_rs::config::{BindFlags, FrameSize, QueueSize, UmemConfig};
use xsk_rs::Umem;

use self::loader::{Options, Steering, XdpModeArg};
use self::rings::{MultiRx, XskTx};
use super::ring::session::XdpReport;
use super::ring::session::{io_chain, io_other};
use super::ring::{BackendReport, Opened, RingDevice, RingPath, SessionGuard};
use super::NetConfig;

pub use super::ring::session::send_order;

/// `--xsk-bind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XskBind {
    /// Zero-copy, falling back to copy mode.
    Auto,
    /// Zero-copy only.
    Zc,
    /// Copy mode.
    Copy,
}

impl std::str::FromStr for XskBind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "zc" => Ok(Self::Zc),
            "copy" => Ok(Self::Copy),
            _ => Err(format!("unknown bind mode `{s}` (auto, zc, copy)")),
        }
    }
}

/// The AF_XDP bind mode that worked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BindMode {
    /// Zero-copy: the driver DMAs into the UMEM.
    ZeroCopy,
    /// Copy mode: the kernel copies between its buffers and the UMEM.
    Copy,
}

impl std::fmt::Display for BindMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::ZeroCopy => "zero-copy",
            Self::Copy => "copy",
        })
    }
}

/// AF_XDP settings.
#[derive(Debug, Clone)]
pub struct XdpConfig {
    /// Interface.
    pub iface: String,
    /// RX queues to bind, one AF_XDP socket each (the first socket also transmits).
    pub queues: Vec<u32>,
    /// XDP attach mode.
    pub mode: XdpModeArg,
    /// Bind mode.
    pub bind: XskBind,
    /// UMEM frame size.
    pub frame_size: u32,
    /// UMEM frames (half for RX, half for TX).
    pub frame_count: u32,
    /// UMEM on huge pages.
    pub hugepages: bool,
    /// Log the program's odd frames with aya-log (`--xdp-diag`).
    pub diag: bool,
    /// The `xdp-tx` path: the program decides on market data and sends with XDP_TX.
    pub xdp_tx: bool,
    /// Busy polling of the sockets (`--busy-poll`; off at 0 us). `--prefer-busy-poll` is
    /// refused here (see [`open`]).
    pub busy_poll: crate::net::sockets::BusyPoll,
}

/// The AF_XDP device.
pub type XskDevice = RingDevice<MultiRx, XskTx>;

/// The AF_XDP path.
pub type XdpPath = RingPath<MultiRx, XskTx>;

/// The RX queues of `iface` (from /sys/class/net/IF/queues), sorted.
pub fn rx_queues(iface: &str) -> io::Result<Vec<u32>> {
    let mut q: Vec<u32> = std::fs::read_dir(format!("/sys/class/net/{iface}/queues"))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_prefix("rx-"))
                .and_then(|n| n.parse().ok())
        })
        .collect();
    q.sort_unstable();
    Ok(q)
}

/// The attached program: dropped after the ring, which detaches it.
struct Attached {
    steering: Steering,
    bind_mode: BindMode,
}

impl SessionGuard for Attached {
    fn idle(&mut self) {
        self.steering.flush_log();
    }

    fn report(&self) -> BackendReport {
        BackendReport::Xdp(XdpReport {
            xdp_mode: self.steering.mode,
            xsk_bind: self.bind_mode,
            steering: self.steering.counters(),
        })
    }
}

/// How long [`open`] waits for the interface's carrier after the attach and the binds.
const CARRIER_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Attaches the program to `xcfg.iface`, creates the UMEM, binds an AF_XDP socket to
/// `xcfg.queue` (zero-copy first under `--xsk-bind auto`) and registers it in the XSKMAP.
pub fn open(
    xcfg: &XdpConfig,
    exchange: SocketAddrV4,
    group: SocketAddrV4,
    md_source: Option<std::net::Ipv4Addr>,
) -> io::Result<Opened<MultiRx, XskTx>> {
    let hostsys::iface::IfaceInfo {
        mac,
        mtu,
        ip: local,
        prefix,
    } = hostsys::iface::iface_info(&xcfg.iface)?;
    let mut steering = Steering::attach(
        &xcfg.iface,
        xcfg.mode,
        (local, exchange, group),
        Options {
            diag: xcfg.diag,
            xdp_tx: xcfg.xdp_tx,
            md_source,
        },
    )
    .map_err(|e| io_chain(&e, ""))?;
    if xcfg.queues.is_empty() {
        return Err(io_other("no RX queue to bind"));
    }
    if xcfg.busy_poll.prefer_budget > 0 {
        // Measured (Linux 7.3, virtio-net and igb in zero copy): with SO_PREFER_BUSY_POLL
        // the kernel's AF_XDP send skips the transmit wake-up and leaves the transmit to the
        // busy-polled NAPI, which these drivers do not transmit from: the session connected,
        // every market-data frame arrived, and not one order reached the exchange.
        return Err(io_other(
            "--prefer-busy-poll on AF_XDP: the kernel then leaves the transmit to the busy-polled NAPI, which virtio-net and igb do not transmit from (orders never left, measured); use --busy-poll alone (xdp+busypoll)",
        ));
    }
    let mut rxs = Vec::with_capacity(xcfg.queues.len());
    let mut tx0 = None;
    let mut bind_mode = None;
    for &queue in &xcfg.queues {
        let (mut rx, mut tx, mode) = open_queue(xcfg, queue)?;
        if xcfg.busy_poll.us > 0 {
            let napi = rx.busy_poll(xcfg.busy_poll.us).map_err(|e| {
                io_chain(
                    &e,
                    " (SO_BUSY_POLL above net.core.busy_read needs CAP_NET_ADMIN)",
                )
            })?;
            if napi == 0 {
                tracing::info!(queue, "AF_XDP busy polling off: the socket has no NAPI instance to poll (the kernel gives one to zero-copy sockets only; this one is bound {mode})");
            } else {
                tracing::info!(queue, napi, "AF_XDP busy polling on");
                tx.kick_always(true);
            }
        }
        steering
            .register_socket(queue, rx.fd())
            .map_err(|e| io_chain(&e, ""))?;
        rxs.push(rx);
        bind_mode = Some(mode);
        // The first socket transmits; the others only receive.
        tx0.get_or_insert(tx);
    }
    let tx = tx0.ok_or_else(|| io_other("no socket"))?;
    let bind_mode = bind_mode.ok_or_else(|| io_other("no socket"))?;
    let total = xcfg.frame_count.max(128) as usize * xcfg.queues.len();
    let rx = MultiRx::new(rxs, xcfg.queues.clone(), xcfg.xdp_tx);
    let xtx = if xcfg.xdp_tx {
        Some(xtx::Delegation::new(
            steering.take_xtx().map_err(|e| io_chain(&e, ""))?,
        ))
    } else {
        None
    };
    let dev = RingDevice::new(rx, tx, total, mtu);
    tracing::info!(queues = ?xcfg.queues, "AF_XDP sockets bound");
    // Some drivers reset their link when a program is attached (igb: the users' NIC, and
    // QEMU's): a SYN sent before the link is back is lost and the connect waits for
    // smoltcp's retransmission or its own timeout (in the VM lab, the strategy's start to
    // its exit on igb `xdp` 8.0 s before this wait and 5.9 s with it; docs/vm.md). Wait for
    // the carrier first.
    match hostsys::iface::wait_running(&xcfg.iface, CARRIER_WAIT)? {
        Some(w) if w >= std::time::Duration::from_millis(10) => {
            tracing::info!(
                waited_ms = w.as_millis() as u64,
                "carrier back after the attach"
            );
        }
        Some(_) => {}
        None => tracing::warn!(
            iface = %xcfg.iface,
            "no carrier {CARRIER_WAIT:?} after the attach; connecting anyway"
        ),
    }
    Ok(Opened {
        dev,
        mac,
        local,
        prefix,
        guard: Box::new(Attached {
            steering,
            bind_mode,
        }),
        kernel_join: true,
        xtx,
    })
}

/// Whether `iface` takes an AF_XDP socket in zero-copy mode on queue 0 (`strategy probe`):
/// one socket over a small UMEM of its own, bound and dropped at once (no program needed);
/// the OS error when it does not (veth, and virtio-net before Linux 6.13: EOPNOTSUPP).
pub fn zero_copy_bind(iface: &str) -> io::Result<()> {
    let cfg = XdpConfig {
        iface: iface.to_owned(),
        queues: vec![0],
        mode: XdpModeArg::Drv,
        bind: XskBind::Zc,
        frame_size: 2048,
        frame_count: 128,
        hugepages: false,
        diag: false,
        xdp_tx: false,
        busy_poll: crate::net::sockets::BusyPoll::default(),
    };
    open_queue(&cfg, 0).map(drop)
}

/// One AF_XDP socket on `queue` over a UMEM of its own (zero-copy first under
/// `--xsk-bind auto`): its two halves and the bind mode that worked.
fn open_queue(xcfg: &XdpConfig, queue: u32) -> io::Result<(rings::XskRx, XskTx, BindMode)> {
    let ring = (xcfg.frame_count / 2).next_power_of_two().max(64);
    let q = |n: u32| QueueSize::new(n).map_err(io_other);
    let uc = UmemConfig::builder()
        .frame_size(FrameSize::new(xcfg.frame_size).map_err(io_other)?)
        .fill_queue_size(q(ring)?)
        .comp_queue_size(q(ring)?)
        .build()
        .map_err(io_other)?;
    let count =
        NonZeroU32::new(xcfg.frame_count.max(128)).ok_or_else(|| io_other("frame count"))?;
    let hint = if xcfg.hugepages {
        " (are huge pages reserved? /proc/sys/vm/nr_hugepages)"
    } else {
        ""
    };
    let (umem, mut frames) =
        Umem::new(uc, count, xcfg.hugepages).map_err(|e| io_chain(&e, hint))?;
    let tries: &[(BindFlags, BindMode)] = match xcfg.bind {
        XskBind::Auto => &[
            (BindFlags::XDP_ZEROCOPY, BindMode::ZeroCopy),
            (BindFlags::XDP_COPY, BindMode::Copy),
        ],
        XskBind::Zc => &[(BindFlags::XDP_ZEROCOPY, BindMode::ZeroCopy)],
        XskBind::Copy => &[(BindFlags::XDP_COPY, BindMode::Copy)],
    };
    let mut opened = None;
    let mut last_err = None;
    for (i, &(flags, name)) in tries.iter().enumerate() {
        match rings::open_socket(&xcfg.iface, queue, ring, &umem, flags) {
            Ok(rings) => {
                opened = Some((rings, name));
                break;
            }
            Err(e) => {
                // Said when another mode is tried next; the last failure is the error.
                if i + 1 < tries.len() {
                    tracing::info!(queue, "AF_XDP bind in {name} mode failed: {e}");
                }
                last_err = Some(e);
            }
        }
    }
    let Some(((tx, rx, fq, cq), bind_mode)) = opened else {
        return Err(last_err.unwrap_or_else(|| io_other("AF_XDP bind failed")));
    };
    let tx_frames = frames.split_off(frames.len() / 2);
    let (rx, tx) = rings::halves(umem, fq, cq, rx, tx, frames, tx_frames);
    Ok((rx, tx, bind_mode))
}

/// The AF_XDP path for these settings.
pub fn path(cfg: NetConfig, xcfg: XdpConfig) -> XdpPath {
    let (exchange, group, source) = (cfg.exchange, cfg.group, cfg.md_source);
    RingPath::new(cfg, Box::new(move || open(&xcfg, exchange, group, source)))
}
