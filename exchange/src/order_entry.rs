//! Framing of the order-entry TCP stream into 21-byte messages.
//!
//! TCP is a stream: one `recv` may return half a message or several. [`OrderStream`] keeps a
//! fixed buffer: the caller reads into [`OrderStream::spare`], [`OrderStream::commit`]s the
//! byte count, then [`OrderStream::pop`]s whole messages; a partial tail is kept for the
//! next read. No allocation after construction.

use proto::order::ORDER_LEN;

/// Buffer capacity: enough for 195 messages per read.
pub const CAPACITY: usize = 4096;

/// The reassembly buffer of one connection.
#[derive(Debug)]
pub struct OrderStream {
    buf: Box<[u8; CAPACITY]>,
    start: usize,
    end: usize,
    /// Bytes of the stream taken out so far (messages popped, bytes cleared).
    consumed: u64,
}

impl Default for OrderStream {
    fn default() -> Self {
        Self::new()
    }
}

impl OrderStream {
    /// An empty stream.
    pub fn new() -> Self {
        Self {
            buf: Box::new([0; CAPACITY]),
            start: 0,
            end: 0,
            consumed: 0,
        }
    }

    /// Where the next message starts in the connection's byte stream: every byte taken out
    /// before it, whole messages and cleared bytes alike.
    pub fn offset(&self) -> u64 {
        self.consumed
    }

    /// Free space to read into (compacts the partial tail to the front first).
    pub fn spare(&mut self) -> &mut [u8] {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        &mut self.buf[self.end..]
    }

    /// Bytes to read to complete the next message (the exchange reads one order per
    /// `recv`, so that each gets its own receive stamps).
    pub fn to_complete(&self) -> usize {
        ORDER_LEN - (self.end - self.start) % ORDER_LEN
    }

    /// Marks `n` bytes of [`Self::spare`] as read.
    pub fn commit(&mut self, n: usize) {
        self.end = (self.end + n).min(CAPACITY);
    }

    /// The next whole message, if one is buffered.
    pub fn pop(&mut self) -> Option<[u8; ORDER_LEN]> {
        let msg = self.buf.get(self.start..self.start + ORDER_LEN)?;
        if self.start + ORDER_LEN > self.end {
            return None;
        }
        let mut out = [0u8; ORDER_LEN];
        out.copy_from_slice(msg);
        self.start += ORDER_LEN;
        self.consumed += ORDER_LEN as u64;
        Some(out)
    }

    /// Bytes of an incomplete message waiting for the rest.
    pub fn pending(&self) -> usize {
        self.end - self.start
    }

    /// Forgets everything buffered.
    pub fn clear(&mut self) {
        self.consumed += (self.end - self.start) as u64;
        self.start = 0;
        self.end = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use proto::order::{OrderRepr, Side};

    fn feed(s: &mut OrderStream, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let spare = s.spare();
            let n = spare.len().min(bytes.len());
            spare[..n].copy_from_slice(&bytes[..n]);
            s.commit(n);
            bytes = &bytes[n..];
        }
    }

    #[test]
    fn cleared_bytes_count_in_the_offset() {
        let mut s = OrderStream::new();
        feed(&mut s, &[1, 2, 3, 4, 5]);
        s.clear();
        let order = OrderRepr {
            qty: 1,
            price: 2,
            side: Side::Buy,
            trigger_id: 3,
        };
        feed(&mut s, &order.to_bytes());
        assert_eq!(s.offset(), 5);
        assert!(s.pop().is_some());
        assert_eq!(s.offset(), 5 + ORDER_LEN as u64);
    }

    proptest! {
        #[test]
        fn any_split_yields_the_same_messages(count in 1usize..50, cuts in proptest::collection::vec(1usize..60, 1..40)) {
            let orders: Vec<OrderRepr> = (0..count)
                .map(|i| OrderRepr { qty: i as u32 + 1, price: 100 + i as i64, side: if i % 2 == 0 { Side::Buy } else { Side::Sell }, trigger_id: i as u64 })
                .collect();
            let wire: Vec<u8> = orders.iter().flat_map(|o| o.to_bytes()).collect();
            let mut s = OrderStream::new();
            let mut got = Vec::new();
            let mut offsets = Vec::new();
            let mut at = 0;
            for cut in cuts.iter().cycle() {
                if at >= wire.len() { break; }
                let end = (at + cut).min(wire.len());
                feed(&mut s, &wire[at..end]);
                at = end;
                let mut off = s.offset();
                while let Some(m) = s.pop() {
                    offsets.push(off);
                    off = s.offset();
                    got.push(OrderRepr::decode(&m).expect("valid"));
                }
            }
            prop_assert_eq!(got, orders);
            let expected: Vec<u64> = (0..count as u64).map(|i| i * ORDER_LEN as u64).collect();
            prop_assert_eq!(offsets, expected);
            prop_assert_eq!(s.pending(), 0);
        }
    }

    #[test]
    fn partial_tail_waits() {
        let mut s = OrderStream::new();
        feed(&mut s, &[1; 30]);
        assert!(s.pop().is_some());
        assert!(s.pop().is_none());
        assert_eq!(s.pending(), 9);
        feed(&mut s, &[1; 12]);
        assert!(s.pop().is_some());
        assert_eq!(s.pending(), 0);
    }
}
