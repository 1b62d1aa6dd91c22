//! Delegated sends over smoltcp: the stack's view of the order connection taken from the
//! segments it emits, and the one segment it must not emit.
//!
//! On the `xdp-tx` path the XDP program sends an order segment itself, with the sequence
//! and ACK numbers of a template taken from smoltcp's last segment (the model of
//! OpenOnload's `onload_delegated_send_prepare` / `_complete`). [`TxTap`] watches every TCP
//! segment smoltcp builds on the way to the ring: it tracks `snd_nxt` (the next new sequence
//! number), keeps the last segment's headers as the template and says whether every byte
//! queued in smoltcp has been sent at least once (only then is the template's sequence
//! number the one the next order must carry). To complete a delegated send, user space
//! queues the same 21 bytes in smoltcp and arms [`TxTap::suppress`]: when smoltcp emits the
//! segment with that sequence number and those bytes, the tap drops it (the exchange already
//! has it), and smoltcp's send state is what it would be had it sent the order itself, so
//! its ACK handling and any retransmission stay correct. A retransmission of those bytes
//! (the program's segment was lost) is not suppressed.
//!
//! The suppression is bounded: a segment that covers its sequence number with other bytes
//! (a retransmission that merged bytes) or an acknowledgment past it ends it (a copy of
//! bytes the exchange already has is harmless, TCP discards it; a copy held back that the
//! exchange needs is not). The tap also reads the exchange's segments ([`TxTap::observe_rx`]:
//! the acknowledged edge, the window and its scale from the SYN-ACK), so that the program
//! is armed only when the window has room for the order, and smoltcp's copy is kept off
//! the wire only when the program's segment fitted the window.

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    EthernetFrame, EthernetProtocol, IpProtocol, Ipv4Packet, TcpControl, TcpPacket, TcpRepr,
};

use strategy_common::xtx::{Template, HEADER_LEN, ORDER_LEN};

/// The tap's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TapStats {
    /// Delegated segments smoltcp built and the tap kept off the wire.
    pub suppressed: u64,
    /// Templates taken (smoltcp segments whose headers changed).
    pub templates: u64,
    /// Suppressions ended without a match (a merged retransmission, or the exchange
    /// acknowledged the bytes first): smoltcp's copy went out.
    #[serde(default)]
    pub suppress_ended: u64,
    /// Completions not suppressed because the program's segment did not fit the window the
    /// tap last saw: smoltcp's copy went out (a duplicate the exchange discards if it had
    /// the bytes after all).
    #[serde(default)]
    pub not_suppressed: u64,
}

/// Watches smoltcp's TCP segments (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct TxTap {
    /// Off on every path but `xdp-tx` (then `observe` is never called).
    pub enabled: bool,
    iss: Option<u32>,
    snd_nxt: u32,
    queued: u64,
    template: Option<[u8; HEADER_LEN]>,
    changed: bool,
    suppress: Option<(u32, [u8; ORDER_LEN])>,
    /// Our SYN offered window scaling.
    offered_scale: bool,
    /// The exchange's window shift (0 unless both SYNs carried the option).
    peer_shift: u8,
    /// The exchange's acknowledged edge and right window edge, from its last segment.
    peer_window: Option<(u32, u32)>,
    stats: TapStats,
}

/// `a` after `b` in sequence space.
fn seq_after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

impl TxTap {
    /// A tap, on or off.
    pub fn new(enabled: bool) -> Self {
        Self {
            enabled,
            ..Self::default()
        }
    }

    /// Bytes the session put into smoltcp's send buffer.
    #[inline]
    pub fn queued(&mut self, bytes: usize) {
        self.queued += bytes as u64;
    }

    /// Has smoltcp sent every byte queued at least once (the template's sequence number is
    /// then the next new one)?
    pub fn all_sent(&self) -> bool {
        match self.iss {
            Some(iss) => self.snd_nxt == iss.wrapping_add(1).wrapping_add(self.queued as u32),
            None => false,
        }
    }

    /// The next segment smoltcp emits with sequence number `seq` and these bytes is the
    /// completion of a delegated send: keep it off the wire, if the program's segment
    /// fitted the exchange's window (else the copy goes out, counted `not_suppressed`).
    pub fn suppress(&mut self, seq: u32, bytes: [u8; ORDER_LEN]) {
        if self.fits(seq, ORDER_LEN) {
            self.suppress = Some((seq, bytes));
        } else {
            self.stats.not_suppressed += 1;
        }
    }

