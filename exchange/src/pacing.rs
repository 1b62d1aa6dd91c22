//! Replay pacing with deadlines anchored to the session start.
//!
//! Packet `n`'s deadline is computed from the session's start time, never from the
//! previous send, so oversleeping one gap does not shift every later packet (no drift).
//! The event loop sleeps in `epoll_wait` until about a millisecond before a deadline and
//! spins for the rest; a packet sent more than the late threshold after its deadline is
//! counted as late, and every packet's lateness goes into a histogram.

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
}

impl FromStr for Pace {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("invalid pace `{s}`: expected recorded[:SPEED], rate:PPS or max");
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
        }
    }
}

/// Computes send deadlines for one session.
#[derive(Debug, Clone)]
pub struct Pacer {
    pace: Pace,
    start_ns: u64,
    first_id: Option<u64>,
    sent: u64,
}

impl Pacer {
    /// A pacer whose first packet is due at `start_ns` (CLOCK_MONOTONIC).
    pub fn new(pace: Pace, start_ns: u64) -> Self {
        Self {
            pace,
            start_ns,
            first_id: None,
            sent: 0,
        }
    }

    /// Deadline of the next packet, whose `local_timestamp` is `id` (microseconds). For
    /// [`Pace::Max`] it is the start time (every packet is due at once).
    pub fn deadline(&mut self, id: u64) -> u64 {
        let offset_ns = match self.pace {
            Pace::Max => 0.0,
            Pace::Rate { pps } => self.sent as f64 * 1e9 / pps,
            Pace::Recorded { speed } => {
                let first = *self.first_id.get_or_insert(id);
                id.saturating_sub(first) as f64 * 1e3 / speed
            }
        };
        self.start_ns + offset_ns as u64
    }

    /// Records that the packet whose deadline was last asked for has been sent.
    pub fn sent(&mut self) {
        self.sent += 1;
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
            assert_eq!(p.deadline(0), 1_000 + n * 1_000_000);
            p.sent();
        }
        let mut p = Pacer::new(Pace::Recorded { speed: 2.0 }, 0);
        assert_eq!(p.deadline(100), 0);
        p.sent();
        assert_eq!(p.deadline(100), 0, "shared ids go out together");
        assert_eq!(p.deadline(300), 100_000, "200 us recorded at 2x is 100 us");
        let mut p = Pacer::new(Pace::Max, 7);
        assert_eq!(p.deadline(12345), 7);
    }
}
