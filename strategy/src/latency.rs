//! The strategy's own latency: packet read -> order handed to the kernel, per order.
//!
//! Recorded in an HDR histogram allocated up front (recording does not allocate).

use hdrhistogram::Histogram;

pub use mdfile::percentiles::Percentiles;

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
        Percentiles::of(&self.h)
    }
}
