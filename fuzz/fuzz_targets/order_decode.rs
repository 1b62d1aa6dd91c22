//! The order decoder: a valid decode re-encodes to the same bytes.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(o) = proto::order::OrderRepr::decode(data) {
        assert_eq!(&o.to_bytes()[..], &data[..proto::order::ORDER_LEN]);
    }
});
