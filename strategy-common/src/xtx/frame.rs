//! The order segment: the template user space takes from smoltcp's last segment, and the
//! 75-byte frame (Ethernet, IPv4, TCP, 21 bytes) the program writes from it, with its TCP
//! checksum.

use super::{Fire, FRAME_LEN, HEADER_LEN, ORDER_LEN};

/// The order segment's headers, taken from smoltcp's last segment, and the part of the TCP
/// checksum that does not depend on the message.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Template {
    /// Ethernet, IPv4 (total length 61, checksum filled) and TCP (sequence and ACK numbers,
    /// window, PSH|ACK, checksum 0) headers.
    pub header: [u8; HEADER_LEN],
    /// Padding (explicit).
    pub _pad: [u8; 2],
    /// One's-complement sum (unfolded) of the pseudo header and the TCP header.
    pub partial_sum: u32,
}

impl Default for Template {
    fn default() -> Self {
        Self {
            header: [0; HEADER_LEN],
            _pad: [0; 2],
            partial_sum: 0,
        }
    }
}

/// Adds big-endian 16-bit words of `b` (odd length: last byte padded) to `sum`.
#[inline(always)]
pub fn sum_words(mut sum: u32, b: &[u8]) -> u32 {
    let mut i = 0;
    while i + 1 < b.len() {
        sum += (u32::from(b[i]) << 8) | u32::from(b[i + 1]);
        i += 2;
    }
    if i < b.len() {
        sum += u32::from(b[i]) << 8;
    }
    sum
}

/// Folds a one's-complement sum and complements it.
#[inline(always)]
pub fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

impl Template {
    /// Writes the order frame for `fire` into `out`: the headers, the 21-byte message
    /// (little-endian qty, price, side, trigger id) and the TCP checksum.
    #[inline(always)]
    pub fn write_frame(&self, fire: &Fire, out: &mut [u8; FRAME_LEN]) {
        out[..HEADER_LEN].copy_from_slice(&self.header);
        let mut msg = [0u8; ORDER_LEN];
        msg[0..4].copy_from_slice(&fire.qty.to_le_bytes());
        msg[4..12].copy_from_slice(&fire.price.to_le_bytes());
        msg[12] = fire.side;
        msg[13..21].copy_from_slice(&fire.trigger_id.to_le_bytes());
        out[HEADER_LEN..].copy_from_slice(&msg);
        let csum = fold(sum_words(self.partial_sum, &msg));
        out[14 + 20 + 16..14 + 20 + 18].copy_from_slice(&csum.to_be_bytes());
    }

    /// A template from headers (IPv4 without options, TCP without options; the IPv4 total
    /// length, its checksum and the TCP flags, checksum and urgent pointer are set here).
    pub fn new(mut header: [u8; HEADER_LEN]) -> Self {
        let ip = 14;
        let tcp = 34;
        let total = (20 + 20 + ORDER_LEN) as u16;
        header[ip + 2..ip + 4].copy_from_slice(&total.to_be_bytes());
        header[ip + 10] = 0;
        header[ip + 11] = 0;
        let ip_csum = fold(sum_words(0, &header[ip..ip + 20]));
        header[ip + 10..ip + 12].copy_from_slice(&ip_csum.to_be_bytes());
        header[tcp + 12] = 5 << 4;
        header[tcp + 13] = 0x18; // PSH | ACK
        header[tcp + 16] = 0;
        header[tcp + 17] = 0;
        header[tcp + 18] = 0;
        header[tcp + 19] = 0;
        // Pseudo header: source, destination, protocol, TCP length.
        let mut sum = sum_words(0, &header[ip + 12..ip + 20]);
        sum += 6 + (20 + ORDER_LEN) as u32;
        sum = sum_words(sum, &header[tcp..tcp + 20]);
        Self {
            header,
            _pad: [0; 2],
            partial_sum: sum,
        }
    }

    /// The sequence number the template's segment carries.
    pub fn seq(&self) -> u32 {
        u32::from_be_bytes([
            self.header[38],
            self.header[39],
            self.header[40],
            self.header[41],
        ])
    }
}
