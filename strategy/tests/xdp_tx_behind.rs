//! The `xdp-tx` program deciding while user space is behind, on crafted frames
//! (BPF_PROG_TEST_RUN): it sends a fire on an armed state a few frames old only when the
//! frames in between cannot change it nor fire themselves (`xtx::pending_kinds`). Needs
//! root and the embedded program; skipped with a reason otherwise.

use strategy_common::xtx::Armed;

#[path = "common/xtx_prog.rs"]
mod xtx_prog;
use xtx_prog::*;

/// With user space behind (frames the program counted and user space has not applied),
/// the program fires on the older armed state only when the pending frames are parsed, no
/// snapshots, no later than the trigger and all of one kind: below the armed top of a full
/// side, or beside what the trigger's decision reads and too small to fire; frames it
/// parsed while its ticket was claimed count, frames that came while user space was
/// writing do not; at BEHIND_MAX frames behind it leaves the frame to user space.
#[test]
fn fires_while_user_space_is_behind_only_over_frames_that_cannot_change_it() {
    if skip() {
        return;
    }
    let mut p = Prog::load();
    // Two levels a side, both full: 100, 99 / 101, 102.
    let two = |generation: u64| Armed {
        levels: 2,
        bids: side(&[(100 * P, 10), (99 * P, 10)], false),
        asks: side(&[(101 * P, 20), (102 * P, 20)], false),
        ..armed(generation)
    };
    let deep_bid = |seq: u64| line(seq, false, "bid", "98", 5);
    let deep_ask = |seq: u64| line(seq, false, "ask", "103", 5);
    let trigger = |seq: u64| line(seq, false, "bid", "99", 5_000);
    // The program's count of frames: the next frame's index.
    let seen = |p: &Prog| p.map.prog().md_seen;
    let run = |p: &Prog, l: &[u8]| {
        let i = seen(p);
        (p.run(&md_frame(l)).0, i)
    };
    let fired = |p: &mut Prog, index: u64, what: &str| {
        let rec = p.map.next_fire().expect(what).expect("decodes");
        assert_eq!(rec.md_index, index, "{what}");
        p.map.fired();
    };

    // Armed at 0; frames 0 and 1 below the top (not triggers: left to user space).
    p.arm(&two(0));
    assert_eq!(run(&p, &deep_bid(60)).0, XDP_PASS);
    assert_eq!(run(&p, &deep_ask(61)).0, XDP_PASS);
    // Frame 2 fires on generation 0: two frames pending, both below their side's top.
    let (action, i) = run(&p, &trigger(62));
    assert_eq!(action, XDP_TX, "two frames behind, both below the top");
    fired(&mut p, i, "the fire behind");
    assert_eq!((p.map.prog().fired, p.map.prog().fired_behind), (1, 1));

    // A pending frame at the last armed level (inside the top): no fire.
    p.arm(&two(seen(&p)));
    run(&p, &line(70, false, "bid", "99", 5));
    assert_eq!(
        run(&p, &trigger(71)).0,
        XDP_PASS,
        "a pending frame inside the top"
    );
    // A better price on the other side (the order's price would change): no fire.
    p.arm(&two(seen(&p)));
    run(&p, &line(72, false, "ask", "100.5", 5));
    assert_eq!(
        run(&p, &trigger(73)).0,
        XDP_PASS,
        "a pending ask through the top"
    );
    // A snapshot below the top: no fire.
    p.arm(&two(seen(&p)));
    run(&p, &line(74, true, "bid", "90", 5));
    assert_eq!(run(&p, &trigger(75)).0, XDP_PASS, "a pending snapshot");
    // A pending frame later than the trigger (user space would find the trigger stale).
    p.arm(&two(seen(&p)));
    run(&p, &deep_bid(90));
    assert_eq!(run(&p, &trigger(80)).0, XDP_PASS, "a later pending frame");
    // A short side: a frame below its levels could be a new one inside the top, and this
    // one is large enough to fire itself (it did not when it came: no risk room then).
    let short = |generation: u64| Armed {
        bids: side(&[(100 * P, 10)], true),
        ..two(generation)
    };
    let g = seen(&p);
    p.arm(&Armed {
        allowed: [0, 0],
        ..short(g)
    });
    run(&p, &line(91, false, "bid", "50", 5_000));
    p.arm(&short(g));
    assert_eq!(run(&p, &trigger(92)).0, XDP_PASS, "a short side");
    assert!(p.map.next_fire().is_none());
    assert_eq!(p.map.prog().behind_unsafe, 5);
    // Inside the top but below the trigger's price, too small to fire: the trigger's rank
    // and old size stay (a bid at 100, rank 0).
    p.arm(&two(seen(&p)));
    run(&p, &line(93, false, "bid", "99", 5));
    let (action, i) = run(&p, &line(94, false, "bid", "100", 5_000));
    assert_eq!(action, XDP_TX, "a small update below the trigger's price");
    fired(&mut p, i, "the fire beside a pending frame");
    // The two kinds do not mix: level 99 removed (beside the trigger), then a large bid at
    // 98 (below the armed top, but inside it once 99 is gone: it fires in user space).
    p.arm(&two(seen(&p)));
    run(&p, &line(95, false, "bid", "99", 0));
    run(&p, &line(96, false, "bid", "98", 5_000));
    assert_eq!(
        run(&p, &line(97, false, "bid", "100", 5_000)).0,
        XDP_PASS,
        "mixed kinds"
    );
    assert!(p.map.next_fire().is_none());
    assert_eq!(p.map.prog().behind_unsafe, 6);

    // BEHIND_MAX - 1 frames behind: fires; BEHIND_MAX: left to user space.
    let behind = strategy_common::xtx::BEHIND_MAX as u64;
    p.arm(&two(seen(&p)));
    for k in 0..behind - 1 {
        run(&p, &deep_bid(100 + k));
    }
    let (action, i) = run(&p, &trigger(200));
    assert_eq!(action, XDP_TX, "BEHIND_MAX - 1 frames behind");
    fired(&mut p, i, "the fire far behind");
    p.arm(&two(seen(&p)));
    for k in 0..behind {
        run(&p, &deep_bid(300 + k));
    }
    let not_current = p.map.prog().not_current;
    assert_eq!(
        run(&p, &trigger(400)).0,
        XDP_PASS,
        "BEHIND_MAX frames behind"
    );
    assert_eq!(p.map.prog().not_current, not_current + 1);

    // Frames that came while the ticket was claimed (the state stays) count for the next
    // arming; a frame that came while user space was writing (no ticket) does not.
    p.arm(&two(seen(&p)));
    let (action, i) = run(&p, &trigger(500));
    assert_eq!(action, XDP_TX);
    let pending = seen(&p);
    run(&p, &deep_bid(501));
    fired(&mut p, i, "the fire before the claimed frames");
    p.arm(&two(pending));
    assert_eq!(
        run(&p, &trigger(502)).0,
        XDP_TX,
        "a frame parsed while claimed"
    );
    p.map.next_fire().expect("a record").expect("decodes");
    p.map.fired();
    let pending = seen(&p);
    let _ = p.map.disarm();
    run(&p, &deep_bid(503));
    p.arm(&two(pending));
    assert_eq!(
        run(&p, &trigger(504)).0,
        XDP_PASS,
        "a frame that came while disarmed"
    );
    let s = p.map.prog();
    assert_eq!((s.fired, s.fired_behind, s.behind_unsafe), (5, 4, 7));
    assert_eq!(s.md_seen, 3 + 10 + 2 + 3 + 32 + 33 + 5);
}
