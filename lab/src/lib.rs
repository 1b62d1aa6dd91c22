//! The lab: one command runs an experiment and prints the network paths side by side.
//!
//! An experiment flows: [`LabConfig`] (plain settings; `cargo xtask lab` maps its flags to
//! them) -> a run per path and repetition, in network namespaces over veth ([`netns`]) or
//! in a QEMU guest behind an emulated NIC over a tap ([`vm`]) -> the exchange's order rows
//! checked against the offline replay ([`oracle`]) -> percentiles ([`stats`]), the table,
//! `summary.csv` and `runs.json` ([`report`]) and the tick-to-trade CDF ([`plot`]). Beside
//! it: the ping-pong floor on the same link ([`floor`]), the calibration of the measurement
//! chain by injected delays ([`calibrate`]), the matching of orders to packets in a capture
//! ([`capture`]), comparing two results folders ([`compare`]), the publisher benchmark
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
pub mod capture;
pub mod compare;
pub mod data;
pub mod floor;
pub mod html;
pub mod hugepages;
pub mod leftovers;
pub mod netns;
pub mod oracle;
pub mod plot;
pub mod process;
pub mod report;
pub mod stats;
pub mod sweep;
pub mod vm;

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use serde::Serialize;

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
    /// Network paths to compare, in order (kernel, uring, xdp, packet, xdp-tx; variants:
    /// [`variant_flags`]); ratios are against the first.
    pub paths: Vec<String>,
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
}

impl Default for LabConfig {
    fn default() -> Self {
        Self {
            paths: ["kernel", "uring", "xdp", "packet"]
                .map(str::to_owned)
                .to_vec(),
            runs: 1,
            md_file: None,
            pace: "rate:5000".into(),
            results_dir: None,
            strategy_flags: String::new(),
            exchange_flags: String::new(),
            timeout: 600,
            pcap: false,
            order_gaps: Vec::new(),
            orders_per_gap: 100,
            warm_every: std::time::Duration::from_micros(100),
            exchange_warm: None,
            veth_tunes: Vec::new(),
        }
    }
}

/// The network paths a lab run knows.
pub const NETS: [&str; 5] = ["kernel", "uring", "xdp", "packet", "xdp-tx"];

/// The network path of a lab path name: `kernel`, or `kernel+zc` (a variant).
pub fn net_of(path: &str) -> &str {
    path.split('+').next().unwrap_or(path)
}

/// The variants of a lab path name, in order: `["defer", "warm"]` for `uring+defer+warm`.
pub fn variants_of(path: &str) -> impl Iterator<Item = &str> {
    path.split('+').skip(1)
}

fn has_variant(path: &str, v: &str) -> bool {
    variants_of(path).any(|x| x == v)
}

/// Warming variants and what they warm (`strategy run --warm`).
const WARM_VARIANTS: [(&str, &str); 4] = [
    ("warm", "all"),
    ("warmcode", "code"),
    ("warmtx", "tx"),
    ("hb", "heartbeat"),
];

/// Variants of one path only, with the strategy flags each adds: `kernel+zc`
/// MSG_ZEROCOPY, `uring+zc` SEND_ZC, `uring+sqpoll` SQPOLL (100 ms idle), `uring+defer`
/// SINGLE_ISSUER + DEFER_TASKRUN, `uring+coop` COOP_TASKRUN, `uring+napi` NAPI busy polling
/// on the ring (50 us), `xdp+huge` the UMEM on huge pages, `kernel+tos` / `uring+tos` the
/// order connection's IP_TOS at 0x10 (low delay), `+prio` its SO_PRIORITY at 6,
/// `kernel+busypoll` SO_BUSY_POLL 50 us on the market-data socket, `kernel+preferbp` that
/// with SO_PREFER_BUSY_POLL (budget 8), `uring+provideops` receive buffers given back with
/// PROVIDE_BUFFERS instead of the provided-buffer ring, `uring+zcfixed` SEND_ZC from the
/// order slots registered as a fixed buffer, `uring+regring` enters through the registered
/// ring fd, `uring+inline` receives with one MSG_DONTWAIT RECV per turn, `uring+syssend`
/// sends orders with send(2) instead of through the ring (prices the ring's SEND).
const PATH_VARIANTS: [(&str, &str, &[&str]); 18] = [
    ("kernel", "busypoll", &["--busy-poll", "50"]),
    (
        "kernel",
        "preferbp",
        &["--busy-poll", "50", "--prefer-busy-poll", "8"],
    ),
    ("kernel", "zc", &["--msg-zerocopy"]),
    ("kernel", "tos", &["--ip-tos", "16"]),
    ("kernel", "prio", &["--so-priority", "6"]),
    ("uring", "tos", &["--ip-tos", "16"]),
    ("uring", "prio", &["--so-priority", "6"]),
    ("uring", "zc", &["--send-zc"]),
    ("uring", "sqpoll", &["--sqpoll", "100"]),
    ("uring", "defer", &["--uring-defer"]),
    ("uring", "coop", &["--uring-coop"]),
    ("uring", "napi", &["--uring-napi", "50"]),
    ("uring", "provideops", &["--uring-provide-ops"]),
    ("uring", "zcfixed", &["--send-zc", "--uring-fixed-bufs"]),
    ("uring", "regring", &["--uring-reg-ring"]),
    ("uring", "inline", &["--uring-inline-recv"]),
    ("uring", "syssend", &["--uring-send-syscall"]),
    ("xdp", "huge", &["--hugepages"]),
];

