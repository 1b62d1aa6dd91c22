//! Across the gaps and loads of a run: tick-to-trade against the gap per path, and a short
//! reading of the run from its own figures.

use super::table::PathRow;
use crate::stats::pct;

/// With several gaps: p50 / p99 of the kernel-stamp tick-to-trade per path (rows) and gap
/// (columns), and the floor's TCP round trip at each gap.
pub(super) fn gap_matrix(all: &[Vec<PathRow<'_>>]) {
    if all.len() < 2 {
        return;
    }
    println!();
    println!("tick-to-trade against the gap between orders (and the feed's rate, with --load; kernel stamps, us, p50 / p99):");
    let w = all
        .iter()
        .flatten()
        .map(|r| r.path.len() + 2)
        .max()
        .unwrap_or(0)
        .max(14);
    print!("{:<w$}", "path");
    for rows in all {
        if let Some(r) = rows.first() {
            let load = r.load.map_or(String::new(), |l| {
                format!("{}/s ", crate::load::rate_label(l))
            });
            print!("{:>18}", format!("{load}{:.0} ms", r.gap_ms));
        }
    }
    println!();
    let mut paths: Vec<&str> = Vec::new();
    for r in all.iter().flatten() {
        if !paths.contains(&r.path) {
            paths.push(r.path);
        }
    }
    for p in paths {
        print!("{p:<w$}");
        for rows in all {
            match rows.iter().find(|r| r.path == p) {
                Some(r) => print!(
                    "{:>18}",
                    format!("{:.1} / {:.1}", pct(&r.kernel, 0.5), pct(&r.kernel, 0.99))
                ),
                None => print!("{:>18}", "-"),
            }
        }
        println!();
    }
    print!("{:<w$}", "floor (TCP)");
    for rows in all {
        let f = rows.first().and_then(|r| r.floor);
        print!(
            "{:>18}",
            f.map_or("-".to_owned(), |f| format!(
                "{:.1} / {:.1}",
                f.tcp_us[0], f.tcp_us[2]
            ))
        );
    }
    println!();
}

/// A short reading of the run, from its own figures (kernel-stamp p50): per gap, the
/// fastest path against the first, and what warming did to each path that ran both ways.
pub(super) fn reading(all: &[Vec<PathRow<'_>>]) {
    let p50 = |r: &PathRow<'_>| pct(&r.kernel, 0.5);
    fn spec<'a>(r: &PathRow<'a>) -> Option<(&'a crate::PathSpec, &'a Option<String>)> {
        r.runs.first().map(|x| (&x.key.path, &x.key.tune))
    }
    println!("reading (kernel-stamp tick-to-trade p50, paths of the same run):");
    for rows in all {
        let Some(base) = rows.first() else {
            continue;
        };
        let Some(fast) = rows
            .iter()
            .filter(|r| p50(r).is_finite())
            .min_by(|a, b| p50(a).total_cmp(&p50(b)))
        else {
            println!("  at {:.1} ms: no kernel stamps", base.gap_ms);
            continue;
        };
        let mut line = format!(
            "  {}at {:.1} ms between orders: fastest {} {:.1} us (x{:.2} of {} {:.1} us)",
            base.load.map_or(String::new(), |l| format!(
                "feed {}/s, ",
                crate::load::rate_label(l)
            )),
            base.gap_ms,
            fast.path,
            p50(fast),
            p50(fast) / p50(base),
            base.path,
            p50(base)
        );
        let warmed: Vec<String> = rows
            .iter()
            .filter_map(|w| {
                let (ws, wt) = spec(w)?;
                ws.warm()?;
                let cold = rows.iter().find(|c| {
                    spec(c).is_some_and(|(cs, ct)| *cs == ws.without_warm() && ct == wt)
                })?;
                Some(format!("{} {:.1} -> {:.1}", cold.path, p50(cold), p50(w)))
            })
            .collect();
        if !warmed.is_empty() {
            line.push_str(&format!("; warmed: {}", warmed.join(", ")));
        }
        println!("{line}");
    }
}
