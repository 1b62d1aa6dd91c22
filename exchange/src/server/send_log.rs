//! The send times of a session's trigger ids, kept in the order the ids were first sent.
//!
//! Ids (`local_timestamp`s) come non-decreasing in a well-formed file, so the log is an
//! append-only list of fixed-size chunks searched by bisection: appending never moves or
//! rehashes what is already there, and memory is written in order. (A hash map grew by
//! rehashing about 100 k entries at once in the middle of the replay: a stall of
//! milliseconds, measured as late packets inside 500 k/s bursts.) An id that comes again
//! after larger ones (a file out of order) is found by the same search when it is in the
//! log, and otherwise goes to a small side map.

use super::SendTimes;

/// Entries per chunk (a chunk is allocated whole and never grows).
const CHUNK: usize = 4096;

/// Send times by trigger id.
pub(super) struct SendLog {
    chunks: Vec<Vec<(u64, SendTimes)>>,
    out_of_order: rustc_hash::FxHashMap<u64, SendTimes>,
}

impl SendLog {
    /// An empty log.
    pub(super) fn new() -> Self {
        Self {
            chunks: Vec::with_capacity(64),
            out_of_order: rustc_hash::FxHashMap::default(),
        }
    }

    fn last_id(&self) -> Option<u64> {
        self.chunks.last().and_then(|c| c.last()).map(|e| e.0)
    }

    /// A packet with `id` was sent at `send_ns`, the previous packet at `prev`.
    pub(super) fn record(&mut self, id: u64, send_ns: u64, prev: Option<u64>) {
        match self.last_id() {
            Some(last) if last == id => {
                if let Some(e) = self.chunks.last_mut().and_then(|c| c.last_mut()) {
                    e.1.last = send_ns;
                }
            }
            Some(last) if id < last => {
                if let Some(t) = self.get_mut(id) {
                    t.last = send_ns;
                } else {
                    self.out_of_order
                        .insert(id, SendTimes::first_send(send_ns, prev));
                }
            }
            _ => {
                if self.chunks.last().is_none_or(|c| c.len() == CHUNK) {
                    self.chunks.push(Vec::with_capacity(CHUNK));
                }
                if let Some(c) = self.chunks.last_mut() {
                    c.push((id, SendTimes::first_send(send_ns, prev)));
                }
            }
        }
    }

    /// The chunk and index of `id` in the ordered part.
    fn find(&self, id: u64) -> Option<(usize, usize)> {
        let ci = self
            .chunks
            .partition_point(|c| c.first().is_some_and(|e| e.0 <= id))
            .checked_sub(1)?;
        let i = self.chunks[ci].binary_search_by_key(&id, |e| e.0).ok()?;
        Some((ci, i))
    }

    /// The send times of `id`.
    pub(super) fn get(&self, id: u64) -> Option<&SendTimes> {
        match self.find(id) {
            Some((c, i)) => Some(&self.chunks[c][i].1),
            None => self.out_of_order.get(&id),
        }
    }

    /// The send times of `id`, to change.
    pub(super) fn get_mut(&mut self, id: u64) -> Option<&mut SendTimes> {
        match self.find(id) {
            Some((c, i)) => Some(&mut self.chunks[c][i].1),
            None => self.out_of_order.get_mut(&id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_found_across_chunks_in_order_and_out_of_it() {
        let mut log = SendLog::new();
        // Three packets per id, ids 10, 20, 30...: several chunks.
        let ids = 3 * CHUNK as u64;
        for k in 0..ids {
            for p in 0..3 {
                log.record(10 * (k + 1), 1000 * k + p, None);
            }
        }
        assert_eq!(log.chunks.len(), 3, "appended in whole chunks");
        for k in [0, 1, CHUNK as u64 - 1, CHUNK as u64, ids - 1] {
            let t = log.get(10 * (k + 1)).expect("recorded");
            assert_eq!((t.first, t.last), (1000 * k, 1000 * k + 2));
        }
        assert!(log.get(15).is_none() && log.get(5).is_none() && log.get(u64::MAX).is_none());
        // An id seen before comes again after larger ones: its last send moves.
        log.record(20, 7, None);
        assert_eq!(log.get(20).map(|t| t.last), Some(7));
        // A new id smaller than the last: the side map.
        log.record(15, 9, Some(8));
        let t = log.get(15).expect("out of order");
        assert_eq!((t.first, t.prev), (9, Some(8)));
        log.get_mut(15).expect("there").ktx_first = Some(1);
        assert_eq!(log.get(15).and_then(|t| t.ktx_first), Some(1));
        // The ordered part still appends after it.
        log.record(10 * (ids + 1), 5, None);
        assert!(log.get(10 * (ids + 1)).is_some());
    }
}
