//! The lab: one command runs an experiment and prints the network paths side by side.
//!
//! An experiment flows: [`LabConfig`] (plain settings; `cargo xtask lab` maps its flags to
//! them) -> a run per path and repetition, in network namespaces over veth ([`netns`]) or
//! in a QEMU guest behind an emulated NIC over a tap ([`vm`]) -> the exchange's order rows
//! checked against the offline replay ([`oracle`]) -> percentiles ([`stats`]), the table,
//! `summary.csv` and `runs.json` ([`report`]) and the tick-to-trade CDF ([`plot`]). Beside
//! it: the ping-pong floor on the same link ([`floor`]), the calibration of the measurement
//! chain by injected delays ([`calibrate`]), the matching of orders to packets in a capture
//! ([`capture`]), comparing two results folders ([`compare`]) by what made each
//! ([`manifest`]: the machine and the code), the publisher benchmark
//! ([`mod@bench`]), the default market-data file
//! ([`data`]), huge pages reserved for the `+huge` variants ([`hugepages`]), the
//! processes it starts ([`process`]) and what a killed run left behind ([`leftovers`]).
//!
//! Every namespace, tap, QEMU and process a run creates is removed when it ends, fails or
//! is interrupted (Ctrl-C sets [`stop_flag`]; the runs poll it).
//!
//! The lab is the implementation of a command: its errors are reports to a person at a
//! terminal, so it uses `anyhow` with context like a binary does (docs/decisions.md).
#![deny(unsafe_code)]

pub mod bench;
pub mod calibrate;
pub mod capacity;
pub mod capture;
pub mod compare;
pub mod cpustat;
pub mod data;
pub mod floor;
pub mod html;
pub mod hugepages;
pub mod key;
pub mod leftovers;
pub mod load;
pub mod manifest;
pub mod netns;
pub mod oracle;
pub mod plot;
pub mod probe;
pub mod process;
pub mod remote;
pub mod report;
pub mod stats;
pub mod summary;
pub mod sweep;
pub mod trace;
pub mod vm;

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use serde::Serialize;
use strategy::net::NetKind;

/// Where the lab finds the binaries and keeps its files.
#[derive(Debug, Clone)]
pub struct Env {
    /// The workspace root.
    pub root: PathBuf,
}

impl Env {
    /// The workspace this crate belongs to.
    pub fn workspace() -> Self {
        Self {
            root: Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default(),
        }
    }

    /// A release binary of the workspace.
    pub fn bin(&self, name: &str) -> PathBuf {
        self.root.join("target/release").join(name)
    }

    /// `target/lab-data`: generated market-data files.
    pub fn data_dir(&self) -> PathBuf {
        self.root.join("target/lab-data")
    }

    /// `target/lab-results`: one folder per experiment.
    pub fn results_root(&self) -> PathBuf {
        self.root.join("target/lab-results")
    }
}

/// An experiment's settings.
#[derive(Debug, Clone)]
pub struct LabConfig {
    /// Network paths to compare, in order; ratios are against the first.
    pub paths: Vec<PathSpec>,
    /// Repetitions per path.
    pub runs: u32,
    /// Market-data file (None: the generated default).
    pub md_file: Option<PathBuf>,
    /// Replay pace (`exchange serve --pace`).
    pub pace: String,
    /// Results folder (None: `target/lab-results/<prefix><unix time>`).
    pub results_dir: Option<PathBuf>,
    /// Extra flags for every `strategy run`.
    pub strategy_flags: String,
    /// Extra flags for every `exchange serve`.
    pub exchange_flags: String,
    /// Seconds a single run may take.
    pub timeout: u64,
    /// Capture every run on the exchange's veth.
    pub pcap: bool,
    /// Trace every order through both kernels (`--trace`, [`trace`]).
    pub trace: bool,
    /// Run every path at each of these gaps between orders (a generated file per gap);
    /// empty: one file (`md_file` or the default) and its own gaps.
    pub order_gaps: Vec<std::time::Duration>,
    /// Orders per gap file.
    pub orders_per_gap: u64,
    /// Interval of the warming variants.
    pub warm_every: std::time::Duration,
    /// Keep the exchange's own receive path warm at this interval, for every path
    /// (`exchange serve --warm-rx-every`; None: off).
    pub exchange_warm: Option<std::time::Duration>,
    /// Tuning variants of the strategy's veth (`--veth-tune`, the VM lab's `--guest-tune`
    /// names where they apply to a veth), each run beside the untuned baseline.
    pub veth_tunes: Vec<String>,
    /// Feed rates around the triggers, packets/s (`--load`; 0: the `pace` feed); empty: no
    /// load axis ([`load`]).
    pub loads: Vec<u32>,
    /// The exchange's market-data sender (`--md-tx`).
    pub md_tx: exchange::md_publisher::MdTx,
    /// How long the ping-pong floor at a gap may take per protocol (`--floor-time`; at
    /// least 20 round trips): 4 s gives 4,000 round trips at 1 ms.
    pub floor_time: std::time::Duration,
}

