//! Self-contained HTML reports: `report.html` beside every lab run's CSV and JSON (and the
//! pieces `compare.html` is made of, in [`crate::compare`]). One file each, no script, no network: the tables, the
//! plots inlined as SVG, the spread across runs. Open it in any browser.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use anyhow::Result;

/// The reports' stylesheet (inline).
pub(crate) const STYLE: &str = "body{font-family:sans-serif;margin:2em;max-width:1300px}\
table{border-collapse:collapse;margin:1em 0;font-size:13px}\
th,td{border:1px solid #bbb;padding:3px 7px;text-align:right}\
th{background:#eee}td.l,th.l{text-align:left}\
.bad{background:#fcc}.good{background:#cfc}.note{color:#555;font-size:13px}\
svg{max-width:100%;height:auto}";

/// Escapes text for HTML.
pub(crate) fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// An SVG file's markup, inlined (its XML declaration dropped), if it exists.
fn inline_svg(path: &Path) -> Option<String> {
    let text = fs::read_to_string(path).ok()?;
    let start = text.find("<svg")?;
    Some(text[start..].to_owned())
}

/// The run's `summary.csv` as a table (the oracle check and the kernel-stamp rows marked;
/// a figure not measured is a dash).
fn summary_table(dir: &Path, out: &mut String) -> Result<()> {
    use crate::summary::{Clock, SummaryRow};
    let rows = crate::summary::read(&dir.join("summary.csv"))?;
    fn f(v: Option<f64>) -> String {
        v.map_or("-".to_owned(), |x| format!("{x:.2}"))
    }
    type Col = (&'static str, fn(&SummaryRow) -> String);
    let show: [Col; 20] = [
        ("gap ms", |r| format!("{}", r.gap_ms)),
        ("path", |r| r.path.clone()),
        ("runs", |r| r.runs.to_string()),
        ("orders", |r| r.orders_expected.to_string()),
        ("recv", |r| r.orders_received.to_string()),
        ("= oracle", |r| r.matches.to_string()),
        ("lost", |r| r.packets_lost.to_string()),
        ("clock", |r| {
            if r.clock == Clock::Kernel {
                "kernel".into()
            } else {
                "user".into()
            }
        }),
        ("n", |r| r.n.to_string()),
        ("min", |r| f(r.min_us)),
        ("p50", |r| f(r.p50_us)),
        ("p90", |r| f(r.p90_us)),
        ("p99", |r| f(r.p99_us)),
        ("p99.9", |r| f(r.p999_us)),
        ("p99.99", |r| f(r.p9999_us)),
        ("max", |r| f(r.max_us)),
        ("strat p50", |r| f(r.strategy_p50_us)),
        ("decide", |r| f(r.decide_p50_us)),
        ("send", |r| f(r.send_p50_us)),
        ("floor TCP p50", |r| f(r.floor_tcp_p50_us)),
    ];
    out.push_str("<table><tr>");
    for (title, _) in &show {
        let _ = write!(out, "<th>{}</th>", esc(title));
    }
    out.push_str("</tr>");
    for r in &rows {
        let class = if r.matches { "" } else { " class=\"bad\"" };
        let _ = write!(out, "<tr{class}>");
        for (title, get) in &show {
            let l = if matches!(*title, "path" | "clock") {
                " class=\"l\""
            } else {
                ""
            };
            let _ = write!(out, "<td{l}>{}</td>", esc(&get(r)));
        }
        out.push_str("</tr>");
    }
    out.push_str("</table>");
    Ok(())
}

/// Per path and gap, each run's exchange-side p50 and p99 (user clock), from `runs.json`
/// (read back typed: a renamed field is an error, not a silent dash).
fn spread_table(dir: &Path, out: &mut String) -> Result<()> {
    let Ok(text) = fs::read_to_string(dir.join("runs.json")) else {
        return Ok(());
    };
    let runs: Vec<crate::RunResult> = serde_json::from_str(&text)?;
    out.push_str("<table><tr><th class=\"l\">path</th><th>gap ms</th><th>run</th><th>orders = oracle</th><th>user p50</th><th>user p99</th><th>kernel p50</th><th>kernel p99</th></tr>");
    // An empty histogram was not measured (no kernel stamps, say): a dash, never 0.
    let us = |p: &exchange::results::Percentiles, ns: u64| {
        if p.count == 0 {
            "-".to_owned()
        } else {
            format!("{:.1}", ns as f64 / 1e3)
        }
    };
    for r in &runs {
        let ex = &r.exchange;
        let _ = write!(
            out,
            "<tr{}><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            if r.orders_match { "" } else { " class=\"bad\"" },
            esc(&r.path),
            r.gap_ms.map_or("-".to_owned(), |g| format!("{g}")),
            r.key.run,
            r.orders_match,
            us(&ex.t2t_user_ns, ex.t2t_user_ns.p50),
            us(&ex.t2t_user_ns, ex.t2t_user_ns.p99),
            us(&ex.t2t_kernel_ns, ex.t2t_kernel_ns.p50),
            us(&ex.t2t_kernel_ns, ex.t2t_kernel_ns.p99),
        );
    }
    out.push_str("</table>");
    Ok(())
}

