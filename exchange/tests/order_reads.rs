//! Each order gets its own receive time: a burst of five orders written at once (one
//! segment) and three written apart. The exchange reads one order per `recv`, so within the
//! burst the user receive times strictly increase and each row says how many orders were
//! still queued behind it (4, 3, 2, 1, 0); the burst shares one kernel stamp (one segment),
//! the separate orders each have their own. (Before, one `recv` took the whole burst: five
//! rows with one receive time, the first ones' tick-to-trade overstated.) In the lab's
//! namespaces; needs root, skipped with a printed reason otherwise.

use std::io::{Read, Write};
use std::time::Duration;

use mdfile::orders::{parse_rows, RowKind};
use netlab::VethLab;
use proto::order::OrderRepr;

mod common;
use common::*;

#[test]
fn every_order_has_its_own_receive_time() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let md_file = small_file(dir.path());
    let lab = VethLab::new("exr").expect("lab");
    let ex = Exchange::start(
        &lab,
        &md_file,
        dir.path(),
        &["--pace", "rate:4000", "--sessions", "1", "--grace", "300ms"],
    );
    let client = lab
        .strategy
        .spawn(move || {
            let mut buf = [0u8; 2048];
            let md = join_group();
            let mut oe = connect();
            let mut updates = Vec::new();
            while let Some((snap, id, side, price)) = recv_line(&md, &mut buf) {
                if !snap && updates.len() < 8 {
                    updates.push(OrderRepr {
                        qty: 1,
                        price,
                        side,
                        trigger_id: id,
                    });
                    if updates.len() == 5 {
                        let burst: Vec<u8> = updates.iter().flat_map(|o| o.to_bytes()).collect();
                        oe.write_all(&burst).expect("the burst, one write");
                    } else if updates.len() > 5 {
                        std::thread::sleep(Duration::from_millis(5));
                        oe.write_all(&updates[updates.len() - 1].to_bytes())
                            .expect("one order");
                    }
                }
            }
            oe.set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            let mut one = [0u8; 1];
            assert_eq!(oe.read(&mut one).expect("eof"), 0, "the session ended");
            updates
        })
        .expect("client");
    let sent = client.join().expect("client thread");
    let (_, log) = ex.wait(Duration::from_secs(60));
    assert_eq!(sent.len(), 8, "eight orders sent");
    let csv = std::fs::read_to_string(dir.path().join("orders.csv")).expect("csv");
    let (kind, rows) = parse_rows(&csv).expect("rows");
    assert_eq!(kind, RowKind::Exchange);
    assert_eq!(rows.len(), 8, "{log}");
    let t: Vec<_> = rows.iter().map(|r| r.timing.expect("timing")).collect();
    for (r, o) in rows.iter().zip(&sent) {
        assert_eq!(r.order, *o);
    }
    let behind: Vec<_> = t.iter().map(|t| t.queued_behind).collect();
    assert_eq!(
        behind,
        [4, 3, 2, 1, 0, 0, 0, 0].map(Some),
        "orders queued behind each"
    );
    for w in t[..5].windows(2) {
        assert!(
            w[1].recv_ns > w[0].recv_ns,
            "each order of the burst read on its own: {t:?}"
        );
    }
    assert!(t.iter().all(|t| t.krx_ns.is_some()), "kernel stamps: {t:?}");
    assert!(
        t[..5].iter().all(|x| x.krx_ns == t[0].krx_ns),
        "the burst came in one segment: one stamp"
    );
    for w in t[4..].windows(2) {
        assert!(
            w[1].krx_ns > w[0].krx_ns,
            "separate segments, separate stamps"
        );
    }
}
