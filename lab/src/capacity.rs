//! `lab --capacity`: each path's highest feed rate with nothing lost, found by a search.
//!
//! A probe is one lab run of one path on a load file (triggers 1 ms apart, the background
//! lines between them at the probed rate, `--orders-per-gap` triggers: 100 ms of feed by
//! default). It is *clean* when the path's own counters show no drop, sent = handled +
//! dropped holds and the orders equal the oracle's. It is *publisher-bound* when the
//! exchange reached less than 90 % of the offered rate: the path was not offered the rate,
//! so the search stops there and reports the rate reached as a lower bound; between a
//! clean and a lossy probe such a probe only ends the bisection (a loss above is known).
//!
//! The search ([`search`]): from [`START`] the rate doubles while probes are clean, up to
//! [`MAX_RATE`] (or, when the first probe already loses, halves while probes lose, down to
//! [`MIN_RATE`]); between the last clean rate and the first lossy one, [`BISECT`] bisection
//! steps. One probe per rate (no repetitions: a capacity found at the edge of noise shows
//! as a neighbour's loss in the probe log, which the table prints in full).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use proto::order::OrderRepr;
use strategy::engine::EngineConfig;

use crate::load::rate_label;
use crate::netns::{one_run, RunCtx};
use crate::stats::pct;
use crate::{data, Env, LabConfig, PathSpec};

/// The first rate probed, packets/s.
pub const START: u32 = 50_000;
/// The highest rate probed.
pub const MAX_RATE: u32 = 3_200_000;
/// The lowest rate probed (a path that loses here has no capacity the search can name).
pub const MIN_RATE: u32 = START / 16;
/// Bisection steps between the last clean rate and the first lossy one.
pub const BISECT: u32 = 3;
/// Below this share of the offered rate the publisher, not the path, was the limit.
pub const REACHED_SHARE: f64 = 0.9;

/// What one probe showed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Probe {
    /// The rate offered (packets/s).
    pub offered: u32,
    /// The rate the exchange reached.
    pub reached: f64,
    /// Market-data packets lost (the path's count).
    pub lost: u64,
    /// sent = handled + dropped held and the orders equal the oracle's (or, with drops,
    /// differ only by what the drops explain).
    pub accounted: bool,
    /// The orders equal the oracle's.
    pub equal: bool,
    /// Kernel-stamp tick-to-trade p50 and p99, us.
    pub t2t: (f64, f64),
    /// Packets the strategy handled per wake-up, mean.
    pub batch: Option<f64>,
}

impl Probe {
    /// Nothing lost, everything accounted, the oracle's orders.
    pub fn clean(&self) -> bool {
        self.lost == 0 && self.accounted && self.equal
    }

    /// The exchange did not reach the rate.
    pub fn publisher_bound(&self) -> bool {
        self.reached < REACHED_SHARE * f64::from(self.offered)
    }
}

/// The outcome of one path's search.
#[derive(Debug, Clone, PartialEq)]
pub struct Capacity {
    /// The highest clean probe (None: the first probe already lost packets).
    pub clean: Option<Probe>,
    /// The lowest lossy probe above it (None: none lost up to the publisher's or the
    /// search's limit).
    pub lossy: Option<Probe>,
    /// The search stopped because the publisher could not offer more.
    pub publisher_bound: bool,
    /// Every probe, in the order made.
    pub probes: Vec<Probe>,
}

/// Doubling from [`START`], then [`BISECT`] steps; `probe(rate)` runs one.
pub fn search(mut probe: impl FnMut(u32) -> Result<Probe>) -> Result<Capacity> {
    let mut probes = Vec::new();
    let (mut clean, mut lossy): (Option<Probe>, Option<Probe>) = (None, None);
    let mut publisher_bound = false;
    let mut rate = START;
    loop {
        let p = probe(rate)?;
        probes.push(p);
        if !p.clean() {
            lossy = Some(p);
            if clean.is_none() && rate > MIN_RATE {
                // Lossy from the start: the capacity is below it; halve until clean.
                rate = (rate / 2).max(MIN_RATE);
                continue;
            }
            break;
        }
        clean = Some(p);
        if p.publisher_bound() {
            publisher_bound = true;
            break;
        }
        if rate >= MAX_RATE {
            break;
        }
        rate = rate.saturating_mul(2).min(MAX_RATE);
    }
    for _ in 0..BISECT {
        let (Some(c), Some(l)) = (clean, lossy) else {
            break;
        };
        // Round to 10 k/s: finer than one probe's noise would not mean anything.
        let mid = (c.offered / 2 + l.offered / 2) / 10_000 * 10_000;
        if mid <= c.offered || mid >= l.offered {
            break;
        }
        let p = probe(mid)?;
        probes.push(p);
        if p.publisher_bound() && p.clean() {
            // The rate between was not offered: nothing learnt about it. Seen on a veth,
            // where a path behind its feed pushes back on the publisher (xdp at 70 k/s
            // offered, 40.5 k/s reached, no loss, 58 packets per wake-up): the bracket
            // found so far stands, with a loss above it, so the path is not called
            // publisher-bound; the probe stays in the log.
            break;
        }
        if p.clean() {
            clean = Some(p);
        } else {
            lossy = Some(p);
        }
    }
    Ok(Capacity {
        clean,
        lossy,
        publisher_bound,
        probes,
    })
}

