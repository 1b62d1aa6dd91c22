//! End-to-end tests of `exchange serve` in a pair of network namespaces joined by veth.
//!
//! The exchange runs as a child process in one namespace; the test's client runs on a
//! thread that has entered the other (sockets it creates live there). Needs root; skipped
//! with a printed reason otherwise.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use exchange::results::{read_summaries, EndReason};
use netlab::VethLab;
use proto::order::{OrderRepr, Side};

mod common;
use common::*;

#[test]
fn session_lifecycle_orders_and_disconnect() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let md_file = small_file(dir.path());
    let lab = VethLab::new("ext").expect("lab");
    let ex = Exchange::start(
        &lab,
        &md_file,
        dir.path(),
        &["--pace", "rate:4000", "--sessions", "3", "--grace", "300ms"],
    );

    let client = lab
        .strategy
        .spawn(move || {
            let mut buf = [0u8; 2048];
            // Session 1: full replay with orders, garbage in HANDSHAKE and TRANSMIT, and a
            // concurrent second client that must be closed at once.
            let md = join_group();
            let mut oe = connect();
            oe.write_all(b"too early, HANDSHAKE").expect("write");
            let (snap, _, _, _) = recv_line(&md, &mut buf).expect("first packet");
            assert!(snap, "HANDSHAKE publishes snapshot lines first");
            let mut second = connect();
            second
                .set_read_timeout(Some(Duration::from_secs(2)))
                .expect("timeout");
            let mut one = [0u8; 1];
            assert_eq!(
                second.read(&mut one).expect("closed, not hung"),
                0,
                "second client closed at once"
            );

            let mut sent = Vec::new();
            let mut saw_update = false;
            let mut snapshots_after_update = 0;
            let mut n = 1u64; // the first packet, above
            while let Some((snap, id, side, price)) = recv_line(&md, &mut buf) {
                n += 1;
                if !snap {
                    saw_update = true;
                    if n.is_multiple_of(25) {
                        let o = OrderRepr {
                            qty: 1 + n as u32 % 7,
                            price,
                            side,
                            trigger_id: id,
                        };
                        // Split one order across two writes; TCP must reassemble it.
                        let b = o.to_bytes();
                        oe.write_all(&b[..5]).expect("write");
                        oe.write_all(&b[5..]).expect("write");
                        sent.push(o);
                    }
                    if n == 400 {
                        let mut bad = OrderRepr {
                            qty: 1,
                            price: 1,
                            side: Side::Buy,
                            trigger_id: id,
                        }
                        .to_bytes();
                        bad[12] = 7;
                        oe.write_all(&bad).expect("write garbage");
                        let unknown = OrderRepr {
                            qty: 1,
                            price: 1,
                            side: Side::Buy,
                            trigger_id: 42,
                        };
                        oe.write_all(&unknown.to_bytes()).expect("write");
                    }
                } else if saw_update {
                    snapshots_after_update += 1;
                }
            }
            assert!(snapshots_after_update > 0, "the re-snapshot was published");
            // End of file: the exchange closes the connection after the grace period.
            oe.set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            assert_eq!(
                oe.read(&mut one).expect("eof"),
                0,
                "exchange closed the session"
            );

            // Session 2: disconnect mid-stream.
            let oe = connect();
            for _ in 0..50 {
                recv_line(&md, &mut buf).expect("packet");
            }
            drop(oe.shutdown(std::net::Shutdown::Both));
            drop(oe);
            // Drain what was in flight, then check publishing stopped.
            std::thread::sleep(Duration::from_millis(300));
            md.set_read_timeout(Some(Duration::from_millis(10)))
                .expect("timeout");
            while recv_line(&md, &mut buf).is_some() {}
            md.set_read_timeout(Some(Duration::from_millis(500)))
                .expect("timeout");
            assert!(
                recv_line(&md, &mut buf).is_none(),
                "publishing stopped after the disconnect"
            );

            // Session 3: back in INIT, a new client gets a fresh replay from the snapshot.
            md.set_read_timeout(Some(Duration::from_secs(3)))
                .expect("timeout");
            let oe = connect();
            let (snap, _, _, _) = recv_line(&md, &mut buf).expect("first packet of session 3");
            assert!(snap);
            drop(oe);
            (sent, n)
        })
        .expect("spawn client");
    let (sent, packets) = client.join().expect("client thread");
    let (summaries, log) = ex.wait(Duration::from_secs(60));
    assert_eq!(summaries.len(), 3, "{summaries:?}\n{log}");
    let s1 = &summaries[0];
    assert_eq!(s1.end_reason, EndReason::EndOfFile);
    assert_eq!(
        s1.counters.packets_sent, packets,
        "client saw every packet (veth, paced)"
    );
    assert_eq!(s1.counters.orders_accepted, sent.len() as u64);
    assert_eq!(s1.counters.invalid, 1);
    assert_eq!(s1.counters.unknown_trigger, 1);
    assert_eq!(s1.counters.rejected_bytes, 20);
    assert!(s1.counters.snapshot_packets > 80);
    assert_eq!(s1.t2t_user_ns.count, sent.len() as u64);
    assert!(s1.t2t_user_ns.min > 0 && s1.t2t_user_ns.max < 5_000_000_000);
    assert_eq!(
        s1.t2t_kernel_ns.count,
        sent.len() as u64,
        "kernel timestamps for every order"
    );
    assert!(log.contains("rejecting a second client"), "{log}");
    assert!(log.contains("HANDSHAKE -> TRANSMIT"), "{log}");
    assert_eq!(summaries[1].end_reason, EndReason::Disconnected);
    assert_eq!(summaries[2].end_reason, EndReason::Disconnected);

    // Every order row in the CSV equals what was sent.
    let csv = std::fs::read_to_string(dir.path().join("orders.csv")).expect("csv");
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    assert_eq!(rows.len(), sent.len());
    for (row, o) in rows.iter().zip(&sent) {
        let f: Vec<&str> = row.split(',').collect();
        assert_eq!(f[1].parse::<u64>().expect("id"), o.trigger_id);
        assert_eq!(f[2], o.side.as_str());
        assert_eq!(
            proto::decimal::parse_fixed(f[3].as_bytes(), 8).expect("price"),
            o.price
        );
        assert_eq!(f[4].parse::<u32>().expect("qty"), o.qty);
        assert!(f[12].parse::<u64>().is_ok(), "kernel t2t present: {row}");
    }
}

