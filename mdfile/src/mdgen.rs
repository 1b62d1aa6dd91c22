//! Deterministic synthetic `incremental_book_L2` data, Deribit BTC-PERPETUAL style.
//!
//! The generator keeps its own L2 book and writes only consistent events: an opening
//! snapshot of `depth` levels per side (0.5 USD ticks, integer USD amounts in tens), then a
//! mix of size changes near the top (55 %), cancels (20 %), new levels (20 %, some inside
//! the spread so the top moves) and deep changes (5 %); a full re-snapshot half way; rows
//! sharing a `local_timestamp` as in real captures (unless `unique_ids`).
//!
//! Every `trigger_every` events it plants a size jump of more than 50,000,000 on one of the
//! top 5 levels of a side: the strategy's default trigger. Ordinary increases stay below
//! 5,000,000, so the planted jumps are exactly the triggers. It also plants near misses that
//! must *not* fire: an increase of exactly 50,000,000 at the top, and a large jump at rank
//! 5-9. The planted triggers (trigger id, book side, order side, price) are written to a
//! sidecar CSV, `<out>.planted.csv`, which the tests compare the strategy's orders with.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;
use flate2::Compression;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Default threshold the planted jumps cross (the strategy's default).
pub const TRIGGER_THRESHOLD: u64 = 50_000_000;
/// Rank limit of the strategy's default trigger.
pub const TRIGGER_LEVELS: usize = 5;

/// Generator settings.
#[derive(Debug, Clone)]
pub struct GenConfig {
    /// PRNG seed: the same seed gives the same file, byte for byte.
    pub seed: u64,
    /// Stop once the compressed output reaches about this many bytes.
    pub target_bytes: u64,
    /// Levels per side in the snapshots.
    pub depth: usize,
    /// Give every line its own `local_timestamp`.
    pub unique_ids: bool,
    /// Emit a full re-snapshot half way.
    pub resnapshot: bool,
    /// Events between planted triggers.
    pub trigger_every: u64,
    /// Lines (packets, at one line per packet) between planted triggers instead: with a
    /// replay at R packets/s, orders come every `N / R` seconds (`exchange gen --order-gap`).
    pub trigger_every_lines: Option<u64>,
    /// Stop after this many planted triggers (instead of at `target_bytes`).
    pub orders: Option<u64>,
    /// Malformed lines to scatter through the updates (to exercise error handling).
    pub malformed: u64,
}

impl Default for GenConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            target_bytes: 1_000_000,
            depth: 400,
            unique_ids: false,
            resnapshot: true,
            trigger_every: 500,
            trigger_every_lines: None,
            orders: None,
            malformed: 0,
        }
    }
}

/// One planted trigger: what the strategy must send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Planted {
    /// `local_timestamp` of the jump.
    pub trigger_id: u64,
    /// Side of the book that jumped (`true` = bid).
    pub bid: bool,
    /// Order price: best price of the other side, fixed point 8 decimals.
    pub price: i64,
}

/// What was written.
#[derive(Debug, Clone, Default)]
pub struct GenSummary {
    /// Data lines (without the header).
    pub lines: u64,
    /// Snapshot lines.
    pub snapshot_lines: u64,
    /// Malformed lines inserted.
    pub malformed: u64,
    /// Compressed size in bytes.
    pub bytes: u64,
    /// The planted triggers, in file order.
    pub planted: Vec<Planted>,
}

struct Counting<W> {
    inner: W,
    count: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

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

/// Lines between triggers for orders `gap` apart when the file is replayed at `rate_pps`
/// packets per second (one line per packet); at least 2.
pub fn lines_for_gap(gap: std::time::Duration, rate_pps: u32) -> u64 {
    ((gap.as_secs_f64() * f64::from(rate_pps)).round() as u64).max(2)
}

/// Fixed-point price (8 decimals) of a tick count.
pub fn tick_price(ticks: i64) -> i64 {
    ticks * 50_000_000
}

struct Writer<W: Write> {
    out: W,
    lines: u64,
    raw_bytes: u64,
    scratch: Vec<u8>,
}

impl<W: Write> Writer<W> {
    fn line(
        &mut self,
        ts: u64,
        lts: u64,
        snapshot: bool,
        bid: bool,
        ticks: i64,
        amount: u64,
    ) -> io::Result<()> {
        self.scratch.clear();
        let (int, half) = (ticks / 2, ticks % 2 == 1);
        writeln!(
            self.scratch,
            "deribit,BTC-PERPETUAL,{ts},{lts},{snapshot},{},{int}{},{amount}",
            if bid { "bid" } else { "ask" },
            if half { ".5" } else { "" }
        )?;
        self.out.write_all(&self.scratch)?;
        self.raw_bytes += self.scratch.len() as u64;
        self.lines += 1;
        Ok(())
    }
}

fn amount(rng: &mut ChaCha8Rng, max_tens: u64) -> u64 {
    rng.gen_range(1..=max_tens) * 10
}

/// Writes the file and its `.planted.csv` sidecar.
pub fn generate(out: &Path, cfg: &GenConfig) -> io::Result<GenSummary> {
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = out.with_extension("tmp");
    let file = Counting {
        inner: BufWriter::new(File::create(&tmp)?),
        count: 0,
    };
    let mut w = Writer {
        out: GzEncoder::new(file, Compression::default()),
        lines: 0,
        raw_bytes: 0,
        scratch: Vec::new(),
    };
    let summary = write_events(&mut w, cfg)?;
    let file = w.out.finish()?;
    let bytes = file.count;
    file.inner
        .into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()?;
    std::fs::rename(&tmp, out)?;
    let mut side = BufWriter::new(File::create(planted_path(out))?);
    writeln!(side, "trigger_id,book_side,order_side,price")?;
    for p in &summary.planted {
        writeln!(
            side,
            "{},{},{},{}",
            p.trigger_id,
            if p.bid { "bid" } else { "ask" },
            if p.bid { "buy" } else { "sell" },
            proto::decimal::Fixed(p.price, proto::PRICE_DECIMALS)
        )?;
    }
    side.flush()?;
    Ok(GenSummary { bytes, ..summary })
}

/// `<out>.planted.csv`.
pub fn planted_path(out: &Path) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(".planted.csv");
    PathBuf::from(s)
}

