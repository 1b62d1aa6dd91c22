//! The receive side across CPUs, as the lab runs it: a sender thread pinned to CPU 0
//! stamps a 64-byte datagram with the clock and sends it to a loopback UDP socket (127.0.0.1:
//! nothing leaves the machine) every GAP; the receiver, pinned to CPU 1, spins in one of
//! three ways and stamps the datagram's arrival in its buffer. The figure is send call to
//! data in the receiver's hands: the sender's stack and softirq (the same in every mode),
//! the wait for the receiver to look, and its receive.
//!
//! * `recv`: `recv(MSG_DONTWAIT)` every turn (the kernel path).
//! * `inline`: one RECV with MSG_DONTWAIT submitted and entered every turn (the
//!   `--uring-inline-recv` turn: DEFER_TASKRUN, fixed file, registered ring fd).
//! * `flag`: a multishot POLL armed on the socket; the loop spins on DEFER_TASKRUN's TASKRUN
//!   flag in the ring's shared memory (no syscall while nothing arrives) and, once it rises,
//!   does the inline RECV, running the poll's task work only after (so it is off the
//!   datagram's path), and goes back to the flag once a RECV finds nothing and no poll
//!   event came. The design the path does not use: this bench is why.
//!
//! Prints p50 / p90 / p99 / p99.9 per mode at gaps of 50 us and 1 ms (modes interleaved,
//! twice). `cargo bench -p strategy --bench recv_wake`.
#![allow(unsafe_code, reason = "CPU pinning and raw recv, as the paths do")]

use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use io_uring::{cqueue, opcode, types, IoUring};

mod common;

const WARMUP: usize = 100;
const UD_RECV: u64 = 1;
const UD_POLL: u64 = 2;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Recv,
    Inline,
    Flag,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Self::Recv => "recv",
            Self::Inline => "inline",
            Self::Flag => "flag",
        }
    }
}

