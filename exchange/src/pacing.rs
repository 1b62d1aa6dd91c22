//! Replay pacing with deadlines anchored to the session start.
//!
//! Packet `n`'s deadline is computed from the session's start time, never from the
//! previous send, so oversleeping one gap does not shift every later packet (no drift).
//! The event loop sleeps in `epoll_wait` until about a millisecond before a deadline and
//! spins for the rest; a packet sent more than the late threshold after its deadline is
//! counted as late, and every packet's lateness goes into a histogram.
//!
//! Market shapes beside the even rate: on/off bursts ([`Pace::Bursts`]: a base rate with a
//! peak rate for the first `burst` of every `period`, the shape of a feed whose
//! 1-ms bursts run at 20x its mean) and Poisson arrivals ([`Pace::Poisson`]: exponential
//! gaps from a seeded generator, so a run is repeatable). The pacer is a pure function of
//! its start time and the packets sent, tested on a virtual clock.

use std::fmt;
use std::str::FromStr;

/// How fast to replay.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// Gaps of `local_timestamp` divided by `speed` (1.0 = as recorded).
    Recorded {
        /// Speed factor.
        speed: f64,
    },
    /// A fixed packet rate.
    Rate {
        /// Packets per second.
        pps: f64,
    },
    /// As fast as the socket takes them.
    Max,
    /// On/off bursts: `peak` packets/s for the first `burst` of every `period`, `base`
    /// packets/s for the rest (`bursts:BASE/PEAK/BURST/PERIOD`, e.g.
    /// `bursts:5000/200000/1ms/100ms`).
    Bursts {
        /// Packets per second between bursts (may be 0).
        base: f64,
        /// Packets per second inside a burst.
        peak: f64,
        /// Burst length, ns.
        burst_ns: f64,
        /// Period (burst + quiet), ns.
        period_ns: f64,
    },
    /// Poisson arrivals at a mean rate: exponential gaps from a seeded generator
    /// (`poisson:PPS[:SEED]`).
    Poisson {
        /// Mean packets per second.
        pps: f64,
        /// Generator seed (the same seed gives the same arrivals).
        seed: u64,
    },
}

impl FromStr for Pace {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "invalid pace `{s}`: expected recorded[:SPEED], rate:PPS, max, \
                 bursts:BASE/PEAK/BURST/PERIOD (e.g. bursts:5000/200000/1ms/100ms) or \
                 poisson:PPS[:SEED]"
            )
        };
        let positive = |v: &str| {
            v.parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v > 0.0)
                .ok_or_else(bad)
        };
        match s.split_once(':') {
            None if s == "max" => Ok(Self::Max),
            None if s == "recorded" => Ok(Self::Recorded { speed: 1.0 }),
            Some(("recorded", v)) => Ok(Self::Recorded {
                speed: positive(v)?,
            }),
            Some(("rate", v)) => Ok(Self::Rate { pps: positive(v)? }),
            Some(("bursts", v)) => {
                let f: Vec<&str> = v.split('/').collect();
                let [base, peak, burst, period] = f[..] else {
                    return Err(bad());
                };
                let base = base
                    .parse::<f64>()
                    .ok()
                    .filter(|b| b.is_finite() && *b >= 0.0)
                    .ok_or_else(bad)?;
                let dur = |d: &str| {
                    humantime::parse_duration(d)
                        .ok()
                        .map(|d| d.as_nanos() as f64)
                        .filter(|n| *n > 0.0)
                        .ok_or_else(bad)
                };
                let (burst_ns, period_ns) = (dur(burst)?, dur(period)?);
                if burst_ns > period_ns {
                    return Err(bad());
                }
                Ok(Self::Bursts {
                    base,
                    peak: positive(peak)?,
                    burst_ns,
                    period_ns,
                })
            }
            Some(("poisson", v)) => {
                let (pps, seed) = v.split_once(':').unwrap_or((v, "1"));
                Ok(Self::Poisson {
                    pps: positive(pps)?,
                    seed: seed.parse().map_err(|_| bad())?,
                })
            }
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for Pace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Recorded { speed } => write!(f, "recorded:{speed}"),
            Self::Rate { pps } => write!(f, "rate:{pps}"),
            Self::Max => f.write_str("max"),
            Self::Bursts {
                base,
                peak,
                burst_ns,
                period_ns,
            } => write!(
                f,
                "bursts:{base}/{peak}/{}ns/{}ns",
                *burst_ns as u64, *period_ns as u64
            ),
            Self::Poisson { pps, seed } => write!(f, "poisson:{pps}:{seed}"),
        }
    }
}

