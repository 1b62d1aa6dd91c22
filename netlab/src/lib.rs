//! Network namespaces and veth pairs that clean up after themselves.
//!
//! The lab and the integration tests build their networks from these RAII guards:
//! [`Netns`] (`ip netns add`, removed on drop, processes inside killed first) and
//! [`VethLab`] (two namespaces joined by a veth pair, addressed, with the multicast route).
//! Names are unique (`<prefix>-<pid>-<n>`), and [`sweep_stale`] removes namespaces left by a
//! process that died without running its destructors (SIGKILL). Traffic never leaves them.
//!
//! Code can run inside a namespace in two ways: a child process ([`Netns::command`], which
//! uses `ip netns exec`) or a thread of this process ([`Netns::spawn`], which calls
//! `setns(2)` on a fresh thread, so sockets it creates live in the namespace).

use std::fs::File;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::JoinHandle;

/// Errors from building the lab network.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An `ip` command could not be started (iproute2 missing?).
    #[error("cannot run `{cmd}`: {source} (is iproute2 installed? `cargo xtask setup`)")]
    Spawn {
        /// The command line.
        cmd: String,
        /// Why.
        source: io::Error,
    },
    /// An `ip` command failed.
    #[error("`{cmd}` failed: {stderr}")]
    Failed {
        /// The command line.
        cmd: String,
        /// What it printed.
        stderr: String,
    },
    /// Entering the namespace failed.
    #[error("setns into {ns}: {source}")]
    Setns {
        /// Namespace name.
        ns: String,
        /// Why.
        source: io::Error,
    },
}

/// Runs `ip <args>`, failing with its stderr.
pub fn ip(args: &[&str]) -> Result<String, Error> {
    run("ip", args)
}

