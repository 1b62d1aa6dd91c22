//! Proves every network path's busy loop allocates nothing once a session runs: each path
//! trades a real session against the exchange in a namespace pair, and a counting global
//! allocator checks that no `poll` (receive -> parse -> book -> trigger -> send) allocated
//! after the first orders. Needs root; the AF_XDP path also needs the embedded program.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use mdfile::mdgen::{self, GenConfig};
use netlab::VethLab;
use strategy::engine::{Engine, EngineConfig};
use strategy::latency::Latency;
use strategy::net::warm::{WarmConfig, Warmer};
use strategy::net::{Hot, NetConfig, NetKind, NetPath, OrderLog, PathStats, Status};
use strategy::spec::{PathSpec, Variant};

#[path = "common/counting.rs"]
mod counting;
use counting::allocations;

/// Allocations in the measured polls, orders sent, and orders with both kernel wire stamps
/// (`kernel+wire`: the stamps are read inside the measured region too).
fn run_session<P: NetPath>(mut path: P) -> (u64, u64, usize) {
    let mut engine = Engine::new(EngineConfig::default());
    let mut latency = Latency::new();
    let mut log = OrderLog::with_capacity(1 << 16);
    let mut stats = PathStats::default();
    let t0 = Instant::now();
    loop {
        if path.begin_connect().is_ok() {
            let c0 = Instant::now();
            while c0.elapsed() < Duration::from_secs(3) {
                match path.poll_connect() {
                    Ok(true) => break,
                    Ok(false) => {}
                    Err(_) => break,
                }
            }
            if matches!(path.poll_connect(), Ok(true)) {
                break;
            }
            path.close();
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "could not connect");
        std::thread::sleep(Duration::from_millis(50));
    }
    path.start_md().expect("market data");
    let (mut allocs_in_polls, mut measured_polls) = (0u64, 0u64);
    let mut measured_turns = 0u64;
    let mut warmer =
        Warmer::new(WarmConfig::parse_modes(1, &["all".to_owned()]).expect("warm modes"));
    loop {
        let mut hot = Hot {
            engine: &mut engine,
            latency: &mut latency,
            log: &mut log,
            stats: &mut stats,
            delays: &[],
            md_work_ns: 0,
        };
        let warm = hot.log.total() >= 3;
        let before = allocations();
        let status = path.poll(&mut hot).expect("poll");
        // The warming routine runs inside the measured region too: every 64th turn, the
        // decision on a synthetic trigger, the transmit side without sending, a heartbeat.
        measured_turns += 1;
        if warm && measured_turns.is_multiple_of(64) {
            if let Some(req) = warmer.due(&engine) {
                // At the session's end the exchange may have closed: the heartbeat then
                // fails (EPIPE) as an order would; `poll` reports the hang-up.
                let _ = path.warm(req);
            }
        }
        let after = allocations();
        if status == Status::Disconnected {
            break;
        }
        if warm {
            allocs_in_polls += after - before;
            measured_polls += 1;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "session did not end"
        );
    }
    path.close();
    assert!(log.total() > 10, "orders sent: {}", log.total());
    assert!(measured_polls > 1000, "measured polls: {measured_polls}");
    let stamped = log
        .orders()
        .iter()
        .filter(|o| o.wire.kernel_ns().is_some())
        .count();
    (allocs_in_polls, log.total(), stamped)
}

