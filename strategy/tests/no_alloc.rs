//! Proves the hot path (parse -> book -> trigger -> encode) does not allocate after warm-up,
//! with a counting global allocator.

use mdfile::mdgen::{self, GenConfig};
use mdfile::{MdReader, Record};
use strategy::engine::{Engine, EngineConfig};

#[path = "common/counting.rs"]
mod counting;
use counting::allocations;

#[test]
fn hot_path_does_not_allocate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("md.csv.gz");
    mdgen::generate(
        &path,
        &GenConfig {
            target_bytes: 200_000,
            ..GenConfig::default()
        },
    )
    .expect("generate");
    // Load every packet first (the file reader allocates; the network delivers packets).
    let mut packets = Vec::new();
    let mut r = MdReader::open(&path).expect("open");
    while let Some(rec) = r.next_record().expect("read") {
        if let Record::Line { .. } = rec {
            packets.push(r.line().to_vec());
        }
    }
    let mut engine = Engine::new(EngineConfig::default());
    let mut out = [0u8; 64];
    // Warm-up: the first pass (the book's arrays are preallocated, so this is a formality).
    for p in &packets[..1000] {
        let _ = engine.on_packet(p, 0);
    }
    let before = allocations();
    let mut orders = 0;
    for (i, p) in packets[1000..].iter().enumerate() {
        if let Some(o) = engine.on_packet(p, i as u64) {
            let n = o.encode(&mut out).expect("fits");
            orders += n / proto::order::ORDER_LEN;
        }
    }
    let after = allocations();
    assert!(orders > 5, "the file fires orders ({orders})");
    assert_eq!(after - before, 0, "allocations on the hot path");
}