/// `--expect-orders`: the session still replays the whole file (the count is reached early
/// here), then ends as soon as the file is out instead of after the grace (30 s: a
/// session that waited for it fails the 10 s read below).
#[test]
fn expected_orders_cut_the_grace_short_after_the_whole_file() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let md_file = small_file(dir.path());
    let lab = VethLab::new("exo").expect("lab");
    let ex = Exchange::start(
        &lab,
        &md_file,
        dir.path(),
        &[
            "--pace",
            "rate:20000",
            "--sessions",
            "1",
            "--grace",
            "30s",
            "--expect-orders",
            "3",
        ],
    );
    let client = lab
        .strategy
        .spawn(move || {
            let mut buf = [0u8; 2048];
            let md = join_group();
            let mut oe = connect();
            let mut n = 0u64;
            let mut sent = 0;
            while sent < 3 {
                let (snap, id, side, price) = recv_line(&md, &mut buf).expect("a packet");
                n += 1;
                if !snap {
                    let o = OrderRepr {
                        qty: 1,
                        price,
                        side,
                        trigger_id: id,
                    };
                    oe.write_all(&o.to_bytes()).expect("write");
                    sent += 1;
                }
            }
            let t0 = Instant::now();
            oe.set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            let mut one = [0u8; 1];
            let closed = oe.read(&mut one);
            let waited = t0.elapsed();
            md.set_read_timeout(Some(Duration::from_millis(300)))
                .expect("timeout");
            while recv_line(&md, &mut buf).is_some() {
                n += 1;
            }
            (closed.map_err(|e| e.to_string()), waited, n)
        })
        .expect("spawn client");
    let (closed, waited, packets) = client.join().expect("client thread");
    assert_eq!(
        closed,
        Ok(0),
        "the exchange closed the session without waiting out its 30 s grace (after {waited:?})"
    );
    let (summaries, log) = ex.wait(Duration::from_secs(60));
    assert_eq!(summaries.len(), 1, "{log}");
    let s = &summaries[0];
    assert_eq!(s.end_reason, EndReason::ExpectedOrders, "{log}");
    assert_eq!(s.counters.orders_accepted, 3);
    assert_eq!(
        s.counters.packets_sent, packets,
        "the whole file went out before the session ended"
    );
}

