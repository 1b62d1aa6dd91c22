//! The events of the generated file: the generator's own book, and one method per kind of
//! line (snapshot, planted trigger, near miss, ordinary change), in the order the seed draws
//! them, so the same seed gives the same file byte for byte.

use std::collections::BTreeMap;
use std::io::{self, Write};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{
    tick_price, Counting, GenConfig, GenSummary, Microbursts, Planted, Position, Writer,
    TRIGGER_LEVELS, TRIGGER_THRESHOLD,
};
use flate2::write::GzEncoder;

/// Book in ticks of 0.5 USD.
#[derive(Default)]
struct Book {
    bids: BTreeMap<i64, u64>,
    asks: BTreeMap<i64, u64>,
}

impl Book {
    fn side(&mut self, bid: bool) -> &mut BTreeMap<i64, u64> {
        if bid {
            &mut self.bids
        } else {
            &mut self.asks
        }
    }
    fn best(&self, bid: bool) -> Option<i64> {
        if bid {
            self.bids.keys().next_back().copied()
        } else {
            self.asks.keys().next().copied()
        }
    }
    /// Price of the level at `rank` (0 = best).
    fn at_rank(&self, bid: bool, rank: usize) -> Option<i64> {
        if bid {
            self.bids.keys().rev().nth(rank).copied()
        } else {
            self.asks.keys().nth(rank).copied()
        }
    }
    fn len(&self, bid: bool) -> usize {
        if bid {
            self.bids.len()
        } else {
            self.asks.len()
        }
    }
}

fn amount(rng: &mut ChaCha8Rng, max_tens: u64) -> u64 {
    rng.gen_range(1..=max_tens) * 10
}

pub(super) type GzWriter<W> = Writer<GzEncoder<Counting<W>>>;

pub(super) fn write_events<W: Write>(
    w: &mut GzWriter<W>,
    cfg: &GenConfig,
) -> io::Result<GenSummary> {
    writeln!(w.out, "{}", String::from_utf8_lossy(proto::md::HEADER))?;
    let mut g = Gen {
        w,
        cfg,
        rng: ChaCha8Rng::seed_from_u64(cfg.seed),
        book: Book::default(),
        s: GenSummary::default(),
        lts: 1_585_699_200_000_000,
        next_trigger_line: 0,
        near_miss_due: false,
        t0: 0,
        planted_period: None,
    };
    let mid: i64 = 13_187; // 6593.5 USD in ticks
    for i in 0..cfg.depth as i64 {
        let (b, a) = (amount(&mut g.rng, 20_000), amount(&mut g.rng, 20_000));
        g.book.bids.insert(mid - 1 - i, b);
        g.book.asks.insert(mid + i, a);
    }
    g.snapshot()?;
    g.t0 = g.lts;
    if let Some(n) = cfg.trigger_every_lines {
        g.next_trigger_line = g.w.lines + n;
    }
    let mut events: u64 = 0;
    let mut resnapshotted = !cfg.resnapshot;
    let mut malformed_left = cfg.malformed;
    while !g.done(events) {
        events += 1;
        // The order of the random draws is part of the format: the same seed gives the same
        // file, byte for byte, across versions.
        let new_id = cfg.unique_ids || g.rng.gen_bool(0.6);
        if let Some(m) = cfg.microbursts {
            // A timeline with microbursts: every line moves time on, by the burst's gaps or
            // the quiet feed's; the trigger of this period goes where its position says.
            g.lts += g.micro_gap_us(&m);
            let ts = g.exch_ts();
            let bid = g.rng.gen_bool(0.5);
            match g.micro_due(&m) {
                Some(pos) => g.plant_at(ts, bid, Some(pos))?,
                None => g.ordinary(ts, bid)?,
            }
            continue;
        }
        let (planted, near_miss) = g.schedule(events);
        if new_id || planted {
            let step = g.rng.gen_range(1..400);
            let jump = if g.rng.gen_bool(0.1) {
                g.rng.gen_range(500..5000)
            } else {
                0
            };
            g.lts += step + jump;
        }
        let ts = g.exch_ts();
        if !resnapshotted && g.compressed() >= cfg.target_bytes / 2 {
            resnapshotted = true;
            g.lts += 1000;
            g.snapshot()?;
            g.lts += 1;
            continue;
        }
        if malformed_left > 0 && g.rng.gen_bool(0.01) {
            malformed_left -= 1;
            g.s.malformed += 1;
            g.w.out.write_all(b"deribit,BTC-PERPETUAL,garbage,line\n")?;
            g.w.lines += 1;
            continue;
        }
        let bid = g.rng.gen_bool(0.5);
        if planted {
            g.plant(ts, bid)?;
        } else if near_miss {
            g.near_miss(ts, bid)?;
        } else {
            g.ordinary(ts, bid)?;
        }
    }
    g.s.lines = g.w.lines;
    Ok(g.s)
}

