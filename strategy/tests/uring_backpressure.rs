//! The io_uring path when the exchange stops reading: dense triggers, market data as fast
//! as the link takes it, and an order connection whose receiver never reads. Every send
//! slot fills up; the path must keep receiving market data (every packet handled, every
//! provided buffer back with the kernel), never block, and count each order either as sent
//! or as held back, so that the two add up to the offline replay's orders.
//! Needs root (network namespaces); skipped with a printed reason otherwise.

use std::io::BufRead;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, UdpSocket};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mdfile::mdgen::{self, GenConfig};
use netlab::VethLab;
use strategy::engine::{Engine, EngineConfig};
use strategy::latency::Latency;
use strategy::net::uring::UringPath;
use strategy::net::{Hot, NetConfig, NetPath, OrderLog, PathStats, Status};

const GROUP: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(239, 255, 0, 1), 12345);
const EXCHANGE: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 1), 9012);

fn lines_of(path: &std::path::Path) -> Vec<Vec<u8>> {
    let f = std::fs::File::open(path).expect("md file");
    let r = std::io::BufReader::new(flate2::read::GzDecoder::new(f));
    r.split(b'\n')
        .skip(1)
        .map(|l| l.expect("line"))
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn a_stalled_exchange_does_not_lose_market_data_or_buffers() {
    stalled_exchange(false);
}

/// The same with SEND_ZC: sends whose notification waits for an acknowledgment the stalled
/// exchange never gives; at the end their memory is kept, not freed under the kernel.
#[test]
fn a_stalled_exchange_with_send_zc_keeps_what_the_kernel_holds() {
    stalled_exchange(true);
}

fn stalled_exchange(send_zc: bool) {
    if !netlab::is_root() {
        eprintln!("skipped: needs root for network namespaces");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let md = dir.path().join("md.csv.gz");
    mdgen::generate(
        &md,
        &GenConfig {
            target_bytes: 300_000,
            depth: 40,
            trigger_every: 4,
            ..GenConfig::default()
        },
    )
    .expect("gen");
    let lines = lines_of(&md);
    // The oracle: the same engine over the same lines, offline.
    let mut oracle = Engine::new(EngineConfig::default());
    let expected = lines
        .iter()
        .filter(|l| oracle.on_packet(l, 0).is_some())
        .count() as u64;
    assert!(
        expected > 200,
        "the file must fill every send slot: {expected} orders"
    );

    let lab = VethLab::new("urb").expect("lab");
    let (ready_tx, ready_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let n_lines = lines.len();
    let exchange = lab
        .exchange
        .spawn(move || {
            let l = TcpListener::bind(EXCHANGE).expect("listen");
            // A tiny receive window that is never read: sends stop completing.
            socket2::SockRef::from(&l)
                .set_recv_buffer_size(2048)
                .expect("rcvbuf");
            ready_tx.send(()).expect("ready");
            let (conn, _) = l.accept().expect("accept");
            go_rx.recv().expect("go");
            let udp = UdpSocket::bind("10.77.0.1:0").expect("udp");
            let mut sent = 0usize;
            for (i, line) in lines.iter().enumerate() {
                while udp.send_to(line, GROUP).is_err() {
                    std::thread::yield_now();
                }
                sent += 1;
                if i % 64 == 63 {
                    // Paced a little so the strategy's 8 MiB receive buffer never overflows.
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
            std::thread::sleep(Duration::from_millis(500));
            drop(conn);
            sent
        })
        .expect("exchange");
    ready_rx.recv().expect("exchange ready");

    let (done_tx, done_rx) = mpsc::channel();
    let strategy = lab
        .strategy
        .spawn(move || {
            let out = strategy_session(n_lines, &go_tx, send_zc);
            let _ = done_tx.send(());
            out
        })
        .expect("strategy");
    // The old loop blocked here forever, waiting for a free slot: fail instead of hanging.
    done_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the io_uring path blocked when every send slot was in flight");
    let (stats, report, engine_packets, end) = strategy.join().expect("strategy thread");
    let sent = exchange.join().expect("exchange thread");
    assert_eq!(sent, n_lines);
    assert_eq!(
        stats.packets as usize, n_lines,
        "every market-data packet handled ({report:?})"
    );
    assert_eq!(engine_packets, stats.packets);
    assert_eq!(
        report.buffers_in_kernel, report.buffers,
        "every provided buffer back with the kernel: {report:?}"
    );
    assert!(
        report.slots_exhausted > 0,
        "every slot was in flight at some point"
    );
    assert!(stats.orders_held_back > 0);
    assert_eq!(
        stats.orders + stats.orders_held_back,
        expected,
        "each order sent or held back, none lost: {stats:?}"
    );
    // The end: the multishot receive and the stalled sends were in the kernel; each was
    // cancelled and its last completion seen, or its memory was kept for the process.
    eprintln!("send_zc {send_zc}: {report:?}, end {end:?}");
    assert!(
        end.outstanding > 0,
        "requests in the kernel at the end: {end:?}"
    );
    assert!(
        end.left == 0 || end.kept_bytes > 0,
        "nothing freed under the kernel: {end:?}"
    );
    if !report.features.send_zc {
        assert_eq!(end.left, 0, "plain sends and receives cancel: {end:?}");
    }
}

/// The strategy's side: the io_uring path until every packet is in (or the stream has been
/// quiet for 2 s); returns the path counters, the ring's report, the engine's count and how
/// the ring ended.
fn strategy_session(
    n_lines: usize,
    go_tx: &mpsc::Sender<()>,
    send_zc: bool,
) -> (
    PathStats,
    strategy::net::uring::UringReport,
    u64,
    strategy::net::uring::Teardown,
) {
    let mut path = UringPath::new(NetConfig {
        exchange: EXCHANGE,
        group: GROUP,
        iface_addr: Some(Ipv4Addr::new(10, 77, 0, 2)),
        busy_poll_us: 0,
        busy_poll_budget: 0,
        sqpoll_idle_ms: None,
        send_zc,
        msg_zerocopy: false,
        uring: Default::default(),
        marks: Default::default(),
        md_source: None,
        md_rcvbuf: None,
        md_recvmmsg: false,
        wire_stamps: None,
    });
    path.begin_connect().expect("connect");
    let t0 = Instant::now();
    while !path.poll_connect().expect("connect") {
        assert!(t0.elapsed() < Duration::from_secs(5), "connect timed out");
    }
    path.start_md().expect("market data");
    go_tx.send(()).expect("go");
    let mut engine = Engine::new(EngineConfig::default());
    let (mut latency, mut log, mut stats) = (
        Latency::new(),
        OrderLog::with_capacity(1 << 16),
        PathStats::default(),
    );
    let mut last_packet = Instant::now();
    loop {
        let mut hot = Hot {
            engine: &mut engine,
            latency: &mut latency,
            log: &mut log,
            stats: &mut stats,
            delays: &[],
            md_work_ns: 0,
        };
        let status = path.poll(&mut hot).expect("poll");
        if status == Status::Busy {
            last_packet = Instant::now();
        }
        // Every packet is in once the stream has been quiet for a while.
        if stats.packets as usize >= n_lines || last_packet.elapsed() > Duration::from_secs(2) {
            break;
        }
    }
    // Let the last returned buffers reach the kernel.
    let until = Instant::now() + Duration::from_millis(50);
    while Instant::now() < until {
        let mut hot = Hot {
            engine: &mut engine,
            latency: &mut latency,
            log: &mut log,
            stats: &mut stats,
            delays: &[],
            md_work_ns: 0,
        };
        let _ = path.poll(&mut hot);
    }
    let report = path.uring_report();
    path.close();
    let end = path.uring_report().teardown;
    (stats, report, engine.stats().packets, end)
}
