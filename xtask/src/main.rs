//! `cargo xtask`: the project's developer and lab commands.
//!
//! `cargo xtask` alone lists them. `setup` installs what the other commands need on a Debian
//! machine (idempotent: it checks first and says what it installs); `test` is the whole test
//! suite (what CI runs); `lab` runs an experiment in network namespaces and prints the
//! paths side by side; `gen-md` writes the default market-data file; `bench-exchange`
//! measures the publisher.
#![deny(unsafe_code)]

mod background;
mod fuzz;
mod guest_kernel;
mod setup;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

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
    /// Write the default market-data file (cached in target/lab-data/): `lab gen-md`.
    #[command(disable_help_flag = true)]
    GenMd(PassArgs),
    /// Run the lab (network namespaces, or QEMU with --vm): builds the release binaries
    /// and the XDP program, then runs `target/release/lab` with these arguments
    /// (`cargo xtask lab --help` lists them).
    #[command(disable_help_flag = true)]
    Lab(PassArgs),
    /// Benchmark the exchange's publisher, max rate and pacing error: `lab bench`.
    #[command(disable_help_flag = true)]
    BenchExchange(PassArgs),
    /// Build the XDP program (nightly, build-std, bpf-linker; installs them if missing).
    BuildEbpf,
    /// Rewrite docs/usage.md from the programs' own `--help` (the test command fails when
    /// it is stale).
    Usage,
    /// Build what is needed and run the strategy on an interface (e.g. inside the guest:
    /// `cargo xtask run --iface ens3 --exchange 192.168.100.1:9012`).
    Run(RunArgs),
    /// Run every fuzz target for a while (installs cargo-fuzz; uses the nightly toolchain).
    Fuzz(fuzz::FuzzArgs),
}

/// Arguments handed to the `lab` binary as they are.
#[derive(clap::Args)]
struct PassArgs {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

/// Installs and builds what the lab needs (unless `--no-build`, or only help is asked
/// and the binary is there), then runs `target/release/lab` with `sub` and the arguments.
fn lab(sub: &[&str], a: &PassArgs) -> Result<()> {
    let has = |f: &str| a.args.iter().any(|x| x == f);
    let bin = root().join("target/release/lab");
    let help = has("--help") || has("-h");
    if !(has("--no-build") || (help && bin.exists())) {
        // The lab links the strategy's library, AF_XDP included: the eBPF set-up (clang,
        // libelf for xsk-rs's bundled libbpf) and the XDP program come first.
        build_ebpf()?;
        if has("--vm") {
            setup::run(&setup::SetupArgs {
                ebpf: false,
                vm: true,
            })?;
        }
        cmd(
            "cargo",
            &[
                "build",
                "--release",
                "-p",
                "lab",
                "-p",
                "exchange",
                "-p",
                "strategy",
            ],
        )?;
    }
    let st = Command::new(&bin)
        .args(sub)
        .args(&a.args)
        .current_dir(root())
        .status()
        .with_context(|| format!("running {}", bin.display()))?;
    if !st.success() {
        bail!("lab exited with {st}");
    }
    Ok(())
}

#[derive(clap::Args)]
struct RunArgs {
    /// Interface the strategy uses (joins the group on it; AF_XDP binds to it).
    #[arg(long)]
    iface: String,
    /// Network path (`strategy run --net`: kernel, uring, xdp, packet, xdp-tx).
    #[arg(long, default_value = "xdp")]
    net: String,
    /// Exchange order-entry address.
    #[arg(long, default_value = "192.168.100.1:9012")]
    exchange: String,
    /// Further `strategy run` flags, after `--`.
    #[arg(last = true)]
    rest: Vec<String>,
}

fn run_strategy(a: &RunArgs) -> Result<()> {
    // The strategy's build embeds the XDP program when it is there: build it (quick when
    // it is up to date) whatever the path, so that one binary serves every --net.
    build_ebpf()?;
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
    .args(["--net", &a.net])
    .args(&a.rest);
    println!("+ {} {:?}", bin.display(), c.get_args().collect::<Vec<_>>());
    let st = c.status().context("running the strategy")?;
    if !st.success() {
        bail!("strategy exited with {st}");
    }
    Ok(())
}

/// Builds strategy-ebpf into target/ebpf: the XDP program (embedded by the strategy's build
/// script) and the tracing programs of `lab --trace` (embedded by the lab's).
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
    // v3: the atomic add with fetch and the compare-exchange of the `xdp-tx` ticket
    // (Linux >= 5.12 runs them; the guest's 6.1 and the host's 6.18 do). Misaligned access
    // allowed: an unaligned read is one load, not a byte at a time (x86's verifier and JIT
    // take misaligned packet and map loads; the tracing programs keep their copy of the
    // headers in a map value for it, since stack access must be aligned). One build of both
    // programs.
    let flags = "-C debuginfo=2 -C link-arg=--btf -C target-cpu=v3 \
                 -C target-feature=+allows-misaligned-mem-access";
    let target_dir = root().join("target/ebpf");
    println!(
        "+ [{}] cargo +nightly build --bins (strategy-ebpf, bpfel-unknown-none, release)",
        elapsed()
    );
    let st = Command::new("cargo")
        .args([
            "+nightly",
            "build",
            "-Z",
            "build-std=core",
            "--target",
            "bpfel-unknown-none",
            "--release",
            "--bins",
        ])
        .arg("--target-dir")
        .arg(&target_dir)
        .current_dir(root().join("strategy-ebpf"))
        .env("PATH", &path)
        .env("RUSTFLAGS", flags)
        .env_remove("RUSTC")
        .env_remove("RUSTC_WRAPPER")
        .status()
        .context("running cargo +nightly")?;
    if !st.success() {
        bail!("building the eBPF programs failed");
    }
    let out = target_dir.join("bpfel-unknown-none/release");
    println!(
        "XDP program: {}; tracing programs: {}",
        out.join("strategy-ebpf").display(),
        out.join("trace-ebpf").display()
    );
    Ok(())
}

