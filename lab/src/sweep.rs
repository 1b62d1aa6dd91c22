//! Sweeps: one knob at several values, a results folder per point, one table and one plot
//! of tick-to-trade against the value per path (`cargo xtask lab --sweep SPEC`).
//!
//! `SPEC` is `TARGET:FLAG=V1,V2,...` with `TARGET` one of `strategy` (a `strategy run` flag,
//! e.g. `strategy:--busy-poll=0,50,100`), `exchange` (an `exchange serve` flag), `veth` (a
//! `--veth-tune` variant, `veth:tune=nogro,napidefer`; `none` is the untuned point),
//! `guest` (with `--vm`: a `--guest-tune` variant, `guest:tune=none,coalesce0`), `pace`
//! (`pace:rate=2000,5000,10000`) or `gap` (`gap:order=1ms,10ms,100ms`: one gap file per
//! point). A flag value `-` leaves the flag out (its default). Every point is a whole lab run with its own oracle check; the summary reads
//! each point's `summary.csv`.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::LabConfig;

/// What is swept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A strategy flag.
    Strategy(String),
    /// An exchange flag.
    Exchange(String),
    /// The strategy veth's tuning variant.
    VethTune,
    /// The replay rate (`rate:V`).
    Pace,
    /// The guest's tuning variant (VM lab).
    GuestTune,
    /// The gap between orders.
    Gap,
}

/// A parsed `--sweep`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sweep {
    /// The knob.
    pub target: Target,
    /// Its values, in order.
    pub values: Vec<String>,
}

impl Sweep {
    /// Parses `TARGET:FLAG=V1,V2,...`.
    pub fn parse(spec: &str) -> Result<Self> {
        let (target, rest) = spec
            .split_once(':')
            .with_context(|| format!("--sweep {spec}: expected TARGET:FLAG=V1,V2,..."))?;
        let (flag, values) = rest.split_once('=').with_context(|| {
            format!("--sweep {spec}: expected FLAG=V1,V2,... after `{target}:`")
        })?;
        let values: Vec<String> = values
            .split(',')
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
            .collect();
        if values.is_empty() {
            bail!("--sweep {spec}: no values");
        }
        let flag = flag.trim();
        let target = match target {
            "strategy" | "exchange" if !flag.starts_with("--") => {
                bail!("--sweep {spec}: the flag must start with --")
            }
            "strategy" => Target::Strategy(flag.to_owned()),
            "exchange" => Target::Exchange(flag.to_owned()),
            "veth" => Target::VethTune,
            "pace" => Target::Pace,
            "guest" => Target::GuestTune,
            "gap" => {
                for v in &values {
                    parse_duration(v).with_context(|| format!("--sweep {spec}: `{v}`"))?;
                }
                Target::Gap
            }
            other => bail!(
                "--sweep {spec}: unknown target `{other}` (strategy, exchange, veth, guest, pace, gap)"
            ),
        };
        Ok(Self { target, values })
    }

    /// The knob's name for tables and the plot.
    pub fn name(&self) -> String {
        match &self.target {
            Target::Strategy(f) => format!("strategy {f}"),
            Target::Exchange(f) => format!("exchange {f}"),
            Target::VethTune => "veth tuning".to_owned(),
            Target::Pace => "replay rate (packets/s)".to_owned(),
            Target::GuestTune => "guest tuning".to_owned(),
            Target::Gap => "gap between orders".to_owned(),
        }
    }

    /// The lab settings of one point.
    pub fn point(&self, base: &LabConfig, value: &str, dir: PathBuf) -> LabConfig {
        let mut c = base.clone();
        c.results_dir = Some(dir);
        let flag = |f: &str| {
            if value == "-" {
                String::new()
            } else {
                format!(" {f} {value}")
            }
        };
        match &self.target {
            Target::Strategy(f) => c.strategy_flags.push_str(&flag(f)),
            Target::Exchange(f) => c.exchange_flags.push_str(&flag(f)),
            Target::VethTune => {
                c.veth_tunes = if value == "none" {
                    Vec::new()
                } else {
                    vec![value.to_owned()]
                };
            }
            Target::Pace => c.pace = format!("rate:{value}"),
            // The VM lab's tuning is in its own settings: see [`Sweep::guest_tunes`].
            Target::GuestTune => {}
            Target::Gap => {
                c.order_gaps = parse_duration(value).map(|g| vec![g]).unwrap_or_default();
            }
        }
        c
    }

