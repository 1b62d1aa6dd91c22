//! `cargo xtask`: the project's developer and lab commands.
//!
//! `cargo xtask` alone lists them. `setup` installs what the other commands need on a Debian
//! machine (idempotent: it checks first and says what it installs); `test` is the whole test
//! suite (what CI runs); `lab` runs an experiment in network namespaces and prints the
//! paths side by side; `gen-md` writes the default market-data file; `bench-exchange`
//! measures the publisher.
#![deny(unsafe_code)]

mod lab_cmd;
mod setup;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use lab::{Env, LabConfig};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "Lab and developer commands",
    arg_required_else_help = true
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what the project needs (Debian packages, toolchain parts). Idempotent.
    Setup(setup::SetupArgs),
    /// Run the whole test suite: setup, fmt, clippy -D warnings, docs, every test.
    Test(TestArgs),
    /// Write the default market-data file (cached in target/lab-data/).
    GenMd(GenMdArgs),
    /// Run the network-namespace lab: exchange and strategy over veth, paths side by side.
    Lab(Box<lab_cmd::LabArgs>),
    /// Benchmark the exchange's publisher: max rate and pacing error.
    BenchExchange(lab_cmd::BenchArgs),
    /// Build the XDP program (nightly, build-std, bpf-linker; installs them if missing).
    BuildEbpf,
    /// Build what is needed and run the strategy on an interface (e.g. inside the guest:
    /// `cargo xtask run --iface ens3 --exchange 192.168.100.1:9012`).
    Run(RunArgs),
    /// Run every fuzz target for a while (installs cargo-fuzz; uses the nightly toolchain).
    Fuzz(FuzzArgs),
}

#[derive(clap::Args)]
struct RunArgs {
    /// Interface the strategy uses (joins the group on it; AF_XDP binds to it).
    #[arg(long)]
    iface: String,
    /// Network path, with variants as in `lab --paths` (e.g. uring+defer+inline).
    #[arg(long, default_value = "xdp")]
    net: lab::PathSpec,
    /// Exchange order-entry address.
    #[arg(long, default_value = "192.168.100.1:9012")]
    exchange: String,
    /// Further `strategy run` flags, after `--`.
    #[arg(last = true)]
    rest: Vec<String>,
}

/// Lab settings for the test command's own runs: one run, a fixed results folder,
/// nothing else switched on (the test command built everything first).
fn test_lab(paths: &[&str], md_file: Option<PathBuf>, dir: PathBuf, pace: &str) -> LabConfig {
    LabConfig {
        paths: paths
            .iter()
            .map(|p| p.parse())
            .collect::<Result<_, _>>()
            .expect("the test command's own path names"),
        md_file,
        pace: pace.into(),
        results_dir: Some(dir),
        timeout: 300,
        ..LabConfig::default()
    }
}

fn run_strategy(a: &RunArgs) -> Result<()> {
    if a.net.needs_ebpf() {
        build_ebpf()?;
    }
    cmd("cargo", &["build", "--release", "-p", "strategy"])?;
    let bin = root().join("target/release/strategy");
    let mut c = Command::new(&bin);
    c.args([
        "run",
        "--iface",
        &a.iface,
        "--exchange",
        &a.exchange,
        "--reconnect",
    ])
    .args(a.net.strategy_args(std::time::Duration::from_micros(100)))
    .args(&a.rest);
    println!("+ {} {:?}", bin.display(), c.get_args().collect::<Vec<_>>());
    let st = c.status().context("running the strategy")?;
    if !st.success() {
        bail!("strategy exited with {st}");
    }
    Ok(())
}

#[derive(clap::Args)]
struct FuzzArgs {
    /// Seconds per target.
    #[arg(long, default_value_t = 30)]
    seconds: u32,
}

/// The fuzz targets (fuzz/fuzz_targets).
const FUZZ_TARGETS: &[&str] = &[
    "md_line",
    "order_decode",
    "order_stream",
    "engine_packets",
    "xtx_line",
    "md_frame",
    "packet_filter",
];