/// The load files of a search, one per probed rate (triggers 1 ms apart, the background at
/// the rate), with their oracle, made once per rate and shared by every path.
#[derive(Default)]
pub struct ProbeFiles(BTreeMap<u32, (PathBuf, Vec<OrderRepr>)>);

impl ProbeFiles {
    /// The file and oracle for `rate` (made on first use).
    pub fn get(
        &mut self,
        env: &Env,
        orders_per_gap: u64,
        rate: u32,
    ) -> Result<&(PathBuf, Vec<OrderRepr>)> {
        if let std::collections::btree_map::Entry::Vacant(slot) = self.0.entry(rate) {
            let lines = mdfile::mdgen::lines_for_gap(GAP, rate);
            let orders = crate::load::orders_that_fit(orders_per_gap, lines);
            let md = data::gap_md_file(env, GAP, rate, orders)?;
            let oracle = strategy::replay::replay(&md, EngineConfig::default())
                .context("replaying the file (oracle)")?
                .orders;
            slot.insert((md, oracle));
        }
        Ok(&self.0[&rate])
    }
}

/// The gap between triggers in a probe.
pub const GAP: Duration = Duration::from_millis(1);

impl Probe {
    /// What the run `r` at `rate` showed; printed as a line of the probe log.
    pub fn of(r: &crate::RunResult, rate: u32) -> Self {
        let mut k = r.t2t_kernel.clone();
        k.sort_unstable();
        let acc = r.accounting;
        let p = Probe {
            offered: rate,
            reached: r.exchange.counters.packets_sent as f64 / r.exchange.publish_s.max(1e-9),
            lost: acc.map_or(u64::MAX, |a| a.lost()),
            accounted: acc.is_some_and(|a| a.balanced) && r.explained != crate::load::Explained::No,
            equal: r.explained == crate::load::Explained::Equal,
            t2t: (pct(&k, 0.5), pct(&k, 0.99)),
            batch: r.strategy.as_ref().and_then(|s| s.path.rx_batches.mean()),
        };
        println!(
            "  {:>6}/s offered, {:>8.0}/s reached: lost {}, {}, orders {}; kernel-stamp t2t p50 {:.1} p99 {:.1} us; {:.2} packets per wake-up",
            rate_label(rate),
            p.reached,
            p.lost,
            if p.accounted { "accounted" } else { "NOT ACCOUNTED" },
            if p.equal { "= oracle" } else { "differ" },
            p.t2t.0,
            p.t2t.1,
            p.batch.unwrap_or(f64::NAN)
        );
        p
    }
}

