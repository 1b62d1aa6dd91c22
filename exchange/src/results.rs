//! Per-session results: order rows (CSV), counters, latency histograms, the summary.
//!
//! Latencies are recorded in nanoseconds in HDR histograms (3 significant digits, up to
//! 100 s). Two clock sources are kept apart: `user` (CLOCK_MONOTONIC read in the exchange
//! right before `sendto` and right after `recv`) and `kernel` (software timestamps taken
//! by the kernel when the datagram left and when the order segment arrived).

use mdfile::orders::{OrderRow, RowKind};
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use hdrhistogram::Histogram;
use serde::Serialize;

pub use mdfile::percentiles::Percentiles;

/// A latency histogram in ns (1 ns .. 100 s, 3 significant digits).
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("static histogram bounds are valid")
}

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// File replayed, grace period over.
    EndOfFile,
    /// File replayed and the expected orders in (`--expect-orders`): the grace cut short.
    ExpectedOrders,
    /// Client closed or reset the connection.
    Disconnected,
    /// SIGINT / SIGTERM.
    Signal,
    /// The file became unreadable mid-session.
    FileError,
}

/// The counters of one session: kept live by the server and reported as they are.
#[derive(Debug, Clone, Copy, Default, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct SessionCounters {
    /// Packets sent.
    pub packets_sent: u64,
    /// Of which snapshot lines (HANDSHAKE and re-snapshots).
    pub snapshot_packets: u64,
    /// Packets sent later than the late threshold after their deadline.
    pub late: u64,
    /// Sends that hit a full buffer and were retried.
    pub send_retries: u64,
    /// Malformed lines skipped.
    pub malformed_lines: u64,
    /// Orders accepted.
    pub orders_accepted: u64,
    /// Bytes received during HANDSHAKE (rejected).
    pub rejected_bytes: u64,
    /// Invalid order messages.
    pub invalid: u64,
    /// Valid orders whose trigger id was never published.
    pub unknown_trigger: u64,
    /// Kernel TX timestamps that never came back.
    pub tx_ts_missing: u64,
    /// Packets sent with a kernel TX stamp asked: the first packet of each trigger id
    /// (`local_timestamp`), the one tick-to-trade is measured from; the others carry none.
    #[serde(default)]
    pub tx_stamped: u64,
    /// Order-entry connections refused because their address was not allowed
    /// (`--allow-peer`), since the previous session's summary.
    #[serde(default)]
    pub refused_peers: u64,
    /// Heartbeats received and discarded (`--heartbeats`; never orders).
    #[serde(default)]
    pub heartbeats: u64,
    /// Bytes the client had sent when the session ended, read and discarded at the close.
    #[serde(default)]
    pub bytes_after_end: u64,
}

/// Counters and histograms of one session.
#[derive(Debug)]
pub struct SessionStats {
    /// Session number (1-based).
    pub session: u64,
    /// Client address.
    pub peer: String,
    /// Counters, as reported.
    pub counters: SessionCounters,
    /// Tick-to-trade from the first packet with the id, user clock.
    pub t2t_user: Histogram<u64>,
    /// Tick-to-trade from the last packet with the id, user clock.
    pub t2t_user_last: Histogram<u64>,
    /// Tick-to-trade from the first packet with the id, kernel timestamps.
    pub t2t_kernel: Histogram<u64>,
    /// Tick-to-trade on the NIC's clock (hardware stamps).
    pub t2t_hw: Histogram<u64>,
    /// Hardware stamps on (`on: PHC n`) or why not (`off: ...`).
    pub hw_timestamps: String,
    /// Actual minus scheduled send time.
    pub pacing_error: Histogram<u64>,
    /// First and last market-data send (CLOCK_MONOTONIC ns; 0 = none yet).
    pub first_send_ns: u64,
    /// Last send.
    pub last_send_ns: u64,
    /// Session start (CLOCK_MONOTONIC ns) and end.
    pub start_ns: u64,
    /// End time.
    pub end_ns: u64,
}