#[derive(clap::Args)]
struct TestArgs {
    /// Skip `cargo fmt --check`, clippy and the API docs' check.
    #[arg(long)]
    no_lint: bool,
    /// Skip the QEMU guest tests.
    #[arg(long)]
    no_vm: bool,
    /// Skip the bounded fuzzing (10 s per target).
    #[arg(long)]
    no_fuzz: bool,
}

fn main() -> ExitCode {
    let _ = elapsed(); // the clock of the steps printed starts here
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Setup(a) => setup::run(&a),
        Cmd::Test(a) => test(&a),
        Cmd::GenMd(a) => lab(&["gen-md"], &a),
        Cmd::Lab(a) => lab(&[], &a),
        Cmd::BenchExchange(a) => lab(&["bench"], &a),
        Cmd::Fuzz(a) => fuzz::fuzz(&a),
        Cmd::BuildEbpf => build_ebpf(),
        Cmd::Usage => usage(),
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

/// Rewrites docs/usage.md from the programs' `--help` (the lab crate's `usage_doc` test in
/// its writing mode).
fn usage() -> Result<()> {
    println!("+ NICLAB_BLESS_USAGE=1 cargo test --release -p lab --test usage_doc");
    let ok = Command::new("cargo")
        .args(["test", "--release", "-p", "lab", "--test", "usage_doc"])
        .env("NICLAB_BLESS_USAGE", "1")
        .current_dir(root())
        .status()?
        .success();
    anyhow::ensure!(ok, "regenerating docs/usage.md failed");
    println!("wrote docs/usage.md");
    Ok(())
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
    println!("+ [{}] {program} {}", elapsed(), args.join(" "));
    let st = Command::new(program)
        .args(args)
        .current_dir(root())
        .status()
        .with_context(|| format!("running {program}"))?;
    if !st.success() {
        bail!("`{program} {}` failed ({st})", args.join(" "));
    }
    Ok(())
}

/// Time since xtask started, for the steps it prints ("12 s", "3 min 05 s").
fn elapsed() -> String {
    static T0: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let s = T0.get_or_init(std::time::Instant::now).elapsed().as_secs();
    if s < 60 {
        format!("{s} s")
    } else {
        format!("{} min {:02} s", s / 60, s % 60)
    }
}

/// `cargo fmt --check`, clippy with every warning an error, and the API docs without a
/// warning.
fn lint() -> Result<()> {
    cmd("cargo", &["fmt", "--all", "--check"])?;
    cmd(
        "cargo",
        &[
            "clippy",
            "--release",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    // The API docs build without a warning (broken or private links, stray HTML); they
    // reuse clippy's check build of the dependencies.
    println!(
        "+ [{}] RUSTDOCFLAGS=\"-D warnings\" cargo doc --release --workspace --no-deps",
        elapsed()
    );
    let ok = Command::new("cargo")
        .args(["doc", "--release", "--workspace", "--no-deps"])
        .env("RUSTDOCFLAGS", "-D warnings")
        .current_dir(root())
        .status()?
        .success();
    anyhow::ensure!(ok, "cargo doc found warnings");
    Ok(())
}

fn test(a: &TestArgs) -> Result<()> {
    // The AF_XDP tests need the XDP program: build it (this installs its toolchain); the VM
    // tests need QEMU, a guest kernel and busybox: the packages first (apt runs one at a
    // time), the newer guest kernel's download beside the eBPF build, joined before the VM
    // tests. Its wait on the network is hidden there, its unpacking is not (the eBPF build
    // took 48-59 s beside it against 37 s alone: docs/test-time.md).
    let guest_kernel = if a.no_vm {
        None
    } else {
        setup::vm_packages()?;
        Some(std::thread::spawn(setup::fetch_guest_kernel))
    };
    // The eBPF programs, then the lints. Tried the other way, the programs' build beside
    // clippy: both took longer than one after the other (docs/test-time.md).
    build_ebpf()?;
    if !a.no_lint {
        lint()?;
    }
    // Release build: the end-to-end tests run the real binaries at realistic speed. Every
    // binary and test binary first, in one cargo run: `--no-run` builds each package's
    // binaries too, for its integration tests (the strategy's end-to-end tests start the
    // exchange's), and one run keeps both CPUs busy where two left a serial tail each.
    // Then the fuzz targets' build beside the tests, under SCHED_IDLE: on the CPU time the
    // tests leave (they wait on timers, sessions and guests). Started before the builds, it
    // slowed them by more than it saved (the machine's two CPUs, caches and memory shared
    // with the compilers); what is not done by the VM tests finishes beside them. The
    // lints beside the tests as well made the run longer, not shorter (docs/test-time.md).
    cmd("cargo", &["test", "--workspace", "--release", "--no-run"])?;
    let fuzz_build = (!a.no_fuzz).then(|| fuzz::start_build(true)).transpose()?;
    cmd("cargo", &["test", "--workspace", "--release"])?;
    // The lab end to end (calibration, compare, captures, the gap axis with warming, the
    // report rendered by librsvg and Chromium; then the VM lab): tests of the lab crate
    // that need root and the binaries just built, one at a time (they pin CPUs).
    setup::apt_install(&[
        (
            "librsvg2-bin",
            "renders the lab's SVG plots in the test command",
        ),
        (
            "chromium",
            "renders the lab's HTML report in the test command (headless)",
        ),
        (
            "openssh-server",
            "the second machine of the two-machine test: a real sshd in a network namespace (never started as a service)",
        ),
    ])?;
    // `--workspace` (not `-p lab`): the same feature resolution as the run above, so
    // nothing is rebuilt (with `-p lab` the strategy, exchange and lab recompiled: ~1.5 min).
    let lab_tests = |tests: &[&'static str]| -> Vec<&'static str> {
        let mut args = vec!["test", "--release", "--workspace"];
        for t in tests {
            args.extend(["--test", t]);
        }
        args.extend(["--", "--ignored", "--test-threads", "1", "--nocapture"]);
        args
    };
    cmd("cargo", &lab_tests(&["lab_runs", "remote_lab"]))?;
    // The bounded fuzzing runs beside the VM tests: a TCG guest keeps one CPU busy and waits
    // on little else, the fuzzing takes the other (docs/test-time.md). The namespace lab tests
    // above pin both CPUs and run alone (the fuzz build beside them only on idle CPU time).
    // The VM tests do not wait for the fuzz build: where it is not done yet, it finishes
    // beside them and the targets run after it.
    let fuzzing = fuzz_build.map(|b| {
        std::thread::spawn(move || {
            let lines = fuzz::build_lines(b)?;
            fuzz::run_fuzz_targets(10, lines)
        })
    });
    let vm = match guest_kernel {
        None => Ok(()),
        Some(fetch) => {
            fetch
                .join()
                .map_err(|_| anyhow::anyhow!("the guest kernel's download panicked"))?;
            cmd("cargo", &lab_tests(&["vm_lab"]))
        }
    };
    if let Some(f) = fuzzing {
        let report = f
            .join()
            .map_err(|_| anyhow::anyhow!("the fuzzing thread panicked"))??;
        for line in &report.lines {
            println!("{line}");
        }
        anyhow::ensure!(report.inputs > 0, "the fuzz targets ran no input");
    }
    vm?;
    println!("all tests passed in {}", elapsed());
    Ok(())
}
