//! The `xdp-tx` decision in the XDP program, on crafted frames (BPF_PROG_TEST_RUN): it fires
//! only when armed, current and the rule holds; the segment it builds is valid
//! Ethernet/IPv4/TCP with correct checksums in an independent parser (etherparse), with the
//! template's sequence and ACK numbers and the order as payload; the mailbox carries the
//! line and the order; anything else leaves the frame to user space; publishing only the
//! fields that changed leaves the mapping holding exactly the state asked for. Needs root and the
//! embedded program; skipped with a reason otherwise.

use strategy::net::af_xdp::xtx_map::Claimed;
use strategy_common::xtx::{Armed, Level, Shape, FRAME_LEN, HEADER_LEN};

#[path = "common/xtx_prog.rs"]
mod xtx_prog;
use xtx_prog::*;

#[test]
fn fires_only_when_armed_current_and_the_rule_holds() {
    if skip() {
        return;
    }
    let mut p = Prog::load();
    // Not armed yet (no ticket): every frame goes to user space, with its index.
    let fire_line = line(60, false, "bid", "99", 1_011);
    let (action, out) = p.run(&md_frame(&fire_line));
    assert_eq!(action, XDP_PASS, "disarmed");
    assert_tagged(&out, &md_frame(&fire_line), 0);
    assert_eq!(p.map.prog().not_current, 1, "no ticket");
    // One frame seen: arm at generation 1 and fire.
    p.map.publish(&armed(1), true).expect("no ticket out");
    let (action, out) = p.run(&md_frame(&fire_line));
    assert_eq!(
        action, XDP_TX,
        "a bid-side increase of 1,001 > 1,000 at rank 1 fires"
    );
    assert_eq!(out.len(), FRAME_LEN);
    check_segment(&out, &[3, 0, 0, 0], 101 * P, 0, 60);
    let rec = p.map.next_fire().expect("a record").expect("decodes");
    assert_eq!(rec.md_index, 1);
    assert_eq!(rec.line(), &fire_line[..], "the line");
    assert_eq!(
        (rec.qty, rec.price, rec.side, rec.trigger_id, rec.seq),
        (3, 101 * P, 0, 60, SEQ)
    );
    assert!(rec.t_tx_ns >= rec.t_start_ns && rec.t_start_ns > 0);
    assert!(p.map.next_fire().is_none(), "one record per fire");
    // The program claimed the ticket: even armed at the current generation again (as if
    // user space had published the same state), it cannot fire a second time, and user
    // space cannot take the claimed ticket back (its heartbeat must wait).
    let (action, out) = p.run(&md_frame(&fire_line));
    assert_eq!(action, XDP_PASS, "the ticket was claimed");
    assert_tagged(&out, &md_frame(&fire_line), 2);
    assert_eq!(p.map.disarm(), Err(Claimed), "the program claimed it first");
    // Until user space has completed that fire, nothing is written and nothing armed: the
    // state stays what the fire was decided on, and no second order can take its sequence
    // number.
    assert_eq!(p.map.disarm(), Err(Claimed), "still claimed");
    assert_eq!(
        p.map.publish(&armed(3), true),
        Err(Claimed),
        "nothing written"
    );
    assert_eq!(
        p.map.armed().generation,
        1,
        "the state the fire was decided on"
    );
    assert_eq!(p.map.armed().ticket, strategy_common::xtx::CLAIMED);
    let s = p.map.prog();
    assert_eq!((s.md_seen, s.fired, s.not_current), (3, 1, 2));
    // Completed: the word back to 0, the map armed again.
    p.map.fired();
    assert_eq!(p.map.armed().ticket, 0);
    // A ticket taken back before the frame (the heartbeat's way): no fire.
    p.map
        .publish(&armed(3), true)
        .expect("no ticket out after a completed claim");
    assert_eq!(
        p.map.disarm(),
        Ok(()),
        "taken back before the program saw it"
    );
    assert_eq!(p.run(&md_frame(&fire_line)).0, XDP_PASS, "taken back");
    assert!(p.map.next_fire().is_none());
    // Published without arming: no fire either.
    p.map.publish(&armed(4), false).expect("no ticket out");
    assert_eq!(p.run(&md_frame(&fire_line)).0, XDP_PASS, "not armed");
    assert!(p.map.next_fire().is_none());
    assert_eq!(p.map.prog().not_current, 4);

    // Each case at the current generation (5 frames seen so far, then one more each).
    let mut seen = 5;
    let cases: Vec<(&str, Vec<u8>, Armed, u32)> = vec![
        (
            "ask side fires a sell at the best bid",
            line(61, false, "ask", "102", 1_021),
            armed(0),
            XDP_TX,
        ),
        (
            "equal to the threshold",
            line(61, false, "bid", "100", 1_010),
            armed(0),
            XDP_PASS,
        ),
        (
            "snapshot",
            line(61, true, "bid", "100", 5_000),
            armed(0),
            XDP_PASS,
        ),
        (
            "stale sequence",
            line(49, false, "bid", "100", 5_000),
            armed(0),
            XDP_PASS,
        ),
        (
            "new level inside the top",
            line(61, false, "bid", "99.5", 1_001),
            armed(0),
            XDP_TX,
        ),
        (
            "new level below a complete short side",
            line(61, false, "bid", "97", 1_001),
            armed(0),
            XDP_TX,
        ),
        (
            "below the armed levels of a deeper side",
            line(61, false, "bid", "97", 5_000),
            Armed {
                bids: side(&[(100 * P, 10), (99 * P, 10), (98 * P, 10)], false),
                ..armed(0)
            },
            XDP_PASS,
        ),
        (
            "rank 3 with levels 3",
            line(61, false, "bid", "97", 5_000),
            Armed {
                levels: 3,
                ..armed(0)
            },
            XDP_PASS,
        ),
        (
            "other side empty",
            line(61, false, "bid", "100", 5_000),
            Armed {
                asks: side(&[], true),
                ..armed(0)
            },
            XDP_PASS,
        ),
        (
            "risk room spent",
            line(61, false, "bid", "100", 5_000),
            Armed {
                allowed: [0, 1],
                ..armed(0)
            },
            XDP_PASS,
        ),
        (
            "notional: 100 x 1,001 > 100,000 x 10^8",
            line(61, false, "bid", "100", 1_011),
            Armed {
                threshold_kind: 1,
                threshold: 100_000 * P as u64,
                ..armed(0)
            },
            XDP_TX,
        ),
        (
            "notional: 100 x 1,000 is not above 100,000 x 10^8",
            line(61, false, "bid", "100", 1_010),
            Armed {
                threshold_kind: 1,
                threshold: 100_000 * P as u64,
                ..armed(0)
            },
            XDP_PASS,
        ),
        (
            "outside the grammar",
            line(61, false, "bid", "100.000000001", 5_000),
            armed(0),
            XDP_PASS,
        ),
        (
            "malformed",
            b"deribit,BTC,1,61,false,bid,100\n".to_vec(),
            armed(0),
            XDP_PASS,
        ),
    ];
    for (name, l, a, want) in cases {
        p.arm(&Armed {
            generation: seen,
            ..a
        });
        let (action, out) = p.run(&md_frame(&l));
        seen += 1;
        assert_eq!(action, want, "{name}");
        let rec = p.map.next_fire();
        assert_eq!(
            rec.is_some(),
            want == XDP_TX,
            "{name}: a record exactly when it fires"
        );
        if want == XDP_TX {
            assert_eq!(out.len(), FRAME_LEN, "{name}");
            let rec = rec.expect("record").expect("decodes");
            assert_eq!(rec.md_index, seen - 1, "{name}");
        } else {
            assert_tagged(&out, &md_frame(&l), seen - 1);
        }
    }
    let s = p.map.prog();
    assert_eq!(s.md_seen, seen);
    assert_eq!(s.unparsed, 2, "the two lines outside the grammar");
    // User space one packet behind, and that packet's line outside the grammar (it could
    // change anything): no fire, even when the rule would hold.
    p.arm(&armed(seen - 1));
    let unsafe_before = p.map.prog().behind_unsafe;
    assert_eq!(
        p.run(&md_frame(&fire_line)).0,
        XDP_PASS,
        "user space behind an unparsed line"
    );
    assert!(p.map.next_fire().is_none());
    assert_eq!(p.map.prog().behind_unsafe, unsafe_before + 1);
}

