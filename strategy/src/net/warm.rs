//! Keeping the order path warm while no order goes out.
//!
//! The same path is several times slower when its orders are far apart (caches, TLB and
//! branch predictors have moved on; docs/measurement.md has the figures). A warming
//! strategy runs, every `every_ns` on an idle turn of the busy loop, some of:
//!
//! * `code`: the decision and the order's encoding on a synthetic trigger, into scratch
//!   memory ([`crate::engine::Engine::warm`]; nothing reaches the book or the order log);
//! * `tx`: the path's transmit side without sending anything: a zero-length `send` on the
//!   order socket (kernel), a zero-length SEND through the ring (io_uring), an order-sized
//!   frame written into a TX slot that is given back unposted (AF_XDP, AF_PACKET);
//! * `heartbeat`: the [`proto::order::HEARTBEAT`] message through the very path an order
//!   takes, which an exchange started with `--heartbeats` counts and discards (an opt-in
//!   deviation from the one-message spec; never counted as an order).
//!
//! Warming never changes the orders: every variant must still equal the oracle.

use hostsys::mono_ns;
use proto::md::BookSide;
use proto::order::ORDER_LEN;

use crate::engine::Engine;

/// What to warm and how often.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WarmConfig {
    /// Interval, ns (0 = off).
    pub every_ns: u64,
    /// Decision and encoding on a synthetic trigger.
    pub code: bool,
    /// The transmit side without sending.
    pub tx: bool,
    /// The heartbeat message on the wire.
    pub heartbeat: bool,
}

impl WarmConfig {
    /// Is anything warmed?
    pub fn is_on(&self) -> bool {
        self.every_ns > 0 && (self.code || self.tx || self.heartbeat)
    }

    /// From a list of `code`, `tx`, `heartbeat` or `all`.
    pub fn parse_modes(every_ns: u64, modes: &[String]) -> Result<Self, String> {
        let mut c = Self {
            every_ns,
            ..Self::default()
        };
        for m in modes {
            match m.as_str() {
                "code" => c.code = true,
                "tx" => c.tx = true,
                "heartbeat" => c.heartbeat = true,
                "all" => (c.code, c.tx, c.heartbeat) = (true, true, true),
                "none" => {}
                other => {
                    return Err(format!(
                        "unknown warming `{other}` (code, tx, heartbeat, all, none)"
                    ))
                }
            }
        }
        Ok(c)
    }
}

/// What a path is asked to warm on one turn.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WarmRequest {
    /// The transmit side without sending.
    pub tx: bool,
    /// Send a heartbeat.
    pub heartbeat: bool,
}

/// Warming counters of a session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WarmStats {
    /// Warming turns.
    pub turns: u64,
    /// Heartbeats handed whole to the transport.
    pub heartbeats: u64,
    /// Heartbeats not sent (no room to queue them whole).
    pub heartbeats_held_back: u64,
}

/// The warming schedule and its scratch memory (allocation-free after `new`).
#[derive(Debug)]
pub struct Warmer {
    cfg: WarmConfig,
    next_ns: u64,
    side: BookSide,
    scratch: [u8; ORDER_LEN],
    sink: u64,
    stats: WarmStats,
}

impl Warmer {
    /// A warmer with these settings.
    pub fn new(cfg: WarmConfig) -> Self {
        Self {
            cfg,
            next_ns: 0,
            side: BookSide::Bid,
            scratch: [0; ORDER_LEN],
            sink: 0,
            stats: WarmStats::default(),
        }
    }

    /// Starts a session's counters.
    pub fn reset(&mut self) {
        self.stats = WarmStats::default();
        self.next_ns = 0;
    }

    /// Counters.
    pub fn stats(&self) -> WarmStats {
        self.stats
    }

    /// The settings.
    pub fn config(&self) -> WarmConfig {
        self.cfg
    }

    /// On an idle turn: when the interval has passed, warms the decision (if asked) and
    /// returns what the path should warm. `engine` must have seen an update (not only a
    /// snapshot) before heartbeats go out, so that they reach the exchange in TRANSMIT.
    #[inline]
    pub fn due(&mut self, engine: &Engine) -> Option<WarmRequest> {
        if !self.cfg.is_on() {
            return None;
        }
        let now = mono_ns();
        if now < self.next_ns {
            return None;
        }
        self.next_ns = now + self.cfg.every_ns;
        self.stats.turns += 1;
        if self.cfg.code {
            self.sink ^= engine.warm(self.side, &mut self.scratch);
            // Both sides' branches, in turn.
            self.side = match self.side {
                BookSide::Bid => BookSide::Ask,
                BookSide::Ask => BookSide::Bid,
            };
        }
        let updating = engine.stats().packets > 0 && !engine.book().in_snapshot();
        Some(WarmRequest {
            tx: self.cfg.tx,
            heartbeat: self.cfg.heartbeat && updating,
        })
    }

    /// Records what a path did with a heartbeat.
    pub fn heartbeat_sent(&mut self, whole: bool) {
        if whole {
            self.stats.heartbeats += 1;
        } else {
            self.stats.heartbeats_held_back += 1;
        }
    }

    /// The value the warm work produced (read so it is not optimised away).
    pub fn sink(&self) -> u64 {
        self.sink
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EngineConfig;

    #[test]
    fn modes_parse_and_the_schedule_respects_the_interval() {
        let all = WarmConfig::parse_modes(1_000_000_000, &["all".into()]).expect("all");
        assert!(all.code && all.tx && all.heartbeat && all.is_on());
        assert!(WarmConfig::parse_modes(1, &["lukewarm".into()]).is_err());
        assert!(!WarmConfig::parse_modes(0, &["all".into()])
            .expect("off")
            .is_on());
        let mut e = Engine::new(EngineConfig::default());
        let mut w = Warmer::new(all);
        let first = w.due(&e).expect("due at once");
        assert_eq!(
            first,
            WarmRequest {
                tx: true,
                heartbeat: false
            },
            "no heartbeat before data"
        );
        assert!(w.due(&e).is_none(), "not again within the interval");
        e.on_packet(b"d,s,1,10,true,bid,100,5", 0);
        e.on_packet(b"d,s,1,11,false,ask,101,5", 0);
        w.next_ns = 0;
        assert_eq!(
            w.due(&e),
            Some(WarmRequest {
                tx: true,
                heartbeat: true
            })
        );
        assert_eq!(w.stats().turns, 2);
    }
}
