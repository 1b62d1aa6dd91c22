//! Order entry inside the event loop: the session's connection read in place, one order per
//! `recv` (each read asks for exactly the bytes that complete the next message), so that
//! every order has its own receive time and the kernel stamp of the segment that completed
//! it (orders GRO merged into one segment share that one); the bytes still queued behind it
//! are read with SIOCINQ and written in its row (`queued_behind`). Each order is decoded,
//! matched to the send times of its trigger id, counted, logged and written as a row. Bytes
//! before TRANSMIT are counted and rejected.

use std::io::{self, Write};
use std::os::fd::AsRawFd;

use hostsys::clock::mono_ns;
use hostsys::errqueue as sys;
use mdfile::orders::{Gap, OrderRow, Timing};
use proto::order::OrderRepr;
use tracing::{error, info, warn};

use super::{Phase, Server};
use crate::results::EndReason;

impl Server {
    pub(super) fn read_conn(&mut self) {
        let mut end = None;
        loop {
            let Some(s) = &mut self.session else { return };
            let fd = s.conn.as_raw_fd();
            let want = s.stream.to_complete();
            let spare = s.stream.spare();
            let n = want.min(spare.len());
            match sys::recv_timestamped(fd, &mut spare[..n]) {
                Ok((0, _)) => {
                    end = Some(EndReason::Disconnected);
                    break;
                }
                Ok((n, krx)) => {
                    let recv_ns = mono_ns();
                    s.stream.commit(n);
                    if s.phase == Phase::Handshake {
                        s.stats.counters.rejected_bytes += n as u64;
                        s.stream.clear();
                        warn!(
                            session = s.stats.session,
                            bytes = n,
                            "rejected: order bytes during HANDSHAKE"
                        );
                        continue;
                    }
                    // Orders waiting behind this one (read only when one is complete).
                    let behind = (s.stream.to_complete() == proto::order::ORDER_LEN).then(|| {
                        hostsys::socket::inq(fd).unwrap_or(0) / proto::order::ORDER_LEN as u32
                    });
                    self.handle_orders(recv_ns, krx, behind);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    info!("order connection: {e}");
                    end = Some(EndReason::Disconnected);
                    break;
                }
            }
        }
        if let Some(r) = end {
            self.end_session(r);
        }
    }

    pub(super) fn handle_orders(
        &mut self,
        recv_ns: u64,
        krx: hostsys::errqueue::Stamps,
        behind: Option<u32>,
    ) {
        self.drain_tx_timestamps();
        let Some(s) = &mut self.session else { return };
        loop {
            let stream_off = s.stream.offset();
            let Some(msg) = s.stream.pop() else { break };
            if self.cfg.accept_heartbeats && proto::order::is_heartbeat(&msg) {
                s.stats.counters.heartbeats += 1;
                continue;
            }
            match OrderRepr::decode(&msg) {
                Ok(order) => match s.sends.get(order.trigger_id) {
                    Some(t) => {
                        let timing = Timing {
                            send_first_ns: t.first,
                            send_last_ns: t.last,
                            recv_ns,
                            ktx_first_ns: t.ktx_first,
                            krx_ns: krx.sw,
                            queued_behind: behind,
                            htx_first_ns: t.khw_first,
                            hrx_ns: krx.hw,
                            stream_off: Some(stream_off),
                        };
                        let gap = Gap {
                            order_ns: s.last_order_recv_ns.map(|p| recv_ns.saturating_sub(p)),
                            md_ns: t.prev.map(|p| t.first.saturating_sub(p)),
                        };
                        s.last_order_recv_ns = Some(recv_ns);
                        let row = OrderRow {
                            session: s.stats.session,
                            order,
                            gap,
                            timing: Some(timing),
                            delay_ns: None,
                            stages: None,
                        };
                        s.stats.counters.orders_accepted += 1;
                        let _ = s
                            .stats
                            .t2t_user
                            .record(recv_ns.saturating_sub(t.first).max(1));
                        let _ = s
                            .stats
                            .t2t_user_last
                            .record(recv_ns.saturating_sub(t.last).max(1));
                        if let Some(k) = timing.kernel_t2t_ns() {
                            let _ = s.stats.t2t_kernel.record(k.max(1));
                        }
                        if let Some(h) = timing.hw_t2t_ns() {
                            let _ = s.stats.t2t_hw.record(h.max(1));
                        }
                        if self.cfg.log_orders {
                            let _ = writeln!(
                                self.out,
                                "order session={} trigger_id={} side={} price={} qty={} recv_ns={} t2t_ns={} kt2t_ns={}",
                                row.session,
                                order.trigger_id,
                                order.side.as_str(),
                                proto::decimal::Fixed(order.price, proto::PRICE_DECIMALS),
                                order.qty,
                                recv_ns,
                                recv_ns.saturating_sub(t.first),
                                timing.kernel_t2t_ns().map_or_else(|| "-".to_owned(), |v| v.to_string()),
                            );
                        }
                        if let Err(e) = self.sink.order(&row) {
                            error!("writing results: {e}");
                        }
                    }
                    None => {
                        s.stats.counters.unknown_trigger += 1;
                        warn!(
                            session = s.stats.session,
                            trigger_id = order.trigger_id,
                            "order with an unknown trigger id"
                        );
                    }
                },
                Err(e) => {
                    s.stats.counters.invalid += 1;
                    warn!(session = s.stats.session, "invalid order message: {e}");
                }
            }
        }
    }
}
