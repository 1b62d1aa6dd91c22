//! `exchange`: the exchange simulator's command line (`serve`, `gen`).
#![deny(unsafe_code)]

use std::net::{SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use exchange::md_publisher::{resolve_iface, PublisherConfig};
use exchange::pacing::Pace;
use exchange::server::{Server, ServerConfig, ServerError};
use mdfile::mdgen::{self, GenConfig};

#[derive(Parser)]
#[command(
    version,
    about = "Exchange simulator: order entry over TCP, market data over UDP multicast"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve order entry and replay the market-data file to each client in turn.
    Serve(Box<ServeArgs>),
    /// Write a synthetic Tardis incremental_book_L2 gzip file (+ `.planted.csv`).
    Gen(GenArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Gzip CSV in the Tardis incremental_book_L2 layout.
    #[arg(long)]
    md_file: PathBuf,
    /// Order-entry listen address. The default is the host's address on the VM lab's tap
    /// (the lab's own address), never every interface: on a real network the first client
    /// to connect takes the session.
    #[arg(long, default_value = "192.168.100.1:9012")]
    oe_listen: SocketAddr,
    /// Accept order-entry connections only from this address (repeat, or comma-separate,
    /// for several); others are closed at once, logged and counted (`refused_peers`).
    #[arg(long, value_delimiter = ',')]
    allow_peer: Vec<std::net::IpAddr>,
    /// Market-data group and port.
    #[arg(long, default_value = "239.255.0.1:12345")]
    md_group: SocketAddrV4,
    /// Outgoing interface for the group (name or IPv4 address; IP_MULTICAST_IF).
    #[arg(long)]
    md_iface: Option<String>,
    /// Multicast TTL.
    #[arg(long, default_value_t = 1)]
    ttl: u32,
    /// Loop multicast back to local listeners (IP_MULTICAST_LOOP).
    #[arg(long)]
    mcast_loop: bool,
    /// Replay pace: recorded[:SPEED] | rate:PPS | max | bursts:BASE/PEAK/BURST/PERIOD (on/off
    /// bursts, e.g. bursts:5000/200000/1ms/100ms) | poisson:PPS[:SEED] (exponential gaps,
    /// seeded: repeatable).
    #[arg(long, default_value = "rate:2000")]
    pace: Pace,
    /// Grace period after the end of the file, for in-flight orders (e.g. 500ms, 2s).
    #[arg(long, default_value = "500ms", value_parser = parse_duration)]
    grace: Duration,
    /// End a session's grace as soon as this many orders were accepted in it (the lab and
    /// the tests pass the offline replay's count): the session ends when its last order is
    /// in, and the grace is only the ceiling for a strategy that sends fewer.
    #[arg(long)]
    expect_orders: Option<u64>,
    /// Pause between accepting a client and the first packet (lets it join the group).
    #[arg(long, default_value = "200ms", value_parser = parse_duration)]
    handshake_delay: Duration,
    /// A packet sent this much after its deadline counts as late.
    #[arg(long, default_value = "50us", value_parser = parse_duration)]
    late_threshold: Duration,
    /// Busy-poll (never sleep in epoll_wait): lowest order-receive latency, one core.
    #[arg(long)]
    spin: bool,
    /// Exit after this many sessions.
    #[arg(long)]
    sessions: Option<u64>,
    /// Append one CSV row per order to this file.
    #[arg(long)]
    results: Option<PathBuf>,
    /// Append one JSON summary per session to this file (default: <results>.summary.jsonl).
    #[arg(long)]
    summary: Option<PathBuf>,
    /// Count and discard heartbeat messages (21 bytes, side 255, everything else 0) that a
    /// warming strategy sends on the order connection; without this flag they are invalid
    /// messages. A deviation from the one-message spec, for the warming experiments.
    #[arg(long)]
    heartbeats: bool,
    /// Keep the exchange's own order-receive path warm: every D (e.g. 100us) a heartbeat
    /// over a loopback TCP connection to itself, read by the order path's receive function
    /// (the strategy's coldness told apart from the exchange's).
    #[arg(long, value_parser = parse_duration)]
    warm_rx_every: Option<Duration>,
    /// Inflate the whole market-data file into memory once, at start, and replay every
    /// session from there: no decompression in the publishing loop (it was about a third
    /// of the exchange's user-space time at `--pace max`). Needs memory for the
    /// uncompressed file (about 6x the gzip's size for the generator's files); without it,
    /// each session streams the file.
    #[arg(long)]
    preload: bool,
    /// After binding and opening the results, become this user with no capability left
    /// (the market-data file, opened for each session unless `--preload`, must be
    /// readable by it).
    #[arg(long)]
    user: Option<String>,
    /// Packet formatter (line -> packet bytes).
    #[arg(long, default_value = "ascii", value_parser = clap::builder::PossibleValuesParser::new(exchange::formatter::NAMES))]
    formatter: String,
    /// No per-order log lines on stdout.
    #[arg(long)]
    quiet_orders: bool,
    /// No kernel TX timestamps (SO_TIMESTAMPING) on market data. With them, the first
    /// packet of each trigger id is stamped (per message; Linux 6.13 or later), no other.
    #[arg(long)]
    no_tx_timestamps: bool,
    /// Market-data sender: udp (a UDP socket) | packet (AF_PACKET frames with
    /// PACKET_QDISC_BYPASS on --md-iface NAME, the exchange writing the headers: the
    /// highest rates).
    #[arg(long, default_value = "udp")]
    md_tx: exchange::md_publisher::MdTx,
    /// NIC hardware timestamps: auto (on when --md-iface names an interface that has them:
    /// a third clock, the NIC's, beside user and kernel; the summary says why not
    /// otherwise) | off.
    #[arg(long, default_value = "auto", value_parser = ["auto", "off"])]
    hw_timestamps: String,
    /// The floor's runs: mark the first packet of these trigger ids (a file as for
    /// --stamp-ids) with the id, for a strategy in reflect mode (`strategy run --reflect`)
    /// to answer at once. A normal strategy reads the marked packets as malformed lines.
    #[arg(long)]
    mark_ids: Option<PathBuf>,
    /// Stamp only the first packet of these trigger ids (a file: one id at the start of
    /// each line, e.g. a .planted.csv sidecar or the oracle's ids); default: of every id.
    #[arg(long)]
    stamp_ids: Option<PathBuf>,
    /// Decimal places of `amount` when validating lines.
    #[arg(long, default_value_t = 0)]
    amount_decimals: u8,
}

#[derive(clap::Args)]
struct GenArgs {
    /// Output file (.csv.gz).
    #[arg(long, short)]
    out: PathBuf,
    /// A timeline with microbursts (1 ms at 20x every 50 ms over a 10 k/s feed, heavy-tailed
    /// gaps between) and one trigger per period at a burst's start, its peak, right after it
    /// or in the quiet feed (the position in the .planted.csv); replay it with `--pace
    /// recorded`. With --orders to stop after that many triggers.
    #[arg(long, conflicts_with = "order_gap")]
    microbursts: bool,
    /// With --microbursts: the feed's rate between bursts, packets/s.
    #[arg(long, default_value_t = 10_000, requires = "microbursts")]
    quiet_rate: u32,
    /// With --microbursts: the rate inside a burst over the rate between them (20 over a
    /// 25 k/s feed: 500 k/s bursts).
    #[arg(long, default_value_t = 20.0, requires = "microbursts")]
    peak_ratio: f64,
    /// PRNG seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Approximate compressed size (bytes; K/M suffixes).
    #[arg(long, default_value = "1M", value_parser = parse_size)]
    size: u64,
    /// Levels per side in snapshots.
    #[arg(long, default_value_t = 400)]
    depth: usize,
    /// Give every line its own local_timestamp.
    #[arg(long)]
    unique_ids: bool,
    /// No re-snapshot in the middle.
    #[arg(long)]
    no_resnapshot: bool,
    /// Events between planted triggers.
    #[arg(long, default_value_t = 500)]
    trigger_every: u64,
    /// Malformed lines to scatter through the file.
    #[arg(long, default_value_t = 0)]
    malformed: u64,
    /// Place triggers this far apart in time at the replay rate `--rate` (one line per
    /// packet): e.g. 10ms at rate 5000 is one trigger every 50 lines. Replaces
    /// --trigger-every.
    #[arg(long, value_parser = parse_duration)]
    order_gap: Option<Duration>,
    /// The replay rate (packets/s) the file is meant for (`serve --pace rate:PPS`); with
    /// --order-gap.
    #[arg(long, default_value_t = 5000)]
    rate: u32,
    /// Stop after this many planted triggers instead of at --size.
    #[arg(long)]
    orders: Option<u64>,
}

/// A duration with its unit (`500ms`, `2s`, `50us`): the one syntax every program of the
/// project takes (humantime's).
fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("`{s}`: {e} (e.g. 500ms, 2s, 50us)"))
}

