//! The strategy engine fed arbitrary packets (split on newlines): never panics.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut e = strategy::engine::Engine::new(strategy::engine::EngineConfig { book_capacity: 16, ..Default::default() });
    for (i, pkt) in data.split(|&b| b == b'\n').enumerate() {
        let _ = e.on_packet(pkt, i as u64);
    }
});
