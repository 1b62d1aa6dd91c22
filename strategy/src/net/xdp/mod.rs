//! The AF_XDP path: an aya XDP program steers only the market-data and order-entry flows
//! (and ARP replies for us) into an AF_XDP socket; one busy-polling loop owns the UMEM;
//! smoltcp runs the TCP session over the UMEM, so an order is a frame built by smoltcp
//! straight into a UMEM TX frame, with no kernel socket on the order path.
//!
//! Hot path, per received frame: RX ring -> (market data) UDP payload read in place from
//! UMEM -> parse -> book -> trigger -> the 21 order bytes encoded straight into smoltcp's
//! send buffer -> `iface.poll` (egress) -> TX token writes the frame into UMEM -> TX ring ->
//! kick only when `need_wakeup` is set. No allocation, no syscall but that kick.
//!
//! AF_XDP does no IGMP: the group is joined through the kernel by a UDP socket held open
//! for the session (IP_ADD_MEMBERSHIP), so the interface accepts the group's frames; the
//! program then steers them away from that socket.

pub mod device;
pub mod loader;

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::num::NonZeroU32;

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::time::{Duration as SmolDuration, Instant};
use smoltcp::wire::{EthernetAddress, IpAddress, IpCidr};
use xsk_rs::config::{
    BindFlags, FrameSize, Interface as XskIface, LibxdpFlags, QueueSize, SocketConfig, UmemConfig,
};
use xsk_rs::{Socket, Umem};

use self::device::XskDevice;
use self::loader::{Steering, XdpModeArg};
use super::{Hot, NetConfig, NetPath, PathStats, Status};
use crate::sys::mono_ns;

/// `--xsk-bind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum XskBind {
    /// Zero-copy, falling back to copy mode.
    Auto,
    /// Zero-copy only.
    Zc,
    /// Copy mode.
    Copy,
}

/// AF_XDP settings.
#[derive(Debug, Clone)]
pub struct XdpConfig {
    /// Interface.
    pub iface: String,
    /// RX queue to bind.
    pub queue: u32,
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
}

struct Session {
    // Field order is drop order: smoltcp and the socket first, then the program.
    sockets: SocketSet<'static>,
    iface: Interface,
    dev: XskDevice,
    tcp: SocketHandle,
    steering: Steering,
    bind_mode: &'static str,
    mcast: Option<UdpSocket>,
    was_connecting: bool,
}

/// The path.
pub struct XdpPath {
    cfg: NetConfig,
    xcfg: XdpConfig,
    s: Option<Session>,
    stats: PathStats,
    idle_turns: u32,
    last_report: serde_json::Value,
}

fn io_other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

fn now() -> Instant {
    Instant::from_micros((mono_ns() / 1000) as i64)
}

/// The interface's MAC, MTU, IPv4 address and prefix (getifaddrs and an ioctl: both see the
/// caller's network namespace).
fn iface_info(name: &str) -> io::Result<([u8; 6], usize, Ipv4Addr, u8)> {
    let mtu = crate::sys::iface_mtu(name)?;
    let (mut mac, mut addr) = (None, None);
    for ifa in nix::ifaddrs::getifaddrs().map_err(io::Error::from)? {
        if ifa.interface_name != name {
            continue;
        }
        let Some(a) = ifa.address.as_ref() else {
            continue;
        };
        if let Some(link) = a.as_link_addr().and_then(|l| l.addr()) {
            mac = Some(link);
        } else if let Some(sin) = a.as_sockaddr_in() {
            let prefix = ifa
                .netmask
                .as_ref()
                .and_then(|m| m.as_sockaddr_in())
                .map_or(24, |m| u32::from(m.ip()).count_ones() as u8);
            addr = Some((sin.ip(), prefix));
        }
    }
    let mac = mac.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("{name}: no such interface or no MAC"),
        )
    })?;
    let (ip, prefix) = addr.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("{name} has no IPv4 address"),
        )
    })?;
    Ok((mac, mtu, ip, prefix))
}

