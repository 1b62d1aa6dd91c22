//! Clocks. User-space times are `CLOCK_MONOTONIC` nanoseconds; kernel software timestamps
//! (SO_TIMESTAMPING) are `CLOCK_REALTIME` nanoseconds. A latency is always the difference
//! of two readings of the same clock.

/// Nanoseconds of `CLOCK_MONOTONIC` (vDSO, no syscall).
#[inline]
pub fn mono_ns() -> u64 {
    read(libc::CLOCK_MONOTONIC)
}

/// Nanoseconds of `CLOCK_REALTIME`.
#[inline]
pub fn real_ns() -> u64 {
    read(libc::CLOCK_REALTIME)
}

#[inline]
fn read(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; clock_gettime (vDSO) only writes it.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    timespec_ns(&ts)
}

/// `USER_HZ`: the unit of `/proc/stat`'s CPU times (100 where sysconf cannot say).
pub fn ticks_per_second() -> u64 {
    // SAFETY: sysconf only reads a constant of the C library; no memory is passed.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(t).ok().filter(|&t| t > 0).unwrap_or(100)
}

/// A timespec as nanoseconds (negative fields saturate to 0).
#[inline]
pub fn timespec_ns(ts: &libc::timespec) -> u64 {
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1_000_000_000).saturating_add(nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_does_not_go_back_and_timespec_saturates() {
        let a = mono_ns();
        let b = mono_ns();
        assert!(b >= a && a > 0);
        let neg = libc::timespec {
            tv_sec: -1,
            tv_nsec: 5,
        };
        assert_eq!(timespec_ns(&neg), 5);
    }
}
