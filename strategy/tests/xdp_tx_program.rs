//! The `xdp-tx` decision in the XDP program, on crafted frames (BPF_PROG_TEST_RUN): it fires
//! only when armed, current and the rule holds; the segment it builds is valid
//! Ethernet/IPv4/TCP with correct checksums in an independent parser (etherparse), with the
//! template's sequence and ACK numbers and the order as payload; the mailbox carries the
//! line and the order; anything else leaves the frame to user space; publishing only the
//! fields that changed leaves the mapping holding exactly the state asked for. Needs root and the
//! embedded program; skipped with a reason otherwise.

use std::net::{Ipv4Addr, SocketAddrV4};

use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use strategy::net::af_xdp::loader::{test_run_repeat, Options, Steering};
use strategy::net::af_xdp::xtx_map::Claimed;
use strategy::net::af_xdp::xtx_map::XtxMap;
use strategy_common::xtx::{
    Armed, Level, Shape, SideTop, Template, FRAME_LEN, HEADER_LEN, TAG_LEN,
};

const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;
const LOCAL: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const EXCHANGE: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 1), 9012);
const GROUP: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(239, 255, 0, 1), 12345);
const SEQ: u32 = 0x1234_5678;
const ACK: u32 = 0x0bad_cafe;

fn skip() -> bool {
    if !netlab::is_root() {
        eprintln!("skipped: needs root");
        return true;
    }
    if !strategy::net::af_xdp::loader::has_object() {
        eprintln!("skipped: built without the XDP program (run `cargo xtask build-ebpf`)");
        return true;
    }
    false
}

