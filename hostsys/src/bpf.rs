//! BPF_PROG_TEST_RUN: runs a loaded program on a crafted packet in the kernel, without a
//! device (tests of the XDP programs, and the per-packet cost of a program).

use std::io;
use std::os::fd::RawFd;

/// `struct bpf_attr`, `test` member (linux/bpf.h), zero-padded to the size the kernel reads.
#[repr(C)]
#[derive(Default)]
struct TestAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    pad: u32,
}

const BPF_PROG_TEST_RUN: libc::c_long = 10;

/// What one test run returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TestRun {
    /// The program's return value (an XDP action).
    pub retval: u32,
    /// Mean duration of one run in ns, as the kernel measured it over `repeat` runs.
    pub duration_ns: u32,
    /// Bytes of the packet after the run (written to the output buffer).
    pub len_out: usize,
}

/// Runs program `prog_fd` `repeat` times on `data`; the packet after the last run is written
/// to `out` (truncated to its length).
pub fn prog_test_run(
    prog_fd: RawFd,
    data: &[u8],
    out: &mut [u8],
    repeat: u32,
) -> io::Result<TestRun> {
    let too_big = || io::Error::new(io::ErrorKind::InvalidInput, "test packet too large");
    let mut attr = TestAttr {
        prog_fd: u32::try_from(prog_fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?,
        data_size_in: u32::try_from(data.len()).map_err(|_| too_big())?,
        data_size_out: u32::try_from(out.len()).map_err(|_| too_big())?,
        data_in: data.as_ptr() as u64,
        data_out: out.as_mut_ptr() as u64,
        repeat: repeat.max(1),
        ..TestAttr::default()
    };
    // SAFETY: `attr` is a valid bpf_attr prefix for BPF_PROG_TEST_RUN whose pointers refer to
    // `data` (read, its size given) and `out` (written, its size given), both alive for the
    // call; the kernel writes only within `attr` and `out`.
    crate::syscall!(unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            &raw mut attr,
            std::mem::size_of::<TestAttr>(),
        )
    })?;
    Ok(TestRun {
        retval: attr.retval,
        duration_ns: attr.duration,
        len_out: (attr.data_size_out as usize).min(out.len()),
    })
}