/// Lines of the feed's usual layout go through the fast path once user space has learned
/// the layout (`fast_parsed` counts them), with the same decisions and the same segment as
/// the byte-at-a-time parser; a line off the layout still goes through the general one.
/// `XtxMap::publish` stores only the fields that differ from its last write: after every
/// publication, the mapping holds exactly the state asked for (the ticket aside), whatever
/// subset of fields changed.
#[test]
fn publishing_changed_fields_only_leaves_the_state_asked_for() {
    if skip() {
        return;
    }
    let mut p = Prog::load();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut want = armed(0);
    for round in 0..2_000 {
        // Change each field with probability 1/4 (several, one, or none per round).
        let change = |rnd: &mut dyn FnMut() -> u64| rnd().is_multiple_of(4);
        if change(&mut rnd) {
            want.generation = rnd();
        }
        if change(&mut rnd) {
            want.levels = rnd() as u32;
        }
        if change(&mut rnd) {
            want.amount_decimals = rnd() as u32;
        }
        if change(&mut rnd) {
            want.threshold_kind = rnd() as u32;
        }
        if change(&mut rnd) {
            want.qty_by_best = rnd() as u32;
        }
        if change(&mut rnd) {
            want.threshold = rnd();
        }
        if change(&mut rnd) {
            want.last_seq = rnd();
        }
        if change(&mut rnd) {
            want.order_qty[(rnd() % 2) as usize] = rnd() as u32;
        }
        if change(&mut rnd) {
            want.allowed[(rnd() % 2) as usize] = rnd() as u32;
        }
        for top in [&mut want.bids, &mut want.asks] {
            if change(&mut rnd) {
                top.levels[(rnd() % 8) as usize] = Level {
                    price: rnd() as i64,
                    qty: rnd(),
                };
            }
            if change(&mut rnd) {
                top.count = rnd() as u32;
            }
            if change(&mut rnd) {
                top.complete = rnd() as u32;
            }
        }
        if change(&mut rnd) {
            want.template.header[(rnd() % HEADER_LEN as u64) as usize] = rnd() as u8;
            want.template.partial_sum = rnd() as u32;
        }
        if change(&mut rnd) {
            want.shape.words[(rnd() % 4) as usize] = rnd();
            want.shape.len = rnd() as u32;
        }
        let arm = rnd().is_multiple_of(2);
        p.map
            .publish(&want, arm)
            .expect("no ticket out: the program never runs here");
        let got = p.map.armed();
        assert_eq!(got.ticket != 0, arm, "round {round}: the ticket");
        assert_eq!(
            Armed { ticket: 0, ..got },
            Armed { ticket: 0, ..want },
            "round {round}"
        );
    }
}

