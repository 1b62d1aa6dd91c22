//! Signals to child processes.

use std::io;

/// Sends SIGINT to `pid` (lets a child such as tcpdump flush and exit).
pub fn interrupt(pid: u32) -> io::Result<()> {
    let pid = i32::try_from(pid).map_err(|_| io::Error::from_raw_os_error(libc::ESRCH))?;
    if pid <= 0 {
        // 0 and negative pids address process groups: never meant here.
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    // SAFETY: kill(2) has no memory preconditions; a positive pid names one process.
    crate::syscall!(unsafe { libc::kill(pid, libc::SIGINT) }).map(drop)
}
