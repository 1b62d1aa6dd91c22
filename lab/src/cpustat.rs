//! The time a CPU spent away from the task pinned to it during a run: stolen by the
//! hypervisor, and in hard and soft interrupts, from `/proc/stat`'s per-CPU lines.
//!
//! A busy-polling strategy on CPU 1 sees none of it as its own time: a slice the host gave
//! another guest, or a softirq that ran a peer's receive on this CPU, is a stall in its
//! loop. On `xdp-tx` such a stall is what leaves market-data frames "not current" (user
//! space has not applied the one before when the next arrives, so the program passes it
//! on and user space decides): these figures, read around each run, say how much of it the
//! machine took, measured instead of inferred.

use std::fs;

use hostsys::clock::ticks_per_second;

/// Hard interrupts, soft interrupts and steal of one CPU, in the kernel's ticks
/// (`USER_HZ`), as `/proc/stat` counts them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTicks {
    irq: u64,
    softirq: u64,
    steal: u64,
}

/// What a CPU lost to the machine during a run, ms (`USER_HZ` granularity: 10 ms on
/// Linux's usual 100 ticks per second).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CpuAway {
    /// The CPU.
    pub cpu: usize,
    /// Taken by the hypervisor for something else (steal).
    pub steal_ms: u64,
    /// Hard interrupts.
    pub irq_ms: u64,
    /// Soft interrupts (packet receive and transmit completions, timers, RCU).
    pub softirq_ms: u64,
}

impl CpuTicks {
    /// Reads `cpu`'s line of `/proc/stat` (None: no such CPU, or no procfs).
    pub fn read(cpu: usize) -> Option<Self> {
        Self::parse(&fs::read_to_string("/proc/stat").ok()?, cpu)
    }

    /// From `/proc/stat`'s text: `cpuN user nice system idle iowait irq softirq steal ...`.
    fn parse(stat: &str, cpu: usize) -> Option<Self> {
        let name = format!("cpu{cpu}");
        let line = stat
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name.as_str()))?;
        let f: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .map(|v| v.parse().ok())
            .collect::<Option<_>>()?;
        Some(Self {
            irq: *f.get(5)?,
            softirq: *f.get(6)?,
            steal: *f.get(7)?,
        })
    }

    /// The time away between `self` (before) and `after`, on `cpu`.
    pub fn away_until(self, after: Self, cpu: usize) -> CpuAway {
        let ms = |b: u64, a: u64| a.saturating_sub(b) * 1000 / ticks_per_second();
        CpuAway {
            cpu,
            steal_ms: ms(self.steal, after.steal),
            irq_ms: ms(self.irq, after.irq),
            softirq_ms: ms(self.softirq, after.softirq),
        }
    }
}

impl std::fmt::Display for CpuAway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CPU {} lost {} ms to steal, {} ms to softirqs, {} ms to hard interrupts",
            self.cpu, self.steal_ms, self.softirq_ms, self.irq_ms
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "cpu  4012693 1237 1086049 1455729 24128 0 37503 35934 0 0\n\
cpu0 2017822 536 506927 756179 6166 0 22055 17499 0 0\n\
cpu1 1994870 701 579122 699550 17961 3 15448 18434 0 0\n\
intr 123 4 5\n";

    #[test]
    fn reads_the_cpus_own_line() {
        assert_eq!(
            CpuTicks::parse(STAT, 1),
            Some(CpuTicks {
                irq: 3,
                softirq: 15448,
                steal: 18434
            })
        );
        assert_eq!(
            CpuTicks::parse(STAT, 0).map(|t| t.steal),
            Some(17499),
            "cpu0, not the total line `cpu `"
        );
        assert_eq!(CpuTicks::parse(STAT, 2), None);
        assert_eq!(CpuTicks::parse("cpu1 1 2 3\n", 1), None, "a short line");
        assert_eq!(CpuTicks::parse("cpu1 1 2 x 4 5 6 7 8\n", 1), None);
    }

    #[test]
    fn the_difference_in_milliseconds() {
        let b = CpuTicks {
            irq: 1,
            softirq: 10,
            steal: 100,
        };
        let a = CpuTicks {
            irq: 1,
            softirq: 13,
            steal: 122,
        };
        let hz = ticks_per_second();
        let away = b.away_until(a, 1);
        assert_eq!(away.steal_ms, 22 * 1000 / hz);
        assert_eq!(away.softirq_ms, 3 * 1000 / hz);
        assert_eq!(away.irq_ms, 0);
        assert_eq!(a.away_until(b, 1).steal_ms, 0, "a counter never runs back");
    }

    #[test]
    fn the_live_file_has_cpu0() {
        assert!(CpuTicks::read(0).is_some());
    }
}
