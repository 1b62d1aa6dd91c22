//! `strategy run`: the never-blocking state machine around a network path.
//!
//! Init -> Connecting -> Running -> (disconnect) Init, then reconnect with exponential
//! backoff (`--reconnect`) or exit. Every state is a non-blocking step of one busy loop, so
//! SIGINT/SIGTERM and `--max-runtime` are noticed within a loop turn. At the end of each
//! session the strategy prints and writes its report: packets, orders, engine counters,
//! UDP drops read from the kernel before and after, and its own packet-to-order latency.

use std::io::Write;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use mdfile::orders::{OrderRow, RowKind};
use serde::Serialize;
use tracing::{info, warn};

use crate::engine::{Engine, EngineStats};
use crate::latency::{Latency, Percentiles};
use crate::net::kernel::KernelPath;
use crate::net::uring::UringPath;
use crate::net::warm::{WarmConfig, WarmStats};
use crate::net::{Hot, NetKind, NetPath, OrderLog, PathReport, PathStats, Sent, Status, Warmer};
use hostsys::iface::iface_ipv4;
use hostsys::procfs::{ProcessSample, UdpCounters};
use hostsys::sched;

pub use crate::cli::RunArgs;

/// One session's report.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct SessionReport {
    /// Session number.
    pub session: u64,
    /// Network path.
    pub net: NetKind,
    /// Seconds connected.
    pub duration_s: f64,
    /// Order-path counters (one meaning each: see `strategy::net::hot`).
    pub path: PathStats,
    /// Engine counters.
    pub engine: EngineStatsReport,
    /// Triggers held back by risk limits.
    pub held_back: u64,
    /// UDP drops counted by the kernel during the session (this namespace).
    pub udp_drops: UdpCounters,
    /// Packet read -> order handed to the kernel, ns.
    pub latency_ns: Percentiles,
    /// Path-specific fields (AF_XDP: program counters, frame accounting).
    pub path_extra: PathReport,
    /// Warming counters (all zero without `--warm-every`).
    pub warm: WarmStats,
    /// This process's descriptors and memory at the session's end (soak tests).
    pub process: ProcessSample,
    /// `--wire-stamps`: the stamps the session's orders got, and the NIC's clock or why not.
    #[serde(default)]
    pub wire: Option<crate::net::stamps::WireReport>,
}

/// Engine counters, serializable.
#[derive(Debug, Clone, Copy, Serialize, serde::Deserialize)]
pub struct EngineStatsReport {
    /// Packets seen by the engine.
    pub packets: u64,
    /// Malformed packets.
    pub malformed: u64,
    /// Stale packets.
    pub stale: u64,
}

impl From<EngineStats> for EngineStatsReport {
    fn from(s: EngineStats) -> Self {
        Self {
            packets: s.packets,
            malformed: s.malformed,
            stale: s.stale,
        }
    }
}

enum State {
    Init {
        not_before: Instant,
    },
    Connecting {
        since: Instant,
    },
    Running {
        since: Instant,
        udp_before: UdpCounters,
    },
}

/// `--wire-stamps`: where it applies, and the NIC's stamps switched on where `--iface` has
/// them (before `--user` drops CAP_NET_ADMIN): the NIC's clock, or why not.
fn wire_stamps(a: &RunArgs) -> Result<Result<i32, String>> {
    if a.net != NetKind::Kernel {
        anyhow::bail!(
            "--wire-stamps: the kernel path's sockets carry the stamps; the {} path has none of its own",
            a.net.as_str()
        );
    }
    if a.sockets.md_recvmmsg || a.sockets.msg_zerocopy {
        anyhow::bail!("--wire-stamps reads one datagram per recvmsg and the order socket's error queue: not with --md-recvmmsg or --msg-zerocopy");
    }
    let nic = match a.iface.as_deref() {
        Some(i) => hostsys::hwtstamp::switch_on(i),
        None => Err("no --iface: the NIC's stamps need the interface".into()),
    };
    match &nic {
        Ok(phc) => info!(
            phc,
            "wire stamps: the kernel's clock and the NIC's (PHC {phc})"
        ),
        Err(why) => info!("wire stamps: the kernel's clock only ({why})"),
    }
    Ok(nic)
}

