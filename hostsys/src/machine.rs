//! What a measurement ran on: the CPU, whether the machine is a virtual one and under which
//! hypervisor, the kernel and its preemption model, and the settings that move latency
//! figures (clock source, isolated and tickless CPUs, transparent huge pages, the
//! frequency governor, the idle driver, SMT, the boot command line), read from /proc, /sys
//! and CPUID. The lab writes it into every results folder and `lab compare` reads two of
//! them back; `strategy probe` prints it. These machines differ by 2x from each other, so
//! a figure means little without it.
//!
//! Every reader gives `None` for what this machine does not expose (no cpufreq in most
//! guests, no /proc in a container that hides it); the parsers are plain functions of the
//! text, safe for any input (fuzz target `machine_text`).

use serde::{Deserialize, Serialize};
use std::fs;

/// The machine a run measured on (see the module docs). Every field may be absent: older
/// results, or a kernel that does not expose it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Machine {
    /// The CPU's vendor string (`AuthenticAMD`, `GenuineIntel`).
    pub cpu_vendor: Option<String>,
    /// The CPU's model name as /proc/cpuinfo gives it.
    pub cpu_model: Option<String>,
    /// The CPU family.
    pub cpu_family: Option<u32>,
    /// The CPU model number.
    pub cpu_model_number: Option<u32>,
    /// CPUs online (/sys/devices/system/cpu/online).
    pub cpus_online: Option<u32>,
    /// The hypervisor the machine runs under (CPUID's signature: KVM, Hyper-V, VMware,
    /// Xen, QEMU TCG...); `None`: CPUID says none (bare metal, or one that hides itself).
    pub hypervisor: Option<String>,
    /// The kernel's release.
    pub kernel: Option<String>,
    /// The kernel's build string (`#1 SMP PREEMPT_DYNAMIC ...`: its preemption model).
    pub kernel_build: Option<String>,
    /// The clock source the kernel reads time from (tsc, kvm-clock, hpet...).
    pub clock_source: Option<String>,
    /// CPUs isolated from the scheduler (`isolcpus`), as the kernel lists them.
    pub isolated_cpus: Option<String>,
    /// CPUs without the scheduler tick (`nohz_full`).
    pub nohz_full: Option<String>,
    /// Transparent huge pages: always, madvise or never.
    pub thp: Option<String>,
    /// CPU 0's frequency governor (absent in most guests: no cpufreq).
    pub governor: Option<String>,
    /// The idle driver and governor (`intel_idle`/`menu`, `haltpoll` in a KVM guest...):
    /// how deep an idle CPU sleeps, and so how long it takes to wake.
    pub cpuidle: Option<String>,
    /// Simultaneous multithreading active (two logical CPUs may share a core).
    pub smt_active: Option<bool>,
    /// Memory, KiB.
    pub mem_total_kib: Option<u64>,
    /// The kernel's boot command line.
    pub cmdline: Option<String>,
    /// The 1-minute load average when it was read.
    pub load_avg_1m: Option<f64>,
}

/// What the first processor block of /proc/cpuinfo says ([`parse_cpuinfo`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpuInfo {
    /// `vendor_id`.
    pub vendor: Option<String>,
    /// `model name`.
    pub model_name: Option<String>,
    /// `cpu family`.
    pub family: Option<u32>,
    /// `model`.
    pub model: Option<u32>,
    /// The `hypervisor` flag is set.
    pub hypervisor_flag: bool,
}

/// The first processor block of /proc/cpuinfo's text (x86's field names; other
/// architectures leave the fields absent).
pub fn parse_cpuinfo(text: &str) -> CpuInfo {
    let mut c = CpuInfo::default();
    for line in text.lines() {
        if line.trim().is_empty() {
            if c.vendor.is_some() || c.model_name.is_some() {
                break;
            }
            continue;
        }
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        match k {
            "vendor_id" => c.vendor = Some(v.to_owned()),
            "model name" => c.model_name = Some(v.to_owned()),
            "cpu family" => c.family = v.parse().ok(),
            "model" => c.model = v.parse().ok(),
            "flags" => c.hypervisor_flag = v.split_whitespace().any(|f| f == "hypervisor"),
            _ => {}
        }
    }
    c
}

