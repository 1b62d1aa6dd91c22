//! The XDP program's parser and rule (`strategy_common::xtx`, the same code the program
//! runs) checked against the strategy's own on the same inputs:
//!
//! * where the program's parser accepts a line, `proto::md::parse_line` accepts it with the
//!   same fields and the same fixed point; on the lines the generator writes it accepts all;
//! * on a random book and a random update, `decide` on the armed state user space would
//!   publish fires exactly when the engine fires, with the same order.

use proptest::prelude::*;
use strategy::engine::{Engine, EngineConfig};
use strategy::net::af_xdp::xtx::armed;
use strategy::trigger::{Threshold, TriggerConfig};
use strategy_common::xtx::{self, Template};

fn field() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("deribit".to_owned()),
        Just("".to_owned()),
        "[a-zA-Z0-9_-]{1,12}",
        "[ -~]{0,6}",
    ]
}

fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{1,12}",
        "[0-9]{1,10}\\.[0-9]{0,9}",
        "[0-9]{0,3}\\.[0-9]{0,3}",
        "-[0-9]{1,4}",
        "[0-9]{1,25}",
        "[0-9]{1,4}\\.[0-9]{1,4}0{0,8}",
        "[0-9.eE+-]{0,6}",
    ]
}

fn line() -> impl Strategy<Value = Vec<u8>> {
    (
        field(),
        field(),
        prop_oneof!["[0-9]{1,16}", "[0-9]{17,21}", "[0-9a]{0,3}"],
        prop_oneof!["[0-9]{1,16}", "[0-9]{17,21}", "[0-9a]{0,3}"],
        prop_oneof![Just("true"), Just("false"), Just("TRUE"), Just("")],
        prop_oneof![Just("bid"), Just("ask"), Just("bids"), Just("")],
        number(),
        number(),
        prop_oneof![
            Just(""),
            Just("\n"),
            Just("\r\n"),
            Just("\r"),
            Just("\n\n"),
            Just(",x")
        ],
    )
        .prop_map(|(e, s, t, l, snap, side, p, a, eol)| {
            format!("{e},{s},{t},{l},{snap},{side},{p},{a}{eol}").into_bytes()
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(20_000))]

    #[test]
    fn where_the_program_accepts_a_line_the_strategy_reads_the_same(
        l in line(),
        dec in 0u8..4,
    ) {
        if let Some(x) = xtx::parse(&l, u32::from(dec)) {
            let p = proto::md::parse_line(&l, dec);
            prop_assert!(p.is_ok(), "program accepts, strategy rejects: {:?}", String::from_utf8_lossy(&l));
            let p = p.expect("checked");
            prop_assert_eq!(x.local_timestamp, p.local_timestamp);
            prop_assert_eq!(x.is_snapshot, p.is_snapshot);
            prop_assert_eq!(x.bid, p.side == proto::md::BookSide::Bid);
            prop_assert_eq!(x.price, p.price);
            prop_assert_eq!(x.amount, p.amount);
        }
    }

    #[test]
    fn the_program_reads_every_line_of_the_common_layout(
        ts in 1_000_000_000_000_000u64..9_999_999_999_999_999,
        bid in any::<bool>(),
        snap in any::<bool>(),
        int in 1u64..10_000_000,
        frac in prop::option::of(0u32..100_000_000),
        amount in 0u64..1_000_000_000_000,
    ) {
        let price = match frac {
            Some(f) => format!("{int}.{f:08}"),
            None => int.to_string(),
        };
        let side = if bid { "bid" } else { "ask" };
        let l = format!("deribit,BTC-PERPETUAL,{ts},{ts},{snap},{side},{price},{amount}\n");
        let x = xtx::parse(l.as_bytes(), 0);
        prop_assert!(x.is_some(), "{}", l);
    }

    /// The fast path (the learned layout, a word at a time) against the general parser:
    /// on any line, where it reads one it reads the same; on lines of the layout within its
    /// limits (16 integer and 8 fractional digits, 18 with the decimals) it reads them all.
    #[test]
    fn the_fast_path_reads_what_the_general_parser_reads(
        any_line in line(),
        ts in 1_000_000_000_000_000u64..9_999_999_999_999_999,
        lts in 1_000_000_000_000_000u64..9_999_999_999_999_999,
        bid in any::<bool>(),
        snap in any::<bool>(),
        int in 0u64..100_000_000,
        frac in prop::option::of("[0-9]{0,8}"),
        amount in prop_oneof![
            "[0-9]{1,8}",
            "[0-9]{1,8}\\.[0-9]{0,3}",
            "[0-9.]{1,12}",
            "[1-9][0-9]{8,15}",
            "[0-9]{9,14}\\.[0-9]{1,2}",
        ],
        eol in prop_oneof![Just(""), Just("\n"), Just("\r\n"), Just("\r"), Just("\n\n")],
        dec in 0u32..4,
    ) {
        let shape = xtx::Shape::learn(
            b"deribit,BTC-PERPETUAL,1585699200245000,1585699200355000,false,ask,6593.5,20750\n",
        )
        .expect("the layout");
        let fast = xtx::fast::parse_slice(&any_line, &shape, dec);
        if fast.is_some() {
            prop_assert_eq!(fast, xtx::parse(&any_line, dec), "{}", String::from_utf8_lossy(&any_line));
        }
        let price = match &frac {
            Some(f) => format!("{int}.{f}"),
            None => int.to_string(),
        };
        let side = if bid { "bid" } else { "ask" };
        let l = format!("deribit,BTC-PERPETUAL,{ts},{lts},{snap},{side},{price},{amount}{eol}");
        let general = xtx::parse(l.as_bytes(), dec);
        let fast = xtx::fast::parse_slice(l.as_bytes(), &shape, dec);
        if fast.is_some() {
            prop_assert_eq!(fast, general, "{}", l);
        } else if general.is_some() {
            // Only outside the fast path's limits: more than 16 integer or 8 fractional
            // digits, integer digits and decimals above 18 (the price has 8 decimals), a
            // price of more than 15 bytes or an amount of more than 16.
            let wide = |d: &str, decimals: usize| {
                let mut parts = d.split('.');
                let int = parts.next().map_or(0, str::len);
                let frac = parts.next().map_or(0, str::len);
                int > 16 || frac > 8 || int + decimals > 18
            };
            prop_assert!(
                wide(&price, 8) || wide(&amount, dec as usize) || price.len() > 15 || amount.len() > 16,
                "the fast path missed {}",
                l
            );
        }
    }
}

