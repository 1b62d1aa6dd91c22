//! The exchange's event loop and its INIT -> HANDSHAKE -> TRANSMIT -> INIT state machine.
//!
//! One thread, one `mio::Poll`, non-blocking sockets: the order-entry listener and the
//! current session's connection (the market-data socket is not in it: its queued TX
//! timestamps are read on every turn while one is due). Each loop turn: wait (in
//! `epoll_wait` until about 1 ms before the next send deadline, then spinning; always
//! spinning with `--spin`), handle events, send every packet that is due (bounded batch,
//! so orders are read between batches), read the TX stamps due, check the grace timer and
//! the shutdown flag.
//!
//! * INIT: listening, no session.
//! * HANDSHAKE: a client is connected; snapshot lines are published; bytes the client
//!   sends are read, counted and logged as rejected.
//! * TRANSMIT: from the first non-snapshot line on; orders are decoded, logged and matched
//!   to the send time of the first packet carrying their trigger id.
//! * End of file: grace period (orders still read; cut short once `--expect-orders` are
//!   in), report, close, INIT. Disconnect: stop, report, close, INIT. A second client
//!   while a session is active is accepted and closed.

use std::io::{self, Write};
use std::net::{SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use tracing::{error, info, warn};

use crate::formatter::PacketFormatter;
use crate::md_publisher::{MdPublisher, PublisherConfig};
use crate::order_entry::OrderStream;
use crate::pacing::{Pace, Pacer};
use crate::results::{EndReason, ResultsSink, SessionStats};
use hostsys::clock::mono_ns;
use mdfile::{MdReader, ReadError};

mod order_rx;
mod replay;
mod rx_warm;
mod send_log;

const LISTENER: Token = Token(0);
const CONN: Token = Token(1);
/// Packets sent per loop turn at most (one `sendmmsg`), so orders are read between batches.
const SEND_BATCH: usize = crate::md_publisher::BATCH;
/// Below this distance to the next deadline the loop spins instead of sleeping.
const SPIN_WINDOW_NS: u64 = 1_500_000;

/// Server settings (`exchange serve` flags).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The gzip CSV file.
    pub md_file: PathBuf,
    /// Order-entry listen address.
    pub oe_listen: SocketAddr,
    /// Market-data sender settings.
    pub publisher: PublisherConfig,
    /// Replay pace.
    pub pace: Pace,
    /// Wait for in-flight orders after the end of the file.
    pub grace: Duration,
    /// End the grace as soon as this many orders were accepted in the session
    /// (`--expect-orders`: the lab and the tests know the oracle's count); `None`: the
    /// whole grace.
    pub expect_orders: Option<u64>,
    /// Pause between accept and the first packet, so the client can join the group.
    pub handshake_delay: Duration,
    /// A packet later than this after its deadline counts as late.
    pub late_threshold: Duration,
    /// Spin instead of sleeping in epoll_wait.
    pub spin: bool,
    /// Exit after this many sessions.
    pub max_sessions: Option<u64>,
    /// Per-order CSV.
    pub results: Option<PathBuf>,
    /// Session summaries (JSON lines).
    pub summary: Option<PathBuf>,
    /// Log every order to stdout.
    pub log_orders: bool,
    /// Count and discard heartbeat messages (side 255) instead of counting them invalid:
    /// an opt-in deviation for the warming experiments.
    pub accept_heartbeats: bool,
    /// Keep the exchange's own receive path warm with a loopback heartbeat every this many
    /// ns (0 = off; see `rx_warm`).
    pub warm_rx_every_ns: u64,
    /// Decimals of `amount` for line validation.
    pub amount_decimals: u8,
    /// Accept order-entry connections only from these addresses (`--allow-peer`; empty:
    /// from anyone). Others are closed at once, logged and counted.
    pub allow_peers: Vec<std::net::IpAddr>,
    /// Use the NIC's hardware timestamps when `--md-iface` has them (`--hw-timestamps`).
    pub hw_timestamps: bool,
    /// Mark the first packet of these trigger ids for a reflecting strategy (`--mark-ids`:
    /// the floor's runs; [`proto::reflect`]).
    pub mark_ids: Option<std::collections::HashSet<u64>>,
    /// Inflate the file into memory once, at start, and replay every session from there
    /// (`--preload`).
    pub preload: bool,
}

/// Errors that stop the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The market-data file is unusable.
    #[error(transparent)]
    File(#[from] ReadError),
    /// Socket setup failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Why.
        source: io::Error,
    },
}

