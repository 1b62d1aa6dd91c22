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

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;
use flate2::Compression;
mod events;

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
    /// A timeline with microbursts, and triggers placed by their position in a burst
    /// (instead of `trigger_every`).
    pub microbursts: Option<Microbursts>,
}

/// A feed whose `local_timestamp`s carry microbursts: every `period_us`, `burst_us` of
/// lines at `peak_ratio` times the quiet rate (exponential gaps), heavy-tailed gaps
/// between bursts (Pareto, shape 1.5) with a mean of `quiet_gap_us`. One trigger per
/// period, its position cycling start, peak, after, quiet.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Microbursts {
    /// Period, us.
    pub period_us: u64,
    /// Burst length, us.
    pub burst_us: u64,
    /// Mean gap between lines outside bursts, us.
    pub quiet_gap_us: f64,
    /// Rate inside a burst over the rate outside.
    pub peak_ratio: f64,
}

impl Default for Microbursts {
    /// 1 ms bursts at 20x every 50 ms over a 10 k/s feed (200 k/s in a burst).
    fn default() -> Self {
        Self {
            period_us: 50_000,
            burst_us: 1_000,
            quiet_gap_us: 100.0,
            peak_ratio: 20.0,
        }
    }
}

/// Where a planted trigger sits in a microburst feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Position {
    /// The first line of a burst.
    Start,
    /// Half way into a burst.
    Peak,
    /// Just after a burst (queues draining).
    After,
    /// Half way between bursts.
    Quiet,
}

impl Position {
    /// Every position, in the order the generator cycles through them.
    pub const ALL: [Self; 4] = [Self::Start, Self::Peak, Self::After, Self::Quiet];

    /// `start`, `peak`, `after`, `quiet`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Peak => "peak",
            Self::After => "after",
            Self::Quiet => "quiet",
        }
    }
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
            microbursts: None,
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
    /// Its position in a microburst feed (None: an ordinary file).
    pub position: Option<Position>,
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
    let summary = events::write_events(&mut w, cfg)?;
    let file = w.out.finish()?;
    let bytes = file.count;
    file.inner
        .into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()?;
    std::fs::rename(&tmp, out)?;
    let mut side = BufWriter::new(File::create(planted_path(out))?);
    writeln!(side, "trigger_id,book_side,order_side,price,position")?;
    for p in &summary.planted {
        writeln!(
            side,
            "{},{},{},{},{}",
            p.trigger_id,
            if p.bid { "bid" } else { "ask" },
            if p.bid { "buy" } else { "sell" },
            proto::decimal::Fixed(p.price, proto::PRICE_DECIMALS),
            p.position.map_or("-", Position::as_str)
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
            // The position column is newer: files without it still read.
            let (id, side, price, pos) = match f[..] {
                [id, side, _, price] => (id, side, price, "-"),
                [id, side, _, price, pos] => (id, side, price, pos),
                _ => return Err(bad(l)),
            };
            let position = match pos {
                "-" => None,
                p => Some(
                    Position::ALL
                        .into_iter()
                        .find(|x| x.as_str() == p)
                        .ok_or_else(|| bad(l))?,
                ),
            };
            Ok(Planted {
                trigger_id: id.parse().map_err(|_| bad(l))?,
                bid: side == "bid",
                price: proto::decimal::parse_fixed(price.as_bytes(), proto::PRICE_DECIMALS)
                    .map_err(|_| bad(l))?,
                position,
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
    fn microbursts_shape_the_timeline_and_place_the_triggers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = Microbursts::default();
        let cfg = GenConfig {
            depth: 40,
            orders: Some(24),
            microbursts: Some(m),
            ..GenConfig::default()
        };
        let out = dir.path().join("mb.csv.gz");
        let s = generate(&out, &cfg).expect("gen");
        assert_eq!(s.planted.len(), 24);
        for pos in Position::ALL {
            let n = s.planted.iter().filter(|p| p.position == Some(pos)).count();
            assert!(n >= 4, "{pos:?}: {n} of 24");
        }
        assert_eq!(
            read_planted(&planted_path(&out)).expect("sidecar"),
            s.planted,
            "the position column reads back"
        );
        // Lines per 1 ms window: the busiest windows run at 10x the mean or more; the gaps
        // between updates are heavy-tailed.
        let mut r = MdReader::open(&out).expect("open");
        let (mut ids, mut t0) = (Vec::new(), 0);
        while let Some(rec) = r.next_record().expect("read") {
            match rec {
                Record::Line {
                    is_snapshot: false,
                    local_timestamp,
                    ..
                } => ids.push(local_timestamp),
                Record::Line {
                    local_timestamp, ..
                } => t0 = local_timestamp,
                Record::Malformed { .. } => {}
            }
        }
        let (first, last) = (ids[0], ids[ids.len() - 1]);
        let mut per_ms = vec![0u64; ((last - first) / 1000 + 1) as usize];
        for id in &ids {
            per_ms[((id - first) / 1000) as usize] += 1;
        }
        let mean = ids.len() as f64 / per_ms.len() as f64;
        let peak = per_ms.iter().copied().max().unwrap_or(0) as f64;
        assert!(peak >= 10.0 * mean, "peak {peak} lines/ms, mean {mean}");
        let mut gaps: Vec<u64> = ids.windows(2).map(|w| w[1] - w[0]).collect();
        gaps.sort_unstable();
        let median = gaps[gaps.len() / 2] as f64;
        let p999 = gaps[gaps.len() * 999 / 1000] as f64;
        assert!(
            p999 >= 10.0 * median,
            "heavy tail: p99.9 {p999} us, median {median} us"
        );
        // Each trigger is where its position says, in its period's time.
        for p in &s.planted {
            // Periods are timed from the snapshot's id.
            let phase = (p.trigger_id - t0) % m.period_us;
            let ok = match p.position {
                Some(Position::Start | Position::Peak) => phase < m.burst_us,
                Some(Position::After) => phase >= m.burst_us && phase < m.period_us / 2,
                Some(Position::Quiet) => phase >= m.period_us / 2,
                None => false,
            };
            assert!(ok, "{p:?} at phase {phase} us");
        }
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