impl Pace {
    /// The mean packets per second of a paced shape (None: recorded or max).
    pub fn mean_pps(&self) -> Option<f64> {
        match *self {
            Self::Rate { pps } | Self::Poisson { pps, .. } => Some(pps),
            Self::Bursts {
                base,
                peak,
                burst_ns,
                period_ns,
            } => Some((peak * burst_ns + base * (period_ns - burst_ns)) / period_ns),
            Self::Recorded { .. } | Self::Max => None,
        }
    }
}

/// Computes send deadlines for one session.
#[derive(Debug, Clone)]
pub struct Pacer {
    pace: Pace,
    start_ns: u64,
    first_id: Option<u64>,
    /// Deadlines handed out.
    sent: u64,
    /// Poisson: the next packet's offset from the start, ns, and the generator.
    poisson: Option<(f64, rand_chacha::ChaCha8Rng)>,
}

/// The offset (ns from the start) of packet `n` of an on/off burst shape: whole periods
/// first, then the burst's packets at the peak rate, then the quiet part's at the base rate.
fn burst_offset_ns(n: u64, base: f64, peak: f64, burst_ns: f64, period_ns: f64) -> f64 {
    let in_burst = peak * burst_ns / 1e9;
    let per_period = in_burst + base * (period_ns - burst_ns) / 1e9;
    let n = n as f64;
    let k = (n / per_period).floor();
    let r = n - k * per_period;
    let within = if r < in_burst || base <= 0.0 {
        r * 1e9 / peak
    } else {
        burst_ns + (r - in_burst) * 1e9 / base
    };
    k * period_ns + within
}

/// An exponential gap with mean `1/pps` s, in ns.
fn exp_gap_ns(rng: &mut rand_chacha::ChaCha8Rng, pps: f64) -> f64 {
    use rand::Rng;
    // 1 - U is in (0, 1]: its logarithm is finite.
    let u: f64 = rng.gen();
    -(1.0 - u).ln() * 1e9 / pps
}

impl Pacer {
    /// A pacer whose first packet is due at `start_ns` (CLOCK_MONOTONIC).
    pub fn new(pace: Pace, start_ns: u64) -> Self {
        Self {
            pace,
            start_ns,
            first_id: None,
            sent: 0,
            poisson: match pace {
                Pace::Poisson { seed, .. } => Some((
                    0.0,
                    <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(seed),
                )),
                _ => None,
            },
        }
    }

    /// Deadline of the next packet in file order, whose `local_timestamp` is `id`
    /// (microseconds); each call is the next packet's (the publisher reads ahead of what it
    /// has sent, so the deadline follows the packets handed out, not the sends). For
    /// [`Pace::Max`] it is the start time (every packet is due at once).
    pub fn next_deadline(&mut self, id: u64) -> u64 {
        let offset_ns = match self.pace {
            Pace::Max => 0.0,
            Pace::Rate { pps } => self.sent as f64 * 1e9 / pps,
            Pace::Recorded { speed } => {
                let first = *self.first_id.get_or_insert(id);
                id.saturating_sub(first) as f64 * 1e3 / speed
            }
            Pace::Bursts {
                base,
                peak,
                burst_ns,
                period_ns,
            } => burst_offset_ns(self.sent, base, peak, burst_ns, period_ns),
            Pace::Poisson { .. } => self.poisson.as_ref().map_or(0.0, |p| p.0),
        };
        self.sent += 1;
        if let (Some((next, rng)), Pace::Poisson { pps, .. }) = (&mut self.poisson, self.pace) {
            *next += exp_gap_ns(rng, pps);
        }
        self.start_ns + offset_ns as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        assert_eq!("max".parse(), Ok(Pace::Max));
        assert_eq!("recorded".parse(), Ok(Pace::Recorded { speed: 1.0 }));
        assert_eq!("recorded:2.5".parse(), Ok(Pace::Recorded { speed: 2.5 }));
        assert_eq!("rate:20000".parse(), Ok(Pace::Rate { pps: 20000.0 }));
        for bad in [
            "",
            "rate",
            "rate:0",
            "rate:-1",
            "rate:x",
            "recorded:",
            "fast",
            "max:1",
            "rate:inf",
        ] {
            assert!(bad.parse::<Pace>().is_err(), "{bad}");
        }
    }

    #[test]
    fn deadlines_are_anchored_to_the_start() {
        let mut p = Pacer::new(Pace::Rate { pps: 1000.0 }, 1_000);
        for n in 0..5u64 {
            assert_eq!(p.next_deadline(0), 1_000 + n * 1_000_000);
        }
        let mut p = Pacer::new(Pace::Recorded { speed: 2.0 }, 0);
        assert_eq!(p.next_deadline(100), 0);
        assert_eq!(p.next_deadline(100), 0, "shared ids go out together");
        assert_eq!(
            p.next_deadline(300),
            100_000,
            "200 us recorded at 2x is 100 us"
        );
        let mut p = Pacer::new(Pace::Max, 7);
        assert_eq!(p.next_deadline(12345), 7);
    }

