//! `cargo xtask lab compare A B`: is B faster or slower than A, by how much, how sure?
//!
//! Per path (and gap) found in both results folders: p50, p90, p99 and p99.9 of each side's
//! exchange-side tick-to-trade (the chosen clock, warm-up orders left out as in the report),
//! the difference of the medians (B - A) with a 95 % confidence interval from a percentile
//! bootstrap (2,000 resamples of each side, a fixed seed so the same folders always give the
//! same interval), and a verdict: slower, faster, or no detectable difference (the interval
//! holds 0). A regression is "slower" with the whole interval above the threshold; the
//! command then fails, so it can guard a change.
//!
//! With `--paths P,Q` it compares two paths instead of two folders: P's orders in A with
//! Q's in B, gap by gap (A and B may be the same folder: two paths of one run, the
//! comparison the lab's ratios make, with an interval).
//!
//! Before the table it says what made each folder ([`crate::manifest`]): the same machine
//! and code, or every difference (CPU, hypervisor, kernel, clock source, isolation, the
//! code's commit), since a difference across machines mixes the change with the machine's.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use anyhow::{bail, Context, Result};
use mdfile::orders::read_rows;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::key::RunKey;
use crate::stats::pct;
use crate::WARMUP_ORDERS;

/// Which tick-to-trade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    /// The exchange's CLOCK_MONOTONIC.
    User,
    /// SO_TIMESTAMPING software stamps.
    Kernel,
}

/// The verdict on one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// B's median is higher, the whole interval above 0.
    Slower,
    /// B's median is lower, the whole interval below 0.
    Faster,
    /// The interval holds 0.
    NoDifference,
}

/// One path compared.
#[derive(Debug, Clone)]
pub struct Comparison {
    /// `[gap-]path`.
    pub key: String,
    /// Samples of A and B.
    pub n: (usize, usize),
    /// p50, p90, p99, p99.9 of A and of B, us.
    pub pcts: ([f64; 4], [f64; 4]),
    /// Median of B minus median of A, us.
    pub diff_us: f64,
    /// Its 95 % confidence interval, us.
    pub ci_us: (f64, f64),
    /// Faster, slower, or neither.
    pub verdict: Verdict,
}

/// The samples (ns) of every `[gap-]path` in a results folder, runs pooled.
pub fn load(dir: &Path, clock: Clock) -> Result<BTreeMap<String, Vec<u64>>> {
    let mut out: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let entries = fs::read_dir(dir).with_context(|| dir.display().to_string())?;
    for e in entries.filter_map(Result::ok) {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(tag) = name.strip_suffix(".exchange.csv") else {
            continue;
        };
        // A run's tag: the key is its series (the run number goes).
        let Ok(run) = RunKey::from_tag(tag) else {
            continue;
        };
        let key = run.series();
        let (_, rows) = read_rows(&e.path())?;
        let samples = rows.iter().skip(WARMUP_ORDERS).filter_map(|r| {
            let t = r.timing?;
            match clock {
                Clock::User => Some(t.t2t_first_ns()),
                Clock::Kernel => t.kernel_t2t_ns(),
            }
        });
        out.entry(key).or_default().extend(samples);
    }
    for v in out.values_mut() {
        v.sort_unstable();
    }
    Ok(out)
}

/// `path`'s samples of `m` (keys are run series, [`RunKey::series`]; `path` is a run's
/// label, `xdp-tx` or `xdp/nogro`), each under the key `[gap-]label` (so two paths compare
/// gap by gap under one label).
pub fn select(
    m: &BTreeMap<String, Vec<u64>>,
    path: &str,
    label: &str,
) -> BTreeMap<String, Vec<u64>> {
    m.iter()
        .filter_map(|(k, v)| {
            let key = RunKey::from_series(k)?;
            (key.label() == path).then(|| {
                let out = key.gap.map_or_else(
                    || label.to_owned(),
                    |g| format!("{}-{label}", crate::data::gap_label(g)),
                );
                (out, v.clone())
            })
        })
        .collect()
}

fn median_us(v: &[u64]) -> f64 {
    pct(v, 0.5)
}

/// The 95 % percentile-bootstrap interval of median(B) - median(A), us.
pub fn bootstrap_ci(a: &[u64], b: &[u64], iters: usize, seed: u64) -> (f64, f64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut diffs = Vec::with_capacity(iters);
    let (mut ra, mut rb) = (vec![0u64; a.len()], vec![0u64; b.len()]);
    for _ in 0..iters {
        for x in ra.iter_mut() {
            *x = a[rng.gen_range(0..a.len())];
        }
        for x in rb.iter_mut() {
            *x = b[rng.gen_range(0..b.len())];
        }
        ra.sort_unstable();
        rb.sort_unstable();
        diffs.push(median_us(&rb) - median_us(&ra));
    }
    diffs.sort_by(f64::total_cmp);
    let at = |q: f64| diffs[((diffs.len() - 1) as f64 * q).round() as usize];
    (at(0.025), at(0.975))
}

