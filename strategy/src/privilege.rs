//! `--user NAME`: the strategy's one-time set-up runs as root (pinning, SCHED_FIFO,
//! mlockall, the output files, and the raw paths' data plane: the ring, the UMEM, the XDP
//! program, opened once and kept across sessions), then it becomes NAME keeping only the
//! capabilities its later sessions still need.
//!
//! `xdp` keeps CAP_NET_ADMIN (the program is detached at exit: through its link, or by
//! netlink on kernels without XDP links); `packet` nothing; `xdp-tx` opens its plane for
//! every session (its armed state belongs to a session's connection) and so keeps what that
//! takes: CAP_NET_ADMIN, CAP_BPF and CAP_PERFMON (load: the verifier allows the program's
//! pointer arithmetic only to a perfmon-capable loader), CAP_NET_RAW (the AF_XDP socket),
//! CAP_IPC_LOCK (pin the UMEM); the kernel and io_uring paths keep nothing unless a flag
//! needs CAP_NET_ADMIN (SO_BUSY_POLL, SO_PREFER_BUSY_POLL, SO_PRIORITY above 6).
//! `--mlock` keeps CAP_IPC_LOCK (MCL_FUTURE locks later mappings too); `--keep-cap` adds
//! any other. Run without root at all instead: give the binary the capabilities with
//! `setcap` (README, "Running without root").

use hostsys::privilege::Capability;

use crate::cli::RunArgs;
use crate::net::NetKind;

/// The capabilities `a`'s path and flags need after the one-time set-up.
pub fn needed(a: &RunArgs) -> Vec<Capability> {
    let mut caps = match a.net {
        NetKind::XdpTx => vec![
            Capability::CAP_NET_ADMIN,
            Capability::CAP_BPF,
            Capability::CAP_PERFMON,
            Capability::CAP_NET_RAW,
            Capability::CAP_IPC_LOCK,
        ],
        NetKind::Xdp => vec![Capability::CAP_NET_ADMIN],
        NetKind::Packet | NetKind::Kernel | NetKind::Uring => Vec::new(),
    };
    if a.sockets.busy_poll > 0
        || a.sockets.prefer_busy_poll > 0
        || a.sockets.so_priority.is_some_and(|p| p > 6)
    {
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
        assert!(needed_for(&["--net", "packet"]).is_empty());
        assert_eq!(needed_for(&["--net", "xdp"]), ["CAP_NET_ADMIN"]);
        assert_eq!(
            needed_for(&["--net", "xdp-tx"]),
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
            ["CAP_SYS_NICE"]
        );
    }
}
