//! What one turn of the receive loop costs on each socket path, without the network: a
//! UDP socket on loopback (127.0.0.1, nothing leaves the machine), measured as the loops
//! run it.
//!
//! * `empty`: a turn that finds nothing: `recvfrom(MSG_DONTWAIT)` (the kernel path) against
//!   one RECV with MSG_DONTWAIT submitted and entered on an io_uring (the `--uring-inline-recv`
//!   turn: SINGLE_ISSUER + DEFER_TASKRUN, fixed file), with and without the registered ring
//!   fd, and entering with GETEVENTS every turn (the path sets it only when the ring's
//!   flag says task work waits). The mean time between the datagram's arrival and the loop seeing it is about half a
//!   turn, so half the difference is what the ring adds to detection.
//!   Also READ_FIXED with RWF_NOWAIT into a registered buffer (it completes inline with
//!   EAGAIN too; a plain READ on the non-blocking socket arms a poll instead): tried as a
//!   cheaper receive, it is dearer than RECV.
//! * `one datagram`: `sendto` of 64 bytes to the socket itself, then the turn that receives
//!   it (same send on both: the difference is the receive).
//! * `order send`: 21 bytes on a loopback TCP connection (TCP_NODELAY), the peer reading
//!   them (the same read on every variant: the difference is the send): `send(2)` as the
//!   kernel path sends against a SEND through the ring as the io_uring path sends (fixed
//!   file, registered ring fd, DEFER_TASKRUN), with and without GETEVENTS on its enter.
//!
//! `cargo bench -p strategy --bench recv_turn`.
#![expect(
    missing_docs,
    reason = "criterion_main! generates an undocumented main"
)]
#![allow(
    unsafe_code,
    reason = "raw io_uring_enter with a registered ring index, as the path does"
)]

use std::io::Read;
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;

use criterion::{criterion_group, criterion_main, Criterion};
use io_uring::{opcode, types, IoUring};

mod common;

const BUF: usize = 2048;
const UD: u64 = 0x42;

/// An io_uring set up as `uring+defer+inline` sets it up, with the UDP socket as fixed
/// file 0, and (optionally) its fd registered.
struct Inline {
    ring: IoUring,
    reg: Option<u32>,
    buf: Box<[u8; BUF]>,
    /// Receive with READ_FIXED + RWF_NOWAIT (buffer registered as fixed buffer 0) instead of
    /// RECV + MSG_DONTWAIT.
    read_fixed: bool,
}

impl Inline {
    fn new(sock: &impl AsRawFd, register_ring: bool) -> Self {
        Self::with(sock, register_ring, false)
    }

    fn with(sock: &impl AsRawFd, register_ring: bool, read_fixed: bool) -> Self {
        let ring = common::defer_ring_unregistered(sock);
        let reg = register_ring.then(|| common::register_ring_fd(&ring));
        let mut buf = Box::new([0u8; BUF]);
        if read_fixed {
            let iov = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: BUF,
            };
            // SAFETY: the buffer is boxed in the returned value and outlives the ring's use.
            unsafe { ring.submitter().register_buffers(&[iov]) }.expect("register buffer");
        }
        Self {
            ring,
            reg,
            buf,
            read_fixed,
        }
    }

    /// One turn: push the RECV, one enter, take the completion. Returns its result.
    fn turn(&mut self) -> i32 {
        self.turn_with(0)
    }

    /// [`Inline::turn`] with these enter flags (GETEVENTS: also run pending task work).
    fn turn_with(&mut self, flags: u32) -> i32 {
        let e = if self.read_fixed {
            opcode::ReadFixed::new(types::Fixed(0), self.buf.as_mut_ptr(), BUF as u32, 0)
                .offset(u64::MAX)
                .rw_flags(libc::RWF_NOWAIT)
                .build()
                .user_data(UD)
        } else {
            opcode::Recv::new(types::Fixed(0), self.buf.as_mut_ptr(), BUF as u32)
                .flags(libc::MSG_DONTWAIT)
                .build()
                .user_data(UD)
        };
        // SAFETY: the buffer lives in self (boxed, never moved while the kernel owns it) and
        // the completion is taken in this same call: the recv completes during the enter.
        unsafe { self.ring.submission().push(&e) }.expect("sq room");
        match self.reg {
            Some(idx) => common::enter_registered(idx, 1, flags),
            None => {
                // SAFETY: as above; one entry, no wait, no argument.
                unsafe {
                    self.ring
                        .submitter()
                        .enter::<libc::sigset_t>(1, 0, flags, None)
                }
                .expect("enter");
            }
        }
        self.completed()
    }

    /// One order send as the path sends it: a SEND of `msg` on fixed file 0, one enter
    /// (registered ring when there is one) with `flags`. Returns its result.
    fn send(&mut self, msg: &[u8], flags: u32) -> i32 {
        let e = opcode::Send::new(types::Fixed(0), msg.as_ptr(), msg.len() as u32)
            .flags(libc::MSG_NOSIGNAL | libc::MSG_WAITALL)
            .build()
            .user_data(UD);
        // SAFETY: `msg` outlives the call and the send completes during the enter.
        unsafe { self.ring.submission().push(&e) }.expect("sq room");
        let idx = self.reg.expect("send variants use the registered ring");
        common::enter_registered(idx, 1, flags);
        self.completed()
    }

    fn completed(&mut self) -> i32 {
        let c = self
            .ring
            .completion()
            .next()
            .expect("the request completed inline");
        c.result()
    }
}

