//! Only the expected peer gets a session (`--allow-peer`: others are closed at once, logged
//! and counted), and with no `--oe-listen` the exchange listens on the lab's own address,
//! never on every interface. Needs root (namespaces); skipped otherwise.

mod common;

use std::io::Read;
use std::time::Duration;

use common::{connect, join_group, skip, small_file, Exchange};
use netlab::VethLab;

#[test]
fn only_the_allowed_peer_gets_a_session() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let md_file = small_file(dir.path());
    let lab = VethLab::new("exp").expect("lab");
    let ex = Exchange::start(
        &lab,
        &md_file,
        dir.path(),
        &[
            "--sessions",
            "1",
            "--pace",
            "max",
            "--grace",
            "200ms",
            "--allow-peer",
            "10.77.0.2",
        ],
    );
    // A stranger: 10.77.0.1, the exchange's own side of the link, is not allowed.
    let stranger = lab
        .exchange
        .spawn(|| {
            let mut s = connect();
            s.set_read_timeout(Some(Duration::from_secs(3)))
                .expect("timeout");
            let mut b = [0u8; 64];
            s.read(&mut b).map_err(|e| e.kind())
        })
        .expect("spawn")
        .join()
        .expect("stranger");
    assert!(
        matches!(stranger, Ok(0) | Err(std::io::ErrorKind::ConnectionReset)),
        "the stranger's connection is closed at once, no market data, no session: {stranger:?}"
    );
    // The allowed peer trades the whole session.
    let packets = lab
        .strategy
        .spawn(|| {
            let md = join_group();
            let _oe = connect();
            let mut buf = [0u8; 2048];
            let mut n = 0u64;
            while md.recv(&mut buf).is_ok() {
                n += 1;
            }
            n
        })
        .expect("spawn")
        .join()
        .expect("client");
    let (summaries, log) = ex.wait(Duration::from_secs(30));
    assert_eq!(summaries.len(), 1, "one session: the allowed peer's\n{log}");
    let s = &summaries[0];
    assert_eq!(s.peer.split(':').next(), Some("10.77.0.2"));
    assert_eq!(s.counters.refused_peers, 1, "the stranger counted\n{log}");
    // A veth has software stamps only: no NIC clock, and the summary says why.
    assert!(s.t2t_hw_ns.is_none());
    assert!(
        s.hw_timestamps.starts_with("off: vx0: ") && s.hw_timestamps.contains("software"),
        "{}",
        s.hw_timestamps
    );
    assert!(packets > 0 && packets == s.counters.packets_sent);
    assert!(
        log.contains("not allowed") && log.contains("10.77.0.1"),
        "a log line names the refused peer\n{log}"
    );
}

#[test]
fn without_oe_listen_it_listens_on_the_labs_address_only() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let md_file = small_file(dir.path());
    // A fresh namespace has no 192.168.100.1: the bind fails, and the error says where and
    // which flag chooses.
    let ns = netlab::Netns::new("exd").expect("namespace");
    let out = ns
        .command(env!("CARGO_BIN_EXE_exchange"))
        .args(["serve", "--md-file"])
        .arg(&md_file)
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("192.168.100.1:9012") && err.contains("--oe-listen"),
        "{err}"
    );
}