/// The generator's state while it writes.
struct Gen<'a, W: Write> {
    w: &'a mut GzWriter<W>,
    cfg: &'a GenConfig,
    rng: ChaCha8Rng,
    book: Book,
    s: GenSummary,
    /// The current `local_timestamp`.
    lts: u64,
    /// With `trigger_every_lines`: the line at (or after) which the next trigger goes.
    next_trigger_line: u64,
    /// With `trigger_every_lines`: the near miss of this interval is still to come.
    near_miss_due: bool,
    /// The first update's `local_timestamp` (microbursts are timed from it).
    t0: u64,
    /// Microbursts: the period whose trigger has been planted.
    planted_period: Option<u64>,
}

impl<W: Write> Gen<'_, W> {
    /// The compressed size so far. The encoder buffers, so its output count lags: estimate
    /// with a 6:1 ratio until it has written enough to be trusted.
    fn compressed(&self) -> u64 {
        self.w.out.get_ref().count.max(self.w.raw_bytes / 6)
    }

    fn done(&self, events: u64) -> bool {
        match (self.cfg.trigger_every_lines, self.cfg.orders) {
            (Some(_), Some(n)) => self.s.planted.len() as u64 >= n,
            (None, Some(n)) => {
                self.s.planted.len() as u64 >= n && events >= 3 * self.cfg.trigger_every
            }
            _ => self.compressed() >= self.cfg.target_bytes && events >= 3 * self.cfg.trigger_every,
        }
    }

    /// Is event `events` a planted trigger, a near miss, or ordinary?
    fn schedule(&mut self, events: u64) -> (bool, bool) {
        match self.cfg.trigger_every_lines {
            Some(n) => {
                // The next trigger is due once its line is reached; `plant` moves the mark
                // on only when it planted (a snapshot or malformed line in between delays it).
                let planted = self.w.lines >= self.next_trigger_line;
                let half = self.next_trigger_line.saturating_sub(n / 2);
                let near = !planted && self.near_miss_due && n >= 8 && self.w.lines >= half;
                if near {
                    self.near_miss_due = false;
                }
                (planted, near)
            }
            None => {
                let every = self.cfg.trigger_every;
                (events.is_multiple_of(every), events % every == every / 2)
            }
        }
    }

    fn exch_ts(&mut self) -> u64 {
        self.lts - 80_000 - self.rng.gen_range(0..40_000)
    }

    fn snapshot(&mut self) -> io::Result<()> {
        let ts = self.exch_ts();
        let lts = self.lts;
        for (&p, &a) in self.book.bids.iter().rev() {
            self.w.line(ts, lts, true, true, p, a)?;
            self.s.snapshot_lines += 1;
        }
        for (&p, &a) in &self.book.asks {
            self.w.line(ts, lts, true, false, p, a)?;
            self.s.snapshot_lines += 1;
        }
        Ok(())
    }

    /// The gap before the next line of a microburst feed, us (at least 1).
    fn micro_gap_us(&mut self, m: &Microbursts) -> u64 {
        let phase = (self.lts - self.t0) % m.period_us.max(1);
        let u: f64 = self.rng.gen::<f64>();
        let gap = if phase < m.burst_us {
            // Exponential, mean quiet / ratio.
            -(1.0 - u).ln() * m.quiet_gap_us / m.peak_ratio.max(1.0)
        } else {
            // Pareto with shape 1.5 and mean `quiet_gap_us`: scale = mean / 3.
            (m.quiet_gap_us / 3.0) / (1.0 - u).powf(1.0 / 1.5)
        };
        (gap.round() as u64).clamp(1, m.period_us)
    }

    /// The trigger of this period, if this line is where its position puts it: period k's
    /// trigger sits at position k mod 4.
    fn micro_due(&mut self, m: &Microbursts) -> Option<Position> {
        let period = m.period_us.max(1);
        let (k, phase) = ((self.lts - self.t0) / period, (self.lts - self.t0) % period);
        if self.planted_period == Some(k) {
            return None;
        }
        let pos = Position::ALL[(k % 4) as usize];
        let here = match pos {
            Position::Start => phase < m.burst_us,
            Position::Peak => (m.burst_us / 2..m.burst_us).contains(&phase),
            Position::After => {
                (m.burst_us..m.burst_us + (period - m.burst_us) / 8).contains(&phase)
            }
            Position::Quiet => phase >= period / 2,
        };
        here.then(|| {
            self.planted_period = Some(k);
            pos
        })
    }

    /// A size jump above the threshold on one of the top levels: one order.
    fn plant(&mut self, ts: u64, bid: bool) -> io::Result<()> {
        self.plant_at(ts, bid, None)
    }

    /// [`Gen::plant`], recording the trigger's position in a microburst feed.
    fn plant_at(&mut self, ts: u64, bid: bool, position: Option<Position>) -> io::Result<()> {
        let rank = self.rng.gen_range(0..TRIGGER_LEVELS);
        let Some(p) = self.book.at_rank(bid, rank) else {
            return Ok(());
        };
        let inc = TRIGGER_THRESHOLD + 10 + amount(&mut self.rng, 10_000_000);
        let old = self.book.side(bid)[&p];
        self.book.side(bid).insert(p, old + inc);
        self.w.line(ts, self.lts, false, bid, p, old + inc)?;
        let other = self.book.best(!bid).unwrap_or_default();
        self.s.planted.push(Planted {
            trigger_id: self.lts,
            bid,
            price: tick_price(other),
            position,
        });
        if let Some(n) = self.cfg.trigger_every_lines {
            // The trigger is the line just written: the next one comes `n` lines later.
            self.next_trigger_line = self.w.lines - 1 + n;
            self.near_miss_due = true;
        }
        Ok(())
    }

    /// Exactly the threshold at the top (equal is not more), then a big jump too deep.
    fn near_miss(&mut self, ts: u64, bid: bool) -> io::Result<()> {
        if let Some(p) = self.book.at_rank(bid, 0) {
            let old = self.book.side(bid)[&p];
            self.book.side(bid).insert(p, old + TRIGGER_THRESHOLD);
            self.w
                .line(ts, self.lts, false, bid, p, old + TRIGGER_THRESHOLD)?;
        }
        let deep = self.rng.gen_range(TRIGGER_LEVELS..TRIGGER_LEVELS + 5);
        if let Some(p) = self.book.at_rank(!bid, deep) {
            self.lts += u64::from(self.cfg.unique_ids);
            let old = self.book.side(!bid)[&p];
            self.book.side(!bid).insert(p, old + 3 * TRIGGER_THRESHOLD);
            self.w
                .line(ts, self.lts, false, !bid, p, old + 3 * TRIGGER_THRESHOLD)?;
        }
        Ok(())
    }

    /// A size change near the top, a cancel, a new level or a deep change; then the book is
    /// kept from growing without bound.
    fn ordinary(&mut self, ts: u64, bid: bool) -> io::Result<()> {
        let roll: f64 = self.rng.gen();
        let len = self.book.len(bid);
        let depth = self.cfg.depth;
        let written = if roll < 0.55 || (roll < 0.75 && len < depth / 2) && len > 0 {
            self.size_change(ts, bid, len)?
        } else if roll < 0.75 && len > depth / 2 {
            // Cancel near the top: cancelling the best moves the market.
            let rank = (self.rng.gen_range(0.0f64..1.0).powi(2) * 20.0) as usize;
            match self.book.at_rank(bid, rank) {
                Some(p) => {
                    self.book.side(bid).remove(&p);
                    self.w.line(ts, self.lts, false, bid, p, 0)?;
                    true
                }
                None => false,
            }
        } else if roll < 0.95 {
            self.new_level(ts, bid)?
        } else {
            // Deep change.
            let rank = self.rng.gen_range(20..depth.max(21));
            match self.book.at_rank(bid, rank) {
                Some(p) => {
                    let a = amount(&mut self.rng, 20_000);
                    self.book.side(bid).insert(p, a);
                    self.w.line(ts, self.lts, false, bid, p, a)?;
                    true
                }
                None => false,
            }
        };
        if written && self.book.len(bid) > depth * 2 {
            if let Some(p) = self.book.at_rank(bid, self.book.len(bid) - 1) {
                self.lts += u64::from(self.cfg.unique_ids);
                self.book.side(bid).remove(&p);
                self.w.line(ts, self.lts, false, bid, p, 0)?;
            }
        }
        Ok(())
    }

    /// Size change near the top, skewed towards rank 0 (ordinary increases stay far below
    /// the threshold).
    fn size_change(&mut self, ts: u64, bid: bool, len: usize) -> io::Result<bool> {
        let rank = (self.rng.gen_range(0.0f64..1.0).powi(3) * 20.0) as usize;
        let Some(p) = self.book.at_rank(bid, rank.min(len.saturating_sub(1))) else {
            return Ok(false);
        };
        let old = self.book.side(bid)[&p];
        let new = if self.rng.gen_bool(0.5) {
            old + amount(&mut self.rng, 500_000)
        } else {
            old.saturating_sub(amount(&mut self.rng, 20_000)).max(10)
        };
        self.book.side(bid).insert(p, new);
        self.w.line(ts, self.lts, false, bid, p, new)?;
        Ok(true)
    }

    /// New level: inside the spread when there is room, else just behind the top.
    fn new_level(&mut self, ts: u64, bid: bool) -> io::Result<bool> {
        let (Some(best), Some(other)) = (self.book.best(bid), self.book.best(!bid)) else {
            return Ok(false);
        };
        let p = if self.rng.gen_bool(0.3) && (other - best).abs() > 1 {
            if bid {
                best + 1
            } else {
                best - 1
            }
        } else {
            let off = self.rng.gen_range(1..30);
            if bid {
                best - off
            } else {
                best + off
            }
        };
        if self.book.side(bid).contains_key(&p) {
            return Ok(false);
        }
        let a = amount(&mut self.rng, 50_000);
        self.book.side(bid).insert(p, a);
        self.w.line(ts, self.lts, false, bid, p, a)?;
        Ok(true)
    }
}