    /// Bytes `seq .. seq + len` lie inside the exchange's window as last seen.
    fn fits(&self, seq: u32, len: usize) -> bool {
        match self.peer_window {
            Some((_, right)) => !seq_after(seq.wrapping_add(len as u32), right),
            None => false,
        }
    }

    /// The exchange's window has room for `len` new bytes at `snd_nxt`.
    pub fn window_has_room(&self, len: usize) -> bool {
        self.fits(self.snd_nxt, len)
    }

    /// Observes a frame from the exchange (before smoltcp reads it): its acknowledgment
    /// and window, and the window scale of its SYN-ACK.
    pub fn observe_rx(&mut self, frame: &[u8]) {
        let Some((ip, tcp)) = tcp_of(frame) else {
            return;
        };
        let Ok(repr) = TcpRepr::parse(
            &tcp,
            &ip.src_addr().into(),
            &ip.dst_addr().into(),
            &ChecksumCapabilities::ignored(),
        ) else {
            return;
        };
        let Some(ack) = repr.ack_number else {
            return;
        };
        let ack = ack.0 as u32;
        let syn = repr.control == TcpControl::Syn;
        if syn {
            self.peer_shift = match repr.window_scale {
                Some(s) if self.offered_scale => s.min(14),
                _ => 0,
            };
        }
        // The window of a SYN is never scaled.
        let shift = if syn { 0 } else { self.peer_shift };
        let right = ack.wrapping_add(u32::from(repr.window_len) << shift);
        // Not a template change: the arming is republished only if the room for an order
        // came or went (the publisher compares whether it may fire).
        self.peer_window = Some((ack, right));
        if let Some((s, _)) = self.suppress {
            if !seq_after(s.wrapping_add(ORDER_LEN as u32), ack) {
                // The exchange has the bytes (from the program): nothing left to keep off.
                self.suppress = None;
                self.stats.suppress_ended += 1;
            }
        }
    }

    /// A suppression is pending.
    pub fn suppressing(&self) -> bool {
        self.suppress.is_some()
    }

    /// Has smoltcp sent a plain segment to take a template from?
    pub fn has_template(&self) -> bool {
        self.template.is_some()
    }

    /// The template for the next order segment, if smoltcp has sent a plain segment.
    pub fn template(&self) -> Option<Template> {
        let mut h = self.template?;
        h[38..42].copy_from_slice(&self.snd_nxt.to_be_bytes());
        Some(Template::new(h))
    }

    /// Takes the "headers changed since last asked" flag.
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// Counters.
    pub fn stats(&self) -> TapStats {
        self.stats
    }

    /// Observes a frame smoltcp built; `true` when it must not go on the wire.
    pub fn observe(&mut self, frame: &[u8]) -> bool {
        let Some((ip, tcp)) = tcp_of(frame) else {
            return false;
        };
        let ip_hl = usize::from(ip.header_len());
        if tcp.syn() {
            self.offered_scale = TcpRepr::parse(
                &tcp,
                &ip.src_addr().into(),
                &ip.dst_addr().into(),
                &ChecksumCapabilities::ignored(),
            )
            .is_ok_and(|r| r.window_scale.is_some());
        }
        let seq = tcp.seq_number().0 as u32;
        let payload = tcp.payload();
        let end = seq
            .wrapping_add(payload.len() as u32)
            .wrapping_add(u32::from(tcp.syn()))
            .wrapping_add(u32::from(tcp.fin()));
        if tcp.syn() {
            self.iss = Some(seq);
            self.snd_nxt = end;
        } else if self.iss.is_some() && seq_after(end, self.snd_nxt) {
            self.snd_nxt = end;
        }
        if !tcp.syn() && !tcp.fin() && !tcp.rst() {
            let plain = ip_hl == 20 && usize::from(tcp.header_len()) == 20;
            let header = frame.get(..HEADER_LEN).filter(|_| plain);
            match header {
                Some(h) => {
                    let mut h2 = [0u8; HEADER_LEN];
                    h2.copy_from_slice(h);
                    // Only the fields the template keeps matter for "changed": sequence
                    // and checksums are rewritten, the rest (ACK, window, ids) is copied.
                    h2[38..42].fill(0);
                    h2[24..26].fill(0);
                    h2[16..18].fill(0);
                    h2[50..52].fill(0);
                    if self.template != Some(h2) {
                        self.template = Some(h2);
                        self.stats.templates += 1;
                    }
                }
                // A segment with options: no template until a plain one comes.
                None => self.template = None,
            }
            self.changed = true;
        }
        if let Some((s, bytes)) = self.suppress {
            if s == seq && payload == bytes {
                self.suppress = None;
                self.stats.suppressed += 1;
                return true;
            }
            // Other bytes over that sequence number (a merged retransmission): it can no
            // longer match; this segment goes out whole.
            let covers = !payload.is_empty() && !seq_after(seq, s) && seq_after(end, s);
            if covers {
                self.suppress = None;
                self.stats.suppress_ended += 1;
            }
        }
        false
    }
}