type GzWriter<W> = Writer<GzEncoder<Counting<W>>>;

fn write_events<W: Write>(w: &mut GzWriter<W>, cfg: &GenConfig) -> io::Result<GenSummary> {
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
    };
    let mid: i64 = 13_187; // 6593.5 USD in ticks
    for i in 0..cfg.depth as i64 {
        let (b, a) = (amount(&mut g.rng, 20_000), amount(&mut g.rng, 20_000));
        g.book.bids.insert(mid - 1 - i, b);
        g.book.asks.insert(mid + i, a);
    }
    g.snapshot()?;
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

    /// A size jump above the threshold on one of the top levels: one order.
    fn plant(&mut self, ts: u64, bid: bool) -> io::Result<()> {
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

/// Reads a `.planted.csv` sidecar back.
pub fn read_planted(path: &Path) -> io::Result<Vec<Planted>> {
    let text = std::fs::read_to_string(path)?;
    let bad = |l: &str| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad planted line `{l}`"),
        )
    };
    text.lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            let [id, side, _, price] = f[..] else {
                return Err(bad(l));
            };
            Ok(Planted {
                trigger_id: id.parse().map_err(|_| bad(l))?,
                bid: side == "bid",
                price: proto::decimal::parse_fixed(price.as_bytes(), proto::PRICE_DECIMALS)
                    .map_err(|_| bad(l))?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MdReader, Record};

    #[test]
    fn deterministic_and_readable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = GenConfig {
            target_bytes: 30_000,
            depth: 50,
            trigger_every: 100,
            malformed: 3,
            ..GenConfig::default()
        };
        let a = generate(&dir.path().join("a.csv.gz"), &cfg).expect("gen");
        let b = generate(&dir.path().join("b.csv.gz"), &cfg).expect("gen");
        let fa = std::fs::read(dir.path().join("a.csv.gz")).expect("read");
        let fb = std::fs::read(dir.path().join("b.csv.gz")).expect("read");
        assert_eq!(fa, fb, "same seed, same bytes");
        assert_eq!(a.planted, b.planted);
        assert!(a.planted.len() >= 3, "{}", a.planted.len());
        assert_eq!(
            read_planted(&planted_path(&dir.path().join("a.csv.gz"))).expect("sidecar"),
            a.planted
        );

        let mut r = MdReader::open(&dir.path().join("a.csv.gz")).expect("open");
        let (mut lines, mut bad, mut snaps, mut shared, mut last) = (0u64, 0u64, 0u64, 0u64, 0u64);
        let mut snapshot_runs = 0;
        let mut prev_snap = false;
        while let Some(rec) = r.next_record().expect("read") {
            lines += 1;
            match rec {
                Record::Line {
                    is_snapshot,
                    local_timestamp,
                    ..
                } => {
                    if is_snapshot {
                        snaps += 1;
                        if !prev_snap {
                            snapshot_runs += 1;
                        }
                    } else if local_timestamp == last {
                        shared += 1;
                    }
                    assert!(local_timestamp >= last, "ids never go back");
                    last = local_timestamp;
                    prev_snap = is_snapshot;
                }
                Record::Malformed { .. } => bad += 1,
            }
        }
        assert_eq!(lines, a.lines);
        assert_eq!(bad, a.malformed);
        assert_eq!(snaps, a.snapshot_lines);
        assert_eq!(snapshot_runs, 2, "opening snapshot and one re-snapshot");
        assert!(shared > 0, "some rows share a local_timestamp");
    }

    #[test]
    fn unique_ids_option() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = GenConfig {
            target_bytes: 20_000,
            depth: 30,
            unique_ids: true,
            trigger_every: 100,
            ..GenConfig::default()
        };
        generate(&dir.path().join("u.csv.gz"), &cfg).expect("gen");
        let mut r = MdReader::open(&dir.path().join("u.csv.gz")).expect("open");
        let mut last = 0;
        while let Some(rec) = r.next_record().expect("read") {
            if let Record::Line {
                is_snapshot: false,
                local_timestamp,
                ..
            } = rec
            {
                assert!(local_timestamp > last, "unique ids strictly increase");
                last = local_timestamp;
            }
        }
    }
}
