//! The raw paths' frame classifier (`strategy::net::wire::md_frame::classify`) on any
//! bytes, against any flow: never panics, and a payload is always a slice of the frame, no
//! longer than its UDP length says, of a frame that is IPv4 UDP to the flow's group and port
//! from its source.
#![no_main]
use std::net::Ipv4Addr;

use strategy::net::wire::md_frame::{classify, MdFlow, MdFrame};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // The first 10 bytes choose the flow; the rest is the frame.
    let Some((head, frame)) = data.split_first_chunk::<10>() else {
        return;
    };
    let flow = MdFlow {
        group: Ipv4Addr::new(head[0], head[1], head[2], head[3]),
        port: u16::from_be_bytes([head[4], head[5]]),
        source: (head[6] & 1 == 1).then(|| Ipv4Addr::new(10, 77, 0, head[7])),
    };
    // Frames shaped like the flow's datagrams half of the time, so the deep checks run.
    let mut shaped = frame.to_vec();
    if head[8] & 1 == 1 && shaped.len() >= 38 {
        shaped[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        shaped[23] = 17;
        shaped[30..34].copy_from_slice(&flow.group.octets());
        shaped[14] = 0x40 | (shaped[14] & 0x0f).max(5);
    }
    if let MdFrame::Payload(p) = classify(&shaped, &flow) {
        let start = p.as_ptr() as usize - shaped.as_ptr() as usize;
        assert!(start + p.len() <= shaped.len());
        assert!(start >= 14 + 20 + 8);
        assert_eq!(&shaped[30..34], &flow.group.octets());
        if let Some(src) = flow.source {
            assert_eq!(&shaped[26..30], &src.octets());
        }
    }
});
