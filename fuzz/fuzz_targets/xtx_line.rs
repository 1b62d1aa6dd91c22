//! The XDP program's market-data parser (`strategy_common::xtx`, the code the `xdp-tx`
//! program runs on every frame): never panics, and wherever it accepts a line the
//! strategy's own parser accepts it with the same fields and fixed point. Also decodes the
//! bytes as a ring-buffer record (user space reads those from memory the program wrote).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    for decimals in [0u8, 2, 8] {
        if let Some(x) = strategy_common::xtx::parse(data, u32::from(decimals)) {
            let p = proto::md::parse_line(data, decimals).expect("the program accepts only what the strategy accepts");
            assert_eq!(
                (x.local_timestamp, x.is_snapshot, x.price, x.amount),
                (p.local_timestamp, p.is_snapshot, p.price, p.amount)
            );
            assert_eq!(x.bid, p.side == proto::md::BookSide::Bid);
        }
    }
    if let Some(r) = strategy_common::xtx::FireRecord::from_bytes(data) {
        assert!(r.line().len() <= strategy_common::xtx::MAX_LINE);
    }
});
