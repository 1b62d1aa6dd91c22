//! Offline replay: a file through the same engine the network paths use. Its orders are
//! the oracle the end-to-end tests compare the exchange's received orders with.

use std::path::Path;
use std::time::Instant;

use mdfile::{MdReader, ReadError, Record};
use proto::order::OrderRepr;

use crate::engine::{Engine, EngineConfig};

/// What a replay saw.
#[derive(Debug, Clone, Default)]
pub struct ReplayReport {
    /// Orders, in order.
    pub orders: Vec<OrderRepr>,
    /// Data lines read.
    pub lines: u64,
    /// Lines the file reader found malformed.
    pub malformed: u64,
    /// Stale packets.
    pub stale: u64,
    /// Triggers held back by risk limits.
    pub held_back: u64,
    /// Nanoseconds per line spent in the engine (parse + book + trigger).
    pub ns_per_line: f64,
}

/// Replays `path` through a fresh engine.
pub fn replay(path: &Path, cfg: EngineConfig) -> Result<ReplayReport, ReadError> {
    let mut reader = MdReader::open(path)?.with_amount_decimals(cfg.trigger.amount_decimals);
    let mut engine = Engine::new(cfg);
    let mut report = ReplayReport::default();
    let mut engine_ns: u128 = 0;
    let mut now_ns: u64 = 0;
    while let Some(rec) = reader.next_record()? {
        report.lines += 1;
        match rec {
            Record::Malformed { .. } => report.malformed += 1,
            Record::Line {
                local_timestamp, ..
            } => {
                // Replay time is the recorded time, so rate limits act as they would live.
                now_ns = now_ns.max(local_timestamp.saturating_mul(1000));
                let t = Instant::now();
                let order = engine.on_packet(reader.line(), now_ns);
                engine_ns += t.elapsed().as_nanos();
                if let Some(o) = order {
                    report.orders.push(o);
                }
            }
        }
    }
    report.stale = engine.stats().stale;
    report.held_back = engine.trigger_stats().held_back;
    report.ns_per_line = engine_ns as f64 / report.lines.max(1) as f64;
    Ok(report)
}