impl Default for LabConfig {
    fn default() -> Self {
        Self {
            paths: [
                NetKind::Kernel,
                NetKind::Uring,
                NetKind::Xdp,
                NetKind::Packet,
            ]
            .map(PathSpec::bare)
            .to_vec(),
            runs: 1,
            md_file: None,
            pace: "rate:5000".into(),
            results_dir: None,
            strategy_flags: String::new(),
            exchange_flags: String::new(),
            timeout: 600,
            pcap: false,
            trace: false,
            order_gaps: Vec::new(),
            orders_per_gap: 100,
            warm_every: std::time::Duration::from_micros(100),
            exchange_warm: None,
            veth_tunes: Vec::new(),
            loads: Vec::new(),
            md_tx: exchange::md_publisher::MdTx::Udp,
            floor_time: std::time::Duration::from_secs(4),
        }
    }
}

pub use strategy::spec::PathSpec;

/// Parses `--paths` (`kernel,uring+defer+inline,xdp-tx`), with the reason a spec is refused.
pub fn parse_paths(s: &str) -> Result<Vec<PathSpec>> {
    Ok(strategy::spec::parse_list(s)?)
}

/// Makes sure of the market-data file and the results folder.
pub fn prepare(env: &Env, a: &LabConfig, prefix: &str) -> Result<(PathBuf, PathBuf)> {
    let md_file = match &a.md_file {
        Some(f) => f.clone(),
        None => data::ensure_md_file(&data::default_md_file(env), false)?,
    };
    Ok((md_file, results_dir(env, a, prefix)?))
}

/// The results folder (`target/lab-results/<prefix><unix time>` by default), created, with
/// its [`manifest::Manifest`] (the machine and the code) written in it and said in a line.
pub fn results_dir(env: &Env, a: &LabConfig, prefix: &str) -> Result<PathBuf> {
    let dir = a.results_dir.clone().unwrap_or_else(|| {
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        env.results_root().join(format!("{prefix}{ts}"))
    });
    fs::create_dir_all(&dir)?;
    manifest::record(&env.root, &dir)?;
    Ok(dir)
}

/// Orders at the start of each run left out of the percentiles (warm-up).
pub const WARMUP_ORDERS: usize = 5;

/// Medians of the strategy's stages over a run's orders, us (from its order rows).
#[derive(Debug, Clone, Copy, Default, Serialize, serde::Deserialize)]
pub struct StageMedians {
    /// Parse, book and decision.
    pub decide_us: f64,
    /// Encode and hand-off (the path's send).
    pub send_us: f64,
    /// Packet read to send returned.
    pub total_us: f64,
    /// The trigger packet's kernel receive stamp to the order's kernel transmit stamp on the
    /// strategy's host (`--wire-stamps`; absent without).
    #[serde(default)]
    pub wire_kernel_us: Option<f64>,
    /// The same on the NIC's clock (absent where the NIC has no hardware stamps).
    #[serde(default)]
    pub wire_nic_us: Option<f64>,
}