/// Strategy flags of a path name's variants (several may be combined:
/// `uring+defer+warm`): see `PATH_VARIANTS`; `+warm` warms everything the path has every
/// `warm_every`, `+warmcode`, `+warmtx` and `+hb` one part each (strategy::net::warm).
pub fn variant_flags(path: &str, warm_every: std::time::Duration) -> Vec<String> {
    let net = net_of(path);
    let mut flags = Vec::new();
    for v in variants_of(path) {
        if let Some((_, _, f)) = PATH_VARIANTS
            .iter()
            .find(|(n, pv, _)| *n == net && *pv == v)
        {
            flags.extend(f.iter().map(|x| (*x).to_owned()));
        }
        if let Some((_, modes)) = WARM_VARIANTS.iter().find(|(w, _)| *w == v) {
            flags.extend([
                "--warm-every".to_owned(),
                format!("{}ns", warm_every.as_nanos()),
                "--warm".to_owned(),
                (*modes).to_owned(),
            ]);
        }
    }
    flags
}

/// Does this variant put the AF_XDP UMEM on huge pages (the lab reserves them)?
pub fn uses_hugepages(path: &str) -> bool {
    has_variant(path, "huge")
}

/// Does this variant send heartbeats (the exchange must then accept them)?
pub fn sends_heartbeats(path: &str) -> bool {
    has_variant(path, "warm") || has_variant(path, "hb")
}

/// Checks the path names.
pub fn check_paths(paths: &[String]) -> Result<()> {
    for p in paths {
        let net = net_of(p);
        let mut warm = 0;
        let variants_ok = variants_of(p).all(|v| {
            let is_warm = WARM_VARIANTS.iter().any(|(w, _)| *w == v);
            warm += usize::from(is_warm);
            is_warm || PATH_VARIANTS.iter().any(|(n, pv, _)| *n == net && *pv == v)
        });
        if !NETS.contains(&net) || !variants_ok || warm > 1 {
            bail!(
                "unknown path `{p}` (available: {}; variants kernel+zc, uring+zc, uring+sqpoll, \
                 uring+defer, uring+coop, uring+napi, uring+provideops, uring+zcfixed, uring+regring, uring+inline, uring+syssend, xdp+huge, kernel|uring+tos, kernel|uring+prio, \
                 kernel+busypoll, kernel+preferbp, \
                 and on every path one of +warm, \
                 +warmcode, +warmtx, +hb; combine with `+`, e.g. uring+defer+warm)",
                NETS.join(", ")
            );
        }
    }
    Ok(())
}

/// Makes sure of the market-data file and the results folder.
pub fn prepare(env: &Env, a: &LabConfig, prefix: &str) -> Result<(PathBuf, PathBuf)> {
    check_paths(&a.paths)?;
    let md_file = match &a.md_file {
        Some(f) => f.clone(),
        None => data::ensure_md_file(&data::default_md_file(env), false)?,
    };
    Ok((md_file, results_dir(env, a, prefix)?))
}

