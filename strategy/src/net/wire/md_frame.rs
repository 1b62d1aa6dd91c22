//! Which received frames are market data, read through smoltcp's wire views.
//!
//! Every frame of a raw ring comes here first. Market data is an IPv4 UDP datagram to the
//! group and port from the market-data source (`--md-source`); what claims to be one (IPv4,
//! UDP, to the group) but does not hold together (lengths past the frame, a fragment, a
//! UDP length past the IP payload) is malformed, and one from another source is foreign:
//! both are dropped and counted, never parsed. Everything else goes to smoltcp.

use std::net::Ipv4Addr;

use smoltcp::wire::{EthernetFrame, EthernetProtocol, IpProtocol, Ipv4Packet, UdpPacket};

/// The market-data flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MdFlow {
    /// The group.
    pub group: Ipv4Addr,
    /// The port.
    pub port: u16,
    /// The only accepted source (`None`: any).
    pub source: Option<Ipv4Addr>,
}

/// What a received frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MdFrame<'a> {
    /// Market data: the UDP payload.
    Payload(&'a [u8]),
    /// To the group and port from another source: dropped, counted.
    Foreign,
    /// Claims to be market data (IPv4, UDP, to the group) but its lengths or flags do not
    /// hold together, or too short for any Ethernet/IPv4 header: dropped, counted.
    Malformed,
    /// Not market data: for smoltcp (which drops what it cannot use).
    NotMd,
}

const ETH: usize = 14;

/// Classifies `frame`.
#[inline]
pub fn classify<'a>(frame: &'a [u8], flow: &MdFlow) -> MdFrame<'a> {
    let Ok(eth) = EthernetFrame::new_checked(frame) else {
        return MdFrame::Malformed;
    };
    if eth.ethertype() != EthernetProtocol::Ipv4 {
        return MdFrame::NotMd;
    }
    let ip_bytes = &frame[ETH..];
    // Protocol (byte 9) and destination (bytes 16..20), read raw: only a datagram that
    // claims the group is judged further.
    let (Some(&proto), Some(dst)) = (ip_bytes.get(9), ip_bytes.get(16..20)) else {
        return MdFrame::Malformed;
    };
    if IpProtocol::from(proto) != IpProtocol::Udp || dst != flow.group.octets() {
        return MdFrame::NotMd;
    }
    let Ok(ip) = Ipv4Packet::new_checked(ip_bytes) else {
        return MdFrame::Malformed;
    };
    if ip.version() != 4 || ip.more_frags() || ip.frag_offset() != 0 {
        return MdFrame::Malformed;
    }
    let (hl, total) = (usize::from(ip.header_len()), usize::from(ip.total_len()));
    // `new_checked` holds header_len <= total_len <= the buffer's length.
    let Some(l4) = ip_bytes.get(hl..total) else {
        return MdFrame::Malformed;
    };
    let Ok(udp) = UdpPacket::new_checked(l4) else {
        return MdFrame::Malformed;
    };
    if udp.dst_port() != flow.port {
        return MdFrame::NotMd;
    }
    if flow.source.is_some_and(|s| ip.src_addr() != s) {
        return MdFrame::Foreign;
    }
    match l4.get(8..usize::from(udp.len())) {
        Some(payload) => MdFrame::Payload(payload),
        None => MdFrame::Malformed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLOW: MdFlow = MdFlow {
        group: Ipv4Addr::new(239, 255, 0, 1),
        port: 12345,
        source: Some(Ipv4Addr::new(10, 77, 0, 1)),
    };

    /// An Ethernet/IPv4/UDP frame (checksums left zero: the views do not check them).
    fn frame(src: [u8; 4], dst: [u8; 4], dport: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 14];
        f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        let total = (20 + 8 + payload.len()) as u16;
        let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0];
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        ip.extend_from_slice(&src);
        ip.extend_from_slice(&dst);
        f.extend_from_slice(&ip);
        f.extend_from_slice(&5000u16.to_be_bytes());
        f.extend_from_slice(&dport.to_be_bytes());
        f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn market_data_foreign_malformed_and_the_rest() {
        let (ex, g) = ([10, 77, 0, 1], [239, 255, 0, 1]);
        let good = frame(ex, g, 12345, b"line");
        assert_eq!(classify(&good, &FLOW), MdFrame::Payload(b"line"));
        // Ethernet padding after the datagram is not payload.
        let mut padded = good.clone();
        padded.extend_from_slice(&[0; 10]);
        assert_eq!(classify(&padded, &FLOW), MdFrame::Payload(b"line"));
        assert_eq!(
            classify(&frame([10, 77, 0, 9], g, 12345, b"x"), &FLOW),
            MdFrame::Foreign
        );
        let any = MdFlow {
            source: None,
            ..FLOW
        };
        assert_eq!(
            classify(&frame([10, 77, 0, 9], g, 12345, b"x"), &any),
            MdFrame::Payload(b"x")
        );
        assert_eq!(classify(&frame(ex, g, 9, b"x"), &FLOW), MdFrame::NotMd);
        assert_eq!(
            classify(&frame(ex, [10, 77, 0, 2], 12345, b"x"), &FLOW),
            MdFrame::NotMd
        );
        // Truncated: the IP total length runs past the frame.
        assert_eq!(classify(&good[..good.len() - 2], &FLOW), MdFrame::Malformed);
        // The UDP length runs past the IP payload.
        let mut long_udp = good.clone();
        long_udp[38..40].copy_from_slice(&200u16.to_be_bytes());
        assert_eq!(classify(&long_udp, &FLOW), MdFrame::Malformed);
        // A fragment.
        let mut frag = good.clone();
        frag[20] = 0x20;
        assert_eq!(classify(&frag, &FLOW), MdFrame::Malformed);
        // Shorter than an Ethernet header; an IPv4 frame with no room for the addresses.
        assert_eq!(classify(&good[..10], &FLOW), MdFrame::Malformed);
        assert_eq!(classify(&good[..20], &FLOW), MdFrame::Malformed);
        // Another ethertype.
        let mut v6 = good;
        v6[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
        assert_eq!(classify(&v6, &FLOW), MdFrame::NotMd);
    }
}
