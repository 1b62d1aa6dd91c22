//! Huge pages for the `+huge` variants: reserved for the experiment and given back after.
//!
//! `vm.nr_hugepages` is global (not per network namespace): the guard raises it by what the
//! runs need and puts back the value it found when it drops (end, error, Ctrl-C unwinding).

use std::fs;

use anyhow::{bail, Context, Result};

const NR_HUGEPAGES: &str = "/proc/sys/vm/nr_hugepages";

/// Extra 2 MiB pages reserved while the guard lives.
pub struct HugePages {
    before: u64,
}

impl HugePages {
    /// Reserves `extra` more 2 MiB pages; fails when the kernel could not reserve them
    /// (memory too fragmented: say so rather than measure without them).
    pub fn reserve(extra: u64) -> Result<Self> {
        let read = || -> Result<u64> {
            fs::read_to_string(NR_HUGEPAGES)
                .context(NR_HUGEPAGES)?
                .trim()
                .parse::<u64>()
                .context("vm.nr_hugepages is not a number")
        };
        let before = read()?;
        fs::write(NR_HUGEPAGES, (before + extra).to_string())
            .with_context(|| format!("raising {NR_HUGEPAGES} (needs root)"))?;
        let guard = Self { before };
        let now = read()?;
        if now < before + extra {
            bail!(
                "asked for {extra} huge pages, the kernel reserved {} (memory fragmented?)",
                now - before
            );
        }
        println!("huge pages: {extra} x 2 MiB reserved for the +huge variants (vm.nr_hugepages {before} -> {now})");
        Ok(guard)
    }
}

impl Drop for HugePages {
    fn drop(&mut self) {
        if fs::write(NR_HUGEPAGES, self.before.to_string()).is_ok() {
            println!("huge pages: vm.nr_hugepages back to {}", self.before);
        }
    }
}