/// A market-data frame carrying `line`.
fn md_frame(line: &[u8]) -> Vec<u8> {
    let mut f = vec![
        0x01, 0x00, 0x5e, 0x7f, 0x00, 0x01, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00,
    ];
    let total = (20 + 8 + line.len()) as u16;
    f.extend_from_slice(&[0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0]);
    f[16..18].copy_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&EXCHANGE.ip().octets());
    f.extend_from_slice(&GROUP.ip().octets());
    f.extend_from_slice(&40000u16.to_be_bytes());
    f.extend_from_slice(&GROUP.port().to_be_bytes());
    f.extend_from_slice(&((8 + line.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(line);
    f
}

/// Headers of the segment smoltcp would send next (ours -> the exchange).
fn template() -> Template {
    let mut h = [0u8; HEADER_LEN];
    h[..6].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
    h[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
    h[12..14].copy_from_slice(&[0x08, 0x00]);
    h[14] = 0x45;
    h[20] = 0x40; // DF
    h[22] = 64;
    h[23] = 6;
    h[26..30].copy_from_slice(&LOCAL.octets());
    h[30..34].copy_from_slice(&EXCHANGE.ip().octets());
    h[34..36].copy_from_slice(&50000u16.to_be_bytes());
    h[36..38].copy_from_slice(&EXCHANGE.port().to_be_bytes());
    h[38..42].copy_from_slice(&SEQ.to_be_bytes());
    h[42..46].copy_from_slice(&ACK.to_be_bytes());
    h[48..50].copy_from_slice(&2048u16.to_be_bytes());
    Template::new(h)
}

fn side(levels: &[(i64, u64)], complete: bool) -> SideTop {
    let mut s = SideTop::default();
    for (slot, &(price, qty)) in s.levels.iter_mut().zip(levels) {
        *slot = Level { price, qty };
        s.count += 1;
    }
    s.complete = u32::from(complete);
    s
}

const P: i64 = 100_000_000;

/// Bids 100, 99, 98 (size 10 each); asks 101, 102 (size 20); threshold 1,000.
fn armed(generation: u64) -> Armed {
    Armed {
        ticket: 0,
        generation,
        levels: 5,
        amount_decimals: 0,
        threshold_kind: 0,
        qty_by_best: 0,
        threshold: 1_000,
        last_seq: 50,
        order_qty: [3, 4],
        allowed: [1, 1],
        bids: side(&[(100 * P, 10), (99 * P, 10), (98 * P, 10)], true),
        asks: side(&[(101 * P, 20), (102 * P, 20)], true),
        template: template(),
        shape: Shape::default(),
    }
}

fn line(seq: u64, snapshot: bool, side: &str, price: &str, amount: u64) -> Vec<u8> {
    format!("deribit,BTC-PERPETUAL,1,{seq},{snapshot},{side},{price},{amount}\n").into_bytes()
}

struct Prog {
    ebpf: aya::Ebpf,
    map: XtxMap,
}

impl Prog {
    fn load() -> Self {
        let t0 = std::time::Instant::now();
        let mut ebpf = Steering::load(
            LOCAL,
            EXCHANGE,
            GROUP,
            Options {
                diag: false,
                xdp_tx: true,
                md_source: None,
            },
        )
        .expect("load (the verifier accepts the xdp-tx program)");
        let map = strategy::net::af_xdp::loader::take_xtx(&mut ebpf).expect("xtx maps");
        // What the verifier had to walk (older kernels prune less: the guest's 6.1 must
        // stay under its million too). Measured on 6.18: see docs/xdp-tx.md.
        let prog: &aya::programs::Xdp = ebpf
            .program("steer")
            .expect("steer")
            .try_into()
            .expect("an XDP program");
        let verified = prog
            .info()
            .expect("program info")
            .verified_instruction_count();
        eprintln!(
            "xdp-tx program: {verified:?} instructions verified, loaded in {:?}",
            t0.elapsed()
        );
        if let Some(n) = verified {
            assert!(n < 250_000, "the verifier walked {n} instructions");
        }
        Self { ebpf, map }
    }

    /// Arms with `a` and a fresh ticket (no ticket out before: the last one was claimed or
    /// is taken back).
    fn arm(&mut self, a: &Armed) {
        let _ = self.map.disarm();
        self.map.fired();
        self.map.publish(a, true).expect("no ticket out");
    }

    fn run(&self, frame: &[u8]) -> (u32, Vec<u8>) {
        let mut out = vec![0u8; 2048];
        let r = test_run_repeat(&self.ebpf, frame, &mut out, 1).expect("test run");
        out.truncate(r.len_out);
        (r.retval, out)
    }
}

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

/// A frame left to user space: the program's tag with the frame's index (what user space
/// resynchronises its count from), then the original bytes.
fn assert_tagged(out: &[u8], frame: &[u8], index: u64) {
    assert_eq!(out.len(), frame.len() + TAG_LEN, "the tag was added");
    let (tag, rest) = strategy_common::xtx::split_tag(out);
    assert_eq!(rest, frame, "the frame itself is untouched");
    assert_eq!(tag, Some(index as u32), "the tag holds the index");
}

/// The segment as an independent parser reads it.
fn check_segment(frame: &[u8], qty: &[u8; 4], price: i64, side: u8, trigger: u64) {
    let pkt = SlicedPacket::from_ethernet(frame).expect("etherparse reads the frame");
    let Some(NetSlice::Ipv4(ip)) = pkt.net else {
        panic!("not IPv4")
    };
    let h = ip.header();
    assert_eq!(h.source_addr(), LOCAL);
    assert_eq!(h.destination_addr(), *EXCHANGE.ip());
    assert_eq!(usize::from(h.total_len()), FRAME_LEN - 14);
    let ip_hdr = h.to_header();
    assert_eq!(
        ip_hdr.header_checksum,
        ip_hdr.calc_header_checksum(),
        "IPv4 checksum"
    );
    let Some(TransportSlice::Tcp(tcp)) = pkt.transport else {
        panic!("not TCP")
    };
    assert_eq!(tcp.destination_port(), EXCHANGE.port());
    assert_eq!(tcp.sequence_number(), SEQ);
    assert_eq!(tcp.acknowledgment_number(), ACK);
    assert!(tcp.psh() && tcp.ack() && !tcp.syn() && !tcp.fin() && !tcp.rst());
    assert_eq!(tcp.window_size(), 2048);
    let payload = tcp.payload();
    let mut want = Vec::new();
    want.extend_from_slice(qty);
    want.extend_from_slice(&price.to_le_bytes());
    want.push(side);
    want.extend_from_slice(&trigger.to_le_bytes());
    assert_eq!(payload, &want[..], "the 21-byte order");
    let sum = tcp
        .to_header()
        .calc_checksum_ipv4(&ip_hdr, payload)
        .expect("checksum");
    assert_eq!(tcp.checksum(), sum, "TCP checksum");
}
