//! Order rows: the one type behind the CSVs the exchange writes (every order it accepted,
//! with its timing), the strategy writes (every order it sent, with the calibration delay it
//! got) and the lab reads back.
//!
//! A file says what it holds by its header: [`RowKind::Exchange`] or [`RowKind::Strategy`]
//! columns. [`read_rows`] finds the columns by name, so a reader never depends on column
//! positions, and a malformed row is an error naming the file and the line, never a panic.

use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use proto::decimal::{parse_fixed, Fixed};
use proto::order::{OrderRepr, Side};
use proto::PRICE_DECIMALS;

/// Which program wrote a file of rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowKind {
    /// The exchange: timing columns (user clock and kernel stamps).
    Exchange,
    /// The strategy: the delay injected before the send (calibration).
    Strategy,
}

/// Columns of an exchange file.
pub const EXCHANGE_HEADER: &str = "session,trigger_id,side,price,qty,send_first_ns,send_last_ns,recv_ns,t2t_first_ns,t2t_last_ns,ktx_first_ns,krx_ns,kt2t_first_ns,gap_order_ns,gap_md_ns,queued_behind,htx_first_ns,hrx_ns,ht2t_first_ns,stream_off";
/// The exchange's columns before the stream offset (files of earlier runs still read).
const EXCHANGE_HEADER_NO_OFF: &str = "session,trigger_id,side,price,qty,send_first_ns,send_last_ns,recv_ns,t2t_first_ns,t2t_last_ns,ktx_first_ns,krx_ns,kt2t_first_ns,gap_order_ns,gap_md_ns,queued_behind,htx_first_ns,hrx_ns,ht2t_first_ns";
/// The exchange's columns before the NIC hardware stamps (files of earlier runs still read).
const EXCHANGE_HEADER_NO_HW: &str = "session,trigger_id,side,price,qty,send_first_ns,send_last_ns,recv_ns,t2t_first_ns,t2t_last_ns,ktx_first_ns,krx_ns,kt2t_first_ns,gap_order_ns,gap_md_ns,queued_behind";
/// Columns of a strategy file.
pub const STRATEGY_HEADER: &str =
    "session,trigger_id,side,price,qty,delay_ns,gap_order_ns,gap_md_ns,decide_ns,send_ns,total_ns,read_ns,wire_kernel_ns,wire_nic_ns";
/// The strategy's columns before its wire stamps (files of earlier runs still read).
const STRATEGY_HEADER_NO_WIRE: &str =
    "session,trigger_id,side,price,qty,delay_ns,gap_order_ns,gap_md_ns,decide_ns,send_ns,total_ns,read_ns";
/// The strategy's columns before the read time (files of earlier runs still read).
const STRATEGY_HEADER_NO_READ: &str =
    "session,trigger_id,side,price,qty,delay_ns,gap_order_ns,gap_md_ns,decide_ns,send_ns,total_ns";

impl RowKind {
    /// The CSV header line (without newline).
    pub fn header(self) -> &'static str {
        match self {
            Self::Exchange => EXCHANGE_HEADER,
            Self::Strategy => STRATEGY_HEADER,
        }
    }
}

/// The exchange's timing of one order. Times are `CLOCK_MONOTONIC` ns (user) or
/// `CLOCK_REALTIME` ns (kernel stamps).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timing {
    /// User send time of the first packet with the trigger id.
    pub send_first_ns: u64,
    /// Of the last packet with the id.
    pub send_last_ns: u64,
    /// User receive time of the order.
    pub recv_ns: u64,
    /// Kernel TX timestamp of the first packet with the id.
    pub ktx_first_ns: Option<u64>,
    /// Kernel RX timestamp of the segment that completed the order.
    pub krx_ns: Option<u64>,
    /// Orders already in the socket behind this one when it was read (the exchange reads
    /// one order per `recv`, so each has its own receive times; under a burst the later
    /// ones waited for the reads before them).
    pub queued_behind: Option<u32>,
    /// The NIC's hardware TX stamp of the first packet with the id (its PHC clock).
    pub htx_first_ns: Option<u64>,
    /// The NIC's hardware RX stamp of the segment that completed the order.
    pub hrx_ns: Option<u64>,
    /// Where the order starts in the session's TCP byte stream (bytes the exchange read
    /// before it, heartbeats and rejected bytes included): what ties the order to the TCP
    /// segments `lab --trace` stamps by sequence number.
    pub stream_off: Option<u64>,
}

