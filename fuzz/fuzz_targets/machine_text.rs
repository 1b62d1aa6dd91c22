//! What a machine says of itself (/proc/cpuinfo, CPU lists, bracketed sysfs settings,
//! /proc/meminfo, /proc/loadavg): any text gives a value or `None`, never a panic; a
//! bracketed choice is a piece of the text, a CPU count is never more than a list of that
//! length could name.
#![no_main]
use hostsys::machine::{
    parse_bracketed, parse_cpu_list, parse_cpuinfo, parse_loadavg, parse_meminfo_kib,
};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let c = parse_cpuinfo(&text);
    if let Some(m) = &c.model_name {
        assert!(text.contains(m.as_str()));
    }
    if let Some(n) = parse_cpu_list(&text) {
        // Each part names at most 2^32 CPUs; a count past the lists' sum is a bug.
        let parts = text.trim().split(',').count() as u64;
        assert!(u64::from(n) <= parts.saturating_mul(1 << 32));
    }
    if let Some(b) = parse_bracketed(&text) {
        assert!(!b.is_empty() && text.contains(&format!("[{b}]")));
    }
    let _ = parse_meminfo_kib(&text, "MemTotal");
    if let Some(l) = parse_loadavg(&text) {
        assert!(l.is_finite());
    }
});