/// A snapshot of random levels, then updates, through the engine; after each update the
/// armed state is what user space would publish, and the next update is decided both ways.
/// Snapshot levels (bid, price, size) and updates (bid, price, amount, snapshot).
type BookAndUpdates = (Vec<(bool, i64, u64)>, Vec<(bool, i64, u64, bool)>);

fn book_and_updates() -> impl Strategy<Value = BookAndUpdates> {
    (
        prop::collection::vec((any::<bool>(), 90i64..110, 1u64..3_000), 0..30),
        prop::collection::vec(
            (
                any::<bool>(),
                85i64..115,
                0u64..4_000,
                prop::bool::weighted(0.05),
            ),
            1..60,
        ),
    )
}

fn threshold() -> impl Strategy<Value = Threshold> {
    prop_oneof![
        (0u64..2_000).prop_map(Threshold::Size),
        (0u64..200_000).prop_map(|dollars| Threshold::Notional { dollars }),
    ]
}

/// A line of the feed (`local_timestamp` `seq`).
fn text(bid: bool, price: i64, amount: u64, snap: bool, seq: u64) -> Vec<u8> {
    let side = if bid { "bid" } else { "ask" };
    format!("x,y,1,{seq},{snap},{side},{price},{amount}").into_bytes()
}

/// An engine with a book of `capacity` levels, the rule on the top `levels`, orders of 7.
fn engine(
    capacity: usize,
    levels: usize,
    threshold: Threshold,
    cap_by_size: bool,
    max_orders: u64,
) -> Engine {
    Engine::new(EngineConfig {
        book_capacity: capacity,
        trigger: TriggerConfig {
            levels,
            threshold,
            qty: 7,
            cap_by_size,
            max_orders,
            ..TriggerConfig::default()
        },
        reflect: false,
    })
}

/// The kinds of each pending line (the program's indices 0, 1, ...) as the program checks
/// them, in order, for a fire on `x` over the armed state `a`.
fn kinds_of(a: &xtx::Armed, pending: &[Vec<u8>], x: &xtx::XLine) -> Vec<u32> {
    let mut sizes = xtx::PendingSizes::of(a);
    pending
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let p = xtx::parse(l, 0).expect("the program reads the line");
            let f = xtx::Footprint::of(i as u64, Some(&p));
            xtx::pending_kinds(a, &mut sizes, &f, i as u64, x)
        })
        .collect()
}

