//! Command-line pieces: the trigger flags shared by `strategy replay` and `strategy run`,
//! and the flags of `strategy run`.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;

use crate::engine::EngineConfig;
use crate::net::uring::UringOptions;
use crate::net::{NetConfig, NetKind};
use crate::trigger::{Threshold, TriggerConfig};

/// Trigger, risk and book flags.
#[derive(Debug, Clone, clap::Args)]
pub struct TriggerArgs {
    /// Levels from the top of a side where an increase counts.
    #[arg(long, default_value_t = 5)]
    pub levels: usize,
    /// Size-increase threshold in amount units (fires when the increase is MORE than this).
    #[arg(long, default_value_t = 50_000_000, conflicts_with = "notional")]
    pub threshold: u64,
    /// Notional threshold instead: price x increase > this many dollars (e.g. 1000000).
    #[arg(long)]
    pub notional: Option<u64>,
    /// Decimal places of `amount` (scaled into integer units; 0 for Deribit USD amounts).
    #[arg(long, default_value_t = 0)]
    pub amount_decimals: u8,
    /// Order quantity.
    #[arg(long, default_value_t = 1)]
    pub qty: u32,
    /// Cap the quantity at the size shown at the price the order hits.
    #[arg(long)]
    pub cap_by_size: bool,
    /// Risk: max orders per session.
    #[arg(long, default_value_t = 1_000_000)]
    pub max_orders: u64,
    /// Risk: max orders per second (0 = unlimited).
    #[arg(long, default_value_t = 0)]
    pub max_per_sec: u32,
    /// Risk: max quantity per order.
    #[arg(long, default_value_t = u32::MAX)]
    pub max_qty: u32,
    /// Levels per side the book holds (fixed; more are dropped and counted).
    #[arg(long, default_value_t = 4096)]
    pub book_capacity: usize,
    /// The floor: answer the exchange's marked packets (`exchange serve --mark-ids`) with an
    /// order at once, through the same path, with no parse and no book; every other packet
    /// is dropped (the lab's `+reflect` variants).
    #[arg(long)]
    pub reflect: bool,
}

impl TriggerArgs {
    /// The engine settings these flags describe.
    pub fn engine_config(&self) -> EngineConfig {
        EngineConfig {
            reflect: self.reflect,
            book_capacity: self.book_capacity.max(1),
            trigger: TriggerConfig {
                levels: self.levels,
                threshold: self
                    .notional
                    .map_or(Threshold::Size(self.threshold), |dollars| {
                        Threshold::Notional { dollars }
                    }),
                amount_decimals: self.amount_decimals,
                qty: self.qty.max(1),
                cap_by_size: self.cap_by_size,
                max_orders: self.max_orders,
                max_per_sec: self.max_per_sec,
                max_qty: self.max_qty,
            },
        }
    }
}

