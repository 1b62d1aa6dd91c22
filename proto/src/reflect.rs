//! The floor's marked packets: a measurement-only extension of the market-data packet.
//!
//! To measure a path's floor (its tick-to-trade with the strategy's work taken out), the
//! exchange appends [`MARK_LEN`] bytes to the first packet of each trigger id it is told to
//! mark (`exchange serve --mark-ids`): [`MARK`] and the id, little-endian. A strategy in
//! reflect mode (`strategy run --reflect`) answers a marked packet at once with
//! [`reflect_order`], reading nothing else of it (no parse, no book); every other packet it
//! drops. Never on the wire in a normal run.

use crate::order::{OrderRepr, Side};

/// The marker byte in front of the id.
pub const MARK: u8 = b'!';
/// Bytes the mark adds to a packet.
pub const MARK_LEN: usize = 9;

/// Writes the mark for `id` at the end of a payload: `out` must hold [`MARK_LEN`] bytes.
pub fn write_mark(out: &mut [u8; MARK_LEN], id: u64) {
    out[0] = MARK;
    out[1..].copy_from_slice(&id.to_le_bytes());
}

/// The id a marked payload carries (None: not marked).
#[inline]
pub fn marked_id(payload: &[u8]) -> Option<u64> {
    let (_, tail) = payload.split_last_chunk::<MARK_LEN>()?;
    if tail[0] != MARK {
        return None;
    }
    let mut id = [0u8; 8];
    id.copy_from_slice(&tail[1..]);
    Some(u64::from_le_bytes(id))
}

/// The order reflect mode sends for trigger `id`: the smallest valid buy.
pub fn reflect_order(id: u64) -> OrderRepr {
    OrderRepr {
        qty: 1,
        price: 1,
        side: Side::Buy,
        trigger_id: id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mark_reads_back_and_lines_are_not_marks() {
        let mut pkt = b"deribit,BTC-PERPETUAL,1,2,false,ask,6593.5,20750".to_vec();
        assert_eq!(marked_id(&pkt), None);
        let mut m = [0u8; MARK_LEN];
        write_mark(&mut m, 1_585_699_200_089_658);
        pkt.extend_from_slice(&m);
        assert_eq!(marked_id(&pkt), Some(1_585_699_200_089_658));
        assert_eq!(marked_id(&m), Some(1_585_699_200_089_658), "a bare mark");
        assert_eq!(marked_id(&m[1..]), None, "too short");
        let o = reflect_order(7);
        assert_eq!(OrderRepr::decode(&o.to_bytes()), Ok(o), "a valid order");
    }
}
