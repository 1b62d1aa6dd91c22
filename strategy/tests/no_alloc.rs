//! Proves the hot path (parse -> book -> trigger -> encode) does not allocate after warm-up,
//! with a counting global allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use exchange::mdgen::{self, GenConfig};
use mdfile::{MdReader, Record};
use strategy::engine::{Engine, EngineConfig};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

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
    let before = ALLOCS.load(Ordering::Relaxed);
    let mut orders = 0;
    for (i, p) in packets[1000..].iter().enumerate() {
        if let Some(o) = engine.on_packet(p, i as u64) {
            let n = o.encode(&mut out).expect("fits");
            orders += n / proto::order::ORDER_LEN;
        }
    }
    let after = ALLOCS.load(Ordering::Relaxed);
    assert!(orders > 5, "the file fires orders ({orders})");
    assert_eq!(after - before, 0, "allocations on the hot path");
}