/// Flags of `strategy run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Exchange order-entry address.
    #[arg(long, default_value = "127.0.0.1:9012")]
    pub exchange: SocketAddrV4,
    /// Market-data group and port.
    #[arg(long, default_value = "239.255.0.1:12345")]
    pub md_group: SocketAddrV4,
    /// Interface to join the group on (its first IPv4 address is used).
    #[arg(long)]
    pub iface: Option<String>,
    /// Network path: kernel, uring, xdp or packet.
    #[arg(long, default_value = "kernel")]
    pub net: NetKind,
    /// Trigger, risk and book settings.
    #[command(flatten)]
    pub trigger: TriggerArgs,
    /// The market-data socket and the order connection of the kernel and io_uring paths.
    #[command(flatten)]
    pub sockets: SocketArgs,
    /// The io_uring path's set-up (resolved into a plan: `net::uring::plan`).
    #[command(flatten)]
    pub uring: UringArgs,
    /// The raw-ring paths: the XDP program, the AF_XDP sockets and UMEM, AF_PACKET's own address.
    #[command(flatten)]
    pub raw: RawArgs,
    /// Keeping the order path warm while no order goes out.
    #[command(flatten)]
    pub warming: WarmArgs,
    /// Pin the strategy thread to this CPU.
    #[arg(long)]
    pub cpu: Option<usize>,
    /// SCHED_FIFO (priority 50) for the strategy thread.
    #[arg(long)]
    pub rt: bool,
    /// Lock all memory (mlockall).
    #[arg(long)]
    pub mlock: bool,
    /// Reconnect after a disconnect (with backoff) instead of exiting.
    #[arg(long)]
    pub reconnect: bool,
    /// Exit after this many seconds.
    #[arg(long)]
    pub max_runtime: Option<f64>,
    /// Exit after this many sessions.
    #[arg(long)]
    pub sessions: Option<u64>,
    /// Append one JSON report per session to this file.
    #[arg(long)]
    pub results: Option<PathBuf>,
    /// Append the orders sent (session,trigger_id,side,price,qty) to this CSV.
    #[arg(long)]
    pub orders_out: Option<PathBuf>,
    /// Test hook: panic once this many packets were received (checks that every exit path,
    /// unwinding included, cleans up).
    #[arg(long, hide = true)]
    pub panic_after_packets: Option<u64>,
    /// Busy-wait between the trigger and the send (calibration), e.g. 10us; a list
    /// (0,10us,50us) cycles through its values order by order, so several delays are
    /// measured in one session under the same conditions.
    #[arg(long, value_delimiter = ',', default_value = "0us", value_parser = parse_delay)]
    pub inject_delay: Vec<Duration>,
    /// Busy-wait this long after each market-data packet (e.g. 20us): a heavier strategy,
    /// or one that falls behind the feed (tests `xdp-tx` never deciding on a stale book).
    #[arg(long, default_value = "0us", value_parser = parse_delay)]
    pub md_work: Duration,
    /// Accept market data only from this source: `exchange` (the exchange's address),
    /// `any`, or an address. Kernel and io_uring paths join source-specific (the kernel
    /// drops the others); the raw paths and the XDP program drop and count them.
    #[arg(long, default_value = "exchange", value_parser = parse_md_source)]
    pub md_source: MdSource,
    /// After the one-time set-up, become this user, keeping only the capabilities the path
    /// still needs (strategy::privilege); the output files are opened before.
    #[arg(long)]
    pub user: Option<String>,
    /// With --user: keep this capability too (e.g. cap_sys_nice); repeatable.
    #[arg(long, value_parser = parse_cap)]
    pub keep_cap: Vec<String>,
}

/// The market-data socket and the order connection of the kernel and io_uring paths.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Kernel sockets and io_uring")]
pub struct SocketArgs {
    /// SO_BUSY_POLL on the market-data socket, microseconds (0 = off); on the AF_XDP paths
    /// on every AF_XDP socket, which then runs its queue's NAPI poll in a `recv` whenever its
    /// RX ring is empty (zero-copy sockets only: a copy-mode socket has no NAPI to poll).
    #[arg(long, default_value_t = 0)]
    pub busy_poll: u32,
    /// SO_PREFER_BUSY_POLL on the market-data socket with this SO_BUSY_POLL_BUDGET (kernel
    /// and io_uring paths; refused on AF_XDP; with --busy-poll, and the device's napi_defer_hard_irqs /
    /// gro_flush_timeout: the lab's `napidefer` tuning).
    #[arg(long, default_value_t = 0)]
    pub prefer_busy_poll: u32,
    /// Kernel path: send orders with MSG_ZEROCOPY (completions read from the error queue).
    #[arg(long)]
    pub msg_zerocopy: bool,
    /// IP_TOS byte on the order connection (kernel and io_uring paths), e.g. 16 (0x10,
    /// low delay) or a DSCP << 2 such as 184 (EF).
    #[arg(long)]
    pub ip_tos: Option<u8>,
    /// SO_PRIORITY on the order connection (kernel and io_uring paths; 0-6 unprivileged).
    #[arg(long)]
    pub so_priority: Option<u32>,
    /// SO_RCVBUF of the market-data socket in bytes (kernel and io_uring paths; default
    /// 8 MiB with SO_RCVBUFFORCE): a small one shows drops under a burst, counted.
    #[arg(long)]
    pub md_rcvbuf: Option<u32>,
    /// Kernel path: read market data with recvmmsg, up to 32 waiting datagrams per call
    /// (the lab's `kernel+mmsg`), instead of one recv per datagram.
    #[arg(long)]
    pub md_recvmmsg: bool,
    /// Kernel path: the strategy's own time on the kernel's clock and, where --iface has
    /// them, the NIC's (SO_TIMESTAMPING): each trigger packet's receive stamp (from the one
    /// recvmsg that reads it) and each order's transmit stamp (the order socket's error
    /// queue, read on idle turns), as the order rows' wire_kernel_ns and wire_nic_ns. Not
    /// with --md-recvmmsg or --msg-zerocopy.
    #[arg(long)]
    pub wire_stamps: bool,
}

