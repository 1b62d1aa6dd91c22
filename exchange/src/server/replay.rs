//! Market-data replay inside the event loop: every packet that is due is formatted from the
//! next line and sent (a bounded batch per turn), the kernel TX timestamps are collected
//! from the error queue, and the send times of each trigger id are kept for tick-to-trade.

use hostsys::clock::mono_ns;
use tracing::{error, info, warn};

use super::{Pending, Phase, SendTimes, Server, Session, SEND_BATCH};
use crate::formatter::PacketFormatter;
use crate::md_publisher::Sent;
use crate::results::EndReason;
use mdfile::ReadError;

impl Server {
    pub(super) fn drain_tx_timestamps(&mut self) {
        if let Some(mut s) = self.session.take() {
            self.drain_tx_into(&mut s);
            self.session = Some(s);
        } else {
            let _ = self.md.drain_tx_timestamps(|_, _| {});
        }
    }

    pub(super) fn drain_tx_into(&mut self, s: &mut Session) {
        let sends = &mut s.sends;
        if let Err(e) = self.md.drain_tx_timestamps(|id, ns| {
            if let Some(t) = sends.get_mut(&id) {
                t.ktx_first.get_or_insert(ns);
            }
        }) {
            warn!("reading TX timestamps: {e}");
        }
    }

    /// Sends the packets that are due; returns whether anything was sent.
    pub(super) fn publish_due(&mut self) -> bool {
        let mut sent_any = false;
        let mut end = None;
        for _ in 0..SEND_BATCH {
            let Some(s) = &mut self.session else { break };
            if matches!(s.phase, Phase::Grace { .. }) {
                break;
            }
            if s.next.is_none() {
                match next_packet(s, self.formatter.as_mut(), &mut self.pkt[..]) {
                    Ok(Some(p)) => s.next = Some(p),
                    Ok(None) => {
                        let until_ns = mono_ns()
                            + u64::try_from(self.cfg.grace.as_nanos()).unwrap_or(u64::MAX);
                        s.reader = None; // close the file
                        info!(
                            session = s.stats.session,
                            "end of file: grace period {:?}", self.cfg.grace
                        );
                        s.phase = Phase::Grace { until_ns };
                        break;
                    }
                    Err(e) => {
                        error!(session = s.stats.session, "{e}");
                        end = Some(EndReason::FileError);
                        break;
                    }
                }
            }
            let Some(p) = s.next else { break };
            let now = mono_ns();
            if now < p.deadline {
                break;
            }
            if s.phase == Phase::Handshake && !p.snapshot {
                s.phase = Phase::Transmit;
                info!(session = s.stats.session, "state HANDSHAKE -> TRANSMIT");
            }
            let send_ns = mono_ns();
            match self.md.send(&self.pkt[..p.len], p.id) {
                Ok(Sent::Ok) => {
                    s.next = None;
                    s.pacer.sent();
                    s.stats.counters.packets_sent += 1;
                    let prev = (s.stats.last_send_ns != 0).then_some(s.stats.last_send_ns);
                    if s.stats.first_send_ns == 0 {
                        s.stats.first_send_ns = send_ns;
                    }
                    s.stats.last_send_ns = send_ns;
                    s.stats.counters.snapshot_packets += u64::from(p.snapshot);
                    let lateness = send_ns.saturating_sub(p.deadline);
                    let _ = s.stats.pacing_error.record(lateness.max(1));
                    if lateness
                        > u64::try_from(self.cfg.late_threshold.as_nanos()).unwrap_or(u64::MAX)
                    {
                        s.stats.counters.late += 1;
                    }
                    s.sends
                        .entry(p.id)
                        .and_modify(|t| t.last = send_ns)
                        .or_insert(SendTimes {
                            first: send_ns,
                            last: send_ns,
                            ktx_first: None,
                            prev,
                        });
                    sent_any = true;
                }
                Ok(Sent::WouldBlock) => {
                    s.stats.counters.send_retries += 1;
                    break;
                }
                Err(e) => {
                    // Not a full buffer: a hard error (no route...). Retried and counted.
                    s.stats.counters.send_retries += 1;
                    warn!("market-data send: {e}");
                    break;
                }
            }
        }
        if let Some(r) = end {
            self.end_session(r);
        }
        sent_any
    }
}

/// Reads lines until one formats into a packet (malformed lines are counted and skipped).
fn next_packet(
    s: &mut Session,
    formatter: &mut dyn PacketFormatter,
    out: &mut [u8],
) -> Result<Option<Pending>, ReadError> {
    let Some(reader) = &mut s.reader else {
        return Ok(None);
    };
    loop {
        if !reader.next_raw()? {
            return Ok(None);
        }
        // One parse per line: it validates the line and feeds the formatter.
        let line = reader.line();
        match proto::md::parse_line(line, reader.amount_decimals()) {
            Err(error) => {
                s.stats.counters.malformed_lines += 1;
                warn!(
                    session = s.stats.session,
                    line_no = reader.line_no(),
                    "malformed line skipped: {error}"
                );
            }
            Ok(parsed) => match formatter.format(line, &parsed, out) {
                Some(len) => {
                    let id = parsed.local_timestamp;
                    let deadline = s.pacer.deadline(id);
                    return Ok(Some(Pending {
                        len,
                        id,
                        snapshot: parsed.is_snapshot,
                        deadline,
                    }));
                }
                None => {
                    s.stats.counters.malformed_lines += 1;
                    warn!(
                        session = s.stats.session,
                        line_no = reader.line_no(),
                        "line does not fit a packet: skipped"
                    );
                }
            },
        }
    }
}
