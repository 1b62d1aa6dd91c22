//! Market-data replay inside the event loop: every packet that is due is formatted from the
//! next line and sent (a bounded batch per turn), the kernel TX timestamps are collected
//! from the error queue, and the send times of each trigger id are kept for tick-to-trade.

use hostsys::clock::mono_ns;
use tracing::{error, info, warn};

use super::{Pending, Phase, Server, Session, SEND_BATCH};
use crate::formatter::PacketFormatter;
use crate::md_publisher::HEADROOM;
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
        if let Err(e) = self.md.drain_tx_timestamps(|id, ts| {
            if let Some(t) = sends.get_mut(id) {
                if let Some(sw) = ts.sw {
                    t.ktx_first.get_or_insert(sw);
                }
                if let Some(hw) = ts.hw {
                    t.khw_first.get_or_insert(hw);
                }
            }
        }) {
            warn!("reading TX timestamps: {e}");
        }
    }

    /// Sends the packets that are due, in file order, up to `SEND_BATCH` in one `sendmmsg`
    /// (a packet is never sent before its deadline: the publisher reads ahead by at most one
    /// packet that is not due); returns whether anything was sent.
    pub(super) fn publish_due(&mut self) -> bool {
        // One batch per turn of the event loop: orders are read between batches.
        match self.fill_queue() {
            Err(reason) => {
                self.end_session(reason);
                false
            }
            Ok(0) => false,
            Ok(due) => self.send_queued(due).is_some_and(|n| n > 0),
        }
    }

    /// Reads and formats packets into the queue until it is full or its last packet is not
    /// yet due (or the file ends: then the grace period starts once the queue is empty);
    /// returns how many queued packets are due.
    fn fill_queue(&mut self) -> Result<usize, EndReason> {
        let Some(s) = &mut self.session else {
            return Ok(0);
        };
        if matches!(s.phase, Phase::Grace { .. }) {
            return Ok(0);
        }
        let now = mono_ns();
        while s.queue.len() < SEND_BATCH && s.queue.last().is_none_or(|p| p.deadline <= now) {
            let max = HEADROOM + self.md.max_payload().min(self.pkts[0].len() - HEADROOM);
            let slot = &mut self.pkts[s.queue.len()][HEADROOM..max];
            match next_packet(s, self.formatter.as_mut(), slot) {
                Ok(Some(mut p)) => {
                    let first = s.last_id_read.replace(p.id) != Some(p.id);
                    let marked = self
                        .cfg
                        .mark_ids
                        .as_ref()
                        .is_some_and(|m| m.contains(&p.id));
                    if first && marked {
                        // The floor's runs: the id after the payload (it was formatted with
                        // room to spare: `max` is the slot's end, the mark is 9 bytes).
                        if let Some(tail) = slot
                            .get_mut(p.len..p.len + proto::reflect::MARK_LEN)
                            .and_then(|t| t.first_chunk_mut::<{ proto::reflect::MARK_LEN }>())
                        {
                            proto::reflect::write_mark(tail, p.id);
                            p.len += proto::reflect::MARK_LEN;
                        }
                    }
                    s.queue.push(p);
                }
                Ok(None) => {
                    s.reader = None; // close the file
                    break;
                }
                Err(e) => {
                    error!(session = s.stats.session, "{e}");
                    return Err(EndReason::FileError);
                }
            }
        }
        if s.queue.is_empty() && s.reader.is_none() {
            let until_ns = mono_ns() + u64::try_from(self.cfg.grace.as_nanos()).unwrap_or(u64::MAX);
            info!(
                session = s.stats.session,
                "end of file: grace period {:?}", self.cfg.grace
            );
            s.phase = Phase::Grace { until_ns };
            return Ok(0);
        }
        Ok(s.queue.iter().take_while(|p| p.deadline <= now).count())
    }

    /// Sends the first `due` queued packets in one `sendmmsg` and records the ones the
    /// kernel took; the rest move to the front of the queue, in order. Returns how many
    /// were sent (None: a hard error, counted as a retry).
    fn send_queued(&mut self, due: usize) -> Option<usize> {
        let s = self.session.as_mut()?;
        let mut bufs: [&[u8]; SEND_BATCH] = [&[]; SEND_BATCH];
        let mut ids = [0u64; SEND_BATCH];
        let mut ranges = [const { 0..0 }; SEND_BATCH];
        for (i, p) in s.queue[..due].iter().enumerate() {
            ranges[i] = self.md.frame(&mut self.pkts[i], p.len);
            ids[i] = p.id;
        }
        for (i, r) in ranges[..due].iter().enumerate() {
            bufs[i] = &self.pkts[i][r.clone()];
        }
        // The send time is taken as the packets are handed to the kernel: on a veth the call
        // also runs the receiver's stack (and, for `xdp-tx`, the order's way back), which
        // a stamp after it would leave out of the user-clock tick-to-trade.
        let send_ns = mono_ns();
        let sent = match self.md.send_batch(&bufs[..due], &ids[..due]) {
            Ok(n) => n,
            Err(e) => {
                // Not a full buffer: a hard error (no route...). Retried and counted.
                s.stats.counters.send_retries += 1;
                warn!("market-data send: {e}");
                return None;
            }
        };
        let late_ns = u64::try_from(self.cfg.late_threshold.as_nanos()).unwrap_or(u64::MAX);
        for p in &s.queue[..sent] {
            if s.phase == Phase::Handshake && !p.snapshot {
                s.phase = Phase::Transmit;
                info!(session = s.stats.session, "state HANDSHAKE -> TRANSMIT");
            }
            s.stats.counters.packets_sent += 1;
            let prev = (s.stats.last_send_ns != 0).then_some(s.stats.last_send_ns);
            if s.stats.first_send_ns == 0 {
                s.stats.first_send_ns = send_ns;
            }
            s.stats.last_send_ns = send_ns;
            s.stats.counters.snapshot_packets += u64::from(p.snapshot);
            let lateness = send_ns.saturating_sub(p.deadline);
            let _ = s.stats.pacing_error.record(lateness.max(1));
            if lateness > late_ns {
                s.stats.counters.late += 1;
            }
            s.sends.record(p.id, send_ns, prev);
        }
        if sent < due {
            s.stats.counters.send_retries += 1;
        }
        // The unsent packets (and a read-ahead one not yet due) move to the front, in order.
        let rest = if sent == 0 { 0 } else { s.queue.len() - sent };
        for i in 0..rest {
            let end = HEADROOM + s.queue[sent + i].len;
            let (front, back) = self.pkts.split_at_mut(sent + i);
            front[i][HEADROOM..end].copy_from_slice(&back[0][HEADROOM..end]);
        }
        s.queue.drain(..sent);
        Some(sent)
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
                    let deadline = s.pacer.next_deadline(id);
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