/// The kinds all of them share: the program sends the fire only if it is not 0.
fn shared(kinds: &[u32]) -> u32 {
    kinds
        .iter()
        .fold(xtx::BELOW_TOP | xtx::BESIDE, |k, &f| k & f)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3_000))]

    #[test]
    fn the_program_fires_exactly_when_the_engine_does(
        (snapshot, updates) in book_and_updates(),
        levels in 1usize..=8,
        threshold in threshold(),
        small_book in any::<bool>(),
        cap_by_size in any::<bool>(),
        max_orders in 0u64..20,
    ) {
        // A book that holds just the armed levels (full sides: drops and evictions), or many.
        // The program's rule assumes the book holds at least the armed levels.
        let capacity = if small_book { levels } else { 64 };
        let mut engine = engine(capacity, levels, threshold, cap_by_size, max_orders);
        let mut seq = 1_000u64;
        for (bid, price, qty) in snapshot {
            let _ = engine.on_packet(&text(bid, price, qty, true, seq), 0);
        }
        for (i, (bid, price, amount, snap)) in updates.into_iter().enumerate() {
            // Now and then an older sequence number (stale).
            seq = if i % 17 == 16 { seq - 5 } else { seq + 1 };
            let a = armed(&engine, 0, Template::default());
            let l = text(bid, price, amount, snap, seq);
            let x = xtx::parse(&l, 0).expect("the program reads the line");
            let program = xtx::decide(&a, &x);
            let user = engine.on_packet(&l, 0);
            prop_assert_eq!(
                program.map(|f| (f.qty, f.price, f.side, f.trigger_id)),
                user.map(|o| (o.qty, o.price, o.side as u8, o.trigger_id)),
                "update {} {:?}", i, String::from_utf8_lossy(&l)
            );
        }
    }
}

/// A snapshot, frames user space has not applied yet (the program saw them), and a last
/// line the program decides on.
type Behind = (
    Vec<(bool, i64, u64)>,
    Vec<(bool, i64, u64, bool)>,
    (bool, i64, u64),
);

fn behind() -> impl Strategy<Value = Behind> {
    // Few prices, so that pending frames often meet the levels and the line's price.
    (
        prop::collection::vec((any::<bool>(), 96i64..105, 1u64..3_000), 0..24),
        prop::collection::vec(
            (
                any::<bool>(),
                94i64..107,
                prop_oneof![Just(0u64), 1u64..10, 0u64..300, 0u64..4_000],
                prop::bool::weighted(0.03),
            ),
            0..8,
        ),
        (any::<bool>(), 96i64..105, 0u64..6_000),
    )
}