/// Hardware stamps for this exchange: switched on for `--md-iface` when it has them (the
/// PHC), or why not.
fn hw_stamps(cfg: &ServerConfig) -> Result<i32, String> {
    if !cfg.hw_timestamps {
        return Err("--hw-timestamps off".into());
    }
    if !cfg.publisher.tx_timestamps {
        return Err("--no-tx-timestamps".into());
    }
    match cfg.publisher.iface.as_deref() {
        None => Err("no --md-iface".into()),
        Some(i) if i.parse::<std::net::Ipv4Addr>().is_ok() => Err(format!(
            "--md-iface {i} is an address; hardware stamps need the interface's name"
        )),
        Some(name) => hostsys::hwtstamp::switch_on(name),
    }
}

fn io_err(what: &'static str) -> impl FnOnce(io::Error) -> ServerError {
    move |source| ServerError::Io { what, source }
}

/// Send times of the packets carrying one trigger id.
#[derive(Debug, Clone, Copy, Default)]
struct SendTimes {
    first: u64,
    last: u64,
    ktx_first: Option<u64>,
    /// The NIC's hardware TX stamp of the first packet with this id.
    khw_first: Option<u64>,
    /// Send time of the packet before the first one with this id (the idle time of the
    /// market-data path before the trigger).
    prev: Option<u64>,
}

