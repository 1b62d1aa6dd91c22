//! What a lab killed mid-run leaves behind, swept at the next start.
//!
//! Every namespace the lab creates is named `<prefix>-<pid>-<n>` after the process that
//! created it, and everything a run starts lives inside one: the exchange, the strategy,
//! QEMU (started with `ip netns exec`), the veths and the tap. A SIGKILL of the lab gives
//! none of its drops a chance to run; the next `cargo xtask lab` finds the namespaces whose
//! creator is gone, kills every process still inside (a guest's QEMU with them) and deletes
//! the namespace, which removes its veths and tap.

/// The namespace prefixes the lab uses (the netns lab's pair, the VM lab, the publisher
/// benchmark, the floor, the probe).
pub const PREFIXES: [&str; 9] = [
    "labx", "labs", "vmlab", "bexx", "bexs", "flrx", "flrs", "prbx", "prbs",
];

/// Sweeps the namespaces of lab runs whose process is gone; returns their names.
pub fn sweep() -> Vec<String> {
    PREFIXES
        .iter()
        .flat_map(|p| netlab::sweep_stale(p))
        .collect()
}
