//! Counters read from /proc: UDP drops of this network namespace, open descriptors and
//! resident memory of this process (reports and soak tests).

/// UDP receive-side drop counters from /proc/net/snmp (this network namespace).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
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
}