/// Compares the samples of every key found in both.
pub fn compare(a: &BTreeMap<String, Vec<u64>>, b: &BTreeMap<String, Vec<u64>>) -> Vec<Comparison> {
    let q = |v: &[u64]| [0.5, 0.9, 0.99, 0.999].map(|p| pct(v, p));
    a.iter()
        .filter_map(|(k, va)| b.get(k).map(|vb| (k, va, vb)))
        .filter(|(_, va, vb)| va.len() >= 2 && vb.len() >= 2)
        .map(|(k, va, vb)| {
            let ci = bootstrap_ci(va, vb, 2000, 0x5eed);
            let verdict = if ci.0 > 0.0 {
                Verdict::Slower
            } else if ci.1 < 0.0 {
                Verdict::Faster
            } else {
                Verdict::NoDifference
            };
            Comparison {
                key: k.clone(),
                n: (va.len(), vb.len()),
                pcts: (q(va), q(vb)),
                diff_us: median_us(vb) - median_us(va),
                ci_us: ci,
                verdict,
            }
        })
        .collect()
}

/// `lab compare A B`: prints the table; fails on a regression beyond `threshold_us`. With
/// `paths` (P, Q): P's samples in A against Q's in B.
pub fn run(
    a: &Path,
    b: &Path,
    clock: Clock,
    threshold_us: f64,
    paths: Option<(&str, &str)>,
) -> Result<()> {
    let (mut sa, mut sb) = (load(a, clock)?, load(b, clock)?);
    if let Some((pa, pb)) = paths {
        let label = format!("{pb} vs {pa}");
        sa = select(&sa, pa, &label);
        sb = select(&sb, pb, &label);
    }
    let rows = compare(&sa, &sb);
    if rows.is_empty() {
        bail!(
            "no path with orders in both {} and {}",
            a.display(),
            b.display()
        );
    }
    println!(
        "B = {} against A = {} ({} clock; us; difference of medians B - A with its 95 % \
         percentile-bootstrap interval, 2,000 resamples)",
        b.display(),
        a.display(),
        match clock {
            Clock::User => "user",
            Clock::Kernel => "kernel-stamp",
        }
    );
    // What made each folder: a comparison across machines or code is said to be one.
    let manifest = |d: &Path| crate::manifest::Manifest::read(d).map_err(|e| format!("{e:#}"));
    let provenance = crate::manifest::comparison_notes(&manifest(a), &manifest(b));
    let notes = &provenance.notes;
    for n in notes {
        println!("{n}");
    }
    let w = rows
        .iter()
        .map(|r| r.key.len() + 2)
        .max()
        .unwrap_or(0)
        .max(22);
    println!(
        "{:<w$}{:>6}{:>6}  {:>24}  {:>24}  {:>22}  verdict",
        "path", "n A", "n B", "A p50/p90/p99/p99.9", "B p50/p90/p99/p99.9", "B - A [95 % CI]"
    );
    let mut regressions = Vec::new();
    for r in &rows {
        let fmt = |p: [f64; 4]| format!("{:.1}/{:.1}/{:.1}/{:.1}", p[0], p[1], p[2], p[3]);
        let verdict = match r.verdict {
            Verdict::Slower => "SLOWER",
            Verdict::Faster => "faster",
            Verdict::NoDifference => "no detectable difference",
        };
        println!(
            "{:<w$}{:>6}{:>6}  {:>24}  {:>24}  {:>22}  {verdict}",
            r.key,
            r.n.0,
            r.n.1,
            fmt(r.pcts.0),
            fmt(r.pcts.1),
            format!("{:+.1} [{:+.1}, {:+.1}]", r.diff_us, r.ci_us.0, r.ci_us.1)
        );
        if r.verdict == Verdict::Slower && r.ci_us.0 > threshold_us {
            regressions.push(r.key.clone());
        }
    }
    let html = write_compare(
        b,
        (a, b),
        match clock {
            Clock::User => "user",
            Clock::Kernel => "kernel-stamp",
        },
        &rows,
        notes,
    )?;
    println!("comparison report: {}", html.display());
    if !regressions.is_empty() {
        bail!(
            "slower beyond the {threshold_us} us threshold in: {}{}",
            regressions.join(", "),
            match provenance.same_machine {
                Some(false) =>
                    " (A and B ran on different machines or set-ups, listed above: \
                     the difference is partly the machine's)",
                None => " (the machine of A or B is unknown: no manifest)",
                Some(true) => "",
            }
        );
    }
    Ok(())
}