#[test]
fn no_path_allocates_in_its_busy_loop() {
    if !netlab::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let md = dir.path().join("md.csv.gz");
    mdgen::generate(
        &md,
        &GenConfig {
            target_bytes: 40_000,
            depth: 60,
            trigger_every: 60,
            ..GenConfig::default()
        },
    )
    .expect("gen");
    let mut nets = vec![
        "kernel",
        "kernel+mmsg",
        "kernel+wire",
        "uring",
        "uring+defer+inline",
        "uring+defer+inline+syssend",
        "packet",
        "packet+v3",
    ];
    if strategy::net::af_xdp::loader::has_object() {
        nets.push("xdp");
        nets.push("xdp-tx");
    } else {
        eprintln!("AF_XDP left out: built without the XDP program (cargo xtask build-ebpf)");
    }
    for net in nets {
        let spec: PathSpec = net.parse().expect("the test's own path name");
        let lab = VethLab::new("nal").expect("lab");
        // xdp-tx: the exchange's veth needs an XDP program to receive XDP_TX frames.
        let _pass = spec.sends_with_xdp_tx().then(|| {
            lab.exchange
                .spawn(|| strategy::net::af_xdp::loader::attach_pass("vx0").expect("xdp-pass"))
                .expect("spawn")
                .join()
                .expect("attach")
        });
        let exchange = PathBuf::from(env!("CARGO_BIN_EXE_strategy")).with_file_name("exchange");
        let mut ex = lab
            .exchange
            .command(exchange)
            .args(
                exchange::serve_cmd::ServeCmd::new(&md, "10.77.0.1:9012")
                    .md_iface("vx0")
                    .sessions(1)
                    .quiet_orders(true)
                    .pace("rate:4000")
                    .grace(Duration::from_millis(200))
                    .args(),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("exchange");
        let cfg = NetConfig {
            exchange: SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 1), 9012),
            group: SocketAddrV4::new(Ipv4Addr::new(239, 255, 0, 1), 12345),
            iface_addr: Some(Ipv4Addr::new(10, 77, 0, 2)),
            busy_poll_us: 0,
            busy_poll_budget: 0,
            sqpoll_idle_ms: None,
            send_zc: false,
            msg_zerocopy: false,
            uring: strategy::net::uring::UringOptions {
                defer_taskrun: spec.has(Variant::Defer),
                inline_recv: spec.has(Variant::Inline),
                send_syscall: spec.has(Variant::SysSend),
                ..Default::default()
            },
            marks: Default::default(),
            md_source: None,
            md_rcvbuf: None,
            md_recvmmsg: spec.has(Variant::Mmsg),
            // veth has no hardware stamps: the kernel's clock only.
            wire_stamps: spec
                .has(Variant::Wire)
                .then(|| Err("veth: software stamps only".into())),
        };
        let wire = spec.has(Variant::Wire);
        let worker = lab
            .strategy
            .spawn(move || match spec.kind() {
                NetKind::Kernel => run_session(strategy::net::kernel::KernelPath::new(cfg)),
                NetKind::Uring => run_session(strategy::net::uring::UringPath::new(cfg)),
                NetKind::Packet => run_session(strategy::net::af_packet::path(
                    cfg,
                    strategy::net::af_packet::PacketConfig {
                        iface: "vs0".into(),
                        local: Ipv4Addr::new(10, 77, 0, 3),
                        frame_size: 2048,
                        frames: 256,
                        blocks: spec.has(Variant::V3).then_some(
                            strategy::net::af_packet::v3::BlockGeometry {
                                block_size: 4096,
                                blocks: 256,
                                timeout_ms: 1,
                            },
                        ),
                    },
                )),
                NetKind::Xdp | NetKind::XdpTx => run_session(strategy::net::af_xdp::path(
                    cfg,
                    strategy::net::af_xdp::XdpConfig {
                        iface: "vs0".into(),
                        queues: vec![0],
                        mode: strategy::net::af_xdp::loader::XdpModeArg::Auto,
                        bind: strategy::net::af_xdp::XskBind::Auto,
                        frame_size: 2048,
                        frame_count: 1024,
                        hugepages: false,
                        diag: false,
                        xdp_tx: spec.sends_with_xdp_tx(),
                        busy_poll: Default::default(),
                    },
                )),
            })
            .expect("spawn");
        let (allocs, orders, stamped) = worker.join().expect("session");
        let _ = ex.wait();
        assert_eq!(
            allocs, 0,
            "{net}: allocations in the busy loop over {orders} orders"
        );
        if wire {
            // Orders leave one per segment at this rate: nearly every one has both stamps.
            assert!(
                stamped as u64 * 10 >= orders * 9,
                "{net}: {stamped} of {orders} orders with kernel wire stamps"
            );
        } else {
            assert_eq!(stamped, 0, "{net}: wire stamps without +wire");
        }
    }
}
