//! Wire formats and constants shared by the `exchange` and the `strategy`.
//!
//! Data flows through this crate twice:
//!
//! * market data: the exchange reads a Tardis `incremental_book_L2` CSV line, checks it with
//!   [`md::parse_line`] and publishes its bytes in a UDP packet; the strategy parses the same
//!   packet back into an [`md::MdLine`] with the same function;
//! * order entry: the strategy emits an [`order::OrderRepr`] into a 21-byte buffer, the
//!   exchange decodes it from its TCP stream with [`order::Packet::new_checked`].
//!
//! Everything here is `no_std`, allocation-free and panic-free on untrusted input, in the
//! style of smoltcp's `wire` modules: a zero-copy view with `new_checked`, field byte ranges
//! in a private `field` module, a plain `Repr` with `parse` and `emit`, and tiny `Copy` errors.
#![no_std]
#![deny(unsafe_code)]

pub mod decimal;
pub mod md;
pub mod order;
pub mod reflect;
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
mod simd;

/// Default market-data multicast group.
pub const DEFAULT_MD_GROUP: [u8; 4] = [239, 255, 0, 1];
/// Default market-data UDP port.
pub const DEFAULT_MD_PORT: u16 = 12345;
/// Default order-entry TCP port.
pub const DEFAULT_OE_PORT: u16 = 9012;
/// Number of decimal places of every fixed-point price (6593.5 -> 659_350_000_000).
pub const PRICE_DECIMALS: u8 = 8;
/// `10^PRICE_DECIMALS`.
pub const PRICE_SCALE: i64 = 100_000_000;
