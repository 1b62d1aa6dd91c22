//! Per-message TX stamps: only the messages that ask are stamped, each with its own key, on
//! a UDP socket and on an AF_PACKET socket (both over loopback).

use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use hostsys::errqueue::{enable_tx_timestamps_on_request, read_tx_timestamps, TS_BATCH};
use hostsys::mmsg::{ifindex, open_packet_tx, send_batch, Dest};

/// Reads stamps until `want` came or a second passed; returns their keys in arrival order.
fn keys(fd: i32, want: usize) -> Vec<u32> {
    let mut got = Vec::new();
    let mut buf = [(0u32, hostsys::errqueue::Stamps::default()); TS_BATCH];
    let t0 = Instant::now();
    while got.len() < want && t0.elapsed() < Duration::from_secs(1) {
        let n = read_tx_timestamps(fd, &mut buf).expect("error queue");
        for &(k, ts) in &buf[..n] {
            assert!(ts.sw.is_some(), "a software stamp");
            assert!(ts.hw.is_none(), "no hardware stamp asked");
            got.push(k);
        }
    }
    // Nothing more: the unstamped messages left no stamp behind.
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(read_tx_timestamps(fd, &mut buf).expect("error queue"), 0);
    got
}

#[test]
fn udp_stamps_only_the_messages_that_ask_with_their_keys() {
    let rx = UdpSocket::bind("127.0.0.1:0").expect("test set-up");
    let Ok(std::net::SocketAddr::V4(dest)) = rx.local_addr() else {
        panic!("v4")
    };
    let tx = UdpSocket::bind("127.0.0.1:0").expect("test set-up");
    enable_tx_timestamps_on_request(tx.as_raw_fd(), false).expect("test set-up");
    let pkts: [&[u8]; 5] = [b"a", b"b", b"c", b"d", b"e"];
    let ks = [None, Some(7), None, Some(u32::MAX - 1), Some(0)];
    let n = send_batch(tx.as_raw_fd(), Dest::Ip(dest), &pkts, &ks, false).expect("test set-up");
    assert_eq!(n, 5);
    assert_eq!(keys(tx.as_raw_fd(), 3), [7, u32::MAX - 1, 0]);
    let mut b = [0u8; 8];
    for want in pkts {
        let m = rx.recv(&mut b).expect("test set-up");
        assert_eq!(&b[..m], want, "every datagram arrives, in order");
    }
}

#[test]
fn packet_socket_stamps_only_the_frames_that_ask_with_their_keys() {
    if !nix_root() {
        eprintln!("skipped: needs CAP_NET_RAW");
        return;
    }
    let fd = open_packet_tx(ifindex("lo").expect("test set-up")).expect("test set-up");
    enable_tx_timestamps_on_request(fd.as_raw_fd(), false).expect("test set-up");
    // A frame to nobody: loopback drops it after the stamp is taken.
    let mut frame = [0u8; 60];
    frame[12..14].copy_from_slice(&0x88b5u16.to_be_bytes()); // local experimental type
    let pkts: [&[u8]; 4] = [&frame, &frame, &frame, &frame];
    let ks = [Some(11), None, None, Some(12)];
    let dest = Dest::Link {
        ifindex: ifindex("lo").expect("test set-up"),
    };
    assert_eq!(
        send_batch(fd.as_raw_fd(), dest, &pkts, &ks, false).expect("test set-up"),
        4
    );
    assert_eq!(keys(fd.as_raw_fd(), 2), [11, 12]);
}

fn nix_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