#[test]
fn the_fast_path_decides_as_the_general_parser() {
    if skip() {
        return;
    }
    let mut p = Prog::load();
    let usual = |seq: u64, side: &str, price: &str, amount: u64| {
        format!("deribit,BTC-PERPETUAL,1585699200245000,{seq},false,{side},{price},{amount}\n")
            .into_bytes()
    };
    let shape = Shape::learn(&usual(1585699200355000, "bid", "99", 1)).expect("layout");
    let armed_fast = |generation: u64| Armed {
        last_seq: 50,
        shape,
        ..armed(generation)
    };
    let cases: Vec<(Vec<u8>, u32, bool)> = vec![
        // (line, action, through the fast path)
        (usual(1585699200355000, "bid", "99", 1_011), XDP_TX, true),
        (usual(1585699200355001, "ask", "102", 1_021), XDP_TX, true),
        (usual(1585699200355002, "bid", "100", 1_010), XDP_PASS, true),
        (usual(1585699200355003, "bid", "99.5", 1_001), XDP_TX, true),
        // Off the layout (another symbol): the general parser, same rule.
        (
            b"deribit,ETH-PERPETUAL,1585699200245000,1585699200355004,false,bid,99,1011\n".to_vec(),
            XDP_TX,
            false,
        ),
    ];
    for (seen, (l, want, fast)) in cases.into_iter().enumerate() {
        p.arm(&armed_fast(seen as u64));
        let before = p.map.prog().fast_parsed;
        let (action, out) = p.run(&md_frame(&l));
        let name = String::from_utf8_lossy(&l).into_owned();
        assert_eq!(action, want, "{name}");
        assert_eq!(p.map.prog().fast_parsed - before, u64::from(fast), "{name}");
        let rec = p.map.next_fire();
        assert_eq!(rec.is_some(), want == XDP_TX, "{name}");
        if want == XDP_TX {
            let rec = rec.expect("record").expect("decodes");
            assert_eq!(rec.line(), &l[..], "{name}");
            let x = strategy_common::xtx::parse(&l, 0).expect("the general parser reads it");
            check_segment(
                &out,
                &rec.qty.to_le_bytes(),
                rec.price,
                rec.side as u8,
                x.local_timestamp,
            );
        }
    }
}