impl SessionStats {
    /// Empty stats.
    pub fn new(session: u64, peer: String, start_ns: u64) -> Self {
        Self {
            session,
            peer,
            counters: SessionCounters::default(),
            t2t_user: new_histogram(),
            t2t_user_last: new_histogram(),
            t2t_kernel: new_histogram(),
            t2t_hw: new_histogram(),
            hw_timestamps: String::new(),
            pacing_error: new_histogram(),
            first_send_ns: 0,
            last_send_ns: 0,
            start_ns,
            end_ns: start_ns,
        }
    }

    /// The summary record.
    pub fn summary(&self, reason: EndReason) -> Summary {
        Summary {
            session: self.session,
            peer: self.peer.clone(),
            end_reason: reason,
            duration_s: self.end_ns.saturating_sub(self.start_ns) as f64 / 1e9,
            publish_s: self.last_send_ns.saturating_sub(self.first_send_ns) as f64 / 1e9,
            counters: self.counters,
            t2t_user_ns: Percentiles::of(&self.t2t_user),
            t2t_user_last_ns: Percentiles::of(&self.t2t_user_last),
            t2t_kernel_ns: Percentiles::of(&self.t2t_kernel),
            t2t_hw_ns: (!self.t2t_hw.is_empty()).then(|| Percentiles::of(&self.t2t_hw)),
            hw_timestamps: self.hw_timestamps.clone(),
            pacing_error_ns: Percentiles::of(&self.pacing_error),
        }
    }
}

/// The session report (one JSON object per session).
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct Summary {
    /// Session number.
    pub session: u64,
    /// Client address.
    pub peer: String,
    /// How it ended.
    pub end_reason: EndReason,
    /// Seconds from accept to end.
    pub duration_s: f64,
    /// Seconds from the first to the last market-data packet.
    #[serde(default)]
    pub publish_s: f64,
    /// Counters (flattened: the same JSON keys as before).
    #[serde(flatten)]
    pub counters: SessionCounters,
    /// Tick-to-trade, user clock, from the first packet with the id.
    pub t2t_user_ns: Percentiles,
    /// Same, from the last packet with the id.
    pub t2t_user_last_ns: Percentiles,
    /// Tick-to-trade, kernel timestamps.
    pub t2t_kernel_ns: Percentiles,
    /// Tick-to-trade on the NIC's clock (None: no hardware stamps: see `hw_timestamps`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub t2t_hw_ns: Option<Percentiles>,
    /// Hardware stamps on (`on: PHC n`) or why not (`off: ...`).
    #[serde(default)]
    pub hw_timestamps: String,
    /// Pacing error (actual - scheduled send time).
    pub pacing_error_ns: Percentiles,
}

impl Summary {
    /// Human-readable block for stdout.
    pub fn print(&self, out: &mut impl Write) -> io::Result<()> {
        writeln!(
            out,
            "== session {} ({}) ended: {:?} after {:.3} s",
            self.session, self.peer, self.end_reason, self.duration_s
        )?;
        writeln!(
            out,
            "   packets {} (snapshot {}), late {}, send retries {}, malformed lines {}",
            self.counters.packets_sent,
            self.counters.snapshot_packets,
            self.counters.late,
            self.counters.send_retries,
            self.counters.malformed_lines
        )?;
        writeln!(
            out,
            "   orders accepted {}, invalid {}, unknown trigger {}, bytes rejected in HANDSHAKE {}, heartbeats discarded {}",
            self.counters.orders_accepted,
            self.counters.invalid,
            self.counters.unknown_trigger,
            self.counters.rejected_bytes,
            self.counters.heartbeats
        )?;
        writeln!(
            out,
            "   {:<22}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}{:>8}",
            "latency (us)", "min", "p50", "p90", "p99", "p99.9", "max", "n"
        )?;
        let none = Percentiles::default();
        let hw = self.t2t_hw_ns.as_ref();
        for (name, p) in [
            ("tick-to-trade user", &self.t2t_user_ns),
            ("tick-to-trade (last)", &self.t2t_user_last_ns),
            ("tick-to-trade kernel", &self.t2t_kernel_ns),
            ("tick-to-trade NIC", hw.unwrap_or(&none)),
            ("pacing error", &self.pacing_error_ns),
        ] {
            if name == "tick-to-trade NIC" && hw.is_none() {
                writeln!(out, "   {name:<22}hardware stamps {}", self.hw_timestamps)?;
                continue;
            }
            let us = |v: u64| v as f64 / 1e3;
            writeln!(
                out,
                "   {:<22}{:>10.1}{:>10.1}{:>10.1}{:>10.1}{:>10.1}{:>10.1}{:>8}",
                name,
                us(p.min),
                us(p.p50),
                us(p.p90),
                us(p.p99),
                us(p.p999),
                us(p.max),
                p.count
            )?;
        }
        Ok(())
    }
}

