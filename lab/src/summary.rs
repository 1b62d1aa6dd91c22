//! `summary.csv`, typed: one [`SummaryRow`] per gap, path and clock, written and read back
//! through the `csv` crate by field name (the struct's field order is the column order).
//!
//! A figure that was not measured is absent, written `-`, never 0: the kernel clock of a
//! run without kernel stamps, the strategy's stages of a guest that does not send them
//! back, the floor of a lab without one, p99.99 below 10,000 samples.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Which tick-to-trade a row holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Clock {
    /// The exchange's CLOCK_MONOTONIC.
    User,
    /// SO_TIMESTAMPING software stamps.
    Kernel,
}

/// Where a row's gap comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GapSource {
    /// The gap the file was made for (`--order-gap`).
    Requested,
    /// The median gap between orders the exchange measured.
    MeasuredMedian,
}

/// One row of `summary.csv`: a path's runs at one gap, on one clock (us unless named).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SummaryRow {
    /// The gap between orders, ms.
    pub gap_ms: f64,
    /// Where the gap comes from.
    pub gap_source: GapSource,
    /// The run label (`path[/tune]`, `nic/path` in the VM lab).
    pub path: String,
    /// The feed's rate around the triggers, packets/s (`--load`; absent without).
    #[serde(with = "dash_u32")]
    pub load_pps: Option<u32>,
    /// Every run's market data added up: sent = handled + dropped by the path's count.
    pub accounted: bool,
    /// Repetitions pooled.
    pub runs: usize,
    /// Orders the oracle expects, summed over runs.
    pub orders_expected: usize,
    /// Orders the exchange accepted.
    pub orders_received: usize,
    /// Every run's orders equal the oracle's.
    #[serde(rename = "match")]
    pub matches: bool,
    /// Market-data packets sent and not received by the strategy.
    pub packets_lost: u64,
    /// The clock.
    pub clock: Clock,
    /// Minimum.
    #[serde(with = "dash")]
    pub min_us: Option<f64>,
    /// Median.
    #[serde(with = "dash")]
    pub p50_us: Option<f64>,
    /// p90.
    #[serde(with = "dash")]
    pub p90_us: Option<f64>,
    /// p99.
    #[serde(with = "dash")]
    pub p99_us: Option<f64>,
    /// p99.9.
    #[serde(with = "dash")]
    pub p999_us: Option<f64>,
    /// Maximum.
    #[serde(with = "dash")]
    pub max_us: Option<f64>,
    /// The strategy's own packet-to-order p50 (mean over runs).
    #[serde(with = "dash")]
    pub strategy_p50_us: Option<f64>,
    /// Its p99.
    #[serde(with = "dash")]
    pub strategy_p99_us: Option<f64>,
    /// Parse, book and decision (median, mean over runs).
    #[serde(with = "dash")]
    pub decide_p50_us: Option<f64>,
    /// Encode and hand-off.
    #[serde(with = "dash")]
    pub send_p50_us: Option<f64>,
    /// The floor's UDP round trip p50 at this gap.
    #[serde(with = "dash")]
    pub floor_udp_p50_us: Option<f64>,
    /// Its TCP round trip p50.
    #[serde(with = "dash")]
    pub floor_tcp_p50_us: Option<f64>,
    /// p99.99 (only with at least 10,000 samples).
    #[serde(with = "dash")]
    pub p9999_us: Option<f64>,
    /// Samples behind the percentiles.
    pub n: usize,
}

impl SummaryRow {
    /// A row of `path` on `clock` with only its p50 and p99 (the rest unmeasured): what
    /// the tests of the summary's readers start from.
    #[cfg(test)]
    pub(crate) fn sample(path: &str, clock: Clock, p50: Option<f64>, p99: Option<f64>) -> Self {
        Self {
            gap_ms: 1.0,
            gap_source: GapSource::Requested,
            path: path.into(),
            load_pps: None,
            accounted: true,
            runs: 1,
            orders_expected: 10,
            orders_received: 10,
            matches: true,
            packets_lost: 0,
            clock,
            min_us: None,
            p50_us: p50,
            p90_us: None,
            p99_us: p99,
            p999_us: None,
            max_us: None,
            strategy_p50_us: None,
            strategy_p99_us: None,
            decide_p50_us: None,
            send_p50_us: None,
            floor_udp_p50_us: None,
            floor_tcp_p50_us: None,
            p9999_us: None,
            n: 10,
        }
    }
}

