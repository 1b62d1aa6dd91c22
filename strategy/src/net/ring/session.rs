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

use hostsys::mono_ns;
use proto::order::{OrderRepr, ORDER_LEN};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::time::{Duration as SmolDuration, Instant};
use smoltcp::wire::{EthernetAddress, IpAddress, IpCidr};

use super::md_frame::{classify, MdFlow, MdFrame};
pub use super::report::{
    BackendReport, PacketReport, RingReport, RingVersion, XdpReport, XtxSessionReport,
};
use super::{RingDevice, RxRing, TxRing};
use crate::net::af_xdp::xtx::{Delegation, Take};
use crate::net::{Hot, NetConfig, NetPath, PathReport, Sent, Status, WarmRequest};

mod fires;
use fires::{complete_fires, Completing};

pub(crate) fn io_other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// An error and its sources as one `io::Error` ("a: b: c", then `hint`): libraries' errors
/// often name only the call that failed and keep the OS error as a source, which a plain
/// `to_string` drops. A source whose text the message already holds is not repeated; the
/// first OS error's kind is kept.
pub(crate) fn io_chain(e: &(dyn std::error::Error + 'static), hint: &str) -> io::Error {
    let mut text = e.to_string();
    let mut kind = e.downcast_ref::<io::Error>().map(io::Error::kind);
    let mut next = e.source();
    while let Some(s) = next {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        kind = kind.or_else(|| s.downcast_ref::<io::Error>().map(io::Error::kind));
        next = s.source();
    }
    text.push_str(hint);
    io::Error::new(kind.unwrap_or(io::ErrorKind::Other), text)
}

fn now() -> Instant {
    Instant::from_micros((mono_ns() / 1000) as i64)
}

/// Encodes `order` straight into the socket's send buffer (no intermediate copy); `false`
/// when the buffer has no room for the whole message (nothing is written then).
#[inline]
pub fn send_order(sock: &mut tcp::Socket<'_>, order: &OrderRepr) -> bool {
    sock.send(|buf| match buf.get_mut(..ORDER_LEN) {
        Some(dst) => {
            order.emit(&mut proto::order::Packet::new_unchecked(dst));
            (ORDER_LEN, true)
        }
        None => (0, false),
    })
    .unwrap_or(false)
}

/// The market-data flow of `cfg`.
fn md_flow(cfg: &NetConfig) -> MdFlow {
    MdFlow {
        group: *cfg.group.ip(),
        port: cfg.group.port(),
        source: cfg.md_source,
    }
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
    /// The `xdp-tx` path's user-space half (that path only).
    pub xtx: Option<Delegation>,
}

/// Lives for a session after the ring; reports backend-specific counters.
pub trait SessionGuard {
    /// Backend fields of the session report.
    fn report(&self) -> BackendReport;
    /// Work for an idle turn of the loop (off the hot path), e.g. reading diagnostics.
    fn idle(&mut self) {}
}

impl SessionGuard for () {
    fn report(&self) -> BackendReport {
        BackendReport::None
    }
}

struct Session<R: RxRing, T: TxRing> {
    // Field order is drop order: smoltcp first, then the plane (the ring before the guard,
    // the program: `Opened`'s own field order).
    sockets: SocketSet<'static>,
    iface: Interface,
    tcp: SocketHandle,
    /// The data plane the session runs on (kept for the next one, see [`RingPath`]).
    plane: Opened<R, T>,
    /// Bytes the exchange sent on the order connection (dropped).
    unexpected_bytes: u64,
    /// Market data from another source (dropped).
    foreign_md: u64,
    /// Frames claiming to be market data that did not hold together (dropped).
    malformed_frames: u64,
    /// The kernel socket holding the group membership (AF_XDP): never read, kept open for
    /// the session (closing it leaves the group).
    _membership: Option<UdpSocket>,
}

/// Opens a backend for a session.
pub type Opener<R, T> = Box<dyn FnMut() -> io::Result<Opened<R, T>>>;

/// A network path of smoltcp over a raw ring.
pub struct RingPath<R: RxRing, T: TxRing> {
    cfg: NetConfig,
    flow: MdFlow,
    open: Opener<R, T>,
    s: Option<Session<R, T>>,
    /// The data plane between sessions (ring, UMEM or packet socket, XDP program), kept
    /// so that a reconnect opens nothing privileged ([`NetPath::prepare`] opens it first).
    plane: Option<Opened<R, T>>,
    /// Frames of the last session still in the ring when the next one began, dropped.
    stale_frames: u64,
    idle_turns: u32,
    last_report: RingReport,
}

impl<R: RxRing, T: TxRing> RingPath<R, T> {
    /// A path whose sessions come from `open`.
    pub fn new(cfg: NetConfig, open: Opener<R, T>) -> Self {
        Self {
            flow: md_flow(&cfg),
            cfg,
            open,
            s: None,
            plane: None,
            stale_frames: 0,
            idle_turns: 0,
            last_report: RingReport::default(),
        }
    }

    fn setup(&mut self) -> io::Result<Session<R, T>> {
        let opened = match self.plane.take() {
            Some(mut o) => {
                // Whatever the last session left in the ring (late frames, smoltcp's
                // unread segments) is dropped: nothing of it may reach this session.
                self.stale_frames += o.dev.drain();
                o
            }
            None => (self.open)()?,
        };
        let mut plane = opened;
        plane.dev.tap = super::TxTap::new(plane.xtx.is_some());
        let mut config = Config::new(EthernetAddress(plane.mac).into());
        config.random_seed = mono_ns();
        let mut iface = Interface::new(config, &mut plane.dev, now());
        let (local, prefix) = (plane.local, plane.prefix);
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
        // Member of the group before the connect completes (AF_XDP joins through a kernel
        // socket; AF_PACKET accepted the group's MAC when it opened).
        let mcast = if plane.kernel_join {
            // Only a membership: never read, the smallest buffer.
            Some(crate::net::sockets::join_group(
                self.cfg.group,
                self.cfg.iface_addr,
                crate::net::sockets::MdJoin {
                    source: self.cfg.md_source,
                    rcvbuf: Some(0),
                    ..Default::default()
                },
            )?)
        } else {
            None
        };
        tracing::info!(%local, report = ?plane.guard.report(), "raw-ring path up");
        Ok(Session {
            sockets,
            iface,
            tcp,
            plane,
            unexpected_bytes: 0,
            foreign_md: 0,
            malformed_frames: 0,
            _membership: mcast,
        })
    }

    fn session_report(&self, s: &Session<R, T>) -> RingReport {
        RingReport {
            backend: s.plane.guard.report(),
            device: s.plane.dev.stats(),
            frames_accounted: s.plane.dev.accounted(),
            rx_queues: s.plane.dev.rx.queue_counts(),
            kernel_drops: s.plane.dev.rx.kernel_drops(),
            xsk_busy_poll: s.plane.dev.rx.busy_poll(),
            double_give_backs: s.plane.dev.rx.double_give_backs(),
            unexpected_bytes: s.unexpected_bytes,
            stale_frames: self.stale_frames,
            foreign_md: s.foreign_md,
            malformed_frames: s.malformed_frames,
            xtx: s.plane.xtx.as_ref().map(|x| {
                Box::new(XtxSessionReport {
                    xdp_tx: x.report(&s.plane.dev.tap),
                })
            }),
        }
    }
}

/// Sends an order the engine decided through smoltcp: the 21 bytes straight into its send
/// buffer, the egress poll building the segment straight into a ring TX slot.
#[inline]
fn send_through_stack<R: RxRing, T: TxRing>(
    sockets: &mut SocketSet<'static>,
    iface: &mut Interface,
    tcp: SocketHandle,
    dev: &mut RingDevice<R, T>,
    hot: &mut Hot<'_>,
    p: crate::net::hot::Pending,
) -> io::Result<Sent> {
    hot.send(p, |o| {
        // No room for the whole order in smoltcp's send buffer: held back.
        if !send_order(sockets.get_mut::<tcp::Socket>(tcp), o) {
            return Ok(Sent::HeldBack);
        }
        dev.tap.queued(ORDER_LEN);
        iface.poll(now(), dev, sockets);
        Ok(Sent::Now)
    })
}

/// How long the session's end waits for the record of a fire the program claimed (it is
/// committed before the program returns: microseconds on any CPU).
const SETTLE_WAIT_NS: u64 = 10_000_000;

impl<R: RxRing, T: TxRing> NetPath for RingPath<R, T> {
    fn begin_connect(&mut self) -> io::Result<()> {
        self.close();
        self.s = Some(self.setup()?);
        Ok(())
    }

    fn poll_connect(&mut self) -> io::Result<bool> {
        let Some(s) = &mut self.s else {
            return Err(io_other("not set up"));
        };
        // Market data that arrives before the session runs is held, not lost: an exchange
        // may publish the moment it accepts.
        // (Foreign and malformed ones too: they are counted when the session runs.)
        let flow = md_flow(&self.cfg);
        s.plane
            .dev
            .rx_to_stack_holding(|frame| classify(frame, &flow) != MdFrame::NotMd);
        s.iface.poll(now(), &mut s.plane.dev, &mut s.sockets);
        s.plane.dev.refill();
        s.plane.dev.reap_completions();
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
        // The group was joined in `begin_connect`.
        let _ = s;
        Ok(())
    }

    #[inline]
    fn poll(&mut self, hot: &mut Hot<'_>) -> io::Result<Status> {
        let Some(s) = &mut self.s else {
            return Ok(Status::Disconnected);
        };
        let n = s.plane.dev.recv_batch();
        if s.plane.xtx.is_some() {
            // Before the batch: a fire's line precedes every frame that arrived after it
            // (a fire made while user space was behind waits for the frames before it).
            let ring_empty = n == 0;
            complete_fires(s, hot, Completing::Running(Take::Ready { ring_empty }))?;
        }
        let mut need_poll = false;
        for i in 0..n {
            let desc = s.plane.dev.batch[i];
            // The program's index of a market-data frame (`xdp-tx` only), read once.
            let tag = match &s.plane.xtx {
                Some(_) => s.plane.dev.rx.tag(&desc),
                None => None,
            };
            if let Some(x) = &s.plane.xtx {
                if x.completes_before(tag) {
                    // A frame after a held fire: the frames before the fire were lost.
                    complete_fires(s, hot, Completing::Running(Take::Now))?;
                }
            }
            let pending = match classify(s.plane.dev.frame_data(&desc), &self.flow) {
                MdFrame::Payload(payload) => {
                    if let Some(x) = &mut s.plane.xtx {
                        x.learn(payload);
                    }
                    let p = hot.on_packet(payload);
                    if let Some(x) = &mut s.plane.xtx {
                        x.md_frame(tag);
                    }
                    s.plane.dev.recycle.push(desc);
                    p
                }
                MdFrame::NotMd => {
                    if s.plane.dev.tap.enabled {
                        s.plane.dev.tap.observe_rx(s.plane.dev.rx.data(&desc));
                    }
                    s.plane.dev.to_stack(desc);
                    need_poll = true;
                    None
                }
                // Never parsed: dropped and counted (logged at the session's end).
                MdFrame::Foreign => {
                    s.plane.dev.recycle.push(desc);
                    s.foreign_md += 1;
                    None
                }
                MdFrame::Malformed => {
                    // The program counted it: user space has seen it too.
                    if let Some(x) = &mut s.plane.xtx {
                        x.md_frame(tag);
                    }
                    s.plane.dev.recycle.push(desc);
                    s.malformed_frames += 1;
                    None
                }
            };
            if let Some(x) = &mut s.plane.xtx {
                let conflict = pending.is_some() && x.holding();
                if conflict {
                    x.held_conflict();
                }
                if conflict || x.held_ready() {
                    // The held fire's line is the next update (or its bytes must go into
                    // the stream before the engine's order).
                    complete_fires(s, hot, Completing::Running(Take::Now))?;
                }
            }
            if let Some(p) = pending {
                let Session {
                    sockets,
                    iface,
                    tcp,
                    plane: Opened { dev, .. },
                    ..
                } = s;
                send_through_stack(sockets, iface, *tcp, dev, hot, p)?;
            }
        }
        self.idle_turns = if n == 0 { self.idle_turns + 1 } else { 0 };
        if need_poll || self.idle_turns % 256 == 255 {
            s.iface.poll(now(), &mut s.plane.dev, &mut s.sockets);
            // The exchange sends no data on the order connection: whatever arrives is
            // drained (so smoltcp's window stays open), counted and logged once.
            let sock = s.sockets.get_mut::<tcp::Socket>(s.tcp);
            if sock.can_recv() {
                let n = sock.recv(|b| (b.len(), b.len())).unwrap_or(0);
                if s.unexpected_bytes == 0 && n > 0 {
                    tracing::warn!("the exchange sent bytes on the order connection (it sends none): dropped and counted");
                }
                s.unexpected_bytes += n as u64;
            }
        }
        if self.idle_turns % 4096 == 4095 {
            s.plane.guard.idle();
        }
        s.plane.dev.refill();
        s.plane.dev.reap_completions();
        let state = s.sockets.get::<tcp::Socket>(s.tcp).state();
        if let Some(x) = &mut s.plane.xtx {
            let ready = state == tcp::State::Established;
            x.publish(
                hot.engine,
                &mut s.plane.dev.tap,
                ready,
                !hot.delays.is_empty(),
            );
        }
        if !matches!(
            state,
            tcp::State::Established | tcp::State::SynSent | tcp::State::SynReceived
        ) {
            // The report is taken at `close`, which the runtime calls next.
            return Ok(Status::Disconnected);
        }
        Ok(if n > 0 { Status::Busy } else { Status::Idle })
    }

    fn settle(&mut self, hot: &mut Hot<'_>) -> io::Result<()> {
        let Some(s) = &mut self.s else {
            return Ok(());
        };
        let Some(x) = &mut s.plane.xtx else {
            return Ok(());
        };
        // No fire after this; one the program claimed first has its record on the way.
        let claimed = x.disarm().is_err();
        let t0 = mono_ns();
        let mut handled = complete_fires(s, hot, Completing::AtEnd)?;
        while claimed && handled == 0 {
            if mono_ns().saturating_sub(t0) > SETTLE_WAIT_NS {
                return Err(io_other(
                    "xdp-tx: the program claimed a fire whose record never came",
                ));
            }
            std::hint::spin_loop();
            handled = complete_fires(s, hot, Completing::AtEnd)?;
        }
        Ok(())
    }

    fn close(&mut self) {
        if let Some(mut s) = self.s.take() {
            s.sockets.get_mut::<tcp::Socket>(s.tcp).abort();
            s.iface.poll(now(), &mut s.plane.dev, &mut s.sockets);
            self.last_report = self.session_report(&s);
            if s.foreign_md + s.malformed_frames > 0 {
                tracing::warn!(
                    foreign = s.foreign_md,
                    malformed = s.malformed_frames,
                    source = ?self.cfg.md_source,
                    "dropped market-data frames from another source or that did not hold together (counted, never parsed)"
                );
            }
            tracing::info!(report = ?self.last_report, "raw-ring path down");
            // The plane stays for the next session, except `xdp-tx`'s: its armed state and
            // template belong to the session's connection.
            if s.plane.xtx.is_none() {
                self.plane = Some(s.plane);
            }
        }
    }

    fn prepare(&mut self) -> io::Result<()> {
        if self.plane.is_none() && self.s.is_none() {
            self.plane = Some((self.open)()?);
        }
        Ok(())
    }

    fn warm(&mut self, req: WarmRequest) -> io::Result<Option<Sent>> {
        let Some(s) = &mut self.s else {
            return Ok(None);
        };
        if req.tx {
            // An order-sized frame (Ethernet, IPv4, TCP, 21 bytes) written into a TX slot
            // that goes back unposted.
            s.plane
                .dev
                .tx
                .touch(14 + 20 + 20 + ORDER_LEN, |buf| buf.fill(0));
        }
        if !req.heartbeat {
            return Ok(None);
        }
        if let Some(x) = &mut s.plane.xtx {
            // The heartbeat would take the armed sequence number: take the ticket back
            // first. The program fired first: complete that (next poll), beat next turn.
            if x.disarm().is_err() {
                x.heartbeat_deferred();
                return Ok(None);
            }
        }
        let sock = s.sockets.get_mut::<tcp::Socket>(s.tcp);
        if sock.send_capacity() - sock.send_queue() < ORDER_LEN {
            return Ok(Some(Sent::HeldBack));
        }
        // `xdp-tx`: the program is re-armed between the heartbeat's post and its kick (on
        // a veth the kick runs the whole transmit: microseconds without a ticket out).
        let hold = s.plane.xtx.is_some();
        s.plane.dev.tx.hold_kicks(hold);
        let queued = match sock.send_slice(&proto::order::HEARTBEAT) {
            Ok(ORDER_LEN) => Ok(()),
            // Cannot happen with the room checked above; the stream would be torn.
            Ok(_) => Err(io_other("smoltcp took part of a heartbeat")),
            Err(e) => Err(io_other(e)),
        };
        if queued.is_ok() {
            s.plane.dev.tap.queued(ORDER_LEN);
            s.iface.poll(now(), &mut s.plane.dev, &mut s.sockets);
            if let Some(x) = &mut s.plane.xtx {
                let sock = s.sockets.get::<tcp::Socket>(s.tcp);
                x.rearm(
                    &mut s.plane.dev.tap,
                    sock.state() == tcp::State::Established,
                );
            }
        }
        if hold {
            s.plane.dev.tx.hold_kicks(false);
        }
        queued?;
        Ok(Some(Sent::Now))
    }

    fn report(&self) -> PathReport {
        PathReport::Ring(Box::new(match &self.s {
            Some(s) => self.session_report(s),
            None => self.last_report.clone(),
        }))
    }
}
