//! The lab's default market-data file: generated once with the default settings and cached.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::Env;

/// `target/lab-data/md-default.csv.gz`.
pub fn default_md_file(env: &Env) -> PathBuf {
    env.data_dir().join("md-default.csv.gz")
}

/// Generates the file at `out` with the default settings unless it is already there (with
/// its planted-triggers sidecar) and `force` is off.
pub fn ensure_md_file(out: &Path, force: bool) -> Result<PathBuf> {
    if cached(out) && !force {
        println!("market data: {} (cached)", out.display());
        return Ok(out.to_owned());
    }
    generate(out, &mdfile::mdgen::GenConfig::default(), default_summary)
}

/// Whether the file and its planted-triggers sidecar are there.
fn cached(out: &Path) -> bool {
    out.exists() && mdfile::mdgen::planted_path(out).exists()
}

/// Generates `out` with `cfg` and says so, with what `say` reads from the generator's
/// summary.
fn generate(
    out: &Path,
    cfg: &mdfile::mdgen::GenConfig,
    say: impl FnOnce(&mdfile::mdgen::GenSummary) -> String,
) -> Result<PathBuf> {
    let s = mdfile::mdgen::generate(out, cfg)
        .with_context(|| format!("generating {}", out.display()))?;
    println!("market data: wrote {} ({})", out.display(), say(&s));
    Ok(out.to_owned())
}

/// Bytes, lines and planted triggers.
fn default_summary(s: &mdfile::mdgen::GenSummary) -> String {
    format!(
        "{} bytes, {} lines, {} planted triggers",
        s.bytes,
        s.lines,
        s.planted.len()
    )
}

/// A gap as a short label: `1ms`, `250us`, `1s`.
pub fn gap_label(gap: Duration) -> String {
    let ns = gap.as_nanos();
    if ns >= 1_000_000_000 && ns.is_multiple_of(1_000_000_000) {
        format!("{}s", ns / 1_000_000_000)
    } else if ns >= 1_000_000 && ns.is_multiple_of(1_000_000) {
        format!("{}ms", ns / 1_000_000)
    } else if ns >= 1_000 && ns.is_multiple_of(1_000) {
        format!("{}us", ns / 1_000)
    } else {
        format!("{ns}ns")
    }
}

/// The packets per second of a `rate:PPS` pace.
pub fn pace_rate(pace: &str) -> Option<u32> {
    pace.strip_prefix("rate:")?.parse().ok().filter(|&r| r > 0)
}

/// The publisher bench's file for its `--pace max` runs: the default settings, about
/// eight times the default file's size (about 600,000 lines: 2 s at 300 k/s, where the
/// default file's 76,000 lines took 0.25-0.35 s, too short against this machine's stalls:
/// six tries on it gave 202-308 k/s). Generated once and cached.
pub fn bench_md_file(env: &Env) -> Result<PathBuf> {
    let out = env.data_dir().join("md-bench-8m.csv.gz");
    if cached(&out) {
        return Ok(out);
    }
    let cfg = mdfile::mdgen::GenConfig {
        target_bytes: 8 << 20,
        ..mdfile::mdgen::GenConfig::default()
    };
    generate(&out, &cfg, default_summary)
}

/// The microburst file (`lab --microbursts`): 1 ms bursts at 20x every 50 ms over a
/// 10 k/s feed, heavy-tailed gaps between them, 100 triggers placed at a burst's start, its
/// peak, right after it and in the quiet feed, in turn; replayed `recorded`. Generated once
/// and cached.
pub fn microburst_md_file(env: &Env) -> Result<PathBuf> {
    microburst_file(
        env,
        "md-microbursts-orders100.csv.gz",
        mdfile::mdgen::Microbursts::default(),
    )
}

/// A microburst file whose bursts run at 500 k/s (1 ms at 20x every 50 ms over a 25 k/s
/// feed), for the publisher's bench: replayed `recorded`, how many packets are late.
pub fn burst500k_md_file(env: &Env) -> Result<PathBuf> {
    microburst_file(
        env,
        "md-microbursts500k-orders100.csv.gz",
        mdfile::mdgen::Microbursts {
            quiet_gap_us: 40.0,
            ..mdfile::mdgen::Microbursts::default()
        },
    )
}

fn microburst_file(env: &Env, name: &str, shape: mdfile::mdgen::Microbursts) -> Result<PathBuf> {
    let out = env.data_dir().join(name);
    if cached(&out) {
        return Ok(out);
    }
    let cfg = mdfile::mdgen::GenConfig {
        orders: Some(100),
        resnapshot: false,
        microbursts: Some(shape),
        ..mdfile::mdgen::GenConfig::default()
    };
    generate(&out, &cfg, |s| {
        format!(
            "{} lines, {} triggers at a burst's start, peak, tail and in quiet feed",
            s.lines,
            s.planted.len()
        )
    })
}

/// A file whose orders are `gap` apart when replayed at `rate` packets/s, with `orders`
/// orders; generated once and cached in `target/lab-data`.
pub fn gap_md_file(env: &Env, gap: Duration, rate: u32, orders: u64) -> Result<PathBuf> {
    let out = env.data_dir().join(format!(
        "md-gap-{}-rate{rate}-orders{orders}.csv.gz",
        gap_label(gap)
    ));
    if cached(&out) {
        return Ok(out);
    }
    let cfg = mdfile::mdgen::GenConfig {
        trigger_every_lines: Some(mdfile::mdgen::lines_for_gap(gap, rate)),
        orders: Some(orders),
        resnapshot: false,
        ..mdfile::mdgen::GenConfig::default()
    };
    generate(&out, &cfg, |s| {
        format!(
            "{} lines, {} orders {} apart at rate:{rate}",
            s.lines,
            s.planted.len(),
            gap_label(gap)
        )
    })
}

/// Writes the oracle's trigger ids for `md_file` into `dir` (one per line) and returns the
/// file: the exchange stamps only their first packets (`exchange serve --stamp-ids`).
pub fn write_oracle_ids(
    dir: &Path,
    md_file: &Path,
    oracle: &[proto::order::OrderRepr],
) -> Result<PathBuf> {
    let stem = md_file
        .file_name()
        .map_or_else(|| "md".into(), |n| n.to_string_lossy().into_owned());
    let out = dir.join(format!("{stem}.oracle-ids.csv"));
    let mut text = String::from("trigger_id\n");
    for o in oracle {
        text.push_str(&o.trigger_id.to_string());
        text.push('\n');
    }
    std::fs::write(&out, text).with_context(|| format!("writing {}", out.display()))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gap_labels_and_rates() {
        assert_eq!(gap_label(Duration::from_millis(1)), "1ms");
        assert_eq!(gap_label(Duration::from_secs(1)), "1s");
        assert_eq!(gap_label(Duration::from_micros(250)), "250us");
        assert_eq!(gap_label(Duration::from_micros(1500)), "1500us");
        assert_eq!(pace_rate("rate:5000"), Some(5000));
        assert_eq!(pace_rate("max"), None);
        assert_eq!(pace_rate("rate:0"), None);
    }
}