/// Encodes `order` straight into the socket's send buffer (no intermediate copy); `false`
/// when the buffer has no room for the whole message (nothing is written then).
#[inline]
pub fn send_order(sock: &mut tcp::Socket<'_>, order: &proto::order::OrderRepr) -> bool {
    sock.send(|buf| match buf.get_mut(..proto::order::ORDER_LEN) {
        Some(dst) => {
            order.emit(&mut proto::order::Packet::new_unchecked(dst));
            (proto::order::ORDER_LEN, true)
        }
        None => (0, false),
    })
    .unwrap_or(false)
}

/// The UDP payload of a market-data frame (the program steered only those and TCP/ARP).
#[inline]
fn udp_payload(frame: &[u8]) -> Option<&[u8]> {
    if frame.len() < 14 + 20 + 8 || frame[12..14] != [0x08, 0x00] || frame[14 + 9] != 17 {
        return None;
    }
    let ihl = usize::from(frame[14] & 0x0f) * 4;
    let udp = 14 + ihl;
    let len = usize::from(u16::from_be_bytes([
        *frame.get(udp + 4)?,
        *frame.get(udp + 5)?,
    ]));
    frame.get(udp + 8..udp + len.max(8))
}

/// What [`open`] sets up: the attached program and the device over a bound AF_XDP socket.
pub struct Opened {
    /// The UMEM device (dropped before the program).
    pub dev: XskDevice,
    /// The attached program (detached on drop).
    pub steering: Steering,
    /// `zero-copy` or `copy`.
    pub bind_mode: &'static str,
    /// Interface MAC.
    pub mac: [u8; 6],
    /// Interface IPv4 address.
    pub local: Ipv4Addr,
    /// Its prefix length.
    pub prefix: u8,
}

type SocketRings = (
    xsk_rs::TxQueue,
    xsk_rs::RxQueue,
    xsk_rs::FillQueue,
    xsk_rs::CompQueue,
);

fn open_socket(xcfg: &XdpConfig, umem: &Umem, bind: BindFlags) -> io::Result<SocketRings> {
    let q = |n: u32| QueueSize::new(n).map_err(io_other);
    let ring = (xcfg.frame_count / 2).next_power_of_two().max(64);
    let sc = SocketConfig::builder()
        .rx_queue_size(q(ring)?)
        .tx_queue_size(q(ring)?)
        .libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
        .bind_flags(bind | BindFlags::XDP_USE_NEED_WAKEUP)
        .build();
    let name = XskIface::new(std::ffi::CString::new(xcfg.iface.clone()).map_err(io_other)?);
    // SAFETY: the UMEM is used by this one socket only (no shared UMEM), and the program is
    // loaded by us (INHIBIT_PROG_LOAD), as Socket::new requires.
    let (tx, rx, fqcq) = unsafe { Socket::new(sc, umem, &name, xcfg.queue) }.map_err(io_other)?;
    let (fq, cq) = fqcq.ok_or_else(|| io_other("no fill/completion queue returned"))?;
    Ok((tx, rx, fq, cq))
}