/// Entry point of `strategy run`.
pub fn main(a: &RunArgs) -> Result<()> {
    let iface_addr: Option<Ipv4Addr> = a
        .iface
        .as_deref()
        .map(iface_ipv4)
        .transpose()
        .context("--iface")?;
    let mut cfg = a.net_config(iface_addr);
    if a.sockets.wire_stamps {
        cfg.wire_stamps = Some(wire_stamps(a)?);
    }
    if (a.sockets.ip_tos.is_some() || a.sockets.so_priority.is_some())
        && !matches!(a.net, NetKind::Kernel | NetKind::Uring)
    {
        tracing::warn!(
            "--ip-tos/--so-priority mark the kernel socket of the order connection: the {} path's order connection is smoltcp's, unmarked",
            a.net.as_str()
        );
    }
    if let Some(cpu) = a.cpu {
        sched::pin_cpu(cpu).with_context(|| format!("pinning to CPU {cpu}"))?;
        info!(cpu, "pinned");
    }
    if a.rt {
        sched::set_fifo(50).context("SCHED_FIFO (needs root or CAP_SYS_NICE)")?;
    }
    if a.mlock {
        sched::mlock_all().context("mlockall (needs root or a large RLIMIT_MEMLOCK)")?;
    }
    let out = Outputs::open(a)?;
    match a.net {
        NetKind::Kernel => run_loop(a, out, KernelPath::new(cfg)),
        NetKind::Uring => run_loop(a, out, UringPath::new(cfg)),
        #[cfg(feature = "xdp")]
        NetKind::Xdp | NetKind::XdpTx => {
            let iface = a.iface.clone().context("--net xdp needs --iface")?;
            let queues = xsk_queues(&a.raw.xsk_queues, &iface)?;
            let xcfg = crate::net::af_xdp::XdpConfig {
                iface,
                queues,
                mode: a.raw.xdp_mode,
                bind: a.raw.xsk_bind,
                frame_size: a.raw.frame_size,
                frame_count: a.raw.frame_count,
                hugepages: a.raw.hugepages,
                diag: a.raw.xdp_diag,
                xdp_tx: a.net == NetKind::XdpTx,
                busy_poll: crate::net::sockets::BusyPoll {
                    us: a.sockets.busy_poll,
                    prefer_budget: a.sockets.prefer_busy_poll,
                },
            };
            run_loop(a, out, crate::net::af_xdp::path(cfg, xcfg))
        }
        #[cfg(feature = "xdp")]
        NetKind::Packet => {
            let iface = a.iface.clone().context("--net packet needs --iface")?;
            let local = a.raw.packet_ip.context(
                "--net packet needs --packet-ip (an unused address on the link for smoltcp)",
            )?;
            let pcfg = crate::net::af_packet::PacketConfig {
                iface,
                local,
                frame_size: a.raw.frame_size.max(2048),
                frames: a.raw.packet_frames,
                blocks: (a.raw.packet_ring == crate::cli::PacketRing::V3).then(|| {
                    crate::net::af_packet::v3::BlockGeometry {
                        block_size: a.raw.packet_block,
                        blocks: a.raw.packet_blocks,
                        timeout_ms: a.raw.packet_block_timeout.as_millis().min(u32::MAX.into())
                            as u32,
                    }
                }),
            };
            run_loop(a, out, crate::net::af_packet::path(cfg, pcfg))
        }
        #[cfg(not(feature = "xdp"))]
        NetKind::Xdp | NetKind::XdpTx | NetKind::Packet => {
            anyhow::bail!("this strategy was built without the `xdp` feature")
        }
    }
}

/// `--xsk-queues`: the queue numbers, `all` read from the interface.
#[cfg(feature = "xdp")]
fn xsk_queues(spec: &[String], iface: &str) -> Result<Vec<u32>> {
    if spec.iter().any(|s| s == "all") {
        let q = crate::net::af_xdp::rx_queues(iface)
            .with_context(|| format!("listing the RX queues of {iface}"))?;
        anyhow::ensure!(!q.is_empty(), "{iface} has no RX queue in sysfs");
        return Ok(q);
    }
    spec.iter()
        .map(|s| {
            s.parse()
                .with_context(|| format!("--xsk-queues: `{s}` is not a queue number"))
        })
        .collect()
}