/// The io_uring path's set-up (resolved into a plan: `net::uring::plan`).
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "io_uring")]
pub struct UringArgs {
    /// io_uring: SQPOLL with this idle time in milliseconds.
    #[arg(long)]
    pub sqpoll: Option<u32>,
    /// io_uring: send orders with SEND_ZC.
    #[arg(long)]
    pub send_zc: bool,
    /// io_uring: pin the SQPOLL thread to this CPU (with --sqpoll).
    #[arg(long)]
    pub sqpoll_cpu: Option<u32>,
    /// io_uring: SINGLE_ISSUER + DEFER_TASKRUN (completions fetched by the loop with
    /// GETEVENTS on idle turns; no task-work interrupts).
    #[arg(long)]
    pub uring_defer: bool,
    /// io_uring: COOP_TASKRUN + TASKRUN_FLAG (no task-work interrupts; the loop enters the
    /// kernel when the ring's flag says task work waits).
    #[arg(long)]
    pub uring_coop: bool,
    /// io_uring: NAPI busy polling registered on the ring, this many microseconds (Linux 6.9+).
    #[arg(long)]
    pub uring_napi: Option<u32>,
    /// io_uring: give receive buffers back with PROVIDE_BUFFERS submissions instead of the
    /// provided-buffer ring (the comparison; the lab's `uring+provideops`).
    #[arg(long)]
    pub uring_provide_ops: bool,
    /// io_uring: with --send-zc, send from the order slots registered as a fixed buffer
    /// (no page lookup and pinning per send; the lab's `uring+zcfixed`).
    #[arg(long)]
    pub uring_fixed_bufs: bool,
    /// io_uring: register the ring's fd; every enter names it by index (no fd lookup; the
    /// lab's `uring+regring`).
    #[arg(long)]
    pub uring_reg_ring: bool,
    /// io_uring: receive market data inline, one MSG_DONTWAIT RECV submitted per turn
    /// (copied during that enter, or EAGAIN at once) instead of a multishot RECV woken by
    /// the socket (the lab's `uring+inline`).
    #[arg(long)]
    pub uring_inline_recv: bool,
    /// io_uring: send orders with send(2) on the order socket instead of a SEND through the
    /// ring (market data still through the ring): prices the ring's send (the lab's
    /// `uring+syssend`).
    #[arg(long)]
    pub uring_send_syscall: bool,
}