    /// The guest tuning variants of one point (VM lab).
    pub fn guest_tunes(&self, value: &str) -> Vec<String> {
        if self.target == Target::GuestTune && value != "none" {
            vec![value.to_owned()]
        } else {
            Vec::new()
        }
    }

    /// Does a point's summary hold its rows under `path/value` (tuning variants)?
    fn tuned(&self, value: &str) -> bool {
        matches!(self.target, Target::VethTune | Target::GuestTune) && value != "none"
    }
}

/// A gap with its unit (`1ms`, `100us`, `1s`), 1 us to 60 s.
pub fn parse_duration(s: &str) -> Result<std::time::Duration> {
    let d = humantime::parse_duration(s).with_context(|| format!("`{s}`: not a duration"))?;
    if !(std::time::Duration::from_micros(1)..=std::time::Duration::from_secs(60)).contains(&d) {
        bail!("`{s}`: out of range (1us to 60s)");
    }
    Ok(d)
}

/// One point's kernel-stamp p50 and p99 per path (from its `summary.csv`); with a veth
/// tuning point only the tuned rows (`path/variant`), named by their path.
fn point_rows(dir: &Path, tuned: Option<&str>) -> Result<Vec<(String, f64, f64)>> {
    let mut out = Vec::new();
    for r in crate::summary::read(&dir.join("summary.csv"))? {
        if r.clock != crate::summary::Clock::Kernel {
            continue;
        }
        let name = match tuned {
            Some(t) => match r.path.strip_suffix(&format!("/{t}")) {
                Some(n) => n.to_owned(),
                None => continue,
            },
            None => r.path.clone(),
        };
        // Every figure with its gap between orders (requested, or the measured median).
        let name = format!("{name} @ {} ms", r.gap_ms);
        out.push((
            name,
            r.p50_us.unwrap_or(f64::NAN),
            r.p99_us.unwrap_or(f64::NAN),
        ));
    }
    Ok(out)
}