impl Timing {
    /// Tick-to-trade from the first packet with the id, user clock.
    pub fn t2t_first_ns(&self) -> u64 {
        self.recv_ns.saturating_sub(self.send_first_ns)
    }

    /// From the last packet with the id.
    pub fn t2t_last_ns(&self) -> u64 {
        self.recv_ns.saturating_sub(self.send_last_ns)
    }

    /// Kernel tick-to-trade, when both stamps exist and are ordered.
    pub fn kernel_t2t_ns(&self) -> Option<u64> {
        match (self.ktx_first_ns, self.krx_ns) {
            (Some(tx), Some(rx)) if rx >= tx => Some(rx - tx),
            _ => None,
        }
    }

    /// Tick-to-trade on the NIC's clock, when both hardware stamps exist and are ordered.
    pub fn hw_t2t_ns(&self) -> Option<u64> {
        match (self.htx_first_ns, self.hrx_ns) {
            (Some(tx), Some(rx)) if rx >= tx => Some(rx - tx),
            _ => None,
        }
    }
}

/// How long the order path sat idle before an order: the axis every latency figure
/// depends on (a path 400 ms idle is several times slower than one 4 ms idle).
///
/// At the exchange: `order_ns` from the previous order's receive to this one's, `md_ns` from
/// the previous market-data packet's send to the trigger packet's. At the strategy:
/// `order_ns` from the previous order's hand-off to this trigger packet's read (the time
/// the order path was unused), `md_ns` from the previous packet's read to this one's.
/// `None` for the first order (or packet) of a session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Gap {
    /// Since the previous order, ns.
    pub order_ns: Option<u64>,
    /// Since the previous market-data packet, ns.
    pub md_ns: Option<u64>,
}

/// Where the strategy's time went for one order, ns from the trigger packet's read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stages {
    /// Parse, book update and trigger decision.
    pub decide_ns: u64,
    /// Encode and hand-off: the path's send (syscall, or smoltcp's egress and the ring kick).
    pub send_ns: u64,
    /// Packet read to send returned (includes an injected delay).
    pub total_ns: u64,
    /// When the trigger packet was read (`CLOCK_MONOTONIC` ns; on `xdp-tx` the program's
    /// stamp): places the stages on the clock `lab --trace` stamps the kernels with. `None`
    /// in files of earlier runs.
    pub read_ns: Option<u64>,
    /// The trigger packet's kernel receive stamp to the order's kernel transmit stamp, on
    /// this host (`strategy run --wire-stamps`; `None` without, or when a stamp is missing).
    pub wire_kernel_ns: Option<u64>,
    /// The same on the NIC's clock, where the interface has hardware stamps.
    pub wire_nic_ns: Option<u64>,
}

/// One order of a session, as either program saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrderRow {
    /// Session number.
    pub session: u64,
    /// The order.
    pub order: OrderRepr,
    /// Idle time before it.
    pub gap: Gap,
    /// The exchange's timing (exchange files).
    pub timing: Option<Timing>,
    /// The delay injected before the send, ns (strategy files).
    pub delay_ns: Option<u64>,
    /// The strategy's stages (strategy files).
    pub stages: Option<Stages>,
}

struct Opt(Option<u64>);

impl fmt::Display for Opt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(v) => write!(f, "{v}"),
            None => Ok(()),
        }
    }
}

