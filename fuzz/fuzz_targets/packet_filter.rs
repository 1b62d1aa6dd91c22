//! The AF_PACKET socket's classic BPF program, run as the kernel runs it
//! (`strategy::net::wire::cbpf::run`) on any frame, held against the frame classifier: no
//! frame the classifier takes for market data is dropped by the filter (the filter lets
//! through at least what the strategy reads), and the interpreter never panics.
#![no_main]
use std::net::Ipv4Addr;

use strategy::net::wire::cbpf::{filter, run, Flows};
use strategy::net::wire::md_frame::{classify, MdFlow, MdFrame};

const FLOWS: Flows = Flows {
    group: Ipv4Addr::new(239, 255, 0, 1),
    md_port: 12345,
    exchange: Ipv4Addr::new(10, 77, 0, 1),
    exchange_port: 9012,
    local: Ipv4Addr::new(10, 77, 0, 3),
};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let prog = filter(&FLOWS);
    let mut frame = data.to_vec();
    // Half of the inputs shaped like market data so the classifier's deep checks run.
    if data.first().is_some_and(|b| b & 1 == 1) && frame.len() >= 38 {
        frame[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        frame[23] = 17;
        frame[30..34].copy_from_slice(&FLOWS.group.octets());
        frame[14] = 0x40 | (frame[14] & 0x0f).max(5);
        let ihl = usize::from(frame[14] & 0x0f) * 4;
        if frame.len() >= 14 + ihl + 4 {
            frame[14 + ihl + 2..14 + ihl + 4].copy_from_slice(&FLOWS.md_port.to_be_bytes());
        }
    }
    let accepted = run(&prog, &frame);
    let flow = MdFlow {
        group: FLOWS.group,
        port: FLOWS.md_port,
        source: None,
    };
    if let MdFrame::Payload(_) = classify(&frame, &flow) {
        assert_ne!(accepted, 0, "market data the filter would drop: {frame:?}");
    }
});