/// `Option<f64>` as `-` when absent, two decimals when present.
mod dash {
    use super::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(x) if x.is_finite() => s.serialize_str(&format!("{x:.2}")),
            _ => s.serialize_str("-"),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        let s = String::deserialize(d)?;
        match s.trim() {
            "-" | "" => Ok(None),
            t => t.parse().map(Some).map_err(serde::de::Error::custom),
        }
    }
}

/// `Option<u32>` as `-` when absent.
mod dash_u32 {
    use super::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<u32>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(x) => s.serialize_u32(*x),
            None => s.serialize_str("-"),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
        let s = String::deserialize(d)?;
        match s.trim() {
            "-" | "" => Ok(None),
            t => t.parse().map(Some).map_err(serde::de::Error::custom),
        }
    }
}

/// Writes the rows to `path` (header first).
pub fn write(path: &Path, rows: &[SummaryRow]) -> Result<()> {
    let mut w = csv::Writer::from_path(path).with_context(|| path.display().to_string())?;
    for r in rows {
        w.serialize(r)?;
    }
    w.flush()?;
    Ok(())
}

/// Reads `summary.csv` back.
pub fn read(path: &Path) -> Result<Vec<SummaryRow>> {
    let text = fs::read_to_string(path).with_context(|| path.display().to_string())?;
    csv::Reader::from_reader(text.as_bytes())
        .deserialize()
        .enumerate()
        .map(|(i, r)| r.with_context(|| format!("{} row {}", path.display(), i + 2)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> SummaryRow {
        SummaryRow {
            gap_ms: 1.0,
            gap_source: GapSource::Requested,
            path: "xdp-tx".into(),
            load_pps: Some(300_000),
            accounted: true,
            runs: 2,
            orders_expected: 200,
            orders_received: 200,
            matches: true,
            packets_lost: 0,
            clock: Clock::Kernel,
            min_us: Some(2.5),
            p50_us: Some(3.25),
            p90_us: Some(4.0),
            p99_us: Some(9.0),
            p999_us: Some(12.0),
            max_us: Some(30.0),
            strategy_p50_us: Some(1.5),
            strategy_p99_us: Some(3.0),
            decide_p50_us: None,
            send_p50_us: None,
            floor_udp_p50_us: Some(12.5),
            floor_tcp_p50_us: None,
            p9999_us: None,
            n: 190,
        }
    }

    #[test]
    fn rows_round_trip_and_absent_is_a_dash() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("summary.csv");
        let mut unmeasured = row();
        unmeasured.clock = Clock::User;
        unmeasured.p50_us = None;
        write(&p, &[row(), unmeasured.clone()]).expect("write");
        let text = fs::read_to_string(&p).expect("read");
        let mut lines = text.lines();
        assert_eq!(
            lines.next(),
            Some("gap_ms,gap_source,path,load_pps,accounted,runs,orders_expected,orders_received,match,packets_lost,clock,min_us,p50_us,p90_us,p99_us,p999_us,max_us,strategy_p50_us,strategy_p99_us,decide_p50_us,send_p50_us,floor_udp_p50_us,floor_tcp_p50_us,p9999_us,n")
        );
        assert_eq!(
            lines.next(),
            Some("1.0,requested,xdp-tx,300000,true,2,200,200,true,0,kernel,2.50,3.25,4.00,9.00,12.00,30.00,1.50,3.00,-,-,12.50,-,-,190")
        );
        assert_eq!(read(&p).expect("read back"), [row(), unmeasured]);
    }

    #[test]
    fn a_renamed_column_is_an_error_not_a_zero() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("summary.csv");
        write(&p, &[row()]).expect("write");
        let text = fs::read_to_string(&p)
            .expect("read")
            .replace("p50_us,", "median_us,");
        fs::write(&p, text).expect("rewrite");
        assert!(read(&p).is_err());
    }
}
