//! What the io_uring benches share: an io_uring set up as the `uring+defer` path sets it up
//! (SINGLE_ISSUER + DEFER_TASKRUN + TASKRUN_FLAG), its fd registered, and the enter through
//! that registered index.
#![allow(
    unsafe_code,
    reason = "raw io_uring_enter and io_uring_register with a registered ring index, as the path does"
)]
#![allow(dead_code, reason = "each bench uses part of it")]

use std::os::fd::AsRawFd;

use io_uring::IoUring;

/// A ring as `uring+defer` builds it, with `fd` as fixed file 0 and its own fd registered;
/// returns the ring and its registered index.
pub fn defer_ring(fd: &impl AsRawFd) -> (IoUring, u32) {
    let ring = defer_ring_unregistered(fd);
    let idx = register_ring_fd(&ring);
    (ring, idx)
}

/// [`defer_ring`] without registering the ring's own fd.
pub fn defer_ring_unregistered(fd: &impl AsRawFd) -> IoUring {
    let ring = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_taskrun_flag()
        .build(64)
        .expect("io_uring with DEFER_TASKRUN (Linux 6.1+)");
    ring.submitter()
        .register_files(&[fd.as_raw_fd()])
        .expect("register file");
    ring
}

/// io_uring_enter on the ring registered at `idx`: submits `n` prepared entries, waits for
/// none, with `flags` (1: GETEVENTS, run pending task work).
pub fn enter_registered(idx: u32, n: u32, flags: u32) {
    const IORING_ENTER_REGISTERED_RING: libc::c_long = 1 << 4;
    // SAFETY: io_uring_enter on a registered ring index; the caller's prepared entries point
    // at memory that outlives the call (every request here completes during it or is
    // multishot on a socket, with no buffer); no wait, no argument.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_io_uring_enter,
            libc::c_long::from(idx),
            libc::c_long::from(n),
            0 as libc::c_long,
            IORING_ENTER_REGISTERED_RING | libc::c_long::from(flags),
            std::ptr::null::<libc::c_void>(),
            0 as libc::c_long,
        )
    };
    assert!(rc >= 0, "enter: {}", std::io::Error::last_os_error());
}

/// IORING_REGISTER_RING_FDS for `ring`'s own fd; returns its index.
pub fn register_ring_fd(ring: &IoUring) -> u32 {
    #[repr(C)]
    struct RsrcUpdate {
        offset: u32,
        resv: u32,
        data: u64,
    }
    let mut up = RsrcUpdate {
        offset: u32::MAX,
        resv: 0,
        data: ring.as_raw_fd() as u64,
    };
    // SAFETY: IORING_REGISTER_RING_FDS (20) with one update living across the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_io_uring_register,
            libc::c_long::from(ring.as_raw_fd()),
            20 as libc::c_long,
            &mut up as *mut RsrcUpdate,
            1 as libc::c_long,
        )
    };
    assert!(
        rc >= 0,
        "register ring fd: {}",
        std::io::Error::last_os_error()
    );
    up.offset
}
