//! The classic BPF program of the AF_PACKET socket: only the market-data datagrams, the
//! order-entry segments from the exchange to our address, and ARP for our address reach
//! the RX ring; everything else is dropped in the kernel before it costs a ring slot.
//!
//! [`run`] executes such a program the way the kernel does (a load past the frame's end
//! ends it with 0, drop), so tests and the `packet_filter` fuzz target can hold the program
//! against [`super::md_frame::classify`] on any bytes.

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

/// Runs `prog` on `frame` as the kernel's classic BPF interpreter would for the opcodes
/// [`filter`] uses: returns the accept length (0: dropped). Any other opcode, a jump past
/// the end or a load past the frame's end returns 0.
pub fn run(prog: &[SockFilter], frame: &[u8]) -> u32 {
    let (mut a, mut x, mut pc) = (0u32, 0u32, 0usize);
    let byte = |off: usize| frame.get(off).map(|&b| u32::from(b));
    let half = |off: usize| {
        frame
            .get(off..off.checked_add(2)?)
            .map(|b| u32::from(u16::from_be_bytes([b[0], b[1]])))
    };
    let word = |off: usize| {
        frame
            .get(off..off.checked_add(4)?)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    while let Some(ins) = prog.get(pc) {
        let k = ins.k as usize;
        let loaded = match ins.code {
            LD_H_ABS => half(k),
            LD_W_ABS => word(k),
            LD_B_ABS => byte(k),
            LD_H_IND => half((x as usize).wrapping_add(k)),
            LDX_B_MSH => {
                let Some(b) = byte(k) else { return 0 };
                x = (b & 0x0f) * 4;
                pc += 1;
                continue;
            }
            JEQ_K => {
                pc += 1 + usize::from(if a == ins.k { ins.jt } else { ins.jf });
                continue;
            }
            RET_K => return ins.k,
            _ => return 0,
        };
        let Some(v) = loaded else { return 0 };
        a = v;
        pc += 1;
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::wire::md_frame::{classify, MdFlow, MdFrame};

    const FLOWS: Flows = Flows {
        group: Ipv4Addr::new(239, 255, 0, 1),
        md_port: 12345,
        exchange: Ipv4Addr::new(10, 77, 0, 1),
        exchange_port: 9012,
        local: Ipv4Addr::new(10, 77, 0, 3),
    };

    fn udp_frame(dst: [u8; 4], dport: u16, ihl_words: u8) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&0x0800u16.to_be_bytes());
        let opts = usize::from(ihl_words - 5) * 4;
        let total = (20 + opts + 8 + 4) as u16;
        f.extend_from_slice(&[0x40 | ihl_words, 0]);
        f.extend_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&[0, 0, 0, 0, 64, 17, 0, 0, 10, 77, 0, 1]);
        f.extend_from_slice(&dst);
        f.extend(std::iter::repeat_n(1u8, opts));
        f.extend_from_slice(&5000u16.to_be_bytes());
        f.extend_from_slice(&dport.to_be_bytes());
        f.extend_from_slice(&12u16.to_be_bytes());
        f.extend_from_slice(&[0, 0, b'l', b'i', b'n', b'e']);
        f
    }

    #[test]
    fn the_interpreter_agrees_with_the_frame_classifier() {
        let prog = filter(&FLOWS);
        let flow = MdFlow {
            group: FLOWS.group,
            port: FLOWS.md_port,
            source: None,
        };
        for ihl in [5, 6, 15] {
            let md = udp_frame(FLOWS.group.octets(), 12345, ihl);
            assert_eq!(classify(&md, &flow), MdFrame::Payload(b"line"), "ihl {ihl}");
            assert_ne!(run(&prog, &md), 0, "accepted with IHL {ihl}");
        }
        assert_eq!(run(&prog, &udp_frame([239, 1, 1, 1], 12345, 5)), 0);
        assert_eq!(run(&prog, &udp_frame(FLOWS.group.octets(), 1, 5)), 0);
        // Loads past the end drop the frame.
        assert_eq!(
            run(&prog, &udp_frame(FLOWS.group.octets(), 12345, 5)[..20]),
            0
        );
        assert_eq!(run(&prog, &[]), 0);
        // An ARP for our address.
        let mut arp = vec![0u8; 12];
        arp.extend_from_slice(&0x0806u16.to_be_bytes());
        arp.extend_from_slice(&[0; 24]);
        arp.extend_from_slice(&FLOWS.local.octets());
        assert_ne!(run(&prog, &arp), 0);
    }
}