/// How many CPUs a kernel CPU list names (`0-3,8,10-11` -> 7); `None` if it is not one.
/// An empty list is 0.
pub fn parse_cpu_list(text: &str) -> Option<u32> {
    let t = text.trim();
    if t.is_empty() {
        return Some(0);
    }
    let mut n: u32 = 0;
    for part in t.split(',') {
        let count = match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.parse().ok()?, b.parse().ok()?);
                b.checked_sub(a)?.checked_add(1)?
            }
            None => part.parse::<u32>().map(|_| 1).ok()?,
        };
        n = n.checked_add(count)?;
    }
    Some(n)
}

/// The bracketed choice of a sysfs setting (`always [madvise] never` -> `madvise`).
pub fn parse_bracketed(text: &str) -> Option<String> {
    let open = text.find('[')?;
    let close = open + text[open..].find(']')?;
    Some(text[open + 1..close].to_owned()).filter(|s| !s.is_empty())
}

/// A `Key:   value kB` line of /proc/meminfo, in KiB.
pub fn parse_meminfo_kib(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        if k.trim() != key {
            return None;
        }
        v.split_whitespace().next()?.parse().ok()
    })
}

/// The 1-minute load average of /proc/loadavg's text.
pub fn parse_loadavg(text: &str) -> Option<f64> {
    text.split_whitespace()
        .next()?
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
}

/// A hypervisor's CPUID signature (leaf 0x4000_0000, EBX ECX EDX) as its usual name.
pub fn hypervisor_name(signature: &[u8; 12]) -> String {
    let known: [(&[u8; 12], &str); 8] = [
        (b"KVMKVMKVM\0\0\0", "KVM"),
        (b"Microsoft Hv", "Hyper-V"),
        (b"VMwareVMware", "VMware"),
        (b"XenVMMXenVMM", "Xen"),
        (b"TCGTCGTCGTCG", "QEMU TCG"),
        (b"VBoxVBoxVBox", "VirtualBox"),
        (b"ACRNACRNACRN", "ACRN"),
        (b"bhyve bhyve ", "bhyve"),
    ];
    match known.iter().find(|(s, _)| *s == signature) {
        Some((_, name)) => (*name).to_owned(),
        None => {
            let s: String = signature
                .iter()
                .map(|&b| if b.is_ascii_graphic() { b as char } else { ' ' })
                .collect();
            match s.trim() {
                "" => "unknown".to_owned(),
                t => t.to_owned(),
            }
        }
    }
}

/// The hypervisor CPUID names, if CPUID says there is one (leaf 1, ECX bit 31).
#[cfg(target_arch = "x86_64")]
fn cpuid_hypervisor() -> Option<String> {
    use std::arch::x86_64::__cpuid;
    if __cpuid(1).ecx >> 31 == 0 {
        return None;
    }
    let r = __cpuid(0x4000_0000);
    let mut sig = [0u8; 12];
    for (i, w) in [r.ebx, r.ecx, r.edx].into_iter().enumerate() {
        sig[4 * i..4 * i + 4].copy_from_slice(&w.to_le_bytes());
    }
    Some(hypervisor_name(&sig))
}

/// Elsewhere: the cpuinfo flag only, no name.
#[cfg(not(target_arch = "x86_64"))]
fn cpuid_hypervisor() -> Option<String> {
    None
}

fn read(path: &str) -> Option<String> {
    fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty() && s != "(null)")
}

impl Machine {
    /// This machine, now.
    pub fn read() -> Self {
        let cpu = parse_cpuinfo(&fs::read_to_string("/proc/cpuinfo").unwrap_or_default());
        let hypervisor =
            cpuid_hypervisor().or_else(|| cpu.hypervisor_flag.then(|| "unknown".to_owned()));
        // An empty list is "none"; a file the kernel does not have leaves it unknown.
        let cpu_list = |path: &str| {
            fs::read_to_string(path).ok().map(|s| match s.trim() {
                "" | "(null)" => "none".to_owned(),
                t => t.to_owned(),
            })
        };
        Self {
            cpu_vendor: cpu.vendor,
            cpu_model: cpu.model_name,
            cpu_family: cpu.family,
            cpu_model_number: cpu.model,
            cpus_online: read("/sys/devices/system/cpu/online")
                .as_deref()
                .and_then(parse_cpu_list),
            hypervisor,
            kernel: read("/proc/sys/kernel/osrelease"),
            kernel_build: read("/proc/sys/kernel/version"),
            clock_source: read("/sys/devices/system/clocksource/clocksource0/current_clocksource"),
            isolated_cpus: cpu_list("/sys/devices/system/cpu/isolated"),
            nohz_full: cpu_list("/sys/devices/system/cpu/nohz_full"),
            thp: read("/sys/kernel/mm/transparent_hugepage/enabled")
                .as_deref()
                .and_then(parse_bracketed),
            governor: read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
            cpuidle: read("/sys/devices/system/cpu/cpuidle/current_driver").map(|d| {
                match read("/sys/devices/system/cpu/cpuidle/current_governor_ro")
                    .or_else(|| read("/sys/devices/system/cpu/cpuidle/current_governor"))
                {
                    Some(g) => format!("{d}/{g}"),
                    None => d,
                }
            }),
            smt_active: read("/sys/devices/system/cpu/smt/active").map(|v| v == "1"),
            mem_total_kib: parse_meminfo_kib(
                &fs::read_to_string("/proc/meminfo").unwrap_or_default(),
                "MemTotal",
            ),
            cmdline: read("/proc/cmdline"),
            load_avg_1m: read("/proc/loadavg").as_deref().and_then(parse_loadavg),
        }
    }