#[test]
fn missing_or_corrupt_file_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.csv.gz");
    std::fs::write(&bad, b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03garbage").expect("write");
    let plain = dir.path().join("plain.csv.gz");
    std::fs::write(&plain, b"not,a,header\n").expect("write");
    for (file, needle) in [
        (dir.path().join("missing.csv.gz"), "cannot open"),
        (bad, "gzip"),
        (plain, "gzip"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_exchange"))
            .args(exchange::serve_cmd::ServeCmd::new(&file, "127.0.0.1:0").args())
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(needle), "{err}");
        assert_eq!(
            err.matches("(os error").count().min(1),
            err.matches("(os error").count(),
            "the reason said once: {err}"
        );
    }
}

/// Connects, retrying while the exchange still has the previous session (it closes a
/// second client at once).
fn connect_session() -> TcpStream {
    for _ in 0..100 {
        let mut s = connect();
        s.set_read_timeout(Some(Duration::from_millis(30)))
            .expect("timeout");
        let mut one = [0u8; 1];
        match s.read(&mut one) {
            Ok(0) => std::thread::sleep(Duration::from_millis(10)),
            _ => return s,
        }
    }
    panic!("the exchange never returned to INIT");
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

#[test]
fn soak_200_sessions_keeps_fds_and_rss_stable() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let md_file = small_file(dir.path());
    let lab = VethLab::new("exs").expect("lab");
    let ex = Exchange::start(
        &lab,
        &md_file,
        dir.path(),
        &[
            "--pace",
            "rate:2000",
            "--handshake-delay",
            "0ms",
            "--sessions",
            "200",
        ],
    );
    let pid = ex.pid();
    let probe = lab
        .strategy
        .spawn(move || {
            let mut buf = [0u8; 2048];
            let md = join_group();
            let mut samples = Vec::new();
            for i in 0..200 {
                let oe = connect_session();
                recv_line(&md, &mut buf).unwrap_or_else(|| panic!("session {i} started"));
                if i == 20 || i == 199 {
                    // Mid-session, same point of the cycle both times.
                    std::thread::sleep(Duration::from_millis(20));
                    samples.push((fd_count(pid), rss_kib(pid)));
                }
                drop(oe);
                // Let the exchange see the hang-up before the next connect.
                std::thread::sleep(Duration::from_millis(10));
                md.set_read_timeout(Some(Duration::from_millis(1)))
                    .expect("timeout");
                while md.recv(&mut buf).is_ok() {}
                md.set_read_timeout(Some(Duration::from_secs(3)))
                    .expect("timeout");
            }
            samples
        })
        .expect("spawn");
    let Ok(samples) = probe.join() else {
        let mut ex = ex;
        let wchan =
            std::fs::read_to_string(format!("/proc/{}/wchan", ex.pid())).unwrap_or_default();
        let alive = ex
            .child
            .try_wait()
            .map(|s| format!("{s:?}"))
            .unwrap_or_default();
        let ss = lab.exchange.exec(&["ss", "-tanp"]).unwrap_or_default();
        eprintln!("exchange wchan={wchan} exited={alive}\n{ss}");
        let _ = ex.child.kill();
        let err = std::fs::read_to_string(&ex.log).unwrap_or_default();
        let tail: Vec<&str> = err.lines().rev().take(30).collect();
        panic!(
            "soak client failed; exchange log tail:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    };
    let (summaries, log) = ex.wait(Duration::from_secs(120));
    assert_eq!(summaries.len(), 200, "{log}");
    let (fd_a, rss_a) = samples[0];
    let (fd_b, rss_b) = samples[1];
    assert!(fd_a > 0 && fd_a == fd_b, "fd count moved: {fd_a} -> {fd_b}");
    assert!(
        rss_b <= rss_a + 2048,
        "RSS grew: {rss_a} KiB -> {rss_b} KiB"
    );
}

#[test]
fn sigint_mid_session_writes_the_report_and_exits_0() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let md_file = small_file(dir.path());
    let lab = VethLab::new("exi").expect("lab");
    let mut ex = Exchange::start(&lab, &md_file, dir.path(), &["--pace", "rate:500"]);
    let pid = ex.pid();
    let client = lab
        .strategy
        .spawn(move || {
            let mut buf = [0u8; 2048];
            let md = join_group();
            let oe = connect();
            for _ in 0..20 {
                recv_line(&md, &mut buf).expect("packet");
            }
            // SAFETY: kill(2) on the exchange's pid.
            unsafe { libc::kill(pid as i32, libc::SIGINT) };
            oe
        })
        .expect("spawn");
    let _oe = client.join().expect("client");
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = ex.child.try_wait().expect("try_wait") {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "exchange did not exit on SIGINT"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "SIGINT is a clean exit: {status}");
    let summaries = read_summaries(&ex.summary).expect("summary written");
    assert_eq!(summaries.len(), 1);
    assert_eq!(summaries[0].end_reason, EndReason::Signal);
    assert!(summaries[0].counters.packets_sent >= 20);
}

/// Heartbeats (the warming experiments' opt-in message) are counted and discarded with
/// `--heartbeats`, never taken as orders, and leave the framing of the orders around them
/// intact; without the flag they are invalid messages.
#[test]
fn heartbeats_are_counted_and_never_orders() {
    if skip() {
        return;
    }
    for accept in [true, false] {
        let dir = tempfile::tempdir().expect("tempdir");
        let md_file = small_file(dir.path());
        let lab = VethLab::new("exh").expect("lab");
        let mut args = vec!["--pace", "rate:4000", "--sessions", "1", "--grace", "300ms"];
        if accept {
            args.push("--heartbeats");
        }
        let ex = Exchange::start(&lab, &md_file, dir.path(), &args);
        let client = lab
            .strategy
            .spawn(move || {
                let mut buf = [0u8; 2048];
                let md = join_group();
                let mut oe = connect();
                let (mut sent, mut beats, mut n) = (Vec::new(), 0u64, 0u64);
                while let Some((snap, id, side, price)) = recv_line(&md, &mut buf) {
                    n += 1;
                    if snap {
                        continue;
                    }
                    // A heartbeat before every order, one split across two writes.
                    if n.is_multiple_of(20) {
                        let hb = proto::order::HEARTBEAT;
                        oe.write_all(&hb[..9]).expect("write");
                        oe.write_all(&hb[9..]).expect("write");
                        beats += 1;
                        let o = OrderRepr {
                            qty: 1,
                            price,
                            side,
                            trigger_id: id,
                        };
                        oe.write_all(&o.to_bytes()).expect("write");
                        sent.push(o);
                    }
                }
                (sent, beats)
            })
            .expect("client");
        let (sent, beats) = client.join().expect("client thread");
        let (summaries, log) = ex.wait(Duration::from_secs(60));
        let c = &summaries[0].counters;
        assert!(beats > 5);
        assert_eq!(c.orders_accepted, sent.len() as u64, "{log}");
        let (_, rows) =
            mdfile::orders::read_rows(&dir.path().join("orders.csv")).expect("order rows");
        let got: Vec<OrderRepr> = rows.iter().map(|r| r.order).collect();
        assert_eq!(got, sent, "the rows are the orders, nothing else");
        if accept {
            assert_eq!((c.heartbeats, c.invalid), (beats, 0));
        } else {
            assert_eq!((c.heartbeats, c.invalid), (0, beats));
        }
    }
}

/// The batched publisher at `--pace max` (up to 64 packets per `sendmmsg`), with each
/// market-data sender (a UDP socket; AF_PACKET frames the exchange builds): every line of
/// the file arrives once, in file order, byte for byte; the exchange's count equals what
/// arrived; exactly the first packet of each trigger id was stamped (with `--stamp-ids`,
/// of each listed id only), and every stamp came back (none missing); the same from a
/// file preloaded into memory (`--preload`).
#[test]
fn batch_publisher_sends_every_line_once_in_order() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let md_file = small_file(dir.path());
    let want: Vec<Vec<u8>> = {
        let text = {
            let mut s = String::new();
            flate2::read::GzDecoder::new(std::fs::File::open(&md_file).expect("open"))
                .read_to_string(&mut s)
                .expect("gunzip");
            s
        };
        text.lines()
            .skip(1)
            .filter(|l| !l.is_empty())
            .map(|l| l.as_bytes().to_vec())
            .collect()
    };
    // The packets that open a trigger id: the first line with each local_timestamp.
    let ids: Vec<u64> = want
        .iter()
        .map(|l| proto::md::parse_line(l, 0).expect("valid").local_timestamp)
        .collect();
    let openings = 1 + ids.windows(2).filter(|w| w[0] != w[1]).count() as u64;
    assert!(
        openings < ids.len() as u64,
        "the file shares ids between lines"
    );
    let planted = mdfile::mdgen::planted_path(&md_file);
    let planted_ids = exchange::stamp_ids::parse(&std::fs::read(&planted).expect("sidecar"))
        .expect("planted ids");
    assert!(!planted_ids.is_empty() && (planted_ids.len() as u64) < openings);
    // (sender, stamps of the planted ids only, the file preloaded into memory)
    for (tx, only_planted, preload) in [
        ("udp", false, false),
        ("packet", false, false),
        ("packet", true, true),
    ] {
        let sub = dir.path().join(format!("{tx}-{only_planted}"));
        std::fs::create_dir_all(&sub).expect("dir");
        let lab = VethLab::new("exb").expect("lab");
        let mut flags = vec![
            "--pace",
            "max",
            "--sessions",
            "1",
            "--grace",
            "300ms",
            "--md-tx",
            tx,
        ];
        if only_planted {
            flags.extend(["--stamp-ids", planted.to_str().expect("utf8")]);
        }
        if preload {
            flags.push("--preload");
        }
        let ex = Exchange::start(&lab, &md_file, &sub, &flags);
        let got = lab
            .strategy
            .spawn(move || {
                let md = join_group();
                let _oe = connect();
                let mut buf = [0u8; 2048];
                let mut got = Vec::new();
                while let Ok(n) = md.recv(&mut buf) {
                    got.push(buf[..n].to_vec());
                }
                got
            })
            .expect("spawn")
            .join()
            .expect("client");
        let (summaries, log) = ex.wait(Duration::from_secs(30));
        let s = &summaries[0];
        assert_eq!(
            got.len() as u64,
            s.counters.packets_sent,
            "{tx}: the exchange counts what it sent"
        );
        assert_eq!(got.len(), want.len(), "{tx}: every line once\n{log}");
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g, w, "{tx}: line {} in file order", i + 2);
        }
        let want_stamped = if only_planted {
            planted_ids.len() as u64
        } else {
            openings
        };
        assert_eq!(
            s.counters.tx_stamped, want_stamped,
            "{tx}: the first packet of each (listed) id stamped, no other\n{log}"
        );
        assert_eq!(
            s.counters.tx_ts_missing, 0,
            "{tx}: every stamp asked came back"
        );
        assert_eq!(
            log.contains("inflated into memory"),
            preload,
            "{tx}: the file preloaded when asked, only then\n{log}"
        );
    }
}
