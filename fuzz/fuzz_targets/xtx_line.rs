//! The XDP program's market-data parser (`strategy_common::xtx`, the code the `xdp-tx`
//! program runs on every frame): never panics, and wherever it accepts a line the
//! strategy's own parser accepts it with the same fields and fixed point. The
//! fast path (a learned layout read a word at a time) reads only what the general parser
//! reads, the same way.
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
    // The fast path, with the layout of a usual line and with one learned from the input:
    // where it reads a line, it reads what the general parser reads.
    let usual = strategy_common::xtx::Shape::learn(
        b"deribit,BTC-PERPETUAL,1585699200245000,1585699200355000,false,ask,6593.5,20750\n",
    );
    for shape in [usual, strategy_common::xtx::Shape::learn(data)].into_iter().flatten() {
        for decimals in [0u32, 2, 8] {
            if let Some(f) = strategy_common::xtx::fast::parse_slice(data, &shape, decimals) {
                assert_eq!(Some(f), strategy_common::xtx::parse(data, decimals));
            }
        }
    }
});
