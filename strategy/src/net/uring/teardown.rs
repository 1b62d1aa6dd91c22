//! The ring's end. Dropping an io_uring does not wait for its requests: the kernel cancels
//! them from a work queue afterwards, and a SEND_ZC's pages stay pinned until the exchange
//! has acknowledged the bytes (its notification). Freeing the provided buffers, the buffer
//! ring or the send slots before then would let the kernel write a received packet into
//! freed memory, or retransmit an order from memory the allocator has reused. So the path
//! cancels every request (`IORING_OP_ASYNC_CANCEL`, any), waits (bounded) for the last
//! completion of each, and keeps for the process whatever the kernel may still hold.

use std::time::{Duration, Instant};

use io_uring::{cqueue, opcode, types};

use super::{Ring, ORDER_LEN, SLOTS};

/// How long the end waits for the kernel's last completions.
pub(super) const WAIT: Duration = Duration::from_millis(200);

/// The cancel request's user data.
const UD_CANCEL: u64 = 6 << 32;

impl Ring {
    /// Cancels every request and waits up to `limit` for their last completions (each one
    /// without F_MORE; a SEND_ZC's is its notification). Records the count before and what
    /// is left in the report.
    pub(super) fn quiesce(&mut self, limit: Duration) {
        self.report.teardown.outstanding = self.outstanding as u64;
        if self.outstanding > 0 {
            let cancel = opcode::AsyncCancel2::new(types::CancelBuilder::any())
                .build()
                .user_data(UD_CANCEL);
            let deadline = Instant::now() + limit;
            if self.push(&cancel).is_ok() {
                while self.outstanding > 0 && Instant::now() < deadline {
                    // Submits the cancel, runs the kernel's pending work, waits for none.
                    let _ = self.enter_getevents();
                    for c in self.ring.completion() {
                        if !cqueue::more(c.flags()) {
                            self.outstanding = self.outstanding.saturating_sub(1);
                        }
                    }
                    std::thread::yield_now();
                }
            }
        }
        self.cqes.clear();
        self.report.teardown.left = self.outstanding as u64;
    }

    /// Keeps the memory requests may still use alive for the process (never freed, never
    /// reused): the buffers, the buffer ring and the send slots. Returns its size; nothing is
    /// outstanding against freeable memory afterwards.
    pub(super) fn keep_memory(&mut self) -> u64 {
        let bufs = std::mem::take(&mut self.bufs);
        let mut kept = bufs.len();
        std::mem::forget(bufs);
        let slots = std::mem::replace(&mut self.slots, Box::new([[0; ORDER_LEN]; SLOTS]));
        kept += std::mem::size_of_val(&*slots);
        std::mem::forget(slots);
        if let Some(br) = self.bufring.take() {
            kept += br.size();
            std::mem::forget(br);
        }
        // Nothing the kernel may still use can be freed now.
        self.outstanding = 0;
        kept as u64
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        if let Some(idx) = self.reg_ring {
            super::unregister_ring_fd(&self.ring, idx);
        }
        // Requests the kernel still holds may read or write this memory after the ring's
        // fd is gone: keep it for the process rather than free it under them.
        if self.outstanding > 0 {
            self.report.teardown.kept_bytes = self.keep_memory();
        }
    }
}