impl SendTimes {
    /// The first packet of an id, sent at `send_ns`.
    fn first_send(send_ns: u64, prev: Option<u64>) -> Self {
        Self {
            first: send_ns,
            last: send_ns,
            ktx_first: None,
            khw_first: None,
            prev,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Handshake,
    Transmit,
    Grace { until_ns: u64 },
}

/// A packet read from the file and formatted, waiting for its deadline.
#[derive(Debug, Clone, Copy)]
struct Pending {
    len: usize,
    id: u64,
    snapshot: bool,
    deadline: u64,
}

struct Session {
    conn: TcpStream,
    reader: Option<MdReader<mdfile::Source>>,
    stream: OrderStream,
    pacer: Pacer,
    phase: Phase,
    /// Packets read and formatted, in file order, not yet sent: `queue[i]` is in
    /// `Server::pkts[i]`; only the last may be not yet due (the publisher reads no further).
    queue: Vec<Pending>,
    /// Send times by trigger id ([`send_log`]).
    sends: send_log::SendLog,
    /// Receive time of the previous order (the gap before the next one).
    last_order_recv_ns: Option<u64>,
    /// The id of the last packet read (`--mark-ids` marks an id's first packet).
    last_id_read: Option<u64>,
    stats: SessionStats,
}

/// The exchange.
pub struct Server {
    cfg: ServerConfig,
    poll: Poll,
    listener: TcpListener,
    md: MdPublisher,
    formatter: Box<dyn PacketFormatter>,
    session: Option<Session>,
    sessions: u64,
    sink: ResultsSink,
    out: io::BufWriter<io::Stdout>,
    /// One packet buffer per queued packet (`Session::queue`).
    pkts: Box<[[u8; 65536]; SEND_BATCH]>,
    shutdown: Arc<AtomicBool>,
    rx_warm: Option<rx_warm::RxWarmer>,
    /// Connections refused by `--allow-peer` since the last session's summary.
    refused_peers: u64,
    /// Hardware stamps on (the PHC), or why not, for every summary.
    hw: Result<i32, String>,
    /// The file's contents with `--preload` (every session reads from them).
    preloaded: Option<Arc<[u8]>>,
}

impl Server {
    /// Checks the file, binds the sockets.
    pub fn new(
        cfg: ServerConfig,
        formatter: Box<dyn PacketFormatter>,
        shutdown: Arc<AtomicBool>,
    ) -> Result<Self, ServerError> {
        // Fail early and clearly on a missing or corrupt file (with `--preload`, a corrupt
        // one anywhere, not only in its first block).
        let preloaded = if cfg.preload {
            let bytes = mdfile::inflate_all(&cfg.md_file)?;
            info!(
                bytes = bytes.len(),
                "market data inflated into memory (--preload)"
            );
            Some(bytes)
        } else {
            None
        };
        MdReader::open_source(&cfg.md_file, preloaded.as_ref())?;
        let poll = Poll::new().map_err(io_err("epoll_create"))?;
        let mut listener = TcpListener::bind(cfg.oe_listen).map_err(|e| ServerError::Io {
            what: "bind order-entry listener (--oe-listen)",
            source: io::Error::new(e.kind(), format!("{}: {e}", cfg.oe_listen)),
        })?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)
            .map_err(io_err("register listener"))?;
        let hw = hw_stamps(&cfg);
        match &hw {
            Ok(phc) => info!(phc, "hardware timestamps on"),
            Err(why) => info!("hardware timestamps off: {why}"),
        }
        let publisher = crate::md_publisher::PublisherConfig {
            hw: hw.is_ok(),
            ..cfg.publisher.clone()
        };
        let md = MdPublisher::new(&publisher).map_err(io_err("market-data socket"))?;
        let sink = ResultsSink::open(cfg.results.as_deref(), cfg.summary.as_deref())
            .map_err(io_err("results file"))?;
        let rx_warm = if cfg.warm_rx_every_ns > 0 {
            Some(
                rx_warm::RxWarmer::new(cfg.warm_rx_every_ns)
                    .map_err(io_err("loopback pair for --warm-rx-every"))?,
            )
        } else {
            None
        };
        let server = Self {
            cfg,
            poll,
            listener,
            md,
            formatter,
            session: None,
            sessions: 0,
            sink,
            out: io::BufWriter::new(io::stdout()),
            pkts: vec![[0u8; 65536]; SEND_BATCH]
                .into_boxed_slice()
                .try_into()
                .map_err(|_| io_err("packet buffers")(io::Error::other("size")))?,
            shutdown,
            rx_warm,
            refused_peers: 0,
            hw,
            preloaded,
        };
        // The market-data socket is not in the epoll set: registered, every packet's
        // completion (`sock_wfree` -> `sock_def_write_space`) took the socket's wait-queue
        // lock to wake the epoll entry. Its TX stamps are read after the sends that wait for
        // one, on every turn while one is due, and before each order is matched.
        Ok(server)
    }

    /// The bound order-entry address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Runs until the shutdown flag is set or `max_sessions` have ended; returns the number
    /// of sessions accepted (their summaries went to the results sink as they ended:
    /// none is kept in memory, so a long-running exchange stays flat).
    pub fn run(&mut self) -> Result<u64, ServerError> {
        let mut events = Events::with_capacity(64);
        info!(
            listen = %self.local_addr().map_err(io_err("local_addr"))?,
            group = %self.cfg.publisher.group,
            pace = %self.cfg.pace,
            "{}",
            crate::serve_cmd::LISTENING
        );
        loop {
            if self.shutdown.load(Ordering::Relaxed) {
                if self.session.is_some() {
                    self.end_session(EndReason::Signal);
                }
                info!("shutdown");
                break;
            }
            if self.cfg.max_sessions.is_some_and(|m| self.sessions >= m) && self.session.is_none() {
                break;
            }
            let timeout = self.timeout();
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(ServerError::Io {
                        what: "epoll_wait",
                        source: e,
                    });
                }
            }
            let mut idle = events.is_empty();
            for ev in &events {
                match ev.token() {
                    LISTENER => self.accept_all(),
                    CONN => self.read_conn(),
                    _ => {}
                }
            }
            idle &= !self.publish_due();
            if self.md.stamps_pending() {
                self.drain_tx_timestamps();
            }
            self.check_grace();
            if idle {
                if let Some(w) = &mut self.rx_warm {
                    w.turn();
                }
                let _ = self.out.flush();
            }
        }
        if let Some(w) = &self.rx_warm {
            info!(turns = w.turns, "receive path warmed over loopback");
        }
        let _ = self.out.flush();
        let _ = self.sink.flush();
        Ok(self.sessions)
    }

    fn timeout(&self) -> Duration {
        let Some(s) = &self.session else {
            return Duration::from_millis(50);
        };
        if self.cfg.spin {
            return Duration::ZERO;
        }
        let now = mono_ns();
        let until = match (s.phase, s.queue.first()) {
            (Phase::Grace { until_ns }, _) => until_ns,
            (_, Some(p)) => p.deadline,
            (_, None) => now,
        };
        let wait = until.saturating_sub(now);
        if wait <= SPIN_WINDOW_NS {
            Duration::ZERO
        } else {
            Duration::from_nanos((wait - SPIN_WINDOW_NS).div_ceil(1_000_000) * 1_000_000)
                .min(Duration::from_millis(50))
        }
    }

    fn accept_all(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((conn, peer)) => {
                    if !self.cfg.allow_peers.is_empty()
                        && !self.cfg.allow_peers.contains(&peer.ip())
                    {
                        self.refused_peers += 1;
                        warn!(%peer, "refusing a connection from a peer not allowed (--allow-peer): closed");
                        drop(conn);
                    } else if self.session.is_some() {
                        info!(%peer, "rejecting a second client: a session is active (connection closed)");
                        drop(conn);
                    } else {
                        self.start_session(conn, peer);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                // The client gave up before we accepted: take the next one.
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ECONNABORTED | libc::EINTR | libc::EPROTO)
                    ) => {}
                Err(e) => {
                    warn!("accept: {e}");
                    return;
                }
            }
        }
    }

    fn start_session(&mut self, mut conn: TcpStream, peer: SocketAddr) {
        let reader = match MdReader::open_source(&self.cfg.md_file, self.preloaded.as_ref()) {
            Ok(r) => r.with_amount_decimals(self.cfg.amount_decimals),
            Err(e) => {
                error!(%peer, "cannot start session: {e}");
                return;
            }
        };
        let _ = conn.set_nodelay(true);
        if let Err(e) = hostsys::errqueue::enable_rx_timestamps(conn.as_raw_fd(), self.hw.is_ok()) {
            warn!("no kernel RX timestamps on the order socket: {e}");
        }
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut conn, CONN, Interest::READABLE)
        {
            error!(%peer, "register connection: {e}");
            return;
        }
        self.sessions += 1;
        let now = mono_ns();
        let start = now + u64::try_from(self.cfg.handshake_delay.as_nanos()).unwrap_or(u64::MAX);
        info!(session = self.sessions, %peer, "state INIT -> HANDSHAKE");
        self.md.reset_pending();
        let ts_missing = self.md.ts_missing;
        let mut stats = SessionStats::new(self.sessions, peer.to_string(), now);
        stats.counters.tx_ts_missing = ts_missing; // baseline, subtracted at the end
        stats.counters.tx_stamped = self.md.stamped; // likewise
        stats.hw_timestamps = match &self.hw {
            Ok(phc) => format!("on: PHC {phc}"),
            Err(why) => format!("off: {why}"),
        };
        self.session = Some(Session {
            conn,
            reader: Some(reader),
            stream: OrderStream::new(),
            pacer: Pacer::new(self.cfg.pace, start),
            phase: Phase::Handshake,
            queue: Vec::with_capacity(SEND_BATCH),
            sends: send_log::SendLog::new(),
            last_order_recv_ns: None,
            last_id_read: None,
            stats,
        });
    }

    fn end_session(&mut self, reason: EndReason) {
        let Some(mut s) = self.session.take() else {
            return;
        };
        self.drain_tx_into(&mut s);
        self.md.reset_pending();
        let _ = self.poll.registry().deregister(&mut s.conn);
        if reason != EndReason::Disconnected {
            // Say we are done (FIN), then read what the client had already sent (warming
            // heartbeats, late orders): closing with unread bytes would answer with a reset.
            // Counted, not processed: the session is over.
            let _ = s.conn.shutdown(std::net::Shutdown::Write);
            let mut buf = [0u8; 4096];
            while let Ok(n) = std::io::Read::read(&mut s.conn, &mut buf) {
                if n == 0 {
                    break;
                }
                s.stats.counters.bytes_after_end += n as u64;
            }
        }
        s.stats.end_ns = mono_ns();
        s.stats.counters.tx_ts_missing = self.md.ts_missing - s.stats.counters.tx_ts_missing;
        s.stats.counters.tx_stamped = self.md.stamped - s.stats.counters.tx_stamped;
        s.stats.counters.refused_peers = std::mem::take(&mut self.refused_peers);
        let summary = s.stats.summary(reason);
        let _ = summary.print(&mut self.out);
        if let Ok(json) = serde_json::to_string(&summary) {
            let _ = writeln!(self.out, "summary: {json}");
        }
        let _ = self.out.flush();
        if let Err(e) = self.sink.summary(&summary) {
            error!("writing results: {e}");
        }
        info!(
            session = s.stats.session,
            ?reason,
            "state -> INIT: connection and file closed"
        );
        // Dropping `s` closes the connection and the file.
    }

    fn check_grace(&mut self) {
        if let Some(Session {
            phase: Phase::Grace { until_ns },
            stats,
            ..
        }) = &self.session
        {
            if self
                .cfg
                .expect_orders
                .is_some_and(|n| stats.counters.orders_accepted >= n)
            {
                self.end_session(EndReason::ExpectedOrders);
            } else if mono_ns() >= *until_ns {
                self.end_session(EndReason::EndOfFile);
            }
        }
    }
}

/// The default group as a socket address.
pub fn default_group() -> SocketAddrV4 {
    SocketAddrV4::new(proto::DEFAULT_MD_GROUP.into(), proto::DEFAULT_MD_PORT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_group_is_the_spec() {
        assert_eq!(default_group().to_string(), "239.255.0.1:12345");
    }
}
