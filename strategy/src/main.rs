//! `strategy`: replay a file offline, or run against an exchange over a network path.
#![deny(unsafe_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use proto::decimal::Fixed;
use strategy::cli::TriggerArgs;
use strategy::runtime::RunArgs;

#[derive(Parser)]
#[command(
    version,
    about = "L2 book strategy: fires aggressive orders on large size increases near the top"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a market-data file through parser, book and trigger; print the orders as CSV.
    Replay(ReplayArgs),
    /// Connect to the exchange and trade over a network path.
    Run(Box<RunArgs>),
    /// Print what this machine offers each network path (io_uring, XDP, busy polling, huge
    /// pages, clock source, CPUs).
    Probe(ProbeArgs),
    /// Attach a bare XDP_PASS program to an interface until interrupted (the exchange's veth
    /// for `--net xdp-tx`: a veth delivers XDP_TX frames from its peer only to an XDP
    /// program). Detached on SIGINT/SIGTERM.
    XdpPass(XdpPassArgs),
}

#[derive(clap::Args)]
struct XdpPassArgs {
    /// Interface.
    #[arg(long)]
    iface: String,
}

#[cfg(feature = "xdp")]
fn xdp_pass(a: &XdpPassArgs) -> anyhow::Result<()> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).context("signal handler")?;
    }
    let prog = strategy::net::af_xdp::loader::attach_pass(&a.iface)
        .with_context(|| format!("attaching XDP_PASS to {}", a.iface))?;
    println!("xdp-pass attached to {}", a.iface);
    std::io::stdout().flush()?;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    drop(prog);
    eprintln!("xdp-pass detached from {}", a.iface);
    Ok(())
}

#[cfg(not(feature = "xdp"))]
fn xdp_pass(_a: &XdpPassArgs) -> anyhow::Result<()> {
    anyhow::bail!("this strategy was built without the `xdp` feature")
}

#[derive(clap::Args)]
struct ProbeArgs {
    /// Try attaching the XDP program (driver mode, then generic) and binding an AF_XDP socket
    /// in zero-copy mode (queue 0) on these interfaces; each is undone at once (a driver may
    /// reset the queue to do either).
    #[arg(long, value_delimiter = ',')]
    iface: Vec<String>,
    /// JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Only the machine (CPU, hypervisor, kernel, clock source, isolation...), as the JSON
    /// the lab's manifest.json holds (`hostsys::machine::Machine`); nothing is attached.
    #[arg(long, conflicts_with_all = ["iface", "json"])]
    machine: bool,
}

fn probe(a: &ProbeArgs) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if a.machine {
        let m = hostsys::machine::Machine::read();
        writeln!(out, "{}", serde_json::to_string(&m)?)?;
        return Ok(());
    }
    let sections = strategy::probe::probe(&a.iface);
    if a.json {
        let map: serde_json::Map<String, serde_json::Value> = sections
            .into_iter()
            .map(|(t, rows)| {
                let inner: serde_json::Map<String, serde_json::Value> = rows
                    .into_iter()
                    .map(|(k, v)| (k, serde_json::Value::String(v)))
                    .collect();
                (t, serde_json::Value::Object(inner))
            })
            .collect();
        writeln!(out, "{}", serde_json::Value::Object(map))?;
        return Ok(());
    }
    for (title, rows) in sections {
        writeln!(out, "{title}")?;
        for (k, v) in rows {
            writeln!(out, "  {k:<32} {v}")?;
        }
    }
    Ok(())
}

#[derive(clap::Args)]
struct ReplayArgs {
    /// Gzip CSV in the Tardis incremental_book_L2 layout.
    #[arg(long)]
    md_file: PathBuf,
    #[command(flatten)]
    trigger: TriggerArgs,
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
    let r = match Cli::parse().cmd {
        Cmd::Replay(a) => replay(&a),
        Cmd::Run(a) => strategy::runtime::main(&a),
        Cmd::Probe(a) => probe(&a),
        Cmd::XdpPass(a) => xdp_pass(&a),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("strategy: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn replay(a: &ReplayArgs) -> anyhow::Result<()> {
    let r = strategy::replay::replay(&a.md_file, a.trigger.engine_config()).context("replay")?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    writeln!(out, "trigger_id,side,price,qty")?;
    for o in &r.orders {
        writeln!(
            out,
            "{},{},{},{}",
            o.trigger_id,
            o.side.as_str(),
            Fixed(o.price, proto::PRICE_DECIMALS),
            o.qty
        )?;
    }
    out.flush()?;
    eprintln!(
        "replay: lines {}, orders {}, held back {}, stale {}, malformed {}, {:.1} ns per line",
        r.lines,
        r.orders.len(),
        r.held_back,
        r.stale,
        r.malformed,
        r.ns_per_line
    );
    Ok(())
}
