//! `#[repr(C)]` types shared by the strategy's XDP program (`strategy-ebpf`) and its
//! user-space loader (`strategy`), in the style of aya-template's `*-common` crate.
//!
//! The loader writes a [`SteerConfig`] into the program's config map; the program redirects
//! the market-data and order-entry flows it describes into the AF_XDP socket and counts
//! every frame per [`Class`] in a per-CPU array of [`Counters`].
#![no_std]
#![deny(unsafe_code)]

pub mod trace;
pub mod xtx;

/// What the XDP program steers. All fields are in network byte order where they are
/// addresses or ports, so the program compares them without swapping.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SteerConfig {
    /// Market-data multicast group (network order).
    pub md_group: u32,
    /// Our own IPv4 address (network order).
    pub local_addr: u32,
    /// The exchange's IPv4 address (network order).
    pub exchange_addr: u32,
    /// Market-data UDP port (network order).
    pub md_port: u16,
    /// Exchange order-entry TCP port (network order).
    pub exchange_port: u16,
    /// 1 = also steer ARP replies addressed to us (smoltcp resolves the neighbour).
    pub steer_arp: u32,
    /// 1 = log frames off the common path (too short to classify, no socket on the queue)
    /// with aya-log; 0 = never log (the common path then pays one predictable branch at the
    /// most, only on those frames).
    pub diag: u32,
    /// 1 = the `xdp-tx` path: decide on market data in the program and send the order with
    /// XDP_TX when the armed state in the `XTX` map is current ([`xtx`]).
    pub xdp_tx: u32,
    /// Market data only from this source address (network order); 0 = any. Datagrams to
    /// the group and port from another source are [`Class::ForeignMd`]: left to the
    /// kernel, never steered, never decided on.
    pub md_source: u32,
}

const _: () = assert!(
    core::mem::size_of::<SteerConfig>() == 32,
    "no implicit padding"
);

/// Frame classes counted by the program.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// UDP to the market-data group and port.
    MarketData = 0,
    /// TCP from the exchange's address and port.
    OrderEntry = 1,
    /// ARP reply for us.
    Arp = 2,
    /// Everything else (left to the kernel).
    Other = 3,
    /// UDP to the market-data group and port from a source other than the configured one
    /// (left to the kernel, whose source-specific membership drops it).
    ForeignMd = 4,
}

/// Number of [`Class`] values.
pub const CLASS_COUNT: u32 = 5;

// SAFETY: plain #[repr(C)] integers with explicit padding-free layout; any bit pattern is
// valid, as aya::Pod requires.
#[cfg(feature = "user")]
#[allow(unsafe_code)]
unsafe impl aya::Pod for SteerConfig {}

// SAFETY: as above.
#[cfg(feature = "user")]
#[allow(unsafe_code)]
unsafe impl aya::Pod for Counters {}

/// Per-class counters.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Frames redirected into the XSK.
    pub redirected: u64,
    /// Frames passed to the kernel.
    pub passed: u64,
    /// Frames aborted (redirect failed or bounds check failed).
    pub aborted: u64,
}
