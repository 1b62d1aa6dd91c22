//! `--stamp-ids` files: any bytes give ids or an error naming a line of the input, never
//! a panic; every id parsed appears in the input as a decimal line start.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    match exchange::stamp_ids::parse(data) {
        Ok(ids) => {
            let text = String::from_utf8_lossy(data);
            for id in ids {
                assert!(text.contains(&id.to_string()));
            }
        }
        Err(e) => assert!(e.line >= 1 && e.line <= data.split(|&b| b == b'\n').count()),
    }
});