/// One run's outcome (written to `runs.json`, read back typed by the HTML report).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct RunResult {
    /// Which run.
    pub key: key::RunKey,
    /// What the tables group it by ([`key::RunKey::label`]).
    pub path: String,
    /// The gap between orders the file was made for (`--order-gap`), ms.
    pub gap_ms: Option<f64>,
    /// The median gap between orders the exchange measured, ms.
    pub measured_gap_ms: f64,
    /// The strategy's stages (None: not measured; the VM guest does not send its order
    /// rows back).
    pub stages: Option<StageMedians>,
    /// Orders the oracle expects.
    pub orders_expected: usize,
    /// Orders the exchange accepted.
    pub orders_received: usize,
    /// Received orders equal to the oracle's, in order.
    pub orders_match: bool,
    /// The received orders against the oracle, drops taken into account.
    pub explained: load::Explained,
    /// Market-data packets sent, handled and dropped (None: no strategy report).
    pub accounting: Option<load::Accounting>,
    /// Market-data packets the exchange sent.
    pub packets_sent: u64,
    /// Packets the strategy received.
    pub packets_received: u64,
    /// The exchange's session summary.
    pub exchange: exchange::results::Summary,
    /// The strategy's session report, as it wrote it (None: the guest printed none).
    pub strategy: Option<strategy::runtime::SessionReport>,
    /// The tuning variant's settings as read back on the link (`--veth-tune`,
    /// `--guest-tune`).
    pub tune_readback: Option<String>,
    /// The traced waterfall (`--trace`; None: not traced).
    #[serde(default)]
    pub trace: Option<trace::waterfall::Waterfall>,
    /// What the strategy's CPU lost to the machine during the run (steal, interrupts;
    /// None: not pinned, or not measured, as in a guest).
    #[serde(default)]
    pub strategy_cpu: Option<cpustat::CpuAway>,
    /// Tick-to-trade samples (user clock), ns.
    #[serde(skip, default)]
    pub t2t_user: Vec<u64>,
    /// Tick-to-trade samples (kernel timestamps), ns.
    #[serde(skip, default)]
    pub t2t_kernel: Vec<u64>,
    /// Kernel-stamp samples by where the trigger sat in a microburst feed (empty for
    /// other files), ns.
    #[serde(skip, default)]
    pub by_position: std::collections::BTreeMap<mdfile::mdgen::Position, Vec<u64>>,
}

impl RunResult {
    /// The `xdp-tx` counters of the strategy's report, if it ran that path.
    pub fn xdp_tx(&self) -> Option<&strategy::net::af_xdp::xtx::XtxReport> {
        match &self.strategy.as_ref()?.path_extra {
            strategy::net::PathReport::Ring(r) => r.xtx.as_ref().map(|x| &x.xdp_tx),
            _ => None,
        }
    }

    /// The AF_XDP backend's report (attach and bind modes, steering counters), if any.
    pub fn xdp_backend(&self) -> Option<&strategy::net::ring::session::XdpReport> {
        match &self.strategy.as_ref()?.path_extra {
            strategy::net::PathReport::Ring(r) => match &r.backend {
                strategy::net::ring::BackendReport::Xdp(x) => Some(x),
                _ => None,
            },
            _ => None,
        }
    }

    /// The raw ring's report (AF_XDP, AF_PACKET), if any.
    pub fn ring(&self) -> Option<&strategy::net::ring::RingReport> {
        match &self.strategy.as_ref()?.path_extra {
            strategy::net::PathReport::Ring(r) => Some(r),
            _ => None,
        }
    }
}

/// Reads the first session report a strategy wrote (`--results`).
pub fn read_session_report(path: &Path) -> Result<strategy::runtime::SessionReport> {
    use anyhow::Context as _;
    let text = fs::read_to_string(path).with_context(|| path.display().to_string())?;
    let line = text
        .lines()
        .next()
        .with_context(|| format!("{}: no session report", path.display()))?;
    serde_json::from_str(line).with_context(|| format!("{}: a session report", path.display()))
}

/// Fails when any run's received orders differ from the oracle beyond what its drops
/// explain, or its packets do not add up (sent = handled + dropped).
pub fn check(dir: &Path, results: &[RunResult]) -> Result<()> {
    let bad: Vec<String> = results
        .iter()
        .filter(|r| r.explained == load::Explained::No)
        .map(|r| r.key.to_string())
        .collect();
    if !bad.is_empty() {
        bail!(
            "orders received differ from the oracle (beyond what drops explain) in: {} (see {})",
            bad.join(", "),
            dir.display()
        );
    }
    let unbalanced: Vec<String> = results
        .iter()
        .filter_map(|r| {
            let a = r.accounting?;
            (!a.balanced).then(|| {
                format!(
                    "{}: sent {} != handled {} + dropped {}",
                    r.key,
                    a.sent,
                    a.handled,
                    a.dropped.map_or("(no count)".to_owned(), |d| d.to_string())
                )
            })
        })
        .collect();
    if !unbalanced.is_empty() {
        bail!(
            "market-data packets not accounted for: {} (see {})",
            unbalanced.join("; "),
            dir.display()
        );
    }
    Ok(())
}

/// The Ctrl-C flag, with its handler installed on first use (once per process: the test
/// command runs several labs).
pub fn stop_flag() -> Result<&'static std::sync::atomic::AtomicBool> {
    static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    static INSTALLED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            ctrlc::set_handler(|| STOP.store(true, std::sync::atomic::Ordering::SeqCst))
                .map_err(|e| e.to_string())
        })
        .clone()
        .map_err(|e| anyhow::anyhow!("Ctrl-C handler: {e}"))?;
    Ok(&STOP)
}