    /// Deadlines of the first `n` packets, on a virtual clock starting at 0.
    fn deadlines(pace: Pace, n: usize) -> Vec<u64> {
        let mut p = Pacer::new(pace, 0);
        (0..n).map(|_| p.next_deadline(0)).collect()
    }

    #[test]
    fn shapes_parse_and_print() {
        let b: Pace = "bursts:5000/200000/1ms/100ms".parse().expect("bursts");
        assert_eq!(
            b,
            Pace::Bursts {
                base: 5000.0,
                peak: 200_000.0,
                burst_ns: 1e6,
                period_ns: 1e8
            }
        );
        assert_eq!(b.to_string().parse::<Pace>(), Ok(b));
        let mean = b.mean_pps().expect("mean");
        assert!((mean - 6950.0).abs() < 1e-6, "{mean}");
        assert_eq!(
            "poisson:100000".parse(),
            Ok(Pace::Poisson {
                pps: 100_000.0,
                seed: 1
            })
        );
        assert_eq!(
            "poisson:5e5:7".parse(),
            Ok(Pace::Poisson {
                pps: 500_000.0,
                seed: 7
            })
        );
        for bad in [
            "bursts:1/2/3",
            "bursts:-1/10/1ms/10ms",
            "bursts:1/0/1ms/10ms",
            "bursts:1/10/20ms/10ms",
            "bursts:1/10/1/10ms",
            "poisson:0",
            "poisson:10:x",
        ] {
            assert!(bad.parse::<Pace>().is_err(), "{bad}");
        }
    }

    #[test]
    fn bursts_send_the_peak_rate_in_the_burst_and_the_base_between() {
        // 1 ms at 1 M/s (1,000 packets), then 9 ms at 10 k/s (90 packets): 1,090 a period.
        let pace = Pace::Bursts {
            base: 10_000.0,
            peak: 1_000_000.0,
            burst_ns: 1e6,
            period_ns: 1e7,
        };
        let d = deadlines(pace, 3 * 1090 + 1);
        assert!(
            d.windows(2).all(|w| w[0] <= w[1]),
            "in order, never earlier"
        );
        for period in 0..3u64 {
            let start = period * 10_000_000;
            let in_window = |a: u64, b: u64| d.iter().filter(|&&t| t >= a && t < b).count();
            assert_eq!(in_window(start, start + 1_000_000), 1000, "period {period}");
            assert_eq!(
                in_window(start + 1_000_000, start + 10_000_000),
                90,
                "period {period}"
            );
        }
        assert_eq!(d[1] - d[0], 1_000, "1 us apart in the burst");
        assert_eq!(d[1001] - d[1000], 100_000, "100 us apart after it");
        assert_eq!(d[1090], 10_000_000, "the next period starts on time");
        // No base rate: only bursts.
        let only = deadlines(
            Pace::Bursts {
                base: 0.0,
                peak: 1e6,
                burst_ns: 1e3,
                period_ns: 1e6,
            },
            3,
        );
        assert_eq!(only, [0, 1_000_000, 2_000_000]);
    }

    #[test]
    fn poisson_gaps_are_exponential_and_repeatable() {
        let pace = Pace::Poisson {
            pps: 100_000.0,
            seed: 3,
        };
        let d = deadlines(pace, 200_001);
        assert_eq!(
            d,
            deadlines(pace, 200_001),
            "the same seed, the same arrivals"
        );
        assert_ne!(
            d,
            deadlines(
                Pace::Poisson {
                    pps: 100_000.0,
                    seed: 4
                },
                200_001
            )
        );
        let gaps: Vec<f64> = d.windows(2).map(|w| (w[1] - w[0]) as f64).collect();
        let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
        let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64;
        // Mean 10 us; an exponential's standard deviation equals its mean.
        assert!((mean - 10_000.0).abs() < 100.0, "mean gap {mean} ns");
        assert!(
            (var.sqrt() / mean - 1.0).abs() < 0.02,
            "cv {}",
            var.sqrt() / mean
        );
        // Memoryless: the share of gaps above the mean is 1/e.
        let above = gaps.iter().filter(|&&g| g > mean).count() as f64 / gaps.len() as f64;
        assert!((above - (-1.0f64).exp()).abs() < 0.01, "{above}");
    }
}