/// The raw-ring paths: the XDP program, the AF_XDP sockets and UMEM, AF_PACKET's own address.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "AF_XDP and AF_PACKET")]
pub struct RawArgs {
    /// AF_XDP: XDP attach mode: auto (driver, else SKB), drv or skb.
    #[cfg(feature = "xdp")]
    #[arg(long, default_value = "auto")]
    pub xdp_mode: crate::net::af_xdp::loader::XdpModeArg,
    /// AF_XDP: bind mode: auto (zero-copy where the driver allows, else copy), zc or copy.
    #[cfg(feature = "xdp")]
    #[arg(long, default_value = "auto")]
    pub xsk_bind: crate::net::af_xdp::XskBind,
    /// AF_PACKET: smoltcp's own address on the link (not the interface's: the kernel would
    /// reset the order flow), e.g. 10.77.0.3.
    #[arg(long)]
    pub packet_ip: Option<Ipv4Addr>,
    /// AF_PACKET: the receive ring: v2 (a frame per slot, handed over as soon as it is
    /// written) or v3 (frames packed into blocks, a block handed over when it is full or
    /// at --packet-block-timeout: batches by construction; the lab's `packet+v3`).
    #[arg(long, default_value = "v2", value_parser = parse_packet_ring)]
    pub packet_ring: PacketRing,
    /// AF_PACKET v2: frames per ring (receive and transmit; rounded up to whole 64 KiB
    /// blocks). The receive ring is what absorbs a stalled strategy: at 5,000 packets/s
    /// the default holds 0.4 s of feed (AF_XDP's receive half holds as many).
    #[arg(long, default_value_t = 2048, value_parser = clap::value_parser!(u32).range(1..=1 << 20))]
    pub packet_frames: u32,
    /// AF_PACKET v3: bytes per block (a multiple of the page size, up to 4 MiB).
    #[arg(long, default_value_t = 4096)]
    pub packet_block: u32,
    /// AF_PACKET v3: blocks in the receive ring.
    #[arg(long, default_value_t = 256)]
    pub packet_blocks: u32,
    /// AF_PACKET v3: a block's retire timer, whole milliseconds, at least 1ms (the kernel's
    /// unit): a block with frames is handed over this long after it opened, full or not.
    #[arg(long, default_value = "1ms", value_parser = parse_block_timeout)]
    pub packet_block_timeout: Duration,
    /// AF_XDP: RX queues to bind, one socket each: a list (0,1) or `all` (every RX queue of
    /// the interface: a multi-queue NIC spreads the flows over its queues).
    #[arg(
        long = "xsk-queues",
        alias = "xsk-queue",
        value_delimiter = ',',
        default_value = "0"
    )]
    pub xsk_queues: Vec<String>,
    /// AF_XDP: UMEM frame size.
    #[arg(long, default_value_t = 2048)]
    pub frame_size: u32,
    /// AF_XDP: UMEM frames (half RX, half TX).
    #[arg(long, default_value_t = 4096)]
    pub frame_count: u32,
    /// AF_XDP: UMEM on huge pages.
    #[arg(long)]
    pub hugepages: bool,
    /// AF_XDP: the XDP program logs its odd frames (too short to classify, no socket on the
    /// queue) with aya-log; off, it never logs.
    #[arg(long)]
    pub xdp_diag: bool,
}

/// Keeping the order path warm while no order goes out.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Warming")]
pub struct WarmArgs {
    /// Keep the order path warm: every D on an idle turn, run what `--warm` lists (e.g.
    /// 100us; off by default). See strategy::net::warm.
    #[arg(long, value_parser = parse_delay)]
    pub warm_every: Option<Duration>,
    /// What to warm: code (decision and encoding on a synthetic trigger), tx (the transmit
    /// side without sending), heartbeat (a 21-byte heartbeat on the order connection: the
    /// exchange needs --heartbeats), all.
    #[arg(long, value_delimiter = ',', default_value = "all")]
    pub warm: Vec<String>,
}

impl RunArgs {
    /// The settings every path shares, as plain config (`iface_addr`: `--iface`'s address).
    pub fn net_config(&self, iface_addr: Option<Ipv4Addr>) -> NetConfig {
        let k = &self.sockets;
        NetConfig {
            exchange: self.exchange,
            group: self.md_group,
            iface_addr,
            busy_poll_us: k.busy_poll,
            busy_poll_budget: k.prefer_busy_poll,
            sqpoll_idle_ms: self.uring.sqpoll,
            send_zc: self.uring.send_zc,
            msg_zerocopy: k.msg_zerocopy,
            uring: self.uring.options(),
            marks: crate::net::sockets::Marks {
                tos: k.ip_tos,
                priority: k.so_priority,
            },
            md_source: self.md_source.resolve(*self.exchange.ip()),
            md_rcvbuf: k.md_rcvbuf,
            md_recvmmsg: k.md_recvmmsg,
            wire_stamps: None,
        }
    }
}