/// The IPv4 and TCP views of one frame.
type TcpViews<'a> = (Ipv4Packet<&'a [u8]>, TcpPacket<&'a [u8]>);

/// The IPv4 and TCP views of an Ethernet frame, if it is one.
fn tcp_of(frame: &[u8]) -> Option<TcpViews<'_>> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    if eth.ethertype() != EthernetProtocol::Ipv4 {
        return None;
    }
    let ip = Ipv4Packet::new_checked(&frame[14..]).ok()?;
    if ip.next_header() != IpProtocol::Tcp {
        return None;
    }
    let hl = usize::from(ip.header_len());
    let total = usize::from(ip.total_len());
    let tcp = TcpPacket::new_checked(frame.get(14 + hl..14 + total)?).ok()?;
    Some((ip, tcp))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(seq: u32, ack: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; HEADER_LEN];
        f[..6].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        let total = (40 + payload.len()) as u16;
        f[16..18].copy_from_slice(&total.to_be_bytes());
        f[22] = 64;
        f[23] = 6;
        f[26..30].copy_from_slice(&[10, 0, 0, 2]);
        f[30..34].copy_from_slice(&[10, 0, 0, 1]);
        f[34..36].copy_from_slice(&50000u16.to_be_bytes());
        f[36..38].copy_from_slice(&9012u16.to_be_bytes());
        f[38..42].copy_from_slice(&seq.to_be_bytes());
        f[42..46].copy_from_slice(&ack.to_be_bytes());
        f[46] = 5 << 4;
        f[47] = flags;
        f[48..50].copy_from_slice(&1024u16.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    const SYN: u8 = 0x02;
    const ACK: u8 = 0x10;
    const PSH_ACK: u8 = 0x18;

    #[test]
    fn tracks_snd_nxt_and_whether_everything_queued_went_out() {
        let mut tap = TxTap::new(true);
        assert!(!tap.all_sent(), "nothing known before the SYN");
        assert!(!tap.observe(&segment(1000, 0, SYN, &[])));
        assert!(!tap.observe(&segment(1001, 7, ACK, &[])));
        assert!(tap.all_sent());
        let t = tap.template().expect("a plain segment gives a template");
        assert_eq!(t.seq(), 1001);
        tap.queued(ORDER_LEN);
        assert!(!tap.all_sent(), "21 bytes queued, not sent");
        assert!(!tap.observe(&segment(1001, 7, PSH_ACK, &[1; ORDER_LEN])));
        assert!(tap.all_sent());
        assert_eq!(tap.template().map(|t| t.seq()), Some(1022));
        // A retransmission does not move snd_nxt back.
        assert!(!tap.observe(&segment(1001, 7, PSH_ACK, &[1; ORDER_LEN])));
        assert_eq!(tap.template().map(|t| t.seq()), Some(1022));
    }

    /// The exchange's segment acknowledging `ack` with `window` (unscaled field), and a
    /// window scale option when `scale` is set (a SYN-ACK).
    fn from_exchange(ack: u32, flags: u8, window: u16, scale: Option<u8>) -> Vec<u8> {
        let mut f = segment(7, ack, flags, &[]);
        f[48..50].copy_from_slice(&window.to_be_bytes());
        if let Some(s) = scale {
            // NOP, window scale (kind 3, length 3): 24-byte TCP header.
            f.extend_from_slice(&[1, 3, 3, s]);
            f[46] = 6 << 4;
            f[16..18].copy_from_slice(&44u16.to_be_bytes());
        }
        f
    }

    /// Our SYN, with a window scale option.
    fn our_syn(seq: u32) -> Vec<u8> {
        let mut f = segment(seq, 0, SYN, &[]);
        f.extend_from_slice(&[1, 3, 3, 1]);
        f[46] = 6 << 4;
        f[16..18].copy_from_slice(&44u16.to_be_bytes());
        f
    }

    #[test]
    fn suppresses_exactly_the_delegated_segment_once() {
        let mut tap = TxTap::new(true);
        tap.observe(&segment(1000, 0, SYN, &[]));
        tap.observe_rx(&from_exchange(1001, SYN | ACK, 1024, None));
        tap.queued(ORDER_LEN);
        tap.suppress(1001, [9; ORDER_LEN]);
        assert!(
            !tap.observe(&segment(1000, 7, ACK, &[])),
            "a pure ACK goes out"
        );
        assert!(tap.suppressing());
        assert!(tap.observe(&segment(1001, 7, PSH_ACK, &[9; ORDER_LEN])));
        assert!(!tap.suppressing());
        assert!(
            !tap.observe(&segment(1001, 7, PSH_ACK, &[9; ORDER_LEN])),
            "its retransmission goes out"
        );
        assert_eq!(tap.stats().suppressed, 1);
        assert!(tap.all_sent());
    }

    #[test]
    fn a_suppression_that_can_no_longer_match_ends() {
        let mut tap = TxTap::new(true);
        tap.observe(&segment(1000, 0, SYN, &[]));
        tap.observe_rx(&from_exchange(1001, SYN | ACK, 1024, None));
        // A retransmission that merged the order with the next bytes: goes out, ends it.
        tap.queued(2 * ORDER_LEN);
        tap.suppress(1001, [9; ORDER_LEN]);
        assert!(!tap.observe(&segment(1001, 7, PSH_ACK, &[9; 2 * ORDER_LEN])));
        assert!(!tap.suppressing(), "merged bytes cannot match");
        // The exchange acknowledged the program's bytes before smoltcp sent its copy.
        tap.suppress(1043, [9; ORDER_LEN]);
        tap.observe_rx(&from_exchange(1043, ACK, 1024, None));
        assert!(tap.suppressing(), "not acknowledged yet");
        tap.observe_rx(&from_exchange(1064, ACK, 1024, None));
        assert!(!tap.suppressing(), "acknowledged: nothing left to keep off");
        assert!(!tap.observe(&segment(1043, 7, PSH_ACK, &[9; ORDER_LEN])));
        assert_eq!(tap.stats().suppress_ended, 2);
        assert_eq!(tap.stats().suppressed, 0);
    }

    #[test]
    fn arms_only_with_room_in_the_window_and_reads_its_scale() {
        let mut tap = TxTap::new(true);
        assert!(!tap.observe(&our_syn(1000)));
        assert!(
            !tap.window_has_room(ORDER_LEN),
            "no window known before the SYN-ACK"
        );
        // SYN-ACK: window 100 (never scaled), scale 4 for what follows.
        tap.observe_rx(&from_exchange(1001, SYN | ACK, 100, Some(4)));
        tap.observe(&segment(1001, 7, ACK, &[]));
        assert!(tap.window_has_room(ORDER_LEN));
        // A zero window: no room; an order then is not suppressed (smoltcp's copy is the
        // one the exchange will take).
        tap.observe_rx(&from_exchange(1001, ACK, 0, None));
        assert!(!tap.window_has_room(ORDER_LEN));
        tap.suppress(1001, [9; ORDER_LEN]);
        assert!(!tap.suppressing());
        assert_eq!(tap.stats().not_suppressed, 1);
        // Window field 2, scaled by 4: 32 bytes, room for one order, not two.
        tap.observe_rx(&from_exchange(1001, ACK, 2, None));
        assert!(tap.window_has_room(ORDER_LEN));
        assert!(!tap.window_has_room(2 * ORDER_LEN));
        // Without our offer the exchange's scale does not apply.
        let mut plain = TxTap::new(true);
        plain.observe(&segment(1000, 0, SYN, &[]));
        plain.observe_rx(&from_exchange(1001, SYN | ACK, 100, Some(4)));
        plain.observe_rx(&from_exchange(1001, ACK, 2, None));
        assert!(!plain.window_has_room(ORDER_LEN), "2 bytes unscaled");
    }
}