/// The sweep's table (printed, `sweep.csv`) and plot (`sweep.svg`: p50 and p99 against the
/// value, per path) over its points' folders.
pub fn summarize(sweep: &Sweep, dir: &Path, points: &[(String, PathBuf)]) -> Result<()> {
    let mut rows: Vec<(String, String, f64, f64)> = Vec::new();
    for (value, pdir) in points {
        let tuned = sweep.tuned(value).then_some(value.as_str());
        for (path, p50, p99) in point_rows(pdir, tuned)? {
            rows.push((path, value.clone(), p50, p99));
        }
    }
    let mut paths: Vec<&str> = Vec::new();
    for r in &rows {
        if !paths.contains(&r.0.as_str()) {
            paths.push(&r.0);
        }
    }
    println!();
    println!(
        "sweep of {} (kernel-stamp tick-to-trade, us, p50 / p99; each point a whole run with its own oracle check):",
        sweep.name()
    );
    let mut line = format!("{:<26}", "path @ gap");
    for (v, _) in points {
        let _ = write!(line, "{:>16}", v);
    }
    println!("{line}");
    let mut csv = String::from("path,value,p50_us,p99_us\n");
    for p in &paths {
        let mut line = format!("{p:<26}");
        for (v, _) in points {
            match rows.iter().find(|r| r.0 == *p && r.1 == *v) {
                Some(r) => {
                    let _ = write!(line, "{:>16}", format!("{:.1} / {:.1}", r.2, r.3));
                    let _ = writeln!(csv, "{},{},{:.2},{:.2}", r.0, r.1, r.2, r.3);
                }
                None => {
                    let _ = write!(line, "{:>16}", "-");
                }
            }
        }
        println!("{line}");
    }
    fs::write(dir.join("sweep.csv"), csv)?;
    // Numeric values on a linear axis; otherwise the points in order.
    let numeric: Option<Vec<f64>> = points.iter().map(|(v, _)| v.parse::<f64>().ok()).collect();
    let x_of = |v: &str| -> f64 {
        match &numeric {
            Some(_) => v.parse().unwrap_or(f64::NAN),
            None => points.iter().position(|(p, _)| p == v).unwrap_or(0) as f64,
        }
    };
    let mut lines: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for p in &paths {
        for (label, pick) in [("p50", 2usize), ("p99", 3)] {
            let pts = rows
                .iter()
                .filter(|r| r.0 == *p)
                .map(|r| (x_of(&r.1), if pick == 2 { r.2 } else { r.3 }))
                .collect();
            lines.push((format!("{p} {label}"), pts));
        }
    }
    let ticks: Vec<String> = points.iter().map(|(v, _)| v.clone()).collect();
    crate::plot::against_value(
        &dir.join("sweep.svg"),
        &format!("tick-to-trade (kernel stamps) against {}", sweep.name()),
        &sweep.name(),
        numeric.is_none().then_some(&ticks[..]),
        &lines,
    )?;
    println!(
        "sweep: {} (table), {} (plot)",
        dir.join("sweep.csv").display(),
        dir.join("sweep.svg").display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_applies_each_target() {
        let s = Sweep::parse("strategy:--busy-poll=0,50,100").expect("parses");
        assert_eq!(s.target, Target::Strategy("--busy-poll".into()));
        assert_eq!(s.values, ["0", "50", "100"]);
        let base = LabConfig::default();
        let p = s.point(&base, "50", PathBuf::from("/x"));
        assert!(p.strategy_flags.ends_with(" --busy-poll 50"));
        assert_eq!(s.point(&base, "-", PathBuf::new()).strategy_flags, "");
        let e = Sweep::parse("exchange:--warm-rx-every=-,100us").expect("parses");
        assert!(e
            .point(&base, "100us", PathBuf::new())
            .exchange_flags
            .ends_with("--warm-rx-every 100us"));
        assert_eq!(e.point(&base, "-", PathBuf::new()).exchange_flags, "");
        let v = Sweep::parse("veth:tune=none,nogro").expect("parses");
        assert!(v.point(&base, "none", PathBuf::new()).veth_tunes.is_empty());
        assert_eq!(
            v.point(&base, "nogro", PathBuf::new()).veth_tunes,
            ["nogro"]
        );
        let r = Sweep::parse("pace:rate=2000,5000").expect("parses");
        assert_eq!(r.point(&base, "2000", PathBuf::new()).pace, "rate:2000");
        let g = Sweep::parse("gap:order=1ms,100ms").expect("parses");
        assert_eq!(
            g.point(&base, "100ms", PathBuf::new()).order_gaps,
            [std::time::Duration::from_millis(100)]
        );
        assert!(Sweep::parse("gap:order=1parsec").is_err());
        let t = Sweep::parse("guest:tune=none,coalesce0").expect("parses");
        assert!(t.guest_tunes("none").is_empty());
        assert_eq!(t.guest_tunes("coalesce0"), ["coalesce0"]);
        for bad in [
            "busy-poll=1",
            "strategy:busy-poll=1",
            "strategy:--x=",
            "nope:--x=1",
        ] {
            assert!(Sweep::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn summarizes_points_from_their_summaries() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut points = Vec::new();
        for (v, p50) in [("0", 10.0), ("50", 7.5)] {
            let d = dir.path().join(format!("p{v}"));
            fs::create_dir_all(&d).expect("mkdir");
            let row = |clock, p50: f64, p99: f64| {
                crate::summary::SummaryRow::sample("kernel", clock, Some(p50), Some(p99))
            };
            crate::summary::write(
                &d.join("summary.csv"),
                &[
                    row(crate::summary::Clock::User, 99.0, 99.0),
                    row(crate::summary::Clock::Kernel, p50, p50 * 2.0),
                ],
            )
            .expect("write");
            points.push((v.to_owned(), d));
        }
        let s = Sweep::parse("strategy:--busy-poll=0,50").expect("parses");
        summarize(&s, dir.path(), &points).expect("summary");
        let csv = fs::read_to_string(dir.path().join("sweep.csv")).expect("csv");
        assert_eq!(
            csv,
            "path,value,p50_us,p99_us\nkernel @ 1 ms,0,10.00,20.00\nkernel @ 1 ms,50,7.50,15.00\n"
        );
        let svg = fs::read_to_string(dir.path().join("sweep.svg")).expect("svg");
        assert!(svg.contains("kernel @ 1 ms p50") && svg.contains("busy-poll"));
    }
}