fn run_loop<P: NetPath>(a: &RunArgs, mut out: Outputs, mut path: P) -> Result<()> {
    // The privileged set-up (the raw paths' data plane), then `--user`.
    path.prepare().context("opening the data plane")?;
    if let Some(user) = &a.user {
        let d = hostsys::privilege::drop_to_user(user, &crate::privilege::needed(a))?;
        info!(user = d.user, uid = d.uid, kept = ?d.kept, "set-up done: running as --user");
    }
    let shutdown = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&shutdown)).context("signal handler")?;
    }
    let every_ns = a
        .warming
        .warm_every
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    let warm_cfg =
        WarmConfig::parse_modes(every_ns, &a.warming.warm).map_err(anyhow::Error::msg)?;
    if warm_cfg.is_on() {
        info!(?warm_cfg, "warming the order path");
    }
    let mut tally = Tally {
        engine: Engine::new(a.trigger.engine_config()),
        latency: Latency::new(),
        log: OrderLog::with_capacity(1 << 20),
        stats: PathStats::default(),
        warmer: Warmer::new(warm_cfg),
    };
    let started = Instant::now();
    let deadline = a.max_runtime.map(|s| started + Duration::from_secs_f64(s));
    let mut state = State::Init {
        not_before: started,
    };
    let mut backoff = Duration::from_millis(20);
    let mut sessions = 0u64;
    let delays: Vec<u64> = a
        .inject_delay
        .iter()
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .collect();
    let delays: &[u64] = if delays.iter().all(|&d| d == 0) {
        &[]
    } else {
        &delays
    };
    let md_work_ns = u64::try_from(a.md_work.as_nanos()).unwrap_or(u64::MAX);
    info!(net = a.net.as_str(), exchange = %a.exchange, group = %a.md_group, "state Init");
    loop {
        if shutdown.load(Ordering::Relaxed) || deadline.is_some_and(|d| Instant::now() >= d) {
            if let State::Running { since, udp_before } = state {
                sessions += 1;
                settle(&mut path, &mut tally, delays, md_work_ns);
                finish_session(a, &mut out, &mut path, &tally, sessions, since, udp_before)?;
            }
            path.close();
            info!("exit");
            return Ok(());
        }
        state = match state {
            State::Init { not_before } => {
                if Instant::now() < not_before {
                    std::hint::spin_loop();
                    State::Init { not_before }
                } else {
                    match path.begin_connect() {
                        Ok(()) => State::Connecting {
                            since: Instant::now(),
                        },
                        Err(e) if retriable(&e) => {
                            warn!("connect: {e}");
                            retry(&mut backoff)
                        }
                        Err(e) => {
                            // A local set-up error (the group join, the XDP attach, a
                            // socket option): retrying would not change it.
                            path.close();
                            return Err(e).context("setting up the session");
                        }
                    }
                }
            }
            State::Connecting { since } => {
                step_connecting(&mut path, &mut tally, since, &mut backoff)?
            }
            State::Running { since, udp_before } => {
                let before = tally.stats.packets;
                let mut hot = tally.hot(delays, md_work_ns);
                let status = match path.poll(&mut hot) {
                    Ok(s) => s,
                    Err(e) => {
                        warn!("network error: {e}");
                        Status::Disconnected
                    }
                };
                let batch = tally.stats.packets - before;
                tally.stats.rx_batches.record(batch);
                if status == Status::Idle {
                    warm_turn(&mut path, &mut tally);
                }
                if a.panic_after_packets
                    .is_some_and(|n| tally.stats.packets >= n)
                {
                    panic!("--panic-after-packets reached (test hook)");
                }
                if status == Status::Disconnected {
                    sessions += 1;
                    settle(&mut path, &mut tally, delays, md_work_ns);
                    finish_session(a, &mut out, &mut path, &tally, sessions, since, udp_before)?;
                    path.close();
                    info!("state Running -> Init (disconnected)");
                    if !a.reconnect || a.sessions.is_some_and(|m| sessions >= m) {
                        return Ok(());
                    }
                    if tally.stats.packets > 0 {
                        // A session that traded: the exchange is back in Init, go at once.
                        State::Init {
                            not_before: Instant::now(),
                        }
                    } else {
                        retry(&mut backoff)
                    }
                } else {
                    State::Running { since, udp_before }
                }
            }
        };
    }
}

/// One turn in Connecting: on success the session's tallies start from zero and market
/// data starts; a refused or timed-out connect goes back to Init with backoff.
fn step_connecting<P: NetPath>(
    path: &mut P,
    tally: &mut Tally,
    since: Instant,
    backoff: &mut Duration,
) -> Result<State> {
    Ok(match path.poll_connect() {
        Ok(true) => {
            tally.engine.reset();
            tally.latency.reset();
            tally.log.clear();
            tally.stats = PathStats::default();
            tally.warmer.reset();
            let udp_before = UdpCounters::read();
            if let Err(e) = path.start_md() {
                path.close();
                return Err(e).context("starting market data");
            }
            info!("state Connecting -> Running");
            *backoff = Duration::from_millis(20);
            State::Running {
                since: Instant::now(),
                udp_before,
            }
        }
        Ok(false) if since.elapsed() < Duration::from_secs(3) => State::Connecting { since },
        Ok(false) => {
            warn!("connect timed out");
            path.close();
            retry(backoff)
        }
        Err(e) => {
            warn!("connect: {e}");
            path.close();
            retry(backoff)
        }
    })
}

/// Errors of the network between here and the exchange, worth another try; anything else
/// in setting up a session is local and final.
fn retriable(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{
        ConnectionAborted, ConnectionRefused, ConnectionReset, HostUnreachable, NetworkUnreachable,
        TimedOut,
    };
    matches!(
        e.kind(),
        ConnectionRefused
            | ConnectionReset
            | ConnectionAborted
            | TimedOut
            | HostUnreachable
            | NetworkUnreachable
    )
}