/// Writes `report.html` for the results folder `dir` (after its `summary.csv`, `runs.json`
/// and plots); returns its path.
pub fn write_run(dir: &Path) -> Result<std::path::PathBuf> {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>nic-lab run {}</title><style>{STYLE}</style></head><body>",
        esc(&dir.display().to_string())
    );
    let _ = write!(
        h,
        "<h1>nic-lab run</h1><p class=\"note\">{}. Tick-to-trade at the exchange in us: \
         <b>user</b> = CLOCK_MONOTONIC in the exchange, <b>kernel</b> = SO_TIMESTAMPING software \
         stamps (trigger packet TX to order RX). Every figure is at the gap between orders in its \
         row (requested, or the median measured). The first 5 orders of each run are left out; \
         n is the number of samples; p99.99 only where n &ge; 10,000.</p>",
        esc(&dir.display().to_string())
    );
    h.push_str("<h2>Paths side by side</h2>");
    summary_table(dir, &mut h)?;
    if let Some(svg) = inline_svg(&dir.join("t2t_vs_gap.svg")) {
        h.push_str("<h2>Tick-to-trade against the gap between orders</h2>");
        h.push_str(&svg);
    }
    if let Some(svg) = inline_svg(&dir.join("t2t_cdf.svg")) {
        h.push_str("<h2>Distribution (CDF, both clocks)</h2>");
        h.push_str(&svg);
    }
    if let Some(svg) = inline_svg(&dir.join("waterfall.svg")) {
        h.push_str(
            "<h2>Waterfall (<code>--trace</code>): where each order's time goes</h2>\
             <p>Medians per path and gap; kernel points from BPF programs on the network \
             tracepoints, user points from the programs' own stamps, one clock \
             (CLOCK_MONOTONIC). One row per order: <code>*.trace.csv</code>.</p>",
        );
        h.push_str(&svg);
    }
    h.push_str("<h2>Spread across runs</h2>");
    spread_table(dir, &mut h)?;
    if let Ok(Some(m)) = crate::manifest::Manifest::read(dir) {
        let mut text = format!(
            "code {} (version {}), started {}\ncommand: {}\n",
            m.code.short(),
            m.code.version,
            m.started,
            m.command.join(" ")
        );
        for (what, v) in m.machine.rows() {
            let _ = writeln!(text, "{what:<24} {v}");
        }
        if let Some(sm) = &m.strategy_machine {
            text.push_str("\nthe strategy's machine (the remote host, or the VM lab's guest)\n");
            for (what, v) in sm.rows() {
                let _ = writeln!(text, "{what:<24} {v}");
            }
        }
        let _ = write!(
            h,
            "<h2>The machine and the code (manifest.json)</h2><pre>{}</pre>",
            esc(&text)
        );
    }
    if let Ok(probe) = fs::read_to_string(dir.join("probe.txt")) {
        let _ = write!(
            h,
            "<h2>What the machine offered (strategy probe)</h2><pre>{}</pre>",
            esc(&probe)
        );
    }
    h.push_str("</body></html>\n");
    let path = dir.join("report.html");
    fs::write(&path, h)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_report_holds_its_tables_and_plots_inline() {
        let dir = tempfile::tempdir().expect("tempdir");
        let row = |path: &str, matches, p50| crate::summary::SummaryRow {
            matches,
            ..crate::summary::SummaryRow::sample(path, crate::summary::Clock::Kernel, p50, None)
        };
        crate::summary::write(
            &dir.path().join("summary.csv"),
            &[row("xdp", true, Some(4.3)), row("<6>", false, None)],
        )
        .expect("csv");
        fs::write(
            dir.path().join("t2t_cdf.svg"),
            "<?xml version=\"1.0\"?>\n<svg><text>10 us</text></svg>",
        )
        .expect("svg");
        let p = write_run(dir.path()).expect("report");
        let h = fs::read_to_string(p).expect("html");
        assert!(h.starts_with("<!DOCTYPE html>"));
        assert!(h.contains("<td>4.30</td>") && h.contains("<td class=\"l\">xdp</td>"));
        assert!(h.contains("<td>-</td>"), "not measured is a dash");
        assert!(
            h.contains("<tr class=\"bad\">"),
            "a run whose orders differ is marked"
        );
        assert!(h.contains("&lt;6&gt;"), "text is escaped");
        assert!(h.contains("<svg><text>10 us</text></svg>") && !h.contains("<?xml"));
        assert!(
            !h.contains(" src=") && !h.contains("<link") && !h.contains("<script"),
            "self-contained"
        );
    }
}