impl OrderRow {
    /// Writes the row in the columns of `kind` (missing values are empty).
    pub fn write(&self, kind: RowKind, out: &mut impl Write) -> io::Result<()> {
        let o = &self.order;
        write!(
            out,
            "{},{},{},{},{}",
            self.session,
            o.trigger_id,
            o.side.as_str(),
            Fixed(o.price, PRICE_DECIMALS),
            o.qty
        )?;
        let gap = (Opt(self.gap.order_ns), Opt(self.gap.md_ns));
        match kind {
            RowKind::Strategy => {
                let st = self.stages;
                writeln!(
                    out,
                    ",{},{},{},{},{},{},{},{},{}",
                    Opt(self.delay_ns),
                    gap.0,
                    gap.1,
                    Opt(st.map(|s| s.decide_ns)),
                    Opt(st.map(|s| s.send_ns)),
                    Opt(st.map(|s| s.total_ns)),
                    Opt(st.and_then(|s| s.read_ns)),
                    Opt(st.and_then(|s| s.wire_kernel_ns)),
                    Opt(st.and_then(|s| s.wire_nic_ns)),
                )
            }
            RowKind::Exchange => {
                let t = self.timing.unwrap_or_default();
                let known = self.timing.is_some();
                let user = |v: u64| Opt(known.then_some(v));
                writeln!(
                    out,
                    ",{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
                    user(t.send_first_ns),
                    user(t.send_last_ns),
                    user(t.recv_ns),
                    user(t.t2t_first_ns()),
                    user(t.t2t_last_ns()),
                    Opt(t.ktx_first_ns),
                    Opt(t.krx_ns),
                    Opt(t.kernel_t2t_ns()),
                    gap.0,
                    gap.1,
                    Opt(t.queued_behind.map(u64::from)),
                    Opt(t.htx_first_ns),
                    Opt(t.hrx_ns),
                    Opt(t.hw_t2t_ns()),
                    Opt(t.stream_off),
                )
            }
        }
    }
}

/// A file of rows that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RowError {
    /// Reading failed.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The header is not one of the known ones.
    #[error("{path}: not an order-row file (header `{header}`)")]
    Header {
        /// The file.
        path: PathBuf,
        /// The header found.
        header: String,
    },
    /// A row does not parse.
    #[error("{path} line {line}: {what}")]
    Row {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        what: String,
    },
}

/// Reads a file of rows (either kind, by its header). An empty or missing file is an I/O
/// error; a file with only a header has no rows.
pub fn read_rows(path: &Path) -> Result<(RowKind, Vec<OrderRow>), RowError> {
    let text = std::fs::read_to_string(path).map_err(|source| RowError::Io {
        path: path.to_owned(),
        source,
    })?;
    parse_rows(&text).map_err(|e| match e {
        ParseRowsError::Header(header) => RowError::Header {
            path: path.to_owned(),
            header,
        },
        ParseRowsError::Row(line, what) => RowError::Row {
            path: path.to_owned(),
            line,
            what,
        },
    })
}

/// Why text did not parse as rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseRowsError {
    /// Unknown header.
    Header(String),
    /// Line number (1-based) and what is wrong.
    Row(usize, String),
}

/// Parses the text of a file of rows.
pub fn parse_rows(text: &str) -> Result<(RowKind, Vec<OrderRow>), ParseRowsError> {
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default().trim_end();
    let kind = match header {
        EXCHANGE_HEADER | EXCHANGE_HEADER_NO_OFF | EXCHANGE_HEADER_NO_HW => RowKind::Exchange,
        STRATEGY_HEADER | STRATEGY_HEADER_NO_WIRE | STRATEGY_HEADER_NO_READ => RowKind::Strategy,
        other => return Err(ParseRowsError::Header(other.to_owned())),
    };
    let columns = header.split(',').count();
    let mut rows = Vec::new();
    for (i, line) in lines.enumerate() {
        if line.is_empty() {
            continue;
        }
        let line_no = i + 2;
        let f: Vec<&str> = line.split(',').collect();
        if f.len() != columns {
            return Err(ParseRowsError::Row(
                line_no,
                format!("{} fields, expected {columns}", f.len()),
            ));
        }
        parse_row(kind, &f)
            .map(|r| rows.push(r))
            .map_err(|what| ParseRowsError::Row(line_no, what))?;
    }
    Ok((kind, rows))
}

fn num(field: &str, name: &str) -> Result<u64, String> {
    field
        .parse()
        .map_err(|_| format!("{name} `{field}` is not a whole number"))
}

fn opt_num(field: &str, name: &str) -> Result<Option<u64>, String> {
    if field.is_empty() {
        Ok(None)
    } else {
        num(field, name).map(Some)
    }
}

