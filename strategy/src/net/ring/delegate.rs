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

use smoltcp::wire::{EthernetFrame, EthernetProtocol, IpProtocol, Ipv4Packet, TcpPacket};

use strategy_common::xtx::{Template, HEADER_LEN, ORDER_LEN};

/// The tap's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TapStats {
    /// Delegated segments smoltcp built and the tap kept off the wire.
    pub suppressed: u64,
    /// Templates taken (smoltcp segments whose headers changed).
    pub templates: u64,
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
    /// completion of a delegated send: keep it off the wire.
    pub fn suppress(&mut self, seq: u32, bytes: [u8; ORDER_LEN]) {
        self.suppress = Some((seq, bytes));
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
        let Ok(eth) = EthernetFrame::new_checked(frame) else {
            return false;
        };
        if eth.ethertype() != EthernetProtocol::Ipv4 {
            return false;
        }
        let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else {
            return false;
        };
        if ip.next_header() != IpProtocol::Tcp {
            return false;
        }
        let ip_hl = usize::from(ip.header_len());
        let Ok(tcp) = TcpPacket::new_checked(ip.payload()) else {
            return false;
        };
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
        }
        false
    }
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

    #[test]
    fn suppresses_exactly_the_delegated_segment_once() {
        let mut tap = TxTap::new(true);
        tap.observe(&segment(1000, 0, SYN, &[]));
        tap.queued(ORDER_LEN);
        tap.suppress(1001, [9; ORDER_LEN]);
        assert!(
            !tap.observe(&segment(1001, 7, PSH_ACK, &[8; ORDER_LEN])),
            "other bytes go out"
        );
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
}