/// Builds strategy-ebpf into target/ebpf; the strategy's build script embeds it.
pub fn build_ebpf() -> Result<()> {
    setup::run(&setup::SetupArgs {
        ebpf: true,
        vm: false,
    })?;
    let bin = setup::bpf_linker_dir().join("bin");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let target_dir = root().join("target/ebpf");
    println!("+ cargo +nightly build (strategy-ebpf, bpfel-unknown-none, release)");
    let st = Command::new("cargo")
        .args([
            "+nightly",
            "build",
            "-Z",
            "build-std=core",
            "--target",
            "bpfel-unknown-none",
            "--release",
        ])
        .arg("--target-dir")
        .arg(&target_dir)
        .current_dir(root().join("strategy-ebpf"))
        .env("PATH", path)
        .env("RUSTFLAGS", "-C debuginfo=2 -C link-arg=--btf")
        .env_remove("RUSTC")
        .env_remove("RUSTC_WRAPPER")
        .status()
        .context("running cargo +nightly")?;
    if !st.success() {
        bail!("building the XDP program failed");
    }
    println!(
        "XDP program: {}",
        target_dir
            .join("bpfel-unknown-none/release/strategy-ebpf")
            .display()
    );
    Ok(())
}

fn fuzz(a: &FuzzArgs) -> Result<()> {
    let runs = run_fuzz(a.seconds)?;
    for (t, n) in runs {
        println!("fuzz: {t}: {n} inputs in {} s, no crash", a.seconds);
    }
    Ok(())
}