/// Attaches the program to `xcfg.iface`, creates the UMEM, binds an AF_XDP socket to
/// `xcfg.queue` (zero-copy first under `--xsk-bind auto`) and registers it in the XSKMAP.
pub fn open(xcfg: &XdpConfig, exchange: SocketAddrV4, group: SocketAddrV4) -> io::Result<Opened> {
    let (mac, mtu, local, prefix) = iface_info(&xcfg.iface)?;
    let mut steering =
        Steering::attach(&xcfg.iface, xcfg.mode, local, exchange, group).map_err(io_other)?;
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
        Umem::new(uc, count, xcfg.hugepages).map_err(|e| io_other(format!("{e}{hint}")))?;
    let tries: &[(BindFlags, &'static str)] = match xcfg.bind {
        XskBind::Auto => &[
            (BindFlags::XDP_ZEROCOPY, "zero-copy"),
            (BindFlags::XDP_COPY, "copy"),
        ],
        XskBind::Zc => &[(BindFlags::XDP_ZEROCOPY, "zero-copy")],
        XskBind::Copy => &[(BindFlags::XDP_COPY, "copy")],
    };
    let mut opened = None;
    let mut last_err = None;
    for &(flags, name) in tries {
        match open_socket(xcfg, &umem, flags) {
            Ok(rings) => {
                opened = Some((rings, name));
                break;
            }
            Err(e) => {
                tracing::info!("AF_XDP bind in {name} mode failed: {e}");
                last_err = Some(e);
            }
        }
    }
    let Some(((tx, rx, fq, cq), bind_mode)) = opened else {
        return Err(last_err.unwrap_or_else(|| io_other("AF_XDP bind failed")));
    };
    steering
        .register_socket(xcfg.queue, rx.fd())
        .map_err(io_other)?;
    let tx_frames = frames.split_off(frames.len() / 2);
    let dev = XskDevice::new(
        umem,
        device::Rings { fq, cq, rx, tx },
        frames,
        tx_frames,
        mtu,
    );
    Ok(Opened {
        dev,
        steering,
        bind_mode,
        mac,
        local,
        prefix,
    })
}

impl XdpPath {
    /// A path with these settings.
    pub fn new(cfg: NetConfig, xcfg: XdpConfig) -> Self {
        Self {
            cfg,
            xcfg,
            s: None,
            stats: PathStats::default(),
            idle_turns: 0,
            last_report: serde_json::Value::Null,
        }
    }

    fn setup(&mut self) -> io::Result<Session> {
        let Opened {
            mut dev,
            steering,
            bind_mode,
            mac,
            local,
            prefix,
        } = open(&self.xcfg, self.cfg.exchange, self.cfg.group)?;
        let mut config = Config::new(EthernetAddress(mac).into());
        config.random_seed = mono_ns();
        let mut iface = Interface::new(config, &mut dev, now());
        iface.update_ip_addrs(|a| {
            let _ = a.push(IpCidr::new(IpAddress::Ipv4(local), prefix));
        });
        let mut sock = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; 1 << 16]),
            tcp::SocketBuffer::new(vec![0; 1 << 16]),
        );
        // A LAN order session: no Nagle, no delayed ACK, fast keepalive, bounded timeout.
        // smoltcp derives the MSS from the device MTU.
        sock.set_nagle_enabled(false);
        sock.set_ack_delay(None);
        sock.set_keep_alive(Some(SmolDuration::from_millis(500)));
        sock.set_timeout(Some(SmolDuration::from_secs(5)));
        let mut sockets = SocketSet::new(Vec::with_capacity(1));
        let tcp = sockets.add(sock);
        let local_port = 49152 + (mono_ns() % 16000) as u16;
        let remote = (
            IpAddress::Ipv4(*self.cfg.exchange.ip()),
            self.cfg.exchange.port(),
        );
        sockets
            .get_mut::<tcp::Socket>(tcp)
            .connect(iface.context(), remote, local_port)
            .map_err(io_other)?;
        tracing::info!(iface = %self.xcfg.iface, xdp = steering.mode, bind = bind_mode, %local, "AF_XDP path up");
        Ok(Session {
            sockets,
            iface,
            dev,
            tcp,
            steering,
            bind_mode,
            mcast: None,
            was_connecting: true,
        })
    }

    fn report(s: &Session, stats: &PathStats) -> serde_json::Value {
        serde_json::json!({
            "xdp_mode": s.steering.mode,
            "xsk_bind": s.bind_mode,
            "steering": s.steering.counters(),
            "device": s.dev.stats(),
            "frames_accounted": s.dev.accounted(),
            "orders": stats.orders,
        })
    }
}