    /// One line: `AMD EPYC 7B13 (family 25 model 1), 2 CPUs, KVM guest, Linux 6.18.44,
    /// clock tsc`.
    pub fn summary(&self) -> String {
        let mut s = self.cpu_model.clone().unwrap_or_else(|| "CPU ?".to_owned());
        if let (Some(f), Some(m)) = (self.cpu_family, self.cpu_model_number) {
            s.push_str(&format!(" (family {f} model {m})"));
        }
        if let Some(n) = self.cpus_online {
            s.push_str(&format!(", {n} CPUs"));
        }
        s.push_str(&match &self.hypervisor {
            Some(h) => format!(", {h} guest"),
            None => ", no hypervisor".to_owned(),
        });
        if let Some(k) = &self.kernel {
            s.push_str(&format!(", Linux {k}"));
        }
        if let Some(c) = &self.clock_source {
            s.push_str(&format!(", clock {c}"));
        }
        s
    }

    /// `(what, value)` rows for a table; `-` where absent.
    pub fn rows(&self) -> Vec<(&'static str, String)> {
        let o = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
        let n = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
        vec![
            ("CPU", o(&self.cpu_model)),
            ("CPU vendor", o(&self.cpu_vendor)),
            ("CPU family", n(self.cpu_family.map(u64::from))),
            ("CPU model", n(self.cpu_model_number.map(u64::from))),
            ("CPUs online", n(self.cpus_online.map(u64::from))),
            (
                "hypervisor",
                self.hypervisor.clone().unwrap_or_else(|| "none".to_owned()),
            ),
            ("kernel", o(&self.kernel)),
            ("kernel build", o(&self.kernel_build)),
            ("clock source", o(&self.clock_source)),
            ("isolated CPUs", o(&self.isolated_cpus)),
            ("nohz_full", o(&self.nohz_full)),
            ("transparent huge pages", o(&self.thp)),
            ("frequency governor", o(&self.governor)),
            ("idle driver/governor", o(&self.cpuidle)),
            (
                "SMT active",
                self.smt_active.map_or_else(
                    || "-".to_owned(),
                    |a| if a { "yes" } else { "no" }.to_owned(),
                ),
            ),
            ("memory (KiB)", n(self.mem_total_kib)),
            (
                "load average (1 min)",
                self.load_avg_1m
                    .map_or_else(|| "-".to_owned(), |v| format!("{v:.2}")),
            ),
            ("boot command line", o(&self.cmdline)),
        ]
    }

