//! Counters read from /proc: UDP drops of this network namespace, open descriptors and
//! resident memory of this process (reports and soak tests).

/// UDP receive-side drop counters from /proc/net/snmp (this network namespace).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UdpCounters {
    /// `InErrors`.
    pub in_errors: u64,
    /// `RcvbufErrors`.
    pub rcvbuf_errors: u64,
}

impl UdpCounters {
    /// Reads the counters now (zeros when /proc/net/snmp cannot be read).
    pub fn read() -> Self {
        Self::parse(&std::fs::read_to_string("/proc/net/snmp").unwrap_or_default())
    }

    /// The counters from the text of /proc/net/snmp.
    pub fn parse(text: &str) -> Self {
        let mut lines = text.lines().filter(|l| l.starts_with("Udp:"));
        let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
            return Self::default();
        };
        let get = |key: &str| {
            names
                .split_whitespace()
                .position(|n| n == key)
                .and_then(|i| values.split_whitespace().nth(i)?.parse().ok())
        };
        Self {
            in_errors: get("InErrors").unwrap_or(0),
            rcvbuf_errors: get("RcvbufErrors").unwrap_or(0),
        }
    }

    /// `self - earlier`.
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            in_errors: self.in_errors.saturating_sub(earlier.in_errors),
            rcvbuf_errors: self.rcvbuf_errors.saturating_sub(earlier.rcvbuf_errors),
        }
    }
}

/// Count of open file descriptors of this process (for soak tests and reports).
pub fn open_fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Resident set size of this process in KiB.
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// This process's open descriptors by kind and its resident memory, taken at the end of a
/// session (the soak tests compare the first sessions' samples with the last ones').
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProcessSample {
    /// Open descriptors, all kinds.
    pub fds: u32,
    /// Sockets (TCP, UDP, AF_XDP, AF_PACKET, netlink).
    pub sockets: u32,
    /// BPF programs, maps and links.
    pub bpf: u32,
    /// io_uring instances.
    pub io_uring: u32,
    /// Resident set size, KiB.
    pub rss_kib: u64,
}

impl ProcessSample {
    /// Samples this process now (zeros where /proc cannot be read).
    pub fn now() -> Self {
        let mut s = Self {
            rss_kib: rss_kib(),
            ..Self::default()
        };
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            for entry in dir.flatten() {
                let target = std::fs::read_link(entry.path()).unwrap_or_default();
                s.count(&target.to_string_lossy());
            }
        }
        s
    }

    /// Counts one descriptor from its `/proc/self/fd` link text.
    fn count(&mut self, link: &str) {
        self.fds += 1;
        if link.starts_with("socket:") {
            self.sockets += 1;
        } else if link.starts_with("anon_inode:bpf") {
            self.bpf += 1;
        } else if link.contains("io_uring") {
            self.io_uring += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_counters_from_snmp_text() {
        let text = "Ip: Forwarding\nIp: 1\nUdp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors\nUdp: 10 2 7 4 3\n";
        let c = UdpCounters::parse(text);
        assert_eq!(
            c,
            UdpCounters {
                in_errors: 7,
                rcvbuf_errors: 3
            }
        );
        assert_eq!(c.since(&c), UdpCounters::default());
        assert_eq!(UdpCounters::parse("garbage"), UdpCounters::default());
    }

    #[test]
    fn descriptors_by_kind() {
        let mut s = ProcessSample::default();
        for l in [
            "socket:[123]",
            "anon_inode:bpf-prog",
            "anon_inode:bpf-map",
            "anon_inode:bpf_link",
            "anon_inode:[io_uring]",
            "/dev/null",
        ] {
            s.count(l);
        }
        assert_eq!((s.fds, s.sockets, s.bpf, s.io_uring), (6, 1, 3, 1));
        // This process has at least stdin/stdout/stderr (or the test harness's pipes).
        let me = ProcessSample::now();
        assert!(me.fds >= 1 && me.rss_kib > 0, "{me:?}");
    }
}
