//! The market-data line parser (exchange file reader and strategy packet parser): never
//! panics, and the fast path (SWAR/SSE2 at fixed places) answers exactly what the
//! field-by-field reference parser answers.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    for decimals in [0u8, 2, 8, 18] {
        let fast = proto::md::parse_line(data, decimals);
        assert_eq!(fast, proto::md::parse_line_reference(data, decimals));
        if let Ok(l) = fast {
            assert!(l.price > 0);
        }
    }
    let _ = proto::decimal::parse_u64(data);
});