fn parse_size(s: &str) -> Result<u64, String> {
    let (num, mult) = match s.chars().last() {
        Some('K' | 'k') => (&s[..s.len() - 1], 1_000),
        Some('M' | 'm') => (&s[..s.len() - 1], 1_000_000),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .map(|v| v * mult)
        .map_err(|_| format!("invalid size `{s}` (e.g. 1M, 200K)"))
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal: the lab's log files stay plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("exchange: error: {e:#}");
            // 2: bad input (file), 1: anything else.
            if e.downcast_ref::<ServerError>()
                .is_some_and(|e| matches!(e, ServerError::File(_)))
            {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// The trigger ids of a `--stamp-ids` / `--mark-ids` file, if one was given.
fn read_ids(
    file: Option<&std::path::Path>,
    flag: &str,
) -> anyhow::Result<Option<std::collections::HashSet<u64>>> {
    let Some(p) = file else { return Ok(None) };
    let bytes = std::fs::read(p).with_context(|| format!("{flag} {}", p.display()))?;
    Ok(Some(exchange::stamp_ids::parse(&bytes)?))
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.cmd {
        Cmd::Gen(a) => {
            let cfg = GenConfig {
                seed: a.seed,
                target_bytes: a.size,
                depth: a.depth,
                unique_ids: a.unique_ids,
                resnapshot: !a.no_resnapshot,
                trigger_every: a.trigger_every.max(10),
                trigger_every_lines: a.order_gap.map(|g| mdgen::lines_for_gap(g, a.rate)),
                orders: a.orders,
                malformed: a.malformed,
                microbursts: a.microbursts.then(|| mdgen::Microbursts {
                    quiet_gap_us: 1e6 / f64::from(a.quiet_rate.max(1)),
                    peak_ratio: a.peak_ratio.max(1.0),
                    ..mdgen::Microbursts::default()
                }),
            };
            let s = mdgen::generate(&a.out, &cfg)
                .with_context(|| format!("writing {}", a.out.display()))?;
            println!(
                "wrote {} ({} bytes): {} lines, {} snapshot lines, {} planted triggers, {} malformed; planted list in {}",
                a.out.display(),
                s.bytes,
                s.lines,
                s.snapshot_lines,
                s.planted.len(),
                s.malformed,
                mdgen::planted_path(&a.out).display()
            );
            Ok(())
        }
        Cmd::Serve(a) => {
            if let Some(i) = a.md_iface.as_deref() {
                resolve_iface(i).context("--md-iface")?;
            }
            let summary = a.summary.or_else(|| {
                a.results.as_ref().map(|r| {
                    let mut s = r.as_os_str().to_owned();
                    s.push(".summary.jsonl");
                    PathBuf::from(s)
                })
            });
            let md_file = a.md_file.clone();
            let cfg = ServerConfig {
                md_file: a.md_file,
                oe_listen: a.oe_listen,
                publisher: PublisherConfig {
                    group: a.md_group,
                    iface: a.md_iface,
                    stamp_ids: read_ids(a.stamp_ids.as_deref(), "--stamp-ids")?,
                    tx: a.md_tx,
                    hw: false, // decided by the server from --hw-timestamps
                    ttl: a.ttl,
                    mcast_loop: a.mcast_loop,
                    tx_timestamps: !a.no_tx_timestamps,
                },
                pace: a.pace,
                grace: a.grace,
                expect_orders: a.expect_orders,
                handshake_delay: a.handshake_delay,
                late_threshold: a.late_threshold,
                spin: a.spin,
                max_sessions: a.sessions,
                results: a.results,
                summary,
                log_orders: !a.quiet_orders,
                accept_heartbeats: a.heartbeats,
                warm_rx_every_ns: a
                    .warm_rx_every
                    .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
                amount_decimals: a.amount_decimals,
                allow_peers: a.allow_peer,
                hw_timestamps: a.hw_timestamps == "auto",
                mark_ids: read_ids(a.mark_ids.as_deref(), "--mark-ids")?,
                preload: a.preload,
            };
            let shutdown = Arc::new(AtomicBool::new(false));
            for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
                signal_hook::flag::register(sig, Arc::clone(&shutdown))
                    .context("installing signal handler")?;
            }
            let formatter =
                exchange::formatter::by_name(&a.formatter).context("unknown formatter")?;
            let mut server = Server::new(cfg, formatter, shutdown)?;
            if let Some(user) = &a.user {
                let d = hostsys::privilege::drop_to_user(user, &[])?;
                std::fs::File::open(&md_file)
                    .with_context(|| format!("--user {user} cannot read {}", md_file.display()))?;
                tracing::info!(
                    user = d.user,
                    uid = d.uid,
                    "set-up done: running as --user, no capability kept"
                );
            }
            server.run()?;
            Ok(())
        }
    }
}
