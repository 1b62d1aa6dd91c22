//! The replay's orders on a generated file are exactly the triggers the generator planted.

use mdfile::mdgen::{self, GenConfig};
use proto::order::Side;
use strategy::engine::EngineConfig;

fn check(cfg: &GenConfig) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("md.csv.gz");
    let summary = mdgen::generate(&path, cfg).expect("generate");
    let report = strategy::replay::replay(&path, EngineConfig::default()).expect("replay");
    let got: Vec<(u64, bool, i64)> = report
        .orders
        .iter()
        .map(|o| (o.trigger_id, o.side == Side::Buy, o.price))
        .collect();
    let want: Vec<(u64, bool, i64)> = summary
        .planted
        .iter()
        .map(|p| (p.trigger_id, p.bid, p.price))
        .collect();
    assert!(!want.is_empty());
    assert_eq!(got, want);
    assert_eq!(report.malformed, summary.malformed);
    assert_eq!(report.stale, 0);
    assert!(report.orders.iter().all(|o| o.qty == 1));
}

#[test]
fn replay_finds_exactly_the_planted_triggers() {
    check(&GenConfig {
        target_bytes: 150_000,
        depth: 200,
        trigger_every: 200,
        malformed: 5,
        ..GenConfig::default()
    });
}

#[test]
fn replay_with_unique_ids_and_no_resnapshot() {
    check(&GenConfig {
        seed: 7,
        target_bytes: 80_000,
        unique_ids: true,
        resnapshot: false,
        ..GenConfig::default()
    });
}