/// The results folder (`target/lab-results/<prefix><unix time>` by default), created.
pub fn results_dir(env: &Env, a: &LabConfig, prefix: &str) -> Result<PathBuf> {
    let dir = a.results_dir.clone().unwrap_or_else(|| {
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        env.results_root().join(format!("{prefix}{ts}"))
    });
    fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Orders at the start of each run left out of the percentiles (warm-up).
pub const WARMUP_ORDERS: usize = 5;

/// Medians of the strategy's stages over a run's orders, us (from its order rows).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct StageMedians {
    /// Parse, book and decision.
    pub decide_us: f64,
    /// Encode and hand-off (the path's send).
    pub send_us: f64,
    /// Packet read to send returned.
    pub total_us: f64,
}

/// One run's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    /// Path.
    pub path: String,
    /// The gap between orders the file was made for (`--order-gap`), ms.
    pub gap_ms: Option<f64>,
    /// The median gap between orders the exchange measured, ms.
    pub measured_gap_ms: f64,
    /// The strategy's stages.
    pub stages: StageMedians,
    /// Repetition.
    pub run: u32,
    /// Orders the oracle expects.
    pub orders_expected: usize,
    /// Orders the exchange accepted.
    pub orders_received: usize,
    /// Received orders equal to the oracle's, in order.
    pub orders_match: bool,
    /// Market-data packets the exchange sent.
    pub packets_sent: u64,
    /// Packets the strategy received.
    pub packets_received: u64,
    /// The exchange's session summary.
    pub exchange: exchange::results::Summary,
    /// The strategy's session report (JSON as written).
    pub strategy: serde_json::Value,
    /// Tick-to-trade samples (user clock), ns.
    #[serde(skip)]
    pub t2t_user: Vec<u64>,
    /// Tick-to-trade samples (kernel timestamps), ns.
    #[serde(skip)]
    pub t2t_kernel: Vec<u64>,
}

/// Fails when any run's received orders differ from the oracle.
pub fn check(dir: &Path, results: &[RunResult]) -> Result<()> {
    let bad: Vec<String> = results
        .iter()
        .filter(|r| !r.orders_match)
        .map(|r| format!("{} run {}", r.path, r.run))
        .collect();
    if !bad.is_empty() {
        bail!(
            "orders received differ from the oracle in: {} (see {})",
            bad.join(", "),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_names_and_variants() {
        assert_eq!(net_of("uring+sqpoll"), "uring");
        let us100 = std::time::Duration::from_micros(100);
        assert_eq!(variant_flags("kernel+zc", us100), ["--msg-zerocopy"]);
        assert!(variant_flags("xdp", us100).is_empty());
        assert_eq!(
            variant_flags("xdp+warm", us100),
            ["--warm-every", "100000ns", "--warm", "all"]
        );
        assert_eq!(variant_flags("packet+warmtx", us100)[3], "tx");
        assert!(sends_heartbeats("uring+hb") && sends_heartbeats("kernel+warm"));
        assert!(!sends_heartbeats("kernel+warmcode") && !sends_heartbeats("kernel"));
        assert!(check_paths(&["kernel+zc".into(), "xdp+warm".into(), "packet+hb".into()]).is_ok());
        assert!(check_paths(&["kernel+warp".into()]).is_err());
        assert!(check_paths(&["xdp+zc".into()]).is_err());
        assert!(check_paths(&["xdp+huge".into()]).is_ok());
        assert!(check_paths(&["kernel+tos".into(), "uring+prio+warm".into()]).is_ok());
        assert!(
            check_paths(&["xdp+tos".into()]).is_err(),
            "smoltcp's connection is unmarked"
        );
        assert_eq!(variant_flags("kernel+tos", us100), ["--ip-tos", "16"]);
        assert!(check_paths(&["xdp-tx".into(), "xdp-tx+warm".into()]).is_ok());
        assert!(check_paths(&["kernel+huge".into()]).is_err());
        assert_eq!(variant_flags("xdp+huge", us100), ["--hugepages"]);
        assert!(check_paths(&["uring+defer+warm".into(), "uring+napi".into()]).is_ok());
        assert!(
            check_paths(&["uring+warm+hb".into()]).is_err(),
            "one warming at a time"
        );
        assert!(check_paths(&["kernel+defer".into()]).is_err());
        assert_eq!(
            variant_flags("uring+defer+hb", us100),
            [
                "--uring-defer",
                "--warm-every",
                "100000ns",
                "--warm",
                "heartbeat"
            ]
        );
        assert!(check_paths(&["dpdk".into()]).is_err());
    }
}
