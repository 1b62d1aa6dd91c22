//! smoltcp over a raw-frame ring: the TCP order session and the hot path shared by the
//! AF_XDP and AF_PACKET paths.
//!
//! Hot path, per received frame: ring -> (market data) UDP payload read in place -> parse
//! -> book -> trigger -> the 21 order bytes encoded straight into smoltcp's send buffer ->
//! `iface.poll` (egress) -> the TX token writes the segment straight into a ring slot ->
//! post -> kick only when the ring needs it. No allocation, no syscall but that kick.
//! Everything else (the exchange's segments, ARP) goes to smoltcp through the device.

use std::io;
use std::net::{Ipv4Addr, UdpSocket};

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::time::{Duration as SmolDuration, Instant};
use smoltcp::wire::{EthernetAddress, IpAddress, IpCidr};

use super::raw::{RingDevice, RxRing, TxRing};
use super::{Hot, NetConfig, NetPath, PathStats, Status};
use crate::sys::mono_ns;

pub(crate) fn io_other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

fn now() -> Instant {
    Instant::from_micros((mono_ns() / 1000) as i64)
}

/// The interface's MAC, MTU, IPv4 address and prefix (getifaddrs and an ioctl: both see the
/// caller's network namespace).
pub(crate) fn iface_info(name: &str) -> io::Result<([u8; 6], usize, Ipv4Addr, u8)> {
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

/// The UDP payload of a market-data frame (UDP to the market-data port).
#[inline]
fn udp_payload(frame: &[u8], md_port: u16) -> Option<&[u8]> {
    if frame.len() < 14 + 20 + 8 || frame[12..14] != [0x08, 0x00] || frame[14 + 9] != 17 {
        return None;
    }
    let ihl = usize::from(frame[14] & 0x0f) * 4;
    let udp = 14 + ihl;
    if frame.get(udp + 2..udp + 4)? != md_port.to_be_bytes() {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([
        *frame.get(udp + 4)?,
        *frame.get(udp + 5)?,
    ]));
    frame.get(udp + 8..udp + len.max(8))
}

/// What a backend's opener sets up for one session.
pub struct Opened<R: RxRing, T: TxRing> {
    /// The device over the ring.
    pub dev: RingDevice<R, T>,
    /// Our MAC.
    pub mac: [u8; 6],
    /// smoltcp's address.
    pub local: Ipv4Addr,
    /// Its prefix length.
    pub prefix: u8,
    /// Whatever must live as long as the session and be dropped after the ring (the
    /// attached XDP program), with its report.
    pub guard: Box<dyn SessionGuard>,
    /// Join the group through a kernel socket (AF_XDP); AF_PACKET joins the MAC itself.
    pub kernel_join: bool,
}

/// Lives for a session after the ring; reports backend-specific counters.
pub trait SessionGuard {
    /// Backend fields of the session report.
    fn report(&self) -> serde_json::Value;
}

impl SessionGuard for () {
    fn report(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
}

struct Session<R: RxRing, T: TxRing> {
    // Field order is drop order: smoltcp and the ring first, then the guard (the program).
    sockets: SocketSet<'static>,
    iface: Interface,
    dev: RingDevice<R, T>,
    tcp: SocketHandle,
    guard: Box<dyn SessionGuard>,
    mcast: Option<UdpSocket>,
    kernel_join: bool,
}

/// Opens a backend for a session.
pub type Opener<R, T> = Box<dyn FnMut() -> io::Result<Opened<R, T>>>;

/// A network path of smoltcp over a raw ring.
pub struct RawPath<R: RxRing, T: TxRing> {
    cfg: NetConfig,
    open: Opener<R, T>,
    s: Option<Session<R, T>>,
    stats: PathStats,
    idle_turns: u32,
    last_report: serde_json::Value,
}

impl<R: RxRing, T: TxRing> RawPath<R, T> {
    /// A path whose sessions come from `open`.
    pub fn new(cfg: NetConfig, open: Opener<R, T>) -> Self {
        Self {
            cfg,
            open,
            s: None,
            stats: PathStats::default(),
            idle_turns: 0,
            last_report: serde_json::Value::Null,
        }
    }

    fn setup(&mut self) -> io::Result<Session<R, T>> {
        let Opened {
            mut dev,
            mac,
            local,
            prefix,
            guard,
            kernel_join,
        } = (self.open)()?;
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
        tracing::info!(%local, report = %guard.report(), "raw-ring path up");
        Ok(Session {
            sockets,
            iface,
            dev,
            tcp,
            guard,
            mcast: None,
            kernel_join,
        })
    }

    fn report(s: &Session<R, T>, stats: &PathStats) -> serde_json::Value {
        serde_json::json!({
            "backend": s.guard.report(),
            "device": s.dev.stats(),
            "frames_accounted": s.dev.accounted(),
            "orders": stats.orders,
        })
    }
}

impl<R: RxRing, T: TxRing> NetPath for RawPath<R, T> {
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
        match s.sockets.get::<tcp::Socket>(s.tcp).state() {
            tcp::State::Established => Ok(true),
            tcp::State::Closed => Err(io::Error::new(
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
        if s.kernel_join {
            s.mcast = Some(super::join_group(self.cfg.group, self.cfg.iface_addr, 0)?);
        }
        self.stats = PathStats::default();
        Ok(())
    }

    #[inline]
    fn poll(&mut self, hot: &mut Hot<'_>) -> io::Result<Status> {
        let Some(s) = &mut self.s else {
            return Ok(Status::Disconnected);
        };
        let n = s.dev.recv_batch();
        let mut need_poll = false;
        for i in 0..n {
            let desc = s.dev.batch[i];
            let order = match udp_payload(s.dev.frame_data(&desc), self.cfg.group.port()) {
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
            tracing::info!(report = %self.last_report, "raw-ring path down");
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
