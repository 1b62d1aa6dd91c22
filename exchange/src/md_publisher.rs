//! The market-data multicast sender: a UDP socket, or ([`MdTx::Packet`]) an AF_PACKET
//! socket sending whole frames with PACKET_QDISC_BYPASS, the kernel-bypass-style sender for
//! the highest rates (docs/decisions.md, "The publisher").
//!
//! Due packets go out in one `sendmmsg` per batch. Kernel software TX timestamps are asked
//! per message, only for the packet that opens a trigger id (the first packet carrying a
//! `local_timestamp`: the one tick-to-trade is measured from; with `--stamp-ids`, only of
//! the ids listed, e.g. the oracle's trigger ids), each with its own key
//! (`SCM_TS_OPT_ID`); the stamps are read back from the socket's error queue and mapped to
//! the packet's id. Packets formatted for it leave [`HEADROOM`] bytes in front of the
//! payload, where the frame sender writes the Ethernet, IPv4 and UDP headers.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::ops::Range;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::str::FromStr;

use socket2::{Domain, Protocol, Socket, Type};

use hostsys::errqueue::{self as sys, Stamps};
use hostsys::mmsg::{self, Dest};

/// A stamped packet still waits for its software stamp.
const WANT_SW: u8 = 1;
/// ... for its hardware stamp.
const WANT_HW: u8 = 2;

/// Bytes in front of every payload: Ethernet (14), IPv4 (20) and UDP (8) headers.
pub const HEADROOM: usize = 42;
/// Most packets in one batch.
pub const BATCH: usize = mmsg::BATCH;

/// How market data leaves the exchange (`--md-tx`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MdTx {
    /// A UDP socket (the kernel builds the headers; multicast routing, loopback, TTL).
    #[default]
    Udp,
    /// An AF_PACKET socket bound to `--md-iface` (a name) with PACKET_QDISC_BYPASS: the
    /// exchange writes the headers (UDP checksum 0), no qdisc, no routing.
    Packet,
}

impl FromStr for MdTx {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "udp" => Ok(Self::Udp),
            "packet" => Ok(Self::Packet),
            _ => Err(format!("unknown market-data sender {s:?} (udp, packet)")),
        }
    }
}

impl fmt::Display for MdTx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Udp => "udp",
            Self::Packet => "packet",
        })
    }
}

/// Socket settings.
#[derive(Debug, Clone)]
pub struct PublisherConfig {
    /// Group and port.
    pub group: SocketAddrV4,
    /// Outgoing interface (`--md-iface`: a name or an IPv4 address), if set.
    pub iface: Option<String>,
    /// Multicast TTL.
    pub ttl: u32,
    /// Deliver to local listeners too (IP_MULTICAST_LOOP; UDP only).
    pub mcast_loop: bool,
    /// Ask for kernel TX timestamps.
    pub tx_timestamps: bool,
    /// The sender.
    pub tx: MdTx,
    /// Stamp only the first packet of these ids (`--stamp-ids`); None: of every id.
    pub stamp_ids: Option<std::collections::HashSet<u64>>,
    /// Ask the NIC's hardware stamp too (switched on for the interface by the server).
    pub hw: bool,
}

/// The prebuilt Ethernet + IPv4 + UDP header of the frame sender; per packet only the
/// lengths, the IP id and the IP checksum change.
#[derive(Debug, Clone, Copy)]
pub struct FrameHeader {
    bytes: [u8; HEADROOM],
    ip_id: u16,
}

