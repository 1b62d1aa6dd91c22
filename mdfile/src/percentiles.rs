//! Latency percentiles as the result files carry them: the exchange's session summary and
//! the strategy's session report both write this one shape (nanoseconds), and the lab reads
//! both back with it.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Percentiles of one histogram, in nanoseconds; all zero for an empty one.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// Minimum.
    pub min: u64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Maximum.
    pub max: u64,
}

impl Percentiles {
    /// Reads the percentiles off a histogram.
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        Self {
            count: h.len(),
            min: h.min(),
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_histogram_reads_as_zero_and_a_filled_one_in_order() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 1_000_000, 3).expect("bounds");
        assert_eq!(Percentiles::of(&h), Percentiles::default());
        for v in 1..=1000 {
            h.record(v).expect("in range");
        }
        let p = Percentiles::of(&h);
        assert_eq!((p.count, p.min, p.max), (1000, 1, 1000));
        assert!(p.min <= p.p50 && p.p50 <= p.p90 && p.p90 <= p.p99 && p.p99 <= p.p999);
        assert!((499..=501).contains(&p.p50), "{p:?}");
    }
}
