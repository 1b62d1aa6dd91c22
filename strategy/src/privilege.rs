//! `--user NAME`: the strategy's one-time set-up runs as root (pinning, SCHED_FIFO,
//! mlockall, the output files opened), then it becomes NAME keeping only the capabilities
//! its path still needs for the sessions to come.
//!
//! Each session opens its data plane afresh (a clean UMEM, ring and program per session:
//! docs/decisions.md), so the raw paths keep what that takes: AF_XDP keeps CAP_NET_ADMIN
//! (attach and detach the program), CAP_BPF and CAP_PERFMON (load it: the verifier allows
//! the program's pointer arithmetic only to a perfmon-capable loader), CAP_NET_RAW (the
//! AF_XDP socket) and CAP_IPC_LOCK (pin the UMEM); AF_PACKET keeps CAP_NET_RAW; the kernel and io_uring paths
//! keep nothing unless a flag needs CAP_NET_ADMIN (SO_BUSY_POLL, SO_PREFER_BUSY_POLL,
//! SO_PRIORITY above 6). `--mlock` keeps CAP_IPC_LOCK (MCL_FUTURE locks later mappings too);
//! `--keep-cap` adds any other. Run without root at all instead: give the binary the same
//! capabilities with `setcap` (README, "Running without root").

use hostsys::privilege::Capability;

use crate::cli::RunArgs;
use crate::net::NetKind;

/// The capabilities `a`'s path and flags need after the one-time set-up.
pub fn needed(a: &RunArgs) -> Vec<Capability> {
    let mut caps = match a.net {
        NetKind::Xdp | NetKind::XdpTx => vec![
            Capability::CAP_NET_ADMIN,
            Capability::CAP_BPF,
            Capability::CAP_PERFMON,
            Capability::CAP_NET_RAW,
            Capability::CAP_IPC_LOCK,
        ],
        NetKind::Packet => vec![Capability::CAP_NET_RAW],
        NetKind::Kernel | NetKind::Uring => Vec::new(),
    };
    if a.busy_poll > 0 || a.prefer_busy_poll > 0 || a.so_priority.is_some_and(|p| p > 6) {
        caps.push(Capability::CAP_NET_ADMIN);
    }
    if a.mlock {
        caps.push(Capability::CAP_IPC_LOCK);
    }
    caps.extend(
        a.keep_cap
            .iter()
            .filter_map(|c| hostsys::privilege::parse_cap(c)),
    );
    caps.sort_by_key(|c| c.index());
    caps.dedup();
    caps
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    fn needed_for(args: &[&str]) -> Vec<String> {
        let cli = Cli::parse_from(std::iter::once("strategy").chain(args.iter().copied()));
        needed(&cli.run).iter().map(ToString::to_string).collect()
    }

    #[test]
    fn each_path_keeps_only_what_its_sessions_need() {
        assert!(needed_for(&["--net", "kernel"]).is_empty());
        assert!(needed_for(&["--net", "uring"]).is_empty());
        assert_eq!(needed_for(&["--net", "packet"]), ["CAP_NET_RAW"]);
        assert_eq!(
            needed_for(&["--net", "xdp"]),
            [
                "CAP_NET_ADMIN",
                "CAP_NET_RAW",
                "CAP_IPC_LOCK",
                "CAP_PERFMON",
                "CAP_BPF"
            ]
        );
        assert_eq!(
            needed_for(&["--net", "kernel", "--busy-poll", "50", "--mlock"]),
            ["CAP_NET_ADMIN", "CAP_IPC_LOCK"]
        );
        assert_eq!(
            needed_for(&["--net", "packet", "--keep-cap", "cap_sys_nice"]),
            ["CAP_NET_RAW", "CAP_SYS_NICE"]
        );
    }
}
