//! The raw Linux calls the exchange and the strategy share, in one place (mio's `sys`):
//! clocks ([`clock`]), socket options and non-blocking sends and receives ([`socket`]),
//! batched sends with per-message TX stamps ([`mmsg`]),
//! the error queue with its control messages ([`errqueue`]: MSG_ZEROCOPY completions and
//! SO_TIMESTAMPING stamps), NIC hardware timestamps ([`hwtstamp`]), interfaces ([`iface`]),
//! what the machine is ([`machine`]: CPU, hypervisor, kernel, latency-relevant settings),
//! scheduling ([`sched`]) and process
//! counters ([`procfs`]), dropping root after set-up ([`privilege`]), signals to children
//! ([`signal`]), BPF_PROG_TEST_RUN ([`bpf`]) and
//! the slots of MSG_ZEROCOPY sends ([`zerocopy`]).
//!
//! Every `unsafe` block of the two binaries outside their ring modules lives here, each with
//! a `// SAFETY:` line; the functions it exports are safe for every input.
#![deny(unsafe_op_in_unsafe_fn)]

/// One place that turns `-1/errno` into `io::Result` (mio's `syscall!`).
#[macro_export]
macro_rules! syscall {
    ($e:expr) => {{
        let rc = $e;
        if rc == -1 {
            Err(::std::io::Error::last_os_error())
        } else {
            Ok(rc)
        }
    }};
}

pub mod bpf;
pub mod clock;
pub mod errqueue;
pub mod hwtstamp;
pub mod iface;
pub mod machine;
pub mod mmsg;
pub mod privilege;
pub mod procfs;
pub mod sched;
pub mod signal;
pub mod socket;
pub mod zerocopy;

pub use clock::{mono_ns, real_ns};