fn recvfrom(sock: &UdpSocket, buf: &mut [u8]) -> isize {
    // SAFETY: recvfrom into a buffer we own, its length, no address wanted.
    unsafe {
        libc::recvfrom(
            sock.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    }
}

fn recv_turn(c: &mut Criterion) {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind loopback");
    let me = sock.local_addr().expect("addr");
    let payload = [7u8; 64];
    let mut buf = [0u8; BUF];
    let mut plain = Inline::new(&sock, false);
    let mut reg = Inline::new(&sock, true);
    let mut rf = Inline::with(&sock, true, true);

    let mut g = c.benchmark_group("recv turn, empty socket");
    g.bench_function("kernel: recvfrom(MSG_DONTWAIT)", |b| {
        b.iter(|| assert!(recvfrom(&sock, &mut buf) < 0))
    });
    g.bench_function("uring+defer+inline: RECV(MSG_DONTWAIT) + enter", |b| {
        b.iter(|| assert_eq!(plain.turn(), -libc::EAGAIN))
    });
    g.bench_function(
        "uring+defer+regring+inline: same, registered ring fd",
        |b| b.iter(|| assert_eq!(reg.turn(), -libc::EAGAIN)),
    );
    g.bench_function("READ_FIXED(RWF_NOWAIT) + enter, registered ring fd", |b| {
        b.iter(|| assert_eq!(rf.turn(), -libc::EAGAIN))
    });
    g.bench_function("uring+defer+inline, enter with GETEVENTS every turn", |b| {
        b.iter(|| assert_eq!(plain.turn_with(1), -libc::EAGAIN))
    });
    g.finish();

    let mut g = c.benchmark_group("recv turn, one datagram (sendto to itself, then the turn)");
    g.bench_function("kernel: sendto + recvfrom", |b| {
        b.iter(|| {
            sock.send_to(&payload, me).expect("send");
            assert_eq!(recvfrom(&sock, &mut buf), 64);
        })
    });
    g.bench_function("uring+defer+inline: sendto + RECV + enter", |b| {
        b.iter(|| {
            sock.send_to(&payload, me).expect("send");
            assert_eq!(plain.turn(), 64);
        })
    });
    g.bench_function("uring+defer+regring+inline: sendto + RECV + enter", |b| {
        b.iter(|| {
            sock.send_to(&payload, me).expect("send");
            assert_eq!(reg.turn(), 64);
        })
    });
    g.bench_function("READ_FIXED(RWF_NOWAIT): sendto + READ + enter", |b| {
        b.iter(|| {
            sock.send_to(&payload, me).expect("send");
            assert_eq!(rf.turn(), 64);
        })
    });
    g.finish();
}

fn order_send(c: &mut Criterion) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let tx = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    tx.set_nodelay(true).expect("nodelay");
    let (mut peer, _) = listener.accept().expect("accept");
    let msg = [1u8; 21];
    let mut got = [0u8; 21];
    let mut ring = Inline::new(&tx, true);
    let mut g = c.benchmark_group("order send (21 bytes, loopback TCP, the peer reads them)");
    g.bench_function("kernel: send(MSG_DONTWAIT)", |b| {
        b.iter(|| {
            let n = hostsys::socket::send_nb(tx.as_raw_fd(), &msg, 0).expect("send");
            assert_eq!(n, 21);
            peer.read_exact(&mut got).expect("read");
        })
    });
    g.bench_function("uring: SEND + enter (registered ring)", |b| {
        b.iter(|| {
            assert_eq!(ring.send(&msg, 0), 21);
            peer.read_exact(&mut got).expect("read");
        })
    });
    g.bench_function("uring: SEND + enter with GETEVENTS", |b| {
        b.iter(|| {
            assert_eq!(ring.send(&msg, 1), 21);
            peer.read_exact(&mut got).expect("read");
        })
    });
    g.finish();
}

criterion_group!(benches, recv_turn, order_send);
criterion_main!(benches);