/// Deciding while user space is behind (`xtx::pending_kinds`): whenever a line fires on the
/// armed state and the program would send it with frames still pending, the engine,
/// applying those frames first and then the line, fires on none of the pending frames and
/// on the line with the same order. The fires sent are counted: the test fails if too few
/// came up to say anything.
#[test]
fn a_decision_behind_is_the_engines_after_the_pending_frames() {
    use proptest::test_runner::{Config, TestRunner};
    use std::cell::Cell;
    let (safe, safe_fires) = (Cell::new(0u64), Cell::new(0u64)); // sent behind, fires
    let mut runner = TestRunner::new(Config {
        cases: 60_000,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(
            &(
                behind(),
                1usize..=8,
                threshold(),
                any::<bool>(),
                any::<bool>(),
                0u64..20,
                (any::<u8>(), any::<u8>(), prop::bool::weighted(0.07)),
            ),
            |(
                (snapshot, pending, last),
                levels,
                threshold,
                small_book,
                cap_by_size,
                max_orders,
                stale,
            )| {
                let capacity = if small_book { levels } else { 64 };
                let mut engine = engine(capacity, levels, threshold, cap_by_size, max_orders);
                let mut seq = 1_000u64;
                for (bid, price, qty) in snapshot {
                    let _ = engine.on_packet(&text(bid, price, qty, true, seq), 0);
                }
                let a = armed(&engine, 0, Template::default());
                let lines: Vec<Vec<u8>> = pending
                    .iter()
                    .enumerate()
                    .map(|(i, &(bid, price, amount, snap))| {
                        // A quarter of them older than the last (stale: user space
                        // drops them).
                        if (stale.0 & stale.1) >> i & 1 == 1 {
                            return text(bid, price, amount, snap, seq - 3);
                        }
                        seq += 1;
                        text(bid, price, amount, snap, seq)
                    })
                    .collect();
                let (bid, price, amount) = last;
                let last = text(bid, price, amount, false, seq + 1 - u64::from(stale.2) * 5);
                let x = xtx::parse(&last, 0).expect("the program reads the line");
                let kinds = shared(&kinds_of(&a, &lines, &x));
                // The program checks the pending frames only for a line that fires.
                let program = xtx::decide(&a, &x);
                let sends = program.is_some() && kinds != 0;
                for l in &lines {
                    let user = engine.on_packet(l, 0);
                    if sends {
                        prop_assert!(
                            user.is_none(),
                            "a pending frame fired: {:?}",
                            String::from_utf8_lossy(l)
                        );
                    }
                }
                let user = engine.on_packet(&last, 0);
                safe_fires.set(safe_fires.get() + u64::from(program.is_some()));
                if sends {
                    safe.set(safe.get() + 1);
                    prop_assert_eq!(
                        program.map(|f| (f.qty, f.price, f.side, f.trigger_id)),
                        user.map(|o| (o.qty, o.price, o.side as u8, o.trigger_id)),
                        "{} pending {:?}",
                        String::from_utf8_lossy(&last),
                        lines
                            .iter()
                            .map(|l| String::from_utf8_lossy(l).into_owned())
                            .collect::<Vec<_>>()
                    );
                }
                Ok(())
            },
        )
        .expect("every decision behind equals the engine's");
    eprintln!(
        "fires on the armed state: {}, sent behind: {}",
        safe_fires.get(),
        safe.get()
    );
    assert!(
        safe.get() > 200,
        "too few fires sent behind: {} of {}",
        safe.get(),
        safe_fires.get()
    );
}

/// Why the kinds of the pending frames must be one kind, not each frame some kind: a
/// removal of a level above the fire (beside it) brings a large update below the armed top
/// (below it) inside the top, where the engine fires on it.
#[test]
fn the_kinds_do_not_mix() {
    let mut engine = engine(64, 3, Threshold::Size(1_000), false, 1_000_000);
    for (i, (bid, price)) in [
        (true, 100),
        (true, 99),
        (true, 98),
        (true, 97),
        (false, 101),
    ]
    .into_iter()
    .enumerate()
    {
        let _ = engine.on_packet(&text(bid, price, 10, true, 10 + i as u64), 0);
    }
    let a = armed(&engine, 0, Template::default());
    let fire = text(true, 99, 5_000, false, 30);
    let x = xtx::parse(&fire, 0).expect("parses");
    assert!(
        xtx::decide(&a, &x).is_some(),
        "the line fires on the armed top"
    );
    let pending = [
        text(true, 100, 0, false, 20),
        text(true, 97, 5_000, false, 21),
    ];
    let kinds = kinds_of(&a, &pending, &x);
    assert_eq!(
        kinds,
        [xtx::BESIDE, xtx::BELOW_TOP],
        "each frame of some kind"
    );
    assert_eq!(
        kinds[0] & kinds[1],
        0,
        "but not of one: the program leaves the fire"
    );
    assert!(engine.on_packet(&pending[0], 0).is_none(), "the removal");
    assert!(
        engine.on_packet(&pending[1], 0).is_some(),
        "97 now ranks third: the engine fires on it, before the line"
    );
}

/// A pending frame user space will find stale (older than the last sequence it applied)
/// changes nothing in its book: the sizes the check carries must not take it as applied,
/// or a later frame's increase is measured from a size the book never held.
#[test]
fn a_stale_pending_frame_is_not_taken_as_applied() {
    let mut engine = engine(64, 3, Threshold::Size(1_000), false, 1_000_000);
    for (i, (bid, price)) in [(true, 100), (true, 99), (true, 98), (false, 101)]
        .into_iter()
        .enumerate()
    {
        let _ = engine.on_packet(&text(bid, price, 10, true, 100 + i as u64), 0);
    }
    let a = armed(&engine, 0, Template::default());
    let fire = text(true, 100, 5_000, false, 120);
    let x = xtx::parse(&fire, 0).expect("parses");
    assert!(
        xtx::decide(&a, &x).is_some(),
        "the line fires on the armed top"
    );
    // 98: 10 -> 1,000 on a stale line (user space drops it), then 10 -> 1,900 (an
    // increase of 1,890 in user space's book, not 900).
    let pending = [
        text(true, 98, 1_000, false, 90),
        text(true, 98, 1_900, false, 110),
    ];
    assert_eq!(
        shared(&kinds_of(&a, &pending, &x)),
        0,
        "the program must leave this fire to user space"
    );
    assert!(engine.on_packet(&pending[0], 0).is_none(), "stale");
    assert!(
        engine.on_packet(&pending[1], 0).is_some(),
        "98 at rank 2 grew by 1,890: the engine fires on it"
    );
}
