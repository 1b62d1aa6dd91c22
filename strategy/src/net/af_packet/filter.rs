//! The classic BPF program of the AF_PACKET socket: only the market-data datagrams, the
//! order-entry segments from the exchange to our address, and ARP for our address reach
//! the RX ring; everything else is dropped in the kernel before it costs a ring slot.

use std::io;
use std::net::Ipv4Addr;

/// One classic BPF instruction (struct sock_filter).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SockFilter {
    code: u16,
    jt: u8,
    jf: u8,
    k: u32,
}

const fn op(code: u16, jt: u8, jf: u8, k: u32) -> SockFilter {
    SockFilter { code, jt, jf, k }
}

const LD_H_ABS: u16 = 0x28;
const LD_W_ABS: u16 = 0x20;
const LD_B_ABS: u16 = 0x30;
const LD_H_IND: u16 = 0x48;
const LDX_B_MSH: u16 = 0xb1;
const JEQ_K: u16 = 0x15;
const RET_K: u16 = 0x06;

/// The flows the filter accepts.
#[derive(Debug, Clone, Copy)]
pub struct Flows {
    /// Market-data group.
    pub group: Ipv4Addr,
    /// Market-data port.
    pub md_port: u16,
    /// Exchange address.
    pub exchange: Ipv4Addr,
    /// Exchange order-entry port.
    pub exchange_port: u16,
    /// Our (smoltcp's) address.
    pub local: Ipv4Addr,
}

/// The classic BPF program: UDP to the group and port, TCP from the exchange's address and
/// port to our address, ARP whose target is our address; everything else dropped.
pub fn filter(f: &Flows) -> [SockFilter; 22] {
    let (group, exch, local) = (
        u32::from(f.group),
        u32::from(f.exchange),
        u32::from(f.local),
    );
    [
        op(LD_H_ABS, 0, 0, 12),                      // 0: ethertype
        op(JEQ_K, 16, 0, 0x0806),                    // 1: ARP -> 18
        op(JEQ_K, 0, 18, 0x0800),                    // 2: not IPv4 -> drop
        op(LD_B_ABS, 0, 0, 23),                      // 3: IP protocol
        op(JEQ_K, 1, 0, 17),                         // 4: UDP -> 6
        op(JEQ_K, 5, 15, 6),                         // 5: TCP -> 11, else drop
        op(LD_W_ABS, 0, 0, 30),                      // 6: UDP: destination address
        op(JEQ_K, 0, 13, group),                     // 7: not the group -> drop
        op(LDX_B_MSH, 0, 0, 14),                     // 8: X = IP header length
        op(LD_H_IND, 0, 0, 16),                      // 9: UDP destination port
        op(JEQ_K, 9, 10, u32::from(f.md_port)),      // 10: -> accept / drop
        op(LD_W_ABS, 0, 0, 26),                      // 11: TCP: source address
        op(JEQ_K, 0, 8, exch),                       // 12: not the exchange -> drop
        op(LD_W_ABS, 0, 0, 30),                      // 13: destination address
        op(JEQ_K, 0, 6, local),                      // 14: not us -> drop
        op(LDX_B_MSH, 0, 0, 14),                     // 15: X = IP header length
        op(LD_H_IND, 0, 0, 14),                      // 16: TCP source port
        op(JEQ_K, 2, 3, u32::from(f.exchange_port)), // 17: -> accept / drop
        op(LD_W_ABS, 0, 0, 38),                      // 18: ARP target protocol address
        op(JEQ_K, 0, 1, local),                      // 19: -> accept / drop
        op(RET_K, 0, 0, 0xffff),                     // 20: accept
        op(RET_K, 0, 0, 0),                          // 21: drop
    ]
}

/// Attaches a classic BPF program to a socket.
pub fn attach_filter(fd: i32, prog: &[SockFilter]) -> io::Result<()> {
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    // `fprog` points at `prog`, alive for the call; the kernel copies the program.
    hostsys::socket::setsockopt(fd, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &fprog)
}
