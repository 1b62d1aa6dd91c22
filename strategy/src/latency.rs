//! The strategy's own latency: packet read -> order handed to the kernel, per order.
//!
//! Recorded in an HDR histogram allocated up front (recording does not allocate).

use hdrhistogram::Histogram;
use serde::Serialize;

/// Percentiles in nanoseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// Min.
    pub min: u64,
    /// p50.
    pub p50: u64,
    /// p90.
    pub p90: u64,
    /// p99.
    pub p99: u64,
    /// p99.9.
    pub p999: u64,
    /// Max.
    pub max: u64,
}

/// The histogram.
#[derive(Debug, Clone)]
pub struct Latency {
    h: Histogram<u64>,
}

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

impl Latency {
    /// 1 ns .. 10 s, 3 significant digits.
    pub fn new() -> Self {
        Self {
            h: Histogram::new_with_bounds(1, 10_000_000_000, 3)
                .expect("static histogram bounds are valid"),
        }
    }

    /// Records one sample (saturates into range; never allocates).
    #[inline]
    pub fn record(&mut self, ns: u64) {
        self.h.saturating_record(ns.max(1));
    }

    /// Clears.
    pub fn reset(&mut self) {
        self.h.reset();
    }

    /// Percentiles.
    pub fn percentiles(&self) -> Percentiles {
        if self.h.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            count: self.h.len(),
            min: self.h.min(),
            p50: self.h.value_at_quantile(0.5),
            p90: self.h.value_at_quantile(0.9),
            p99: self.h.value_at_quantile(0.99),
            p999: self.h.value_at_quantile(0.999),
            max: self.h.max(),
        }
    }
}