/// Where baseline `name` is kept: `target/lab-results/baselines/<name>`.
pub fn baseline_dir(env: &crate::Env, name: &str) -> Result<std::path::PathBuf> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        bail!("baseline name `{name}`: use letters, digits, - _ .");
    }
    Ok(env.results_root().join("baselines").join(name))
}

/// Saves the order rows and the summary of results folder `dir` as baseline `name`
/// (replacing an older one of that name).
pub fn save_baseline(env: &crate::Env, dir: &Path, name: &str) -> Result<()> {
    let to = baseline_dir(env, name)?;
    if to.exists() {
        fs::remove_dir_all(&to).with_context(|| to.display().to_string())?;
    }
    fs::create_dir_all(&to)?;
    for e in fs::read_dir(dir)?.filter_map(Result::ok) {
        let n = e.file_name().to_string_lossy().into_owned();
        if n.ends_with(".exchange.csv")
            || n == "summary.csv"
            || n == "probe.txt"
            || n == crate::manifest::FILE
        {
            fs::copy(e.path(), to.join(&n))?;
        }
    }
    println!("baseline `{name}` saved in {}", to.display());
    Ok(())
}

/// Writes `compare.html` (the comparison of B against A) into `out_dir`; returns its path.
pub fn write_compare(
    out_dir: &Path,
    (a, b): (&Path, &Path),
    clock: &str,
    rows: &[Comparison],
    notes: &[String],
) -> Result<std::path::PathBuf> {
    use crate::html::{esc, STYLE};
    use std::fmt::Write as _;
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>nic-lab comparison</title><style>{STYLE}</style></head><body>\
         <h1>B against A</h1><p class=\"note\">A = {}<br>B = {}<br>{} clock, us; the difference of the \
         medians B - A with its 95 % percentile-bootstrap interval (2,000 resamples).</p>",
        esc(&a.display().to_string()),
        esc(&b.display().to_string()),
        esc(clock)
    );
    if !notes.is_empty() {
        let _ = write!(h, "<pre>{}</pre>", esc(&notes.join("\n")));
    }
    h.push_str("<table><tr><th class=\"l\">path</th><th>n A</th><th>n B</th><th>A p50</th><th>A p90</th><th>A p99</th><th>A p99.9</th><th>B p50</th><th>B p90</th><th>B p99</th><th>B p99.9</th><th>B - A</th><th>95 % CI</th><th class=\"l\">verdict</th></tr>");
    for r in rows {
        let (class, verdict) = match r.verdict {
            Verdict::Slower => (" class=\"bad\"", "slower"),
            Verdict::Faster => (" class=\"good\"", "faster"),
            Verdict::NoDifference => ("", "no detectable difference"),
        };
        let _ = write!(
            h,
            "<tr{class}><td class=\"l\">{}</td><td>{}</td><td>{}</td>",
            esc(&r.key),
            r.n.0,
            r.n.1
        );
        for p in r.pcts.0.iter().chain(r.pcts.1.iter()) {
            let _ = write!(h, "<td>{p:.1}</td>");
        }
        let _ = write!(
            h,
            "<td>{:+.1}</td><td>[{:+.1}, {:+.1}]</td><td class=\"l\">{verdict}</td></tr>",
            r.diff_us, r.ci_us.0, r.ci_us.1
        );
    }
    h.push_str("</table></body></html>\n");
    let path = out_dir.join("compare.html");
    fs::write(&path, h)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noisy(n: usize, base_ns: u64, seed: u64) -> Vec<u64> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut v: Vec<u64> = (0..n)
            .map(|_| base_ns + rng.gen_range(0..2_000) + rng.gen_range(0..2_000))
            .collect();
        v.sort_unstable();
        v
    }

    fn one(key: &str, v: Vec<u64>) -> BTreeMap<String, Vec<u64>> {
        BTreeMap::from([(key.to_owned(), v)])
    }

    #[test]
    fn a_baseline_keeps_the_manifest_of_its_run() {
        let root = tempfile::tempdir().expect("tempdir");
        let env = crate::Env {
            root: root.path().to_path_buf(),
        };
        let run = root.path().join("run");
        fs::create_dir_all(&run).expect("run folder");
        let m = crate::manifest::record(&env.root, &run).expect("manifest");
        fs::write(run.join("summary.csv"), "gap_ms\n").expect("summary");
        fs::write(run.join("1ms-kernel-1.exchange.csv"), "x\n").expect("rows");
        fs::write(run.join("1ms-kernel-1.strategy.log"), "not kept\n").expect("log");
        save_baseline(&env, &run, "b1").expect("saved");
        let kept = baseline_dir(&env, "b1").expect("dir");
        assert_eq!(
            crate::manifest::Manifest::read(&kept).expect("read"),
            Some(m)
        );
        assert!(kept.join("1ms-kernel-1.exchange.csv").exists());
        assert!(!kept.join("1ms-kernel-1.strategy.log").exists());
    }

    #[test]
    fn a_run_against_itself_shows_no_difference() {
        let a = one("kernel", noisy(200, 20_000, 1));
        let r = compare(&a, &a);
        assert_eq!(r[0].verdict, Verdict::NoDifference);
        assert_eq!(r[0].diff_us, 0.0);
        assert!(r[0].ci_us.0 <= 0.0 && r[0].ci_us.1 >= 0.0);
    }

    #[test]
    fn an_injected_10us_delay_is_slower_by_10_plus_or_minus_1() {
        let a = one("xdp", noisy(200, 20_000, 1));
        let b = one("xdp", noisy(200, 30_000, 2));
        let r = &compare(&a, &b)[0];
        assert_eq!(r.verdict, Verdict::Slower);
        assert!((r.diff_us - 10.0).abs() <= 1.0, "{r:?}");
        assert!(r.ci_us.0 > 8.0 && r.ci_us.1 < 12.0, "{r:?}");
        let back = &compare(&b, &a)[0];
        assert_eq!(back.verdict, Verdict::Faster);
    }

    #[test]
    fn keys_split_into_gap_and_path_even_when_the_path_has_a_dash() {
        let m = BTreeMap::from([
            ("1ms-xdp-tx".to_owned(), vec![1]),
            ("100ms-uring+defer".to_owned(), vec![2]),
            ("xdp-tx".to_owned(), vec![3]),
            ("xdp".to_owned(), vec![4]),
        ]);
        let s = select(&m, "xdp-tx", "L");
        assert_eq!(s.keys().collect::<Vec<_>>(), ["1ms-L", "L"]);
        assert_eq!(select(&m, "xdp", "L")["L"], [4]);
        assert_eq!(select(&m, "uring+defer", "L")["100ms-L"], [2]);
    }

    #[test]
    fn two_paths_of_one_folder_compare_gap_by_gap() {
        let run = BTreeMap::from([
            ("1ms-kernel".to_owned(), noisy(200, 20_000, 1)),
            ("1ms-xdp-tx".to_owned(), noisy(200, 10_000, 2)),
            ("100ms-kernel".to_owned(), noisy(200, 40_000, 3)),
            ("100ms-xdp-tx".to_owned(), noisy(200, 40_000, 4)),
            ("1ms-xdp".to_owned(), noisy(200, 90_000, 5)),
        ]);
        let label = "xdp-tx vs kernel";
        let r = compare(
            &select(&run, "kernel", label),
            &select(&run, "xdp-tx", label),
        );
        assert_eq!(r.len(), 2, "{r:?}");
        let at = |k: &str| r.iter().find(|c| c.key == k).expect(k);
        let fast = at("1ms-xdp-tx vs kernel");
        assert_eq!(fast.verdict, Verdict::Faster);
        assert!((fast.diff_us + 10.0).abs() <= 1.0, "{fast:?}");
        assert_eq!(
            at("100ms-xdp-tx vs kernel").verdict,
            Verdict::NoDifference,
            "{r:?}"
        );
    }

    #[test]
    fn folders_are_read_by_path_with_runs_pooled_and_the_warm_up_left_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        let header = mdfile::orders::EXCHANGE_HEADER;
        for run in 1..=2 {
            let mut text = format!("{header}\n");
            for i in 0..10u64 {
                let send = 1_000_000 * i;
                let recv = send + 20_000 + i;
                text.push_str(&format!(
                    "1,{},buy,1,1,{send},{send},{recv},{},{},,,,,,,,,,\n",
                    100 + i,
                    recv - send,
                    recv - send
                ));
            }
            fs::write(
                dir.path().join(format!("10ms-kernel-{run}.exchange.csv")),
                text,
            )
            .expect("write");
        }
        let s = load(dir.path(), Clock::User).expect("load");
        assert_eq!(s.len(), 1);
        assert_eq!(s["10ms-kernel"].len(), 2 * (10 - WARMUP_ORDERS));
        assert!(load(dir.path(), Clock::Kernel).expect("load")["10ms-kernel"].is_empty());
    }
}