/// Runs every fuzz target for `seconds` (installing cargo-fuzz first if needed); returns
/// the inputs each ran. A crash fails with the target, the input kept in
/// `fuzz/artifacts/<target>/` and libFuzzer's last lines.
fn run_fuzz(seconds: u32) -> Result<Vec<(&'static str, u64)>> {
    if Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .map(|o| !o.status.success())
        .unwrap_or(true)
    {
        println!("fuzz: installing cargo-fuzz (cargo install --locked cargo-fuzz)");
        cmd("cargo", &["install", "--locked", "cargo-fuzz"])?;
    }
    let time = format!("-max_total_time={seconds}");
    let mut out = Vec::new();
    for t in FUZZ_TARGETS {
        // New inputs go to fuzz/corpus/<target> (not committed); fuzz/seeds/<target>, when
        // present, adds hand-written starting points (e.g. real lines, so the parser's fast
        // path is reached at once).
        let corpus = format!("fuzz/corpus/{t}");
        let seeds = format!("fuzz/seeds/{t}");
        let artifacts = format!("fuzz/artifacts/{t}/");
        std::fs::create_dir_all(root().join(&corpus))?;
        std::fs::create_dir_all(root().join(&artifacts))?;
        let prefix = format!("-artifact_prefix={}", root().join(&artifacts).display());
        let mut args = vec!["+nightly", "fuzz", "run", "--fuzz-dir", "fuzz", t, &corpus];
        if root().join(&seeds).is_dir() {
            args.push(&seeds);
        }
        args.extend(["--", &time, &prefix]);
        println!("+ cargo {} ({seconds} s)", args.join(" "));
        let o = Command::new("cargo")
            .args(&args)
            .current_dir(root())
            .output()
            .context("running cargo fuzz")?;
        let err = String::from_utf8_lossy(&o.stderr);
        if !o.status.success() {
            let tail: Vec<&str> = err.lines().rev().take(25).collect();
            bail!(
                "fuzz target {t} failed (crash input kept in {artifacts}):\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        // libFuzzer's last word: "Done N runs in S second(s)".
        let runs = err
            .lines()
            .rev()
            .find_map(|l| {
                l.strip_prefix("Done ")
                    .and_then(|r| r.split_whitespace().next())
            })
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        println!("fuzz: {t}: {runs} inputs in {seconds} s, no crash");
        out.push((*t, runs));
    }
    Ok(out)
}

#[derive(clap::Args)]
struct TestArgs {
    /// Skip `cargo fmt --check` and clippy.
    #[arg(long)]
    no_lint: bool,
    /// Skip the QEMU guest tests.
    #[arg(long)]
    no_vm: bool,
    /// Skip the bounded fuzzing (10 s per target).
    #[arg(long)]
    no_fuzz: bool,
}

/// The VM tests: one TCG guest per NIC (virtio-net, igb) and path (kernel, xdp, xdp-tx) on
/// a small file; the lab fails unless the exchange's orders equal the replay oracle, and
/// this fails unless the XDP paths ran the program in driver (native) mode on both NICs.
/// Then `xdp` on virtio-net with two tuning variants (GRO off, read back; two queue pairs,
/// a socket per queue). Bounded by timeouts.
fn vm_smoke(env: &Env) -> Result<()> {
    let dir = env.results_root().join("vm-test");
    let md = dir.join("md-small.csv.gz");
    let cfg = mdfile::mdgen::GenConfig {
        target_bytes: 20_000,
        depth: 40,
        trigger_every: 60,
        ..mdfile::mdgen::GenConfig::default()
    };
    std::fs::create_dir_all(&dir)?;
    mdfile::mdgen::generate(&md, &cfg)?;
    let args = LabConfig {
        timeout: 120,
        ..test_lab(&["kernel", "xdp", "xdp-tx"], Some(md), dir, "rate:500")
    };
    let vm = lab::vm::VmConfig {
        accel: "tcg".into(),
        nic: vec!["virtio".into(), "igb".into()],
        ..lab::vm::VmConfig::default()
    };
    let t0 = std::time::Instant::now();
    let (dir, results) = lab::vm::run(env, &args, &vm)?;
    lab::report::report(&dir, &results, &[])?;
    lab::check(&dir, &results)?;
    for r in results.iter().filter(|r| r.key.path.needs_ebpf()) {
        let mode = r.strategy["path_extra"]["backend"]["xdp_mode"].as_str();
        anyhow::ensure!(
            mode == Some("drv"),
            "{}: the XDP program ran in {mode:?} mode, not native (drv)",
            r.path
        );
    }
    let xtx = results
        .iter()
        .filter(|r| r.key.path.sends_with_xdp_tx())
        .map(|r| {
            r.strategy["path_extra"]["xdp_tx"]["fired"]
                .as_u64()
                .unwrap_or(0)
        });
    for fired in xtx {
        anyhow::ensure!(fired > 0, "xdp-tx in a guest: the program sent no order");
    }
    // Tuning variants, applied in the guest, read back and recorded beside their baseline:
    // GRO off, and two queue pairs (AF_XDP then binds a socket per queue and the flows the
    // tap spreads over them all arrive: the lab's oracle check covers it).
    let tuned = LabConfig {
        paths: vec!["xdp".parse()?],
        results_dir: Some(dir.join("tuned")),
        ..args.clone()
    };
    let vm = lab::vm::VmConfig {
        nic: vec!["virtio".into()],
        tunes: vec!["nogro".into(), "mq=ethtool -L $IF combined 2".into()],
        ..vm
    };
    let (tdir, tres) = lab::vm::run(env, &tuned, &vm)?;
    lab::check(&tdir, &tres)?;
    let run = |name: &str| tres.iter().find(|r| r.path == name).context("no tuned run");
    let back = run("virtio/xdp/nogro")?.strategy["guest_tune"]["readback"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    anyhow::ensure!(
        back.contains("generic-receive-offload: off"),
        "the guest did not read GRO back as off: {back:?}"
    );
    let queues = &run("virtio/xdp/mq")?.strategy["path_extra"]["rx_queues"];
    anyhow::ensure!(
        queues.as_array().map_or(0, Vec::len) == 2,
        "two queue pairs: an AF_XDP socket on each, counted: {queues}"
    );
    println!("VM tests passed in {:.0} s", t0.elapsed().as_secs_f64());
    Ok(())
}

#[derive(clap::Args)]
struct GenMdArgs {
    /// Output path (default: target/lab-data/md-default.csv.gz).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Regenerate even if the cached file exists.
    #[arg(long)]
    force: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Setup(a) => setup::run(&a),
        Cmd::Test(a) => test(&a),
        Cmd::GenMd(a) => {
            let out = a
                .out
                .unwrap_or_else(|| lab::data::default_md_file(&Env::workspace()));
            lab::data::ensure_md_file(&out, a.force).map(|_| ())
        }
        Cmd::Lab(a) => lab_cmd::run(&a),
        Cmd::BenchExchange(a) => lab_cmd::bench(&a),
        Cmd::Fuzz(a) => fuzz(&a),
        Cmd::BuildEbpf => build_ebpf(),
        Cmd::Run(a) => run_strategy(&a),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Runs a command in the workspace root, failing when it fails.
pub fn cmd(program: &str, args: &[&str]) -> Result<()> {
    lab::process::cmd_in(&root(), program, args)
}

/// The report a person reads, rendered by real renderers: every SVG plot of a results folder
/// through librsvg (`rsvg-convert`, a PNG each), and `report.html` in headless Chromium (its
/// DOM after load must hold the tables and the inline plots; a screenshot is kept).
fn render_check(dir: &std::path::Path) -> Result<()> {
    setup::apt_install(&[
        (
            "librsvg2-bin",
            "renders the lab's SVG plots in the test command",
        ),
        (
            "chromium",
            "renders the lab's HTML report in the test command (headless)",
        ),
    ])?;
    let mut svgs = 0;
    for e in std::fs::read_dir(dir)?.filter_map(Result::ok) {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "svg") {
            let png = p.with_extension("png");
            cmd(
                "rsvg-convert",
                &["-o", &png.to_string_lossy(), &p.to_string_lossy()],
            )?;
            let size = std::fs::metadata(&png).map(|m| m.len()).unwrap_or(0);
            anyhow::ensure!(
                size > 5_000,
                "{} rendered to a near-empty PNG ({size} bytes)",
                p.display()
            );
            svgs += 1;
        }
    }
    anyhow::ensure!(
        svgs >= 2,
        "expected the CDF and the gap plot in {}",
        dir.display()
    );
    let html = dir.join("report.html");
    let url = format!("file://{}", html.display());
    let shot = dir.join("report.png");
    let chrome = |extra: &[&str]| -> Result<std::process::Output> {
        let mut c = Command::new("chromium");
        c.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--window-size=1300,2600",
        ])
        .args(extra)
        .arg(&url);
        c.output().context("running chromium")
    };
    let dom = chrome(&["--dump-dom"])?;
    let dom = String::from_utf8_lossy(&dom.stdout);
    anyhow::ensure!(
        dom.contains("Paths side by side") && dom.contains("<svg") && dom.contains("<table"),
        "chromium's DOM of {} lacks the tables or plots",
        html.display()
    );
    chrome(&[&format!("--screenshot={}", shot.display())])?;
    let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
    anyhow::ensure!(
        size > 20_000,
        "the report's screenshot is near-empty ({size} bytes)"
    );
    println!(
        "render check: {svgs} SVG plots rendered by librsvg; {} rendered by Chromium (screenshot {})",
        html.display(),
        shot.display()
    );
    Ok(())
}

/// `lab compare` on real orders: a run against itself shows no difference, and orders sent
/// with a 10 us injected delay against orders sent without are slower by 10 +/- 1 us
/// (kernel stamps). Both sets come from the calibration session, which cycles the delays
/// order by order: two separate runs differ by several us here from the machine alone
/// (measured: +5.1 us for a 10 us delay in one pair of runs, +9.7 in another), which would
/// mask what is being checked.
fn compare_check(env: &Env) -> Result<()> {
    use lab::compare::{compare, load, Clock, Verdict};
    let cal = env.results_root().join("calibrate-test");
    let base = env.results_root().join("compare-test");
    let _ = std::fs::remove_dir_all(&base);
    // trigger id -> the delay its order was sent with.
    let orders = std::fs::read_to_string(cal.join("kernel-1.strategy-orders.csv"))
        .context("the calibration run's strategy orders")?;
    let mut delay = std::collections::HashMap::new();
    for l in orders.lines().skip(1) {
        let f: Vec<&str> = l.split(',').collect();
        if let (Some(id), Some(d)) = (f.get(1), f.get(5)) {
            delay.insert((*id).to_owned(), (*d).to_owned());
        }
    }
    let ex = std::fs::read_to_string(cal.join("kernel-1.exchange.csv"))
        .context("the calibration run's exchange rows")?;
    let mut lines = ex.lines();
    let header = lines.next().unwrap_or_default();
    for (name, want) in [("plain", "0"), ("delay10", "10000")] {
        let dir = base.join(name);
        std::fs::create_dir_all(&dir)?;
        let mut out = format!("{header}\n");
        for l in ex.lines().skip(1) {
            let id = l.split(',').nth(1).unwrap_or_default();
            if delay.get(id).map(String::as_str) == Some(want) {
                out.push_str(l);
                out.push('\n');
            }
        }
        std::fs::write(dir.join("kernel-1.exchange.csv"), out)?;
    }
    let (sa, sb) = (
        load(&base.join("plain"), Clock::Kernel)?,
        load(&base.join("delay10"), Clock::Kernel)?,
    );
    let same = compare(&sa, &sa);
    anyhow::ensure!(
        !same.is_empty() && same.iter().all(|r| r.verdict == Verdict::NoDifference),
        "a run against itself must show no difference"
    );
    let rows = compare(&sa, &sb);
    let r = rows.first().context("no path compared")?;
    let half = (r.ci_us.1 - r.ci_us.0) / 2.0;
    println!(
        "compare check: 10 us injected (same session, interleaved): B - A = {:+.2} us [{:+.2}, {:+.2}], {:?}",
        r.diff_us, r.ci_us.0, r.ci_us.1, r.verdict
    );
    anyhow::ensure!(
        r.verdict == Verdict::Slower && (r.diff_us - 10.0).abs() <= 1.0 + half,
        "an injected 10 us delay must compare as slower by 10 +/- 1 us: {:+.2} [{:+.2}, {:+.2}]",
        r.diff_us,
        r.ci_us.0,
        r.ci_us.1
    );
    Ok(())
}

fn test(a: &TestArgs) -> Result<()> {
    // The AF_XDP tests need the XDP program: build it (this installs its toolchain); the VM
    // tests need QEMU, a guest kernel and busybox.
    build_ebpf()?;
    if !a.no_vm {
        setup::run(&setup::SetupArgs {
            ebpf: false,
            vm: true,
        })?;
    }
    if !a.no_lint {
        cmd("cargo", &["fmt", "--all", "--check"])?;
        cmd(
            "cargo",
            &[
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ],
        )?;
        // The API docs build without a warning (broken or private links, stray HTML).
        println!("+ RUSTDOCFLAGS=\"-D warnings\" cargo doc --workspace --no-deps");
        let ok = std::process::Command::new("cargo")
            .args(["doc", "--workspace", "--no-deps"])
            .env("RUSTDOCFLAGS", "-D warnings")
            .current_dir(root())
            .status()?
            .success();
        anyhow::ensure!(ok, "cargo doc found warnings");
    }
    // Release build: the end-to-end tests run the real binaries at realistic speed. Build
    // every binary first: the strategy's end-to-end tests start the exchange's.
    cmd("cargo", &["build", "--workspace", "--release", "--bins"])?;
    cmd("cargo", &["test", "--workspace", "--release"])?;
    let env = Env::workspace();
    // The measurement chain: injected delays must show up as p50 shifts (1 us + 5 %, widened by the medians' 95 % confidence).
    lab::calibrate::run(
        &env,
        &test_lab(
            &["kernel"],
            None,
            env.results_root().join("calibrate-test"),
            "rate:5000",
        ),
    )?;
    compare_check(&env)?;
    // Captures: the analyzer must find on the wire exactly the orders the results list.
    let pcap_dir = env.results_root().join("pcap-test");
    let _ = std::fs::remove_dir_all(&pcap_dir);
    std::fs::create_dir_all(&pcap_dir)?;
    let small = pcap_dir.join("md-small.csv.gz");
    mdfile::mdgen::generate(
        &small,
        &mdfile::mdgen::GenConfig {
            target_bytes: 40_000,
            depth: 60,
            trigger_every: 80,
            ..Default::default()
        },
    )?;
    lab::netns::run(
        &env,
        &LabConfig {
            pcap: true,
            ..test_lab(
                &["kernel", "xdp"],
                Some(small),
                pcap_dir.clone(),
                "rate:5000",
            )
        },
    )?;
    lab::capture::run(&pcap_dir)?;
    // The gap as an axis, and warming: two gaps, a cold and a warmed path; fails unless
    // every run's orders equal the oracle (heartbeats included, which the exchange must
    // count apart).
    lab::netns::run(
        &env,
        &LabConfig {
            order_gaps: vec![
                std::time::Duration::from_millis(1),
                std::time::Duration::from_millis(20),
            ],
            orders_per_gap: 12,
            ..test_lab(
                &["kernel", "xdp+warm"],
                None,
                env.results_root().join("gap-test"),
                "rate:5000",
            )
        },
    )?;
    render_check(&env.results_root().join("gap-test"))?;
    if !a.no_vm {
        vm_smoke(&env)?;
    }
    if !a.no_fuzz {
        // Bounded fuzzing of every parser of outside input: 10 s per target.
        let runs = run_fuzz(10)?;
        let total: u64 = runs.iter().map(|r| r.1).sum();
        println!(
            "fuzz: {} targets, {total} inputs in total, no crash",
            runs.len()
        );
    }
    println!("all tests passed");
    Ok(())
}