/// Where results go.
#[derive(Debug, Default)]
pub struct ResultsSink {
    csv: Option<BufWriter<File>>,
    summary: Option<(PathBuf, File)>,
}

impl ResultsSink {
    /// Opens `csv` for appending (writing the header if new) and `summary` (JSON lines).
    pub fn open(csv: Option<&Path>, summary: Option<&Path>) -> io::Result<Self> {
        let open = |p: &Path| {
            if let Some(d) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(d)?;
            }
            OpenOptions::new().create(true).append(true).open(p)
        };
        let csv = match csv {
            Some(p) => {
                let f = open(p)?;
                let new = f.metadata()?.len() == 0;
                let mut w = BufWriter::new(f);
                if new {
                    writeln!(w, "{}", RowKind::Exchange.header())?;
                }
                Some(w)
            }
            None => None,
        };
        let summary = summary
            .map(|p| open(p).map(|f| (p.to_owned(), f)))
            .transpose()?;
        Ok(Self { csv, summary })
    }

    /// Appends an order row (buffered).
    pub fn order(&mut self, row: &OrderRow) -> io::Result<()> {
        if let Some(w) = &mut self.csv {
            row.write(RowKind::Exchange, w)?;
        }
        Ok(())
    }

    /// Writes a session summary and flushes everything.
    pub fn summary(&mut self, s: &Summary) -> io::Result<()> {
        if let Some(w) = &mut self.csv {
            w.flush()?;
        }
        if let Some((_, f)) = &mut self.summary {
            let line = serde_json::to_string(s).map_err(io::Error::other)?;
            writeln!(f, "{line}")?;
            f.flush()?;
        }
        Ok(())
    }

    /// Flushes buffered rows.
    pub fn flush(&mut self) -> io::Result<()> {
        if let Some(w) = &mut self.csv {
            w.flush()?;
        }
        Ok(())
    }
}

/// Reads a summary JSON-lines file.
pub fn read_summaries(path: &Path) -> io::Result<Vec<Summary>> {
    std::fs::read_to_string(path)?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_json_keeps_flat_counter_keys_and_round_trips() {
        let mut stats = SessionStats::new(3, "10.77.0.2:40000".into(), 1_000);
        stats.counters.packets_sent = 7;
        stats.counters.orders_accepted = 2;
        stats.t2t_user.record(5_000).expect("in range");
        stats.end_ns = 2_000_001_000;
        let summary = stats.summary(EndReason::Disconnected);
        let json = serde_json::to_string(&summary).expect("serialize");
        let value: serde_json::Value = serde_json::from_str(&json).expect("json");
        assert_eq!(
            value["packets_sent"], 7,
            "counters stay top-level keys: {json}"
        );
        assert_eq!(value["orders_accepted"], 2);
        assert!(value.get("counters").is_none());
        let back: Summary = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, summary);
    }
}
