//! `lab --calibrate`: the measurement chain checked by injected delays. The first path runs
//! one session in which the strategy busy-waits 0, 10 or 50 us between trigger and send,
//! cycling order by order; the exchange's p50 must shift by the injected delay, per clock,
//! within 1 us + 5 % plus the sampling uncertainty of the two medians.

use std::path::Path;

use mdfile::orders::read_rows;

use anyhow::{bail, Context, Result};

use crate::stats::{median_ci_half_width, pct};
use crate::{Env, LabConfig, PathSpec};

/// Delays injected by `--calibrate`, ns.
const CAL_DELAYS: [u64; 3] = [0, 10_000, 50_000];

/// `lab --calibrate`.
pub fn run(env: &Env, a: &LabConfig) -> Result<()> {
    let path = a
        .paths
        .first()
        .cloned()
        .unwrap_or_else(|| PathSpec::bare(strategy::net::NetKind::Kernel));
    let md = env.data_dir().join("md-calibrate.csv.gz");
    if !md.exists() {
        let cfg = mdfile::mdgen::GenConfig {
            target_bytes: 300_000,
            trigger_every: 20,
            ..mdfile::mdgen::GenConfig::default()
        };
        mdfile::mdgen::generate(&md, &cfg)?;
    }
    let dir = a
        .results_dir
        .clone()
        .unwrap_or_else(|| env.results_root().join("calibrate"));
    let flags = format!("{} --inject-delay 0,10us,50us", a.strategy_flags);
    let args = LabConfig {
        paths: vec![path.clone()],
        runs: 1,
        md_file: Some(md),
        results_dir: Some(dir.clone()),
        strategy_flags: flags,
        veth_tunes: Vec::new(),
        ..a.clone()
    };
    crate::netns::run(env, &args)?;
    let tag = crate::key::RunKey::new(path.clone(), 1).tag();
    let samples = samples_by_delay(
        &dir.join(format!("{tag}.exchange.csv")),
        &dir.join(format!("{tag}.strategy-orders.csv")),
    )?;
    verdict(&path.to_string(), &dir, samples)
}

/// `[clock][delay index] -> sorted samples (ns)`: the exchange's tick-to-trade of each order,
/// grouped by the delay the strategy injected before it (rows matched one to one, in order).
fn samples_by_delay(ex_csv: &Path, st_csv: &Path) -> Result<[[Vec<u64>; 3]; 2]> {
    let (_, ex_rows) = read_rows(ex_csv)?;
    let (_, st_rows) = read_rows(st_csv)?;
    if ex_rows.len() != st_rows.len() {
        bail!(
            "calibration: {} orders at the exchange, {} at the strategy",
            ex_rows.len(),
            st_rows.len()
        );
    }
    let mut samples: [[Vec<u64>; 3]; 2] = Default::default();
    for (e, s) in ex_rows.iter().zip(&st_rows) {
        if e.order.trigger_id != s.order.trigger_id {
            bail!(
                "calibration: trigger ids out of step ({} vs {})",
                e.order.trigger_id,
                s.order.trigger_id
            );
        }
        let delay = s.delay_ns.context("delay_ns column")?;
        let Some(k) = CAL_DELAYS.iter().position(|&d| d == delay) else {
            continue;
        };
        let t = e.timing.context("exchange timing columns")?;
        samples[0][k].push(t.t2t_first_ns());
        if let Some(v) = t.kernel_t2t_ns() {
            samples[1][k].push(v);
        }
    }
    for clock in &mut samples {
        for v in clock.iter_mut() {
            v.sort_unstable();
        }
    }
    Ok(samples)
}

/// Prints the shift table and fails when a shift is off.
fn verdict(path: &str, dir: &Path, mut samples: [[Vec<u64>; 3]; 2]) -> Result<()> {
    println!();
    println!("calibration on the {path} path: exchange-side tick-to-trade p50 shift against the injected delay D");
    println!(
        "{:<8}{:>8}{:>7}{:>10}{:>10}{:>10}{:>11}  verdict",
        "clock", "D (us)", "n", "p50 (us)", "shift", "error", "tolerance"
    );
    let mut bad = Vec::new();
    for (ci, clock) in ["user", "kernel"].iter().enumerate() {
        let (mut base, mut base_ci) = (f64::NAN, f64::NAN);
        for (k, &d) in CAL_DELAYS.iter().enumerate() {
            let v = &mut samples[ci][k];
            let p50 = pct(v, 0.5);
            let ci_half = median_ci_half_width(v);
            if k == 0 {
                (base, base_ci) = (p50, ci_half);
            }
            let shift = p50 - base;
            let d_us = d as f64 / 1e3;
            let err = shift - d_us;
            // 1 us + 5 % of D, widened by the sampling uncertainty of the two medians (their
            // 95 % confidence half-widths combined): a noisy clock is not a broken chain,
            // while a delay that does not show up still fails by far.
            let tol = 1.0 + 0.05 * d_us + (base_ci.powi(2) + ci_half.powi(2)).sqrt();
            let ok = k == 0 || (err.abs() <= tol && v.len() >= 20);
            if !ok {
                bad.push(format!("{clock} D={d_us} us: shift {shift:.1} us"));
            }
            println!(
                "{:<8}{:>8.0}{:>7}{:>10.1}{:>10.1}{:>10.1}{:>11.1}  {}",
                clock,
                d_us,
                v.len(),
                p50,
                shift,
                err,
                tol,
                if k == 0 {
                    "reference"
                } else if ok {
                    "ok"
                } else {
                    "OFF"
                }
            );
        }
    }
    if !bad.is_empty() {
        bail!(
            "the measurement chain is off by more than 1 us + 5 % + the medians' uncertainty: {} (see {})",
            bad.join("; "),
            dir.display()
        );
    }
    println!("calibration: every shift within 1 us + 5 % (+ the medians' uncertainty) of the injected delay");
    Ok(())
}
