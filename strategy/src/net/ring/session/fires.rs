//! Completing the XDP program's fires (the `xdp-tx` path), in the program's order.
//!
//! A fire's line is the book's next update after every frame the program counted before
//! it. The program may fire while user space is still behind (frames before the trigger
//! pending in the RX ring: `strategy_common::xtx::pending_kinds`), so a record is held
//! ([`Delegation::take_ready`]) until user space has applied every frame before it; then
//! its line goes through the engine, which must decide the same order. A record is
//! completed earlier only when the frames before it cannot come any more: a later frame
//! arrived (they were lost on the way), the RX ring stayed empty for
//! [`crate::net::af_xdp::xtx::HOLD_NS`], user space must send an order of its own (the
//! stream must carry the program's bytes first), or the session ends.

use std::io;

use hostsys::mono_ns;
use proto::order::{OrderRepr, ORDER_LEN};
use smoltcp::socket::tcp;

use super::{io_other, now, send_order, send_through_stack, Opened, Session};
use crate::net::af_xdp::xtx::Take;
use crate::net::ring::{RxRing, TxRing};
use crate::net::Hot;

/// When [`complete_fires`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Completing {
    /// In the session: the fires [`Take`] lets through; the session goes on.
    Running(Take),
    /// At the session's end: every fire, held or not; record what the program sent;
    /// smoltcp only if it can still send.
    AtEnd,
}

/// Completes the program's fires (the `xdp-tx` path): for each, applies its line through the
/// hot path (the engine must decide the same order), queues the same 21 bytes in smoltcp at
/// the sequence number the program used with the tap keeping smoltcp's copy off the wire,
/// and records the order with the program's stamps and the user-space time it took. A fire
/// the program claimed but could not send is handled as a received packet. Returns the
/// records handled.
#[inline(never)]
pub(super) fn complete_fires<R: RxRing, T: TxRing>(
    s: &mut Session<R, T>,
    hot: &mut Hot<'_>,
    when: Completing,
) -> io::Result<u64> {
    let Session {
        sockets,
        iface,
        tcp,
        plane: Opened { dev, xtx, .. },
        ..
    } = s;
    let Some(x) = xtx else { return Ok(0) };
    let mut handled = 0;
    let take = match when {
        Completing::Running(t) => t,
        Completing::AtEnd => Take::Now,
    };
    while let Some(rec) = x.take_ready(take) {
        handled += 1;
        if rec.t_tx_ns == 0 {
            // Claimed, not sent: the line is a packet user space received.
            x.claimed_unsent(&rec);
            if let Some(p) = hot.on_packet_at(rec.line(), rec.t_start_ns) {
                send_through_stack(sockets, iface, *tcp, dev, hot, p)?;
            }
            continue;
        }
        let t0 = mono_ns();
        let order = OrderRepr {
            qty: rec.qty,
            price: rec.price,
            side: if rec.side == 0 {
                proto::order::Side::Buy
            } else {
                proto::order::Side::Sell
            },
            trigger_id: rec.trigger_id,
        };
        let decided = hot.on_packet_at(rec.line(), rec.t_start_ns);
        let mismatched = decided.map(|p| p.order) != Some(order);
        let gap = decided.map(|p| p.gap).unwrap_or_default();
        let mut bytes = [0u8; ORDER_LEN];
        order.emit(&mut proto::order::Packet::new_unchecked(&mut bytes[..]));
        // The exchange has these bytes: smoltcp must account for them, or every later
        // byte would carry a wrong sequence number. A full send buffer ends the session
        // (at the end it is over anyway).
        let sock = sockets.get_mut::<tcp::Socket>(*tcp);
        let queued = sock.may_send() && send_order(sock, &order);
        if queued {
            dev.tap.queued(ORDER_LEN);
            dev.tap.suppress(rec.seq, bytes);
            iface.poll(now(), dev, sockets);
        }
        // The order is on the wire whatever happens here: it is recorded.
        let user_ns = mono_ns().saturating_sub(t0);
        x.completed(&rec, mismatched, user_ns);
        if when == Completing::AtEnd {
            x.settled();
        }
        if mismatched {
            tracing::warn!(
                ?order,
                ?decided,
                "xdp-tx: the engine disagrees with the program's order"
            );
        }
        hot.delegated(order, (rec.t_start_ns, rec.t_tx_ns), user_ns, gap);
        if !queued && matches!(when, Completing::Running(_)) {
            // smoltcp's stream would no longer match the exchange's.
            return Err(io_other(
                "xdp-tx: no room in smoltcp's send buffer to complete a delegated send",
            ));
        }
    }
    Ok(handled)
}