    /// The rows where `other` differs from this machine in what moves latency figures (the
    /// load average and the memory size left out; a row either side did not record is
    /// unknown, not a difference): `(what, this, other)`.
    pub fn differences(&self, other: &Self) -> Vec<(&'static str, String, String)> {
        const SAME_IF_EQUAL: [&str; 16] = [
            "CPU",
            "CPU vendor",
            "CPU family",
            "CPU model",
            "CPUs online",
            "hypervisor",
            "kernel",
            "kernel build",
            "clock source",
            "isolated CPUs",
            "nohz_full",
            "transparent huge pages",
            "frequency governor",
            "idle driver/governor",
            "SMT active",
            "boot command line",
        ];
        self.rows()
            .into_iter()
            .zip(other.rows())
            .filter(|((k, a), (_, b))| SAME_IF_EQUAL.contains(k) && a != b && a != "-" && b != "-")
            .map(|((k, a), (_, b))| (k, a, b))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AMD: &str = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 1\n\
model name\t: AMD EPYC 7B13\nflags\t\t: fpu vme de pse hypervisor lahf_lm\n\nprocessor\t: 1\n\
vendor_id\t: GenuineIntel\nmodel name\t: other\n";

    #[test]
    fn cpuinfo_reads_the_first_processor_only() {
        let c = parse_cpuinfo(AMD);
        assert_eq!(c.vendor.as_deref(), Some("AuthenticAMD"));
        assert_eq!(c.model_name.as_deref(), Some("AMD EPYC 7B13"));
        assert_eq!((c.family, c.model), (Some(25), Some(1)));
        assert!(c.hypervisor_flag);
        let bare = parse_cpuinfo("vendor_id: GenuineIntel\nflags: fpu vme hypervisorx\n");
        assert!(!bare.hypervisor_flag, "a flag is a whole word");
        assert_eq!(parse_cpuinfo(""), CpuInfo::default());
    }

    #[test]
    fn cpu_lists_count_their_cpus_and_refuse_what_is_not_one() {
        assert_eq!(parse_cpu_list("0-1\n"), Some(2));
        assert_eq!(parse_cpu_list("0-3,8,10-11"), Some(7));
        assert_eq!(parse_cpu_list(""), Some(0));
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(
            parse_cpu_list("0-4294967295"),
            None,
            "overflow, not a panic"
        );
        assert_eq!(parse_cpu_list("a,b"), None);
        assert_eq!(parse_cpu_list("1,,2"), None);
    }

    #[test]
    fn settings_and_counters_parse_or_are_absent() {
        assert_eq!(
            parse_bracketed("always [madvise] never").as_deref(),
            Some("madvise")
        );
        assert_eq!(parse_bracketed("[] x"), None);
        assert_eq!(parse_bracketed("] ["), None);
        let mem = "MemTotal:        8123456 kB\nMemFree: 1 kB\n";
        assert_eq!(parse_meminfo_kib(mem, "MemTotal"), Some(8_123_456));
        assert_eq!(parse_meminfo_kib(mem, "Mem"), None);
        assert_eq!(parse_loadavg("0.52 0.61 0.70 2/345 6789\n"), Some(0.52));
        assert_eq!(parse_loadavg("nan 1 1"), None);
        assert_eq!(parse_loadavg(""), None);
    }

    #[test]
    fn hypervisor_signatures_have_their_names() {
        assert_eq!(hypervisor_name(b"KVMKVMKVM\0\0\0"), "KVM");
        assert_eq!(hypervisor_name(b"Microsoft Hv"), "Hyper-V");
        assert_eq!(hypervisor_name(b"New\0Visor\0\0\0"), "New Visor");
        assert_eq!(hypervisor_name(&[0; 12]), "unknown");
    }

    #[test]
    fn this_machine_reads_and_differs_from_another_where_it_matters() {
        let m = Machine::read();
        // Linux always has these; the test runs there.
        assert!(m.kernel.is_some() && m.cpus_online.is_some_and(|n| n >= 1));
        assert!(m.summary().contains("CPUs"));
        let mut other = m.clone();
        other.load_avg_1m = Some(99.0);
        other.mem_total_kib = Some(1);
        assert!(
            m.differences(&other).is_empty(),
            "load and memory do not count"
        );
        other.kernel = Some("0.0.0-other".into());
        other.hypervisor = None;
        let d = m.differences(&other);
        assert!(d
            .iter()
            .any(|(k, _, b)| *k == "kernel" && b == "0.0.0-other"));
        assert_eq!(
            m.hypervisor.is_some(),
            d.iter().any(|(k, _, _)| *k == "hypervisor")
        );
        let mut older = m.clone();
        older.cpuidle = None;
        older.kernel_build = None;
        assert!(
            m.differences(&older).is_empty() && older.differences(&m).is_empty(),
            "a field one side did not record is unknown, not different"
        );
        let back: Machine =
            serde_json::from_str(&serde_json::to_string(&m).expect("json")).expect("back");
        assert_eq!(back, m);
        let old: Machine = serde_json::from_str("{}").expect("an empty object");
        assert_eq!(
            old,
            Machine::default(),
            "results without the fields still read"
        );
    }
}