impl FrameHeader {
    /// From `src` (MAC, IPv4, UDP port) to the group (its multicast MAC), with `ttl`.
    pub fn new(src_mac: [u8; 6], src: SocketAddrV4, group: SocketAddrV4, ttl: u8) -> Self {
        let mut b = [0u8; HEADROOM];
        b[..6].copy_from_slice(&proto::md::group_mac(*group.ip()));
        b[6..12].copy_from_slice(&src_mac);
        b[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        b[14] = 0x45;
        b[20..22].copy_from_slice(&0x4000u16.to_be_bytes()); // DF, as the kernel's UDP
        b[22] = ttl;
        b[23] = 17;
        b[26..30].copy_from_slice(&src.ip().octets());
        b[30..34].copy_from_slice(&group.ip().octets());
        b[34..36].copy_from_slice(&src.port().to_be_bytes());
        b[36..38].copy_from_slice(&group.port().to_be_bytes());
        Self { bytes: b, ip_id: 0 }
    }

    /// Writes the header for a `payload_len`-byte payload into `out[..HEADROOM]`.
    pub fn write(&mut self, out: &mut [u8; HEADROOM], payload_len: u16) {
        *out = self.bytes;
        let ip_len = payload_len.saturating_add(28);
        out[16..18].copy_from_slice(&ip_len.to_be_bytes());
        out[18..20].copy_from_slice(&self.ip_id.to_be_bytes());
        self.ip_id = self.ip_id.wrapping_add(1);
        let sum = ipv4_checksum(&out[14..34]);
        out[24..26].copy_from_slice(&sum.to_be_bytes());
        out[38..40].copy_from_slice(&(payload_len.saturating_add(8)).to_be_bytes());
    }
}

/// The one's-complement checksum of an IPv4 header whose checksum field is zero.
fn ipv4_checksum(h: &[u8]) -> u16 {
    let mut sum: u32 = h
        .chunks_exact(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[derive(Debug)]
enum Wire {
    Udp {
        sock: UdpSocket,
        dest: SocketAddrV4,
    },
    Packet {
        fd: OwnedFd,
        ifindex: i32,
        header: FrameHeader,
        max_payload: usize,
    },
}

/// The publisher.
#[derive(Debug)]
pub struct MdPublisher {
    wire: Wire,
    tx_timestamps: bool,
    /// The key of the next stamped packet.
    counter: u32,
    /// The id of the last packet sent (a packet with another id opens one and is stamped).
    last_id: Option<u64>,
    /// Stamped packets waiting for their stamps: (key, id, stamps still wanted), keys
    /// consecutive from the front.
    pending: VecDeque<(u32, u64, u8)>,
    hw: bool,
    /// TX timestamps that never came back (dropped from the queue).
    pub ts_missing: u64,
    /// Packets sent with a stamp asked.
    pub stamped: u64,
    stamp_ids: Option<std::collections::HashSet<u64>>,
}

impl MdPublisher {
    /// Creates and configures the socket.
    pub fn new(cfg: &PublisherConfig) -> io::Result<Self> {
        let wire = match cfg.tx {
            MdTx::Udp => {
                let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
                s.set_nonblocking(true)?;
                s.set_multicast_ttl_v4(cfg.ttl)?;
                s.set_multicast_loop_v4(cfg.mcast_loop)?;
                if let Some(a) = cfg.iface.as_deref().map(resolve_iface).transpose()? {
                    s.set_multicast_if_v4(&a)?;
                    s.bind(&SocketAddrV4::new(a, 0).into())?;
                }
                Wire::Udp {
                    sock: s.into(),
                    dest: cfg.group,
                }
            }
            MdTx::Packet => {
                let name = cfg.iface.as_deref().ok_or_else(|| {
                    io::Error::other("--md-tx packet needs --md-iface with an interface name")
                })?;
                let info = hostsys::iface::iface_info(name)?;
                let ifindex = mmsg::ifindex(name)?;
                let fd = mmsg::open_packet_tx(ifindex)?;
                // The source port: the group's, a fixed and recognisable choice (nothing
                // listens for replies to market data).
                let src = SocketAddrV4::new(info.ip, cfg.group.port());
                let ttl = u8::try_from(cfg.ttl).unwrap_or(u8::MAX);
                Wire::Packet {
                    fd,
                    ifindex,
                    header: FrameHeader::new(info.mac, src, cfg.group, ttl),
                    max_payload: info.mtu.saturating_sub(28),
                }
            }
        };
        let me = Self {
            wire,
            tx_timestamps: cfg.tx_timestamps,
            counter: 0,
            last_id: None,
            pending: VecDeque::new(),
            ts_missing: 0,
            stamped: 0,
            stamp_ids: cfg.stamp_ids.clone(),
            hw: cfg.hw,
        };
        if cfg.tx_timestamps {
            sys::enable_tx_timestamps_on_request(me.raw_fd(), cfg.hw)?;
        }
        Ok(me)
    }

    /// The socket's descriptor.
    pub fn raw_fd(&self) -> RawFd {
        match &self.wire {
            Wire::Udp { sock, .. } => sock.as_raw_fd(),
            Wire::Packet { fd, .. } => fd.as_raw_fd(),
        }
    }

    /// The largest payload one packet may carry (the frame sender's: the MTU's).
    pub fn max_payload(&self) -> usize {
        match &self.wire {
            Wire::Udp { .. } => 65_507,
            Wire::Packet { max_payload, .. } => *max_payload,
        }
    }

    /// Makes a packet ready to send: `slot[HEADROOM..HEADROOM + len]` is its payload. The
    /// frame sender writes its headers in front; returns the bytes to send.
    pub fn frame(&mut self, slot: &mut [u8], len: usize) -> Range<usize> {
        match &mut self.wire {
            Wire::Udp { .. } => HEADROOM..HEADROOM + len,
            Wire::Packet { header, .. } => {
                if let Some(h) = slot.first_chunk_mut::<HEADROOM>() {
                    header.write(h, u16::try_from(len).unwrap_or(u16::MAX));
                }
                0..HEADROOM + len
            }
        }
    }

    /// Sends due packets (made by [`Self::frame`]) in one `sendmmsg`, in order, each tagged
    /// with its `local_timestamp` (`ids`, one per packet); returns how many the kernel took
    /// (the rest, in order, are the caller's to retry; 0 when its buffer was full).
    pub fn send_batch(&mut self, pkts: &[&[u8]], ids: &[u64]) -> io::Result<usize> {
        let n = pkts.len().min(BATCH).min(ids.len());
        let mut keys = [None; BATCH];
        if self.tx_timestamps {
            let mut last = self.last_id;
            let mut k = self.counter;
            for (key, &id) in keys.iter_mut().zip(&ids[..n]) {
                let listed = self.stamp_ids.as_ref().is_none_or(|s| s.contains(&id));
                if last != Some(id) && listed {
                    *key = Some(k);
                    k = k.wrapping_add(1);
                }
                last = Some(id);
            }
        }
        let (fd, dest) = match &self.wire {
            Wire::Udp { sock, dest } => (sock.as_raw_fd(), Dest::Ip(*dest)),
            Wire::Packet { fd, ifindex, .. } => (fd.as_raw_fd(), Dest::Link { ifindex: *ifindex }),
        };
        let sent = mmsg::send_batch(fd, dest, &pkts[..n], &keys[..n], self.hw).map_err(|e| {
            if e.raw_os_error() == Some(libc::EINVAL) && self.tx_timestamps {
                io::Error::other(format!(
                    "{e}: per-message TX stamps need Linux 6.13 or later (SCM_TS_OPT_ID); \
                     run the exchange with --no-tx-timestamps on older kernels"
                ))
            } else {
                e
            }
        })?;
        for (key, &id) in keys[..sent].iter().zip(&ids[..sent]) {
            self.last_id = Some(id);
            if let Some(k) = *key {
                self.counter = k.wrapping_add(1);
                self.stamped += 1;
                let want = WANT_SW | if self.hw { WANT_HW } else { 0 };
                self.pending.push_back((k, id, want));
                if self.pending.len() > 1 << 16 {
                    self.pending.pop_front();
                    self.ts_missing += 1;
                }
            }
        }
        Ok(sent)
    }

    /// Reads every queued TX timestamp, calling `f(id, stamps)` for each (up to 32 per
    /// `recvmmsg`; with hardware stamps a packet's two stamps may come as two calls).
    pub fn drain_tx_timestamps(&mut self, mut f: impl FnMut(u64, Stamps)) -> io::Result<()> {
        if !self.tx_timestamps {
            return Ok(());
        }
        let mut got = [(0u32, Stamps::default()); sys::TS_BATCH];
        loop {
            let n = sys::read_tx_timestamps(self.raw_fd(), &mut got)?;
            for &(key, ts) in &got[..n] {
                self.match_stamp(key, ts, &mut f);
            }
            if n < sys::TS_BATCH {
                return Ok(());
            }
        }
    }

    /// Ties one stamp message to the packet it was taken for (by its key). Stamps of one
    /// kind come in send order, so a packet before this one still waiting for that kind
    /// never gets it (counted missing).
    fn match_stamp(&mut self, key: u32, ts: Stamps, f: &mut impl FnMut(u64, Stamps)) {
        if key == u32::MAX && ts == Stamps::default() {
            return;
        }
        let Some(&(front, ..)) = self.pending.front() else {
            return;
        };
        let idx = key.wrapping_sub(front) as usize;
        if idx >= self.pending.len() {
            return; // already given up on, or not ours
        }
        let kinds =
            if ts.sw.is_some() { WANT_SW } else { 0 } | if ts.hw.is_some() { WANT_HW } else { 0 };
        for e in self.pending.range_mut(..idx) {
            if e.2 & kinds != 0 {
                e.2 &= !kinds;
                self.ts_missing += 1;
            }
        }
        if let Some(e) = self.pending.get_mut(idx) {
            f(e.1, ts);
            e.2 &= !kinds;
        }
        while self.pending.front().is_some_and(|e| e.2 == 0) {
            self.pending.pop_front();
        }
    }

    /// Whether a sent packet still waits for a stamp (the error queue is read then).
    pub fn stamps_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Forgets timestamps still expected (end of session), counting them as missing; the
    /// next session's first packet opens its id again.
    pub fn reset_pending(&mut self) {
        self.ts_missing += self
            .pending
            .iter()
            .map(|e| u64::from(e.2.count_ones()))
            .sum::<u64>();
        self.pending.clear();
        self.last_id = None;
    }
}

/// Resolves `--md-iface`: an IPv4 address, or an interface name whose first IPv4 address is
/// used.
pub fn resolve_iface(spec: &str) -> io::Result<Ipv4Addr> {
    if let Ok(a) = spec.parse() {
        return Ok(a);
    }
    hostsys::iface::iface_ipv4(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_header_parses_back_with_a_valid_checksum() {
        let group = SocketAddrV4::new(Ipv4Addr::new(239, 255, 0, 1), 12345);
        let src = SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 1), 12345);
        let mut h = FrameHeader::new([2, 0, 0, 0, 0, 1], src, group, 1);
        let payload = b"deribit,BTC-PERPETUAL,1,2,false,ask,6593.5,20750";
        let mut frame = vec![0u8; HEADROOM + payload.len()];
        frame[HEADROOM..].copy_from_slice(payload);
        for id in 0..3u16 {
            let (hdr, _) = frame.split_first_chunk_mut::<HEADROOM>().expect("room");
            h.write(hdr, payload.len() as u16);
            let p = etherparse::SlicedPacket::from_ethernet(&frame).expect("parses");
            let Some(etherparse::LinkSlice::Ethernet2(eth)) = p.link else {
                panic!("ethernet")
            };
            assert_eq!(eth.destination(), [0x01, 0x00, 0x5e, 0x7f, 0, 1]);
            let Some(etherparse::NetSlice::Ipv4(ip)) = p.net else {
                panic!("ipv4")
            };
            let iph = ip.header().to_header();
            assert_eq!(iph.calc_header_checksum(), iph.header_checksum);
            assert_eq!(iph.identification, id);
            assert_eq!(iph.source, src.ip().octets());
            assert_eq!(iph.destination, group.ip().octets());
            assert_eq!(iph.time_to_live, 1);
            let Some(etherparse::TransportSlice::Udp(udp)) = p.transport else {
                panic!("udp")
            };
            assert_eq!(udp.destination_port(), 12345);
            assert_eq!(udp.payload(), payload);
        }
    }

    fn publisher(hw: bool) -> MdPublisher {
        MdPublisher {
            wire: Wire::Udp {
                sock: UdpSocket::bind("127.0.0.1:0").expect("bind"),
                dest: SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9),
            },
            tx_timestamps: true,
            counter: 0,
            last_id: None,
            pending: (0..4u32)
                .map(|k| {
                    (
                        k,
                        100 + u64::from(k),
                        WANT_SW | if hw { WANT_HW } else { 0 },
                    )
                })
                .collect(),
            hw,
            ts_missing: 0,
            stamped: 4,
            stamp_ids: None,
        }
    }

    #[test]
    fn stamps_reach_their_packets_and_the_ones_that_never_come_are_counted() {
        let sw = |ns| Stamps {
            sw: Some(ns),
            hw: None,
        };
        let hw = |ns| Stamps {
            sw: None,
            hw: Some(ns),
        };
        // Software only: key 1's stamp means key 0's never came.
        let mut p = publisher(false);
        let mut got = Vec::new();
        p.match_stamp(1, sw(11), &mut |id, ts| got.push((id, ts)));
        assert_eq!(got, [(101, sw(11))]);
        assert_eq!(
            (p.ts_missing, p.pending.len()),
            (1, 2),
            "0 missing, 0 and 1 done"
        );
        p.match_stamp(7, sw(1), &mut |_, _| panic!("not a pending key"));
        p.reset_pending();
        assert_eq!(p.ts_missing, 3, "2 and 3 never came");
        // Software and hardware, in their own orders, interleaved.
        let mut p = publisher(true);
        let mut got = Vec::new();
        for (k, ts) in [(0, sw(1)), (1, sw(2)), (0, hw(50)), (2, sw(3)), (1, hw(51))] {
            p.match_stamp(k, ts, &mut |id, ts| got.push((id, ts)));
        }
        assert_eq!(
            got,
            [
                (100, sw(1)),
                (101, sw(2)),
                (100, hw(50)),
                (102, sw(3)),
                (101, hw(51))
            ]
        );
        assert_eq!(p.ts_missing, 0);
        assert_eq!(p.pending.front().map(|e| e.0), Some(2), "0 and 1 complete");
        // Key 3's hardware stamp: key 2's never came.
        p.match_stamp(3, hw(53), &mut |_, _| {});
        assert_eq!(p.ts_missing, 1);
        p.reset_pending();
        assert_eq!(p.ts_missing, 2, "key 3's software stamp never came either");
    }

    #[test]
    fn md_tx_round_trips() {
        for t in [MdTx::Udp, MdTx::Packet] {
            assert_eq!(t.to_string().parse::<MdTx>(), Ok(t));
        }
        assert!("xdp".parse::<MdTx>().is_err());
    }
}
