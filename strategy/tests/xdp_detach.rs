//! The XDP program is detached on every exit path of the AF_XDP strategy: normal end of
//! session, SIGINT mid-session, an error after attach, and a panic; and `strategy probe`'s
//! trials leave nothing behind. Needs root and the embedded XDP program (`cargo xtask
//! build-ebpf`); skipped with a reason otherwise.

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use mdfile::mdgen::{self, GenConfig};
use netlab::VethLab;

fn exchange_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_strategy")).with_file_name("exchange")
}

fn xdp_attached(lab: &VethLab) -> bool {
    let out = lab
        .strategy
        .exec(&["ip", "link", "show", "dev", "vs0"])
        .expect("ip link");
    out.contains("xdp")
}

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Skips (with the reason printed) without root or without the embedded XDP program.
fn skip() -> bool {
    if !netlab::is_root() {
        eprintln!("skipped: needs root");
        return true;
    }
    if !strategy::net::af_xdp::loader::has_object() {
        eprintln!("skipped: built without the XDP program (run `cargo xtask build-ebpf`)");
        return true;
    }
    false
}

#[test]
fn xdp_program_is_detached_on_every_exit_path() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let md = dir.path().join("md.csv.gz");
    mdgen::generate(
        &md,
        &GenConfig {
            target_bytes: 40_000,
            depth: 60,
            trigger_every: 80,
            ..GenConfig::default()
        },
    )
    .expect("gen");
    let lab = VethLab::new("xdd").expect("lab");
    let start_exchange = |pace: &str| {
        Proc(
            lab.exchange
                .command(exchange_bin())
                .args(
                    exchange::serve_cmd::ServeCmd::new(&md, "10.77.0.1:9012")
                        .md_iface("vx0")
                        .quiet_orders(true)
                        .pace(pace)
                        .args(),
                )
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("exchange"),
        )
    };
    let strategy = |extra: &[&str]| {
        Proc(
            lab.strategy
                .command(env!("CARGO_BIN_EXE_strategy"))
                .args([
                    "run",
                    "--net",
                    "xdp",
                    "--iface",
                    "vs0",
                    "--exchange",
                    "10.77.0.1:9012",
                ])
                .args(extra)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("strategy"),
        )
    };
    let _ex = start_exchange("rate:2000");
    std::thread::sleep(Duration::from_millis(200));

    // 1. Normal exit: one session to its end.
    let mut st = strategy(&["--sessions", "1"]);
    assert!(
        wait_until(Duration::from_secs(5), || xdp_attached(&lab)),
        "program attached while running"
    );
    assert!(
        wait_until(Duration::from_secs(60), || st
            .0
            .try_wait()
            .ok()
            .flatten()
            .is_some()),
        "session ended"
    );
    assert!(st.0.wait().expect("wait").success());
    assert!(!xdp_attached(&lab), "detached after a normal exit");

    // 2. SIGINT mid-session.
    let mut st = strategy(&["--sessions", "1"]);
    assert!(wait_until(Duration::from_secs(5), || xdp_attached(&lab)));
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: kill(2) on our child's pid.
    unsafe { libc::kill(st.0.id() as i32, libc::SIGINT) };
    assert!(
        st.0.wait().expect("wait").success(),
        "SIGINT is a clean exit"
    );
    assert!(!xdp_attached(&lab), "detached after SIGINT");

    // 3. An error after attach: joining a group that is not multicast fails.
    let mut st = strategy(&["--md-group", "10.77.0.9:12345", "--sessions", "1"]);
    assert!(
        !st.0.wait().expect("wait").success(),
        "the bad group is an error"
    );
    assert!(!xdp_attached(&lab), "detached after an error");

    // 4. A panic in the busy loop (hidden test hook).
    let mut st = strategy(&["--sessions", "1", "--panic-after-packets", "50"]);
    let status = st.0.wait().expect("wait");
    assert!(!status.success(), "the panic is reported");
    assert!(!xdp_attached(&lab), "detached after a panic");
}

/// `strategy probe` on an interface tries the XDP attach modes and an AF_XDP zero-copy
/// bind, and leaves nothing behind: on a veth, driver and generic mode attach, and the
/// zero-copy bind is refused with the OS error's reason (veth binds in copy mode only).
#[test]
fn the_probe_tries_xdp_and_a_zero_copy_bind_and_leaves_nothing_attached() {
    if skip() {
        return;
    }
    let lab = VethLab::new("xpr").expect("lab");
    // A process in the namespace (`ip netns exec` mounts its /sys: the probe lists
    // /sys/class/net), as a user runs it.
    let out = lab
        .strategy
        .command(env!("CARGO_BIN_EXE_strategy"))
        .args(["probe", "--iface", "vs0"])
        .output()
        .expect("strategy probe");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let section = text
        .split("interface vs0")
        .nth(1)
        .and_then(|rest| rest.split("\ninterface ").next())
        .unwrap_or_else(|| panic!("no section for vs0: {text}"));
    let row = |k: &str| {
        section
            .lines()
            .find_map(|l| l.trim().strip_prefix(k).map(|v| v.trim().to_owned()))
            .unwrap_or_else(|| panic!("no {k:?} row: {section}"))
    };
    assert_eq!(row("XDP driver mode"), "yes", "{section}");
    assert_eq!(row("XDP generic (SKB) mode"), "yes", "{section}");
    let zc = row("AF_XDP zero-copy bind (queue 0)");
    assert!(
        zc.starts_with("no (") && zc.contains("os error"),
        "veth has no zero-copy AF_XDP, and the row says why: {zc}"
    );
    assert!(!xdp_attached(&lab), "the probe left a program attached");
}
