//! Statistics of latency samples: quantiles and the confidence of a median.

/// The `q` quantile of sorted nanosecond samples, in microseconds (NaN when empty).
pub fn pct(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64 / 1e3
}

/// Half the width (in us) of the distribution-free 95 % confidence interval of the median
/// of `sorted` (ns): the order statistics n/2 -+ 1.96 sqrt(n)/2.
pub fn median_ci_half_width(sorted: &[u64]) -> f64 {
    let n = sorted.len();
    if n < 2 {
        return f64::INFINITY;
    }
    let h = 0.98 * (n as f64).sqrt();
    let lo = (n as f64 / 2.0 - h).floor().max(0.0) as usize;
    let hi = ((n as f64 / 2.0 + h).ceil() as usize).min(n - 1);
    sorted[hi].saturating_sub(sorted[lo]) as f64 / 2.0 / 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_and_median_confidence() {
        let v: Vec<u64> = (1..=101).map(|x| x * 1000).collect();
        assert_eq!(pct(&v, 0.0), 1.0);
        assert_eq!(pct(&v, 0.5), 51.0);
        assert_eq!(pct(&v, 1.0), 101.0);
        assert!(pct(&[], 0.5).is_nan());
        let h = median_ci_half_width(&v);
        assert!(h > 5.0 && h < 15.0, "{h}");
        assert!(median_ci_half_width(&[1]).is_infinite());
    }
}
