//! Attaching the classic BPF program ([`crate::net::wire::cbpf`]) to the AF_PACKET socket.

use std::io;

pub use crate::net::wire::cbpf::{filter, Flows, SockFilter};

/// Attaches a classic BPF program to a socket.
pub fn attach_filter(fd: i32, prog: &[SockFilter]) -> io::Result<()> {
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    // `fprog` points at `prog`, alive for the call; the kernel copies the program.
    hostsys::socket::setsockopt(fd, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &fprog)
}
