//! The exchange's order-entry framing: arbitrary bytes in arbitrary read sizes.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&cut, rest)) = data.split_first() else { return };
    let step = usize::from(cut).max(1);
    let mut s = exchange::order_entry::OrderStream::new();
    let mut total = 0usize;
    let mut popped = 0usize;
    for chunk in rest.chunks(step) {
        let spare = s.spare();
        let n = spare.len().min(chunk.len());
        spare[..n].copy_from_slice(&chunk[..n]);
        s.commit(n);
        total += n;
        while let Some(m) = s.pop() {
            let _ = proto::order::OrderRepr::decode(&m);
            popped += 1;
        }
    }
    assert_eq!(popped * proto::order::ORDER_LEN + s.pending(), total);
});
