//! The carrier wait ([`hostsys::iface::wait_running`]) on a veth whose peer goes down and
//! comes back, as a NIC's link does when a driver resets it for an XDP attach (root: a pair
//! of network namespaces of its own, removed on drop).

use std::time::Duration;

use hostsys::iface::{iface_running, wait_running};
use netlab::VethLab;

#[test]
fn the_wait_ends_when_the_peer_brings_the_link_back() {
    if !netlab::is_root() {
        eprintln!("skipped: needs root for network namespaces");
        return;
    }
    let lab = VethLab::new("hcr").expect("namespaces");
    lab.exchange
        .exec(&["ip", "link", "set", VethLab::EXCHANGE_IF, "down"])
        .expect("peer down");
    let down = lab
        .strategy
        .spawn(|| {
            (
                iface_running(VethLab::STRATEGY_IF),
                wait_running(VethLab::STRATEGY_IF, Duration::from_millis(50)),
            )
        })
        .expect("thread in the namespace")
        .join()
        .expect("joined");
    assert!(!down.0.expect("listed"), "the peer is down: no carrier");
    assert!(down.1.expect("listed").is_none(), "the wait gives up");
    // The waiting thread says when it has seen the carrier off and starts to wait; only
    // then does the peer come back.
    let (started, ready) = std::sync::mpsc::channel();
    let waiting = lab
        .strategy
        .spawn(move || {
            let before = iface_running(VethLab::STRATEGY_IF);
            let _ = started.send(());
            (
                before,
                wait_running(VethLab::STRATEGY_IF, Duration::from_secs(10)),
            )
        })
        .expect("thread in the namespace");
    ready.recv().expect("the waiting thread started");
    std::thread::sleep(Duration::from_millis(50));
    lab.exchange
        .exec(&["ip", "link", "set", VethLab::EXCHANGE_IF, "up"])
        .expect("peer up");
    let (before, waited) = waiting.join().expect("joined");
    assert!(!before.expect("listed"), "no carrier when the wait began");
    let w = waited.expect("listed");
    assert!(w.is_some(), "the carrier came back within 10 s: {w:?}");
}