fn parse_row(kind: RowKind, f: &[&str]) -> Result<OrderRow, String> {
    let side = match f[2] {
        "buy" => Side::Buy,
        "sell" => Side::Sell,
        other => return Err(format!("side `{other}`")),
    };
    let price = parse_fixed(f[3].as_bytes(), PRICE_DECIMALS)
        .map_err(|e| format!("price `{}`: {e:?}", f[3]))?;
    let qty = u32::try_from(num(f[4], "qty")?).map_err(|_| format!("qty `{}`", f[4]))?;
    let order = OrderRepr {
        qty,
        price,
        side,
        trigger_id: num(f[1], "trigger_id")?,
    };
    let session = num(f[0], "session")?;
    Ok(match kind {
        RowKind::Strategy => {
            let decide = opt_num(f[8], "decide_ns")?;
            let send = opt_num(f[9], "send_ns")?;
            let total = opt_num(f[10], "total_ns")?;
            let read_ns = f.get(11).map_or(Ok(None), |v| opt_num(v, "read_ns"))?;
            let wire_kernel_ns = f
                .get(12)
                .map_or(Ok(None), |v| opt_num(v, "wire_kernel_ns"))?;
            let wire_nic_ns = f.get(13).map_or(Ok(None), |v| opt_num(v, "wire_nic_ns"))?;
            OrderRow {
                session,
                order,
                gap: Gap {
                    order_ns: opt_num(f[6], "gap_order_ns")?,
                    md_ns: opt_num(f[7], "gap_md_ns")?,
                },
                timing: None,
                delay_ns: opt_num(f[5], "delay_ns")?,
                stages: match (decide, send, total) {
                    (Some(decide_ns), Some(send_ns), Some(total_ns)) => Some(Stages {
                        decide_ns,
                        send_ns,
                        total_ns,
                        read_ns,
                        wire_kernel_ns,
                        wire_nic_ns,
                    }),
                    _ => None,
                },
            }
        }
        RowKind::Exchange => OrderRow {
            session,
            order,
            gap: Gap {
                order_ns: opt_num(f[13], "gap_order_ns")?,
                md_ns: opt_num(f[14], "gap_md_ns")?,
            },
            timing: Some(Timing {
                send_first_ns: num(f[5], "send_first_ns")?,
                send_last_ns: num(f[6], "send_last_ns")?,
                recv_ns: num(f[7], "recv_ns")?,
                ktx_first_ns: opt_num(f[10], "ktx_first_ns")?,
                krx_ns: opt_num(f[11], "krx_ns")?,
                queued_behind: opt_num(f[15], "queued_behind")?
                    .map(|v| u32::try_from(v).unwrap_or(u32::MAX)),
                htx_first_ns: f.get(16).map_or(Ok(None), |v| opt_num(v, "htx_first_ns"))?,
                hrx_ns: f.get(17).map_or(Ok(None), |v| opt_num(v, "hrx_ns"))?,
                stream_off: f.get(19).map_or(Ok(None), |v| opt_num(v, "stream_off"))?,
            }),
            delay_ns: None,
            stages: None,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(kind: RowKind) -> OrderRow {
        OrderRow {
            session: 3,
            order: OrderRepr {
                qty: 7,
                price: 659_350_000_000,
                side: Side::Sell,
                trigger_id: 1_585_699_200_355_000,
            },
            gap: Gap {
                order_ns: Some(4_000_000),
                md_ns: None,
            },
            timing: (kind == RowKind::Exchange).then_some(Timing {
                send_first_ns: 1_000,
                send_last_ns: 1_500,
                recv_ns: 9_000,
                ktx_first_ns: Some(10_000),
                krx_ns: None,
                queued_behind: Some(2),
                htx_first_ns: Some(5_000),
                hrx_ns: Some(7_500),
                stream_off: Some(42),
            }),
            delay_ns: (kind == RowKind::Strategy).then_some(10_000),
            stages: (kind == RowKind::Strategy).then_some(Stages {
                decide_ns: 90,
                send_ns: 3_000,
                total_ns: 13_200,
                read_ns: Some(77_000),
                wire_kernel_ns: Some(6_100),
                wire_nic_ns: None,
            }),
        }
    }

    #[test]
    fn rows_round_trip_through_both_kinds() {
        for kind in [RowKind::Exchange, RowKind::Strategy] {
            let mut out = format!("{}\n", kind.header()).into_bytes();
            row(kind).write(kind, &mut out).expect("write");
            let text = String::from_utf8(out).expect("utf8");
            let (k, rows) = parse_rows(&text).expect("parse");
            assert_eq!(k, kind);
            assert_eq!(rows, vec![row(kind)], "{text}");
        }
    }

    #[test]
    fn exchange_row_has_the_documented_columns() {
        let mut out = Vec::new();
        row(RowKind::Exchange)
            .write(RowKind::Exchange, &mut out)
            .expect("write");
        assert_eq!(
            String::from_utf8(out).expect("utf8"),
            "3,1585699200355000,sell,6593.5,7,1000,1500,9000,8000,7500,10000,,,4000000,,2,5000,7500,2500,42\n"
        );
    }

    #[test]
    fn rows_of_earlier_runs_without_stream_offsets_or_read_times_still_read() {
        let ex = format!(
            "{EXCHANGE_HEADER_NO_OFF}\n3,1585699200355000,sell,6593.5,7,1000,1500,9000,8000,7500,10000,,,4000000,,2,5000,7500,2500\n"
        );
        let (_, rows) = parse_rows(&ex).expect("an earlier exchange file");
        assert_eq!(rows[0].timing.expect("timing").stream_off, None);
        let st = format!(
            "{STRATEGY_HEADER_NO_READ}\n3,1585699200355000,sell,6593.5,7,0,,,90,3000,13200\n"
        );
        let (kind, rows) = parse_rows(&st).expect("an earlier strategy file");
        assert_eq!(kind, RowKind::Strategy);
        let stages = rows[0].stages.expect("stages");
        assert_eq!((stages.total_ns, stages.read_ns), (13_200, None));
        let st = format!(
            "{STRATEGY_HEADER_NO_WIRE}\n3,1585699200355000,sell,6593.5,7,0,,,90,3000,13200,500\n"
        );
        let (_, rows) = parse_rows(&st).expect("a strategy file without wire stamps");
        let stages = rows[0].stages.expect("stages");
        assert_eq!(
            (stages.read_ns, stages.wire_kernel_ns, stages.wire_nic_ns),
            (Some(500), None, None)
        );
    }

    #[test]
    fn rows_of_earlier_runs_without_hardware_stamps_still_read() {
        let text = format!(
            "{EXCHANGE_HEADER_NO_HW}\n3,1585699200355000,sell,6593.5,7,1000,1500,9000,8000,7500,10000,,,4000000,,2\n"
        );
        let (kind, rows) = parse_rows(&text).expect("an earlier file");
        assert_eq!(kind, RowKind::Exchange);
        let t = rows[0].timing.expect("timing");
        assert_eq!(
            (t.htx_first_ns, t.hrx_ns, t.hw_t2t_ns()),
            (None, None, None)
        );
        assert_eq!(t.queued_behind, Some(2));
    }

    #[test]
    fn malformed_rows_are_errors_with_their_line() {
        let bad = [
            (format!("{STRATEGY_HEADER}\n1,2,buy,1.5,3\n"), 2),
            (
                format!("{STRATEGY_HEADER}\n1,2,buy,1.5,3,0,,,,,,,,\n1,2,hold,1.5,3,0,,,,,,,,\n"),
                3,
            ),
            (format!("{STRATEGY_HEADER}\n1,x,buy,1.5,3,0,,,,,,,,\n"), 2),
            (
                format!("{STRATEGY_HEADER}\n1,2,buy,1.5,99999999999,0,,,,,,,,\n"),
                2,
            ),
            (format!("{STRATEGY_HEADER}\n1,2,buy,1.5,3,0,-5,,,,,,,\n"), 2),
        ];
        for (text, line) in bad {
            match parse_rows(&text) {
                Err(ParseRowsError::Row(l, _)) => assert_eq!(l, line, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
        assert!(matches!(
            parse_rows("a,b\n"),
            Err(ParseRowsError::Header(_))
        ));
    }
}