/// Runs the search for every path of `a` and prints and writes (`capacity.csv`,
/// `capacity.txt`) the table; returns the results folder and the table.
pub fn run(env: &Env, a: &LabConfig) -> Result<(PathBuf, Vec<(String, Capacity)>)> {
    if !netlab::is_root() {
        bail!("the lab creates network namespaces: run it as root");
    }
    let dir = crate::results_dir(env, a, "capacity-")?;
    let stop = crate::stop_flag()?;
    let _huge = if a.paths.iter().any(PathSpec::uses_hugepages) {
        Some(crate::hugepages::HugePages::reserve(16)?)
    } else {
        None
    };
    let pin = std::thread::available_parallelism().map_or(1, usize::from) >= 2;
    let mut files = ProbeFiles::default();
    let mut table = Vec::new();
    for path in &a.paths {
        println!("capacity of {path}:");
        let mut run_no = 0;
        let cap = search(|rate| {
            if stop.load(std::sync::atomic::Ordering::Relaxed) {
                bail!("interrupted");
            }
            let (md, oracle) = files.get(env, a.orders_per_gap, rate)?;
            let oracle = &crate::oracle::expected(path, oracle);
            let stamp_ids = data::write_oracle_ids(&dir, md, oracle)?;
            run_no += 1;
            let pace = format!("rate:{rate}");
            let ctx = RunCtx {
                env,
                a,
                md_file: md,
                stamp_ids: Some(&stamp_ids),
                dir: &dir,
                pin,
                oracle,
                stop,
                gap: Some(GAP),
                load: Some(rate),
                pace: &pace,
                heartbeats: path.sends_heartbeats(),
                xdp_pass: path.sends_with_xdp_tx(),
            };
            let r = one_run(&ctx, (path, None), run_no)
                .with_context(|| format!("path {path} at {}/s", rate_label(rate)))?;
            Ok(Probe::of(&r, rate))
        })?;
        table.push((path.to_string(), cap));
    }
    finish(&dir, &table, a.orders_per_gap)?;
    Ok((dir, table))
}

/// Prints and writes the table (`capacity.txt`, `capacity.csv` with every probe); an error
/// when a probe's packets were not accounted for.
pub fn finish(dir: &std::path::Path, table: &[(String, Capacity)], orders: u64) -> Result<()> {
    let text = render(table, orders);
    print!("{text}");
    std::fs::write(dir.join("capacity.txt"), &text)?;
    let mut csv = String::from(
        "path,offered,reached,lost,accounted,equal,t2t_p50_us,t2t_p99_us,per_wakeup\n",
    );
    for (path, cap) in table {
        for p in &cap.probes {
            let _ = writeln!(
                csv,
                "{path},{},{:.0},{},{},{},{:.2},{:.2},{}",
                p.offered,
                p.reached,
                p.lost,
                p.accounted,
                p.equal,
                p.t2t.0,
                p.t2t.1,
                p.batch.map_or("-".to_owned(), |b| format!("{b:.2}"))
            );
        }
    }
    std::fs::write(dir.join("capacity.csv"), csv)?;
    if let Some((path, _)) = table
        .iter()
        .find(|(_, c)| c.probes.iter().any(|p| !p.accounted))
    {
        bail!("{path}: a probe's packets were not accounted for (see the probe log above)");
    }
    println!("results: {}", dir.display());
    Ok(())
}