impl UringArgs {
    /// The ring's options, as the io_uring path takes them.
    pub fn options(&self) -> UringOptions {
        UringOptions {
            defer_taskrun: self.uring_defer,
            coop_taskrun: self.uring_coop,
            sqpoll_cpu: self.sqpoll_cpu,
            napi_busy_poll_us: self.uring_napi,
            provide_ops: self.uring_provide_ops,
            fixed_bufs: self.uring_fixed_bufs,
            reg_ring: self.uring_reg_ring,
            inline_recv: self.uring_inline_recv,
            send_syscall: self.uring_send_syscall,
        }
    }
}

fn parse_cap(s: &str) -> Result<String, String> {
    hostsys::privilege::parse_cap(s)
        .map(|_| s.to_owned())
        .ok_or_else(|| format!("unknown capability `{s}` (e.g. cap_sys_nice)"))
}

/// A duration with its unit (`10us`, `1ms`, `250ns`; `0` alone): the one syntax every
/// program of the project takes (humantime's).
pub(crate) fn parse_delay(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("`{s}`: {e} (e.g. 10us, 1ms)"))
}

/// `--packet-block-timeout`: a duration of whole milliseconds, at least one.
fn parse_block_timeout(s: &str) -> Result<Duration, String> {
    let d = parse_delay(s)?;
    if d.as_millis() == 0 || d.subsec_nanos() % 1_000_000 != 0 {
        return Err(format!(
            "`{s}`: the block timeout is whole milliseconds, at least 1ms (TPACKET_V3's unit)"
        ));
    }
    Ok(d)
}

/// `--packet-ring`: v2 or v3.
fn parse_packet_ring(s: &str) -> Result<PacketRing, String> {
    match s {
        "v2" => Ok(PacketRing::V2),
        "v3" => Ok(PacketRing::V3),
        _ => Err(format!("`{s}`: v2 or v3")),
    }
}

/// `--packet-ring`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketRing {
    /// TPACKET_V2: a frame per slot.
    V2,
    /// TPACKET_V3: blocks.
    V3,
}

/// `--md-source`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MdSource {
    /// The exchange's order-entry address.
    Exchange,
    /// Any source.
    Any,
    /// This address.
    Addr(Ipv4Addr),
}

impl MdSource {
    /// The address to accept, given the exchange's (`None`: any).
    pub fn resolve(self, exchange: Ipv4Addr) -> Option<Ipv4Addr> {
        match self {
            Self::Exchange => Some(exchange),
            Self::Any => None,
            Self::Addr(a) => Some(a),
        }
    }
}

fn parse_md_source(s: &str) -> Result<MdSource, String> {
    match s {
        "exchange" => Ok(MdSource::Exchange),
        "any" => Ok(MdSource::Any),
        _ => s
            .parse()
            .map(MdSource::Addr)
            .map_err(|_| format!("`{s}`: exchange, any or an IPv4 address")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_need_their_unit() {
        assert_eq!(parse_delay("10us"), Ok(Duration::from_micros(10)));
        assert_eq!(parse_delay("100000ns"), Ok(Duration::from_micros(100)));
        assert_eq!(parse_delay("0"), Ok(Duration::ZERO));
        for bad in ["5", "10 parsecs", "-1ms", ""] {
            assert!(parse_delay(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_v3_block_timeout_is_whole_milliseconds() {
        assert_eq!(parse_block_timeout("1ms"), Ok(Duration::from_millis(1)));
        assert_eq!(parse_block_timeout("8ms"), Ok(Duration::from_millis(8)));
        for bad in ["0ms", "500us", "1500us", "1"] {
            assert!(parse_block_timeout(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_packet_ring("v3"), Ok(PacketRing::V3));
        assert!(parse_packet_ring("v4").is_err());
    }
}
