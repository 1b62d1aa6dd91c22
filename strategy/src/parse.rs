//! The packet -> fields step, the one function to replace for a custom wire format.
//!
//! The default reads the exchange's default packet: the ASCII text of one Tardis line.
//! Replace [`parse_packet`] (or pass your own [`crate::engine::ParseFn`] to
//! [`crate::engine::Engine::with_parser`]) together with the exchange's formatter.

use proto::md::{MdLine, ParseError};

/// Parses one market-data packet. Zero-copy, allocation-free, never panics.
#[inline(always)]
pub fn parse_packet(pkt: &[u8], amount_decimals: u8) -> Result<MdLine<'_>, ParseError> {
    proto::md::parse_line(pkt, amount_decimals)
}