/// Runs a command to completion, failing with its stderr.
pub fn run(program: &str, args: &[&str]) -> Result<String, Error> {
    let cmd = format!("{program} {}", args.join(" "));
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| Error::Spawn {
            cmd: cmd.clone(),
            source,
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(Error::Failed {
            cmd,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A unique name `<prefix>-<pid>-<n>` (at most 15 bytes kept for interface names).
pub fn unique_name(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{n}", std::process::id())
}

/// A network namespace, deleted on drop (after killing every process still inside it).
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates a namespace named `<prefix>-<pid>-<n>` with its loopback up.
    pub fn new(prefix: &str) -> Result<Self, Error> {
        let name = unique_name(prefix);
        ip(&["netns", "add", &name])?;
        let ns = Self { name };
        ns.exec(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A command that runs `program` inside the namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// Runs a command inside the namespace to completion.
    pub fn exec(&self, argv: &[&str]) -> Result<String, Error> {
        let mut args = vec!["netns", "exec", &self.name];
        args.extend_from_slice(argv);
        ip(&args)
    }

    /// Runs `f` on a new thread that has entered the namespace.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<JoinHandle<T>, Error> {
        let path = format!("/var/run/netns/{}", self.name);
        let file = File::open(&path).map_err(|source| Error::Setns {
            ns: self.name.clone(),
            source,
        })?;
        let ns = self.name.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let handle = std::thread::spawn(move || {
            // SAFETY: `file` is an open namespace file; setns only changes this thread's
            // network namespace (CLONE_NEWNET), which no other thread observes.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            let entered = if rc == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            };
            let ok = entered.is_ok();
            let _ = tx.send(entered);
            if !ok {
                // The caller gets the error from the channel; this thread must not run `f`
                // in the wrong namespace.
                std::process::abort();
            }
            f()
        });
        match rx.recv() {
            Ok(Ok(())) => Ok(handle),
            Ok(Err(source)) => Err(Error::Setns { ns, source }),
            Err(_) => Err(Error::Setns {
                ns,
                source: io::Error::other("thread died"),
            }),
        }
    }

    /// Pids of the processes inside the namespace.
    pub fn pids(&self) -> Vec<i32> {
        ip(&["netns", "pids", &self.name])
            .map(|out| {
                out.split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for pid in self.pids() {
            // SAFETY: kill(2) with a pid read from `ip netns pids`; no memory is involved.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// Removes namespaces named `<prefix>-<pid>-<n>` whose creating process is gone.
pub fn sweep_stale(prefix: &str) -> Vec<String> {
    let Ok(list) = ip(&["netns", "list"]) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(rest) = name.strip_prefix(prefix).and_then(|r| r.strip_prefix('-')) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let ns = Netns {
            name: name.to_owned(),
        };
        drop(ns);
        removed.push(name.to_owned());
    }
    removed
}

/// Two namespaces, `exchange` and `strategy`, joined by a veth pair.
///
/// Addresses: exchange side [`VethLab::EXCHANGE_ADDR`], strategy side
/// [`VethLab::STRATEGY_ADDR`], both /24; a route for 224.0.0.0/4 on each veth so the
/// multicast group goes out on the link. The interface names are `vx0` (exchange side)
/// and `vs0` (strategy side) inside their namespaces.
#[derive(Debug)]
pub struct VethLab {
    /// Strategy side (dropped first: fields drop in declaration order).
    pub strategy: Netns,
    /// Exchange side.
    pub exchange: Netns,
}

impl VethLab {
    /// Exchange-side address.
    pub const EXCHANGE_ADDR: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
    /// Strategy-side address.
    pub const STRATEGY_ADDR: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
    /// A second address on the strategy's link, for a path with its own TCP/IP stack
    /// (AF_PACKET's smoltcp: `strategy run --packet-ip`); not configured on the veth.
    pub const STRATEGY_OWN_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 3);
    /// Exchange-side interface name.
    pub const EXCHANGE_IF: &'static str = "vx0";
    /// Strategy-side interface name.
    pub const STRATEGY_IF: &'static str = "vs0";

    /// Builds the pair. `prefix` names the namespaces (`<prefix>x-…`, `<prefix>s-…`).
    pub fn new(prefix: &str) -> Result<Self, Error> {
        Self::with_queues(prefix, 1)
    }

    /// [`VethLab::new`] with `queues` RX and TX queues on each end (a frame arrives on the
    /// peer's RX queue numbered like the TX queue it left by: `tc ... skbedit
    /// queue_mapping` on one end chooses the other end's RX queue).
    pub fn with_queues(prefix: &str, queues: u32) -> Result<Self, Error> {
        sweep_stale(&format!("{prefix}x"));
        sweep_stale(&format!("{prefix}s"));
        let exchange = Netns::new(&format!("{prefix}x"))?;
        let strategy = Netns::new(&format!("{prefix}s"))?;
        let lab = Self { strategy, exchange };
        // Create both ends in the root namespace under unique temporary names, then move
        // them; the namespaces' deletion removes them, also on failure.
        let a = format!("nlx{}", COUNTER.fetch_add(1, Ordering::Relaxed) % 100_000);
        let b = format!("nls{}", COUNTER.fetch_add(1, Ordering::Relaxed) % 100_000);
        let (a, b) = (
            format!("{a}{}", std::process::id() % 10_000),
            format!("{b}{}", std::process::id() % 10_000),
        );
        let q = queues.max(1).to_string();
        ip(&[
            "link",
            "add",
            &a,
            "numrxqueues",
            &q,
            "numtxqueues",
            &q,
            "type",
            "veth",
            "peer",
            "name",
            &b,
            "numrxqueues",
            &q,
            "numtxqueues",
            &q,
        ])?;
        let moved = (|| {
            ip(&[
                "link",
                "set",
                &a,
                "netns",
                lab.exchange.name(),
                "name",
                Self::EXCHANGE_IF,
            ])?;
            ip(&[
                "link",
                "set",
                &b,
                "netns",
                lab.strategy.name(),
                "name",
                Self::STRATEGY_IF,
            ])
        })();
        if let Err(e) = moved {
            let _ = ip(&["link", "del", &a]);
            return Err(e);
        }
        for (ns, ifname, addr) in [
            (&lab.exchange, Self::EXCHANGE_IF, Self::EXCHANGE_ADDR),
            (&lab.strategy, Self::STRATEGY_IF, Self::STRATEGY_ADDR),
        ] {
            ns.exec(&["ip", "addr", "add", &format!("{addr}/24"), "dev", ifname])?;
            ns.exec(&["ip", "link", "set", ifname, "up"])?;
            ns.exec(&["ip", "route", "add", "224.0.0.0/4", "dev", ifname])?;
        }
        Ok(lab)
    }
}

/// Is this process root (or does it at least hold CAP_NET_ADMIN / CAP_SYS_ADMIN)?
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_differ() {
        assert_ne!(unique_name("t"), unique_name("t"));
    }

    #[test]
    fn veth_lab_is_created_and_removed() {
        if !is_root() {
            eprintln!("skipped: needs root for network namespaces");
            return;
        }
        let lab = VethLab::new("nlt").expect("veth lab");
        let names = (
            lab.exchange.name().to_owned(),
            lab.strategy.name().to_owned(),
        );
        let out = lab
            .strategy
            .exec(&["ip", "-o", "addr", "show", "dev", VethLab::STRATEGY_IF])
            .expect("ip addr");
        assert!(out.contains("10.77.0.2/24"), "{out}");
        let socket_ns = lab
            .strategy
            .spawn(|| {
                std::fs::read_link("/proc/thread-self/ns/net").map(|p| p.display().to_string())
            })
            .expect("spawn")
            .join()
            .expect("join")
            .expect("readlink");
        let own = std::fs::read_link("/proc/thread-self/ns/net")
            .expect("readlink")
            .display()
            .to_string();
        assert_ne!(socket_ns, own, "spawned thread must be in the namespace");
        drop(lab);
        let list = ip(&["netns", "list"]).expect("list");
        assert!(
            !list.contains(&names.0) && !list.contains(&names.1),
            "namespaces left: {list}"
        );
    }
}
