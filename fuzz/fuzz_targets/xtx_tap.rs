//! The `xdp-tx` path's readers of outside bytes: the program's tag split off a received
//! frame (`strategy_common::xtx::split_tag`), and the tap that reads smoltcp's segments and
//! the exchange's (`strategy::net::wire::tap::TxTap`: sequence numbers, the window and its
//! scale, the suppression of a delegated copy). On any sequence of frames and calls: never
//! a panic; the rest after a tag is the frame's own suffix; a suppression matches at most
//! once, and only the segment it names.
#![no_main]
use strategy::net::wire::tap::TxTap;
use strategy_common::xtx::{split_tag, ORDER_LEN};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let (tag, rest) = split_tag(data);
    assert!(rest.len() <= data.len() && data.ends_with(rest));
    assert_eq!(tag.is_some(), rest.len() + 8 == data.len());

    // The rest drives a tap: each step is a control byte, a length byte and that many bytes
    // of frame (cut short at the end).
    let mut tap = TxTap::new(true);
    let mut i = 0;
    while i + 2 <= data.len() {
        let (ctl, len) = (data[i], usize::from(data[i + 1]));
        let frame = &data[i + 2..(i + 2 + len).min(data.len())];
        i += 2 + len;
        match ctl % 4 {
            0 => {
                let suppressed_before = tap.stats().suppressed;
                let keep_off = tap.observe(frame);
                if keep_off {
                    assert_eq!(tap.stats().suppressed, suppressed_before + 1);
                    assert!(!tap.suppressing(), "a suppression matches once");
                }
            }
            1 => tap.observe_rx(frame),
            2 => {
                let mut bytes = [0u8; ORDER_LEN];
                let n = frame.len().min(ORDER_LEN);
                bytes[..n].copy_from_slice(&frame[..n]);
                let seq = frame
                    .get(..4)
                    .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
                tap.suppress(seq, bytes);
            }
            _ => tap.queued(frame.len()),
        }
        let _ = (tap.all_sent(), tap.window_has_room(ORDER_LEN), tap.template());
    }
});