impl NetPath for XdpPath {
    fn begin_connect(&mut self) -> io::Result<()> {
        self.s = None;
        self.s = Some(self.setup()?);
        Ok(())
    }

    fn poll_connect(&mut self) -> io::Result<bool> {
        let Some(s) = &mut self.s else {
            return Err(io_other("not set up"));
        };
        s.dev.rx_all_to_stack();
        s.iface.poll(now(), &mut s.dev, &mut s.sockets);
        s.dev.refill();
        s.dev.reap_completions();
        let sock = s.sockets.get::<tcp::Socket>(s.tcp);
        match sock.state() {
            tcp::State::Established => Ok(true),
            tcp::State::Closed if s.was_connecting => Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                "connection refused or reset",
            )),
            _ => Ok(false),
        }
    }

    fn start_md(&mut self) -> io::Result<()> {
        let Some(s) = &mut self.s else {
            return Err(io_other("not set up"));
        };
        s.mcast = Some(super::join_group(self.cfg.group, self.cfg.iface_addr, 0)?);
        self.stats = PathStats::default();
        Ok(())
    }

    #[inline]
    fn poll(&mut self, hot: &mut Hot<'_>) -> io::Result<Status> {
        let Some(s) = &mut self.s else {
            return Ok(Status::Disconnected);
        };
        let n = s.dev.consume_rx();
        let mut need_poll = false;
        for i in 0..n {
            let desc = s.dev.batch[i];
            let order = match udp_payload(s.dev.frame_data(&desc)) {
                Some(payload) => {
                    let t_rx = mono_ns();
                    self.stats.packets += 1;
                    let o = hot.engine.on_packet(payload, t_rx).map(|o| (o, t_rx));
                    s.dev.recycle.push(desc);
                    o
                }
                None => {
                    s.dev.to_stack(desc);
                    need_poll = true;
                    None
                }
            };
            if let Some((order, t_rx)) = order {
                let sock = s.sockets.get_mut::<tcp::Socket>(s.tcp);
                // The 21 bytes go straight into smoltcp's send buffer; the egress poll below
                // builds the segment straight into a UMEM TX frame.
                let sent = send_order(sock, &order);
                let delay = hot.next_delay();
                super::spin_for(delay);
                s.iface.poll(now(), &mut s.dev, &mut s.sockets);
                let t_tx = mono_ns();
                if sent {
                    self.stats.orders += 1;
                    hot.latency.record(t_tx - t_rx);
                    hot.log.push(order, delay);
                } else {
                    self.stats.partial_sends += 1;
                }
            }
        }
        self.idle_turns = if n == 0 { self.idle_turns + 1 } else { 0 };
        if need_poll || self.idle_turns % 256 == 255 {
            s.iface.poll(now(), &mut s.dev, &mut s.sockets);
        }
        s.dev.refill();
        s.dev.reap_completions();
        let state = s.sockets.get::<tcp::Socket>(s.tcp).state();
        if !matches!(
            state,
            tcp::State::Established | tcp::State::SynSent | tcp::State::SynReceived
        ) {
            self.last_report = Self::report(s, &self.stats);
            return Ok(Status::Disconnected);
        }
        Ok(if n > 0 { Status::Busy } else { Status::Idle })
    }

    fn close(&mut self) {
        if let Some(mut s) = self.s.take() {
            s.sockets.get_mut::<tcp::Socket>(s.tcp).abort();
            s.iface.poll(now(), &mut s.dev, &mut s.sockets);
            self.last_report = Self::report(&s, &self.stats);
            tracing::info!(report = %self.last_report, "AF_XDP path down (XDP program detached)");
        }
    }

    fn stats(&self) -> PathStats {
        self.stats
    }

    fn report_extra(&self) -> serde_json::Value {
        match &self.s {
            Some(s) => Self::report(s, &self.stats),
            None => self.last_report.clone(),
        }
    }
}