/// The table: per path, its capacity, the first loss above it, how it was found.
pub fn render(table: &[(String, Capacity)], orders: u64) -> String {
    let mut s = format!(
        "\ncapacity: the highest feed rate with nothing lost (the path's own drop counters), \
         every packet accounted for and the orders equal to the oracle's; triggers 1 ms apart, \
         {orders} per probe; found by doubling from {}/s (to {}/s at most; halving to {}/s \
         at least when the first probe loses), then {BISECT} bisection steps, one probe per \
         rate\n",
        rate_label(START),
        rate_label(MAX_RATE),
        rate_label(MIN_RATE)
    );
    let _ = writeln!(
        s,
        "{:<30}{:>12}{:>12}{:>16}{:>10}{:>8}  t2t p50/p99 at capacity (us)",
        "path", "capacity", "reached", "first loss at", "lost", "probes"
    );
    for (path, c) in table {
        let cap = c.clean.map_or(format!("< {}", rate_label(MIN_RATE)), |p| {
            if c.publisher_bound {
                format!(">= {:.0}k", p.reached / 1e3)
            } else {
                rate_label(p.offered)
            }
        });
        let _ = writeln!(
            s,
            "{:<30}{:>12}{:>12}{:>16}{:>10}{:>8}  {}",
            path,
            cap,
            c.clean
                .map_or("-".to_owned(), |p| format!("{:.0}", p.reached)),
            c.lossy
                .map_or("-".to_owned(), |p| format!("{}/s", rate_label(p.offered))),
            c.lossy.map_or("-".to_owned(), |p| p.lost.to_string()),
            c.probes.len(),
            c.clean.map_or("-".to_owned(), |p| format!(
                "{:.1} / {:.1}",
                p.t2t.0, p.t2t.1
            )),
        );
    }
    if table.iter().any(|(_, c)| c.publisher_bound) {
        s.push_str(
            ">= : the exchange could not offer more than it reached (publisher-bound): the \
             path's capacity is at least that\n",
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A path that loses packets above `cap` behind a publisher that reaches `ceiling`.
    fn fake(cap: u32, ceiling: f64) -> impl FnMut(u32) -> Result<Probe> {
        move |rate| {
            let reached = f64::from(rate).min(ceiling);
            Ok(Probe {
                offered: rate,
                reached,
                lost: if reached > f64::from(cap) { 7 } else { 0 },
                accounted: true,
                equal: reached <= f64::from(cap),
                t2t: (1.0, 2.0),
                batch: Some(1.0),
            })
        }
    }

    #[test]
    fn doubling_then_bisection_brackets_the_capacity() {
        let c = search(fake(330_000, 5e6)).expect("search");
        let offered: Vec<u32> = c.probes.iter().map(|p| p.offered).collect();
        // 50k 100k 200k 400k (loss), then 300k (clean) 350k (loss) 320k (clean).
        assert_eq!(
            offered,
            [50_000, 100_000, 200_000, 400_000, 300_000, 350_000, 320_000]
        );
        assert_eq!(c.clean.map(|p| p.offered), Some(320_000));
        assert_eq!(c.lossy.map(|p| p.offered), Some(350_000));
        assert!(!c.publisher_bound);
    }

    #[test]
    fn a_publisher_that_cannot_offer_the_rate_bounds_the_search() {
        let c = search(fake(10_000_000, 450_000.0)).expect("search");
        assert!(c.publisher_bound);
        assert_eq!(c.lossy, None);
        let last = c.clean.expect("clean");
        assert_eq!(last.offered, 800_000, "reached 450k of 800k: below 90 %");
        let text = render(&[("kernel".into(), c)], 100);
        assert!(text.contains(">= 450k"), "{text}");
    }

    #[test]
    fn a_loss_at_the_first_rate_halves_down_to_a_clean_one_then_bisects() {
        let c = search(fake(20_000, 5e6)).expect("search");
        let offered: Vec<u32> = c.probes.iter().map(|p| p.offered).collect();
        // 50k 25k (loss), 12.5k (clean), then 18.75k rounded to 10k: no step left between.
        assert_eq!(offered[..3], [50_000, 25_000, 12_500]);
        assert_eq!(c.clean.map(|p| p.offered), Some(12_500));
        assert_eq!(c.lossy.map(|p| p.offered), Some(25_000));
    }

    #[test]
    fn a_path_that_loses_at_the_lowest_rate_has_no_capacity() {
        let c = search(fake(1_000, 5e6)).expect("search");
        let offered: Vec<u32> = c.probes.iter().map(|p| p.offered).collect();
        assert_eq!(offered, [50_000, 25_000, 12_500, 6_250, MIN_RATE]);
        assert_eq!(c.clean, None);
        assert!(
            render(&[("xdp".into(), c)], 100).contains("< 3125"),
            "rendered"
        );
    }

    #[test]
    fn a_rate_between_that_was_not_offered_leaves_the_bracket_as_found() {
        // Clean at 50k, lossy at 100k; at 70k the publisher reached 40.5k (the path pushed
        // back), nothing lost.
        let c = search(|rate| {
            let reached = if rate == 70_000 {
                40_500.0
            } else {
                f64::from(rate)
            };
            Ok(Probe {
                offered: rate,
                reached,
                lost: if rate >= 100_000 { 7 } else { 0 },
                accounted: true,
                equal: rate < 100_000,
                t2t: (1.0, 2.0),
                batch: Some(1.0),
            })
        })
        .expect("search");
        let offered: Vec<u32> = c.probes.iter().map(|p| p.offered).collect();
        assert_eq!(offered, [50_000, 100_000, 70_000]);
        assert_eq!(c.clean.map(|p| p.offered), Some(50_000));
        assert_eq!(c.lossy.map(|p| p.offered), Some(100_000));
        assert!(!c.publisher_bound);
        let text = render(&[("xdp".into(), c)], 100);
        assert!(!text.contains(">="), "{text}");
    }

    #[test]
    fn the_search_stops_at_its_highest_rate() {
        let c = search(fake(u32::MAX, 1e9)).expect("search");
        assert_eq!(c.clean.map(|p| p.offered), Some(MAX_RATE));
        assert_eq!(c.probes.len(), 7, "50k .. 3.2M by doubling");
    }
}