fn pin(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is the empty set; CPU_SET writes inside it; the call reads
    // it for its size. Failure (fewer CPUs) leaves the thread unpinned: said by the caller.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// The clock both threads stamp with: ns since `base`.
fn stamp(base: Instant) -> u64 {
    u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// One mode at one gap: `n` datagrams after the warm-up; returns the latencies, ns, sorted.
fn run(mode: Mode, gap: Duration, n: usize) -> Vec<u64> {
    let rx = UdpSocket::bind("127.0.0.1:0").expect("bind loopback");
    rx.set_nonblocking(true).expect("nonblocking");
    let to = rx.local_addr().expect("addr");
    let base = Instant::now();
    let done = Arc::new(AtomicBool::new(false));
    let sender = {
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            pin(0);
            let tx = UdpSocket::bind("127.0.0.1:0").expect("bind loopback");
            std::thread::sleep(Duration::from_millis(50));
            let mut next = Instant::now();
            for _ in 0..WARMUP + n {
                next += gap;
                while Instant::now() < next {
                    std::hint::spin_loop();
                }
                let mut p = [0u8; 64];
                p[..8].copy_from_slice(&stamp(base).to_le_bytes());
                tx.send_to(&p, to).expect("send");
            }
            done.store(true, Ordering::Release);
        })
    };
    pin(1);
    let mut lat = Vec::with_capacity(WARMUP + n);
    let mut buf = [0u8; 2048];
    let got = |b: &[u8; 2048], lat: &mut Vec<u64>| {
        let now = stamp(base);
        let mut sent = [0u8; 8];
        sent.copy_from_slice(&b[..8]);
        lat.push(now.saturating_sub(u64::from_le_bytes(sent)));
    };
    // The sender is done and nothing came for this long: a datagram was lost; stop.
    let mut quiet_since: Option<Instant> = None;
    let mut over = |lat: &Vec<u64>| {
        if lat.len() >= WARMUP + n {
            return true;
        }
        if !done.load(Ordering::Acquire) {
            return false;
        }
        quiet_since.get_or_insert_with(Instant::now).elapsed() > Duration::from_millis(100)
    };
    let fd = rx.as_raw_fd();
    match mode {
        Mode::Recv => {
            while !over(&lat) {
                // SAFETY: recv into a buffer we own, its length.
                let r = unsafe {
                    libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT)
                };
                if r > 0 {
                    got(&buf, &mut lat);
                }
            }
        }
        Mode::Inline | Mode::Flag => {
            let (mut ring, idx) = common::defer_ring(&rx);
            let flag = mode == Mode::Flag;
            if flag {
                arm_poll(&mut ring, idx);
            }
            let mut watching = false; // Flag: spinning on the flag, not entering
            while !over(&lat) {
                if watching && !ring.submission().taskrun() {
                    std::hint::spin_loop();
                    continue;
                }
                let e = opcode::Recv::new(types::Fixed(0), buf.as_mut_ptr(), 2048)
                    .flags(libc::MSG_DONTWAIT)
                    .build()
                    .user_data(UD_RECV);
                // SAFETY: `buf` outlives the call and the RECV completes during the enter
                // (MSG_DONTWAIT: data or EAGAIN), before `buf` is read.
                unsafe { ring.submission().push(&e) }.expect("sq room");
                common::enter_registered(idx, 1, 0);
                let mut received = false;
                let mut polled = false;
                for c in ring.completion() {
                    received |= c.user_data() == UD_RECV && c.result() > 0;
                    polled |= c.user_data() == UD_POLL;
                }
                if received {
                    got(&buf, &mut lat);
                }
                if !flag {
                    continue;
                }
                if received {
                    watching = false; // drain: RECV again until it finds nothing
                    continue;
                }
                // Nothing queued: run the poll's task work (off the datagram's path), then
                // watch the flag, unless a poll event says data may have come meanwhile.
                if ring.submission().taskrun() {
                    common::enter_registered(idx, 0, 1);
                }
                let mut rearm = false;
                for c in ring.completion() {
                    polled |= c.user_data() == UD_POLL;
                    rearm |= c.user_data() == UD_POLL && !cqueue::more(c.flags());
                }
                if rearm {
                    arm_poll(&mut ring, idx);
                }
                watching = !polled;
            }
        }
    }
    sender.join().expect("sender");
    let mut l = lat.split_off(WARMUP.min(lat.len()));
    assert!(
        l.len() == n,
        "{}: {} of {n} datagrams arrived on loopback",
        mode.name(),
        l.len()
    );
    l.sort_unstable();
    l
}

/// A multishot POLL for POLLIN on fixed file 0, submitted.
fn arm_poll(ring: &mut IoUring, idx: u32) {
    let e = opcode::PollAdd::new(types::Fixed(0), libc::POLLIN as u32)
        .multi(true)
        .build()
        .user_data(UD_POLL);
    // SAFETY: a poll on a registered file: no buffer.
    unsafe { ring.submission().push(&e) }.expect("sq room");
    common::enter_registered(idx, 1, 0);
}

fn main() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus < 2 {
        println!("recv_wake: needs 2 CPUs (sender and receiver each spin on one); this machine has {cpus}");
        return;
    }
    println!(
        "send call to data in the receiver's buffer, us, loopback UDP, sender on CPU 0, receiver on CPU 1"
    );
    for (gap, n) in [
        (Duration::from_micros(50), 20_000),
        (Duration::from_millis(1), 3_000),
    ] {
        for round in 1..=2 {
            for mode in [Mode::Recv, Mode::Inline, Mode::Flag] {
                let l = run(mode, gap, n);
                let p = |q: f64| l[((l.len() - 1) as f64 * q) as usize] as f64 / 1e3;
                println!(
                    "gap {:>5} us  round {round}  {:<7} n {:>6}  p50 {:>6.2}  p90 {:>6.2}  p99 {:>6.2}  p99.9 {:>7.2}",
                    gap.as_micros(),
                    mode.name(),
                    l.len(),
                    p(0.5),
                    p(0.9),
                    p(0.99),
                    p(0.999)
                );
            }
        }
    }
}
