//! The market-data line parser (exchange file reader and strategy packet parser).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    for decimals in [0u8, 2, 8, 18] {
        if let Ok(l) = proto::md::parse_line(data, decimals) {
            assert!(l.price > 0);
        }
    }
    let _ = proto::decimal::parse_u64(data);
});