fn retry(backoff: &mut Duration) -> State {
    let s = State::Init {
        not_before: Instant::now() + *backoff,
    };
    *backoff = (*backoff * 2).min(Duration::from_secs(1));
    s
}

/// What one session accumulates: the book and trigger, the latency histogram, the orders,
/// the counters, the warming schedule.
struct Tally {
    engine: Engine,
    latency: Latency,
    log: OrderLog,
    stats: PathStats,
    warmer: Warmer,
}

impl Tally {
    /// The hot-path context over this session's tallies.
    fn hot<'a>(&'a mut self, delays: &'a [u64], md_work_ns: u64) -> Hot<'a> {
        Hot {
            engine: &mut self.engine,
            latency: &mut self.latency,
            log: &mut self.log,
            stats: &mut self.stats,
            delays,
            md_work_ns,
        }
    }
}

/// The session's end, before its report: the path finishes what it owes the order log. A
/// failure is logged (the session is over either way).
fn settle<P: NetPath>(path: &mut P, tally: &mut Tally, delays: &[u64], md_work_ns: u64) {
    let mut hot = tally.hot(delays, md_work_ns);
    if let Err(e) = path.settle(&mut hot) {
        warn!("settling the session: {e}");
    }
}

/// An idle turn: warm the order path when the interval has passed. A path error here is
/// left for the next `poll` to report (the connection is the same).
#[inline]
fn warm_turn<P: NetPath>(path: &mut P, tally: &mut Tally) {
    let Some(req) = tally.warmer.due(&tally.engine) else {
        return;
    };
    if let Ok(Some(sent)) = path.warm(req) {
        tally.warmer.heartbeat_sent(sent != Sent::HeldBack);
    }
}

/// The output files, opened (appending) before `--user` drops root.
struct Outputs {
    results: Option<std::fs::File>,
    orders: Option<std::fs::File>,
}

impl Outputs {
    fn open(a: &RunArgs) -> Result<Self> {
        let open = |p: &std::path::Path| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .with_context(|| format!("{}", p.display()))
        };
        let results = a.results.as_deref().map(open).transpose()?;
        let mut orders = a.orders_out.as_deref().map(open).transpose()?;
        if let Some(f) = &mut orders {
            if f.metadata()?.len() == 0 {
                writeln!(f, "{}", RowKind::Strategy.header())?;
            }
        }
        Ok(Self { results, orders })
    }
}

fn finish_session<P: NetPath>(
    a: &RunArgs,
    out: &mut Outputs,
    path: &mut P,
    tally: &Tally,
    session: u64,
    since: Instant,
    udp_before: UdpCounters,
) -> Result<()> {
    let report = SessionReport {
        session,
        net: a.net,
        duration_s: since.elapsed().as_secs_f64(),
        path: tally.stats,
        engine: tally.engine.stats().into(),
        held_back: tally.engine.trigger_stats().held_back,
        udp_drops: UdpCounters::read().since(&udp_before),
        latency_ns: tally.latency.percentiles(),
        path_extra: path.report(),
        warm: tally.warmer.stats(),
        process: ProcessSample::now(),
        wire: path.wire(),
    };
    let l = report.latency_ns;
    println!(
        "strategy session {session} ({}): packets {}, orders {} (queued {}, not sent: transport full {}), malformed {}, stale {}, held back by risk {}, udp drops {}/{}; \
         packet->order ns p50 {} p90 {} p99 {} max {}",
        a.net.as_str(),
        report.path.packets,
        report.path.orders,
        report.path.orders_queued,
        report.path.orders_held_back,
        report.engine.malformed,
        report.engine.stale,
        report.held_back,
        report.udp_drops.rcvbuf_errors,
        report.udp_drops.in_errors,
        l.p50,
        l.p90,
        l.p99,
        l.max
    );
    if report.warm.turns > 0 {
        println!(
            "strategy session {session}: warming turns {}, heartbeats sent {}, heartbeats held back {}",
            report.warm.turns, report.warm.heartbeats, report.warm.heartbeats_held_back
        );
    }
    let json = serde_json::to_string(&report)?;
    println!("strategy-summary: {json}");
    if let Some(f) = &mut out.results {
        writeln!(f, "{json}")?;
    }
    if let Some(f) = &mut out.orders {
        let mut f = std::io::BufWriter::new(f);
        for o in tally.log.orders() {
            let row = OrderRow {
                session,
                order: o.order,
                gap: o.gap,
                timing: None,
                delay_ns: Some(o.delay_ns),
                stages: Some(mdfile::orders::Stages {
                    wire_kernel_ns: o.wire.kernel_ns(),
                    wire_nic_ns: o.wire.nic_ns(),
                    ..o.stages
                }),
            };
            row.write(RowKind::Strategy, &mut f)?;
        }
        f.flush()?;
    }
    let _ = std::io::stdout().flush();
    Ok(())
}
