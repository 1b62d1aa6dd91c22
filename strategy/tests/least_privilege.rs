//! Least privilege, end to end over veth: the xdp and packet paths run as `nobody`, either
//! dropped to it after set-up (`--user nobody`, the exchange too) or never root at all (a
//! copy of the binary given its capabilities with `setcap`, started as `nobody` by
//! `setpriv`). Each way: both sessions' orders equal the oracle, the running process has
//! uid 65534 and exactly the capabilities it should hold (after `--user`: only what later
//! sessions need, the data plane being open; with setcap: the file's), and nothing
//! stays attached. Needs root (to build the lab); skipped with a printed reason otherwise.

#[path = "common/procs.rs"]
mod procs;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hostsys::privilege::Capability;
use netlab::VethLab;
use strategy::net::NetKind;

const NOBODY: u32 = 65534;

/// What each path keeps after `--user` (the same lists as `strategy::privilege`, written
/// out again here): the data plane is opened before the drop and kept across sessions.
fn kept_by_user(net: &str) -> Vec<Capability> {
    match procs::kind(net) {
        NetKind::Xdp => vec![Capability::CAP_NET_ADMIN],
        _ => Vec::new(),
    }
}

/// What the binary's file capabilities give it to run without root at all.
fn file_caps(net: &str) -> (&'static str, Vec<Capability>) {
    match procs::kind(net) {
        NetKind::Xdp => (
            "cap_net_admin,cap_net_raw,cap_bpf,cap_perfmon,cap_ipc_lock+ep",
            vec![
                Capability::CAP_NET_ADMIN,
                Capability::CAP_BPF,
                Capability::CAP_PERFMON,
                Capability::CAP_NET_RAW,
                Capability::CAP_IPC_LOCK,
            ],
        ),
        _ => ("cap_net_raw+ep", vec![Capability::CAP_NET_RAW]),
    }
}

fn mask(caps: &[Capability]) -> u64 {
    caps.iter().fold(0, |m, c| m | c.bitmask())
}

/// `(uid, CapEff)` of a running process.
fn identity(pid: u32) -> Option<(u32, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |k: &str| {
        status
            .lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
    };
    let uid = field("Uid:")?.parse().ok()?;
    let eff = u64::from_str_radix(&field("CapEff:")?, 16).ok()?;
    Some((uid, eff))
}

/// Waits until `log` says the set-up is done (or the process runs as nobody from the start)
/// and returns the process's identity then.
fn identity_after_setup(p: &mut procs::Proc, log: &Path, dropped: bool) -> (u32, u64) {
    let t0 = Instant::now();
    loop {
        // Started by `ip netns exec` and `setpriv`, the pid is the strategy's once its
        // name is.
        let ready = if dropped {
            std::fs::read_to_string(log).is_ok_and(|l| l.contains("set-up done"))
        } else {
            std::fs::read_to_string(format!("/proc/{}/comm", p.0.id()))
                .is_ok_and(|c| c.trim() == "strategy")
        };
        if ready {
            if let Some(id) = identity(p.0.id()) {
                return id;
            }
        }
        assert!(
            p.0.try_wait().expect("try_wait").is_none(),
            "exited early\n{}",
            procs::tail(log)
        );
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "no set-up line\n{}",
            procs::tail(log)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A directory `nobody` may read and write.
fn open_dir(dir: &Path, name: &str) -> PathBuf {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).expect("mkdir");
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    d
}

/// One run of `net`: the strategy dropped to nobody by `--user`, or (`capbin`) that binary
/// with file capabilities started as nobody.
fn run(dir: &Path, md: &Path, want: &[procs::Order], net: &str, capbin: Option<&Path>) {
    let how = if capbin.is_some() { "setcap" } else { "--user" };
    let lab = VethLab::new("lpv").expect("lab");
    let out = open_dir(dir, &format!("{net}-{how}"));
    let f = |s: &str| out.join(s);
    let (csv, orders, exlog, stlog) = (f("ex.csv"), f("st.csv"), f("ex.log"), f("st.log"));
    let mut ex = procs::exchange(
        &lab.exchange,
        md,
        &csv,
        &exlog,
        &[
            "--sessions",
            "2",
            "--pace",
            "rate:20000",
            "--grace",
            "50ms",
            "--user",
            "nobody",
        ],
    );
    let (ex_uid, ex_caps) = identity_after_setup(&mut ex, &exlog, true);
    assert_eq!(
        (ex_uid, ex_caps),
        (NOBODY, 0),
        "the exchange as nobody, no capability"
    );
    let mut args = procs::run_args(net);
    args.extend(["--reconnect", "--sessions", "2"].map(str::to_owned));
    let orders_arg = orders.to_str().expect("utf8").to_owned();
    args.extend(["--orders-out".to_owned(), orders_arg]);
    let cmd = match capbin {
        None => {
            args.extend(["--user", "nobody"].map(str::to_owned));
            let mut c = lab.strategy.command(env!("CARGO_BIN_EXE_strategy"));
            c.args(&args);
            c
        }
        Some(bin) => {
            let mut c = lab.strategy.command("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .arg(bin)
                .args(&args);
            c
        }
    };
    let mut st = procs::spawn(cmd, &stlog);
    let (uid, eff) = identity_after_setup(&mut st, &stlog, capbin.is_none());
    assert_eq!(uid, NOBODY, "{net} ({how}): runs as nobody");
    let caps = match capbin {
        None => kept_by_user(net),
        Some(_) => file_caps(net).1,
    };
    assert_eq!(
        eff,
        mask(&caps),
        "{net} ({how}): exactly the path's capabilities are effective"
    );
    procs::wait(&mut st, Duration::from_secs(30), "strategy", &stlog);
    procs::wait(&mut ex, Duration::from_secs(10), "exchange", &exlog);
    for s in ["1", "2"] {
        assert_eq!(
            procs::read_orders(&csv, Some(s)),
            want,
            "{net} ({how}): session {s}: exchange received = oracle"
        );
        assert_eq!(
            procs::read_orders(&orders, Some(s)),
            want,
            "{net} ({how}): session {s}: strategy sent = oracle"
        );
    }
    let left = procs::xdp_left(&lab.strategy);
    assert!(left.is_none(), "{net} ({how}): detached: {left:?}");
}

#[test]
fn xdp_and_packet_run_as_nobody_with_only_their_capabilities() {
    if procs::skip() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let md = procs::md_file(dir.path(), "md.csv.gz", 6000, 20, 20);
    std::fs::set_permissions(&md, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let want = procs::oracle(&md);
    assert!(want.len() >= 5, "the file triggers: {want:?}");
    for net in ["xdp", "packet"] {
        run(dir.path(), &md, &want, net, None);
    }
    // Never root: a copy of the binary with file capabilities, started as nobody.
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).expect("mkdir");
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let capbin = bin.join("strategy");
    std::fs::copy(env!("CARGO_BIN_EXE_strategy"), &capbin).expect("copy");
    for net in ["xdp", "packet"] {
        // The file capabilities of each run are those the path needs, no more.
        let set = file_caps(net).0;
        let st = std::process::Command::new("setcap")
            .args([set, capbin.to_str().expect("utf8")])
            .status()
            .expect("setcap (libcap2-bin; `cargo xtask setup` installs it)");
        assert!(st.success(), "setcap {set}");
        run(dir.path(), &md, &want, net, Some(&capbin));
    }
}
